//! Where `shmring dump` puts frames: a raw Annex B stream, or a container (Matroska,
//! MP4, MPEG-TS, NUT) in which every frame carries its own time, so a recording of a
//! simulation rendering at 15 frames per second of simulated time plays at 15 fps.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use shmring_nvenc::annexb;
use shmring_nvenc::ffmpeg_next as ff;
use shmring_nvenc::VideoCodec;

/// File name extensions written as a container (everything else is a raw stream).
pub(crate) const CONTAINERS: [&str; 5] = ["mkv", "mp4", "mov", "ts", "nut"];

/// True if `path` names a container by its extension.
pub(crate) fn is_container(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| CONTAINERS.contains(&e.to_ascii_lowercase().as_str()))
}

/// A container being written: one video stream, frames timed in ns.
pub(crate) struct Recording {
    output: ff::format::context::Output,
    path: PathBuf,
    /// The stream's time base, chosen by the muxer.
    time_base: ff::Rational,
    /// Packet time of the previous frame (muxers need increasing times).
    last_pts: Option<i64>,
    /// Frames whose time was not after the previous frame's (moved one tick later).
    pub nudged: u64,
}

/// The codec of a ring codec id, if it can go into a container.
fn video_codec(codec: u16) -> Option<VideoCodec> {
    match codec {
        1 => Some(VideoCodec::H264),
        2 => Some(VideoCodec::HEVC),
        _ => None,
    }
}

/// The picture size of a keyframe, from FFmpeg's decoder.
fn picture_size(codec: VideoCodec, keyframe: &[u8]) -> Result<(u32, u32), String> {
    let id = match codec {
        VideoCodec::H264 => ff::codec::Id::H264,
        VideoCodec::HEVC => ff::codec::Id::HEVC,
    };
    let decoder = ff::decoder::find(id).ok_or_else(|| format!("this FFmpeg has no {codec} decoder"))?;
    let mut decoder = ff::codec::context::Context::new_with_codec(decoder)
        .decoder()
        .video()
        .map_err(|e| format!("cannot open the {codec} decoder: {e}"))?;
    let failed = |e: ff::Error| format!("cannot decode the first keyframe to learn the picture size: {e}");
    decoder.send_packet(&ff::Packet::copy(keyframe)).map_err(failed)?;
    decoder.send_eof().map_err(failed)?;
    let mut picture = ff::frame::Video::empty();
    decoder.receive_frame(&mut picture).map_err(failed)?;
    Ok((picture.width(), picture.height()))
}

impl Recording {
    /// Creates `path` (its extension picks the container) for frames of ring codec
    /// `codec`, starting with `keyframe` (whose parameter sets describe the stream).
    pub(crate) fn create(path: &Path, codec: u16, keyframe: &[u8]) -> Result<Self, String> {
        let codec = video_codec(codec)
            .ok_or_else(|| format!("codec {codec} cannot go into a container; dump it to a raw file instead"))?;
        ff::init().map_err(|e| format!("cannot initialise FFmpeg: {e}"))?;
        ff::log::set_level(ff::log::Level::Error);
        let (width, height) = picture_size(codec, keyframe)?;
        let mut parameter_sets = Vec::new();
        for nal in annexb::nal_units(keyframe).filter(|n| n.is_parameter_set(codec)) {
            parameter_sets.extend_from_slice(&[0, 0, 0, 1]);
            parameter_sets.extend_from_slice(nal.data);
        }
        let mut output = ff::format::output(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        // SAFETY: `output` is an open output context; avformat_new_stream adds a stream
        // it owns (NULL on allocation failure, checked). The stream's codec parameters
        // are plain fields we fill in; extradata is allocated with av_mallocz (with the
        // padding FFmpeg requires) and owned by the parameters from then on.
        unsafe {
            let stream = ff::ffi::avformat_new_stream(output.as_mut_ptr(), std::ptr::null());
            if stream.is_null() {
                return Err("out of memory adding a stream".into());
            }
            let par = (*stream).codecpar;
            (*par).codec_type = ff::ffi::AVMediaType::AVMEDIA_TYPE_VIDEO;
            (*par).codec_id = match codec {
                VideoCodec::H264 => ff::ffi::AVCodecID::AV_CODEC_ID_H264,
                VideoCodec::HEVC => ff::ffi::AVCodecID::AV_CODEC_ID_HEVC,
            };
            (*par).width = width as i32;
            (*par).height = height as i32;
            if !parameter_sets.is_empty() {
                let padding = ff::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
                let extradata = ff::ffi::av_mallocz(parameter_sets.len() + padding).cast::<u8>();
                if extradata.is_null() {
                    return Err("out of memory".into());
                }
                std::ptr::copy_nonoverlapping(parameter_sets.as_ptr(), extradata, parameter_sets.len());
                (*par).extradata = extradata;
                (*par).extradata_size = parameter_sets.len() as i32;
            }
            // A hint (microseconds); the muxer picks the time base it stores.
            (*stream).time_base = ff::ffi::AVRational { num: 1, den: 1_000_000 };
        }
        output
            .write_header()
            .map_err(|e| format!("cannot write the header of {}: {e}", path.display()))?;
        let time_base = output
            .stream(0)
            .map(|s| s.time_base())
            .ok_or("the muxer dropped the stream")?;
        Ok(Recording {
            output,
            path: path.to_path_buf(),
            time_base,
            last_pts: None,
            nudged: 0,
        })
    }

    /// Adds one access unit shown at `time_ns` after the recording's start.
    pub(crate) fn write(&mut self, payload: &[u8], keyframe: bool, time_ns: u64) -> Result<(), String> {
        let ns = ff::Rational::new(1, 1_000_000_000);
        let mut pts = (time_ns as i64).rescale(ns, self.time_base);
        if let Some(last) = self.last_pts {
            if pts <= last {
                pts = last + 1;
                self.nudged += 1;
            }
        }
        self.last_pts = Some(pts);
        let mut packet = ff::Packet::copy(payload);
        packet.set_stream(0);
        packet.set_pts(Some(pts));
        packet.set_dts(Some(pts));
        if keyframe {
            packet.set_flags(ff::packet::Flags::KEY);
        }
        packet
            .write_interleaved(&mut self.output)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }

    /// Writes the container's index and closes the file.
    pub(crate) fn finish(mut self) -> Result<(), String> {
        self.output
            .write_trailer()
            .map_err(|e| format!("cannot finish {}: {e}", self.path.display()))
    }
}

use ff::Rescale;

/// The timestamps of a raw dump, in Matroska's "timestamp format v2" (one line per
/// frame, milliseconds since the first): `mkvmerge --timestamps 0:FILE` muxes with them.
pub(crate) struct TimestampFile {
    out: BufWriter<File>,
    path: PathBuf,
}

impl TimestampFile {
    /// Creates `path` with the format's header line.
    pub(crate) fn create(path: &Path) -> Result<Self, String> {
        let file = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let mut out = BufWriter::new(file);
        writeln!(out, "# timestamp format v2").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(TimestampFile {
            out,
            path: path.to_path_buf(),
        })
    }

    /// Adds the time of the next frame.
    pub(crate) fn push(&mut self, time_ns: u64) -> Result<(), String> {
        writeln!(self.out, "{}.{:06}", time_ns / 1_000_000, time_ns % 1_000_000)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }

    /// Flushes the file.
    pub(crate) fn finish(mut self) -> Result<(), String> {
        self.out
            .flush()
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}
