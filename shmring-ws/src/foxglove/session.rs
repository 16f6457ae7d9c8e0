//! A Foxglove session: the channel registry (video, and one `json` channel per telemetry
//! subject), a client's subscriptions, and its requests (`subscribe`, `unsubscribe`).
//! The connection applies requests through [`Session`], whose calls the hub answers
//! without knowing the protocol.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
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
    /// Subscription ids of `/camera/<name>` channels.
    pub(crate) cameras: Vec<u32>,
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
            Outgoing::Camera(sub, _) => self.cameras.contains(sub).then_some(*sub),
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

/// A Foxglove client's JSON request, by its `op`. Unknown fields are ignored; a list
/// that is missing is empty. Each list element is judged alone ([`Lenient`]), so one bad
/// entry does not cost the others.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum ClientRequest {
    /// `{"op":"subscribe","subscriptions":[{"id","channelId"}]}`.
    Subscribe {
        #[serde(default)]
        subscriptions: Vec<Lenient<Subscription>>,
    },
    /// `{"op":"unsubscribe","subscriptionIds":[id]}`.
    Unsubscribe {
        #[serde(default, rename = "subscriptionIds")]
        subscription_ids: Vec<Lenient<u32>>,
    },
    /// `{"op":"advertise","channels":[{"id","topic","encoding"}]}` (`clientPublish`).
    Advertise {
        #[serde(default)]
        channels: Vec<Lenient<ClientChannel>>,
    },
    /// `{"op":"unadvertise","channelIds":[id]}`.
    Unadvertise {
        #[serde(default, rename = "channelIds")]
        channel_ids: Vec<Lenient<u32>>,
    },
}

/// The ops [`ClientRequest`] knows.
const KNOWN_OPS: [&str; 4] = ["subscribe", "unsubscribe", "advertise", "unadvertise"];

/// Just the `op` of a request, to name it when it is not one the server takes.
#[derive(Deserialize)]
struct RequestOp {
    op: Option<serde_json::Value>,
}

/// One entry of `subscribe`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscription {
    id: u32,
    channel_id: u32,
}

/// One channel of `advertise`.
#[derive(Debug, Deserialize)]
struct ClientChannel {
    id: u32,
    topic: String,
    #[serde(default)]
    encoding: String,
}

/// A list element that is kept (`Some`) only if it has the shape of `T`.
#[derive(Debug)]
struct Lenient<T>(Option<T>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Ok(Lenient(T::deserialize(value).ok()))
    }
}

/// The request in `text`, or the status level and message that say why it is not one.
fn parse_request(text: &str) -> Result<ClientRequest, (u8, String)> {
    let error = match serde_json::from_str::<ClientRequest>(text) {
        Ok(request) => return Ok(request),
        Err(e) => e,
    };
    let Ok(RequestOp { op }) = serde_json::from_str::<RequestOp>(text) else {
        return Err((STATUS_ERROR, "not a JSON message".to_owned()));
    };
    match op.as_ref().and_then(|op| op.as_str()) {
        Some(op) if KNOWN_OPS.contains(&op) => Err((STATUS_ERROR, format!("malformed {op}: {error}"))),
        Some(op) => Err((STATUS_WARNING, format!("unsupported op {op}"))),
        None => Err((STATUS_WARNING, "unsupported op (none)".to_owned())),
    }
}

/// Applies a Foxglove client's JSON request: (un)subscribe, (un)advertise a channel to
/// publish on. Anything else is counted as malformed and answered with a status message.
pub(crate) fn handle_request(text: &str, session: &impl Session) {
    match parse_request(text) {
        Ok(ClientRequest::Subscribe { subscriptions }) => on_subscribe(subscriptions, session),
        Ok(ClientRequest::Unsubscribe { subscription_ids }) => {
            subscription_ids
                .into_iter()
                .filter_map(|id| id.0)
                .for_each(|id| session.unsubscribe(id));
        }
        Ok(ClientRequest::Advertise { channels }) => on_advertise(channels, session),
        Ok(ClientRequest::Unadvertise { channel_ids }) => {
            channel_ids
                .into_iter()
                .filter_map(|id| id.0)
                .for_each(|id| session.client_unadvertise(id));
        }
        Err((level, message)) => {
            session.malformed();
            session.status(level, &message);
        }
    }
}

/// `subscribe`: each subscription, or a status saying why not.
fn on_subscribe(subscriptions: Vec<Lenient<Subscription>>, session: &impl Session) {
    for sub in subscriptions {
        match sub.0 {
            Some(Subscription { id, channel_id }) => {
                if !session.subscribe(channel_id, id) {
                    session.status(
                        STATUS_WARNING,
                        &format!("no channel {channel_id}, or already subscribed to it"),
                    );
                }
            }
            None => {
                session.malformed();
                session.status(STATUS_ERROR, "subscription without a numeric id and channelId");
            }
        }
    }
}

