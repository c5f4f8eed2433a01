"""The yardstick every benchmark prints its figures against: a 2048x2048 fp32 GEMM timed in the same run, so
that numbers from a noisy or different machine compare. Imported by the scripts beside it."""

from __future__ import annotations

import time

import torch


def timed(fn, device: str = "cpu") -> float:
    """Seconds of one call of ``fn`` (CUDA synchronised on both sides)."""
    if device != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def gemm_gflops(n: int = 2048, repeats: int = 3, device: str = "cpu", dtype=torch.float32) -> float:
    """GFLOP/s of an n x n matrix product in ``dtype`` (fp32; bf16 for the bf16 figures), the best of
    ``repeats`` after one warm-up."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = min(timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9
