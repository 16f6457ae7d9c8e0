//! The client queue's tests (direct writes, the keyframe wait, limits, the join burst), driven
//! through a hub, and the helpers the hub's tests share.

use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::hub::Hub;
use crate::keyframe::KeyframeRequests;
use crate::message::{Outgoing, VideoFrame};
use crate::metrics::Metrics;

pub(crate) fn frame(seq: u64, keyframe: bool, len: usize) -> VideoFrame {
    VideoFrame {
        message: Bytes::from(vec![seq as u8; len]),
        keyframe,
        frame_seq: seq,
        read_ns: 0,
        commit_ns: None,
        time_ns: None,
    }
}

pub(crate) fn hub(max_frames: usize) -> Hub {
    let metrics = Arc::new(Metrics::default());
    let keyframes = Arc::new(KeyframeRequests::new(Duration::from_millis(500), metrics.clone()));
    let limits = QueueLimits {
        max_frames,
        max_bytes: 1 << 20,
        keyframe_timeout: Duration::from_secs(5),
    };
    Hub::new(limits, metrics, keyframes)
}

pub(crate) fn take(c: &ClientQueue) -> Vec<u64> {
    let mut s = c.lock();
    let seqs = s
        .items
        .drain(..)
        .map(|i| match i {
            Outgoing::Video(f) | Outgoing::Camera(_, f) => f.frame_seq,
            Outgoing::Telemetry(_) => 0,
        })
        .collect();
    s.bytes = 0;
    seqs
}

/// A socket stand-in: takes up to `room` bytes, then says `WouldBlock`.
#[derive(Debug, Default)]
pub(crate) struct FakeSocket {
    pub(crate) written: Mutex<Vec<u8>>,
    pub(crate) room: Mutex<usize>,
    /// The threads that wrote to it.
    pub(crate) writers: Mutex<Vec<std::thread::ThreadId>>,
}

impl DirectSink for FakeSocket {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut room = self.room.lock().unwrap();
        if *room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut out = self.written.lock().unwrap();
        self.writers.lock().unwrap().push(std::thread::current().id());
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(*room - n);
            out.extend_from_slice(&b[..take]);
            n += take;
        }
        *room -= n;
        Ok(n)
    }
}

pub(crate) fn with_socket(c: &ClientQueue, room: usize) -> Arc<FakeSocket> {
    let sock = Arc::new(FakeSocket {
        room: Mutex::new(room),
        ..Default::default()
    });
    c.attach_sink(sock.clone());
    sock
}

/// One step of the client's writer task: takes what is pending, or (nothing
/// pending) marks the writer idle.
pub(crate) fn writer_step(c: &ClientQueue) -> Option<Batch> {
    use futures_util::FutureExt;
    let mut b = Batch::default();
    c.next_batch(&mut b).now_or_never().map(|()| b)
}

pub(crate) fn seqs(b: &Batch) -> Vec<u64> {
    b.items
        .iter()
        .map(|i| match i {
            Outgoing::Video(f) | Outgoing::Camera(_, f) => f.frame_seq,
            Outgoing::Telemetry(_) => 0,
        })
        .collect()
}

/// A video frame as the ring reader builds it: `[0x01][32-byte header][payload]`.
pub(crate) fn h264_frame(seq: u64, keyframe: bool, payload: usize) -> VideoFrame {
    let mut m = vec![0x01];
    let mut header = [0u8; 32];
    header[22] = 1; // H.264
    m.extend_from_slice(&header);
    m.extend(std::iter::repeat_n(seq as u8, payload));
    VideoFrame {
        message: m.into(),
        keyframe,
        frame_seq: seq,
        read_ns: 1,
        commit_ns: None,
        time_ns: None,
    }
}

