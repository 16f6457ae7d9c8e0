//! The video safety gate at run time (the state machine is [`crate::gate`]): the ring
//! gate shared by every connection and fed by a ticker, each connection's own gate, and
//! the NATS publications both ask for.
//!
//! A motion command is judged twice: when it arrives ([`SafetyGate::judge`]) and again
//! when the relay hands it to NATS ([`SafetyGate::admits`]): the video must still be
//! fresh, the command no older than HOLD, and no hold or ESTOP published since it was
//! accepted (the gate's generation counts those).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::gate::{command_kind, CommandKind, GateEffect, GateMode, GateSettings, VideoGate, GATE_TELEMETRY_SUBJECT};
use crate::gate::{ESTOP_ACTION, ESTOP_PAYLOAD, ZERO_VELOCITY_ACTION, ZERO_VELOCITY_PAYLOAD};
use crate::metrics::Metrics;
use crate::protocol::{encode_telemetry, COMMAND_SUBJECT_PREFIX};

/// How often the ring gate looks at the newest frame, so it opens (and says so) as soon
/// as frames flow again, with or without a command.
const TICK: Duration = Duration::from_millis(50);
/// Gate publications waiting for NATS.
const PUBLICATION_QUEUE: usize = 256;

/// One NATS message the gate wants published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Publication {
    /// The subject.
    pub subject: String,
    /// The JSON payload.
    pub payload: Bytes,
}

/// The NATS publication of a command-like effect (`None` for a status).
fn command_publication(effect: &GateEffect) -> Option<Publication> {
    let (action, payload) = match effect {
        GateEffect::ZeroVelocity => (ZERO_VELOCITY_ACTION, ZERO_VELOCITY_PAYLOAD),
        GateEffect::Estop => (ESTOP_ACTION, ESTOP_PAYLOAD),
        GateEffect::Status { .. } => return None,
    };
    Some(Publication {
        subject: format!("{COMMAND_SUBJECT_PREFIX}{action}"),
        payload: Bytes::from_static(payload.as_bytes()),
    })
}

/// The newest frame of the picture the operator drives by: its read time (CLOCK_MONOTONIC
/// ns, 0 before one) and codec; `None`: the server's own source's, from its metrics.
pub(crate) struct DrivingFrame(pub(crate) Box<dyn Fn() -> Option<(u64, Option<u16>)> + Send + Sync>);

impl std::fmt::Debug for DrivingFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DrivingFrame")
    }
}

/// The codec of the newest frame, as the metrics recorded it (0: none yet).
pub(crate) fn newest_codec(metrics: &Metrics) -> Option<u16> {
    u16::try_from(metrics.last_codec.load(Ordering::Relaxed))
        .ok()
        .filter(|&c| c != 0)
}

/// The ring gate and how long the source has been fresh.
#[derive(Debug)]
struct RingState {
    gate: VideoGate,
    /// Time of the first frame of the current fresh stretch of video (`None` while the
    /// newest frame is older than HOLD). Client gates do not count time before it: while
    /// the ring is stale, the ring gate judges; after, a client gets HOLD to catch up.
    fresh_since: Option<u64>,
}

/// The server-wide gate on the age of the newest frame of the driving camera(s) (the
/// picture the operator drives by; with several, the stalest of them).
#[derive(Debug)]
pub(crate) struct SafetyGate {
    ring: Mutex<RingState>,
    metrics: Arc<Metrics>,
    /// The driving picture's newest frame time and codec (`None`: `metrics`' source's).
    driving: Option<DrivingFrame>,
    publish: mpsc::Sender<Publication>,
    /// Zero velocities and ESTOPs sent so far (by the ring gate or any client gate):
    /// motion accepted before the latest one is never published after it.
    generation: AtomicU64,
}

