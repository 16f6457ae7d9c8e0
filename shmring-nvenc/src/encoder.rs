//! [`Encoder`]: raw frames in, Annex B access units out, into a [`FrameSink`].

use std::collections::VecDeque;
use std::sync::Once;

use ff::software::scaling;
use ff::util::format::Pixel;
use ff::util::frame;
use ffmpeg_next as ff;

use crate::annexb;
use crate::{AccessUnit, EncodeError, EncoderChoice, EncoderConfig, FrameSink, PixelFormat, RateControl};

/// An open video encoder that writes each access unit into a [`FrameSink`] (usually a
/// [`shmring_core::RingWriter`]) as soon as the encoder produces it.
///
/// Low-latency settings on every encoder: no B-frames, zero-latency tuning (x264/x265
/// `zerolatency`, NVENC `tune=ull`, `zerolatency`, `delay=0`), slice threads instead of
/// frame threads (frame threads hold frames back), fixed GOP without scene-cut
/// keyframes, IDR on [`Encoder::request_keyframe`], parameter sets in-band on every
/// keyframe (no global header; re-inserted by this crate if an encoder leaves them out).
///
/// ```no_run
/// use shmring_core::{RingWriter, WriterOptions};
/// use shmring_nvenc::{Encoder, EncoderConfig, testpattern::TestPattern};
///
/// let mut ring = RingWriter::create("/dev/shm/camera0", &WriterOptions::default())?;
/// let config = EncoderConfig::new(1280, 720);
/// let mut encoder = Encoder::new(config.clone())?;
/// println!("encoding with {}", encoder.name()); // h264_nvenc, or libx264 without a GPU
/// let pattern = TestPattern::new(config.width, config.height, config.input);
/// for i in 0..300 {
///     let frame = pattern.render(i);
///     let seqs = encoder.encode(&frame, pattern.stride(), i, &mut ring)?;
///     assert!(seqs.len() <= 1);
/// }
/// encoder.flush(&mut ring)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Encoder {
    config: EncoderConfig,
    name: String,
    hardware: bool,
    fallback_reasons: Vec<(String, String)>,
    options: Vec<(String, String)>,
    encoder: ff::encoder::Video,
    encoder_format: Pixel,
    /// Converts the caller's rows into `picture`; `None` when the caller's
    /// format is the encoder's (NV12 into an NV12 encoder).
    scaler: Option<scaling::Context>,
    /// A packed copy of the caller's rows, for frames that cannot be read in place.
    staging: frame::Video,
    picture: frame::Video,
    packet: ff::Packet,
    next_pts: i64,
    /// (pts, frame_id) of frames given to the encoder and not yet seen in its output.
    in_flight: VecDeque<(i64, u64)>,
    force_keyframe: bool,
    /// The newest keyframe's parameter sets, Annex B, for keyframes that lack them.
    parameter_sets: Vec<u8>,
    scratch: Vec<u8>,
    frames_in: u64,
    frames_out: u64,
    finished: bool,
    /// Registers the codec and swscale contexts as this library's for its log; last, so
    /// that lines logged while they are freed (libx264's statistics) are still ours.
    _log_contexts: [Option<crate::log::OwnedContext>; 2],
}

// SAFETY: every field is owned by the encoder and only used through `&mut self`. The one
// field that is not `Send` in ffmpeg-next, the swscale context, has no thread affinity:
// FFmpeg documents that a context may be used from any thread as long as calls on it do
// not overlap, which `&mut self` guarantees.
unsafe impl Send for Encoder {}

static FFMPEG_INIT: Once = Once::new();

fn init_ffmpeg() {
    FFMPEG_INIT.call_once(|| {
        // Registration is a no-op on FFmpeg >= 4; this only fails on very old builds,
        // where opening the encoder fails with its own clear error.
        let _ = ff::init();
    });
}

fn ffmpeg_err(action: &'static str) -> impl FnOnce(ff::Error) -> EncodeError {
    move |source| EncodeError::Ffmpeg { action, source }
}

