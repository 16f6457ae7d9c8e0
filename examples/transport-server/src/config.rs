//! Command-line flags and `SDR_*` environment variables of `transport-server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;

use shmring_ws::{camera_subject, is_valid_camera_name, CameraOptions, MAX_CAMERA_NAME_LEN};
use shmring_ws::{default_listen, FrameSource, GateSettings, HostPolicy, NatsOptions, NatsPublishOptions};
use shmring_ws::{NatsSourceOptions, NatsVideoTarget, OriginPolicy, QueueLimits, RingSource, ServerOptions};
use shmring_ws::{TlsFiles, TokenSource, Tokens, TrustPolicy, GOP_CACHE_MAX_BYTES};
use shmring_ws::{
    DEFAULT_CODEC_CHANGE_GRACE, DEFAULT_ESTOP, DEFAULT_FANOUT_THREADS, DEFAULT_HOLD, DEFAULT_KEYFRAME_INTERVAL,
    DEFAULT_KEYFRAME_REPLICAS, DEFAULT_KEYFRAME_REQUEST_SUBJECTS, DEFAULT_KEYFRAME_TIMEOUT, DEFAULT_MAX_BYTES_PER_SEC,
    DEFAULT_MAX_CLIENTS, DEFAULT_MAX_COMMANDS_PER_SEC, DEFAULT_MAX_COMMAND_SIZE, DEFAULT_MAX_FRAMES_PER_SEC,
    DEFAULT_MAX_MESSAGES_PER_SEC, DEFAULT_MAX_PENDING_CONNECTIONS, DEFAULT_PING_INTERVAL, DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_FRAMES, DEFAULT_SEND_BUFFER, DEFAULT_SHM_PATH, DEFAULT_SHM_SIZE, DEFAULT_SUBSCRIBE_TIMEOUT,
    DEFAULT_TELEMETRY_MAX_SIZE, DEFAULT_TELEMETRY_SUBJECTS, DEFAULT_VERIFY_CRC, DEFAULT_WRITE_TIMEOUT,
    VIDEO_SUBJECT_PREFIX,
};

