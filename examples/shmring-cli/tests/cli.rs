//! The `shmring` CLI end to end, as a user runs it: testsrc into a ring, then stat, tail
//! and dump on it (v1 and legacy), ffprobe on the dump, errors on bad files, --help.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn shmring(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shmring")).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = shmring(args);
    assert!(
        out.status.success(),
        "shmring {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("shmring-cli-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn testsrc_then_stat_tail_dump_on_a_v1_ring() {
    let dir = Dir::new("v1");
    let ring = dir.file("ring");
    ok(&[
        "testsrc",
        &ring,
        "--size",
        "320x240",
        "--count",
        "45",
        "--gop",
        "15",
        "--no-pace",
        "--encoder",
        "libx264",
    ]);

    let stat: Value = serde_json::from_str(&ok(&["stat", &ring, "--json"])).unwrap();
    assert_eq!(stat["layout"], "v1");
    assert_eq!(stat["sequence_number"], 45);
    assert_eq!(stat["writer"]["alive"], false, "testsrc has exited");
    assert_eq!(stat["writer"]["state"], "closed");
    assert_eq!(stat["latest_keyframe"]["frame_id"], 30, "keyframes at 0, 15, 30");
    assert_eq!(stat["latest_keyframe"]["frame_seq"], 31);
    let text = ok(&["stat", &ring]);
    assert!(
        text.contains("sequence number  45") && text.contains("frame_id 30"),
        "{text}"
    );

    // From the latest keyframe: frames 30..44.
    let lines = json_lines(&ok(&[
        "tail",
        &ring,
        "--json",
        "--count",
        "100",
        "--idle-timeout",
        "0.5",
    ]));
    assert_eq!(lines.len(), 15);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["frame_id"], 30 + i as u64);
        assert_eq!(l["frame_seq"], 31 + i as u64);
        assert_eq!(l["codec"], "h264");
        assert_eq!(l["crc"], "ok");
        assert_eq!(l["keyframe"], i == 0);
    }
    let text = ok(&[
        "tail",
        &ring,
        "--count",
        "2",
        "--from",
        "latest",
        "--idle-timeout",
        "0.5",
    ]);
    assert_eq!(
        text.lines().count(),
        1,
        "--from latest: only the newest frame is there: {text}"
    );
    assert!(text.contains("seq       45") && text.contains("crc ok"), "{text}");

    let dump = dir.file("out.h264");
    ok(&["dump", &ring, "--out", &dump, "--idle-timeout", "0.5"]);
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "json",
            &dump,
        ])
        .output()
        .expect("ffprobe is installed (scripts/setup)");
    let p: Value = serde_json::from_slice(&probe.stdout).unwrap();
    let s = &p["streams"][0];
    assert_eq!(
        (s["codec_name"].as_str(), s["width"].as_u64(), s["height"].as_u64()),
        (Some("h264"), Some(320), Some(240))
    );
    assert_eq!(s["nb_read_frames"], "15");
}

