//! A ring file truncated while writer and reader processes have it mapped (`truncate -s
//! 100 RING`, or a legacy writer restarting with O_TRUNC + ftruncate): touching the lost
//! pages raised SIGBUS and killed them (status 135). Both must survive: the writer's
//! writes fail with `Error::Truncated`, the reader reports the damage once and reopens the
//! path when a valid ring is there again.

mod common;

use common::*;
use shmring_core::{Error, FrameMeta, LayoutChoice, ReaderOptions, RingReader, RingWriter, WriterOptions};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TEST_V1: &str = "reader_and_writer_processes_survive_truncate";
const TEST_LEGACY: &str = "legacy_reader_process_survives_a_writer_restarting_with_o_trunc";

fn env_path() -> String {
    std::env::var("SHMRING_TEST_PATH").unwrap()
}

/// Writes a frame every millisecond until a write reports the truncation.
fn writer_role() {
    let mut w = RingWriter::open(env_path(), &WriterOptions::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut frames = 0u64;
    while Instant::now() < deadline {
        match w.write(&[7; 3000], FrameMeta::keyframe(frames)) {
            Ok(_) => frames += 1,
            Err(Error::Truncated { .. }) => {
                report(&format!("writer_truncated=1 frames={frames}"));
                return;
            }
            Err(e) => panic!("unexpected write error: {e}"),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Reads until it has seen the truncation and then at least three frames of the ring
/// that is at the path afterwards.
fn reader_role() {
    let layout = if std::env::var("SHMRING_TEST_LEGACY").is_ok() {
        LayoutChoice::Legacy
    } else {
        LayoutChoice::V1
    };
    let mut r = RingReader::open_layout(env_path(), &ReaderOptions::default(), layout).unwrap();
    let ready = std::env::var("SHMRING_TEST_READY").unwrap();
    let (mut before, mut truncated, mut after) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while after < 3 && Instant::now() < deadline {
        match r.read_timeout(Some(Duration::from_millis(100))) {
            Ok(Some(_)) if truncated == 0 => {
                before += 1;
                if before == 1 {
                    std::fs::write(&ready, b"ready").unwrap();
                }
            }
            Ok(Some(_)) => after += 1,
            Ok(None) => {}
            Err(Error::Truncated { .. }) => {
                truncated += 1;
                std::fs::write(format!("{ready}.truncated"), b"seen").unwrap();
            }
            Err(Error::Read(_)) => {}
            Err(e) => panic!("unexpected read error: {e}"),
        }
    }
    report(&format!(
        "before={before} truncated={truncated} after={after} reopens={}",
        r.reopens()
    ));
}

fn child(test: &str, role: &str, dir: &Path, extra: &[(&str, String)]) -> KillOnDrop {
    let mut env = vec![
        ("SHMRING_TEST_PATH", dir.join("ring").display().to_string()),
        (
            "SHMRING_TEST_REPORT",
            dir.join(format!("{role}.report")).display().to_string(),
        ),
        (
            "SHMRING_TEST_READY",
            dir.join(format!("{role}.ready")).display().to_string(),
        ),
    ];
    env.extend(extra.iter().cloned());
    KillOnDrop(spawn_role(test, role, &env))
}

/// Waits for a child's report; fails at once if the child died (of SIGBUS, before the fix).
fn report_of(child: &mut KillOnDrop, path: &Path, who: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!(
                "the {who} process died before reporting: {status:?} (signal {:?})",
                status.signal()
            );
        }
        assert!(Instant::now() < deadline, "no report from the {who} process");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for a child to exit and checks it was not killed by a signal.
fn exits_cleanly(mut child: KillOnDrop, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert_eq!(
                status.signal(),
                None,
                "the {who} process was killed by signal {status:?}"
            );
            assert!(status.success(), "the {who} process failed: {status:?}");
            return;
        }
        assert!(Instant::now() < deadline, "the {who} process did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn reader_and_writer_processes_survive_truncate() {
    match role().as_deref() {
        Some("writer") => return writer_role(),
        Some("reader") => return reader_role(),
        _ => {}
    }
    let dir = ring_dir("truncate");
    let path = dir.join("ring");
    let opts = WriterOptions {
        capacity: 64 << 10,
        ..Default::default()
    };
    drop(RingWriter::create(&path, &opts).unwrap());
    let mut writer = child(TEST_V1, "writer", &dir, &[]);
    let mut reader = child(TEST_V1, "reader", &dir, &[]);
    report_of(&mut reader, &dir.join("reader.ready"), "reader");
    // The real tool, as an operator would run it.
    let status = Command::new("truncate").args(["-s", "100"]).arg(&path).status();
    if !status.is_ok_and(|s| s.success()) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100)
            .unwrap();
    }
    let text = report_of(&mut writer, &dir.join("writer.report"), "writer");
    assert_eq!(parse_report(&text)["writer_truncated"], 1, "{text}");
    exits_cleanly(writer, "writer");
    // A new ring at the path: the reader reopens it.
    let mut w = RingWriter::create(&path, &opts).unwrap();
    while !dir.join("reader.report").exists() && reader.0.try_wait().unwrap().is_none() {
        w.write(b"new ring", FrameMeta::keyframe(0)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let text = report_of(&mut reader, &dir.join("reader.report"), "reader");
    let r = parse_report(&text);
    assert_eq!(r["truncated"], 1, "the reader reported the damage once: {text}");
    assert!(r["after"] >= 3, "the reader reads the new ring: {text}");
    assert!(r["reopens"] >= 1, "{text}");
    exits_cleanly(reader, "reader");
}

/// SDR_OS's writer restarts by opening the ring with O_TRUNC and sizing it again; a legacy
/// reader that touches the ring in between used to die of SIGBUS.
#[test]
fn legacy_reader_process_survives_a_writer_restarting_with_o_trunc() {
    if role().as_deref() == Some("reader") {
        return reader_role();
    }
    let dir = ring_dir("truncate-legacy");
    let path = dir.join("ring");
    let len = 64 << 10;
    let opts = WriterOptions {
        layout: LayoutChoice::Legacy,
        legacy_len: len,
        ..Default::default()
    };
    let mut w = RingWriter::create(&path, &opts).unwrap();
    let mut reader = child(TEST_LEGACY, "reader", &dir, &[("SHMRING_TEST_LEGACY", "1".into())]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seq = 0;
    while !dir.join("reader.ready").exists() && Instant::now() < deadline {
        seq += 1;
        w.write(b"old writer", FrameMeta::keyframe(seq)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(w);
    // The restart: O_TRUNC, then ftruncate once the reader (which polls a legacy ring
    // every 0.5 ms) has touched the vanished pages or seen the file shrink, and said so.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    report_of(&mut reader, &dir.join("reader.ready.truncated"), "reader");
    file.set_len(len as u64).unwrap();
    drop(file);
    let mut w = RingWriter::open(&path, &opts).unwrap();
    while !dir.join("reader.report").exists() && reader.0.try_wait().unwrap().is_none() {
        w.write(b"new writer", FrameMeta::keyframe(0)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let text = report_of(&mut reader, &dir.join("reader.report"), "reader");
    let r = parse_report(&text);
    assert_eq!(r["truncated"], 1, "the reader reported the damage once: {text}");
    assert!(
        r["after"] >= 3,
        "the reader reads the restarted writer's frames: {text}"
    );
    exits_cleanly(reader, "reader");
}

/// The handler only recovers faults inside ring mappings: a SIGBUS anywhere else still
/// kills the process, as it would without shmring.
#[test]
fn a_sigbus_outside_ring_mappings_still_kills() {
    let dir_env = std::env::var("SHMRING_TEST_DIR");
    if role().as_deref() == Some("foreign") {
        let dir = std::path::PathBuf::from(dir_env.unwrap());
        // A ring reader installs the handler.
        let _r = RingReader::open(dir.join("ring"), &ReaderOptions::default()).unwrap();
        let other = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("other"))
            .unwrap();
        other.set_len(8192).unwrap();
        // SAFETY: maps a file this process just created; the read below faults on
        // purpose after the truncation (the test expects the process to die of it).
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&other),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            other.set_len(0).unwrap();
            let v = std::ptr::read_volatile(p as *const u8);
            report(&format!("survived={v}"));
        }
        return;
    }
    let dir = ring_dir("foreign-sigbus");
    drop(RingWriter::create(dir.join("ring"), &WriterOptions::default()).unwrap());
    let mut child = child(
        "a_sigbus_outside_ring_mappings_still_kills",
        "foreign",
        &dir,
        &[("SHMRING_TEST_DIR", dir.display().to_string())],
    );
    let status = child.0.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
    assert!(!dir.join("foreign.report").exists());
}