/// Server settings, from flags or the environment names the SDR_OS server used; the
/// defaults are the library's (`shmring_ws::DEFAULT_*`).
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Config {
    /// Ring file to read [default: /dev/shm/sdr_os_ipc/frames; with --demo, a private
    /// ring in /dev/shm]. Repeat it to serve several rings, each a camera named by its
    /// file name (the first is the default camera).
    #[arg(long, env = "SDR_SHM_PATH")]
    pub shm_path: Vec<PathBuf>,
    /// Serve every ring file in this directory as a camera (its name: the file name),
    /// watching for rings that appear and go [default: none].
    #[arg(long, env = "SDR_SHM_DIR", value_name = "DIR")]
    pub shm_dir: Option<PathBuf>,
    /// The camera /stream/ws (and Foxglove's /video) serves [default: the first
    /// --shm-path, else the first name in --shm-dir in sorted order].
    #[arg(long, env = "SDR_DEFAULT_CAMERA", value_name = "NAME")]
    pub default_camera: Option<String>,
    /// The camera(s) the video gate judges motion by, comma-separated: motion is held
    /// while any of them is stale [default: the default camera].
    #[arg(long, env = "SDR_DRIVE_CAMERAS", value_name = "NAME[,NAME]", value_delimiter = ',')]
    pub drive_camera: Vec<String>,
    /// Address to listen on for HTTP and WebSocket [default: 127.0.0.1:8080, this
    /// machine only; inside a container 0.0.0.0:8080].
    #[arg(long, env = "SDR_LISTEN_ADDR")]
    pub listen: Option<SocketAddr>,
    /// NATS server URL [default: none: the server runs without NATS (no telemetry, no
    /// commands, no video gate publications)].
    #[arg(long, env = "SDR_NATS_URL")]
    pub nats_url: Option<String>,
    /// The producer stamps each frame's frame_id with its commit time (CLOCK_MONOTONIC
    /// ns), as the demo producer does: /metrics then measures commit-to-send latency
    /// [default: false; on with --demo].
    #[arg(long, env = "SDR_FRAME_ID_COMMIT_TIME", default_value = "false", value_parser = BoolishValueParser::new())]
    pub frame_id_commit_time: bool,
    /// Each frame's frame_id is its time in ns (simulation or capture time, as
    /// shmring.VideoWriter writes it): Foxglove messages carry it as their timestamp
    /// (their log time stays the time the server read the frame) [default: false].
    #[arg(long, env = "SDR_FRAME_ID_TIME", default_value = "false", value_parser = BoolishValueParser::new())]
    pub frame_id_time: bool,
    /// Verify each frame's CRC-32 and drop frames that fail it (as SDR_OS does); turn
    /// off with `--crc false` or SDR_CRC_ENABLED=false.
    #[arg(long, env = "SDR_CRC_ENABLED", action = clap::ArgAction::Set, value_name = "BOOL", default_value_t = DEFAULT_VERIFY_CRC, value_parser = BoolishValueParser::new())]
    pub crc: bool,
    /// NATS subjects relayed to clients as telemetry (comma-separated, wildcards allowed).
    #[arg(
        long,
        env = "SDR_TELEMETRY_SUBJECTS",
        default_value = DEFAULT_TELEMETRY_SUBJECTS,
        value_delimiter = ','
    )]
    pub telemetry_subjects: Vec<String>,
    /// Largest telemetry payload relayed, in bytes.
    #[arg(long, env = "SDR_TELEMETRY_MAX_SIZE", default_value_t = DEFAULT_TELEMETRY_MAX_SIZE)]
    pub telemetry_max_size: usize,
    /// Subjects keyframe requests are published on (comma-separated): SDR_OS's sim
    /// listens on command.genesis.force_idr, shmring producers on control.request_idr.
    /// Requests go out when a client connects and while one waits, coalesced.
    #[arg(
        long,
        env = "SDR_KEYFRAME_REQUEST_SUBJECTS",
        default_values_t = DEFAULT_KEYFRAME_REQUEST_SUBJECTS.map(String::from),
        value_delimiter = ','
    )]
    pub keyframe_request_subjects: Vec<String>,
    /// Keyframe requests are coalesced to one per this many milliseconds.
    #[arg(long, env = "SDR_IDR_COALESCE_MS", default_value_t = DEFAULT_KEYFRAME_INTERVAL.as_millis() as u64)]
    pub idr_coalesce_ms: u64,
    /// A client waiting this many milliseconds for a keyframe (while frames flow) is closed.
    #[arg(long, env = "SDR_IDR_TIMEOUT_MS", default_value_t = DEFAULT_KEYFRAME_TIMEOUT.as_millis() as u64)]
    pub keyframe_timeout_ms: u64,
    /// Most messages waiting in one client's queue (besides the GOP burst a new client
    /// starts with); more and the client drops to the next keyframe.
    #[arg(long, env = "SDR_CLIENT_QUEUE_FRAMES", default_value_t = DEFAULT_QUEUE_FRAMES)]
    pub queue_frames: usize,
    /// SDR_OS's name for the same limit (its broadcast channel's capacity, 64 there)
    /// [default: none: --queue-frames applies]; if set, it sets --queue-frames, and the
    /// two may not disagree.
    #[arg(long, env = "SDR_BROADCAST_CAPACITY")]
    pub broadcast_capacity: Option<usize>,
    /// Size SDR_OS expects of the ring file, in bytes. The whole file is mapped
    /// whatever its size; a smaller file is reported when the server starts.
    #[arg(long, env = "SDR_SHM_SIZE", default_value_t = DEFAULT_SHM_SIZE)]
    pub shm_size: u64,
    /// SDR_OS's switch for per-client keyframe gating. Clients here always start and
    /// resume at a keyframe (a decoder cannot use the frames before one), so only
    /// `true` is accepted; `false` is refused at start.
    #[arg(long, env = "SDR_SHM_KEYFRAME_GATING", action = clap::ArgAction::Set, value_name = "BOOL", default_value = "true", value_parser = BoolishValueParser::new())]
    pub keyframe_gating: bool,
    /// The video safety gate (docs/video-gate.md): motion commands are held while the
    /// video is stale; turn off with `--video-gate false` or SDR_VIDEO_GATE=false.
    #[arg(long, env = "SDR_VIDEO_GATE", action = clap::ArgAction::Set, value_name = "BOOL", default_value = "true", value_parser = BoolishValueParser::new())]
    pub video_gate: bool,
    /// Video older than this many milliseconds holds motion (one zero velocity, then
    /// motion commands are dropped).
    #[arg(long, env = "SDR_VIDEO_GATE_HOLD_MS", default_value_t = DEFAULT_HOLD.as_millis() as u64)]
    pub video_gate_hold_ms: u64,
    /// Video older than this many milliseconds stops the robot (one estop).
    #[arg(long, env = "SDR_VIDEO_GATE_ESTOP_MS", default_value_t = DEFAULT_ESTOP.as_millis() as u64)]
    pub video_gate_estop_ms: u64,
    /// After a codec change, ESTOP waits this many milliseconds longer.
    #[arg(long, env = "SDR_VIDEO_GATE_CODEC_CHANGE_GRACE_MS", default_value_t = DEFAULT_CODEC_CHANGE_GRACE.as_millis() as u64)]
    pub video_gate_codec_change_grace_ms: u64,
    /// Most bytes waiting in one client's queue (besides the GOP burst).
    #[arg(long, env = "SDR_CLIENT_QUEUE_BYTES", default_value_t = DEFAULT_QUEUE_BYTES)]
    pub queue_bytes: usize,
    /// Largest client message in bytes; larger ones close the connection (1009).
    #[arg(long, env = "SDR_MAX_COMMAND_SIZE", default_value_t = DEFAULT_MAX_COMMAND_SIZE)]
    pub max_command_size: usize,
    /// More client messages than this per second close the connection (1008).
    #[arg(long, env = "SDR_MAX_MESSAGES_PER_SEC", default_value_t = DEFAULT_MAX_MESSAGES_PER_SEC)]
    pub max_messages_per_sec: u32,
    /// A client write making no progress for this many milliseconds drops the connection.
    #[arg(long, env = "SDR_WRITE_TIMEOUT_MS", default_value_t = DEFAULT_WRITE_TIMEOUT.as_millis() as u64)]
    pub write_timeout_ms: u64,
    /// Most simultaneous WebSocket clients; more are refused with 503. 0 derives it from
    /// the descriptor limit (`ulimit -n`: 832 with the usual 1024, a third with TLS), so
    /// the server answers 503 before it runs out of descriptors.
    #[arg(long, env = "SDR_MAX_CLIENTS", default_value_t = DEFAULT_MAX_CLIENTS)]
    pub max_clients: usize,
    /// A Foxglove client subscribed to no channel when checked, every this many
    /// milliseconds, is closed (1008): it would hold a client slot watching nothing.
    #[arg(long, env = "SDR_SUBSCRIBE_TIMEOUT_MS", default_value_t = DEFAULT_SUBSCRIBE_TIMEOUT.as_millis() as u64)]
    pub subscribe_timeout_ms: u64,
    /// Threads writing frames to client sockets, shared by every camera (0: one per CPU).
    #[arg(long, env = "SDR_FANOUT_THREADS", default_value_t = DEFAULT_FANOUT_THREADS)]
    pub fanout_threads: usize,
    /// Kernel send buffer per client in bytes (0: system default).
    #[arg(long, env = "SDR_SEND_BUFFER", default_value_t = DEFAULT_SEND_BUFFER)]
    pub send_buffer: usize,
    /// Publish every frame to NATS: `nats://HOST:PORT[,nats://HOST2:PORT2...][/SUBJECT]`
    /// (default subject `video.<ring file name>`); keyframes are also kept in JetStream
    /// [default: none: frames are not published].
    #[arg(long, env = "SDR_PUBLISH_URL", value_name = "URL")]
    pub publish: Option<String>,
    /// Serve a stream from NATS instead of a ring:
    /// `nats://HOST:PORT[,nats://HOST2:PORT2...]/video.<stream>` [default: none: the
    /// ring is read]. Repeat it to serve several streams, each a camera named by the
    /// last token of its subject (the first is the default camera).
    #[arg(long, env = "SDR_SOURCE_URL", value_name = "URL")]
    pub source: Vec<String>,
    /// JetStream replicas of the keyframe store created by --publish (3 on a 3-node
    /// cluster keeps it through the loss of a node).
    #[arg(long, env = "SDR_KEYFRAME_REPLICAS", default_value_t = DEFAULT_KEYFRAME_REPLICAS)]
    pub keyframe_replicas: usize,
    /// Tokens that may watch (video, telemetry, /metrics), comma-separated; any token
    /// turns authentication on. See docs/operations.md, "Who may watch, who may command".
    /// Give tokens in the environment variable or --tokens-file: on the command line
    /// every user of the machine sees them in `ps` [default: none: without any token,
    /// anyone who may connect watches and commands].
    #[arg(long, env = "SDR_VIEW_TOKEN", value_delimiter = ',', hide_env_values = true)]
    pub view_token: Vec<String>,
    /// Tokens that may also send commands, comma-separated; like --view-token, give
    /// them in the environment variable or --tokens-file, not here (`ps` shows the
    /// command line) [default: none].
    #[arg(long, env = "SDR_CONTROL_TOKEN", value_delimiter = ',', hide_env_values = true)]
    pub control_token: Vec<String>,
    /// A file of `view TOKEN` / `control TOKEN` lines (keep it mode 0600), checked
    /// for changes every second: a token added works at once, a token removed (or
    /// moved to view) closes the connections that presented it [default: none].
    #[arg(long, env = "SDR_TOKENS_FILE", value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Browser origins allowed besides the server's own, comma-separated
    /// (`http://localhost:3000,https://app.foxglove.dev`); `*` allows every origin
    /// [default: none: only the server's own origin].
    #[arg(long, env = "SDR_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Host names this server answers to besides IP addresses, localhost and the
    /// machine's name, comma-separated (`robot.example.com,transport-server`): a request
    /// with another `Host` is refused (421), against DNS rebinding; `*` turns the check
    /// off [default: none].
    #[arg(long, env = "SDR_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Serve HTTPS/WSS with this certificate chain (PEM); needs --tls-key [default: none:
    /// plain HTTP].
    #[arg(long, env = "SDR_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM) [default: none].
    #[arg(long, env = "SDR_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve /metrics on this address only, without a token (and not on --listen)
    /// [default: none: /metrics on --listen].
    #[arg(long, env = "SDR_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Commands published per second, all clients together.
    #[arg(long, env = "SDR_MAX_COMMANDS_PER_SEC", default_value_t = DEFAULT_MAX_COMMANDS_PER_SEC)]
    pub max_commands_per_sec: u32,
    /// More WebSocket frames than this from one client in a second (every frame,
    /// empty continuations and pings included) close the connection (1008).
    #[arg(long, env = "SDR_MAX_FRAMES_PER_SEC", default_value_t = DEFAULT_MAX_FRAMES_PER_SEC)]
    pub max_frames_per_sec: u64,
    /// More bytes than this from one client in a second close the connection (1008).
    #[arg(long, env = "SDR_MAX_BYTES_PER_SEC", default_value_t = DEFAULT_MAX_BYTES_PER_SEC)]
    pub max_bytes_per_sec: u64,
    /// Clients are pinged this often; one that answers nothing for two intervals is
    /// closed (an idle Foxglove client, a vanished peer).
    #[arg(long, env = "SDR_PING_INTERVAL_MS", default_value_t = DEFAULT_PING_INTERVAL.as_millis() as u64)]
    pub ping_interval_ms: u64,
    /// Most sockets that have not sent their HTTP request yet; one more evicts the oldest.
    #[arg(long, env = "SDR_MAX_PENDING_CONNECTIONS", default_value_t = DEFAULT_MAX_PENDING_CONNECTIONS)]
    pub max_pending_connections: usize,
}

