//! The server: accepts TCP connections, serves the viewer page, `/health` and
//! `/metrics`, upgrades `/stream/ws` to WebSocket, and runs the frame source (ring
//! reader thread or NATS subscriber), the NATS relay and the NATS video publisher.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::hub::{Hub, Protocol, QueueLimits};
use crate::keyframe::KeyframeRequests;
use crate::metrics::Metrics;
use crate::nats::NatsOptions;
use crate::nats_publish::NatsPublishOptions;
use crate::protocol::Command;
use crate::source::FrameSource;

/// The viewer page served at `/`.
pub const VIEWER_HTML: &str = include_str!("viewer.html");
/// The WebSocket endpoint.
pub const STREAM_PATH: &str = "/stream/ws";
/// Largest HTTP request head accepted.
const MAX_HEAD: usize = 16 << 10;
/// Time a client has to send its HTTP request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Client commands waiting for NATS.
const COMMAND_QUEUE: usize = 1024;

/// Everything the server needs to run.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where frames come from: a ring, or NATS (`--source`).
    pub source: FrameSource,
    /// Publish every frame to NATS (`--publish`); `None` does not.
    pub publish: Option<NatsPublishOptions>,
    /// Per-client queue limits and keyframe timeout.
    pub limits: QueueLimits,
    /// Keyframe requests are coalesced to one per this interval.
    pub keyframe_interval: Duration,
    /// NATS relay settings; `None` runs without NATS.
    pub nats: Option<NatsOptions>,
    /// Largest client message (a command) accepted; larger ones close the connection.
    pub max_command_size: usize,
    /// More client messages than this in a second close the connection.
    pub max_messages_per_sec: u32,
    /// A write to a client that makes no progress for this long drops the connection.
    pub write_timeout: Duration,
    /// Most simultaneous WebSocket clients; more are refused with HTTP 503.
    pub max_clients: usize,
    /// Kernel send buffer per client socket in bytes (0: the system default). A small
    /// one keeps a slow client's backlog in its queue, where it is dropped to a
    /// keyframe, rather than in the kernel, where it only adds latency.
    pub send_buffer: usize,
    /// Threads writing frames to client sockets (0: one per CPU).
    pub fanout_threads: usize,
}

/// State shared by every connection.
pub(crate) struct Ctx {
    pub(crate) hub: Arc<Hub>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) keyframes: Arc<KeyframeRequests>,
    pub(crate) commands: Option<mpsc::Sender<Command>>,
    pub(crate) options: ServerOptions,
    /// Told to Foxglove clients, so they can tell a reconnection from a new server.
    pub(crate) session_id: String,
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    ctx: Arc<Ctx>,
    commands_rx: Option<mpsc::Receiver<Command>>,
}

