//! WebSocket fan-out of a [shmring](shmring_core) video ring to many browsers.
//!
//! ```text
//! ring file --(one reader thread, futex wake)--> Hub --(one shared Bytes per frame)-->
//!   fan-out threads --(writev, TCP_NODELAY)--> WebSocket (backlogs: per-client queues)
//! NATS telemetry.> --> 0x02 messages          client 0x04 commands --> command.genesis.<action>
//! ```
//!
//! Beyond one machine ([`nats_video`], `docs/nats-video.md`): `--publish` sends every
//! frame to NATS (`video.<stream>`) and keeps the newest keyframe in JetStream;
//! `--source` feeds the hub from that subject instead of a ring ([`FrameSource`]).
//!
//! - One reader thread per ring sleeps on the ring's futex and turns each frame into one
//!   `[0x01][32-byte header][payload]` message, shared by every client (no per-client
//!   copy in this crate). Fan-out threads write it to each client's socket with one
//!   non-blocking `writev`; only what a socket cannot take at once waits in that
//!   client's bounded queue for its writer task.
//! - New clients start from a GOP cache (the newest keyframe and the frames after it).
//!   A client whose queue overflows (bytes or messages) drops to the next keyframe; the
//!   others lose nothing. Keyframe requests are coalesced ([`KeyframeRequests`]).
//! - [`Server`] also serves a WebCodecs viewer page at `/`, `/health` and `/metrics`.
//!
//! The message format is in [`protocol`].
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use clap::Parser;
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     config: shmring_ws::Config,
//! }
//! let cli = Cli::parse();
//! let options = cli.config.server_options("/dev/shm/sdr_os_ipc/frames".into()).map_err(std::io::Error::other)?;
//! let server = shmring_ws::Server::bind(options).await?;
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod annexb;
mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod foxglove;
mod hub;
mod keyframe;
pub mod limits;
mod metrics;
mod nats;
mod nats_publish;
mod nats_source;
pub mod nats_video;
pub mod protocol;
mod ring;
mod server;
mod source;
pub mod trust;
mod ws;

pub use config::{Config, DEFAULT_SHM_PATH};
pub use hub::{
    Batch, ClientQueue, CloseReason, Hub, Outgoing, QueueLimits, Telemetry, VideoFrame, GOP_CACHE_MAX_BYTES,
    GOP_CACHE_MAX_FRAMES,
};
pub use keyframe::{KeyframeCallback, KeyframeRequests};
pub use metrics::{DropReason, Metrics};
pub use nats::{NatsOptions, COMMAND_SUBJECT_PREFIX, REQUEST_IDR_SUBJECT};
pub use nats_publish::NatsPublishOptions;
pub use nats_source::NatsSourceOptions;
pub use ring::{spawn_reader, RingSource};
pub use server::{Server, ServerOptions, STREAM_PATH, VIEWER_HTML};
pub use source::FrameSource;
