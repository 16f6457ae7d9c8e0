//! The fan-out hub: hands each frame, as one shared [`Bytes`] buffer, to every client's
//! bounded, keyframe-gated queue, and keeps the GOP cache new clients start from.
//!
//! Delivery: a client whose queue is empty and whose writer task is idle (it keeps up,
//! the common case) gets the frame written straight to its socket by the publishing
//! thread, one non-blocking `writev(frame header, shared message)`: no task wake-up, no
//! timer, no per-client copy. Only when the socket cannot take the whole frame (or a
//! backlog exists) does the frame, or its unwritten rest, go to the client's queue,
//! and the client's writer task is woken to finish it asynchronously.
//!
//! The fan-out runs on its own threads (`fanout_threads`, one per CPU in the server):
//! each owns a fixed share of the clients (by id), so a client's frames stay in order,
//! the sockets' send work is spread over the cores, and neither the ring reader nor the
//! NATS task waits for the system calls.
//!
//! Locking: the hub's client list and GOP cache sit under one mutex, taken by the
//! publishing thread once per frame (to update the cache and take a snapshot of the
//! client list; the fan-out itself runs without it) and by clients joining or leaving.
//! Each client's queue has its own mutex, shared with that client's writer task and held
//! during a direct write, so the bytes of two messages never interleave on a socket.
//! Joining copies the GOP cache into the new queue under the hub lock, so a client sees
//! every frame after its GOP, in order, with no gap and no duplicate.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::keyframe::KeyframeRequests;
use crate::metrics::{DropReason, Metrics, SentTally};

/// A video frame ready to send: the whole WebSocket message
/// (`[0x01][32-byte frame header][payload]`), built once and shared by every client.
#[derive(Clone, Debug)]
pub struct VideoFrame {
    /// The complete binary message.
    pub message: Bytes,
    /// True if a decoder can start at this frame.
    pub keyframe: bool,
    /// The ring's frame_seq.
    pub frame_seq: u64,
    /// CLOCK_MONOTONIC ns when the reader thread took the frame out of the ring.
    pub read_ns: u64,
    /// CLOCK_MONOTONIC ns when the producer committed the frame, when known (the ring
    /// has no per-frame commit time; producers that stamp it as the frame_id say so with
    /// `--frame-id-commit-time`).
    pub commit_ns: Option<u64>,
}

/// A telemetry message, and what Foxglove clients need to relay it.
#[derive(Clone, Debug)]
pub struct Telemetry {
    /// The whole message: `[0x02][u16 LE subject length][subject][payload]`.
    pub message: Bytes,
    /// Where the payload starts in `message`.
    pub payload_at: usize,
    /// The Foxglove channel of its subject, if its payload is JSON (Foxglove's
    /// telemetry channels are `json` channels).
    pub channel: Option<u32>,
    /// Wall-clock ns when it was published (the Foxglove log time).
    pub log_ns: u64,
}

/// One message waiting in a client's queue.
#[derive(Clone, Debug)]
pub enum Outgoing {
    /// A video frame (subject to keyframe gating).
    Video(VideoFrame),
    /// A telemetry message, never gated.
    Telemetry(Telemetry),
}

impl Outgoing {
    /// The WebSocket message bytes.
    pub fn message(&self) -> &Bytes {
        match self {
            Outgoing::Video(f) => &f.message,
            Outgoing::Telemetry(t) => &t.message,
        }
    }
}

/// A Foxglove client's subscriptions.
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

/// Why the server closes a client: a WebSocket close code and a reason text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseReason {
    /// RFC 6455 close code.
    pub code: u16,
    /// Human-readable reason (at most 123 bytes are sent).
    pub reason: String,
}

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
}

/// A socket the publishing thread may write to without blocking (the write half of a
/// client's connection).
pub(crate) trait DirectSink: Send + Sync + std::fmt::Debug {
    /// Writes what the socket takes now; `WouldBlock` if it takes nothing.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

/// The header of an unmasked, final, binary WebSocket frame of `len` payload bytes, and
/// how many of its 10 bytes are used.
pub(crate) fn binary_frame_header(len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x82;
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if len <= u16::MAX as usize {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// Most messages per `writev` call (two iovecs each).
pub(crate) const WRITEV_MESSAGES: usize = 64;

/// The protocol a client speaks, which decides how a message looks on its wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// The SDR_OS protocol ([`crate::protocol`]): every message as it is.
    Sdr,
    /// Foxglove WebSocket ([`crate::foxglove`]): video only, after a subscribe, as
    /// Message Data with a per-client head.
    Foxglove,
}

/// Most bytes before a message's shared body on one client's wire.
const HEAD_MAX: usize = 10 + crate::foxglove::MAX_HEAD;

/// The per-client bytes before a message's shared body: the WebSocket frame header and,
/// for Foxglove, the Message Data head.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head {
    buf: [u8; HEAD_MAX],
    len: usize,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            buf: [0; HEAD_MAX],
            len: 0,
        }
    }
}

