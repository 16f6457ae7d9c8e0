//! Counters the server exposes on `/metrics` (Prometheus text format) and `/health`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::message::Outgoing;

mod nats;
mod trust;
pub(crate) use nats::NatsVideoMetrics;
pub use nats::NatsVideoSnapshot;
pub(crate) use trust::TrustMetrics;
pub use trust::TrustSnapshot;

/// Why frames (or messages) did not reach a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The client's queue overflowed (bytes or frames); it resumes at the next keyframe.
    QueueOverflow,
    /// Delta frames skipped while the client waited for a keyframe.
    AwaitingKeyframe,
    /// Frames the server's own ring reader lost (lapped by the writer, or bad records).
    RingLost,
    /// Telemetry messages over the size cap or outside the allowlist.
    Telemetry,
}

impl DropReason {
    const ALL: [DropReason; 4] = [
        DropReason::QueueOverflow,
        DropReason::AwaitingKeyframe,
        DropReason::RingLost,
        DropReason::Telemetry,
    ];
}

/// Upper bounds (seconds) of the latency histogram buckets.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Counts one thread collects while it writes to many clients, added to the shared
/// counters once ([`SentTally::flush`]) instead of once per client and message.
#[derive(Debug, Default)]
pub(crate) struct SentTally {
    frames: u64,
    telemetry: u64,
    bytes: u64,
    commit_to_send: LocalHistogram,
    read_to_send: LocalHistogram,
}

#[derive(Debug, Default)]
struct LocalHistogram {
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum_ns: u64,
    count: u64,
}

impl LocalHistogram {
    fn observe_ns(&mut self, ns: u64) {
        self.buckets[bucket_of(ns)] += 1;
        self.sum_ns += ns;
        self.count += 1;
    }

    fn flush(&self, into: &Histogram) {
        if self.count == 0 {
            return;
        }
        for (b, n) in into.buckets.iter().zip(&self.buckets) {
            if *n > 0 {
                b.fetch_add(*n, Ordering::Relaxed);
            }
        }
        into.sum_ns.fetch_add(self.sum_ns, Ordering::Relaxed);
        into.count.fetch_add(self.count, Ordering::Relaxed);
    }
}

impl SentTally {
    /// Counts `item` as handed to a client's socket at `now_ns`.
    pub(crate) fn sent(&mut self, item: &Outgoing, now_ns: u64) {
        self.bytes += item.message().len() as u64;
        match item {
            Outgoing::Video(frame) | Outgoing::Camera(_, frame) => {
                self.frames += 1;
                if let Some(commit) = frame.commit_ns {
                    self.commit_to_send.observe_ns(now_ns.saturating_sub(commit));
                }
                self.read_to_send.observe_ns(now_ns.saturating_sub(frame.read_ns));
            }
            Outgoing::Telemetry(_) => self.telemetry += 1,
        }
    }

    /// Adds the counts to `metrics`; `direct` if the fan-out wrote them itself.
    pub(crate) fn flush(&self, metrics: &Metrics, direct: bool) {
        let add = |a: &Counter, n: u64| {
            if n > 0 {
                a.add(n);
            }
        };
        add(&metrics.frames_sent, self.frames);
        if direct {
            add(&metrics.frames_sent_direct, self.frames);
        }
        add(&metrics.telemetry_sent, self.telemetry);
        add(&metrics.bytes_sent, self.bytes);
        self.commit_to_send.flush(&metrics.commit_to_send);
        self.read_to_send.flush(&metrics.read_to_send);
    }
}

fn bucket_of(ns: u64) -> usize {
    let secs = ns as f64 * 1e-9;
    LATENCY_BUCKETS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(LATENCY_BUCKETS.len())
}

/// A Prometheus histogram with fixed buckets and lock-free updates.
#[derive(Debug, Default)]
struct Histogram {
    /// Non-cumulative counts; the last slot is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns.load(Ordering::Relaxed) as f64 * 1e-9);
        let _ = writeln!(out, "{name}_count {}", self.count.load(Ordering::Relaxed));
    }
}

