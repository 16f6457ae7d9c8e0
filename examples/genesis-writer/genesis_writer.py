"""Streams a Genesis camera, H.264-encoded, into a shmring ring, as a simulator user would.

With Genesis importable (and ``--test-pattern`` not given) it builds a small scene (a
plane, a falling box, one camera) on the CPU backend, or CUDA with ``--backend gpu``,
and streams the camera; otherwise it streams a moving numpy test pattern. Either way:

- the scene is built *before* the ring is opened (building and compiling take 8 s to
  2 min), so readers never see a writer that has not started;
- frames go through ``shmring.VideoWriter`` as Genesis returns them: a flipped numpy
  view from ``cam.render()``, or a torch tensor (one environment of a batch) from the
  batch renderer, moved to the host only if it lives on the GPU;
- each frame is stamped with the simulation time (``scene.sim.cur_t``), so recordings and
  viewers replay it at the simulation's pace, and the loop runs in real time (simulated
  seconds take wall-clock seconds) unless ``--fast`` is given;
- with ``--camera-dir DIR`` two cameras stream, one ``VideoWriter`` and one ring each
  (``DIR/front``, ``DIR/top``: the directory a transport server's ``--shm-dir`` serves);
- keyframe requests are answered: with ``--nats-url`` (or ``SDR_NATS_URL``) it listens
  on ``control.request_idr`` (the transport server's) and ``command.genesis.force_idr``
  (SDR_OS's) and makes the next frame a keyframe.

Run::

    pip install ./shmring-python   # VideoWriter needs FFmpeg: see shmring-python/README.md
    python examples/genesis-writer/genesis_writer.py --path /dev/shm/sdr_os_ipc/frames --frames 300
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

import shmring

Image = npt.NDArray[np.uint8]
# Subjects a keyframe request arrives on: the transport server's and SDR_OS's.
KEYFRAME_SUBJECTS = ("control.request_idr", "command.genesis.force_idr")


def test_pattern(width: int, height: int, frames: int, fps: float, cameras: int) -> Iterator[tuple[list[Any], float]]:
    """Colour bars with a bright square moving across them, one step per frame (and, for
    a second camera, the same picture in inverted colours), and the pattern's time in
    seconds."""
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
        yield [image, 255 - image][:cameras], i / fps


def genesis_frames(
    width: int, height: int, frames: int, fps: float, backend: str, cameras: int
) -> Iterator[tuple[list[Any], float]]:
    """A falling box seen by one camera (or two: a second one looking down from above):
    each camera's rendered frame (as Genesis returns it) and the simulation time it
    shows, in seconds. Builds the scene first."""
    import genesis as gs  # type: ignore[import-not-found, unused-ignore]

    steps_per_frame = 2
    gs.init(backend=gs.gpu if backend == "gpu" else gs.cpu, logging_level="warning")
    scene = gs.Scene(sim_options=gs.options.SimOptions(dt=1.0 / (fps * steps_per_frame)), show_viewer=False)
    scene.add_entity(gs.morphs.Plane())
    scene.add_entity(gs.morphs.Box(pos=(0.0, 0.0, 1.0), size=(0.2, 0.2, 0.2)))
    cams = [scene.add_camera(res=(width, height), pos=(2.0, 2.0, 1.5), lookat=(0.0, 0.0, 0.3), fov=40, GUI=False)]
    if cameras == 2:  # the second camera: from above, looking down at the box
        cams.append(scene.add_camera(res=(width, height), pos=(0.0, -1.0, 3.0), lookat=(0.0, 0.0, 0.3), fov=40, GUI=False))
    scene.build()
    for _ in range(frames):
        for _ in range(steps_per_frame):
            scene.step()
        yield [cam.render(rgb=True)[0] for cam in cams], float(scene.sim.cur_t)


def on_host(frame: Any) -> Any:
    """One environment's image, in CPU memory: the batch renderer returns torch tensors
    of shape (n_envs, H, W, 3), on the GPU; VideoWriter reads numpy arrays and CPU
    tensors as they are."""
    if getattr(frame, "ndim", 3) == 4 and frame.shape[0] > 1:
        frame = frame[0]
    if getattr(frame, "is_cuda", False):
        frame = frame.cpu()
    return frame


def genesis_available() -> bool:
    try:
        import genesis  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def listen_for_keyframe_requests(url: str, wanted: threading.Event) -> None:
    """Sets `wanted` whenever a keyframe request arrives on NATS (in a daemon thread).
    Without nats-py, or without the server, the stream goes on without requests."""
    try:
        import nats  # nats-py
    except ImportError:
        print("keyframe requests: nats-py is not installed (pip install nats-py); not listening", file=sys.stderr)
        return

    async def listen() -> None:
        async def request(_msg: Any) -> None:
            wanted.set()

        async def quiet(_error: Exception) -> None:
            pass  # nats-py reconnects by itself; its default handler prints each failure

        try:
            client = await nats.connect(url, error_cb=quiet)
            for subject in KEYFRAME_SUBJECTS:
                await client.subscribe(subject, cb=request)
        except Exception as e:  # noqa: BLE001  # any connection failure: go on without
            print(f"keyframe requests: cannot listen on {url} ({e}); streaming without them", file=sys.stderr)
            return
        await asyncio.Event().wait()  # until the process ends

    threading.Thread(target=lambda: asyncio.run(listen()), name="keyframe-requests", daemon=True).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default="/dev/shm/sdr_os_ipc/frames", help="ring file")
    parser.add_argument("--camera-dir", metavar="DIR",
                        help="stream two cameras, DIR/front and DIR/top (a server's --shm-dir), instead of --path")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second of simulated time")
    parser.add_argument("--frames", type=int, default=300, help="frames to stream")
    parser.add_argument("--encoder", default="auto", help="auto, h264_nvenc, libx264, ...")
    parser.add_argument("--backend", choices=["cpu", "gpu"], default="cpu", help="Genesis backend")
    parser.add_argument("--test-pattern", action="store_true", help="do not use Genesis even if installed")
    parser.add_argument("--fast", action="store_true", help="do not pace the simulation to wall-clock time")
    # Real time is the default; the flag stays for command lines written before (compose).
    parser.add_argument("--realtime", action="store_true", help="pace to wall-clock time (the default)")
    parser.add_argument("--nats-url", default=os.environ.get("SDR_NATS_URL"), help="answer keyframe requests from this NATS server")
    parser.add_argument("--save-frame", nargs=2, metavar=("INDEX", "FILE"),
                        help="also save frame INDEX (0-based) as given to the encoder, as a .npy file (for checks)")
    args = parser.parse_args()

    use_genesis = not args.test_pattern and genesis_available()
    paths = [os.path.join(args.camera_dir, name) for name in ("front", "top")] if args.camera_dir else [args.path]
    if use_genesis:
        source = genesis_frames(args.width, args.height, args.frames, args.fps, args.backend, len(paths))
    else:
        source = test_pattern(args.width, args.height, args.frames, args.fps, len(paths))
    # Build the scene (inside the first next()) before the ring exists: readers wait
    # for the file to appear, never for a writer that has not started.
    first = next(source, None)
    print(f"source: {'genesis' if use_genesis else 'test pattern'}, ring: {', '.join(paths)}", flush=True)

    keyframe_wanted = threading.Event()
    if args.nats_url:
        listen_for_keyframe_requests(args.nats_url, keyframe_wanted)

    written = 0
    with contextlib.ExitStack() as stack:
        videos = [stack.enter_context(shmring.VideoWriter(p, args.width, args.height, args.fps, encoder=args.encoder)) for p in paths]
        started = time.monotonic()
        for frames, sim_t in itertools.chain([first] if first is not None else [], source):
            if not args.fast and first is not None:
                # Real time: a simulated second takes a wall-clock second.
                time.sleep(max(0.0, (sim_t - first[1]) - (time.monotonic() - started)))
            if keyframe_wanted.is_set():  # requests name no camera: every camera answers
                keyframe_wanted.clear()
                for video in videos:
                    video.request_keyframe()
            for video, frame in zip(videos, frames):
                video.write(on_host(frame), timestamp_ns=round(sim_t * 1e9))
            if args.save_frame and written == int(args.save_frame[0]):
                np.save(args.save_frame[1], np.asarray(on_host(frames[0])))
            written += 1
    print(f"wrote {written} frames", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