impl Head {
    /// The head's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// `item` on the wire of a client speaking `protocol` (Foxglove: subscribed as `sub`):
/// fills `head` and returns the shared body, or `None` if the client does not get it.
pub(crate) fn wire<'a>(protocol: Protocol, sub: Option<u32>, item: &'a Outgoing, head: &mut Head) -> Option<&'a [u8]> {
    match protocol {
        Protocol::Sdr => {
            let (h, hl) = binary_frame_header(item.message().len());
            head.buf[..hl].copy_from_slice(&h[..hl]);
            head.len = hl;
            Some(item.message())
        }
        Protocol::Foxglove => {
            let mut fx = [0u8; crate::foxglove::MAX_HEAD];
            let (fl, body) = match item {
                Outgoing::Video(frame) => crate::foxglove::message_data_head(sub?, frame, &mut fx)?,
                Outgoing::Telemetry(t) => {
                    t.channel?;
                    fx[0] = crate::foxglove::OP_MESSAGE_DATA;
                    fx[1..5].copy_from_slice(&sub?.to_le_bytes());
                    fx[5..13].copy_from_slice(&t.log_ns.to_le_bytes());
                    (crate::foxglove::MESSAGE_DATA_HEAD, t.message.get(t.payload_at..)?)
                }
            };
            let (h, hl) = binary_frame_header(fl + body.len());
            head.buf[..hl].copy_from_slice(&h[..hl]);
            head.buf[hl..hl + fl].copy_from_slice(&fx[..fl]);
            head.len = hl + fl;
            Some(body)
        }
    }
}

/// What [`ClientQueue::push_many`] did with the messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pushed {
    /// Messages that went whole straight to the socket.
    sent_directly: u64,
    /// A keyframe should be requested for this client.
    want_keyframe: bool,
}

/// Most frames the GOP cache holds (a longer GOP is not cached: new clients then wait
/// for the next keyframe, which is requested).
pub const GOP_CACHE_MAX_FRAMES: usize = 1024;
/// Most bytes the GOP cache holds.
pub const GOP_CACHE_MAX_BYTES: usize = 64 << 20;

/// Most control-frame bytes a client may have waiting (pongs to its pings, ...): a
/// client that pings faster than it reads is cut off.
const MAX_CONTROL_BYTES: usize = 64 << 10;

/// One client's queue, shared between the hub and the client's writer task.
#[derive(Debug)]
pub struct ClientQueue {
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
}

/// What a writer task takes from its queue in one go.
#[derive(Debug, Default)]
pub struct Batch {
    /// Messages to write, in order.
    pub items: Vec<Outgoing>,
    /// Set when the client must be closed (after `items` are written).
    pub close: Option<CloseReason>,
    /// Control frames to write first.
    pub control: Vec<u8>,
    /// End the connection after writing, without sending a close frame.
    pub end: bool,
    /// Bytes of the first item's WebSocket frame already written: write the rest of it
    /// first, before `control`.
    pub offset: usize,
    /// Foxglove: the subscriptions to send the items under.
    pub(crate) subs: Subscriptions,
    /// Foxglove: the subscription id the partly written first item was started with.
    pub(crate) front_subscription: Option<u32>,
}

impl Batch {
    /// Empties the batch for reuse.
    pub fn clear(&mut self) {
        self.items.clear();
        self.close = None;
        self.control.clear();
        self.end = false;
        self.offset = 0;
        self.subs = Subscriptions::default();
        self.front_subscription = None;
    }
}

