//! What this machine can do for NVENC: the CUDA driver, the GPUs (via `nvidia-smi`),
//! the NVENC encoders in this FFmpeg, and a real 320x240 probe encode with each. The
//! `validate-nvenc` binary prints [`Report::to_json`] and exits with
//! [`Report::exit_code`].

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};

use crate::testpattern::TestPattern;
use crate::{annexb, EncodeError, Encoder, EncoderChoice, EncoderConfig, OwnedAccessUnit, VideoCodec};

/// Overall verdict, with the exit codes of the seed's validation script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// CUDA works and h264_nvenc encoded the probe frames (exit code 0).
    Ok,
    /// CUDA works but NVENC did not encode (exit code 1).
    Unavailable,
    /// The CUDA driver library could not be loaded or initialised, or has no device
    /// (exit code 2).
    NoCuda,
}

impl Status {
    /// 0, 1 or 2.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Unavailable => 1,
            Status::NoCuda => 2,
        }
    }

    /// `OK`, `UNAVAIL` or `NO_CUDA`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Unavailable => "UNAVAIL",
            Status::NoCuda => "NO_CUDA",
        }
    }
}

/// The CUDA driver as seen through `libcuda.so.1`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CudaInfo {
    /// True if the library loaded, `cuInit` succeeded and there is at least one device.
    pub available: bool,
    /// Driver API version (for example 12040 for 12.4).
    pub driver_version: Option<i32>,
    /// Devices the driver reports.
    pub device_count: Option<i32>,
    /// Device names.
    pub devices: Vec<String>,
    /// Why CUDA is not available.
    pub error: Option<String>,
}

type CuInit = unsafe extern "C" fn(c_uint) -> c_int;
type CuIntOut = unsafe extern "C" fn(*mut c_int) -> c_int;
type CuDeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
type CuDeviceGetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;

/// Looks up `name` in `lib`.
fn symbol(lib: *mut c_void, name: &CStr) -> Option<*mut c_void> {
    // SAFETY: `lib` is a live handle from dlopen (never closed) and `name` is a
    // NUL-terminated string; dlsym only reads them.
    let sym = unsafe { libc::dlsym(lib, name.as_ptr()) };
    (!sym.is_null()).then_some(sym)
}

/// Loads `libcuda.so.1` and asks the driver for its version and devices.
pub fn cuda_info() -> CudaInfo {
    let mut info = CudaInfo::default();
    // SAFETY: dlopen with a NUL-terminated constant name; loading the NVIDIA driver
    // library runs its initialisers, which is what every CUDA program does.
    let lib = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if lib.is_null() {
        info.error = Some("cannot load libcuda.so.1 (no NVIDIA driver; in Docker, run with --gpus all)".into());
        return info;
    }
    let (Some(init), Some(version), Some(count), Some(get), Some(get_name)) = (
        symbol(lib, c"cuInit"),
        symbol(lib, c"cuDriverGetVersion"),
        symbol(lib, c"cuDeviceGetCount"),
        symbol(lib, c"cuDeviceGet"),
        symbol(lib, c"cuDeviceGetName"),
    ) else {
        info.error = Some("libcuda.so.1 lacks the CUDA driver API entry points".into());
        return info;
    };
    // SAFETY: these are the CUDA driver API's documented C signatures for these symbols
    // (CUresult is a C enum, int-sized; CUdevice is an int).
    let (init, version, count, get, get_name) = unsafe {
        (
            std::mem::transmute::<*mut c_void, CuInit>(init),
            std::mem::transmute::<*mut c_void, CuIntOut>(version),
            std::mem::transmute::<*mut c_void, CuIntOut>(count),
            std::mem::transmute::<*mut c_void, CuDeviceGet>(get),
            std::mem::transmute::<*mut c_void, CuDeviceGetName>(get_name),
        )
    };
    let mut v: c_int = 0;
    // SAFETY: `v` is a valid out-pointer for the duration of the call.
    if unsafe { version(&mut v) } == 0 {
        info.driver_version = Some(v);
    }
    // SAFETY: cuInit takes flags by value; 0 is the only valid value.
    let rc = unsafe { init(0) };
    if rc != 0 {
        info.error = Some(format!(
            "cuInit failed with CUDA error {rc} (no usable GPU, or driver/library mismatch)"
        ));
        return info;
    }
    let mut n: c_int = 0;
    // SAFETY: `n` is a valid out-pointer.
    if unsafe { count(&mut n) } != 0 {
        info.error = Some("cuDeviceGetCount failed".into());
        return info;
    }
    info.device_count = Some(n);
    for ordinal in 0..n {
        let mut device: c_int = 0;
        let mut name = [0 as c_char; 256];
        // SAFETY: valid out-pointers; `name` has the length we pass, and the driver
        // NUL-terminates within it.
        let ok =
            unsafe { get(&mut device, ordinal) == 0 && get_name(name.as_mut_ptr(), name.len() as c_int, device) == 0 };
        if ok {
            let bytes: Vec<u8> = name.iter().map(|c| *c as u8).collect();
            if let Ok(text) = CStr::from_bytes_until_nul(&bytes) {
                info.devices.push(text.to_string_lossy().into_owned());
            }
        }
    }
    info.available = n > 0;
    if n == 0 {
        info.error = Some("the CUDA driver reports no devices".into());
    }
    info
}

