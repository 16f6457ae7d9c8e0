//! The SIGBUS truncation guard shares SIGBUS with whatever the process had installed
//! before: each disposition must behave as it would without shmring (an ignored SIGBUS
//! stays ignored, a previous handler runs with its own signal mask, a one-shot handler
//! runs once), ring faults must still be survived, and `SHMRING_NO_SIGBUS_GUARD=1`
//! leaves SIGBUS alone. Each case runs in its own child process, since dispositions are
//! process-wide.

mod common;

use common::*;
use shmring_core::{Error, FrameMeta, ReaderOptions, RingReader, RingWriter, WriterOptions};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Calls of the test's own SIGBUS handler.
static CALLS: AtomicUsize = AtomicUsize::new(0);
/// Calls during which SIGUSR1 was blocked.
static USR1_BLOCKED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn counting_handler(_sig: libc::c_int) {
    CALLS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: sigprocmask with a null new set only reads the current mask into `set`, a
    // valid sigset_t; both calls are async-signal-safe.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, core::ptr::null(), &mut set);
        if libc::sigismember(&set, libc::SIGUSR1) == 1 {
            USR1_BLOCKED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Installs `handler` (a function, SIG_IGN or SIG_DFL) for SIGBUS with `flags`, blocking
/// SIGUSR1 while it runs.
fn install_previous(handler: libc::sighandler_t, flags: libc::c_int) {
    // SAFETY: a zeroed sigaction is valid; the handler is a plain `extern "C" fn(c_int)`
    // (no SA_SIGINFO) or SIG_IGN / SIG_DFL.
    unsafe {
        let mut action: libc::sigaction = core::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = flags;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaddset(&mut action.sa_mask, libc::SIGUSR1);
        assert_eq!(libc::sigaction(libc::SIGBUS, &action, core::ptr::null_mut()), 0);
    }
}

/// The SIGBUS handler now installed.
fn current_handler() -> libc::sighandler_t {
    // SAFETY: reads the current action into a zeroed sigaction.
    unsafe {
        let mut action: libc::sigaction = core::mem::zeroed();
        libc::sigaction(libc::SIGBUS, core::ptr::null(), &mut action);
        action.sa_sigaction
    }
}

fn raise_sigbus() {
    // SAFETY: raise has no preconditions; what it does is what the test checks.
    unsafe { libc::raise(libc::SIGBUS) };
}

fn child_dir() -> PathBuf {
    PathBuf::from(std::env::var("SHMRING_TEST_DIR").unwrap())
}

/// Opens the ring (installing the guard), truncates its file and writes: the write
/// faults on a vanished page. 1 if it failed with `Error::Truncated` (the guard
/// recovered the fault).
fn truncated_ring_survived(dir: &Path) -> u64 {
    let path = dir.join("ring");
    let mut w = RingWriter::open(&path, &WriterOptions::default()).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    match w.write(&[7; 3000], FrameMeta::keyframe(0)) {
        Err(Error::Truncated { .. }) => 1,
        other => panic!("expected Error::Truncated, got {other:?}"),
    }
}

/// Runs `test` as a child with a fresh ring in its directory; returns the child's exit
/// status and its report (if it wrote one).
fn run_child(test: &str, extra: &[(&str, String)]) -> (ExitStatus, Option<String>) {
    let dir = ring_dir(test);
    let opts = WriterOptions {
        capacity: 64 << 10,
        ..Default::default()
    };
    drop(RingWriter::create(dir.join("ring"), &opts).unwrap());
    let report_path = dir.join("child.report");
    let mut env = vec![
        ("SHMRING_TEST_DIR", dir.display().to_string()),
        ("SHMRING_TEST_REPORT", report_path.display().to_string()),
    ];
    env.extend(extra.iter().cloned());
    let mut child = KillOnDrop(spawn_role(test, "child", &env));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{test}: the child did not exit within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, std::fs::read_to_string(report_path).ok())
}

fn assert_clean_exit(status: ExitStatus, report: &Option<String>) {
    assert_eq!(
        status.signal(),
        None,
        "the child was killed: {status:?} (report {report:?})"
    );
    assert!(status.success(), "the child failed: {status:?}");
}

/// SIGBUS ignored before the first ring: a SIGBUS sent with kill/raise stays ignored (the
/// guard used to restore the default action and re-raise it, killing the process), and
/// ring faults are still survived.
#[test]
fn an_ignored_sigbus_stays_ignored() {
    if role().is_some() {
        install_previous(libc::SIG_IGN, 0);
        let truncated = truncated_ring_survived(&child_dir());
        raise_sigbus();
        raise_sigbus();
        report(&format!("truncated={truncated} survived=1"));
        return;
    }
    let (status, report) = run_child("an_ignored_sigbus_stays_ignored", &[]);
    assert_clean_exit(status, &report);
    let r = parse_report(report.as_deref().unwrap());
    assert_eq!((r["truncated"], r["survived"]), (1, 1), "{report:?}");
}

/// SIGBUS ignored, and a real fault outside ring mappings: it cannot be ignored (the
/// access would fault forever), so it kills, as Linux does without the guard.
#[test]
fn an_ignored_sigbus_from_a_real_fault_still_kills() {
    if role().is_some() {
        install_previous(libc::SIG_IGN, 0);
        let dir = child_dir();
        let _w = RingWriter::open(dir.join("ring"), &WriterOptions::default()).unwrap();
        let other = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("other"))
            .unwrap();
        other.set_len(8192).unwrap();
        // SAFETY: maps a file this process created; the read faults on purpose after the
        // truncation (the test expects the process to die of it).
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
    let (status, report) = run_child("an_ignored_sigbus_from_a_real_fault_still_kills", &[]);
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?} {report:?}");
    assert!(report.is_none(), "{report:?}");
}

