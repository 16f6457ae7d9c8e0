//! One client's queue, shared between the fan-out (which pushes messages) and the
//! client's writer task (which takes what could not be written at once).
//!
//! Delivery: a client whose queue is empty and whose writer task is idle (it keeps up,
//! the common case) gets the messages written straight to its socket by the pushing
//! thread, one non-blocking `writev` of (per-client head, shared body) pairs: no task
//! wake-up, no timer, no per-client copy. Only when the socket cannot take everything
//! (or a backlog exists) does the rest go to the queue, and the writer task is woken to
//! finish it asynchronously.
//!
//! The keyframe wait: a client that overflows its limits (messages or bytes) drops what waits and
//! skips delta frames until the next keyframe, so its decoder never sees a frame whose
//! reference it lacks; one that waits too long for a keyframe is closed. A message
//! already partly on the socket is never dropped: its rest must follow.
//!
//! The queue's mutex is held during a direct write, so the bytes of two messages never
//! interleave on a socket.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::foxglove::Subscriptions;
use crate::framing::{close_code, CloseReason};
use crate::message::{Outgoing, VideoFrame};
use crate::metrics::{DropReason, Metrics};
use crate::wire::{wire, Head, Protocol, WRITEV_MESSAGES};

#[cfg(test)]
pub(crate) mod tests;

/// Limits of one client's queue.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    /// Most messages waiting.
    pub max_frames: usize,
    /// Most message bytes waiting.
    pub max_bytes: usize,
    /// A client skipping delta frames while it waits for a keyframe for longer than
    /// this is closed.
    pub keyframe_timeout: Duration,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Outgoing>,
    bytes: usize,
    /// Skip delta frames until a keyframe arrives.
    awaiting_keyframe: bool,
    /// When the client first skipped a delta frame in its current wait.
    skipping_since: Option<Instant>,
    /// frame_seq of the last video frame let through to this client (0: none yet). A
    /// delta frame that does not follow it may reference a frame the client never got,
    /// whatever the reason of the gap (a ring lap, a NATS loss, a stored keyframe met by
    /// the live stream): the client then waits for a keyframe.
    last_seq: u64,
    close: Option<CloseReason>,
    /// Bytes to write before anything else (WebSocket control frames: pongs, the close
    /// reply), formatted by the connection's protocol reader.
    control: Vec<u8>,
    /// Write what is pending, then end the connection without a close frame of our own.
    end: bool,
    /// Messages and bytes of the GOP burst queued at join, allowed on top of the limits
    /// until the writer takes them.
    credit_frames: usize,
    credit_bytes: usize,
    /// The writer task waits with nothing to write: a push may write to the socket
    /// directly (when `items` and `control` are empty too).
    writer_idle: bool,
    /// Bytes of the first queued item's WebSocket frame already on the socket (a direct
    /// write the socket cut short). That item is never dropped: the rest must follow.
    front_written: usize,
    /// The writer task has ended: nothing more is queued or written.
    finished: bool,
    /// Foxglove: the client's subscriptions.
    subs: Subscriptions,
    /// The subscription the partly written front item was started with.
    front_subscription: Option<u32>,
    /// Camera subscriptions that lost frames here (an overflow): each skips its frames
    /// until its own next keyframe ([`ClientQueue::push_camera`]).
    lost_cameras: Vec<u32>,
}

/// A socket the publishing thread may write to without blocking (the write half of a
/// client's connection).
pub(crate) trait DirectSink: Send + Sync + std::fmt::Debug {
    /// Writes what the socket takes now; `WouldBlock` if it takes nothing.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

/// What [`ClientQueue::push_many`] did with the messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pushed {
    /// Messages that went whole straight to the socket.
    pub(crate) sent_directly: u64,
    /// A keyframe should be requested for this client.
    pub(crate) want_keyframe: bool,
}

/// Most control-frame bytes a client may have waiting (pongs to its pings, ...): a
/// client that pings faster than it reads is cut off.
const MAX_CONTROL_BYTES: usize = 64 << 10;

