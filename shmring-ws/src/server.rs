//! The server: accepts TCP connections, serves the viewer page, `/health` and
//! `/metrics`, upgrades `/stream/ws` to WebSocket, and runs the frame source (ring
//! reader thread or NATS subscriber), the NATS relay and the NATS video publisher.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::cameras::{CameraParts, Cameras, Feed};
use crate::connection::Shared;
use crate::framing::{close_code, CloseReason};
use crate::http::{read_head, refuse, respond, respond_to, switching_protocols, RequestHead, HEAD_TIMEOUT};
use crate::hub::{FanoutPool, Hub};
use crate::keyframe::KeyframeRequests;
use crate::limits::{ClientSlots, CommandBudget, PendingConnections};
use crate::metrics::Metrics;
use crate::nats::connection::Connections;
use crate::nats::outbox::Outbox;
use crate::options::ServerOptions;
use crate::safety::{DrivingFrame, GateFeed, SafetyGate};
use crate::trust::tls::TlsError;
use crate::trust::tokens::response_subprotocol;
use crate::wire::Protocol;

/// The viewer page served at `/`.
pub const VIEWER_HTML: &str = include_str!("viewer.html");
/// The WebSocket endpoint (the default camera; `/stream/ws/<camera>` serves another).
pub const STREAM_PATH: &str = "/stream/ws";
/// The list of cameras (JSON).
pub const CAMERAS_PATH: &str = "/cameras";
/// Pause between the 101 response and the first WebSocket frame.
const UPGRADE_PAUSE: Duration = Duration::from_millis(5);

/// How long clients get to take their close frame (1001) at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Most connections served at once on the `/metrics` listener (one more is closed at
/// once; an idle one older than [`PendingConnections::MIN_AGE`] is evicted for it).
const METRICS_MAX_CONNECTIONS: usize = 32;
/// How long a newcomer on the `/metrics` listener waits for an evicted socket's place.
const METRICS_ADMIT_WAIT: Duration = Duration::from_millis(200);

/// Why a server could not start.
#[derive(Debug)]
pub enum ServerError {
    /// An address could not be bound.
    Listen {
        /// Which listener (`--listen`, `--metrics-listen`, the internal TLS backend).
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        error: io::Error,
    },
    /// The TLS certificate or key cannot be used.
    Tls(TlsError),
    /// The fan-out threads could not be started.
    Fanout(io::Error),
    /// The frame source (ring reader, NATS subscriber) could not be started.
    Source(io::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Listen { what, addr, error } => write!(f, "cannot listen on {addr} ({what}): {error}"),
            ServerError::Tls(e) => write!(f, "TLS: {e}"),
            ServerError::Fanout(e) => write!(f, "cannot start the fan-out threads: {e}"),
            ServerError::Source(e) => write!(f, "cannot start the frame source: {e}"),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Listen { error, .. } | ServerError::Fanout(error) | ServerError::Source(error) => Some(error),
            ServerError::Tls(e) => Some(e),
        }
    }
}

async fn listen(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| ServerError::Listen { what, addr, error })
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    /// The plain HTTP listener: the listen address, or (with TLS) an internal loopback
    /// one the TLS listener hands its plaintext to.
    listener: TcpListener,
    /// With TLS: the public listener and its acceptor.
    tls: Option<(TcpListener, TlsAcceptor)>,
    /// `/metrics` on its own address.
    metrics_listener: Option<TcpListener>,
    front: Arc<Front>,
    commands_rx: Option<Arc<Outbox>>,
    gate_rx: Option<GateFeed>,
}

/// What the accept loop hands each connection: the shared state and the client slots.
struct Front {
    ctx: Arc<Shared>,
    slots: Arc<ClientSlots>,
}