/// What the NATS relay needs of the gate: its publications, and the gate itself to
/// judge motion again at hand-off.
#[derive(Debug)]
pub(crate) struct GateFeed {
    /// The gate.
    pub(crate) gate: Arc<SafetyGate>,
    /// Its publications, in the order it made them.
    pub(crate) publications: mpsc::Receiver<Publication>,
}

impl SafetyGate {
    /// A gate with `settings`, started now; returns it and what the NATS relay takes
    /// from it.
    /// `driving`: the driving picture's newest frame (`None`: `metrics`' source's).
    pub(crate) fn new(
        settings: GateSettings,
        metrics: Arc<Metrics>,
        driving: Option<DrivingFrame>,
    ) -> (Arc<Self>, GateFeed) {
        let (tx, rx) = mpsc::channel(PUBLICATION_QUEUE);
        let gate = Arc::new(SafetyGate {
            ring: Mutex::new(RingState {
                gate: VideoGate::new(settings, shmring_core::monotonic_ns()),
                fresh_since: None,
            }),
            metrics,
            driving,
            publish: tx,
            generation: AtomicU64::new(0),
        });
        let feed = GateFeed {
            gate: gate.clone(),
            publications: rx,
        };
        (gate, feed)
    }

    /// The generation now: read it before judging a command, and hand it to
    /// [`Self::admits`] with the command.
    pub(crate) fn generation(&self) -> u64 {
        // SYNC POINT (generation): Acquire pairs with the AcqRel increment in `send`,
        // made before the hold's publication is queued for the relay.
        self.generation.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RingState> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A gate for one connection, with the same settings, started now.
    pub(crate) fn client_gate(&self) -> ClientGate {
        ClientGate {
            gate: VideoGate::new(self.lock().gate.settings(), shmring_core::monotonic_ns()),
        }
    }

    fn send(&self, effects: &[GateEffect]) {
        for effect in effects {
            if matches!(effect, GateEffect::ZeroVelocity | GateEffect::Estop) {
                // SYNC POINT (generation): pairs with the Acquire load in `generation`;
                // the increment comes before the publication is queued, so a relay that
                // published the hold sees the new generation.
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            let publication = match effect {
                GateEffect::Status { mode, stale_ms } => Publication {
                    subject: GATE_TELEMETRY_SUBJECT.to_owned(),
                    payload: Bytes::from(GateEffect::status_json(*mode, *stale_ms, false)),
                },
                other => match command_publication(other) {
                    Some(p) => p,
                    None => continue,
                },
            };
            if self.publish.try_send(publication).is_err() {
                self.metrics.commands_dropped.inc();
            }
        }
    }

    /// Feeds the ring gate the newest frame's time and codec; publishes a recovery.
    fn observe(&self, now: u64) {
        let (frame, codec) = self.driving_frame();
        let effect = {
            let mut ring = self.lock();
            let hold = ring.gate.settings().hold;
            if frame == 0 || Duration::from_nanos(now.saturating_sub(frame)) > hold {
                ring.fresh_since = None;
            } else if ring.fresh_since.is_none() {
                ring.fresh_since = Some(frame);
            }
            ring.gate.observe(now, frame, codec)
        };
        if let Some(effect) = effect {
            tracing::info!("video gate open: frames flow again");
            self.send(&[effect]);
        }
    }

    /// The time of the driving picture's newest frame (0 before one) and its codec.
    fn driving_frame(&self) -> (u64, Option<u16>) {
        self.driving.as_ref().and_then(|f| (f.0)()).unwrap_or_else(|| {
            (
                self.metrics.last_frame_ns.load(Ordering::Relaxed),
                newest_codec(&self.metrics),
            )
        })
    }

    /// The time a client gate counts from: the time of the newest frame the client was
    /// sent, or the start of the ring's current fresh stretch if that is later. `None`
    /// (hold the client) while the client has had no frame or the ring is not fresh.
    fn client_clock(&self, client_frame_ns: u64) -> Option<u64> {
        let since = self.lock().fresh_since?;
        (client_frame_ns != 0).then_some(client_frame_ns.max(since))
    }

    /// Judges a command `action` from a client whose own gate is `client` and whose
    /// newest frame was read at `client_frame_ns`. Returns whether to forward it and the
    /// status message for that client alone (its own gate's), if any. While the ring
    /// gate holds, it alone judges (the client gate would only repeat it).
    pub(crate) fn judge(&self, client: &mut ClientGate, client_frame_ns: u64, action: &str) -> (bool, Option<Bytes>) {
        let now = shmring_core::monotonic_ns();
        self.observe(now);
        let ring = self.lock().gate.command(now, action);
        if !ring.effects.is_empty() {
            self.log(&ring.effects, "the ring's");
        }
        self.send(&ring.effects);
        if !ring.pass {
            return (false, None);
        }
        let Some(clock) = self.client_clock(client_frame_ns) else {
            // No frame yet (it never drove, so no zero velocity is due), or the ring's
            // fresh stretch ended since: held.
            return (command_kind(action) != CommandKind::Motion, None);
        };
        let (pass, effects) = client.command(now, clock, action);
        // Command effects of a client's gate go to NATS; its status goes to the client.
        let mut to_client = None;
        for effect in &effects {
            match effect {
                GateEffect::Status { mode, stale_ms } => {
                    to_client = encode_telemetry(
                        GATE_TELEMETRY_SUBJECT,
                        GateEffect::status_json(*mode, *stale_ms, true).as_bytes(),
                    );
                }
                other => self.send(std::slice::from_ref(other)),
            }
        }
        if !effects.is_empty() {
            self.log(&effects, "a client's");
        }
        (pass, to_client)
    }

    /// Judges a motion command `action` again as the relay hands it to NATS: true if it
    /// was accepted (at `accepted_ns`, in `generation`) no more than HOLD ago, no hold
    /// or ESTOP was sent since, the ring gate passes it now (which may latch a hold, as
    /// for an arriving command) and its client's newest frame (at `client_frame_ns`)
    /// is fresh now.
    pub(crate) fn admits(&self, action: &str, accepted_ns: u64, generation: u64, client_frame_ns: u64) -> bool {
        let now = shmring_core::monotonic_ns();
        let hold = self.lock().gate.settings().hold;
        let fresh = |t: u64| Duration::from_nanos(now.saturating_sub(t)) <= hold;
        if !fresh(accepted_ns) || self.generation() != generation {
            return false;
        }
        self.observe(now);
        let ring = self.lock().gate.command(now, action);
        if !ring.effects.is_empty() {
            self.log(&ring.effects, "the ring's");
        }
        self.send(&ring.effects);
        ring.pass && self.generation() == generation && self.client_clock(client_frame_ns).is_some_and(fresh)
    }

    fn log(&self, effects: &[GateEffect], whose: &str) {
        for effect in effects {
            if let GateEffect::Status { mode, stale_ms } = effect {
                match mode.name() {
                    Some(name) => tracing::warn!("video gate {name}: {whose} picture is {stale_ms} ms old"),
                    None => tracing::info!("video gate open: {whose} picture is fresh again"),
                }
            }
        }
    }

    /// Runs the ticker that opens the ring gate when frames flow again.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.observe(shmring_core::monotonic_ns());
        }
    }
}

