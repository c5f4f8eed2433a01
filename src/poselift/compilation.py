"""``torch.compile`` as an option: the stage key ``compile: true`` trains a stage's forward and backward passes
through TorchInductor, and ``poselift evaluate --compile`` evaluates through it.

Inductor fuses the elementwise work around the matrix products (norms, activations, softmax, the residual
adds) into generated C++ (CPU) or Triton (CUDA) kernels. It pays where that work, not the GEMMs, bounds the
step: the small CPU presets (``benchmarks/models.py --compile`` times each model eager and compiled, with the
compile time). It costs a compile at the first batch (tens of seconds on 2 cores) and one more for each new
input shape, e.g. the short last batch of an epoch; the compiled kernels round differently at float level, so
a compiled stage is a stage config of its own (retrained by the workflow) and its results equal the eager
ones to float precision, not bit for bit.

What it needs is checked before training starts, never assumed: on a CPU a C++ compiler (``$CXX`` or g++ /
c++ on PATH), on CUDA the ``triton`` package. Where it is missing the command stops with one line naming it
(exit 2): a stage asks for compile explicitly, and silently training eager would not be what it asked for.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

from poselift.errors import InputError


def missing(device_type: str) -> str | None:
    """Why TorchInductor cannot run on ``device_type`` here ("cpu", "cuda"), or None when it can."""
    if device_type == "cuda":
        return None if importlib.util.find_spec("triton") else "the triton package is not installed"
    compilers = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    if not any(shutil.which(c) for c in compilers):
        return f"no C++ compiler on PATH ({' or '.join(compilers)}), which TorchInductor needs on a CPU"
    return None


def check(device, where: str = "compile") -> None:
    """An InputError naming ``where`` when TorchInductor's toolchain for ``device`` (a torch.device or its
    name) is missing: called before a stage loads its data, so a run stops at once."""
    import torch

    device_type = torch.device(device).type
    reason = missing(device_type)
    if reason is not None:
        raise InputError(where, f"torch.compile on {device_type}: {reason}")


def compile_model(module, device, where: str = "compile"):
    """``torch.compile(module)`` (TorchInductor, default mode) for ``device``, after :func:`check`. The
    compiled module shares ``module``'s parameters: save ``module.state_dict()``, not the wrapper's."""
    import torch

    check(device, where)
    return torch.compile(module)