/// Tasks [`Server::run`] started besides the accept loop, stopped at shutdown.
#[derive(Default)]
struct Running {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

impl Server {
    /// Binds the listening sockets and prepares the shared state.
    pub async fn bind(options: ServerOptions) -> Result<Server, ServerError> {
        let (listener, tls) = match &options.tls {
            Some(files) => {
                let acceptor = crate::trust::tls::acceptor(files).map_err(ServerError::Tls)?;
                let public = listen("--listen", options.listen).await?;
                let backend = listen("the internal TLS backend", (std::net::Ipv4Addr::LOCALHOST, 0).into()).await?;
                (backend, Some((public, acceptor)))
            }
            None => (listen("--listen", options.listen).await?, None),
        };
        let metrics_listener = match options.metrics_listen {
            Some(addr) => Some(listen("--metrics-listen", addr).await?),
            None => None,
        };
        let max_clients =
            crate::limits::max_clients(options.max_clients, options.max_pending_connections, tls.is_some());
        let (ctx, commands_rx, gate_rx) = shared_state(options)?;
        Ok(Server {
            listener,
            tls,
            metrics_listener,
            front: Arc::new(Front {
                ctx,
                slots: ClientSlots::new(max_clients),
            }),
            commands_rx,
            gate_rx,
        })
    }

    /// The address the server listens on (the TLS one with TLS).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.tls {
            Some((public, _)) => public.local_addr(),
            None => self.listener.local_addr(),
        }
    }

    /// The keyframe request coalescer (an in-process producer registers its callback here).
    pub fn keyframe_requests(&self) -> Arc<KeyframeRequests> {
        self.front.ctx.keyframes.clone()
    }

    /// The server's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.front.ctx.metrics.clone()
    }

    /// Runs until `shutdown` completes: the frame source, the NATS relay, the NATS
    /// video publisher and the accept loop.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let ctx = self.front.ctx.clone();
        let mut nats = Connections::new(ctx.metrics.clone());
        let mut workers = Running::default();
        let source = start_source(&ctx, &mut nats, &mut workers).await?;
        start_publisher(&ctx, &mut nats, &mut workers).await;
        start_relay(&ctx, &mut nats, self.commands_rx.take(), self.gate_rx.take()).await;
        if let Some(gate) = ctx.gate.clone() {
            workers.spawn(gate.run());
        }
        workers.spawn(ctx.options.trust.clone().reload_tokens_file());
        let mut listeners = Running::default();
        self.start_listeners(&mut listeners)
            .map_err(|error| ServerError::Listen {
                what: "--listen",
                addr: ctx.options.listen,
                error,
            })?;
        self.accept_loop(shutdown).await;
        listeners.stop();
        close_clients(&ctx).await;
        workers.stop();
        source.stop().await;
        ctx.cameras.stop_readers();
        Ok(())
    }

    /// Starts the TLS and `/metrics` listeners and says where the server listens.
    fn start_listeners(&mut self, running: &mut Running) -> io::Result<()> {
        let ctx = &self.front.ctx;
        if let Some((public, acceptor)) = self.tls.take() {
            let backend = self.listener.local_addr()?;
            let metrics = ctx.metrics.clone();
            running.spawn(crate::trust::tls::serve(
                public,
                acceptor,
                backend,
                ctx.pending.clone(),
                move || {
                    metrics.trust.pending_evicted.inc();
                },
                std::future::pending(),
            ));
        }
        if let Some(listener) = self.metrics_listener.take() {
            tracing::info!("/metrics on http://{} only", listener.local_addr()?);
            running.spawn(serve_metrics(listener, ctx.clone()));
        }
        let listen = self.local_addr()?;
        tracing::info!("{}", ctx.options.trust.exposure(listen, ctx.options.tls.is_some()));
        tracing::info!(
            "listening on {}://{listen} (viewer at /, stream at {STREAM_PATH}; at most {} WebSocket clients)",
            if ctx.options.tls.is_some() { "https" } else { "http" },
            self.front.slots.max()
        );
        Ok(())
    }

    /// Accepts connections until `shutdown` completes.
    async fn accept_loop(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tokio::spawn(serve(stream, peer, self.front.clone()));
                    }
                    Err(e) => out_of_sockets(&self.front.ctx, &e).await,
                },
            }
        }
    }
}

