//! Client commands waiting for the NATS relay, in three lanes that never share a bound:
//!
//! - **safety** (`estop`, `estop_clear`, `pause`: [`is_safety_action`]): never refused.
//!   Each client has at most [`SAFETY_PER_CLIENT`] waiting; a client's next one beyond
//!   that supersedes its oldest waiting message whose kind it sends again, so the last
//!   word of each kind (and their order) survives and a client cannot flood the lane;
//!   all clients together keep at most [`SAFETY_QUEUE`] the same way.
//! - **motion** (`set_cmd_vel`, `set_alpha`, `set_skill`): a setpoint, not an event. One
//!   slot per action, the newest wins; each carries when it was accepted and the video
//!   gate's generation then, for the relay to check again at hand-off.
//! - **other** (camera settings, `reset`, ...): a bounded first-in first-out queue.
//!
//! The relay takes safety first, then motion, then the rest (see [`super::relay`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::client::ClientQueue;
use crate::gate::{command_kind, CommandKind};
use crate::protocol::Command;

/// Safety messages one client may have waiting; more supersede older ones of a kind it
/// sends again.
pub(crate) const SAFETY_PER_CLIENT: usize = 4;
/// Safety messages waiting from all clients together (clients that left while NATS was
/// away leave theirs behind); more supersede the oldest one whose kind waits again
/// later, whoever sent it.
pub(crate) const SAFETY_QUEUE: usize = 4096;
/// Commands of the other lane waiting for NATS; more are dropped (and counted).
pub(crate) const OTHER_QUEUE: usize = 1024;

/// The actions of the safety lane: they stop the robot or hold it, so they are never
/// refused by a budget, a queue or a flood, and go out ahead of any waiting motion.
/// (`reset` passes the video gate too, but it is no stop: it takes the other lane.)
pub(crate) fn is_safety_action(action: &str) -> bool {
    matches!(action, "estop" | "estop_clear" | "pause")
}

/// A motion command accepted by the video gate, waiting for its hand-off to NATS.
#[derive(Debug)]
pub(crate) struct MotionCommand {
    /// The command.
    pub(crate) command: Command,
    /// CLOCK_MONOTONIC ns when the gate accepted it.
    pub(crate) accepted_ns: u64,
    /// The video gate's generation when it was accepted (a hold since makes it stale).
    pub(crate) generation: u64,
    /// The client that sent it (its picture is judged again at hand-off).
    pub(crate) client: Arc<ClientQueue>,
}

#[derive(Debug, Default)]
struct Lanes {
    /// (client id, command), oldest first.
    safety: VecDeque<(u64, Command)>,
    /// At most one per motion action.
    motion: Vec<MotionCommand>,
    other: VecDeque<Command>,
}

/// What [`Outbox::push`] did with a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Waiting for the relay.
    Waiting,
    /// Waiting; an older command it replaces will not be published.
    Superseded,
    /// Not queued: the other lane is full.
    Full,
}

/// The lanes between the connections and the relay.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    lanes: Mutex<Lanes>,
    ready: Notify,
}

impl Outbox {
    /// An empty outbox.
    pub(crate) fn new() -> Arc<Outbox> {
        Arc::new(Outbox::default())
    }

    fn lock(&self) -> MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queued(&self, queued: Queued) -> Queued {
        if queued != Queued::Full {
            self.ready.notify_one();
        }
        queued
    }

    /// Queues a safety command from client `client` (never refused).
    pub(crate) fn push_safety(&self, client: u64, command: Command) -> Queued {
        let mut lanes = self.lock();
        let mine = lanes.safety.iter().filter(|(c, _)| *c == client).count();
        let mut queued = Queued::Waiting;
        lanes.safety.push_back((client, command));
        if mine >= SAFETY_PER_CLIENT {
            let drop_at = superseded_safety(&lanes.safety, Some(client));
            lanes.safety.remove(drop_at);
            queued = Queued::Superseded;
        } else if lanes.safety.len() > SAFETY_QUEUE {
            let drop_at = superseded_safety(&lanes.safety, None);
            lanes.safety.remove(drop_at);
            queued = Queued::Superseded;
        }
        drop(lanes);
        self.queued(queued)
    }

    /// Puts a motion command in its action's slot: it replaces the one waiting there.
    pub(crate) fn offer_motion(&self, motion: MotionCommand) -> Queued {
        let mut lanes = self.lock();
        let slot = lanes
            .motion
            .iter_mut()
            .find(|m| m.command.action == motion.command.action);
        let queued = match slot {
            Some(slot) => {
                *slot = motion;
                Queued::Superseded
            }
            None => {
                lanes.motion.push(motion);
                Queued::Waiting
            }
        };
        drop(lanes);
        self.queued(queued)
    }

    /// Queues a command of the other lane, unless it is full.
    pub(crate) fn push_other(&self, command: Command) -> Queued {
        let mut lanes = self.lock();
        if lanes.other.len() >= OTHER_QUEUE {
            return Queued::Full;
        }
        lanes.other.push_back(command);
        drop(lanes);
        self.queued(Queued::Waiting)
    }

    /// The oldest waiting safety command.
    pub(crate) fn take_safety(&self) -> Option<Command> {
        self.lock().safety.pop_front().map(|(_, c)| c)
    }

    /// The motion command accepted first among those waiting (one per action).
    pub(crate) fn take_motion(&self) -> Option<MotionCommand> {
        let mut lanes = self.lock();
        let first = (0..lanes.motion.len()).min_by_key(|&i| lanes.motion[i].accepted_ns)?;
        Some(lanes.motion.swap_remove(first))
    }