/// `video.<ring file name>`, with characters a subject token cannot hold as `_`.
fn default_subject(shm_path: &std::path::Path) -> String {
    let name = shm_path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let token: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{VIDEO_SUBJECT_PREFIX}{}",
        if token.is_empty() { "frames" } else { &token }
    )
}

impl Config {
    /// The address to listen on: `--listen`, else [`default_listen`].
    pub(crate) fn listen(&self) -> SocketAddr {
        self.listen.unwrap_or_else(default_listen)
    }

    /// Tokens, the Origin policy and the Host allow-list from the settings; fails on a
    /// malformed token, tokens file, origin or host name, saying which.
    fn trust(&self) -> Result<TrustPolicy, String> {
        let tokens = Tokens::load(TokenSource {
            file: self.tokens_file.clone(),
            view: self.view_token.clone(),
            control: self.control_token.clone(),
        })
        .map_err(|e| e.to_string())?;
        let origins = OriginPolicy::new(&self.allowed_origins).map_err(|e| format!("--allowed-origins: {e}"))?;
        let hosts = HostPolicy::new(&self.allowed_hosts).map_err(|e| format!("--allowed-hosts: {e}"))?;
        Ok(TrustPolicy::new(tokens, origins).with_hosts(hosts))
    }

    /// The ring to read (with `--demo`, to write too): `--shm-path`, else with `--demo`
    /// a private ring in /dev/shm, else the SDR_OS ring.
    pub(crate) fn ring_path(&self, demo: bool) -> PathBuf {
        match (self.shm_path.first(), demo) {
            (Some(p), _) => p.clone(),
            (None, true) => PathBuf::from(format!("/dev/shm/shmring-demo-{}", std::process::id())),
            (None, false) => PathBuf::from(DEFAULT_SHM_PATH),
        }
    }