/// Starts the frames: the server's own source (one ring or NATS stream), or each named
/// ring as a camera and the watcher of rings that appear and go.
async fn start_source(
    ctx: &Arc<Shared>,
    nats: &mut Connections,
    workers: &mut Running,
) -> Result<crate::source::RunningSource, ServerError> {
    if ctx.options.cameras.names_cameras() {
        start_nats_cameras(ctx, nats).await;
        let cameras = ctx.cameras.clone();
        let skipped = tokio::task::spawn_blocking(move || {
            let mut skipped = std::collections::BTreeSet::new();
            cameras.start_named(&mut skipped);
            skipped
        })
        .await
        .map_err(|e| ServerError::Source(io::Error::other(e)))?;
        workers.spawn(ctx.cameras.clone().watch(skipped));
        return Ok(crate::source::RunningSource::Idle);
    }
    ctx.options
        .source
        .start(ctx.hub.clone(), ctx.metrics.clone(), ctx.keyframes.clone(), nats)
        .await
        .map_err(ServerError::Source)
}

/// Starts each NATS stream of `--source` (several) as a camera.
async fn start_nats_cameras(ctx: &Arc<Shared>, nats: &mut Connections) {
    for options in &ctx.options.cameras.sources {
        let subject = &options.target.subject;
        let Some(name) = crate::cameras::stream_name(subject) else {
            tracing::warn!("skipping --source {subject}: its last token cannot name a camera (A-Z a-z 0-9 _ -)");
            continue;
        };
        let Some(camera) = ctx.cameras.add_fed(&name) else {
            tracing::warn!("skipping --source {subject}: camera {name} is already served");
            continue;
        };
        let source = crate::source::FrameSource::Nats(options.clone());
        let feed = &camera.feed;
        match source
            .start(feed.hub.clone(), camera.metrics.clone(), feed.keyframes.clone(), nats)
            .await
        {
            Ok(crate::source::RunningSource::Nats(task)) => {
                camera.keep_task(task.abort_handle());
                tracing::info!("camera {name}: serving {subject} from NATS");
            }
            Ok(_) => {}
            Err(e) => tracing::error!("camera {name}: cannot start --source {subject}: {e}"),
        }
    }
}

/// The registry of cameras, its default camera on the server's own hub.
fn camera_registry(
    options: &ServerOptions,
    main: Feed,
    metrics: Arc<Metrics>,
    fanout: Arc<FanoutPool>,
) -> Arc<Cameras> {
    let (ring, single_name) = match &options.source {
        crate::source::FrameSource::Ring(r) => (r.clone(), crate::cameras::name_of(&r.path)),
        crate::source::FrameSource::Nats(n) => (
            crate::source::RingSource::default(),
            crate::cameras::stream_name(&n.target.subject),
        ),
    };
    let parts = CameraParts {
        main,
        main_metrics: metrics,
        ring,
        limits: options.limits,
        keyframe_interval: options.keyframe_interval,
        fanout,
    };
    Cameras::new(
        options.cameras.clone(),
        parts,
        single_name.as_deref().unwrap_or(DEFAULT_CAMERA_NAME),
    )
}

/// The name of the one camera when its ring's file name cannot be a camera name.
const DEFAULT_CAMERA_NAME: &str = "default";

