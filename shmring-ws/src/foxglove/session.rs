//! A Foxglove session: the channel registry (video, and one `json` channel per telemetry
//! subject), a client's subscriptions, and its requests (`subscribe`, `unsubscribe`).
//! The connection applies requests through [`Session`], whose calls the hub answers
//! without knowing the protocol.

use shmring_core::Codec;

use super::encode::{STATUS_ERROR, STATUS_WARNING};
use crate::message::Outgoing;

/// The id of the image channel (`/image`, `foxglove.CompressedImage`): the stream's
/// JPEG frames (codec 3, SDR_OS's fallback encoder).
pub(crate) const IMAGE_CHANNEL_ID: u32 = 2;

/// The id of the video channel in `advertise`.
pub(crate) const VIDEO_CHANNEL_ID: u32 = 1;
/// The first channel id of telemetry subjects (one `json` channel per subject, in the
/// order the subjects were first seen).
pub(super) const FIRST_TELEMETRY_CHANNEL: u32 = 3;
/// Most telemetry subjects offered as channels; later ones reach SDR clients only.
pub(super) const MAX_TELEMETRY_CHANNELS: usize = 1024;

/// The telemetry channels: one per subject whose payloads are JSON, numbered from
/// [`FIRST_TELEMETRY_CHANNEL`] in the order the subjects were first seen.
#[derive(Debug, Default)]
pub(crate) struct Channels {
    subjects: Vec<String>,
}

impl Channels {
    /// The channel of `subject` (`None` if its payload is not JSON, or no channel is
    /// left), and whether it was just created.
    pub(crate) fn channel_of(&mut self, subject: &str, json: bool) -> (Option<u32>, bool) {
        if !json {
            return (None, false);
        }
        match self.subjects.iter().position(|s| s == subject) {
            Some(i) => (Some(FIRST_TELEMETRY_CHANNEL + i as u32), false),
            None if self.subjects.len() < MAX_TELEMETRY_CHANNELS => {
                self.subjects.push(subject.to_owned());
                (Some(FIRST_TELEMETRY_CHANNEL + self.subjects.len() as u32 - 1), true)
            }
            None => (None, false),
        }
    }

    /// Every telemetry channel, `(id, subject)`.
    pub(crate) fn list(&self) -> Vec<(u32, &str)> {
        self.subjects
            .iter()
            .enumerate()
            .map(|(i, subject)| (FIRST_TELEMETRY_CHANNEL + i as u32, subject.as_str()))
            .collect()
    }

    /// True if `channel` is a telemetry channel.
    pub(crate) fn is_telemetry(&self, channel: u32) -> bool {
        channel
            .checked_sub(FIRST_TELEMETRY_CHANNEL)
            .is_some_and(|i| (i as usize) < self.subjects.len())
    }
}

/// A Foxglove client's subscriptions: the channels it gets, each under its own
/// subscription id (SDR_OS clients get everything and have none).
#[derive(Clone, Debug, Default)]
pub(crate) struct Subscriptions {
    /// The subscription id of the video channel.
    pub(crate) video: Option<u32>,
    /// The subscription id of the image channel (JPEG frames).
    pub(crate) image: Option<u32>,
    /// (channel, subscription id) of telemetry channels.
    pub(crate) telemetry: Vec<(u32, u32)>,
}

impl Subscriptions {
    /// The subscription `item` goes out under, if any.
    pub(crate) fn for_item(&self, item: &Outgoing) -> Option<u32> {
        match item {
            Outgoing::Video(f) if f.codec() == Some(Codec::JPEG) => self.image,
            Outgoing::Video(_) => self.video,
            Outgoing::Telemetry(t) => {
                let channel = t.channel?;
                self.telemetry.iter().find(|(c, _)| *c == channel).map(|(_, s)| *s)
            }
        }
    }
}

/// What a Foxglove client's requests act on (its connection).
pub(crate) trait Session {
    /// Subscribes the client to `channel` under `subscription`; false if the channel
    /// does not exist or the client is already subscribed to it.
    fn subscribe(&self, channel: u32, subscription: u32) -> bool;
    /// Ends the client's subscription `subscription`.
    fn unsubscribe(&self, subscription: u32);
    /// Sends the client a `status` message (level 0 info, 1 warning, 2 error).
    fn status(&self, level: u8, message: &str);
    /// Counts a request that was not understood.
    fn malformed(&self);
    /// The client advertised channel `id` on `topic` to publish on (`clientPublish`):
    /// false if the topic is not one the server takes commands on.
    fn client_advertise(&self, id: u32, topic: &str, encoding: &str) -> bool;
    /// The client withdrew its channel `id`.
    fn client_unadvertise(&self, id: u32);
}