    /// The server options these settings describe, reading [`Config::ring_path`]
    /// (unless `--source` names a NATS stream); `demo`: an in-process producer writes
    /// the ring, stamping frame_id with the commit time. Fails on `--demo` with
    /// `--source`, a malformed `--publish`/`--source` URL, or when a server would
    /// publish the subject it reads.
    pub(crate) fn server_options(&self, demo: bool) -> Result<ServerOptions, String> {
        if demo && !self.source.is_empty() {
            return Err("--demo writes a local ring; it cannot be combined with --source".to_owned());
        }
        let shm_path = self.ring_path(demo);
        let (source, publish) = self.video(&shm_path, demo)?;
        Ok(ServerOptions {
            listen: self.listen(),
            source,
            cameras: self.cameras(demo)?,
            publish,
            limits: self.queue_limits()?,
            keyframe_interval: Duration::from_millis(self.idr_coalesce_ms),
            nats: self.relay(),
            max_command_size: self.max_command_size,
            max_messages_per_sec: self.max_messages_per_sec,
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            max_clients: self.max_clients,
            subscribe_timeout: Duration::from_millis(self.subscribe_timeout_ms.max(10)),
            send_buffer: self.send_buffer,
            fanout_threads: self.fanout_threads,
            video_gate: self.video_gate()?,
            trust: std::sync::Arc::new(self.trust()?),
            tls: self.tls(),
            metrics_listen: self.metrics_listen,
            max_commands_per_sec: self.max_commands_per_sec.max(1),
            max_frames_per_sec: self.max_frames_per_sec.max(1),
            max_bytes_per_sec: self.max_bytes_per_sec.max(1),
            ping_interval: Duration::from_millis(self.ping_interval_ms.max(10)),
            max_pending_connections: self.max_pending_connections.max(1),
        })
    }

