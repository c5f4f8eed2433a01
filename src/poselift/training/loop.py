"""The one training loop: one stage of an experiment (:mod:`poselift.experiments`), for every task.

One stage: the task reads its data -> seed -> model from its preset -> earlier stages' checkpoints into
submodules (``init``) -> frozen submodules (``freeze``: no gradient, eval mode) -> Adam/AdamW over the
trainable parameters with a step schedule (:mod:`poselift.training.stage`) -> per epoch: the task's shuffled
batches, the sum of the stage's weighted loss terms, optional gradient-norm clipping, then the task's
validation metric -> checkpoints. What a batch holds, how the model is called and what validation measures
is the task's (:mod:`poselift.training.tasks`); the loop never looks inside a batch.

Checkpoints (:mod:`poselift.training.checkpoint`): ``last.pt`` every epoch with the optimiser, scheduler and
RNG states, so a killed run started again continues from the next epoch and ends bit-identical to an
uninterrupted one (same device and thread count); ``checkpoint.pt`` is the model later stages and
evaluation use (best validation metric, or the final epoch with ``select: last``); ``history.json`` the
per-epoch record. A finished stage is a no-op.

Several processes (``torchrun``/``srun``, :mod:`poselift.training.distributed`): the model is wrapped in
DistributedDataParallel and the stage's ``batch_size`` stays the global batch: each rank takes a contiguous
part of every batch of the one-process order (a last batch smaller than the world is dropped), and its mean
loss is weighted by its share of the batch's samples, so the averaged gradient is the global batch's and the
same stage gives the same weights on 1 or N processes, to float rounding. Exceptions: dropout masks (each rank
has its own random stream), BatchNorm on the CPU (per-rank statistics; on CUDA SyncBatchNorm), losses that
are not means over samples (masked seq2seq frames, ``loss_scaled_gradient``: each rank scales by its own
part's loss). Rank 0 alone validates (the value is broadcast, so every rank agrees on the best epoch), logs,
and writes checkpoints, history, the kept state and MLflow; ``last.pt`` holds every rank's RNG state, and
every rank resumes from it (they must share the stage folder).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from poselift.errors import InputError
from poselift.precision import FP32


@dataclass
class StageResult:
    epochs: int  # epochs completed
    best_epoch: int
    best_value: float  # of the task's validation metric
    metric: str  # its name, e.g. val_mpjpe
    history: list
    out_dir: Path
    skipped: bool = False  # the stage was already finished


def train_stage(experiment, stage, inputs: dict, out_dir: Path, init_paths: dict | None = None, device="cpu",
                tracker=None, restart: bool = False, log=print, keep: Path | None = None,
                code: str = "", precision: str | None = None) -> StageResult:
    """Train (or resume, or skip when finished) one stage on ``inputs`` (the task's data files, e.g.
    {"prepared": ..., "detections": ...}); writes checkpoint.pt, last.pt, history.json to ``out_dir``.

    ``keep``: a folder outside the workflow's declared outputs (which Snakemake deletes when a job dies)
    where each epoch's last.pt and checkpoint.pt are mirrored, with the stage's settings and ``code`` (the
    fingerprint of the code that trains). A rerun whose ``out_dir`` has no last.pt resumes from them when
    both match, else discards them; the folder is removed when the stage completes.

    ``precision``: "fp32" or "bf16" (default: the stage's ``precision``), as :func:`poselift.precision.resolve`
    grants it on ``device``: forward passes (training and validation) under its autocast, losses in fp32."""
    import torch
    from tqdm import tqdm

    from poselift.io import write_json
    from poselift.models import build_model, output_frames
    from poselift.precision import resolve as resolve_precision
    from poselift.training.checkpoint import read_checkpoint, rng_state, save_checkpoint, set_rng_state
    from poselift.training import distributed
    from poselift.training.stage import freeze, initialise, make_optimizer, seed_everything
    from poselift.training.tasks import TASKS

    out_dir = Path(out_dir)
    device = torch.device(device) if not isinstance(device, torch.device) else device
    device = distributed.start(device)  # under torchrun/srun: join the process group; this rank's GPU
    main = distributed.is_main()
    if not main:  # rank 0 alone logs and writes files and MLflow records
        tracker, log = None, _quiet
    last_path, best_path = out_dir / "last.pt", out_dir / "checkpoint.pt"
    config = stage.config()
    task_cls = TASKS[stage.task]
    metric = task_cls.metric
    resume = None
    if keep is not None and main:
        _restore_kept(Path(keep), out_dir, config, code, restart, log)
    keep = keep if main else None
    distributed.barrier()  # a restored last.pt is in place before any rank looks for it
    if last_path.is_file() and not restart:
        resume = read_checkpoint(last_path)
        _check_resumable(resume, config, last_path)
        if resume["epoch"] >= stage.epochs:
            log(f"stage {stage.number} ({stage.name}) already finished ({resume['epoch']} epochs): {out_dir}")
            best = resume.get("best", {})
            if main:
                _complete_finished(out_dir, resume, keep)
            return StageResult(resume["epoch"], best.get("epoch", 0), best.get(metric, math.nan), metric,
                               resume.get("history", []), out_dir, skipped=True)

    amp = resolve_precision(precision or stage.precision, device)
    if stage.compile:  # its toolchain, before any data is read
        from poselift.compilation import check as check_compile

        check_compile(device, f"{experiment.name} stage {stage.number}: compile")
    task = task_cls(inputs, device)
    seed_everything(stage.seed)
    model = build_model(stage.model.cls, stage.model.args, experiment.params_path)
    if resume is None:
        sources = {n: out_dir.parent / f"stage{n}" / "checkpoint.pt" for n in experiment.init_sources(stage.number)}
        initialise(model, stage, {**sources, **(init_paths or {})}, experiment.params_path)
    model = distributed.sync_batch_norm(model, device)
    frozen = freeze(model, stage.freeze, experiment.params_path)
    amp.prepare(model.to(device))
    optimizer, scheduler = make_optimizer(model, stage, experiment.params_path)
    data_info = task.setup(model, stage, experiment.dataset.validation_split)

    history, best, start, run_id = [], {"epoch": 0, metric: -math.inf if task.maximise else math.inf}, 0, None
    if resume is not None:
        model.load_state_dict(resume["state_dict"])
        training = resume["training"]
        optimizer.load_state_dict(training["optimizer"])
        scheduler.load_state_dict(training["scheduler"])
        set_rng_state(training["rng"])
        history, best, start = list(resume["history"]), dict(resume["best"]), int(resume["epoch"])
        run_id = training.get("mlflow_run_id")
        log(f"stage {stage.number} ({stage.name}): resuming after epoch {start} from {last_path}")
    if len(set(distributed.gather_values(start))) > 1:  # a rank without rank 0's last.pt would train apart
        raise InputError(out_dir, f"the ranks resume from different epochs ({distributed.gather_values(start)}): "
                                  f"every rank must see the stage folder (a shared file system)")
    task.batches.epoch = start  # the data order of epoch e derives from (seed, e)
    task.batches.rank, task.batches.world = distributed.rank(), distributed.world_size()  # this rank's part
    _seed_rank(stage.seed, start, resume)
    net = distributed.wrap(model, device)  # DistributedDataParallel with several processes, else the model
    if stage.compile:  # the training passes through TorchInductor; validation and checkpoints use `model`
        from poselift.compilation import compile_model

        net = compile_model(net, device, f"{experiment.name} stage {stage.number}: compile")

    tracker_run = None
    if tracker is not None:
        tracker_run = tracker.start_run(f"stage{stage.number}-{stage.name}",
                                        tags={"poselift.stage": str(stage.number)}, resume=run_id)
        tracker.log_params(tracker_run, {**config, "data": {
            **{k: str(v) for k, v in inputs.items() if v is not None}, **data_info,
            "detector": experiment.detector, "validation_split": experiment.dataset.validation_split,
            "device": str(device), "threads": torch.get_num_threads()}})

    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"stage {stage.number} ({stage.name}): {type(model).__name__}, {n_params:,} parameters "
        f"({n_train:,} trained), task {stage.task}: {task.describe()} ({experiment.dataset.validation_split}), "
        f"device {device}, {amp.name}{', torch.compile' if stage.compile else ''}")

    status = "FAILED"
    try:
        epochs = tqdm(range(start, stage.epochs), desc=f"stage {stage.number} {stage.name}", unit="epoch",
                      initial=start, total=stage.epochs, disable=None if main else True)
        for epoch in epochs:
            tick = time.time()
            lr = optimizer.param_groups[0]["lr"]
            terms, data_share = _train_epoch(net, frozen, task, optimizer, stage, epoch, amp)
            scheduler.step()
            val = distributed.broadcast_value(amp.run(task.validate, model) if main else None)  # rank 0 validates
            record = {"epoch": epoch + 1, "lr": lr, "loss": terms.pop("loss"), "terms": terms,
                      metric: val, "seconds": round(time.time() - tick, 3), "data_share": round(data_share, 4)}
            history.append(record)
            improved = val > best[metric] if task.maximise else val < best[metric]
            if improved:
                best = {"epoch": epoch + 1, metric: val}
            rank_rngs = {"rng_ranks": distributed.gather_values(rng_state())} if distributed.active() else {}
            if main:
                common = {"model": stage.model.cls, "args": stage.model.args,
                          "window": stage.options.get("window"),
                          "output_frames": output_frames(model) if hasattr(model, "output_frames") else None,
                          "task": stage.task, "epoch": epoch + 1, "stage": config, "best": best,
                          "metrics": {metric: val, "loss": record["loss"]}}
                state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                if stage.select == "last" or improved:  # before last.pt: a kill in between redoes this epoch
                    save_checkpoint(best_path, {**common, "state_dict": state})
                save_checkpoint(last_path, {**common, "state_dict": state, "history": history, "training": {
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                    **rank_rngs, "mlflow_run_id": tracker_run}})
                write_json(out_dir / "history.json", {"stage": config, "best": best, "epochs": history})
                if keep is not None:
                    _mirror(Path(keep), [best_path, last_path], {"stage": config, "code": code})
            epochs.set_postfix(loss=f"{record['loss']:.4f}", **{metric: f"{val:.4g}"})
            if tracker is not None:
                tracker.log_metrics(tracker_run, {"loss": record["loss"], "loss_terms": terms, metric: val,
                                                  "lr": lr}, step=epoch + 1)
            log(f"epoch {epoch + 1}/{stage.epochs}: loss {record['loss']:.5f}, {metric} {val:.4g}, "
                f"lr {lr:.3g}, {record['seconds']:.1f} s (waiting for data: {100 * data_share:.1f}% of the steps)")
        distributed.barrier()  # every rank returns once rank 0 has written the last epoch
        status = "FINISHED"
        if keep is not None:
            shutil.rmtree(keep, ignore_errors=True)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if tracker is not None:
            if status == "FINISHED":
                tracker.log_metrics(tracker_run, {f"best_{metric}": best[metric],
                                                  "best_epoch": best["epoch"]}, step=stage.epochs)
                tracker.log_artifacts(tracker_run, [out_dir / "history.json"])
            tracker.end_run(tracker_run, status)
    return StageResult(stage.epochs, best["epoch"], best[metric], metric, history, out_dir)


def _train_epoch(model, frozen, task, optimizer, stage, epoch: int, amp=FP32) -> tuple[dict, float]:
    """One pass over the task's shuffled batches, forward passes at precision ``amp``; returns the
    sample-weighted mean of the total and each term, and the share of the pass spent waiting for the next
    batch (the data pipeline's share of the step time; on CUDA, time the host waited, so an upper bound)."""
    import torch
    from tqdm import tqdm

    from poselift.training import distributed
    from poselift.training.stage import train_mode

    train_mode(model, frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    sums: dict = {}  # running sums stay on the device: no synchronisation per batch
    count = 0
    bar = tqdm(task.batches, desc=f"epoch {epoch + 1}", unit="batch", leave=False,
               disable=None if distributed.is_main() else True)
    batches, waited, start = iter(bar), 0.0, time.perf_counter()
    while True:
        tick = time.perf_counter()
        batch = next(batches, None)
        waited += time.perf_counter() - tick
        if batch is None:
            break
        out, targets, n = amp.run(task.step, model, batch)
        values = {name: task.losses[name](out, targets) for name in stage.losses}
        loss = sum(weight * values[name] for name, weight in stage.losses.items())
        objective = loss * _rank_weight(n, loss.device) if distributed.active() else loss
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if stage.max_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, stage.max_norm)
        optimizer.step()
        count += n
        for name, value in {"loss": loss, **values}.items():
            sums[name] = sums.get(name, 0.0) + value.detach() * n
    sums, count = _sum_over_ranks(sums, count, params[0].device)
    means = {name: float(total) / max(count, 1) for name, total in sums.items()}
    if not all(math.isfinite(v) for v in means.values()):
        raise FloatingPointError(f"epoch {epoch + 1}: non-finite training loss {means} (lower the learning "
                                 f"rate or set max_norm)")
    return means, waited / max(time.perf_counter() - start, 1e-9)


def _rank_weight(n: int, device):
    """n x world / N (a 0-d tensor on ``device``: no wait for the host), N the global batch's samples summed
    over the ranks: each rank's mean loss times this, averaged by DistributedDataParallel, has the gradient of
    the global batch's mean, also when the ranks' parts differ in size (a last, partial batch)."""
    import torch

    from poselift.training import distributed

    total = distributed.all_sum(torch.tensor(float(n), device=device))
    return (n * distributed.world_size()) / total


def _sum_over_ranks(sums: dict, count: int, device) -> tuple[dict, int]:
    """An epoch's per-term loss sums and sample count added over the ranks (unchanged alone): every rank logs,
    and checks, the loss of the whole epoch."""
    import torch

    from poselift.training import distributed

    if not distributed.active():
        return sums, count
    names = sorted(sums)
    packed = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=device) for k in names]
                         + [torch.tensor(float(count), dtype=torch.float64, device=device)])
    packed = distributed.all_sum(packed).tolist()
    return dict(zip(names, packed[:-1])), int(packed[-1])