/// Frames older than this make `/health` say `stale`.
const STALE_AFTER_MS: u64 = 5_000;

/// A monotonic count for monitoring (a Prometheus counter): relaxed atomic adds, since
/// no other memory is published through it.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// A counter at 0.
    pub(crate) const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Counts one.
    pub(crate) fn inc(&self) {
        self.add(1);
    }

    /// Counts `n`.
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count now.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Server-wide counters, shared by the reader thread, the client tasks and the HTTP
/// handlers. All updates are relaxed atomics: the numbers are for monitoring.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// Frames the reader thread took out of the ring.
    pub(crate) frames_read: Counter,
    /// frame_seq of the newest frame read (0 before the first).
    pub(crate) shm_seq: AtomicU64,
    /// CLOCK_MONOTONIC ns when the newest frame was read (0 before the first).
    pub(crate) last_frame_ns: AtomicU64,
    /// 1 if the ring's writer holds its lock, 0 if not, -1 if unknown (no ring yet, a
    /// legacy ring whose writer holds no lock, or a NATS source).
    pub(crate) writer_alive: AtomicI64,
    /// True while the ring's live writer has committed no frame since the reader thread
    /// opened the ring or saw a new writer take it over (a simulator re-run on an
    /// existing ring, building its scene): `/health` says `starting`, not `stale`.
    pub(crate) writer_starting: AtomicBool,
    /// Video frames handed to the clients (SDR_OS's `frames_broadcast`).
    pub(crate) frames_broadcast: Counter,
    /// Payload bytes of those frames (for `avg_frame_size_bytes`).
    pub(crate) bytes_broadcast: Counter,
    /// Codec id of the newest frame (0 before the first).
    pub(crate) last_codec: AtomicU64,
    /// Client commands the video gate held back.
    pub(crate) commands_gated: Counter,
    /// Video frames written to clients.
    pub(crate) frames_sent: Counter,
    /// Of `frames_sent`, those the publishing thread wrote straight to the socket (the
    /// client had no backlog); the rest went through the client's queue and writer task.
    pub(crate) frames_sent_direct: Counter,
    /// Frames whose frame_id was to be their commit time (`--frame-id-commit-time`) but
    /// was in the future or more than a minute old; they are left out of the
    /// commit-to-send histogram.
    pub(crate) commit_time_invalid: Counter,
    /// WebSocket message bytes written to clients (video and telemetry).
    pub(crate) bytes_sent: Counter,
    /// Telemetry messages written to clients.
    pub(crate) telemetry_sent: Counter,
    /// Connected WebSocket clients.
    pub(crate) clients: AtomicI64,
    /// WebSocket connections accepted since start.
    pub(crate) connections_total: Counter,
    /// Connections the server closed for misbehaviour or a stalled stream.
    pub(crate) clients_closed_by_server: Counter,
    /// Keyframe requests sent to the producer (after coalescing).
    pub(crate) keyframe_requests: Counter,
    /// Keyframe requests suppressed by coalescing.
    pub(crate) keyframe_requests_coalesced: Counter,
    /// Client messages that were not understood (unknown type, bad JSON, bad action).
    pub(crate) client_messages_malformed: Counter,
    /// Client commands published to NATS.
    pub(crate) commands_published: Counter,
    /// Client commands dropped (NATS not configured, or its queue full).
    pub(crate) commands_dropped: Counter,
    /// Client commands replaced, before NATS took them, by a newer one of their kind
    /// (motion: the newest setpoint wins; safety: a client's flood keeps its last word).
    pub(crate) commands_superseded: Counter,
    /// Errors the ring reader reported (damaged records skipped).
    pub(crate) ring_read_errors: Counter,
    /// HTTP requests that were not WebSocket upgrades.
    pub(crate) http_requests: Counter,
    /// Counters of the NATS video publisher and source (`shmring_ws_nats_*`).
    pub(crate) nats_video: NatsVideoMetrics,
    /// Counters of the trust boundary (refusals, resets, evictions).
    pub(crate) trust: TrustMetrics,
    drops: [AtomicU64; 4],
    commit_to_send: Histogram,
    read_to_send: Histogram,
    nats_state: Mutex<&'static str>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            frames_read: Counter::new(),
            shm_seq: AtomicU64::new(0),
            last_frame_ns: AtomicU64::new(0),
            writer_alive: AtomicI64::new(-1),
            writer_starting: AtomicBool::new(false),
            frames_broadcast: Counter::new(),
            bytes_broadcast: Counter::new(),
            last_codec: AtomicU64::new(0),
            commands_gated: Counter::new(),
            frames_sent: Counter::new(),
            frames_sent_direct: Counter::new(),
            commit_time_invalid: Counter::new(),
            bytes_sent: Counter::new(),
            telemetry_sent: Counter::new(),
            clients: AtomicI64::new(0),
            connections_total: Counter::new(),
            clients_closed_by_server: Counter::new(),
            keyframe_requests: Counter::new(),
            keyframe_requests_coalesced: Counter::new(),
            client_messages_malformed: Counter::new(),
            commands_published: Counter::new(),
            commands_dropped: Counter::new(),
            commands_superseded: Counter::new(),
            ring_read_errors: Counter::new(),
            http_requests: Counter::new(),
            nats_video: NatsVideoMetrics::default(),
            trust: TrustMetrics::default(),
            drops: Default::default(),
            commit_to_send: Histogram::default(),
            read_to_send: Histogram::default(),
            nats_state: Mutex::new("off"),
        }
    }
}

