//! WebSocket fan-out benchmark: a 1080p60-like H.264 stream (recorded with ffmpeg,
//! replayed into a ring at 60 fps with frame_id = commit time in CLOCK_MONOTONIC ns)
//! to 1..1000 loopback WebSocket clients, against two servers in separate processes:
//!
//! - `transport-server` (shmring-ws: one shared `Bytes` per frame, writev), and
//! - a baseline fan-out built into this benchmark that, as the SDR_OS server does,
//!   copies each frame into a `Vec` per client and sends it with tokio-tungstenite;
//! - with `--servers ...,floor`, the floor server (`ws_fanout/floor.rs`): one thread
//!   that busy-polls the ring and writes each frame to the sockets itself, the least
//!   work a server can do, so its latency is this machine's floor for the rest;
//!   `floor-sleep` and `floor-cadence` wait with a blocking read instead, the floor for
//!   a server that does not burn a core.
//!
//! Reports the fraction of frames delivered, commit-to-receive latency percentiles,
//! the server's CPU (also per frame delivered to a client) and the whole machine's busy
//! time.
//!
//! ```text
//! ulimit -n 65536
//! cargo bench -p shmring-benches --bench ws_fanout -- [--clients 1,50,200,500,1000] [--seconds 10] [--servers shmring,baseline,floor] [--extra-server LABEL=PATH]... [--layout ring|legacy] [--cameras 1,8 [--camera-fps F]]
//! ```
//!
//! `--extra-server LABEL=PATH` (repeatable) also measures another transport-server binary (started
//! with the same flags), for before/after comparisons in one run; a server that takes
//! its settings another way gets a wrapper that maps `--shm-path RING --listen ADDR` to
//! them, as `benches/sdr_os.sh` does for SDR_OS's server. `--layout legacy` writes the
//! legacy single-slot layout (SDR_OS's writer) instead of a v1 ring.
//!
//! With `SHMRING_WS_STAGE_TIMES=1` in the environment the servers inherit it and are
//! told that frame_id is the commit time (`--frame-id-commit-time`): a transport-server
//! then prints per-stage times from the commit on.
//!
//! Clients answer the server's pings, as browsers do (transport-server closes a client
//! that answers nothing for two ping intervals, 30 s by default). A round says how many
//! clients the server disconnected and why; `SHMRING_WS_PER_CLIENT=1` prints, per
//! client, its share of the measured window, when its first and last frames came and
//! how its connection ended.
//!
//! `--cameras 1,8` measures one server of several cameras, for each count in the list:
//! N rings (`cam0`..) in one directory, written by N producers, served with
//! `--shm-dir`; client `i` watches camera `i mod N` at `/stream/ws/cam<i mod N>`. By
//! default every camera writes the recording at 60/N fps, so N cameras carry the bytes
//! (and the frame sizes) of one camera and the server CPU per frame delivered to a
//! client compares across counts; `--camera-fps F` sets each camera's rate instead
//! (`--cameras 8 --camera-fps 30 --clients 100`: eight 30 fps cameras to 100 clients).
//! With two or more client counts a second table gives the marginal server CPU per
//! client-frame (the slope between consecutive counts), which compares across camera
//! counts without the fixed cost of the reader threads.
//! The baseline and floor servers read one ring and are not run with `--cameras`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use shmring_core::{
    monotonic_ns, FrameMeta, LayoutChoice, ReaderOptions, RingReader, RingWriter, StartPosition, WakePolicy,
    WriterOptions,
};
use shmring_ws::annexb::{SplitUnit, Splitter};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use shmring_benches::{arg, percentile, pong, wait_listening, ChildProcess};

#[path = "ws_fanout/floor.rs"]
mod floor;
use floor::FloorWait;

const FPS: u64 = 60;

/// Encodes (once, cached under target/) about 8 s of 1080p60 H.264 at ~8 Mbit/s with a
/// keyframe every 2 s, and splits it into access units.
fn recorded_stream(target: &Path) -> Vec<SplitUnit> {
    let file = target.join("ws-bench-1080p60.h264");
    if !file.exists() {
        eprintln!("encoding the benchmark stream (1080p60, 8 s) with ffmpeg...");
        let status = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-y",
                "-f",
                "lavfi",
                "-i",
            ])
            .arg("testsrc2=size=1920x1080:rate=60")
            .args([
                "-t",
                "8",
                "-pix_fmt",
                "yuv420p",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            // ipratio=20 makes keyframes as large as this simple picture allows (~95 KB).
            .args(["-b:v", "8M", "-minrate", "8M", "-maxrate", "8M", "-bufsize", "4M"])
            .args(["-x264-params", "nal-hrd=cbr:ipratio=20:qpmin=0"])
            .args(["-g", "120", "-bsf:v", "h264_mp4toannexb", "-f", "h264"])
            .arg(&file)
            .status()
            .expect("run ffmpeg");
        assert!(status.success(), "ffmpeg failed");
    }
    let data = std::fs::read(&file).expect("read the recorded stream");
    let mut s = Splitter::new();
    let mut units = s.push(&data);
    units.extend(s.finish());
    assert!(units[0].keyframe, "the recording starts with a keyframe");
    units
}

