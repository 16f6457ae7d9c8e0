//! When `dump` and `tail` keep waiting past their idle timeout: for a writer that is
//! starting up, however long it takes (a simulator builds its scene for seconds to
//! minutes before its first frame).
//!
//! The writer is taken to be starting, and waited for without a limit, while it holds
//! the ring (alive) and has committed no frame since this reader opened the ring or since
//! the current writer took over (a new writer epoch). That covers a fresh ring and an
//! existing ring that a re-run simulator reopened: its old frames do not count. A ring
//! nobody holds is not waited for (the idle timeout ends the command, as it does once a
//! writer that wrote during this session goes quiet).

use shmring_core::RingReader;

/// The reader's view of whether the writer is still starting.
pub(crate) struct Patience {
    command: &'static str,
    /// Writer epoch when the reader opened the ring or last saw it change.
    epoch: Option<u64>,
    /// Frames committed to the ring at that moment.
    committed: u64,
    /// The epoch whose starting writer was announced.
    announced: Option<Option<u64>>,
}

impl Patience {
    /// Starts watching the ring `reader` has just opened.
    pub(crate) fn new(command: &'static str, reader: &RingReader) -> Self {
        let status = reader.status();
        Patience {
            command,
            epoch: status.writer.epoch,
            committed: status.sequence_number,
            announced: None,
        }
    }

    /// True if the idle timeout should not end the command: a live writer has written
    /// nothing since the reader opened the ring or since it took the ring over. Says so
    /// once per writer.
    pub(crate) fn keep_waiting(&mut self, reader: &RingReader) -> bool {
        let status = reader.status();
        if status.writer.epoch != self.epoch {
            // A new writer took over: only its own frames count.
            self.epoch = status.writer.epoch;
            self.committed = status.sequence_number;
        }
        if status.writer.alive != Some(true) || status.sequence_number != self.committed {
            return false;
        }
        if self.announced != Some(self.epoch) {
            self.announced = Some(self.epoch);
            let who = status.writer.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            eprintln!(
                "shmring {}: the writer{who} holds the ring but has not written a frame yet since it opened it (still starting up?); waiting for it",
                self.command
            );
        }
        true
    }

    /// Notes that frames arrive: a writer epoch that changes later is a new writer.
    pub(crate) fn frame_arrived(&mut self, reader: &RingReader) {
        let status = reader.status();
        if status.writer.epoch != self.epoch {
            self.epoch = status.writer.epoch;
            self.committed = status.sequence_number.saturating_sub(1);
        }
    }
}
