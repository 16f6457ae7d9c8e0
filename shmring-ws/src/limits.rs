//! Limits a client cannot get around: frames and bytes counted on the wire (every
//! frame, empty continuation frames and control frames included, before the WebSocket
//! library assembles messages), a command budget shared by all clients, and keyframe
//! requests coalesced per client.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Where the scanner is in the client's byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScanState {
    /// Collecting a frame header (`have` bytes of it so far).
    Header,
    /// Skipping `left` payload bytes.
    Payload { left: u64 },
}

/// Counts the WebSocket frames in a client's byte stream as it is read, whatever the
/// frames are (a library counting messages misses empty continuation frames, which
/// cost a server as much as any other).
#[derive(Debug)]
pub(crate) struct FrameMeter {
    state: ScanState,
    header: [u8; 14],
    have: usize,
}

impl Default for FrameMeter {
    fn default() -> Self {
        FrameMeter {
            state: ScanState::Header,
            header: [0; 14],
            have: 0,
        }
    }
}

/// Length of a client frame's header (2 to 14 bytes), from its first two bytes.
fn header_len(b1: u8) -> usize {
    let masked = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + masked
        + match b1 & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        }
}

impl FrameMeter {
    /// Feeds bytes read from the client; returns how many frames *started* in them
    /// (a frame counts once its header is complete).
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut frames = 0;
        while !bytes.is_empty() {
            match self.state {
                ScanState::Payload { left } => {
                    let n = (left.min(bytes.len() as u64)) as usize;
                    bytes = &bytes[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ScanState::Header
                    } else {
                        ScanState::Payload { left }
                    };
                }
                ScanState::Header => {
                    let want = if self.have < 2 { 2 } else { header_len(self.header[1]) };
                    let n = (want - self.have).min(bytes.len());
                    self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                    self.have += n;
                    bytes = &bytes[n..];
                    if self.have < 2 || self.have < header_len(self.header[1]) {
                        continue;
                    }
                    let len = match self.header[1] & 0x7F {
                        126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                        127 => u64::from_be_bytes(self.header[2..10].try_into().unwrap_or_default()),
                        n => u64::from(n),
                    };
                    frames += 1;
                    self.have = 0;
                    self.state = if len == 0 {
                        ScanState::Header
                    } else {
                        ScanState::Payload { left: len }
                    };
                }
            }
        }
        frames
    }
}

/// Per-second frame and byte limits of one connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WireLimits {
    /// Most frames a client may send in a second (every kind of frame).
    pub max_frames_per_sec: u64,
    /// Most bytes a client may send in a second.
    pub max_bytes_per_sec: u64,
}

/// One connection's inbound traffic against its [`WireLimits`].
#[derive(Debug)]
pub(crate) struct WireMeter {
    meter: FrameMeter,
    limits: WireLimits,
    window_start: Instant,
    frames: u64,
    bytes: u64,
}

/// A limit a client went over: the reason sent in its close frame (1008).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Exceeded(pub String);

impl WireMeter {
    /// A meter enforcing `limits`, its first one-second window starting at `now`.
    pub(crate) fn new(limits: WireLimits, now: Instant) -> WireMeter {
        WireMeter {
            meter: FrameMeter::default(),
            limits,
            window_start: now,
            frames: 0,
            bytes: 0,
        }
    }

    /// Counts bytes just read from the client, at `now`; fails once the client sent
    /// more frames or bytes within a second than the limits allow.
    pub(crate) fn read(&mut self, bytes: &[u8], now: Instant) -> Result<(), Exceeded> {
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.frames = 0;
            self.bytes = 0;
        }
        self.frames += self.meter.feed(bytes);
        self.bytes += bytes.len() as u64;
        if self.frames > self.limits.max_frames_per_sec {
            return Err(Exceeded(format!(
                "frame flood: more than {} frames/s",
                self.limits.max_frames_per_sec
            )));
        }
        if self.bytes > self.limits.max_bytes_per_sec {
            return Err(Exceeded(format!(
                "byte flood: more than {} bytes/s",
                self.limits.max_bytes_per_sec
            )));
        }
        Ok(())
    }
}

