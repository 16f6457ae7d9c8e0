//! The server: accepts TCP connections, serves the viewer page, `/health` and
//! `/metrics`, upgrades `/stream/ws` to WebSocket, and runs the frame source (ring
//! reader thread or NATS subscriber), the NATS relay and the NATS video publisher.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::connection::Shared;
use crate::framing::CloseReason;
use crate::http::{read_head, refuse, respond, respond_to, switching_protocols, HEAD_TIMEOUT};
use crate::hub::Hub;
use crate::keyframe::KeyframeRequests;
use crate::limits::{CommandBudget, PendingConnections};
use crate::metrics::Metrics;
use crate::nats::client::Connections;
use crate::nats::outbox::Outbox;
use crate::options::ServerOptions;
use crate::safety::{GateFeed, SafetyGate};
use crate::trust::tokens::response_subprotocol;
use crate::wire::Protocol;

/// The viewer page served at `/`.
pub const VIEWER_HTML: &str = include_str!("viewer.html");
/// The WebSocket endpoint.
pub const STREAM_PATH: &str = "/stream/ws";
/// Pause between the 101 response and the first WebSocket frame.
const UPGRADE_PAUSE: Duration = Duration::from_millis(5);

/// How long clients get to take their close frame (1001) at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A bound server, ready to [`Server::run`].
pub struct Server {
    /// The plain HTTP listener: the listen address, or (with TLS) an internal loopback
    /// one the TLS listener hands its plaintext to.
    listener: TcpListener,
    /// With TLS: the public listener and its acceptor.
    tls: Option<(TcpListener, TlsAcceptor)>,
    /// `/metrics` on its own address.
    metrics_listener: Option<TcpListener>,
    ctx: Arc<Shared>,
    commands_rx: Option<Arc<Outbox>>,
    gate_rx: Option<GateFeed>,
}

