"""The one training loop for every lifting model (a stage of an experiment, see :mod:`poselift.experiments`).

One stage: seed -> model from its preset -> earlier stages' checkpoints into submodules (``init``) ->
frozen submodules (``freeze``: no gradient, eval mode) -> Adam/AdamW over the trainable parameters with a
step schedule (lr x gamma every ``every`` epochs) -> per epoch: shuffled windows (flipped at random with
``flip_augment``), sum of weighted loss terms on targets in metres, optional gradient-norm clipping, then
MPJPE (mm) on the validation split (flip-averaged with ``flip_test``) -> checkpoints.

Checkpoints (:mod:`poselift.checkpoint`): ``last.pt`` every epoch with the optimiser, scheduler and RNG
states, so a killed run started again continues from the next epoch and ends bit-identical to an
uninterrupted one (same device and thread count); ``checkpoint.pt`` is the model later stages and
evaluation use (best validation MPJPE, or the final epoch with ``select: last``); ``history.json`` the
per-epoch record. A finished stage is a no-op.

Windows: ``output_frames == "centre"`` models get :func:`frame_windows` (T = ``window``, target the centre
frame); ``"all"`` (seq2seq) models get :func:`sequence_windows` of T frames (MixSTE's strided chunks; the
last chunk of a view shifted back to end at the view's end, as MixSTE's evaluation does).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poselift.errors import InputError

MM = 1000.0  # the data is in mm, models work in metres


@dataclass
class StageResult:
    epochs: int  # epochs completed
    best_epoch: int
    best_val_mpjpe: float
    history: list
    out_dir: Path
    skipped: bool = False  # the stage was already finished


# --- devices, data, models ---------------------------------------------------------------------------

def resolve_device(name: str = "auto"):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", "cuda requested but torch sees no CUDA device")
    return torch.device(name)


def load_data(prepared: Path, detections: Path | None):
    """(PreparedDataset, Detections or None); detections must belong to this prepared file."""
    from poselift.data.detections import load_detections
    from poselift.data.prepared import content_hash, load_prepared

    data = load_prepared(prepared)
    if detections is None:
        return data, None
    det = load_detections(detections)
    if det.prepared != content_hash(prepared):
        raise InputError(detections, f"made from another prepared dataset than {prepared} (content hash differs)")
    return data, det


def views(data, det, split: str, prepared: Path, detections: Path | None):
    from poselift.data.windows import build_views

    return build_views(data, det, split=split, prepared_path=prepared,
                       detections_path=detections if detections is not None else "detections")


def make_windows(views, output_frames: str, window: int, stride: int = 1):
    """Windows for a model's ``output_frames``; ``stride`` > 1 keeps every stride-th one (validation)."""
    from poselift.data.windows import Windows, frame_windows, sequence_windows

    if output_frames == "centre":
        centres = np.flatnonzero(views.valid)[::stride]
        return frame_windows(views, window, centres)
    if output_frames == "all":
        w = sequence_windows(views, window, last="shift")
        if stride > 1:
            keep = slice(None, None, stride)
            w = Windows(w.kind, w.length, w.first[keep], w.lo[keep], w.hi[keep], w.own[keep])
        return w
    raise ValueError(f"output_frames must be 'centre' or 'all', got {output_frames!r}")


def output_frames(model) -> str:
    value = getattr(model, "output_frames", None)
    if value not in ("centre", "all"):
        raise ValueError(f"{type(model).__name__} has no output_frames = 'centre' | 'all' (model contract)")
    return value


def model_window(model) -> int | None:
    """The input length a model implies: ``receptive_field()`` or ``num_frames``, else None."""
    rf = getattr(model, "receptive_field", None)
    if callable(rf):
        return int(rf())
    n = getattr(model, "num_frames", None)
    return int(n) if isinstance(n, int) else None


def model_from_checkpoint(ckpt: dict, path, device) -> tuple:
    """(model in eval mode, input frames T) of a loaded checkpoint; T from the checkpoint or the model."""
    from poselift.checkpoint import instantiate

    model = instantiate(ckpt, path, device)
    window = ckpt.get("window") or model_window(model)
    if not window:
        raise InputError(path, "the checkpoint does not say how many input frames the model takes ('window')")
    return model, int(window)


