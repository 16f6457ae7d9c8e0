//! Crash test: the writer process is SIGKILLed at random points, repeatedly, and
//! restarted. Readers never deliver a torn frame, keep receiving after each restart, and
//! each new writer continues frame_seq where the dead one stopped.

mod common;

use common::*;
use shmring_core::layout::{record_len, trailer, FrameHeader, FLAG_WRAP, FRAME_REGION_OFFSET, HEADER_SIZE};
use shmring_core::{
    FrameMeta, Geometry, ReaderOptions, RegionReader, RegionWriter, RingReader, RingWriter, StartPosition, Word,
    WriterOptions,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn writer_role(path: &str) {
    let max_frame: usize = std::env::var("SHMRING_TEST_MAX_FRAME").unwrap().parse().unwrap();
    let min_frame: usize = std::env::var("SHMRING_TEST_MIN_FRAME").unwrap().parse().unwrap();
    let pause_every: u64 = std::env::var("SHMRING_TEST_PAUSE_EVERY").unwrap().parse().unwrap();
    let mut w = RingWriter::open(path, &WriterOptions::default()).expect("restarted writer opens the ring");
    w.set_crc(false);
    report(&format!("start={}", w.next_frame_seq()));
    let mut buf = vec![0u8; max_frame];
    let fill = FastFill::new(max_frame);
    loop {
        let seq = w.next_frame_seq();
        let len = min_frame + size_for(seq, max_frame - min_frame);
        fill.fill(seq, &mut buf[..len]);
        w.write(
            &buf[..len],
            FrameMeta {
                keyframe: seq % 8 == 1,
                ..FrameMeta::delta(seq)
            },
        )
        .unwrap();
        if pause_every != 0 && seq.is_multiple_of(pause_every) {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// `common::fill`, but with the per-word constants computed once: a kill lands at a
/// random moment, and the cheaper the filling, the more kills land inside a write.
struct FastFill(Vec<u64>);

impl FastFill {
    fn new(max: usize) -> Self {
        FastFill(
            (0..=max as u64 / 8)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .collect(),
        )
    }

    fn fill(&self, seq: u64, buf: &mut [u8]) {
        let m = mix(seq);
        let (chunks, rest) = buf.as_chunks_mut::<8>();
        for (c, k) in chunks.iter_mut().zip(&self.0) {
            *c = (m ^ k).to_le_bytes();
        }
        let n = rest.len();
        rest.copy_from_slice(&(m ^ self.0[chunks.len()]).to_le_bytes()[..n]);
    }
}

/// Frames of at most 1/32 of the ring.
#[test]
fn writer_killed_and_restarted() {
    kill_and_restart("writer_killed_and_restarted", 20, 256 << 10, 0, 8192, 32);
}

/// Frames of half to all of the ring's max frame size (half the capacity): about one
/// write in five needs a WRAP pad and overwrites the header at `latest_record`, so kills
/// land in the middle of such writes. The writer never pauses, so kills land while it copies (a writer that
/// sleeps is mostly killed asleep: the killer gets a core when the writer frees one).
#[test]
fn writer_killed_and_restarted_with_frames_up_to_max_frame_size() {
    let max = Geometry::with_capacity(16 << 10).unwrap().max_frame_size;
    kill_and_restart(
        "writer_killed_and_restarted_with_frames_up_to_max_frame_size",
        60,
        16 << 10,
        max / 2,
        max,
        0,
    );
}

/// Kills a writer of frames of `min_frame..=max_frame` bytes, which sleeps 50 us every
/// `pause_every` frames (0: never), `rounds` times and restarts it.
fn kill_and_restart(test: &str, rounds: u64, capacity: usize, min_frame: usize, max_frame: usize, pause_every: u64) {
    if role().is_some() {
        writer_role(&std::env::var("SHMRING_TEST_PATH").unwrap());
        return;
    }
    let dir = ring_dir(test);
    let path = dir.join("ring");
    let opts = WriterOptions {
        capacity,
        max_frame_size: Some(max_frame),
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
                ..Default::default()
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

    let env = [
        ("SHMRING_TEST_PATH", path.display().to_string()),
        ("SHMRING_TEST_MIN_FRAME", min_frame.to_string()),
        ("SHMRING_TEST_MAX_FRAME", max_frame.to_string()),
        ("SHMRING_TEST_PAUSE_EVERY", pause_every.to_string()),
    ];
    for round in 0..rounds {
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
        let child = KillOnDrop(spawn_role(test, "writer", &env));
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
        // The reader keeps receiving between crashes: it gets a frame of this writer
        // before the writer is killed (waited for, however loaded the machine is).
        let deadline = Instant::now() + Duration::from_secs(30);
        while newest.load(Ordering::Relaxed) < start {
            assert!(
                Instant::now() < deadline,
                "round {round}: the reader received no frame of the writer started at frame_seq {start} within 30 s (it has {})",
                newest.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
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
    let mut buf = vec![0u8; max_frame];
    let deadline = Instant::now() + Duration::from_secs(10);
    while newest.load(Ordering::Relaxed) <= before && Instant::now() < deadline {
        let seq = w.next_frame_seq();
        let len = size_for(seq, max_frame);
        fill(seq, &mut buf[..len]);
        w.write(&buf[..len], FrameMeta::keyframe(seq)).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    let (stats, torn, last, reopens) = reader.join().unwrap();
    println!("{test}: {rounds} SIGKILLs, reader {stats:?}, torn={torn}, last={last}, reopens={reopens}");
    assert_eq!(torn, 0, "torn frames delivered");
    assert!(last > before, "reader resumed after the restarts");
    assert!(stats.delivered > rounds, "reader received frames across the rounds");
    assert_eq!(reopens, 0, "restarts continue the same ring file");
}

/// A writer that died in the middle of a frame (after W1, before W4) whose bytes cover
/// the header at `latest_record`: the restarted writer must not take that record's
/// frame_seq from the dead writer's payload bytes. Capacity 1024; a 480 B keyframe at
/// position 32; the next 480 B frame needs a WRAP pad, starts at position 1024 (offset 0)
/// and its payload overwrites the keyframe's header at offset 32.
#[test]
fn restart_ignores_a_latest_record_header_overwritten_by_the_crashed_write() {
    let geometry = Geometry::new(1024, 480).unwrap();
    let region: Vec<Word> = (0..geometry.file_len() / 8).map(|_| Word::new(0)).collect();
    {
        let mut writer = RegionWriter::format(&region[..], geometry, 0).unwrap();
        assert_eq!(writer.write(&[], FrameMeta::delta(1)).unwrap(), 1);
        assert_eq!(writer.write(&[7; 480], FrameMeta::keyframe(2)).unwrap(), 2);
    }
    // What the dead writer stored of frame 3 before it was killed: W1, the WRAP pad at
    // 544, the header at position 1024 and the payload, which reaches over offset 32.
    let store = |off: usize, bytes: &[u8]| {
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            region[(off / 8) + i].store(u64::from_le_bytes(word), std::sync::atomic::Ordering::Relaxed);
        }
    };
    let intent_at = geometry.trailer_offset() + trailer::TAIL_INTENT;
    let end = 1024 + record_len(480) as u64;
    region[intent_at / 8].store(end, std::sync::atomic::Ordering::Relaxed);
    let pad = FrameHeader::new(0, 0, (1024 - 544 - HEADER_SIZE) as u32, FLAG_WRAP, 0, 0);
    store(FRAME_REGION_OFFSET + 544, zerocopy::IntoBytes::as_bytes(&pad));
    let header = FrameHeader::new(3, 3, 480, 0, 1, 0);
    store(FRAME_REGION_OFFSET, zerocopy::IntoBytes::as_bytes(&header));
    store(FRAME_REGION_OFFSET + HEADER_SIZE, &[0xab; 480]);

    let mut restarted = RegionWriter::resume(&region[..]).unwrap();
    assert_eq!(
        restarted.next_frame_seq(),
        3,
        "frame_seq continues after the last committed frame"
    );
    let mut reader = RegionReader::new(
        &region[..],
        ReaderOptions {
            start: StartPosition::Next,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(restarted.write(&[1; 100], FrameMeta::keyframe(3)).unwrap(), 3);
    let mut buf = [0u8; 480];
    let info = reader
        .try_read(&mut buf)
        .unwrap()
        .expect("the restarted writer's frame");
    assert_eq!((info.frame_seq, info.lost_before), (3, 0));
}