/// How a producer writes its ring.
#[derive(Clone, Copy)]
struct Pace {
    /// Frames per second.
    fps: f64,
    /// Delay of its first frame (cameras of one run do not commit in lockstep).
    offset: Duration,
    /// Frame-region size of a v1 ring.
    capacity: usize,
}

/// Writes the recording into the ring at `pace` until `stop`.
fn producer(
    ring: PathBuf,
    layout: LayoutChoice,
    units: Arc<Vec<SplitUnit>>,
    pace: Pace,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut w = RingWriter::create(
            &ring,
            &WriterOptions {
                layout,
                capacity: pace.capacity,
                ..Default::default()
            },
        )
        .expect("ring");
        let period = Duration::from_secs_f64(1.0 / pace.fps);
        let start = Instant::now() + pace.offset;
        for (i, unit) in units.iter().cycle().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let due = start + period.mul_f64(i as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let id = monotonic_ns();
            let meta = if unit.keyframe {
                FrameMeta::keyframe(id)
            } else {
                FrameMeta::delta(id)
            };
            w.write(&unit.data, meta).expect("write");
        }
    })
}

/// Records the commit time (frame_id) of every frame, to know what was written when.
fn ring_witness(ring: PathBuf, ids: Arc<Mutex<Vec<u64>>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let opts = ReaderOptions {
            start: StartPosition::Next,
            verify_crc: false,
            resync_at_keyframe: false,
            ..Default::default()
        };
        let mut r = RingReader::open(&ring, &opts).expect("witness reader");
        while !stop.load(Ordering::Relaxed) {
            if let Ok(Some(f)) = r.read_timeout(Some(Duration::from_millis(100))) {
                ids.lock().unwrap().push(f.info.frame_id);
            }
        }
    })
}

/// The rings of a run, their producers and witnesses, and how a server and its clients
/// reach them. Dropping it stops the producers and removes the rings.
struct Feeds {
    /// The number of cameras (`None`: today's single ring, served with `--shm-path`).
    cameras: Option<usize>,
    /// Frames per second of each ring.
    fps: f64,
    /// WebSocket path per camera (`/stream/ws` for the single ring).
    paths: Vec<String>,
    /// Commit times (frame_id) of every frame written, per camera.
    ids: Vec<Arc<Mutex<Vec<u64>>>>,
    /// What a server is started with to read the rings.
    server_args: Vec<OsString>,
    /// Time a joining client may wait for its camera's next keyframe.
    keyframe_interval: Duration,
    /// The ring file or directory, removed at the end.
    location: PathBuf,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Feeds {
    /// Today's run: one ring at 60 fps, `/stream/ws`.
    fn single(layout: LayoutChoice, units: &Arc<Vec<SplitUnit>>) -> Feeds {
        let ring = PathBuf::from(format!("/dev/shm/shmring-ws-bench-{}", std::process::id()));
        let mut feeds = Feeds::new(None, FPS as f64, ring.clone(), units);
        feeds.server_args = vec!["--shm-path".into(), ring.clone().into()];
        let pace = Pace {
            fps: FPS as f64,
            offset: Duration::ZERO,
            capacity: 64 << 20,
        };
        feeds.start_camera(ring, "/stream/ws".into(), layout, units, pace);
        feeds
    }

    /// `cameras` rings `cam0`.. in one directory at `fps` each, `/stream/ws/cam<k>`.
    fn cameras(cameras: usize, fps: f64, layout: LayoutChoice, units: &Arc<Vec<SplitUnit>>) -> Feeds {
        let dir = PathBuf::from(format!("/dev/shm/shmring-ws-bench-{}-cameras", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the cameras' ring directory");
        let mut feeds = Feeds::new(Some(cameras), fps, dir.clone(), units);
        feeds.server_args = vec!["--shm-dir".into(), dir.clone().into()];
        for k in 0..cameras {
            let offset = Duration::from_secs_f64(k as f64 / (fps * cameras as f64));
            let pace = Pace {
                fps,
                offset,
                capacity: 16 << 20,
            };
            feeds.start_camera(
                dir.join(format!("cam{k}")),
                format!("/stream/ws/cam{k}"),
                layout,
                units,
                pace,
            );
        }
        feeds
    }

    fn new(cameras: Option<usize>, fps: f64, location: PathBuf, units: &[SplitUnit]) -> Feeds {
        // The longest run of frames between two keyframes of the recording, at `fps`.
        let keys: Vec<usize> = units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.keyframe)
            .map(|(i, _)| i)
            .collect();
        let gop = keys
            .windows(2)
            .map(|w| w[1] - w[0])
            .chain([units.len() - keys[keys.len() - 1] + keys[0]])
            .max();
        Feeds {
            cameras,
            fps,
            paths: Vec::new(),
            ids: Vec::new(),
            server_args: Vec::new(),
            keyframe_interval: Duration::from_secs_f64(gop.unwrap_or(1) as f64 / fps),
            location,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }

    /// Starts a producer and a witness on `ring`, watched by clients at `path`.
    fn start_camera(
        &mut self,
        ring: PathBuf,
        path: String,
        layout: LayoutChoice,
        units: &Arc<Vec<SplitUnit>>,
        pace: Pace,
    ) {
        self.threads
            .push(producer(ring.clone(), layout, units.clone(), pace, self.stop.clone()));
        while !ring.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let ids = Arc::new(Mutex::new(Vec::new()));
        self.threads.push(ring_witness(ring, ids.clone(), self.stop.clone()));
        self.paths.push(path);
        self.ids.push(ids);
    }
}

impl Drop for Feeds {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = match self.cameras {
            Some(_) => std::fs::remove_dir_all(&self.location),
            None => std::fs::remove_file(&self.location),
        };
    }
}

/// Waits up to 30 s for `GET /cameras` at `addr` to list `cameras` cameras live (a
/// server of a ring directory finds its rings after it starts).
fn wait_cameras_live(addr: SocketAddr, cameras: usize) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut answer = String::new();
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let request = format!("GET /cameras HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            if s.write_all(request.as_bytes()).is_ok() {
                let _ = s.read_to_string(&mut answer);
            }
        }
        let body = answer.find('{').zip(answer.rfind('}')).map(|(a, b)| &answer[a..=b]);
        let listing: Option<serde_json::Value> = body.and_then(|b| serde_json::from_str(b).ok());
        let live = listing
            .as_ref()
            .and_then(|l| l["cameras"].as_array())
            .map_or(0, |c| c.iter().filter(|c| c["state"] == "live").count());
        if live == cameras {
            return;
        }
        last = answer;
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("waited 30 s for GET /cameras at {addr} to list {cameras} cameras live; last answer: {last}");
}