/// The Foxglove subscription ids of the Message Data frames in `wire`.
pub(crate) fn foxglove_subs(wire: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let (len, hl) = match wire[at + 1] {
            126 => (u16::from_be_bytes([wire[at + 2], wire[at + 3]]) as usize, 4),
            n => (n as usize, 2),
        };
        let body = &wire[at + hl..at + hl + len];
        assert_eq!(body[0], crate::foxglove::OP_MESSAGE_DATA);
        out.push(u32::from_le_bytes(body[1..5].try_into().unwrap()));
        at += hl + len;
    }
    out
}

#[test]
fn frames_go_straight_to_the_socket_while_the_client_keeps_up() {
    let h = hub(100);
    h.publish_video(frame(1, true, 200));
    let c = h.join(true);
    let sock = with_socket(&c, 1 << 20);
    // The GOP burst goes through the writer task...
    assert_eq!(seqs(&writer_step(&c).expect("the GOP burst")), vec![1]);
    assert!(writer_step(&c).is_none(), "nothing else pending: the writer is idle");
    // ...then frames are written directly, as whole WebSocket frames, in order.
    h.publish_video(frame(2, false, 10));
    h.publish_video(frame(3, false, 300));
    let mut expected = vec![0x82, 10];
    expected.extend([2u8; 10]);
    expected.extend([0x82, 126, 1, 44]);
    expected.extend([3u8; 300]);
    assert_eq!(*sock.written.lock().unwrap(), expected);
    assert!(writer_step(&c).is_none(), "nothing was queued");
    assert_eq!(h.metrics.frames_sent_direct.get(), 2);
    assert_eq!(h.metrics.frames_sent.get(), 2);
}

#[test]
fn a_frame_the_socket_cuts_short_is_finished_by_the_writer_and_never_dropped() {
    let h = hub(3);
    h.publish_video(frame(1, true, 100));
    let c = h.join(true);
    let sock = with_socket(&c, 0);
    assert_eq!(seqs(&writer_step(&c).unwrap()), vec![1]);
    assert!(writer_step(&c).is_none());
    *sock.room.lock().unwrap() = 50;
    h.publish_video(frame(2, false, 100));
    assert_eq!(sock.written.lock().unwrap().len(), 50, "the socket took 50 bytes");
    // The client falls behind: its queue overflows, but frame 2's rest must follow
    // the 50 bytes already sent, so it stays while the frames after it are dropped.
    for seq in 3..=8 {
        h.publish_video(frame(seq, seq == 7, 100));
    }
    let b = writer_step(&c).expect("a backlog");
    assert_eq!(b.offset, 50);
    assert_eq!(seqs(&b)[0], 2);
    assert_eq!(seqs(&b)[1..], [7, 8]);
    assert_eq!(h.metrics.frames_sent_direct.get(), 0);
}

