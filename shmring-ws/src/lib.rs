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
//!   and the [`foxglove`] WebSocket protocol on the same port.
//!
//! The message format is in [`protocol`]; every default is named in [`defaults`].
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
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
pub mod limits;
mod message;
mod metrics;
pub mod nats;
mod options;
pub mod protocol;
mod ring;
mod safety;
mod server;
mod source;
pub mod trust;
mod wire;

pub use client::QueueLimits;
pub use hub::{GOP_CACHE_MAX_BYTES, GOP_CACHE_MAX_FRAMES};
pub use keyframe::{KeyframeCallback, KeyframeRequests};
pub use metrics::{DropReason, Metrics, MetricsSnapshot, NatsVideoSnapshot, TrustSnapshot};
pub use options::ServerOptions;
pub use server::{Server, STREAM_PATH, VIEWER_HTML};
pub use source::{FrameSource, RingSource};
