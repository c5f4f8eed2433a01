"""Keypoint lifting: windows of 2D keypoints in, root-relative camera-frame 3D out.

Data: a prepared file and its 2D (a detections file, or the prepared file's own 2D), as
:class:`~poselift.data.windows.Views` per split. Models with ``output_frames == "centre"`` get one window of
T = ``window`` frames per valid frame (target: the centre frame); seq2seq models (``"all"``) get MixSTE's
T-frame chunks (targets: every frame, with a ``mask`` of real, valid frames). Training batches are shuffled
per epoch and, with ``flip_augment``, mirrored at random. The model is called as ``model(inputs_2d)``; loss
terms (:data:`poselift.lifting.losses.LOSSES`) see 3D in metres. Validation is MPJPE in mm on the dataset's
validation split (an even subset of ``validation_frames`` frames), flip-averaged with ``flip_test``.
"""

from __future__ import annotations

import math
from pathlib import Path

from poselift.errors import InputError
from poselift.lifting.inference import MM
from poselift.lifting.losses import LOSSES


def to_metres(batch: dict, centre: bool) -> dict:
    """The loss terms' view of a batch: 3D in metres, seq2frame targets as one frame (B, 1, 17, 3)."""
    out = dict(batch)
    out["targets_3d"] = batch["targets_3d"] / MM
    out["trajectory"] = batch["trajectory"] / MM
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
        "flip_augment": False,  # mirror a random half of each batch
        "flip_test": False,  # flip test-time averaging in validation and evaluation
        "validation_frames": 20000,  # validate on at most this many frames (an even subset), null = all
        "windows_per_epoch": None,  # train on this many windows an epoch (a fresh random subset each epoch), null = all
    }

    @staticmethod
    def check_stage_options(o: dict, check, where: str) -> dict:
        o["window"] = check.integer(o["window"], f"{where}.window", minimum=1)
        for key in ("flip_augment", "flip_test"):
            o[key] = check.boolean(o[key], f"{where}.{key}")
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
        from poselift.data.loading import split_views

        return split_views(self.data, self.det, split, self.prepared, self.detections)

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
        self.train_windows = make_windows(train_views, kind, self.window)
        if len(self.train_windows) == 0:
            raise InputError(self.prepared, "no valid frames in the train split")
        val_frames = int(self.val_views.valid.sum())
        limit = o["validation_frames"]
        stride = 1 if limit is None else max(1, math.ceil(val_frames / limit))
        self.val_windows = make_windows(self.val_views, kind, self.window, stride)
        self.batches = Batches(train_views, self.train_windows, stage.batch_size, shuffle=True, seed=stage.seed,
                               flip="random" if o["flip_augment"] else None, as_torch=True, device=self.device,
                               per_epoch=o["windows_per_epoch"])
        return {"train_windows": len(self.train_windows), "validation_windows": len(self.val_windows)}

    def describe(self) -> str:
        return (f"{len(self.train_windows):,} training windows of {self.window} frames, "
                f"validating on {len(self.val_windows):,} windows")

    def step(self, model, batch) -> tuple[dict, dict, int]:
        targets = to_metres(batch, self.centre)
        return model(batch["inputs_2d"]), targets, int(batch["inputs_2d"].shape[0])

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

        window = ckpt.get("window") or model_window(model)
        if not window:
            raise InputError(path, "the checkpoint does not say how many input frames the model takes ('window')")
        test = self.views(split)
        windows = make_windows(test, output_frames(model), int(window))
        pred = predict(model, test, windows, batch_size, flip_test, self.device)
        pred = pred[test.valid].astype(np.float32)
        if not np.isfinite(pred).all():
            raise InputError(path, "the model predicted non-finite 3D poses")
        result = write_evaluation(out, pred, test, pck_joints, inputs={**inputs, "window": int(window)})
        return result, test.num_views, int(window)