/// `nvidia-smi`'s view of the GPUs, or why it has none.
pub fn gpu_info() -> Value {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,driver_version,memory.total,utilization.gpu,encoder.stats.sessionCount",
            "--format=csv,noheader,nounits",
        ])
        .output();
    match out {
        Err(e) => {
            json!({"nvidia_smi": false, "error": format!("nvidia-smi not runnable: {e}"), "gpus": []})
        }
        Ok(o) if !o.status.success() => json!({
            "nvidia_smi": true,
            "error": format!("{} {}", String::from_utf8_lossy(&o.stderr).trim(), String::from_utf8_lossy(&o.stdout).trim()).trim().to_string(),
            "gpus": [],
        }),
        Ok(o) => {
            let gpus: Vec<Value> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|line| {
                    let f: Vec<&str> = line.split(',').map(str::trim).collect();
                    let get = |i: usize| f.get(i).copied().unwrap_or("");
                    json!({
                        "index": get(0).parse::<u32>().ok(),
                        "name": get(1),
                        "driver_version": get(2),
                        "memory_total_mib": get(3).parse::<u64>().ok(),
                        "utilization_gpu_percent": get(4).parse::<u32>().ok(),
                        "encoder_sessions": get(5).parse::<u32>().ok(),
                    })
                })
                .collect();
            json!({"nvidia_smi": true, "error": null, "gpus": gpus})
        }
    }
}

/// Result of encoding a few 320x240 frames with one encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeEncode {
    /// The encoder's name.
    pub encoder: String,
    /// True if this FFmpeg build has the encoder.
    pub compiled_in: bool,
    /// True if every frame came out and the first is a keyframe with parameter sets.
    pub ok: bool,
    /// Access units produced.
    pub frames: u64,
    /// Bytes produced.
    pub bytes: u64,
    /// Frames per second of the probe (opening excluded).
    pub fps: Option<f64>,
    /// What went wrong.
    pub error: Option<String>,
}

/// Frames in the probe encode.
const PROBE_FRAMES: u64 = 30;

