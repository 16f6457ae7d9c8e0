//! `shmring tail`: one line per frame as frames arrive.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use shmring_core::{FrameInfo, ReaderOptions};

use crate::patience::Patience;
use crate::{codec_name, flag_names, open_reader, parse_seconds, FromArg, LayoutArg};

/// Arguments of `shmring tail`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The ring file.
    path: PathBuf,
    /// Stop after this many frames (default: run until interrupted).
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Print JSON lines instead of text.
    #[arg(long)]
    json: bool,
    /// Where to start reading.
    #[arg(long, value_enum, default_value_t)]
    from: FromArg,
    /// Stop when no frame arrives for this many seconds (default: wait forever). A
    /// writer that holds the ring but has not written a frame since this command opened
    /// it or since it took the ring over is waited for without a limit.
    #[arg(long, value_parser = parse_seconds, value_name = "SECONDS")]
    idle_timeout: Option<Duration>,
    /// Layout to open the file as.
    #[arg(long, value_enum, default_value_t)]
    layout: LayoutArg,
}

/// `ok`, `bad`, or `none` (the writer computed no CRC).
pub(crate) fn crc_state(info: &FrameInfo, payload: &[u8]) -> &'static str {
    if info.flags & shmring_core::layout::FLAG_NO_CRC != 0 {
        return "none";
    }
    let crc = crc32fast::hash(payload);
    if crc == info.crc32 {
        "ok"
    } else if info.crc32 == 0 {
        "none"
    } else {
        "bad"
    }
}

/// Runs the command.
pub(crate) fn run(args: Args) -> Result<(), String> {
    // CRCs are checked here, per frame, so a bad one is shown rather than dropped.
    let options = ReaderOptions {
        start: args.from.into(),
        verify_crc: false,
        ..ReaderOptions::default()
    };
    let mut reader = open_reader(&args.path, args.layout, options)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut seen = 0u64;
    let mut last_frame = Instant::now();
    let mut patience = Patience::new("tail", &reader);
    while args.count.is_none_or(|n| seen < n) {
        let wait = match args.idle_timeout {
            Some(t) => match t.checked_sub(last_frame.elapsed()) {
                Some(left) => Some(left),
                None if patience.keep_waiting(&reader) => {
                    // A live writer that has not produced a frame is starting up (a
                    // simulator building its scene): no idle timeout for it.
                    last_frame = Instant::now();
                    continue;
                }
                None => break,
            },
            None => Some(Duration::from_millis(500)),
        };
        let frame = match reader.read_timeout(wait) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("shmring tail: {e}");
                continue;
            }
        };
        last_frame = Instant::now();
        seen += 1;
        let info = frame.info;
        let crc = crc_state(&info, frame.payload);
        let line = if args.json {
            json!({
                "frame_seq": info.frame_seq,
                "frame_id": info.frame_id,
                "size": info.size,
                "flags": info.flags,
                "keyframe": info.keyframe(),
                "codec": codec_name(info.codec.0),
                "crc": crc,
                "lost_before": info.lost_before,
            })
            .to_string()
        } else {
            let lost = if info.lost_before > 0 {
                format!("  (lost {} before)", info.lost_before)
            } else {
                String::new()
            };
            format!(
                "seq {:>8}  id {:>20}  {:>8} B  {:<9} {:<5} crc {}{lost}",
                info.frame_seq,
                info.frame_id,
                info.size,
                flag_names(&info),
                codec_name(info.codec.0),
                crc
            )
        };
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            // The reader of our output went away (`| head`): stop quietly.
            return Ok(());
        }
        patience.frame_arrived(&reader);
    }
    Ok(())
}