impl Server {
    /// Binds the listening socket and prepares the shared state.
    pub async fn bind(options: ServerOptions) -> io::Result<Server> {
        let (listener, tls) = match &options.tls {
            Some(files) => {
                let acceptor = crate::trust::tls::acceptor(files).map_err(io::Error::other)?;
                let public = TcpListener::bind(options.listen).await?;
                let plain = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
                (plain, Some((public, acceptor)))
            }
            None => (TcpListener::bind(options.listen).await?, None),
        };
        let metrics_listener = match options.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        let keyframes = Arc::new(KeyframeRequests::new(options.keyframe_interval, metrics.clone()));
        let fanout_threads = match options.fanout_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let hub =
            Arc::new(Hub::new(options.limits, metrics.clone(), keyframes.clone()).with_fanout_threads(fanout_threads)?);
        let (commands, commands_rx) = match options.nats {
            Some(_) => {
                let outbox = Outbox::new();
                (Some(outbox.clone()), Some(outbox))
            }
            None => (None, None),
        };
        let (gate, gate_rx) = match options.video_gate {
            Some(settings) => {
                let (gate, rx) = SafetyGate::new(settings, metrics.clone());
                (Some(gate), Some(rx))
            }
            None => (None, None),
        };
        Ok(Server {
            listener,
            tls,
            metrics_listener,
            ctx: Arc::new(Shared {
                hub,
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
        self.ctx.keyframes.clone()
    }

    /// The server's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.ctx.metrics.clone()
    }

    /// Runs until `shutdown` completes: the frame source, the NATS relay, the NATS
    /// video publisher and the accept loop.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let ctx = self.ctx.clone();
        let mut nats = Connections::new(ctx.metrics.clone());
        let source = ctx
            .options
            .source
            .start(ctx.hub.clone(), ctx.metrics.clone(), ctx.keyframes.clone(), &mut nats)
            .await?;
        let mut publisher = None;
        if let Some(publish) = ctx.options.publish.clone() {
            let role = crate::nats::publish::role(&publish);
            match nats.client(&publish.target.servers, &role, true, |_| {}).await {
                Ok(client) => {
                    publisher = Some(tokio::spawn(crate::nats::publish::run(
                        publish,
                        client,
                        ctx.hub.clone(),
                        ctx.metrics.clone(),
                        ctx.keyframes.clone(),
                    )));
                }
                Err(e) => tracing::error!("{role}: NATS unusable: {e}; frames are not published"),
            }
        }
        match (&ctx.options.nats, self.commands_rx.take()) {
            (Some(relay), Some(rx)) => {
                ctx.metrics.set_nats_state("connecting");
                let servers = crate::nats::relay::servers(relay);
                let on_state = crate::nats::relay::on_state(ctx.metrics.clone());
                match nats.client(&servers, crate::nats::relay::ROLE, false, on_state).await {
                    Ok(client) => {
                        tokio::spawn(crate::nats::relay::run(
                            relay.clone(),
                            client,
                            ctx.hub.clone(),
                            ctx.metrics.clone(),
                            ctx.keyframes.clone(),
                            rx,
                            self.gate_rx.take(),
                        ));
                    }
                    Err(e) => {
                        ctx.metrics.set_nats_state("failed");
                        tracing::error!("NATS at {} unusable: {e}; running without NATS", relay.url);
                    }
                }
            }
            _ => tracing::info!(
                "NATS not configured (--nats-url / SDR_NATS_URL): no telemetry relay, client commands are dropped, keyframe requests go only to an in-process producer"
            ),
        }
        let gate_ticker = ctx.gate.clone().map(|gate| tokio::spawn(gate.run()));
        let mut helpers = Vec::new();
        if let Some((public, acceptor)) = self.tls.take() {
            let backend = self.listener.local_addr()?;
            let metrics = ctx.metrics.clone();
            helpers.push(tokio::spawn(crate::trust::tls::serve(
                public,
                acceptor,
                backend,
                ctx.pending.clone(),
                move || {
                    metrics.trust.pending_evicted.fetch_add(1, Ordering::Relaxed);
                },
                std::future::pending(),
            )));
        }
        if let Some(listener) = self.metrics_listener.take() {
            tracing::info!("/metrics on http://{} only", listener.local_addr()?);
            helpers.push(tokio::spawn(serve_metrics(listener, ctx.clone())));
        }
        let listen = self.local_addr()?;
        tracing::info!("{}", ctx.options.trust.exposure(listen, ctx.options.tls.is_some()));
        tracing::info!(
            "listening on {}://{listen} (viewer at /, stream at {STREAM_PATH})",
            if ctx.options.tls.is_some() { "https" } else { "http" }
        );
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tokio::spawn(serve(stream, peer, self.ctx.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors: free the oldest idle socket's, else
                        // back off and keep serving.
                        if self.ctx.pending.evict_oldest() {
                            self.ctx.metrics.trust.pending_evicted.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        } else {
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                },
            }
        }
        for helper in helpers {
            helper.abort();
        }
        // Tell every client why it goes (1001), and give them a moment to take it.
        ctx.hub.close_all(&CloseReason {
            code: 1001,
            reason: "the server is shutting down".into(),
        });
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while ctx.metrics.clients.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(publisher) = publisher {
            publisher.abort();
        }
        if let Some(ticker) = gate_ticker {
            ticker.abort();
        }
        source.stop().await;
        Ok(())
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
/// operator chose who can reach that address.
async fn serve_metrics(listener: TcpListener, ctx: Arc<Shared>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let Ok(Ok((head, _))) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await else {
                return;
            };
            let only = head.head_only;
            match head.path.split('?').next().unwrap_or("/") {
                "/metrics" => {
                    let body = ctx.metrics.render_prometheus();
                    respond_to(
                        &mut stream,
                        only,
                        "200 OK",
                        "text/plain; version=0.0.4",
                        body.as_bytes(),
                    )
                    .await
                }
                "/health" => {
                    let body = ctx.metrics.health_json();
                    respond_to(&mut stream, only, "200 OK", "application/json", body.as_bytes()).await
                }
                _ => respond_to(&mut stream, only, "404 Not Found", "text/plain", b"not found").await,
            }
        });
    }
}

async fn serve(mut stream: TcpStream, peer: SocketAddr, ctx: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    // A place among the sockets in their HTTP phase: a newer socket may evict this one
    // if it sends nothing for longest.
    let (pending, evicted_one) = ctx.pending.admit(std::time::Instant::now());
    if evicted_one {
        ctx.metrics.trust.pending_evicted.fetch_add(1, Ordering::Relaxed);
    }
    let head = tokio::select! {
        () = pending.evicted() => return,
        head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)) => head,
    };
    drop(pending);
    let (head, rest) = match head {
        Ok(Ok(h)) => h,
        Ok(Err(why)) => {
            tracing::debug!("{peer}: {why}");
            if why != "connection closed" && why != "read failed" {
                respond(&mut stream, "400 Bad Request", "text/plain", why.as_bytes()).await;
            }
            return;
        }
        Err(_) => return,
    };
    let path = head.path.split('?').next().unwrap_or("/");
    // Foxglove clients connect to the root (or any path we serve WebSocket on) and ask
    // for their subprotocol; a plain GET of / is the viewer page.
    let foxglove = head.foxglove && head.upgrade_websocket && (path == "/" || path == STREAM_PATH);
    if path == STREAM_PATH || foxglove {
        let Some(key) = head
            .websocket_key
            .as_deref()
            .filter(|_| head.upgrade_websocket && head.version_13 && !head.head_only)
        else {
            respond_to(
                &mut stream,
                head.head_only,
                "426 Upgrade Required",
                "text/plain",
                b"this endpoint speaks WebSocket (version 13)",
            )
            .await;
            return;
        };
        let role = match head.auth.with_credentials(|c| ctx.options.trust.admit(c)) {
            Ok((role, _)) => role,
            Err(why) => {
                ctx.metrics.trust.refused(why);
                refuse(&mut stream, why).await;
                return;
            }
        };
        if ctx.metrics.clients.load(Ordering::Relaxed) >= ctx.options.max_clients as i64 {
            respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                b"too many clients",
            )
            .await;
            return;
        }
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
        let protocol = if foxglove { Protocol::Foxglove } else { Protocol::Sdr };
        crate::connection::run(stream, rest, ctx, protocol, wants_burst(&head.path), role).await;
        return;
    }
    ctx.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
    match path {
        "/" | "/index.html" => {
            respond_to(
                &mut stream,
                head.head_only,
                "200 OK",
                "text/html; charset=utf-8",
                VIEWER_HTML.as_bytes(),
            )
            .await
        }
        "/health" => {
            respond_to(
                &mut stream,
                head.head_only,
                "200 OK",
                "application/json",
                ctx.metrics.health_json().as_bytes(),
            )
            .await
        }
        // On its own address when one is set (then not here); with tokens, any token.
        "/metrics" if ctx.options.metrics_listen.is_none() => {
            match head.auth.with_credentials(|c| ctx.options.trust.admit_metrics(c)) {
                Ok(()) => {
                    respond_to(
                        &mut stream,
                        head.head_only,
                        "200 OK",
                        "text/plain; version=0.0.4",
                        ctx.metrics.render_prometheus().as_bytes(),
                    )
                    .await
                }
                Err(why) => {
                    ctx.metrics.trust.refused(why);
                    refuse(&mut stream, why).await
                }
            }
        }
        "/favicon.ico" => respond_to(&mut stream, head.head_only, "204 No Content", "image/x-icon", b"").await,
        _ => respond_to(&mut stream, head.head_only, "404 Not Found", "text/plain", b"not found").await,
    }
}
