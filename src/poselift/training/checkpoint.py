"""Self-describing checkpoints: ``torch.save`` of tensors and plain Python values only, so they load with
``torch.load(weights_only=True)`` (no pickled code), written atomically.

A checkpoint is a dict::

    format "poselift.training.checkpoint", version 1
    model        key of poselift.lifting.MODELS          args   its constructor arguments
    state_dict   the model's parameters and buffers     window input frames T the model was trained on
    epoch        epochs completed                       metrics  {"val_mpjpe": ...} of this epoch
    stage        the stage's plain config (optional)    history  per-epoch records (optional)
    training     optimiser, scheduler and RNG states (last.pt only: what resuming needs)

A stage directory holds ``last.pt`` (every epoch, with ``training``: resume from it) and
``checkpoint.pt`` (the model that later stages and ``poselift evaluate`` use: the best-validation epoch,
or the final epoch with ``select: last``).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from poselift.errors import InputError

FORMAT = "poselift.training.checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, ckpt: dict) -> None:
    """Write ``ckpt`` (plus format and version) atomically."""
    import torch

    from poselift.io import atomic_output

    from poselift.io import write_failure

    with atomic_output(path) as tmp:
        try:
            torch.save({"format": FORMAT, "version": VERSION, **ckpt}, tmp)
        except RuntimeError as e:  # torch's zip writer wraps a failed write (a full disk) in a RuntimeError
            if write_failure(e) is None:
                raise
            raise InputError(path, f"cannot be written ({write_failure(e)}); the previous file, if any, is kept") \
                from None


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a poselift checkpoint with ``weights_only=True``; foreign or damaged files -> InputError."""
    path = Path(path)
    ckpt = load_weights_only(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(path, "not a poselift checkpoint (for an official release's file use "
                               "`poselift import-checkpoint`)")
    if ckpt.get("version") != VERSION:
        raise InputError(path, f"checkpoint version {ckpt.get('version')} is not supported (this poselift "
                               f"reads version {VERSION})")
    for key in ("model", "args", "state_dict"):
        if key not in ckpt:
            raise InputError(path, f"damaged checkpoint: missing '{key}'")
    return ckpt


def load_weights_only(path: Path, allow_numpy: bool = False):
    """``torch.load(path, weights_only=True)`` with one-line errors.

    ``allow_numpy`` also admits plain numpy arrays (official releases store a numpy RandomState state
    beside the weights); object arrays stay refused.
    """
    import torch

    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        if allow_numpy:
            with torch.serialization.safe_globals(_numpy_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise InputError(path, f"refused by torch.load(weights_only=True): {_unpickling_reason(e)}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise InputError(path, f"not a readable torch checkpoint ({type(e).__name__}: {e})") from None


def _unpickling_reason(error: Exception) -> str:
    """The line of torch's multi-paragraph weights_only error that says what was refused, e.g. "Trying to load
    unsupported GLOBAL posix.system whose module posix is blocked" (a pickle that would run code)."""
    text = str(error)
    if "WeightsUnpickler error:" in text:  # what follows it is the reason (on its line or the next ones)
        text = text.split("WeightsUnpickler error:", 1)[1]
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch",
                   "(1)", "(2)")
    for line in text.splitlines():
        line = line.strip().split(". ")[0].rstrip(".")
        if line and not line.startswith(boilerplate):
            return line
    return type(error).__name__


def _numpy_globals() -> list:
    import numpy as np

    dtypes = [type(np.dtype(t)) for t in "?bBhHiIlLqQefdgFD"]
    reconstruct = np._core.multiarray._reconstruct  # files pickled by numpy 1.x name it numpy.core...
    return [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype, *dtypes]


def load_model(path: str | os.PathLike, device="cpu"):
    """The model stored in poselift checkpoint ``path``, on ``device``, in eval mode."""
    return instantiate(read_checkpoint(path), path, device)


def instantiate(ckpt: dict, path: str | os.PathLike = "checkpoint", device="cpu"):
    """The model of a loaded checkpoint dict, with its weights, on ``device``, in eval mode."""
    from poselift.models import build_model

    model = build_model(ckpt["model"], ckpt["args"], path)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines[1:] if ln.startswith(("size mismatch", "Missing key", "Unexpected key"))),
                      lines[0] if lines else type(e).__name__)
        raise InputError(path, f"state_dict does not fit {ckpt['model']}({ckpt['args']}): {detail}") from None
    return model.to(device).eval()


# --- RNG states as tensors and plain values (weights_only-safe) ---------------------------------------

def rng_state() -> dict:
    """torch CPU (+ CUDA) and numpy global RNG states."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
