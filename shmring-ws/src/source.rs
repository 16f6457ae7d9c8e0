//! Where the hub's frames come from: a local ring (a reader thread sleeping on the
//! ring's futex) or a NATS subject another server publishes (`--source`). Both hand
//! the hub the same `[0x01][32-byte header][payload]` messages, so the keyframe wait,
//! the GOP cache and keyframe requests work the same either way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::hub::Hub;
use crate::keyframe::KeyframeRequests;
use crate::metrics::Metrics;
use crate::nats::connection::Connections;
use crate::nats::{source as nats_source, NatsSourceOptions};
pub use crate::ring::RingSource;

/// The source of the frames a server fans out.
#[derive(Clone, Debug)]
pub enum FrameSource {
    /// A ring file on this machine.
    Ring(RingSource),
    /// A stream published on NATS by another server.
    Nats(NatsSourceOptions),
}

/// A started source; [`RunningSource::stop`] ends it.
pub(crate) enum RunningSource {
    Ring {
        stop: Arc<AtomicBool>,
        thread: JoinHandle<()>,
    },
    Nats(tokio::task::JoinHandle<()>),
    /// A source that could not start (said so in the log).
    Idle,
}

impl FrameSource {
    /// Starts feeding `hub`. A NATS source registers itself as the keyframe request
    /// path (requests go upstream to the publishing server).
    pub(crate) async fn start(
        &self,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        keyframes: Arc<KeyframeRequests>,
        nats: &mut Connections,
    ) -> std::io::Result<RunningSource> {
        match self {
            FrameSource::Ring(ring) => {
                let stop = Arc::new(AtomicBool::new(false));
                let thread = crate::ring::spawn_reader(ring.clone(), hub, metrics, stop.clone())?;
                Ok(RunningSource::Ring { stop, thread })
            }
            FrameSource::Nats(options) => {
                let role = nats_source::role(options);
                let on_state = nats_source::on_state(metrics.clone());
                let client = match nats.client(&options.target.servers, &role, true, on_state).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!("{role}: NATS unusable: {e}; no frames to serve");
                        return Ok(RunningSource::Idle);
                    }
                };
                Ok(RunningSource::Nats(tokio::spawn(nats_source::run(
                    options.clone(),
                    client,
                    hub,
                    metrics,
                    keyframes,
                ))))
            }
        }
    }
}

impl RunningSource {
    /// Stops the source and waits for its reader thread.
    pub(crate) async fn stop(self) {
        match self {
            RunningSource::Ring { stop, thread } => {
                stop.store(true, Ordering::Relaxed);
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            RunningSource::Nats(task) => task.abort(),
            RunningSource::Idle => {}
        }
    }
}
