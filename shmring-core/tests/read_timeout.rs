//! Blocking reads honour their timeout whatever the ring holds (issue 11 item 4): a
//! reader thread that loops on `read_timeout` must always get back to its stop flag, or
//! the process ignores SIGTERM. Each case runs the reads on a thread and waits for them
//! under a generous wall-clock guard, so a read that spins forever fails the test instead
//! of hanging it.

mod common;

use common::{ring_dir, TestDir};
use shmring_core::layout::{record_len, trailer};
use shmring_core::{FrameMeta, ReaderOptions, RingKind, RingReader, RingWriter, StartPosition, WriterOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Far longer than any of these reads may take on a loaded machine.
const GUARD: Duration = Duration::from_secs(60);

fn patch_word(path: &Path, offset: usize, value: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&value.to_le_bytes(), offset as u64).unwrap();
}

fn read_word(path: &Path, offset: usize) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, offset as u64).unwrap();
    u64::from_le_bytes(b)
}

/// Runs `rounds` calls of `read_timeout(100 ms)` as a stop-flag loop would, on a thread;
/// returns the frame_seqs and errors, or fails if the calls do not finish within GUARD.
fn reads_under_guard(mut reader: RingReader, rounds: usize) -> (Vec<u64>, Vec<String>) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut frames, mut errors) = (vec![], vec![]);
        for _ in 0..rounds {
            match reader.read_timeout(Some(Duration::from_millis(100))) {
                Ok(Some(f)) => frames.push(f.info.frame_seq),
                Ok(None) => {}
                Err(e) => errors.push(e.to_string()),
            }
        }
        let _ = tx.send((frames, errors));
    });
    rx.recv_timeout(GUARD)
        .expect("read_timeout ignored its timeout (the reader thread is still inside it)")
}

/// The ring's directory guard (removes it when dropped, also when the test fails), its
/// path and its writer.
fn ring(name: &str, capacity: usize) -> (TestDir, PathBuf, RingWriter) {
    let guard = ring_dir(name);
    let path = guard.join("ring");
    let w = RingWriter::create(
        &path,
        &WriterOptions {
            capacity,
            ..Default::default()
        },
    )
    .unwrap();
    (guard, path, w)
}

fn trailer_of(w: &RingWriter) -> usize {
    match w.kind() {
        RingKind::V1(g) => g.trailer_offset(),
        other => panic!("not a v1 ring: {other:?}"),
    }
}

/// A writer died after publishing its intent (W1) over the newest keyframe, which is
/// where a new reader starts.
#[test]
fn dead_writer_over_the_start_record() {
    let (_dir, path, mut w) = ring("timeout-dead-writer", 1024);
    for seq in 1..=5u64 {
        w.write(
            &[seq as u8; 100],
            FrameMeta {
                keyframe: seq == 1,
                ..FrameMeta::delta(seq)
            },
        )
        .unwrap();
    }
    let t = trailer_of(&w);
    drop(w);
    let tail = read_word(&path, 8);
    assert_eq!(tail, 800);
    patch_word(&path, t + trailer::TAIL_INTENT, 1024 + record_len(400) as u64);
    let r = RingReader::open(&path, &ReaderOptions::default()).unwrap();
    let (frames, errors) = reads_under_guard(r, 3);
    assert!(frames.is_empty() && errors.is_empty(), "{frames:?} {errors:?}");
}

/// The write index moved back by less than a capacity (no writer does that): reported
/// once, then the reads time out as on an idle ring.
#[test]
fn write_index_moved_back() {
    let (_dir, path, mut w) = ring("timeout-moved-back", 4096);
    let mut r = RingReader::open(
        &path,
        &ReaderOptions {
            start: StartPosition::Next,
            ..Default::default()
        },
    )
    .unwrap();
    for seq in 1..=5u64 {
        w.write(&[seq as u8; 40], FrameMeta::keyframe(seq)).unwrap();
    }
    for seq in 1..=5u64 {
        assert_eq!(r.try_read().unwrap().unwrap().info.frame_seq, seq);
    }
    let tail = read_word(&path, 8);
    patch_word(&path, 8, tail - 64);
    let (frames, errors) = reads_under_guard(r, 3);
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("moved backwards"), "{errors:?}");
    drop(w);
}
