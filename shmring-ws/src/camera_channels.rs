//! A Foxglove connection's camera channels: one `/camera/<name>` channel per camera of
//! the registry, advertised when the client connects (in its first `advertise`, with
//! `/video`) and when a camera comes, and `unadvertise`d when it goes ([`advertise`]);
//! a client subscribes to any subset. Served when the server names several cameras
//! (one ring alone is served as before, on `/video` and `/image` only).
//!
//! Each subscribed camera channel is a relay: a queue joined to that camera's hub like
//! any subscriber (so it starts at that camera's keyframe, from its GOP cache, and after
//! a gap or an overflow skips to that camera's next keyframe, asking that camera for one),
//! and a task that moves what the queue admitted into the connection's own queue,
//! tagged with the subscription id ([`ClientQueue::push_camera`]). The connection's
//! writer task is the only one that writes those frames to the socket, so messages of
//! several cameras never interleave on it. A camera the client did not subscribe to has
//! no relay: its fan-out never sees this connection, and costs it nothing per frame.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::cameras::{CameraChannel, Cameras};
use crate::client::{Batch, ClientQueue, QueueLimits, Relayed};
use crate::foxglove::{self, IMAGE_CHANNEL_ID, STATUS_WARNING, VIDEO_CHANNEL_ID};
use crate::framing::text_frame;
use crate::hub::Hub;
use crate::message::Outgoing;
use crate::wire::Protocol;

/// One subscribed camera channel: the camera's hub, the relay queue joined to it, and
/// the task that moves its frames to the connection. Dropping it ends all three.
struct Relay {
    channel: u32,
    hub: Arc<Hub>,
    queue: Arc<ClientQueue>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.queue.finish();
        self.hub.leave(&self.queue);
    }
}

/// The camera channels one connection subscribed to, by subscription id.
#[derive(Default)]
pub(crate) struct CameraRelays {
    relays: RefCell<HashMap<u32, Relay>>,
}

impl CameraRelays {
    /// Subscribes `client` to camera channel `channel` under `subscription`: false if no
    /// camera is served on it, the client already subscribed to it, or the id is taken.
    pub(crate) fn subscribe(
        &self,
        client: &Arc<ClientQueue>,
        cameras: &Cameras,
        channel: u32,
        subscription: u32,
    ) -> bool {
        let Some(camera) = cameras.by_channel(channel) else {
            return false;
        };
        let mut relays = self.relays.borrow_mut();
        if relays.values().any(|r| r.channel == channel) || !client.subscribe_camera(subscription) {
            return false;
        }
        let hub = camera.feed.hub.clone();
        let queue = hub.join_subscriber(Protocol::Foxglove, &[]);
        // Both picture channels under the one id: JPEG frames and video frames alike.
        hub.subscribe(&queue, IMAGE_CHANNEL_ID, subscription);
        hub.subscribe(&queue, VIDEO_CHANNEL_ID, subscription);
        let task = tokio::spawn(forward(queue.clone(), client.clone(), subscription, hub.limits()));
        relays.insert(
            subscription,
            Relay {
                channel,
                hub,
                queue,
                task,
            },
        );
        true
    }

    /// Ends camera subscription `subscription`; false if it is not one.
    pub(crate) fn unsubscribe(&self, client: &ClientQueue, subscription: u32) -> bool {
        let relay = self.relays.borrow_mut().remove(&subscription);
        if relay.is_some() {
            client.unsubscribe(subscription);
        }
        relay.is_some()
    }
}

/// Moves the frames `relay` admitted to `client` under `subscription`, until either
/// ends; a loss on the client's side sends the relay to its camera's next keyframe.
async fn forward(relay: Arc<ClientQueue>, client: Arc<ClientQueue>, subscription: u32, limits: QueueLimits) {
    let mut batch = Batch::default();
    loop {
        batch.clear();
        relay.next_batch(&mut batch).await;
        let frames = batch.items.drain(..).filter_map(|item| match item {
            Outgoing::Video(frame) => Some(frame),
            _ => None,
        });
        match client.push_camera(subscription, frames, &limits) {
            Relayed::Queued => {}
            Relayed::Resync => relay.await_keyframe(),
            Relayed::Ended => return,
        }
        if let Some(reason) = &batch.close {
            let message = format!("subscription {subscription} ended: {}", reason.reason);
            let _ = client.push_control(&text_frame(&foxglove::status(STATUS_WARNING, &message)));
            return;
        }
        if batch.end {
            return;
        }
    }
}

/// The camera channels a Foxglove client is told about when it joins (in its first
/// `advertise`, with `/video`), as `(id, name, jpeg)`.
pub(crate) fn joining(shown: &[CameraChannel]) -> Vec<(u32, &str, bool)> {
    shown.iter().map(|c| (c.id, c.name.as_str(), c.jpeg)).collect()
}

/// Advertises to `client` the cameras' channels that come after `shown` (those it was
/// told about when it joined), and unadvertises those that go; never returns.
pub(crate) async fn advertise(client: &ClientQueue, cameras: &Cameras, mut shown: Vec<CameraChannel>) {
    let mut changes = cameras.changes();
    loop {
        changes.borrow_and_update();
        let now = cameras.channels();
        let gone: Vec<u32> = shown
            .iter()
            .filter(|c| !now.iter().any(|n| n.id == c.id))
            .map(|c| c.id)
            .collect();
        let new: Vec<(u32, &str, bool)> = now
            .iter()
            .filter(|n| !shown.iter().any(|c| c.id == n.id))
            .map(|c| (c.id, c.name.as_str(), c.jpeg))
            .collect();
        if !gone.is_empty() {
            client.push_server_control(&text_frame(&foxglove::unadvertise(&gone)));
        }
        if !new.is_empty() {
            client.push_server_control(&text_frame(&foxglove::advertise_cameras(&new)));
        }
        shown = now;
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}
