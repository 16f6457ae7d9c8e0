//! A ring created on a full file system (Docker's default 64 MiB `/dev/shm` against 16 MiB
//! rings). Ring files used to be sparse: formatting the new file faulted, the SIGBUS
//! handler swallowed the fault, and `create` renamed the unformatted file over the old
//! ring and returned `Ok`. Now the pages are reserved first, so a full tmpfs is
//! `Error::NoSpace` at creation, the old ring stays in place and no file is left behind.
//!
//! The test needs a small tmpfs of its own: the child runs in a private mount namespace
//! (`unshare --mount` as root, else `unshare --user --map-root-user --mount`), so the
//! mount disappears with it.

mod common;

use common::*;
use shmring_core::{Error, FrameMeta, RingWriter, WriterOptions};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TEST: &str = "a_full_tmpfs_is_no_space_at_create_and_the_old_ring_survives";
/// Size of the child's tmpfs.
const TMPFS_SIZE: &str = "1m";
/// Exit status of the namespace shell when it could not mount the tmpfs.
const NO_MOUNT: i32 = 97;

fn options() -> WriterOptions {
    WriterOptions {
        capacity: 256 << 10,
        ..Default::default()
    }
}

/// Names of the entries in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Fills the file system of `dir` until a write fails with ENOSPC.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![1u8; 4096];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
}

/// Runs inside the private tmpfs (`SHMRING_TEST_DIR`).
fn child_role() {
    let dir = std::path::PathBuf::from(std::env::var("SHMRING_TEST_DIR").unwrap());
    let path = dir.join("ring");
    let mut w = RingWriter::create(&path, &options()).unwrap();
    w.write(b"old ring", FrameMeta::keyframe(0)).unwrap();
    let next_seq = w.next_frame_seq();
    drop(w);
    let inode = std::fs::metadata(&path).unwrap().ino();
    fill(&dir);

    // Replacing the ring (no writer holds it) on the full file system.
    match RingWriter::create(&path, &options()) {
        Ok(_) => panic!("create on a full tmpfs returned Ok (the old ring was replaced by an unformatted file)"),
        Err(e @ Error::NoSpace { .. }) => {
            let Error::NoSpace { needed, available, .. } = &e else {
                unreachable!()
            };
            assert!(needed > available, "{e}");
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(&needed.to_string()), "{text}");
            assert!(text.contains("free"), "{text}");
        }
        Err(e) => panic!("expected Error::NoSpace, got: {e}"),
    }
    assert_eq!(entries(&dir), ["filler", "ring"], "no temporary file is left behind");
    assert_eq!(
        std::fs::metadata(&path).unwrap().ino(),
        inode,
        "the old ring is still at the path"
    );
    // The old ring is intact: its writer can continue it after its one frame.
    let w = RingWriter::open(&path, &options()).expect("the old ring is still a ring");
    assert_eq!(w.next_frame_seq(), next_seq, "the old ring keeps its frame");
    drop(w);

    // A new ring where there was none: nothing is left at the path.
    let fresh = dir.join("fresh");
    assert!(matches!(
        RingWriter::create(&fresh, &options()),
        Err(Error::NoSpace { .. })
    ));
    assert_eq!(entries(&dir), ["filler", "ring"], "a failed create leaves no file");
    // open_or_create replacing a ring of another geometry fails the same way.
    let bigger = WriterOptions {
        capacity: 512 << 10,
        ..Default::default()
    };
    assert!(matches!(
        RingWriter::open_or_create(&path, &bigger),
        Err(Error::NoSpace { .. })
    ));
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);

    // Room again: creating succeeds.
    std::fs::remove_file(dir.join("filler")).unwrap();
    RingWriter::create(&path, &options()).unwrap();
    report("ok=1");
}

/// Runs the child in a private mount namespace with a tmpfs at `mnt`, trying each way of
/// getting one; `None` if none works here.
fn run_in_namespace(mnt: &Path, report_path: &Path) -> Option<std::process::ExitStatus> {
    let exe = std::env::current_exe().unwrap();
    let script =
        format!("mount -t tmpfs -o size={TMPFS_SIZE} shmring-test \"$1\" || exit {NO_MOUNT}; shift; exec \"$@\"");
    let mut refused = Vec::new();
    for prefix in [&["--mount"][..], &["--user", "--map-root-user", "--mount"][..]] {
        let mut cmd = Command::new("unshare");
        cmd.args(prefix)
            .args(["--", "sh", "-c", &script, "sh"])
            .arg(mnt)
            .arg(&exe)
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env("SHMRING_TEST_ROLE", "child")
            .env("SHMRING_TEST_DIR", mnt)
            .env("SHMRING_TEST_REPORT", report_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                refused.push(format!("unshare: {e}"));
                continue;
            }
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{TEST}: the child in the mount namespace did not finish in 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        // unshare itself failing (no privilege for the namespace) exits 1 before the
        // shell runs; the shell failing to mount exits NO_MOUNT.
        let namespace_refused =
            status.code() == Some(NO_MOUNT) || (status.code() == Some(1) && stderr.starts_with("unshare:"));
        if namespace_refused {
            refused.push(format!("unshare {}: {}", prefix.join(" "), stderr.trim()));
            continue;
        }
        eprint!("{stderr}");
        return Some(status);
    }
    eprintln!(
        "SKIPPED {TEST}: no private mount namespace with a tmpfs can be made here ({})",
        refused.join("; ")
    );
    None
}

#[test]
fn a_full_tmpfs_is_no_space_at_create_and_the_old_ring_survives() {
    if role().as_deref() == Some("child") {
        return child_role();
    }
    let dir = ring_dir("nospace");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let report_path = dir.join("child.report");
    let Some(status) = run_in_namespace(&mnt, &report_path) else {
        return;
    };
    assert_eq!(status.signal(), None, "the child was killed: {status:?}");
    assert!(status.success(), "the child failed (its panic is above): {status:?}");
    let text = std::fs::read_to_string(&report_path).expect("the child reports");
    assert_eq!(parse_report(&text)["ok"], 1);
}
