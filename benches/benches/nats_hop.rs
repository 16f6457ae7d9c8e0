//! NATS scale-out benchmark: what the NATS hop adds, and how many 1080p-like frames one
//! nats-server carries.
//!
//! One process writes a ring with 1080p-like frames (a 150 KB keyframe every 30 frames,
//! 15 KB delta frames; or `--fixed` 150 KB frames), frame_id = commit time in
//! CLOCK_MONOTONIC ns. `transport-server` A reads the ring and publishes to a local
//! nats-server (`--publish`); `transport-server` B serves the stream from NATS
//! (`--source`). One WebSocket client on A and one on B record commit-to-receive time,
//! so the difference is the NATS hop (A's publish, nats-server, B's receive and fan-out).
//!
//! Rounds at increasing frame rates report, for each client, frames delivered, p50 and
//! p99 latency, and B's `frames_lost` / A's `publish_skipped`; a rate is sustained when
//! B delivers at least 99.5% of the frames with nothing lost or skipped.
//!
//! ```text
//! cargo bench -p shmring-benches --bench nats_hop -- [--rates 30,120,240,480] [--seconds 8] [--fixed]
//! ```
//! Needs `nats-server` on PATH.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shmring_core::{monotonic_ns, FrameMeta, RingWriter, WriterOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use shmring_benches::{arg, free_addr, percentile, pong, wait_listening, ChildProcess};

const KEYFRAME_BYTES: usize = 150_000;
const DELTA_BYTES: usize = 15_000;
const GOP: u64 = 30;

/// Writes frames at `rate` per second (the rate can change between rounds).
fn producer(
    ring: PathBuf,
    rate: Arc<AtomicU64>,
    fixed: bool,
    ids: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut writer = RingWriter::open_or_create(
            &ring,
            &WriterOptions {
                capacity: 64 << 20,
                ..Default::default()
            },
        )
        .expect("create the ring");
        // Incompressible-looking bytes; the servers do not parse payloads.
        let noise: Vec<u8> = (0..KEYFRAME_BYTES as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut n = 0u64;
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let period = Duration::from_nanos(1_000_000_000 / rate.load(Ordering::Relaxed).max(1));
            next += period;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else if now - next > Duration::from_millis(100) {
                next = now; // fell behind (machine busy): do not burst
            }
            let key = n.is_multiple_of(GOP);
            let len = if key || fixed { KEYFRAME_BYTES } else { DELTA_BYTES };
            let id = monotonic_ns();
            let meta = if key {
                FrameMeta::keyframe(id)
            } else {
                FrameMeta::delta(id)
            };
            writer.write(&noise[..len], meta).expect("write a frame");
            ids.lock().unwrap().push(id);
            n += 1;
        }
    })
}

