//! `shmring stat DIR`: one line per ring in a directory (a server's `--shm-dir`, where
//! every ring file is a camera named by its file name).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shmring_core::{ReaderOptions, RingKind, RingReader, RingStatus};

use crate::{open_reader, LayoutArg};

/// One entry of the directory: a ring, or why it is not one.
struct Entry {
    name: String,
    path: PathBuf,
    ring: Result<RingReader, String>,
}

/// What the listing shows of a ring.
struct Row {
    layout: &'static str,
    alive: Option<bool>,
    pid: Option<u32>,
    frames: u64,
    /// Frames per second while watched (rings with a live writer, or that got frames).
    fps: Option<f64>,
}

/// The visible entries of `dir`, by name. Hidden files (names starting with `.`, such
/// as a writer's temporary file while it builds a ring) are left out.
fn entries(dir: &Path, layout: LayoutArg) -> Result<Vec<Entry>, String> {
    let listing = std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut names: Vec<String> = listing
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let ring = open_reader(&path, layout, ReaderOptions::default());
            Entry { name, path, ring }
        })
        .collect())
}

fn row(status: &RingStatus, fps: Option<f64>) -> Row {
    Row {
        layout: match status.kind {
            RingKind::V1(_) => "v1",
            RingKind::Legacy { .. } => "legacy",
        },
        alive: status.writer.alive,
        pid: status.writer.pid,
        frames: status.sequence_number,
        fps,
    }
}

/// A row per ring: counters now, and the frame rate of live writers measured over
/// `sample` (skipped when zero or when no writer is alive).
fn rows(entries: &[Entry], sample: Duration) -> Vec<Option<Row>> {
    let first: Vec<Option<RingStatus>> = entries
        .iter()
        .map(|e| e.ring.as_ref().ok().map(|r| r.status()))
        .collect();
    let started = Instant::now();
    // Legacy writers (SDR_OS's Python writer) hold no lock: watch them too.
    let watched = |s: &RingStatus| s.writer.alive == Some(true) || matches!(s.kind, RingKind::Legacy { .. });
    if !first.iter().flatten().any(watched) || sample.is_zero() {
        return first.iter().map(|s| s.as_ref().map(|s| row(s, None))).collect();
    }
    std::thread::sleep(sample);
    let elapsed = started.elapsed().as_secs_f64();
    entries
        .iter()
        .zip(&first)
        .map(|(entry, before)| {
            let (reader, before) = (entry.ring.as_ref().ok()?, before.as_ref()?);
            let now = reader.status();
            let advanced = now.sequence_number.saturating_sub(before.sequence_number);
            let fps = (now.writer.alive == Some(true) || advanced > 0).then(|| advanced as f64 / elapsed);
            Some(row(&now, fps))
        })
        .collect()
}

fn writer_text(row: &Row) -> String {
    match (row.alive, row.pid) {
        (Some(true), Some(pid)) => format!("alive (pid {pid})"),
        (Some(true), None) => "alive".into(),
        // Frames arrived while watched, though nobody holds the lock: a legacy writer.
        (Some(false), _) if row.fps.is_some() => "writing (no lock)".into(),
        (Some(false), _) => "dead".into(),
        (None, _) => "unknown".into(),
    }
}

/// The error that opening the entry as a ring gave.
fn why_not_a_ring(entry: &Entry) -> &str {
    entry.ring.as_ref().err().map_or("", String::as_str)
}

fn json_line(entry: &Entry, row: Option<&Row>) -> Value {
    match row {
        Some(r) => json!({
            "name": entry.name,
            "path": entry.path.display().to_string(),
            "ring": true,
            "layout": r.layout,
            "writer": { "alive": r.alive, "pid": r.pid },
            "frames": r.frames,
            "fps": r.fps,
        }),
        None => json!({
            "name": entry.name,
            "path": entry.path.display().to_string(),
            "ring": false,
            "error": why_not_a_ring(entry),
        }),
    }
}

/// Lists the rings in `dir`, one line each (JSON lines with `json`).
pub(crate) fn run(dir: &Path, layout: LayoutArg, json: bool, sample: Duration) -> Result<(), String> {
    let entries = entries(dir, layout)?;
    if entries.is_empty() {
        eprintln!("shmring stat: {} holds no files (no rings yet)", dir.display());
        return Ok(());
    }
    let rows = rows(&entries, sample);
    if json {
        for (entry, row) in entries.iter().zip(&rows) {
            println!("{}", json_line(entry, row.as_ref()));
        }
        return Ok(());
    }
    let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0).max(4);
    println!(
        "{:width$}  {:6}  {:18}  {:>10}  {:>6}",
        "NAME", "LAYOUT", "WRITER", "FRAMES", "FPS"
    );
    for (entry, row) in entries.iter().zip(&rows) {
        match row {
            Some(r) => println!(
                "{:width$}  {:6}  {:18}  {:>10}  {:>6}",
                entry.name,
                r.layout,
                writer_text(r),
                r.frames,
                r.fps.map(|f| format!("{f:.1}")).unwrap_or_else(|| "-".into()),
            ),
            None => println!("{:width$}  not a ring: {}", entry.name, why_not_a_ring(entry)),
        }
    }
    Ok(())
}