#[test]
fn a_failed_direct_write_ends_the_connection() {
    #[derive(Debug)]
    struct Broken;
    impl DirectSink for Broken {
        fn try_write_vectored(&self, _: &[IoSlice<'_>]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }
    let h = hub(100);
    h.publish_video(frame(1, true, 10));
    let c = h.join(true);
    c.attach_sink(Arc::new(Broken));
    writer_step(&c).unwrap();
    assert!(writer_step(&c).is_none());
    h.publish_video(frame(2, false, 10));
    let b = writer_step(&c).expect("the end");
    assert!(b.end && b.items.is_empty());
}

#[test]
fn the_join_burst_does_not_count_against_the_limits() {
    let h = hub(4);
    h.publish_video(frame(1, true, 10));
    for seq in 2..=10 {
        h.publish_video(frame(seq, false, 10));
    }
    let c = h.join(true);
    h.publish_video(frame(11, false, 10));
    h.publish_video(frame(12, false, 10));
    assert_eq!(take(&c), (1..=12).collect::<Vec<_>>());
    assert_eq!(c.dropped(), 0);
}

/// A hub whose clients are closed after 20 ms without the keyframe they wait for.
fn hub_with_a_short_keyframe_timeout() -> Hub {
    let metrics = Arc::new(Metrics::default());
    let keyframes = Arc::new(KeyframeRequests::new(Duration::from_millis(500), metrics.clone()));
    let limits = QueueLimits {
        max_frames: 10,
        max_bytes: 1 << 20,
        keyframe_timeout: Duration::from_millis(20),
    };
    Hub::new(limits, metrics, keyframes)
}

#[test]
fn a_client_starved_of_keyframes_is_closed_with_a_reason() {
    let h = hub_with_a_short_keyframe_timeout();
    let c = h.join(true); // no keyframe cached: waits for one
    h.publish_video(frame(1, false, 10));
    std::thread::sleep(Duration::from_millis(30));
    h.publish_video(frame(2, false, 10));
    let close = c.lock().close.clone().expect("closed");
    assert_eq!(close.code, 1013);
    assert!(
        close.reason.contains("no keyframe") && close.reason.contains("since joining"),
        "{}",
        close.reason
    );
}

#[test]
fn a_client_that_fell_behind_is_told_so_when_no_keyframe_comes() {
    let h = hub_with_a_short_keyframe_timeout();
    let c = h.join(true);
    h.publish_video(frame(1, true, 10));
    h.publish_video(frame(2, false, 10));
    // Frame 3 never reaches this client (a ring lap): 4 may reference it.
    h.publish_video(frame(4, false, 10));
    std::thread::sleep(Duration::from_millis(30));
    h.publish_video(frame(5, false, 10));
    let close = c.lock().close.clone().expect("closed");
    assert_eq!(close.code, 1013);
    assert!(close.reason.contains("after falling behind"), "{}", close.reason);
}

#[test]
fn client_without_cached_keyframe_waits_for_one() {
    let h = hub(100);
    let c = h.join(true);
    h.publish_video(frame(1, false, 10));
    h.publish_video(frame(2, true, 10));
    assert_eq!(take(&c), vec![2]);
    assert_eq!(c.dropped(), 1);
}

#[test]
fn overflow_drops_one_client_to_the_next_keyframe_only() {
    let h = hub(4);
    let slow = h.join(true);
    let fast = h.join(true);
    h.publish_video(frame(1, true, 10));
    let mut fast_seen = take(&fast);
    for seq in 2..=10 {
        h.publish_video(frame(seq, seq == 8, 10));
        fast_seen.extend(take(&fast));
    }
    assert_eq!(fast_seen, (1..=10).collect::<Vec<_>>());
    // The slow one overflowed at frame 5, skipped 6 and 7, resumed at keyframe 8.
    assert_eq!(take(&slow), vec![8, 9, 10]);
    assert_eq!(slow.dropped(), 7);
}

#[test]
fn a_delta_frame_after_a_gap_waits_for_a_keyframe() {
    // The source reads every frame from the newest one (intra-refresh producers may have
    // no keyframe in the ring), so a gap reaches the clients: each resumes at a keyframe.
    let h = hub(100);
    let c = h.join(true);
    for (seq, key) in [(1, true), (2, false), (5, false), (6, false), (7, true), (8, false)] {
        h.publish_video(frame(seq, key, 10));
    }
    assert_eq!(take(&c), vec![1, 2, 7, 8]);
    assert_eq!(c.dropped(), 2);
}

#[test]
fn a_stored_keyframe_met_by_the_live_stream_resumes_at_a_keyframe() {
    // A `--source` server starts from the keyframe JetStream kept (40), then meets the
    // live stream further on (52...): the client must not get 52, whose references it
    // never had, whatever order the discontinuity and the queued frames take.
    let h = hub(100);
    let c = h.join(true);
    h.publish_video(frame(40, true, 10));
    for seq in 52..56 {
        h.publish_video(frame(seq, false, 10));
    }
    h.publish_video(frame(60, true, 10));
    h.publish_video(frame(61, false, 10));
    assert_eq!(take(&c), vec![40, 60, 61]);
}

#[test]
fn without_a_burst_a_client_starts_at_the_next_keyframe() {
    let h = hub(100);
    h.publish_video(frame(1, true, 10));
    h.publish_video(frame(2, false, 10));
    let c = h.join(false);
    assert!(take(&c).is_empty(), "no GOP burst for a client that did not ask");
    h.publish_video(frame(3, false, 10));
    h.publish_video(frame(4, true, 10));
    h.publish_video(frame(5, false, 10));
    assert_eq!(take(&c), vec![4, 5]);
    let burst = h.join(true);
    assert_eq!(take(&burst), vec![4, 5], "the burst, for a client that asked");
}

#[test]
fn a_camera_subscription_that_loses_frames_resumes_at_its_own_keyframe() {
    let c = ClientQueue::new(1, Protocol::Foxglove);
    let limits = QueueLimits {
        max_frames: 2,
        max_bytes: 1 << 20,
        keyframe_timeout: Duration::from_secs(5),
    };
    assert!(c.subscribe_camera(7) && c.subscribe_camera(8));
    assert!(!c.subscribe_camera(7), "an id is one subscription");
    let push = |sub, frames: Vec<VideoFrame>| c.push_camera(sub, frames.into_iter(), &limits);
    assert_eq!(
        push(7, vec![frame(1, true, 10), frame(2, false, 10), frame(3, false, 10)]),
        Relayed::Queued
    );
    // Over the limits: camera 8's frames are dropped, and it skips to its next keyframe.
    assert_eq!(push(8, vec![frame(50, true, 10)]), Relayed::Resync);
    assert_eq!(take(&c), [1, 2, 3]);
    assert_eq!(
        push(8, vec![frame(51, false, 10)]),
        Relayed::Resync,
        "a delta frame without its keyframe"
    );
    assert_eq!(
        push(7, vec![frame(4, false, 10)]),
        Relayed::Queued,
        "camera 7 lost nothing"
    );
    assert_eq!(
        push(8, vec![frame(52, false, 10), frame(60, true, 10), frame(61, false, 10)]),
        Relayed::Queued
    );
    assert_eq!(take(&c), [4, 60, 61]);
    c.unsubscribe(8);
    assert_eq!(push(8, vec![frame(62, false, 10)]), Relayed::Queued);
    assert!(take(&c).is_empty(), "an ended subscription gets nothing");
    assert!(c.subscribed(), "camera 7 still is");
}

/// Publishes video frame `seq` on another thread while the test holds `idle`'s queue
/// lock; true if the publication finished meanwhile (it did not wait for that lock).
fn publishes_past(h: &Arc<Hub>, idle: &ClientQueue, seq: u64) -> bool {
    let held = idle.lock();
    let publisher = std::thread::spawn({
        let h = h.clone();
        move || h.publish_video(h264_frame(seq, false, 10))
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !publisher.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let finished = publisher.is_finished();
    drop(held);
    publisher.join().unwrap();
    finished
}

#[test]
fn the_fan_out_passes_by_a_foxglove_client_subscribed_to_no_picture() {
    use crate::foxglove::VIDEO_CHANNEL_ID;
    let h = Arc::new(hub(100));
    h.publish_video(h264_frame(1, true, 10));
    let watcher = h.join_subscriber(Protocol::Foxglove, b"");
    let idle = h.join_subscriber(Protocol::Foxglove, b"");
    assert!(h.subscribe(&watcher, VIDEO_CHANNEL_ID, 1));
    assert!(
        publishes_past(&h, &idle, 2),
        "the frame waited for (visited) a client subscribed to no picture"
    );
    assert_eq!(take(&watcher), vec![1, 2]);
    assert_eq!(take(&idle), Vec::<u64>::new());
    // Subscribed, it is visited again and gets the frames; unsubscribed, passed by.
    assert!(h.subscribe(&idle, VIDEO_CHANNEL_ID, 7));
    h.publish_video(h264_frame(3, false, 10));
    assert_eq!(take(&idle), vec![1, 2, 3]);
    h.unsubscribe(&idle, 7);
    assert!(publishes_past(&h, &idle, 4), "visited after it unsubscribed");
    assert_eq!(take(&watcher), vec![3, 4]);
}
