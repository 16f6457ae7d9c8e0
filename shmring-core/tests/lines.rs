//! Which cache lines a small message moves between the writer's and the reader's cores
//! (docs/benchmarks.md, "Cache lines per 64-byte message"): the writer's and a caught-up
//! reader's accesses are traced word by word (the `test-hooks` line tracer) and every
//! line the writer stores and the reader loads for the same message is one transfer.

mod common;

use shmring_core::layout::{record_len, trailer, FRAME_REGION_OFFSET};
use shmring_core::lines::{trace, Touch};
use shmring_core::{
    FrameMeta, Geometry, ReaderOptions, RegionReader, RegionWriter, RingWriter, StartPosition, Word, WriterOptions,
};
use std::collections::BTreeSet;

const MESSAGE: usize = 64;

fn lines(touches: &[Touch], store: bool) -> BTreeSet<usize> {
    touches.iter().filter(|t| t.store == store).map(|t| t.line).collect()
}

/// One traced message: the writer's accesses, the reader's, the record's position.
type Message = (Vec<Touch>, Vec<Touch>, u64);

/// The crossproc latency ring (64 KiB, CRC off, the largest frame the capacity allows),
/// a reader that keeps up, and `n` traced 64-byte messages after a warm-up lap. Returns
/// per message: the writer's accesses, the reader's, and the record's region position.
fn traced_messages(n: usize) -> (Geometry, Vec<Message>) {
    let g = Geometry::with_capacity(1 << 16).unwrap();
    let words: Vec<Word> = (0..g.file_len() / 8).map(|_| Word::new(0)).collect();
    let mut w = RegionWriter::format(&words[..], g, 0).unwrap();
    w.set_crc(false);
    let options = ReaderOptions {
        start: StartPosition::Next,
        verify_crc: false,
        resync_at_keyframe: false,
        ..Default::default()
    };
    let mut r = RegionReader::new(&words[..], options).unwrap();
    let payload = [7u8; MESSAGE];
    let mut buf = [0u8; MESSAGE];
    let warm = g.capacity / record_len(MESSAGE) + 3;
    for i in 0..warm {
        w.write(&payload, FrameMeta::keyframe(i as u64)).unwrap();
        r.try_read(&mut buf).unwrap().expect("the message just written");
    }
    let mut out = Vec::new();
    for i in 0..n {
        let at = w.words()[1].load(std::sync::atomic::Ordering::Relaxed);
        let (_, wrote) = trace(|| w.write(&payload, FrameMeta::keyframe(i as u64)).unwrap());
        let (read, loaded) = trace(|| r.try_read(&mut buf).unwrap());
        assert!(read.is_some(), "message {i} was not read");
        out.push((wrote, loaded, at));
    }
    (g, out)
}

/// Per message, the lines that move from the writer's core to a caught-up reader's are
/// the control line and the record's own 2 or 3 lines; the intent line, which the reader
/// loads after every copy, moves only when the writer runs past the intent it reserved
/// (at most once per capacity/16 bytes written), and the publish line never (the reader
/// does not load it).
#[test]
fn a_caught_up_reader_moves_the_control_line_and_the_record() {
    let n = 256;
    let (g, messages) = traced_messages(n);
    let trailer_line = g.trailer_offset() / 64;
    let intent_line = trailer_line + trailer::TAIL_INTENT / 64;
    let (mut moved_total, mut intent_moves) = (0, 0);
    for (i, (wrote, loaded, at)) in messages.iter().enumerate() {
        let start = FRAME_REGION_OFFSET + (*at as usize % g.capacity);
        let record: BTreeSet<usize> = (start / 64..=(start + record_len(MESSAGE) - 1) / 64).collect();
        let read = lines(loaded, false);
        assert!(
            !read.contains(&(trailer_line + trailer::LATEST_RECORD / 64)),
            "message {i}: the reader loaded the publish line: {loaded:?}"
        );
        let moved: BTreeSet<usize> = lines(wrote, true).intersection(&read).copied().collect();
        let allowed: BTreeSet<usize> = record.iter().copied().chain([0, intent_line]).collect();
        assert!(
            moved.is_subset(&allowed),
            "message {i}: lines {moved:?} moved, beyond the control line, the intent line and the record's {record:?}"
        );
        intent_moves += usize::from(moved.contains(&intent_line));
        moved_total += moved.len();
    }
    let bound = n * record_len(MESSAGE) / (g.capacity / 16) + 1;
    assert!(
        intent_moves <= bound,
        "the intent line moved for {intent_moves} of {n} messages (at most {bound} expected)"
    );
    println!(
        "64-byte messages: {:.2} lines moved writer -> reader per message ({intent_moves} intent-line moves in {n})",
        moved_total as f64 / n as f64
    );
}

/// The writer stores the control line's two words (write_index, then sequence_number)
/// back to back: a reader spinning on write_index cannot take the line between them and
/// make the writer fetch it a second time for the same message.
#[test]
fn the_writer_stores_the_control_line_once_per_message() {
    let (_, messages) = traced_messages(8);
    for (i, (wrote, _, _)) in messages.iter().enumerate() {
        let stores: Vec<usize> = wrote.iter().filter(|t| t.store).map(|t| t.line).collect();
        let runs = stores
            .iter()
            .enumerate()
            .filter(|&(k, &l)| l == 0 && (k == 0 || stores[k - 1] != 0));
        assert_eq!(
            runs.count(),
            1,
            "message {i}: the control line is stored in more than one run: {stores:?}"
        );
    }
}

/// A ring file's writer reads the clock for its heartbeat after the frame is committed,
/// not before: the heartbeat (writer line) is stored after write_index and before notify.
#[test]
fn the_heartbeat_is_stored_after_the_commit_and_before_notify() {
    let dir = common::ring_dir("lines-heartbeat");
    let path = dir.path().join("ring");
    let mut w = RingWriter::create(
        &path,
        &WriterOptions {
            capacity: 1 << 16,
            crc: false,
            ..Default::default()
        },
    )
    .unwrap();
    let g = Geometry::with_capacity(1 << 16).unwrap();
    let t = g.trailer_offset();
    let (heartbeat, notify) = ((t + trailer::HEARTBEAT_NS) / 64, (t + trailer::NOTIFY) / 64);
    for i in 0..4u64 {
        let (_, wrote) = trace(|| w.write(&[1u8; MESSAGE], FrameMeta::keyframe(i)).unwrap());
        let stores: Vec<usize> = wrote.iter().filter(|t| t.store).map(|t| t.line).collect();
        // The control line is last stored by the commit (write_index, sequence_number);
        // notify is the publish line's last store (after latest_record).
        let last = |line: usize| stores.iter().rposition(|&l| l == line);
        let (c, h, n) = (last(0), last(heartbeat), last(notify));
        assert!(
            c.is_some() && h.is_some() && n.is_some() && c < h && h < n,
            "write {i}: want control line, then heartbeat, then notify: {stores:?}"
        );
    }
}