impl Encoder {
    /// Opens an encoder for `config`. With [`EncoderChoice::Auto`], tries NVENC first
    /// and falls back to libx264 (libx265 for HEVC); [`Encoder::fallback_reasons`] says
    /// why NVENC was passed over.
    pub fn new(config: EncoderConfig) -> Result<Self, EncodeError> {
        config.validate().map_err(EncodeError::InvalidConfig)?;
        init_ffmpeg();
        match &config.encoder {
            EncoderChoice::Named(name) => Self::open(name, &config, Vec::new()),
            EncoderChoice::Auto => {
                let mut tried = Vec::new();
                let candidates = config.codec.auto_encoders();
                for (i, name) in candidates.iter().enumerate() {
                    let opened = if i + 1 < candidates.len() {
                        // A fallback follows: this encoder's failure is expected.
                        crate::log::probing(name, || Self::open(name, &config, tried.clone()))
                    } else {
                        Self::open(name, &config, tried.clone())
                    };
                    match opened {
                        Ok(encoder) => return Ok(encoder),
                        Err(e) => tried.push((name.to_string(), short_reason(&e))),
                    }
                }
                Err(EncodeError::NoEncoder {
                    codec: config.codec,
                    tried,
                })
            }
        }
    }

    fn open(name: &str, config: &EncoderConfig, fallback_reasons: Vec<(String, String)>) -> Result<Self, EncodeError> {
        let codec =
            ff::encoder::find_by_name(name).ok_or_else(|| EncodeError::UnknownEncoder { name: name.to_string() })?;
        if codec.id() != config.codec.ffmpeg_id() {
            return Err(EncodeError::WrongCodec {
                name: name.to_string(),
                wanted: config.codec,
            });
        }
        let hardware = codec.capabilities().bits() & ff::ffi::AV_CODEC_CAP_HARDWARE != 0;
        let supported: Vec<Pixel> = codec
            .video()
            .ok()
            .and_then(|v| v.formats())
            .map(|f| f.collect())
            .unwrap_or_default();
        let encoder_format = choose_format(config.input, &supported);
        let options = encoder_options(name, config);

        let mut context = ff::codec::context::Context::new_with_codec(codec);
        // SAFETY: the context was just allocated (avcodec_alloc_context3) and is owned
        // here; setting its log level offset before it is opened is what FFmpeg expects.
        let codec_log = unsafe {
            let ctx = context.as_mut_ptr();
            (*ctx).log_level_offset = crate::log::level_offset();
            crate::log::OwnedContext::new(ctx as *const std::ffi::c_void)
        };
        let mut video = context.encoder().video().map_err(|source| EncodeError::Open {
            name: name.to_string(),
            source,
        })?;
        video.set_width(config.width);
        video.set_height(config.height);
        video.set_format(encoder_format);
        video.set_time_base(ff::Rational::new(1, config.fps as i32));
        video.set_frame_rate(Some(ff::Rational::new(config.fps as i32, 1)));
        let mut dict = ff::Dictionary::new();
        for (k, v) in &options {
            dict.set(k, v);
        }
        let encoder = video.open_with(dict).map_err(|source| EncodeError::Open {
            name: name.to_string(),
            source,
        })?;

        let input = config.input.ffmpeg();
        let scaler = Self::pixel_converter(config, encoder_format)?;
        // SAFETY: only the address is taken, as FFmpeg passes it to the log callback.
        let scaler_log = scaler
            .as_ref()
            .map(|s| crate::log::OwnedContext::new(unsafe { s.as_ptr() } as *const std::ffi::c_void));
        Ok(Encoder {
            name: name.to_string(),
            hardware,
            fallback_reasons,
            options,
            encoder,
            encoder_format,
            staging: if scaler.is_some() {
                frame::Video::new(input, config.width, config.height)
            } else {
                frame::Video::empty()
            },
            scaler,
            picture: frame::Video::new(encoder_format, config.width, config.height),
            packet: ff::Packet::empty(),
            next_pts: 0,
            in_flight: VecDeque::new(),
            force_keyframe: false,
            parameter_sets: Vec::new(),
            scratch: Vec::new(),
            frames_in: 0,
            frames_out: 0,
            finished: false,
            config: config.clone(),
            _log_contexts: [Some(codec_log), scaler_log],
        })
    }

    /// `None` if the input pixel format is the encoder's; otherwise a swscale context
    /// from one to the other.
    fn pixel_converter(config: &EncoderConfig, encoder_format: Pixel) -> Result<Option<scaling::Context>, EncodeError> {
        let input = config.input.ffmpeg();
        if input == encoder_format {
            return Ok(None);
        }
        let scaler = scaling::Context::get(
            input,
            config.width,
            config.height,
            encoder_format,
            config.width,
            config.height,
            scaling::Flags::BICUBIC,
        )
        .map_err(ffmpeg_err("set up pixel conversion (swscale)"))?;
        Ok(Some(scaler))
    }

