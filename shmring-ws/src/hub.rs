//! The fan-out hub: hands each message, one shared buffer, to every client's queue
//! ([`crate::client`]), and keeps the GOP cache new clients start from.
//!
//! The fan-out runs on the server's fan-out threads ([`FanoutPool`], `fanout_threads`,
//! one per CPU), shared by every camera's hub: each owns a fixed share of the clients
//! (by id), so a client's frames stay in order, the sockets' send work is spread over the
//! cores, and neither the ring reader nor the NATS task waits for the system calls. With at most [`INLINE_MAX_CLIENTS`] clients and
//! no job in flight on those threads, the publishing thread writes itself: a thread
//! hand-off (a futex wake-up of the fan-out thread, tens of microseconds) costs more than
//! a few non-blocking `writev`s. Waiting for the in-flight jobs to drain first keeps each
//! client's messages in order when the client count crosses the limit.
//!
//! Locking: the hub's client list, GOP cache and telemetry channels sit under one mutex,
//! taken by the publishing thread once per message (to update the cache and take a
//! snapshot of the client list; the fan-out itself runs without it) and by clients
//! joining, subscribing or leaving. Joining copies the GOP cache into the new queue
//! under the hub lock, so a client sees every frame after its GOP, in order, with no gap
//! and no duplicate.
//!
//! The hub knows no protocol: clients join with everything ([`Hub::join`]) or with
//! nothing until they subscribe to a channel ([`Hub::join_subscriber`],
//! [`Hub::subscribe`]); what a client's wire looks like is [`crate::wire`]'s.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::client::{ClientQueue, QueueLimits, VideoStart};
use crate::foxglove::{Channels, IMAGE_CHANNEL_ID, VIDEO_CHANNEL_ID};
use crate::framing::CloseReason;
use crate::keyframe::KeyframeRequests;
use crate::message::{Outgoing, Telemetry, VideoFrame};
use crate::metrics::{DropReason, Metrics, SentTally};
use crate::wire::{announce_channels, Protocol};

mod pool;
mod stages;
#[cfg(test)]
mod tests;

pub(crate) use pool::FanoutPool;
use pool::{Delivery, FanoutJob};

/// Most clients the publishing thread writes to itself instead of handing the message
/// to the fan-out threads.
pub(crate) const INLINE_MAX_CLIENTS: usize = 4;

/// Most frames the GOP cache holds (a longer GOP is not cached: new clients then wait
/// for the next keyframe, which is requested).
pub const GOP_CACHE_MAX_FRAMES: usize = 1024;
/// Most bytes the GOP cache holds.
pub const GOP_CACHE_MAX_BYTES: usize = 64 << 20;

#[derive(Debug, Default)]
struct HubState {
    /// Copy-on-write: the publishing thread takes a snapshot per frame and fans out
    /// without the hub lock; joins and leaves copy the list if a snapshot is in use.
    clients: Arc<Vec<Arc<ClientQueue>>>,
    /// Number of the next publication.
    next_seq: u64,
    /// The telemetry channels (one per JSON subject seen).
    channels: Channels,
    /// The newest keyframe and every frame after it, while they fit the queue limits.
    gop: Vec<VideoFrame>,
    /// The newest keyframe, cached or not (for its picture size), until a discontinuity.
    keyframe: Option<VideoFrame>,
    gop_bytes: usize,
}

/// The fan-out point between the ring reader and the WebSocket clients.
#[derive(Debug)]
pub(crate) struct Hub {
    state: Mutex<HubState>,
    next_id: AtomicU64,
    pub(crate) metrics: Arc<Metrics>,
    /// Its limits, metrics, keyframe requests and jobs in flight, for the fan-out.
    delivery: Arc<Delivery>,
    /// The fan-out threads (shared with the server's other hubs); none: the publishing
    /// thread delivers itself.
    pool: Option<Arc<FanoutPool>>,
}

