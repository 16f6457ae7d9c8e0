"""Type stubs for the compiled half of shmring (checked against it by mypy stubtest)."""

import os
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, TypeAlias, final

from typing_extensions import Buffer, Self

import numpy as np
import numpy.typing as npt

__all__ = [
    "VIDEO_FEATURE",
    "ClosedError",
    "CorruptFrameError",
    "CrcMismatchError",
    "EncoderError",
    "FeatureNotBuiltError",
    "Frame",
    "FrameTooLargeError",
    "LayoutError",
    "Reader",
    "ReaderStats",
    "RingDamagedError",
    "RingIOError",
    "RingNotFoundError",
    "ShmringError",
    "VideoWriter",
    "Writer",
    "WriterExistsError",
]

VIDEO_FEATURE: bool
"""True if this build has the ``video`` feature (a working :class:`VideoWriter`)."""

class ShmringError(Exception):
    """Base class of every error shmring raises."""

class RingIOError(ShmringError):
    """An operating-system call on the ring file failed."""

class RingNotFoundError(ShmringError):
    """There is no ring file at the path."""

class WriterExistsError(ShmringError):
    """Another process is writing the ring."""

    pid: int | None
    """The writer's process id, when it could be found."""

class LayoutError(ShmringError):
    """The file is not a ring this shmring can use, or the requested geometry is invalid."""

class RingDamagedError(ShmringError):
    """The ring's live counters are impossible, so a writer cannot continue it."""

class FrameTooLargeError(ShmringError):
    """The payload is larger than the ring's max_frame_size; nothing was written."""

class CorruptFrameError(ShmringError):
    """A record with an impossible header was skipped; the next read continues after it."""

class CrcMismatchError(ShmringError):
    """A frame failed its CRC-32 check and was skipped; the next read continues after it."""

class ClosedError(ShmringError):
    """The Writer, Reader or VideoWriter was closed."""

class EncoderError(ShmringError):
    """VideoWriter could not open an encoder or encode a frame."""

class FeatureNotBuiltError(ShmringError):
    """This build of shmring lacks the cargo feature the call needs."""

@final
class Writer:
    """The one writer of a ring file.

    Opening it installs shmring's process-wide SIGBUS truncation guard (once per process;
    ``SHMRING_NO_SIGBUS_GUARD=1`` in the environment turns it off): a truncated ring file
    raises ``RingDamagedError`` instead of killing the process.
    """

    def __new__(
        cls,
        path: str | os.PathLike[str],
        *,
        capacity: int | None = None,
        max_frame_size: int | None = None,
        layout: Literal["v1", "ring", "legacy"] = "v1",
        mode: int = 0o600,
        crc: bool = True,
    ) -> Self: ...
    def write(
        self,
        data: Buffer | npt.NDArray[Any],
        *,
        keyframe: bool = False,
        codec: int = 1,
        frame_id: int | None = None,
    ) -> int:
        """Writes one frame; returns its frame_seq."""

    def heartbeat(self) -> None:
        """Records that the producer is alive without writing a frame."""

    def close(self) -> None:
        """Closes the ring and releases the writer lock."""

    @property
    def closed(self) -> bool: ...
    @property
    def path(self) -> Path: ...
    @property
    def layout(self) -> Literal["v1", "legacy"]: ...
    @property
    def capacity(self) -> int: ...
    @property
    def max_frame_size(self) -> int: ...
    @property
    def next_frame_seq(self) -> int: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        _exc_type: type[BaseException] | None = None,
        _exc: BaseException | None = None,
        _tb: TracebackType | None = None,
    ) -> None: ...

@final
class Frame:
    """One frame read from a ring."""

    @property
    def payload(self) -> bytes:
        """The payload; ``numpy.frombuffer(frame.payload, ...)`` needs no copy."""

    @property
    def frame_id(self) -> int: ...
    @property
    def frame_seq(self) -> int: ...
    @property
    def keyframe(self) -> bool: ...
    @property
    def codec(self) -> int:
        """A ``shmring.Codec`` member for the codecs it names, else the plain number."""

    @property
    def crc32(self) -> int: ...
    @property
    def lost_before(self) -> int: ...
    def __len__(self) -> int: ...
    def __bytes__(self) -> bytes: ...

@final
class ReaderStats:
    """A reader's accounting."""

    @property
    def delivered(self) -> int: ...
    @property
    def lost(self) -> int: ...
    @property
    def lapped(self) -> int: ...
    @property
    def crc_errors(self) -> int: ...
    @property
    def corrupt(self) -> int: ...

@final
class Reader:
    """A reader of a ring file; maps it read-only.

    Opening it installs shmring's process-wide SIGBUS truncation guard (once per process;
    ``SHMRING_NO_SIGBUS_GUARD=1`` in the environment turns it off): a truncated ring file
    raises ``RingDamagedError`` instead of killing the process.
    """

    def __new__(
        cls,
        path: str | os.PathLike[str],
        *,
        start: Literal["latest_keyframe", "next", "latest"] = "latest_keyframe",
        crc: bool = True,
        layout: Literal["auto", "v1", "ring", "legacy"] = "auto",
        resync_at_keyframe: bool = True,
        wake: Literal["cadence", "sleep"] = "cadence",
        cadence_window: float | None = None,
    ) -> Self: ...
    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, waiting up to ``timeout`` seconds (None: forever)."""

    def read_latest(self) -> Frame | None:
        """The newest frame, skipping any in between; never waits."""

    def __iter__(self) -> Self: ...
    def __next__(self) -> Frame: ...
    @property
    def stats(self) -> ReaderStats: ...
    @property
    def max_frame_size(self) -> int: ...
    @property
    def layout(self) -> Literal["v1", "legacy"]: ...
    @property
    def path(self) -> Path: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None:
        """Unmaps the ring."""

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        _exc_type: type[BaseException] | None = None,
        _exc: BaseException | None = None,
        _tb: TracebackType | None = None,
    ) -> None: ...

class _SupportsDLPack(Protocol):
    """Exports a DLPack tensor (torch, JAX, CuPy arrays)."""

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any: ...

class _SupportsArrayInterface(Protocol):
    """Describes its memory with numpy's ``__array_interface__``."""

    @property
    def __array_interface__(self) -> dict[str, Any]: ...

_Image: TypeAlias = npt.NDArray[np.uint8] | Buffer | _SupportsDLPack | _SupportsArrayInterface

@final
class VideoWriter:
    """Encodes raw frames to H.264/HEVC and writes the access units into a ring."""

    def __new__(
        cls,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        fps: float,
        *,
        codec: Literal["h264", "hevc"] = "h264",
        encoder: str = "auto",
        bitrate: int | None = None,
        gop: int | None = None,
        options: dict[str, str] | None = None,
    ) -> Self: ...
    def write(self, frame: _Image, *, timestamp_ns: int | None = None) -> int | None:
        """Encodes one (H, W, 3) RGB or (H, W, 4) RGBA uint8 frame (any strides, a
        leading batch axis of 1 allowed; numpy, torch CPU tensors, ``__dlpack__``,
        ``__array_interface__`` or the buffer protocol), stamped with ``timestamp_ns``
        (simulation or capture time, increasing; default: previous + 1/fps), which
        becomes the ring frame's ``frame_id``."""

    def request_keyframe(self) -> None:
        """Makes the next frame a keyframe."""

    def close(self) -> None:
        """Flushes the encoder into the ring and closes it."""

    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        _exc_type: type[BaseException] | None = None,
        _exc: BaseException | None = None,
        _tb: TracebackType | None = None,
    ) -> None: ...