# --- inference ---------------------------------------------------------------------------------------

def predict(model, views, windows, batch_size: int, flip_test: bool, device) -> np.ndarray:
    """(N, 17, 3) root-relative predictions in mm for every row of ``views`` some window answers for
    (NaN elsewhere). With ``flip_test``: (f(x) + flip(f(flip(x)))) / 2."""
    import torch

    from poselift.data.windows import Batches, flip_average

    def pose(x):
        return model(x)["pose_3d"]

    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.no_grad():
            for batch in Batches(views, windows, batch_size, shuffle=False, as_torch=True, device=device):
                x = batch["inputs_2d"]
                y = flip_average(pose, x) if flip_test else pose(x)
                outputs.append(y.float().cpu().numpy())
    finally:
        model.train(was_training)
    out = np.concatenate(outputs) * MM if outputs else np.zeros((0, 1, 17, 3), np.float32)
    if windows.kind == "frame":
        if out.shape[1] != 1:
            raise ValueError(f"a centre-frame model must return 1 frame, got {out.shape[1]}")
        out = out[:, 0]
    elif out.shape[1] != windows.length:
        raise ValueError(f"a seq2seq model must return {windows.length} frames, got {out.shape[1]}")
    return windows.stitch(out, len(views))


def validation_mpjpe(model, views, windows, batch_size: int, flip_test: bool, device) -> float:
    """Protocol-1 MPJPE (mm) over the valid rows the windows predict."""
    from poselift.metrics import joint_errors

    pred = predict(model, views, windows, batch_size, flip_test, device)
    rows = views.valid & np.isfinite(pred).all(axis=(1, 2))
    return float(joint_errors(pred[rows], views.targets_3d[rows]).mean())


# --- stage set-up -------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def submodule(model, name: str, where):
    if name == "":
        return model
    try:
        return model.get_submodule(name)
    except AttributeError:
        children = ", ".join(n for n, _ in model.named_children())
        raise InputError(where, f"model {type(model).__name__} has no submodule '{name}' "
                                f"(top-level submodules: {children})") from None


def initialise(model, stage, init_paths: dict, params_path) -> None:
    """Load each ``init`` source checkpoint into its submodule (strict)."""
    from poselift.checkpoint import read_checkpoint

    for name, number in stage.init.items():
        target = submodule(model, name, params_path)
        path = Path(init_paths[number])
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
    model.train()
    for m in frozen:
        m.eval()  # dropout off, batch-norm statistics fixed


def make_optimizer(model, stage, params_path="params.yaml"):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError(params_path, f"stage {stage.number} ({stage.name}): every parameter is frozen")
    cls = torch.optim.AdamW if stage.optimizer == "adamw" else torch.optim.Adam
    optimizer = cls(params, lr=stage.lr, weight_decay=stage.weight_decay, amsgrad=stage.amsgrad)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=stage.schedule["every"],
                                                gamma=stage.schedule["gamma"])
    return optimizer, scheduler


def to_metres(batch: dict, centre: bool) -> dict:
    """The loss terms' view of a batch: 3D in metres, seq2frame targets as one frame (B, 1, 17, 3)."""
    out = dict(batch)
    out["targets_3d"] = batch["targets_3d"] / MM
    out["trajectory"] = batch["trajectory"] / MM
    if centre:
        out["targets_3d"] = out["targets_3d"][:, None]
        out["trajectory"] = out["trajectory"][:, None]
    return out


# --- the loop -----------------------------------------------------------------------------------------