/// One client's queue, shared between the hub and the client's writer task.
#[derive(Debug)]
pub(crate) struct ClientQueue {
    id: u64,
    state: Mutex<QueueState>,
    notify: Notify,
    /// The first publication this client gets from the fan-out (earlier ones came
    /// with its GOP burst, or before it joined); set under the hub lock.
    first_seq: AtomicU64,
    /// How messages look on this client's wire.
    protocol: Protocol,
    /// Frames this client did not get (overflow and keyframe waits).
    dropped: AtomicU64,
    /// The socket, for direct writes (absent in unit tests: everything is queued).
    sink: OnceLock<Arc<dyn DirectSink>>,
    /// CLOCK_MONOTONIC ns of the newest video frame written in full to this client's
    /// socket (its commit time when the source knows it, else when it was read; 0
    /// before the first: a client with no picture is held): the clock of its video
    /// gate ([`crate::safety::ClientGate`]).
    newest_frame_ns: AtomicU64,
    /// False while the hub's video frames are for none of its channels (a Foxglove
    /// client subscribed to neither the video nor the image channel, such as one that
    /// watches other cameras only): the fan-out then passes it by without its lock.
    // SYNC POINT (none): Relaxed, stored under the queue lock as the subscriptions
    // change. A subscription is made under the hub lock, before the publications it
    // gets (`first_seq`) take that lock, and those reach a fan-out thread through its
    // job channel: both order the store before the load. A stale `true` only costs
    // the lock it would have saved.
    takes_pictures: AtomicBool,
}

/// What a writer task takes from its queue in one go.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Messages to write, in order.
    pub(crate) items: Vec<Outgoing>,
    /// Set when the client must be closed (after `items` are written).
    pub(crate) close: Option<CloseReason>,
    /// Control frames to write first.
    pub(crate) control: Vec<u8>,
    /// End the connection after writing, without sending a close frame.
    pub(crate) end: bool,
    /// Bytes of the first item's WebSocket frame already written: write the rest of it
    /// first, before `control`.
    pub(crate) offset: usize,
    /// Foxglove: the subscriptions to send the items under.
    pub(crate) subs: Subscriptions,
    /// Foxglove: the subscription id the partly written first item was started with.
    pub(crate) front_subscription: Option<u32>,
}

impl Batch {
    /// Empties the batch for reuse.
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.close = None;
        self.control.clear();
        self.end = false;
        self.offset = 0;
        self.subs = Subscriptions::default();
        self.front_subscription = None;
    }
}

/// What [`ClientQueue::push_camera`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Relayed {
    /// Queued (or, for a subscription that ended, ignored).
    Queued,
    /// Frames were lost: the camera's queue should skip to its next keyframe.
    Resync,
    /// The client is closing: relay no more.
    Ended,
}

/// What [`ClientQueue::start_video`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VideoStart {
    /// The GOP cache is queued: the client's picture appears at once.
    FromCache,
    /// No keyframe cached: the client waits for the next one, which should be requested.
    AwaitingKeyframe,
    /// The client already gets video (under another subscription): nothing changed.
    AlreadySubscribed,
}

impl ClientQueue {
    /// An empty queue for client `id`, speaking `protocol`.
    pub(crate) fn new(id: u64, protocol: Protocol) -> Self {
        ClientQueue {
            id,
            first_seq: AtomicU64::new(0),
            protocol,
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
            sink: OnceLock::new(),
            newest_frame_ns: AtomicU64::new(0),
            takes_pictures: AtomicBool::new(protocol == Protocol::Sdr),
        }
    }

    /// False if no video frame of its hub is for it now (see `takes_pictures`).
    pub(crate) fn takes_pictures(&self) -> bool {
        self.takes_pictures.load(Ordering::Relaxed)
    }

