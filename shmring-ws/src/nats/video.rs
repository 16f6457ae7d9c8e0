//! Video over NATS (the wire format of `docs/nats-video.md`): where a stream's frames,
//! stored keyframes and keyframe requests travel, how a frame larger than the server's
//! `max_payload` is cut into chunks and put back together, and the counters both ends
//! keep.
//!
//! A frame travels as its *record*: the ring's 32-byte frame header, then the payload.
//! A record that fits the server's `max_payload` is one NATS message with no NATS
//! headers. A larger one becomes `count` messages, each with the NATS header
//! `Shmring-Chunk: <frame_seq> <index> <count>`; concatenating their payloads in index
//! order gives the record.
//!
//! (`a_record_split_into_chunks_is_put_back_together` below shows both ends.)

use bytes::{BufMut, Bytes, BytesMut};
use shmring_core::layout::{FrameHeader, FLAG_KEYFRAME, FLAG_NO_CRC, HEADER_SIZE};
use zerocopy::FromBytes;

use crate::protocol::{parse_video, video_message_buffer};

/// The NATS header that marks a chunk: `<frame_seq> <index> <count>` in decimal.
pub(crate) const CHUNK_HEADER: &str = "Shmring-Chunk";
/// Bytes kept free in a chunked message for its NATS headers (`NATS/1.0\r\n`, the
/// chunk header, the blank line): the server counts headers against `max_payload`.
pub(crate) const CHUNK_HEADER_RESERVE: usize = 96;
/// The `max_payload` assumed before the first connection tells the real one.
pub(crate) const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
/// The subject prefix of live video.
pub const VIDEO_SUBJECT_PREFIX: &str = "video.";

/// The subject camera `camera` is published on when the default camera's is
/// `default_subject`: its last token replaced by the camera's name
/// (`video.front` -> `video.wrist`; a subject of one token: `video.<camera>`).
pub fn camera_subject(default_subject: &str, camera: &str) -> String {
    match default_subject.rsplit_once('.') {
        Some((prefix, _)) => format!("{prefix}.{camera}"),
        None => format!("{VIDEO_SUBJECT_PREFIX}{camera}"),
    }
}

/// Where a stream travels, and the NATS servers to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsVideoTarget {
    /// Server URLs (`nats://HOST:PORT`), tried in turn.
    pub servers: Vec<String>,
    /// The live subject, `video.<stream>`: every frame, in order.
    pub subject: String,
}

impl NatsVideoTarget {
    /// Parses `nats://HOST:PORT[,nats://HOST2:PORT2...][/SUBJECT]`. The subject is the
    /// path of the last URL; without one, `default_subject` is used (or the URL is
    /// refused if there is none). A subject must not contain wildcards or spaces.
    ///
    /// ```
    /// use shmring_ws::NatsVideoTarget;
    /// let t = NatsVideoTarget::parse("nats://a:4222,nats://b:4223/video.cam0", None).unwrap();
    /// assert_eq!(t.servers, ["nats://a:4222", "nats://b:4223"]);
    /// assert_eq!(t.subject, "video.cam0");
    /// assert_eq!(t.keyframe_subject(2), "video.cam0.key.2");
    /// ```
    pub fn parse(url: &str, default_subject: Option<&str>) -> Result<Self, TargetError> {
        let mut servers: Vec<String> = url.split(',').map(|s| s.trim().to_owned()).collect();
        let Some(last) = servers.last_mut() else {
            return Err(TargetError::EmptyServer { url: url.to_owned() });
        };
        let scheme_end = last.find("://").map_or(0, |i| i + 3);
        let subject = match last[scheme_end..].find('/') {
            Some(slash) => {
                let subject = last[scheme_end + slash + 1..].to_owned();
                last.truncate(scheme_end + slash);
                subject
            }
            None => String::new(),
        };
        let subject = match (subject.is_empty(), default_subject) {
            (false, _) => subject,
            (true, Some(d)) => d.to_owned(),
            (true, None) => return Err(TargetError::NoSubject { url: url.to_owned() }),
        };
        if subject.is_empty()
            || subject.split('.').any(str::is_empty)
            || subject.contains(|c: char| c == '*' || c == '>' || c.is_whitespace())
        {
            return Err(TargetError::BadSubject { subject });
        }
        if servers.iter().any(String::is_empty) {
            return Err(TargetError::EmptyServer { url: url.to_owned() });
        }
        Ok(NatsVideoTarget { servers, subject })
    }

