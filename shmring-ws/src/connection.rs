//! One WebSocket client: the protocol reader (tokio-tungstenite, over the socket's read
//! half) and the zero-copy writer (over the write half).
//!
//! tungstenite formats every outgoing message into a per-connection buffer, which would
//! copy each video frame once per client. So outgoing messages bypass it: a 2-10 byte
//! frame header goes in front of the shared [`Bytes`] message and both go to `writev`.
//! While the client keeps up, the fan-out makes that call itself (see
//! [`crate::client`]); the writer task here only finishes what the socket could not take at
//! once, writes backlogs (the GOP burst at join, a slow client) and control frames, and
//! ends the connection. tungstenite still does everything on the way in (unmasking, size
//! limits, fragments, UTF-8, ping/pong, the close handshake); the pongs and close replies
//! it formats are passed to the writer, which sends them between whole messages.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::camera_channels::{self, CameraRelays};
use crate::cameras::{CameraChannel, Cameras, Feed, FIRST_CAMERA_CHANNEL};
use crate::client::{Batch, ClientQueue, DirectSink};
use crate::foxglove;
use crate::framing::{close_code, close_frame, text_frame, CloseReason};
use crate::hub::Hub;
use crate::keyframe::KeyframeRequests;
use crate::limits::{
    CommandBudget, Exceeded, KeyframeRequestLimiter, Liveness, PendingConnections, WireLimits, WireMeter,
};
use crate::message::Outgoing;
use crate::metrics::{Metrics, SentTally};
use crate::nats::outbox::{is_motion_action, is_safety_action, MotionCommand, Outbox, Queued};
use crate::options::ServerOptions;
use crate::protocol::{parse_command, Command, ACTION_REQUEST_IDR, MSG_COMMAND};
use crate::safety::{ClientGate, SafetyGate};
use crate::trust::grant::Grant;
use crate::trust::tokens::Role as ClientRole;
use crate::wire::{wire, Head, Protocol, WRITEV_MESSAGES};

/// State every connection shares (the server's).
pub(crate) struct Shared {
    /// The default camera's hub (the server's own).
    pub(crate) hub: Arc<Hub>,
    /// Every camera (the default one on `hub`).
    pub(crate) cameras: Arc<Cameras>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) keyframes: Arc<KeyframeRequests>,
    /// Where client commands wait for the NATS relay, if NATS is configured.
    pub(crate) commands: Option<Arc<Outbox>>,
    pub(crate) options: ServerOptions,
    /// Told to Foxglove clients, so they can tell a reconnection from a new server.
    pub(crate) session_id: String,
    /// The video safety gate (`None`: switched off).
    pub(crate) gate: Option<Arc<SafetyGate>>,
    /// Sockets still in their HTTP phase (capped; the oldest is evicted).
    pub(crate) pending: Arc<PendingConnections>,
    /// Commands published per second, all clients together.
    pub(crate) command_budget: CommandBudget,
}

/// Most channels a Foxglove client may advertise to publish on.
const MAX_CLIENT_CHANNELS: usize = 64;
/// How often a client whose own video gate holds is checked for recovery.
const GATE_RECHECK: Duration = Duration::from_millis(100);
/// How long the writer may take to finish after the reader ended.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The read half as tungstenite sees it: bytes already read with the HTTP request come
/// first; whatever tungstenite writes (pongs, the close reply) goes to the client's
/// queue for the writer. Every byte read is metered here, before tungstenite
/// assembles messages, so frames that make no message (empty continuations) count too.
struct ProtocolSide {
    prefix: Bytes,
    read: OwnedReadHalf,
    client: Arc<ClientQueue>,
    meter: WireMeter,
    liveness: Arc<Liveness>,
    /// The limit the client went over (the read then fails).
    exceeded: Option<Exceeded>,
}

