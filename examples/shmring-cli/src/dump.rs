//! `shmring dump`: payloads as a raw stream or a container, from a keyframe on.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shmring_core::{FrameInfo, ReaderOptions, RingReader};

use crate::patience::Patience;
use crate::record::{is_container, Recording, TimestampFile};
use crate::{open_reader, parse_seconds, LayoutArg};

/// Where each frame's time comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TimeArg {
    /// The frame_id, read as the frame's time in nanoseconds (simulation or capture
    /// time, as `shmring.VideoWriter` writes it).
    #[default]
    FrameId,
    /// When this reader received the frame.
    Arrival,
}

/// Arguments of `shmring dump`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The ring file.
    path: PathBuf,
    /// Output file: a raw stream (`out.h264`, `-` for standard output, for example
    /// `| ffplay -f h264 -`), or, by its extension, a container in which every frame
    /// keeps its time (`.mkv`, `.mp4`, `.mov`, `.ts`, `.nut`).
    #[arg(long, short = 'o', value_name = "FILE")]
    out: PathBuf,
    /// Stop after this many frames (default: run until interrupted or idle).
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Stop when no frame arrives for this many seconds. A writer that holds the ring
    /// but has not written a frame since this command opened it or since it took the
    /// ring over (a simulator building its scene, also when re-run on an existing ring)
    /// is waited for without a limit.
    #[arg(long, value_parser = parse_seconds, value_name = "SECONDS", default_value = "5")]
    idle_timeout: Duration,
    /// Where frame times come from (for containers and --timestamps).
    #[arg(long, value_enum, default_value_t)]
    time: TimeArg,
    /// Also write each frame's time, in milliseconds from the first frame, to this file
    /// (Matroska "timestamp format v2": `mkvmerge -o out.mkv --timestamps 0:FILE out.h264`).
    #[arg(long, value_name = "FILE")]
    timestamps: Option<PathBuf>,
    /// Layout to open the file as.
    #[arg(long, value_enum, default_value_t)]
    layout: LayoutArg,
}

/// Where the payloads go.
enum Sink {
    Raw(BufWriter<Box<dyn Write>>),
    /// A container, created at the first frame (it needs the first keyframe).
    Container(Option<Recording>),
}

impl Sink {
    /// The sink for `out`: a container by its extension, standard output for `-`, else
    /// a raw file.
    fn open(out: &Path) -> Result<Self, String> {
        Ok(if is_container(out) {
            Sink::Container(None)
        } else if out.as_os_str() == "-" {
            Sink::Raw(BufWriter::new(Box::new(std::io::stdout().lock())))
        } else {
            let file = File::create(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
            Sink::Raw(BufWriter::new(Box::new(file)))
        })
    }

    /// Writes one frame's payload at `time` (ns from the first frame).
    fn write(&mut self, out: &Path, info: &FrameInfo, payload: &[u8], time: u64) -> Result<(), String> {
        match self {
            Sink::Raw(w) => w
                .write_all(payload)
                .map_err(|e| format!("cannot write {}: {e}", out.display())),
            Sink::Container(recording) => {
                let recording = match recording {
                    Some(r) => r,
                    None => recording.insert(Recording::create(out, info.codec.0, payload)?),
                };
                recording.write(payload, info.keyframe(), time)
            }
        }
    }

    /// Flushes or finishes the output; the number of frame times the container had to
    /// nudge forward.
    fn finish(self, out: &Path) -> Result<u64, String> {
        match self {
            Sink::Raw(mut w) => w.flush().map_err(|e| format!("cannot write {}: {e}", out.display()))?,
            Sink::Container(Some(recording)) => {
                let nudged = recording.nudged;
                recording.finish()?;
                return Ok(nudged);
            }
            Sink::Container(None) => {}
        }
        Ok(0)
    }
}

/// What was recorded.
#[derive(Default)]
struct Progress {
    frames: u64,
    bytes: u64,
    /// The first frame's raw time (ns), which times count from.
    first_time: Option<u64>,
    /// The newest frame's time from the first, ns.
    last_time: u64,
}

/// Runs the command.
pub(crate) fn run(args: Args) -> Result<(), String> {
    // Start at the newest keyframe, and after any loss resume at a keyframe, so the
    // file always decodes.
    let mut reader = open_reader(&args.path, args.layout, ReaderOptions::default())?;
    let mut sink = Sink::open(&args.out)?;
    let mut timestamps = args.timestamps.as_deref().map(TimestampFile::create).transpose()?;
    let progress = record(&args, &mut reader, &mut sink, &mut timestamps)?;
    let nudged = sink.finish(&args.out)?;
    if let Some(t) = timestamps {
        t.finish()?;
    }
    summarize(&args, &reader, &progress, nudged)
}

/// Copies frames to the sink until the count is reached or the ring stays idle (a
/// writer that is starting is waited for: see the patience module).
fn record(
    args: &Args,
    reader: &mut RingReader,
    sink: &mut Sink,
    timestamps: &mut Option<TimestampFile>,
) -> Result<Progress, String> {
    let mut progress = Progress::default();
    let mut patience = Patience::new("dump", reader);
    let mut last_frame = Instant::now();
    let started = Instant::now();
    while args.count.is_none_or(|n| progress.frames < n) {
        let left = match args.idle_timeout.checked_sub(last_frame.elapsed()) {
            Some(left) => left,
            None if patience.keep_waiting(reader) => {
                last_frame = Instant::now();
                continue;
            }
            None => break,
        };
        match reader.read_timeout(Some(left)) {
            Ok(Some(frame)) => {
                let raw_time = match args.time {
                    TimeArg::FrameId => frame.info.frame_id,
                    TimeArg::Arrival => started.elapsed().as_nanos() as u64,
                };
                let time = raw_time.saturating_sub(*progress.first_time.get_or_insert(raw_time));
                progress.last_time = time;
                sink.write(&args.out, &frame.info, frame.payload, time)?;
                if let Some(t) = timestamps {
                    t.push(time)?;
                }
                progress.frames += 1;
                progress.bytes += frame.payload.len() as u64;
                last_frame = Instant::now();
                patience.frame_arrived(reader);
            }
            Ok(None) => {}
            Err(e) => eprintln!("shmring dump: {e}"),
        }
    }
    Ok(progress)
}

/// Prints what was recorded; an error if nothing was.
fn summarize(args: &Args, reader: &RingReader, progress: &Progress, nudged: u64) -> Result<(), String> {
    let Progress {
        frames,
        bytes,
        last_time,
        ..
    } = *progress;
    let stats = reader.stats();
    let rate = if frames > 1 && last_time > 0 {
        format!(
            ", {:.3} s of {} time = {:.2} frames/s",
            last_time as f64 / 1e9,
            match args.time {
                TimeArg::FrameId => "frame_id",
                TimeArg::Arrival => "arrival",
            },
            (frames - 1) as f64 * 1e9 / last_time as f64
        )
    } else {
        String::new()
    };
    eprintln!(
        "shmring dump: {frames} frames, {bytes} bytes to {}{rate} (lost {})",
        args.out.display(),
        stats.lost
    );
    if nudged > 0 {
        eprintln!(
            "shmring dump: {nudged} frames had a frame_id not after the previous one's; if this writer's frame_id is not a time in ns, use --time arrival"
        );
    }
    if frames == 0 {
        return Err(format!(
            "no frames arrived within {:.1} s; is a writer running?",
            args.idle_timeout.as_secs_f64()
        ));
    }
    Ok(())
}
