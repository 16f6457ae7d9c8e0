//! `shmring bench`: cross-process throughput and latency. This process writes; reader
//! child processes (`shmring bench-reader`, the same binary) read and report back one
//! JSON line each. Payloads carry the wall-clock time they were written, so each reader
//! measures write-to-read latency across processes.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use shmring_core::{Codec, FrameMeta, ReaderOptions, RingReader, RingWriter, StartPosition, WriterOptions};

use crate::parse_seconds;

/// frame_id of the frame that tells readers the run is over.
const END: u64 = u64::MAX;

/// Arguments of `shmring bench`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Payload sizes in bytes, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1024usize, 65536, 1 << 20])]
    sizes: Vec<usize>,
    /// Frames per run.
    #[arg(long, default_value_t = 20_000)]
    frames: u64,
    /// Reader processes.
    #[arg(long, default_value_t = 2)]
    readers: usize,
    /// Frame rate of the latency runs (the throughput runs write as fast as possible).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// v1 frame-region size in bytes (a power of two).
    #[arg(long, default_value_t = 64 << 20)]
    capacity: usize,
    /// Directory for the benchmark's ring file (tmpfs, like real rings).
    #[arg(long, default_value = "/dev/shm")]
    dir: PathBuf,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of the hidden reader process.
#[derive(clap::Args)]
pub(crate) struct ReaderArgs {
    /// The ring file.
    path: PathBuf,
    /// Give up when no frame arrives for this long.
    #[arg(long, value_parser = parse_seconds, default_value = "5")]
    idle_timeout: Duration,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// One reader process: reads until the END frame, then prints its counts and latency
/// percentiles (microseconds) as JSON.
pub(crate) fn run_reader(args: ReaderArgs) -> Result<(), String> {
    let options = ReaderOptions {
        start: StartPosition::Next,
        resync_at_keyframe: false,
        ..ReaderOptions::default()
    };
    let mut reader = RingReader::open(&args.path, &options).map_err(|e| e.to_string())?;
    println!("ready");
    let mut latencies = Vec::new();
    let mut first: Option<Instant> = None;
    let mut bytes = 0u64;
    let mut ended = false;
    loop {
        match reader.read_timeout(Some(args.idle_timeout)) {
            Ok(Some(frame)) => {
                let now = now_ns();
                first.get_or_insert_with(Instant::now);
                if frame.info.frame_id == END {
                    ended = true;
                    break;
                }
                if let Some(ts) = frame.payload.get(..8) {
                    let ts = u64::from_le_bytes(ts.try_into().unwrap_or([0; 8]));
                    latencies.push(now.saturating_sub(ts) / 1000);
                }
                bytes += frame.payload.len() as u64;
            }
            Ok(None) => break,
            Err(e) => eprintln!("bench-reader: {e}"),
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
    };
    let stats = reader.stats();
    println!(
        "{}",
        json!({
            "ended": ended,
            "delivered": latencies.len(),
            "lost": stats.lost,
            "lapped": stats.lapped,
            "bytes": bytes,
            "seconds": first.map(|f| f.elapsed().as_secs_f64()),
            "p50_us": pct(0.5),
            "p99_us": pct(0.99),
            "max_us": latencies.last(),
        })
    );
    Ok(())
}

struct Run {
    size: usize,
    mode: &'static str,
    frames: u64,
    write_seconds: f64,
    readers: Vec<Value>,
}

fn spawn_readers(path: &PathBuf, n: usize) -> Result<Vec<(Child, BufReader<std::process::ChildStdout>)>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the shmring binary: {e}"))?;
    let mut children = Vec::new();
    for _ in 0..n {
        let mut child = Command::new(&exe)
            .arg("bench-reader")
            .arg(path)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start a reader process: {e}"))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| format!("reader process: {e}"))?;
        if line.trim() != "ready" {
            let _ = child.kill();
            return Err(format!("reader process did not start (said {line:?})"));
        }
        children.push((child, out));
    }
    Ok(children)
}

fn one_run(path: &PathBuf, args: &Args, size: usize, paced: bool) -> Result<Run, String> {
    let options = WriterOptions {
        capacity: args.capacity,
        ..WriterOptions::default()
    };
    let mut writer = RingWriter::create(path, &options).map_err(|e| e.to_string())?;
    if size < 8 || size > writer.max_frame_size() {
        return Err(format!(
            "size {size} must be 8 ..= {} (the ring's largest frame)",
            writer.max_frame_size()
        ));
    }
    let children = spawn_readers(path, args.readers)?;
    let frames = if paced {
        args.frames.min(args.rate as u64 * 3)
    } else {
        args.frames
    };
    let mut payload = vec![0x5au8; size];
    let period = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let start = Instant::now();
    for i in 0..frames {
        if paced {
            let due = start + period.mul_f64(i as f64);
            while Instant::now() < due {
                std::hint::spin_loop();
            }
        }
        payload[..8].copy_from_slice(&now_ns().to_le_bytes());
        writer
            .write(
                &payload,
                FrameMeta {
                    frame_id: i,
                    keyframe: true,
                    codec: Codec(0),
                },
            )
            .map_err(|e| e.to_string())?;
    }
    let write_seconds = start.elapsed().as_secs_f64();
    writer
        .write(
            &payload[..8],
            FrameMeta {
                frame_id: END,
                keyframe: true,
                codec: Codec(0),
            },
        )
        .map_err(|e| e.to_string())?;
    let mut readers = Vec::new();
    for (mut child, mut out) in children {
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| format!("reader process: {e}"))?;
        let _ = child.wait();
        readers.push(serde_json::from_str(&line).map_err(|e| format!("reader process said {line:?}: {e}"))?);
    }
    drop(writer);
    Ok(Run {
        size,
        mode: if paced { "latency" } else { "throughput" },
        frames,
        write_seconds,
        readers,
    })
}

