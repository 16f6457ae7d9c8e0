//! Helpers the loopback benchmarks (`ws_fanout`, `nats_hop`) share: argument lookup,
//! child processes that die with the benchmark, waiting for a listener, percentiles.

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

/// The value after `name` in `args` (`--name value`).
pub fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// A free loopback address (the port may be taken again before use; fine for benches).
#[allow(dead_code)] // each bench compiles this module; ws_fanout does not need it
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

/// The `p` quantile of sorted nanosecond samples, in milliseconds (NaN when empty).
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1e6
}
