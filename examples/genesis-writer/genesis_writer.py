"""Renders camera frames and streams them, H.264-encoded, into a shmring ring.

With Genesis importable (and ``--test-pattern`` not given) it builds a small scene on
the CPU backend (a plane, a falling box, one camera) and streams ``cam.render()``;
otherwise it streams a moving numpy test pattern. Either way frames go through
``shmring.VideoWriter``, which needs the package built with the ``video`` feature::

    MATURIN_PEP517_ARGS="--features video" pip install ./shmring-python
    python examples/genesis_writer.py --path /dev/shm/genesis/frames --frames 300

Then any reader (the transport server, ``shmring.Reader``) picks the stream up.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

import shmring

Image = npt.NDArray[np.uint8]


def test_pattern(width: int, height: int, frames: int) -> Iterator[Image]:
    """Colour bars with a bright square moving across them, one step per frame."""
    columns = np.arange(width)
    bars = np.stack(
        [(columns * 255 // max(width - 1, 1)), (columns * 7) % 256, 255 - (columns * 255 // max(width - 1, 1))],
        axis=-1,
    ).astype(np.uint8)
    base = np.broadcast_to(bars, (height, width, 3))
    side = max(min(width, height) // 4, 2)
    for i in range(frames):
        image = base.copy()
        x = (i * 4) % max(width - side, 1)
        y = (i * 2) % max(height - side, 1)
        image[y : y + side, x : x + side] = 255
        yield image


def genesis_frames(width: int, height: int, frames: int) -> Iterator[Image]:
    """A falling box seen by one camera, rendered on the CPU backend."""
    import genesis as gs  # type: ignore[import-not-found, unused-ignore]

    gs.init(backend=gs.cpu)
    scene = gs.Scene(show_viewer=False)
    scene.add_entity(gs.morphs.Plane())
    scene.add_entity(gs.morphs.Box(pos=(0.0, 0.0, 1.0), size=(0.2, 0.2, 0.2)))
    cam = scene.add_camera(res=(width, height), pos=(2.0, 2.0, 1.5), lookat=(0.0, 0.0, 0.3), fov=40, GUI=False)
    scene.build()
    for _ in range(frames):
        scene.step()
        rgb = cam.render()[0]
        yield np.ascontiguousarray(rgb, dtype=np.uint8)


def genesis_available() -> bool:
    try:
        import genesis  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default="/dev/shm/sdr_os_ipc/frames", help="ring file")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--frames", type=int, default=300, help="frames to stream")
    parser.add_argument("--encoder", default="auto", help="auto, h264_nvenc, libx264, ...")
    parser.add_argument("--test-pattern", action="store_true", help="do not use Genesis even if installed")
    parser.add_argument("--realtime", action="store_true", help="pace frames at --fps")
    args = parser.parse_args()

    use_genesis = not args.test_pattern and genesis_available()
    source = genesis_frames if use_genesis else test_pattern
    print(f"source: {'genesis' if use_genesis else 'test pattern'}, ring: {args.path}", flush=True)

    period = 1.0 / args.fps
    written = 0
    with shmring.VideoWriter(args.path, args.width, args.height, args.fps, encoder=args.encoder) as video:
        next_at = time.monotonic()
        for image in source(args.width, args.height, args.frames):
            video.write(image)
            written += 1
            if args.realtime:
                next_at += period
                time.sleep(max(0.0, next_at - time.monotonic()))
    print(f"wrote {written} frames", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