/// Applies a Foxglove client's JSON request: subscribe or unsubscribe. Anything else is
/// counted as malformed and answered with a status message.
pub(crate) fn handle_request(text: &str, session: &impl Session) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        session.malformed();
        session.status(STATUS_ERROR, "not a JSON message");
        return;
    };
    match v.get("op").and_then(|o| o.as_str()) {
        Some("subscribe") => {
            for sub in v.get("subscriptions").and_then(|s| s.as_array()).into_iter().flatten() {
                let id = sub
                    .get("id")
                    .and_then(|i| i.as_u64())
                    .and_then(|i| u32::try_from(i).ok());
                let channel = sub.get("channelId").and_then(|c| c.as_u64());
                match (id, channel.and_then(|c| u32::try_from(c).ok())) {
                    (Some(id), Some(c)) => {
                        if !session.subscribe(c, id) {
                            session.status(STATUS_WARNING, &format!("no channel {c}, or already subscribed to it"));
                        }
                    }
                    _ => {
                        session.malformed();
                        session.status(STATUS_ERROR, "subscription without a numeric id and channelId");
                    }
                }
            }
        }
        Some("unsubscribe") => {
            let ids = v.get("subscriptionIds").and_then(|s| s.as_array());
            for id in ids.into_iter().flatten().filter_map(|i| i.as_u64()) {
                if let Ok(id) = u32::try_from(id) {
                    session.unsubscribe(id);
                }
            }
        }
        Some("advertise") => {
            for ch in v.get("channels").and_then(|c| c.as_array()).into_iter().flatten() {
                let id = ch
                    .get("id")
                    .and_then(|i| i.as_u64())
                    .and_then(|i| u32::try_from(i).ok());
                let topic = ch.get("topic").and_then(|t| t.as_str());
                let encoding = ch.get("encoding").and_then(|e| e.as_str()).unwrap_or("");
                match (id, topic) {
                    (Some(id), Some(topic)) => {
                        if !session.client_advertise(id, topic, encoding) {
                            session.status(
                                STATUS_WARNING,
                                &format!(
                                    "cannot publish on {topic} ({encoding}): publish json on command.genesis.<action> \
                                     or a Twist on /cmd_vel"
                                ),
                            );
                        }
                    }
                    _ => {
                        session.malformed();
                        session.status(STATUS_ERROR, "client channel without a numeric id and a topic");
                    }
                }
            }
        }
        Some("unadvertise") => {
            let ids = v.get("channelIds").and_then(|s| s.as_array());
            for id in ids.into_iter().flatten().filter_map(|i| i.as_u64()) {
                if let Ok(id) = u32::try_from(id) {
                    session.client_unadvertise(id);
                }
            }
        }
        op => {
            session.malformed();
            session.status(STATUS_WARNING, &format!("unsupported op {}", op.unwrap_or("(none)")));
        }
    }
}

/// Opcode of a client Message Data frame (`clientPublish`):
/// `[0x01][u32 LE channel id][payload]`.
pub(crate) const OP_CLIENT_MESSAGE_DATA: u8 = 0x01;

/// What a client channel publishes: the command action its topic names
/// (`command.genesis.<action>`, with or without a leading `/`), or `set_cmd_vel` for a
/// `geometry_msgs/Twist` on `/cmd_vel` (Foxglove's Teleop panel). `None`: not a topic
/// the server takes commands on (JSON only).
pub(crate) fn client_topic_action(topic: &str, encoding: &str) -> Option<ClientTopic> {
    if encoding != "json" {
        return None;
    }
    let topic = topic.strip_prefix('/').unwrap_or(topic);
    if topic == "cmd_vel" {
        return Some(ClientTopic::Twist);
    }
    let action = topic.strip_prefix(crate::protocol::COMMAND_SUBJECT_PREFIX)?;
    let valid = !action.is_empty()
        && action.len() <= crate::protocol::MAX_ACTION_LEN
        && action.bytes().all(|c| c.is_ascii_lowercase() || c == b'_');
    valid.then(|| ClientTopic::Action(action.to_owned()))
}

/// A client channel's meaning (see [`client_topic_action`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ClientTopic {
    /// JSON `data` for this command action.
    Action(String),
    /// A `geometry_msgs/Twist` in JSON: becomes `set_cmd_vel`.
    Twist,
}

impl ClientTopic {
    /// The SDR_OS command (`{"action","cmd_seq","data"}`) a message on this channel
    /// stands for, or `None` if the payload is not a JSON object of the right shape.
    pub(crate) fn command(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
        value.as_object()?;
        let (action, data) = match self {
            ClientTopic::Action(action) => (action.as_str(), value),
            ClientTopic::Twist => {
                let get = |part: &str, axis: &str| value.get(part).and_then(|p| p.get(axis)).and_then(|v| v.as_f64());
                let data = serde_json::json!({
                    "linear_x": get("linear", "x")?,
                    "linear_y": get("linear", "y").unwrap_or(0.0),
                    "angular_z": get("angular", "z")?,
                });
                ("set_cmd_vel", data)
            }
        };
        serde_json::to_vec(&serde_json::json!({"action": action, "cmd_seq": 0, "data": data})).ok()
    }
}

#[cfg(test)]
mod client_publish_tests {
    use super::*;

    #[test]
    fn topics_name_commands() {
        assert_eq!(client_topic_action("/cmd_vel", "json"), Some(ClientTopic::Twist));
        assert_eq!(
            client_topic_action("command.genesis.reset", "json"),
            Some(ClientTopic::Action("reset".into()))
        );
        assert_eq!(client_topic_action("/command.genesis.Reset", "json"), None);
        assert_eq!(client_topic_action("/cmd_vel", "protobuf"), None);
        assert_eq!(client_topic_action("/tf", "json"), None);
    }

    #[test]
    fn a_twist_becomes_set_cmd_vel() {
        let cmd = ClientTopic::Twist
            .command(br#"{"linear":{"x":0.5,"y":0,"z":0},"angular":{"x":0,"y":0,"z":-0.25}}"#)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&cmd).unwrap();
        assert_eq!(v["action"], "set_cmd_vel");
        assert_eq!(v["data"]["linear_x"], 0.5);
        assert_eq!(v["data"]["angular_z"], -0.25);
        assert!(ClientTopic::Twist.command(b"[1]").is_none());
        assert!(ClientTopic::Twist.command(br#"{"linear":{}}"#).is_none());
    }
}