impl ClientQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client's id (unique in this hub).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Frames this client lost to overflow or keyframe waits.
    pub fn dropped(&self) -> u64 {
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
    pub async fn next_batch(&self, into: &mut Batch) {
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
    pub fn close(&self, reason: CloseReason) {
        let mut s = self.lock();
        if s.close.is_none() {
            s.close = Some(reason);
        }
        drop(s);
        self.notify.notify_one();
    }

    /// Queues already formatted control-frame bytes; fails if too many are waiting.
    pub fn push_control(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut s = self.lock();
        if s.control.len() + bytes.len() > MAX_CONTROL_BYTES {
            return Err(std::io::Error::other("too many control frames waiting"));
        }
        s.control.extend_from_slice(bytes);
        drop(s);
        self.notify.notify_one();
        Ok(())
    }

    /// Asks the writer task to write what is pending and end the connection (the
    /// client closed it, or the connection failed).
    pub fn end(&self) {
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
    /// them) when nothing is waiting, else through the queue, applying gating and
    /// limits. `scratch` is reused between calls.
    fn push_many<'a>(
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
        let mut head = Head::default();
        for item in items {
            if wire(self.protocol, s.subs.for_item(item), item, &mut head).is_none() {
                continue;
            }
            match gate(&mut s, item, limits) {
                Gate::Pass => {}
                Gate::Skip => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    metrics.dropped(DropReason::AwaitingKeyframe, 1);
                    out.want_keyframe = true;
                    continue;
                }
                Gate::Close => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    metrics.dropped(DropReason::AwaitingKeyframe, 1);
                    drop(s);
                    self.notify.notify_one();
                    return out;
                }
            }
            if sink.is_some() {
                scratch.push(item);
            } else {
                out.want_keyframe |= self.enqueue(&mut s, item, limits, metrics);
            }
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
        // One writev per WRITEV_MESSAGES messages, until done or the socket is full.
        let mut written = 0;
        let mut rest = scratch.iter();
        for chunk in scratch.chunks(WRITEV_MESSAGES) {
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
                Err(_) => {
                    // The connection failed; the writer task ends it.
                    s.end = true;
                    drop(s);
                    self.notify.notify_one();
                    return out;
                }
            };
            let mut whole = 0;
            for (head, body) in heads.iter().zip(&bodies).take(chunk.len()) {
                let len = head.len + body.len();
                if written < len {
                    break;
                }
                written -= len;
                whole += 1;
                rest.next();
            }
            out.sent_directly += whole as u64;
            if whole < chunk.len() {
                break;
            }
        }
        if rest.len() == 0 {
            return out;
        }
        // The socket took part of it (or nothing): the writer task writes the rest
        // (starting `written` bytes into the first message) when the socket has room.
        s.front_written = written;
        s.front_subscription = rest.as_slice().first().and_then(|i| s.subs.for_item(i));
        s.writer_idle = false;
        for item in rest {
            s.bytes += item.message().len();
            s.items.push_back((*item).clone());
        }
        drop(s);
        self.notify.notify_one();
        out
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
                Outgoing::Telemetry(_) => {
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

/// What keyframe gating decides for one message.
enum Gate {
    /// Deliver it.
    Pass,
    /// A delta frame while the client waits for a keyframe: skip it.
    Skip,
    /// Skipped, and the client waited too long: it is now closed.
    Close,
}

fn gate(s: &mut QueueState, item: &Outgoing, limits: &QueueLimits) -> Gate {
    let Outgoing::Video(frame) = item else {
        return Gate::Pass;
    };
    if frame.keyframe {
        s.awaiting_keyframe = false;
        s.skipping_since = None;
        return Gate::Pass;
    }
    if !s.awaiting_keyframe {
        return Gate::Pass;
    }
    let now = Instant::now();
    let since = *s.skipping_since.get_or_insert(now);
    if now.duration_since(since) > limits.keyframe_timeout {
        s.close = Some(CloseReason {
            code: 1013,
            reason: format!(
                "no keyframe for {} ms after falling behind; reconnect",
                limits.keyframe_timeout.as_millis()
            ),
        });
        return Gate::Close;
    }
    Gate::Skip
}

#[derive(Debug, Default)]
struct HubState {
    /// Copy-on-write: the publishing thread takes a snapshot per frame and fans out
    /// without the hub lock; joins and leaves copy the list if a snapshot is in use.
    clients: Arc<Vec<Arc<ClientQueue>>>,
    /// Number of the next publication.
    next_seq: u64,
    /// Telemetry subjects seen, in order: Foxglove channel `FIRST_TELEMETRY_CHANNEL + i`.
    telemetry_subjects: Vec<String>,
    /// The newest keyframe and every frame after it, while they fit the queue limits.
    gop: Vec<VideoFrame>,
    gop_bytes: usize,
}

/// One message for the fan-out: what the clients get and who they are.
#[derive(Debug)]
struct FanoutJob {
    /// Publication number; clients that joined later already have it (GOP cache) or
    /// must not get it.
    seq: u64,
    /// The clients at publication (a snapshot).
    clients: Arc<Vec<Arc<ClientQueue>>>,
    item: Outgoing,
}

/// Most queued jobs a fan-out thread takes in one go when it is behind.
const FANOUT_BATCH: usize = 256;

/// The fan-out point between the ring reader and the WebSocket clients.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<HubState>,
    limits: QueueLimits,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
    keyframes: Arc<KeyframeRequests>,
    /// One queue per fan-out thread (client `id % len` is that thread's); empty: the
    /// publishing thread delivers itself.
    shards: Vec<std::sync::mpsc::Sender<FanoutJob>>,
}

impl Hub {
    /// A hub with the given per-client limits.
    pub fn new(limits: QueueLimits, metrics: Arc<Metrics>, keyframes: Arc<KeyframeRequests>) -> Self {
        Hub {
            state: Mutex::new(HubState::default()),
            limits,
            next_id: AtomicU64::new(1),
            metrics,
            keyframes,
            shards: Vec::new(),
        }
    }

    /// Delivers messages on `threads` fan-out threads instead of the publishing thread
    /// (0: on the publishing thread). The threads end when the hub is dropped.
    pub fn with_fanout_threads(mut self, threads: usize) -> io::Result<Self> {
        for k in 0..threads {
            let (tx, rx) = std::sync::mpsc::channel::<FanoutJob>();
            let (limits, metrics, keyframes) = (self.limits, self.metrics.clone(), self.keyframes.clone());
            std::thread::Builder::new()
                .name(format!("shmring-fanout-{k}"))
                .spawn(move || {
                    let mut jobs = Vec::with_capacity(FANOUT_BATCH);
                    while let Ok(job) = rx.recv() {
                        // Behind? Take everything waiting: each client then gets all of
                        // it in one writev instead of one call per message.
                        jobs.push(job);
                        jobs.extend(rx.try_iter().take(FANOUT_BATCH - 1));
                        deliver(&jobs, (k, threads), &limits, &metrics, &keyframes);
                        jobs.clear();
                    }
                })?;
            self.shards.push(tx);
        }
        Ok(self)
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_client(&self, protocol: Protocol) -> Arc<ClientQueue> {
        Arc::new(ClientQueue {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            first_seq: AtomicU64::new(0),
            protocol,
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
            sink: OnceLock::new(),
        })
    }

    /// Registers a new client. Its queue starts with the GOP cache (the newest keyframe
    /// and the frames after it), so its picture appears at once; without a cached
    /// keyframe it waits for the next one, and one is requested.
    pub fn join(&self) -> Arc<ClientQueue> {
        let client = self.new_client(Protocol::Sdr);
        self.attach(&client, None);
        client
    }

    /// A Foxglove client: in the fan-out at once, but it gets only what it subscribes
    /// to. Its first messages are `server_info` and an advertise of every channel
    /// (queued under the hub lock, so a channel advertised later comes after them).
    pub(crate) fn connect_foxglove(&self, server_info: &str) -> Arc<ClientQueue> {
        let client = self.new_client(Protocol::Foxglove);
        let mut hub = self.lock();
        let channels: Vec<(u32, &str)> = hub
            .telemetry_subjects
            .iter()
            .enumerate()
            .map(|(i, subject)| (crate::foxglove::FIRST_TELEMETRY_CHANNEL + i as u32, subject.as_str()))
            .collect();
        let _ = client.push_control(&crate::foxglove::text_frame(server_info));
        let _ = client.push_control(&crate::foxglove::text_frame(&crate::foxglove::advertise(&channels)));
        client.first_seq.store(hub.next_seq, Ordering::Relaxed);
        Arc::make_mut(&mut hub.clients).push(client.clone());
        client
    }

    /// Subscribes a Foxglove client to `channel` under subscription id `subscription`.
    /// Video starts from the GOP cache, like a new client. False if the channel does
    /// not exist or the client is already subscribed to it.
    pub(crate) fn subscribe(&self, client: &Arc<ClientQueue>, channel: u32, subscription: u32) -> bool {
        let hub = self.lock();
        let mut q = client.lock();
        if channel != crate::foxglove::VIDEO_CHANNEL_ID {
            let known = channel
                .checked_sub(crate::foxglove::FIRST_TELEMETRY_CHANNEL)
                .is_some_and(|i| (i as usize) < hub.telemetry_subjects.len());
            if !known || q.subs.telemetry.iter().any(|(c, _)| *c == channel) {
                return false;
            }
            q.subs.telemetry.push((channel, subscription));
            return true;
        }
        if q.subs.video.is_some() {
            return false;
        }
        q.subs.video = Some(subscription);
        // Publications before this one are in the GOP burst (or too old).
        client.first_seq.store(hub.next_seq, Ordering::Relaxed);
        let need_keyframe = self.start_video(&hub, &mut q);
        drop(q);
        drop(hub);
        if need_keyframe {
            self.keyframes.request("new client, no keyframe cached");
        }
        client.notify.notify_one();
        true
    }

    /// Ends a Foxglove client's subscription `subscription`; queued video is dropped
    /// when it is the video one, except a message already partly written.
    pub(crate) fn unsubscribe(&self, client: &ClientQueue, subscription: u32) {
        let mut s = client.lock();
        s.subs.telemetry.retain(|(_, sub)| *sub != subscription);
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
    }

    /// Queues the GOP cache for a client starting video; without one, it waits for
    /// the next keyframe. Returns true if a keyframe should be requested.
    fn start_video(&self, hub: &HubState, q: &mut QueueState) -> bool {
        if hub.gop.is_empty() {
            q.awaiting_keyframe = true;
            return true;
        }
        q.awaiting_keyframe = false;
        q.items.extend(hub.gop.iter().cloned().map(Outgoing::Video));
        q.bytes += hub.gop_bytes;
        // The burst does not count against the queue limits.
        q.credit_frames = hub.gop.len();
        q.credit_bytes = hub.gop_bytes;
        false
    }

    /// Puts `client` in the fan-out, its queue starting with the GOP cache.
    fn attach(&self, client: &Arc<ClientQueue>, subscription: Option<u32>) {
        let mut hub = self.lock();
        client.first_seq.store(hub.next_seq, Ordering::Relaxed);
        let need_keyframe = {
            let mut q = client.lock();
            q.subs.video = subscription;
            self.start_video(&hub, &mut q)
        };
        Arc::make_mut(&mut hub.clients).push(client.clone());
        drop(hub);
        if need_keyframe {
            self.keyframes.request("new client, no keyframe cached");
        }
        client.notify.notify_one();
    }

    /// Removes a client (when its connection ends).
    pub fn leave(&self, client: &ClientQueue) {
        let mut hub = self.lock();
        if let Some(i) = hub.clients.iter().position(|c| c.id == client.id) {
            Arc::make_mut(&mut hub.clients).swap_remove(i);
        }
    }

    /// Connected clients.
    pub fn client_count(&self) -> usize {
        self.lock().clients.len()
    }

    /// Hands a video frame to every client and updates the GOP cache.
    pub fn publish_video(&self, frame: VideoFrame) {
        let mut hub = self.lock();
        let len = frame.message.len();
        if frame.keyframe {
            hub.gop.clear();
            hub.gop_bytes = 0;
        }
        // Cache only a GOP that starts at a keyframe and fits the cache limits.
        let fits = hub.gop.len() < GOP_CACHE_MAX_FRAMES && hub.gop_bytes + len <= GOP_CACHE_MAX_BYTES;
        if (frame.keyframe || !hub.gop.is_empty()) && fits {
            hub.gop_bytes += len;
            hub.gop.push(frame.clone());
        } else if !fits {
            hub.gop.clear();
            hub.gop_bytes = 0;
        }
        self.push_to_all(hub, Outgoing::Video(frame));
    }

    /// Hands a telemetry message to every client.
    pub fn publish_telemetry(&self, message: Bytes) {
        let Some((subject, payload_at)) = crate::protocol::telemetry_subject(&message) else {
            self.metrics.dropped(DropReason::Telemetry, 1);
            return;
        };
        let json = serde_json::from_slice::<serde_json::Value>(&message[payload_at..]).is_ok();
        let mut hub = self.lock();
        let channel = match hub.telemetry_subjects.iter().position(|s| s == subject) {
            _ if !json => None,
            Some(i) => Some(crate::foxglove::FIRST_TELEMETRY_CHANNEL + i as u32),
            None if hub.telemetry_subjects.len() < crate::foxglove::MAX_TELEMETRY_CHANNELS => {
                let channel = crate::foxglove::FIRST_TELEMETRY_CHANNEL + hub.telemetry_subjects.len() as u32;
                hub.telemetry_subjects.push(subject.to_owned());
                let advertise =
                    crate::foxglove::text_frame(&crate::foxglove::advertise_telemetry(&[(channel, subject)]));
                for client in hub.clients.iter().filter(|c| c.protocol == Protocol::Foxglove) {
                    let _ = client.push_control(&advertise);
                }
                Some(channel)
            }
            None => None,
        };
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
        };
        hub.next_seq += 1;
        drop(hub);
        let Some((last, others)) = self.shards.split_last() else {
            deliver(
                std::slice::from_ref(&job),
                (0, 1),
                &self.limits,
                &self.metrics,
                &self.keyframes,
            );
            return;
        };
        // A send fails only if that thread is gone (it panicked); its clients then get
        // nothing more and time out on keyframes.
        for shard in others {
            let _ = shard.send(FanoutJob {
                seq: job.seq,
                clients: job.clients.clone(),
                item: job.item.clone(),
            });
        }
        let _ = last.send(job);
    }

    /// The stream was interrupted (a new writer, a replaced ring): forget the GOP cache
    /// and make every client wait for the next keyframe, so no decoder is fed a frame
    /// whose reference belongs to another stream.
    pub fn discontinuity(&self) {
        let mut hub = self.lock();
        hub.gop.clear();
        hub.gop_bytes = 0;
        for client in hub.clients.iter() {
            let mut q = client.lock();
            q.awaiting_keyframe = true;
            q.skipping_since = None;
        }
        drop(hub);
        self.keyframes.request("stream discontinuity");
    }
}

/// Delivers `jobs` (in order) to the clients of the newest snapshot that belong to
/// fan-out thread `shard.0` of `shard.1`, each client's share in one go, then asks the
/// producer for a keyframe if a client overflowed.
fn deliver(
    jobs: &[FanoutJob],
    shard: (usize, usize),
    limits: &QueueLimits,
    metrics: &Metrics,
    keyframes: &KeyframeRequests,
) {
    let Some(newest) = jobs.last() else { return };
    let (k, n) = (shard.0 as u64, shard.1.max(1) as u64);
    let mut want_keyframe = false;
    let mut tally = SentTally::default();
    let mut scratch = Vec::with_capacity(jobs.len());
    // A client missing from the newest snapshot has left: it gets nothing more.
    for client in newest.clients.iter().filter(|c| c.id % n == k) {
        let items = jobs
            .iter()
            .filter(|j| matches!(j.item, Outgoing::Telemetry(_)) || j.seq >= client.first_seq.load(Ordering::Relaxed))
            .map(|j| &j.item);
        let pushed = client.push_many(items, limits, metrics, &mut scratch);
        want_keyframe |= pushed.want_keyframe;
        if pushed.sent_directly > 0 {
            let now = shmring_core::monotonic_ns();
            for item in &scratch[..pushed.sent_directly as usize] {
                tally.sent(item, now);
            }
        }
    }
    tally.flush(metrics, true);
    if want_keyframe {
        keyframes.request("a client fell behind");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, keyframe: bool, len: usize) -> VideoFrame {
        VideoFrame {
            message: Bytes::from(vec![seq as u8; len]),
            keyframe,
            frame_seq: seq,
            read_ns: 0,
            commit_ns: None,
        }
    }

    fn hub(max_frames: usize) -> Hub {
        let metrics = Arc::new(Metrics::default());
        let keyframes = Arc::new(KeyframeRequests::new(Duration::from_millis(500), metrics.clone()));
        let limits = QueueLimits {
            max_frames,
            max_bytes: 1 << 20,
            keyframe_timeout: Duration::from_secs(5),
        };
        Hub::new(limits, metrics, keyframes)
    }

    fn take(c: &ClientQueue) -> Vec<u64> {
        let mut s = c.lock();
        let seqs = s
            .items
            .drain(..)
            .map(|i| match i {
                Outgoing::Video(f) => f.frame_seq,
                Outgoing::Telemetry(_) => 0,
            })
            .collect();
        s.bytes = 0;
        seqs
    }

    /// A socket stand-in: takes up to `room` bytes, then says `WouldBlock`.
    #[derive(Debug, Default)]
    struct FakeSocket {
        written: Mutex<Vec<u8>>,
        room: Mutex<usize>,
    }

    impl DirectSink for FakeSocket {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut room = self.room.lock().unwrap();
            if *room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut out = self.written.lock().unwrap();
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(*room - n);
                out.extend_from_slice(&b[..take]);
                n += take;
            }
            *room -= n;
            Ok(n)
        }
    }

    fn with_socket(c: &ClientQueue, room: usize) -> Arc<FakeSocket> {
        let sock = Arc::new(FakeSocket {
            room: Mutex::new(room),
            ..Default::default()
        });
        c.attach_sink(sock.clone());
        sock
    }

    /// One step of the client's writer task: takes what is pending, or (nothing
    /// pending) marks the writer idle.
    fn writer_step(c: &ClientQueue) -> Option<Batch> {
        use futures_util::FutureExt;
        let mut b = Batch::default();
        c.next_batch(&mut b).now_or_never().map(|()| b)
    }

    fn seqs(b: &Batch) -> Vec<u64> {
        b.items
            .iter()
            .map(|i| match i {
                Outgoing::Video(f) => f.frame_seq,
                Outgoing::Telemetry(_) => 0,
            })
            .collect()
    }

    #[test]
    fn frames_go_straight_to_the_socket_while_the_client_keeps_up() {
        let h = hub(100);
        h.publish_video(frame(1, true, 200));
        let c = h.join();
        let sock = with_socket(&c, 1 << 20);
        // The GOP burst goes through the writer task...
        assert_eq!(seqs(&writer_step(&c).expect("the GOP burst")), vec![1]);
        assert!(writer_step(&c).is_none(), "nothing else pending: the writer is idle");
        // ...then frames are written directly, as whole WebSocket frames, in order.
        h.publish_video(frame(2, false, 10));
        h.publish_video(frame(3, false, 300));
        let mut expected = vec![0x82, 10];
        expected.extend([2u8; 10]);
        expected.extend([0x82, 126, 1, 44]);
        expected.extend([3u8; 300]);
        assert_eq!(*sock.written.lock().unwrap(), expected);
        assert!(writer_step(&c).is_none(), "nothing was queued");
        assert_eq!(h.metrics.frames_sent_direct.load(Ordering::Relaxed), 2);
        assert_eq!(h.metrics.frames_sent.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_frame_the_socket_cuts_short_is_finished_by_the_writer_and_never_dropped() {
        let h = hub(3);
        h.publish_video(frame(1, true, 100));
        let c = h.join();
        let sock = with_socket(&c, 0);
        assert_eq!(seqs(&writer_step(&c).unwrap()), vec![1]);
        assert!(writer_step(&c).is_none());
        *sock.room.lock().unwrap() = 50;
        h.publish_video(frame(2, false, 100));
        assert_eq!(sock.written.lock().unwrap().len(), 50, "the socket took 50 bytes");
        // The client falls behind: its queue overflows, but frame 2's rest must follow
        // the 50 bytes already sent, so it stays while the frames after it are dropped.
        for seq in 3..=8 {
            h.publish_video(frame(seq, seq == 7, 100));
        }
        let b = writer_step(&c).expect("a backlog");
        assert_eq!(b.offset, 50);
        assert_eq!(seqs(&b)[0], 2);
        assert_eq!(seqs(&b)[1..], [7, 8]);
        assert_eq!(h.metrics.frames_sent_direct.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn fan_out_threads_deliver_every_frame_in_order_to_every_client() {
        let h = hub(1000).with_fanout_threads(2).unwrap();
        h.publish_video(frame(1, true, 10));
        let clients: Vec<_> = (0..5).map(|_| h.join()).collect();
        let sockets: Vec<_> = clients.iter().map(|c| with_socket(c, 1 << 20)).collect();
        for c in &clients {
            assert_eq!(seqs(&writer_step(c).unwrap()), vec![1]);
            assert!(writer_step(c).is_none());
        }
        for seq in 2..=200 {
            h.publish_video(frame(seq, false, 10));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.metrics.frames_sent_direct.load(Ordering::Relaxed) < 5 * 199 {
            assert!(Instant::now() < deadline, "the fan-out threads did not deliver");
            std::thread::sleep(Duration::from_millis(1));
        }
        for sock in &sockets {
            // Each frame: [0x82, 10] and ten bytes of its seq.
            let got: Vec<u8> = sock.written.lock().unwrap().chunks(12).map(|f| f[2]).collect();
            assert_eq!(got, (2..=200).map(|s| s as u8).collect::<Vec<_>>());
        }
    }

    /// A video frame as the ring reader builds it: `[0x01][32-byte header][payload]`.
    fn h264_frame(seq: u64, keyframe: bool, payload: usize) -> VideoFrame {
        let mut m = vec![0x01];
        let mut header = [0u8; 32];
        header[22] = 1; // H.264
        m.extend_from_slice(&header);
        m.extend(std::iter::repeat_n(seq as u8, payload));
        VideoFrame {
            message: m.into(),
            keyframe,
            frame_seq: seq,
            read_ns: 1,
            commit_ns: None,
        }
    }

    /// The Foxglove subscription ids of the Message Data frames in `wire`.
    fn foxglove_subs(wire: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let (len, hl) = match wire[at + 1] {
                126 => (u16::from_be_bytes([wire[at + 2], wire[at + 3]]) as usize, 4),
                n => (n as usize, 2),
            };
            let body = &wire[at + hl..at + hl + len];
            assert_eq!(body[0], crate::foxglove::OP_MESSAGE_DATA);
            out.push(u32::from_le_bytes(body[1..5].try_into().unwrap()));
            at += hl + len;
        }
        out
    }

    #[test]
    fn foxglove_clients_get_video_only_while_subscribed_with_their_subscription_id() {
        let h = hub(100);
        h.publish_video(h264_frame(1, true, 50));
        let c = h.connect_foxglove("{}");
        let sock = with_socket(&c, 1 << 20);
        let hello = writer_step(&c).expect("serverInfo and advertise");
        assert!(hello.items.is_empty() && hello.control.starts_with(&[0x81]));
        assert!(writer_step(&c).is_none(), "no video before subscribing");
        h.publish_video(h264_frame(2, false, 50));
        assert!(sock.written.lock().unwrap().is_empty());
        assert!(!h.subscribe(&c, 5, 9), "no channel 5");
        assert!(h.subscribe(&c, crate::foxglove::VIDEO_CHANNEL_ID, 9));
        assert!(
            !h.subscribe(&c, crate::foxglove::VIDEO_CHANNEL_ID, 10),
            "one subscription per channel"
        );
        let burst = writer_step(&c).expect("the GOP burst");
        assert_eq!((seqs(&burst), burst.subs.video), (vec![1, 2], Some(9)));
        assert!(writer_step(&c).is_none());
        h.publish_video(h264_frame(3, false, 50));
        h.publish_telemetry(Bytes::from_static(b"\x02\x01\x00x{}"));
        assert_eq!(
            foxglove_subs(&sock.written.lock().unwrap()),
            vec![9],
            "telemetry is not sent"
        );
        h.unsubscribe(&c, 9);
        h.publish_video(h264_frame(4, false, 50));
        assert_eq!(foxglove_subs(&sock.written.lock().unwrap()), vec![9]);
    }

    #[test]
    fn a_partly_written_foxglove_message_keeps_its_subscription_id() {
        let h = hub(100);
        h.publish_video(h264_frame(1, true, 200));
        let c = h.connect_foxglove("{}");
        let sock = with_socket(&c, 0);
        assert!(h.subscribe(&c, crate::foxglove::VIDEO_CHANNEL_ID, 1));
        writer_step(&c).unwrap();
        assert!(writer_step(&c).is_none());
        *sock.room.lock().unwrap() = 20;
        h.publish_video(h264_frame(2, false, 200));
        // Resubscribed under another id while the rest of frame 2 waits.
        h.unsubscribe(&c, 1);
        assert!(h.subscribe(&c, crate::foxglove::VIDEO_CHANNEL_ID, 2));
        let b = writer_step(&c).unwrap();
        assert_eq!((b.offset, b.front_subscription, b.subs.video), (20, Some(1), Some(2)));
        assert_eq!(
            seqs(&b),
            vec![2, 1, 2],
            "frame 2's rest, then the new subscription's GOP (1, 2)"
        );
    }

    #[test]
    fn a_failed_direct_write_ends_the_connection() {
        #[derive(Debug)]
        struct Broken;
        impl DirectSink for Broken {
            fn try_write_vectored(&self, _: &[IoSlice<'_>]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
        }
        let h = hub(100);
        h.publish_video(frame(1, true, 10));
        let c = h.join();
        c.attach_sink(Arc::new(Broken));
        writer_step(&c).unwrap();
        assert!(writer_step(&c).is_none());
        h.publish_video(frame(2, false, 10));
        let b = writer_step(&c).expect("the end");
        assert!(b.end && b.items.is_empty());
    }

    #[test]
    fn new_client_starts_from_the_gop_cache() {
        let h = hub(100);
        h.publish_video(frame(1, false, 10));
        h.publish_video(frame(2, true, 10));
        h.publish_video(frame(3, false, 10));
        let c = h.join();
        h.publish_video(frame(4, false, 10));
        assert_eq!(take(&c), vec![2, 3, 4]);
    }

    #[test]
    fn the_join_burst_does_not_count_against_the_limits() {
        let h = hub(4);
        h.publish_video(frame(1, true, 10));
        for seq in 2..=10 {
            h.publish_video(frame(seq, false, 10));
        }
        let c = h.join();
        h.publish_video(frame(11, false, 10));
        h.publish_video(frame(12, false, 10));
        assert_eq!(take(&c), (1..=12).collect::<Vec<_>>());
        assert_eq!(c.dropped(), 0);
    }

    #[test]
    fn a_client_starved_of_keyframes_is_closed_with_a_reason() {
        let metrics = Arc::new(Metrics::default());
        let keyframes = Arc::new(KeyframeRequests::new(Duration::from_millis(500), metrics.clone()));
        let limits = QueueLimits {
            max_frames: 10,
            max_bytes: 1 << 20,
            keyframe_timeout: Duration::from_millis(20),
        };
        let h = Hub::new(limits, metrics, keyframes);
        let c = h.join(); // no keyframe cached: waits for one
        h.publish_video(frame(1, false, 10));
        std::thread::sleep(Duration::from_millis(30));
        h.publish_video(frame(2, false, 10));
        let close = c.lock().close.clone().expect("closed");
        assert_eq!(close.code, 1013);
        assert!(close.reason.contains("no keyframe"));
    }

    #[test]
    fn client_without_cached_keyframe_waits_for_one() {
        let h = hub(100);
        let c = h.join();
        h.publish_video(frame(1, false, 10));
        h.publish_video(frame(2, true, 10));
        assert_eq!(take(&c), vec![2]);
        assert_eq!(c.dropped(), 1);
    }

    #[test]
    fn overflow_drops_one_client_to_the_next_keyframe_only() {
        let h = hub(4);
        let slow = h.join();
        let fast = h.join();
        h.publish_video(frame(1, true, 10));
        let mut fast_seen = take(&fast);
        for seq in 2..=10 {
            h.publish_video(frame(seq, seq == 8, 10));
            fast_seen.extend(take(&fast));
        }
        assert_eq!(fast_seen, (1..=10).collect::<Vec<_>>());
        // The slow one overflowed at frame 5, skipped 6 and 7, resumed at keyframe 8.
        assert_eq!(take(&slow), vec![8, 9, 10]);
        assert_eq!(slow.dropped(), 7);
    }
}
