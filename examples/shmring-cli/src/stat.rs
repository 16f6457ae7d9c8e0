//! `shmring stat`: a snapshot of a ring's counters and its writer's liveness.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use shmring_core::layout::{FrameHeader, FRAME_REGION_OFFSET, HEADER_SIZE};
use shmring_core::{ReaderOptions, RingKind, WriterState};

use crate::{codec_name, open_reader, parse_seconds, LayoutArg};

/// Arguments of `shmring stat`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The ring file (for example /dev/shm/camera0), or a directory of rings (for
    /// example /dev/shm/shmring) to list one line per ring.
    path: PathBuf,
    /// Print one JSON object instead of text (a directory: one JSON line per file).
    #[arg(long)]
    json: bool,
    /// Layout to open the file(s) as.
    #[arg(long, value_enum, default_value_t)]
    layout: LayoutArg,
    /// For a directory: seconds to watch rings with a live writer to measure their
    /// frame rate (0: do not measure).
    #[arg(long, default_value = "0.5", value_parser = parse_seconds, value_name = "SECONDS")]
    sample: Duration,
}

/// Reads the header of the record at byte position `pos` of a v1 ring straight from the
/// file (a snapshot for display: the writer may be overwriting it).
fn header_at(path: &Path, capacity: usize, pos: u64) -> Option<FrameHeader> {
    let file = File::open(path).ok()?;
    let mut buf = [0u8; HEADER_SIZE];
    let offset = FRAME_REGION_OFFSET as u64 + pos % capacity as u64;
    file.read_exact_at(&mut buf, offset).ok()?;
    FrameHeader::parse(&buf)
}

fn state_name(s: WriterState) -> String {
    match s {
        WriterState::Open => "open".into(),
        WriterState::Closed => "closed".into(),
        WriterState::Retired => "retired".into(),
        WriterState::Unknown(v) => format!("unknown({v})"),
    }
}

/// The newest keyframe's header as JSON, if the ring has one that is still intact.
fn latest_keyframe(path: &Path, capacity: Option<usize>, position: Option<u64>) -> Option<Value> {
    let (cap, pos) = (capacity?, position?);
    header_at(path, cap, pos).filter(|h| h.is_keyframe()).map(|h| {
        json!({
            "position": pos,
            "frame_seq": h.frame_seq.get(),
            "frame_id": h.frame_id.get(),
            "size": h.size.get(),
            "codec": codec_name(h.codec.get()),
        })
    })
}

/// Runs the command.
pub(crate) fn run(args: Args) -> Result<(), String> {
    if args.path.is_dir() {
        return crate::stat_dir::run(&args.path, args.layout, args.json, args.sample);
    }
    let reader = open_reader(&args.path, args.layout, ReaderOptions::default())?;
    let status = reader.status();
    let file_len = std::fs::metadata(&args.path).map(|m| m.len()).unwrap_or(0);
    let (layout, capacity) = match status.kind {
        RingKind::V1(g) => ("v1", Some(g.capacity)),
        RingKind::Legacy { .. } => ("legacy", None),
    };
    let keyframe = latest_keyframe(&args.path, capacity, status.latest_keyframe);
    let w = status.writer;
    let report = json!({
        "path": args.path.display().to_string(),
        "layout": layout,
        "file_bytes": file_len,
        "capacity": capacity,
        "max_frame_size": status.kind.max_frame_size(),
        "sequence_number": status.sequence_number,
        "write_index": status.write_index,
        "latest_record": status.latest_record,
        "latest_keyframe": keyframe.clone().unwrap_or(Value::Null),
        "writer": {
            "alive": w.alive,
            "pid": w.pid,
            "heartbeat_age_ms": w.heartbeat_age.map(|d| d.as_secs_f64() * 1000.0),
            "epoch": w.epoch,
            "state": w.state.map(state_name),
        },
    });
    if args.json {
        println!("{report}");
        return Ok(());
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "n/a".into());
    println!("ring             {}", args.path.display());
    println!("layout           {layout}");
    println!("file bytes       {file_len}");
    println!("capacity         {}", opt(capacity.map(|c| c.to_string())));
    println!("max frame size   {}", status.kind.max_frame_size());
    println!("sequence number  {} (frames committed)", status.sequence_number);
    println!("write index      {}", status.write_index);
    println!("latest record    {}", opt(status.latest_record.map(|p| p.to_string())));
    match (&keyframe, status.latest_keyframe) {
        (Some(k), _) => println!(
            "latest keyframe  frame_seq {} frame_id {} ({} bytes, {}) at position {}",
            k["frame_seq"],
            k["frame_id"],
            k["size"],
            k["codec"].as_str().unwrap_or("?"),
            k["position"]
        ),
        (None, Some(pos)) => println!("latest keyframe  at position {pos} (being overwritten)"),
        (None, None) => println!("latest keyframe  none"),
    }
    let alive = match w.alive {
        Some(true) => "yes (writer lock held)",
        Some(false) => "no (no process holds the writer lock)",
        None => "unknown (lock probe failed)",
    };
    println!("writer alive     {alive}");
    println!("writer pid       {}", opt(w.pid.map(|p| p.to_string())));
    println!("writer state     {}", opt(w.state.map(state_name)));
    println!("writer epoch     {}", opt(w.epoch.map(|e| e.to_string())));
    println!(
        "heartbeat age    {}",
        opt(w.heartbeat_age.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0)))
    );
    Ok(())
}