// ---------------------------------------------------------------------------------
// The baseline server: SDR_OS-style fan-out, one Vec copy per frame per client.

fn baseline_server(ring: &str, listen: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, _) = tokio::sync::broadcast::channel::<Arc<(Vec<u8>, Vec<u8>)>>(64);
        let tx2 = tx.clone();
        let ring = ring.to_owned();
        std::thread::spawn(move || {
            let mut r = RingReader::open(&ring, &ReaderOptions::default()).expect("baseline reader");
            loop {
                if let Ok(Some(f)) = r.read_timeout(None) {
                    let i = f.info;
                    let h = shmring_core::FrameHeader::new(
                        i.frame_id,
                        i.frame_seq,
                        i.size as u32,
                        i.flags,
                        i.codec.0,
                        i.crc32,
                    );
                    let header = zerocopy::IntoBytes::as_bytes(&h).to_vec();
                    let _ = tx2.send(Arc::new((header, f.payload.to_vec())));
                }
            }
        });
        let listener = TcpListener::bind(listen).await.unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let mut rx = tx.subscribe();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                loop {
                    let frame = match rx.recv().await {
                        Ok(f) => f,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    };
                    // The per-client copy the shared-buffer design avoids.
                    let mut msg = Vec::with_capacity(1 + frame.0.len() + frame.1.len());
                    msg.push(0x01);
                    msg.extend_from_slice(&frame.0);
                    msg.extend_from_slice(&frame.1);
                    if ws.send(Message::Binary(msg.into())).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

// ---------------------------------------------------------------------------------
// The load client.

struct ClientResult {
    /// The camera it watched (index into [`Feeds::paths`]).
    camera: usize,
    /// (frame_id, receive time) of every video frame.
    frames: Vec<(u64, u64)>,
    /// When the server ended the connection before the round did (monotonic ns).
    ended: Option<u64>,
    /// The close frame the server sent, if any (code, reason).
    close: Option<(u16, String)>,
}

/// A deliberately cheap WebSocket reader, so the load client leaves the CPU to the
/// servers: a hand-made handshake, then a small state machine over the raw byte stream
/// that keeps only each message's first 9 bytes (type and frame_id) and skips the rest
/// without copying it anywhere. Control frames (at most 125 bytes) are kept whole: a
/// ping must be answered, as every WebSocket client does, or the server closes the
/// connection as dead (transport-server: after two ping intervals, 30 s by default).
#[derive(Default)]
struct FrameScanner {
    /// Header bytes of the frame being parsed (at most 10: server frames are unmasked).
    header: Vec<u8>,
    /// The first bytes of the payload being read.
    prefix: Vec<u8>,
    /// Payload bytes still to come for the current frame.
    remaining: u64,
    in_payload: bool,
    /// Opcode of the frame being read, and the payload so far if it is a control frame.
    opcode: u8,
    control: Vec<u8>,
    /// Payloads of the pings not answered yet.
    pings: Vec<Vec<u8>>,
    /// Payload of the server's close frame (code, then reason), once one came.
    close: Option<Vec<u8>>,
}

impl FrameScanner {
    fn feed(&mut self, mut data: &[u8], frames: &mut Vec<(u64, u64)>) {
        while !data.is_empty() {
            if !self.in_payload {
                self.header.push(data[0]);
                data = &data[1..];
                let h = &self.header;
                let need = match h.get(1).map(|b| b & 0x7f) {
                    None => continue,
                    Some(126) => 4,
                    Some(127) => 10,
                    Some(_) => 2,
                };
                if h.len() < need {
                    continue;
                }
                self.remaining = match need {
                    2 => u64::from(h[1] & 0x7f),
                    4 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                    _ => u64::from_be_bytes(h[2..10].try_into().unwrap()),
                };
                self.opcode = h[0] & 0x0f;
                self.header.clear();
                self.prefix.clear();
                self.control.clear();
                self.in_payload = true;
                if self.remaining == 0 {
                    self.frame_done();
                }
                continue;
            }
            let take = (self.remaining.min(data.len() as u64)) as usize;
            if self.opcode >= 0x8 {
                self.control.extend_from_slice(&data[..take]);
            } else {
                let want = 9usize.saturating_sub(self.prefix.len()).min(take);
                self.prefix.extend_from_slice(&data[..want]);
                if want > 0 && self.prefix.len() == 9 && self.prefix[0] == 0x01 {
                    frames.push((
                        u64::from_le_bytes(self.prefix[1..9].try_into().unwrap()),
                        monotonic_ns(),
                    ));
                }
            }
            self.remaining -= take as u64;
            data = &data[take..];
            if self.remaining == 0 {
                self.frame_done();
            }
        }
    }

    /// The current frame's payload is complete: note a ping or a close.
    fn frame_done(&mut self) {
        self.in_payload = false;
        match self.opcode {
            0x8 => self.close = Some(std::mem::take(&mut self.control)),
            0x9 => self.pings.push(std::mem::take(&mut self.control)),
            _ => {}
        }
    }

    /// The pongs due, in one buffer.
    fn take_pongs(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in self.pings.drain(..) {
            pong(&mut out, &payload);
        }
        out
    }
}

async fn client(addr: SocketAddr, camera: usize, path: String, stop: Arc<tokio::sync::Notify>) -> Option<ClientResult> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 256 << 10];
    let mut head = Vec::new();
    let body_start = loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if !head.starts_with(b"HTTP/1.1 101") {
                return None;
            }
            break i + 4;
        }
    };
    let mut frames = Vec::with_capacity(1 << 12);
    let mut scanner = FrameScanner::default();
    scanner.feed(&head[body_start..], &mut frames);
    // Registered once, polled cheaply on each read (since run 4: runs 1-3 wrapped every
    // read in a 200 ms timeout, one timer registration per read).
    let stopped = stop.notified();
    tokio::pin!(stopped);
    stopped.as_mut().enable();
    let mut ended = None;
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => break,
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    ended = Some(monotonic_ns());
                    break;
                }
                Ok(n) => {
                    scanner.feed(&buf[..n], &mut frames);
                    let pongs = scanner.take_pongs();
                    if !pongs.is_empty() && stream.write_all(&pongs).await.is_err() {
                        ended = Some(monotonic_ns());
                        break;
                    }
                }
            },
        }
    }
    let close = scanner.close.filter(|c| c.len() >= 2).map(|c| {
        (
            u16::from_be_bytes([c[0], c[1]]),
            String::from_utf8_lossy(&c[2..]).into_owned(),
        )
    });
    Some(ClientResult {
        camera,
        frames,
        ended,
        close,
    })
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the ")".
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

