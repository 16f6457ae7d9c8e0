//! The one support module of the benchmark harnesses (see `benches/README.md`):
//! argument lookup, child processes that die with the benchmark, waiting for a
//! listener, percentiles, and the `transport-server` binary the loopback benchmarks
//! (`ws_fanout`, `nats_hop`) start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The value after `name` in `args` (`--name value`).
pub fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// A free loopback address (the port may be taken again before use; fine for benches).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A child process killed and reaped when dropped, so a failed run leaves nothing behind.
pub struct ChildProcess(pub Child);

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to 10 s for something to accept connections at `addr`.
pub fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listening at {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Appends a client's answer to a server ping that carried `payload` (at most 125
/// bytes, as every control frame): a pong, masked as client frames must be, with a zero
/// key that leaves the payload as it is. Load clients answer pings as every WebSocket
/// client does; transport-server closes one silent for two ping intervals (30 s).
pub fn pong(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&[0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// The `p` quantile of sorted nanosecond samples, in milliseconds (NaN when empty).
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1e6
}

/// The release `transport-server` binary, built first from the current source
/// (`cargo build --release -p transport-server`: a no-op when it is up to date), so
/// `cargo bench -p shmring-benches --bench NAME` measures the current source.
///
/// It is built in its own target directory, `target/bench-server`: in the benchmark's
/// own one, that build and the benchmark's would each rebuild the dependencies the other
/// compiled with another feature set (async-nats against rustls, ...), minutes every
/// run, and under `cargo bench` it would wait for the build lock the outer cargo holds.
pub fn transport_server() -> PathBuf {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    // target/release/deps/<bench>-<hash> -> target
    let target = exe
        .parent()
        .and_then(|deps| deps.parent())
        .and_then(|profile| profile.parent())
        .expect("the benchmark runs from target/<profile>/deps")
        .join("bench-server");
    eprintln!(
        "building the release transport-server in {} (the first time takes minutes)...",
        target.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-q", "-p", "transport-server"])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("run cargo to build transport-server");
    assert!(status.success(), "cargo build --release -p transport-server failed");
    let bin = target.join("release").join("transport-server");
    assert!(bin.exists(), "{} is missing after the build", bin.display());
    bin
}