def train_stage(experiment, stage, prepared: Path, detections: Path | None, out_dir: Path,
                init_paths: dict | None = None, device="cpu", tracker=None, restart: bool = False,
                log=print) -> StageResult:
    """Train (or resume, or skip when finished) one stage; writes checkpoint.pt, last.pt, history.json."""
    import torch
    from tqdm import tqdm

    from poselift.checkpoint import build_model, read_checkpoint, rng_state, save_checkpoint, set_rng_state
    from poselift.data.windows import Batches
    from poselift.io import write_json
    from poselift.losses import LOSSES

    out_dir = Path(out_dir)
    device = torch.device(device) if not isinstance(device, torch.device) else device
    last_path, best_path = out_dir / "last.pt", out_dir / "checkpoint.pt"
    config = stage.config()
    resume = None
    if last_path.is_file() and not restart:
        resume = read_checkpoint(last_path)
        _check_resumable(resume, config, last_path)
        if resume["epoch"] >= stage.epochs:
            log(f"stage {stage.number} ({stage.name}) already finished ({resume['epoch']} epochs): {out_dir}")
            best = resume.get("best", {})
            return StageResult(resume["epoch"], best.get("epoch", 0), best.get("val_mpjpe", math.nan),
                               resume.get("history", []), out_dir, skipped=True)

    data, det = load_data(prepared, detections)
    train_views = views(data, det, "train", prepared, detections)
    val_views = views(data, det, experiment.dataset.validation_split, prepared, detections)

    seed_everything(stage.seed)
    model = build_model(stage.model.cls, stage.model.args, experiment.params_path)
    kind = output_frames(model)
    if resume is None:
        sources = {n: out_dir.parent / f"stage{n}" / "checkpoint.pt" for n in stage.init.values()}
        initialise(model, stage, {**sources, **(init_paths or {})}, experiment.params_path)
    frozen = freeze(model, stage.freeze, experiment.params_path)
    model.to(device)
    optimizer, scheduler = make_optimizer(model, stage, experiment.params_path)

    train_windows = make_windows(train_views, kind, stage.window)
    if len(train_windows) == 0:
        raise InputError(prepared, "no valid frames in the train split")
    val_frames = int(val_views.valid.sum())
    stride = 1 if stage.validation_frames is None else max(1, math.ceil(val_frames / stage.validation_frames))
    val_windows = make_windows(val_views, kind, stage.window, stride)
    batches = Batches(train_views, train_windows, stage.batch_size, shuffle=True, seed=stage.seed,
                      flip="random" if stage.flip_augment else None, as_torch=True, device=device,
                      per_epoch=stage.windows_per_epoch)

    history, best, start, run_id = [], {"epoch": 0, "val_mpjpe": math.inf}, 0, None
    if resume is not None:
        model.load_state_dict(resume["state_dict"])
        training = resume["training"]
        optimizer.load_state_dict(training["optimizer"])
        scheduler.load_state_dict(training["scheduler"])
        set_rng_state(training["rng"])
        history, best, start = list(resume["history"]), dict(resume["best"]), int(resume["epoch"])
        run_id = training.get("mlflow_run_id")
        log(f"stage {stage.number} ({stage.name}): resuming after epoch {start} from {last_path}")
    batches.epoch = start  # the data order of epoch e derives from (seed, e)

    tracker_run = None
    if tracker is not None:
        tracker_run = tracker.start_run(f"stage{stage.number}-{stage.name}",
                                        tags={"poselift.stage": str(stage.number)}, resume=run_id)
        tracker.log_params(tracker_run, {**config, "data": {
            "prepared": str(prepared), "detections": str(detections) if detections else experiment.detector,
            "train_windows": len(train_windows), "validation_windows": len(val_windows),
            "validation_split": experiment.dataset.validation_split, "device": str(device)}})

    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"stage {stage.number} ({stage.name}): {type(model).__name__}, {n_params:,} parameters "
        f"({n_train:,} trained), {len(train_windows):,} training windows of {stage.window} frames, "
        f"validating on {len(val_windows):,} windows ({experiment.dataset.validation_split}), device {device}")

    status = "FAILED"
    try:
        epochs = tqdm(range(start, stage.epochs), desc=f"stage {stage.number} {stage.name}", unit="epoch",
                      initial=start, total=stage.epochs, disable=None)
        for epoch in epochs:
            tick = time.time()
            lr = optimizer.param_groups[0]["lr"]
            terms = _train_epoch(model, frozen, batches, optimizer, stage, kind == "centre", LOSSES, epoch)
            scheduler.step()
            val = validation_mpjpe(model, val_views, val_windows, stage.batch_size, stage.flip_test, device)
            record = {"epoch": epoch + 1, "lr": lr, "loss": terms.pop("loss"), "terms": terms,
                      "val_mpjpe": val, "seconds": round(time.time() - tick, 3)}
            history.append(record)
            improved = val < best["val_mpjpe"]
            if improved:
                best = {"epoch": epoch + 1, "val_mpjpe": val}
            common = {"model": stage.model.cls, "args": stage.model.args, "window": stage.window,
                      "output_frames": kind, "epoch": epoch + 1, "stage": config, "best": best,
                      "metrics": {"val_mpjpe": val, "loss": record["loss"]}}
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            if stage.select == "last" or improved:  # before last.pt: a kill in between redoes this epoch
                save_checkpoint(best_path, {**common, "state_dict": state})
            save_checkpoint(last_path, {**common, "state_dict": state, "history": history, "training": {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                "mlflow_run_id": tracker_run}})
            write_json(out_dir / "history.json", {"stage": config, "best": best, "epochs": history})
            epochs.set_postfix(loss=f"{record['loss']:.4f}", val_mpjpe=f"{val:.1f}")
            if tracker is not None:
                tracker.log_metrics(tracker_run, {"loss": record["loss"], "loss_terms": terms, "val_mpjpe": val,
                                                  "lr": lr}, step=epoch + 1)
            log(f"epoch {epoch + 1}/{stage.epochs}: loss {record['loss']:.5f}, validation MPJPE {val:.2f} mm, "
                f"lr {lr:.3g}, {record['seconds']:.1f} s")
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if tracker is not None:
            if status == "FINISHED":
                tracker.log_metrics(tracker_run, {"best_val_mpjpe": best["val_mpjpe"],
                                                  "best_epoch": best["epoch"]}, step=stage.epochs)
                tracker.log_artifacts(tracker_run, [out_dir / "history.json"])
            tracker.end_run(tracker_run, status)
    return StageResult(stage.epochs, best["epoch"], best["val_mpjpe"], history, out_dir)