struct Round {
    server: String,
    /// Cameras served (`None`: the single ring of today's runs) and each one's rate.
    cameras: Option<usize>,
    camera_fps: f64,
    clients: usize,
    connected: usize,
    delivered: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    server_cpu: f64,
    /// Server CPU time per frame delivered to a client, in microseconds.
    cpu_us_per_client_frame: f64,
    /// Frames delivered to clients per second (all clients together).
    client_frames_per_s: f64,
    client_cpu: f64,
    machine_busy: f64,
}

/// What the clients of a round received of the frames written while it was measured:
/// (frames delivered, frames that should have been, sorted latencies in ns).
fn tally(results: &[ClientResult], written: &[HashSet<u64>]) -> (usize, usize, Vec<u64>) {
    let mut latencies = Vec::new();
    let (mut delivered, mut expected) = (0usize, 0usize);
    for r in results {
        let own = &written[r.camera];
        expected += own.len();
        for &(id, at) in &r.frames {
            if own.contains(&id) {
                delivered += 1;
                latencies.push(at.saturating_sub(id));
            }
        }
    }
    latencies.sort_unstable();
    (delivered, expected, latencies)
}

/// Reports the clients the server disconnected, and with `SHMRING_WS_PER_CLIENT=1`
/// each client's share of the window (`times`: clients started, window start and end).
fn report_clients(results: &[ClientResult], written: &[HashSet<u64>], times: [u64; 3]) {
    if std::env::var_os("SHMRING_WS_PER_CLIENT").is_some_and(|v| v == "1") {
        print_clients(results, written, times);
    }
    report_ended(results, times[0]);
}

