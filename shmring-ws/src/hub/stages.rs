//! Opt-in per-stage timestamps of the path from ring to socket, for profiling the
//! latency of one frame: set `SHMRING_WS_STAGE_TIMES=1` in the server's environment and,
//! every [`REPORT_EVERY`] frames written straight into a client's socket, one line on
//! stderr gives the p50 and p99 of each stage in microseconds:
//!
//! - `commit->read`: the producer's commit (frame_id, with `--frame-id-commit-time`) to
//!   the reader thread holding the frame;
//! - `read->hub`: building the message and publishing it (the hub lock, the GOP cache);
//! - `hub->fanout`: the hand-off to the thread that writes (zero when the publishing
//!   thread writes itself);
//! - `fanout->written`: the per-client checks and the `writev` that took the bytes.
//!
//! Off (the default), a frame costs one relaxed load of a cached flag.

use std::sync::{Mutex, OnceLock};

/// Frames per reported line.
pub(crate) const REPORT_EVERY: usize = 600;

/// True if the environment asks for stage times (read once).
pub(crate) fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SHMRING_WS_STAGE_TIMES").is_some_and(|v| v == "1"))
}

/// One frame's stamps, CLOCK_MONOTONIC ns (`commit` 0 when unknown).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stamps {
    pub(crate) commit: u64,
    pub(crate) read: u64,
    pub(crate) queued: u64,
    pub(crate) picked: u64,
    pub(crate) written: u64,
}

static SAMPLES: Mutex<Vec<Stamps>> = Mutex::new(Vec::new());

/// A stage's duration in one frame's stamps, if known.
type Stage = fn(&Stamps) -> Option<u64>;

/// Records one frame written to a client; prints and clears every [`REPORT_EVERY`].
pub(crate) fn record(stamps: Stamps) {
    let mut samples = SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
    samples.push(stamps);
    if samples.len() >= REPORT_EVERY {
        eprintln!("{}", report(&samples));
        samples.clear();
    }
}

/// The report line for `samples`.
pub(crate) fn report(samples: &[Stamps]) -> String {
    let stages: [(&str, Stage); 5] = [
        ("commit->read", |s| {
            (s.commit > 0).then(|| s.read.saturating_sub(s.commit))
        }),
        ("read->hub", |s| Some(s.queued.saturating_sub(s.read))),
        ("hub->fanout", |s| Some(s.picked.saturating_sub(s.queued))),
        ("fanout->written", |s| Some(s.written.saturating_sub(s.picked))),
        ("commit->written", |s| {
            (s.commit > 0).then(|| s.written.saturating_sub(s.commit))
        }),
    ];
    let mut line = format!("stage times over {} frames (us, p50/p99):", samples.len());
    for (name, stage) in stages {
        let mut v: Vec<u64> = samples.iter().filter_map(stage).collect();
        if v.is_empty() {
            continue;
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        line.push_str(&format!(" {name} {:.1}/{:.1}", at(0.5), at(0.99)));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_each_stage_with_its_percentiles() {
        let s = Stamps {
            commit: 1_000,
            read: 3_000,
            queued: 4_000,
            picked: 4_000,
            written: 9_000,
        };
        let line = report(&[s; 10]);
        assert_eq!(
            line,
            "stage times over 10 frames (us, p50/p99): commit->read 2.0/2.0 read->hub 1.0/1.0 \
             hub->fanout 0.0/0.0 fanout->written 5.0/5.0 commit->written 8.0/8.0"
        );
        let unknown_commit = Stamps { commit: 0, ..s };
        assert!(!report(&[unknown_commit]).contains("commit->"));
    }
}
