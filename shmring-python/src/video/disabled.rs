//! `VideoWriter` in a build without the `video` feature: opening fails saying what to
//! install, so a `Session` never exists.

use std::path::Path;

use pyo3::prelude::*;

use super::Settings;
use crate::errors::FeatureNotBuiltError;

/// What to install and run to get `VideoWriter` (shown in the error; the build backend,
/// build_backend/shmring_build.py, prints the same).
const INSTALL_HINT: &str = "install FFmpeg's development files, pkg-config and libclang, then reinstall: \
Debian/Ubuntu: sudo apt-get install pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev libswscale-dev; \
Fedora (RPM Fusion): sudo dnf install pkgconf clang-devel ffmpeg-devel; \
then: pip install --force-reinstall ./shmring-python (or install a shmring wheel, which carries its own FFmpeg)";

/// Uninhabited: without the encoder there is never an open session.
pub(crate) enum Session {}

impl Session {
    pub(crate) fn open(_py: Python<'_>, _path: &Path, _settings: &Settings<'_>) -> PyResult<Self> {
        Err(FeatureNotBuiltError::new_err(format!(
            "shmring.VideoWriter needs FFmpeg, and this shmring was built without it (FFmpeg's development files were not found, or SHMRING_VIDEO=0); to get it, {INSTALL_HINT}"
        )))
    }

    pub(crate) fn write(
        &mut self,
        _py: Python<'_>,
        _frame: &Bound<'_, PyAny>,
        _timestamp_ns: Option<u64>,
    ) -> PyResult<Option<u64>> {
        match *self {}
    }

    pub(crate) fn request_keyframe(&mut self) {
        match *self {}
    }

    pub(crate) fn finish(self, _py: Python<'_>) -> PyResult<()> {
        match self {}
    }
}
