//! Helpers shared by the integration tests: temporary rings, decoding with FFmpeg's
//! own decoders, reference conversion and PSNR.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use shmring_nvenc::ffmpeg_next as ff;
use shmring_nvenc::{PixelFormat, VideoCodec};

/// A fresh directory for one test's rings, removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "shmring-nvenc-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One decoded picture as tightly packed yuv420p planes.
pub(crate) struct Decoded {
    pub width: u32,
    pub height: u32,
    pub key: bool,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

fn packed_planes(frame: &ff::frame::Video) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut planes = Vec::new();
    for p in 0..3 {
        let (w, h) = (frame.plane_width(p) as usize, frame.plane_height(p) as usize);
        let stride = frame.stride(p);
        let data = frame.data(p);
        let mut out = Vec::with_capacity(w * h);
        for r in 0..h {
            out.extend_from_slice(&data[r * stride..r * stride + w]);
        }
        planes.push(out);
    }
    let v = planes.pop().unwrap();
    let u = planes.pop().unwrap();
    (planes.pop().unwrap(), u, v)
}

/// Decodes access units one by one. Returns, per access unit, the pictures the decoder
/// gave back right after it (zero-delay decoding gives exactly one each), then the
/// pictures that only came out at the end of the stream.
pub(crate) fn decode(codec: VideoCodec, units: &[Vec<u8>]) -> (Vec<Vec<Decoded>>, Vec<Decoded>) {
    ff::init().unwrap();
    let id = match codec {
        VideoCodec::H264 => ff::codec::Id::H264,
        VideoCodec::HEVC => ff::codec::Id::HEVC,
    };
    let decoder_codec = ff::decoder::find(id).expect("FFmpeg has the decoder");
    let mut decoder = ff::codec::context::Context::new_with_codec(decoder_codec)
        .decoder()
        .video()
        .unwrap();
    let mut frame = ff::frame::Video::empty();
    let mut take = |decoder: &mut ff::decoder::Video, out: &mut Vec<Decoded>| {
        while decoder.receive_frame(&mut frame).is_ok() {
            assert_eq!(frame.format(), ff::util::format::Pixel::YUV420P, "decoded pixel format");
            let (y, u, v) = packed_planes(&frame);
            out.push(Decoded {
                width: frame.width(),
                height: frame.height(),
                key: frame.is_key(),
                y,
                u,
                v,
            });
        }
    };
    let mut per_unit = Vec::new();
    for unit in units {
        decoder
            .send_packet(&ff::Packet::copy(unit))
            .expect("decoder accepts the access unit");
        let mut got = Vec::new();
        take(&mut decoder, &mut got);
        per_unit.push(got);
    }
    decoder.send_eof().unwrap();
    let mut tail = Vec::new();
    take(&mut decoder, &mut tail);
    (per_unit, tail)
}

/// The source frame converted to yuv420p by swscale, as the encoder's input was.
pub(crate) fn reference_yuv(format: PixelFormat, width: u32, height: u32, frame: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    ff::init().unwrap();
    let pix = match format {
        PixelFormat::Rgb24 => ff::util::format::Pixel::RGB24,
        PixelFormat::Rgba => ff::util::format::Pixel::RGBA,
        PixelFormat::Bgra => ff::util::format::Pixel::BGRA,
        PixelFormat::Nv12 => ff::util::format::Pixel::NV12,
    };
    let mut src = ff::frame::Video::new(pix, width, height);
    let planes = if format == PixelFormat::Nv12 { 2 } else { 1 };
    let mut offset = 0;
    for p in 0..planes {
        let row = format.packed_stride(width);
        let rows = src.plane_height(p) as usize;
        let stride = src.stride(p);
        let dst = src.data_mut(p);
        for r in 0..rows {
            dst[r * stride..r * stride + row].copy_from_slice(&frame[offset + r * row..offset + (r + 1) * row]);
        }
        offset += rows * row;
    }
    let mut dst = ff::frame::Video::new(ff::util::format::Pixel::YUV420P, width, height);
    let mut scaler = ff::software::scaling::Context::get(
        pix,
        width,
        height,
        ff::util::format::Pixel::YUV420P,
        width,
        height,
        ff::software::scaling::Flags::BICUBIC,
    )
    .unwrap();
    scaler.run(&src, &mut dst).unwrap();
    packed_planes(&dst)
}

/// PSNR in dB of `b` against `a` (8-bit samples); infinity when equal.
pub(crate) fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let se: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    if se == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / (se / a.len() as f64)).log10()
}

/// PSNR over all three planes together.
pub(crate) fn psnr_yuv(reference: &(Vec<u8>, Vec<u8>, Vec<u8>), d: &Decoded) -> f64 {
    let a: Vec<u8> = [&reference.0[..], &reference.1[..], &reference.2[..]].concat();
    let b: Vec<u8> = [&d.y[..], &d.u[..], &d.v[..]].concat();
    psnr(&a, &b)
}

/// Prints why a hardware test did not run (the only reason a test here skips).
pub(crate) fn skip_without_gpu(what: &str, why: &dyn std::fmt::Display) {
    println!("SKIP {what}: needs an NVIDIA GPU with NVENC ({why})");
}
