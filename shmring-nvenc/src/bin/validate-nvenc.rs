//! `validate-nvenc`: checks the CUDA driver, the GPUs and NVENC (with a real 320x240
//! encode), prints one JSON object on stdout and exits 0 = OK, 1 = UNAVAIL (CUDA but no
//! working NVENC), 2 = NO_CUDA. Takes no arguments except `--help`.

use shmring_nvenc::ffmpeg_next::util::log;

fn main() {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!(
            "validate-nvenc: check NVENC availability\n\n\
             Usage: validate-nvenc\n\n\
             Prints a JSON report on stdout: CUDA driver (libcuda.so.1, version, devices),\n\
             GPUs (nvidia-smi), h264_nvenc / hevc_nvenc availability with a real 320x240\n\
             probe encode, and the libx264 fallback.\n\n\
             Exit codes: 0 OK (h264_nvenc encodes), 1 UNAVAIL (CUDA works, NVENC does not),\n\
             2 NO_CUDA (no usable CUDA driver or device)."
        );
        return;
    }
    if let Some(arg) = std::env::args().nth(1) {
        eprintln!("validate-nvenc: unexpected argument {arg:?} (see --help)");
        std::process::exit(64);
    }
    // FFmpeg's own messages would mix with the report; the report carries the errors.
    log::set_level(log::Level::Fatal);
    let report = shmring_nvenc::probe::run();
    println!(
        "{}",
        serde_json::to_string_pretty(&report.to_json()).expect("a JSON value serialises")
    );
    std::process::exit(report.exit_code());
}
