//! The cameras a server serves: one per ring, named by the ring's file name, each with
//! its own futex-woken reader thread, hub (GOP cache, clients), keyframe requests and
//! per-stream metrics. The registry lists them (`/cameras`), routes a WebSocket to one
//! (`/stream/ws/<camera>`), and notices rings that appear and go ([`watch`]).
//!
//! The default camera (the one `/stream/ws` and the Foxglove `/video` channel serve)
//! always uses the server's own hub, keyframe requests and metrics, so with one ring
//! everything is as it was before there were cameras: `/health`, `/metrics` and the
//! video gate describe that ring.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use bytes::Bytes;

use crate::client::QueueLimits;
use crate::framing::{close_code, CloseReason};
use crate::hub::{FanoutPool, Hub};
use crate::keyframe::{CameraRequests, KeyframeRequests};
use crate::metrics::Metrics;
use crate::nats::NatsSourceOptions;
use crate::ring::RingSource;

pub(crate) mod watch;

/// The Foxglove channel id of the first camera channel (`/camera/<name>`); each camera
/// the registry builds takes the next one, so an id never names two cameras. Far above
/// the telemetry channels' ids.
pub(crate) const FIRST_CAMERA_CHANNEL: u32 = 1 << 24;

/// A camera as a Foxglove channel: `/camera/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CameraChannel {
    /// Its channel id (from [`FIRST_CAMERA_CHANNEL`]).
    pub(crate) id: u32,
    /// The camera's name.
    pub(crate) name: String,
    /// Its newest frame is JPEG (`foxglove.CompressedImage`); else, and before its
    /// first frame, it is video (`foxglove.CompressedVideo`).
    pub(crate) jpeg: bool,
}

/// Longest camera name, in bytes.
pub const MAX_CAMERA_NAME_LEN: usize = 64;

/// Which rings (or NATS streams) a server serves as cameras, instead of its one
/// [`crate::ServerOptions::source`].
///
/// With no `shm_paths`, no `watch_dir` and no `sources`, the server serves its `source`
/// alone, as one camera named after the ring file (or the NATS stream). Otherwise each
/// ring or stream is a camera and `source` only lends its reader settings (CRC checks,
/// what frame_id means).
#[derive(Clone, Debug, Default)]
pub struct CameraOptions {
    /// Rings to serve, in the order given (`--shm-path` repeated); a camera's name is
    /// its file name.
    pub shm_paths: Vec<PathBuf>,
    /// A directory whose ring files are cameras, watched for rings that appear and go
    /// (`--shm-dir`).
    pub watch_dir: Option<PathBuf>,
    /// Streams published on NATS by other servers (`--source` repeated), each a camera
    /// named by the last token of its subject (`video.wrist`: `wrist`).
    pub sources: Vec<NatsSourceOptions>,
    /// The camera `/stream/ws` serves (`--default-camera`) [default: the first of
    /// `shm_paths`, else of `sources`, else the first name in the directory in sorted
    /// order].
    pub default_camera: Option<String>,
    /// The cameras the video safety gate judges motion by (`--drive-camera`) [default:
    /// the default camera]. Motion is held when any of them is stale.
    pub drive: Vec<String>,
}

impl CameraOptions {
    /// True when cameras are named here (rings, a directory, NATS streams), not only by
    /// the server's `source`.
    pub fn names_cameras(&self) -> bool {
        !self.shm_paths.is_empty() || self.watch_dir.is_some() || !self.sources.is_empty()
    }
}

/// True if `name` may name a camera: 1 to [`MAX_CAMERA_NAME_LEN`] characters of
/// `[A-Za-z0-9._-]` (it appears in URLs, Foxglove topics and NATS subjects).
pub fn is_valid_camera_name(name: &str) -> bool {
    (1..=MAX_CAMERA_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}

/// The camera name of a NATS stream: the last token of its subject, if that is a valid
/// camera name.
pub(crate) fn stream_name(subject: &str) -> Option<String> {
    let name = subject.rsplit('.').next()?;
    is_valid_camera_name(name).then(|| name.to_owned())
}

/// The camera name of a ring file: its file name, if that is a valid camera name.
pub(crate) fn name_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    is_valid_camera_name(name).then(|| name.to_owned())
}

