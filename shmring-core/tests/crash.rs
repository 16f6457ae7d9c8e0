//! Crash test: the writer process is SIGKILLed at random points, repeatedly, and
//! restarted. Readers never deliver a torn frame, keep receiving after each restart, and
//! each new writer continues frame_seq where the dead one stopped.

mod common;

use common::*;
use shmring_core::{FrameMeta, ReaderOptions, RingReader, RingWriter, StartPosition, WriterOptions};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TEST: &str = "writer_killed_and_restarted";
const MAX_FRAME: usize = 8192;
const ROUNDS: u64 = 20;

fn writer_role(path: &str) {
    let mut w = RingWriter::open(path, &WriterOptions::default()).expect("restarted writer opens the ring");
    w.set_crc(false);
    report(&format!("start={}", w.next_frame_seq()));
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        let seq = w.next_frame_seq();
        let len = size_for(seq, MAX_FRAME);
        fill(seq, &mut buf[..len]);
        w.write(
            &buf[..len],
            FrameMeta {
                keyframe: seq % 8 == 1,
                ..FrameMeta::delta(seq)
            },
        )
        .unwrap();
        if seq.is_multiple_of(32) {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

#[test]
fn writer_killed_and_restarted() {
    if role().is_some() {
        writer_role(&std::env::var("SHMRING_TEST_PATH").unwrap());
        return;
    }
    let dir = ring_dir("crash");
    let path = dir.join("ring");
    let opts = WriterOptions {
        capacity: 256 << 10,
        max_frame_size: Some(MAX_FRAME),
        ..Default::default()
    };
    drop(RingWriter::create(&path, &opts).unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let newest = Arc::new(AtomicU64::new(0));
    let reader = {
        let (path, stop, newest) = (path.clone(), stop.clone(), newest.clone());
        std::thread::spawn(move || {
            let o = ReaderOptions {
                start: StartPosition::Next,
                verify_crc: false,
                resync_at_keyframe: true,
            };
            let mut r = RingReader::open(&path, &o).unwrap();
            let mut scratch = Vec::new();
            let (mut last, mut torn) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                if let Some(f) = r.read_timeout(Some(Duration::from_millis(20))).unwrap() {
                    assert!(f.info.frame_seq > last, "frame_seq {} after {last}", f.info.frame_seq);
                    if !verify(f.info.frame_seq, f.payload, &mut scratch) {
                        torn += 1;
                    }
                    last = f.info.frame_seq;
                    newest.store(last, Ordering::Relaxed);
                }
            }
            (r.stats(), torn, last, r.reopens())
        })
    };

    let env = [("SHMRING_TEST_PATH", path.display().to_string())];
    let mut seen_before_round = Vec::new();
    for round in 0..ROUNDS {
        let status = RingReader::open(&path, &ReaderOptions::default()).unwrap().status();
        assert_eq!(
            status.writer.alive,
            Some(false),
            "the killed writer's lock was released"
        );
        let seen_before_start = newest.load(Ordering::Relaxed);
        let report_path = dir.join(format!("writer-{round}.report"));
        let mut env = env.to_vec();
        env.push(("SHMRING_TEST_REPORT", report_path.display().to_string()));
        let child = KillOnDrop(spawn_role(TEST, "writer", &env));
        let text = wait_for_report(&report_path, Duration::from_secs(30)).expect("writer reports its start");
        let start = parse_report(&text)["start"];
        // A writer killed between storing write_index and sequence_number leaves the
        // newest frame_seq only in the record: the successor then starts one later.
        assert!(
            start == status.sequence_number + 1 || start == status.sequence_number + 2,
            "round {round}: writer starts at {start}, ring had {}",
            status.sequence_number
        );
        assert!(
            start > seen_before_start,
            "frame_seq went backwards after a restart: {start} after {seen_before_start}"
        );
        seen_before_round.push(newest.load(Ordering::Relaxed));
        eprintln!(
            "round {round}: writer starts at frame_seq {start}, reader has {}",
            newest.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(5 + mix(round) % 40));
        drop(child);
    }
    // Resume: after the last crash a clean writer's frames reach the reader.
    let before = newest.load(Ordering::Relaxed);
    let mut w = RingWriter::open(&path, &WriterOptions::default()).unwrap();
    w.set_crc(false);
    let mut buf = vec![0u8; MAX_FRAME];
    let deadline = Instant::now() + Duration::from_secs(10);
    while newest.load(Ordering::Relaxed) <= before && Instant::now() < deadline {
        let seq = w.next_frame_seq();
        let len = size_for(seq, MAX_FRAME);
        fill(seq, &mut buf[..len]);
        w.write(&buf[..len], FrameMeta::keyframe(seq)).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    let (stats, torn, last, reopens) = reader.join().unwrap();
    println!("crash test: {ROUNDS} SIGKILLs, reader {stats:?}, torn={torn}, last={last}, reopens={reopens}");
    assert_eq!(torn, 0, "torn frames delivered");
    assert!(last > before, "reader resumed after the restarts");
    assert!(stats.delivered > ROUNDS, "reader received frames across the rounds");
    let progressed = seen_before_round.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(
        progressed as u64 >= ROUNDS / 2,
        "reader kept receiving between crashes: {seen_before_round:?}"
    );
    assert_eq!(reopens, 0, "restarts continue the same ring file");
    let _ = std::fs::remove_dir_all(dir);
}
