//! Encoder benchmark: encode fps through a ring against the `ffmpeg` command-line tool
//! doing the same encode (same encoder, same options, same raw frames) in the same run,
//! and the latency the ring adds per frame (encoder output to committed in the ring).
//!
//! ```sh
//! cargo run --release -p shmring-nvenc --example encode_bench -- [--reps 5] [--sizes 1280x720,1920x1080]
//! ```
//!
//! Runs alternate (ours, ffmpeg, ours, ...) so machine load hits both alike. Prints a
//! Markdown table for docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use shmring_core::{RingWriter, WriterOptions};
use shmring_nvenc::ffmpeg_next::util::log;
use shmring_nvenc::testpattern::TestPattern;
use shmring_nvenc::{AccessUnit, Encoder, EncoderConfig, FrameSink, PixelFormat, SinkError};

/// Times each ring write: the encoder has produced the access unit when this sink is
/// called, and `write` returns once it is committed and readers are woken.
struct TimedRing {
    ring: RingWriter,
    write_ns: Vec<u64>,
}

impl FrameSink for TimedRing {
    fn write_access_unit(&mut self, au: &AccessUnit<'_>) -> Result<u64, SinkError> {
        let start = Instant::now();
        let seq = self.ring.write_access_unit(au)?;
        self.write_ns.push(start.elapsed().as_nanos() as u64);
        Ok(seq)
    }
}

struct Args {
    reps: usize,
    sizes: Vec<(u32, u32)>,
    frames_720: usize,
    dir: PathBuf,
}

fn parse_args() -> Args {
    let mut args = Args {
        reps: 5,
        sizes: vec![(1280, 720), (1920, 1080)],
        frames_720: 300,
        dir: PathBuf::from("/dev/shm"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--reps" => args.reps = value().parse().expect("--reps N"),
            "--frames" => args.frames_720 = value().parse().expect("--frames N"),
            "--dir" => args.dir = PathBuf::from(value()),
            "--sizes" => {
                args.sizes = value()
                    .split(',')
                    .map(|s| {
                        let (w, h) = s.split_once('x').expect("WxH");
                        (w.parse().expect("width"), h.parse().expect("height"))
                    })
                    .collect()
            }
            other => panic!("unknown argument {other}; use --reps N --frames N --sizes WxH,WxH --dir DIR"),
        }
    }
    args
}

/// User + system CPU seconds of this process (`RUSAGE_SELF`, all its threads) or of
/// its waited-for children (`RUSAGE_CHILDREN`). CPU time per frame compares the two
/// encoders even when other work on the machine slows both down.
fn cpu_seconds(who: libc::c_int) -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable rusage; getrusage only writes it.
    let rc = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage");
    // SAFETY: getrusage succeeded, so it initialised `usage` (and zeroed is valid anyway).
    let u = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `frames` frames of `pattern`, one after the other.
fn render_frames(pattern: &TestPattern, frames: usize) -> Vec<u8> {
    let mut raw = Vec::with_capacity(pattern.frame_len() * frames);
    for i in 0..frames {
        raw.extend_from_slice(&pattern.render(i as u64));
    }
    raw
}

/// Opens the encoder and encodes every frame of `raw` into a new ring at `ring_path`,
/// flushing at the end: the encoder and how long each ring write took (ns).
fn encode_into_ring(
    config: &EncoderConfig,
    ring_path: &Path,
    raw: &[u8],
    pattern: &TestPattern,
) -> (Encoder, Vec<u64>) {
    let mut encoder = Encoder::new(config.clone()).expect("open the encoder");
    let ring = RingWriter::create(
        ring_path,
        &WriterOptions {
            capacity: 64 << 20,
            ..WriterOptions::default()
        },
    )
    .expect("create the ring");
    let mut sink = TimedRing {
        ring,
        write_ns: Vec::with_capacity(raw.len() / pattern.frame_len()),
    };
    for (i, frame) in raw.chunks_exact(pattern.frame_len()).enumerate() {
        encoder
            .encode(frame, pattern.stride(), i as u64, &mut sink)
            .expect("encode");
    }
    encoder.flush(&mut sink).expect("flush");
    (encoder, sink.write_ns)
}