impl Metrics {
    /// Counts `n` frames or messages not delivered for `reason`.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        self.drops[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Drops counted so far for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Ordering::Relaxed)
    }

    /// Records the NATS connection state shown on `/health` ("off", "connected",
    /// "disconnected", ...).
    pub fn set_nats_state(&self, state: &'static str) {
        *self.nats_state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// The NATS connection state.
    pub fn nats_state(&self) -> &'static str {
        *self.nats_state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds since the newest frame was read, if one was.
    pub fn last_frame_age_ms(&self) -> Option<u64> {
        let at = self.last_frame_ns.load(Ordering::Relaxed);
        (at != 0).then(|| shmring_core::monotonic_ns().saturating_sub(at) / 1_000_000)
    }

    /// The counters and gauges as they are now: one relaxed load each.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            frames_read: self.frames_read.get(),
            shm_seq: get(&self.shm_seq),
            last_frame_age_ms: self.last_frame_age_ms(),
            writer_alive: self.writer_alive.load(Ordering::Relaxed),
            frames_broadcast: self.frames_broadcast.get(),
            bytes_broadcast: self.bytes_broadcast.get(),
            last_codec: get(&self.last_codec),
            commands_gated: self.commands_gated.get(),
            frames_sent: self.frames_sent.get(),
            frames_sent_direct: self.frames_sent_direct.get(),
            commit_time_invalid: self.commit_time_invalid.get(),
            bytes_sent: self.bytes_sent.get(),
            telemetry_sent: self.telemetry_sent.get(),
            clients: self.clients.load(Ordering::Relaxed),
            connections_total: self.connections_total.get(),
            clients_closed_by_server: self.clients_closed_by_server.get(),
            keyframe_requests: self.keyframe_requests.get(),
            keyframe_requests_coalesced: self.keyframe_requests_coalesced.get(),
            client_messages_malformed: self.client_messages_malformed.get(),
            commands_published: self.commands_published.get(),
            commands_dropped: self.commands_dropped.get(),
            commands_superseded: self.commands_superseded.get(),
            ring_read_errors: self.ring_read_errors.get(),
            http_requests: self.http_requests.get(),
            drops: DropReason::ALL.map(|reason| self.drops(reason)),
            nats_video: self.nats_video.snapshot(),
            trust: self.trust.snapshot(),
            nats_state: self.nats_state(),
            uptime_s: self.started.elapsed().as_secs(),
        }
    }

    /// The `/health` document: SDR_OS's keys and ours. `status` is `ok` while frames
    /// are fresh from a live writer, or from one whose liveness cannot be probed (a
    /// legacy writer holding no lock, a NATS source: liveness from the frame age);
    /// `starting` while a live writer has not produced its first frame (or, on a ring it
    /// reopened, none since it took the ring over); `stale`,
    /// `writer_down` or `waiting_for_ring` otherwise.
    pub fn health_json(&self) -> String {
        let s = self.snapshot();
        let status = self.stream_status(&s);
        let lag = s.dropped(DropReason::QueueOverflow) + s.dropped(DropReason::AwaitingKeyframe);
        serde_json::json!({
            "status": status,
            "clients": s.clients,
            "shm_seq": s.shm_seq,
            "last_frame_age_ms": s.last_frame_age_ms,
            "writer_alive": match s.writer_alive { 1 => Some(true), 0 => Some(false), _ => None },
            "frames_read": s.frames_read,
            "frames_sent": s.frames_sent,
            "frames_broadcast": s.frames_broadcast,
            "client_lag_total": lag,
            "avg_frame_size_bytes": s.bytes_broadcast.checked_div(s.frames_broadcast).unwrap_or(0),
            "nats": s.nats_state,
            "uptime_s": s.uptime_s,
        })
        .to_string()
    }

    /// The stream's state as `/health` names it: `ok`, `starting`, `waiting_for_ring`,
    /// `writer_down` or `stale` (see [`Metrics::health_json`]).
    pub(crate) fn stream_status(&self, s: &MetricsSnapshot) -> &'static str {
        match (s.writer_alive, s.last_frame_age_ms) {
            (1 | -1, Some(a)) if a < STALE_AFTER_MS => "ok",
            (1, None) => "starting",
            (1, Some(_)) if self.writer_starting.load(Ordering::Relaxed) => "starting",
            (-1, None) => "waiting_for_ring",
            (0, _) => "writer_down",
            _ => "stale",
        }
    }

    /// The `/metrics` document (Prometheus text exposition format 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let s = self.snapshot();
        render_families(&mut out, &s, FAMILIES);
        for (histogram, name, help) in [
            (
                &self.commit_to_send,
                "shmring_ws_commit_to_send_seconds",
                COMMIT_TO_SEND_HELP,
            ),
            (&self.read_to_send, "shmring_ws_read_to_send_seconds", READ_TO_SEND_HELP),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            histogram.render(&mut out, name);
        }
        render_families(&mut out, &s.nats_video, nats::FAMILIES);
        render_families(&mut out, &s.trust, trust::FAMILIES);
        out
    }
}

