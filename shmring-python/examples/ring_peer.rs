//! The Rust side of the Python package's interop tests and write benchmark: a separate
//! process that writes, reads or benchmarks a ring with `shmring-core` directly.
//!
//! ```text
//! ring_peer write PATH [--layout v1|legacy] [--capacity N] [--count N] [--size N] [--step] [--hold]
//! ring_peer read  PATH [--layout auto|ring|legacy] [--start next|latest_keyframe|latest] [--count N] [--timeout-ms N]
//! ring_peer bench PATH [--layout v1|legacy] [--capacity N] [--size N] [--count N] [--crc on|off]
//! ```
//!
//! `write` prints `ready` once the ring is open, waits for one line on stdin, then writes
//! `--count` frames made by [`payload`] (with `--step`, it waits for a line before each
//! frame instead), prints `done`, and with `--hold` keeps the ring open until stdin
//! closes. `read` prints `ready`, then one line per frame:
//! `frame_seq frame_id keyframe codec payload-hex`. `bench` prints one JSON object: wall and thread CPU time per write.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use shmring_core::{
    Codec, FrameMeta, LayoutChoice, ReaderOptions, RingReader, RingWriter, StartPosition, WriterOptions,
};

/// The payload of the `index`-th frame (1-based) a `write` peer sends: `size` bytes of a
/// pattern that differs from frame to frame, so a reader's copy can be checked exactly.
fn payload(index: u64, size: usize) -> Vec<u8> {
    (0..size).map(|j| ((index * 31 + j as u64 * 7) % 251) as u8).collect()
}

/// Every third frame (1, 4, 7, ...) is a keyframe.
fn is_keyframe(index: u64) -> bool {
    index % 3 == 1
}

