//! The fan-out hub: hands each frame, as one shared [`Bytes`] buffer, to every client's
//! bounded, keyframe-gated queue, and keeps the GOP cache new clients start from.
//!
//! Locking: the hub's client list and GOP cache sit under one mutex, taken by the ring
//! reader thread once per frame and by clients joining or leaving; each client's queue
//! has its own mutex, shared only with that client's writer task. Joining copies the
//! GOP cache into the new queue under the hub lock, so a client sees every frame after
//! its GOP, in order, with no gap and no duplicate.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::keyframe::KeyframeRequests;
use crate::metrics::{DropReason, Metrics};

/// A video frame ready to send: the whole WebSocket message
/// (`[0x01][32-byte frame header][payload]`), built once and shared by every client.
#[derive(Clone, Debug)]
pub struct VideoFrame {
    /// The complete binary message.
    pub message: Bytes,
    /// True if a decoder can start at this frame.
    pub keyframe: bool,
    /// The ring's frame_seq.
    pub frame_seq: u64,
    /// CLOCK_MONOTONIC ns when the reader thread took the frame out of the ring.
    pub read_ns: u64,
}

/// One message waiting in a client's queue.
#[derive(Clone, Debug)]
pub enum Outgoing {
    /// A video frame (subject to keyframe gating).
    Video(VideoFrame),
    /// A telemetry message (`[0x02]...`), never gated.
    Telemetry(Bytes),
}

impl Outgoing {
    /// The WebSocket message bytes.
    pub fn message(&self) -> &Bytes {
        match self {
            Outgoing::Video(f) => &f.message,
            Outgoing::Telemetry(b) => b,
        }
    }
}

/// Why the server closes a client: a WebSocket close code and a reason text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseReason {
    /// RFC 6455 close code.
    pub code: u16,
    /// Human-readable reason (at most 123 bytes are sent).
    pub reason: String,
}

/// Limits of one client's queue.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    /// Most messages waiting.
    pub max_frames: usize,
    /// Most message bytes waiting.
    pub max_bytes: usize,
    /// A client skipping delta frames while it waits for a keyframe for longer than
    /// this is closed.
    pub keyframe_timeout: Duration,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Outgoing>,
    bytes: usize,
    /// Skip delta frames until a keyframe arrives.
    awaiting_keyframe: bool,
    /// When the client first skipped a delta frame in its current wait.
    skipping_since: Option<Instant>,
    close: Option<CloseReason>,
    /// Bytes to write before anything else (WebSocket control frames: pongs, the close
    /// reply), formatted by the connection's protocol reader.
    control: Vec<u8>,
    /// Write what is pending, then end the connection without a close frame of our own.
    end: bool,
    /// Messages and bytes of the GOP burst queued at join, allowed on top of the limits
    /// until the writer takes them.
    credit_frames: usize,
    credit_bytes: usize,
}

/// Most frames the GOP cache holds (a longer GOP is not cached: new clients then wait
/// for the next keyframe, which is requested).
pub const GOP_CACHE_MAX_FRAMES: usize = 1024;
/// Most bytes the GOP cache holds.
pub const GOP_CACHE_MAX_BYTES: usize = 64 << 20;

/// Most control-frame bytes a client may have waiting (pongs to its pings, ...): a
/// client that pings faster than it reads is cut off.
const MAX_CONTROL_BYTES: usize = 64 << 10;

/// One client's queue, shared between the hub and the client's writer task.
#[derive(Debug)]
pub struct ClientQueue {
    id: u64,
    state: Mutex<QueueState>,
    notify: Notify,
    /// Frames this client did not get (overflow and keyframe waits).
    dropped: AtomicU64,
}

/// What a writer task takes from its queue in one go.
#[derive(Debug, Default)]
pub struct Batch {
    /// Messages to write, in order.
    pub items: Vec<Outgoing>,
    /// Set when the client must be closed (after `items` are written).
    pub close: Option<CloseReason>,
    /// Control frames to write first.
    pub control: Vec<u8>,
    /// End the connection after writing, without sending a close frame.
    pub end: bool,
}

