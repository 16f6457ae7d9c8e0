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
    // `ring`, the Python package's former name of v1, still means v1.
    let out = shmring(&["stat", &ring, "--layout", "ring"]);
    assert_eq!(out.status.code(), Some(1), "--layout ring is v1, not a bad value");
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
        // `stat` lists a directory (see stat_lists_the_rings_of_a_directory).
        let stat = (path != &folder).then(|| vec!["stat", path.as_str()]);
        for args in stat.into_iter().chain([
            vec!["tail", path, "--count", "1", "--idle-timeout", "0.2"],
            vec!["dump", path, "--out", &out_file, "--idle-timeout", "0.2"],
        ]) {
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

/// Encodes `frames` test-pattern frames into a new ring at `path` as
/// `shmring.VideoWriter` does: the frame_id is the frame's time in ns, here one frame
/// every `period_ns` of simulated time from 5 s on.
fn write_timed_ring(ring: &mut shmring_core::RingWriter, frames: u64, period_ns: u64) {
    use shmring_nvenc::{testpattern::TestPattern, EncoderChoice, EncoderConfig};
    let config = EncoderConfig {
        encoder: EncoderChoice::Named("libx264".into()),
        gop: 100,
        ..EncoderConfig::new(160, 120)
    };
    let mut encoder = shmring_nvenc::Encoder::new(config.clone()).unwrap();
    let pattern = TestPattern::new(config.width, config.height, config.input);
    for i in 0..frames {
        let frame = pattern.render(i);
        encoder
            .encode(&frame, pattern.stride(), 5_000_000_000 + i * period_ns, ring)
            .unwrap();
    }
    encoder.flush(ring).unwrap();
}

#[test]
fn dump_times_a_container_by_frame_id() {
    let dir = Dir::new("timed");
    let ring = dir.file("ring");
    // 15 frames per second of simulated time, whatever the encoder's nominal rate (30).
    let mut writer = shmring_core::RingWriter::create(&ring, &Default::default()).unwrap();
    write_timed_ring(&mut writer, 30, 66_666_667);
    drop(writer);
    let (mkv, times) = (dir.file("out.mkv"), dir.file("times.txt"));
    ok(&[
        "dump",
        &ring,
        "-o",
        &mkv,
        "--timestamps",
        &times,
        "--idle-timeout",
        "0.3",
    ]);
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=r_frame_rate,nb_read_frames",
            "-of",
            "json",
            &mkv,
        ])
        .output()
        .expect("ffprobe is installed (scripts/setup)");
    let p: Value = serde_json::from_slice(&probe.stdout).unwrap();
    let s = &p["streams"][0];
    assert_eq!(s["nb_read_frames"], "30", "{p}");
    assert_eq!(s["r_frame_rate"], "15/1", "plays at the simulation's rate: {p}");
    let times = std::fs::read_to_string(&times).unwrap();
    let lines: Vec<&str> = times.lines().collect();
    assert_eq!(lines.len(), 31);
    assert_eq!(lines[..3], ["# timestamp format v2", "0.000000", "66.666667"]);
    assert_eq!(lines[30], "1933.333343");
}

