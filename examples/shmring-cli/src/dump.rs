//! `shmring dump`: payloads as a raw stream or a container, from a keyframe on.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shmring_core::{ReaderOptions, RingReader};

use crate::record::{is_container, Recording, TimestampFile};
use crate::{open_reader, parse_seconds, LayoutArg};

/// Where each frame's time comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TimeArg {
    /// The frame_id, read as the frame's time in nanoseconds (simulation or capture
    /// time, as `shmring.VideoWriter` writes it).
    #[default]
    FrameId,
    /// When this reader received the frame.
    Arrival,
}

/// Arguments of `shmring dump`.
#[derive(clap::Args)]
pub struct Args {
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
    /// but has not written its first frame yet (a simulator building its scene) is
    /// waited for without a limit.
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

/// The pid of a live writer that has not written a frame yet, if that is the state.
pub fn writer_starting(reader: &RingReader) -> Option<Option<u32>> {
    let status = reader.status();
    (status.writer.alive == Some(true) && status.sequence_number == 0).then_some(status.writer.pid)
}

/// Says once that a live writer has not started yet.
pub fn announce_starting(command: &str, pid: Option<u32>, announced: &mut bool) {
    if !*announced {
        *announced = true;
        let who = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        eprintln!("shmring {command}: the writer{who} holds the ring but has not written a frame yet (still starting up?); waiting for it");
    }
}

/// Runs the command.
pub fn run(args: Args) -> Result<(), String> {
    // Start at the newest keyframe, and after any loss resume at a keyframe, so the
    // file always decodes.
    let mut reader = open_reader(&args.path, args.layout, ReaderOptions::default())?;
    let mut sink = if is_container(&args.out) {
        Sink::Container(None)
    } else if args.out.as_os_str() == "-" {
        Sink::Raw(BufWriter::new(Box::new(std::io::stdout().lock())))
    } else {
        let file = File::create(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
        Sink::Raw(BufWriter::new(Box::new(file)))
    };
    let mut timestamps = args.timestamps.as_deref().map(TimestampFile::create).transpose()?;
    let (mut frames, mut bytes) = (0u64, 0u64);
    let mut last_frame = Instant::now();
    let mut announced = false;
    let started = Instant::now();
    let mut first_time: Option<u64> = None;
    let mut last_time = 0u64;
    while args.count.is_none_or(|n| frames < n) {
        let left = match args.idle_timeout.checked_sub(last_frame.elapsed()) {
            Some(left) => left,
            None if frames == 0 && writer_starting(&reader).is_some() => {
                // Patience: a live writer that has not produced its first frame is
                // starting up (Genesis builds its scene for seconds to minutes).
                announce_starting("dump", writer_starting(&reader).flatten(), &mut announced);
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
                let time = raw_time.saturating_sub(*first_time.get_or_insert(raw_time));
                last_time = time;
                let payload = frame.payload;
                match &mut sink {
                    Sink::Raw(out) => out
                        .write_all(payload)
                        .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?,
                    Sink::Container(recording) => {
                        let recording = match recording {
                            Some(r) => r,
                            None => recording.insert(Recording::create(&args.out, frame.info.codec.0, payload)?),
                        };
                        recording.write(payload, frame.info.keyframe(), time)?;
                    }
                }
                if let Some(t) = &mut timestamps {
                    t.push(time)?;
                }
                frames += 1;
                bytes += payload.len() as u64;
                last_frame = Instant::now();
            }
            Ok(None) => {}
            Err(e) => eprintln!("shmring dump: {e}"),
        }
    }
    let mut nudged = 0;
    match sink {
        Sink::Raw(mut out) => out
            .flush()
            .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?,
        Sink::Container(Some(recording)) => {
            nudged = recording.nudged;
            recording.finish()?;
        }
        Sink::Container(None) => {}
    }
    if let Some(t) = timestamps {
        t.finish()?;
    }
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