/// What a connection reads from: a camera's hub and its keyframe requests.
#[derive(Clone, Debug)]
pub(crate) struct Feed {
    pub(crate) hub: Arc<Hub>,
    pub(crate) keyframes: Arc<KeyframeRequests>,
}

/// Started for each camera besides the default one (its name, feed and metrics), e.g.
/// its NATS publisher; the task it returns is aborted when the camera goes.
pub(crate) type CameraTask = Box<dyn Fn(&str, &Feed, &Arc<Metrics>) -> Option<tokio::task::AbortHandle> + Send + Sync>;

/// A running reader thread and the flag that stops it.
type Reader = (Arc<AtomicBool>, JoinHandle<()>);

/// One camera.
#[derive(Debug)]
pub(crate) struct Camera {
    pub(crate) name: String,
    /// Its Foxglove channel id (`/camera/<name>`).
    pub(crate) channel: u32,
    pub(crate) feed: Feed,
    pub(crate) metrics: Arc<Metrics>,
    /// Its ring (`None`: the server's own source feeds it).
    path: Option<PathBuf>,
    reader: Mutex<Option<Reader>>,
    /// Tasks started for it ([`CameraTask`]), aborted when it goes.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Its ring file was seen since the camera (re)started.
    // SYNC POINT (none): `seen` and `gone` are Relaxed, stored by the directory watch
    // and read by HTTP handlers, the gate and the watch itself. Each is a state of its
    // own: no other memory is published through it (the hub and the reader are reached
    // through the registry's lock), so no load pairs with a store for ordering.
    seen: AtomicBool,
    /// Its ring file went away: clients were closed, the reader stopped.
    gone: AtomicBool,
    /// Its ring's writer was last seen dead (said in the log once per death).
    writer_down: AtomicBool,
}

impl Camera {
    /// `live`, `waiting` or `gone` (removed, or its writer is dead).
    pub(crate) fn state(&self) -> &'static str {
        if self.gone.load(Ordering::Relaxed) {
            return "gone";
        }
        match self.metrics.stream_status(&self.metrics.snapshot()) {
            "ok" => "live",
            "writer_down" => "gone",
            _ => "waiting",
        }
    }

    /// True once its ring went away (until it comes back).
    pub(crate) fn is_removed(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// The codec of its newest frame, by name (`None` before the first).
    fn codec(&self) -> Option<&'static str> {
        match self.metrics.last_codec.load(Ordering::Relaxed) {
            0 => None,
            1 => Some("h264"),
            2 => Some("hevc"),
            3 => Some("jpeg"),
            _ => Some("other"),
        }
    }

    /// Keeps `task` (one feeding this camera) to abort when the camera stops.
    pub(crate) fn keep_task(&self, task: tokio::task::AbortHandle) {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
    }

    /// Says in the log, once each time, that its ring's writer died (the camera is
    /// `gone` while the ring stays) or that a writer writes it again.
    fn log_writer_change(&self) {
        let Some(path) = self.path.as_ref().filter(|_| !self.is_removed()) else {
            return;
        };
        let dead = self.metrics.writer_alive.load(Ordering::Relaxed) == 0;
        if self.writer_down.swap(dead, Ordering::Relaxed) == dead {
            return;
        }
        let (name, ring) = (&self.name, path.display());
        if dead {
            tracing::warn!(
                "camera {name}: the writer of ring {ring} died; the camera is gone until a writer \
                 writes the ring again (restart it); its clients stay and resume at the new writer's first keyframe"
            );
        } else {
            tracing::info!(
                "camera {name}: a writer writes ring {ring} again; its clients resume at its first keyframe"
            );
        }
    }

    fn run_task(&self, task: &CameraTask) {
        if let Some(handle) = task(&self.name, &self.feed, &self.metrics) {
            self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(handle);
        }
    }

    /// Stops its reader thread and aborts its tasks.
    fn stop_reader(&self) {
        if let Some((stop, _thread)) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // The thread sees the flag within one read slice and ends; nobody waits.
            stop.store(true, Ordering::Relaxed);
        }
        for task in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
    }
}

