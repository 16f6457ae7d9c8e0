//! The ring reader thread: one per ring, sleeping on the ring's futex between frames,
//! turning each frame into one shared WebSocket message for the hub.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shmring_core::layout::FrameHeader;
use shmring_core::{monotonic_ns, Error, FrameInfo, ReaderOptions, RingKind, RingReader, StartPosition};

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
/// Timer slack of the reader thread, in ns. Its sleeps (between the reader's cadence
/// windows, and a legacy ring's polls) otherwise end up to the default 50 us late
/// (`crossproc overshoot`: p50 63 us late, 11 us with 1 ns of slack); the reader opens
/// each window that much early and spins through it. The thread is this server's own,
/// so its slack is set without touching anyone else's.
const READER_TIMER_SLACK_NS: libc::c_ulong = 1;

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
        .spawn(move || {
            if !tighten_timer_slack() {
                tracing::debug!("could not set the reader thread's timer slack; its wake-ups may be up to 50 us late");
            }
            run(source, &hub, &metrics, &stop)
        })
}

/// Sets the calling thread's timer slack to [`READER_TIMER_SLACK_NS`]; false if the
/// kernel refused.
fn tighten_timer_slack() -> bool {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only the calling thread's
    // timer slack; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, READER_TIMER_SLACK_NS, 0, 0, 0) == 0 }
}

/// How the server reads a ring, of either layout.
fn reader_options(source: &RingSource) -> ReaderOptions {
    // Every frame, from the newest: a producer that encodes with intra refresh (one
    // IDR, then none unless asked, as SDR_OS's sim does) may have no keyframe in the ring
    // at all. Each client waits for a keyframe itself, and after every gap (see
    // `crate::client`), and a keyframe is requested for it. The wake-up is the default
    // cadence-aware one on both layouts: a legacy ring, which has no futex, is then
    // polled in a short window around each expected frame, not only every 500 us.
    ReaderOptions {
        start: StartPosition::Latest,
        verify_crc: source.verify_crc,
        resync_at_keyframe: false,
        ..Default::default()
    }
}

fn open(source: &RingSource, stop: &AtomicBool) -> Option<RingReader> {
    let options = reader_options(source);
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

/// The reader thread's state between reads.
struct RingLoop<'a> {
    source: &'a RingSource,
    hub: &'a Hub,
    metrics: &'a Metrics,
    reader: RingReader,
    /// The writer epoch last seen (a change: a new writer took over).
    epoch: Option<u64>,
    /// The reader's reopen count last seen (a change: the ring file was replaced).
    reopens: u64,
    /// A legacy ring's writer may hold no lock (SDR_OS's Python writer does not): then
    /// its liveness is unknown, and /health judges it by the age of the newest frame.
    legacy: bool,
    last_status: Instant,
    last_error_log: Option<Instant>,
    /// A read timed out: the next frame may come from a restarted writer.
    was_idle: bool,
    /// Frames committed when the ring was opened or a new writer took it over: while
    /// the live writer has added none, it is starting (/health), not stale.
    committed: u64,
    /// The next frame is the first read since the ring was (re)opened: it may have been
    /// in the ring for minutes (its writer dead), so its read time proves nothing.
    first_since_open: bool,
}

impl<'a> RingLoop<'a> {
    fn new(source: &'a RingSource, hub: &'a Hub, metrics: &'a Metrics, reader: RingReader) -> Self {
        let mut ring = RingLoop {
            source,
            hub,
            metrics,
            epoch: reader.status().writer.epoch,
            reopens: reader.reopens(),
            legacy: matches!(reader.kind(), RingKind::Legacy { .. }),
            committed: reader.status().sequence_number,
            reader,
            last_status: Instant::now(),
            last_error_log: None,
            was_idle: false,
            first_since_open: true,
        };
        ring.probe();
        ring
    }

    /// Records the writer's liveness; true if a new writer took over since last time.
    fn probe(&mut self) -> bool {
        let status = self.reader.status();
        self.metrics.writer_alive.store(
            match status.writer.alive {
                Some(true) => 1,
                Some(false) if !self.legacy => 0,
                _ => -1,
            },
            Ordering::Relaxed,
        );
        let changed = status.writer.epoch != self.epoch;
        self.epoch = status.writer.epoch;
        if changed {
            self.committed = status.sequence_number;
        }
        self.metrics.writer_starting.store(
            status.writer.alive == Some(true) && status.sequence_number == self.committed,
            Ordering::Relaxed,
        );
        changed
    }

    /// Notices a writer restart or a replaced ring at a frame.
    fn check_writer(&mut self) {
        if self.was_idle {
            self.was_idle = false;
            self.last_status = Instant::now();
            if self.probe() {
                tracing::info!(
                    "a new writer took over ring {}; clients resume at its first keyframe",
                    self.source.path.display()
                );
                self.hub.discontinuity();
            }
        }
        if self.reader.reopens() != self.reopens {
            self.reopens = self.reader.reopens();
            self.first_since_open = true;
            tracing::info!("ring {} was replaced; reopened it", self.source.path.display());
            self.hub.discontinuity();
        }
    }

