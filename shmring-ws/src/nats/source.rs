//! `transport-server --source`: the frames of a stream another server publishes on
//! NATS (`video.<stream>`) feed this server's hub, in place of a ring reader thread;
//! browsers get the same keyframe gating and GOP cache.
//!
//! - At start, the newest keyframe kept in JetStream is fetched (after subscribing, so
//!   nothing published meanwhile is missed), so the first clients see a picture at once.
//! - Frames are checked (chunk runs, header size, CRC-32) and put in frame_seq order:
//!   older or repeated frames are dropped (`stale`); a gap (frames lost in transit, a
//!   NATS node dying) is counted (`frames_lost`) and every client waits for the next
//!   keyframe, which is requested upstream at once.
//! - Keyframe requests from this server's clients go to the publishing server on
//!   `video.<stream>.idr`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::Notify;

use super::client::wait_connected;
use super::video::{ChunkId, NatsVideoTarget, Reassembler, ReceivedFrame, CHUNK_HEADER};
use crate::hub::Hub;
use crate::keyframe::KeyframeRequests;
use crate::message::VideoFrame;
use crate::metrics::Metrics;

/// How long fetching the stored keyframe may take at start.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts at reading a chunked stored keyframe while a newer one is being stored.
const FETCH_ATTEMPTS: usize = 3;
/// A frame_seq this far behind the newest one is a restarted publisher, not a late
/// delivery.
const RESTART_DISTANCE: u64 = 1000;
/// Least time between two log lines about the same kind of trouble.
const LOG_EVERY: Duration = Duration::from_secs(2);

/// Settings of `--source`.
#[derive(Clone, Debug)]
pub struct NatsSourceOptions {
    /// Servers and the live subject.
    pub target: NatsVideoTarget,
    /// Check each frame's CRC-32.
    pub verify_crc: bool,
    /// Largest frame payload accepted, in bytes.
    pub max_frame: usize,
}

/// Where the next frame stands relative to the last one handed to the hub.
#[derive(Debug, PartialEq, Eq)]
enum Order {
    /// The first frame, or the one after the last.
    Next,
    /// `missing` frames are missing before this one.
    Gap { missing: u64 },
    /// Not newer than the last one: drop it.
    Stale,
    /// Far behind: the publisher restarted its numbering.
    Restart,
}

fn order(last: Option<u64>, seq: u64) -> Order {
    match last {
        None => Order::Next,
        Some(last) if seq == last.wrapping_add(1) => Order::Next,
        Some(last) if seq > last => Order::Gap {
            missing: seq - last - 1,
        },
        Some(last) if last - seq < RESTART_DISTANCE => Order::Stale,
        Some(_) => Order::Restart,
    }
}

fn chunk_header(headers: Option<&HeaderMap>) -> Option<&str> {
    headers.and_then(|h| h.get(CHUNK_HEADER)).map(|v| v.as_str())
}

