//! The ring reader thread: one per ring, sleeping on the ring's futex between frames,
//! turning each frame into one shared WebSocket message for the hub.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shmring_core::layout::FrameHeader;
use shmring_core::{monotonic_ns, Error, ReaderOptions, RingKind, RingReader, StartPosition};

use crate::hub::Hub;
use crate::message::VideoFrame;
use crate::metrics::{DropReason, Metrics};
use crate::protocol::encode_video;

/// How long one blocking read waits before the thread checks for shutdown and the
/// writer's liveness.
const READ_SLICE: Duration = Duration::from_millis(100);
/// How often the writer's liveness is probed while frames flow.
const STATUS_EVERY: Duration = Duration::from_millis(500);
/// Pause between attempts to open a ring that is not there yet.
const OPEN_RETRY: Duration = Duration::from_millis(200);

/// A ring on this machine as the frame source: settings of the reader thread.
#[derive(Clone, Debug)]
pub struct RingSource {
    /// The ring file.
    pub path: PathBuf,
    /// Check payload CRCs.
    pub verify_crc: bool,
    /// The producer stamps each frame's frame_id with its commit time in CLOCK_MONOTONIC
    /// ns (as the demo producer and `h264_replay` do): the commit-to-send histogram then
    /// starts there. The ring itself records no per-frame commit time.
    pub frame_id_is_commit_time: bool,
    /// Each frame's frame_id is its time in ns (simulation or capture time, as
    /// `shmring.VideoWriter` writes it): Foxglove messages carry it as their timestamp.
    pub frame_id_is_time: bool,
}

/// Frames whose frame_id claims to be a commit time more than this old are not believed.
const MAX_COMMIT_AGE_NS: u64 = 60_000_000_000;
/// Tolerance for a commit time slightly after the read (none expected: one clock).
const MAX_COMMIT_SKEW_NS: u64 = 1_000_000;

/// The commit time a frame_id stands for, if it is a plausible one for a frame read at
/// `read_ns`.
fn commit_time(frame_id: u64, read_ns: u64) -> Option<u64> {
    (frame_id <= read_ns.saturating_add(MAX_COMMIT_SKEW_NS) && read_ns.saturating_sub(frame_id) <= MAX_COMMIT_AGE_NS)
        .then_some(frame_id)
}

/// Starts the reader thread. It runs until `stop` is set.
pub(crate) fn spawn_reader(
    source: RingSource,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("shmring-reader".into())
        .spawn(move || run(source, &hub, &metrics, &stop))
}

fn open(source: &RingSource, stop: &AtomicBool) -> Option<RingReader> {
    // Every frame, from the newest: a producer that encodes with intra refresh (one
    // IDR, then none unless asked, as SDR_OS's sim does) may have no keyframe in the ring
    // at all. Each client waits for a keyframe itself, and after every gap (see
    // `crate::client`), and a keyframe is requested for it.
    let options = ReaderOptions {
        start: StartPosition::Latest,
        verify_crc: source.verify_crc,
        resync_at_keyframe: false,
        ..Default::default()
    };
    let mut said = false;
    while !stop.load(Ordering::Relaxed) {
        match RingReader::open(&source.path, &options) {
            Ok(r) => {
                tracing::info!("reading ring {} ({:?})", source.path.display(), r.kind());
                return Some(r);
            }
            Err(e) => {
                if !said {
                    tracing::warn!("waiting for the ring: {e}");
                    said = true;
                }
                std::thread::sleep(OPEN_RETRY);
            }
        }
    }
    None
}