    /// The time this frame proves the video fresh at, if it does: its commit time when
    /// the writer declares frame_id to be one (`--frame-id-commit-time`) and the stamp is
    /// plausible, else the time it was read, unless it is the first frame since the ring
    /// was opened or its writer is known dead (then it may be old).
    fn fresh_at(&mut self, read_ns: u64, commit_ns: Option<u64>) -> Option<u64> {
        let first = std::mem::take(&mut self.first_since_open);
        if commit_ns.is_some() {
            return commit_ns;
        }
        let dead = self.metrics.writer_alive.load(Ordering::Relaxed) == 0;
        (!first && !dead).then_some(read_ns)
    }

    /// A frame read at `read_ns` (its header `info`), already made into `message`.
    fn on_frame(&mut self, info: FrameInfo, message: Bytes, read_ns: u64) {
        let metrics = self.metrics;
        if info.lost_before > 0 {
            metrics.dropped(DropReason::RingLost, info.lost_before);
        }
        metrics.frames_read.inc();
        metrics.shm_seq.store(info.frame_seq, Ordering::Relaxed);
        self.check_writer();
        let commit_ns = if self.source.frame_id_is_commit_time {
            let t = commit_time(info.frame_id, read_ns);
            if t.is_none() {
                metrics.commit_time_invalid.inc();
            }
            t
        } else {
            None
        };
        if let Some(fresh_ns) = self.fresh_at(read_ns, commit_ns) {
            // The video gate's clock: only frames that prove the video fresh move it.
            metrics.last_frame_ns.fetch_max(fresh_ns, Ordering::Relaxed);
        }
        self.hub.publish_video(VideoFrame {
            message,
            keyframe: info.keyframe(),
            frame_seq: info.frame_seq,
            read_ns,
            commit_ns,
            time_ns: self.source.frame_id_is_time.then_some(info.frame_id),
        });
        if self.last_status.elapsed() >= STATUS_EVERY {
            self.last_status = Instant::now();
            if self.probe() {
                tracing::info!("a new writer took over ring {}", self.source.path.display());
            }
        }
    }

    /// Idle: a good moment to notice a restarted writer before its first frame.
    fn on_idle(&mut self) {
        self.was_idle = true;
        self.last_status = Instant::now();
        if self.probe() {
            tracing::info!(
                "a new writer took over ring {}; clients wait for its first keyframe",
                self.source.path.display()
            );
            self.hub.discontinuity();
        }
    }

    fn on_damaged_record(&mut self, e: impl std::fmt::Display) {
        self.metrics.ring_read_errors.inc();
        if self.last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
            self.last_error_log = Some(Instant::now());
            tracing::warn!("ring {}: skipped a record: {e}", self.source.path.display());
        }
    }

    /// Opens the ring again after the reader failed; false if stopped meanwhile.
    fn reopen(&mut self, stop: &AtomicBool) -> bool {
        self.metrics.writer_alive.store(-1, Ordering::Relaxed);
        let Some(r) = open(self.source, stop) else {
            return false;
        };
        self.reader = r;
        self.reopens = self.reader.reopens();
        self.epoch = self.reader.status().writer.epoch;
        self.committed = self.reader.status().sequence_number;
        self.first_since_open = true;
        self.hub.discontinuity();
        true
    }
}

fn run(source: RingSource, hub: &Hub, metrics: &Metrics, stop: &AtomicBool) {
    let Some(reader) = open(&source, stop) else {
        return;
    };
    let mut ring = RingLoop::new(&source, hub, metrics, reader);
    while !stop.load(Ordering::Relaxed) {
        match ring.reader.read_timeout(Some(READ_SLICE)) {
            Ok(Some(frame)) => {
                let read_ns = monotonic_ns();
                let message = encode_video(&FrameHeader::from(&frame.info), frame.payload);
                let info = frame.info;
                ring.on_frame(info, message, read_ns);
            }
            Ok(None) => ring.on_idle(),
            Err(Error::Read(e)) => ring.on_damaged_record(e),
            Err(e) => {
                tracing::error!("ring reader failed: {e}; reopening");
                if !ring.reopen(stop) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_reads_rings_of_both_layouts_with_the_cadence_wake_up() {
        let source = RingSource {
            path: PathBuf::from("unused"),
            verify_crc: true,
            frame_id_is_commit_time: false,
            frame_id_is_time: false,
        };
        // The options carry no layout: the same wake-up serves v1 and legacy rings.
        let wake = reader_options(&source).wake;
        assert_eq!(wake, shmring_core::WakePolicy::default());
        assert!(
            wake.max_window().is_some(),
            "the default wake-up is {wake:?}, not a cadence"
        );
    }

    #[test]
    fn the_reader_thread_sleeps_with_a_fine_timer_slack() {
        let slack = std::thread::spawn(|| {
            assert!(tighten_timer_slack(), "prctl(PR_SET_TIMERSLACK) failed");
            // SAFETY: PR_GET_TIMERSLACK reads the calling thread's timer slack only.
            unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) }
        })
        .join()
        .expect("the slack thread");
        assert_eq!(slack, READER_TIMER_SLACK_NS as libc::c_int);
    }

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
