//! Helpers shared by the multi-process tests: a payload every process can recompute from
//! the frame_seq alone, and self-spawning child processes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A cheap 64-bit mix (splitmix64 finaliser).
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Payload length of frame `seq`, up to `max`.
pub(crate) fn size_for(seq: u64, max: usize) -> usize {
    (mix(seq) % (max as u64 + 1)) as usize
}

/// Fills `buf` with the payload of frame `seq`.
pub(crate) fn fill(seq: u64, buf: &mut [u8]) {
    let (chunks, rest) = buf.as_chunks_mut::<8>();
    for (i, c) in chunks.iter_mut().enumerate() {
        *c = (mix(seq) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes();
    }
    let last = (mix(seq) ^ (chunks.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
}

/// True if `payload` is exactly frame `seq`'s payload.
pub(crate) fn verify(seq: u64, payload: &[u8], scratch: &mut Vec<u8>) -> bool {
    scratch.resize(payload.len(), 0);
    fill(seq, scratch);
    scratch[..] == payload[..]
}

/// Runs this test binary again as a child that executes only `test_name`, with `role`
/// in SHMRING_TEST_ROLE and the extra environment given. Children talk back through
/// report files ([`report`], [`wait_for_report`]): the test harness may capture stdout.
pub(crate) fn spawn_role(test_name: &str, role: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env("SHMRING_TEST_ROLE", role)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child process")
}

/// The role this process plays, if it is a child.
pub(crate) fn role() -> Option<String> {
    std::env::var("SHMRING_TEST_ROLE").ok()
}

/// A test's scratch directory, removed with everything in it when dropped, so a test
/// leaves nothing behind even when it fails (the panic unwinds through the drop).
pub(crate) struct TestDir(PathBuf);

impl TestDir {
    /// The directory's path.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // Only the process that made it removes it: re-spawned children share the path.
        if role().is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A fresh directory for one test's ring (under /dev/shm when it exists), removed when
/// the returned guard drops.
pub(crate) fn ring_dir(name: &str) -> TestDir {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("shmring-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TestDir(dir)
}

/// Writes a child's report (`key=value ...`) atomically to the file named by
/// SHMRING_TEST_REPORT.
pub(crate) fn report(text: &str) {
    let path = PathBuf::from(std::env::var("SHMRING_TEST_REPORT").expect("SHMRING_TEST_REPORT"));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// Waits (at most `timeout`) for a child's report file and returns its text.
pub(crate) fn wait_for_report(path: &std::path::Path, timeout: std::time::Duration) -> Option<String> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Some(text);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    None
}

/// Reads `key=value` pairs separated by whitespace.
pub(crate) fn parse_report(line: &str) -> std::collections::HashMap<String, u64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a failing test
/// never leaves it running.
pub(crate) struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