/// Says how many clients the server disconnected before the round ended (they count as
/// missing the rest of the window), and why, so a low delivery is not mistaken for a
/// slow server.
fn report_ended(results: &[ClientResult], joined: u64) {
    let ended: Vec<&ClientResult> = results.iter().filter(|r| r.ended.is_some()).collect();
    let Some(first) = ended.iter().min_by_key(|r| r.ended) else {
        return;
    };
    let why = first
        .close
        .as_ref()
        .map_or("without a close frame".to_owned(), |(code, reason)| {
            format!("close {code} {reason:?}")
        });
    println!(
        "  {} of {} clients were disconnected by the server during the round (the first {:.1} s after joining, {why})",
        ended.len(),
        results.len(),
        (first.ended.unwrap_or(joined) as f64 - joined as f64) / 1e9
    );
}

/// With `SHMRING_WS_PER_CLIENT=1`: per client, what it got of its camera's frames of the
/// window and when (seconds after the clients were started), and how its connection
/// ended, to tell a client the server closed from one that stalled.
fn print_clients(results: &[ClientResult], written: &[HashSet<u64>], [joined, t0, t1]: [u64; 3]) {
    let at = |ns: u64| (ns as f64 - joined as f64) / 1e9;
    println!("  clients started at 0 s, window {:.1}..{:.1} s", at(t0), at(t1));
    for (i, r) in results.iter().enumerate() {
        let own = &written[r.camera];
        let got = r.frames.iter().filter(|(id, _)| own.contains(id)).count();
        let first = r.frames.first().map_or(f64::NAN, |&(_, t)| at(t));
        let last = r.frames.last().map_or(f64::NAN, |&(_, t)| at(t));
        let ended = r
            .ended
            .map_or("open at the end".to_owned(), |t| format!("ended at {:.1} s", at(t)));
        let close = r
            .close
            .as_ref()
            .map_or(String::new(), |(code, reason)| format!(", close {code} {reason:?}"));
        println!(
            "  client {i:>4} cam{}: {got}/{} of the window, {} frames from {first:.1} to {last:.1} s, {ended}{close}",
            r.camera,
            own.len(),
            r.frames.len()
        );
    }
}