def _seed_rank(seed: int, epoch: int, resume: dict | None) -> None:
    """With several processes, each rank's own random stream (dropout masks differ between ranks): the state it
    saved in last.pt when the world size is the same, else rank 0 keeps the one-process stream and rank r > 0
    is seeded by (seed, r, epoch)."""
    import numpy as np

    from poselift.training import distributed
    from poselift.training.checkpoint import set_rng_state
    from poselift.training.stage import seed_everything

    if not distributed.active():
        return
    rank, saved = distributed.rank(), ((resume or {}).get("training") or {}).get("rng_ranks")
    if saved and len(saved) == distributed.world_size():
        set_rng_state(saved[rank])
    elif rank > 0:
        seed_everything(int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0]))


def _quiet(*args, **kwargs) -> None:
    """The log of ranks other than 0."""


def _complete_finished(out_dir: Path, ckpt: dict, keep: Path | None) -> None:
    """A finished stage's history.json as its last epoch wrote it, from its last.pt, when the file is missing
    or differs (a run killed after writing its last last.pt but before history.json; a last.pt restored from
    a kept state, which has no history.json), and the kept state removed (a run killed before removing it)."""
    from poselift.io import read_json, write_json

    record = {"stage": ckpt.get("stage"), "best": ckpt.get("best", {}), "epochs": ckpt.get("history", [])}
    try:
        same = read_json(out_dir / "history.json") == json.loads(json.dumps(record))
    except InputError:
        same = False
    if not same:
        write_json(out_dir / "history.json", record)
    if keep is not None:
        shutil.rmtree(keep, ignore_errors=True)