/// The server's counters and gauges at one moment ([`Metrics::snapshot`]): what a
/// program embedding the server reads (the live counters are the server's to change).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Frames the reader thread took out of the ring.
    pub frames_read: u64,
    /// frame_seq of the newest frame read (0 before the first).
    pub shm_seq: u64,
    /// Milliseconds since the newest frame was read, if one was.
    pub last_frame_age_ms: Option<u64>,
    /// 1 if the ring's writer holds its lock, 0 if not, -1 if unknown (no ring yet, a
    /// legacy ring whose writer holds no lock, or a NATS source).
    pub writer_alive: i64,
    /// Video frames handed to the clients (SDR_OS's `frames_broadcast`).
    pub frames_broadcast: u64,
    /// Payload bytes of those frames.
    pub bytes_broadcast: u64,
    /// Codec id of the newest frame (0 before the first).
    pub last_codec: u64,
    /// Client commands the video gate held back.
    pub commands_gated: u64,
    /// Video frames written to clients.
    pub frames_sent: u64,
    /// Of `frames_sent`, those the publishing thread wrote straight to the socket.
    pub frames_sent_direct: u64,
    /// Frames whose frame_id was to be their commit time but was not plausible.
    pub commit_time_invalid: u64,
    /// WebSocket message bytes written to clients (video and telemetry).
    pub bytes_sent: u64,
    /// Telemetry messages written to clients.
    pub telemetry_sent: u64,
    /// Connected WebSocket clients.
    pub clients: i64,
    /// WebSocket connections accepted since start.
    pub connections_total: u64,
    /// Connections the server closed for misbehaviour or a stalled stream.
    pub clients_closed_by_server: u64,
    /// Keyframe requests sent to the producer (after coalescing).
    pub keyframe_requests: u64,
    /// Keyframe requests suppressed by coalescing.
    pub keyframe_requests_coalesced: u64,
    /// Client messages that were not understood.
    pub client_messages_malformed: u64,
    /// Client commands published to NATS.
    pub commands_published: u64,
    /// Client commands dropped (NATS not configured, or its queue full).
    pub commands_dropped: u64,
    /// Client commands replaced by a newer one of their kind before NATS took them.
    pub commands_superseded: u64,
    /// Errors the ring reader reported (damaged records skipped).
    pub ring_read_errors: u64,
    /// HTTP requests that were not WebSocket upgrades.
    pub http_requests: u64,
    drops: [u64; DropReason::ALL.len()],
    /// The NATS video publisher's and source's counters.
    pub nats_video: NatsVideoSnapshot,
    /// The trust boundary's counters.
    pub trust: TrustSnapshot,
    /// The NATS connection state ("off", "connected", "disconnected", ...).
    pub nats_state: &'static str,
    /// Seconds since the server started.
    pub uptime_s: u64,
}