    /// Where frames come from and whether they are published (`--source`,
    /// `--publish`); warns about a ring smaller than SDR_SHM_SIZE.
    fn video(
        &self,
        shm_path: &std::path::Path,
        demo: bool,
    ) -> Result<(FrameSource, Option<NatsPublishOptions>), String> {
        if self.source.is_empty() && !demo {
            self.check_ring_size(shm_path);
        }
        let publish = match &self.publish {
            Some(url) => Some(NatsPublishOptions {
                target: NatsVideoTarget::parse(url, Some(&self.publish_subject(shm_path)))
                    .map_err(|e| format!("--publish: {e}"))?,
                keyframe_replicas: self.keyframe_replicas.max(1),
            }),
            None => None,
        };
        let source = match self.sources()?.into_iter().next() {
            Some(nats) => FrameSource::Nats(nats),
            None => FrameSource::Ring(RingSource {
                path: shm_path.to_owned(),
                verify_crc: self.crc,
                // The demo producer stamps frame_id with the commit time.
                frame_id_is_commit_time: self.frame_id_commit_time || demo,
                frame_id_is_time: self.frame_id_time,
            }),
        };
        if let Some(p) = &publish {
            let published = |s: &NatsSourceOptions| {
                let camera = stream_camera(&s.target.subject).unwrap_or_default();
                s.target.subject == p.target.subject || s.target.subject == camera_subject(&p.target.subject, &camera)
            };
            if let Some(s) = self.sources()?.iter().find(|s| published(s)) {
                return Err(format!("--source and --publish both use {}: a loop", s.target.subject));
            }
        }
        Ok((source, publish))
    }