/// The state every connection shares, and the receivers of the command queue and the
/// gate's publications (for the NATS relay).
#[allow(clippy::type_complexity)]
fn shared_state(options: ServerOptions) -> Result<(Arc<Shared>, Option<Arc<Outbox>>, Option<GateFeed>), ServerError> {
    let metrics = Arc::new(Metrics::default());
    let keyframes = Arc::new(KeyframeRequests::new(options.keyframe_interval, metrics.clone()));
    let fanout_threads = match options.fanout_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    // One pool for every camera: the fan-out threads do not multiply with the cameras.
    let fanout = FanoutPool::new(fanout_threads).map_err(ServerError::Fanout)?;
    let hub = Arc::new(Hub::new(options.limits, metrics.clone(), keyframes.clone()).with_fanout(fanout.clone()));
    let main = Feed {
        hub: hub.clone(),
        keyframes: keyframes.clone(),
    };
    let cameras = camera_registry(&options, main, metrics.clone(), fanout);
    let (commands, commands_rx) = match options.nats {
        Some(_) => {
            let outbox = Outbox::new();
            (Some(outbox.clone()), Some(outbox))
        }
        None => (None, None),
    };
    let (gate, gate_rx) = match options.video_gate {
        Some(settings) => {
            let drive = cameras.clone();
            let (gate, rx) = SafetyGate::new(
                settings,
                metrics.clone(),
                Some(DrivingFrame(Box::new(move || drive.driving_frame()))),
            );
            (Some(gate), Some(rx))
        }
        None => (None, None),
    };
    let ctx = Arc::new(Shared {
        hub,
        cameras,
        metrics,
        keyframes,
        commands,
        pending: PendingConnections::new(options.max_pending_connections),
        command_budget: CommandBudget::new(options.max_commands_per_sec),
        options,
        session_id: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
            .to_string(),
        gate,
    });
    Ok((ctx, commands_rx, gate_rx))
}

/// Starts publishing every frame to NATS (`--publish`).
async fn start_publisher(ctx: &Arc<Shared>, nats: &mut Connections, running: &mut Running) {
    let Some(publish) = ctx.options.publish.clone() else {
        return;
    };
    let role = crate::nats::publish::role(&publish);
    match nats.client(&publish.target.servers, &role, true, |_| {}).await {
        Ok(client) => {
            if ctx.options.cameras.names_cameras() {
                publish_other_cameras(ctx, &publish, &client);
            }
            running.spawn(crate::nats::publish::run(
                publish,
                client,
                ctx.hub.clone(),
                ctx.metrics.clone(),
                ctx.keyframes.clone(),
            ))
        }
        Err(e) => tracing::error!("{role}: NATS unusable: {e}; frames are not published"),
    }
}

/// With several cameras, each besides the default one is published on its own subject
/// ([`crate::nats::video::camera_subject`]), with its own keyframe store.
fn publish_other_cameras(ctx: &Shared, publish: &crate::nats::NatsPublishOptions, client: &async_nats::Client) {
    let (publish, client) = (publish.clone(), client.clone());
    let runtime = tokio::runtime::Handle::current();
    ctx.cameras.add_task(Box::new(move |name, feed, metrics| {
        let subject = crate::camera_subject(&publish.target.subject, name);
        if subject == publish.target.subject {
            tracing::error!(
                "camera {name} would be published on {subject}, the default camera's subject; it is not published"
            );
            return None;
        }
        let mut options = publish.clone();
        options.target.subject = subject;
        let task = crate::nats::publish::run(
            options,
            client.clone(),
            feed.hub.clone(),
            metrics.clone(),
            feed.keyframes.clone(),
        );
        Some(runtime.spawn(task).abort_handle())
    }));
}

/// Starts the NATS relay (telemetry in, commands and the gate's publications out).
async fn start_relay(ctx: &Arc<Shared>, nats: &mut Connections, commands: Option<Arc<Outbox>>, gate: Option<GateFeed>) {
    let (Some(relay), Some(rx)) = (&ctx.options.nats, commands) else {
        tracing::info!(
            "NATS not configured (--nats-url / SDR_NATS_URL): no telemetry relay, client commands are dropped, keyframe requests go only to an in-process producer"
        );
        return;
    };
    ctx.metrics.set_nats_state("connecting");
    let servers = crate::nats::relay::servers(relay);
    let on_state = crate::nats::relay::on_state(ctx.metrics.clone());
    match nats.client(&servers, crate::nats::relay::ROLE, false, on_state).await {
        // Not aborted at shutdown: it ends with the runtime, after the last command.
        Ok(client) => {
            let cameras = ctx.cameras.clone();
            let others = crate::nats::relay::OtherCameras {
                telemetry: Arc::new(move |m| cameras.publish_telemetry(m)),
                keyframes: ctx.cameras.keyframe_requests.clone(),
            };
            tokio::spawn(crate::nats::relay::run(
                relay.clone(),
                client,
                others,
                ctx.metrics.clone(),
                ctx.keyframes.clone(),
                rx,
                gate,
            ));
        }
        Err(e) => {
            ctx.metrics.set_nats_state("failed");
            tracing::error!("NATS at {} unusable: {e}; running without NATS", relay.url);
        }
    }
}

