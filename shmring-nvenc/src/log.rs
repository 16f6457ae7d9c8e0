//! FFmpeg's log lines of this library's encoders: quiet unless the application asks for
//! them, and never a change to how FFmpeg logs for anyone else in the process.
//!
//! - By default nothing global is touched (no log callback, FFmpeg's log level left as
//!   it is): each encoder's codec context gets a log level offset
//!   (`AVCodecContext::log_level_offset`) that moves its lines below any level FFmpeg
//!   prints, so they cost a level comparison and print nothing. Lines of other libraries
//!   sharing FFmpeg in the process (PyAV, OpenCV) print as they always did.
//! - [`capture`] is the opt-in (the Python package calls it when the
//!   `shmring.ffmpeg` logger asks for lines): it installs a log callback that keeps this
//!   library's lines at or above [`set_max_level`] in a bounded queue the application
//!   drains with [`take`] (the Python package forwards it to
//!   `logging.getLogger("shmring.ffmpeg")`), and passes every other line to FFmpeg's
//!   default printer, which prints it exactly as it would have. FFmpeg's log callback is
//!   process-wide, so a callback another library installed earlier is replaced. Once the
//!   queue is full the oldest lines give way (counted in [`Taken::dropped`]).
//!
//! Lines logged while [`crate::EncoderChoice::Auto`] tries an encoder that may not be
//! there (NVENC on a machine without a GPU: "Cannot load libcuda.so.1") are expected
//! failures: they are demoted to [`ffmpeg_next::ffi::AV_LOG_VERBOSE`] and prefixed with
//! `probing <encoder>: `, so they show up only when debugging.
//!
//! ```
//! // Opting in: this library's lines (and only those) go to the queue.
//! shmring_nvenc::log::capture();
//! shmring_nvenc::log::set_max_level(ffmpeg_next::ffi::AV_LOG_INFO);
//! let taken = shmring_nvenc::log::take();
//! for line in &taken.lines {
//!     println!("ffmpeg [{}]: {}", line.level, line.message);
//! }
//! ```

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

use ffmpeg_next::ffi;

/// Lines kept until [`take`] collects them; older ones give way.
const QUEUE_LINES: usize = 512;
/// Longest line kept (FFmpeg's own console printer uses 1024 bytes too).
const LINE_BYTES: usize = 1024;

/// One line of FFmpeg's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// FFmpeg's level (`AV_LOG_ERROR` = 16, `AV_LOG_WARNING` = 24, `AV_LOG_INFO` = 32,
    /// `AV_LOG_VERBOSE` = 40, `AV_LOG_DEBUG` = 48; smaller is more severe).
    pub level: i32,
    /// The text, with FFmpeg's `[component @ 0x...]` prefix and without the newline.
    pub message: String,
}

/// What [`take`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// Lines in the order FFmpeg logged them.
    pub lines: Vec<LogLine>,
    /// Lines lost because the queue was full since the last [`take`].
    pub dropped: u64,
}

struct Queue {
    lines: VecDeque<LogLine>,
    dropped: u64,
    /// The start of a line FFmpeg has not finished yet (it logs some lines in pieces).
    partial: String,
    /// FFmpeg's "print the prefix" state, carried between calls as its printer does.
    print_prefix: c_int,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    lines: VecDeque::new(),
    dropped: 0,
    partial: String::new(),
    print_prefix: 1,
});
static MAX_LEVEL: AtomicI32 = AtomicI32::new(ffi::AV_LOG_WARNING);
static INSTALL: Once = Once::new();
/// [`capture`] was called.
static CAPTURING: AtomicBool = AtomicBool::new(false);
/// Addresses of this library's FFmpeg contexts (codec and swscale), whose lines are
/// ours to capture.
static CONTEXTS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Added to the level of every line an encoder logs while nothing captures them: the
/// most severe level (`AV_LOG_PANIC`, 0) becomes 64, past `AV_LOG_TRACE` (56), which
/// FFmpeg's printer never reaches at any level it can be set to by name.
const QUIET_OFFSET: c_int = 64;

/// Registers an FFmpeg context of this library (its address, as FFmpeg passes it to the
/// log callback) until dropped.
pub(crate) struct OwnedContext(usize);

impl OwnedContext {
    /// Registers `context`.
    pub(crate) fn new(context: *const c_void) -> Self {
        contexts().push(context as usize);
        OwnedContext(context as usize)
    }
}

impl Drop for OwnedContext {
    fn drop(&mut self) {
        let mut list = contexts();
        if let Some(i) = list.iter().position(|c| *c == self.0) {
            list.swap_remove(i);
        }
    }
}

fn contexts() -> MutexGuard<'static, Vec<usize>> {
    // Every update is a push or a removal: a poisoned lock is used as it is.
    CONTEXTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `log_level_offset` a new codec context gets: 0 while capturing, else one that