/// Reads the newest stored keyframe of `target` from JetStream, if there is one.
async fn fetch_stored_keyframe(
    js: &jetstream::Context,
    options: &NatsSourceOptions,
) -> Result<Option<ReceivedFrame>, String> {
    let target = &options.target;
    let stream = match js.get_stream(target.keyframe_stream()).await {
        Ok(s) => s,
        Err(e) => return Err(format!("no JetStream stream {}: {e}", target.keyframe_stream())),
    };
    let mut last_error = String::new();
    for _ in 0..FETCH_ATTEMPTS {
        let first = match stream.direct_get_last_for_subject(target.keyframe_subject(0)).await {
            Ok(m) => m,
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let mut reassembler = Reassembler::new(options.max_frame, options.verify_crc);
        let header = chunk_header(Some(&first.headers)).map(str::to_owned);
        let mut result = reassembler.push(header.as_deref(), &first.payload);
        if let (Ok(None), Some(id)) = (&result, header.as_deref().and_then(|h| ChunkId::parse(h).ok())) {
            for i in 1..id.count {
                let m = stream
                    .direct_get_last_for_subject(target.keyframe_subject(i))
                    .await
                    .map_err(|e| e.to_string())?;
                result = reassembler.push(chunk_header(Some(&m.headers)), &m.payload);
                if !matches!(result, Ok(None)) {
                    break;
                }
            }
        }
        match result {
            Ok(Some(frame)) if frame.keyframe => return Ok(Some(frame)),
            Ok(Some(frame)) => return Err(format!("stored frame {} is not a keyframe", frame.frame_seq)),
            Ok(None) => last_error = "stored keyframe is incomplete".into(),
            // A newer keyframe was being stored while we read: read again.
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(last_error)
}

/// The source's role name in logs.
pub(crate) fn role(options: &NatsSourceOptions) -> String {
    format!("source {}", options.target.subject)
}

/// Tells `/health` the stream is down ("writer_down") while NATS is, until frames flow
/// again.
pub(crate) fn on_state(metrics: Arc<Metrics>) -> impl Fn(bool) + Send + Sync + 'static {
    move |connected| {
        if !connected {
            metrics.writer_alive.store(0, Ordering::Relaxed);
        }
    }
}

/// Runs the source over `client` until the process ends.
pub(crate) async fn run(
    options: NatsSourceOptions,
    client: Client,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    keyframes: Arc<KeyframeRequests>,
) {
    let target = options.target.clone();
    let role = role(&options);
    // Keyframe requests of this server's clients go upstream.
    let want_idr = Arc::new(Notify::new());
    let notify = want_idr.clone();
    keyframes.set_direct(Box::new(move || notify.notify_one()));

    let mut sub = loop {
        match client.subscribe(target.subject.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::error!("{role}: cannot subscribe: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    tracing::info!("{role}: serving frames from NATS subject {}", target.subject);

    let mut last_seq: Option<u64> = None;
    // Set while the last frame came from the store: the gap to the first live frame
    // is not a loss.
    let mut from_store = false;
    let js = jetstream::new(client.clone());
    // A JetStream request sent before the connection is up can go unanswered.
    wait_connected(&client, &role, &target.servers).await;
    match tokio::time::timeout(FETCH_TIMEOUT, fetch_stored_keyframe(&js, &options)).await {
        Ok(Ok(Some(frame))) => {
            metrics.nats_video.keyframes_fetched.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                "{role}: started from the stored keyframe {} ({} bytes)",
                frame.frame_seq,
                frame.message.len() - 1
            );
            last_seq = Some(frame.frame_seq);
            from_store = true;
            deliver(&hub, &metrics, frame);
        }
        Ok(Ok(None)) => tracing::info!("{role}: no stored keyframe yet; clients start at the next live one"),
        Ok(Err(e)) => tracing::warn!("{role}: stored keyframe unusable: {e}; clients start at the next live one"),
        Err(_) => tracing::warn!(
            "{role}: JetStream did not answer within {FETCH_TIMEOUT:?}; clients start at the next live one"
        ),
    }

    let idr_subject = target.idr_subject();
    let mut reassembler = Reassembler::new(options.max_frame, options.verify_crc);
    let mut last_bad_log: Option<Instant> = None;
    let mut last_gap_log: Option<Instant> = None;
    loop {
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else {
                    tracing::error!("{role}: subscription ended; no more frames");
                    return;
                };
                let frame = match reassembler.push(chunk_header(msg.headers.as_ref()), &msg.payload) {
                    Ok(Some(f)) => f,
                    Ok(None) => continue,
                    Err(e) => {
                        metrics.nats_video.malformed.fetch_add(1, Ordering::Relaxed);
                        if last_bad_log.is_none_or(|t| t.elapsed() > LOG_EVERY) {
                            last_bad_log = Some(Instant::now());
                            tracing::warn!("{role}: dropped a NATS video message: {e}");
                        }
                        continue;
                    }
                };
                match order(last_seq, frame.frame_seq) {
                    Order::Next => {}
                    Order::Stale => {
                        metrics.nats_video.stale.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Order::Gap { missing } => {
                        if !from_store {
                            metrics.nats_video.frames_lost.fetch_add(missing, Ordering::Relaxed);
                            if last_gap_log.is_none_or(|t| t.elapsed() > LOG_EVERY) {
                                last_gap_log = Some(Instant::now());
                                tracing::warn!(
                                    "{role}: {missing} frames lost before frame {}; clients resume at the next keyframe",
                                    frame.frame_seq
                                );
                            }
                        }
                        hub.discontinuity();
                    }
                    Order::Restart => {
                        tracing::info!("{role}: the publisher restarted its frame numbering at {}", frame.frame_seq);
                        hub.discontinuity();
                    }
                }
                from_store = false;
                last_seq = Some(frame.frame_seq);
                deliver(&hub, &metrics, frame);
            }
            () = want_idr.notified() => {
                let body = serde_json::json!({ "source": "transport-server", "ts_ns": shmring_core::monotonic_ns() });
                match client.publish(idr_subject.clone(), Bytes::from(body.to_string())).await {
                    Ok(()) => { metrics.nats_video.idr_requests_sent.fetch_add(1, Ordering::Relaxed); }
                    Err(e) => tracing::debug!("{role}: keyframe request not sent: {e}"),
                }
            }
        }
    }
}

fn deliver(hub: &Hub, metrics: &Metrics, frame: ReceivedFrame) {
    let now = shmring_core::monotonic_ns();
    metrics.nats_video.frames_received.fetch_add(1, Ordering::Relaxed);
    metrics.frames_read.fetch_add(1, Ordering::Relaxed);
    metrics.shm_seq.store(frame.frame_seq, Ordering::Relaxed);
    metrics.last_frame_ns.store(now, Ordering::Relaxed);
    metrics.writer_alive.store(1, Ordering::Relaxed);
    hub.publish_video(VideoFrame {
        message: frame.message,
        keyframe: frame.keyframe,
        frame_seq: frame.frame_seq,
        read_ns: now,
        // The publisher's clock: not comparable with this server's CLOCK_MONOTONIC in
        // general, so frames from NATS are left out of the commit-to-send histogram.
        commit_ns: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_order() {
        assert_eq!(order(None, 7), Order::Next);
        assert_eq!(order(Some(7), 8), Order::Next);
        assert_eq!(order(Some(7), 10), Order::Gap { missing: 2 });
        assert_eq!(order(Some(7), 7), Order::Stale);
        assert_eq!(order(Some(7), 3), Order::Stale);
        assert_eq!(order(Some(5000), 1), Order::Restart);
        assert_eq!(order(Some(u64::MAX), 0), Order::Next);
    }
}
