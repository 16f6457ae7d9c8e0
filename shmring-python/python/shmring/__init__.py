"""Shared-memory broadcast ring for encoded video frames.

One :class:`Writer` process publishes frames (H.264/HEVC/JPEG access units, or any
bytes) into a ring file, usually in ``/dev/shm``; any number of :class:`Reader`
processes copy them out. The writer never waits for readers: a reader that falls a
whole lap behind loses frames, is told how many, and resumes at the newest keyframe.
No torn frame is ever returned.

Example::

    import shmring

    with shmring.Writer("/dev/shm/cam0") as w:
        w.write(access_unit, keyframe=True, codec=shmring.Codec.H264)

    with shmring.Reader("/dev/shm/cam0") as r:
        frame = r.read(timeout=1.0)
        if frame is not None:
            print(frame.frame_seq, len(frame.payload))

The first ring the process opens installs a process-wide SIGBUS handler, so that another
process truncating the ring file raises :class:`RingDamagedError` instead of killing the
interpreter; every other SIGBUS goes to the handler installed before (``faulthandler``
included). Set ``SHMRING_NO_SIGBUS_GUARD=1`` in the environment before opening a ring to
leave SIGBUS alone.
"""

from __future__ import annotations

import enum
import logging
from importlib.metadata import PackageNotFoundError, version

from shmring._shmring import (
    VIDEO_FEATURE,
    ClosedError,
    CorruptFrameError,
    CrcMismatchError,
    EncoderError,
    FeatureNotBuiltError,
    Frame,
    FrameTooLargeError,
    LayoutError,
    Reader,
    ReaderStats,
    RingDamagedError,
    RingIOError,
    RingNotFoundError,
    ShmringError,
    VideoWriter,
    Writer,
    WriterExistsError,
)


class Codec(enum.IntEnum):
    """Codec ids stored in each frame header. Other numbers are the application's own."""

    H264 = 1
    """H.264 / AVC access units (Annex B)."""
    HEVC = 2
    """HEVC / H.265 access units (Annex B)."""
    JPEG = 3
    """JPEG images."""


# FFmpeg's log lines of shmring's encoders (encoder setup, NVENC probing, libx264's
# statistics at close) never go straight to stderr. They go to the logger "shmring.ffmpeg"
# when the application asks for them before opening a VideoWriter: that logger has a level
# of its own (logging.getLogger("shmring.ffmpeg").setLevel(logging.INFO)) or is enabled for
# DEBUG (logging.basicConfig(level=logging.DEBUG)). Otherwise they are dropped at no cost,
# and FFmpeg's global log level and callback are left alone (PyAV, OpenCV log as before).
logging.getLogger("shmring").addHandler(logging.NullHandler())

try:
    __version__ = version("shmring")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

__all__ = [
    "VIDEO_FEATURE",
    "ClosedError",
    "Codec",
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
    "__version__",
]