    /// The subject of stored keyframe chunk `index`: `<subject>.key.<index>`.
    pub fn keyframe_subject(&self, index: u16) -> String {
        format!("{}.key.{index}", self.subject)
    }

    /// The subjects the keyframe store holds: `<subject>.key.*`.
    pub fn keyframe_subjects(&self) -> String {
        format!("{}.key.*", self.subject)
    }

    /// The subject keyframe requests go upstream on: `<subject>.idr`.
    pub fn idr_subject(&self) -> String {
        format!("{}.idr", self.subject)
    }

    /// The JetStream stream keeping this stream's newest keyframe:
    /// `SHMRING_KEY_<subject with '.' and '-' as '_'>`.
    pub fn keyframe_stream(&self) -> String {
        let name: String = self
            .subject
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
            .collect();
        format!("SHMRING_KEY_{name}")
    }
}

/// Why a NATS video URL was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetError {
    /// No subject in the URL and no default.
    NoSubject {
        /// The URL as given.
        url: String,
    },
    /// The subject has wildcards, spaces or empty tokens.
    BadSubject {
        /// The subject.
        subject: String,
    },
    /// A server address in the list is empty.
    EmptyServer {
        /// The URL as given.
        url: String,
    },
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetError::NoSubject { url } => {
                write!(f, "{url}: no subject; write it as nats://HOST:PORT/video.<stream>")
            }
            TargetError::BadSubject { subject } => write!(
                f,
                "{subject:?} is not a NATS subject a stream can use (no wildcards, spaces or empty tokens)"
            ),
            TargetError::EmptyServer { url } => write!(f, "{url}: empty server address"),
        }
    }
}

impl std::error::Error for TargetError {}

/// Why a frame cannot be cut into chunks for a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SplitError {
    /// The server's `max_payload` leaves no room for data after the chunk headers.
    NoRoom {
        /// The server's `max_payload`.
        max_payload: usize,
    },
    /// The frame would need more than 65535 chunks.
    TooManyChunks {
        /// The record's length in bytes.
        len: usize,
        /// Chunks it would need.
        count: usize,
        /// Data bytes per chunk.
        per_chunk: usize,
    },
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SplitError::NoRoom { max_payload } => {
                write!(f, "max_payload {max_payload} leaves no room for chunk data")
            }
            SplitError::TooManyChunks { len, count, per_chunk } => write!(
                f,
                "a {len} byte frame needs {count} chunks of {per_chunk} bytes (at most 65535)"
            ),
        }
    }
}

impl std::error::Error for SplitError {}

/// One NATS message of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// The `Shmring-Chunk` header value, `None` for a frame sent whole.
    pub header: Option<String>,
    /// The message payload (a slice of the record, not a copy).
    pub data: Bytes,
}

/// Cuts `record` (32-byte frame header + payload) into the messages that carry it
/// through a server with `max_payload`. Fails if that would take more than 65535
/// chunks or `max_payload` leaves no room for data.
pub(crate) fn split_record(record: Bytes, frame_seq: u64, max_payload: usize) -> Result<Vec<Chunk>, SplitError> {
    if record.len() <= max_payload {
        return Ok(vec![Chunk {
            header: None,
            data: record,
        }]);
    }
    let per_chunk = max_payload.saturating_sub(CHUNK_HEADER_RESERVE);
    if per_chunk == 0 {
        return Err(SplitError::NoRoom { max_payload });
    }
    let count = record.len().div_ceil(per_chunk);
    if count > u16::MAX as usize {
        return Err(SplitError::TooManyChunks {
            len: record.len(),
            count,
            per_chunk,
        });
    }
    Ok((0..count)
        .map(|i| Chunk {
            header: Some(format!("{frame_seq} {i} {count}")),
            data: record.slice(i * per_chunk..((i + 1) * per_chunk).min(record.len())),
        })
        .collect())
}

