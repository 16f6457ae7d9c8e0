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
    /// The ring file to create (replaced if it exists and no writer holds it); for
    /// several cameras use --cameras and --dir instead.
    #[arg(required_unless_present = "cameras", conflicts_with = "cameras")]
    path: Option<PathBuf>,
    /// Write several test cameras from this process: comma-separated names (letters,
    /// digits, - _ .), one ring per camera at DIR/<name>, each with its name drawn in.
    #[arg(long, value_delimiter = ',', value_name = "NAMES", requires = "dir")]
    cameras: Vec<String>,
    /// Directory of the cameras' rings (with --cameras; created if missing).
    #[arg(long, value_name = "DIR", requires = "cameras")]
    dir: Option<PathBuf>,
    /// Frame size, WIDTHxHEIGHT (even numbers); with --cameras, one size for all or one
    /// per camera, comma-separated.
    #[arg(long, default_value = "1280x720", value_parser = parse_size, value_delimiter = ',', value_name = "WxH")]
    size: Vec<(u32, u32)>,
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
    /// Target bit rate in bits per second (suffixes k and M allowed: 4M), per camera.
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
    /// Stop after this many frames per camera (default: run until interrupted).
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Encode as fast as possible instead of at --fps.
    #[arg(long)]
    no_pace: bool,
    /// Layout of the ring(s) to create.
    #[arg(long, value_enum, default_value = "v1")]
    layout: CreateLayout,
    /// v1 frame-region size in bytes (a power of two), per ring.
    #[arg(long, default_value_t = 16 << 20)]
    capacity: usize,
    /// Show FFmpeg's own log messages (encoder statistics, NVENC errors).
    #[arg(long)]
    verbose: bool,
}

/// One ring this command writes.
struct CameraSpec {
    /// The camera's name (`None`: the one ring of today's `testsrc PATH`).
    name: Option<String>,
    /// Its position among the cameras (picks its colours).
    index: usize,
    path: PathBuf,
    size: (u32, u32),
}

impl CameraSpec {
    /// What its log lines start with.
    fn prefix(&self) -> String {
        match &self.name {
            Some(name) => format!("testsrc {name}:"),
            None => "testsrc:".into(),
        }
    }
}

/// Checks a camera name: it becomes a file name, a URL path segment and a NATS subject
/// token, so only letters, digits, `-`, `_` and `.` (not first) are taken.
fn check_camera_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.starts_with('.') || !name.chars().all(allowed) {
        return Err(format!(
            "camera name {name:?} is not usable: use letters, digits, '-', '_' and '.' (not first), as in --cameras front,wrist,depth"
        ));
    }
    Ok(())
}

