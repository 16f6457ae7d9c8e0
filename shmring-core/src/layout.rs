//! The bytes of a ring file: the seed's control block and frame header (kept byte for
//! byte), and the v1 trailer this crate adds after the frame region.
//!
//! ```text
//! offset 0                 control block (16 B): sequence_number u64, write_index u64
//! offset 16                frame region (capacity B, a power of two): records
//! offset 16 + capacity     48 B of padding, so the trailer starts on a 64 B boundary
//! offset 64 + capacity     trailer (256 B, four cache lines):
//!   +0    intent line      tail_intent u64                     (writer -> readers, hot)
//!   +64   publish line     latest_record, latest_keyframe, notify (futex word) u64
//!   +128  writer line      writer_epoch, writer_pid, heartbeat_ns, writer_state u64
//!   +192  descriptor       immutable `Descriptor` (magic, version, capacity, ...)
//! file length              capacity + 320
//! ```
//!
//! Everything here is plain data: the live words are read and written through
//! [`crate::words`] as atomics; these types describe and parse them.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of the control block at offset 0.
pub const CONTROL_SIZE: usize = 16;
/// Size of every record header in the frame region.
pub const HEADER_SIZE: usize = 32;
/// Records start on multiples of this many bytes (relative to the frame region), so a
/// header always fits before the region's end and payloads are word aligned.
pub const RECORD_ALIGN: usize = 32;
/// Offset of the frame region in the file.
pub const FRAME_REGION_OFFSET: usize = CONTROL_SIZE;
/// Padding between the frame region and the trailer (keeps the trailer cache-line aligned).
pub const TRAILER_GAP: usize = 48;
/// Size of the v1 trailer.
pub const TRAILER_SIZE: usize = 256;
/// Bytes a v1 file has besides its frame region.
pub const V1_OVERHEAD: usize = CONTROL_SIZE + TRAILER_GAP + TRAILER_SIZE;
/// Smallest v1 capacity.
pub const MIN_CAPACITY: usize = 128;
/// Largest v1 capacity (1 GiB): keeps every offset inside `u32` size fields and `usize`
/// on 32-bit targets.
pub const MAX_CAPACITY: usize = 1 << 30;
/// Magic bytes at the start of the v1 descriptor.
pub const MAGIC: [u8; 8] = *b"shmring\0";
/// The layout version this crate reads and writes.
pub const VERSION: u32 = 1;
/// Smallest file the legacy single-slot layout can hold a frame in (control + header).
pub const LEGACY_MIN_LEN: usize = CONTROL_SIZE + HEADER_SIZE;
/// Largest file taken for a legacy ring (1 GiB, as the largest v1 capacity): a bigger
/// file without a v1 descriptor is refused before it is mapped.
pub const LEGACY_MAX_LEN: usize = 1 << 30;

/// Record flag: the frame is a keyframe (a decoder can start here).
pub const FLAG_KEYFRAME: u16 = 0x01;
/// Record flag: a padding record, not a frame. Readers skip `record_len(size)` bytes; the
/// writer uses it to pad to the region's end (the seed's WRAP marker) and to cover bytes a
/// crashed writer left half-written.
pub const FLAG_WRAP: u16 = 0x02;
/// Record flag: the writer did not compute `crc32` (the field is 0); readers skip the check.
pub const FLAG_NO_CRC: u16 = 0x04;

/// Sentinel stored in `latest_record` / `latest_keyframe` while there is none.
pub const NO_POSITION: u64 = u64::MAX;

/// Byte offsets of the trailer's words, relative to the trailer start.
pub mod trailer {
    /// `tail_intent`: how far the writer is about to write (monotonic byte position).
    pub const TAIL_INTENT: usize = 0;
    /// `latest_record`: position of the newest committed frame record, or `NO_POSITION`.
    pub const LATEST_RECORD: usize = 64;
    /// `latest_keyframe`: position of the newest committed keyframe record, or `NO_POSITION`.
    pub const LATEST_KEYFRAME: usize = 72;
    /// `notify`: incremented after every commit; its low 32 bits are the futex word.
    pub const NOTIFY: usize = 80;
    /// `writer_epoch`: incremented each time a writer opens the ring.
    pub const WRITER_EPOCH: usize = 128;
    /// `writer_pid`: process id of the last writer to open the ring.
    pub const WRITER_PID: usize = 136;
    /// `heartbeat_ns`: CLOCK_MONOTONIC time of the writer's last commit or heartbeat.
    pub const HEARTBEAT_NS: usize = 144;
    /// `writer_state`: see [`super::WriterState`].
    pub const WRITER_STATE: usize = 152;
    /// The immutable descriptor.
    pub const DESCRIPTOR: usize = 192;
}