/// A `Shmring-Chunk` header value: which frame, which chunk, how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkId {
    /// frame_seq of the frame.
    pub frame_seq: u64,
    /// Chunk number, 0-based.
    pub index: u16,
    /// Chunks in the frame (at least 1).
    pub count: u16,
}

impl ChunkId {
    /// Parses `"<frame_seq> <index> <count>"`.
    pub(crate) fn parse(value: &str) -> Result<ChunkId, NatsVideoError> {
        let mut it = value.split_ascii_whitespace();
        let mut next = || it.next().ok_or(NatsVideoError::BadChunkHeader);
        let frame_seq = next()?.parse().map_err(|_| NatsVideoError::BadChunkHeader)?;
        let index: u16 = next()?.parse().map_err(|_| NatsVideoError::BadChunkHeader)?;
        let count: u16 = next()?.parse().map_err(|_| NatsVideoError::BadChunkHeader)?;
        if count == 0 || index >= count || it.next().is_some() {
            return Err(NatsVideoError::BadChunkHeader);
        }
        Ok(ChunkId {
            frame_seq,
            index,
            count,
        })
    }
}

/// Why a NATS video message was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NatsVideoError {
    /// The `Shmring-Chunk` header is not `<frame_seq> <index> <count>` with index < count.
    BadChunkHeader,
    /// A chunk arrived out of turn (a chunk of the frame was lost); the partial frame
    /// is discarded.
    BrokenChunkRun {
        /// The frame being assembled.
        frame_seq: u64,
    },
    /// The record is shorter than a frame header.
    TooShort(usize),
    /// The header's size does not match the bytes that came.
    SizeMismatch {
        /// The header's size field.
        header: u64,
        /// Payload bytes received.
        got: usize,
    },
    /// The frame is larger than the receiver accepts.
    TooLarge(u64),
    /// The payload's CRC-32 differs from the header's.
    BadCrc {
        /// The frame.
        frame_seq: u64,
    },
    /// frame_seq 0 (padding, never a frame) or a chunk header naming another frame.
    BadSeq(u64),
}

impl std::fmt::Display for NatsVideoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsVideoError::BadChunkHeader => {
                write!(
                    f,
                    "malformed {CHUNK_HEADER} header (want \"<frame_seq> <index> <count>\")"
                )
            }
            NatsVideoError::BrokenChunkRun { frame_seq } => {
                write!(
                    f,
                    "chunk of frame {frame_seq} out of turn (a chunk was lost); frame discarded"
                )
            }
            NatsVideoError::TooShort(n) => write!(f, "{n} bytes is shorter than a 32-byte frame header"),
            NatsVideoError::SizeMismatch { header, got } => {
                write!(f, "frame header says {header} payload bytes, {got} came")
            }
            NatsVideoError::TooLarge(n) => write!(f, "a {n} byte frame is larger than accepted"),
            NatsVideoError::BadCrc { frame_seq } => write!(f, "frame {frame_seq}: payload CRC-32 mismatch"),
            NatsVideoError::BadSeq(s) => write!(f, "frame_seq {s} does not match its chunks (or is 0)"),
        }
    }
}

impl std::error::Error for NatsVideoError {}

/// A frame received over NATS, checked, ready for the hub.
#[derive(Clone, Debug)]
pub(crate) struct ReceivedFrame {
    /// `[0x01][32-byte frame header][payload]`, the WebSocket message.
    pub message: Bytes,
    /// The header's frame_seq.
    pub frame_seq: u64,
    /// The header's frame_id.
    pub frame_id: u64,
    /// True for a keyframe.
    pub keyframe: bool,
}

/// Puts chunked frames back together and checks every frame (header size, CRC-32,
/// frame_seq). Holds at most one partial frame: chunks of one frame are published
/// back to back, so a chunk of another frame means the partial one lost a chunk.
#[derive(Debug)]
pub(crate) struct Reassembler {
    max_frame: usize,
    verify_crc: bool,
    partial: Option<Partial>,
}

