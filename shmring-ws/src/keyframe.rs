//! Keyframe requests to the producer, coalesced so a crowd of clients falling behind at
//! once costs the encoder one IDR, not hundreds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::metrics::Metrics;

/// A function the in-process producer registers to hear keyframe requests directly.
pub type KeyframeCallback = Box<dyn Fn() + Send + Sync>;

/// Coalesces keyframe requests to at most one per interval and forwards each to the
/// in-process producer (if one registered) and to the NATS publisher (if configured),
/// which sends it on `control.request_idr`.
pub struct KeyframeRequests {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    direct: Mutex<Option<KeyframeCallback>>,
    /// Woken once per forwarded request; the NATS task waits on it.
    nats: Notify,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for KeyframeRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyframeRequests")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl KeyframeRequests {
    /// Requests coalesced to one per `interval`.
    pub fn new(interval: Duration, metrics: Arc<Metrics>) -> Self {
        KeyframeRequests {
            interval,
            last: Mutex::new(None),
            direct: Mutex::new(None),
            nats: Notify::new(),
            metrics,
        }
    }

    /// Registers the in-process producer's callback (replacing any earlier one).
    pub fn set_direct(&self, callback: KeyframeCallback) {
        *self.direct.lock().unwrap_or_else(|e| e.into_inner()) = Some(callback);
    }

    /// Asks for a keyframe; returns true if the request went out, false if it was
    /// coalesced into one sent less than an interval ago.
    pub fn request(&self, why: &str) -> bool {
        let now = Instant::now();
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(*last, Some(t) if now.duration_since(t) < self.interval) {
                self.metrics.keyframe_requests_coalesced.inc();
                return false;
            }
            *last = Some(now);
        }
        tracing::debug!("requesting a keyframe: {why}");
        self.metrics.keyframe_requests.inc();
        if let Some(cb) = self.direct.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            cb();
        }
        self.nats.notify_one();
        true
    }

    /// Waits for the next forwarded request (for the NATS publisher).
    pub async fn next_for_nats(&self) {
        self.nats.notified().await
    }
}

/// Keyframe requests of the cameras besides the default one, by camera name, waiting
/// for the NATS relay (which publishes each on `<subject>.<camera>`). A camera's
/// [`KeyframeRequests`] coalesce before anything lands here.
#[derive(Debug, Default)]
pub(crate) struct CameraRequests {
    waiting: Mutex<std::collections::BTreeSet<String>>,
    ready: Notify,
}

impl CameraRequests {
    /// Camera `name` wants a keyframe.
    pub(crate) fn push(&self, name: &str) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned());
        self.ready.notify_one();
    }

    /// Waits until some camera wants a keyframe; takes every waiting name.
    pub(crate) async fn next(&self) -> Vec<String> {
        loop {
            let names = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
            if !names.is_empty() {
                return names.into_iter().collect();
            }
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn requests_are_coalesced() {
        let metrics = Arc::new(Metrics::default());
        let k = KeyframeRequests::new(Duration::from_millis(200), metrics.clone());
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        k.set_direct(Box::new(move || {
            c.fetch_add(1, Ordering::Relaxed);
        }));
        assert!(k.request("a"));
        for _ in 0..100 {
            assert!(!k.request("b"));
        }
        std::thread::sleep(Duration::from_millis(220));
        assert!(k.request("c"));
        assert_eq!(calls.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.keyframe_requests_coalesced.get(), 100);
    }
}