impl Hub {
    /// A hub with the given per-client limits.
    pub(crate) fn new(limits: QueueLimits, metrics: Arc<Metrics>, keyframes: Arc<KeyframeRequests>) -> Self {
        Hub {
            state: Mutex::new(HubState::default()),
            next_id: AtomicU64::new(1),
            delivery: Arc::new(Delivery {
                limits,
                metrics: metrics.clone(),
                keyframes,
                in_flight: AtomicUsize::new(0),
            }),
            metrics,
            pool: None,
        }
    }

    /// Delivers messages on the threads of `pool` instead of the publishing thread
    /// (except to a few clients, see [`INLINE_MAX_CLIENTS`]).
    pub(crate) fn with_fanout(mut self, pool: Arc<FanoutPool>) -> Self {
        self.pool = Some(pool).filter(|p| p.threads() > 0);
        self
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_client(&self, protocol: Protocol) -> Arc<ClientQueue> {
        Arc::new(ClientQueue::new(self.next_id.fetch_add(1, Ordering::Relaxed), protocol))
    }

    /// Registers a new client that gets everything (video and telemetry). With `burst`
    /// its queue starts with the GOP cache (the newest keyframe and the frames after
    /// it), so its picture appears at once; otherwise, or without a cached keyframe, it
    /// waits for the next one, and one is requested.
    pub(crate) fn join(&self, burst: bool) -> Arc<ClientQueue> {
        let client = self.new_client(Protocol::Sdr);
        let mut hub = self.lock();
        client.set_first_seq(hub.next_seq);
        let start = client.start_video(None, burst, &hub.gop, hub.gop_bytes);
        Arc::make_mut(&mut hub.clients).push(client.clone());
        drop(hub);
        if start == VideoStart::AwaitingKeyframe {
            self.delivery.keyframes.request("a new client waits for a keyframe");
        }
        client.wake();
        client
    }

    /// A client that gets only the channels it subscribes to ([`Hub::subscribe`]), in
    /// the fan-out at once. Its first messages are `greeting` and the announcement of
    /// every telemetry channel its protocol makes (queued under the hub lock, so a
    /// channel announced later comes after them).
    pub(crate) fn join_subscriber(&self, protocol: Protocol, greeting: &[u8]) -> Arc<ClientQueue> {
        self.join_subscriber_with(protocol, greeting, &[])
    }

    /// [`Hub::join_subscriber`], with the camera channels `cameras` `(id, name, jpeg)`
    /// in the first announcement.
    pub(crate) fn join_subscriber_with(
        &self,
        protocol: Protocol,
        greeting: &[u8],
        cameras: &[(u32, &str, bool)],
    ) -> Arc<ClientQueue> {
        let client = self.new_client(protocol);
        let mut hub = self.lock();
        client.push_server_control(greeting);
        if let Some(announcement) = announce_channels(protocol, cameras, &hub.channels.list(), true) {
            client.push_server_control(&announcement);
        }
        client.set_first_seq(hub.next_seq);
        Arc::make_mut(&mut hub.clients).push(client.clone());
        client
    }

    /// Subscribes `client` to `channel` under `subscription`. Video starts from the GOP
    /// cache, like a new client. False if the channel does not exist or the client is
    /// already subscribed to it.
    pub(crate) fn subscribe(&self, client: &ClientQueue, channel: u32, subscription: u32) -> bool {
        let hub = self.lock();
        if channel == IMAGE_CHANNEL_ID {
            // JPEG pictures stand alone: no burst, no keyframe to wait for.
            return client.subscribe_image(subscription);
        }
        if channel != VIDEO_CHANNEL_ID {
            return hub.channels.is_telemetry(channel) && client.subscribe_telemetry(channel, subscription);
        }
        let start = client.start_video(Some(subscription), true, &hub.gop, hub.gop_bytes);
        if start == VideoStart::AlreadySubscribed {
            return false;
        }
        // Publications before this one are in the GOP burst (or too old).
        client.set_first_seq(hub.next_seq);
        drop(hub);
        if start == VideoStart::AwaitingKeyframe {
            self.delivery.keyframes.request("new client, no keyframe cached");
        }
        client.wake();
        true
    }

    /// Ends `client`'s subscription `subscription`; queued video is dropped when it is
    /// the video one, except a message already partly written.
    pub(crate) fn unsubscribe(&self, client: &ClientQueue, subscription: u32) {
        client.unsubscribe(subscription);
    }

    /// Closes every client with `reason` (the server is shutting down).
    pub(crate) fn close_all(&self, reason: &CloseReason) {
        for client in self.lock().clients.iter() {
            client.close(reason.clone());
        }
    }

    /// The per-client queue limits.
    pub(crate) fn limits(&self) -> QueueLimits {
        self.delivery.limits
    }

    /// How many clients (connections and the NATS publisher) it has.
    pub(crate) fn client_count(&self) -> usize {
        self.lock().clients.len()
    }

    /// Removes a client (when its connection ends).
    pub(crate) fn leave(&self, client: &ClientQueue) {
        let mut hub = self.lock();
        if let Some(i) = hub.clients.iter().position(|c| c.id() == client.id()) {
            Arc::make_mut(&mut hub.clients).swap_remove(i);
        }
    }

    /// Hands a video frame to every client and updates the GOP cache.
    pub(crate) fn publish_video(&self, frame: VideoFrame) {
        if let Some((header, payload)) = frame.parts() {
            self.metrics.frames_broadcast.inc();
            self.metrics.bytes_broadcast.add(payload.len() as u64);
            self.metrics
                .last_codec
                .store(u64::from(header.codec.get()), Ordering::Relaxed);
        }
        let mut hub = self.lock();
        let len = frame.message.len();
        // The previous GOP (about a hundred messages, megabytes) is freed after this
        // frame is delivered, not before: a keyframe reaches the sockets without waiting
        // for the allocator.
        let mut retired = Vec::new();
        if frame.keyframe {
            retired = retire_gop(&mut hub);
            hub.keyframe = Some(frame.clone());
        }
        // Cache only a GOP that starts at a keyframe and fits the cache limits.
        let fits = hub.gop.len() < GOP_CACHE_MAX_FRAMES && hub.gop_bytes + len <= GOP_CACHE_MAX_BYTES;
        if (frame.keyframe || !hub.gop.is_empty()) && fits {
            hub.gop_bytes += len;
            hub.gop.push(frame.clone());
        } else if !fits {
            retired = retire_gop(&mut hub);
        }
        self.push_to_all(hub, Outgoing::Video(frame));
        drop(retired);
    }

    /// The picture size of the newest keyframe (since the last discontinuity), if its
    /// bytes tell it ([`crate::picture_size`]); parsed when asked, nothing per frame.
    pub(crate) fn picture_size(&self) -> Option<(u32, u32)> {
        let keyframe = self.lock().keyframe.clone()?;
        let (header, payload) = keyframe.parts()?;
        crate::picture_size::picture_size(shmring_core::Codec(header.codec.get()), payload)
    }

    /// Hands a telemetry message to every client.
    pub(crate) fn publish_telemetry(&self, message: Bytes) {
        let Some((subject, payload_at)) = crate::protocol::telemetry_subject(&message) else {
            self.metrics.dropped(DropReason::Telemetry, 1);
            return;
        };
        let json = serde_json::from_slice::<serde_json::Value>(&message[payload_at..]).is_ok();
        let mut hub = self.lock();
        let (channel, new) = hub.channels.channel_of(subject, json);
        if let (Some(channel), true) = (channel, new) {
            for client in hub.clients.iter() {
                if let Some(announcement) = announce_channels(client.protocol(), &[], &[(channel, subject)], false) {
                    client.push_server_control(&announcement);
                }
            }
        }
        let item = Outgoing::Telemetry(Telemetry {
            channel,
            payload_at,
            log_ns: crate::foxglove::wall_clock_ns(),
            message,
        });
        self.push_to_all(hub, item);
    }

    /// Numbers `item` and delivers it to every client (a snapshot of the list: the hub
    /// lock is released first), on the fan-out threads if there are any.
    fn push_to_all(&self, mut hub: MutexGuard<'_, HubState>, item: Outgoing) {
        let job = FanoutJob {
            seq: hub.next_seq,
            clients: hub.clients.clone(),
            item,
            queued_ns: if stages::enabled() {
                shmring_core::monotonic_ns()
            } else {
                0
            },
            to: self.delivery.clone(),
        };
        hub.next_seq += 1;
        drop(hub);
        // SYNC POINT (in flight): Acquire pairs with the fan-out threads' Release
        // decrement: no job of this hub in flight means every earlier one was delivered.
        let inline = job.clients.len() <= INLINE_MAX_CLIENTS && self.delivery.in_flight.load(Ordering::Acquire) == 0;
        match self.pool.as_ref().filter(|_| !inline) {
            Some(pool) => pool.send(job),
            None => deliver(std::slice::from_ref(&job), (0, 1), &self.delivery),
        }
    }

    /// The stream was interrupted (a new writer, a replaced ring): forget the GOP cache
    /// and make every client wait for the next keyframe, so no decoder is fed a frame
    /// whose reference belongs to another stream.
    pub(crate) fn discontinuity(&self) {
        let mut hub = self.lock();
        hub.gop.clear();
        hub.gop_bytes = 0;
        hub.keyframe = None;
        for client in hub.clients.iter() {
            client.await_keyframe();
        }
        drop(hub);
        self.delivery.keyframes.request("stream discontinuity");
    }
}

/// Empties the GOP cache, returning what it held (for the caller to drop later, outside
/// the hub lock).
fn retire_gop(hub: &mut HubState) -> Vec<VideoFrame> {
    hub.gop_bytes = 0;
    let capacity = hub.gop.len();
    std::mem::replace(&mut hub.gop, Vec::with_capacity(capacity))
}

/// Delivers `jobs` (in order, all of the hub of `to`) to the clients of the newest
/// snapshot that belong to fan-out thread `shard.0` of `shard.1`, each client's share in
/// one go, then asks the producer for a keyframe if a client overflowed.
fn deliver(jobs: &[FanoutJob], shard: (usize, usize), to: &Delivery) {
    let Delivery {
        limits,
        metrics,
        keyframes,
        ..
    } = to;
    let Some(newest) = jobs.last() else { return };
    let (k, n) = (shard.0 as u64, shard.1.max(1) as u64);
    let mut want_keyframe = false;
    let mut tally = SentTally::default();
    let mut scratch = Vec::with_capacity(jobs.len());
    let picked_ns = if stages::enabled() {
        shmring_core::monotonic_ns()
    } else {
        0
    };
    // Video only: the clients none of it is for (Foxglove connections watching other
    // cameras, or only telemetry) are passed by without their locks.
    let video_only = jobs.iter().all(|j| matches!(j.item, Outgoing::Video(_)));
    // A client missing from the newest snapshot has left: it gets nothing more.
    for client in newest.clients.iter().filter(|c| c.id() % n == k) {
        if video_only && !client.takes_pictures() {
            continue;
        }
        let items = jobs
            .iter()
            .filter(|j| matches!(j.item, Outgoing::Telemetry(_)) || j.seq >= client.first_seq())
            .map(|j| &j.item);
        let pushed = client.push_many(items, limits, metrics, &mut scratch);
        want_keyframe |= pushed.want_keyframe;
        if pushed.sent_directly > 0 {
            let now = shmring_core::monotonic_ns();
            for item in &scratch[..pushed.sent_directly as usize] {
                tally.sent(item, now);
            }
            if picked_ns > 0 {
                record_stages(jobs, &scratch[..pushed.sent_directly as usize], picked_ns, now);
            }
        }
    }
    tally.flush(metrics, true);
    if want_keyframe {
        keyframes.request("a client fell behind");
    }
}

/// Stage times of the video frames in `sent` (stage times on).
fn record_stages(jobs: &[FanoutJob], sent: &[&Outgoing], picked_ns: u64, written_ns: u64) {
    for item in sent {
        let (Outgoing::Video(frame), Some(job)) = (item, jobs.iter().find(|j| std::ptr::eq(&j.item, *item))) else {
            continue;
        };
        stages::record(stages::Stamps {
            commit: frame.commit_ns.unwrap_or(0),
            read: frame.read_ns,
            queued: job.queued_ns,
            picked: picked_ns,
            written: written_ns,
        });
    }
}
