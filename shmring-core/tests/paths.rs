//! What is at a ring path, and who else is using it: FIFOs, directories, symbolic links,
//! other users' files, files that are not rings, and two writers racing to create or
//! replace the same ring.

mod common;

use common::{ring_dir, TestDir};
use shmring_core::layout::LayoutError;
use shmring_core::{
    race_hook, Error, FrameMeta, LayoutChoice, ReaderOptions, RingReader, RingWriter, WriterOptions, WriterState,
};
use std::cell::RefCell;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn small() -> WriterOptions {
    WriterOptions {
        capacity: 64 << 10,
        ..Default::default()
    }
}

fn temp_ring(name: &str) -> (PathBuf, TestDir) {
    let dir = ring_dir(&format!("paths-{name}"));
    (dir.join("ring"), dir)
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// A reader's open of a FIFO used to block until some process opened it for writing;
/// now it is refused at once. If it blocks, the test opens the FIFO for writing itself to
/// release the reader, and fails.
#[test]
fn a_fifo_at_the_ring_path_is_refused_not_waited_on() {
    let (path, _dir) = temp_ring("fifo");
    mkfifo(&path);
    let (tx, rx) = std::sync::mpsc::channel();
    let opener = {
        let path = path.clone();
        std::thread::spawn(move || {
            let result = RingReader::open(&path, &ReaderOptions::default()).map(|_| ());
            tx.send(result).unwrap();
        })
    };
    let result = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(result) => result,
        Err(_) => {
            // Unblock the reader's open(2) so the test process can end.
            let _w = std::fs::OpenOptions::new().write(true).open(&path);
            opener.join().unwrap();
            panic!("RingReader::open blocked on a FIFO");
        }
    };
    opener.join().unwrap();
    match result {
        Err(e @ Error::NotARingFile { what: "a FIFO", .. }) => {
            assert!(e.to_string().contains("is a FIFO, not a ring file"), "{e}")
        }
        other => panic!("expected a FIFO to be refused, got {other:?}"),
    }
    for attempt in [
        RingWriter::open(&path, &small()).map(|_| ()),
        RingWriter::create(&path, &small()).map(|_| ()),
    ] {
        assert!(
            matches!(attempt, Err(Error::NotARingFile { what: "a FIFO", .. })),
            "{attempt:?}"
        );
    }
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_fifo());
}

