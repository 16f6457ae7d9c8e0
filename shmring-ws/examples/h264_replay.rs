//! Replays an H.264 Annex B file into a ring at a fixed frame rate, as a stand-in
//! producer for tests and benchmarks: each access unit becomes one frame, keyframes
//! are the access units with an IDR slice, and frame_id is the commit time
//! (CLOCK_MONOTONIC ns, or with `--realtime` CLOCK_REALTIME ns, which a browser can
//! compare with its own clock), so clients can measure commit-to-receive latency.
//!
//! ```text
//! cargo run --release -p shmring-ws --example h264_replay -- RING FILE [--fps N] [--frames N] [--capacity BYTES] [--start-at N] [--wait-for PATH] [--realtime]
//! ```
//! `--start-at N` starts at the file's N-th access unit (0-based), even mid-GOP, as a
//! restarted writer might. `--wait-for PATH` holds the ring open without writing until
//! PATH exists, as a simulator building its scene does.
//! Prints `ready <access units> <keyframes>` once the ring is open. Runs until
//! `--frames` frames are written (0, the default: forever), looping over the file.

use std::time::{Duration, Instant};

use shmring_core::{monotonic_ns, FrameMeta, RingWriter, WriterOptions};
use shmring_ws::annexb::Splitter;

fn arg_value(args: &[String], name: &str) -> Option<u64> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!(
            "usage: h264_replay RING FILE [--fps N] [--frames N] [--capacity BYTES] [--start-at N] [--wait-for PATH] [--realtime]"
        );
        std::process::exit(2);
    }
    let fps = arg_value(&args, "--fps").unwrap_or(30).max(1);
    let limit = arg_value(&args, "--frames").unwrap_or(0);
    let capacity = arg_value(&args, "--capacity").unwrap_or(16 << 20) as usize;
    let data = std::fs::read(&args[1]).unwrap_or_else(|e| {
        eprintln!("h264_replay: cannot read {}: {e}", args[1]);
        std::process::exit(1)
    });
    let mut splitter = Splitter::new();
    let mut units = splitter.push(&data);
    units.extend(splitter.finish());
    if units.is_empty() || !units[0].keyframe {
        eprintln!("h264_replay: {} does not start with a keyframe access unit", args[1]);
        std::process::exit(1);
    }
    let mut writer = RingWriter::open_or_create(
        &args[0],
        &WriterOptions {
            capacity,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| {
        eprintln!("h264_replay: {e}");
        std::process::exit(1)
    });
    println!("ready {} {}", units.len(), units.iter().filter(|u| u.keyframe).count());
    if let Some(i) = args.iter().position(|a| a == "--wait-for") {
        let Some(path) = args.get(i + 1) else {
            eprintln!("h264_replay: --wait-for needs a path");
            std::process::exit(2)
        };
        while !std::path::Path::new(path).exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let period = Duration::from_nanos(1_000_000_000 / fps);
    let start = Instant::now();
    let realtime = args.iter().any(|a| a == "--realtime");
    let skip = arg_value(&args, "--start-at").unwrap_or(0) as usize % units.len();
    for (written, unit) in units.iter().cycle().skip(skip).enumerate() {
        let written = written as u64;
        if limit != 0 && written >= limit {
            break;
        }
        let due = start + period * written as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let id = if realtime { realtime_ns() } else { monotonic_ns() };
        let meta = if unit.keyframe {
            FrameMeta::keyframe(id)
        } else {
            FrameMeta::delta(id)
        };
        if let Err(e) = writer.write(&unit.data, meta) {
            eprintln!("h264_replay: {e}");
            std::process::exit(1);
        }
    }
}

/// CLOCK_REALTIME in nanoseconds.
fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
