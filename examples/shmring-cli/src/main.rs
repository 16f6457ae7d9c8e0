//! `shmring`: look into rings (stat, tail, dump), feed one (testsrc) and measure them
//! (bench). Every command works on v1 and legacy rings.

mod bench;
mod dump;
mod patience;
mod record;
mod stat;
mod stat_dir;
mod tail;
mod testsrc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use shmring_core::{FrameInfo, LayoutChoice, ReaderOptions, RingReader, StartPosition};

/// Inspect, feed and benchmark shmring shared-memory rings of encoded video frames.
#[derive(Parser)]
#[command(name = "shmring", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a ring's layout, capacity, counters, latest keyframe and writer liveness, or
    /// list the rings in a directory (one line each).
    Stat(stat::Args),
    /// Print one line per frame as frames arrive (frame_seq, frame_id, size, flags,
    /// codec, CRC).
    Tail(tail::Args),
    /// Write frame payloads as a raw stream (an .h264/.hevc file that ffprobe and ffplay
    /// open) or a container (.mkv, .mp4, ...) timed by each frame's time, starting at a
    /// keyframe.
    Dump(dump::Args),
    /// Encode a moving test pattern with a frame counter into a ring (NVENC, or libx264
    /// without a GPU).
    Testsrc(testsrc::Args),
    /// Measure cross-process throughput and latency: a writer child process, reader
    /// child processes, and a table of the results.
    Bench(bench::Args),
    /// Internal: one reader process of `shmring bench`.
    #[command(hide = true)]
    BenchReader(bench::ReaderArgs),
}

/// Which layout to open a ring as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    /// v1 if the file has a v1 trailer, otherwise the legacy single slot.
    #[default]
    Auto,
    /// Only the v1 broadcast ring (`ring`, its former name in Python, is accepted).
    #[value(alias = "ring")]
    V1,
    /// Only the legacy single-slot layout (the SDR_OS Python writer's).
    Legacy,
}

impl From<LayoutArg> for LayoutChoice {
    fn from(l: LayoutArg) -> Self {
        match l {
            LayoutArg::Auto => LayoutChoice::Auto,
            LayoutArg::V1 => LayoutChoice::V1,
            LayoutArg::Legacy => LayoutChoice::Legacy,
        }
    }
}

/// Where a reading command starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum FromArg {
    /// The newest keyframe still in the ring (a decoder can start there).
    #[default]
    LatestKeyframe,
    /// The newest frame in the ring.
    Latest,
    /// The next frame written.
    Next,
}

impl From<FromArg> for StartPosition {
    fn from(f: FromArg) -> Self {
        match f {
            FromArg::LatestKeyframe => StartPosition::LatestKeyframe,
            FromArg::Latest => StartPosition::Latest,
            FromArg::Next => StartPosition::Next,
        }
    }
}

/// Opens `path` for reading, with an error that names the path.
pub fn open_reader(path: &PathBuf, layout: LayoutArg, options: ReaderOptions) -> Result<RingReader, String> {
    if path.is_dir() {
        return Err(format!("{} is a directory, not a ring file", path.display()));
    }
    RingReader::open_layout(path, &options, layout.into()).map_err(|e| e.to_string())
}

/// Parses a duration in seconds (fractions allowed).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.0..=1e9).contains(&v) {
        return Err(format!("{s} seconds is out of range"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Codec id as a name (shmring-core's codec table; `codec<id>` for other ids).
pub fn codec_name(id: u16) -> String {
    shmring_core::Codec(id).to_string()
}

/// Flag bits as text: `KEY`, `WRAP`, `NOCRC`, or `-`.
pub fn flag_names(info: &FrameInfo) -> String {
    let mut names = Vec::new();
    if info.flags & shmring_core::layout::FLAG_KEYFRAME != 0 {
        names.push("KEY");
    }
    if info.flags & shmring_core::layout::FLAG_WRAP != 0 {
        names.push("WRAP");
    }
    if info.flags & shmring_core::layout::FLAG_NO_CRC != 0 {
        names.push("NOCRC");
    }
    if names.is_empty() {
        "-".into()
    } else {
        names.join("|")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Stat(a) => stat::run(a),
        Command::Tail(a) => tail::run(a),
        Command::Dump(a) => dump::run(a),
        Command::Testsrc(a) => testsrc::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchReader(a) => bench::run_reader(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shmring: {message}");
            ExitCode::FAILURE
        }
    }
}
