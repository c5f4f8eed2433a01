"""Throughput of the rendered benchmark (``poselift render``) and of reading its crops, on real motion.

    python benchmarks/render.py [--prepared data/prepared/bandai-cpu.h5] [--sequences 32] [--every 10] [--workers N]

Needs the MakeHuman assets (``$POSELIFT_MAKEHUMAN_ASSETS`` or a download) and a prepared file. Prints, for
the first ``--sequences`` sequences of the file (default 32; 0: all), all their cameras, every ``--every``-th
frame (default 10: Lifting by Image's 5 fps of 50; ``--sequences 0 --every 60`` is ``make run``'s render):

- crops/s of ``poselift render`` at 256x192 (people, posing, rasterising, labels, JPEG encoding, writing)
  with ``--workers`` processes (default: the CPUs this process may use, at most one per sequence; worker
  start-up included), and the CPU seconds it took in all processes; full frames/s at the camera's
  resolution (1000x1000 for the Human3.6M rig) for one sequence, every 10th frame (so in one process);
- storage per 1,000 crops (JPEG quality 90) and read speed: crops/s decoded from the file in random order,
  as a detector's data loader reads them;
- a 2048^2 fp32 GEMM timed in the same run (GFLOP/s), and each rate divided by it, so figures from noisy or
  different machines compare. Target (issue "Pixels"): >= 100 crops/s on 2 cores; reading far faster than
  training consumes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def gemm_gflops(n: int = 2048, repeats: int = 3) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the render's workers), user and system."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _timed(fn) -> float:
    tick = time.perf_counter()
    fn()
    return time.perf_counter() - tick


def main() -> None:
    from poselift.data.crop_file import CropFile
    from poselift.data.prepared import load_prepared, write_prepared
    from poselift.rendering.render import RenderSettings, default_workers, render_prepared

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared/bandai-cpu.h5"))
    parser.add_argument("--sequences", type=int, default=32, help="the first N sequences (0: all)")
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--workers", type=int, help="render processes (default: the CPUs this process may use)")
    args = parser.parse_args()

    gemm = gemm_gflops()
    data = load_prepared(args.prepared)
    data.sequences = data.sequences[:args.sequences or None]
    with tempfile.TemporaryDirectory() as tmp:
        small, out, full = Path(tmp) / "small.h5", Path(tmp) / "crops.h5", Path(tmp) / "full.h5"
        write_prepared(small, data)
        cpu = _cpu_seconds()
        counts = {}
        seconds = _timed(lambda: counts.update(render_prepared(small, out, RenderSettings(every=args.every),
                                                               progress=False, workers=args.workers)))
        cpu = _cpu_seconds() - cpu
        crops = CropFile(out)
        n = len(crops)
        size = os.path.getsize(out)
        order = [(v, i) for v in crops.views for i in range(crops.counts[v])]
        rng = np.random.default_rng(0)
        picks = [order[k] for k in rng.permutation(len(order))]
        read = _timed(lambda: [crops.crop(v, i) for v, i in picks])
        one = load_prepared(small)
        one.sequences = one.sequences[:1]
        write_prepared(small, one)
        full_seconds = _timed(lambda: render_prepared(small, full, RenderSettings(every=min(args.every, 10), full_frames=True),
                                                      progress=False))
        full_count = len(CropFile(full))
        crop_seconds = _timed(lambda: render_prepared(small, out, RenderSettings(every=min(args.every, 10)),
                                                      progress=False))
    camera = next(iter(next(iter(data.rigs.values())).values()))
    print(f"fp32 GEMM 2048^2: {gemm:.1f} GFLOP/s")
    print(f"render ({counts['workers']} worker{'s' * (counts['workers'] != 1)} on {default_workers()} "
          f"CPUs): {n} crops of {len(data.sequences)} sequences in {seconds:.1f} s = {n / seconds:.1f} crops/s "
          f"({n / seconds / gemm:.3f} crops/s per GEMM GFLOP/s); {cpu:.1f} CPU s = {n / cpu:.1f} crops per CPU s")
    full_rate = full_count / max(full_seconds - crop_seconds, 1e-9)
    print(f"full frames ({camera.width}x{camera.height}) on top of the crops: {full_rate:.1f} frames/s")
    print(f"storage: {size / n * 1000 / 2 ** 20:.1f} MiB per 1,000 crops (JPEG q90, labels included)")
    print(f"read: {n / read:.0f} crops/s decoded in random order ({n / read / gemm:.2f} per GEMM GFLOP/s)")


if __name__ == "__main__":
    main()