/// What the last writer said about the ring (`writer_state` word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterState {
    /// A writer has the ring open (or died without closing it).
    Open,
    /// The last writer closed the ring; a new one may continue it.
    Closed,
    /// The ring was replaced or abandoned; readers should reopen the path.
    Retired,
    /// A value this version does not know (a newer writer, or a damaged file).
    Unknown(u64),
}

impl WriterState {
    /// The word stored for this state.
    pub const fn to_word(self) -> u64 {
        match self {
            WriterState::Open => 1,
            WriterState::Closed => 2,
            WriterState::Retired => 3,
            WriterState::Unknown(v) => v,
        }
    }
    /// Decodes a stored word.
    pub const fn from_word(w: u64) -> Self {
        match w {
            1 => WriterState::Open,
            2 => WriterState::Closed,
            3 => WriterState::Retired,
            v => WriterState::Unknown(v),
        }
    }
}

/// The seed's 16-byte control block at offset 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ControlBlock {
    /// Frames committed; stored last for each frame (the seed's commit marker).
    pub sequence_number: U64,
    /// v1: monotonic byte position just past the newest committed record.
    /// Legacy: `32 + size` of the frame at offset 16.
    pub write_index: U64,
}

/// The seed's 32-byte record header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FrameHeader {
    /// Application id (the caller's; for example a capture timestamp).
    pub frame_id: U64,
    /// Monotonic, 1-based frame number; 0 in padding records.
    pub frame_seq: U64,
    /// Payload bytes (padding records: bytes of padding after the header).
    pub size: U32,
    /// `FLAG_*` bits.
    pub flags: U16,
    /// Codec: 1 = H.264, 2 = HEVC, 3 = JPEG, anything else is the application's.
    pub codec: U16,
    /// IEEE CRC-32 of the payload, or 0 with `FLAG_NO_CRC`.
    pub crc32: U32,
    /// Always written as 0.
    pub reserved: U32,
}

/// The v1 trailer's immutable descriptor, written once when the ring is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Descriptor {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`VERSION`].
    pub version: U32,
    /// [`HEADER_SIZE`], recorded so a reader can refuse a layout it does not know.
    pub header_size: U32,
    /// Frame-region bytes; a power of two.
    pub capacity: U64,
    /// Largest payload a writer accepts.
    pub max_frame_size: U32,
    /// [`RECORD_ALIGN`].
    pub record_align: U32,
    /// [`TRAILER_SIZE`].
    pub trailer_size: U32,
    /// Always 0.
    pub reserved0: U32,
    /// Wall-clock creation time, nanoseconds since the Unix epoch (informational).
    pub created_unix_ns: U64,
    /// Always 0.
    pub reserved: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<ControlBlock>() == CONTROL_SIZE);
const _: () = assert!(core::mem::size_of::<FrameHeader>() == HEADER_SIZE);
const _: () = assert!(core::mem::size_of::<Descriptor>() == 64);
const _: () = assert!(core::mem::offset_of!(ControlBlock, write_index) == 8);
const _: () = assert!(core::mem::offset_of!(FrameHeader, frame_seq) == 8);
const _: () = assert!(core::mem::offset_of!(FrameHeader, size) == 16);
const _: () = assert!(core::mem::offset_of!(FrameHeader, flags) == 20);
const _: () = assert!(core::mem::offset_of!(FrameHeader, codec) == 22);
const _: () = assert!(core::mem::offset_of!(FrameHeader, crc32) == 24);
const _: () = assert!(core::mem::offset_of!(FrameHeader, reserved) == 28);
const _: () = assert!(trailer::DESCRIPTOR + 64 == TRAILER_SIZE);
const _: () = assert!(HEADER_SIZE <= RECORD_ALIGN && RECORD_ALIGN.is_multiple_of(8));
const _: () = assert!((FRAME_REGION_OFFSET + TRAILER_GAP).is_multiple_of(64));