    /// The FFmpeg encoder actually opened (`h264_nvenc`, `libx264`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True for a hardware encoder (NVENC).
    pub fn is_hardware(&self) -> bool {
        self.hardware
    }

    /// The configuration the encoder was opened with.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// With [`EncoderChoice::Auto`]: each encoder tried before the one opened, and why
    /// it failed (for example `h264_nvenc`, "Operation not permitted" without a GPU).
    pub fn fallback_reasons(&self) -> &[(String, String)] {
        &self.fallback_reasons
    }

    /// The options the encoder was opened with (generic and private FFmpeg options, as
    /// `ffmpeg -c:v NAME -KEY VALUE` would take them), for logs and for reproducing an
    /// encode with the `ffmpeg` command-line tool.
    pub fn ffmpeg_options(&self) -> &[(String, String)] {
        &self.options
    }

    /// The pixel format the encoder consumes (frames are converted to it with swscale).
    pub fn encoder_pixel_format(&self) -> &'static str {
        self.encoder_format.descriptor().map(|d| d.name()).unwrap_or("unknown")
    }

    /// Makes the next frame given to [`Encoder::encode`] an IDR keyframe (with parameter
    /// sets), for a new viewer or after loss.
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// Frames accepted by [`Encoder::encode`].
    pub fn frames_in(&self) -> u64 {
        self.frames_in
    }

    /// Access units handed to sinks.
    pub fn frames_out(&self) -> u64 {
        self.frames_out
    }

    /// Checks that `len` bytes with `stride` hold one frame of the configured size and
    /// format: `stride * rows`, or that with the last row trimmed to its pixels.
    pub fn check_frame(&self, len: usize, stride: usize) -> Result<(), EncodeError> {
        let input = self.config.input;
        let min = input.packed_stride(self.config.width);
        if stride < min {
            return Err(EncodeError::Stride { stride, min });
        }
        let rows = input.rows(self.config.height);
        let full = stride * rows;
        let trimmed = stride * (rows - 1) + min;
        if len != full && len != trimmed {
            return Err(EncodeError::FrameLength {
                got: len,
                full,
                trimmed,
            });
        }
        Ok(())
    }

    /// Encodes one raw frame (`stride` bytes per row, in the configured
    /// [`PixelFormat`]) and writes every access unit the encoder produces into `sink`,
    /// tagged with its frame's `frame_id`. Returns the sink's numbers for them (ring
    /// frame_seqs): with the low-latency settings, exactly one per frame.
    ///
    /// A frame of the wrong size is rejected before it reaches the encoder, so nothing
    /// is lost. If the sink refuses an access unit, the error is returned and the next
    /// frame becomes a keyframe so readers recover.
    pub fn encode<S: FrameSink + ?Sized>(
        &mut self,
        frame: &[u8],
        stride: usize,
        frame_id: u64,
        sink: &mut S,
    ) -> Result<Vec<u64>, EncodeError> {
        if self.finished {
            return Err(EncodeError::Finished);
        }
        self.check_frame(frame.len(), stride)?;
        if self.scaler.is_none() {
            // NV12 in, NV12 out: luma rows, then interleaved chroma rows.
            make_writable(&mut self.picture)?;
            let width = self.config.width as usize;
            let height = self.config.height as usize;
            copy_plane(frame, stride, &mut self.picture, 0, width, height);
            copy_plane(
                &frame[stride * height..],
                stride,
                &mut self.picture,
                1,
                width,
                height.div_ceil(2),
            );
            return self.submit(frame_id, sink);
        }
        let stride = isize::try_from(stride).map_err(|_| EncodeError::Stride {
            stride,
            min: self.config.input.packed_stride(self.config.width),
        })?;
        self.encode_rows(frame, 0, stride, frame_id, sink)
    }

    /// Encodes one frame of packed pixels (RGB24, RGBA or BGRA) whose rows lie anywhere
    /// in `memory`: row 0 starts at byte `first_row`, row `r` at `first_row + r * stride`.
    /// `stride` may be negative (a vertically flipped view, as `image[::-1]` in numpy)
    /// and larger than a row (padding or a crop of a wider image). The rows go to the
    /// pixel converter (swscale) where they are, without an intermediate copy; only when
    /// the image ends so close to a page boundary that the converter's vector loads could
    /// touch the next page is it copied first.
    ///
    /// Otherwise as [`Encoder::encode`]: same return value, same recovery after errors.
    /// NV12 input is not packed: give it to [`Encoder::encode`].
    pub fn encode_rows<S: FrameSink + ?Sized>(
        &mut self,
        memory: &[u8],
        first_row: usize,
        stride: isize,
        frame_id: u64,
        sink: &mut S,
    ) -> Result<Vec<u64>, EncodeError> {
        if self.finished {
            return Err(EncodeError::Finished);
        }
        let row_bytes = self.config.input.packed_stride(self.config.width);
        let rows = self.config.height as usize;
        let span = row_span(memory.len(), first_row, stride, row_bytes, rows).ok_or(EncodeError::RowsOutOfBounds {
            len: memory.len(),
            first_row,
            stride,
            row_bytes,
            rows,
        })?;
        let src_stride = i32::try_from(stride).map_err(|_| EncodeError::Stride {
            stride: stride.unsigned_abs(),
            min: row_bytes,
        })?;
        let Some(scaler) = self.scaler.as_mut() else {
            return Err(EncodeError::InvalidConfig(
                "encode_rows takes packed pixels (rgb24, rgba, bgra); give NV12 frames to encode".into(),
            ));
        };
        make_writable(&mut self.picture)?;
        let tail_safe = overread_is_safe(memory[span.clone()].as_ptr_range().end);
        let (src, src_stride) = if tail_safe {
            // `first_row` is in bounds: row_span checked every row.
            (memory[first_row..].as_ptr(), src_stride)
        } else {
            make_writable(&mut self.staging)?;
            let staging_stride = self.staging.stride(0);
            let out = self.staging.data_mut(0);
            for r in 0..rows {
                let at = first_row.wrapping_add_signed(stride * r as isize);
                out[r * staging_stride..r * staging_stride + row_bytes].copy_from_slice(&memory[at..at + row_bytes]);
            }
            (self.staging.data(0).as_ptr(), staging_stride as i32)
        };
        // SAFETY:
        // - `scaler` is a valid SwsContext converting width x height frames of the input
        //   format into the encoder's format, set up in `open`;
        // - `src` points to row 0 and every row r at `src + r * src_stride` holds
        //   `row_bytes` readable bytes: checked by `row_span` for the caller's memory
        //   (which outlives this call), or true of `staging` by construction. The
        //   converter's vector loads may read a few bytes past a row's end: within the
        //   caller's memory for all but the highest row, and `overread_is_safe` checked
        //   that the highest row's end is not near a page boundary (or `staging`, which
        //   FFmpeg allocates with padding, is used);
        // - `picture` is writable (made so above) with planes of the encoder's format at
        //   width x height, its data pointers and line sizes taken from the AVFrame;
        // - `planes` and `strides` have the four entries swscale reads.
        let converted = unsafe {
            let dst = self.picture.as_mut_ptr();
            // swscale reads four plane pointers and strides; packed input uses the first.
            let planes = [src, std::ptr::null(), std::ptr::null(), std::ptr::null()];
            let strides = [src_stride, 0, 0, 0];
            ff::ffi::sws_scale(
                scaler.as_mut_ptr(),
                planes.as_ptr(),
                strides.as_ptr(),
                0,
                rows as i32,
                (*dst).data.as_ptr(),
                (*dst).linesize.as_ptr(),
            )
        };
        if converted < 0 {
            return Err(EncodeError::Ffmpeg {
                action: "convert pixels (swscale)",
                source: ff::Error::from(converted),
            });
        }
        self.submit(frame_id, sink)
    }

    /// Sends the converted `picture` to the encoder and drains what it produced.
    fn submit<S: FrameSink + ?Sized>(&mut self, frame_id: u64, sink: &mut S) -> Result<Vec<u64>, EncodeError> {
        let pts = self.next_pts;
        self.picture.set_pts(Some(pts));
        self.picture.set_kind(if self.force_keyframe {
            ff::picture::Type::I
        } else {
            ff::picture::Type::None
        });
        self.encoder
            .send_frame(&self.picture)
            .map_err(ffmpeg_err("send a frame to the encoder"))?;
        self.force_keyframe = false;
        self.next_pts += 1;
        self.frames_in += 1;
        self.in_flight.push_back((pts, frame_id));
        self.drain(sink)
    }

    /// Ends the stream: drains access units the encoder still holds into `sink`. The
    /// encoder takes no frames afterwards.
    pub fn flush<S: FrameSink + ?Sized>(&mut self, sink: &mut S) -> Result<Vec<u64>, EncodeError> {
        if !self.finished {
            self.finished = true;
            self.encoder.send_eof().map_err(ffmpeg_err("flush the encoder"))?;
        }
        self.drain(sink)
    }

    fn drain<S: FrameSink + ?Sized>(&mut self, sink: &mut S) -> Result<Vec<u64>, EncodeError> {
        let mut written = Vec::with_capacity(1);
        loop {
            match self.encoder.receive_packet(&mut self.packet) {
                Ok(()) => {}
                Err(ff::Error::Other { errno: libc::EAGAIN }) | Err(ff::Error::Eof) => return Ok(written),
                Err(e) => {
                    return Err(EncodeError::Ffmpeg {
                        action: "receive an encoded packet",
                        source: e,
                    })
                }
            }
            let pts = self.packet.pts().unwrap_or(i64::MIN);
            let frame_id = self.frame_id_for(pts);
            let keyframe = self.packet.is_key();
            let codec = self.config.codec;
            let data = self.packet.data().unwrap_or(&[]);
            let data: &[u8] = if keyframe {
                if annexb::has_parameter_sets(data, codec) {
                    self.parameter_sets.clear();
                    for nal in annexb::nal_units(data).filter(|n| n.is_parameter_set(codec)) {
                        self.parameter_sets.extend_from_slice(&[0, 0, 0, 1]);
                        self.parameter_sets.extend_from_slice(nal.data);
                    }
                    data
                } else {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(&self.parameter_sets);
                    self.scratch.extend_from_slice(data);
                    &self.scratch
                }
            } else {
                data
            };
            let au = AccessUnit {
                data,
                frame_id,
                keyframe,
                codec: codec.ring_codec(),
                pts,
            };
            match sink.write_access_unit(&au) {
                Ok(n) => {
                    written.push(n);
                    self.frames_out += 1;
                }
                Err(e) => {
                    self.force_keyframe = true;
                    return Err(EncodeError::Sink(e));
                }
            }
        }
    }

    /// The frame_id of the frame with presentation index `pts`. Without B-frames the
    /// output is in input order; frames an encoder dropped are skipped.
    fn frame_id_for(&mut self, pts: i64) -> u64 {
        while let Some(&(p, id)) = self.in_flight.front() {
            if p < pts {
                self.in_flight.pop_front();
                continue;
            }
            if p == pts {
                self.in_flight.pop_front();
            }
            return id;
        }
        0
    }
}