/// Connects `clients` clients (client `i` to camera `i mod N`), lets them join, and
/// measures `seconds`.
fn round(
    rt: &tokio::runtime::Runtime,
    server: &str,
    pid: u32,
    addr: SocketAddr,
    clients: usize,
    seconds: u64,
    feeds: &Feeds,
) -> Round {
    let stop = Arc::new(tokio::sync::Notify::new());
    let cameras = feeds.paths.len();
    let joined = monotonic_ns();
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            rt.spawn(client(
                addr,
                i % cameras,
                feeds.paths[i % cameras].clone(),
                stop.clone(),
            ))
        })
        .collect();
    // Connect and settle: every client has had its camera's next keyframe.
    std::thread::sleep(Duration::from_secs(3).max(feeds.keyframe_interval + Duration::from_secs(1)));
    let me = std::process::id();
    let (t0, cpu0, own0, (busy0, total0)) = (monotonic_ns(), cpu_ticks(pid), cpu_ticks(me), machine_ticks());
    std::thread::sleep(Duration::from_secs(seconds));
    let (t1, cpu1, own1, (busy1, total1)) = (monotonic_ns(), cpu_ticks(pid), cpu_ticks(me), machine_ticks());
    std::thread::sleep(Duration::from_millis(500)); // frames committed before t1 still in flight
    stop.notify_waiters();
    // Per client: what it received, or the camera it failed to watch.
    let results: Vec<Result<ClientResult, usize>> = rt.block_on(async {
        let mut out = Vec::new();
        for (i, h) in handles.into_iter().enumerate() {
            out.push(h.await.ok().flatten().ok_or(i % cameras));
        }
        out
    });
    let written: Vec<HashSet<u64>> = feeds
        .ids
        .iter()
        .map(|ids| {
            ids.lock()
                .unwrap()
                .iter()
                .copied()
                .filter(|id| (t0..t1).contains(id))
                .collect()
        })
        .collect();
    // Clients that never connected count as receiving nothing of their camera.
    let missing: usize = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|&c| written[c].len())
        .sum();
    let results: Vec<ClientResult> = results.into_iter().filter_map(Result::ok).collect();
    let (delivered, expected, latencies) = tally(&results, &written);
    report_clients(&results, &written, [joined, t0, t1]);
    let wall = (t1 - t0) as f64 / 1e9;
    // /proc/PID/stat counts in USER_HZ ticks, 100 per second on Linux.
    let server_seconds = (cpu1 - cpu0) as f64 / 100.0;
    std::thread::sleep(Duration::from_secs(1)); // let the server drop the connections
    Round {
        server: server.to_owned(),
        cameras: feeds.cameras,
        camera_fps: feeds.fps,
        clients,
        connected: results.len(),
        delivered: delivered as f64 / (expected + missing).max(1) as f64,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        p999: percentile(&latencies, 0.999),
        server_cpu: server_seconds / wall * 100.0,
        cpu_us_per_client_frame: server_seconds * 1e6 / delivered.max(1) as f64,
        client_frames_per_s: delivered as f64 / wall,
        client_cpu: (own1 - own0) as f64 / 100.0 / wall * 100.0,
        machine_busy: (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64 * 100.0,
    }
}

/// Prints the recorded stream's shape.
fn describe_stream(units: &[SplitUnit]) {
    let keyframes: Vec<usize> = units.iter().filter(|u| u.keyframe).map(|u| u.data.len()).collect();
    let deltas: Vec<usize> = units.iter().filter(|u| !u.keyframe).map(|u| u.data.len()).collect();
    let bits: usize = units.iter().map(|u| u.data.len() * 8).sum();
    println!(
        "stream: {} access units, {} keyframes (avg {} KB), delta frames avg {} KB, {:.1} Mbit/s at {FPS} fps",
        units.len(),
        keyframes.len(),
        keyframes.iter().sum::<usize>() / keyframes.len().max(1) / 1000,
        deltas.iter().sum::<usize>() / deltas.len().max(1) / 1000,
        bits as f64 / (units.len() as f64 / FPS as f64) / 1e6
    );
}

/// With stage times asked for (`SHMRING_WS_STAGE_TIMES=1`, inherited by the server):
/// the flag that makes the server's stages start at the commit time in frame_id.
fn stage_time_flags() -> &'static [&'static str] {
    if std::env::var_os("SHMRING_WS_STAGE_TIMES").is_some_and(|v| v == "1") {
        &["--frame-id-commit-time"]
    } else {
        &[]
    }
}

/// Starts the server named `server` on `addr`, reading `feeds`: its label and process.
fn start_server(
    server: &str,
    feeds: &Feeds,
    addr: SocketAddr,
    server_bin: &Path,
    exe: &Path,
) -> (String, std::process::Child) {
    // The producer replays a recording and never answers keyframe requests, so a joining
    // client waits up to a whole GOP (16 s for a 7.5 fps camera): the server must not
    // close it first (its default: after 5 s). Set only when the default is too short,
    // as the variable, so other servers keep their own settings.
    let keyframe_wait_ms = 2 * feeds.keyframe_interval.as_millis();
    let longer_keyframe_wait = (keyframe_wait_ms > 5000).then(|| ("SDR_IDR_TIMEOUT_MS", keyframe_wait_ms.to_string()));
    let transport_server = |bin: &Path| {
        Command::new(bin)
            .args(&feeds.server_args)
            .args(["--listen", &addr.to_string()])
            .args(stage_time_flags())
            .envs(longer_keyframe_wait.clone())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
    };
    match server {
        extra if extra.starts_with("extra:") => {
            let (label, path) = extra["extra:".len()..]
                .split_once('=')
                .expect("--extra-server LABEL=PATH");
            let child = transport_server(Path::new(path)).expect("start the extra server");
            (label.to_owned(), child)
        }
        "shmring" => (
            "transport-server".to_owned(),
            transport_server(server_bin).expect("start transport-server"),
        ),
        "baseline" => in_bench_server("baseline", "baseline (Vec copy per client)", feeds, addr, exe),
        "floor" => in_bench_server("floor", "floor (busy-poll, one writev)", feeds, addr, exe),
        "floor-sleep" => in_bench_server(
            "floor-sleep",
            "floor-sleep (futex or poll, one writev)",
            feeds,
            addr,
            exe,
        ),
        "floor-cadence" => in_bench_server(
            "floor-cadence",
            "floor-cadence (cadence wait, one writev)",
            feeds,
            addr,
            exe,
        ),
        other => panic!("unknown server {other}"),
    }
}