fn run(source: RingSource, hub: &Hub, metrics: &Metrics, stop: &AtomicBool) {
    let Some(mut reader) = open(&source, stop) else {
        return;
    };
    let mut epoch = reader.status().writer.epoch;
    let mut reopens = reader.reopens();
    let mut last_status = Instant::now();
    let mut last_error_log: Option<Instant> = None;
    // A legacy ring's writer may hold no lock (SDR_OS's Python writer does not): then
    // its liveness is unknown, and /health judges it by the age of the newest frame.
    let legacy = matches!(reader.kind(), RingKind::Legacy { .. });
    let probe = |reader: &RingReader, epoch: &mut Option<u64>| {
        let status = reader.status();
        metrics.writer_alive.store(
            match status.writer.alive {
                Some(true) => 1,
                Some(false) if !legacy => 0,
                _ => -1,
            },
            Ordering::Relaxed,
        );
        let changed = status.writer.epoch != *epoch;
        *epoch = status.writer.epoch;
        changed
    };
    probe(&reader, &mut epoch);
    // Set when a read timed out: the next frame may come from a restarted writer.
    let mut was_idle = false;
    while !stop.load(Ordering::Relaxed) {
        match reader.read_timeout(Some(READ_SLICE)) {
            Ok(Some(frame)) => {
                let read_ns = monotonic_ns();
                let info = frame.info;
                let message = encode_video(&FrameHeader::from(&info), frame.payload);
                if info.lost_before > 0 {
                    metrics.dropped(DropReason::RingLost, info.lost_before);
                }
                metrics.frames_read.fetch_add(1, Ordering::Relaxed);
                metrics.shm_seq.store(info.frame_seq, Ordering::Relaxed);
                metrics.last_frame_ns.store(read_ns, Ordering::Relaxed);
                if was_idle {
                    was_idle = false;
                    last_status = Instant::now();
                    if probe(&reader, &mut epoch) {
                        tracing::info!("a new writer took over the ring; clients resume at its first keyframe");
                        hub.discontinuity();
                    }
                }
                if reader.reopens() != reopens {
                    reopens = reader.reopens();
                    tracing::info!("ring {} was replaced; reopened it", source.path.display());
                    hub.discontinuity();
                }
                let commit_ns = if source.frame_id_is_commit_time {
                    let t = commit_time(info.frame_id, read_ns);
                    if t.is_none() {
                        metrics.commit_time_invalid.fetch_add(1, Ordering::Relaxed);
                    }
                    t
                } else {
                    None
                };
                hub.publish_video(VideoFrame {
                    message,
                    keyframe: info.keyframe(),
                    frame_seq: info.frame_seq,
                    read_ns,
                    commit_ns,
                    time_ns: source.frame_id_is_time.then_some(info.frame_id),
                });
                if last_status.elapsed() >= STATUS_EVERY {
                    last_status = Instant::now();
                    if probe(&reader, &mut epoch) {
                        tracing::info!("a new writer took over the ring");
                    }
                }
            }
            Ok(None) => {
                // Idle: a good moment to notice a restarted writer before its first frame.
                was_idle = true;
                last_status = Instant::now();
                if probe(&reader, &mut epoch) {
                    tracing::info!("a new writer took over the ring; clients wait for its first keyframe");
                    hub.discontinuity();
                }
            }
            Err(Error::Read(e)) => {
                metrics.ring_read_errors.fetch_add(1, Ordering::Relaxed);
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    last_error_log = Some(Instant::now());
                    tracing::warn!("skipped a ring record: {e}");
                }
            }
            Err(e) => {
                tracing::error!("ring reader failed: {e}; reopening");
                metrics.writer_alive.store(-1, Ordering::Relaxed);
                let Some(r) = open(&source, stop) else { return };
                reader = r;
                reopens = reader.reopens();
                epoch = reader.status().writer.epoch;
                hub.discontinuity();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plausible_commit_times_are_believed() {
        let read = 3_600_000_000_000;
        assert_eq!(commit_time(read - 5_000_000, read), Some(read - 5_000_000));
        assert_eq!(commit_time(read, read), Some(read));
        // A frame counter, a wall-clock time, a stale or future stamp: not a commit time.
        assert_eq!(commit_time(42, read), None);
        assert_eq!(commit_time(1_700_000_000_000_000_000, read), None);
        assert_eq!(commit_time(read - 61_000_000_000, read), None);
        assert_eq!(commit_time(read + 2_000_000, read), None);
    }
}