#[test]
fn legacy_rings_work_too() {
    let dir = Dir::new("legacy");
    let ring = dir.file("ring");
    ok(&[
        "testsrc",
        &ring,
        "--layout",
        "legacy",
        "--size",
        "160x120",
        "--count",
        "3",
        "--no-pace",
        "--encoder",
        "libx264",
    ]);
    let stat: Value = serde_json::from_str(&ok(&["stat", &ring, "--json"])).unwrap();
    assert_eq!(stat["layout"], "legacy");
    assert_eq!(stat["sequence_number"], 3);
    let lines = json_lines(&ok(&["tail", &ring, "--json", "--from", "latest", "--count", "1"]));
    assert_eq!(lines[0]["frame_id"], 2);
    assert_eq!(lines[0]["crc"], "ok");
    let dump = dir.file("out.h264");
    // The single slot holds frame 2, not a keyframe: dump waits for a keyframe, and
    // says so when none comes.
    let out = shmring(&[
        "dump",
        &ring,
        "--out",
        &dump,
        "--layout",
        "legacy",
        "--count",
        "1",
        "--idle-timeout",
        "0.5",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no frames arrived"));
    assert_eq!(std::fs::metadata(&dump).map(|m| m.len()).unwrap_or(0), 0);
    let out = shmring(&["stat", &ring, "--layout", "v1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("legacy"));
}

#[test]
fn tail_follows_a_live_writer_in_another_process() {
    let dir = Dir::new("live");
    let ring = dir.file("ring");
    let mut writer = Command::new(env!("CARGO_BIN_EXE_shmring"))
        .args([
            "testsrc",
            &ring,
            "--size",
            "160x120",
            "--fps",
            "50",
            "--count",
            "150",
            "--encoder",
            "libx264",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !Path::new(&ring).exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let lines = json_lines(&ok(&[
        "tail",
        &ring,
        "--json",
        "--from",
        "next",
        "--count",
        "20",
        "--idle-timeout",
        "5",
    ]));
    writer.kill().ok();
    writer.wait().unwrap();
    assert_eq!(lines.len(), 20);
    for pair in lines.windows(2) {
        assert_eq!(
            pair[1]["frame_seq"].as_u64().unwrap(),
            pair[0]["frame_seq"].as_u64().unwrap() + 1,
            "consecutive"
        );
        assert_eq!(pair[1]["lost_before"], 0);
    }
}

#[test]
fn missing_and_foreign_files_are_clear_errors() {
    let dir = Dir::new("bad");
    let missing = dir.file("missing");
    let short = dir.file("short");
    std::fs::write(&short, b"not a ring").unwrap();
    let folder = dir.0.to_str().unwrap().to_string();
    let out_file = dir.file("x.h264");
    for (path, says) in [
        (&missing, "no ring at"),
        (&short, "shorter than"),
        (&folder, "directory"),
    ] {
        for args in [
            vec!["stat", path],
            vec!["tail", path, "--count", "1", "--idle-timeout", "0.2"],
            vec!["dump", path, "--out", &out_file, "--idle-timeout", "0.2"],
        ] {
            let out = shmring(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.starts_with("shmring: ") && err.contains(says), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    let out = shmring(&["testsrc", &dir.file("r"), "--encoder", "h264_bogus", "--count", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("h264_bogus"));
    let out = shmring(&["testsrc", &dir.file("r"), "--size", "321x240", "--count", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("even"));
}

#[test]
fn every_command_has_help() {
    let top = ok(&["--help"]);
    for cmd in ["stat", "tail", "dump", "testsrc", "bench"] {
        assert!(top.contains(cmd), "{cmd} listed in --help");
        assert!(ok(&[cmd, "--help"]).contains("Usage: shmring"), "{cmd}");
        // Short help puts each option's description on its line.
        let help = ok(&[cmd, "-h"]);
        // Every option line carries a description: no bare `--flag <VALUE>` lines.
        for line in help
            .lines()
            .filter(|l| l.trim_start().starts_with("--") || l.trim_start().starts_with('-'))
        {
            let described = line.trim().split("  ").filter(|s| !s.is_empty()).count() >= 2;
            assert!(described, "{cmd}: undocumented option line {line:?}");
        }
    }
}

#[test]
fn bench_runs_across_processes() {
    let dir = Dir::new("bench");
    let out = ok(&[
        "bench",
        "--sizes",
        "4096",
        "--frames",
        "500",
        "--readers",
        "2",
        "--rate",
        "2000",
        "--json",
        "--dir",
        dir.0.to_str().unwrap(),
    ]);
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 4, "2 modes x 2 readers");
    for r in &rows {
        assert_eq!(r["result"]["ended"], true, "{r}");
        let delivered = r["result"]["delivered"].as_u64().unwrap();
        let lost = r["result"]["lost"].as_u64().unwrap();
        assert_eq!(delivered + lost, 500, "delivered + lost == written: {r}");
        assert!(r["result"]["p50_us"].as_u64().is_some());
    }
}
