//! A test-pattern producer for `transport-server --demo`, in the server's process:
//! shmring-nvenc's moving test pattern, encoded with libx264 (no GPU needed), written
//! into a ring with frame_id set to the commit time (CLOCK_MONOTONIC ns). Keyframe
//! requests reach the encoder directly through [`DemoProducer::keyframe_callback`].

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shmring_core::{monotonic_ns, RingWriter, WriterOptions};
use shmring_nvenc::testpattern::TestPattern;
use shmring_nvenc::{Encoder, EncoderChoice, EncoderConfig, PixelFormat};

use shmring_ws::KeyframeCallback;

/// Picture settings of the demo stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DemoSettings {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Frames between keyframes (more come on request).
    pub gop: u32,
    /// Target bit rate in bits per second.
    pub bitrate_bps: u64,
}

impl Default for DemoSettings {
    fn default() -> Self {
        DemoSettings {
            width: 640,
            height: 360,
            fps: 30,
            gop: 60,
            bitrate_bps: 1_500_000,
        }
    }
}

/// The demo producer thread. Dropping it stops the thread and removes the ring file it
/// wrote, if the path still names that file ([`RingWriter::remove`]: whatever someone
/// else has put there since is left alone).
pub(crate) struct DemoProducer {
    thread: Option<JoinHandle<RingWriter>>,
    stop: Arc<AtomicBool>,
    keyframe: Arc<AtomicBool>,
}

impl DemoProducer {
    /// Creates (or continues) the ring at `path` and starts encoding the test pattern
    /// into it; fails if the encoder cannot be opened.
    pub(crate) fn start(path: &Path, settings: DemoSettings) -> std::io::Result<DemoProducer> {
        let writer = RingWriter::open_or_create(
            path,
            &WriterOptions {
                capacity: 16 << 20,
                ..Default::default()
            },
        )
        .map_err(std::io::Error::other)?;
        let stop = Arc::new(AtomicBool::new(false));
        let keyframe = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_t, keyframe_t, path) = (stop.clone(), keyframe.clone(), path.to_path_buf());
        let thread = std::thread::Builder::new()
            .name("demo-producer".into())
            .spawn(move || run(writer, settings, &path, &stop_t, &keyframe_t, ready_tx))?;
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => Ok(DemoProducer {
                thread: Some(thread),
                stop,
                keyframe,
            }),
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => Err(std::io::Error::other("the demo encoder did not start")),
        }
    }

    /// A callback that makes the encoder's next frame a keyframe (register it with
    /// [`shmring_ws::KeyframeRequests::set_direct`]).
    pub(crate) fn keyframe_callback(&self) -> KeyframeCallback {
        let flag = self.keyframe.clone();
        Box::new(move || flag.store(true, Ordering::Relaxed))
    }
}

fn run(
    mut writer: RingWriter,
    s: DemoSettings,
    path: &Path,
    stop: &AtomicBool,
    keyframe: &AtomicBool,
    ready: mpsc::Sender<Result<(), String>>,
) -> RingWriter {
    let config = EncoderConfig {
        fps: s.fps,
        gop: s.gop,
        bitrate_bps: s.bitrate_bps,
        encoder: EncoderChoice::Named("libx264".into()),
        input: PixelFormat::Rgb24,
        ..EncoderConfig::new(s.width, s.height)
    };
    let mut encoder = match Encoder::new(config) {
        Ok(e) => e,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot open the demo encoder: {e}")));
            return writer;
        }
    };
    let _ = ready.send(Ok(()));
    tracing::info!(
        "demo producer: {}x{} at {} fps, {} ({}), into {}",
        s.width,
        s.height,
        s.fps,
        encoder.name(),
        if encoder.is_hardware() { "hardware" } else { "software" },
        path.display()
    );
    let pattern = TestPattern::new(s.width, s.height, PixelFormat::Rgb24);
    let mut frame = Vec::new();
    let period = Duration::from_secs_f64(1.0 / f64::from(s.fps.max(1)));
    let start = Instant::now();
    let mut index = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = start + period.mul_f64(index as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if keyframe.swap(false, Ordering::Relaxed) {
            encoder.request_keyframe();
        }
        pattern.render_into(index, &mut frame);
        if let Err(e) = encoder.encode(&frame, pattern.stride(), monotonic_ns(), &mut writer) {
            tracing::warn!("demo producer: frame {index} not written: {e}");
        }
        index += 1;
    }
    writer
}

impl Drop for DemoProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if let Ok(writer) = t.join() {
                let path = writer.path().to_path_buf();
                match writer.remove() {
                    Ok(true) => {}
                    Ok(false) => tracing::info!("demo ring {} was replaced meanwhile; left as it is", path.display()),
                    Err(e) => tracing::warn!("demo ring not removed: {e}"),
                }
            }
        }
    }
}
