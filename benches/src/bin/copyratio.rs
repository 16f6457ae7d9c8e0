//! Copy cost of one frame through a ring, as a ratio to a plain memcpy of the same bytes,
//! with the variants interleaved round by round so that a busy machine slows them all
//! alike (criterion measures one after the other; `benches/ring_throughput.rs` has those
//! absolute figures). Per frame size, each round times one operation of every variant:
//!
//! - `memcpy`: one copy between two hot buffers (the baseline),
//! - `memcpy x2 via ring`: a plain memcpy into the ring's next record slot and one back
//!   out, walking the ring like the writer does: the floor for two copies of this
//!   frame through this much memory,
//! - `ring write` and `ring write+read` (CRC off): shmring's writer and reader.
//!
//! Ring capacity: the smallest power of two the frame fits (max frame = capacity/2 - 32)
//! and, with `--ring-frames N`, room for about N frames.
//!
//! `cargo run --release -p shmring-benches --bin copyratio -- [--rounds 2000] [--ring-frames 8]`

use shmring_core::{FrameMeta, Geometry, ReaderOptions, RegionReader, RegionWriter, StartPosition, Word};
use std::hint::black_box;
use std::time::Instant;

const SIZES: [usize; 3] = [4 << 10, 64 << 10, 1 << 20];

fn arg(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    shmring_benches::arg(&args, name)?.parse().ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let rounds = arg("--rounds").unwrap_or(2000);
    let ring_frames = arg("--ring-frames");
    println!("| frame | ring | memcpy | memcpy x2 via ring | write | write+read | write / memcpy | write+read / memcpy | write+read / memcpy x2 via ring |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for size in SIZES {
        let min_capacity = (2 * (size + 32) + 1).next_power_of_two();
        let capacity = match ring_frames {
            Some(n) => (n * (size + 32)).next_power_of_two().max(min_capacity),
            None => min_capacity,
        };
        let g = Geometry::new(capacity, size).unwrap();
        let words: Vec<Word> = (0..g.file_len() / 8).map(|_| Word::new(0)).collect();
        let mut writer = RegionWriter::format(&words[..], g, 0).unwrap();
        writer.set_crc(false);
        let options = ReaderOptions {
            start: StartPosition::Next,
            verify_crc: false,
            resync_at_keyframe: false,
            ..Default::default()
        };
        let mut reader = RegionReader::new(&words[..], options).unwrap();
        let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut dst = vec![0u8; size];
        // Record slots of this frame size, as the writer lays them out (32-byte aligned).
        let stride = (size + 32).next_multiple_of(32);
        let slots = capacity / stride;
        let base = words.as_ptr() as *mut u8;
        let mut slot = 0;
        let mut samples: [Vec<f64>; 4] = Default::default();
        for round in 0..rounds + rounds / 10 {
            for (v, out) in samples.iter_mut().enumerate() {
                let t = Instant::now();
                match v {
                    0 => dst.copy_from_slice(black_box(&src)),
                    1 => {
                        slot = (slot + 1) % slots;
                        // SAFETY: the slot lies inside `words` (slots * stride <= capacity
                        // < region length) and nothing else touches the region meanwhile:
                        // this thread is its only user and the writer/reader are idle.
                        unsafe {
                            let at = base.add(slot * stride + 32);
                            std::ptr::copy_nonoverlapping(src.as_ptr(), at, size);
                            std::ptr::copy_nonoverlapping(at, dst.as_mut_ptr(), size);
                        }
                    }
                    2 => {
                        writer.write(black_box(&src), FrameMeta::keyframe(1)).unwrap();
                    }
                    _ => {
                        writer.write(black_box(&src), FrameMeta::keyframe(1)).unwrap();
                        // Skip the frame written by variant 2 so only this one is copied.
                        reader.read_latest(&mut dst).unwrap().unwrap();
                    }
                }
                let ns = t.elapsed().as_nanos() as f64;
                black_box(&dst);
                if round >= rounds / 10 {
                    out.push(ns);
                }
            }
        }
        let [m, m2, w, wr] = samples.map(median);
        let kib = |b: usize| format!("{} KiB", b >> 10);
        println!(
            "| {} | {} | {:.1} us | {:.1} us | {:.1} us | {:.1} us | {:.2} | {:.2} | {:.2} |",
            kib(size),
            kib(capacity),
            m / 1e3,
            m2 / 1e3,
            w / 1e3,
            wr / 1e3,
            w / m,
            wr / m,
            wr / m2
        );
    }
}
