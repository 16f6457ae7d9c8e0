//! A Foxglove session: the channel registry (video, and one `json` channel per telemetry
//! subject), a client's subscriptions, and its requests (`subscribe`, `unsubscribe`).
//! The connection applies requests through [`Session`], whose calls the hub answers
//! without knowing the protocol.

use crate::message::Outgoing;

/// The id of the video channel in `advertise`.
pub const VIDEO_CHANNEL_ID: u32 = 1;
/// The first channel id of telemetry subjects (one `json` channel per subject, in the
/// order the subjects were first seen).
pub const FIRST_TELEMETRY_CHANNEL: u32 = 2;
/// Most telemetry subjects offered as channels; later ones reach SDR clients only.
pub const MAX_TELEMETRY_CHANNELS: usize = 1024;

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
    /// (channel, subscription id) of telemetry channels.
    pub(crate) telemetry: Vec<(u32, u32)>,
}

impl Subscriptions {
    /// The subscription `item` goes out under, if any.
    pub(crate) fn for_item(&self, item: &Outgoing) -> Option<u32> {
        match item {
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
}

/// Applies a Foxglove client's JSON request: subscribe or unsubscribe. Anything else is
/// counted as malformed and answered with a status message.
pub(crate) fn handle_request(text: &str, session: &impl Session) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        session.malformed();
        session.status(2, "not a JSON message");
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
                            session.status(1, &format!("no channel {c}, or already subscribed to it"));
                        }
                    }
                    _ => {
                        session.malformed();
                        session.status(2, "subscription without a numeric id and channelId");
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
        op => {
            session.malformed();
            session.status(1, &format!("unsupported op {}", op.unwrap_or("(none)")));
        }
    }
}