#[test]
fn a_directory_at_the_ring_path_gets_a_clear_message() {
    let (path, _dir) = temp_ring("directory");
    std::fs::create_dir(&path).unwrap();
    let e = RingReader::open(&path, &ReaderOptions::default()).err().unwrap();
    assert!(
        matches!(
            e,
            Error::NotARingFile {
                what: "a directory",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("is a directory, not a ring file"), "{e}");
    assert!(!e.to_string().contains("No such device"), "{e}");
    for attempt in [
        RingWriter::open(&path, &small()).map(|_| ()),
        RingWriter::create(&path, &small()).map(|_| ()),
    ] {
        assert!(
            matches!(
                attempt,
                Err(Error::NotARingFile {
                    what: "a directory",
                    ..
                })
            ),
            "{attempt:?}"
        );
    }
}

/// A 3 GiB sparse file with no v1 descriptor used to be mapped and faulted in whole as a
/// legacy ring (20 s and 3.1 GB in `shmring stat`); now its length is checked first.
#[test]
fn a_huge_file_without_a_descriptor_is_refused_before_mapping() {
    let (path, _dir) = temp_ring("huge");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(3 << 30).unwrap();
    let start = Instant::now();
    let e = RingReader::open(&path, &ReaderOptions::default()).err().unwrap();
    assert!(
        matches!(
            e,
            Error::Layout {
                source: LayoutError::TooLong { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("longer than"), "{e}");
    let e = RingWriter::open(&path, &small()).err().unwrap();
    assert!(
        matches!(
            e,
            Error::Layout {
                source: LayoutError::TooLong { .. },
                ..
            }
        ),
        "{e}"
    );
    // Nothing was faulted in: the file is still sparse.
    assert_eq!(std::fs::metadata(&path).unwrap().blocks(), 0);
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// Any file of 48 bytes or more used to be taken as a legacy ring (and written to by a
/// writer opening with `Auto`).
#[test]
fn a_file_that_is_not_a_legacy_ring_is_refused() {
    let (path, _dir) = temp_ring("not-legacy");
    let mut bytes = vec![0u8; 4096];
    bytes[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = RingReader::open(&path, &ReaderOptions::default()).err().unwrap();
    assert!(
        matches!(
            e,
            Error::Layout {
                source: LayoutError::NotARing(_),
                ..
            }
        ),
        "{e}"
    );
    assert!(RingWriter::open(&path, &small()).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file was not written");
    // A header claiming more bytes than the file holds.
    bytes[8..16].copy_from_slice(&0u64.to_le_bytes());
    bytes[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = RingReader::open_layout(&path, &ReaderOptions::default(), LayoutChoice::Legacy)
        .err()
        .unwrap();
    assert!(e.to_string().contains("larger than the file"), "{e}");
    // An empty legacy file (a writer that just truncated and sized it) is a ring.
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    assert!(RingReader::open(&path, &ReaderOptions::default()).is_ok());
}

/// A writer opening a symbolic link used to write into the link's target (a victim ring
/// went from 5 to 121 frames); `create` through a link replaced and retired the target.
#[test]
fn writers_do_not_follow_symbolic_links() {
    let (victim, dir) = temp_ring("symlink");
    let mut w = RingWriter::create(&victim, &small()).unwrap();
    for i in 0..5 {
        w.write(b"victim", FrameMeta::keyframe(i)).unwrap();
    }
    drop(w);
    let link = dir.join("link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let legacy = WriterOptions {
        layout: LayoutChoice::Legacy,
        ..small()
    };
    for attempt in [
        RingWriter::open(&link, &small()).map(|_| ()),
        RingWriter::open_or_create(&link, &small()).map(|_| ()),
        RingWriter::open_or_create(&link, &legacy).map(|_| ()),
        RingWriter::create(&link, &small()).map(|_| ()),
    ] {
        match attempt {
            Err(
                e @ Error::NotARingFile {
                    what: "a symbolic link",
                    ..
                },
            ) => assert!(e.to_string().contains("do not follow links"), "{e}"),
            other => panic!("a writer went through a symbolic link: {other:?}"),
        }
    }
    let status = RingReader::open(&victim, &ReaderOptions::default()).unwrap().status();
    assert_eq!(status.sequence_number, 5, "the victim ring is untouched");
    assert_eq!(status.writer.state, Some(WriterState::Closed));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    // Readers only read: they may follow a link.
    assert!(RingReader::open(&link, &ReaderOptions::default()).is_ok());
}

/// Files of another user are refused unless asked for. The test runs as root (which could
/// otherwise write anywhere) or as a user that can chown to itself only; it gives the
/// ring to another uid with chown, which needs root, and checks what it can otherwise.
#[test]
fn writers_refuse_another_users_file_unless_asked() {
    let (path, _dir) = temp_ring("owner");
    drop(RingWriter::create(&path, &small()).unwrap());
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let other = if uid == 0 { 4242 } else { uid };
    std::os::unix::fs::chown(&path, Some(other), None).unwrap();
    let opened = RingWriter::open(&path, &small());
    if other == uid {
        assert!(opened.is_ok(), "the owner's own ring");
        return;
    }
    match opened {
        Err(e @ Error::OtherOwner { owner: 4242, .. }) => {
            assert!(e.to_string().contains("allow_other_owner"), "{e}")
        }
        other => panic!("expected OtherOwner, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        RingWriter::create(&path, &small()),
        Err(Error::OtherOwner { .. })
    ));
    let allowed = WriterOptions {
        allow_other_owner: true,
        ..small()
    };
    RingWriter::open(&path, &allowed).unwrap();
}

/// Parent directories a writer creates get 0700 (0750 for a group-shared ring) whatever
/// the umask; they used to get 0777 & !umask.
#[test]
fn parent_directories_are_private_whatever_the_umask() {
    let (_, dir) = temp_ring("dirs");
    // SAFETY: umask only changes this process's file-creation mask; nextest runs each
    // test in its own process.
    let previous = unsafe { libc::umask(0) };
    let private = dir.join("a/b/ring");
    let shared = dir.join("c/ring");
    let created = (
        RingWriter::create(&private, &small()).map(|_| ()),
        RingWriter::create(&shared, &WriterOptions { mode: 0o660, ..small() }).map(|_| ()),
    );
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    created.0.unwrap();
    created.1.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("a")), 0o700);
    assert_eq!(mode(&dir.join("a/b")), 0o700);
    assert_eq!(mode(&dir.join("c")), 0o750);
    assert_eq!(mode(&shared), 0o660);
}

/// `remove` deletes the ring file only if the path still names it: a demo that exits
/// must not delete what someone put at its path since.
#[test]
fn remove_deletes_only_the_writers_own_file() {
    let (path, dir) = temp_ring("remove");
    let w = RingWriter::create(&path, &small()).unwrap();
    assert!(w.remove().unwrap());
    assert!(!path.exists());
    let w = RingWriter::create(&path, &small()).unwrap();
    // Someone else's file now at the path.
    let elsewhere = dir.join("mine");
    std::fs::write(&elsewhere, b"not yours").unwrap();
    std::fs::rename(&elsewhere, &path).unwrap();
    assert!(!w.remove().unwrap());
    assert_eq!(std::fs::read(&path).unwrap(), b"not yours");
}

thread_local! {
    static WINNER: RefCell<Option<RingWriter>> = const { RefCell::new(None) };
}

/// Writer A's whole `create`, run inside writer B's between B's open of the old ring and
/// its lock: A locks the old ring, renames its new ring into place, retires the old one
/// and releases its lock before B takes it.
fn a_replaces_the_ring(path: &Path) {
    let a = RingWriter::create(path, &small()).expect("writer A replaces the ring");
    WINNER.with(|w| *w.borrow_mut() = Some(a));
}

fn check_only_a_won(b: Result<RingWriter, Error>, path: &Path) {
    match b {
        Err(e @ Error::WriterExists { .. }) => assert!(e.to_string().contains("already has a writer"), "{e}"),
        Err(e) => panic!("writer B failed with {e}"),
        Ok(b) => {
            let b_ino = std::fs::metadata(b.path()).unwrap().ino();
            panic!("both writers won the race (B's ring now at the path: inode {b_ino})");
        }
    }
    let mut a = WINNER.with(|w| w.borrow_mut().take()).expect("writer A ran");
    let mut r = RingReader::open(path, &ReaderOptions::default()).unwrap();
    a.write(b"from A", FrameMeta::keyframe(1)).unwrap();
    assert_eq!(
        r.try_read().unwrap().unwrap().payload,
        b"from A",
        "A's ring is at the path"
    );
}

/// Two writers replacing the same ring: B opens the old ring, A replaces it, then B locks
/// the old file. B used to win too, renaming its ring over A's live one.
#[test]
fn create_race_has_one_winner() {
    let (path, _dir) = temp_ring("race-create");
    drop(RingWriter::create(&path, &small()).unwrap());
    race_hook::run_once_before_lock(a_replaces_the_ring);
    let b = RingWriter::create(&path, &small());
    check_only_a_won(b, &path);
}

/// The same race against `open`: B used to continue the old, unlinked ring, writing where
/// no reader looks.
#[test]
fn open_race_has_one_winner() {
    let (path, _dir) = temp_ring("race-open");
    drop(RingWriter::create(&path, &small()).unwrap());
    race_hook::run_once_before_lock(a_replaces_the_ring);
    let b = RingWriter::open(&path, &small());
    check_only_a_won(b, &path);
}

/// A ring retired without a successor is not continued by `open` (`open_or_create`
/// replaces it).
#[test]
fn open_refuses_a_retired_ring() {
    let (path, _dir) = temp_ring("retired");
    RingWriter::create(&path, &small()).unwrap().retire();
    let e = RingWriter::open(&path, &small()).err().unwrap();
    assert!(matches!(e, Error::Retired { .. }), "{e}");
    assert!(e.to_string().contains("retired"), "{e}");
    let mut w = RingWriter::open_or_create(&path, &small()).unwrap();
    assert_eq!(w.write(b"new", FrameMeta::keyframe(1)).unwrap(), 1);
}