/// The rings to write, from the command line.
fn camera_specs(args: &Args) -> Result<Vec<CameraSpec>, String> {
    let (Some(dir), false) = (&args.dir, args.cameras.is_empty()) else {
        let path = args
            .path
            .clone()
            .ok_or("give a ring file, or --cameras NAMES --dir DIR")?;
        if args.size.len() != 1 {
            return Err(format!("one ring takes one --size, not {}", args.size.len()));
        }
        return Ok(vec![CameraSpec {
            name: None,
            index: 0,
            path,
            size: args.size[0],
        }]);
    };
    if args.size.len() != 1 && args.size.len() != args.cameras.len() {
        return Err(format!(
            "--size gives {} sizes for {} cameras: give one for all, or one per camera",
            args.size.len(),
            args.cameras.len()
        ));
    }
    let mut specs: Vec<CameraSpec> = Vec::new();
    for (index, name) in args.cameras.iter().enumerate() {
        check_camera_name(name)?;
        if specs.iter().any(|s| s.name.as_deref() == Some(name)) {
            return Err(format!("camera {name:?} is named twice in --cameras"));
        }
        let size = args.size[if args.size.len() == 1 { 0 } else { index }];
        specs.push(CameraSpec {
            name: Some(name.clone()),
            index,
            path: dir.join(name),
            size,
        });
    }
    Ok(specs)
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

fn encoder_config(args: &Args, (width, height): (u32, u32)) -> EncoderConfig {
    EncoderConfig {
        width,
        height,
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

/// A camera ready to stream: its encoder, its ring and its pattern.
struct Camera<'a> {
    spec: &'a CameraSpec,
    encoder: Encoder,
    ring: RingWriter,
    pattern: TestPattern,
}

/// Creates a camera's encoder and ring, and says what it writes.
fn open_camera<'a>(args: &Args, spec: &'a CameraSpec) -> Result<Camera<'a>, String> {
    let (width, height) = spec.size;
    let prefix = spec.prefix();
    let encoder = Encoder::new(encoder_config(args, spec.size)).map_err(|e| e.to_string())?;
    let options = WriterOptions {
        layout: match args.layout {
            CreateLayout::V1 => LayoutChoice::V1,
            CreateLayout::Legacy => LayoutChoice::Legacy,
        },
        capacity: args.capacity,
        ..WriterOptions::default()
    };
    let ring = RingWriter::create(&spec.path, &options).map_err(|e| e.to_string())?;
    for (name, why) in encoder.fallback_reasons() {
        eprintln!("{prefix} {name} not used: {why}");
    }
    eprintln!(
        "{prefix} {width}x{height} @ {} fps, {} with {} ({} input, {} into the encoder), {} bit/s, GOP {} -> {} ({:?})",
        args.fps,
        encoder.config().codec,
        encoder.name(),
        args.format,
        encoder.encoder_pixel_format(),
        args.bitrate,
        encoder.config().gop,
        spec.path.display(),
        args.layout,
    );
    let mut pattern = TestPattern::new(width, height, args.format);
    if let Some(name) = &spec.name {
        pattern = pattern.with_camera(name, spec.index);
    }
    Ok(Camera {
        spec,
        encoder,
        ring,
        pattern,
    })
}

/// Encodes the camera's frames into its ring until --count (or forever).
fn stream(args: &Args, camera: Camera<'_>) -> Result<(), String> {
    let Camera {
        spec,
        mut encoder,
        mut ring,
        pattern,
    } = camera;
    let prefix = spec.prefix();
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
            Err(e) => eprintln!("{prefix} frame {frames}: {e}"),
        }
        frames += 1;
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "{prefix} {frames} frames ({:.1} fps)",
                frames as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    encoder.flush(&mut ring).map_err(|e| e.to_string())?;
    let elapsed = start.elapsed().as_secs_f64();
    eprintln!(
        "{prefix} {frames} frames in {elapsed:.2} s ({:.1} fps), {} access units in the ring",
        frames as f64 / elapsed.max(1e-9),
        encoder.frames_out()
    );
    Ok(())
}

/// Runs the command: every camera's ring is created first (a bad one stops the command
/// before any streams), then each camera streams from its own thread.
pub(crate) fn run(args: Args) -> Result<(), String> {
    if !args.verbose {
        log::set_level(log::Level::Fatal);
    }
    let specs = camera_specs(&args)?;
    let mut cameras = Vec::with_capacity(specs.len());
    for spec in &specs {
        let camera = open_camera(&args, spec).map_err(|e| match &spec.name {
            Some(name) => format!("camera {name}: {e}"),
            None => e,
        })?;
        cameras.push(camera);
    }
    if cameras.len() == 1 {
        return stream(&args, cameras.pop().expect("one camera"));
    }
    let args = &args;
    std::thread::scope(|scope| {
        let running: Vec<_> = cameras
            .into_iter()
            .map(|camera| {
                let name = camera.spec.name.clone().unwrap_or_default();
                (name, scope.spawn(move || stream(args, camera)))
            })
            .collect();
        let mut failures = Vec::new();
        for (name, handle) in running {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("camera {name}: {e}")),
                Err(_) => failures.push(format!("camera {name}: its thread panicked")),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    })
}