/// How new cameras are built: the default camera's parts, and the settings of the
/// others'.
#[derive(Debug)]
pub(crate) struct CameraParts {
    /// The server's own hub, keyframe requests and metrics (the default camera's).
    pub(crate) main: Feed,
    pub(crate) main_metrics: Arc<Metrics>,
    pub(crate) ring: RingSource,
    pub(crate) limits: QueueLimits,
    pub(crate) keyframe_interval: std::time::Duration,
    /// The server's fan-out threads, which every camera's hub shares.
    pub(crate) fanout: Arc<FanoutPool>,
}

/// The registry of cameras.
pub(crate) struct Cameras {
    list: RwLock<BTreeMap<String, Arc<Camera>>>,
    default: RwLock<Option<String>>,
    drive: Vec<String>,
    parts: CameraParts,
    options: CameraOptions,
    /// Keyframe requests of the cameras besides the default one, for NATS.
    pub(crate) keyframe_requests: Arc<CameraRequests>,
    /// What each camera besides the default one starts with (its NATS publisher).
    tasks: RwLock<Vec<CameraTask>>,
    /// The channel id of the next camera built.
    // SYNC POINT (none): Relaxed fetch_add; only uniqueness of the ids matters.
    next_channel: AtomicU32,
    /// Bumped each time a camera comes or goes (Foxglove connections re-advertise).
    changes: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Cameras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cameras")
            .field("list", &self.list)
            .field("default", &self.default)
            .field("drive", &self.drive)
            .finish_non_exhaustive()
    }
}

