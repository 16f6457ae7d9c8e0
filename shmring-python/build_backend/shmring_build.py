"""The PEP 517 build backend of the ``shmring`` package: maturin, plus two rules maturin
cannot express itself.

``VideoWriter`` needs the ``video`` cargo feature, which links FFmpeg. This backend
turns it on by itself where FFmpeg's development files can be found (``pkg-config``
knows libavcodec, libavformat, libavutil and libswscale, and libclang is there for the
bindings), so a plain ``pip install ./shmring-python`` gets a working ``VideoWriter``.
Where they are missing it builds without it and says what to install (``pip install
-v`` shows it; ``VideoWriter`` raises ``FeatureNotBuiltError`` with the same advice).
``SHMRING_VIDEO=1`` insists on the feature (the build fails if FFmpeg is missing),
``SHMRING_VIDEO=0`` leaves it out.

The extension is built against CPython's stable ABI by default (the crate's default
cargo feature ``abi3``, which is PyO3's ``abi3-py311``: 3.11 is the first limited API
with the buffer protocol), so one ``cp311-abi3`` wheel serves CPython 3.11 and every
later version. On CPython 3.10 maturin falls back to a version-specific wheel, but
PyO3 still compiles for the 3.11 API and the module fails to import (undefined symbol
``PyType_GetName``). So on CPython before 3.11 this backend adds
``--no-default-features`` to maturin's arguments, which gives a working 3.10 build.
Every other argument (``MATURIN_PEP517_ARGS``, or pip's
``--config-settings maturin.build-args=...``) passes through unchanged.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import maturin  # type: ignore[import-untyped]  # maturin ships no type information
from maturin import (
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

# The first CPython whose limited API has the buffer protocol the extension uses.
STABLE_ABI_FROM = (3, 11)


# FFmpeg libraries the `video` feature links, by pkg-config name.
FFMPEG_PACKAGES = ("libavcodec", "libavformat", "libavutil", "libswscale")
# What to install where they are missing (also in src/video/disabled.rs).
INSTALL_HINT = (
    "install FFmpeg's development files, pkg-config and libclang, then reinstall: "
    "Debian/Ubuntu: sudo apt-get install pkg-config clang libclang-dev libavcodec-dev "
    "libavformat-dev libavutil-dev libswscale-dev; Fedora (RPM Fusion): sudo dnf install "
    "pkgconf clang-devel ffmpeg-devel; then: pip install --force-reinstall ./shmring-python"
)


def _libclang_found() -> bool:
    """True if bindgen will find a libclang (what clang-sys looks for)."""
    dirs = [os.environ.get("LIBCLANG_PATH", ""), "/usr/lib", "/usr/lib64", "/usr/local/lib"]
    dirs += glob.glob("/usr/lib/llvm-*/lib") + glob.glob("/usr/lib/*-linux-gnu")
    return any(glob.glob(os.path.join(d, "libclang*.so*")) for d in dirs if d)


def ffmpeg_missing() -> str | None:
    """Why the `video` feature cannot be built here, or None if it can."""
    pkg_config = os.environ.get("PKG_CONFIG", "pkg-config")
    if shutil.which(pkg_config) is None:
        return "pkg-config is not installed"
    missing = [p for p in FFMPEG_PACKAGES if subprocess.run([pkg_config, "--exists", p]).returncode != 0]
    if missing:
        return f"pkg-config does not find {', '.join(missing)}"
    if not _libclang_found():
        return "libclang (for the FFmpeg bindings) is not installed"
    return None


def _with_video(args: list[str]) -> list[str]:
    """`args` plus `--features video` where it is wanted and can be built."""
    if any("video" in a for a in args):  # asked for explicitly (--features video)
        return args
    want = os.environ.get("SHMRING_VIDEO", "auto").lower()
    if want in ("0", "false", "no", "off"):
        return args
    reason = ffmpeg_missing()
    if reason is None or want in ("1", "true", "yes", "on"):
        return [*args, "--features", "video"]
    print(
        f"shmring: building without VideoWriter (the `video` feature): {reason}. To get it, {INSTALL_HINT}",
        file=sys.stderr,
    )
    return args


def _settings(config_settings: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The settings to hand to maturin: the `video` feature where FFmpeg is there, and
    no abi3 on CPython 3.10."""
    args: list[str] = list(maturin.get_maturin_pep517_args(config_settings))
    old = list(args)
    args = _with_video(args)
    if sys.implementation.name == "cpython" and sys.version_info[:2] < STABLE_ABI_FROM:
        if "--no-default-features" not in args:
            args = [*args, "--no-default-features"]
    if args == old:
        return config_settings
    return {**(config_settings or {}), "maturin.build-args": args}


def build_wheel(
    wheel_directory: str,
    config_settings: Mapping[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """PEP 517 ``build_wheel``: maturin's, with the version rule above."""
    return str(maturin.build_wheel(wheel_directory, _settings(config_settings), metadata_directory))


def build_editable(
    wheel_directory: str,
    config_settings: Mapping[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """PEP 660 ``build_editable``: maturin's, with the version rule above."""
    return str(maturin.build_editable(wheel_directory, _settings(config_settings), metadata_directory))


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: Mapping[str, Any] | None = None
) -> str:
    """PEP 517 metadata hook: maturin's, with the version rule above."""
    return str(maturin.prepare_metadata_for_build_wheel(metadata_directory, _settings(config_settings)))


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel
