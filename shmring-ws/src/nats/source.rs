//! `transport-server --source`: the frames of a stream another server publishes on
//! NATS (`video.<stream>`) feed this server's hub, in place of a ring reader thread;
//! browsers get the same keyframe wait and GOP cache.
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

use super::connection::{subscribe_retrying, wait_connected};
use super::video::{ChunkId, NatsVideoError, NatsVideoTarget, Reassembler, ReceivedFrame, CHUNK_HEADER};
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
    /// Each frame's frame_id is its time in ns (as for [`crate::RingSource`]): Foxglove
    /// messages carry it as their timestamp.
    pub frame_id_is_time: bool,
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

/// Why the stored keyframe could not be used.
#[derive(Debug)]
enum StoredKeyframeError {
    /// JetStream has no keyframe store for the stream.
    NoStream {
        stream: String,
        source: jetstream::context::GetStreamError,
    },
    /// Reading a chunk failed.
    Get(jetstream::stream::DirectGetError),
    /// The stored frame is not a keyframe.
    NotKeyframe { frame_seq: u64 },
    /// Chunks were missing.
    Incomplete,
    /// The chunks did not make a frame (a newer keyframe was being stored meanwhile, or
    /// they are damaged).
    Damaged(NatsVideoError),
}

impl std::fmt::Display for StoredKeyframeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredKeyframeError::NoStream { stream, source } => write!(f, "no JetStream stream {stream}: {source}"),
            StoredKeyframeError::Get(e) => e.fmt(f),
            StoredKeyframeError::NotKeyframe { frame_seq } => write!(f, "stored frame {frame_seq} is not a keyframe"),
            StoredKeyframeError::Incomplete => f.write_str("stored keyframe is incomplete"),
            StoredKeyframeError::Damaged(e) => e.fmt(f),
        }
    }
}

/// Reads the newest stored keyframe of `target` from JetStream, if there is one.
async fn fetch_stored_keyframe(
    js: &jetstream::Context,
    options: &NatsSourceOptions,
) -> Result<Option<ReceivedFrame>, StoredKeyframeError> {
    let target = &options.target;
    let stream = js
        .get_stream(target.keyframe_stream())
        .await
        .map_err(|source| StoredKeyframeError::NoStream {
            stream: target.keyframe_stream(),
            source,
        })?;
    let mut last_error = StoredKeyframeError::Incomplete;
    for _ in 0..FETCH_ATTEMPTS {
        let first = match stream.direct_get_last_for_subject(target.keyframe_subject(0)).await {
            Ok(m) => m,
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoredKeyframeError::Get(e)),
        };
        let mut reassembler = Reassembler::new(options.max_frame, options.verify_crc);
        let header = chunk_header(Some(&first.headers)).map(str::to_owned);
        let mut result = reassembler.push(header.as_deref(), &first.payload);
        if let (Ok(None), Some(id)) = (&result, header.as_deref().and_then(|h| ChunkId::parse(h).ok())) {
            for i in 1..id.count {
                let m = stream
                    .direct_get_last_for_subject(target.keyframe_subject(i))
                    .await
                    .map_err(StoredKeyframeError::Get)?;
                result = reassembler.push(chunk_header(Some(&m.headers)), &m.payload);
                if !matches!(result, Ok(None)) {
                    break;
                }
            }
        }
        match result {
            Ok(Some(frame)) if frame.keyframe => return Ok(Some(frame)),
            Ok(Some(frame)) => {
                return Err(StoredKeyframeError::NotKeyframe {
                    frame_seq: frame.frame_seq,
                })
            }
            Ok(None) => last_error = StoredKeyframeError::Incomplete,
            // A newer keyframe was being stored while we read: read again.
            Err(e) => last_error = StoredKeyframeError::Damaged(e),
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
    let role = role(&options);
    // Keyframe requests of this server's clients go upstream.
    let want_idr = Arc::new(Notify::new());
    let notify = want_idr.clone();
    keyframes.set_direct(Box::new(move || notify.notify_one()));

    let target = &options.target;
    let mut sub = subscribe_retrying(&client, &target.subject, &role).await;
    tracing::info!("{role}: serving frames from NATS subject {}", target.subject);
    // A JetStream request sent before the connection is up can go unanswered.
    wait_connected(&client, &role, &target.servers).await;

    let mut feed = Feed::new(&options, role, hub, metrics);
    if let Some(frame) = stored_keyframe(&client, &options, &feed.role).await {
        feed.start_from_store(frame);
    }
    let idr_subject = target.idr_subject();
    loop {
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else {
                    tracing::error!("{}: subscription ended; no more frames", feed.role);
                    return;
                };
                feed.on_message(&msg);
            }
            () = want_idr.notified() => request_keyframe_upstream(&client, &idr_subject, &feed).await,
        }
    }
}

/// The newest keyframe kept in JetStream, if there is one and it can be read in time.
async fn stored_keyframe(client: &Client, options: &NatsSourceOptions, role: &str) -> Option<ReceivedFrame> {
    let js = jetstream::new(client.clone());
    match tokio::time::timeout(FETCH_TIMEOUT, fetch_stored_keyframe(&js, options)).await {
        Ok(Ok(Some(frame))) => return Some(frame),
        Ok(Ok(None)) => tracing::info!("{role}: no stored keyframe yet; clients start at the next live one"),
        Ok(Err(e)) => tracing::warn!("{role}: stored keyframe unusable: {e}; clients start at the next live one"),
        Err(_) => tracing::warn!(
            "{role}: JetStream did not answer within {FETCH_TIMEOUT:?}; clients start at the next live one"
        ),
    }
    None
}