    /// Updates `takes_pictures` from the subscriptions `q` (under the queue lock).
    fn note_pictures(&self, q: &QueueState) {
        let takes = self.protocol == Protocol::Sdr || q.subs.video.is_some() || q.subs.image.is_some();
        self.takes_pictures.store(takes, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first publication this client gets from the fan-out.
    pub(crate) fn first_seq(&self) -> u64 {
        self.first_seq.load(Ordering::Relaxed)
    }

    /// Sets the first publication this client gets from the fan-out (the ones before
    /// came with its GOP burst, or are too old); called under the hub lock.
    pub(crate) fn set_first_seq(&self, seq: u64) {
        self.first_seq.store(seq, Ordering::Relaxed);
    }

    /// Starts video for this client (under `subscription`, for clients that subscribe):
    /// with `burst`, from the GOP cache `gop` (the newest keyframe and the frames after
    /// it, `gop_bytes` message bytes), which does not count against the queue limits;
    /// without `burst` or a cached keyframe, the client waits for the next keyframe (a
    /// small decoder queue, like SDR_OS's, would drop references out of a burst). Called
    /// under the hub lock.
    pub(crate) fn start_video(
        &self,
        subscription: Option<u32>,
        burst: bool,
        gop: &[VideoFrame],
        gop_bytes: usize,
    ) -> VideoStart {
        let mut q = self.lock();
        if subscription.is_some() && q.subs.video.is_some() {
            return VideoStart::AlreadySubscribed;
        }
        q.subs.video = subscription;
        self.note_pictures(&q);
        let Some(last) = gop.last().filter(|_| burst) else {
            q.awaiting_keyframe = true;
            return VideoStart::AwaitingKeyframe;
        };
        q.awaiting_keyframe = false;
        q.last_seq = last.frame_seq;
        q.items.extend(gop.iter().cloned().map(Outgoing::Video));
        q.bytes += gop_bytes;
        // The burst does not count against the queue limits.
        q.credit_frames = gop.len();
        q.credit_bytes = gop_bytes;
        VideoStart::FromCache
    }

    /// Subscribes the client to the image channel (JPEG frames) under `subscription`;
    /// false if it already is.
    pub(crate) fn subscribe_image(&self, subscription: u32) -> bool {
        let mut q = self.lock();
        if q.subs.image.is_some() {
            return false;
        }
        q.subs.image = Some(subscription);
        self.note_pictures(&q);
        true
    }

    /// True while the client is subscribed to any channel (Foxglove).
    pub(crate) fn subscribed(&self) -> bool {
        let q = self.lock();
        q.subs.video.is_some() || q.subs.image.is_some() || !q.subs.telemetry.is_empty() || !q.subs.cameras.is_empty()
    }

    /// Records the client's subscription `subscription` to a `/camera/<name>` channel,
    /// whose frames [`ClientQueue::push_camera`] brings; false if the id is taken.
    pub(crate) fn subscribe_camera(&self, subscription: u32) -> bool {
        let mut q = self.lock();
        let s = &q.subs;
        let taken = s.video == Some(subscription)
            || s.image == Some(subscription)
            || s.telemetry.iter().any(|(_, sub)| *sub == subscription)
            || s.cameras.contains(&subscription);
        if !taken {
            q.subs.cameras.push(subscription);
        }
        !taken
    }

    /// Queues `frames` of a camera the client subscribed to under `subscription`, already
    /// through that camera's own keyframe wait, for the writer task. With this queue over
    /// its limits they are dropped; then, and after an overflow dropped some of them,
    /// that subscription skips its frames until its next keyframe. Returns
    /// [`Relayed::Resync`] when the camera's queue should wait for a keyframe.
    pub(crate) fn push_camera(
        &self,
        subscription: u32,
        frames: impl Iterator<Item = VideoFrame>,
        limits: &QueueLimits,
    ) -> Relayed {
        let mut s = self.lock();
        if s.close.is_some() || s.finished || s.end {
            return Relayed::Ended;
        }
        if !s.subs.cameras.contains(&subscription) {
            return Relayed::Queued;
        }
        let full = s.items.len() > limits.max_frames + s.credit_frames || s.bytes > limits.max_bytes + s.credit_bytes;
        let mut lost = full || s.lost_cameras.contains(&subscription);
        let mut queued = false;
        for frame in frames {
            if full || (lost && !frame.keyframe) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            lost = false;
            s.bytes += frame.message.len();
            s.items.push_back(Outgoing::Camera(subscription, frame));
            queued = true;
        }
        s.lost_cameras.retain(|sub| *sub != subscription);
        if lost {
            s.lost_cameras.push(subscription);
        }
        drop(s);
        if queued {
            self.notify.notify_one();
        }
        if lost {
            Relayed::Resync
        } else {
            Relayed::Queued
        }
    }

    /// Subscribes the client to telemetry `channel` under `subscription`; false if it
    /// already is.
    pub(crate) fn subscribe_telemetry(&self, channel: u32, subscription: u32) -> bool {
        let mut q = self.lock();
        if q.subs.telemetry.iter().any(|(c, _)| *c == channel) {
            return false;
        }
        q.subs.telemetry.push((channel, subscription));
        true
    }

    /// Ends subscription `subscription`; queued video is dropped when it is the video
    /// one, except a message already partly written.
    pub(crate) fn unsubscribe(&self, subscription: u32) {
        let mut s = self.lock();
        s.subs.telemetry.retain(|(_, sub)| *sub != subscription);
        if s.subs.cameras.contains(&subscription) {
            s.subs.cameras.retain(|sub| *sub != subscription);
            s.lost_cameras.retain(|sub| *sub != subscription);
            let keep = usize::from(s.front_written > 0).min(s.items.len());
            let mut i = 0;
            s.items.retain(|item| {
                i += 1;
                i <= keep || !matches!(item, Outgoing::Camera(sub, _) if *sub == subscription)
            });
            s.bytes = s.items.iter().map(|i| i.message().len()).sum();
        }
        if s.subs.image == Some(subscription) {
            s.subs.image = None;
        }
        if s.subs.video == Some(subscription) {
            s.subs.video = None;
            let keep = usize::from(s.front_written > 0).min(s.items.len());
            let mut i = 0;
            s.items.retain(|item| {
                i += 1;
                i <= keep || !matches!(item, Outgoing::Video(_))
            });
            s.bytes = s.items.iter().map(|i| i.message().len()).sum();
        }
        self.note_pictures(&s);
    }

    /// Makes the client skip delta frames until the next keyframe (the stream was
    /// interrupted).
    pub(crate) fn await_keyframe(&self) {
        let mut q = self.lock();
        q.awaiting_keyframe = true;
        q.skipping_since = None;
    }

    /// Wakes the writer task (something was queued outside [`ClientQueue::push_many`]).
    pub(crate) fn wake(&self) {
        self.notify.notify_one();
    }

    /// CLOCK_MONOTONIC ns when the newest video frame this client was sent in full was
    /// read from the source (when it joined, before its first frame).
    pub(crate) fn newest_frame_ns(&self) -> u64 {
        self.newest_frame_ns.load(Ordering::Relaxed)
    }

    /// Sends a message meant for this client alone (its video gate's status) ahead of
    /// its queued frames, as a control frame: never dropped with an overflowing queue,
    /// and never behind a backlog of stale video. SDR clients get the telemetry message
    /// `message` (`[0x02][subject length][subject][payload]`), Foxglove clients its
    /// payload as a `status`.
    pub(crate) fn push_urgent(&self, message: &[u8]) {
        let frame = match self.protocol {
            Protocol::Sdr => {
                let (head, n) = crate::framing::binary_frame_header(message.len());
                let mut f = Vec::with_capacity(n + message.len());
                f.extend_from_slice(&head[..n]);
                f.extend_from_slice(message);
                f
            }
            Protocol::Foxglove => {
                let Some((_, at)) = crate::protocol::telemetry_subject(message) else {
                    return;
                };
                let text = String::from_utf8_lossy(&message[at..]);
                crate::framing::text_frame(&crate::foxglove::status(
                    crate::foxglove::STATUS_WARNING,
                    &format!("video gate: {text}"),
                ))
            }
        };
        let _ = self.push_control(&frame);
    }

    /// Records that `item` was written in full to the client's socket.
    pub(crate) fn sent(&self, item: &Outgoing) {
        if let Outgoing::Video(f) = item {
            self.newest_frame_ns
                .fetch_max(f.commit_ns.unwrap_or(f.read_ns), Ordering::Relaxed);
        }
    }

    /// The client's id (unique in this hub).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Frames this client lost to overflow or keyframe waits.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// How messages look on this client's wire.
    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Gives the hub the client's socket, so frames can be written to it directly while
    /// the client keeps up.
    pub(crate) fn attach_sink(&self, sink: Arc<dyn DirectSink>) {
        let _ = self.sink.set(sink);
    }

    /// Waits until there is something to write or a close is due, and takes all of it.
    /// While it waits with nothing pending, new frames are written to the socket by the
    /// publishing thread instead.
    pub(crate) async fn next_batch(&self, into: &mut Batch) {
        loop {
            {
                let mut s = self.lock();
                if !s.items.is_empty() || s.close.is_some() || !s.control.is_empty() || s.end {
                    into.items.extend(s.items.drain(..));
                    s.bytes = 0;
                    into.close = s.close.clone();
                    into.control.append(&mut s.control);
                    into.end = s.end;
                    into.offset = std::mem::take(&mut s.front_written);
                    into.subs = s.subs.clone();
                    into.front_subscription = s.front_subscription.take();
                    s.credit_frames = 0;
                    s.credit_bytes = 0;
                    s.writer_idle = false;
                    return;
                }
                s.writer_idle = true;
            }
            // `notify_one` stores a permit when nobody waits, so a push between the
            // check above and this await is not lost.
            self.notify.notified().await;
        }
    }

    /// Asks the writer task to close the client (used for protocol abuse).
    pub(crate) fn close(&self, reason: CloseReason) {
        let mut s = self.lock();
        if s.close.is_none() {
            s.close = Some(reason);
        }
        drop(s);
        self.notify.notify_one();
    }

    /// Queues already formatted control-frame bytes; fails if too many are waiting.
    pub(crate) fn push_control(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut s = self.lock();
        if s.control.len() + bytes.len() > MAX_CONTROL_BYTES {
            return Err(std::io::Error::other("too many control frames waiting"));
        }
        s.control.extend_from_slice(bytes);
        drop(s);
        self.notify.notify_one();
        Ok(())
    }

    /// Queues control-frame bytes the server itself sends (greetings, channel
    /// announcements), bounded by what the server knows rather than by what the client
    /// does: never refused, so a client is never left without its channel list.
    pub(crate) fn push_server_control(&self, bytes: &[u8]) {
        self.lock().control.extend_from_slice(bytes);
        self.notify.notify_one();
    }

    /// Asks the writer task to write what is pending and end the connection (the
    /// client closed it, or the connection failed).
    pub(crate) fn end(&self) {
        self.lock().end = true;
        self.notify.notify_one();
    }

    /// The writer task has ended: nothing more is written or queued.
    pub(crate) fn finish(&self) {
        let mut s = self.lock();
        s.finished = true;
        s.writer_idle = false;
        s.items.clear();
        s.bytes = 0;
    }

    /// Delivers `items`, in order: straight to the socket (one `writev` for all of
    /// them) when nothing is waiting, else through the queue, applying the keyframe wait and
    /// limits. `scratch` is reused between calls.
    pub(crate) fn push_many<'a>(
        &self,
        items: impl Iterator<Item = &'a Outgoing>,
        limits: &QueueLimits,
        metrics: &Metrics,
        scratch: &mut Vec<&'a Outgoing>,
    ) -> Pushed {
        let mut s = self.lock();
        let mut out = Pushed::default();
        if s.close.is_some() || s.finished {
            return out;
        }
        let sink = self
            .sink
            .get()
            .filter(|_| s.writer_idle && s.items.is_empty() && s.control.is_empty() && !s.end);
        scratch.clear();
        let direct = sink.is_some().then_some(&mut *scratch);
        if !self.admit(&mut s, items, direct, limits, metrics, &mut out) {
            drop(s);
            self.notify.notify_one();
            return out;
        }
        let Some(sink) = sink else {
            if !s.items.is_empty() {
                drop(s);
                self.notify.notify_one();
            }
            return out;
        };
        if scratch.is_empty() {
            return out;
        }
        let Some((written, sent)) = self.write_direct(&s, sink.as_ref(), scratch) else {
            // The connection failed; the writer task ends it.
            s.end = true;
            drop(s);
            self.notify.notify_one();
            return out;
        };
        out.sent_directly += sent as u64;
        if sent == scratch.len() {
            return out;
        }
        // The socket took part of it (or nothing): the writer task writes the rest
        // (starting `written` bytes into the first message) when the socket has room.
        let rest = &scratch[sent..];
        s.front_written = written;
        s.front_subscription = rest.first().and_then(|i| s.subs.for_item(i));
        s.writer_idle = false;
        for item in rest {
            s.bytes += item.message().len();
            s.items.push_back((*item).clone());
        }
        drop(s);
        self.notify.notify_one();
        out
    }

    /// Applies the keyframe wait to `items`: those that pass go to `direct` (to be written
    /// to the socket), or without it into the queue. False if the client was closed for
    /// waiting too long for a keyframe.
    fn admit<'a>(
        &self,
        s: &mut QueueState,
        items: impl Iterator<Item = &'a Outgoing>,
        mut direct: Option<&mut Vec<&'a Outgoing>>,
        limits: &QueueLimits,
        metrics: &Metrics,
        out: &mut Pushed,
    ) -> bool {
        let mut head = Head::default();
        for item in items {
            if wire(self.protocol, s.subs.for_item(item), item, &mut head).is_none() {
                continue;
            }
            match keyframe_wait(s, item, limits) {
                KeyframeWait::Pass => {}
                KeyframeWait::Skip => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    metrics.dropped(DropReason::AwaitingKeyframe, 1);
                    out.want_keyframe = true;
                    continue;
                }
                KeyframeWait::Close => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    metrics.dropped(DropReason::AwaitingKeyframe, 1);
                    return false;
                }
            }
            if let Some(direct) = direct.as_mut() {
                direct.push(item);
            } else {
                out.want_keyframe |= self.enqueue(s, item, limits, metrics);
            }
        }
        true
    }

    /// Writes `items` to `sink`, one writev per WRITEV_MESSAGES messages, until done or
    /// the socket is full. Returns how many went whole and how many bytes of the next
    /// one went, or `None` if the connection failed.
    fn write_direct(&self, s: &QueueState, sink: &dyn DirectSink, items: &[&Outgoing]) -> Option<(usize, usize)> {
        let mut sent = 0;
        let mut written = 0;
        for chunk in items.chunks(WRITEV_MESSAGES) {
            let mut heads = [Head::default(); WRITEV_MESSAGES];
            let mut bodies: [&[u8]; WRITEV_MESSAGES] = [&[]; WRITEV_MESSAGES];
            let mut slices = [IoSlice::new(&[]); 2 * WRITEV_MESSAGES];
            for (i, item) in chunk.iter().enumerate() {
                bodies[i] = wire(self.protocol, s.subs.for_item(item), item, &mut heads[i]).unwrap_or_default();
            }
            for i in 0..chunk.len() {
                slices[2 * i] = IoSlice::new(heads[i].bytes());
                slices[2 * i + 1] = IoSlice::new(bodies[i]);
            }
            written = match sink.try_write_vectored(&slices[..2 * chunk.len()]) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => 0,
                Err(_) => return None,
            };
            let mut whole = 0;
            for (head, body) in heads.iter().zip(&bodies).take(chunk.len()) {
                let len = head.len() + body.len();
                if written < len {
                    break;
                }
                written -= len;
                whole += 1;
                self.sent(chunk[whole - 1]);
            }
            sent += whole;
            if whole < chunk.len() {
                break;
            }
        }
        Some((written, sent))
    }

    /// Queues `item` behind what is waiting, applying the limits. Returns true if a
    /// keyframe should be requested.
    fn enqueue(&self, s: &mut QueueState, item: &Outgoing, limits: &QueueLimits, metrics: &Metrics) -> bool {
        let mut want_keyframe = false;
        let len = item.message().len();
        if s.items.len() + 1 > limits.max_frames + s.credit_frames || s.bytes + len > limits.max_bytes + s.credit_bytes
        {
            // Overflow: drop what is waiting. Video resumes at a keyframe, so the
            // client's decoder never sees a frame whose reference it lacks. A message
            // already partly on the socket stays: its rest must follow.
            let keep = usize::from(s.front_written > 0).min(s.items.len());
            let kept_bytes = s.items.iter().take(keep).map(|i| i.message().len()).sum::<usize>();
            let lost_video = s
                .items
                .iter()
                .skip(keep)
                .filter(|i| matches!(i, Outgoing::Video(_)))
                .count() as u64;
            let lost_other = (s.items.len() - keep) as u64 - lost_video;
            let lost_cameras: Vec<u32> = s
                .items
                .iter()
                .skip(keep)
                .filter_map(|i| match i {
                    Outgoing::Camera(sub, _) => Some(*sub),
                    _ => None,
                })
                .collect();
            for sub in lost_cameras {
                if !s.lost_cameras.contains(&sub) {
                    s.lost_cameras.push(sub);
                }
            }
            s.items.truncate(keep);
            s.bytes = kept_bytes;
            s.credit_frames = 0;
            s.credit_bytes = 0;
            metrics.dropped(DropReason::Telemetry, lost_other);
            match item {
                Outgoing::Video(f) if f.keyframe => {
                    metrics.dropped(DropReason::QueueOverflow, lost_video);
                    self.dropped.fetch_add(lost_video, Ordering::Relaxed);
                }
                Outgoing::Video(_) => {
                    metrics.dropped(DropReason::QueueOverflow, lost_video + 1);
                    self.dropped.fetch_add(lost_video + 1, Ordering::Relaxed);
                    s.awaiting_keyframe = true;
                    s.skipping_since = Some(Instant::now());
                    return true;
                }
                Outgoing::Telemetry(_) | Outgoing::Camera(..) => {
                    metrics.dropped(DropReason::QueueOverflow, lost_video);
                    self.dropped.fetch_add(lost_video, Ordering::Relaxed);
                    if lost_video > 0 {
                        s.awaiting_keyframe = true;
                        s.skipping_since = Some(Instant::now());
                        want_keyframe = true;
                    }
                }
            }
        }
        s.bytes += len;
        s.items.push_back(item.clone());
        want_keyframe
    }
}

