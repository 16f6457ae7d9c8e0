//! WebSocket fan-out of a [shmring](shmring_core) video ring to many browsers.
//!
//! ```text
//! ring file --(one reader thread, futex wake)--> Hub --(one shared Bytes per frame)-->
//!   fan-out threads --(writev, TCP_NODELAY)--> WebSocket (backlogs: per-client queues)
//! NATS telemetry.> --> 0x02 messages          client 0x04 commands --> command.genesis.<action>
//! ```
//!
//! Beyond one machine (`docs/nats-video.md`): a server can publish
//! every frame to NATS (`video.<stream>`) and keep the newest keyframe in JetStream
//! ([`ServerOptions::publish`]), and another can serve that stream instead of a ring
//! ([`FrameSource::Nats`]).
//!
//! - One reader thread per ring sleeps on the ring's futex and turns each frame into one
//!   `[0x01][32-byte header][payload]` message, shared by every client (no per-client
//!   copy in this crate). Fan-out threads write it to each client's socket with one
//!   non-blocking `writev`; only what a socket cannot take at once waits in that
//!   client's bounded queue for its writer task.
//! - New clients that ask for it (`?burst=gop`) start from a GOP cache (the newest
//!   keyframe and the frames after it); others at the next keyframe, requested for them.
//!   A client whose queue overflows (bytes or messages), or that meets a gap in
//!   frame_seq, resumes at a keyframe; the others lose nothing. Keyframe requests are
//!   coalesced ([`KeyframeRequests`]). Motion commands pass the video safety gate
//!   ([`GateSettings`], `docs/video-gate.md`).
//! - [`Server`] also serves a WebCodecs viewer page at `/`, `/health` and `/metrics`,
//!   and the Foxglove WebSocket protocol (`foxglove.websocket.v1`) on the same port.
//! - Several rings (or NATS streams) are cameras ([`CameraOptions`]): each has its own
//!   reader, hub, GOP cache and keyframe requests; `/stream/ws/<camera>` serves one,
//!   `/stream/ws` the default camera, [`CAMERAS_PATH`] lists them.
//!
//! The message format is described in `docs/architecture.md`; every default is named
//! at the crate root (`DEFAULT_*`).
//!
//! # What is public
//!
//! The crate root is the whole public API: what a program embedding the server needs.
//!
//! - The server: [`Server`], [`ServerError`], [`ServerOptions`] and its parts
//!   ([`FrameSource`], [`RingSource`], [`CameraOptions`] with [`is_valid_camera_name`], [`QueueLimits`], [`GateSettings`],
//!   [`NatsOptions`], [`NatsPublishOptions`], [`NatsSourceOptions`],
//!   [`NatsVideoTarget`], [`TrustPolicy`] with [`Tokens`], [`OriginPolicy`] and
//!   [`HostPolicy`], [`TlsFiles`]), and the errors of building them ([`NatsError`],
//!   [`TargetError`], [`GateSettingsError`], [`TokenError`], [`OriginListError`],
//!   [`HostListError`], [`TlsError`]).
//! - Every default (`DEFAULT_*`, e.g. [`DEFAULT_QUEUE_FRAMES`], [`DEFAULT_HOLD`]) and
//!   [`default_listen`].
//! - The names a client or another program sees: [`FOXGLOVE_SUBPROTOCOL`] and the
//!   Foxglove topics, [`SUBPROTOCOL_TOKEN_PREFIX`], the NATS subjects
//!   ([`VIDEO_SUBJECT_PREFIX`], [`camera_subject`], [`DEFAULT_KEYFRAME_REQUEST_SUBJECTS`],
//!   [`GATE_TELEMETRY_SUBJECT`]).
//! - Keyframe requests ([`KeyframeRequests`]) and read-only metrics
//!   ([`Metrics::snapshot`]).
//! - [`annexb`], the one public module, splits an H.264 byte stream for producers that
//!   replay a file.
//!
//! Everything else (the hub, client queues, the SDR_OS message codec, the gate's state
//! machine, the NATS relay, the limit meters) is the server's own.
//!
//! ```no_run
//! # async fn run() -> Result<(), shmring_ws::ServerError> {
//! use shmring_ws::{FrameSource, RingSource, Server, ServerOptions};
//! let options = ServerOptions {
//!     listen: "127.0.0.1:8080".parse().unwrap(),
//!     source: FrameSource::Ring(RingSource {
//!         path: "/dev/shm/camera0".into(),
//!         ..RingSource::default()
//!     }),
//!     ..ServerOptions::default()
//! };
//! let server = Server::bind(options).await?;
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod annexb;
mod camera_channels;
mod cameras;
mod client;
mod connection;
mod defaults;
mod foxglove;
mod framing;
mod gate;
mod http;
mod hub;
mod keyframe;
mod limits;
mod message;
mod metrics;
mod nats;
mod options;
mod picture_size;
mod protocol;
mod ring;
mod safety;
mod server;
mod source;
mod standing;
mod trust;
mod wire;