#[derive(Debug)]
struct Partial {
    id: ChunkId,
    next: u16,
    /// `[0x01]` + the record bytes so far.
    buf: BytesMut,
}

impl Reassembler {
    /// Accepts frames of up to `max_frame` payload bytes; `verify_crc` checks CRC-32s.
    pub(crate) fn new(max_frame: usize, verify_crc: bool) -> Self {
        Reassembler {
            max_frame,
            verify_crc,
            partial: None,
        }
    }

    /// Takes one message (its `Shmring-Chunk` header value, if any, and payload);
    /// returns the frame it completes. An error discards the message and any partial
    /// frame it broke; the next frame is assembled normally.
    pub(crate) fn push(
        &mut self,
        chunk_header: Option<&str>,
        data: &[u8],
    ) -> Result<Option<ReceivedFrame>, NatsVideoError> {
        let Some(value) = chunk_header else {
            // An incomplete frame lost its last chunks; it shows as a frame_seq gap.
            self.partial = None;
            let mut buf = video_message_buffer(data.len());
            buf.put_slice(data);
            return self.check(buf.freeze(), None).map(Some);
        };
        let id = ChunkId::parse(value)?;
        if id.index == 0 {
            if id.frame_seq == 0 {
                return Err(NatsVideoError::BadSeq(0));
            }
            // The header's size, once checked, bounds the buffer (not the chunk count,
            // which a hostile message can set to anything).
            let size = FrameHeader::read_from_prefix(data).map_or(0, |(h, _)| u64::from(h.size.get()));
            if size > self.max_frame as u64 {
                self.partial = None;
                return Err(NatsVideoError::TooLarge(size));
            }
            let mut buf = video_message_buffer(HEADER_SIZE + size as usize);
            buf.put_slice(data);
            self.partial = Some(Partial { id, next: 1, buf });
        } else {
            let Some(p) = self.partial.as_mut() else {
                return Err(NatsVideoError::BrokenChunkRun {
                    frame_seq: id.frame_seq,
                });
            };
            if p.id.frame_seq != id.frame_seq || p.id.count != id.count || p.next != id.index {
                let frame_seq = p.id.frame_seq;
                self.partial = None;
                return Err(NatsVideoError::BrokenChunkRun { frame_seq });
            }
            if p.buf.len() - 1 + data.len() > HEADER_SIZE + self.max_frame {
                let size = (p.buf.len() - 1 + data.len()) as u64;
                self.partial = None;
                return Err(NatsVideoError::TooLarge(size));
            }
            p.buf.put_slice(data);
            p.next += 1;
        }
        let done = self.partial.as_ref().is_some_and(|p| p.next == p.id.count);
        if !done {
            return Ok(None);
        }
        let p = self.partial.take().expect("checked above");
        self.check(p.buf.freeze(), Some(p.id.frame_seq)).map(Some)
    }

