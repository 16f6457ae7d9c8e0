//! The NATS side: telemetry relayed to clients as `0x02` messages, client commands
//! published on `command.genesis.<action>`, keyframe requests on every subject of
//! [`NatsOptions::keyframe_request_subjects`] (SDR_OS's sim listens on
//! `command.genesis.force_idr`, our producers on `control.request_idr`), and the video
//! gate's publications.
//!
//! Commands wait in the [`Outbox`]'s lanes; the relay publishes in a fixed order: the
//! gate's publications (its zero velocity, ESTOP and status), then safety commands,
//! then motion, then the rest. Motion is judged again by the gate as it is handed to
//! NATS and needs the round trip of the motion before it ([`RoundTrip`]), so a NATS
//! stall releases at most one old motion command, never a backlog.
//!
//! async-nats reconnects and resubscribes by itself, so a NATS restart needs nothing
//! from the server (the connection policy is [`super::client`]'s).

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::keyframe::{CameraRequests, KeyframeRequests};
use crate::metrics::{DropReason, Metrics};
use crate::protocol::{encode_telemetry, Command, COMMAND_SUBJECT_PREFIX};
use crate::safety::{GateFeed, Publication, SafetyGate};

use super::outbox::{MotionCommand, Outbox};

/// Subject our producers hear keyframe requests on.
pub const REQUEST_IDR_SUBJECT: &str = "control.request_idr";
/// Subject SDR_OS's sim hears keyframe requests on (payload `{"cmd_seq":0}`).
pub const FORCE_IDR_SUBJECT: &str = "command.genesis.force_idr";
/// Subjects keyframe requests go to by default: SDR_OS's sim's and our producers'.
pub const DEFAULT_KEYFRAME_REQUEST_SUBJECTS: [&str; 2] = [FORCE_IDR_SUBJECT, REQUEST_IDR_SUBJECT];

/// NATS relay settings.
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// Server URL(s), e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Subjects (wildcards allowed) relayed to clients as telemetry.
    pub telemetry_subjects: Vec<String>,
    /// Largest telemetry payload relayed; larger ones are dropped and counted.
    pub telemetry_max_size: usize,
    /// Subjects each keyframe request is published on. One under `command.genesis.`
    /// gets SDR_OS's command payload `{"cmd_seq":0}`; others get
    /// `{"source":"transport-server","ts_ns":N}`.
    pub keyframe_request_subjects: Vec<String>,
}