/// An accept failed (out of file descriptors): free the oldest idle socket's, else
/// back off and keep serving.
async fn out_of_sockets(ctx: &Shared, e: &io::Error) {
    if ctx.pending.evict_oldest() {
        ctx.metrics.trust.pending_evicted.inc();
        tokio::time::sleep(Duration::from_millis(5)).await;
    } else {
        tracing::warn!("accept failed: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tells every client why it goes (1001), and gives them a moment to take it.
async fn close_clients(ctx: &Shared) {
    ctx.cameras.close_all(&CloseReason {
        code: close_code::GOING_AWAY,
        reason: "the server is shutting down".into(),
    });
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while ctx.metrics.clients.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True if the request target asks for the GOP burst at join (`?burst=gop`, as the
/// viewer page does): an instant picture for a decoder that takes a burst. Other
/// clients start at the next keyframe (requested for them), so a decoder that drops
/// frames when more than a few are queued (SDR_OS's) never loses a reference.
fn wants_burst(target: &str) -> bool {
    target
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|p| p == "burst=gop"))
}

/// Serves `/metrics` (and `/health`) on their own listener, without a token: the
/// operator chose who can reach that address. At most [`METRICS_MAX_CONNECTIONS`]
/// sockets at once; idle ones are evicted for newcomers.
async fn serve_metrics(listener: TcpListener, ctx: Arc<Shared>) {
    let places = Arc::new(tokio::sync::Semaphore::new(METRICS_MAX_CONNECTIONS));
    let pending = PendingConnections::new(METRICS_MAX_CONNECTIONS);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (ticket, _) = pending.admit(std::time::Instant::now());
        let Ok(Ok(place)) = tokio::time::timeout(METRICS_ADMIT_WAIT, places.clone().acquire_owned()).await else {
            continue; // full of young sockets: this one is closed
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _place = place;
            let mut stream = stream;
            let head = tokio::select! {
                () = ticket.evicted() => return,
                head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)) => head,
            };
            drop(ticket);
            let Ok(Ok((head, _))) = head else { return };
            if let Err(why) = ctx.options.trust.admit_host(head.auth.host()) {
                ctx.metrics.trust.refused(why);
                return refuse(&mut stream, why).await;
            }
            let only = head.head_only;
            match head.path.split('?').next().unwrap_or("/") {
                "/metrics" => {
                    let body = metrics_text(&ctx);
                    respond_to(&mut stream, only, "200 OK", PROMETHEUS_TYPE, body.as_bytes()).await
                }
                "/health" => {
                    let body = health_json(&ctx);
                    respond_to(&mut stream, only, "200 OK", "application/json", body.as_bytes()).await
                }
                _ => respond_to(&mut stream, only, "404 Not Found", "text/plain", b"not found").await,
            }
        });
    }
}

/// The `/health` document: the default camera's stream, and with several rings each
/// camera's state.
fn health_json(ctx: &Shared) -> String {
    let body = ctx.metrics.health_json();
    if !ctx.options.cameras.names_cameras() {
        return body;
    }
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(mut doc) => {
            doc["cameras"] = ctx.cameras.states();
            doc.to_string()
        }
        Err(_) => body,
    }
}