/// The ffmpeg command line running `encoder` with its options on the raw frames at
/// `raw_path`, output discarded.
fn ffmpeg_args(encoder: &Encoder, config: &EncoderConfig, raw_path: &Path) -> Vec<String> {
    let mut cli = vec![
        "-hide_banner".to_string(),
        "-nostdin".into(),
        "-loglevel".into(),
        "error".into(),
        "-f".into(),
        "rawvideo".into(),
        "-pix_fmt".into(),
        "rgb24".into(),
        "-s".into(),
        format!("{}x{}", config.width, config.height),
        "-r".into(),
        config.fps.to_string(),
        "-i".into(),
        raw_path.display().to_string(),
        "-sws_flags".into(),
        "bicubic".into(),
        "-pix_fmt".into(),
        encoder.encoder_pixel_format().into(),
        "-c:v".into(),
        encoder.name().to_string(),
    ];
    for (k, v) in encoder.ffmpeg_options() {
        cli.push(format!("-{k}"));
        cli.push(v.clone());
    }
    cli.extend(["-f".into(), "h264".into(), "-y".into(), "/dev/null".into()]);
    cli
}

fn main() {
    let args = parse_args();
    log::set_level(log::Level::Fatal);
    println!("| size | encoder | frames x runs | shmring fps (median, min-max) | ffmpeg CLI fps (median, min-max) | fps ratio (median of paired runs) | CPU ms/frame shmring / ffmpeg | CPU ratio | ring write p50 / p99 / max |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &(width, height) in &args.sizes {
        // Same number of pixels per run at every size (300 frames at 720p).
        let frames = (args.frames_720 as u64 * 1280 * 720 / (width as u64 * height as u64)).max(30) as usize;
        let pattern = TestPattern::new(width, height, PixelFormat::Rgb24);
        let raw = render_frames(&pattern, frames);
        let raw_path = args
            .dir
            .join(format!("shmring-encode-bench-{}.rgb", std::process::id()));
        let ring_path = args
            .dir
            .join(format!("shmring-encode-bench-{}.ring", std::process::id()));
        std::fs::write(&raw_path, &raw).expect("write the raw frames for ffmpeg");
        let config = EncoderConfig::new(width, height);

        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ours_cpu, mut theirs_cpu) = (0.0, 0.0);
        let mut writes = Vec::new();
        let mut name = String::new();
        let mut cli = Vec::new();
        for _ in 0..args.reps {
            // Ours: open the encoder, encode every frame into the ring, flush.
            let start = Instant::now();
            let cpu_start = cpu_seconds(libc::RUSAGE_SELF);
            let (encoder, write_ns) = encode_into_ring(&config, &ring_path, &raw, &pattern);
            let ours_s = start.elapsed().as_secs_f64();
            ours_cpu += cpu_seconds(libc::RUSAGE_SELF) - cpu_start;
            assert_eq!(write_ns.len(), frames, "every frame reached the ring");
            writes.extend_from_slice(&write_ns);
            name = encoder.name().to_string();

            // ffmpeg: the same encoder and options on the same frames, output discarded.
            cli = ffmpeg_args(&encoder, &config, &raw_path);
            drop(encoder);
            let start = Instant::now();
            let cpu_start = cpu_seconds(libc::RUSAGE_CHILDREN);
            let status = Command::new("ffmpeg").args(&cli).status().expect("run ffmpeg");
            let theirs_s = start.elapsed().as_secs_f64();
            theirs_cpu += cpu_seconds(libc::RUSAGE_CHILDREN) - cpu_start;
            assert!(status.success(), "ffmpeg {}", cli.join(" "));

            let (a, b) = (frames as f64 / ours_s, frames as f64 / theirs_s);
            ours.push(a);
            theirs.push(b);
            ratios.push(a / b);
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = std::fs::remove_file(&raw_path);
        let _ = std::fs::remove_file(&ring_path);
        writes.sort_unstable();
        let range = |v: &[f64]| {
            let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
            format!("{lo:.0}-{hi:.0}")
        };
        let (o_range, t_range) = (range(&ours), range(&theirs));
        let per_frame = |cpu: f64| cpu * 1000.0 / (frames * args.reps) as f64;
        eprintln!(
            "fps ratios per run, in run order: {:?}",
            ratios.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>()
        );
        println!(
            "| {width}x{height} | {name} | {frames} x {} | {:.1} ({o_range}) | {:.1} ({t_range}) | {:.3} | {:.2} / {:.2} | {:.3} |  {:.1} / {:.1} / {:.1} µs |",
            args.reps,
            median(&mut ours),
            median(&mut theirs),
            median(&mut ratios),
            per_frame(ours_cpu),
            per_frame(theirs_cpu),
            theirs_cpu / ours_cpu,
            percentile(&writes, 0.5) as f64 / 1000.0,
            percentile(&writes, 0.99) as f64 / 1000.0,
            *writes.last().unwrap() as f64 / 1000.0,
        );
        eprintln!("ffmpeg {}", cli.join(" "));
    }
}