#[test]
fn dump_and_tail_wait_for_a_live_writer_that_has_not_started() {
    use std::io::{BufRead, BufReader};
    let dir = Dir::new("patient");
    let ring = dir.file("ring");
    let out = dir.file("out.h264");

    // No writer: an empty ring is given up on after the idle timeout.
    drop(shmring_core::RingWriter::create(&ring, &Default::default()).unwrap());
    let gone = shmring(&["dump", &ring, "-o", &out, "--idle-timeout", "0.2"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no frames arrived within 0.2 s"));

    // A live writer that has not written its first frame (a simulator building its
    // scene) is waited for far beyond the idle timeout.
    std::fs::remove_file(&ring).unwrap();
    let mut writer = shmring_core::RingWriter::create(&ring, &Default::default()).unwrap();
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shmring"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut dump = spawn(&["dump", &ring, "-o", &out, "--idle-timeout", "0.2"]);
    let mut tail = spawn(&["tail", &ring, "--json", "--idle-timeout", "0.2"]);
    for (child, name) in [(&mut dump, "dump"), (&mut tail, "tail")] {
        let mut line = String::new();
        BufReader::new(child.stderr.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains(&format!("shmring {name}: the writer (pid {})", std::process::id())),
            "{line}"
        );
        assert!(line.contains("has not written a frame yet"), "{line}");
    }
    std::thread::sleep(std::time::Duration::from_secs(1)); // five idle timeouts
    assert!(dump.try_wait().unwrap().is_none(), "dump gave up on a starting writer");
    assert!(tail.try_wait().unwrap().is_none(), "tail gave up on a starting writer");
    write_timed_ring(&mut writer, 3, 33_333_333);
    drop(writer);
    let dumped = dump.wait_with_output().unwrap();
    assert!(dumped.status.success(), "{}", String::from_utf8_lossy(&dumped.stderr));
    assert!(String::from_utf8_lossy(&dumped.stderr).contains("3 frames"));
    let tailed = tail.wait_with_output().unwrap();
    assert!(tailed.status.success());
    assert_eq!(json_lines(&String::from_utf8_lossy(&tailed.stdout)).len(), 3);
}

/// A simulator re-run on an existing ring (Genesis: the writer reopens the ring, then
/// builds its scene for tens of seconds): its old frames do not make `dump` and `tail`
/// give up on the new writer before its first frame. They used to exit one idle timeout
/// after the old frames.
#[test]
fn dump_and_tail_wait_for_a_writer_that_reopened_a_ring_with_old_frames() {
    use std::io::{BufRead, BufReader};
    let dir = Dir::new("reopened");
    let ring = dir.file("ring");
    let out = dir.file("out.h264");
    let mut first = shmring_core::RingWriter::create(&ring, &Default::default()).unwrap();
    write_timed_ring(&mut first, 5, 33_333_333);
    drop(first);
    // The re-run: the ring is continued (a new writer epoch), no frame yet.
    let mut second = shmring_core::RingWriter::open(&ring, &Default::default()).unwrap();
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shmring"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut dump = spawn(&["dump", &ring, "-o", &out, "--idle-timeout", "0.2"]);
    let mut tail = spawn(&["tail", &ring, "--json", "--idle-timeout", "0.2"]);
    for (child, name) in [(&mut dump, "dump"), (&mut tail, "tail")] {
        // Waited for: the command read the old frames, its idle timeout passed, and it
        // says it waits for the writer instead of exiting (EOF here if it exited).
        let mut line = String::new();
        BufReader::new(child.stderr.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains(&format!("shmring {name}: the writer (pid {})", std::process::id()))
                && line.contains("has not written a frame yet"),
            "{name} did not wait for the reopened ring's writer: {line:?}"
        );
    }
    write_timed_ring(&mut second, 3, 33_333_333);
    drop(second);
    let dumped = dump.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&dumped.stderr);
    assert!(dumped.status.success(), "{err}");
    assert!(err.contains("8 frames"), "the old 5 and the new writer's 3: {err}");
    let tailed = tail.wait_with_output().unwrap();
    assert!(tailed.status.success());
    assert_eq!(json_lines(&String::from_utf8_lossy(&tailed.stdout)).len(), 8);
}

/// Decodes the first frame of a raw H.264 file to RGB24 bytes with ffmpeg.
fn first_frame_rgb(h264: &str) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-i",
            h264,
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
        .expect("ffmpeg is installed (scripts/setup)");
    assert!(
        out.status.success(),
        "ffmpeg on {h264}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn testsrc_writes_several_cameras_each_its_own_ring_and_picture() {
    let dir = Dir::new("cameras");
    let rings = dir.0.join("rings");
    let out = shmring(&[
        "testsrc",
        "--cameras",
        "front,wrist,depth",
        "--dir",
        rings.to_str().unwrap(),
        "--size",
        "320x240,160x120,320x240",
        "--count",
        "30",
        "--gop",
        "15",
        "--no-pace",
        "--encoder",
        "libx264",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for name in ["front", "wrist", "depth"] {
        assert!(
            err.contains(&format!("testsrc {name}: 30 frames")),
            "{name} says what it wrote: {err}"
        );
    }
    let mut pictures = Vec::new();
    for (name, size) in [("front", (320, 240)), ("wrist", (160, 120)), ("depth", (320, 240))] {
        let ring = rings.join(name);
        let stat: Value = serde_json::from_str(&ok(&["stat", ring.to_str().unwrap(), "--json"])).unwrap();
        assert_eq!(stat["sequence_number"], 30, "{name}: {stat}");
        assert_eq!(
            stat["latest_keyframe"]["frame_id"], 15,
            "{name}: its own frame ids 0..30"
        );
        let dump = dir.file(&format!("{name}.h264"));
        ok(&["dump", ring.to_str().unwrap(), "--out", &dump, "--idle-timeout", "0.3"]);
        let picture = first_frame_rgb(&dump);
        assert_eq!(picture.len(), size.0 * size.1 * 3, "{name} is {size:?}");
        pictures.push(picture);
    }
    // Same size, same frame (15), different cameras: the label and colours tell them apart.
    let differing = pictures[0]
        .iter()
        .zip(&pictures[2])
        .filter(|(a, b)| a.abs_diff(**b) > 40)
        .count();
    assert!(
        differing > pictures[0].len() / 4,
        "front and depth look alike: {differing} of {} bytes differ",
        pictures[0].len()
    );
}

#[test]
fn testsrc_cameras_refuses_bad_command_lines_before_writing() {
    let dir = Dir::new("badcams");
    let rings = dir.file("rings");
    for (args, says) in [
        (
            vec!["--cameras", "front,../x", "--dir", &rings],
            "\"../x\" is not usable",
        ),
        (vec!["--cameras", "front,front", "--dir", &rings], "named twice"),
        (
            vec!["--cameras", "a,b,c", "--dir", &rings, "--size", "320x240,160x120"],
            "2 sizes for 3 cameras",
        ),
        (vec![&rings, "--size", "320x240,160x120"], "one ring takes one --size"),
    ] {
        let out = shmring(&[&["testsrc", "--count", "1", "--encoder", "libx264"], &args[..]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("shmring: ") && err.contains(says), "{args:?}: {err}");
    }
    assert!(!Path::new(&rings).exists(), "nothing written for a bad command line");
    // Flags that need each other: clap's usage error.
    for args in [
        vec!["--cameras", "a"],
        vec!["--dir", &rings],
        vec![&rings, "--cameras", "a", "--dir", &rings],
    ] {
        let out = shmring(&[&["testsrc"], &args[..]].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("Usage:"), "{args:?}");
    }
    // A camera whose ring cannot be made stops the command before any camera streams.
    std::fs::create_dir_all(Path::new(&rings).join("wrist")).unwrap();
    let out = shmring(&[
        "testsrc",
        "--cameras",
        "front,wrist",
        "--dir",
        &rings,
        "--count",
        "1",
        "--encoder",
        "libx264",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("shmring: camera wrist: "), "{err}");
    assert!(!err.contains("frames in"), "no camera streamed: {err}");
}

#[test]
fn stat_lists_the_rings_of_a_directory() {
    let dir = Dir::new("statdir");
    let rings = dir.0.join("rings");
    let rings_arg = rings.to_str().unwrap();
    ok(&[
        "testsrc",
        "--cameras",
        "front,wrist",
        "--dir",
        rings_arg,
        "--size",
        "160x120",
        "--count",
        "12",
        "--no-pace",
        "--encoder",
        "libx264",
    ]);
    ok(&[
        "testsrc",
        &dir.file("rings/old"),
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
    std::fs::write(rings.join("notes.txt"), b"not a ring").unwrap();
    std::fs::write(rings.join(".hidden"), b"a writer's temporary file").unwrap();

    let text = ok(&["stat", rings_arg]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "a header and one line per visible file: {text}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("FPS"), "{text}");
    let line = |name: &str| {
        *lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name}: {text}"))
    };
    for name in ["front", "wrist"] {
        let words: Vec<&str> = line(name).split_whitespace().collect();
        assert_eq!(words, [name, "v1", "dead", "12", "-"], "{text}");
    }
    assert_eq!(
        line("old").split_whitespace().collect::<Vec<_>>(),
        ["old", "legacy", "dead", "3", "-"]
    );
    assert!(
        line("notes.txt").contains("not a ring: ") && line("notes.txt").contains("shorter than"),
        "{text}"
    );

    // Live writers: alive, with their pid and a measured rate.
    let mut writer = Command::new(env!("CARGO_BIN_EXE_shmring"))
        .args([
            "testsrc",
            "--cameras",
            "front,wrist",
            "--dir",
            rings_arg,
            "--size",
            "160x120",
            "--fps",
            "30",
            "--encoder",
            "libx264",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Each new ring starts at 0 frames: wait until both have frames of the new writer.
    let started = |ring: &str| {
        let stat: Value = serde_json::from_str(&ok(&["stat", &dir.file(&format!("rings/{ring}")), "--json"])).unwrap();
        stat["writer"]["pid"] == writer.id() && stat["sequence_number"].as_u64().unwrap() > 0
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !(started("front") && started("wrist")) {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 60 s for the live writer's first frames"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let rows = json_lines(&ok(&["stat", rings_arg, "--json", "--sample", "0.3"]));
    writer.kill().ok();
    writer.wait().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["front", "notes.txt", "old", "wrist"]);
    for r in [&rows[0], &rows[3]] {
        assert_eq!(r["ring"], true, "{r}");
        assert_eq!(r["writer"]["alive"], true, "{r}");
        assert_eq!(r["writer"]["pid"], writer.id(), "{r}");
        assert!(
            r["fps"].as_f64().is_some_and(|f| f >= 0.0),
            "a live writer's rate is measured: {r}"
        );
    }
    assert_eq!(rows[2]["fps"], Value::Null, "no rate for a dead writer: {}", rows[2]);
    assert_eq!(rows[1]["ring"], false);
    assert!(
        rows[1]["error"].as_str().unwrap().contains("shorter than"),
        "{}",
        rows[1]
    );

    let empty = dir.0.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = shmring(&["stat", empty.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no files"));
}

/// Writes legacy single-slot frames into `path` as SDR_OS's Python writer does: no
/// writer lock, the frame at offset 16, `sequence_number` written last. One frame every
/// 10 ms until `stop`.
fn legacy_writer_without_lock(path: PathBuf, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(4096).unwrap();
    let payload = [0u8, 0, 0, 1, 0x65, 0x88, 0x84, 0x00];
    let mut seq = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        seq += 1;
        let mut record = Vec::new();
        record.extend_from_slice(&seq.to_le_bytes()); // frame_id
        record.extend_from_slice(&seq.to_le_bytes()); // frame_seq
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&1u16.to_le_bytes()); // KEYFRAME
        record.extend_from_slice(&1u16.to_le_bytes()); // H.264
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&0u32.to_le_bytes());
        record.extend_from_slice(&payload);
        file.write_all_at(&record, 16).unwrap();
        file.write_all_at(&((32 + payload.len()) as u64).to_le_bytes(), 8)
            .unwrap();
        file.write_all_at(&seq.to_le_bytes(), 0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// SDR_OS's Python writer holds no lock: `stat DIR` tells it from a dead writer by its
/// frames arriving while watched.
#[test]
fn stat_of_a_directory_sees_a_legacy_writer_without_a_lock() {
    let dir = Dir::new("statlegacy");
    let ring = dir.0.join("frames");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (ring, stop) = (ring.clone(), stop.clone());
        std::thread::spawn(move || legacy_writer_without_lock(ring, stop))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let rows = loop {
        // Frames keep coming while it is watched (one every 10 ms, watched for 1 s).
        let rows = json_lines(&ok(&["stat", dir.0.to_str().unwrap(), "--json", "--sample", "1"]));
        let watched_frames = rows[0]["fps"].as_f64().is_some_and(|f| f > 0.0);
        if watched_frames || std::time::Instant::now() > deadline {
            break rows;
        }
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let r = &rows[0];
    assert_eq!(
        (&r["name"], &r["layout"], &r["writer"]["alive"]),
        (&"frames".into(), &"legacy".into(), &false.into()),
        "{r}"
    );
    assert!(
        r["fps"].as_f64().is_some_and(|f| f > 0.0),
        "frames arrived while watched: {r}"
    );
    let text = ok(&["stat", dir.0.to_str().unwrap(), "--sample", "0"]);
    assert!(
        text.contains("dead"),
        "not watched, nothing tells it from a dead writer: {text}"
    );
}
