//! A reader's view of a ring's counters and of its writer.

use std::time::Duration;

use super::reader::{ReaderInner, RingReader};
use super::{monotonic_ns, RingKind};
use crate::layout::WriterState;
use crate::lock;

/// What the writer side of a ring looks like from a reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterStatus {
    /// True if a process holds the writer lock (`None` if the probe failed).
    pub alive: Option<bool>,
    /// pid recorded by the last writer (v1 only).
    pub pid: Option<u32>,
    /// Time since the writer's last commit or heartbeat (v1 only).
    pub heartbeat_age: Option<Duration>,
    /// How many writers have opened the ring (v1 only).
    pub epoch: Option<u64>,
    /// What the last writer said (v1 only).
    pub state: Option<WriterState>,
}

/// A snapshot of a ring's counters (for `shmring stat` and health checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingStatus {
    /// Layout and geometry.
    pub kind: RingKind,
    /// Frames committed (the seed's commit marker).
    pub sequence_number: u64,
    /// Write position.
    pub write_index: u64,
    /// Position of the newest frame (v1).
    pub latest_record: Option<u64>,
    /// Position of the newest keyframe (v1).
    pub latest_keyframe: Option<u64>,
    /// The writer's side.
    pub writer: WriterStatus,
}

impl RingReader {
    /// A snapshot of the ring's counters and its writer's liveness.
    pub fn status(&self) -> RingStatus {
        let alive = lock::is_locked(&self.file).ok();
        match (&self.inner, self.kind) {
            (ReaderInner::V1(r), RingKind::V1(g)) => {
                let c = crate::region::load_counters(r.words(), &g);
                RingStatus {
                    kind: self.kind,
                    sequence_number: c.sequence_number,
                    write_index: c.write_index,
                    latest_record: c.latest_record,
                    latest_keyframe: c.latest_keyframe,
                    writer: WriterStatus {
                        alive,
                        pid: u32::try_from(c.writer_pid).ok().filter(|p| *p != 0),
                        heartbeat_age: (c.heartbeat_ns != 0)
                            .then(|| Duration::from_nanos(monotonic_ns().saturating_sub(c.heartbeat_ns))),
                        epoch: Some(c.writer_epoch),
                        state: Some(c.writer_state),
                    },
                }
            }
            (ReaderInner::Legacy(r), _) => RingStatus {
                kind: self.kind,
                sequence_number: r.sequence_number(),
                write_index: r.write_index(),
                latest_record: None,
                latest_keyframe: None,
                writer: WriterStatus {
                    alive,
                    pid: None,
                    heartbeat_age: None,
                    epoch: None,
                    state: None,
                },
            },
            _ => unreachable!("reader kind and layout always agree"),
        }
    }
}