async fn request_keyframe_upstream(client: &Client, idr_subject: &str, feed: &Feed) {
    let body = serde_json::json!({ "source": "transport-server", "ts_ns": shmring_core::monotonic_ns() });
    match client
        .publish(idr_subject.to_owned(), Bytes::from(body.to_string()))
        .await
    {
        Ok(()) => {
            feed.metrics.nats_video.idr_requests_sent.inc();
        }
        Err(e) => tracing::debug!("{}: keyframe request not sent: {e}", feed.role),
    }
}

/// The live subject's messages on their way to the hub: reassembled, put in frame_seq
/// order, counted.
struct Feed {
    role: String,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    frame_id_is_time: bool,
    reassembler: Reassembler,
    last_seq: Option<u64>,
    /// Set while the last frame came from the store: the gap to the first live frame
    /// is not a loss.
    from_store: bool,
    last_bad_log: Option<Instant>,
    last_gap_log: Option<Instant>,
}

impl Feed {
    fn new(options: &NatsSourceOptions, role: String, hub: Arc<Hub>, metrics: Arc<Metrics>) -> Self {
        Feed {
            role,
            hub,
            metrics,
            frame_id_is_time: options.frame_id_is_time,
            reassembler: Reassembler::new(options.max_frame, options.verify_crc),
            last_seq: None,
            from_store: false,
            last_bad_log: None,
            last_gap_log: None,
        }
    }

    /// Hands the stored keyframe to the hub before any live frame.
    fn start_from_store(&mut self, frame: ReceivedFrame) {
        self.metrics.nats_video.keyframes_fetched.inc();
        tracing::info!(
            "{}: started from the stored keyframe {} ({} bytes)",
            self.role,
            frame.frame_seq,
            frame.message.len() - 1
        );
        self.last_seq = Some(frame.frame_seq);
        self.from_store = true;
        // A stored keyframe may be minutes old: it shows a picture, it does not prove the
        // video fresh (the safety gate stays closed until a live frame arrives).
        deliver(
            &self.hub,
            &self.metrics,
            frame,
            self.frame_id_is_time,
            Freshness::Unknown,
        );
    }

    /// One message of the live subject: a whole frame, a chunk of one, or garbage.
    fn on_message(&mut self, msg: &async_nats::Message) {
        let frame = match self.reassembler.push(chunk_header(msg.headers.as_ref()), &msg.payload) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                self.metrics.nats_video.malformed.inc();
                if self.last_bad_log.is_none_or(|t| t.elapsed() > LOG_EVERY) {
                    self.last_bad_log = Some(Instant::now());
                    tracing::warn!("{}: dropped a NATS video message: {e}", self.role);
                }
                return;
            }
        };
        self.on_frame(frame);
    }

    /// A reassembled frame: dropped if stale, otherwise handed to the hub, after a
    /// discontinuity if frames are missing before it.
    fn on_frame(&mut self, frame: ReceivedFrame) {
        match order(self.last_seq, frame.frame_seq) {
            Order::Next => {}
            Order::Stale => {
                self.metrics.nats_video.stale.inc();
                return;
            }
            Order::Gap { missing } => {
                if !self.from_store {
                    self.count_lost(missing, frame.frame_seq);
                }
                self.hub.discontinuity();
            }
            Order::Restart => {
                tracing::info!(
                    "{}: the publisher restarted its frame numbering at {}",
                    self.role,
                    frame.frame_seq
                );
                self.hub.discontinuity();
            }
        }
        self.from_store = false;
        self.last_seq = Some(frame.frame_seq);
        deliver(&self.hub, &self.metrics, frame, self.frame_id_is_time, Freshness::Live);
    }

    fn count_lost(&mut self, missing: u64, before: u64) {
        self.metrics.nats_video.frames_lost.add(missing);
        if self.last_gap_log.is_none_or(|t| t.elapsed() > LOG_EVERY) {
            self.last_gap_log = Some(Instant::now());
            tracing::warn!(
                "{}: {missing} frames lost before frame {before}; clients resume at the next keyframe",
                self.role
            );
        }
    }
}

/// Whether a frame from NATS proves the video fresh to the safety gate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// Published just now on the live subject.
    Live,
    /// Read from the keyframe store: of unknown age.
    Unknown,
}

fn deliver(hub: &Hub, metrics: &Metrics, frame: ReceivedFrame, frame_id_is_time: bool, freshness: Freshness) {
    let now = shmring_core::monotonic_ns();
    metrics.nats_video.frames_received.inc();
    metrics.frames_read.inc();
    metrics.shm_seq.store(frame.frame_seq, Ordering::Relaxed);
    if freshness == Freshness::Live {
        // SYNC POINT: none needed; the gate reads this clock with Relaxed loads and
        // only compares times (fetch_max, as the ring reader does).
        metrics.last_frame_ns.fetch_max(now, Ordering::Relaxed);
        metrics.writer_alive.store(1, Ordering::Relaxed);
    }
    hub.publish_video(VideoFrame {
        message: frame.message,
        keyframe: frame.keyframe,
        frame_seq: frame.frame_seq,
        read_ns: now,
        // The publisher's clock: not comparable with this server's CLOCK_MONOTONIC in
        // general, so frames from NATS are left out of the commit-to-send histogram.
        commit_ns: None,
        time_ns: frame_id_is_time.then_some(frame.frame_id),
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