/// Opens `name` and encodes 30 frames of the 320x240 test pattern with it.
pub fn probe_encode(name: &str, codec: VideoCodec) -> ProbeEncode {
    let mut result = ProbeEncode {
        encoder: name.to_string(),
        compiled_in: ffmpeg_next::encoder::find_by_name(name).is_some(),
        ok: false,
        frames: 0,
        bytes: 0,
        fps: None,
        error: None,
    };
    let config = EncoderConfig {
        codec,
        encoder: EncoderChoice::Named(name.into()),
        ..EncoderConfig::new(320, 240)
    };
    let run = || -> Result<(u64, u64, f64, bool), EncodeError> {
        let mut encoder = Encoder::new(config)?;
        let pattern = TestPattern::new(320, 240, encoder.config().input);
        let mut out: Vec<OwnedAccessUnit> = Vec::new();
        let start = Instant::now();
        for i in 0..PROBE_FRAMES {
            encoder.encode(&pattern.render(i), pattern.stride(), i, &mut out)?;
        }
        encoder.flush(&mut out)?;
        let seconds = start.elapsed().as_secs_f64();
        let first_ok = out
            .first()
            .is_some_and(|au| au.keyframe && annexb::has_parameter_sets(&au.data, codec));
        Ok((
            out.len() as u64,
            out.iter().map(|a| a.data.len() as u64).sum(),
            seconds,
            first_ok,
        ))
    };
    match run() {
        Ok((frames, bytes, seconds, first_ok)) => {
            result.frames = frames;
            result.bytes = bytes;
            result.fps = Some(frames as f64 / seconds.max(1e-9));
            result.ok = first_ok && frames == PROBE_FRAMES;
            if !result.ok {
                result.error = Some(format!(
                    "{frames} of {PROBE_FRAMES} frames, first a keyframe with parameter sets: {first_ok}"
                ));
            }
        }
        Err(e) => result.error = Some(e.to_string()),
    }
    result
}

/// Everything `validate-nvenc` reports.
#[derive(Clone, Debug)]
pub struct Report {
    /// The verdict.
    pub status: Status,
    /// The CUDA driver.
    pub cuda: CudaInfo,
    /// `nvidia-smi` output, parsed.
    pub gpu: Value,
    /// h264_nvenc and hevc_nvenc probes (attempted even without CUDA, so the report
    /// shows FFmpeg's own error).
    pub nvenc: Vec<ProbeEncode>,
    /// The software fallback's probe (libx264), so the report says what will be used.
    pub software: ProbeEncode,
}

/// Runs every check.
pub fn run() -> Report {
    let cuda = cuda_info();
    let gpu = gpu_info();
    let nvenc: Vec<ProbeEncode> = [("h264_nvenc", VideoCodec::H264), ("hevc_nvenc", VideoCodec::HEVC)]
        .into_iter()
        .map(|(name, codec)| probe_encode(name, codec))
        .collect();
    let software = probe_encode("libx264", VideoCodec::H264);
    let status = if !cuda.available {
        Status::NoCuda
    } else if nvenc[0].ok {
        Status::Ok
    } else {
        Status::Unavailable
    };
    Report {
        status,
        cuda,
        gpu,
        nvenc,
        software,
    }
}

fn probe_json(p: &ProbeEncode) -> Value {
    json!({
        "compiled_in": p.compiled_in,
        "ok": p.ok,
        "frames": p.frames,
        "bytes": p.bytes,
        "fps": p.fps,
        "error": p.error,
    })
}

impl Report {
    /// 0 = OK, 1 = UNAVAIL, 2 = NO_CUDA.
    pub fn exit_code(&self) -> i32 {
        self.status.exit_code()
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let encoders: serde_json::Map<String, Value> = self
            .nvenc
            .iter()
            .chain([&self.software])
            .map(|p| (p.encoder.clone(), probe_json(p)))
            .collect();
        json!({
            "status": self.status.name(),
            "exit_code": self.exit_code(),
            "cuda": {
                "cuda_available": self.cuda.available,
                "driver_version": self.cuda.driver_version,
                "device_count": self.cuda.device_count,
                "devices": self.cuda.devices,
                "error": self.cuda.error,
            },
            "gpu": self.gpu,
            "nvenc_available": {
                "h264_nvenc": self.nvenc.first().is_some_and(|p| p.ok),
                "hevc_nvenc": self.nvenc.get(1).is_some_and(|p| p.ok),
            },
            "probe": {"width": 320, "height": 240, "frames": PROBE_FRAMES},
            "encoders": encoders,
            "ffmpeg": {
                "libavcodec_version": version_string(ffmpeg_next::codec::version()),
                "libavutil_version": version_string(ffmpeg_next::util::version()),
            },
        })
    }
}

fn version_string(v: u32) -> String {
    format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
}