/// Starts one of the servers built into this benchmark (`--NAME-server RING`) on `addr`.
fn in_bench_server(
    name: &str,
    label: &str,
    feeds: &Feeds,
    addr: SocketAddr,
    exe: &Path,
) -> (String, std::process::Child) {
    assert!(
        feeds.cameras.is_none(),
        "the {name} server reads one ring: run --cameras with --servers shmring"
    );
    let child = Command::new(exe)
        .arg(format!("--{name}-server"))
        .arg(&feeds.location)
        .args(["--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start the {name} server: {e}"));
    (label.to_owned(), child)
}

/// "N x F fps" for a run of cameras, "-" for today's single ring.
fn cameras_label(r: &Round) -> String {
    r.cameras
        .map_or_else(|| "-".to_owned(), |n| format!("{n} x {:.1} fps", r.camera_fps))
}

/// Prints the rounds as a Markdown table.
fn print_table(rounds: &[Round]) {
    println!("\n| server | cameras | clients | delivered | p50 ms | p99 ms | p99.9 ms | server CPU (% of a core) | server CPU µs per client-frame | load client CPU | machine busy (% of 2 cores) |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rounds {
        println!(
            "| {} | {} | {} | {:.3}% | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.1} | {:.1} |",
            r.server,
            cameras_label(r),
            r.clients,
            r.delivered * 100.0,
            r.p50,
            r.p99,
            r.p999,
            r.server_cpu,
            r.cpu_us_per_client_frame,
            r.client_cpu,
            r.machine_busy
        );
    }
    print_marginal(rounds);
}