impl Server {
    /// Binds the listening socket and prepares the shared state.
    pub async fn bind(options: ServerOptions) -> io::Result<Server> {
        let listener = TcpListener::bind(options.listen).await?;
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
                let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        Ok(Server {
            listener,
            ctx: Arc::new(Ctx {
                hub,
                metrics,
                keyframes,
                commands,
                options,
                session_id: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis())
                    .to_string(),
            }),
            commands_rx,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
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
        let source = self.ctx.options.source.start(
            self.ctx.hub.clone(),
            self.ctx.metrics.clone(),
            self.ctx.keyframes.clone(),
        )?;
        let publisher = self.ctx.options.publish.clone().map(|publish| {
            tokio::spawn(crate::nats_publish::run(
                publish,
                self.ctx.hub.clone(),
                self.ctx.metrics.clone(),
                self.ctx.keyframes.clone(),
            ))
        });
        match (&self.ctx.options.nats, self.commands_rx.take()) {
            (Some(nats), Some(rx)) => {
                tokio::spawn(crate::nats::run(
                    nats.clone(),
                    self.ctx.hub.clone(),
                    self.ctx.metrics.clone(),
                    self.ctx.keyframes.clone(),
                    rx,
                ));
            }
            _ => tracing::info!(
                "NATS not configured (--nats-url / SDR_NATS_URL): no telemetry relay, client commands are dropped, keyframe requests go only to an in-process producer"
            ),
        }
        tracing::info!(
            "listening on http://{} (viewer at /, stream at {STREAM_PATH})",
            self.listener.local_addr()?
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
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        if let Some(publisher) = publisher {
            publisher.abort();
        }
        source.stop().await;
        Ok(())
    }
}

/// A parsed HTTP request head.
struct Head {
    path: String,
    websocket_key: Option<String>,
    upgrade_websocket: bool,
    version_13: bool,
    /// The client offered the Foxglove subprotocol.
    foxglove: bool,
}

fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            if req.method != Some("GET") {
                return Err("only GET is served");
            }
            let mut head = Head {
                path: req.path.unwrap_or("/").to_owned(),
                websocket_key: None,
                upgrade_websocket: false,
                version_13: false,
                foxglove: false,
            };
            for h in req.headers.iter() {
                let value = std::str::from_utf8(h.value).unwrap_or("").trim();
                if h.name.eq_ignore_ascii_case("upgrade") {
                    head.upgrade_websocket = value.eq_ignore_ascii_case("websocket");
                } else if h.name.eq_ignore_ascii_case("sec-websocket-key") {
                    head.websocket_key = Some(value.to_owned());
                } else if h.name.eq_ignore_ascii_case("sec-websocket-version") {
                    head.version_13 = value == "13";
                } else if h.name.eq_ignore_ascii_case("sec-websocket-protocol") {
                    head.foxglove |= value.split(',').any(|p| p.trim() == crate::foxglove::SUBPROTOCOL);
                }
            }
            Ok(Some((head, len)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err("malformed HTTP request"),
    }
}

async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.shutdown().await
    })
    .await;
}

async fn read_head(stream: &mut TcpStream) -> Result<(Head, Bytes), &'static str> {
    let mut buf = BytesMut::with_capacity(2048);
    loop {
        if buf.len() >= MAX_HEAD {
            return Err("request head too large");
        }
        let n = stream.read_buf(&mut buf).await.map_err(|_| "read failed")?;
        if n == 0 {
            return Err("connection closed");
        }
        if let Some((head, len)) = parse_head(&buf)? {
            return Ok((head, buf.split_off(len).freeze()));
        }
    }
}

async fn serve(mut stream: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>) {
    let _ = stream.set_nodelay(true);
    let (head, rest) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
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
            .filter(|_| head.upgrade_websocket && head.version_13)
        else {
            respond(
                &mut stream,
                "426 Upgrade Required",
                "text/plain",
                b"this endpoint speaks WebSocket (version 13)",
            )
            .await;
            return;
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
        let accept = derive_accept_key(key.as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{}\r\n",
            if foxglove {
                format!("Sec-WebSocket-Protocol: {}\r\n", crate::foxglove::SUBPROTOCOL)
            } else {
                String::new()
            }
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        if ctx.options.send_buffer > 0 {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(ctx.options.send_buffer);
        }
        let protocol = if foxglove { Protocol::Foxglove } else { Protocol::Sdr };
        crate::ws::run(stream, rest, ctx, protocol).await;
        return;
    }
    ctx.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
    match path {
        "/" | "/index.html" => {
            respond(
                &mut stream,
                "200 OK",
                "text/html; charset=utf-8",
                VIEWER_HTML.as_bytes(),
            )
            .await
        }
        "/health" => {
            respond(
                &mut stream,
                "200 OK",
                "application/json",
                ctx.metrics.health_json().as_bytes(),
            )
            .await
        }
        "/metrics" => {
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4",
                ctx.metrics.render_prometheus().as_bytes(),
            )
            .await
        }
        "/favicon.ico" => respond(&mut stream, "204 No Content", "image/x-icon", b"").await,
        _ => respond(&mut stream, "404 Not Found", "text/plain", b"not found").await,
    }
}