    /// The NATS streams of `--source`, in the order given.
    fn sources(&self) -> Result<Vec<NatsSourceOptions>, String> {
        self.source
            .iter()
            .map(|url| {
                Ok(NatsSourceOptions {
                    target: NatsVideoTarget::parse(url, None).map_err(|e| format!("--source: {e}"))?,
                    verify_crc: self.crc,
                    max_frame: GOP_CACHE_MAX_BYTES,
                    frame_id_is_time: self.frame_id_time,
                })
            })
            .collect()
    }

    /// The cameras: several `--shm-path`s or a `--shm-dir` make each ring a camera;
    /// one ring (or none named) is served as before. Fails on a camera name that cannot
    /// be one, or a default camera that is none of the rings named.
    fn cameras(&self, demo: bool) -> Result<CameraOptions, String> {
        let several_rings = self.shm_path.len() > 1 || self.shm_dir.is_some();
        let several = several_rings || self.source.len() > 1;
        if several_rings && (demo || !self.source.is_empty()) {
            return Err(
                "several rings (--shm-path repeated, --shm-dir) cannot be combined with --demo or --source".into(),
            );
        }
        let names = [&self.default_camera]
            .into_iter()
            .flatten()
            .chain(self.drive_camera.iter().filter(|n| !n.is_empty()));
        for name in names {
            if !is_valid_camera_name(name) {
                return Err(format!(
                    "{name:?} cannot name a camera: use 1 to {MAX_CAMERA_NAME_LEN} characters of A-Z a-z 0-9 . _ -"
                ));
            }
        }
        if let (Some(name), false) = (&self.default_camera, self.shm_dir.is_some()) {
            let rings: Vec<String> = match self.source.len() {
                0 => self.shm_path.iter().filter_map(|p| file_name(p)).collect(),
                _ => self
                    .sources()?
                    .iter()
                    .filter_map(|s| stream_camera(&s.target.subject))
                    .collect(),
            };
            if several && !rings.contains(name) {
                return Err(format!(
                    "--default-camera {name} is none of the rings: {}",
                    rings.join(", ")
                ));
            }
        }
        Ok(CameraOptions {
            shm_paths: if several_rings {
                self.shm_path.clone()
            } else {
                Vec::new()
            },
            sources: if several && !several_rings {
                self.sources()?
            } else {
                Vec::new()
            },
            watch_dir: self.shm_dir.clone(),
            default_camera: self.default_camera.clone(),
            drive: self.drive_camera.iter().filter(|n| !n.is_empty()).cloned().collect(),
        })
    }

