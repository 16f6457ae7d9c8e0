//! NATS: the telemetry and command relay, and video across machines (the wire format
//! of `docs/nats-video.md`).
//!
//! - [`video`]: how a stream's frames, stored keyframes and keyframe requests travel
//!   (subjects, chunks, reassembly).
//! - `outbox`: client commands waiting for the relay, in a safety, a motion and an
//!   other lane.
//! - `relay`: telemetry subjects to clients as `0x02` messages, client commands to
//!   `command.genesis.<action>`, keyframe requests (`command.genesis.force_idr`,
//!   `control.request_idr`), the video gate's publications.
//! - `publish` (`--publish`): every frame to `video.<stream>`, keyframes kept in
//!   JetStream.
//! - `source` (`--source`): a stream from NATS feeds the hub instead of a ring.
//! - `connection`: the one connection policy; the roles above share a connection when
//!   they name the same servers.

pub(crate) mod connection;
pub(crate) mod outbox;
pub(crate) mod publish;
pub(crate) mod relay;
pub(crate) mod source;
pub(crate) mod video;

pub use connection::NatsError;

pub use publish::NatsPublishOptions;
pub use relay::{NatsOptions, DEFAULT_KEYFRAME_REQUEST_SUBJECTS, FORCE_IDR_SUBJECT, REQUEST_IDR_SUBJECT};
pub use source::NatsSourceOptions;