/// A short reason for an auto-fallback list.
fn short_reason(e: &EncodeError) -> String {
    match e {
        EncodeError::Open { source, .. } => source.to_string(),
        EncodeError::UnknownEncoder { .. } => "not in this FFmpeg build".to_string(),
        other => other.to_string(),
    }
}

/// The encoder's input format: the caller's NV12 as is if the encoder takes it,
/// otherwise 8-bit 4:2:0 (yuv420p preferred: every encoder here takes it).
fn choose_format(input: PixelFormat, supported: &[Pixel]) -> Pixel {
    if input == PixelFormat::Nv12 && supported.contains(&Pixel::NV12) {
        return Pixel::NV12;
    }
    for candidate in [Pixel::YUV420P, Pixel::NV12] {
        if supported.is_empty() || supported.contains(&candidate) {
            return candidate;
        }
    }
    supported[0]
}

/// Generic and private FFmpeg options, in `ffmpeg -KEY VALUE` form: the low-latency
/// defaults for `name`, then the caller's overrides.
fn encoder_options(name: &str, config: &EncoderConfig) -> Vec<(String, String)> {
    let bitrate = config.bitrate_bps;
    let (maxrate, bufsize) = match config.rate_control {
        RateControl::Cbr => (bitrate, bitrate),
        RateControl::Vbr => (bitrate * 2, bitrate * 2),
    };
    let mut o: Vec<(&str, String)> = vec![
        ("b", bitrate.to_string()),
        ("maxrate", maxrate.to_string()),
        ("bufsize", bufsize.to_string()),
        ("g", config.gop.to_string()),
        ("bf", "0".into()),
    ];
    let rc = match config.rate_control {
        RateControl::Cbr => "cbr",
        RateControl::Vbr => "vbr",
    };
    match name {
        "libx264" => o.extend([
            ("threads", "auto".into()),
            ("thread_type", "slice".into()),
            ("preset", "ultrafast".into()),
            ("tune", "zerolatency".into()),
            ("forced-idr", "1".into()),
            ("x264-params", format!("scenecut=0:keyint-min={}", config.gop)),
        ]),
        "libx265" => o.extend([
            ("preset", "ultrafast".into()),
            ("tune", "zerolatency".into()),
            ("forced-idr", "1".into()),
            (
                "x265-params",
                format!(
                    "scenecut=0:open-gop=0:min-keyint={}:repeat-headers=1:log-level=error",
                    config.gop
                ),
            ),
        ]),
        n if n.ends_with("_nvenc") => o.extend([
            ("preset", "p1".into()),
            ("tune", "ull".into()),
            ("rc", rc.into()),
            ("zerolatency", "1".into()),
            ("delay", "0".into()),
            ("rc-lookahead", "0".into()),
            ("forced-idr", "1".into()),
            ("no-scenecut", "1".into()),
            ("strict_gop", "1".into()),
        ]),
        _ => o.extend([("threads", "auto".into())]),
    }
    let mut options: Vec<(String, String)> = o.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    for (k, v) in &config.options {
        options.retain(|(key, _)| key != k);
        options.push((k.clone(), v.clone()));
    }
    options
}

