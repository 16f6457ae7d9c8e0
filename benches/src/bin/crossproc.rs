//! Cross-process comparison harness: one-way latency (half of a ping-pong between two
//! processes pinned to different cores) of shmring against a bare one-cache-line
//! ping-pong (the floor), a blocking Unix domain socket and, with `--features iceoryx2`,
//! iceoryx2; futex wake latency of a blocked reader and its idle CPU; writer throughput
//! with 0, 1 and 8 reader processes attached; the cadence-aware wake-up against plain
//! sleeping at 60 fps (v1 and legacy rings, and an irregular writer); timer overshoot.
//!
//! `cargo run --release -p shmring-benches --bin crossproc -- [latency|wake|readers|cadence|overshoot|all]`

use shmring_core::{
    FrameMeta, LayoutChoice, ReaderOptions, RingReader, RingWriter, StartPosition, WakePolicy, WriterOptions,
};
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it for this process only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(
            cpu % libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize,
            &mut set,
        );
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn scratch_dir() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("shmring-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn child(args: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .arg("--child")
        .args(args)
        .spawn()
        .expect("spawn child")
}

/// Percentiles of a sample, in nanoseconds.
struct Summary {
    p50: f64,
    p99: f64,
    p999: f64,
}

fn summarize(mut ns: Vec<f64>) -> Summary {
    ns.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| ns[((ns.len() as f64 - 1.0) * q).round() as usize];
    Summary {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} us", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

fn row(name: &str, size: usize, s: &Summary) {
    println!(
        "| {name:<28} | {size:>6} | {:>10} | {:>10} | {:>10} |",
        fmt_ns(s.p50),
        fmt_ns(s.p99),
        fmt_ns(s.p999)
    );
}

const WARMUP: usize = 2_000;

fn rounds_for(size: usize) -> usize {
    if size <= 4096 {
        200_000
    } else {
        50_000
    }
}

// ---------------------------------------------------------------- shmring ping-pong

fn ring_opts(size: usize) -> WriterOptions {
    WriterOptions {
        capacity: (size * 16).next_power_of_two().max(1 << 16),
        crc: false,
        ..Default::default()
    }
}

fn spin_read(r: &mut RingReader, buf: &mut [u8]) -> u64 {
    loop {
        if let Some(info) = r.try_read_into(buf).unwrap() {
            return info.frame_id;
        }
        std::hint::spin_loop();
    }
}

fn reader_opts() -> ReaderOptions {
    ReaderOptions {
        start: StartPosition::Next,
        verify_crc: false,
        resync_at_keyframe: false,
        ..Default::default()
    }
}

fn shmring_pingpong(size: usize) -> Summary {
    let dir = scratch_dir();
    let (ping, pong) = (dir.join("ping"), dir.join("pong"));
    let mut w = RingWriter::create(&ping, &ring_opts(size)).unwrap();
    drop(RingWriter::create(&pong, &ring_opts(size)).unwrap());
    let mut r = RingReader::open(&pong, &reader_opts()).unwrap();
    let rounds = rounds_for(size);
    let mut c = child(&[
        "echo-shmring",
        ping.to_str().unwrap(),
        pong.to_str().unwrap(),
        &size.to_string(),
    ]);
    pin_to_cpu(0);
    let payload = vec![7u8; size];
    let mut buf = vec![0u8; size];
    // The child announces itself with frame 0 on pong.
    spin_read(&mut r, &mut buf);
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..WARMUP + rounds {
        let t = Instant::now();
        w.write(&payload, FrameMeta::keyframe(i as u64 + 1)).unwrap();
        let echoed = spin_read(&mut r, &mut buf);
        let rtt = t.elapsed().as_nanos() as f64;
        assert_eq!(echoed, i as u64 + 1);
        if i >= WARMUP {
            samples.push(rtt / 2.0);
        }
    }
    w.write(&payload, FrameMeta::keyframe(0)).unwrap();
    c.wait().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    summarize(samples)
}

fn echo_shmring(ping: &str, pong: &str, size: usize) {
    pin_to_cpu(1);
    let mut r = RingReader::open(ping, &reader_opts()).unwrap();
    let mut w = RingWriter::open(pong, &WriterOptions::default()).unwrap();
    w.set_crc(false);
    let payload = vec![9u8; size];
    let mut buf = vec![0u8; size.max(64)];
    w.write(&payload, FrameMeta::keyframe(0)).unwrap();
    loop {
        let id = spin_read(&mut r, &mut buf);
        if id == 0 {
            return;
        }
        w.write(&payload, FrameMeta::keyframe(id)).unwrap();
    }
}

// ---------------------------------------------------------------- bare cache line

fn shared_line(path: &Path, create: bool) -> memmap2::MmapMut {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .unwrap();
    if create {
        f.set_len(4096).unwrap();
    }
    // SAFETY: a private scratch file of this benchmark, mapped shared and only accessed
    // through the atomic below.
    unsafe { memmap2::MmapMut::map_mut(&f).unwrap() }
}

fn line_atomic(map: &memmap2::MmapMut) -> &AtomicU64 {
    // SAFETY: the mapping is page aligned, at least 8 bytes, lives as long as the borrow,
    // and both processes access the word only atomically.
    unsafe { &*(map.as_ptr() as *const AtomicU64) }
}

fn cacheline_pingpong() -> Summary {
    let dir = scratch_dir();
    let path = dir.join("line");
    let map = shared_line(&path, true);
    let word = line_atomic(&map);
    let mut c = child(&["echo-line", path.to_str().unwrap()]);
    pin_to_cpu(0);
    while word.load(Ordering::Acquire) != 1 {
        std::hint::spin_loop();
    }
    let rounds = rounds_for(64);
    let mut samples = Vec::with_capacity(rounds);
    let mut v = 1u64;
    for i in 0..WARMUP + rounds {
        let t = Instant::now();
        word.store(v + 1, Ordering::Release);
        while word.load(Ordering::Acquire) != v + 2 {
            std::hint::spin_loop();
        }
        let rtt = t.elapsed().as_nanos() as f64;
        v += 2;
        if i >= WARMUP {
            samples.push(rtt / 2.0);
        }
    }
    word.store(u64::MAX, Ordering::Release);
    c.wait().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    summarize(samples)
}

fn echo_line(path: &str) {
    pin_to_cpu(1);
    let map = shared_line(Path::new(path), false);
    let word = line_atomic(&map);
    word.store(1, Ordering::Release);
    let mut seen = 1;
    loop {
        let v = word.load(Ordering::Acquire);
        if v == u64::MAX {
            return;
        }
        if v != seen && v.is_multiple_of(2) {
            word.store(v + 1, Ordering::Release);
            seen = v + 1;
        }
        std::hint::spin_loop();
    }
}

// ---------------------------------------------------------------- Unix socket

fn socketpair() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints; no CLOEXEC so the child inherits fds[1].
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair failed");
    (fds[0], fds[1])
}