/// The server CPU each extra client-frame costs, between consecutive client counts of
/// one server on one camera set: the slope, free of the fixed cost (reader threads,
/// runtime) that the per-client-frame column divides among however many frames the
/// clients got. With `--cameras 1,8` this is what compares across camera counts.
fn print_marginal(rounds: &[Round]) {
    let pairs: Vec<(&Round, &Round)> = rounds
        .windows(2)
        .map(|w| (&w[0], &w[1]))
        .filter(|(a, b)| {
            a.server == b.server && a.cameras == b.cameras && b.client_frames_per_s > a.client_frames_per_s
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    println!("\n| server | cameras | clients | extra client-frames/s | extra server CPU (% of a core) | marginal server CPU µs per client-frame |");
    println!("|---|---|---|---:|---:|---:|");
    for (a, b) in pairs {
        let frames = b.client_frames_per_s - a.client_frames_per_s;
        let cpu = b.server_cpu - a.server_cpu;
        println!(
            "| {} | {} | {} -> {} | {:.0} | {:.1} | {:.2} |",
            a.server,
            cameras_label(a),
            a.clients,
            b.clients,
            frames,
            cpu,
            cpu / 100.0 / frames * 1e6
        );
    }
}

/// The command line of a measuring run.
struct Options {
    clients: Vec<usize>,
    seconds: u64,
    servers: Vec<String>,
    layout: LayoutChoice,
    /// `--cameras`: camera counts to measure (`None`: today's single ring).
    cameras: Option<Vec<usize>>,
    /// `--camera-fps`: each camera's rate (`None`: 60 fps shared by the cameras).
    camera_fps: Option<f64>,
}

fn options(args: &[String]) -> Options {
    // cargo bench adds --bench; a misspelt flag would otherwise run the long default.
    const FLAGS: [&str; 8] = [
        "--bench",
        "--clients",
        "--seconds",
        "--servers",
        "--extra-server",
        "--layout",
        "--cameras",
        "--camera-fps",
    ];
    if let Some(bad) = args
        .iter()
        .find(|a| a.starts_with("--") && !FLAGS.contains(&a.as_str()))
    {
        eprintln!("ws_fanout: unknown flag {bad}\n{USAGE}");
        std::process::exit(2);
    }
    let list = |name: &str, default: &str| -> Vec<String> {
        arg(args, name)
            .unwrap_or(default)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let numbers = |name: &str, default: &str| -> Vec<usize> {
        let parse = |c: String| {
            c.parse()
                .unwrap_or_else(|_| panic!("{name} N,N,...: {c:?} is not a number"))
        };
        list(name, default).into_iter().map(parse).collect()
    };
    let mut servers = list("--servers", "shmring,baseline");
    // Repeatable: every `--extra-server LABEL=PATH` is measured, in the order given.
    let extras = args.windows(2).filter(|w| w[0] == "--extra-server").map(|w| &w[1]);
    servers.extend(extras.map(|extra| format!("extra:{extra}")));
    let cameras = arg(args, "--cameras").map(|_| numbers("--cameras", ""));
    if cameras.is_some() && arg(args, "--servers").is_none() {
        servers.retain(|s| s == "shmring"); // the others read one ring
    }
    assert!(
        cameras.as_ref().is_none_or(|c| c.iter().all(|&n| n > 0)),
        "--cameras N,N,...: at least one camera"
    );
    let camera_fps = arg(args, "--camera-fps").map(|f| f.parse::<f64>().expect("--camera-fps F (frames per second)"));
    assert!(camera_fps.is_none_or(|f| f > 0.0), "--camera-fps must be above 0");
    Options {
        clients: numbers("--clients", "1,50,200,500,1000"),
        seconds: arg(args, "--seconds").unwrap_or("10").parse().expect("--seconds N"),
        servers,
        layout: match arg(args, "--layout").unwrap_or("ring") {
            "ring" => LayoutChoice::V1,
            "legacy" => LayoutChoice::Legacy,
            other => panic!("--layout ring|legacy, not {other}"),
        },
        cameras,
        camera_fps,
    }
}

/// Measures every server with every client count on `feeds`.
fn measure(rt: &tokio::runtime::Runtime, opts: &Options, feeds: &Feeds, server_bin: &Path, exe: &Path) -> Vec<Round> {
    let mut rounds = Vec::new();
    for server in &opts.servers {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (name, child) = start_server(server, feeds, addr, server_bin, exe);
        let child = ChildProcess(child);
        wait_listening(addr);
        if let Some(n) = feeds.cameras {
            wait_cameras_live(addr, n);
        }
        for &n in &opts.clients {
            let r = round(rt, &name, child.0.id(), addr, n, opts.seconds, feeds);
            println!(
                "{:<32} cameras {:>14}  clients {:>5} (connected {:>5})  delivered {:>8.4}%  p50 {:>8.2} ms  p99 {:>8.2} ms  p99.9 {:>8.2} ms  server CPU {:>6.1}% ({:>6.2} µs per client-frame)  load client CPU {:>6.1}%  machine busy {:>5.1}%",
                r.server, cameras_label(&r), r.clients, r.connected, r.delivered * 100.0, r.p50, r.p99, r.p999, r.server_cpu, r.cpu_us_per_client_frame, r.client_cpu, r.machine_busy
            );
            rounds.push(r);
        }
    }
    rounds
}

/// What `--help` prints: the flags (the module doc says what each round measures).
const USAGE: &str = "\
usage: cargo bench -p shmring-benches --bench ws_fanout -- [FLAGS]
  --clients N,N,...      client counts, one round each (default 1,50,200,500,1000)
  --seconds N            measured seconds per round (default 10)
  --servers A,B,...      shmring, baseline, floor, floor-sleep, floor-cadence
                         (default shmring,baseline; \"\" for none)
  --extra-server L=PATH  also measure this server binary, labelled L (repeatable)
  --layout ring|legacy   the ring layout the producer writes (default ring)
  --cameras N,N,...      N cameras in one --shm-dir, per count (shmring servers only)
  --camera-fps F         each camera's rate (default 60/N)
environment: SHMRING_WS_STAGE_TIMES=1 (per-stage times), SHMRING_WS_PER_CLIENT=1
(each client's share of the window); raise `ulimit -n` for many clients";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    if let (Some(ring), Some(listen)) = (arg(&args, "--baseline-server"), arg(&args, "--listen")) {
        baseline_server(ring, listen);
        return;
    }
    let floors = [
        ("--floor-server", FloorWait::Spin),
        ("--floor-sleep-server", FloorWait::Block(WakePolicy::Sleep)),
        ("--floor-cadence-server", FloorWait::Block(WakePolicy::default())),
    ];
    for (flag, wait) in floors {
        if let (Some(ring), Some(listen)) = (arg(&args, flag), arg(&args, "--listen")) {
            floor::floor_server(ring, listen, wait);
        }
    }
    let opts = options(&args);
    let server_bin = shmring_benches::transport_server();
    let exe = std::env::current_exe().expect("current exe");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let units = Arc::new(recorded_stream(&target));
    describe_stream(&units);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rounds = Vec::new();
    match &opts.cameras {
        None => rounds.extend(measure(
            &rt,
            &opts,
            &Feeds::single(opts.layout, &units),
            &server_bin,
            &exe,
        )),
        Some(counts) => {
            for &n in counts {
                // Same total bytes as one 60 fps camera, unless --camera-fps says otherwise.
                let fps = opts.camera_fps.unwrap_or(FPS as f64 / n as f64);
                let feeds = Feeds::cameras(n, fps, opts.layout, &units);
                rounds.extend(measure(&rt, &opts, &feeds, &server_bin, &exe));
            }
        }
    }
    print_table(&rounds);
}
