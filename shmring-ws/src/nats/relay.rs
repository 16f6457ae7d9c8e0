//! The NATS side: telemetry relayed to clients as `0x02` messages, client commands
//! published on `command.genesis.<action>`, keyframe requests on `control.request_idr`.
//! async-nats reconnects and resubscribes by itself, so a NATS restart needs nothing
//! from the server (the connection policy is [`super::client`]'s).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::hub::Hub;
use crate::keyframe::KeyframeRequests;
use crate::metrics::{DropReason, Metrics};
use crate::protocol::{encode_telemetry, Command};

/// Subject keyframe requests are published on.
pub const REQUEST_IDR_SUBJECT: &str = "control.request_idr";
/// Prefix of the subjects client commands are published on.
pub const COMMAND_SUBJECT_PREFIX: &str = "command.genesis.";

/// NATS relay settings.
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// Server URL(s), e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Subjects (wildcards allowed) relayed to clients as telemetry.
    pub telemetry_subjects: Vec<String>,
    /// Largest telemetry payload relayed; larger ones are dropped and counted.
    pub telemetry_max_size: usize,
}

/// The relay's role name in logs.
pub(crate) const ROLE: &str = "relay";

/// The servers of the relay's URL (`nats://HOST:PORT[,nats://HOST2:PORT2...]`).
pub(crate) fn servers(options: &NatsOptions) -> Vec<String> {
    options.url.split(',').map(|s| s.trim().to_owned()).collect()
}

/// Records the relay's connection state for `/health` (`"connected"`,
/// `"disconnected"`).
pub(crate) fn on_state(metrics: Arc<Metrics>) -> impl Fn(bool) + Send + Sync + 'static {
    move |connected| metrics.set_nats_state(if connected { "connected" } else { "disconnected" })
}

/// Runs the relay over `client` until the process ends.
pub(crate) async fn run(
    options: NatsOptions,
    client: Client,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    keyframes: Arc<KeyframeRequests>,
    mut commands: mpsc::Receiver<Command>,
) {
    for subject in &options.telemetry_subjects {
        match client.subscribe(subject.clone()).await {
            Ok(mut sub) => {
                let hub = hub.clone();
                let metrics = metrics.clone();
                let max = options.telemetry_max_size;
                tokio::spawn(async move {
                    while let Some(msg) = sub.next().await {
                        if msg.payload.len() > max {
                            metrics.dropped(DropReason::Telemetry, 1);
                            continue;
                        }
                        match encode_telemetry(msg.subject.as_str(), &msg.payload) {
                            Some(m) => hub.publish_telemetry(m),
                            None => metrics.dropped(DropReason::Telemetry, 1),
                        }
                    }
                });
            }
            Err(e) => tracing::error!("cannot subscribe to {subject}: {e}"),
        }
    }
    loop {
        tokio::select! {
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                let subject = format!("{COMMAND_SUBJECT_PREFIX}{}", cmd.action);
                match client.publish(subject, cmd.json).await {
                    Ok(()) => { metrics.commands_published.fetch_add(1, Ordering::Relaxed); }
                    Err(e) => {
                        metrics.commands_dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("command not published: {e}");
                    }
                }
            }
            () = keyframes.next_for_nats() => {
                let body = serde_json::json!({ "source": "transport-server", "ts_ns": shmring_core::monotonic_ns() });
                if let Err(e) = client.publish(REQUEST_IDR_SUBJECT, Bytes::from(body.to_string())).await {
                    tracing::debug!("keyframe request not published: {e}");
                }
            }
        }
    }
}