fn unix_pingpong(size: usize) -> Summary {
    let (mine, theirs) = socketpair();
    // SAFETY: sets close-on-exec on our own end so only `theirs` reaches the child (the
    // child must see EOF when we close ours).
    unsafe { libc::fcntl(mine, libc::F_SETFD, libc::FD_CLOEXEC) };
    let mut c = child(&["echo-unix", &theirs.to_string(), &size.to_string()]);
    // SAFETY: `mine` is a fresh socket fd owned by nothing else in this process.
    let mut s = unsafe { std::os::unix::net::UnixStream::from_raw_fd(mine) };
    // SAFETY: closes the child's end in this process.
    unsafe { libc::close(theirs) };
    pin_to_cpu(0);
    let payload = vec![7u8; size];
    let mut buf = vec![0u8; size];
    // Every round trip is two cross-CPU wake-ups: fewer rounds keep the run short.
    let (warmup, rounds) = (200, 5_000);
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..warmup + rounds {
        let t = Instant::now();
        s.write_all(&payload).unwrap();
        s.read_exact(&mut buf).unwrap();
        let rtt = t.elapsed().as_nanos() as f64;
        if i >= warmup {
            samples.push(rtt / 2.0);
        }
    }
    drop(s);
    c.wait().unwrap();
    summarize(samples)
}