/// A token bucket shared by every client: commands published per second, all clients
/// together (each client also has its own message limit).
#[derive(Debug)]
pub(crate) struct CommandBudget {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl CommandBudget {
    /// A budget of `per_sec` commands a second, with bursts of up to one second's worth.
    pub(crate) fn new(per_sec: u32) -> CommandBudget {
        let rate = f64::from(per_sec.max(1));
        CommandBudget {
            rate,
            burst: rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes one command from the budget at `now`; false when it is spent.
    pub(crate) fn try_take(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = &mut *s;
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now.max(*last);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One client's keyframe requests: at most one per interval is passed on (the others
/// are answered by the keyframe the first one brings).
#[derive(Debug)]
pub(crate) struct KeyframeRequestLimiter {
    interval: Duration,
    last: Option<Instant>,
}

impl KeyframeRequestLimiter {
    /// A limiter passing one request per `interval`.
    pub(crate) fn new(interval: Duration) -> KeyframeRequestLimiter {
        KeyframeRequestLimiter { interval, last: None }
    }

    /// True when a request made at `now` is to be passed on.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

/// The WebSocket client slots: a place is reserved (atomically: the check and the
/// count are one step, so simultaneous handshakes cannot overshoot) before the 101 is
/// sent and freed when the connection ends.
#[derive(Debug)]
pub(crate) struct ClientSlots {
    max: usize,
    taken: AtomicUsize,
}

/// A reserved client slot; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct ClientSlot {
    owner: Arc<ClientSlots>,
}

impl ClientSlots {
    /// At most `max` (at least 1) clients at once.
    pub(crate) fn new(max: usize) -> Arc<ClientSlots> {
        Arc::new(ClientSlots {
            max: max.max(1),
            taken: AtomicUsize::new(0),
        })
    }

    /// The most clients at once.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Reserves a place; `None` when all are taken.
    pub(crate) fn reserve(self: &Arc<Self>) -> Option<ClientSlot> {
        // Relaxed: a counter alone; no other memory is published through it.
        self.taken
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| ClientSlot { owner: self.clone() })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        // Relaxed: see `reserve`.
        self.owner.taken.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Descriptors kept free for everything but client sockets (ring, NATS, epoll, logs,
/// `/metrics`, the listeners).
const RESERVED_DESCRIPTORS: usize = 64;
/// The most clients derived from the descriptor limit (each client also costs memory).
pub(crate) const MAX_CLIENTS_DERIVED_CEILING: usize = 4096;

/// The process's soft limit on open file descriptors (`ulimit -n`), from
/// `/proc/self/limits`; `None` if unknown or unlimited.
fn descriptor_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The most simultaneous clients the descriptor limit `nofile` leaves room for: after
/// the reserved descriptors and `max_pending` sockets in their HTTP phase, one
/// descriptor per client (three with TLS: the client's, and both ends of the
/// connection to the internal listener).
pub(crate) fn client_capacity(nofile: usize, max_pending: usize, tls: bool) -> usize {
    let per_client = if tls { 3 } else { 1 };
    (nofile.saturating_sub(RESERVED_DESCRIPTORS + max_pending) / per_client).max(1)
}

/// The client limit to run with: `configured`, or (0) one derived from the descriptor
/// limit ([`client_capacity`], at most [`MAX_CLIENTS_DERIVED_CEILING`]). A configured
/// limit the descriptors cannot hold is kept, with a warning.
pub(crate) fn max_clients(configured: usize, max_pending: usize, tls: bool) -> usize {
    let capacity = descriptor_limit().map(|n| client_capacity(n, max_pending, tls));
    match (configured, capacity) {
        (0, Some(c)) => c.min(MAX_CLIENTS_DERIVED_CEILING),
        (0, None) => MAX_CLIENTS_DERIVED_CEILING,
        (n, Some(c)) if n > c => {
            tracing::warn!(
                "--max-clients {n} is more than the descriptor limit leaves room for ({c}; ulimit -n {}): \
                 past that, new connections fail instead of getting a 503",
                descriptor_limit().unwrap_or(0)
            );
            n
        }
        (n, _) => n,
    }
}

/// Connections still in their HTTP phase (accepted, request head not yet read): at most
/// `cap` that have been waiting for [`PendingConnections::MIN_AGE`] or longer. One more
/// evicts the oldest, a socket that sent nothing for longest (a slowloris or an idle
/// pre-connect), rather than turning the newcomer away, so idle sockets cannot keep
/// `/health` or a viewer out. Young sockets are never evicted for a newcomer (a burst
/// of real clients connecting at once all get in); out of file descriptors, the server
/// evicts the oldest whatever its age ([`PendingConnections::evict_oldest`]).
#[derive(Debug)]
pub(crate) struct PendingConnections {
    cap: usize,
    state: Mutex<PendingState>,
}

#[derive(Debug, Default)]
struct PendingState {
    next_id: u64,
    queue: VecDeque<(u64, Instant, Arc<Notify>)>,
}

/// One connection's place among the pending ones; dropping it (the request head was
/// read, or the connection ended) frees the place.
#[derive(Debug)]
pub(crate) struct PendingTicket {
    id: u64,
    evicted: Arc<Notify>,
    owner: Arc<PendingConnections>,
}

impl PendingConnections {
    /// At most `cap` (at least 1) connections pending at once.
    pub(crate) fn new(cap: usize) -> Arc<PendingConnections> {
        Arc::new(PendingConnections {
            cap: cap.max(1),
            state: Mutex::new(PendingState::default()),
        })
    }

    /// How long a socket may be pending before a newcomer can evict it.
    pub(crate) const MIN_AGE: Duration = Duration::from_millis(500);

    /// Registers a new pending connection at `now`; returns its ticket and whether an
    /// older one was evicted for it.
    pub(crate) fn admit(self: &Arc<Self>, now: Instant) -> (PendingTicket, bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted_one = false;
        let oldest_is_stale = s
            .queue
            .front()
            .is_some_and(|(_, since, _)| now.saturating_duration_since(*since) >= Self::MIN_AGE);
        if s.queue.len() >= self.cap && oldest_is_stale {
            evicted_one = Self::pop_oldest(&mut s);
        }
        let id = s.next_id;
        s.next_id += 1;
        let evicted = Arc::new(Notify::new());
        s.queue.push_back((id, now, evicted.clone()));
        (
            PendingTicket {
                id,
                evicted,
                owner: self.clone(),
            },
            evicted_one,
        )
    }

    /// Evicts the oldest pending connection, whatever its age (the server is out of
    /// file descriptors); false if none is pending.
    pub(crate) fn evict_oldest(&self) -> bool {
        Self::pop_oldest(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn pop_oldest(s: &mut PendingState) -> bool {
        match s.queue.pop_front() {
            Some((_, _, oldest)) => {
                // Stores a permit if the task is not waiting yet: it is not lost.
                oldest.notify_one();
                true
            }
            None => false,
        }
    }

    /// Connections pending now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).queue.len()
    }
}

impl PendingTicket {
    /// Completes when this connection is evicted to make room for a newer one.
    pub(crate) async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

impl Drop for PendingTicket {
    fn drop(&mut self) {
        let mut s = self.owner.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = s.queue.iter().position(|(id, _, _)| *id == self.id) {
            s.queue.remove(at);
        }
    }
}

/// When a client was last heard from (any bytes), for the ping deadline: a client
/// that answers no ping for two ping intervals is gone, or idle on purpose, and its
/// slot is freed.
#[derive(Debug)]
pub(crate) struct Liveness {
    started: Instant,
    /// Milliseconds after `started` when bytes last arrived.
    heard_ms: std::sync::atomic::AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            started: Instant::now(),
            heard_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Liveness {
    /// Records that the client sent something at `now`.
    pub(crate) fn heard(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.started).as_millis() as u64;
        // Relaxed: a monitoring timestamp, read by the same connection's ping timer;
        // no other memory is published through it.
        self.heard_ms.fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long the client has been silent at `now`.
    pub(crate) fn silent_for(&self, now: Instant) -> Duration {
        let heard = Duration::from_millis(self.heard_ms.load(std::sync::atomic::Ordering::Relaxed));
        now.saturating_duration_since(self.started).saturating_sub(heard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_slots_never_overshoot_under_simultaneous_reservations() {
        let slots = ClientSlots::new(8);
        let barrier = std::sync::Barrier::new(32);
        let got: Vec<Option<ClientSlot>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..32)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        slots.reserve()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(got.iter().filter(|s| s.is_some()).count(), 8);
        drop(got);
        assert!(slots.reserve().is_some(), "dropped slots are free again");
    }

    #[test]
    fn the_derived_client_limit_fits_the_descriptor_limit() {
        // The usual 1024: the clients, the pending sockets and the reserve all fit.
        let c = client_capacity(1024, 128, false);
        assert!(c + 128 + RESERVED_DESCRIPTORS <= 1024 && c >= 800, "{c}");
        assert_eq!(client_capacity(1024, 128, true), c / 3);
        assert_eq!(client_capacity(10, 128, false), 1);
    }

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        let n = payload.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n <= 0xFFFF {
            f.push(0x80 | 126);
            f.extend((n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend((n as u64).to_be_bytes());
        }
        f.extend([1, 2, 3, 4]);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]));
        f
    }

    #[test]
    fn every_frame_is_counted_whatever_its_size_or_kind() {
        let mut stream = frame(false, 2, b"ab");
        for _ in 0..1000 {
            stream.extend(frame(false, 0, b"")); // empty continuation frames
        }
        stream.extend(frame(true, 0, &[7; 300]));
        stream.extend(frame(true, 9, b"")); // a ping
        stream.extend(frame(true, 2, &[0; 70_000]));
        let mut whole = FrameMeter::default();
        assert_eq!(whole.feed(&stream), 1004);
        // The same stream in pieces of every size counts the same.
        for piece in [1, 2, 3, 7, 13, 4096] {
            let mut m = FrameMeter::default();
            let n: u64 = stream.chunks(piece).map(|c| m.feed(c)).sum();
            assert_eq!(n, 1004, "pieces of {piece} bytes");
        }
    }

    #[test]
    fn a_flood_of_empty_frames_exceeds_the_frame_limit() {
        let limits = WireLimits {
            max_frames_per_sec: 100,
            max_bytes_per_sec: 1 << 20,
        };
        let t0 = Instant::now();
        let mut m = WireMeter::new(limits, t0);
        let empty = frame(false, 0, b"");
        for _ in 0..100 {
            m.read(&empty, t0).unwrap();
        }
        let e = m.read(&empty, t0).unwrap_err();
        assert!(e.0.contains("frame flood"), "{e:?}");
        // A new second starts a new window.
        let mut m = WireMeter::new(limits, t0);
        for s in 0..5 {
            for _ in 0..100 {
                m.read(&empty, t0 + Duration::from_secs(s)).unwrap();
            }
        }
    }

    #[test]
    fn too_many_bytes_exceed_the_byte_limit() {
        let t0 = Instant::now();
        let mut m = WireMeter::new(
            WireLimits {
                max_frames_per_sec: 1000,
                max_bytes_per_sec: 1000,
            },
            t0,
        );
        m.read(&[0; 600], t0).unwrap();
        assert!(m.read(&[0; 600], t0).unwrap_err().0.contains("byte flood"));
    }

    #[test]
    fn the_command_budget_refills_at_its_rate() {
        let b = CommandBudget::new(10);
        let t0 = Instant::now();
        assert_eq!((0..20).filter(|_| b.try_take(t0)).count(), 10, "one second's burst");
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
        assert!(b.try_take(t0 + Duration::from_millis(110)), "one more after 1/10 s");
        assert_eq!(
            (0..100).filter(|_| b.try_take(t0 + Duration::from_secs(60))).count(),
            10,
            "capped at the burst"
        );
    }

    #[test]
    fn the_oldest_pending_connection_makes_room_for_a_new_one() {
        use futures_util::FutureExt;
        let pending = PendingConnections::new(2);
        let t0 = Instant::now();
        let later = t0 + PendingConnections::MIN_AGE;
        let (a, evicted) = pending.admit(t0);
        assert!(!evicted);
        let (b, _) = pending.admit(t0);
        assert!(a.evicted().now_or_never().is_none(), "room for two");
        let (c, evicted) = pending.admit(later);
        assert!(evicted && pending.len() == 2);
        assert!(a.evicted().now_or_never().is_some(), "the oldest was told to go");
        assert!(b.evicted().now_or_never().is_none());
        drop(b); // its request arrived
        let (_d, evicted) = pending.admit(later);
        assert!(!evicted && pending.len() == 2);
        drop(c);
        drop(a);
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn a_burst_of_young_connections_is_not_evicted_but_a_lack_of_descriptors_evicts() {
        use futures_util::FutureExt;
        let pending = PendingConnections::new(2);
        let t0 = Instant::now();
        let tickets: Vec<_> = (0..5).map(|_| pending.admit(t0)).collect();
        assert!(tickets
            .iter()
            .all(|(t, evicted)| !evicted && t.evicted().now_or_never().is_none()));
        assert_eq!(pending.len(), 5, "all admitted over the cap");
        assert!(pending.evict_oldest());
        assert!(tickets[0].0.evicted().now_or_never().is_some());
        assert_eq!(pending.len(), 4);
    }

    #[test]
    fn silence_is_measured_from_the_last_bytes_heard() {
        let l = Liveness::default();
        let t0 = l.started;
        assert_eq!(l.silent_for(t0 + Duration::from_secs(3)), Duration::from_secs(3));
        l.heard(t0 + Duration::from_secs(2));
        l.heard(t0 + Duration::from_secs(1)); // an older stamp never moves it back
        assert_eq!(l.silent_for(t0 + Duration::from_secs(3)), Duration::from_secs(1));
    }

    #[test]
    fn keyframe_requests_of_one_client_are_coalesced() {
        let mut g = KeyframeRequestLimiter::new(Duration::from_secs(2));
        let t0 = Instant::now();
        assert!(g.allow(t0));
        assert!(!g.allow(t0 + Duration::from_millis(500)));
        assert!(!g.allow(t0 + Duration::from_millis(1999)));
        assert!(g.allow(t0 + Duration::from_secs(2)));
    }
}
