"""The mechanics a stage of params.yaml applies before its first epoch, the same for every task: the device,
the seed, ``init`` (earlier stages' checkpoints into submodules), ``freeze`` (no gradient, eval mode) and the
optimiser with its step schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from poselift.errors import InputError


def resolve_device(name: str = "auto"):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", "cuda requested but torch sees no CUDA device")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def submodule(model, name: str, where):
    """``model.get_submodule(name)`` ("" = the model), or an InputError naming ``where`` (the params file)."""
    if name == "":
        return model
    try:
        return model.get_submodule(name)
    except AttributeError:
        children = ", ".join(n for n, _ in model.named_children())
        raise InputError(where, f"model {type(model).__name__} has no submodule '{name}' "
                                f"(top-level submodules: {children})") from None


def initialise(model, stage, init_paths: dict, params_path) -> None:
    """Load each ``init`` source checkpoint into its submodule (strict): an earlier stage's from
    ``init_paths[stage number]``, a checkpoint file (a path in params.yaml) from that path."""
    from poselift.training.checkpoint import read_checkpoint

    for name, source in stage.init.items():
        target = submodule(model, name, params_path)
        path = Path(source if isinstance(source, str) else init_paths[source])
        ckpt = read_checkpoint(path)
        try:
            target.load_state_dict(ckpt["state_dict"])
        except RuntimeError as e:
            raise InputError(path, f"does not fit submodule '{name or '(whole model)'}' of {type(model).__name__}: "
                                   f"{str(e).splitlines()[0]}") from None


def freeze(model, names, params_path) -> list:
    """requires_grad = False on the named submodules; returns them (kept in eval mode by :func:`train_mode`)."""
    frozen = [submodule(model, name, params_path) for name in names]
    for m in frozen:
        m.requires_grad_(False)
    return frozen


def train_mode(model, frozen) -> None:
    """The model in training mode, its frozen submodules in eval mode (dropout off, batch-norm statistics
    fixed): the one place that keeps frozen parts in eval mode."""
    model.train()
    for m in frozen:
        m.eval()


def make_optimizer(model, stage, params_path="params.yaml"):
    """Adam or AdamW over the trainable parameters, and StepLR (lr x gamma every ``every`` epochs) or
    MultiStepLR (lr x gamma after each epoch listed in ``milestones``)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError(params_path, f"stage {stage.number} ({stage.name}): every parameter is frozen")
    cls = torch.optim.AdamW if stage.optimizer == "adamw" else torch.optim.Adam
    optimizer = cls(params, lr=stage.lr, weight_decay=stage.weight_decay, amsgrad=stage.amsgrad)
    if "milestones" in stage.schedule:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=stage.schedule["milestones"],
                                                         gamma=stage.schedule["gamma"])
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=stage.schedule["every"],
                                                    gamma=stage.schedule["gamma"])
    return optimizer, scheduler