// The server and how to run it.
pub use options::ServerOptions;
pub use server::{Server, ServerError, CAMERAS_PATH, STREAM_PATH, VIEWER_HTML};

// ServerOptions' parts.
pub use cameras::{is_valid_camera_name, CameraOptions, MAX_CAMERA_NAME_LEN};
pub use client::QueueLimits;
pub use gate::{GateSettings, GateSettingsError};
pub use nats::video::NatsVideoTarget;
pub use nats::{NatsOptions, NatsPublishOptions, NatsSourceOptions};
pub use source::{FrameSource, RingSource};
pub use trust::host::{HostListError, HostPolicy};
pub use trust::origin::{OriginListError, OriginPolicy};
pub use trust::tls::{TlsError, TlsFiles};
pub use trust::tokens::{Role, TokenError, TokenSource, Tokens};
pub use trust::{default_listen, TrustPolicy};

// The errors of building those parts.
pub use nats::video::TargetError;
pub use nats::NatsError;

// Every default (`ServerOptions::default()` is built from these).
pub use defaults::{
    DEFAULT_CLIENT_KEYFRAME_INTERVAL, DEFAULT_FANOUT_THREADS, DEFAULT_KEYFRAME_INTERVAL, DEFAULT_KEYFRAME_REPLICAS,
    DEFAULT_KEYFRAME_TIMEOUT, DEFAULT_LISTEN, DEFAULT_MAX_BYTES_PER_SEC, DEFAULT_MAX_CLIENTS,
    DEFAULT_MAX_COMMANDS_PER_SEC, DEFAULT_MAX_COMMAND_SIZE, DEFAULT_MAX_FRAMES_PER_SEC, DEFAULT_MAX_MESSAGES_PER_SEC,
    DEFAULT_MAX_PENDING_CONNECTIONS, DEFAULT_PING_INTERVAL, DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_FRAMES,
    DEFAULT_SEND_BUFFER, DEFAULT_SHM_PATH, DEFAULT_SHM_SIZE, DEFAULT_SUBSCRIBE_TIMEOUT, DEFAULT_TELEMETRY_MAX_SIZE,
    DEFAULT_TELEMETRY_SUBJECTS, DEFAULT_VERIFY_CRC, DEFAULT_WRITE_TIMEOUT,
};
pub use gate::{DEFAULT_CODEC_CHANGE_GRACE, DEFAULT_ESTOP, DEFAULT_HOLD};
pub use nats::DEFAULT_KEYFRAME_REQUEST_SUBJECTS;
pub use trust::DEFAULT_PORT;

// Names a client or another program sees: NATS subjects, the Foxglove subprotocol and
// topics, the token subprotocol prefix.
pub use foxglove::{
    CAMERA_TOPIC_PREFIX as FOXGLOVE_CAMERA_TOPIC_PREFIX, IMAGE_TOPIC as FOXGLOVE_IMAGE_TOPIC,
    SUBPROTOCOL as FOXGLOVE_SUBPROTOCOL, VIDEO_TOPIC as FOXGLOVE_VIDEO_TOPIC,
};
pub use gate::GATE_TELEMETRY_SUBJECT;
pub use nats::video::{camera_subject, VIDEO_SUBJECT_PREFIX};
pub use nats::{FORCE_IDR_SUBJECT, REQUEST_IDR_SUBJECT};
pub use trust::tokens::SUBPROTOCOL_TOKEN_PREFIX;

// Keyframe requests (an in-process producer takes them with a callback).
pub use keyframe::{KeyframeCallback, KeyframeRequests};

// What the server measures, read-only.
pub use metrics::{DropReason, Metrics, MetricsSnapshot, NatsVideoSnapshot, TrustSnapshot};

// Limits of the GOP cache.
pub use hub::{GOP_CACHE_MAX_BYTES, GOP_CACHE_MAX_FRAMES};
