//! The counters of the NATS video publisher and source (`shmring_ws_nats_*`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{counter, Family};

/// Counters of the NATS video publisher and source, shown on `/metrics` as
/// `shmring_ws_nats_*`.
#[derive(Debug, Default)]
pub(crate) struct NatsVideoMetrics {
    /// Frames published on the live subject.
    pub(crate) frames_published: AtomicU64,
    /// NATS messages those frames took (more than frames when chunked).
    pub(crate) chunks_published: AtomicU64,
    /// Frames that could not be published (NATS refused them, or too large).
    pub(crate) publish_errors: AtomicU64,
    /// Frames the publisher skipped because NATS did not keep up (it resumes at the
    /// next keyframe).
    pub(crate) publish_skipped: AtomicU64,
    /// Keyframes stored in JetStream (acknowledged).
    pub(crate) keyframes_stored: AtomicU64,
    /// Keyframes JetStream did not acknowledge.
    pub(crate) keyframe_store_errors: AtomicU64,
    /// Keyframe requests received from subscribing servers.
    pub(crate) idr_requests_received: AtomicU64,
    /// Frames received from the live subject and handed to clients.
    pub(crate) frames_received: AtomicU64,
    /// Frames missing between received ones (gaps in frame_seq), lost in transit.
    pub(crate) frames_lost: AtomicU64,
    /// Messages that were malformed, damaged or broke a chunk run.
    pub(crate) malformed: AtomicU64,
    /// Frames older than one already received (duplicates, late deliveries), dropped.
    pub(crate) stale: AtomicU64,
    /// Stored keyframes fetched from JetStream at start.
    pub(crate) keyframes_fetched: AtomicU64,
    /// Keyframe requests sent upstream.
    pub(crate) idr_requests_sent: AtomicU64,
    /// Slow-consumer events the NATS client reported (messages dropped locally).
    pub(crate) slow_consumer_events: AtomicU64,
    /// Times the NATS video connection was lost (async-nats then reconnects).
    pub(crate) disconnects: AtomicU64,
}

/// The NATS video counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsVideoSnapshot {
    /// Frames published on the live subject.
    pub frames_published: u64,
    /// NATS messages those frames took (more than frames when chunked).
    pub chunks_published: u64,
    /// Frames that could not be published (NATS refused them, or too large).
    pub publish_errors: u64,
    /// Frames the publisher skipped because NATS did not keep up (it resumes at the
    /// next keyframe).
    pub publish_skipped: u64,
    /// Keyframes stored in JetStream (acknowledged).
    pub keyframes_stored: u64,
    /// Keyframes JetStream did not acknowledge.
    pub keyframe_store_errors: u64,
    /// Keyframe requests received from subscribing servers.
    pub idr_requests_received: u64,
    /// Frames received from the live subject and handed to clients.
    pub frames_received: u64,
    /// Frames missing between received ones (gaps in frame_seq), lost in transit.
    pub frames_lost: u64,
    /// Messages that were malformed, damaged or broke a chunk run.
    pub malformed: u64,
    /// Frames older than one already received (duplicates, late deliveries), dropped.
    pub stale: u64,
    /// Stored keyframes fetched from JetStream at start.
    pub keyframes_fetched: u64,
    /// Keyframe requests sent upstream.
    pub idr_requests_sent: u64,
    /// Slow-consumer events the NATS client reported (messages dropped locally).
    pub slow_consumer_events: u64,
    /// Times the NATS video connection was lost (async-nats then reconnects).
    pub disconnects: u64,
}

impl NatsVideoMetrics {
    /// The counters as they are now.
    pub(crate) fn snapshot(&self) -> NatsVideoSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NatsVideoSnapshot {
            frames_published: get(&self.frames_published),
            chunks_published: get(&self.chunks_published),
            publish_errors: get(&self.publish_errors),
            publish_skipped: get(&self.publish_skipped),
            keyframes_stored: get(&self.keyframes_stored),
            keyframe_store_errors: get(&self.keyframe_store_errors),
            idr_requests_received: get(&self.idr_requests_received),
            frames_received: get(&self.frames_received),
            frames_lost: get(&self.frames_lost),
            malformed: get(&self.malformed),
            stale: get(&self.stale),
            keyframes_fetched: get(&self.keyframes_fetched),
            idr_requests_sent: get(&self.idr_requests_sent),
            slow_consumer_events: get(&self.slow_consumer_events),
            disconnects: get(&self.disconnects),
        }
    }
}

/// The families on `/metrics`, in order.
pub(crate) const FAMILIES: &[Family<NatsVideoSnapshot>] = &[
    counter(
        "shmring_ws_nats_frames_published_total",
        "Frames published to NATS.",
        |s| s.frames_published,
    ),
    counter(
        "shmring_ws_nats_chunks_published_total",
        "NATS messages carrying published frames.",
        |s| s.chunks_published,
    ),
    counter(
        "shmring_ws_nats_publish_errors_total",
        "Frames NATS refused or that were too large.",
        |s| s.publish_errors,
    ),
    counter(
        "shmring_ws_nats_publish_skipped_total",
        "Frames not published because NATS did not keep up.",
        |s| s.publish_skipped,
    ),
    counter(
        "shmring_ws_nats_keyframes_stored_total",
        "Keyframes stored in JetStream.",
        |s| s.keyframes_stored,
    ),
    counter(
        "shmring_ws_nats_keyframe_store_errors_total",
        "Keyframes JetStream did not acknowledge.",
        |s| s.keyframe_store_errors,
    ),
    counter(
        "shmring_ws_nats_idr_requests_received_total",
        "Keyframe requests from subscribing servers.",
        |s| s.idr_requests_received,
    ),
    counter(
        "shmring_ws_nats_frames_received_total",
        "Frames received from NATS.",
        |s| s.frames_received,
    ),
    counter(
        "shmring_ws_nats_frames_lost_total",
        "Frames missing from the NATS stream (frame_seq gaps).",
        |s| s.frames_lost,
    ),
    counter(
        "shmring_ws_nats_malformed_total",
        "NATS video messages malformed, damaged or out of turn.",
        |s| s.malformed,
    ),
    counter(
        "shmring_ws_nats_stale_total",
        "NATS video frames older than one already received.",
        |s| s.stale,
    ),
    counter(
        "shmring_ws_nats_keyframes_fetched_total",
        "Stored keyframes fetched from JetStream.",
        |s| s.keyframes_fetched,
    ),
    counter(
        "shmring_ws_nats_idr_requests_sent_total",
        "Keyframe requests sent upstream.",
        |s| s.idr_requests_sent,
    ),
    counter(
        "shmring_ws_nats_slow_consumer_events_total",
        "Slow-consumer events of the NATS video connection.",
        |s| s.slow_consumer_events,
    ),
    counter(
        "shmring_ws_nats_disconnects_total",
        "Times the NATS video connection was lost.",
        |s| s.disconnects,
    ),
];