/// Runs the command.
pub(crate) fn run(args: Args) -> Result<(), String> {
    if args.readers == 0 {
        return Err("--readers must be at least 1".into());
    }
    let path = args.dir.join(format!("shmring-bench-{}", std::process::id()));
    let mut runs = Vec::new();
    let result = (|| {
        for &size in &args.sizes {
            for paced in [false, true] {
                runs.push(one_run(&path, &args, size, paced)?);
            }
        }
        Ok::<(), String>(())
    })();
    let _ = std::fs::remove_file(&path);
    result?;
    if !args.json {
        println!(
            "{:>9} {:>10} {:>7} {:>12} {:>10} {:>6} {:>10} {:>8} {:>8} {:>8} {:>8}",
            "size", "mode", "frames", "write fps", "MB/s", "reader", "delivered", "lost", "p50 us", "p99 us", "max us"
        );
    }
    for run in &runs {
        let fps = run.frames as f64 / run.write_seconds.max(1e-9);
        let mbps = fps * run.size as f64 / 1e6;
        for (i, r) in run.readers.iter().enumerate() {
            if args.json {
                println!(
                    "{}",
                    json!({"size": run.size, "mode": run.mode, "frames": run.frames, "write_fps": fps, "write_mb_s": mbps, "reader": i, "result": r})
                );
            } else {
                let f = |k: &str| r[k].as_u64().map(|v| v.to_string()).unwrap_or_else(|| "-".into());
                println!(
                    "{:>9} {:>10} {:>7} {:>12.0} {:>10.1} {:>6} {:>10} {:>8} {:>8} {:>8} {:>8}",
                    run.size,
                    run.mode,
                    run.frames,
                    fps,
                    mbps,
                    i,
                    f("delivered"),
                    f("lost"),
                    f("p50_us"),
                    f("p99_us"),
                    f("max_us")
                );
            }
        }
    }
    Ok(())
}
