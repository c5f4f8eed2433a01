"""Training on more than one process: ``poselift train`` under ``torchrun --nproc_per_node N`` or ``srun``.

The launcher says who a process is through the environment: torchrun sets RANK, WORLD_SIZE and LOCAL_RANK;
srun sets SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID (read when RANK is absent). Both need MASTER_ADDR and
MASTER_PORT (torchrun sets them; under srun export them, e.g. MASTER_ADDR=$(hostname) of the first node).
A process alone (no launcher, or a world of 1) is rank 0 of 1 and nothing here starts a process group.

:func:`start` joins the process group (NCCL on CUDA, gloo on the CPU) and gives each process its device (the
GPU of its local rank); the loop (:mod:`poselift.training.loop`) then wraps the model in
DistributedDataParallel, gives every rank its part of each batch, and lets rank 0 alone write files.

A rank that dies ends the job: torchrun stops the others and exits non-zero naming the failed rank; under srun
the survivors' next collective fails (the peer's connection closes) or times out after
``POSELIFT_DIST_TIMEOUT`` seconds (default 1800), and the job ends with that error.
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta

from poselift.errors import InputError

TIMEOUT_ENV = "POSELIFT_DIST_TIMEOUT"


def _env_int(*names: str, default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                raise InputError(name, f"expected an integer, got {value!r}") from None
    return default


def rank() -> int:
    """This process's rank (0 alone): RANK, else SLURM_PROCID when SLURM_NTASKS > 1."""
    if "RANK" in os.environ:
        return _env_int("RANK", default=0)
    return _env_int("SLURM_PROCID", default=0) if _slurm_world() > 1 else 0


def world_size() -> int:
    """Processes training together (1 alone): WORLD_SIZE, else SLURM_NTASKS."""
    if "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        return _env_int("WORLD_SIZE", default=1)
    return _slurm_world()


def local_rank() -> int:
    """This process's rank on its node: LOCAL_RANK, else SLURM_LOCALID; it picks the GPU."""
    if "RANK" in os.environ:
        return _env_int("LOCAL_RANK", default=0)
    return _env_int("SLURM_LOCALID", default=0) if _slurm_world() > 1 else 0


def _slurm_world() -> int:
    # a job step of several tasks (srun -n N); a batch script alone also has SLURM_NTASKS but no SLURM_STEP_ID
    return _env_int("SLURM_NTASKS", default=1) if "SLURM_STEP_ID" in os.environ else 1


def is_main() -> bool:
    """Rank 0: the one process that writes checkpoints, history and MLflow records."""
    return rank() == 0


def active() -> bool:
    """A process group of more than one process is running."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def start(device):
    """Join the process group when launched as one of several processes; returns this process's device:
    ``device`` alone, else the GPU of the local rank (CUDA) or the CPU. Safe to call twice."""
    import torch
    import torch.distributed as dist

    device = torch.device(device)
    world = world_size()
    if world <= 1:
        return device
    if device.type == "cuda":
        if local_rank() >= torch.cuda.device_count():
            raise InputError("--device", f"local rank {local_rank()} has no GPU (torch sees "
                                         f"{torch.cuda.device_count()}); start at most that many processes a node")
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise InputError(name, f"not set: {world} processes need the address of rank 0 "
                                       f"(torchrun sets it; under srun export MASTER_ADDR and MASTER_PORT)")
        os.environ.setdefault("RANK", str(rank()))
        os.environ.setdefault("WORLD_SIZE", str(world))
        os.environ.setdefault("LOCAL_RANK", str(local_rank()))
        local_world = _env_int("LOCAL_WORLD_SIZE", default=1)  # torchrun: a node's processes share its threads
        torch.set_num_threads(max(1, torch.get_num_threads() // local_world))
        timeout = timedelta(seconds=_env_int(TIMEOUT_ENV, default=1800))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout,
                                rank=rank(), world_size=world, device_id=device if device.type == "cuda" else None)
        atexit.register(stop)
    return device


def relaunch(processes: int, argv: list[str]) -> None:
    """Replace this process by ``torchrun --standalone --nproc_per_node processes -m poselift ARGV`` (one
    node); its processes see a world of ``processes`` and train. Signals reach torchrun, which passes them on."""
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "poselift", *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


def stop() -> None:
    """Leave the process group (at exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model):
    """The model inside a DistributedDataParallel wrapper (``model`` itself when not wrapped)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def barrier() -> None:
    """Wait for every rank (nothing alone)."""
    import torch.distributed as dist

    if active():
        dist.barrier()


def broadcast_value(value, src: int = 0):
    """Rank ``src``'s Python value on every rank (``value`` alone)."""
    import torch.distributed as dist

    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_values(value) -> list:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` alone)."""
    import torch.distributed as dist

    if not active():
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def all_sum(tensor):
    """``tensor`` summed over the ranks, in place (returned; unchanged alone)."""
    import torch.distributed as dist

    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def wrap(model, device):
    """``model`` in DistributedDataParallel when several processes train (``model`` alone). Frozen parameters
    (requires_grad False) are not synchronised; ``find_unused_parameters`` lets a stage whose losses read only
    part of the model's outputs train (DDP otherwise waits for gradients that never come)."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def sync_batch_norm(model, device):
    """On CUDA with several processes, BatchNorm layers as SyncBatchNorm (statistics of the global batch, as one
    process computes them; same parameters and buffers). Elsewhere ``model`` unchanged: on the CPU (gloo) each
    rank's BatchNorm sees its own part of the batch."""
    import torch

    if not active() or device.type != "cuda":
        return model
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
