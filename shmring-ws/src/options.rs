//! What a [`crate::Server`] is told: [`ServerOptions`], whose `Default` is built from
//! the named constants in [`crate::defaults`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cameras::CameraOptions;
use crate::client::QueueLimits;
use crate::defaults;
use crate::gate::GateSettings;
use crate::nats::{NatsOptions, NatsPublishOptions};
use crate::source::{FrameSource, RingSource};
use crate::trust::tls::TlsFiles;
use crate::trust::TrustPolicy;

/// Everything the server needs to run.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where frames come from: a ring, or NATS (`--source`).
    pub source: FrameSource,
    /// Several rings as cameras (`--shm-path` repeated, `--shm-dir`); empty: `source`
    /// is the one camera.
    pub cameras: CameraOptions,
    /// Publish every frame to NATS (`--publish`); `None` does not.
    pub publish: Option<NatsPublishOptions>,
    /// Per-client queue limits and keyframe timeout.
    pub limits: QueueLimits,
    /// Keyframe requests are coalesced to one per this interval.
    pub keyframe_interval: Duration,
    /// NATS relay settings; `None` runs without NATS.
    pub nats: Option<NatsOptions>,
    /// Largest client message (a command) accepted; larger ones close the connection.
    pub max_command_size: usize,
    /// More client messages than this in a second close the connection.
    pub max_messages_per_sec: u32,
    /// A write to a client that makes no progress for this long drops the connection.
    pub write_timeout: Duration,
    /// Most simultaneous WebSocket clients; more are refused with HTTP 503 (0: derived
    /// from the descriptor limit, see `limits::max_clients`).
    pub max_clients: usize,
    /// A Foxglove client subscribed to no channel for this long is closed (1008).
    pub subscribe_timeout: Duration,
    /// Kernel send buffer per client socket in bytes (0: the system default). A small
    /// one keeps a slow client's backlog in its queue, where it is dropped to a
    /// keyframe, rather than in the kernel, where it only adds latency.
    pub send_buffer: usize,
    /// Threads writing frames to client sockets, one pool shared by every camera (0: one
    /// per CPU).
    pub fanout_threads: usize,
    /// The video safety gate's thresholds (`None`: no gate, every command passes).
    pub video_gate: Option<GateSettings>,
    /// Who may watch and who may command: tokens and the Origin policy.
    pub trust: Arc<TrustPolicy>,
    /// Serve HTTPS/WSS on `listen` with this certificate and key; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Serve `/metrics` on this address only (without a token); `None`: on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// Commands published per second, all clients together.
    pub max_commands_per_sec: u32,
    /// More frames than this from one client in a second close the connection.
    pub max_frames_per_sec: u64,
    /// More bytes than this from one client in a second close the connection.
    pub max_bytes_per_sec: u64,
    /// Clients are pinged this often; one silent for two intervals is closed.
    pub ping_interval: Duration,
    /// Most sockets in their HTTP phase; one more evicts the oldest.
    pub max_pending_connections: usize,
}

impl Default for ServerOptions {
    /// The SDR_OS ring ([`defaults::DEFAULT_SHM_PATH`]) served on [`defaults::DEFAULT_LISTEN`], without
    /// NATS, every limit at its `DEFAULT_*` value.
    fn default() -> Self {
        ServerOptions {
            listen: defaults::DEFAULT_LISTEN,
            source: FrameSource::Ring(RingSource::default()),
            cameras: CameraOptions::default(),
            publish: None,
            limits: QueueLimits::default(),
            keyframe_interval: defaults::DEFAULT_KEYFRAME_INTERVAL,
            nats: None,
            max_command_size: defaults::DEFAULT_MAX_COMMAND_SIZE,
            max_messages_per_sec: defaults::DEFAULT_MAX_MESSAGES_PER_SEC,
            write_timeout: defaults::DEFAULT_WRITE_TIMEOUT,
            max_clients: defaults::DEFAULT_MAX_CLIENTS,
            subscribe_timeout: defaults::DEFAULT_SUBSCRIBE_TIMEOUT,
            send_buffer: defaults::DEFAULT_SEND_BUFFER,
            fanout_threads: defaults::DEFAULT_FANOUT_THREADS,
            video_gate: Some(GateSettings::default()),
            trust: Arc::new(TrustPolicy::default()),
            tls: None,
            metrics_listen: None,
            max_commands_per_sec: defaults::DEFAULT_MAX_COMMANDS_PER_SEC,
            max_frames_per_sec: defaults::DEFAULT_MAX_FRAMES_PER_SEC,
            max_bytes_per_sec: defaults::DEFAULT_MAX_BYTES_PER_SEC,
            ping_interval: defaults::DEFAULT_PING_INTERVAL,
            max_pending_connections: defaults::DEFAULT_MAX_PENDING_CONNECTIONS,
        }
    }
}

impl Default for QueueLimits {
    /// [`defaults::DEFAULT_QUEUE_FRAMES`], [`defaults::DEFAULT_QUEUE_BYTES`], [`defaults::DEFAULT_KEYFRAME_TIMEOUT`].
    fn default() -> Self {
        QueueLimits {
            max_frames: defaults::DEFAULT_QUEUE_FRAMES,
            max_bytes: defaults::DEFAULT_QUEUE_BYTES,
            keyframe_timeout: defaults::DEFAULT_KEYFRAME_TIMEOUT,
        }
    }
}

impl Default for RingSource {
    /// [`defaults::DEFAULT_SHM_PATH`], CRCs checked, frame_id neither a commit time nor a time.
    fn default() -> Self {
        RingSource {
            path: PathBuf::from(defaults::DEFAULT_SHM_PATH),
            verify_crc: defaults::DEFAULT_VERIFY_CRC,
            frame_id_is_commit_time: false,
            frame_id_is_time: false,
        }
    }
}
