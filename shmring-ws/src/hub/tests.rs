//! The hub's tests: fan-out threads, the GOP cache, subscriptions.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::tests::{foxglove_subs, frame, h264_frame, hub, seqs, take, with_socket, writer_step};
use crate::framing::text_frame;
use crate::wire::Protocol;

#[test]
fn fan_out_threads_deliver_every_frame_in_order_to_every_client() {
    let h = hub(1000).with_fanout(crate::hub::FanoutPool::new(2).unwrap());
    h.publish_video(frame(1, true, 10));
    let clients: Vec<_> = (0..5).map(|_| h.join(true)).collect();
    let sockets: Vec<_> = clients.iter().map(|c| with_socket(c, 1 << 20)).collect();
    for c in &clients {
        assert_eq!(seqs(&writer_step(c).unwrap()), vec![1]);
        assert!(writer_step(c).is_none());
    }
    for seq in 2..=200 {
        h.publish_video(frame(seq, false, 10));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.metrics.frames_sent_direct.get() < 5 * 199 {
        assert!(Instant::now() < deadline, "the fan-out threads did not deliver");
        std::thread::sleep(Duration::from_millis(1));
    }
    for sock in &sockets {
        // Each frame: [0x82, 10] and ten bytes of its seq.
        let got: Vec<u8> = sock.written.lock().unwrap().chunks(12).map(|f| f[2]).collect();
        assert_eq!(got, (2..=200).map(|s| s as u8).collect::<Vec<_>>());
    }
}

#[test]
fn with_few_clients_the_publishing_thread_writes_itself() {
    let h = hub(1000).with_fanout(crate::hub::FanoutPool::new(2).unwrap());
    h.publish_video(frame(1, true, 10));
    let c = h.join(true);
    let sock = with_socket(&c, 1 << 20);
    assert_eq!(seqs(&writer_step(&c).unwrap()), vec![1]);
    assert!(writer_step(&c).is_none());
    for seq in 2..=20u8 {
        h.publish_video(frame(u64::from(seq), false, 10));
        // Written before publish_video returned: no hand-off to a fan-out thread.
        let got: Vec<u8> = sock.written.lock().unwrap().chunks(12).map(|f| f[2]).collect();
        assert_eq!(got, (2..=seq).collect::<Vec<_>>());
    }
}

#[test]
fn crossing_the_inline_limit_keeps_every_client_in_order() {
    let h = hub(100_000).with_fanout(crate::hub::FanoutPool::new(2).unwrap());
    h.publish_video(frame(1, true, 10));
    let first = h.join(true);
    let first_sock = with_socket(&first, 1 << 22);
    assert_eq!(seqs(&writer_step(&first).unwrap()), vec![1]);
    assert!(writer_step(&first).is_none());
    let mut seq = 1u64;
    let mut others = Vec::new();
    for round in 0..6 {
        // Alternate between inline (1 client) and threaded (6 clients) delivery.
        if round % 2 == 1 {
            others = (0..5).map(|_| h.join(false)).collect();
        } else {
            for c in others.drain(..) {
                h.leave(&c);
            }
        }
        for _ in 0..100 {
            seq += 1;
            h.publish_video(frame(seq, false, 10));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while first_sock.written.lock().unwrap().len() < 12 * (seq as usize - 1) {
        assert!(Instant::now() < deadline, "the first client did not get every frame");
        std::thread::sleep(Duration::from_millis(1));
    }
    let got: Vec<u8> = first_sock.written.lock().unwrap().chunks(12).map(|f| f[2]).collect();
    assert_eq!(got, (2..=seq).map(|s| s as u8).collect::<Vec<_>>());
}

#[test]
fn new_client_starts_from_the_gop_cache() {
    let h = hub(100);
    h.publish_video(frame(1, false, 10));
    h.publish_video(frame(2, true, 10));
    h.publish_video(frame(3, false, 10));
    let c = h.join(true);
    h.publish_video(frame(4, false, 10));
    assert_eq!(take(&c), vec![2, 3, 4]);
}

#[test]
fn foxglove_clients_get_video_only_while_subscribed_with_their_subscription_id() {
    let h = hub(100);
    h.publish_video(h264_frame(1, true, 50));
    let c = h.join_subscriber(Protocol::Foxglove, &text_frame("{}"));
    let sock = with_socket(&c, 1 << 20);
    let hello = writer_step(&c).expect("serverInfo and advertise");
    assert!(hello.items.is_empty() && hello.control.starts_with(&[0x81]));
    assert!(writer_step(&c).is_none(), "no video before subscribing");
    h.publish_video(h264_frame(2, false, 50));
    assert!(sock.written.lock().unwrap().is_empty());
    assert!(!h.subscribe(&c, 5, 9), "no channel 5");
    assert!(h.subscribe(&c, crate::foxglove::VIDEO_CHANNEL_ID, 9));
    assert!(
        !h.subscribe(&c, crate::foxglove::VIDEO_CHANNEL_ID, 10),
        "one subscription per channel"
    );
    let burst = writer_step(&c).expect("the GOP burst");
    assert_eq!((seqs(&burst), burst.subs.video), (vec![1, 2], Some(9)));
    assert!(writer_step(&c).is_none());
    h.publish_video(h264_frame(3, false, 50));
    h.publish_telemetry(Bytes::from_static(b"\x02\x01\x00x{}"));
    assert_eq!(
        foxglove_subs(&sock.written.lock().unwrap()),
        vec![9],
        "telemetry is not sent"
    );
    h.unsubscribe(&c, 9);
    h.publish_video(h264_frame(4, false, 50));
    assert_eq!(foxglove_subs(&sock.written.lock().unwrap()), vec![9]);
}

#[test]
fn a_partly_written_foxglove_message_keeps_its_subscription_id() {
    let h = hub(100);
    h.publish_video(h264_frame(1, true, 200));
    let c = h.join_subscriber(Protocol::Foxglove, &text_frame("{}"));
    let sock = with_socket(&c, 0);
    assert!(h.subscribe(&c, crate::foxglove::VIDEO_CHANNEL_ID, 1));
    writer_step(&c).unwrap();
    assert!(writer_step(&c).is_none());
    *sock.room.lock().unwrap() = 20;
    h.publish_video(h264_frame(2, false, 200));
    // Resubscribed under another id while the rest of frame 2 waits.
    h.unsubscribe(&c, 1);
    assert!(h.subscribe(&c, crate::foxglove::VIDEO_CHANNEL_ID, 2));
    let b = writer_step(&c).unwrap();
    assert_eq!((b.offset, b.front_subscription, b.subs.video), (20, Some(1), Some(2)));
    assert_eq!(
        seqs(&b),
        vec![2, 1, 2],
        "frame 2's rest, then the new subscription's GOP (1, 2)"
    );
}

/// The text messages in server-to-client WebSocket frames.
fn text_messages(mut wire: &[u8]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while wire.len() >= 2 {
        let (len, at) = match wire[1] {
            126 => (u16::from_be_bytes([wire[2], wire[3]]) as usize, 4),
            127 => (u64::from_be_bytes(wire[2..10].try_into().unwrap()) as usize, 10),
            n => (n as usize, 2),
        };
        if wire[0] == 0x81 {
            out.push(serde_json::from_slice(&wire[at..at + len]).unwrap());
        }
        wire = &wire[at + len..];
    }
    out
}

#[test]
fn a_long_channel_list_is_advertised_in_several_messages_and_never_dropped() {
    let h = hub(100);
    for i in 0..600 {
        let subject = format!("telemetry.robot.sensor_with_a_long_descriptive_name_{i}");
        let mut m = vec![0x02];
        m.extend((subject.len() as u16).to_le_bytes());
        m.extend(subject.as_bytes());
        m.extend(b"{\"v\":1}");
        h.publish_telemetry(Bytes::from(m));
    }
    let c = h.join_subscriber(Protocol::Foxglove, &text_frame("{\"op\":\"serverInfo\"}"));
    let hello = writer_step(&c).expect("serverInfo and advertise");
    assert!(hello.control.len() > 64 << 10, "more than a client's control limit");
    let messages = text_messages(&hello.control);
    assert_eq!(messages[0]["op"], "serverInfo");
    let adverts: Vec<_> = messages[1..]
        .iter()
        .map(|m| m["channels"].as_array().unwrap().len())
        .collect();
    assert!(messages[1..].iter().all(|m| m["op"] == "advertise"));
    // The first message also carries the video and image channels.
    assert!(adverts.len() > 1 && adverts.iter().all(|n| *n <= crate::wire::CHANNELS_PER_ANNOUNCEMENT + 2));
    assert_eq!(
        adverts.iter().sum::<usize>(),
        602,
        "the video and image channels and 600 telemetry channels"
    );
    assert_eq!(
        messages[1]["channels"][0]["topic"],
        crate::foxglove::VIDEO_TOPIC,
        "video comes first"
    );
}

#[test]
fn shutting_down_closes_every_client_with_a_reason() {
    let h = hub(100);
    let clients = [h.join(false), h.join_subscriber(Protocol::Foxglove, &text_frame("{}"))];
    h.close_all(&crate::framing::CloseReason {
        code: crate::framing::close_code::GOING_AWAY,
        reason: "the server is shutting down".into(),
    });
    for c in &clients {
        let b = std::iter::from_fn(|| writer_step(c))
            .find(|b| b.close.is_some())
            .expect("a close");
        assert_eq!(b.close.unwrap().code, 1001);
    }
}

#[test]
fn two_hubs_on_one_pool_keep_each_of_their_clients_in_order() {
    let pool = crate::hub::FanoutPool::new(2).unwrap();
    let hubs = [hub(100_000).with_fanout(pool.clone()), hub(100_000).with_fanout(pool)];
    let mut sockets = Vec::new();
    for (n, h) in hubs.iter().enumerate() {
        h.publish_video(frame(1, true, 10));
        for _ in 0..6 + n {
            let c = h.join(true);
            sockets.push((n, with_socket(&c, 1 << 22)));
            assert_eq!(seqs(&writer_step(&c).unwrap()), vec![1]);
            assert!(writer_step(&c).is_none());
        }
    }
    // Interleaved: each thread's batches hold jobs of both hubs.
    for seq in 2..=200 {
        for h in &hubs {
            h.publish_video(frame(seq, false, 10));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while sockets.iter().any(|(_, s)| s.written.lock().unwrap().len() < 12 * 199) {
        assert!(
            Instant::now() < deadline,
            "the shared pool did not deliver frames 2..=200 to every client"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    for (n, sock) in &sockets {
        let got: Vec<u8> = sock.written.lock().unwrap().chunks(12).map(|f| f[2]).collect();
        assert_eq!(
            got,
            (2..=200).map(|s| s as u8).collect::<Vec<_>>(),
            "a client of hub {n}"
        );
    }
}

#[test]
fn the_picture_size_is_the_newest_keyframes_until_a_discontinuity() {
    // libx264's SPS at 160x120 (coded 160x128, cropped), then a stand-in IDR slice.
    let sps = "6764000bacd942847e5c0440000003004000000f03c50a6580";
    let mut access_unit = vec![0, 0, 0, 1];
    access_unit.extend(
        (0..sps.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&sps[i..i + 2], 16).unwrap()),
    );
    access_unit.extend([0, 0, 0, 1, 0x65, 0x88, 0x84]);
    let mut keyframe = h264_frame(2, true, 0);
    keyframe.message = [&keyframe.message[..], &access_unit].concat().into();
    let h = hub(100);
    assert_eq!(h.picture_size(), None, "no frame yet");
    h.publish_video(h264_frame(1, false, 50));
    assert_eq!(h.picture_size(), None, "no keyframe yet");
    h.publish_video(keyframe);
    h.publish_video(h264_frame(3, false, 50));
    assert_eq!(h.picture_size(), Some((160, 120)));
    h.discontinuity();
    assert_eq!(h.picture_size(), None, "another stream may have another size");
    h.publish_video(h264_frame(4, true, 50));
    assert_eq!(h.picture_size(), None, "a keyframe whose bytes hold no SPS");
}