    fn check(&self, message: Bytes, chunk_seq: Option<u64>) -> Result<ReceivedFrame, NatsVideoError> {
        let (header, payload) = parse_video(&message).ok_or(NatsVideoError::TooShort(message.len() - 1))?;
        let size = u64::from(header.size.get());
        if size > self.max_frame as u64 {
            return Err(NatsVideoError::TooLarge(size));
        }
        if size != payload.len() as u64 {
            return Err(NatsVideoError::SizeMismatch {
                header: size,
                got: payload.len(),
            });
        }
        let frame_seq = header.frame_seq.get();
        if frame_seq == 0 || chunk_seq.is_some_and(|s| s != frame_seq) {
            return Err(NatsVideoError::BadSeq(frame_seq));
        }
        let flags = header.flags.get();
        if self.verify_crc && flags & FLAG_NO_CRC == 0 && crc32fast::hash(payload) != header.crc32.get() {
            return Err(NatsVideoError::BadCrc { frame_seq });
        }
        Ok(ReceivedFrame {
            frame_seq,
            frame_id: header.frame_id.get(),
            keyframe: flags & FLAG_KEYFRAME != 0,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MSG_VIDEO;

    #[test]
    fn other_cameras_replace_the_last_token_of_the_default_subject() {
        assert_eq!(camera_subject("video.front", "wrist"), "video.wrist");
        assert_eq!(camera_subject("site1.video.front", "wrist"), "site1.video.wrist");
        assert_eq!(camera_subject("frames", "wrist"), "video.wrist");
    }
    use shmring_core::layout::FLAG_KEYFRAME;
    use zerocopy::IntoBytes;

    #[test]
    fn a_record_split_into_chunks_is_put_back_together() {
        let mut record = vec![0u8; 32];
        record[8] = 7; // frame_seq 7
        record[16..20].copy_from_slice(&(1000u32).to_le_bytes());
        record[20] = 0x04; // FLAG_NO_CRC
        record.extend(std::iter::repeat_n(9u8, 1000));
        // `record` is a 32-byte frame header and 1000 payload bytes; the server takes 400.
        let chunks = split_record(Bytes::from(record.clone()), 7, 400).unwrap();
        assert_eq!(chunks.len(), 4);
        let mut reassembler = Reassembler::new(1 << 20, true);
        let mut frames = Vec::new();
        for chunk in chunks {
            frames.extend(reassembler.push(chunk.header.as_deref(), &chunk.data).unwrap());
        }
        assert_eq!(&frames[0].message[1..], &record[..]); // `[0x01]` + the record
    }

    fn record(seq: u64, len: usize, key: bool) -> Bytes {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + seq as usize) as u8).collect();
        let h = FrameHeader::new(
            seq * 10,
            seq,
            len as u32,
            if key { FLAG_KEYFRAME } else { 0 },
            1,
            crc32fast::hash(&payload),
        );
        let mut b = h.as_bytes().to_vec();
        b.extend(payload);
        Bytes::from(b)
    }

    fn feed(r: &mut Reassembler, chunks: &[Chunk]) -> Vec<Result<Option<ReceivedFrame>, NatsVideoError>> {
        chunks.iter().map(|c| r.push(c.header.as_deref(), &c.data)).collect()
    }

    #[test]
    fn whole_and_chunked_frames_round_trip() {
        let mut r = Reassembler::new(1 << 20, true);
        for (seq, len, max) in [(1, 100, 1000), (2, 5000, 1000), (3, 904, 1000), (4, 905, 1000)] {
            let rec = record(seq, len, seq == 1);
            let chunks = split_record(rec.clone(), seq, max).unwrap();
            assert!(chunks.iter().all(|c| c.data.len() <= max));
            assert_eq!(chunks.len() > 1, rec.len() > max, "frame {seq}");
            let out = feed(&mut r, &chunks);
            let frames: Vec<_> = out.into_iter().map(|o| o.unwrap()).collect();
            assert!(frames[..frames.len() - 1].iter().all(Option::is_none));
            let f = frames.last().unwrap().clone().unwrap();
            assert_eq!(f.frame_seq, seq);
            assert_eq!(f.keyframe, seq == 1);
            assert_eq!(f.message[0], MSG_VIDEO);
            assert_eq!(&f.message[1..], &rec[..]);
        }
    }

    #[test]
    fn a_lost_chunk_discards_its_frame_only() {
        let mut r = Reassembler::new(1 << 20, true);
        let a = split_record(record(5, 3000, true), 5, 1000).unwrap();
        let b = split_record(record(6, 3000, false), 6, 1000).unwrap();
        assert!(matches!(r.push(a[0].header.as_deref(), &a[0].data), Ok(None)));
        // a[1] is lost: a[2] is out of turn, frame 5 is dropped.
        assert_eq!(
            r.push(a[2].header.as_deref(), &a[2].data).unwrap_err(),
            NatsVideoError::BrokenChunkRun { frame_seq: 5 }
        );
        let out = feed(&mut r, &b);
        assert_eq!(out.last().unwrap().as_ref().unwrap().as_ref().unwrap().frame_seq, 6);
        // A frame starting while another is incomplete replaces it.
        assert!(matches!(r.push(a[0].header.as_deref(), &a[0].data), Ok(None)));
        let whole = record(7, 10, false);
        assert_eq!(r.push(None, &whole).unwrap().unwrap().frame_seq, 7);
        assert!(r.partial.is_none());
    }

    #[test]
    fn damaged_messages_are_refused() {
        let mut r = Reassembler::new(4096, true);
        assert_eq!(r.push(None, &[1, 2, 3]).unwrap_err(), NatsVideoError::TooShort(3));
        let mut rec = record(9, 100, false).to_vec();
        rec[40] ^= 1;
        assert_eq!(r.push(None, &rec).unwrap_err(), NatsVideoError::BadCrc { frame_seq: 9 });
        let rec = record(9, 100, false);
        assert!(matches!(
            r.push(None, &rec[..90]).unwrap_err(),
            NatsVideoError::SizeMismatch { header: 100, got: 58 }
        ));
        assert_eq!(
            r.push(None, &record(0, 10, false)).unwrap_err(),
            NatsVideoError::BadSeq(0)
        );
        assert_eq!(
            r.push(None, &record(3, 5000, false)).unwrap_err(),
            NatsVideoError::TooLarge(5000)
        );
        for bad in ["", "1 2", "1 2 2", "1 0 0", "x 0 1", "1 0 1 9", "1 -1 3"] {
            assert_eq!(
                r.push(Some(bad), &rec).unwrap_err(),
                NatsVideoError::BadChunkHeader,
                "{bad:?}"
            );
        }
        // A chunk header naming another frame than the record's header.
        let chunks = split_record(record(11, 300, false), 12, 200).unwrap();
        let out = feed(&mut r, &chunks);
        assert_eq!(out.last().unwrap().clone().unwrap_err(), NatsVideoError::BadSeq(11));
        // A first chunk announcing more than max_frame is refused at once.
        let big = split_record(record(13, 9000, false), 13, 1000).unwrap();
        assert_eq!(
            feed(&mut r, &big[..1])[0].clone().unwrap_err(),
            NatsVideoError::TooLarge(9000)
        );
        // A hostile chunk count does not size the buffer.
        let rec = record(14, 100, false);
        assert!(matches!(r.push(Some("14 0 65535"), &rec), Ok(None)));
        assert!(r.partial.as_ref().unwrap().buf.capacity() < 4096);
        // Unchecked CRC when asked.
        let mut lax = Reassembler::new(4096, false);
        let mut rec = record(9, 100, false).to_vec();
        rec[40] ^= 1;
        assert!(lax.push(None, &rec).unwrap().is_some());
    }

    #[test]
    fn split_limits() {
        assert!(split_record(record(1, 1000, false), 1, CHUNK_HEADER_RESERVE).is_err());
        assert!(split_record(Bytes::from(vec![0u8; 70_000]), 1, CHUNK_HEADER_RESERVE + 1).is_err());
        let c = split_record(record(1, 1000, false), 1, 200).unwrap();
        assert_eq!(c[0].header.as_deref(), Some("1 0 10"));
        assert_eq!(ChunkId::parse("1 9 10").unwrap().index, 9);
    }

    #[test]
    fn targets() {
        let t = NatsVideoTarget::parse("nats://h:1", Some("video.frames")).unwrap();
        assert_eq!(
            (t.servers.clone(), t.subject.as_str()),
            (vec!["nats://h:1".to_owned()], "video.frames")
        );
        assert_eq!(t.keyframe_stream(), "SHMRING_KEY_video_frames");
        assert_eq!(t.idr_subject(), "video.frames.idr");
        assert!(NatsVideoTarget::parse("nats://h:1", None).is_err());
        assert!(NatsVideoTarget::parse("nats://h:1/video.*", None).is_err());
        assert!(NatsVideoTarget::parse("nats://h:1/video..x", None).is_err());
        let t = NatsVideoTarget::parse("h:1/video.a.b", None).unwrap();
        assert_eq!((t.servers[0].as_str(), t.subject.as_str()), ("h:1", "video.a.b"));
    }
}