/// Copies `rows` rows of `row_bytes` from `src` (rows `stride` apart) into plane `plane`
/// of `dst`. The caller has checked that `src` holds them.
fn copy_plane(src: &[u8], stride: usize, dst: &mut frame::Video, plane: usize, row_bytes: usize, rows: usize) {
    let dst_stride = dst.stride(plane);
    let out = dst.data_mut(plane);
    for r in 0..rows {
        out[r * dst_stride..r * dst_stride + row_bytes].copy_from_slice(&src[r * stride..r * stride + row_bytes]);
    }
}

/// The byte range of `memory` (`len` bytes) that `rows` rows of `row_bytes` bytes,
/// starting at `first_row` and `stride` apart, cover; `None` if any row is out of bounds.
fn row_span(
    len: usize,
    first_row: usize,
    stride: isize,
    row_bytes: usize,
    rows: usize,
) -> Option<std::ops::Range<usize>> {
    if rows == 0 || stride.unsigned_abs() < row_bytes {
        return None;
    }
    let last_row = isize::try_from(first_row)
        .ok()?
        .checked_add(stride.checked_mul(isize::try_from(rows - 1).ok()?)?)?;
    let last_row = usize::try_from(last_row).ok()?;
    let (low, high) = (first_row.min(last_row), first_row.max(last_row));
    let end = high.checked_add(row_bytes)?;
    (end <= len).then_some(low..end)
}