impl FrameHeader {
    /// Builds a header.
    pub fn new(frame_id: u64, frame_seq: u64, size: u32, flags: u16, codec: u16, crc32: u32) -> Self {
        FrameHeader {
            frame_id: frame_id.into(),
            frame_seq: frame_seq.into(),
            size: size.into(),
            flags: flags.into(),
            codec: codec.into(),
            crc32: crc32.into(),
            reserved: 0.into(),
        }
    }

    /// Parses the first 32 bytes of `bytes` (`None` if there are fewer).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        FrameHeader::read_from_prefix(bytes).ok().map(|(h, _)| h)
    }

    /// True for padding (WRAP) records.
    pub fn is_padding(&self) -> bool {
        self.flags.get() & FLAG_WRAP != 0
    }

    /// True for keyframes.
    pub fn is_keyframe(&self) -> bool {
        self.flags.get() & FLAG_KEYFRAME != 0
    }
}

/// Bytes a record with `payload_len` payload bytes occupies in the frame region.
pub const fn record_len(payload_len: usize) -> usize {
    (HEADER_SIZE + payload_len).div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// Length of a v1 file with the given capacity.
pub const fn v1_file_len(capacity: usize) -> usize {
    capacity + V1_OVERHEAD
}

/// Offset of the v1 trailer in a file with the given capacity.
pub const fn trailer_offset(capacity: usize) -> usize {
    FRAME_REGION_OFFSET + capacity + TRAILER_GAP
}

/// Largest `max_frame_size` a ring of `capacity` bytes accepts: one record may fill at
/// most half the region, so the newest keyframe survives the next frame's write.
pub const fn max_frame_limit(capacity: usize) -> usize {
    capacity / 2 - HEADER_SIZE
}

/// Validated geometry of a v1 ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Frame-region bytes (power of two, `MIN_CAPACITY..=MAX_CAPACITY`).
    pub capacity: usize,
    /// Largest payload (at most [`max_frame_limit`]).
    pub max_frame_size: usize,
}

/// Why a region is not a v1 ring. Display texts say what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The region is shorter than the smallest ring.
    TooShort {
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// No v1 descriptor at the end of the region (a legacy ring, or not a ring at all).
    BadMagic,
    /// A version this crate does not read.
    UnsupportedVersion(u32),
    /// The descriptor's fields disagree with each other or with the region length.
    Inconsistent(&'static str),
    /// Capacity not a power of two within the supported range.
    BadCapacity(u64),
    /// The file is longer than any ring this crate maps without a v1 descriptor.
    TooLong {
        /// Bytes present.
        len: u64,
        /// The most accepted.
        max: usize,
    },
    /// Neither a v1 descriptor nor a plausible legacy control block and header.
    NotARing(&'static str),
    /// `max_frame_size` is 0 or larger than half the region allows.
    BadMaxFrame {
        /// The requested or recorded maximum.
        max_frame_size: u64,
        /// The largest this capacity allows.
        limit: usize,
    },
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::TooShort { len, needed } => write!(
                f,
                "the file is {len} bytes, shorter than the {needed} bytes a ring needs (truncated, or not a ring)"
            ),
            LayoutError::TooLong { len, max } => write!(
                f,
                "the file is {len} bytes, has no shmring v1 descriptor, and is longer than the {max} bytes a legacy ring may have: not a ring (check the path)"
            ),
            LayoutError::NotARing(what) => write!(
                f,
                "not a ring: no shmring v1 descriptor, and not a legacy single-slot ring either ({what}); check the path, or recreate the ring"
            ),
            LayoutError::BadMagic => f.write_str(
                "no shmring v1 descriptor at the end of the file (a legacy single-slot ring, or not a ring: open it with the legacy layout, or recreate it)",
            ),
            LayoutError::UnsupportedVersion(v) => write!(
                f,
                "ring layout version {v} is not supported by this shmring (it reads version {VERSION}); upgrade the reader or recreate the ring"
            ),
            LayoutError::Inconsistent(what) => write!(f, "the ring descriptor is damaged: {what}; recreate the ring"),
            LayoutError::BadCapacity(c) => write!(
                f,
                "capacity {c} is not a power of two between {MIN_CAPACITY} and {MAX_CAPACITY} bytes"
            ),
            LayoutError::BadMaxFrame { max_frame_size, limit } => write!(
                f,
                "max frame size {max_frame_size} is not between 1 and {limit} bytes (half the capacity minus the 32-byte header); raise the capacity or lower the max frame size"
            ),
        }
    }
}

