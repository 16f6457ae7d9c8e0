//! `validate-nvenc` prints valid JSON whose verdict matches its exit code and its own
//! findings; on a machine without a GPU that is NO_CUDA / exit code 2.

use std::process::Command;

use serde_json::Value;

#[test]
fn prints_json_and_exit_code_agree() {
    let out = Command::new(env!("CARGO_BIN_EXE_validate-nvenc")).output().unwrap();
    let code = out.status.code().expect("exited normally");
    let report: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(report["exit_code"].as_i64(), Some(code as i64));
    let cuda = report["cuda"]["cuda_available"]
        .as_bool()
        .expect("cuda_available is a bool");
    let h264 = report["nvenc_available"]["h264_nvenc"]
        .as_bool()
        .expect("h264_nvenc is a bool");
    let expected = match (cuda, h264) {
        (false, _) => ("NO_CUDA", 2),
        (true, true) => ("OK", 0),
        (true, false) => ("UNAVAIL", 1),
    };
    assert_eq!((report["status"].as_str().unwrap(), code), expected, "{report:#}");
    for name in ["h264_nvenc", "hevc_nvenc", "libx264"] {
        assert!(report["encoders"][name]["compiled_in"].is_boolean(), "{name}");
    }
    // The software fallback really encodes the 320x240 probe.
    assert_eq!(report["encoders"]["libx264"]["ok"], Value::Bool(true), "{report:#}");
    assert_eq!(report["encoders"]["libx264"]["frames"], 30);
    if !cuda {
        println!("no CUDA here: {}", report["cuda"]["error"]);
        assert_eq!(code, 2);
        assert_eq!(report["encoders"]["h264_nvenc"]["ok"], Value::Bool(false));
        assert!(report["encoders"]["h264_nvenc"]["error"].is_string());
    }
}

#[test]
fn rejects_unknown_arguments_and_has_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_validate-nvenc"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
    let help = Command::new(env!("CARGO_BIN_EXE_validate-nvenc"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("NO_CUDA") && text.contains("Exit codes"));
}