/// What the keyframe wait decides for one message: a client that fell behind (a gap,
/// an overflow) skips delta frames until the next keyframe.
enum KeyframeWait {
    /// Deliver it.
    Pass,
    /// A delta frame while the client waits for a keyframe: skip it.
    Skip,
    /// Skipped, and the client waited too long: it is now closed.
    Close,
}

/// Whether `item` may go to this client, given its keyframe wait (which a keyframe ends
/// and a gap in `frame_seq` starts).
fn keyframe_wait(s: &mut QueueState, item: &Outgoing, limits: &QueueLimits) -> KeyframeWait {
    let Outgoing::Video(frame) = item else {
        return KeyframeWait::Pass;
    };
    if frame.keyframe {
        s.awaiting_keyframe = false;
        s.skipping_since = None;
        s.last_seq = frame.frame_seq;
        return KeyframeWait::Pass;
    }
    if !s.awaiting_keyframe {
        if s.last_seq == 0 || frame.frame_seq == s.last_seq.wrapping_add(1) {
            s.last_seq = frame.frame_seq;
            return KeyframeWait::Pass;
        }
        // A gap: this delta frame may reference one the client never got.
        s.awaiting_keyframe = true;
    }
    let now = Instant::now();
    let since = *s.skipping_since.get_or_insert(now);
    if now.duration_since(since) > limits.keyframe_timeout {
        let ms = limits.keyframe_timeout.as_millis();
        // A client that never got a frame did not fall behind: the stream has no
        // keyframe often enough (or none since a writer restarted).
        let reason = if s.last_seq == 0 {
            format!("no keyframe for {ms} ms since joining (the writer sends too few); reconnect")
        } else {
            format!("no keyframe for {ms} ms after falling behind; reconnect")
        };
        s.close = Some(CloseReason {
            code: close_code::TRY_AGAIN_LATER,
            reason,
        });
        return KeyframeWait::Close;
    }
    KeyframeWait::Skip
}