impl MetricsSnapshot {
    /// Frames or messages not delivered for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }
}

/// How `/metrics` reads one metric family from a snapshot `S`.
pub(crate) enum Reading<S: 'static> {
    /// One counter.
    Counter(fn(&S) -> u64),
    /// One gauge.
    Gauge(fn(&S) -> i64),
    /// One counter per value of a label: the label's name, then each value and its
    /// reading.
    ByLabel(&'static str, &'static [LabelValue<S>]),
}

/// One value of a label and how to read its counter.
pub(crate) type LabelValue<S> = (&'static str, fn(&S) -> u64);

/// One metric family of `/metrics`: its name, help text and how to read it.
pub(crate) struct Family<S: 'static> {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) reading: Reading<S>,
}

/// Appends `families`, read from `s`, in Prometheus text format.
pub(crate) fn render_families<S: 'static>(out: &mut String, s: &S, families: &[Family<S>]) {
    for Family { name, help, reading } in families {
        let kind = if matches!(reading, Reading::Gauge(_)) {
            "gauge"
        } else {
            "counter"
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        match reading {
            Reading::Counter(read) => {
                let _ = writeln!(out, "{name} {}", read(s));
            }
            Reading::Gauge(read) => {
                let _ = writeln!(out, "{name} {}", read(s));
            }
            Reading::ByLabel(label, values) => {
                for (value, read) in *values {
                    let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {}", read(s));
                }
            }
        }
    }
}

const COMMIT_TO_SEND_HELP: &str = "Time from the producer committing a frame (its frame_id, with --frame-id-commit-time) to the write that handed its last byte to a client's socket.";
const READ_TO_SEND_HELP: &str = "Time from the reader thread taking a frame out of the ring to the write that handed its last byte to a client's socket.";

