//! A live ring that changes under its readers. A real `RegionWriter` writes frames, and
//! between reader calls the input also rewrites the region's words as a crashed, buggy or
//! hostile writer could: the counters (`sequence_number`, `write_index`), the trailer
//! (`tail_intent`, the hints) and record headers or payload words, either to arbitrary
//! values or to values near the valid ones (off by a few records, misaligned by a few
//! bytes, an intent published without its write). Readers are opened at any point.
//!
//! Whatever happens, every call returns without panicking, and:
//! - a delivered frame fits the ring's max frame size;
//! - each reader delivers strictly increasing frame_seqs (no duplicate, no going back);
//! - a read that found nothing leaves `has_unread` false, or the next reads make progress
//!   within a bounded number of calls (a blocking read never spins).
//!
//! Input: byte 0 picks the capacity (128 B .. 4 KiB) and byte 1 the max frame size; then
//! each step is an opcode byte followed by its operands (see `Step`).
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use libfuzzer_sys::fuzz_target;
use shmring_core::layout::{self, trailer, FrameHeader, FLAG_KEYFRAME, FLAG_WRAP, FRAME_REGION_OFFSET};
use shmring_core::{FrameMeta, Geometry, ReaderOptions, RegionReader, RegionWriter, StartPosition};
use zerocopy::IntoBytes;

/// Reads bytes off the front of the input; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        b.iter_mut().for_each(|x| *x = self.u8());
        u64::from_le_bytes(b)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

struct Reader<'a> {
    inner: RegionReader<&'a [AtomicU64]>,
    last_seq: u64,
}

/// The control and trailer words a step may rewrite.
fn word_offset(g: &Geometry, which: u8) -> usize {
    let t = g.trailer_offset();
    match which % 6 {
        0 => 0, // sequence_number
        1 => 8, // write_index
        2 => t + trailer::TAIL_INTENT,
        3 => t + trailer::LATEST_RECORD,
        4 => t + trailer::LATEST_KEYFRAME,
        _ => t + trailer::NOTIFY,
    }
}

/// A value near `current`: a few records or bytes either way, or arbitrary.
fn nudge(current: u64, input: &mut Input) -> u64 {
    let kind = input.u8();
    let amount = u64::from(input.u8());
    match kind % 6 {
        0 => current.wrapping_add(amount * layout::RECORD_ALIGN as u64),
        1 => current.wrapping_sub(amount * layout::RECORD_ALIGN as u64),
        2 => current.wrapping_add(amount % 32),
        3 => current.wrapping_sub(amount % 32),
        4 => [0, u64::MAX, u64::MAX - 1, 1 << 63][amount as usize % 4],
        _ => input.u64(),
    }
}

fn read(r: &mut Reader, g: &Geometry, buf: &mut [u8], latest: bool) {
    let got = if latest { r.inner.read_latest(buf) } else { r.inner.try_read(buf) };
    match got {
        Ok(Some(info)) => {
            assert!(info.size <= g.max_frame_size, "delivered frame larger than the max");
            assert!(info.frame_seq > r.last_seq, "frame_seq {} delivered after {}", info.frame_seq, r.last_seq);
            r.last_seq = info.frame_seq;
        }
        Ok(None) => {
            // Each call walks at most 256 records: a ring holding more padding than that
            // can leave something unread, but repeated calls must get through it.
            let bound = g.capacity / layout::RECORD_ALIGN / 256 + 2;
            for _ in 0..bound {
                if !r.inner.has_unread() {
                    return;
                }
                match r.inner.try_read(buf) {
                    Ok(None) => {}
                    Ok(Some(info)) => {
                        assert!(info.frame_seq > r.last_seq, "frame_seq {} delivered after {}", info.frame_seq, r.last_seq);
                        r.last_seq = info.frame_seq;
                        return;
                    }
                    Err(_) => return,
                }
            }
            panic!("reads find nothing while has_unread() stays true: a blocking read would spin");
        }
        Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let capacity = layout::MIN_CAPACITY << (input.u8() % 6);
    let limit = layout::max_frame_limit(capacity);
    let max = (usize::from(input.u16()) % limit) + 1;
    let g = Geometry::new(capacity, max).unwrap();
    let words: Vec<AtomicU64> = (0..g.file_len() / 8).map(|_| AtomicU64::new(0)).collect();
    let mut writer = RegionWriter::format(&words[..], g, 0).unwrap();
    let mut readers: Vec<Reader> = Vec::new();
    let mut buf = vec![0u8; max];
    let mut payload = vec![0u8; max];
    let mut seq = 0u64;
    while !input.is_empty() {
        match input.u8() % 9 {
            // The writer writes a frame (it never reads the region, so it carries on
            // from its own position whatever the steps did).
            0 | 1 => {
                let n = usize::from(input.u16()) % (max + 1);
                let flags = input.u8();
                seq += 1;
                payload[..n].iter_mut().enumerate().for_each(|(i, b)| *b = (seq as usize + i) as u8);
                writer.set_crc(flags & 2 != 0);
                let meta = FrameMeta { keyframe: flags & 1 != 0, ..FrameMeta::delta(seq) };
                writer.write(&payload[..n], meta).unwrap();
            }
            // A counter or trailer word changes.
            2 | 3 => {
                let off = word_offset(&g, input.u8());
                let value = nudge(words[off / 8].load(Ordering::Relaxed), &mut input);
                words[off / 8].store(value, Ordering::Relaxed);
            }
            // A header is rewritten at a record boundary near the write index.
            4 => {
                let tail = words[1].load(Ordering::Relaxed);
                let pos = nudge(tail, &mut input) & !(layout::RECORD_ALIGN as u64 - 1);
                let off = FRAME_REGION_OFFSET + (pos % capacity as u64) as usize;
                let size = u32::from(input.u16());
                let flags = [0, FLAG_KEYFRAME, FLAG_WRAP, input.u16()][usize::from(input.u8() % 4)];
                let header = FrameHeader::new(input.u64(), nudge(seq, &mut input), size, flags, 1, 0);
                for (i, chunk) in header.as_bytes().chunks(8).enumerate() {
                    words[off / 8 + i].store(u64::from_le_bytes(chunk.try_into().unwrap()), Ordering::Relaxed);
                }
            }
            // Any word of the frame region changes.
            5 => {
                let i = FRAME_REGION_OFFSET / 8 + usize::from(input.u16()) % (capacity / 8);
                words[i].store(input.u64(), Ordering::Relaxed);
            }
            // A reader opens now.
            6 => {
                let b = input.u8();
                let start = [StartPosition::LatestKeyframe, StartPosition::Next, StartPosition::Latest][usize::from(b % 3)];
                let options = ReaderOptions { start, verify_crc: b & 4 != 0, resync_at_keyframe: b & 8 != 0, ..Default::default() };
                if readers.len() < 4 {
                    let inner = RegionReader::new(&words[..], options).unwrap();
                    readers.push(Reader { inner, last_seq: 0 });
                }
            }
            // A reader reads (the next frame, or the newest).
            op => {
                let which = usize::from(input.u8());
                if !readers.is_empty() {
                    let n = readers.len();
                    read(&mut readers[which % n], &g, &mut buf, op == 8);
                }
            }
        }
    }
});
