//! WebSocket framing (RFC 6455) of what the server writes itself: the header of an
//! unmasked binary frame (the shared message follows it in the same `writev`), whole
//! text frames, and close frames. Reading (unmasking, fragments, ping/pong) is
//! tungstenite's.

/// Why the server closes a client: a WebSocket close code and a reason text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CloseReason {
    /// RFC 6455 close code.
    pub(crate) code: u16,
    /// Human-readable reason (at most 123 bytes are sent).
    pub(crate) reason: String,
}

/// Close codes (RFC 6455, section 7.4.1) the server closes a client with.
pub(crate) mod close_code {
    /// The server is shutting down.
    pub(crate) const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol.
    pub(crate) const PROTOCOL_ERROR: u16 = 1002;
    /// A text message is not valid UTF-8.
    pub(crate) const INVALID_PAYLOAD: u16 = 1007;
    /// The client went over a limit, stopped answering, lost its grant or has nothing
    /// to watch.
    pub(crate) const POLICY_VIOLATION: u16 = 1008;
    /// A message is larger than the server takes.
    pub(crate) const MESSAGE_TOO_BIG: u16 = 1009;
    /// The client fell behind and no keyframe came in time; it may reconnect.
    pub(crate) const TRY_AGAIN_LATER: u16 = 1013;
}

/// Longest header [`binary_frame_header`] writes.
pub(crate) const MAX_FRAME_HEADER: usize = 10;

/// The header of an unmasked, final, binary WebSocket frame of `len` payload bytes, and
/// how many of its 10 bytes are used.
pub(crate) fn binary_frame_header(len: usize) -> ([u8; MAX_FRAME_HEADER], usize) {
    let mut h = [0u8; MAX_FRAME_HEADER];
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

/// A WebSocket text frame carrying `text` (server to client, unmasked).
pub(crate) fn text_frame(text: &str) -> Vec<u8> {
    let (mut h, hl) = binary_frame_header(text.len());
    h[0] = 0x81;
    let mut f = Vec::with_capacity(hl + text.len());
    f.extend_from_slice(&h[..hl]);
    f.extend_from_slice(text.as_bytes());
    f
}

/// A close frame with a code and a reason (cut to fit a control frame).
pub(crate) fn close_frame(reason: &CloseReason) -> Vec<u8> {
    let mut text = reason.reason.as_str();
    while text.len() > 123 {
        let mut cut = 123.min(text.len() - 1);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text = &text[..cut];
    }
    let mut f = Vec::with_capacity(4 + text.len());
    f.push(0x88);
    f.push((2 + text.len()) as u8);
    f.extend_from_slice(&reason.code.to_be_bytes());
    f.extend_from_slice(text.as_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers() {
        assert_eq!(binary_frame_header(5).0[..2], [0x82, 5]);
        let (h, n) = binary_frame_header(300);
        assert_eq!((&h[..n], n), (&[0x82, 126, 1, 44][..], 4));
        let (h, n) = binary_frame_header(70_000);
        assert_eq!(&h[..n], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        let f = close_frame(&CloseReason {
            code: 1008,
            reason: "é".repeat(100),
        });
        assert!(f.len() <= 127 && f[1] as usize == f.len() - 2);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
