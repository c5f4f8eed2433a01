"""Numeric precision of forward passes: fp32, or bf16 autocast where the device has bf16 matrix units.

``--precision bf16`` (``poselift train``, ``evaluate``, ``detect``; the stage key ``precision``) runs every
forward pass under ``torch.autocast(dtype=torch.bfloat16)``: matrix products and convolutions in bf16 with
fp32 accumulation, everything autocast keeps in fp32 (norms, softmax, reductions, the losses) in fp32.
Parameters, optimiser state and gradients stay fp32, and the forward's outputs are cast back to fp32 before
a loss or a metric sees them. :meth:`Precision.prepare` keeps a model's first and last matrix layers (the
first and last ``Linear``/``Conv`` in registration order: the embedding of the input coordinates or pixels,
the output head) in fp32, the usual mixed-precision practice: bf16 would round the 2D input to 2^-8 of its
range (about 2 px of a 1000 px frame) and the 3D output to ~1 mm. Measured on the open benchmark (a POT,
test MPJPE 81.75 mm): all-bf16 moved the MPJPE by 0.117 mm, fp32 boundary layers by 0.036 mm.

bf16 is used only where it is fast, which :func:`bf16_support` checks once at start, never assumes:

- CUDA: compute capability >= 8.0 (bf16 tensor cores) and ``torch.cuda.is_bf16_supported()``.
- CPU: a bf16 instruction set (the ``amx_bf16`` or ``avx512_bf16`` flag in /proc/cpuinfo, or torch's own
  AMX / AVX512-BF16 probe) AND a timed 512x512 bf16 GEMM faster than fp32 by :data:`MIN_SPEEDUP` (about
  50 ms; emulated bf16 is several times slower than fp32, so the flags alone do not settle it).

Where the check fails, :func:`resolve` prints ONE line ``poselift: warning: ... bf16 ... falling back to
fp32 because ...`` to stderr and returns fp32, which runs exactly the fp32 code path (bit-identical results).
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass

PRECISIONS = ("fp32", "bf16")
MIN_SPEEDUP = 1.1  # a CPU's bf16 GEMM must beat fp32 by this factor (a margin over timing noise)
GEMM_SIZE = 512


@dataclass(frozen=True)
class Precision:
    """The precision forward passes run at (``name``: "fp32" or "bf16") on a device type ("cpu", "cuda")."""

    name: str
    device_type: str = "cpu"

    def autocast(self):
        """A context running its forward passes at this precision (fp32: no context at all)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.device_type, dtype=torch.bfloat16)

    def prepare(self, model):
        """``model`` with its first and last Linear/Conv layer made to run in fp32 under this precision's
        autocast (their input cast to fp32); at fp32 the model is untouched. Returns the model."""
        import torch

        if self.name == "fp32":
            return model
        layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d))]
        for layer in {id(m): m for m in layers[:1] + layers[-1:]}.values():
            if not getattr(layer, "_poselift_fp32", False):
                layer.forward = _in_fp32(layer.forward, self.device_type)
                layer._poselift_fp32 = True
        return model

    def run(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` at this precision, its bf16 tensors (also inside dicts, lists, tuples)
        returned as fp32; at fp32 it is the plain call."""
        if self.name == "fp32":
            return fn(*args, **kwargs)
        with self.autocast():
            return to_fp32(fn(*args, **kwargs))


FP32 = Precision("fp32")  # the plain fp32 path on any device


def _in_fp32(forward, device_type: str):
    """``forward`` run with autocast off and its tensor arguments in fp32."""
    import torch

    def fp32_forward(*args, **kwargs):
        with torch.autocast(device_type, enabled=False):
            return forward(*(a.float() if isinstance(a, torch.Tensor) else a for a in args), **kwargs)

    return fp32_forward


def to_fp32(value):
    """``value`` with every bf16/fp16 tensor in it cast to fp32 (the structure of dicts, lists, tuples kept)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
    if isinstance(value, dict):
        return {k: to_fp32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(to_fp32(v) for v in value)
    return value


def resolve(requested: str, device, warn=None) -> Precision:
    """The precision to run at on ``device`` for the ``requested`` one ("fp32" or "bf16"): bf16 only where
    :func:`bf16_support` finds bf16 units, else fp32 after ONE warning line (``warn``, default stderr)."""
    from poselift.errors import InputError

    if requested not in PRECISIONS:
        raise InputError("--precision", f"unknown precision '{requested}' (known: {', '.join(PRECISIONS)})")
    device_type = getattr(device, "type", str(device).split(":")[0])
    if requested == "fp32":
        return Precision("fp32", device_type)
    ok, why = bf16_support(device)
    if not ok:
        message = (f"poselift: warning: precision bf16 requested on {device}: falling back to fp32 because "
                   f"{why}")
        (warn or (lambda line: print(line, file=sys.stderr)))(message)
        return Precision("fp32", device_type)
    return Precision("bf16", device_type)


def bf16_support(device) -> tuple[bool, str]:
    """(whether ``device`` has bf16 matrix units that make bf16 faster than fp32, why not / what was found)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8 or not torch.cuda.is_bf16_supported():
            return False, f"the GPU (compute capability {major}.{minor}) has no bf16 tensor cores (needs >= 8.0)"
        return True, f"bf16 tensor cores (compute capability {major}.{minor})"
    if device.type != "cpu":
        return False, f"bf16 autocast is not supported here on device type '{device.type}'"
    units = cpu_bf16_units()
    if not units:
        return False, (f"the CPU has no bf16 matrix instructions (no amx_bf16 or avx512_bf16; torch capability "
                       f"{torch.backends.cpu.get_cpu_capability()})")
    speedup = gemm_speedup()
    if speedup < MIN_SPEEDUP:
        return False, (f"a {GEMM_SIZE}x{GEMM_SIZE} bf16 GEMM ran at {speedup:.2f}x the fp32 speed on this CPU "
                       f"({', '.join(units)}; at least {MIN_SPEEDUP}x needed)")
    return True, f"{', '.join(units)}: bf16 GEMM {speedup:.2f}x fp32"


def cpu_bf16_units() -> list[str]:
    """The CPU's bf16 instruction sets among AMX-BF16 and AVX512-BF16: /proc/cpuinfo's flags, else torch's probe."""
    import torch

    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    found = [name for name in ("amx_bf16", "avx512_bf16") if name in flags]
    probes = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
    for name, probe in probes.items():  # where /proc/cpuinfo is absent (macOS, Windows)
        if name not in found and getattr(torch.cpu, probe, lambda: False)():
            found.append(name)
    return found


def gemm_speedup(n: int = GEMM_SIZE, repeats: int = 5) -> float:
    """bf16 / fp32 speed of an n x n matrix product on the CPU: the best of ``repeats`` interleaved timings
    of each, after a warm-up."""
    import torch

    a = torch.randn(n, n)
    b = torch.randn(n, n)
    a16, b16 = a.bfloat16(), b.bfloat16()
    best = {"fp32": float("inf"), "bf16": float("inf")}
    a @ b, a16 @ b16
    for _ in range(repeats):
        for name, (x, y) in (("fp32", (a, b)), ("bf16", (a16, b16))):
            start = time.perf_counter()
            x @ y
            best[name] = min(best[name], time.perf_counter() - start)
    return best["fp32"] / best["bf16"]
