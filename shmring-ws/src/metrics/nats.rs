//! The counters of the NATS video publisher and source (`shmring_ws_nats_*`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the NATS video publisher and source, shown on `/metrics` as
/// `shmring_ws_nats_*`.
#[derive(Debug, Default)]
pub struct NatsVideoMetrics {
    /// Frames published on the live subject.
    pub frames_published: AtomicU64,
    /// NATS messages those frames took (more than frames when chunked).
    pub chunks_published: AtomicU64,
    /// Frames that could not be published (NATS refused them, or too large).
    pub publish_errors: AtomicU64,
    /// Frames the publisher skipped because NATS did not keep up (it resumes at the
    /// next keyframe).
    pub publish_skipped: AtomicU64,
    /// Keyframes stored in JetStream (acknowledged).
    pub keyframes_stored: AtomicU64,
    /// Keyframes JetStream did not acknowledge.
    pub keyframe_store_errors: AtomicU64,
    /// Keyframe requests received from subscribing servers.
    pub idr_requests_received: AtomicU64,
    /// Frames received from the live subject and handed to clients.
    pub frames_received: AtomicU64,
    /// Frames missing between received ones (gaps in frame_seq), lost in transit.
    pub frames_lost: AtomicU64,
    /// Messages that were malformed, damaged or broke a chunk run.
    pub malformed: AtomicU64,
    /// Frames older than one already received (duplicates, late deliveries), dropped.
    pub stale: AtomicU64,
    /// Stored keyframes fetched from JetStream at start.
    pub keyframes_fetched: AtomicU64,
    /// Keyframe requests sent upstream.
    pub idr_requests_sent: AtomicU64,
    /// Slow-consumer events the NATS client reported (messages dropped locally).
    pub slow_consumer_events: AtomicU64,
    /// Times the NATS video connection was lost (async-nats then reconnects).
    pub disconnects: AtomicU64,
}

impl NatsVideoMetrics {
    /// Appends the counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let rows: [(&str, &str, &AtomicU64); 15] = [
            ("frames_published", "Frames published to NATS.", &self.frames_published),
            (
                "chunks_published",
                "NATS messages carrying published frames.",
                &self.chunks_published,
            ),
            (
                "publish_errors",
                "Frames NATS refused or that were too large.",
                &self.publish_errors,
            ),
            (
                "publish_skipped",
                "Frames not published because NATS did not keep up.",
                &self.publish_skipped,
            ),
            (
                "keyframes_stored",
                "Keyframes stored in JetStream.",
                &self.keyframes_stored,
            ),
            (
                "keyframe_store_errors",
                "Keyframes JetStream did not acknowledge.",
                &self.keyframe_store_errors,
            ),
            (
                "idr_requests_received",
                "Keyframe requests from subscribing servers.",
                &self.idr_requests_received,
            ),
            ("frames_received", "Frames received from NATS.", &self.frames_received),
            (
                "frames_lost",
                "Frames missing from the NATS stream (frame_seq gaps).",
                &self.frames_lost,
            ),
            (
                "malformed",
                "NATS video messages malformed, damaged or out of turn.",
                &self.malformed,
            ),
            (
                "stale",
                "NATS video frames older than one already received.",
                &self.stale,
            ),
            (
                "keyframes_fetched",
                "Stored keyframes fetched from JetStream.",
                &self.keyframes_fetched,
            ),
            (
                "idr_requests_sent",
                "Keyframe requests sent upstream.",
                &self.idr_requests_sent,
            ),
            (
                "slow_consumer_events",
                "Slow-consumer events of the NATS video connection.",
                &self.slow_consumer_events,
            ),
            (
                "disconnects",
                "Times the NATS video connection was lost.",
                &self.disconnects,
            ),
        ];
        for (name, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP shmring_ws_nats_{name}_total {help}\n# TYPE shmring_ws_nats_{name}_total counter\nshmring_ws_nats_{name}_total {}",
                value.load(Ordering::Relaxed)
            );
        }
    }
}
