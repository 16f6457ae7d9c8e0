//! `shmring testsrc`: the moving test pattern, encoded, into a ring.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use shmring_core::{LayoutChoice, RingWriter, WriterOptions};
use shmring_nvenc::ffmpeg_next::util::log;
use shmring_nvenc::testpattern::TestPattern;
use shmring_nvenc::{Encoder, EncoderChoice, EncoderConfig, PixelFormat, RateControl, VideoCodec};

/// Codec argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CodecArg {
    /// H.264 / AVC (ring codec 1).
    H264,
    /// HEVC / H.265 (ring codec 2).
    Hevc,
}

/// Layout of the ring to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CreateLayout {
    /// The v1 broadcast ring (`ring`, its former name in Python, is accepted).
    #[value(alias = "ring")]
    V1,
    /// The legacy single slot (for old readers).
    Legacy,
}

/// Arguments of `shmring testsrc`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The ring file to create (replaced if it exists and no writer holds it).
    path: PathBuf,
    /// Frame size, WIDTHxHEIGHT (even numbers).
    #[arg(long, default_value = "1280x720", value_parser = parse_size, value_name = "WxH")]
    size: (u32, u32),
    /// Frames per second (frames are paced to this rate unless --no-pace).
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// FFmpeg encoder: `auto` (h264_nvenc, else libx264; hevc_nvenc, else libx265) or a
    /// name such as libx264.
    #[arg(long, default_value = "auto")]
    encoder: String,
    /// Codec to produce.
    #[arg(long, value_enum, default_value = "h264")]
    codec: CodecArg,
    /// Target bit rate in bits per second (suffixes k and M allowed: 4M).
    #[arg(long, default_value = "4M", value_parser = parse_bitrate)]
    bitrate: u64,
    /// Use variable instead of constant bit rate.
    #[arg(long)]
    vbr: bool,
    /// Frames between keyframes (default: one second's worth).
    #[arg(long)]
    gop: Option<u32>,
    /// Raw pixel format the pattern is drawn in before encoding.
    #[arg(long, default_value = "rgb24", value_parser = parse_format)]
    format: PixelFormat,
    /// Stop after this many frames (default: run until interrupted).
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Encode as fast as possible instead of at --fps.
    #[arg(long)]
    no_pace: bool,
    /// Layout of the ring to create.
    #[arg(long, value_enum, default_value = "v1")]
    layout: CreateLayout,
    /// v1 frame-region size in bytes (a power of two).
    #[arg(long, default_value_t = 16 << 20)]
    capacity: usize,
    /// Show FFmpeg's own log messages (encoder statistics, NVENC errors).
    #[arg(long)]
    verbose: bool,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?} is not WIDTHxHEIGHT (for example 1280x720)"))?;
    let n = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("{v:?} in {s:?} is not a number"))
    };
    Ok((n(w)?, n(h)?))
}

fn parse_bitrate(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.strip_suffix(['M', 'm']) {
        Some(n) => (n, 1_000_000.0),
        None => match s.strip_suffix(['k', 'K']) {
            Some(n) => (n, 1_000.0),
            None => (s, 1.0),
        },
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a bit rate (for example 4M or 2500k)"))?;
    Ok((v * mult) as u64)
}

fn parse_format(s: &str) -> Result<PixelFormat, String> {
    PixelFormat::parse(s).ok_or_else(|| format!("{s:?} is not one of rgb24, rgba, bgra, nv12"))
}

fn encoder_config(args: &Args) -> EncoderConfig {
    EncoderConfig {
        width: args.size.0,
        height: args.size.1,
        fps: args.fps,
        codec: match args.codec {
            CodecArg::H264 => VideoCodec::H264,
            CodecArg::Hevc => VideoCodec::HEVC,
        },
        encoder: EncoderChoice::parse(&args.encoder),
        bitrate_bps: args.bitrate,
        rate_control: if args.vbr { RateControl::Vbr } else { RateControl::Cbr },
        gop: args.gop.unwrap_or(args.fps.max(1)),
        input: args.format,
        options: Vec::new(),
    }
}

/// Runs the command.
pub(crate) fn run(args: Args) -> Result<(), String> {
    if !args.verbose {
        log::set_level(log::Level::Fatal);
    }
    let (width, height) = args.size;
    let mut encoder = Encoder::new(encoder_config(&args)).map_err(|e| e.to_string())?;
    let options = WriterOptions {
        layout: match args.layout {
            CreateLayout::V1 => LayoutChoice::V1,
            CreateLayout::Legacy => LayoutChoice::Legacy,
        },
        capacity: args.capacity,
        ..WriterOptions::default()
    };
    let mut ring = RingWriter::create(&args.path, &options).map_err(|e| e.to_string())?;
    for (name, why) in encoder.fallback_reasons() {
        eprintln!("testsrc: {name} not used: {why}");
    }
    eprintln!(
        "testsrc: {width}x{height} @ {} fps, {} with {} ({} input, {} into the encoder), {} bit/s, GOP {} -> {} ({:?})",
        args.fps,
        encoder.config().codec,
        encoder.name(),
        args.format,
        encoder.encoder_pixel_format(),
        args.bitrate,
        encoder.config().gop,
        args.path.display(),
        args.layout,
    );
    let pattern = TestPattern::new(width, height, args.format);
    let mut frame = Vec::new();
    let period = Duration::from_secs_f64(1.0 / args.fps.max(1) as f64);
    let start = Instant::now();
    let mut last_report = start;
    let mut frames = 0u64;
    while args.count.is_none_or(|n| frames < n) {
        if !args.no_pace {
            let due = start + period.mul_f64(frames as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        pattern.render_into(frames, &mut frame);
        match encoder.encode(&frame, pattern.stride(), frames, &mut ring) {
            Ok(_) => {}
            Err(e) => eprintln!("testsrc: frame {frames}: {e}"),
        }
        frames += 1;
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "testsrc: {frames} frames ({:.1} fps)",
                frames as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    encoder.flush(&mut ring).map_err(|e| e.to_string())?;
    let elapsed = start.elapsed().as_secs_f64();
    eprintln!(
        "testsrc: {frames} frames in {elapsed:.2} s ({:.1} fps), {} access units in the ring",
        frames as f64 / elapsed.max(1e-9),
        encoder.frames_out()
    );
    Ok(())
}
