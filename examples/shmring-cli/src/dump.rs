//! `shmring dump`: payloads as a raw stream, from a keyframe on.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shmring_core::ReaderOptions;

use crate::{open_reader, parse_seconds, LayoutArg};

/// Arguments of `shmring dump`.
#[derive(clap::Args)]
pub struct Args {
    /// The ring file.
    path: PathBuf,
    /// Output file (`-` for standard output, for example `| ffplay -f h264 -`).
    #[arg(long, short = 'o', value_name = "FILE")]
    out: PathBuf,
    /// Stop after this many frames (default: run until interrupted or idle).
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Stop when no frame arrives for this many seconds.
    #[arg(long, value_parser = parse_seconds, value_name = "SECONDS", default_value = "5")]
    idle_timeout: Duration,
    /// Layout to open the file as.
    #[arg(long, value_enum, default_value_t)]
    layout: LayoutArg,
}

/// Runs the command.
pub fn run(args: Args) -> Result<(), String> {
    // Start at the newest keyframe, and after any loss resume at a keyframe, so the
    // file always decodes.
    let mut reader = open_reader(&args.path, args.layout, ReaderOptions::default())?;
    let sink: Box<dyn Write> = if args.out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?)
    };
    let mut out = BufWriter::new(sink);
    let (mut frames, mut bytes) = (0u64, 0u64);
    let mut last_frame = Instant::now();
    while args.count.is_none_or(|n| frames < n) {
        let Some(left) = args.idle_timeout.checked_sub(last_frame.elapsed()) else {
            break;
        };
        match reader.read_timeout(Some(left)) {
            Ok(Some(frame)) => {
                out.write_all(frame.payload)
                    .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
                frames += 1;
                bytes += frame.payload.len() as u64;
                last_frame = Instant::now();
            }
            Ok(None) => break,
            Err(e) => eprintln!("shmring dump: {e}"),
        }
    }
    out.flush()
        .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
    let stats = reader.stats();
    eprintln!(
        "shmring dump: {frames} frames, {bytes} bytes to {} (lost {})",
        args.out.display(),
        stats.lost
    );
    if frames == 0 {
        return Err(format!(
            "no frames arrived within {:.1} s; is a writer running?",
            args.idle_timeout.as_secs_f64()
        ));
    }
    Ok(())
}
