//! `VideoWriter` in a build without the `video` feature: opening fails with the command
//! that builds it, so a `Session` never exists.

use std::path::Path;

use pyo3::prelude::*;

use super::Settings;
use crate::errors::FeatureNotBuiltError;

/// The command that builds the package with `VideoWriter` (shown in the error).
const BUILD_COMMAND: &str = "MATURIN_PEP517_ARGS=\"--features video\" pip install ./shmring-python";

/// Uninhabited: without the encoder there is never an open session.
pub(crate) enum Session {}

impl Session {
    pub(crate) fn open(_py: Python<'_>, _path: &Path, _settings: &Settings<'_>) -> PyResult<Self> {
        Err(FeatureNotBuiltError::new_err(format!(
            "shmring.VideoWriter needs the `video` cargo feature, and this shmring was built without it; rebuild with: {BUILD_COMMAND}"
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
