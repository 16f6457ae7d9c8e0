//! Cross-process benchmark harnesses (see the binaries).
