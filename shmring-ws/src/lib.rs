//! WebSocket fan-out of a [shmring](shmring_core) video ring to many browsers.
//!
//! ```text
//! ring file --(one reader thread, futex wake)--> Hub --(one shared Bytes per frame)-->
//!   fan-out threads --(writev, TCP_NODELAY)--> WebSocket (backlogs: per-client queues)
//! NATS telemetry.> --> 0x02 messages          client 0x04 commands --> command.genesis.<action>
//! ```
//!
//! Beyond one machine ([`nats::video`], `docs/nats-video.md`): a server can publish
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
//!   coalesced ([`KeyframeRequests`]). Motion commands pass the video safety [`gate`].
//! - [`Server`] also serves a WebCodecs viewer page at `/`, `/health` and `/metrics`,
//!   and the Foxglove WebSocket protocol (`foxglove.websocket.v1`) on the same port.
//!
//! The message format is described in `docs/architecture.md`; every default is named in
//! [`defaults`].
//!
//! # What is public
//!
//! What a program embedding the server needs, at the crate root: [`Server`],
//! [`ServerOptions`] and its parts ([`FrameSource`], [`RingSource`], [`QueueLimits`],
//! [`GateSettings`], [`NatsOptions`], [`NatsPublishOptions`], [`NatsSourceOptions`],
//! [`TrustPolicy`], [`TlsFiles`]), the errors of building them ([`NatsError`],
//! [`TargetError`]), keyframe requests ([`KeyframeRequests`]) and read-only metrics
//! ([`Metrics::snapshot`]). The modules `defaults`, `gate`, `nats` and `trust` are public
//! for their settings and constants, [`foxglove`] for the names a Foxglove client sees
//! (subprotocol, topics, channel ids), and `annexb` splits an H.264 byte stream for
//! producers that replay a file. Everything else (the hub, client queues, the SDR_OS
//! message codec, the limit meters) is the server's own.
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
mod client;
mod connection;
pub mod defaults;
pub mod foxglove;
mod framing;
pub mod gate;
mod http;
mod hub;
mod keyframe;
mod limits;
mod message;
mod metrics;
pub mod nats;
mod options;
mod protocol;
mod ring;
mod safety;
mod server;
mod source;
mod standing;
pub mod trust;
mod wire;

// The server and how to run it.
pub use options::ServerOptions;
pub use server::{Server, ServerError, STREAM_PATH, VIEWER_HTML};

// ServerOptions' parts.
pub use client::QueueLimits;
pub use gate::GateSettings;
pub use nats::video::NatsVideoTarget;
pub use nats::{NatsOptions, NatsPublishOptions, NatsSourceOptions};
pub use source::{FrameSource, RingSource};
pub use trust::tls::TlsFiles;
pub use trust::TrustPolicy;

// The errors of building those parts.
pub use nats::video::TargetError;
pub use nats::NatsError;

// Keyframe requests (an in-process producer takes them with a callback).
pub use keyframe::{KeyframeCallback, KeyframeRequests};

// What the server measures, read-only.
pub use metrics::{DropReason, Metrics, MetricsSnapshot, NatsVideoSnapshot, TrustSnapshot};

// Limits of the GOP cache.
pub use hub::{GOP_CACHE_MAX_BYTES, GOP_CACHE_MAX_FRAMES};