/// Bytes past the end of a row that swscale's vector loads may read (its x86 input
/// readers load 16 to 64 bytes at a time).
const CONVERTER_OVERREAD: usize = 128;

/// True if reading up to [`CONVERTER_OVERREAD`] bytes past `end` stays on the page that
/// holds the byte before `end`: pages are mapped whole, so those bytes are readable.
fn overread_is_safe(end: *const u8) -> bool {
    const PAGE: usize = 4096;
    let last = (end as usize).wrapping_sub(1);
    last / PAGE == last.wrapping_add(CONVERTER_OVERREAD) / PAGE
}

/// Gives the frame's buffers back to us if the encoder still references them (FFmpeg
/// encoders may keep a reference to a frame after `send_frame`).
fn make_writable(frame: &mut frame::Video) -> Result<(), EncodeError> {
    // SAFETY: `frame` owns a valid AVFrame allocated with buffers by ffmpeg-next;
    // av_frame_make_writable only replaces its buffers (copying the data) when they are
    // shared, and keeps the frame valid either way.
    let ret = unsafe { ff::ffi::av_frame_make_writable(frame.as_mut_ptr()) };
    if ret < 0 {
        return Err(EncodeError::Ffmpeg {
            action: "get a writable frame buffer",
            source: ff::Error::from(ret),
        });
    }
    Ok(())
}