/// The payload of a keyframe request on `subject` (for `camera`, if not the default one).
fn keyframe_request(subject: &str, camera: Option<&str>) -> Bytes {
    let mut body = if subject.starts_with(COMMAND_SUBJECT_PREFIX) {
        serde_json::json!({ "cmd_seq": 0 })
    } else {
        serde_json::json!({ "source": "transport-server", "ts_ns": shmring_core::monotonic_ns() })
    };
    if let Some(camera) = camera {
        body["camera"] = camera.into();
    }
    Bytes::from(body.to_string())
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

/// Most time the relay waits for the round trip after a motion command before it asks
/// again (the first request or its echo may have been lost to a reconnection).
const ROUND_TRIP_RETRY: Duration = Duration::from_secs(1);

/// Relays the telemetry `options` names from NATS to every client.
/// Where relayed telemetry goes: every camera's clients.
pub(crate) type TelemetrySink = Arc<dyn Fn(Bytes) + Send + Sync>;

/// What the relay does for every camera: telemetry to their clients, and the keyframe
/// requests of the cameras besides the default one (on `<subject>.<camera>`).
pub(crate) struct OtherCameras {
    pub(crate) telemetry: TelemetrySink,
    pub(crate) keyframes: Arc<CameraRequests>,
}

async fn relay_telemetry(options: &NatsOptions, client: &Client, sink: &TelemetrySink, metrics: &Arc<Metrics>) {
    for subject in &options.telemetry_subjects {
        match client.subscribe(subject.clone()).await {
            Ok(mut sub) => {
                let sink = sink.clone();
                let metrics = metrics.clone();
                let max = options.telemetry_max_size;
                tokio::spawn(async move {
                    while let Some(msg) = sub.next().await {
                        if msg.payload.len() > max {
                            metrics.dropped(DropReason::Telemetry, 1);
                            continue;
                        }
                        match encode_telemetry(msg.subject.as_str(), &msg.payload) {
                            Some(m) => sink(m),
                            None => metrics.dropped(DropReason::Telemetry, 1),
                        }
                    }
                });
            }
            Err(e) => tracing::error!("cannot subscribe to {subject}: {e}"),
        }
    }
}

/// Proof that NATS took a motion command: after publishing it the relay publishes a
/// token on its own inbox and waits for the token to come back. NATS handles one
/// connection's messages in order, so the echo means the command went out to its
/// subscribers, not into a socket buffer of a stalled server. Until then no other
/// motion is handed over: at most one motion publication is ever unacknowledged.
struct RoundTrip {
    subject: String,
    /// `None`: the subscription failed; motion is never confirmed, so never published.
    echoes: Option<async_nats::Subscriber>,
    next_token: u64,
    /// The first token sent after the unacknowledged command (any echo from there on
    /// acknowledges it).
    awaiting: Option<u64>,
    retry_at: tokio::time::Instant,
}

impl RoundTrip {
    async fn start(client: &Client) -> RoundTrip {
        let subject = client.new_inbox();
        let echoes = match client.subscribe(subject.clone()).await {
            Ok(sub) => Some(sub),
            Err(e) => {
                tracing::error!("cannot subscribe to the relay's inbox: {e}; motion commands are not published");
                None
            }
        };
        RoundTrip {
            subject,
            echoes,
            next_token: 0,
            awaiting: None,
            retry_at: tokio::time::Instant::now(),
        }
    }

    /// A motion publication waits for its echo.
    fn waiting(&self) -> bool {
        self.awaiting.is_some() || self.echoes.is_none()
    }

    /// Asks for an echo of everything published so far.
    async fn request(&mut self, client: &Client) {
        let token = self.next_token;
        self.next_token += 1;
        self.awaiting.get_or_insert(token);
        self.retry_at = tokio::time::Instant::now() + ROUND_TRIP_RETRY;
        if let Err(e) = client
            .publish(self.subject.clone(), Bytes::from(token.to_string()))
            .await
        {
            tracing::debug!("round trip not requested: {e}");
        }
    }

    /// Waits for the echo (or asks again when it is late); returns when the awaited
    /// publication is acknowledged or a new request went out.
    async fn settle(&mut self, client: &Client) {
        let (Some(echoes), Some(awaiting)) = (self.echoes.as_mut(), self.awaiting) else {
            return std::future::pending().await;
        };
        let echo = tokio::select! {
            echo = echoes.next() => Some(echo),
            () = tokio::time::sleep_until(self.retry_at) => None,
        };
        match echo {
            Some(Some(m)) => {
                let token = std::str::from_utf8(&m.payload).ok().and_then(|t| t.parse::<u64>().ok());
                if token.is_some_and(|t| t >= awaiting) {
                    self.awaiting = None;
                }
            }
            Some(None) => {
                tracing::error!("the relay's inbox closed; motion commands are no longer published");
                self.echoes = None;
            }
            None => self.request(client).await,
        }
    }
}

/// The relay's command side: what waits, in which order it goes, and the checks at
/// hand-off.
struct CommandRelay {
    client: Client,
    metrics: Arc<Metrics>,
    outbox: Arc<Outbox>,
    gate: Option<Arc<SafetyGate>>,
    publications: Option<mpsc::Receiver<Publication>>,
    round_trip: RoundTrip,
}

impl CommandRelay {
    /// Publishes everything that may go now, in order: the gate's publications, safety
    /// commands, one motion command (if none is unacknowledged), other commands. Each
    /// step looks at the lanes above it again first.
    async fn publish_ready(&mut self) {
        loop {
            if let Some(p) = self.publications.as_mut().and_then(|rx| rx.try_recv().ok()) {
                self.publish_gate(p).await;
            } else if let Some(cmd) = self.outbox.take_safety() {
                self.publish_command(cmd).await;
            } else if let Some(motion) = (!self.round_trip.waiting())
                .then(|| self.outbox.take_motion())
                .flatten()
            {
                self.hand_off(motion).await;
            } else if let Some(cmd) = self.outbox.take_other() {
                self.publish_command(cmd).await;
            } else {
                return;
            }
        }
    }

    async fn publish_gate(&self, p: Publication) {
        if let Err(e) = self.client.publish(p.subject, p.payload).await {
            self.metrics.commands_dropped.inc();
            tracing::warn!("video gate publication lost: {e}");
        }
    }

    async fn publish_command(&self, cmd: Command) -> bool {
        let subject = format!("{COMMAND_SUBJECT_PREFIX}{}", cmd.action);
        match self.client.publish(subject, cmd.json).await {
            Ok(()) => {
                self.metrics.commands_published.inc();
                true
            }
            Err(e) => {
                self.metrics.commands_dropped.inc();
                tracing::debug!("command not published: {e}");
                false
            }
        }
    }

    /// Publishes a motion command if the gate still admits it now, then waits for the
    /// round trip before the next.
    async fn hand_off(&mut self, motion: MotionCommand) {
        let admitted = self.gate.as_ref().is_none_or(|gate| {
            gate.admits(
                &motion.command.action,
                motion.accepted_ns,
                motion.generation,
                motion.client.newest_frame_ns(),
            )
        });
        if !admitted {
            self.metrics.commands_gated.inc();
            return;
        }
        if self.publish_command(motion.command).await {
            self.round_trip.request(&self.client).await;
        }
    }

    /// Waits for the next thing to do: a gate publication, a queued command, the
    /// motion round trip, or a keyframe request (published here).
    async fn wait(&mut self, keyframes: &KeyframeRequests, cameras: &CameraRequests, subjects: &[String]) {
        let CommandRelay {
            client,
            outbox,
            publications,
            round_trip,
            ..
        } = self;
        let publication = async {
            match publications.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let woke = tokio::select! {
            biased;
            Some(p) = publication => Some(p),
            () = outbox.ready() => None,
            () = round_trip.settle(client) => None,
            () = keyframes.next_for_nats() => {
                publish_keyframe_requests(client, subjects, None).await;
                None
            }
            names = cameras.next() => {
                for name in names {
                    publish_keyframe_requests(client, subjects, Some(&name)).await;
                }
                None
            }
        };
        if let Some(p) = woke {
            self.publish_gate(p).await;
        }
    }
}

/// Publishes a keyframe request on each of `subjects`: as they are for the default
/// camera, on `<subject>.<camera>` for another.
async fn publish_keyframe_requests(client: &Client, subjects: &[String], camera: Option<&str>) {
    for subject in subjects {
        let subject = match camera {
            Some(name) => format!("{subject}.{name}"),
            None => subject.clone(),
        };
        if let Err(e) = client
            .publish(subject.clone(), keyframe_request(&subject, camera))
            .await
        {
            tracing::debug!("keyframe request not published on {subject}: {e}");
        }
    }
}

/// Runs the relay over `client` until the process ends: telemetry to the clients,
/// the clients' commands from `outbox` and the video gate's publications (`gate`) to
/// NATS.
pub(crate) async fn run(
    options: NatsOptions,
    client: Client,
    cameras: OtherCameras,
    metrics: Arc<Metrics>,
    keyframes: Arc<KeyframeRequests>,
    outbox: Arc<Outbox>,
    gate: Option<GateFeed>,
) {
    relay_telemetry(&options, &client, &cameras.telemetry, &metrics).await;
    let round_trip = RoundTrip::start(&client).await;
    let (gate, publications) = match gate {
        Some(feed) => (Some(feed.gate), Some(feed.publications)),
        None => (None, None),
    };
    let mut relay = CommandRelay {
        client,
        metrics,
        outbox,
        gate,
        publications,
        round_trip,
    };
    loop {
        relay.publish_ready().await;
        relay
            .wait(&keyframes, &cameras.keyframes, &options.keyframe_request_subjects)
            .await;
    }
}
