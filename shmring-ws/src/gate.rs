//! The video safety gate: an operator must not drive a robot they cannot see.
//!
//! A motion command (`set_cmd_vel`, `set_alpha`, `set_skill`) is forwarded only while the
//! video is fresh. When it is older than the HOLD threshold the gate drops motion and, once
//! per stale episode, latches one zero velocity; older than the ESTOP threshold it
//! escalates, once, to an emergency stop. `estop`, `estop_clear`, `pause` and `reset`
//! always pass. When frames flow again the gate opens and says so (`{"gated":false}`).
//! Until the first frame it is told of, the gate holds motion: it is closed until the
//! video is proven fresh.
//! Settings, subjects and payloads are SDR_OS's, so its sim and browser client understand
//! them (see `docs/video-gate.md` for the state diagram).
//!
//! The same state machine runs twice with different clocks:
//! - the **ring gate** (one per server) measures the age of the newest frame the source
//!   produced, whether or not any client got it (frames skipped while a client waits for
//!   a keyframe still count as fresh video: the robot's camera works);
//! - a **client gate** (one per connection) measures the age of the newest frame *that
//!   client* was sent: a client whose queue is stalled, or which is dropping to the next
//!   keyframe, drives blind even while the ring is fresh. Its status goes to that client
//!   only.
//!
//! This module is pure: times are CLOCK_MONOTONIC nanoseconds passed in by the caller,
//! and the gate returns what to publish instead of publishing it.

use std::time::Duration;

/// NATS subject the gate's status goes to (and the sim listens on).
pub const GATE_TELEMETRY_SUBJECT: &str = "telemetry.safety.video_gate";
/// Action (subject `command.genesis.set_cmd_vel`) of the latched zero velocity.
pub(crate) const ZERO_VELOCITY_ACTION: &str = "set_cmd_vel";
/// Action (subject `command.genesis.estop`) of the escalation.
pub(crate) const ESTOP_ACTION: &str = "estop";
/// Payload of the latched zero velocity, as SDR_OS sends it.
pub(crate) const ZERO_VELOCITY_PAYLOAD: &str =
    r#"{"action":"set_cmd_vel","data":{"linear_x":0,"linear_y":0,"angular_z":0},"_safety":"hold"}"#;
/// Payload of the escalation, as SDR_OS sends it.
pub(crate) const ESTOP_PAYLOAD: &str = r#"{"reason":"video_timeout","_safety":"estop"}"#;

/// Default HOLD threshold (`SDR_VIDEO_GATE_HOLD_MS`).
pub const DEFAULT_HOLD: Duration = Duration::from_millis(1000);
/// Default ESTOP threshold (`SDR_VIDEO_GATE_ESTOP_MS`).
pub const DEFAULT_ESTOP: Duration = Duration::from_millis(5000);
/// Default codec-change grace (`SDR_VIDEO_GATE_CODEC_CHANGE_GRACE_MS`).
pub const DEFAULT_CODEC_CHANGE_GRACE: Duration = Duration::from_millis(2000);

/// Thresholds of the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateSettings {
    /// Video older than this holds motion (one zero velocity, then motion is dropped).
    pub hold: Duration,
    /// Video older than this stops the robot (one `estop`).
    pub estop: Duration,
    /// For this long after the codec changed, ESTOP waits this much longer (an encoder
    /// switching codec pauses the video without the camera being lost).
    pub codec_change_grace: Duration,
}

impl Default for GateSettings {
    fn default() -> Self {
        GateSettings {
            hold: DEFAULT_HOLD,
            estop: DEFAULT_ESTOP,
            codec_change_grace: DEFAULT_CODEC_CHANGE_GRACE,
        }
    }
}

/// Why gate thresholds cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateSettingsError {
    /// ESTOP is not longer than HOLD: it escalates a HOLD, so it must come after it.
    EstopNotAfterHold {
        /// The HOLD threshold.
        hold: Duration,
        /// The ESTOP threshold.
        estop: Duration,
    },
}

impl std::fmt::Display for GateSettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GateSettingsError::EstopNotAfterHold { hold, estop } => write!(
                f,
                "SDR_VIDEO_GATE_ESTOP_MS ({}) must be longer than SDR_VIDEO_GATE_HOLD_MS ({}): ESTOP escalates a HOLD",
                estop.as_millis(),
                hold.as_millis()
            ),
        }
    }
}

