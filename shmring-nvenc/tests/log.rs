//! FFmpeg's log is process-wide (one level, one callback): this library must leave both
//! alone unless the application asks for its lines, and when it does, capture only its
//! own encoders' lines. It used to set the level to TRACE and swallow every other FFmpeg
//! user's lines (PyAV, OpenCV in the same process). Each test runs in its own process
//! (nextest), so the global state starts fresh.

use shmring_nvenc::ffmpeg_next::ffi;
use shmring_nvenc::log;
use shmring_nvenc::testpattern::TestPattern;
use shmring_nvenc::{Encoder, EncoderChoice, EncoderConfig, OwnedAccessUnit, PixelFormat};

/// Opens libx264, encodes a few frames and closes it (libx264 logs at open and close).
fn encode_a_little() {
    let config = EncoderConfig {
        encoder: EncoderChoice::Named("libx264".into()),
        input: PixelFormat::Rgb24,
        ..EncoderConfig::new(64, 48)
    };
    let mut encoder = Encoder::new(config).unwrap();
    let pattern = TestPattern::new(64, 48, PixelFormat::Rgb24);
    let mut out: Vec<OwnedAccessUnit> = Vec::new();
    for i in 0..3 {
        encoder.encode(&pattern.render(i), 64 * 3, i, &mut out).unwrap();
    }
    drop(encoder);
}

/// Logs a line as another library would, with no context of this library.
fn log_as_another_library() {
    // SAFETY: av_log with a NULL context, a NUL-terminated format and one matching
    // string argument.
    unsafe {
        ffi::av_log(
            std::ptr::null_mut(),
            ffi::AV_LOG_ERROR,
            c"another library's line: %s\n".as_ptr(),
            c"kept".as_ptr(),
        )
    };
}

fn ffmpeg_level() -> i32 {
    // SAFETY: reads FFmpeg's global log level.
    unsafe { ffi::av_log_get_level() }
}

#[test]
fn ffmpeg_logging_is_left_alone_until_asked() {
    let before = ffmpeg_level();
    encode_a_little();
    assert_eq!(ffmpeg_level(), before, "FFmpeg's global log level was changed");
    assert!(!log::capturing());
    assert!(log::take().lines.is_empty());
}

#[test]
fn capture_keeps_this_librarys_lines_and_passes_the_others_on() {
    let before = ffmpeg_level();
    log::capture();
    log::set_max_level(ffi::AV_LOG_INFO);
    assert_eq!(ffmpeg_level(), before, "capture() changed FFmpeg's global log level");
    encode_a_little();
    log_as_another_library();
    let lines = log::take().lines;
    assert!(
        lines
            .iter()
            .any(|l| l.message.starts_with("[libx264 @") && l.message.contains("profile")),
        "libx264's lines are captured: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.message.contains("kb/s")),
        "libx264's statistics, logged while the encoder is freed, are captured: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.message.contains("another library")),
        "another FFmpeg user's line went to FFmpeg's printer, not to this library: {lines:?}"
    );
}
