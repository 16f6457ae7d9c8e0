//! A test-pattern producer for `transport-server --demo`: the `ffmpeg` command line
//! encodes its `testsrc2` pattern with libx264 in real time, and a thread splits the
//! stream into access units and writes them into the ring, with frame_id set to the
//! commit time (CLOCK_MONOTONIC ns).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use shmring_core::{monotonic_ns, FrameMeta, RingWriter, WriterOptions};

use crate::annexb::Splitter;

/// The demo producer: an `ffmpeg` child process and the thread writing its output.
/// Dropping it stops both.
pub struct DemoProducer {
    child: Child,
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// Picture settings of the demo stream.
#[derive(Clone, Copy, Debug)]
pub struct DemoSettings {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Frames between keyframes.
    pub gop: u32,
}

impl Default for DemoSettings {
    fn default() -> Self {
        DemoSettings {
            width: 640,
            height: 360,
            fps: 30,
            gop: 30,
        }
    }
}

impl DemoProducer {
    /// Creates (or continues) the ring at `path` and starts encoding into it.
    pub fn start(path: &Path, settings: DemoSettings) -> std::io::Result<DemoProducer> {
        let mut writer = RingWriter::open_or_create(
            path,
            &WriterOptions {
                capacity: 16 << 20,
                ..Default::default()
            },
        )
        .map_err(std::io::Error::other)?;
        let mut child = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-re",
                "-f",
                "lavfi",
                "-i",
            ])
            .arg(format!(
                "testsrc2=size={}x{}:rate={}",
                settings.width, settings.height, settings.fps
            ))
            .args([
                "-pix_fmt",
                "yuv420p",
                "-c:v",
                "libx264",
                "-profile:v",
                "baseline",
                "-preset",
                "ultrafast",
            ])
            .args(["-tune", "zerolatency", "-x264-params", "aud=1"])
            .args([
                "-g",
                &settings.gop.to_string(),
                "-bsf:v",
                "h264_mp4toannexb",
                "-f",
                "h264",
                "-",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot run ffmpeg for the demo stream: {e}"),
                )
            })?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("ffmpeg has no stdout"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = stop.clone();
        let path: PathBuf = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("demo-producer".into())
            .spawn(move || {
                let mut splitter = Splitter::new();
                let mut buf = vec![0u8; 64 << 10];
                let mut frames = 0u64;
                while !stop_thread.load(Ordering::Relaxed) {
                    let n = match stdout.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    for au in splitter.push(&buf[..n]) {
                        let meta = if au.keyframe {
                            FrameMeta::keyframe(monotonic_ns())
                        } else {
                            FrameMeta::delta(monotonic_ns())
                        };
                        if let Err(e) = writer.write(&au.data, meta) {
                            tracing::warn!("demo producer: cannot write a frame: {e}");
                        }
                        frames += 1;
                        if frames == 1 {
                            tracing::info!(
                                "demo producer: writing a test pattern into {}",
                                path.display()
                            );
                        }
                    }
                }
                if !stop_thread.load(Ordering::Relaxed) {
                    tracing::error!("demo producer: ffmpeg stopped after {frames} frames");
                }
            })?;
        Ok(DemoProducer {
            child,
            thread: Some(thread),
            stop,
        })
    }
}

impl Drop for DemoProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