/// Reads a server's WebSocket stream and records (frame_id, receive time) per video
/// frame, looking only at each message's first 9 bytes.
async fn client(addr: SocketAddr, stop: Arc<AtomicBool>) -> Vec<(u64, u64)> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let request = format!(
        "GET /stream/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 512 << 10];
    let mut pending: Vec<u8> = Vec::new();
    let mut got = Vec::new();
    let mut in_head = true;
    // Payload bytes of the current WebSocket frame still to skip.
    let mut skip = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let n = match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_) => continue,
        };
        let now = monotonic_ns();
        if in_head {
            pending.extend_from_slice(&buf[..n]);
            let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            assert!(pending.starts_with(b"HTTP/1.1 101"), "no WebSocket upgrade");
            in_head = false;
            pending.drain(..i + 4);
        } else {
            // Payload bytes of a frame already recorded are skipped without copying.
            let take = skip.min(n);
            skip -= take;
            pending.extend_from_slice(&buf[take..n]);
        }
        // Parse whole frame headers (+ 9 payload bytes) out of `pending`.
        let mut pongs = Vec::new();
        loop {
            if skip > 0 {
                let take = skip.min(pending.len());
                pending.drain(..take);
                skip -= take;
                if skip > 0 {
                    break;
                }
            }
            if pending.len() < 2 {
                break;
            }
            let (hlen, len) = match pending[1] & 0x7f {
                126 if pending.len() >= 4 => (4, u16::from_be_bytes([pending[2], pending[3]]) as usize),
                127 if pending.len() >= 10 => (10, u64::from_be_bytes(pending[2..10].try_into().unwrap()) as usize),
                126 | 127 => break,
                l => (2, l as usize),
            };
            // Control frames (at most 125 bytes) are read whole.
            let control = pending[0] & 0x0f >= 0x8;
            if pending.len() < hlen + if control { len } else { len.min(9) } {
                break;
            }
            let body = &pending[hlen..];
            if pending[0] & 0x0f == 0x9 {
                pong(&mut pongs, &body[..len]);
            } else if !control && len >= 9 && body[0] == 0x01 {
                got.push((u64::from_le_bytes(body[1..9].try_into().unwrap()), now));
            }
            let have = pending.len() - hlen;
            if have >= len {
                pending.drain(..hlen + len);
            } else {
                skip = len - have;
                pending.clear();
            }
        }
        if !pongs.is_empty() && stream.write_all(&pongs).await.is_err() {
            break;
        }
    }
    got
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let mut s = std::net::TcpStream::connect(addr).expect("metrics");
    use std::io::{Read, Write};
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn latencies(frames: &[(u64, u64)]) -> Vec<u64> {
    let mut l: Vec<u64> = frames.iter().map(|(id, at)| at.saturating_sub(*id)).collect();
    l.sort_unstable();
    l
}

/// Runs the clients of A (direct) and B (via NATS) for `seconds` at `r` frames per
/// second and prints the table row.
fn measure_rate(
    rt: &tokio::runtime::Runtime,
    r: u64,
    seconds: u64,
    fixed: bool,
    (a_addr, b_addr): (SocketAddr, SocketAddr),
    ids: &Mutex<Vec<u64>>,
) {
    std::thread::sleep(Duration::from_millis(500));
    let lost0 = metric(b_addr, "shmring_ws_nats_frames_lost_total");
    let skipped0 = metric(a_addr, "shmring_ws_nats_publish_skipped_total");
    let done = Arc::new(AtomicBool::new(false));
    // Frames committed in [from, to]: after the clients' join burst (the GOP cache,
    // old frames) and early enough to arrive before the clients stop.
    let from = monotonic_ns() + 500_000_000;
    let to = from + (seconds * 1_000_000_000).saturating_sub(1_000_000_000);
    let (direct, via) = rt.block_on(async {
        let ta = tokio::spawn(client(a_addr, done.clone()));
        let tb = tokio::spawn(client(b_addr, done.clone()));
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        done.store(true, Ordering::Relaxed);
        (ta.await.unwrap(), tb.await.unwrap())
    });
    let window = |f: &(u64, u64)| (from..=to).contains(&f.0);
    let direct: Vec<(u64, u64)> = direct.into_iter().filter(window).collect();
    let via: Vec<(u64, u64)> = via.into_iter().filter(window).collect();
    let written = ids
        .lock()
        .unwrap()
        .iter()
        .filter(|id| (from..=to).contains(*id))
        .count();
    let lost = metric(b_addr, "shmring_ws_nats_frames_lost_total") - lost0;
    let skipped = metric(a_addr, "shmring_ws_nats_publish_skipped_total") - skipped0;
    // Compare the frames both clients got, so the two sets are the same frames.
    let in_direct: std::collections::HashSet<u64> = direct.iter().map(|f| f.0).collect();
    let both: Vec<(u64, u64)> = via.iter().copied().filter(|f| in_direct.contains(&f.0)).collect();
    let in_via: std::collections::HashSet<u64> = both.iter().map(|f| f.0).collect();
    let direct_both: Vec<(u64, u64)> = direct.iter().copied().filter(|f| in_via.contains(&f.0)).collect();
    let (ld, lv) = (latencies(&direct_both), latencies(&both));
    let expected = written.max(1) as f64;
    let mean_bytes = if fixed {
        KEYFRAME_BYTES as f64
    } else {
        (KEYFRAME_BYTES as f64 + (GOP - 1) as f64 * DELTA_BYTES as f64) / GOP as f64
    };
    // The added latency per frame: via-NATS minus direct, for the same frame.
    let direct_at: std::collections::HashMap<u64, u64> = direct_both.iter().copied().collect();
    let mut added: Vec<u64> = both.iter().map(|(id, at)| at.saturating_sub(direct_at[id])).collect();
    added.sort_unstable();
    println!(
        "| {r} | {:.1} | {written} | {:.2}% | {:.2}% | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {lost} | {skipped} |",
        written as f64 / (to - from) as f64 * 1e9 * mean_bytes / 1e6,
        direct.len() as f64 / expected * 100.0,
        via.len() as f64 / expected * 100.0,
        percentile(&ld, 0.5),
        percentile(&ld, 0.99),
        percentile(&lv, 0.5),
        percentile(&lv, 0.99),
        percentile(&added, 0.5),
        percentile(&added, 0.99),
    );
}