impl Cameras {
    /// The registry for `options`; with no rings named there, one camera named
    /// `single_name` fed by the server's own source (started elsewhere).
    pub(crate) fn new(options: CameraOptions, parts: CameraParts, single_name: &str) -> Arc<Cameras> {
        let default = if options.names_cameras() {
            options.default_camera.clone().or_else(|| {
                (options.shm_paths.iter().find_map(|p| name_of(p)))
                    .or_else(|| options.sources.iter().find_map(|s| stream_name(&s.target.subject)))
            })
        } else {
            // One source: it is the default camera, whatever else was asked.
            if let Some(asked) = options.default_camera.as_ref().filter(|n| *n != single_name) {
                tracing::warn!("--default-camera {asked}: the one camera served is {single_name}; it is the default");
            }
            Some(single_name.to_owned())
        };
        let cameras = Arc::new(Cameras {
            list: RwLock::new(BTreeMap::new()),
            default: RwLock::new(default),
            drive: options.drive.clone(),
            parts,
            options,
            keyframe_requests: Arc::default(),
            tasks: RwLock::new(Vec::new()),
            next_channel: AtomicU32::new(FIRST_CAMERA_CHANNEL),
            changes: tokio::sync::watch::Sender::new(0),
        });
        if !cameras.options.names_cameras() {
            let camera = cameras.build(single_name, None);
            cameras.write().insert(single_name.to_owned(), camera);
            cameras.warn_unknown_drive();
        }
        cameras
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Camera>>> {
        self.list.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Camera>>> {
        self.list.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The default camera's name, once known.
    pub(crate) fn default_name(&self) -> Option<String> {
        self.default.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The names of the driving cameras: the configured ones, else the default camera.
    pub(crate) fn drive_names(&self) -> Vec<String> {
        if self.drive.is_empty() {
            self.default_name().into_iter().collect()
        } else {
            self.drive.clone()
        }
    }

    /// Says in the log which driving cameras are not served (yet): until they are,
    /// the video gate holds motion.
    pub(crate) fn warn_unknown_drive(&self) {
        for name in self.drive_names() {
            if self.get(&name).is_none() {
                tracing::warn!("driving camera {name} is not served (yet): motion is held until its ring is read");
            }
        }
    }

    /// The driving picture's newest frame: the oldest of the driving cameras' newest
    /// frames (0 if one has none, is not served or went away) and the codec of the
    /// first; `None` while no camera drives (no default camera yet).
    pub(crate) fn driving_frame(&self) -> Option<(u64, Option<u16>)> {
        let names = self.drive_names();
        let mut frame = u64::MAX;
        let mut codec = None;
        for name in &names {
            match self.get(name) {
                Some(camera) if !camera.is_removed() => {
                    frame = frame.min(camera.metrics.last_frame_ns.load(Ordering::Relaxed));
                    let newest = camera.metrics.last_codec.load(Ordering::Relaxed);
                    codec = codec.or(u16::try_from(newest).ok().filter(|&c| c != 0));
                }
                // A removed ring, or one not there yet, proves nothing fresh.
                _ => frame = 0,
            }
        }
        (!names.is_empty()).then_some((frame, codec))
    }

    /// A camera by name (gone ones included).
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Camera>> {
        self.read().get(name).cloned()
    }

    /// Every camera, in name order.
    pub(crate) fn all(&self) -> Vec<Arc<Camera>> {
        self.read().values().cloned().collect()
    }

    /// The feed of the default camera: the server's own hub, whether or not its ring
    /// is there yet.
    pub(crate) fn default_feed(&self) -> Feed {
        self.parts.main.clone()
    }

    /// The feed of camera `name`, or the 404 body naming the cameras there are.
    pub(crate) fn feed(&self, name: &str) -> Result<Feed, String> {
        match self.get(name) {
            Some(c) if !c.gone.load(Ordering::Relaxed) => Ok(c.feed.clone()),
            found => {
                let known: Vec<String> = self
                    .all()
                    .iter()
                    .filter(|c| !c.gone.load(Ordering::Relaxed))
                    .map(|c| c.name.clone())
                    .collect();
                let what = if found.is_some() {
                    "is gone"
                } else {
                    "is not served here"
                };
                Err(format!(
                    "camera {name:?} {what}; cameras: {}\n",
                    if known.is_empty() {
                        "none yet".into()
                    } else {
                        known.join(", ")
                    }
                ))
            }
        }
    }

    /// Builds camera `name` (the default one on the server's own parts).
    fn build(&self, name: &str, path: Option<PathBuf>) -> Arc<Camera> {
        let is_default = self.default_name().as_deref() == Some(name);
        let (feed, metrics) = if is_default {
            (self.parts.main.clone(), self.parts.main_metrics.clone())
        } else {
            let metrics = Arc::new(Metrics::default());
            let keyframes = Arc::new(KeyframeRequests::new(self.parts.keyframe_interval, metrics.clone()));
            let (requests, camera) = (self.keyframe_requests.clone(), name.to_owned());
            keyframes.set_direct(Box::new(move || requests.push(&camera)));
            let hub =
                Hub::new(self.parts.limits, metrics.clone(), keyframes.clone()).with_fanout(self.parts.fanout.clone());
            (
                Feed {
                    hub: Arc::new(hub),
                    keyframes,
                },
                metrics,
            )
        };
        Arc::new(Camera {
            name: name.to_owned(),
            channel: self.next_channel.fetch_add(1, Ordering::Relaxed),
            feed,
            metrics,
            path,
            reader: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            seen: AtomicBool::new(false),
            writer_down: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        })
    }

    /// Adds a task every camera besides the default one runs (those already there start
    /// it now).
    pub(crate) fn add_task(&self, task: CameraTask) {
        let default = self.default_name();
        for camera in self.all() {
            if Some(&camera.name) != default.as_ref() && !camera.is_removed() {
                camera.run_task(&task);
            }
        }
        self.tasks.write().unwrap_or_else(|e| e.into_inner()).push(task);
    }

    /// Adds camera `name`, fed by the caller (a NATS source); `None` if the name is
    /// taken.
    pub(crate) fn add_fed(&self, name: &str) -> Option<Arc<Camera>> {
        if self.get(name).is_some() {
            return None;
        }
        let camera = self.build(name, None);
        if self.default_name().as_deref() != Some(name) {
            for task in self.tasks.read().unwrap_or_else(|e| e.into_inner()).iter() {
                camera.run_task(task);
            }
        }
        self.write().insert(name.to_owned(), camera.clone());
        self.changed();
        Some(camera)
    }

    /// Starts (or restarts, if it went away) camera `name` reading the ring at `path`.
    pub(crate) fn start(&self, name: &str, path: &Path) {
        if let Some(c) = self.get(name) {
            if !c.gone.load(Ordering::Relaxed) {
                return;
            }
        }
        {
            let mut default = self.default.write().unwrap_or_else(|e| e.into_inner());
            if default.is_none() {
                tracing::info!("camera {name} is the default camera (/stream/ws)");
                *default = Some(name.to_owned());
            }
        }
        let camera = self.build(name, Some(path.to_owned()));
        let source = RingSource {
            path: path.to_owned(),
            ..self.parts.ring.clone()
        };
        let stop = Arc::new(AtomicBool::new(false));
        match crate::ring::spawn_reader(source, camera.feed.hub.clone(), camera.metrics.clone(), stop.clone()) {
            Ok(thread) => *camera.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some((stop, thread)),
            Err(e) => tracing::error!("camera {name}: cannot start its reader thread: {e}"),
        }
        tracing::info!("camera {name}: serving ring {}", path.display());
        if self.default_name().as_deref() != Some(name) {
            for task in self.tasks.read().unwrap_or_else(|e| e.into_inner()).iter() {
                camera.run_task(task);
            }
        }
        self.write().insert(name.to_owned(), camera);
        self.changed();
    }

    /// Tells the watchers ([`Cameras::changes`]) that a camera came or went.
    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Changes whenever a camera comes or goes.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The Foxglove channels of the cameras served now (gone ones excluded), in name
    /// order.
    pub(crate) fn channels(&self) -> Vec<CameraChannel> {
        self.read()
            .values()
            .filter(|c| !c.is_removed())
            .map(|c| CameraChannel {
                id: c.channel,
                name: c.name.clone(),
                jpeg: c.codec() == Some("jpeg"),
            })
            .collect()
    }

    /// The camera served now on Foxglove channel `id`.
    pub(crate) fn by_channel(&self, id: u32) -> Option<Arc<Camera>> {
        self.read()
            .values()
            .find(|c| c.channel == id && !c.is_removed())
            .cloned()
    }

    /// Camera `name`'s ring went away: its clients are closed (1001, naming it), its
    /// reader stops, and it is listed as gone until its ring comes back.
    pub(crate) fn remove(&self, name: &str) {
        let Some(camera) = self.get(name) else { return };
        if camera.gone.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::warn!("camera {name}: its ring went away; its clients are closed");
        camera.stop_reader();
        camera.feed.hub.close_all(&CloseReason {
            code: close_code::GOING_AWAY,
            reason: format!("camera {name} went away"),
        });
        camera.feed.hub.discontinuity();
        self.changed();
    }

    /// Every distinct hub (the server's own first).
    fn hubs(&self) -> Vec<Arc<Hub>> {
        let mut hubs = vec![self.parts.main.hub.clone()];
        for camera in self.read().values() {
            if !hubs.iter().any(|h| Arc::ptr_eq(h, &camera.feed.hub)) {
                hubs.push(camera.feed.hub.clone());
            }
        }
        hubs
    }

    /// Hands a telemetry message to the clients of every camera.
    pub(crate) fn publish_telemetry(&self, message: Bytes) {
        for hub in self.hubs() {
            hub.publish_telemetry(message.clone());
        }
    }

    /// Closes the clients of every camera with `reason` (shutdown).
    pub(crate) fn close_all(&self, reason: &CloseReason) {
        for hub in self.hubs() {
            hub.close_all(reason);
        }
    }

    /// Stops every reader thread this registry started.
    pub(crate) fn stop_readers(&self) {
        for camera in self.all() {
            camera.stop_reader();
        }
    }

    /// The `/cameras` document.
    pub(crate) fn json(&self) -> String {
        let cameras: Vec<serde_json::Value> = self
            .all()
            .iter()
            .map(|c| {
                // The ring records no picture size: its newest keyframe's bytes tell it.
                let size = c.feed.hub.picture_size();
                serde_json::json!({
                    "name": c.name,
                    "state": c.state(),
                    "codec": c.codec(),
                    "width": size.map(|s| s.0),
                    "height": size.map(|s| s.1),
                })
            })
            .collect();
        serde_json::json!({
            "default": self.default_name(),
            "drive": self.drive_names(),
            "cameras": cameras,
        })
        .to_string()
    }

    /// Per-camera families for `/metrics` (labelled `camera="<name>"`).
    pub(crate) fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        let cameras = self.all();
        type Value = fn(&Camera) -> u64;
        let families: [(&str, &str, &str, Value); 5] = [
            (
                "shmring_ws_camera_frames_read_total",
                "counter",
                "Frames read from the camera's ring or stream.",
                |c| c.metrics.frames_read.get(),
            ),
            (
                "shmring_ws_camera_frames_broadcast_total",
                "counter",
                "Frames of the camera handed to its clients.",
                |c| c.metrics.frames_broadcast.get(),
            ),
            (
                "shmring_ws_camera_bytes_broadcast_total",
                "counter",
                "Payload bytes of those frames.",
                |c| c.metrics.bytes_broadcast.get(),
            ),
            (
                "shmring_ws_camera_keyframe_requests_total",
                "counter",
                "Keyframe requests for the camera (after coalescing).",
                |c| c.metrics.keyframe_requests.get(),
            ),
            (
                "shmring_ws_camera_clients",
                "gauge",
                "Clients of the camera (the NATS publisher included).",
                |c| c.feed.hub.client_count() as u64,
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for camera in &cameras {
                let _ = writeln!(out, "{name}{{camera=\"{}\"}} {}", camera.name, value(camera));
            }
        }
        let name = "shmring_ws_camera_up";
        let _ = writeln!(
            out,
            "# HELP {name} 1 if the camera is live (fresh frames), else 0.\n# TYPE {name} gauge"
        );
        for camera in &cameras {
            let _ = writeln!(
                out,
                "{name}{{camera=\"{}\"}} {}",
                camera.name,
                u8::from(camera.state() == "live")
            );
        }
    }

    /// Each camera's name and state, for `/health`.
    pub(crate) fn states(&self) -> serde_json::Value {
        self.all()
            .iter()
            .map(|c| serde_json::json!({ "name": c.name, "state": c.state() }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(options: CameraOptions) -> Arc<Cameras> {
        registry_with_fanout(options, 0)
    }

    /// The registry, each camera's hub with `fanout_threads` fan-out threads.
    fn registry_with_fanout(options: CameraOptions, fanout_threads: usize) -> Arc<Cameras> {
        let metrics = Arc::new(Metrics::default());
        let keyframes = Arc::new(KeyframeRequests::new(
            std::time::Duration::from_millis(100),
            metrics.clone(),
        ));
        let hub = Arc::new(Hub::new(QueueLimits::default(), metrics.clone(), keyframes.clone()));
        let parts = CameraParts {
            main: Feed { hub, keyframes },
            main_metrics: metrics,
            ring: RingSource::default(),
            limits: QueueLimits::default(),
            keyframe_interval: std::time::Duration::from_millis(100),
            fanout: FanoutPool::new(fanout_threads).expect("fan-out threads"),
        };
        Cameras::new(options, parts, "frames")
    }

    #[test]
    fn one_ring_is_one_camera_on_the_servers_own_hub() {
        let cameras = registry(CameraOptions::default());
        assert_eq!(cameras.default_name().as_deref(), Some("frames"));
        assert_eq!(cameras.drive_names(), ["frames"]);
        let camera = cameras.get("frames").expect("the one camera");
        assert!(Arc::ptr_eq(&camera.feed.hub, &cameras.default_feed().hub));
        let unknown = cameras.feed("wrist").expect_err("no such camera");
        assert!(
            unknown.contains("\"wrist\" is not served here; cameras: frames"),
            "{unknown}"
        );
    }

    #[test]
    fn one_ring_stays_the_default_whatever_default_camera_says() {
        let cameras = registry(CameraOptions {
            default_camera: Some("wrist".into()),
            ..CameraOptions::default()
        });
        assert_eq!(cameras.default_name().as_deref(), Some("frames"));
        let camera = cameras.get("frames").expect("the one camera");
        assert!(
            Arc::ptr_eq(&camera.feed.hub, &cameras.default_feed().hub),
            "fed by the server's source"
        );
    }

    #[test]
    fn a_removed_camera_is_gone_and_refused_until_it_comes_back() {
        let dir = std::env::temp_dir().join(format!("shmring-cameras-unit-{}", std::process::id()));
        let cameras = registry(CameraOptions {
            shm_paths: vec![dir.join("front"), dir.join("wrist")],
            drive: vec!["wrist".into()],
            ..CameraOptions::default()
        });
        assert_eq!(cameras.default_name().as_deref(), Some("front"));
        cameras.start("front", &dir.join("front"));
        cameras.start("wrist", &dir.join("wrist"));
        let wrist = cameras.get("wrist").expect("wrist");
        assert!(
            !Arc::ptr_eq(&wrist.feed.hub, &cameras.default_feed().hub),
            "its own hub"
        );
        assert_eq!(cameras.driving_frame(), Some((0, None)), "no frame yet: stale");
        wrist.metrics.last_frame_ns.store(7, Ordering::Relaxed);
        assert_eq!(cameras.driving_frame(), Some((7, None)));
        cameras.remove("wrist");
        assert_eq!(wrist.state(), "gone");
        assert_eq!(
            cameras.driving_frame(),
            Some((0, None)),
            "a removed driving camera is stale"
        );
        assert!(cameras.feed("wrist").unwrap_err().contains("is gone; cameras: front"));
        cameras.start("wrist", &dir.join("wrist"));
        assert!(cameras.feed("wrist").is_ok(), "served again");
        cameras.stop_readers();
    }

    #[test]
    fn every_camera_fans_out_on_the_same_threads() {
        use crate::client::tests::{frame, seqs, with_socket, writer_step};
        let cameras = registry_with_fanout(CameraOptions::default(), 2);
        let mut written_by = std::collections::HashSet::new();
        for name in ["a", "b", "c"] {
            let hub = cameras.add_fed(name).expect("a new camera").feed.hub.clone();
            hub.publish_video(frame(1, true, 10));
            // More clients than the publishing thread writes itself.
            let clients: Vec<_> = (0..crate::hub::INLINE_MAX_CLIENTS + 2)
                .map(|_| hub.join(true))
                .collect();
            let sockets: Vec<_> = clients.iter().map(|c| with_socket(c, 1 << 20)).collect();
            for c in &clients {
                assert_eq!(seqs(&writer_step(c).expect("the GOP burst")), vec![1]);
                assert!(writer_step(c).is_none());
            }
            for seq in 2..=20 {
                hub.publish_video(frame(seq, false, 10));
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            // Each frame: [0x82, 10] and ten bytes.
            while sockets.iter().any(|s| s.written.lock().unwrap().len() < 12 * 19) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "camera {name}: the fan-out did not deliver frames 2..=20 to every client"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            written_by.extend(sockets.iter().flat_map(|s| s.writers.lock().unwrap().clone()));
        }
        assert!(!written_by.contains(&std::thread::current().id()), "handed off");
        assert_eq!(
            written_by.len(),
            2,
            "three cameras' frames written by the server's two fan-out threads, not two per camera"
        );
    }

    #[test]
    fn camera_names_are_url_and_subject_safe() {
        for good in ["front", "wrist_cam", "depth-1", "cam.0", &"a".repeat(64)] {
            assert!(is_valid_camera_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "caméra", "a*", "a>", &"a".repeat(65)] {
            assert!(!is_valid_camera_name(bad), "{bad}");
        }
    }
}