impl AsyncRead for ProtocolSide {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let side = self.get_mut();
        let before = buf.filled().len();
        let polled = if !side.prefix.is_empty() {
            let n = side.prefix.len().min(buf.remaining());
            buf.put_slice(&side.prefix[..n]);
            side.prefix.advance(n);
            Poll::Ready(Ok(()))
        } else {
            Pin::new(&mut side.read).poll_read(cx, buf)
        };
        let new = &buf.filled()[before..];
        if matches!(polled, Poll::Ready(Ok(()))) && !new.is_empty() {
            let now = Instant::now();
            side.liveness.heard(now);
            if let Err(exceeded) = side.meter.read(new, now) {
                let error = io::Error::other(exceeded.0.clone());
                side.exceeded = Some(exceeded);
                return Poll::Ready(Err(error));
            }
        }
        polled
    }
}

impl AsyncWrite for ProtocolSide {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(self.client.push_control(buf).map(|()| buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl DirectSink for OwnedWriteHalf {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        OwnedWriteHalf::try_write_vectored(self, bufs)
    }
}

/// Writes all of `slices`, waiting for the socket to have room when it is full.
async fn write_all_vectored(w: &OwnedWriteHalf, mut rest: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !rest.is_empty() {
        match w.try_write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => w.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `items` as WebSocket binary frames on the wire of `client`, skipping the
/// first `skip` bytes (already written by a direct write the socket cut short).
async fn write_items(
    w: &OwnedWriteHalf,
    client: &ClientQueue,
    subscription_of: impl Fn(&Outgoing) -> Option<u32>,
    items: &[Outgoing],
    mut skip: usize,
) -> io::Result<()> {
    for chunk in items.chunks(WRITEV_MESSAGES) {
        let mut heads = vec![Head::default(); chunk.len()];
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(chunk.len() * 2);
        let bodies: Vec<Option<&[u8]>> = chunk
            .iter()
            .zip(heads.iter_mut())
            .map(|(item, head)| wire(client.protocol(), subscription_of(item), item, head))
            .collect();
        for (head, body) in heads.iter().zip(&bodies) {
            if let Some(body) = body {
                slices.push(IoSlice::new(head.bytes()));
                slices.push(IoSlice::new(body));
            }
        }
        let mut rest: &mut [IoSlice<'_>] = &mut slices;
        IoSlice::advance_slices(&mut rest, std::mem::take(&mut skip));
        write_all_vectored(w, rest).await?;
    }
    Ok(())
}

/// Writes one batch: the rest of a partly written message, control frames, the others.
async fn write_batch(w: &OwnedWriteHalf, client: &ClientQueue, batch: &Batch) -> io::Result<()> {
    let mut items = &batch.items[..];
    if batch.offset > 0 {
        if let Some((first, others)) = items.split_first() {
            let sub = batch.front_subscription;
            write_items(w, client, |_| sub, std::slice::from_ref(first), batch.offset).await?;
            items = others;
        }
    }
    if !batch.control.is_empty() {
        write_all_vectored(w, &mut [IoSlice::new(&batch.control)]).await?;
    }
    write_items(w, client, |item| batch.subs.for_item(item), items, 0).await
}

fn shutdown_write(w: &OwnedWriteHalf) {
    let _ = socket2::SockRef::from(w.as_ref()).shutdown(std::net::Shutdown::Write);
}

/// Writes what the hub could not write directly, until the connection ends.
async fn writer(w: &OwnedWriteHalf, client: &ClientQueue, ctx: &Shared, peer_gone: &AtomicBool) {
    let mut batch = Batch::default();
    let metrics = &ctx.metrics;
    loop {
        batch.clear();
        client.next_batch(&mut batch).await;
        match tokio::time::timeout(ctx.options.write_timeout, write_batch(w, client, &batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!("client {}: write failed: {e}", client.id());
                peer_gone.store(true, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                metrics.clients_closed_by_server.inc();
                tracing::warn!(
                    "client {}: no write progress for {:?}; dropping the connection",
                    client.id(),
                    ctx.options.write_timeout
                );
                return;
            }
        }
        let now = shmring_core::monotonic_ns();
        let mut tally = SentTally::default();
        for item in &batch.items {
            tally.sent(item, now);
            client.sent(item);
        }
        tally.flush(metrics, false);
        if let Some(reason) = &batch.close {
            metrics.clients_closed_by_server.inc();
            tracing::info!("client {}: closing ({} {})", client.id(), reason.code, reason.reason);
            let _ = tokio::time::timeout(
                CLOSE_GRACE,
                write_all_vectored(w, &mut [IoSlice::new(&close_frame(reason))]),
            )
            .await;
            shutdown_write(w);
            return;
        }
        if batch.end {
            shutdown_write(w);
            return;
        }
    }
}

/// Pings the client every `interval`; one that sent nothing at all (no pong, no
/// message) for two intervals is closed, so silent sockets do not hold client slots
/// when no video flows to them (the write timeout covers those that do).
async fn pinger(client: &ClientQueue, liveness: &Liveness, interval: Duration) {
    /// A ping frame with no payload (unmasked: server to client).
    const PING: [u8; 2] = [0x89, 0x00];
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tick.tick().await;
        let silent = liveness.silent_for(Instant::now());
        if silent >= 2 * interval {
            client.close(CloseReason {
                code: close_code::POLICY_VIOLATION,
                reason: format!("no answer to pings for {} s", silent.as_secs()),
            });
            return std::future::pending().await;
        }
        let _ = client.push_control(&PING);
    }
}

/// How a failed read ends the connection.
#[derive(Debug)]
enum ReadEnd {
    /// The client misbehaved: close it with this reason.
    Close(CloseReason),
    /// The client vanished without a close frame (its business, not abuse).
    PeerGone,
    /// The connection ended otherwise.
    End,
}

/// What a read error means for the connection; `exceeded` is the wire limit the client
/// went over, if that is why the read failed.
fn close_for(error: WsError, exceeded: Option<Exceeded>) -> ReadEnd {
    let close = |code, reason| ReadEnd::Close(CloseReason { code, reason });
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => close(
            close_code::MESSAGE_TOO_BIG,
            format!("message too big: {size} > {max_size} bytes"),
        ),
        WsError::Utf8(_) => close(close_code::INVALID_PAYLOAD, "a text message is not valid UTF-8".into()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => ReadEnd::PeerGone,
        WsError::Io(e) => match exceeded {
            Some(exceeded) => close(close_code::POLICY_VIOLATION, exceeded.0),
            None => {
                tracing::debug!("read ended: {e}");
                ReadEnd::PeerGone
            }
        },
        WsError::Protocol(e) => close(close_code::PROTOCOL_ERROR, format!("protocol error: {e}")),
        e => {
            tracing::debug!("read ended: {e}");
            ReadEnd::End
        }
    }
}

/// Reads the client's messages until it closes, misbehaves or the connection fails.
/// `peer_gone` is set when the client vanished without a close frame (counted once per
/// connection, apart from the connections the server closes).
async fn reader(
    ws: &mut WebSocketStream<ProtocolSide>,
    client: &Arc<ClientQueue>,
    ctx: &Shared,
    feed: &Feed,
    role: ClientRole,
    peer_gone: &AtomicBool,
) {
    let mut session = ClientSession::new(client, ctx, feed, role);
    loop {
        let gated = session.gated();
        let next = tokio::select! {
            next = ws.next() => next,
            // While this client's own gate holds, look for its recovery now and then.
            () = tokio::time::sleep(GATE_RECHECK), if gated => {
                session.recheck_gate();
                continue;
            }
        };
        let msg = match next {
            Some(Ok(Message::Close(_))) => {
                // tungstenite has queued the close reply (an echo of the client's code);
                // a flush hands it to the writer, which sends it, then ends.
                let _ = futures_util::SinkExt::flush(ws).await;
                client.end();
                return;
            }
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                match close_for(e, ws.get_ref().exceeded.clone()) {
                    ReadEnd::Close(reason) => client.close(reason),
                    ReadEnd::PeerGone => {
                        peer_gone.store(true, Ordering::Relaxed);
                        client.end();
                    }
                    ReadEnd::End => client.end(),
                }
                return;
            }
            None => {
                client.end();
                return;
            }
        };
        if let Err(reason) = session.on_message(msg) {
            client.close(reason);
            return;
        }
    }
}

/// A client's messages per one-second window; more than the limit close it.
#[derive(Debug)]
struct MessageRate {
    window_start: Instant,
    in_window: u32,
    max: u32,
}

impl MessageRate {
    fn new(max: u32) -> MessageRate {
        MessageRate {
            window_start: Instant::now(),
            in_window: 0,
            max,
        }
    }

    /// Counts one message; the close reason once the client sent too many this second.
    fn count(&mut self) -> Result<(), CloseReason> {
        if self.window_start.elapsed() >= Duration::from_secs(1) {
            self.window_start = Instant::now();
            self.in_window = 0;
        }
        self.in_window += 1;
        if self.in_window > self.max {
            return Err(CloseReason {
                code: close_code::POLICY_VIOLATION,
                reason: format!("message flood: more than {} messages/s", self.max),
            });
        }
        Ok(())
    }
}

/// One client's side of the protocol: what it may do, its limits, its video gate and
/// (Foxglove) the channels it advertised.
struct ClientSession<'a> {
    client: &'a Arc<ClientQueue>,
    ctx: &'a Shared,
    /// The camera the client watches: its hub and keyframe requests.
    feed: &'a Feed,
    role: ClientRole,
    rate: MessageRate,
    client_gate: Option<ClientGate>,
    /// The channels a Foxglove client advertised to publish on (`clientPublish`).
    channels: RefCell<HashMap<u32, foxglove::ClientTopic>>,
    /// The camera channels (`/camera/<name>`) a Foxglove client subscribed to.
    cameras: CameraRelays,
    keyframe_limiter: KeyframeRequestLimiter,
}

impl<'a> ClientSession<'a> {
    fn new(client: &'a Arc<ClientQueue>, ctx: &'a Shared, feed: &'a Feed, role: ClientRole) -> Self {
        ClientSession {
            client,
            ctx,
            feed,
            role,
            rate: MessageRate::new(ctx.options.max_messages_per_sec),
            client_gate: ctx.gate.as_ref().map(|g| g.client_gate()),
            channels: RefCell::new(HashMap::new()),
            cameras: CameraRelays::default(),
            keyframe_limiter: KeyframeRequestLimiter::new(
                crate::defaults::DEFAULT_CLIENT_KEYFRAME_INTERVAL.max(ctx.options.keyframe_interval),
            ),
        }
    }

    /// True while this client's own video gate holds.
    fn gated(&self) -> bool {
        self.client_gate.as_ref().is_some_and(ClientGate::closed)
    }

    /// Looks for the recovery of this client's gate (and tells the client).
    fn recheck_gate(&mut self) {
        if let (Some(gate), Some(mine)) = (&self.ctx.gate, self.client_gate.as_mut()) {
            if let Some(status) = mine.recovered(gate, self.client.newest_frame_ns()) {
                self.client.push_urgent(&status);
            }
        }
    }

    /// Handles one message (not a close); the close reason if the client must go.
    fn on_message(&mut self, msg: Message) -> Result<(), CloseReason> {
        let protocol = self.client.protocol();
        match msg {
            Message::Binary(b) if protocol == Protocol::Sdr && b.first() == Some(&MSG_COMMAND) => {
                self.on_command_message(b.slice(1..))
            }
            Message::Text(t) if protocol == Protocol::Foxglove => {
                self.rate.count()?;
                self.on_foxglove_request(t.as_str());
                Ok(())
            }
            Message::Binary(b)
                if protocol == Protocol::Foxglove && b.first() == Some(&foxglove::OP_CLIENT_MESSAGE_DATA) =>
            {
                self.on_client_publish(&b)
            }
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => self.rate.count(),
            Message::Binary(_) | Message::Text(_) | Message::Frame(_) => {
                self.rate.count()?;
                self.malformed();
                Ok(())
            }
        }
    }

    fn malformed(&self) {
        self.ctx.metrics.client_messages_malformed.inc();
    }

    fn on_foxglove_request(&self, text: &str) {
        let session = FoxgloveSession {
            client: self.client,
            ctx: self.ctx,
            hub: &self.feed.hub,
            channels: &self.channels,
            cameras: &self.cameras,
        };
        foxglove::handle_request(text, &session);
    }

    /// clientPublish: `[0x01][u32 LE channel id][payload]`, a command through the same
    /// path (and gate) as the SDR protocol's.
    fn on_client_publish(&mut self, message: &[u8]) -> Result<(), CloseReason> {
        let command = message
            .get(1..5)
            .and_then(|id| <[u8; 4]>::try_from(id).ok())
            .and_then(|id| self.channels.borrow().get(&u32::from_le_bytes(id)).cloned())
            .and_then(|topic| topic.command(&message[5..]));
        match command {
            Some(json) => self.on_command_message(Bytes::from(json)),
            None => {
                self.rate.count()?;
                self.malformed();
                let _ = self.client.push_control(&text_frame(&foxglove::status(
                    foxglove::STATUS_WARNING,
                    "message on a channel not advertised, or not a JSON object of its topic's shape",
                )));
                Ok(())
            }
        }
    }

    /// A command's JSON. Safety commands from a control client do not count against the
    /// client's message limit (the wire limits still apply): they are never refused.
    fn on_command_message(&mut self, body: Bytes) -> Result<(), CloseReason> {
        let cmd = match parse_command(&body, self.ctx.options.max_command_size) {
            Ok(c) => c,
            Err(e) => {
                self.rate.count()?;
                self.malformed();
                tracing::debug!("client {}: ignored a command: {e}", self.client.id());
                return Ok(());
            }
        };
        if !(self.role == ClientRole::Control && is_safety_action(&cmd.action)) {
            self.rate.count()?;
        }
        self.on_command(cmd);
        Ok(())
    }

    fn on_command(&mut self, cmd: Command) {
        let metrics = &self.ctx.metrics;
        if cmd.action == ACTION_REQUEST_IDR {
            // Any client may ask (its decoder failed), at most once per interval.
            if self.keyframe_limiter.allow(Instant::now()) {
                self.feed.keyframes.request("a viewer asked (decoder error)");
            } else {
                metrics.keyframe_requests_coalesced.inc();
            }
            return;
        }
        if self.role != ClientRole::Control {
            metrics.trust.commands_refused_role.inc();
            tracing::debug!(
                "client {}: a view token may not send {:?}",
                self.client.id(),
                cmd.action
            );
            return;
        }
        if is_safety_action(&cmd.action) {
            self.on_safety_command(cmd);
        } else {
            self.on_budgeted_command(cmd);
        }
    }

    /// `estop`, `estop_clear`, `pause`: no budget, no gate, their own lane.
    fn on_safety_command(&self, cmd: Command) {
        let metrics = &self.ctx.metrics;
        match &self.ctx.commands {
            Some(outbox) => {
                if outbox.push_safety(self.client.id(), cmd) == Queued::Superseded {
                    metrics.commands_superseded.inc();
                }
            }
            None => {
                metrics.commands_dropped.inc();
            }
        }
    }

    /// Motion and other commands: the global budget, the video gate, then the lane.
    fn on_budgeted_command(&mut self, cmd: Command) {
        let metrics = &self.ctx.metrics;
        if !self.ctx.command_budget.try_take(Instant::now()) {
            metrics.trust.commands_refused_budget.inc();
            return;
        }
        let accepted_ns = shmring_core::monotonic_ns();
        let generation = self.ctx.gate.as_ref().map_or(0, |g| g.generation());
        if !self.judge(&cmd.action) {
            metrics.commands_gated.inc();
            return;
        }
        let Some(outbox) = &self.ctx.commands else {
            metrics.commands_dropped.inc();
            return;
        };
        let queued = if is_motion_action(&cmd.action) {
            outbox.offer_motion(MotionCommand {
                command: cmd,
                accepted_ns,
                generation,
                client: self.client.clone(),
            })
        } else {
            outbox.push_other(cmd)
        };
        match queued {
            Queued::Waiting => {}
            Queued::Superseded => {
                metrics.commands_superseded.inc();
            }
            Queued::Full => {
                metrics.commands_dropped.inc();
            }
        }
    }

    /// Asks the video gates (the ring's, then this client's) about `action`; tells the
    /// client when its own gate changes. True if it may go.
    fn judge(&mut self, action: &str) -> bool {
        let (Some(gate), Some(mine)) = (&self.ctx.gate, self.client_gate.as_mut()) else {
            return true;
        };
        let (pass, status) = gate.judge(mine, self.client.newest_frame_ns(), action);
        if let Some(status) = status {
            self.client.push_urgent(&status);
        }
        pass
    }
}

/// A Foxglove client's requests act on its queue, through the hub.
struct FoxgloveSession<'a> {
    client: &'a Arc<ClientQueue>,
    ctx: &'a Shared,
    /// The hub of the camera the connection serves.
    hub: &'a Hub,
    /// The channels the client advertised to publish on (`clientPublish`).
    channels: &'a RefCell<HashMap<u32, foxglove::ClientTopic>>,
    /// The camera channels it subscribed to.
    cameras: &'a CameraRelays,
}

impl foxglove::Session for FoxgloveSession<'_> {
    fn subscribe(&self, channel: u32, subscription: u32) -> bool {
        if channel >= FIRST_CAMERA_CHANNEL && self.ctx.options.cameras.names_cameras() {
            return (self.cameras).subscribe(self.client, &self.ctx.cameras, channel, subscription);
        }
        self.hub.subscribe(self.client, channel, subscription)
    }

    fn unsubscribe(&self, subscription: u32) {
        if !self.cameras.unsubscribe(self.client, subscription) {
            self.hub.unsubscribe(self.client, subscription);
        }
    }

    /// A control frame, so it goes out between whole messages.
    fn status(&self, level: u8, message: &str) {
        let _ = self.client.push_control(&text_frame(&foxglove::status(level, message)));
    }

    fn client_advertise(&self, id: u32, topic: &str, encoding: &str) -> bool {
        let Some(meaning) = foxglove::client_topic_action(topic, encoding) else {
            return false;
        };
        let mut channels = self.channels.borrow_mut();
        if channels.len() >= MAX_CLIENT_CHANNELS && !channels.contains_key(&id) {
            return false;
        }
        channels.insert(id, meaning);
        true
    }

    fn client_unadvertise(&self, id: u32) {
        self.channels.borrow_mut().remove(&id);
    }

    fn malformed(&self) {
        self.ctx.metrics.client_messages_malformed.inc();
    }
}

async fn drain(read: &mut OwnedReadHalf) {
    let mut scratch = [0u8; 4096];
    while let Ok(n) = tokio::io::AsyncReadExt::read(read, &mut scratch).await {
        if n == 0 {
            break;
        }
    }
}

/// Joins the client to its camera's hub; a Foxglove client `with_cameras` is told
/// about the camera channels too (returned: the ones it was told about).
fn join(
    ctx: &Shared,
    feed: &Feed,
    protocol: Protocol,
    burst: bool,
    with_cameras: bool,
) -> (Arc<ClientQueue>, Vec<CameraChannel>) {
    let shown = if with_cameras {
        ctx.cameras.channels()
    } else {
        Vec::new()
    };
    let client = match protocol {
        Protocol::Sdr => feed.hub.join(burst),
        Protocol::Foxglove => feed.hub.join_subscriber_with(
            protocol,
            &text_frame(&foxglove::server_info(&ctx.session_id)),
            &camera_channels::joining(&shown),
        ),
    };
    (client, shown)
}

/// Runs an upgraded WebSocket connection to its end. `prefix` holds bytes the client
/// sent after its HTTP request.
/// `feed`: the camera it watches (Foxglove: the one its URL names, else the default);
/// `burst`: the client asked to start with the GOP cache (`?burst=gop`); `grant`: what its
/// token lets it do (the connection is closed if that is revoked).
pub(crate) async fn run(
    stream: TcpStream,
    prefix: Bytes,
    ctx: Arc<Shared>,
    feed: Feed,
    protocol: Protocol,
    burst: bool,
    mut grant: Grant,
) {
    let role = grant.role();
    let subscribe_timeout = (protocol == Protocol::Foxglove).then_some(ctx.options.subscribe_timeout);
    let (read, write) = stream.into_split();
    let write = Arc::new(write);
    // Camera channels with several cameras; one ring is served as before.
    let with_cameras = protocol == Protocol::Foxglove && ctx.options.cameras.names_cameras();
    let (client, shown) = join(&ctx, &feed, protocol, burst, with_cameras);
    client.attach_sink(write.clone());
    ctx.metrics.clients.fetch_add(1, Ordering::Relaxed);
    ctx.metrics.connections_total.inc();
    let config = WebSocketConfig::default()
        .max_message_size(Some(ctx.options.max_command_size + 1))
        .max_frame_size(Some(ctx.options.max_command_size + 1))
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let liveness = Arc::new(Liveness::default());
    // Relaxed: a flag read after both tasks ended, in this same task.
    let peer_gone = AtomicBool::new(false);
    let side = ProtocolSide {
        prefix,
        read,
        client: client.clone(),
        meter: WireMeter::new(
            WireLimits {
                max_frames_per_sec: ctx.options.max_frames_per_sec,
                max_bytes_per_sec: ctx.options.max_bytes_per_sec,
            },
            Instant::now(),
        ),
        liveness: liveness.clone(),
        exceeded: None,
    };
    let mut ws = WebSocketStream::from_raw_socket(side, Role::Server, Some(config)).await;
    {
        let writer = writer(&write, &client, &ctx, &peer_gone);
        let reader = reader(&mut ws, &client, &ctx, &feed, role, &peer_gone);
        let pinger = pinger(&client, &liveness, ctx.options.ping_interval);
        tokio::pin!(writer);
        tokio::select! {
            () = &mut writer => {}
            () = reader => {
                let _ = tokio::time::timeout(CLOSE_GRACE, writer).await;
            }
            () = pinger => {}
            () = crate::standing::watch(&mut grant, &client, subscribe_timeout, &ctx.metrics) => {}
            () = camera_channels::advertise(&client, &ctx.cameras, shown), if with_cameras => {}
        }
    }
    if peer_gone.load(Ordering::Relaxed) {
        ctx.metrics.trust.clients_reset_by_peer.inc();
    }
    // No direct writes after this: the close frame (if any) was the last message.
    client.finish();
    shutdown_write(&write);
    feed.hub.leave(&client);
    // Lingering close: our side is shut down for writing; read (and discard) whatever
    // the client still sends, its close reply or a flood in flight, until it closes.
    // Dropping a socket with unread input would reset the connection, and the client's
    // kernel would discard the close frame (and its reason) before the client read it.
    let _ = tokio::time::timeout(CLOSE_GRACE, drain(&mut ws.get_mut().read)).await;
    ctx.metrics.clients.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!("client {} left ({} frames dropped)", client.id(), client.dropped());
}