/// A previous handler runs with the signals its sa_mask names blocked (the guard used
/// to call it with its own, empty mask), and ring faults never reach it.
#[test]
fn the_previous_handler_runs_with_its_own_mask() {
    if role().is_some() {
        install_previous(counting_handler as *const () as libc::sighandler_t, 0);
        let truncated = truncated_ring_survived(&child_dir());
        raise_sigbus();
        report(&format!(
            "truncated={truncated} calls={} usr1_blocked={}",
            CALLS.load(Ordering::SeqCst),
            USR1_BLOCKED.load(Ordering::SeqCst)
        ));
        return;
    }
    let (status, report) = run_child("the_previous_handler_runs_with_its_own_mask", &[]);
    assert_clean_exit(status, &report);
    let r = parse_report(report.as_deref().unwrap());
    assert_eq!(r["truncated"], 1, "{report:?}");
    assert_eq!(
        r["calls"], 1,
        "the ring fault did not reach the previous handler: {report:?}"
    );
    assert_eq!(r["usr1_blocked"], 1, "SIGUSR1 (in its sa_mask) was blocked: {report:?}");
}

/// A one-shot previous handler (SA_RESETHAND) runs once; the next SIGBUS has the default
/// action and kills (the guard used to call the handler every time). Ring faults are
/// survived before and after.
#[test]
fn a_one_shot_previous_handler_runs_once() {
    if role().is_some() {
        install_previous(counting_handler as *const () as libc::sighandler_t, libc::SA_RESETHAND);
        let dir = child_dir();
        // The guard is installed over the one-shot handler before the first SIGBUS.
        let r = RingReader::open(dir.join("ring"), &ReaderOptions::default()).unwrap();
        raise_sigbus();
        // (Closed before the ring is truncated: a SIGBUS the process sends itself while
        // one of its rings is shorter than its mapping is taken for a ring fault.)
        drop(r);
        let truncated = truncated_ring_survived(&dir);
        report(&format!("truncated={truncated} calls={}", CALLS.load(Ordering::SeqCst)));
        // The handler was spent: this kills the process.
        raise_sigbus();
        std::fs::write(dir.join("after"), CALLS.load(Ordering::SeqCst).to_string()).unwrap();
        return;
    }
    let (status, report) = run_child("a_one_shot_previous_handler_runs_once", &[]);
    let r = parse_report(report.as_deref().expect("the child reports before the second SIGBUS"));
    assert_eq!((r["truncated"], r["calls"]), (1, 1), "{report:?}");
    assert_eq!(
        status.signal(),
        Some(libc::SIGBUS),
        "the second SIGBUS gets the default action: {status:?}"
    );
}

/// `SHMRING_NO_SIGBUS_GUARD=1`: opening rings leaves SIGBUS as it was (here Rust's
/// runtime's handler), and a truncated ring kills the process as it did before the guard
/// existed.
#[test]
fn the_guard_can_be_turned_off() {
    if role().is_some() {
        let dir = child_dir();
        let before = current_handler();
        let w = RingWriter::open(dir.join("ring"), &WriterOptions::default()).unwrap();
        drop(w);
        report(&format!(
            "unchanged={} installed={}",
            u64::from(current_handler() == before),
            u64::from(shmring_core::sigbus_guard_installed())
        ));
        truncated_ring_survived(&dir);
        std::fs::write(dir.join("after"), "survived").unwrap();
        return;
    }
    let (status, report) = run_child(
        "the_guard_can_be_turned_off",
        &[(shmring_core::NO_SIGBUS_GUARD_VAR, "1".into())],
    );
    let r = parse_report(report.as_deref().expect("the child reports"));
    assert_eq!((r["unchanged"], r["installed"]), (1, 0), "{report:?}");
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
}

/// Without the variable the guard is installed by the first ring (the control case for
/// the test above).
#[test]
fn the_guard_is_installed_by_the_first_ring() {
    if role().is_some() {
        let before = current_handler();
        let _w = RingWriter::open(child_dir().join("ring"), &WriterOptions::default()).unwrap();
        report(&format!(
            "changed={} installed={}",
            u64::from(current_handler() != before),
            u64::from(shmring_core::sigbus_guard_installed())
        ));
        return;
    }
    let (status, report) = run_child("the_guard_is_installed_by_the_first_ring", &[]);
    assert_clean_exit(status, &report);
    let r = parse_report(report.as_deref().unwrap());
    assert_eq!((r["changed"], r["installed"]), (1, 1), "{report:?}");
}
