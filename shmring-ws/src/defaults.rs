//! The default of every server setting, by name: [`crate::ServerOptions::default`] is
//! built from these, and `transport-server` shows them in `--help`. The crate root
//! exports each of them.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

/// The ring the SDR_OS writer uses.
pub const DEFAULT_SHM_PATH: &str = "/dev/shm/sdr_os_ipc/frames";
/// Address to listen on for HTTP and WebSocket: this machine only, port 8080
/// (`transport-server` listens on every interface instead inside a container:
/// [`crate::default_listen`]).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// Size SDR_OS expects of the ring file (`SDR_SHM_SIZE`), in bytes: a smaller file is
/// reported at start (the whole file is mapped whatever its size).
pub const DEFAULT_SHM_SIZE: u64 = 4 << 20;
/// Check each frame's CRC-32.
pub const DEFAULT_VERIFY_CRC: bool = true;
/// NATS subjects relayed to clients as telemetry.
pub const DEFAULT_TELEMETRY_SUBJECTS: &str = "telemetry.>";
/// Largest telemetry payload relayed, in bytes.
pub const DEFAULT_TELEMETRY_MAX_SIZE: usize = 65536;
/// Keyframe requests are coalesced to one per this interval.
pub const DEFAULT_KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);
/// A client waiting this long for a keyframe (while frames flow) is closed.
pub const DEFAULT_KEYFRAME_TIMEOUT: Duration = Duration::from_millis(5000);
/// Most messages waiting in one client's queue (besides the GOP burst it starts with).
pub const DEFAULT_QUEUE_FRAMES: usize = 60;
/// Most message bytes waiting in one client's queue (besides the GOP burst).
pub const DEFAULT_QUEUE_BYTES: usize = 4 << 20;
/// Largest client message (a command) in bytes.
pub const DEFAULT_MAX_COMMAND_SIZE: usize = 65536;
/// More client messages than this in a second close the connection.
pub const DEFAULT_MAX_MESSAGES_PER_SEC: u32 = 200;
/// A client write making no progress for this long drops the connection.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Most simultaneous WebSocket clients: 0 derives it from the descriptor limit
/// (`ulimit -n`; 832 with the usual 1024), so the server refuses with 503 before it
/// runs out of descriptors (`limits::max_clients`).
pub const DEFAULT_MAX_CLIENTS: usize = 0;
/// A Foxglove client subscribed to no channel for this long is closed: it holds a
/// client slot and watches nothing.
pub const DEFAULT_SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Threads writing frames to client sockets (0: one per CPU).
pub const DEFAULT_FANOUT_THREADS: usize = 0;
/// Kernel send buffer per client socket in bytes (0: the system default).
pub const DEFAULT_SEND_BUFFER: usize = 256 << 10;
/// JetStream replicas of the keyframe store `--publish` creates.
pub const DEFAULT_KEYFRAME_REPLICAS: usize = 1;
/// Commands published per second, all clients together (each client also has its own
/// message limit).
pub const DEFAULT_MAX_COMMANDS_PER_SEC: u32 = 500;
/// More WebSocket frames than this from one client in a second (every frame: empty
/// continuations and pings too) close the connection.
pub const DEFAULT_MAX_FRAMES_PER_SEC: u64 = 1000;
/// More bytes than this from one client in a second close the connection.
pub const DEFAULT_MAX_BYTES_PER_SEC: u64 = 1 << 20;
/// Clients are pinged this often; one that answers nothing for two intervals is closed.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(15);
/// Most sockets in their HTTP phase (request head not read yet); more evict the oldest.
pub const DEFAULT_MAX_PENDING_CONNECTIONS: usize = 128;
/// A client's keyframe requests are passed on at most once per this interval (or per
/// the global coalescing interval, if longer).
pub const DEFAULT_CLIENT_KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);