impl std::error::Error for GateSettingsError {}

impl GateSettings {
    /// Checks the thresholds: ESTOP must be longer than HOLD.
    pub fn validate(self) -> Result<GateSettings, GateSettingsError> {
        if self.estop <= self.hold {
            return Err(GateSettingsError::EstopNotAfterHold {
                hold: self.hold,
                estop: self.estop,
            });
        }
        Ok(self)
    }
}

/// The gate's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GateMode {
    /// Video is fresh: every command passes.
    Open,
    /// Video is stale: motion is dropped; one zero velocity was latched.
    Hold,
    /// Video has been stale too long: motion is dropped; one `estop` was sent.
    Estop,
}

impl GateMode {
    /// The name SDR_OS uses in `mode` (`"HOLD"`, `"ESTOP"`), or `None` when open.
    pub(crate) fn name(self) -> Option<&'static str> {
        match self {
            GateMode::Open => None,
            GateMode::Hold => Some("HOLD"),
            GateMode::Estop => Some("ESTOP"),
        }
    }
}

/// What a command's action means to the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CommandKind {
    /// Moves the robot: passes only while the video is fresh.
    Motion,
    /// Stops or resets it (`estop`, `estop_clear`, `pause`, `reset`): always passes.
    Safety,
    /// Anything else (camera settings, signaling): passes; the gate does not judge it.
    Other,
}

/// Classifies a command action.
pub(crate) fn command_kind(action: &str) -> CommandKind {
    match action {
        "set_cmd_vel" | "set_alpha" | "set_skill" => CommandKind::Motion,
        "estop" | "estop_clear" | "pause" | "reset" => CommandKind::Safety,
        _ => CommandKind::Other,
    }
}

/// Something the gate wants published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GateEffect {
    /// The latched zero velocity: [`ZERO_VELOCITY_PAYLOAD`] on
    /// `command.genesis.set_cmd_vel`.
    ZeroVelocity,
    /// The escalation: [`ESTOP_PAYLOAD`] on `command.genesis.estop`.
    Estop,
    /// The gate's status, for [`GATE_TELEMETRY_SUBJECT`] (the ring gate) or for the
    /// client alone (a client gate): see [`GateEffect::status_json`].
    Status {
        /// The mode entered (`Open` on recovery).
        mode: GateMode,
        /// Age of the newest frame when the gate closed, in ms (0 on recovery).
        stale_ms: u64,
    },
}