/// The server's own families on `/metrics`, in order (the histograms, the NATS video
/// and the trust families follow).
const FAMILIES: &[Family<MetricsSnapshot>] = &[
    counter("shmring_ws_frames_read_total", "Frames read from the ring.", |s| {
        s.frames_read
    }),
    counter(
        "shmring_ws_frames_sent_total",
        "Video frames written to WebSocket clients.",
        |s| s.frames_sent,
    ),
    counter(
        "shmring_ws_frames_sent_direct_total",
        "Video frames the publishing thread wrote straight to a client's socket (no backlog).",
        |s| s.frames_sent_direct,
    ),
    counter(
        "shmring_ws_commit_time_invalid_total",
        "Frames whose frame_id was expected to be the commit time but was not plausible.",
        |s| s.commit_time_invalid,
    ),
    counter(
        "shmring_ws_bytes_sent_total",
        "WebSocket message bytes written to clients.",
        |s| s.bytes_sent,
    ),
    counter(
        "shmring_ws_telemetry_sent_total",
        "Telemetry messages written to clients.",
        |s| s.telemetry_sent,
    ),
    counter("shmring_ws_connections_total", "WebSocket connections accepted.", |s| {
        s.connections_total
    }),
    counter(
        "shmring_ws_clients_closed_by_server_total",
        "Connections the server closed (abuse, no keyframe, stalled writes).",
        |s| s.clients_closed_by_server,
    ),
    counter(
        "shmring_ws_keyframe_requests_total",
        "Keyframe requests sent to the producer.",
        |s| s.keyframe_requests,
    ),
    counter(
        "shmring_ws_keyframe_requests_coalesced_total",
        "Keyframe requests suppressed by coalescing.",
        |s| s.keyframe_requests_coalesced,
    ),
    counter(
        "shmring_ws_client_messages_malformed_total",
        "Client messages ignored as malformed or unknown.",
        |s| s.client_messages_malformed,
    ),
    counter(
        "shmring_ws_commands_published_total",
        "Client commands published to NATS.",
        |s| s.commands_published,
    ),
    counter("shmring_ws_commands_dropped_total", "Client commands dropped.", |s| {
        s.commands_dropped
    }),
    counter(
        "shmring_ws_commands_superseded_total",
        "Client commands replaced by a newer one of their kind before NATS took them.",
        |s| s.commands_superseded,
    ),
    counter(
        "shmring_ws_commands_gated_total",
        "Client motion commands the video safety gate held back (stale video).",
        |s| s.commands_gated,
    ),
    counter(
        "shmring_ws_frames_broadcast_total",
        "Video frames handed to the clients.",
        |s| s.frames_broadcast,
    ),
    counter(
        "shmring_ws_ring_read_errors_total",
        "Damaged ring records skipped.",
        |s| s.ring_read_errors,
    ),
    counter("shmring_ws_http_requests_total", "Plain HTTP requests served.", |s| {
        s.http_requests
    }),
    Family {
        name: "shmring_ws_dropped_total",
        help: "Frames or messages not delivered, by reason.",
        reading: Reading::ByLabel(
            "reason",
            &[
                ("queue_overflow", |s| s.dropped(DropReason::QueueOverflow)),
                ("awaiting_keyframe", |s| s.dropped(DropReason::AwaitingKeyframe)),
                ("ring_lost", |s| s.dropped(DropReason::RingLost)),
                ("telemetry", |s| s.dropped(DropReason::Telemetry)),
            ],
        ),
    },
    gauge("shmring_ws_clients", "Connected WebSocket clients.", |s| s.clients),
    gauge("shmring_ws_shm_seq", "frame_seq of the newest frame read.", |s| {
        s.shm_seq as i64
    }),
    gauge(
        "shmring_ws_writer_alive",
        "1 if the ring writer is alive, 0 if not, -1 if unknown.",
        |s| s.writer_alive,
    ),
];

/// A counter family (for the tables of families).
pub(crate) const fn counter<S: 'static>(name: &'static str, help: &'static str, read: fn(&S) -> u64) -> Family<S> {
    Family {
        name,
        help,
        reading: Reading::Counter(read),
    }
}

