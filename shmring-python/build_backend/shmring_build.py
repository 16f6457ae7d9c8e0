"""The PEP 517 build backend of the ``shmring`` package: maturin, plus one rule maturin
cannot express itself.

The extension is built against CPython's stable ABI by default (the crate's default
cargo feature ``abi3``, which is PyO3's ``abi3-py311``: 3.11 is the first limited API
with the buffer protocol), so one ``cp311-abi3`` wheel serves CPython 3.11 and every
later version. On CPython 3.10 maturin falls back to a version-specific wheel, but
PyO3 still compiles for the 3.11 API and the module fails to import (undefined symbol
``PyType_GetName``). So on CPython before 3.11 this backend adds
``--no-default-features`` to maturin's arguments, which gives a working 3.10 build.
Every other argument (``MATURIN_PEP517_ARGS="--features video"``, or pip's
``--config-settings maturin.build-args=...``) passes through unchanged.
"""

from __future__ import annotations

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


def _settings(config_settings: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The settings to hand to maturin: unchanged where the abi3 build works."""
    if sys.implementation.name != "cpython" or sys.version_info[:2] >= STABLE_ABI_FROM:
        return config_settings
    args: list[str] = list(maturin.get_maturin_pep517_args(config_settings))
    if "--no-default-features" not in args:
        args = [*args, "--no-default-features"]
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
