"""Throughput of the lifting data pipeline (poselift.data.windows) on a synthetic in-memory dataset.

    python benchmarks/data.py [--frames 50000] [--cameras 4] [--batch 1024] [--seconds 1.0]

Builds a prepared dataset (random poses, ``--frames`` frames split into sequences, ``--cameras`` cameras
of different sizes) with matching detections, times :func:`build_views`, then times batch assembly only
(gather + optional flip, no model) for seq2frame and seq2seq windows at T = 1, 27, 81, 243, and prints
windows/s and frames/s (windows/s x T). Target: >= 50k windows/s for seq2frame T = 1 on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from poselift.camera import Camera
from poselift.data.detections import Detections
from poselift.data.prepared import PreparedDataset, Sequence
from poselift.data.windows import Batches, build_views, frame_windows, sequence_windows

LENGTHS = (1, 27, 81, 243)


def synthetic(frames: int, cameras: int, seq_len: int = 1000, seed: int = 0):
    """A prepared dataset with ``frames`` frames in sequences of ~``seq_len`` frames, and its detections."""
    rng = np.random.default_rng(seed)
    cams = {f"cam{c}": Camera(R=np.eye(3), T=[0.0, 0.0, -5000.0 - 500 * c], f=[1150.0, 1150.0],
                              c=[500.0 + 100 * c, 500.0], width=1000 + 200 * c, height=1000)
            for c in range(cameras)}
    sequences, keypoints, scores, names = [], {}, {}, {}
    sizes = np.full(max(frames // seq_len, 1), seq_len)
    sizes[: frames - sizes.sum()] += 1 if frames > sizes.sum() else 0
    sizes[-1] += frames - sizes.sum()
    for i, n in enumerate(sizes):
        pose = rng.normal(0.0, 300.0, (int(n), 17, 3)).astype(np.float32)
        s = Sequence(subject=f"S{i % 5 + 1}", name=f"Walking {i}", action=f"Walking {i % 2 + 1}", split="train",
                     rig="rig", cameras=list(cams), positions_3d=pose,
                     positions_2d=np.stack([c.world_to_pixels(pose) for c in cams.values()]).astype(np.float32))
        sequences.append(s)
        keypoints[s.key] = s.positions_2d + rng.normal(0.0, 2.0, s.positions_2d.shape).astype(np.float32)
        scores[s.key] = rng.random(s.positions_2d.shape[:3], dtype=np.float32)
        names[s.key] = list(cams)
    data = PreparedDataset(dataset="synthetic", fps=50.0, rigs={"rig": cams}, sequences=sequences)
    det = Detections(detector="synthetic", dataset="synthetic", prepared="", keypoints=keypoints,
                     scores=scores, cameras=names)
    return data, det


def rate(batches: Batches, seconds: float) -> float:
    """Windows per second over whole epochs of ``batches`` for at least ``seconds``."""
    count, start = 0, time.perf_counter()
    while True:
        for batch in batches:
            count += len(batch["window"])
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=50_000, help="frames per camera (default 50000)")
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args(argv)

    data, det = synthetic(args.frames, args.cameras)
    start = time.perf_counter()
    views = build_views(data, det, split="train")
    build = time.perf_counter() - start
    start = time.perf_counter()
    views.doubled()  # the mirrored copy flip augmentation gathers from, built once on first use
    mirror = time.perf_counter() - start
    print(f"build_views: {len(views)} frames in {views.num_views} views, {build:.2f} s "
          f"(+ {mirror:.2f} s for the mirrored copy used by flips)")
    print(f"{'windows':<10}{'T':>5}{'flip':>8}{'windows/s':>14}{'frames/s':>14}")
    for kind in ("seq2frame", "seq2seq"):
        for T in LENGTHS:
            windows = frame_windows(views, T) if kind == "seq2frame" else sequence_windows(views, T)
            for flip in (None, "random"):
                r = rate(Batches(views, windows, args.batch, seed=0, flip=flip), args.seconds)
                print(f"{kind:<10}{T:>5}{str(flip):>8}{r:>14,.0f}{r * T:>14,.0f}")


if __name__ == "__main__":
    main()