    /// The subject `--publish` uses without one in its URL: `video.<default camera>`
    /// when `--default-camera` names it, else `video.<ring file name>` (the first
    /// `--shm-path`); other cameras go on `video.<camera>`.
    fn publish_subject(&self, shm_path: &std::path::Path) -> String {
        match &self.default_camera {
            Some(name) => format!("{VIDEO_SUBJECT_PREFIX}{name}"),
            None => default_subject(shm_path),
        }
    }

    /// Warns when the ring file is smaller than SDR_OS's SDR_SHM_SIZE.
    fn check_ring_size(&self, shm_path: &std::path::Path) {
        if let Ok(meta) = std::fs::metadata(shm_path) {
            if meta.len() < self.shm_size {
                tracing::warn!(
                    "ring {} is {} bytes, smaller than SDR_SHM_SIZE ({}); it is read as it is",
                    shm_path.display(),
                    meta.len(),
                    self.shm_size
                );
            }
        }
    }

    /// Per-client queue limits; SDR_BROADCAST_CAPACITY is SDR_OS's name for
    /// --queue-frames, and the two may not disagree. Refuses keyframe gating off.
    fn queue_limits(&self) -> Result<QueueLimits, String> {
        if !self.keyframe_gating {
            return Err(
                "SDR_SHM_KEYFRAME_GATING=false (--keyframe-gating false) is not supported: every client \
                 starts and resumes at a keyframe, since a decoder cannot use the frames before one; remove the \
                 setting"
                    .to_owned(),
            );
        }
        let queue_frames = match self.broadcast_capacity {
            Some(n) if self.queue_frames != DEFAULT_QUEUE_FRAMES && self.queue_frames != n => {
                return Err(format!(
                    "SDR_BROADCAST_CAPACITY ({n}) and SDR_CLIENT_QUEUE_FRAMES ({}) set the same limit differently; \
                     set only one",
                    self.queue_frames
                ))
            }
            Some(n) => n,
            None => self.queue_frames,
        };
        Ok(QueueLimits {
            max_frames: queue_frames.max(1),
            max_bytes: self.queue_bytes.max(1),
            keyframe_timeout: Duration::from_millis(self.keyframe_timeout_ms),
        })
    }

    /// The NATS relay (`--nats-url`), if any.
    fn relay(&self) -> Option<NatsOptions> {
        self.nats_url.as_ref().map(|url| NatsOptions {
            url: url.clone(),
            telemetry_subjects: self.telemetry_subjects.clone(),
            telemetry_max_size: self.telemetry_max_size,
            keyframe_request_subjects: self
                .keyframe_request_subjects
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        })
    }

    /// The video gate's thresholds, checked by the library ([`GateSettings::validate`]);
    /// `None` when the gate is off.
    fn video_gate(&self) -> Result<Option<GateSettings>, String> {
        if !self.video_gate {
            return Ok(None);
        }
        GateSettings {
            hold: Duration::from_millis(self.video_gate_hold_ms),
            estop: Duration::from_millis(self.video_gate_estop_ms),
            codec_change_grace: Duration::from_millis(self.video_gate_codec_change_grace_ms),
        }
        .validate()
        .map(Some)
        .map_err(|e| e.to_string())
    }

    /// The certificate and key (`--tls-cert`, `--tls-key`; clap requires both).
    fn tls(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }
}

/// A path's file name, as text.
fn file_name(path: &std::path::Path) -> Option<String> {
    path.file_name()?.to_str().map(str::to_owned)
}

/// The camera a NATS stream's subject names: its last token.
fn stream_camera(subject: &str) -> Option<String> {
    subject.rsplit('.').next().map(str::to_owned)
}
