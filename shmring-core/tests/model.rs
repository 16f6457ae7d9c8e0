//! Property test against a simple model: random write sequences (sizes up to the max,
//! random keyframes) interleaved with random reader schedules. The model knows where
//! every record lies, so it can say when a reader must get the very next frame, and
//! checks contents, order, loss counts and the final accounting.

use proptest::prelude::*;
use shmring_core::layout::record_len;
use shmring_core::{FrameMeta, Geometry, ReaderOptions, RegionReader, RegionWriter, StartPosition, Word};

const CAPACITY: u64 = 1024;
const MAX: usize = 200;
/// How far the writer reserves its intent ahead (docs/protocol.md §3 step 2):
/// `clamp(capacity / 16, 32, 65536)`, a multiple of 32.
const RESERVE: u64 = 64;

#[derive(Clone, Debug)]
enum Op {
    Write { size: usize, keyframe: bool },
    Read { reader: usize },
    ReadLatest { reader: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..=MAX, any::<bool>()).prop_map(|(size, keyframe)| Op::Write { size, keyframe }),
        3 => (0..2usize).prop_map(|reader| Op::Read { reader }),
        1 => (0..2usize).prop_map(|reader| Op::ReadLatest { reader }),
    ]
}

fn payload(seq: u64, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

/// Where the writer puts each record and what intent it publishes: the model's copy of
/// the layout rules.
struct ModelRing {
    tail: u64,
    /// The tail_intent the writer published (§3 step 2: stored only when a record runs
    /// past it, then reserved ahead).
    intent: u64,
    /// Start of the newest keyframe.
    keyframe: Option<u64>,
    /// (start, end, keyframe) of frame seq (index = seq - 1).
    records: Vec<(u64, u64, bool)>,
}

impl ModelRing {
    fn write(&mut self, size: usize, keyframe: bool) {
        let rec = record_len(size) as u64;
        let room = CAPACITY - self.tail % CAPACITY;
        let start = if room < rec { self.tail + room } else { self.tail };
        let end = start + rec;
        if end > self.intent {
            let bound = [
                Some(end + RESERVE),
                self.keyframe.map(|k| k + CAPACITY),
                Some(start + CAPACITY),
                Some(self.tail + CAPACITY),
            ];
            self.intent = bound.into_iter().flatten().min().unwrap().max(end);
        }
        if keyframe {
            self.keyframe = Some(start);
        }
        self.tail = end;
        self.records.push((start, self.tail, keyframe));
    }
}

struct ModelReader {
    last: u64,
    delivered: u64,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn ring_matches_model(ops in proptest::collection::vec(op(), 1..300)) {
        let g = Geometry::new(CAPACITY as usize, MAX).unwrap();
        let words: Vec<Word> = (0..g.file_len() / 8).map(|_| Word::new(0)).collect();
        let mut w = RegionWriter::format(&words[..], g, 0).unwrap();
        let options = [
            ReaderOptions { start: StartPosition::Next, verify_crc: true, resync_at_keyframe: true, ..Default::default() },
            ReaderOptions { start: StartPosition::Next, verify_crc: true, resync_at_keyframe: false, ..Default::default() },
        ];
        let mut readers: Vec<_> = options.iter().map(|o| RegionReader::new(&words[..], *o).unwrap()).collect();
        let mut models: Vec<_> = (0..2).map(|_| ModelReader { last: 0, delivered: 0 }).collect();
        let mut ring = ModelRing { tail: 0, intent: 0, keyframe: None, records: vec![] };
        let intent_word = (g.trailer_offset() + shmring_core::layout::trailer::TAIL_INTENT) / 8;
        let mut sizes = vec![];
        let mut buf = vec![0u8; MAX];

        for op in ops.iter().cloned().chain([Op::Write { size: 8, keyframe: true }]) {
            match op {
                Op::Write { size, keyframe } => {
                    let seq = w.write(&payload(sizes.len() as u64 + 1, size), FrameMeta { keyframe, ..FrameMeta::delta(0) }).unwrap();
                    prop_assert_eq!(seq, sizes.len() as u64 + 1);
                    sizes.push(size);
                    ring.write(size, keyframe);
                    let published = words[intent_word].load(std::sync::atomic::Ordering::Relaxed);
                    prop_assert_eq!(published, ring.intent, "the published intent");
                }
                Op::Read { reader: i } | Op::ReadLatest { reader: i } => {
                    let latest = matches!(op, Op::ReadLatest { .. });
                    let m = &mut models[i];
                    // Reader 1 never skips frames, so it stands at the end of the last
                    // frame it delivered; if the next frame is still intact from there
                    // (and the published intent, which may be reserved up to RESERVE
                    // bytes beyond the last record, says so), a plain read must return
                    // exactly that frame.
                    let stands_at = if m.last == 0 { 0 } else { ring.records[m.last as usize - 1].1 };
                    let must_get_next =
                        i == 1 && !latest && m.last < sizes.len() as u64 && ring.intent <= stands_at + CAPACITY;
                    let got = if latest { readers[i].read_latest(&mut buf) } else { readers[i].try_read(&mut buf) };
                    let got = got.unwrap();
                    if must_get_next {
                        prop_assert_eq!(got.map(|f| f.frame_seq), Some(m.last + 1), "reader 1 skipped an intact frame");
                    }
                    if let Some(info) = got {
                        let seq = info.frame_seq;
                        prop_assert!(seq > m.last && seq <= sizes.len() as u64, "order: {} after {}", seq, m.last);
                        prop_assert_eq!(&buf[..info.size], &payload(seq, sizes[seq as usize - 1])[..]);
                        prop_assert_eq!(info.lost_before, seq - m.last - 1);
                        if latest {
                            prop_assert_eq!(seq, sizes.len() as u64, "read_latest returns the newest frame");
                        }
                        if info.lost_before > 0 && !latest && options[i].resync_at_keyframe {
                            prop_assert!(info.keyframe(), "after a loss the keyframe reader restarts at a keyframe");
                        }
                        m.last = seq;
                        m.delivered += 1;
                    }
                }
            }
        }
        // Drain: both readers end on the final keyframe with exact accounting.
        let written = sizes.len() as u64;
        for (i, r) in readers.iter_mut().enumerate() {
            while let Some(info) = r.try_read(&mut buf).unwrap() {
                prop_assert!(info.frame_seq > models[i].last);
                prop_assert_eq!(&buf[..info.size], &payload(info.frame_seq, sizes[info.frame_seq as usize - 1])[..]);
                models[i].last = info.frame_seq;
                models[i].delivered += 1;
            }
            let s = r.stats();
            prop_assert_eq!(models[i].last, written, "reader {} ends on the newest frame", i);
            prop_assert_eq!(s.delivered, models[i].delivered);
            prop_assert_eq!(s.delivered + s.lost, written, "reader {}: {:?}", i, s);
            prop_assert_eq!(s.corrupt + s.crc_errors, 0);
        }
    }
}
