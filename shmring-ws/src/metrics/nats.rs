//! The counters of the NATS video publisher and source (`shmring_ws_nats_*`).

use super::{counter, Counter, Family};

/// Counters of the NATS video publisher and source, shown on `/metrics` as
/// `shmring_ws_nats_*`.
#[derive(Debug, Default)]
pub(crate) struct NatsVideoMetrics {
    /// Frames published on the live subject.
    pub(crate) frames_published: Counter,
    /// NATS messages those frames took (more than frames when chunked).
    pub(crate) chunks_published: Counter,
    /// Frames that could not be published (NATS refused them, or too large).
    pub(crate) publish_errors: Counter,
    /// Frames the publisher skipped because NATS did not keep up (it resumes at the
    /// next keyframe).
    pub(crate) publish_skipped: Counter,
    /// Keyframes stored in JetStream (acknowledged).
    pub(crate) keyframes_stored: Counter,
    /// Keyframes JetStream did not acknowledge.
    pub(crate) keyframe_store_errors: Counter,
    /// Keyframe requests received from subscribing servers.
    pub(crate) idr_requests_received: Counter,
    /// Frames received from the live subject and handed to clients.
    pub(crate) frames_received: Counter,
    /// Frames missing between received ones (gaps in frame_seq), lost in transit.
    pub(crate) frames_lost: Counter,
    /// Messages that were malformed, damaged or broke a chunk run.
    pub(crate) malformed: Counter,
    /// Frames older than one already received (duplicates, late deliveries), dropped.
    pub(crate) stale: Counter,
    /// Stored keyframes fetched from JetStream at start.
    pub(crate) keyframes_fetched: Counter,
    /// Keyframe requests sent upstream.
    pub(crate) idr_requests_sent: Counter,
    /// Slow-consumer events the NATS client reported (messages dropped locally).
    pub(crate) slow_consumer_events: Counter,
    /// Times the NATS video connection was lost (async-nats then reconnects).
    pub(crate) disconnects: Counter,
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
        NatsVideoSnapshot {
            frames_published: self.frames_published.get(),
            chunks_published: self.chunks_published.get(),
            publish_errors: self.publish_errors.get(),
            publish_skipped: self.publish_skipped.get(),
            keyframes_stored: self.keyframes_stored.get(),
            keyframe_store_errors: self.keyframe_store_errors.get(),
            idr_requests_received: self.idr_requests_received.get(),
            frames_received: self.frames_received.get(),
            frames_lost: self.frames_lost.get(),
            malformed: self.malformed.get(),
            stale: self.stale.get(),
            keyframes_fetched: self.keyframes_fetched.get(),
            idr_requests_sent: self.idr_requests_sent.get(),
            slow_consumer_events: self.slow_consumer_events.get(),
            disconnects: self.disconnects.get(),
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