struct Args {
    command: String,
    path: String,
    layout: String,
    start: String,
    capacity: Option<usize>,
    count: u64,
    size: usize,
    timeout_ms: u64,
    step: bool,
    hold: bool,
    crc: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let command = it.next().ok_or("missing command (write, read or bench)")?;
    let path = it.next().ok_or("missing ring path")?;
    let mut args = Args {
        command,
        path,
        layout: String::from("auto"),
        start: String::from("next"),
        capacity: None,
        count: 10,
        size: 1024,
        timeout_ms: 10_000,
        step: false,
        hold: false,
        crc: true,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--layout" => args.layout = value()?,
            "--start" => args.start = value()?,
            "--capacity" => args.capacity = Some(number(value()?)? as usize),
            "--count" => args.count = number(value()?)?,
            "--size" => args.size = number(value()?)? as usize,
            "--timeout-ms" => args.timeout_ms = number(value()?)?,
            "--crc" => args.crc = value()? == "on",
            "--step" => args.step = true,
            "--hold" => args.hold = true,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn writer_options(args: &Args) -> WriterOptions {
    let mut options = WriterOptions {
        crc: args.crc,
        ..WriterOptions::default()
    };
    if args.layout == "legacy" {
        options.layout = LayoutChoice::Legacy;
        if let Some(len) = args.capacity {
            options.legacy_len = len;
        }
    } else {
        options.layout = LayoutChoice::V1;
        if let Some(capacity) = args.capacity {
            options.capacity = capacity;
        }
    }
    options
}

fn wait_line(stdin: &mut impl BufRead) -> io::Result<()> {
    let mut line = String::new();
    stdin.read_line(&mut line)?;
    Ok(())
}

fn write(args: &Args) -> Result<(), String> {
    let mut writer = RingWriter::open_or_create(&args.path, &writer_options(args)).map_err(|e| e.to_string())?;
    let mut stdin = io::stdin().lock();
    let mut out = io::stdout().lock();
    let say = |out: &mut io::StdoutLock<'_>, s: &str| -> Result<(), String> {
        writeln!(out, "{s}")
            .and_then(|_| out.flush())
            .map_err(|e| e.to_string())
    };
    say(&mut out, "ready")?;
    if !args.step {
        wait_line(&mut stdin).map_err(|e| e.to_string())?;
    }
    for index in 1..=args.count {
        if args.step {
            wait_line(&mut stdin).map_err(|e| e.to_string())?;
        }
        let meta = FrameMeta {
            frame_id: 1000 + index,
            keyframe: is_keyframe(index),
            codec: Codec::H264,
        };
        let seq = writer
            .write(&payload(index, args.size), meta)
            .map_err(|e| e.to_string())?;
        if args.step {
            say(&mut out, &format!("wrote {seq}"))?;
        }
    }
    say(&mut out, "done")?;
    if args.hold {
        let mut rest = String::new();
        while stdin.read_line(&mut rest).map_err(|e| e.to_string())? > 0 {}
    }
    Ok(())
}

fn read(args: &Args) -> Result<(), String> {
    let start = match args.start.as_str() {
        "next" => StartPosition::Next,
        "latest" => StartPosition::Latest,
        "latest_keyframe" => StartPosition::LatestKeyframe,
        other => return Err(format!("unknown start {other}")),
    };
    let layout = match args.layout.as_str() {
        "auto" => LayoutChoice::Auto,
        "v1" | "ring" => LayoutChoice::V1,
        "legacy" => LayoutChoice::Legacy,
        other => return Err(format!("unknown layout {other}")),
    };
    let options = ReaderOptions {
        start,
        ..ReaderOptions::default()
    };
    let mut reader = RingReader::open_layout(&args.path, &options, layout).map_err(|e| e.to_string())?;
    let mut out = io::stdout().lock();
    writeln!(out, "ready")
        .and_then(|_| out.flush())
        .map_err(|e| e.to_string())?;
    let timeout = Duration::from_millis(args.timeout_ms);
    for _ in 0..args.count {
        let frame = reader
            .read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no frame within {} ms", args.timeout_ms))?;
        let hex: String = frame.payload.iter().map(|b| format!("{b:02x}")).collect();
        let info = frame.info;
        writeln!(
            out,
            "{} {} {} {} {hex}",
            info.frame_seq,
            info.frame_id,
            u8::from(info.keyframe()),
            info.codec.0
        )
        .and_then(|_| out.flush())
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Times `count` writes of one `size`-byte payload (after a warm-up of a tenth as many).
/// CPU time this thread has run, in ns (CLOCK_THREAD_CPUTIME_ID). Unlike wall time it
/// leaves out time spent waiting for a CPU, so it stays comparable when other work loads
/// the machine.
fn thread_cpu_ns() -> Result<u64, String> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes to it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Err(format!("clock_gettime: {}", io::Error::last_os_error()));
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

fn bench(args: &Args) -> Result<(), String> {
    let mut writer = RingWriter::create(&args.path, &writer_options(args)).map_err(|e| e.to_string())?;
    let data = payload(1, args.size);
    let meta = FrameMeta::delta(0);
    for _ in 0..args.count / 10 {
        writer.write(&data, meta).map_err(|e| e.to_string())?;
    }
    let cpu_started = thread_cpu_ns()?;
    let started = Instant::now();
    for _ in 0..args.count {
        writer.write(&data, meta).map_err(|e| e.to_string())?;
    }
    let ns = started.elapsed().as_nanos() as f64 / args.count as f64;
    let cpu_ns = (thread_cpu_ns()? - cpu_started) as f64 / args.count as f64;
    println!(
        "{{\"size\": {}, \"count\": {}, \"ns_per_write\": {ns:.1}, \"cpu_ns_per_write\": {cpu_ns:.1}}}",
        args.size, args.count
    );
    Ok(())
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|args| match args.command.as_str() {
        "write" => write(&args),
        "read" => read(&args),
        "bench" => bench(&args),
        other => Err(format!("unknown command {other}")),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ring_peer: {e}");
            ExitCode::FAILURE
        }
    }
}
