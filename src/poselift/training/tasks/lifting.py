"""Keypoint lifting: windows of 2D keypoints in, root-relative camera-frame 3D out.

Data: a prepared file and its 2D (a detections file, or the prepared file's own 2D), as
:class:`~poselift.data.windows.Views` per split. Models with ``output_frames == "centre"`` get one window of
T = ``window`` frames per valid frame (target: the centre frame); seq2seq models (``"all"``) get MixSTE's
T-frame chunks (targets: every frame, with a ``mask`` of real, valid frames). Training batches are shuffled
per epoch; with ``flip_augment: true`` every window comes twice an epoch, plain and mirrored (2N samples,
the official VideoPose3D / PoseFormer / MixSTE generators), with ``flip_augment: random`` once, mirrored
with probability 1/2 (N samples). The model is called as ``model(inputs_2d)``; loss terms
(:data:`poselift.lifting.losses.LOSSES`) see 3D in metres; a stage whose losses read every window frame
(``sta_spatial``) gets ``targets_3d_frames`` too. Validation is MPJPE in mm on the dataset's validation
split (an even subset of ``validation_frames`` frames), flip-averaged with ``flip_test``.

Two switches reproduce the official MixSTE code where it differs from the paper and from the other models:

- ``loss_scaled_gradient: true``: each batch's gradient is multiplied by that batch's (detached) total loss,
  as run.py's ``loss_total.backward(loss_total.clone().detach())`` does (the gradient of L^2 / 2, so batches
  with a higher loss weigh more). Done on the loss terms: :meth:`LiftingTask.step` computes the batch's L
  without gradient and each term v becomes v + (L - 1)(v - v.detach()), whose value is v (so the logged
  loss stays L) and whose gradient is L times v's. Default false (the plain gradient of L).
- ``evaluation_root: gt-only``: ``poselift evaluate`` (not the per-epoch validation) computes MPJPE with
  only the ground truth's root set to 0 and the prediction used as it is, as MixSTE's evaluate() does
  (its predicted pelvis error counts and is not subtracted from the other joints). Default ``aligned``:
  Protocol 1, both poses root-aligned (:mod:`poselift.metrics`).
"""

from __future__ import annotations

import math
from pathlib import Path

from poselift.errors import InputError
from poselift.lifting.inference import MM
from poselift.lifting.losses import LOSSES


EVALUATION_ROOTS = ("aligned", "gt-only")
FLIP_MODES = {False: None, True: "both", "random": "random"}  # flip_augment -> Batches' flip
FRAME_TARGET_LOSSES = ("sta_spatial",)  # loss terms that read the 3D of every frame of a seq2frame window


def to_metres(batch: dict, centre: bool) -> dict:
    """The loss terms' view of a batch: 3D in metres, seq2frame targets as one frame (B, 1, 17, 3)."""
    out = dict(batch)
    out["targets_3d"] = batch["targets_3d"] / MM
    out["trajectory"] = batch["trajectory"] / MM
    if "targets_3d_frames" in batch:
        out["targets_3d_frames"] = batch["targets_3d_frames"] / MM
    if centre:
        out["targets_3d"] = out["targets_3d"][:, None]
        out["trajectory"] = out["trajectory"][:, None]
    return out