/// A nats-server with JetStream (its store in `dir`), listening: the process and its
/// address.
fn start_nats(dir: &std::path::Path) -> (ChildProcess, SocketAddr) {
    let nats_addr = free_addr();
    let nats = ChildProcess(
        Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &nats_addr.port().to_string(), "-js", "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (apt install nats-server)"),
    );
    wait_listening(nats_addr);
    (nats, nats_addr)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rates: Vec<u64> = arg(&args, "--rates")
        .unwrap_or("30,120,240,480")
        .split(',')
        .map(|r| r.parse().expect("--rates N,N,..."))
        .collect();
    let seconds: u64 = arg(&args, "--seconds").unwrap_or("8").parse().expect("--seconds N");
    let fixed = args.iter().any(|a| a == "--fixed");
    let server_bin = shmring_benches::transport_server();
    let tmp = std::env::temp_dir().join(format!("shmring-nats-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (_nats, nats_addr) = start_nats(&tmp);
    let ring = PathBuf::from(format!("/dev/shm/shmring-nats-bench-{}", std::process::id()));
    let rate = Arc::new(AtomicU64::new(rates[0]));
    let stop = Arc::new(AtomicBool::new(false));
    let ids = Arc::new(Mutex::new(Vec::new()));
    let prod = producer(ring.clone(), rate.clone(), fixed, ids.clone(), stop.clone());
    while !ring.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let url = format!("nats://{nats_addr}/video.bench");
    // Queues sized for 150 KB frames at high rates: the benchmark measures NATS, not
    // the per-client drop policy.
    let queue = ["--queue-frames", "1000", "--queue-bytes", "134217728"];
    let a_addr = free_addr();
    let _a = ChildProcess(
        Command::new(&server_bin)
            .arg("--shm-path")
            .arg(&ring)
            .args(["--listen", &a_addr.to_string(), "--publish", &url])
            .args(queue)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start transport-server A"),
    );
    let b_addr = free_addr();
    let _b = ChildProcess(
        Command::new(&server_bin)
            .args(["--listen", &b_addr.to_string(), "--source", &url])
            .args(queue)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start transport-server B"),
    );
    wait_listening(a_addr);
    wait_listening(b_addr);
    std::thread::sleep(Duration::from_secs(1));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let frames_kind = if fixed {
        "fixed 150 KB frames".to_owned()
    } else {
        format!("150 KB keyframe every {GOP}, 15 KB delta frames")
    };
    println!("frames: {frames_kind}; {seconds} s per rate");
    println!("| rate (fps) | MB/s written | frames written | delivered direct | delivered via NATS | direct p50 / p99 ms | via NATS p50 / p99 ms | added p50 / p99 ms | lost | skipped |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &r in &rates {
        rate.store(r, Ordering::Relaxed);
        measure_rate(&rt, r, seconds, fixed, (a_addr, b_addr), &ids);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = prod.join();
    let _ = std::fs::remove_file(&ring);
    let _ = std::fs::remove_dir_all(&tmp);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average at the end: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}