impl GateEffect {
    /// The JSON status payload: `{"gated":true,"mode":"HOLD","stale_ms":N}` or
    /// `{"gated":false}`; a client gate adds `"scope":"client"`.
    pub(crate) fn status_json(mode: GateMode, stale_ms: u64, client_scope: bool) -> String {
        let scope = if client_scope { r#","scope":"client""# } else { "" };
        match mode.name() {
            Some(name) => format!(r#"{{"gated":true,"mode":"{name}","stale_ms":{stale_ms}{scope}}}"#),
            None => format!(r#"{{"gated":false{scope}}}"#),
        }
    }
}

/// What the gate decided about one command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Forward the command.
    pub pass: bool,
    /// Publish these (in order) whether or not the command passes.
    pub effects: Vec<GateEffect>,
}

/// The gate state machine (see the module docs).
///
/// Closed until proven fresh: before the first frame it is told of, no motion passes,
/// whatever the time (the age that escalates to ESTOP counts from the start).
#[derive(Clone, Debug)]
pub(crate) struct VideoGate {
    settings: GateSettings,
    mode: GateMode,
    /// When the gate started.
    started_ns: u64,
    /// Newest frame time (`None` before the first).
    newest_frame_ns: Option<u64>,
    codec: Option<u16>,
    codec_changed_ns: Option<u64>,
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl VideoGate {
    /// A gate started at `now_ns`. Until a frame arrives motion is held, and the age that
    /// escalates to ESTOP counts from here.
    pub(crate) fn new(settings: GateSettings, now_ns: u64) -> Self {
        VideoGate {
            settings,
            mode: GateMode::Open,
            started_ns: now_ns,
            newest_frame_ns: None,
            codec: None,
            codec_changed_ns: None,
        }
    }

    /// The current mode.
    pub(crate) fn mode(&self) -> GateMode {
        self.mode
    }

    /// The settings.
    pub(crate) fn settings(&self) -> GateSettings {
        self.settings
    }

    /// Age of the video at `now_ns`: of the newest frame, counted from no earlier than
    /// the gate's start (before any frame: the time since the start).
    pub(crate) fn stale(&self, now_ns: u64) -> Duration {
        let since = self.newest_frame_ns.unwrap_or(0).max(self.started_ns);
        Duration::from_nanos(now_ns.saturating_sub(since))
    }

    /// True if a frame was seen and the newest is no older than HOLD at `now_ns`.
    pub(crate) fn fresh(&self, now_ns: u64) -> bool {
        self.newest_frame_ns
            .is_some_and(|f| Duration::from_nanos(now_ns.saturating_sub(f)) <= self.settings.hold)
    }

    /// The ESTOP threshold at `now_ns`: longer by the grace while a codec change is recent.
    fn estop_threshold(&self, now_ns: u64) -> Duration {
        let grace = self.settings.codec_change_grace;
        match self.codec_changed_ns {
            Some(t) if now_ns.saturating_sub(t) < ns(self.settings.estop + grace) => self.settings.estop + grace,
            _ => self.settings.estop,
        }
    }

    /// Records the newest frame (its time and codec; `frame_ns` 0: no frame yet), as
    /// often as the caller likes. If the gate was closed and this frame is fresh, it
    /// opens: returns the recovery status.
    pub(crate) fn observe(&mut self, now_ns: u64, frame_ns: u64, codec: Option<u16>) -> Option<GateEffect> {
        if frame_ns != 0 && self.newest_frame_ns.is_none_or(|f| frame_ns > f) {
            self.newest_frame_ns = Some(frame_ns);
        }
        if let Some(c) = codec {
            if self.codec.is_some_and(|old| old != c) {
                self.codec_changed_ns = Some(frame_ns);
            }
            self.codec = Some(c);
        }
        if self.mode != GateMode::Open && self.fresh(now_ns) {
            self.mode = GateMode::Open;
            return Some(GateEffect::Status {
                mode: GateMode::Open,
                stale_ms: 0,
            });
        }
        None
    }

    /// Judges a command with action `action` at `now_ns` (after the caller's latest
    /// [`Self::observe`]).
    pub(crate) fn command(&mut self, now_ns: u64, action: &str) -> Verdict {
        if command_kind(action) != CommandKind::Motion {
            return Verdict {
                pass: true,
                effects: Vec::new(),
            };
        }
        let stale = self.stale(now_ns);
        let stale_ms = ms(ns(stale));
        let mut effects = Vec::new();
        if stale > self.estop_threshold(now_ns) {
            if self.mode != GateMode::Estop {
                self.mode = GateMode::Estop;
                effects.push(GateEffect::Estop);
                effects.push(GateEffect::Status {
                    mode: GateMode::Estop,
                    stale_ms,
                });
            }
        } else if !self.fresh(now_ns) {
            if self.mode == GateMode::Open {
                self.mode = GateMode::Hold;
                effects.push(GateEffect::ZeroVelocity);
                effects.push(GateEffect::Status {
                    mode: GateMode::Hold,
                    stale_ms,
                });
            }
        } else {
            // Fresh video at the command's time: the gate opens even if no observe()
            // caught the recovery yet.
            if self.mode != GateMode::Open {
                self.mode = GateMode::Open;
                effects.push(GateEffect::Status {
                    mode: GateMode::Open,
                    stale_ms: 0,
                });
            }
            return Verdict { pass: true, effects };
        }
        Verdict { pass: false, effects }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_000_000 * MS;

    fn gate() -> VideoGate {
        let mut g = VideoGate::new(GateSettings::default(), T0);
        assert_eq!(g.observe(T0, T0, Some(1)), None);
        g
    }

    fn status(mode: GateMode, stale_ms: u64) -> GateEffect {
        GateEffect::Status { mode, stale_ms }
    }

    #[test]
    fn fresh_video_passes_everything() {
        let mut g = gate();
        for action in ["set_cmd_vel", "set_alpha", "set_skill", "estop", "camera"] {
            assert_eq!(
                g.command(T0 + 999 * MS, action),
                Verdict {
                    pass: true,
                    effects: vec![]
                }
            );
        }
        assert_eq!(g.mode(), GateMode::Open);
    }

    #[test]
    fn hold_latches_one_zero_velocity_then_drops_motion() {
        let mut g = gate();
        let v = g.command(T0 + 1001 * MS, "set_cmd_vel");
        assert!(!v.pass);
        assert_eq!(v.effects, vec![GateEffect::ZeroVelocity, status(GateMode::Hold, 1001)]);
        for i in 0..50 {
            let v = g.command(T0 + (1100 + i * 33) * MS, "set_alpha");
            assert_eq!(
                v,
                Verdict {
                    pass: false,
                    effects: vec![]
                },
                "latched once"
            );
        }
        assert_eq!(g.mode(), GateMode::Hold);
    }

    #[test]
    fn estop_escalates_once_and_safety_actions_always_pass() {
        let mut g = gate();
        assert!(!g.command(T0 + 2000 * MS, "set_cmd_vel").pass);
        let v = g.command(T0 + 5001 * MS, "set_skill");
        assert_eq!(v.effects, vec![GateEffect::Estop, status(GateMode::Estop, 5001)]);
        assert!(!v.pass);
        assert_eq!(g.command(T0 + 6000 * MS, "set_cmd_vel").effects, vec![]);
        for action in ["estop", "estop_clear", "pause", "reset"] {
            let v = g.command(T0 + 9000 * MS, action);
            assert!(v.pass && v.effects.is_empty(), "{action} must always pass");
        }
        assert_eq!(g.mode(), GateMode::Estop);
    }

    #[test]
    fn straight_to_estop_without_a_hold_first() {
        let mut g = gate();
        let v = g.command(T0 + 7000 * MS, "set_cmd_vel");
        assert_eq!(v.effects, vec![GateEffect::Estop, status(GateMode::Estop, 7000)]);
    }

    #[test]
    fn recovery_opens_once_and_a_new_episode_latches_again() {
        let mut g = gate();
        g.command(T0 + 1500 * MS, "set_cmd_vel");
        assert_eq!(
            g.observe(T0 + 1600 * MS, T0 + 1590 * MS, Some(1)),
            Some(status(GateMode::Open, 0))
        );
        assert_eq!(g.observe(T0 + 1700 * MS, T0 + 1690 * MS, Some(1)), None);
        assert!(g.command(T0 + 1710 * MS, "set_cmd_vel").pass);
        // Video stops again: a fresh HOLD with its own zero velocity.
        let v = g.command(T0 + 2800 * MS, "set_cmd_vel");
        assert_eq!(v.effects, vec![GateEffect::ZeroVelocity, status(GateMode::Hold, 1110)]);
    }

    #[test]
    fn a_command_on_fresh_video_opens_a_gate_observe_has_not_opened() {
        let mut g = gate();
        g.command(T0 + 1500 * MS, "set_cmd_vel");
        // The frame is known, the recovery not yet announced (observe ran before it was fresh).
        g.newest_frame_ns = Some(T0 + 1550 * MS);
        let v = g.command(T0 + 1560 * MS, "set_cmd_vel");
        assert!(v.pass);
        assert_eq!(v.effects, vec![status(GateMode::Open, 0)]);
    }

    #[test]
    fn an_old_frame_does_not_open_the_gate() {
        let mut g = gate();
        g.command(T0 + 1500 * MS, "set_cmd_vel");
        // A frame observed late (its time is already more than HOLD ago) is not recovery.
        assert_eq!(g.observe(T0 + 3000 * MS, T0 + 1900 * MS, Some(1)), None);
        assert_eq!(g.mode(), GateMode::Hold);
    }

    #[test]
    fn codec_change_extends_estop_by_the_grace() {
        let mut g = gate();
        // The codec changes at 1 s (the first frame of the new codec); then the video stops.
        g.observe(T0 + 1000 * MS, T0 + 1000 * MS, Some(3));
        let v = g.command(T0 + 6500 * MS, "set_cmd_vel");
        assert_eq!(v.effects, vec![GateEffect::ZeroVelocity, status(GateMode::Hold, 5500)]);
        let v = g.command(T0 + 7900 * MS, "set_cmd_vel");
        assert!(v.effects.is_empty(), "ESTOP waits for 5 s + 2 s of grace");
        let v = g.command(T0 + 8001 * MS, "set_cmd_vel");
        assert_eq!(v.effects, vec![GateEffect::Estop, status(GateMode::Estop, 7001)]);
    }

    #[test]
    fn the_grace_expires() {
        let mut g = gate();
        g.observe(T0 + 1000 * MS, T0 + 1000 * MS, Some(2));
        // Long after the change (more than ESTOP + grace), the plain threshold applies.
        g.observe(T0 + 9000 * MS, T0 + 9000 * MS, Some(2));
        let v = g.command(T0 + 14_100 * MS, "set_cmd_vel");
        assert_eq!(v.effects, vec![GateEffect::Estop, status(GateMode::Estop, 5100)]);
    }

    #[test]
    fn first_codec_is_not_a_change() {
        let mut g = VideoGate::new(GateSettings::default(), T0);
        g.observe(T0, T0, Some(1));
        let v = g.command(T0 + 5100 * MS, "set_cmd_vel");
        assert_eq!(v.effects, vec![GateEffect::Estop, status(GateMode::Estop, 5100)]);
    }

    #[test]
    fn closed_until_a_frame_proves_the_video_fresh() {
        let mut g = VideoGate::new(GateSettings::default(), T0);
        // No frame yet: held at once (one zero velocity), though the start is recent.
        let v = g.command(T0 + 100 * MS, "set_cmd_vel");
        assert_eq!(v.effects, vec![GateEffect::ZeroVelocity, status(GateMode::Hold, 100)]);
        assert!(!v.pass);
        assert_eq!(g.observe(T0 + 200 * MS, 0, None), None, "0 is no frame");
        assert!(!g.command(T0 + 300 * MS, "set_cmd_vel").pass);
        // The age that escalates counts from the start.
        let v = g.command(T0 + 5100 * MS, "set_cmd_vel");
        assert_eq!(v.effects, vec![GateEffect::Estop, status(GateMode::Estop, 5100)]);
        // A fresh frame opens it.
        assert_eq!(
            g.observe(T0 + 5200 * MS, T0 + 5190 * MS, Some(1)),
            Some(status(GateMode::Open, 0))
        );
        assert!(g.command(T0 + 5210 * MS, "set_cmd_vel").pass);
    }

    #[test]
    fn a_frame_older_than_the_start_is_judged_by_its_own_age() {
        let mut g = VideoGate::new(GateSettings::default(), T0);
        // Committed 900 ms before the gate started: fresh for 100 ms more, not 1 s.
        g.observe(T0, T0 - 900 * MS, Some(1));
        assert!(g.command(T0 + 50 * MS, "set_cmd_vel").pass);
        assert!(!g.command(T0 + 150 * MS, "set_cmd_vel").pass);
    }

    #[test]
    fn payloads_are_sdr_os_json() {
        assert_eq!(
            GateEffect::status_json(GateMode::Hold, 1234, false),
            r#"{"gated":true,"mode":"HOLD","stale_ms":1234}"#
        );
        assert_eq!(
            GateEffect::status_json(GateMode::Estop, 5001, true),
            r#"{"gated":true,"mode":"ESTOP","stale_ms":5001,"scope":"client"}"#
        );
        assert_eq!(GateEffect::status_json(GateMode::Open, 0, false), r#"{"gated":false}"#);
        for text in [ZERO_VELOCITY_PAYLOAD, ESTOP_PAYLOAD] {
            assert!(text.starts_with('{') && text.ends_with('}'));
        }
    }

    #[test]
    fn commands_are_classified_as_sdr_os_does() {
        assert_eq!(command_kind("set_cmd_vel"), CommandKind::Motion);
        assert_eq!(command_kind("set_skill"), CommandKind::Motion);
        assert_eq!(command_kind("reset"), CommandKind::Safety);
        assert_eq!(command_kind("request_idr"), CommandKind::Other);
    }
}