KEPT = "kept.json"  # the settings and code fingerprint of a kept state


def _restore_kept(keep: Path, out_dir: Path, config: dict, code: str, restart: bool, log) -> None:
    """Put a kept last.pt/checkpoint.pt back into ``out_dir`` when it has none and the kept state was written
    by the same stage settings and code; discard a kept state that does not match (or ``restart``)."""
    from poselift.io import read_json

    if not keep.is_dir():
        return
    try:
        kept = read_json(keep / KEPT)
    except InputError:
        kept = None
    same = isinstance(kept, dict) and kept.get("stage") == json.loads(json.dumps(config)) and kept.get("code") == code
    if restart or not same or not (keep / "last.pt").is_file():
        if not restart:
            log(f"discarding the kept training state in {keep}: written by other settings or code")
        shutil.rmtree(keep, ignore_errors=True)
        return
    if (out_dir / "last.pt").exists():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("checkpoint.pt", "last.pt"):  # last.pt last: its presence marks a complete restore
        if (keep / name).is_file():
            _link(keep / name, out_dir / name)
    log(f"restored the training state kept in {keep}")


def _mirror(keep: Path, paths, meta: dict) -> None:
    """Hard-link (copy across file systems) each file into ``keep``, atomically, and write its meta."""
    from poselift.io import write_json

    keep.mkdir(parents=True, exist_ok=True)
    write_json(keep / KEPT, meta)
    for path in paths:
        if path.is_file():
            _link(path, keep / path.name)


def _link(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _check_resumable(ckpt: dict, config: dict, path: Path) -> None:
    """A last.pt continues only the same stage config (``epochs`` may grow)."""
    old = dict(ckpt.get("stage") or {})
    if "training" not in ckpt:
        raise InputError(path, "has no training state to resume from (pass --restart to train anew)")
    diff = sorted(k for k in set(old) | set(config) if k != "epochs" and old.get(k) != config.get(k))
    if diff:
        raise InputError(path, f"was written by a stage with other settings ({', '.join(diff)} differ); "
                               f"pass --restart to train anew")