/// The `/metrics` document: the server's families, and with several cameras each
/// camera's (labelled `camera="<name>"`).
fn metrics_text(ctx: &Shared) -> String {
    let mut body = ctx.metrics.render_prometheus();
    if ctx.options.cameras.names_cameras() {
        ctx.cameras.render_prometheus(&mut body);
    }
    body
}

/// The content type of `/metrics`.
const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4";

/// Reads the request head, holding a place among the sockets in their HTTP phase (a
/// newer socket may evict this one if it sends nothing for longest). `None` when there
/// is nothing to answer (evicted, timed out, closed) or a 400 was sent.
async fn read_request(stream: &mut TcpStream, peer: SocketAddr, ctx: &Shared) -> Option<(RequestHead, Bytes)> {
    let (pending, evicted_one) = ctx.pending.admit(std::time::Instant::now());
    if evicted_one {
        ctx.metrics.trust.pending_evicted.inc();
    }
    let head = tokio::select! {
        () = pending.evicted() => return None,
        head = tokio::time::timeout(HEAD_TIMEOUT, read_head(stream)) => head,
    };
    drop(pending);
    match head {
        Ok(Ok(h)) => Some(h),
        Ok(Err(why)) => {
            tracing::debug!("{peer}: {why}");
            if why.answerable() {
                respond(stream, "400 Bad Request", "text/plain", why.to_string().as_bytes()).await;
            }
            None
        }
        Err(_) => None,
    }
}

async fn serve(mut stream: TcpStream, peer: SocketAddr, front: Arc<Front>) {
    let _ = stream.set_nodelay(true);
    let ctx = &front.ctx;
    let Some((mut head, rest)) = read_request(&mut stream, peer, ctx).await else {
        return;
    };
    // Before anything is served: a name that is not the server's is DNS rebinding.
    if let Err(why) = ctx.options.trust.admit_host(head.auth.host()) {
        ctx.metrics.trust.refused(why);
        return refuse(&mut stream, why).await;
    }
    head.auth.set_served_tls(ctx.options.tls.is_some());
    let path = head.path.split('?').next().unwrap_or("/");
    // Foxglove clients connect to the root (or any path we serve WebSocket on) and ask
    // for their subprotocol; a plain GET of / is the viewer page.
    let camera_path = path.strip_prefix(STREAM_PATH).and_then(|p| p.strip_prefix('/'));
    // A Foxglove client on /stream/ws/<camera> gets that camera as its /video channel.
    let foxglove =
        head.foxglove && head.upgrade_websocket && (path == "/" || path == STREAM_PATH || camera_path.is_some());
    if path == STREAM_PATH || foxglove || camera_path.is_some() {
        let protocol = if foxglove { Protocol::Foxglove } else { Protocol::Sdr };
        return upgrade(stream, head, rest, &front, protocol).await;
    }
    ctx.metrics.http_requests.inc();
    serve_http(&mut stream, &head, ctx).await
}

/// Answers a WebSocket upgrade: checks the handshake, the Origin, the token and the
/// client slots, sends the 101 and runs the connection.
async fn upgrade(mut stream: TcpStream, head: RequestHead, rest: Bytes, front: &Front, protocol: Protocol) {
    let ctx = &front.ctx;
    let Some(key) = head
        .websocket_key
        .as_deref()
        .filter(|_| head.upgrade_websocket && head.version_13 && !head.head_only)
    else {
        return respond_to(
            &mut stream,
            head.head_only,
            "426 Upgrade Required",
            "text/plain",
            b"this endpoint speaks WebSocket (version 13)",
        )
        .await;
    };
    let grant = match head.auth.with_credentials(|c| ctx.options.trust.admit_grant(c)) {
        Ok(grant) => grant,
        Err(why) => {
            ctx.metrics.trust.refused(why);
            return refuse(&mut stream, why).await;
        }
    };
    let feed = match camera_feed(&head.path, &ctx.cameras) {
        Ok(feed) => feed,
        Err(body) => return respond_to(&mut stream, false, "404 Not Found", "text/plain", body.as_bytes()).await,
    };
    // Reserved before the 101, held until the connection ends.
    let Some(_slot) = front.slots.reserve() else {
        return respond(
            &mut stream,
            "503 Service Unavailable",
            "text/plain",
            b"too many clients",
        )
        .await;
    };
    let offered = head.auth.subprotocols();
    let response = switching_protocols(key, response_subprotocol(&offered, crate::foxglove::SUBPROTOCOL));
    // The 101 goes out alone (TCP_NODELAY: its own segment), and nothing follows it
    // for a moment: a proxy that reads the response head first (SDR_OS's development
    // proxy drops whatever arrives in the same read) never finds frames behind it.
    if stream.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    tokio::time::sleep(UPGRADE_PAUSE).await;
    if ctx.options.send_buffer > 0 {
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(ctx.options.send_buffer);
    }
    let burst = wants_burst(&head.path);
    crate::connection::run(stream, rest, ctx.clone(), feed, protocol, burst, grant).await;
}

