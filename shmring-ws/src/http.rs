//! HTTP/1.1 as far as the server needs it: reading and parsing a request head (GET and
//! HEAD; the WebSocket upgrade headers, the Foxglove subprotocol offer) and writing a
//! small complete response (its head alone for HEAD: `wget --spider`, which SDR_OS's
//! compose healthcheck runs, sends HEAD).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest HTTP request head accepted.
const MAX_REQUEST_HEAD: usize = 16 << 10;
/// Time a client has to send its HTTP request head.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request head could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// A method other than GET and HEAD.
    Method,
    /// Not an HTTP request head.
    Malformed,
    /// Longer than [`MAX_REQUEST_HEAD`].
    TooLarge,
    /// The client closed the connection first.
    Closed,
    /// The socket failed.
    ReadFailed,
}

impl HeadError {
    /// True when the client may still read an answer (a 400 saying why).
    pub(crate) fn answerable(self) -> bool {
        !matches!(self, HeadError::Closed | HeadError::ReadFailed)
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeadError::Method => "only GET and HEAD are served",
            HeadError::Malformed => "malformed HTTP request",
            HeadError::TooLarge => "request head too large",
            HeadError::Closed => "connection closed",
            HeadError::ReadFailed => "read failed",
        })
    }
}

impl std::error::Error for HeadError {}

/// A parsed HTTP request head.
pub(crate) struct RequestHead {
    /// The request target (path and query).
    pub(crate) path: String,
    /// A HEAD request: answer with the response head only (never an upgrade).
    pub(crate) head_only: bool,
    /// `Sec-WebSocket-Key`.
    pub(crate) websocket_key: Option<String>,
    /// `Upgrade: websocket`.
    pub(crate) upgrade_websocket: bool,
    /// `Sec-WebSocket-Version: 13`.
    pub(crate) version_13: bool,
    /// The client offered the Foxglove subprotocol.
    pub(crate) foxglove: bool,
    /// Who sent it: Origin, Host, a token, the subprotocols offered.
    pub(crate) auth: crate::trust::RequestAuth,
}

fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let head_only = match req.method {
                Some("GET") => false,
                Some("HEAD") => true,
                _ => return Err(HeadError::Method),
            };
            let mut head = RequestHead {
                path: req.path.unwrap_or("/").to_owned(),
                head_only,
                websocket_key: None,
                upgrade_websocket: false,
                version_13: false,
                foxglove: false,
                auth: crate::trust::RequestAuth::from_request(req.path.unwrap_or("/"), req.headers),
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
        Err(_) => Err(HeadError::Malformed),
    }
}

/// Writes a complete response with `body` and closes the connection (bounded in time).
pub(crate) async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) {
    respond_to(stream, false, status, content_type, body).await
}

/// [`respond`] to a request that may be a HEAD (`head_only`): then the head alone, with
/// the `Content-Length` the GET would have had.
pub(crate) async fn respond_to(stream: &mut TcpStream, head_only: bool, status: &str, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let body = if head_only { &[][..] } else { body };
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.shutdown().await
    })
    .await;
}

/// Reads a request head; returns it and the bytes the client sent after it.
pub(crate) async fn read_head(stream: &mut TcpStream) -> Result<(RequestHead, Bytes), HeadError> {
    let mut buf = BytesMut::with_capacity(2048);
    loop {
        if buf.len() >= MAX_REQUEST_HEAD {
            return Err(HeadError::TooLarge);
        }
        let n = stream.read_buf(&mut buf).await.map_err(|_| HeadError::ReadFailed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        if let Some((head, len)) = parse_head(&buf)? {
            return Ok((head, buf.split_off(len).freeze()));
        }
    }
}

/// A `401 Unauthorized`, `403 Forbidden` or `421 Misdirected Request` response saying
/// why and what to do.
pub(crate) async fn refuse(stream: &mut TcpStream, why: crate::trust::Refusal) {
    respond(stream, why.status(), "text/plain", why.message().as_bytes()).await;
}

/// The `101 Switching Protocols` response accepting a WebSocket upgrade whose
/// `Sec-WebSocket-Key` is `key`, naming `subprotocol` if the server chose one.
pub(crate) fn switching_protocols(key: &str, subprotocol: Option<&str>) -> String {
    let accept = derive_accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{}\r\n",
        match subprotocol {
            Some(p) => format!("Sec-WebSocket-Protocol: {p}\r\n"),
            None => String::new(),
        }
    )
}