impl Batch {
    /// Empties the batch for reuse.
    pub fn clear(&mut self) {
        self.items.clear();
        self.close = None;
        self.control.clear();
        self.end = false;
    }
}

impl ClientQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client's id (unique in this hub).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Frames this client lost to overflow or keyframe waits.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until there is something to write or a close is due, and takes all of it.
    pub async fn next_batch(&self, into: &mut Batch) {
        loop {
            {
                let mut s = self.lock();
                if !s.items.is_empty() || s.close.is_some() || !s.control.is_empty() || s.end {
                    into.items.extend(s.items.drain(..));
                    s.bytes = 0;
                    into.close = s.close.clone();
                    into.control.append(&mut s.control);
                    into.end = s.end;
                    s.credit_frames = 0;
                    s.credit_bytes = 0;
                    return;
                }
            }
            // `notify_one` stores a permit when nobody waits, so a push between the
            // check above and this await is not lost.
            self.notify.notified().await;
        }
    }

    /// Asks the writer task to close the client (used for protocol abuse).
    pub fn close(&self, reason: CloseReason) {
        let mut s = self.lock();
        if s.close.is_none() {
            s.close = Some(reason);
        }
        drop(s);
        self.notify.notify_one();
    }

    /// Queues already formatted control-frame bytes; fails if too many are waiting.
    pub fn push_control(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut s = self.lock();
        if s.control.len() + bytes.len() > MAX_CONTROL_BYTES {
            return Err(std::io::Error::other("too many control frames waiting"));
        }
        s.control.extend_from_slice(bytes);
        drop(s);
        self.notify.notify_one();
        Ok(())
    }

    /// Asks the writer task to write what is pending and end the connection (the
    /// client closed it, or the connection failed).
    pub fn end(&self) {
        self.lock().end = true;
        self.notify.notify_one();
    }

    /// Queues `item`, applying gating and limits. Returns true if a keyframe should be
    /// requested for this client.
    fn push(&self, item: &Outgoing, limits: &QueueLimits, metrics: &Metrics) -> bool {
        let mut s = self.lock();
        if s.close.is_some() {
            return false;
        }
        let mut want_keyframe = false;
        if let Outgoing::Video(frame) = item {
            if frame.keyframe {
                s.awaiting_keyframe = false;
                s.skipping_since = None;
            } else if s.awaiting_keyframe {
                let now = Instant::now();
                let since = *s.skipping_since.get_or_insert(now);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                metrics.dropped(DropReason::AwaitingKeyframe, 1);
                if now.duration_since(since) > limits.keyframe_timeout {
                    s.close = Some(CloseReason {
                        code: 1013,
                        reason: format!(
                            "no keyframe for {} ms after falling behind; reconnect",
                            limits.keyframe_timeout.as_millis()
                        ),
                    });
                    drop(s);
                    self.notify.notify_one();
                    return false;
                }
                return true;
            }
        }
        let len = item.message().len();
        if s.items.len() + 1 > limits.max_frames + s.credit_frames || s.bytes + len > limits.max_bytes + s.credit_bytes
        {
            // Overflow: drop what is waiting. Video resumes at a keyframe, so the
            // client's decoder never sees a frame whose reference it lacks.
            let lost_video = s.items.iter().filter(|i| matches!(i, Outgoing::Video(_))).count() as u64;
            let lost_other = s.items.len() as u64 - lost_video;
            s.items.clear();
            s.bytes = 0;
            s.credit_frames = 0;
            s.credit_bytes = 0;
            metrics.dropped(DropReason::Telemetry, lost_other);
            match item {
                Outgoing::Video(f) if f.keyframe => {
                    metrics.dropped(DropReason::QueueOverflow, lost_video);
                    self.dropped.fetch_add(lost_video, Ordering::Relaxed);
                }
                Outgoing::Video(_) => {
                    metrics.dropped(DropReason::QueueOverflow, lost_video + 1);
                    self.dropped.fetch_add(lost_video + 1, Ordering::Relaxed);
                    s.awaiting_keyframe = true;
                    s.skipping_since = Some(Instant::now());
                    return true;
                }
                Outgoing::Telemetry(_) => {
                    metrics.dropped(DropReason::QueueOverflow, lost_video);
                    self.dropped.fetch_add(lost_video, Ordering::Relaxed);
                    if lost_video > 0 {
                        s.awaiting_keyframe = true;
                        s.skipping_since = Some(Instant::now());
                        want_keyframe = true;
                    }
                }
            }
        }
        s.bytes += len;
        s.items.push_back(item.clone());
        drop(s);
        self.notify.notify_one();
        want_keyframe
    }
}