/// The camera a WebSocket request target names (`/stream/ws/<camera>` or
/// `?camera=<camera>`), or the default camera; the 404 body if there is no such camera.
fn camera_feed(target: &str, cameras: &Cameras) -> Result<Feed, String> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let named = path
        .strip_prefix(STREAM_PATH)
        .and_then(|p| p.strip_prefix('/'))
        .filter(|p| !p.is_empty())
        .or_else(|| query.split('&').find_map(|p| p.strip_prefix("camera=")));
    match named {
        Some(name) => cameras.feed(name),
        None => Ok(cameras.default_feed()),
    }
}

/// Serves a plain HTTP request: the viewer page, `/health`, `/metrics`.
async fn serve_http(stream: &mut TcpStream, head: &RequestHead, ctx: &Shared) {
    let only = head.head_only;
    match head.path.split('?').next().unwrap_or("/") {
        "/" | "/index.html" => {
            respond_to(
                stream,
                only,
                "200 OK",
                "text/html; charset=utf-8",
                VIEWER_HTML.as_bytes(),
            )
            .await
        }
        "/health" => {
            let body = health_json(ctx);
            respond_to(stream, only, "200 OK", "application/json", body.as_bytes()).await
        }
        CAMERAS_PATH => match head.auth.with_credentials(|c| ctx.options.trust.admit_metrics(c)) {
            Ok(()) => {
                let body = ctx.cameras.json();
                respond_to(stream, only, "200 OK", "application/json", body.as_bytes()).await
            }
            Err(why) => {
                ctx.metrics.trust.refused(why);
                refuse(stream, why).await
            }
        },
        // On its own address when one is set (then not here); with tokens, any token.
        "/metrics" if ctx.options.metrics_listen.is_none() => {
            match head.auth.with_credentials(|c| ctx.options.trust.admit_metrics(c)) {
                Ok(()) => {
                    let body = metrics_text(ctx);
                    respond_to(stream, only, "200 OK", PROMETHEUS_TYPE, body.as_bytes()).await
                }
                Err(why) => {
                    ctx.metrics.trust.refused(why);
                    refuse(stream, why).await
                }
            }
        }
        "/favicon.ico" => respond_to(stream, only, "204 No Content", "image/x-icon", b"").await,
        _ => respond_to(stream, only, "404 Not Found", "text/plain", b"not found").await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_errors_say_which_address_and_what_failed() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let options = ServerOptions {
            listen: addr,
            ..ServerOptions::default()
        };
        let e = Server::bind(options).await.err().expect("the address is taken");
        assert!(matches!(e, ServerError::Listen { what: "--listen", .. }), "{e:?}");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
        let options = ServerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: Some(crate::trust::tls::TlsFiles {
                cert: "/nonexistent/cert.pem".into(),
                key: "/nonexistent/key.pem".into(),
            }),
            ..ServerOptions::default()
        };
        let e = Server::bind(options).await.err().expect("no certificate");
        assert!(
            matches!(e, ServerError::Tls(_)) && e.to_string().contains("cert.pem"),
            "{e}"
        );
    }
}