const fn gauge<S: 'static>(name: &'static str, help: &'static str, read: fn(&S) -> i64) -> Family<S> {
    Family {
        name,
        help,
        reading: Reading::Gauge(read),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(read_ns: u64, commit_ns: Option<u64>) -> Outgoing {
        Outgoing::Video(crate::message::VideoFrame {
            message: bytes::Bytes::from_static(b"x"),
            keyframe: true,
            frame_seq: 1,
            read_ns,
            commit_ns,
            time_ns: None,
        })
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        let now = 100_000_000_000;
        let mut tally = SentTally::default();
        tally.sent(&frame(now - 50_000, None), now);
        tally.sent(&frame(now - 3_000_000, None), now);
        tally.flush(&m, false);
        let mut tally = SentTally::default();
        tally.sent(&frame(now - 60_000_000_000, None), now);
        tally.flush(&m, true);
        assert_eq!(m.frames_sent.get(), 3);
        assert_eq!(m.frames_sent_direct.get(), 1);
        assert_eq!(m.bytes_sent.get(), 3);
        let text = m.render_prometheus();
        assert!(text.contains("shmring_ws_read_to_send_seconds_bucket{le=\"0.0001\"} 1"));
        assert!(text.contains("shmring_ws_read_to_send_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("shmring_ws_read_to_send_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("shmring_ws_read_to_send_seconds_count 3"));
        // No commit time known: the commit-to-send histogram stays empty.
        assert!(text.contains("shmring_ws_commit_to_send_seconds_count 0"));
    }

    #[test]
    fn commit_to_send_starts_at_the_commit_not_the_read() {
        let m = Metrics::default();
        let now = 100_000_000_000;
        // Committed 30 ms before it was sent, read 1 ms before it was sent.
        let mut tally = SentTally::default();
        tally.sent(&frame(now - 1_000_000, Some(now - 30_000_000)), now);
        tally.flush(&m, true);
        let text = m.render_prometheus();
        assert!(text.contains("shmring_ws_commit_to_send_seconds_bucket{le=\"0.02\"} 0"));
        assert!(text.contains("shmring_ws_commit_to_send_seconds_bucket{le=\"0.05\"} 1"));
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("shmring_ws_commit_to_send_seconds_sum "))
            .and_then(|v| v.parse().ok())
            .expect("a sum");
        assert!((sum - 0.03).abs() < 1e-9, "sum {sum}");
        assert!(text.contains("shmring_ws_read_to_send_seconds_bucket{le=\"0.001\"} 1"));
    }

    fn status(m: &Metrics) -> String {
        let v: serde_json::Value = serde_json::from_str(&m.health_json()).expect("JSON");
        v["status"].as_str().expect("a status").to_owned()
    }

    #[test]
    fn health_status_follows_the_writer_and_the_frame_age() {
        let m = Metrics::default();
        assert_eq!(status(&m), "waiting_for_ring");
        // A live writer (it holds the lock) that has not written yet: starting, not stale.
        m.writer_alive.store(1, Ordering::Relaxed);
        assert_eq!(status(&m), "starting");
        m.last_frame_ns.store(shmring_core::monotonic_ns(), Ordering::Relaxed);
        assert_eq!(status(&m), "ok");
        // A writer whose liveness cannot be probed (SDR_OS's legacy writer holds no lock):
        // judged by the age of its newest frame.
        m.writer_alive.store(-1, Ordering::Relaxed);
        assert_eq!(status(&m), "ok");
        let old = shmring_core::monotonic_ns().saturating_sub((STALE_AFTER_MS + 1) * 1_000_000);
        m.last_frame_ns.store(old.max(1), Ordering::Relaxed);
        assert_eq!(status(&m), "stale");
        m.writer_alive.store(0, Ordering::Relaxed);
        assert_eq!(status(&m), "writer_down");
        // A new writer reopened the ring (old frames, none of its own yet): starting.
        m.writer_alive.store(1, Ordering::Relaxed);
        m.writer_starting.store(true, Ordering::Relaxed);
        assert_eq!(status(&m), "starting");
    }

    #[test]
    fn health_has_sdr_os_keys() {
        let m = Metrics::default();
        m.frames_broadcast.add(4);
        m.bytes_broadcast.add(4000);
        m.dropped(DropReason::QueueOverflow, 2);
        m.dropped(DropReason::AwaitingKeyframe, 3);
        let v: serde_json::Value = serde_json::from_str(&m.health_json()).expect("JSON");
        assert_eq!(v["frames_broadcast"], 4);
        assert_eq!(v["avg_frame_size_bytes"], 1000);
        assert_eq!(v["client_lag_total"], 5);
        assert!(v["uptime_s"].is_u64() && v["clients"].is_i64() && v["shm_seq"].is_u64());
    }
}