fn echo_unix(fd: i32, size: usize) {
    pin_to_cpu(1);
    // SAFETY: the fd was inherited from the parent for this purpose.
    let mut s = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    let mut buf = vec![0u8; size];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------- iceoryx2

/// The same ping-pong over iceoryx2 0.10 publish-subscribe services of `[u8]` slices
/// (the publisher writes into a loaned shared-memory sample; the subscriber copies it
/// out, as a shmring reader does), both sides busy-polling `receive` like the spinning
/// shmring reader.
#[cfg(feature = "iceoryx2")]
mod ipc_iceoryx2 {
    use super::{child, pin_to_cpu, rounds_for, summarize, Summary, WARMUP};
    use iceoryx2::port::update_connections::UpdateConnections;
    use iceoryx2::prelude::*;
    use std::time::Instant;

    type Port<T> = (
        iceoryx2::port::publisher::Publisher<ipc::Service, [u8], ()>,
        iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>,
        T,
    );

    fn ports(send: &str, recv: &str, size: usize) -> Port<Node<ipc::Service>> {
        // Without a config file iceoryx2 warns that it uses its defaults, which we want.
        set_log_level(LogLevel::Error);
        let node = NodeBuilder::new().create::<ipc::Service>().expect("iceoryx2 node");
        let open = |name: &str| {
            node.service_builder(&name.try_into().expect("service name"))
                .publish_subscribe::<[u8]>()
                .max_publishers(1)
                .max_subscribers(1)
                .open_or_create()
                .expect("iceoryx2 service")
        };
        let publisher = open(send)
            .publisher_builder()
            .initial_max_slice_len(size)
            .create()
            .expect("iceoryx2 publisher");
        let subscriber = open(recv).subscriber_builder().create().expect("iceoryx2 subscriber");
        (publisher, subscriber, node)
    }

    fn send(publisher: &iceoryx2::port::publisher::Publisher<ipc::Service, [u8], ()>, payload: &[u8], id: u64) {
        let sample = publisher.loan_slice_uninit(payload.len()).expect("loan");
        let mut sample = sample.write_from_slice(payload);
        sample.payload_mut()[..8].copy_from_slice(&id.to_le_bytes());
        sample.send().expect("send");
    }

    /// Busy-polls for the next message and copies its payload into `buf`, the same work
    /// a shmring reader does (a lossy ring's reader must own its copy of the frame).
    fn spin_receive(
        subscriber: &iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>,
        buf: &mut [u8],
    ) -> u64 {
        loop {
            if let Some(sample) = subscriber.receive().expect("receive") {
                let payload = sample.payload();
                buf[..payload.len()].copy_from_slice(payload);
                let mut id = [0u8; 8];
                id.copy_from_slice(&buf[..8]);
                return u64::from_le_bytes(id);
            }
            std::hint::spin_loop();
        }
    }

    fn names() -> (String, String) {
        let tag = std::process::id();
        (format!("shmring-bench/{tag}/ping"), format!("shmring-bench/{tag}/pong"))
    }

    /// One-way latency of `size`-byte messages (`size` at least 8: the message id).
    pub(super) fn pingpong(size: usize) -> Summary {
        let (ping, pong) = names();
        let (publisher, subscriber, _node) = ports(&ping, &pong, size);
        let mut c = child(&["echo-iceoryx2", &ping, &pong, &size.to_string()]);
        pin_to_cpu(0);
        let payload = vec![7u8; size];
        let mut buf = vec![0u8; size];
        // The child announces itself with message 0 once its ports exist.
        spin_receive(&subscriber, &mut buf);
        let rounds = rounds_for(size);
        let mut samples = Vec::with_capacity(rounds);
        for i in 0..WARMUP + rounds {
            let t = Instant::now();
            send(&publisher, &payload, i as u64 + 1);
            let echoed = spin_receive(&subscriber, &mut buf);
            let rtt = t.elapsed().as_nanos() as f64;
            assert_eq!(echoed, i as u64 + 1);
            if i >= WARMUP {
                samples.push(rtt / 2.0);
            }
        }
        send(&publisher, &payload, 0);
        c.wait().unwrap();
        summarize(samples)
    }

    /// The echoing side: receives on `ping`, answers on `pong`.
    pub(super) fn echo(ping: &str, pong: &str, size: usize) {
        pin_to_cpu(1);
        let (publisher, subscriber, _node) = ports(pong, ping, size);
        let payload = vec![9u8; size];
        let mut buf = vec![0u8; size];
        // The parent's subscriber exists before this process starts: connect, then announce.
        publisher.update_connections().expect("iceoryx2 connect");
        send(&publisher, &payload, 0);
        loop {
            let id = spin_receive(&subscriber, &mut buf);
            if id == 0 {
                return;
            }
            send(&publisher, &payload, id);
        }
    }
}

// ---------------------------------------------------------------- wake latency

fn wake_latency() {
    let dir = scratch_dir();
    let path = dir.join("wake");
    let mut w = RingWriter::create(
        &path,
        &WriterOptions {
            capacity: 1 << 16,
            ..Default::default()
        },
    )
    .unwrap();
    let samples_path = dir.join("samples");
    let mut c = child(&["wake-reader", path.to_str().unwrap(), samples_path.to_str().unwrap()]);
    pin_to_cpu(0);
    std::thread::sleep(Duration::from_millis(300));
    let n = 2000;
    for _ in 0..n {
        w.write(&[1u8; 64], FrameMeta::keyframe(shmring_core_monotonic_ns()))
            .unwrap();
        std::thread::sleep(Duration::from_micros(1500));
    }
    // Idle phase: the reader measures its own CPU while blocked with nothing to read.
    std::thread::sleep(Duration::from_secs(3));
    w.write(&[0u8; 8], FrameMeta::keyframe(0)).unwrap();
    c.wait().unwrap();
    let text = std::fs::read_to_string(&samples_path).unwrap();
    let mut lines = text.lines();
    let cpu = lines.next().unwrap().to_string();
    let samples: Vec<f64> = lines.map(|l| l.parse().unwrap()).collect();
    let s = summarize(samples);
    println!("\nFutex wake latency (writer commit -> blocked reader has the frame; reader spin 0), {n} frames:");
    println!(
        "| p50 {} | p99 {} | p99.9 {} |",
        fmt_ns(s.p50),
        fmt_ns(s.p99),
        fmt_ns(s.p999)
    );
    println!("Blocked reader, idle for 2 s with nothing to read: {cpu}");
    let _ = std::fs::remove_dir_all(dir);
}

fn shmring_core_monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn cpu_time() -> Duration {
    // SAFETY: rusage is plain data filled in by getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn wake_reader(path: &str, out: &str) {
    pin_to_cpu(1);
    // The futex alone: no cadence (the writer's 1.5 ms period would be learned).
    let mut r = RingReader::open(
        path,
        &ReaderOptions {
            start: StartPosition::Next,
            wake: WakePolicy::Sleep,
            ..Default::default()
        },
    )
    .unwrap();
    r.set_spin(Duration::ZERO);
    let mut samples = Vec::new();
    let mut idle_cpu = String::new();
    loop {
        let f = r.read_timeout(Some(Duration::from_millis(500))).unwrap();
        match f {
            Some(f) if f.info.frame_id == 0 => break,
            Some(f) => samples.push(shmring_core_monotonic_ns().saturating_sub(f.info.frame_id)),
            None if idle_cpu.is_empty() && !samples.is_empty() => {
                let (c0, t0) = (cpu_time(), Instant::now());
                let _ = r
                    .read_timeout(Some(Duration::from_secs(2)))
                    .unwrap()
                    .map(|f| f.info.frame_id);
                let (c1, t1) = (cpu_time(), Instant::now());
                idle_cpu = format!(
                    "{:.3}% of a core ({:?} CPU in {:?})",
                    100.0 * (c1 - c0).as_secs_f64() / (t1 - t0).as_secs_f64(),
                    c1 - c0,
                    t1 - t0
                );
            }
            None => {}
        }
    }
    let mut text = idle_cpu + "\n";
    for s in samples {
        text.push_str(&format!("{s}\n"));
    }
    std::fs::write(out, text).unwrap();
}

// ---------------------------------------------------------------- cadence

/// Frames per cadence run (10 s at 60 fps).
const CADENCE_FRAMES: u64 = 600;

/// A 60 fps (or, `irregular`, random-gap) writer of 16 KiB frames stamped with their
/// commit time, against a reader process waiting with `policy`; prints commit -> reader
/// has the frame and the reader's CPU.
fn cadence_run(layout: LayoutChoice, policy: &str, irregular: bool) {
    let dir = scratch_dir();
    let path = dir.join("cadence");
    let mut w = RingWriter::create(
        &path,
        &WriterOptions {
            layout,
            capacity: 1 << 22,
            ..Default::default()
        },
    )
    .unwrap();
    let samples_path = dir.join("samples");
    let mut c = child(&[
        "cadence-reader",
        path.to_str().unwrap(),
        samples_path.to_str().unwrap(),
        policy,
    ]);
    pin_to_cpu(0);
    std::thread::sleep(Duration::from_millis(300));
    let period = Duration::from_nanos(1_000_000_000 / 60);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut due = Instant::now();
    for _ in 0..CADENCE_FRAMES {
        due += if irregular {
            // xorshift: gaps of 0.5-33 ms, no cadence.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            Duration::from_micros(500 + rng % 32_500)
        } else {
            period
        };
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        w.write(&[1u8; 16 << 10], FrameMeta::keyframe(shmring_core_monotonic_ns()))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    w.write(&[0u8; 8], FrameMeta::keyframe(0)).unwrap();
    c.wait().unwrap();
    let text = std::fs::read_to_string(&samples_path).unwrap();
    let mut lines = text.lines();
    let cpu = lines.next().unwrap().to_string();
    let samples: Vec<f64> = lines.map(|l| l.parse().unwrap()).collect();
    let n = samples.len();
    let s = summarize(samples);
    println!(
        "| {} | {} | {policy} | {n} | {} | {} | {} | {cpu} |",
        if layout == LayoutChoice::Legacy { "legacy" } else { "v1" },
        if irregular { "irregular" } else { "60 fps" },
        fmt_ns(s.p50),
        fmt_ns(s.p99),
        fmt_ns(s.p999)
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn cadence_reader(path: &str, out: &str, policy: &str) {
    pin_to_cpu(1);
    let wake = match policy {
        "sleep" => WakePolicy::Sleep,
        _ => WakePolicy::default(),
    };
    let mut r = RingReader::open(
        path,
        &ReaderOptions {
            start: StartPosition::Next,
            wake,
            ..Default::default()
        },
    )
    .unwrap();
    let mut samples = Vec::new();
    let (c0, t0) = (cpu_time(), Instant::now());
    loop {
        match r.read_timeout(Some(Duration::from_secs(5))).unwrap() {
            Some(f) if f.info.frame_id == 0 => break,
            Some(f) => samples.push(shmring_core_monotonic_ns().saturating_sub(f.info.frame_id)),
            None => break,
        }
    }
    let (c1, t1) = (cpu_time(), Instant::now());
    let mut text = format!("{:.2}%\n", 100.0 * (c1 - c0).as_secs_f64() / (t1 - t0).as_secs_f64());
    for s in samples {
        text.push_str(&format!("{s}\n"));
    }
    std::fs::write(out, text).unwrap();
}

fn cadence() {
    println!("\nCommit -> reader has the frame, 16 KiB frames, {CADENCE_FRAMES} per run, reader CPU over the run:");
    println!("| layout | writer | wake | frames | p50 | p99 | p99.9 | reader CPU (% of a core) |");
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    for layout in [LayoutChoice::V1, LayoutChoice::Legacy] {
        for policy in ["sleep", "cadence"] {
            cadence_run(layout, policy, false);
        }
    }
    for policy in ["sleep", "cadence"] {
        cadence_run(LayoutChoice::V1, policy, true);
    }
}

// ---------------------------------------------------------------- timer overshoot

/// How late a 1 ms sleep ends, with the thread's default timer slack and with
/// `PR_SET_TIMERSLACK` = 1 ns.
fn overshoot() {
    let measure = || {
        let mut late = Vec::new();
        for _ in 0..1000 {
            let t0 = Instant::now();
            std::thread::sleep(Duration::from_millis(1));
            late.push((t0.elapsed() - Duration::from_millis(1)).as_nanos() as f64);
        }
        summarize(late)
    };
    // SAFETY: prctl with PR_GET_TIMERSLACK reads this thread's attribute only.
    let slack = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
    println!("\nOvershoot of a 1 ms sleep, 1000 sleeps:");
    let s = measure();
    println!(
        "| default slack ({slack} ns) | p50 {} | p99 {} | p99.9 {} |",
        fmt_ns(s.p50),
        fmt_ns(s.p99),
        fmt_ns(s.p999)
    );
    // SAFETY: PR_SET_TIMERSLACK changes this thread's timer slack only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    let s = measure();
    println!(
        "| slack 1 ns | p50 {} | p99 {} | p99.9 {} |",
        fmt_ns(s.p50),
        fmt_ns(s.p99),
        fmt_ns(s.p999)
    );
}

// ---------------------------------------------------------------- writer with readers

/// One timed run: frames per wall second and per writer CPU-second of a writer on CPU 0
/// with `readers` reader processes on CPU 1, each blocking (`read_timeout`) or spinning
/// (`try_read` in a loop, never sleeping).
fn writer_run(readers: usize, mode: &str) -> (f64, f64) {
    let dir = scratch_dir();
    let path = dir.join("tp");
    let mut w = RingWriter::create(
        &path,
        &WriterOptions {
            capacity: 1 << 22,
            ..Default::default()
        },
    )
    .unwrap();
    w.set_crc(false);
    let mut children: Vec<Child> = (0..readers)
        .map(|_| child(&["drain-reader", path.to_str().unwrap(), mode]))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let payload = vec![3u8; 4096];
    let (c0, t0) = (cpu_time(), Instant::now());
    let mut frames = 0u64;
    while t0.elapsed() < Duration::from_secs(1) {
        for _ in 0..256 {
            w.write(&payload, FrameMeta::keyframe(1)).unwrap();
        }
        frames += 256;
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), (cpu_time() - c0).as_secs_f64());
    w.write(&payload, FrameMeta::keyframe(0)).unwrap();
    for c in children.iter_mut() {
        c.wait().unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
    (frames as f64 / wall, frames as f64 / cpu)
}

fn writer_with_readers() {
    const ROUNDS: usize = 5;
    for mode in ["block", "spin"] {
        let how = if mode == "block" {
            "blocking in read_timeout"
        } else {
            "spinning on try_read"
        };
        println!(
            "\nWriter throughput, 4 KiB frames, writer pinned to CPU 0, reader processes ({how}) pinned \
             to CPU 1; {ROUNDS} rounds of 1 s runs rotating 0/1/8 readers, medians:"
        );
        println!("| readers | frames/s (wall) | ratio | frames per writer CPU-second | ratio |");
        println!("|---|---|---|---|---|");
        pin_to_cpu(0);
        let configs = [0usize, 1, 8];
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new(); configs.len()];
        for _ in 0..ROUNDS {
            for (i, &readers) in configs.iter().enumerate() {
                runs[i].push(writer_run(readers, mode));
            }
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let medians: Vec<(f64, f64)> = runs
            .into_iter()
            .map(|r| {
                (
                    median(r.iter().map(|x| x.0).collect()),
                    median(r.iter().map(|x| x.1).collect()),
                )
            })
            .collect();
        let (bw, bc) = medians[0];
        for (readers, (per_wall, per_cpu)) in configs.iter().zip(medians) {
            println!(
                "| {readers} | {per_wall:.0} | {:.2} | {per_cpu:.0} | {:.2} |",
                per_wall / bw,
                per_cpu / bc
            );
        }
    }
}

fn drain_reader(path: &str, mode: &str) {
    pin_to_cpu(1);
    let opts = ReaderOptions {
        start: StartPosition::Next,
        verify_crc: false,
        resync_at_keyframe: false,
        ..Default::default()
    };
    let mut r = RingReader::open(path, &opts).unwrap();
    let mut buf = vec![0u8; 4096];
    if mode == "spin" {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match r.try_read_into(&mut buf) {
                Ok(Some(info)) if info.frame_id == 0 => return,
                Ok(_) => std::hint::spin_loop(),
                Err(_) => return,
            }
        }
        return;
    }
    while let Ok(f) = r.read_timeout(Some(Duration::from_secs(5))) {
        match f {
            Some(f) if f.info.frame_id == 0 => return,
            Some(_) => {}
            None => return,
        }
    }
}

// ---------------------------------------------------------------- main

fn latency() {
    println!("One-way latency, half of a ping-pong between two processes pinned to CPUs 0 and 1:");
    println!("| transport                    |  bytes |        p50 |        p99 |      p99.9 |");
    println!("|------------------------------|--------|------------|------------|------------|");
    let floor = cacheline_pingpong();
    row("bare cache-line ping-pong", 8, &floor);
    let mut small = None;
    for size in [64usize, 64 << 10] {
        let ring = shmring_pingpong(size);
        row("shmring (spinning reader)", size, &ring);
        small.get_or_insert(ring.p50);
        row("Unix socket (blocking)", size, &unix_pingpong(size));
        #[cfg(feature = "iceoryx2")]
        row("iceoryx2 0.10 (spinning)", size, &ipc_iceoryx2::pingpong(size));
    }
    #[cfg(not(feature = "iceoryx2"))]
    println!("(iceoryx2 not measured: build with --features iceoryx2)");
    let placement = if floor.p50 < 120.0 {
        "near (shared cache)"
    } else {
        "far"
    };
    println!("vCPU placement judged from the cache-line floor: {placement}");
    if let Some(p50) = small {
        println!(
            "shmring 64 B p50 / cache-line floor p50, this run: {:.2}x (lines per message: docs/protocol.md 2.1)",
            p50 / floor.p50
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["--child", "echo-shmring", ping, pong, size] => echo_shmring(ping, pong, size.parse().unwrap()),
        ["--child", "echo-line", path] => echo_line(path),
        ["--child", "echo-unix", fd, size] => echo_unix(fd.parse().unwrap(), size.parse().unwrap()),
        #[cfg(feature = "iceoryx2")]
        ["--child", "echo-iceoryx2", ping, pong, size] => ipc_iceoryx2::echo(ping, pong, size.parse().unwrap()),
        ["--child", "wake-reader", path, out] => wake_reader(path, out),
        ["--child", "drain-reader", path, mode] => drain_reader(path, mode),
        ["--child", "cadence-reader", path, out, policy] => cadence_reader(path, out, policy),
        [] | ["all"] => {
            latency();
            wake_latency();
            writer_with_readers();
            cadence();
            overshoot();
        }
        ["latency"] => latency(),
        ["wake"] => wake_latency(),
        ["readers"] => writer_with_readers(),
        ["cadence"] => cadence(),
        ["overshoot"] => overshoot(),
        _ => {
            eprintln!("usage: crossproc [latency|wake|readers|cadence|overshoot|all]");
            std::process::exit(2);
        }
    }
}