class LiftingTask:
    name = "lifting"
    losses = LOSSES
    metric, maximise = "val_mpjpe", False
    stage_keys = {
        "window": 1,  # input frames T (odd for centre-frame models)
        "flip_augment": False,  # true: every window plain and mirrored each epoch (2N); "random": each p=1/2 (N)
        "loss_scaled_gradient": False,  # MixSTE run.py: gradient x the batch's detached loss
        "evaluation_root": "aligned",  # "gt-only": MixSTE's evaluation, only the ground-truth root zeroed
        "flip_test": False,  # flip test-time averaging in validation and evaluation
        "validation_frames": 20000,  # validate on at most this many frames (an even subset), null = all
        "windows_per_epoch": None,  # train on this many windows an epoch (a fresh random subset each epoch), null = all
    }

    @staticmethod
    def check_stage_options(o: dict, check, where: str) -> dict:
        o["window"] = check.integer(o["window"], f"{where}.window", minimum=1)
        if not (isinstance(o["flip_augment"], bool) or o["flip_augment"] == "random"):
            check.fail(f"{where}.flip_augment", f"expected true, false or random, got {o['flip_augment']!r}")
        for key in ("flip_test", "loss_scaled_gradient"):
            o[key] = check.boolean(o[key], f"{where}.{key}")
        o["evaluation_root"] = check.choice(o["evaluation_root"], f"{where}.evaluation_root", EVALUATION_ROOTS)
        for key in ("validation_frames", "windows_per_epoch"):
            if o[key] is not None:
                o[key] = check.integer(o[key], f"{where}.{key}", minimum=1)
        return o

    @staticmethod
    def inputs(experiment) -> dict:
        """The files it reads by default: the prepared dataset and its 2D (None: the prepared file's own 2D)."""
        return {"prepared": experiment.prepared_path(), "detections": experiment.detections_path()}

    def __init__(self, inputs: dict, device):
        from poselift.data.loading import load_data

        self.prepared, self.detections = Path(inputs["prepared"]), inputs.get("detections")
        self.device = device
        self.data, self.det = load_data(self.prepared, self.detections)

    def views(self, split: str):
        from poselift.data.loading import load_data, split_views

        if self.data is None:  # released after setup/evaluate built their views: read again
            self.data, self.det = load_data(self.prepared, self.detections)
        return split_views(self.data, self.det, split, self.prepared, self.detections)

    def release(self) -> None:
        """Drop the prepared data and its 2D once the views are built (everything later indexes the views):
        on the full open benchmark 0.7 GB that predictions, metrics and batches then reuse."""
        self.data = self.det = None

    # --- training ---

    def setup(self, model, stage, validation_split: str) -> dict:
        from poselift.data.loading import make_windows
        from poselift.data.windows import Batches
        from poselift.models import output_frames

        o = stage.options
        self.window, self.batch_size, self.flip_test = o["window"], stage.batch_size, o["flip_test"]
        kind = output_frames(model)
        self.centre = kind == "centre"
        train_views, self.val_views = self.views("train"), self.views(validation_split)
        self.release()
        self.train_windows = make_windows(train_views, kind, self.window)
        if len(self.train_windows) == 0:
            raise InputError(self.prepared, "no valid frames in the train split")
        val_frames = int(self.val_views.valid.sum())
        limit = o["validation_frames"]
        stride = 1 if limit is None else max(1, math.ceil(val_frames / limit))
        self.val_windows = make_windows(self.val_views, kind, self.window, stride)
        self.batches = Batches(train_views, self.train_windows, stage.batch_size, shuffle=True, seed=stage.seed,
                               flip=FLIP_MODES[o["flip_augment"]], as_torch=True, device=self.device,
                               per_epoch=o["windows_per_epoch"],
                               frame_targets=any(name in FRAME_TARGET_LOSSES for name in stage.losses))
        self.loss_weights = dict(stage.losses) if o["loss_scaled_gradient"] else None
        self.losses = loss_scaled_terms(LOSSES) if o["loss_scaled_gradient"] else LOSSES
        return {"train_windows": len(self.train_windows), "validation_windows": len(self.val_windows)}

    def describe(self) -> str:
        twice = ", each plain and mirrored every epoch" if self.batches.flip == "both" else ""
        return (f"{len(self.train_windows):,} training windows of {self.window} frames{twice}, "
                f"validating on {len(self.val_windows):,} windows")

    def step(self, model, batch) -> tuple[dict, dict, int]:
        targets = to_metres(batch, self.centre)
        out = model(batch["inputs_2d"])
        if getattr(self, "loss_weights", None) is not None:
            targets["loss_scale"] = batch_loss(out, targets, self.loss_weights, LOSSES)
        return out, targets, int(batch["inputs_2d"].shape[0])

    def validate(self, model) -> float:
        from poselift.lifting.inference import validation_mpjpe

        return validation_mpjpe(model, self.val_views, self.val_windows, self.batch_size, self.flip_test,
                                self.device)

    # --- evaluation ---

    def evaluate(self, model, ckpt: dict, path, out: Path, split: str, batch_size: int, flip_test: bool,
                 pck_joints: str, inputs: dict) -> tuple[dict, int, int]:
        """Predict every valid frame of ``split`` with checkpoint ``ckpt``'s ``model`` (read from ``path``) and
        write the evaluation files (:mod:`poselift.evaluation`) to ``out``; returns (metrics, views, T)."""
        import numpy as np

        from poselift.data.loading import make_windows
        from poselift.evaluation import write_evaluation
        from poselift.lifting.inference import predict
        from poselift.models import model_window, output_frames

        root = (ckpt.get("stage") or {}).get("evaluation_root", "aligned")
        window = ckpt.get("window") or model_window(model)
        if not window:
            raise InputError(path, "the checkpoint does not say how many input frames the model takes ('window')")
        test = self.views(split)
        self.release()
        windows = make_windows(test, output_frames(model), int(window))
        pred = predict(model, test, windows, batch_size, flip_test, self.device)
        pred = pred[test.valid].astype(np.float32)
        if not np.isfinite(pred).all():
            raise InputError(path, "the model predicted non-finite 3D poses")
        result = write_evaluation(out, pred, test, pck_joints, inputs={**inputs, "window": int(window)}, root=root)
        return result, test.num_views, int(window)


def batch_loss(out: dict, targets: dict, weights: dict, losses: dict):
    """The batch's total loss sum(weight * losses[name](out, targets)), computed without gradient (a 0-d tensor)."""
    import torch

    with torch.no_grad():
        return sum(w * losses[name](out, targets) for name, w in weights.items()).detach()


def loss_scaled_terms(losses: dict) -> dict:
    """``losses`` with each term v made v + (s - 1) * (v - v.detach()), s = ``targets["loss_scale"]``: the same
    value, s times the gradient. With s = the batch's total loss L (:func:`batch_loss`), the summed loss's
    backward is the official MixSTE ``loss.backward(loss.clone().detach())``, whatever the model's outputs
    are computed from. Without ``loss_scale`` in the targets a term is unchanged."""

    def scaled(term):
        def scaled_term(out: dict, targets: dict):
            value = term(out, targets)
            scale = targets.get("loss_scale")
            return value if scale is None else value + (scale - 1) * (value - value.detach())

        scaled_term.__doc__ = term.__doc__
        return scaled_term

    return {name: scaled(term) for name, term in losses.items()}
