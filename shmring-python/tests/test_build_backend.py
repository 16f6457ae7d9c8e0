"""The build backend turns the `video` feature on by itself where FFmpeg's development
files are installed, and says what to install where they are not."""

from __future__ import annotations

import importlib
import os
import stat
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("maturin")  # the backend wraps it
sys.path.insert(0, str(REPO / "shmring-python" / "build_backend"))
shmring_build = importlib.import_module("shmring_build")


def fake_pkg_config(tmp_path: Path, known: bool) -> str:
    """A pkg-config that knows every package, or none."""
    script = tmp_path / "pkg-config"
    script.write_text(f"#!/bin/sh\nexit {0 if known else 1}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_video_where_ffmpeg_is_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHMRING_VIDEO", raising=False)
    monkeypatch.setenv("PKG_CONFIG", fake_pkg_config(tmp_path, known=True))
    monkeypatch.setattr(shmring_build, "_libclang_found", lambda: True)
    assert shmring_build._with_video([]) == ["--features", "video"]
    assert shmring_build._with_video(["--features", "video"]) == ["--features", "video"]
    monkeypatch.setenv("SHMRING_VIDEO", "0")
    assert shmring_build._with_video([]) == []


def test_no_video_and_what_to_install_where_it_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SHMRING_VIDEO", raising=False)
    monkeypatch.setenv("PKG_CONFIG", fake_pkg_config(tmp_path, known=False))
    assert shmring_build._with_video([]) == []
    said = capsys.readouterr().err
    assert "pkg-config does not find libavcodec, libavformat, libavutil, libswscale" in said
    assert "sudo apt-get install pkg-config clang libclang-dev libavcodec-dev" in said
    monkeypatch.setenv("SHMRING_VIDEO", "1")  # insisting builds it (and fails visibly)
    assert shmring_build._with_video([]) == ["--features", "video"]
    monkeypatch.setenv("PKG_CONFIG", os.devnull + "/none")
    monkeypatch.setenv("SHMRING_VIDEO", "auto")
    assert shmring_build.ffmpeg_missing() == "pkg-config is not installed"