#[derive(Debug, Default)]
struct HubState {
    clients: Vec<Arc<ClientQueue>>,
    /// The newest keyframe and every frame after it, while they fit the queue limits.
    gop: Vec<VideoFrame>,
    gop_bytes: usize,
}

/// The fan-out point between the ring reader and the WebSocket clients.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<HubState>,
    limits: QueueLimits,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
    keyframes: Arc<KeyframeRequests>,
}

impl Hub {
    /// A hub with the given per-client limits.
    pub fn new(limits: QueueLimits, metrics: Arc<Metrics>, keyframes: Arc<KeyframeRequests>) -> Self {
        Hub {
            state: Mutex::new(HubState::default()),
            limits,
            next_id: AtomicU64::new(1),
            metrics,
            keyframes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new client. Its queue starts with the GOP cache (the newest keyframe
    /// and the frames after it), so its picture appears at once; without a cached
    /// keyframe it waits for the next one, and one is requested.
    pub fn join(&self) -> Arc<ClientQueue> {
        let client = Arc::new(ClientQueue {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
        });
        let mut hub = self.lock();
        let need_keyframe = {
            let mut q = client.lock();
            if hub.gop.is_empty() {
                q.awaiting_keyframe = true;
                true
            } else {
                q.items.extend(hub.gop.iter().cloned().map(Outgoing::Video));
                q.bytes = hub.gop_bytes;
                // The burst does not count against the queue limits.
                q.credit_frames = hub.gop.len();
                q.credit_bytes = hub.gop_bytes;
                false
            }
        };
        hub.clients.push(client.clone());
        drop(hub);
        if need_keyframe {
            self.keyframes.request("new client, no keyframe cached");
        }
        client.notify.notify_one();
        client
    }

    /// Removes a client (when its connection ends).
    pub fn leave(&self, client: &ClientQueue) {
        let mut hub = self.lock();
        if let Some(i) = hub.clients.iter().position(|c| c.id == client.id) {
            hub.clients.swap_remove(i);
        }
    }

    /// Connected clients.
    pub fn client_count(&self) -> usize {
        self.lock().clients.len()
    }

    /// Hands a video frame to every client and updates the GOP cache.
    pub fn publish_video(&self, frame: VideoFrame) {
        let mut hub = self.lock();
        let len = frame.message.len();
        if frame.keyframe {
            hub.gop.clear();
            hub.gop_bytes = 0;
        }
        // Cache only a GOP that starts at a keyframe and fits the cache limits.
        let fits = hub.gop.len() < GOP_CACHE_MAX_FRAMES && hub.gop_bytes + len <= GOP_CACHE_MAX_BYTES;
        if (frame.keyframe || !hub.gop.is_empty()) && fits {
            hub.gop_bytes += len;
            hub.gop.push(frame.clone());
        } else if !fits {
            hub.gop.clear();
            hub.gop_bytes = 0;
        }
        self.push_to_all(hub, Outgoing::Video(frame));
    }

    /// Hands a telemetry message to every client.
    pub fn publish_telemetry(&self, message: Bytes) {
        self.push_to_all(self.lock(), Outgoing::Telemetry(message));
    }

    /// Queues `item` for every client, then (with the lock released) asks the producer
    /// for a keyframe if a client overflowed.
    fn push_to_all(&self, hub: MutexGuard<'_, HubState>, item: Outgoing) {
        let mut want_keyframe = false;
        for client in &hub.clients {
            want_keyframe |= client.push(&item, &self.limits, &self.metrics);
        }
        drop(hub);
        if want_keyframe {
            self.keyframes.request("a client fell behind");
        }
    }

    /// The stream was interrupted (a new writer, a replaced ring): forget the GOP cache
    /// and make every client wait for the next keyframe, so no decoder is fed a frame
    /// whose reference belongs to another stream.
    pub fn discontinuity(&self) {
        let mut hub = self.lock();
        hub.gop.clear();
        hub.gop_bytes = 0;
        for client in &hub.clients {
            let mut q = client.lock();
            q.awaiting_keyframe = true;
            q.skipping_since = None;
        }
        drop(hub);
        self.keyframes.request("stream discontinuity");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, keyframe: bool, len: usize) -> VideoFrame {
        VideoFrame {
            message: Bytes::from(vec![seq as u8; len]),
            keyframe,
            frame_seq: seq,
            read_ns: 0,
        }
    }

    fn hub(max_frames: usize) -> Hub {
        let metrics = Arc::new(Metrics::default());
        let keyframes = Arc::new(KeyframeRequests::new(Duration::from_millis(500), metrics.clone()));
        let limits = QueueLimits {
            max_frames,
            max_bytes: 1 << 20,
            keyframe_timeout: Duration::from_secs(5),
        };
        Hub::new(limits, metrics, keyframes)
    }

    fn take(c: &ClientQueue) -> Vec<u64> {
        let mut s = c.lock();
        let seqs = s
            .items
            .drain(..)
            .map(|i| match i {
                Outgoing::Video(f) => f.frame_seq,
                Outgoing::Telemetry(_) => 0,
            })
            .collect();
        s.bytes = 0;
        seqs
    }

    #[test]
    fn new_client_starts_from_the_gop_cache() {
        let h = hub(100);
        h.publish_video(frame(1, false, 10));
        h.publish_video(frame(2, true, 10));
        h.publish_video(frame(3, false, 10));
        let c = h.join();
        h.publish_video(frame(4, false, 10));
        assert_eq!(take(&c), vec![2, 3, 4]);
    }

    #[test]
    fn the_join_burst_does_not_count_against_the_limits() {
        let h = hub(4);
        h.publish_video(frame(1, true, 10));
        for seq in 2..=10 {
            h.publish_video(frame(seq, false, 10));
        }
        let c = h.join();
        h.publish_video(frame(11, false, 10));
        h.publish_video(frame(12, false, 10));
        assert_eq!(take(&c), (1..=12).collect::<Vec<_>>());
        assert_eq!(c.dropped(), 0);
    }

    #[test]
    fn a_client_starved_of_keyframes_is_closed_with_a_reason() {
        let metrics = Arc::new(Metrics::default());
        let keyframes = Arc::new(KeyframeRequests::new(Duration::from_millis(500), metrics.clone()));
        let limits = QueueLimits {
            max_frames: 10,
            max_bytes: 1 << 20,
            keyframe_timeout: Duration::from_millis(20),
        };
        let h = Hub::new(limits, metrics, keyframes);
        let c = h.join(); // no keyframe cached: waits for one
        h.publish_video(frame(1, false, 10));
        std::thread::sleep(Duration::from_millis(30));
        h.publish_video(frame(2, false, 10));
        let close = c.lock().close.clone().expect("closed");
        assert_eq!(close.code, 1013);
        assert!(close.reason.contains("no keyframe"));
    }

    #[test]
    fn client_without_cached_keyframe_waits_for_one() {
        let h = hub(100);
        let c = h.join();
        h.publish_video(frame(1, false, 10));
        h.publish_video(frame(2, true, 10));
        assert_eq!(take(&c), vec![2]);
        assert_eq!(c.dropped(), 1);
    }

    #[test]
    fn overflow_drops_one_client_to_the_next_keyframe_only() {
        let h = hub(4);
        let slow = h.join();
        let fast = h.join();
        h.publish_video(frame(1, true, 10));
        let mut fast_seen = take(&fast);
        for seq in 2..=10 {
            h.publish_video(frame(seq, seq == 8, 10));
            fast_seen.extend(take(&fast));
        }
        assert_eq!(fast_seen, (1..=10).collect::<Vec<_>>());
        // The slow one overflowed at frame 5, skipped 6 and 7, resumed at keyframe 8.
        assert_eq!(take(&slow), vec![8, 9, 10]);
        assert_eq!(slow.dropped(), 7);
    }
}