def _train_epoch(model, frozen, batches, optimizer, stage, centre: bool, losses: dict, epoch: int) -> dict:
    """One pass over the shuffled windows; returns the window-weighted mean of the total and each term."""
    import torch
    from tqdm import tqdm

    train_mode(model, frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    sums: dict = {}  # running sums stay on the device: no synchronisation per batch
    count = 0
    bar = tqdm(batches, desc=f"epoch {epoch + 1}", unit="batch", leave=False, disable=None)
    for batch in bar:
        target = to_metres(batch, centre)
        out = model(batch["inputs_2d"])
        values = {name: losses[name](out, target) for name in stage.losses}
        loss = sum(weight * values[name] for name, weight in stage.losses.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if stage.max_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, stage.max_norm)
        optimizer.step()
        n = int(batch["inputs_2d"].shape[0])
        count += n
        for name, value in {"loss": loss, **values}.items():
            sums[name] = sums.get(name, 0.0) + value.detach() * n
    means = {name: float(total) / max(count, 1) for name, total in sums.items()}
    if not all(math.isfinite(v) for v in means.values()):
        raise FloatingPointError(f"epoch {epoch + 1}: non-finite training loss {means} (lower the learning "
                                 f"rate or set max_norm)")
    return means


def _check_resumable(ckpt: dict, config: dict, path: Path) -> None:
    """A last.pt continues only the same stage config (``epochs`` may grow)."""
    old = dict(ckpt.get("stage") or {})
    if "training" not in ckpt:
        raise InputError(path, "has no training state to resume from (pass --restart to train anew)")
    diff = sorted(k for k in set(old) | set(config) if k != "epochs" and old.get(k) != config.get(k))
    if diff:
        raise InputError(path, f"was written by a stage with other settings ({', '.join(diff)} differ); "
                               f"pass --restart to train anew")