/// keeps its lines from being printed.
pub(crate) fn level_offset() -> c_int {
    if CAPTURING.load(Ordering::Relaxed) {
        0
    } else {
        QUIET_OFFSET
    }
}

/// True once [`capture`] was called in this process.
pub fn capturing() -> bool {
    CAPTURING.load(Ordering::Relaxed)
}

thread_local! {
    /// The encoder being probed on this thread, while [`probing`] runs.
    static PROBING: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn queue() -> MutexGuard<'static, Queue> {
    // A panic while holding the lock cannot leave the queue inconsistent (every update
    // is a push or a clear), so a poisoned lock is used as it is.
    QUEUE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Routes this library's FFmpeg lines into the queue from now on (idempotent; encoders
/// opened before keep their lines quiet). Installs FFmpeg's process-wide log callback;
/// lines of other FFmpeg users are passed on to FFmpeg's default printer unchanged.
/// FFmpeg's log level is not changed.
pub fn capture() {
    INSTALL.call_once(|| {
        // SAFETY: `callback` has the signature FFmpeg expects, never unwinds (it does
        // not panic: no indexing, no unwrap) and is safe to call from any thread (its
        // state is behind mutexes).
        unsafe { ffi::av_log_set_callback(Some(callback)) };
        CAPTURING.store(true, Ordering::Relaxed);
    });
}

/// Keeps lines of `level` and more severe (FFmpeg's scale: `AV_LOG_INFO` keeps errors,
/// warnings and information). The default, `AV_LOG_WARNING`, keeps errors and warnings.
pub fn set_max_level(level: i32) {
    MAX_LEVEL.store(level, Ordering::Relaxed);
}

/// The lines logged since the last call, oldest first.
pub fn take() -> Taken {
    let mut q = queue();
    Taken {
        lines: q.lines.drain(..).collect(),
        dropped: std::mem::take(&mut q.dropped),
    }
}

/// Runs `f` with lines logged on this thread demoted to `AV_LOG_VERBOSE` and prefixed
/// with `probing <encoder>: ` (failures there are expected and handled).
pub(crate) fn probing<T>(encoder: &str, f: impl FnOnce() -> T) -> T {
    PROBING.with(|p| *p.borrow_mut() = Some(encoder.to_string()));
    let result = f();
    PROBING.with(|p| *p.borrow_mut() = None);
    result
}

// The C type FFmpeg's callback receives its `va_list` as: a pointer to the register save
// area on x86-64 (bindgen's `*mut __va_list_tag`), the `va_list` value elsewhere.
#[cfg(target_arch = "x86_64")]
type VaList = *mut ffi::__va_list_tag;
#[cfg(not(target_arch = "x86_64"))]
type VaList = ffi::va_list;

unsafe extern "C" fn callback(avcl: *mut c_void, level: c_int, fmt: *const c_char, vl: VaList) {
    let probing = PROBING.with(|p| p.borrow().clone());
    if probing.is_none() && !contexts().contains(&(avcl as usize)) {
        // Not ours: printed as if this callback were not installed.
        // SAFETY: the arguments FFmpeg called us with, passed on unchanged (the va_list
        // is consumed there only).
        unsafe { ffi::av_log_default_callback(avcl, level, fmt, vl) };
        return;
    }
    let kept_level = if probing.is_some() {
        level.max(ffi::AV_LOG_VERBOSE)
    } else {
        level
    };
    if kept_level > MAX_LEVEL.load(Ordering::Relaxed) || fmt.is_null() {
        return;
    }
    let mut buf = [0 as c_char; LINE_BYTES];
    let mut q = queue();
    // SAFETY: `avcl`, `fmt` and `vl` are the arguments FFmpeg called us with, passed on
    // unchanged and used once (the va_list is consumed here only); `buf` is writable for
    // LINE_BYTES bytes, and av_log_format_line2 writes at most that many, NUL-terminated;
    // `print_prefix` is a valid c_int owned by the locked queue.
    let written = unsafe {
        ffi::av_log_format_line2(
            avcl,
            level,
            fmt,
            vl,
            buf.as_mut_ptr(),
            LINE_BYTES as c_int,
            &mut q.print_prefix,
        )
    };
    if written < 0 {
        return;
    }
    // SAFETY: av_log_format_line2 NUL-terminated `buf` (it truncates long lines).
    let text = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    q.partial.push_str(&text);
    while let Some(end) = q.partial.find('\n') {
        let mut message: String = q.partial.drain(..=end).collect();
        message.truncate(message.trim_end().len());
        if message.is_empty() {
            continue;
        }
        if let Some(encoder) = &probing {
            message = format!("probing {encoder}: {message}");
        }
        if q.lines.len() == QUEUE_LINES {
            q.lines.pop_front();
            q.dropped += 1;
        }
        q.lines.push_back(LogLine {
            level: kept_level,
            message,
        });
    }
}