/// `advertise`: each client channel, or a status saying why the server takes nothing on it.
fn on_advertise(channels: Vec<Lenient<ClientChannel>>, session: &impl Session) {
    for channel in channels {
        match channel.0 {
            Some(ClientChannel { id, topic, encoding }) => {
                if !session.client_advertise(id, &topic, &encoding) {
                    session.status(
                        STATUS_WARNING,
                        &format!(
                            "cannot publish on {topic} ({encoding}): publish json on command.genesis.<action> \
                             or a Twist on /cmd_vel"
                        ),
                    );
                }
            }
            None => {
                session.malformed();
                session.status(STATUS_ERROR, "client channel without a numeric id and a topic");
            }
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

/// The parts of a `geometry_msgs/Twist` a ground robot uses: `linear.x` and
/// `angular.z` are required, `linear.y` is 0 when absent.
#[derive(Deserialize)]
struct Twist {
    linear: Linear,
    angular: Angular,
}

/// `Twist.linear`.
#[derive(Deserialize)]
struct Linear {
    x: f64,
    #[serde(default)]
    y: f64,
}

/// `Twist.angular`.
#[derive(Deserialize)]
struct Angular {
    z: f64,
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
                let twist = Twist::deserialize(&value).ok()?;
                let data = serde_json::json!({
                    "linear_x": twist.linear.x,
                    "linear_y": twist.linear.y,
                    "angular_z": twist.angular.z,
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

#[cfg(test)]
mod request_tests {
    use std::cell::RefCell;

    use super::*;

    /// A session that records what a request did to it.
    #[derive(Default)]
    struct Recorder(RefCell<Vec<String>>);

    impl Session for Recorder {
        fn subscribe(&self, channel: u32, subscription: u32) -> bool {
            self.0
                .borrow_mut()
                .push(format!("subscribe {channel} as {subscription}"));
            channel != 99
        }
        fn unsubscribe(&self, subscription: u32) {
            self.0.borrow_mut().push(format!("unsubscribe {subscription}"));
        }
        fn status(&self, level: u8, message: &str) {
            self.0.borrow_mut().push(format!("status {level}: {message}"));
        }
        fn malformed(&self) {
            self.0.borrow_mut().push("malformed".into());
        }
        fn client_advertise(&self, id: u32, topic: &str, encoding: &str) -> bool {
            self.0.borrow_mut().push(format!("advertise {id} {topic} {encoding}"));
            topic == "/cmd_vel"
        }
        fn client_unadvertise(&self, id: u32) {
            self.0.borrow_mut().push(format!("unadvertise {id}"));
        }
    }

    fn run(text: &str) -> Vec<String> {
        let session = Recorder::default();
        handle_request(text, &session);
        session.0.into_inner()
    }

    #[test]
    fn each_subscription_is_judged_alone() {
        let done =
            run(r#"{"op":"subscribe","subscriptions":[{"id":1,"channelId":2},{"id":"x"},{"id":3,"channelId":99}]}"#);
        assert_eq!(
            done,
            [
                "subscribe 2 as 1",
                "malformed",
                "status 2: subscription without a numeric id and channelId",
                "subscribe 99 as 3",
                "status 1: no channel 99, or already subscribed to it",
            ]
        );
    }

    #[test]
    fn ids_that_are_not_u32_are_skipped_when_unsubscribing() {
        let done = run(r#"{"op":"unsubscribe","subscriptionIds":[1,-1,"x",4294967296,2]}"#);
        assert_eq!(done, ["unsubscribe 1", "unsubscribe 2"]);
        assert_eq!(run(r#"{"op":"unadvertise","channelIds":[7,null]}"#), ["unadvertise 7"]);
    }

    #[test]
    fn client_channels_are_advertised_or_refused_with_a_reason() {
        let done = run(
            r#"{"op":"advertise","channels":[{"id":1,"topic":"/cmd_vel","encoding":"json","schemaName":"x"},{"id":2,"topic":"/tf"},{"topic":"/a"}]}"#,
        );
        assert_eq!(done[0], "advertise 1 /cmd_vel json");
        assert_eq!(done[1], "advertise 2 /tf ");
        assert!(done[2].starts_with("status 1: cannot publish on /tf ()"), "{done:?}");
        assert_eq!(
            done[3..],
            ["malformed", "status 2: client channel without a numeric id and a topic"]
        );
    }

    #[test]
    fn what_is_not_a_request_is_answered_with_a_status() {
        assert_eq!(run("{nope"), ["malformed", "status 2: not a JSON message"]);
        assert_eq!(run("[1]"), ["malformed", "status 1: unsupported op (none)"]);
        assert_eq!(
            run(r#"{"op":"getParameters"}"#),
            ["malformed", "status 1: unsupported op getParameters"]
        );
        assert_eq!(run(r#"{"id":1}"#), ["malformed", "status 1: unsupported op (none)"]);
        let done = run(r#"{"op":"subscribe","subscriptions":5}"#);
        assert_eq!(done[0], "malformed");
        assert!(
            done[1].starts_with("status 2: malformed subscribe: invalid type"),
            "{done:?}"
        );
    }

    #[test]
    fn a_request_without_its_list_does_nothing() {
        assert!(run(r#"{"op":"subscribe"}"#).is_empty());
        assert!(run(r#"{"op":"unadvertise"}"#).is_empty());
    }

    #[test]
    fn a_twist_needs_linear_x_and_angular_z() {
        let full = ClientTopic::Twist.command(br#"{"linear":{"x":1,"y":0.5,"z":0},"angular":{"z":-0.25}}"#);
        let full: serde_json::Value = serde_json::from_slice(&full.unwrap()).unwrap();
        assert_eq!(
            full["data"],
            serde_json::json!({"linear_x": 1.0, "linear_y": 0.5, "angular_z": -0.25})
        );
        let no_y = ClientTopic::Twist
            .command(br#"{"linear":{"x":1},"angular":{"z":0}}"#)
            .unwrap();
        let no_y: serde_json::Value = serde_json::from_slice(&no_y).unwrap();
        assert_eq!(no_y["data"]["linear_y"], 0.0);
        assert!(ClientTopic::Twist
            .command(br#"{"linear":{"y":1},"angular":{"z":0}}"#)
            .is_none());
    }
}