    /// The oldest waiting command of the other lane.
    pub(crate) fn take_other(&self) -> Option<Command> {
        self.lock().other.pop_front()
    }

    /// Waits until something may have been queued since the last call.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }
}

/// Which safety message goes (the newest was just appended): the oldest one of
/// `client` (or of anyone, for `None`) whose kind that sender (or anyone) sent again
/// later, so the newest of each kind stays, in order. With three kinds and more than
/// three messages there always is one; failing that, the oldest.
fn superseded_safety(safety: &VecDeque<(u64, Command)>, client: Option<u64>) -> usize {
    let counts = |i: usize| client.is_none_or(|c| safety[i].0 == c);
    let mut last: Vec<(&str, usize)> = Vec::new();
    for i in (0..safety.len()).filter(|&i| counts(i)) {
        let action = safety[i].1.action.as_str();
        match last.iter_mut().find(|(a, _)| *a == action) {
            Some(entry) => entry.1 = i,
            None => last.push((action, i)),
        }
    }
    let later = |i: usize| last.iter().any(|(a, at)| *a == safety[i].1.action && *at > i);
    let mut candidates = (0..safety.len()).filter(|&i| counts(i));
    let oldest = candidates.clone().next().unwrap_or(0);
    candidates.find(|&i| later(i)).unwrap_or(oldest)
}

/// True if `action` is a motion command (a setpoint: latest wins).
pub(crate) fn is_motion_action(action: &str) -> bool {
    command_kind(action) == CommandKind::Motion
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Protocol;
    use bytes::Bytes;

    fn cmd(action: &str, seq: u32) -> Command {
        Command {
            action: action.to_owned(),
            json: Bytes::from(format!(r#"{{"action":"{action}","cmd_seq":{seq}}}"#)),
        }
    }

    fn motion(action: &str, seq: u32, accepted_ns: u64) -> MotionCommand {
        MotionCommand {
            command: cmd(action, seq),
            accepted_ns,
            generation: 0,
            client: Arc::new(ClientQueue::new(1, Protocol::Sdr)),
        }
    }

    fn drain_safety(o: &Outbox) -> Vec<Bytes> {
        std::iter::from_fn(|| o.take_safety()).map(|c| c.json).collect()
    }

    #[test]
    fn safety_is_never_refused_and_keeps_the_last_word_of_each_kind() {
        let o = Outbox::default();
        // Another client's waiting estop is not touched by this client's flood.
        o.push_safety(2, cmd("estop", 100));
        for seq in 0..20 {
            o.push_safety(1, cmd(if seq % 2 == 0 { "estop" } else { "estop_clear" }, seq));
        }
        o.push_safety(1, cmd("pause", 99));
        let left = drain_safety(&o);
        assert_eq!(left.len(), 1 + SAFETY_PER_CLIENT);
        assert_eq!(left[0], cmd("estop", 100).json);
        // The newest estop (18) and estop_clear (19) stay, in their order, then pause.
        assert!(left.contains(&cmd("estop", 18).json) && left.contains(&cmd("estop_clear", 19).json));
        assert_eq!(left.last(), Some(&cmd("pause", 99).json));
        let at = |b: &Bytes| left.iter().position(|x| x == b);
        assert!(at(&cmd("estop", 18).json) < at(&cmd("estop_clear", 19).json));
    }

    #[test]
    fn all_clients_together_keep_at_most_the_safety_queue() {
        let o = Outbox::default();
        for client in 0..(SAFETY_QUEUE as u64 + 10) {
            o.push_safety(client, cmd("pause", client as u32));
        }
        o.push_safety(1 << 40, cmd("estop", 7));
        let left = drain_safety(&o);
        assert_eq!(left.len(), SAFETY_QUEUE);
        assert_eq!(left.last(), Some(&cmd("estop", 7).json), "the newest always stays");
        assert!(left.contains(&cmd("pause", SAFETY_QUEUE as u32 + 9).json));
    }

    #[test]
    fn motion_keeps_only_the_newest_per_action_and_hands_out_the_oldest_first() {
        let o = Outbox::default();
        assert_eq!(o.offer_motion(motion("set_cmd_vel", 1, 10)), Queued::Waiting);
        assert_eq!(o.offer_motion(motion("set_alpha", 2, 20)), Queued::Waiting);
        assert_eq!(o.offer_motion(motion("set_cmd_vel", 3, 30)), Queued::Superseded);
        let first = o.take_motion().map(|m| m.command.json);
        let second = o.take_motion().map(|m| m.command.json);
        assert_eq!(first, Some(cmd("set_alpha", 2).json));
        assert_eq!(second, Some(cmd("set_cmd_vel", 3).json));
        assert!(o.take_motion().is_none());
    }

    #[test]
    fn the_other_lane_is_bounded_apart_from_the_others() {
        let o = Outbox::default();
        for i in 0..OTHER_QUEUE {
            assert_eq!(o.push_other(cmd("camera", i as u32)), Queued::Waiting);
        }
        assert_eq!(o.push_other(cmd("camera", 0)), Queued::Full);
        assert_eq!(o.push_safety(1, cmd("estop", 1)), Queued::Waiting);
        assert_eq!(o.offer_motion(motion("set_cmd_vel", 1, 1)), Queued::Waiting);
    }

    #[test]
    fn actions_are_sorted_into_lanes() {
        for a in ["estop", "estop_clear", "pause"] {
            assert!(is_safety_action(a) && !is_motion_action(a), "{a}");
        }
        for a in ["set_cmd_vel", "set_alpha", "set_skill"] {
            assert!(is_motion_action(a) && !is_safety_action(a), "{a}");
        }
        assert!(!is_safety_action("reset") && !is_motion_action("reset"));
    }
}