/// One connection's gate, on the age of the newest frame that client was sent.
#[derive(Debug)]
pub(crate) struct ClientGate {
    gate: VideoGate,
}

impl ClientGate {
    fn command(&mut self, now: u64, frame_ns: u64, action: &str) -> (bool, Vec<GateEffect>) {
        let mut effects: Vec<GateEffect> = self.gate.observe(now, frame_ns, None).into_iter().collect();
        let verdict = self.gate.command(now, action);
        effects.extend(verdict.effects);
        (verdict.pass, effects)
    }

    /// True while this client's gate is closed (it should be checked for recovery).
    pub(crate) fn closed(&self) -> bool {
        self.gate.mode() != GateMode::Open
    }

    /// Checks for recovery with the client's newest frame read at `frame_ns` (judged on
    /// `ring`'s clock): the status message for the client if its gate opened.
    pub(crate) fn recovered(&mut self, ring: &SafetyGate, frame_ns: u64) -> Option<Bytes> {
        let now = shmring_core::monotonic_ns();
        let clock = ring.client_clock(frame_ns)?;
        self.gate.observe(now, clock, None)?;
        encode_telemetry(
            GATE_TELEMETRY_SUBJECT,
            GateEffect::status_json(GateMode::Open, 0, true).as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(hold_ms: u64) -> (Arc<SafetyGate>, GateFeed, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let settings = GateSettings {
            hold: Duration::from_millis(hold_ms),
            estop: Duration::from_millis(hold_ms * 5),
            codec_change_grace: Duration::ZERO,
        };
        let (gate, feed) = SafetyGate::new(settings, metrics.clone(), None);
        (gate, feed, metrics)
    }

    fn subjects(feed: &mut GateFeed) -> Vec<String> {
        std::iter::from_fn(|| feed.publications.try_recv().ok())
            .map(|p| p.subject)
            .collect()
    }

    #[test]
    fn closed_until_a_frame_proves_the_video_fresh_and_the_client_has_one() {
        let (gate, mut feed, metrics) = gate(1000);
        let mut client = gate.client_gate();
        let now = shmring_core::monotonic_ns();
        // No frame read yet: held, and the hold is published.
        assert!(!gate.judge(&mut client, now, "set_cmd_vel").0);
        assert_eq!(
            subjects(&mut feed),
            ["command.genesis.set_cmd_vel", GATE_TELEMETRY_SUBJECT]
        );
        assert!(gate.judge(&mut client, now, "estop").0, "safety always passes");
        // A fresh frame: the ring opens, but a client that was sent no frame is held.
        metrics
            .last_frame_ns
            .store(shmring_core::monotonic_ns(), Ordering::Relaxed);
        assert!(!gate.judge(&mut client, 0, "set_cmd_vel").0);
        let frame = shmring_core::monotonic_ns();
        assert!(gate.judge(&mut client, frame, "set_cmd_vel").0);
    }

    #[test]
    fn the_hand_off_refuses_motion_from_before_a_hold() {
        let (gate, _feed, metrics) = gate(1000);
        metrics
            .last_frame_ns
            .store(shmring_core::monotonic_ns(), Ordering::Relaxed);
        let generation = gate.generation();
        // The video goes stale: the next motion command latches the hold.
        std::thread::sleep(Duration::from_millis(1100));
        let mut client = gate.client_gate();
        assert!(!gate.judge(&mut client, 1, "set_cmd_vel").0);
        assert_ne!(gate.generation(), generation, "the hold counts");
        // Fresh again: a command accepted before the hold may still not follow it.
        let frame = shmring_core::monotonic_ns();
        metrics.last_frame_ns.store(frame, Ordering::Relaxed);
        assert!(!gate.admits("set_cmd_vel", frame, generation, frame));
        assert!(gate.admits("set_cmd_vel", frame, gate.generation(), frame));
    }

    #[test]
    fn the_hand_off_refuses_motion_older_than_hold() {
        let (gate, _feed, metrics) = gate(1000);
        let accepted = shmring_core::monotonic_ns();
        let generation = gate.generation();
        std::thread::sleep(Duration::from_millis(1100));
        let frame = shmring_core::monotonic_ns();
        metrics.last_frame_ns.store(frame, Ordering::Relaxed);
        assert!(!gate.admits("set_cmd_vel", accepted, generation, frame));
        assert!(gate.admits("set_cmd_vel", frame, generation, frame));
        // A client that was sent no frame is refused too.
        assert!(!gate.admits("set_cmd_vel", frame, generation, 0));
    }
}
