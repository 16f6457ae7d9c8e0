//! Multi-process torture test: one writer process and three reader processes (real
//! processes) on a small ring, random frame sizes up to the ring's max frame size (half
//! the capacity: every 64th frame is exactly that, every 64th another size up to it, the
//! rest up to 4 KiB), CRC off, so laps are constant. Every
//! delivered payload is compared byte for byte with what the writer wrote; zero
//! corrupted frames are allowed, and each reader's `delivered + lost == written`.
//!
//! `SHMRING_TORTURE_FRAMES` sets the frame count (default 1,000,000).

mod common;

use common::*;
use shmring_core::{FrameMeta, ReaderOptions, RingReader, RingWriter, StartPosition, WriterOptions};
use std::time::{Duration, Instant};

const TEST: &str = "multi_process_torture";
const CAPACITY: usize = 64 << 10;
/// Most frames are at most this long; see `frame_len` for the others.
const SMALL_FRAME: usize = 4096;
const READERS: usize = 3;

/// Payload length of frame `seq` in a ring whose max frame size is `max`.
fn frame_len(seq: u64, max: usize) -> usize {
    match seq % 64 {
        0 => max,
        32 => size_for(seq, max),
        _ => size_for(seq, SMALL_FRAME),
    }
}

fn frames() -> u64 {
    std::env::var("SHMRING_TORTURE_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn writer_role(path: &str, frames: u64) {
    let mut w = RingWriter::open(path, &WriterOptions::default()).expect("writer opens the ring");
    w.set_crc(false);
    let max = w.max_frame_size();
    let mut buf = vec![0u8; max];
    for seq in 1..=frames {
        // The last frame is a keyframe, so every reader ends on it.
        let len = if seq == frames { 8 } else { frame_len(seq, max) };
        fill(seq, &mut buf[..len]);
        let meta = FrameMeta {
            keyframe: seq % 16 == 1 || seq == frames,
            ..FrameMeta::delta(seq)
        };
        assert_eq!(w.write(&buf[..len], meta).unwrap(), seq);
        if seq % 64 == 0 {
            std::thread::yield_now();
        }
    }
    report(&format!("written={frames}"));
}

fn reader_role(path: &str, frames: u64) {
    let opts = ReaderOptions {
        start: StartPosition::Next,
        verify_crc: false,
        resync_at_keyframe: true,
        ..Default::default()
    };
    let mut r = RingReader::open(path, &opts).expect("reader opens the ring");
    std::fs::write(std::env::var("SHMRING_TEST_READY").unwrap(), "ready").unwrap();
    let mut scratch = Vec::new();
    let (mut corrupted, mut last, mut disorder) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(600);
    while last < frames && Instant::now() < deadline {
        match r.read_timeout(Some(Duration::from_secs(1))) {
            Ok(Some(f)) => {
                if f.info.frame_seq <= last {
                    disorder += 1;
                }
                if f.info.frame_id != f.info.frame_seq || !verify(f.info.frame_seq, f.payload, &mut scratch) {
                    corrupted += 1;
                    eprintln!("corrupted frame {} ({} bytes)", f.info.frame_seq, f.payload.len());
                }
                last = f.info.frame_seq;
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("read error: {e}");
                corrupted += 1;
            }
        }
    }
    let s = r.stats();
    report(&format!(
        "delivered={} lost={} lapped={} corrupted={corrupted} disorder={disorder} last={last}",
        s.delivered, s.lost, s.lapped
    ));
}

#[test]
fn multi_process_torture() {
    let frames = frames();
    if let Some(role) = role() {
        let path = std::env::var("SHMRING_TEST_PATH").unwrap();
        match role.as_str() {
            "writer" => writer_role(&path, frames),
            _ => reader_role(&path, frames),
        }
        return;
    }
    let dir = ring_dir("torture");
    let path = dir.join("ring");
    let opts = WriterOptions {
        capacity: CAPACITY,
        max_frame_size: None,
        ..Default::default()
    };
    let max = RingWriter::create(&path, &opts).unwrap().max_frame_size();
    assert_eq!(max, shmring_core::layout::max_frame_limit(CAPACITY));
    let env = [
        ("SHMRING_TEST_PATH", path.display().to_string()),
        ("SHMRING_TORTURE_FRAMES", frames.to_string()),
    ];
    let file_env = |i: usize, name: &str| {
        let mut env = env.to_vec();
        env.push((
            "SHMRING_TEST_REPORT",
            dir.join(format!("{name}-{i}.report")).display().to_string(),
        ));
        env.push((
            "SHMRING_TEST_READY",
            dir.join(format!("{name}-{i}.ready")).display().to_string(),
        ));
        env
    };
    let readers: Vec<_> = (0..READERS)
        .map(|i| KillOnDrop(spawn_role(TEST, "reader", &file_env(i, "reader"))))
        .collect();
    for i in 0..READERS {
        let ready = wait_for_report(&dir.join(format!("reader-{i}.ready")), Duration::from_secs(30));
        assert!(ready.is_some(), "reader {i} did not start");
    }
    let started = Instant::now();
    let writer = spawn_role(TEST, "writer", &file_env(0, "writer")).wait().unwrap();
    assert!(writer.success(), "writer failed");
    let write_time = started.elapsed();
    println!("writer: {frames} frames in {write_time:?}, ring {CAPACITY} B, frames 0..={max} B, CRC off");
    for (i, mut child) in readers.into_iter().enumerate() {
        assert!(child.0.wait().unwrap().success(), "reader {i} failed");
        let text = std::fs::read_to_string(dir.join(format!("reader-{i}.report"))).expect("reader report");
        let r = parse_report(&text);
        println!("reader {i}: {text}");
        assert_eq!(r["corrupted"], 0, "reader {i} delivered corrupted frames");
        assert_eq!(r["disorder"], 0, "reader {i} delivered frames out of order");
        assert_eq!(r["last"], frames, "reader {i} did not reach the last frame");
        assert_eq!(
            r["delivered"] + r["lost"],
            frames,
            "reader {i}: delivered + lost != written"
        );
        assert!(r["delivered"] > 0);
    }
    let _ = std::fs::remove_dir_all(dir);
}