impl core::error::Error for LayoutError {}

impl Geometry {
    /// Checks a requested capacity and maximum frame size.
    pub fn new(capacity: usize, max_frame_size: usize) -> Result<Self, LayoutError> {
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(LayoutError::BadCapacity(capacity as u64));
        }
        let limit = max_frame_limit(capacity);
        if max_frame_size == 0 || max_frame_size > limit {
            return Err(LayoutError::BadMaxFrame {
                max_frame_size: max_frame_size as u64,
                limit,
            });
        }
        Ok(Geometry {
            capacity,
            max_frame_size,
        })
    }

    /// The geometry with the largest frame the capacity allows.
    pub fn with_capacity(capacity: usize) -> Result<Self, LayoutError> {
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(LayoutError::BadCapacity(capacity as u64));
        }
        Geometry::new(capacity, max_frame_limit(capacity))
    }

    /// Length of the whole file.
    pub const fn file_len(&self) -> usize {
        v1_file_len(self.capacity)
    }

    /// Offset of the trailer.
    pub const fn trailer_offset(&self) -> usize {
        trailer_offset(self.capacity)
    }

    /// The descriptor this geometry is stored as.
    pub fn descriptor(&self, created_unix_ns: u64) -> Descriptor {
        Descriptor {
            magic: MAGIC,
            version: VERSION.into(),
            header_size: (HEADER_SIZE as u32).into(),
            capacity: (self.capacity as u64).into(),
            max_frame_size: (self.max_frame_size as u32).into(),
            record_align: (RECORD_ALIGN as u32).into(),
            trailer_size: (TRAILER_SIZE as u32).into(),
            reserved0: 0.into(),
            created_unix_ns: created_unix_ns.into(),
            reserved: [0; 16],
        }
    }

    /// Validates the descriptor found in the last 64 bytes of a region of `region_len`
    /// bytes. Every field is checked before it is used; nothing here can panic.
    pub fn from_descriptor_bytes(bytes: &[u8], region_len: usize) -> Result<Self, LayoutError> {
        let needed = v1_file_len(MIN_CAPACITY);
        if region_len < needed {
            return Err(LayoutError::TooShort {
                len: region_len,
                needed,
            });
        }
        let d =
            Descriptor::read_from_bytes(bytes).map_err(|_| LayoutError::Inconsistent("descriptor is not 64 bytes"))?;
        Self::from_descriptor(&d, region_len)
    }

    /// Validates a parsed descriptor against the region length.
    pub fn from_descriptor(d: &Descriptor, region_len: usize) -> Result<Self, LayoutError> {
        if d.magic != MAGIC {
            return Err(LayoutError::BadMagic);
        }
        if d.version.get() != VERSION {
            return Err(LayoutError::UnsupportedVersion(d.version.get()));
        }
        if d.header_size.get() as usize != HEADER_SIZE {
            return Err(LayoutError::Inconsistent("header size is not 32"));
        }
        if d.record_align.get() as usize != RECORD_ALIGN {
            return Err(LayoutError::Inconsistent("record alignment is not 32"));
        }
        if d.trailer_size.get() as usize != TRAILER_SIZE {
            return Err(LayoutError::Inconsistent("trailer size is not 256"));
        }
        if d.reserved0.get() != 0 || d.reserved != [0; 16] {
            return Err(LayoutError::Inconsistent(
                "reserved descriptor fields are not zero (a newer or foreign layout)",
            ));
        }
        let cap = d.capacity.get();
        if !cap.is_power_of_two() || cap < MIN_CAPACITY as u64 || cap > MAX_CAPACITY as u64 {
            return Err(LayoutError::BadCapacity(cap));
        }
        let geometry = Geometry::new(cap as usize, d.max_frame_size.get() as usize)?;
        if geometry.file_len() != region_len {
            return Err(LayoutError::Inconsistent(
                "file length does not match the recorded capacity (truncated or extended)",
            ));
        }
        Ok(geometry)
    }
}
