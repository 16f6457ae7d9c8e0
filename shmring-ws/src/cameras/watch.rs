//! Rings that appear and go: the registry's rings (named ones, and every ring file in
//! the watched directory) are looked at every [`SCAN_EVERY`], so a new ring is served
//! well within a second and a removed one is reported (log, `/health`, `/cameras`) and
//! its clients closed, never ending the server. A ring whose writer died (the file left
//! in place) is said in the log once, and again when a writer writes it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{is_valid_camera_name, name_of, Cameras};

/// How often the rings are looked for.
pub(crate) const SCAN_EVERY: Duration = Duration::from_millis(250);

/// The ring files in `dir`, by camera name. Hidden files are left out; other names that
/// cannot be camera names are skipped, each said once in the log (`skipped` remembers
/// them).
fn rings_in(dir: &Path, skipped: &mut BTreeSet<String>) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        // Hidden files are not cameras: among them the file a writer formats a new ring
        // in (`.NAME.PID.NS.tmp`) before it renames it into place, which would otherwise
        // show as a camera for a scan and vanish at the next.
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        match name_of(&path) {
            Some(name) => found.push((name, path)),
            None => {
                let shown = entry.file_name().to_string_lossy().into_owned();
                if skipped.insert(shown.clone()) {
                    tracing::warn!(
                        "skipping {}: a camera name is 1 to {} characters of A-Z a-z 0-9 . _ -",
                        dir.join(&shown).display(),
                        super::MAX_CAMERA_NAME_LEN
                    );
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

impl Cameras {
    /// Starts the named rings' cameras (each waits for its ring), skipping names that
    /// cannot be camera names; then looks at the directory once, so the default camera
    /// is known before the first client.
    pub(crate) fn start_named(&self, skipped: &mut BTreeSet<String>) {
        for path in self.options.shm_paths.clone() {
            match name_of(&path) {
                Some(name) if self.get(&name).is_some() => {
                    tracing::warn!("skipping {}: camera {name} is already served", path.display());
                }
                Some(name) => self.start(&name, &path),
                None => tracing::warn!(
                    "skipping ring {}: a camera name is 1 to {} characters of A-Z a-z 0-9 . _ -",
                    path.display(),
                    super::MAX_CAMERA_NAME_LEN
                ),
            }
        }
        if let Some(name) = self.default_name().filter(|n| !is_valid_camera_name(n)) {
            tracing::warn!("--default-camera {name:?} cannot name a camera");
        }
        self.scan(skipped);
        self.warn_unknown_drive();
    }

    /// One look at the rings: new ones start, removed ones go, returned ones restart;
    /// a writer that died or came back is said in the log.
    pub(crate) fn scan(&self, skipped: &mut BTreeSet<String>) {
        let mut present: Vec<(String, PathBuf)> = Vec::new();
        if let Some(dir) = self.options.watch_dir.clone() {
            match rings_in(&dir, skipped) {
                Ok(rings) => present = rings,
                Err(e) => {
                    if skipped.insert(format!("dir:{e}")) {
                        tracing::warn!("cannot list {}: {e}; waiting for it", dir.display());
                    }
                }
            }
        }
        for camera in self.all() {
            camera.log_writer_change();
            let Some(path) = camera.path.clone() else { continue };
            if present.iter().any(|(n, _)| *n == camera.name) {
                continue;
            }
            if path.exists() {
                present.push((camera.name.clone(), path));
            } else if camera.seen.load(Ordering::Relaxed) {
                self.remove(&camera.name);
            }
        }
        for (name, path) in present {
            self.start(&name, &path);
            if let Some(camera) = self.get(&name) {
                camera.seen.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Looks at the rings every [`SCAN_EVERY`] until the task is aborted.
    pub(crate) async fn watch(self: Arc<Self>, mut skipped: BTreeSet<String>) {
        let mut tick = tokio::time::interval(SCAN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let cameras = self.clone();
            let mut names = std::mem::take(&mut skipped);
            // Directory listings are blocking system calls.
            match tokio::task::spawn_blocking(move || {
                cameras.scan(&mut names);
                names
            })
            .await
            {
                Ok(names) => skipped = names,
                Err(e) => tracing::error!("the ring watcher failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_being_created_is_not_a_camera() {
        let dir = std::env::temp_dir().join(format!("shmring-watch-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        // What `RingWriter::create` leaves for a moment: the new ring under a hidden
        // temporary name, next to a ring already in place.
        std::fs::write(dir.join("front"), b"ring").expect("front");
        std::fs::write(dir.join(".side.4242.1796561474531373641.tmp"), b"ring").expect("tmp");
        std::fs::write(dir.join(".hidden"), b"x").expect("hidden");
        let mut skipped = BTreeSet::new();
        let found = rings_in(&dir, &mut skipped);
        std::fs::remove_dir_all(&dir).expect("clean up");
        let names: Vec<String> = found.expect("read the dir").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["front"]);
        assert!(skipped.is_empty(), "hidden files are not reported: {skipped:?}");
    }
}
