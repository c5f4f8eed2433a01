"""Heatmaps: top-down 2D detectors (HRNet, HRNet with channel attention, CPN) trained through the one loop.

Data: a labelled-crops file (:mod:`poselift.data.crop_file`: the rendered benchmark, or real frames through
``poselift crops``) and the prepared file whose sequences' ``split`` assigns each crop: view
"<subject>/<sequence>/<camera>" belongs to sequence "<subject>/<sequence>". A training sample is one stored
crop, augmented as the official HRNet code does (:mod:`poselift.detection.augment`) and resized to the
stage's ``input_size``; its targets are one Gaussian map per joint (:func:`~poselift.detection.heatmaps.
gaussian_targets`) for each target the model names in ``heatmap_sigmas`` (HRNet: "heatmaps"; CPN: its four
GlobalNet levels and "heatmaps"), all at input / 4, plus ``target_weight`` (B, J). The model is called as
``model(images)`` on ImageNet-normalised (B, 3, H, W) and returns at least "heatmaps" (B, J, H/4, W/4).

Which joints train: the labelled ones (finite keypoints), occluded or not. That is the code's rule
(target_weight = COCO's v > 0, which counts "labelled but occluded"); a rendered crop's ``visibility`` 0
marks a joint hidden by the body but still exactly labelled, so it gets a target, as the official training
and the Human3.6M evaluations (all 17 joints) treat such joints. Evaluation counts the same joints.

Validation (``val_px``, lower is better): the decoded keypoints' mean distance to the ground truth in stored
crop pixels (256x192), over labelled joints, on an even subset of ``validation_crops`` crops of the
validation split, flip-averaged with ``flip_test``. Evaluation (``poselift evaluate``) predicts every crop
of the split, carries the keypoints through each crop's affine to frame pixels and writes ``metrics.json``
(:func:`poselift.detection.evaluation.keypoint_metrics`: COCO AP/AR by OKS, PCK@0.05, pixel errors) and
``predictions.npz``.

Stage keys (defaults = the official recipe, [HRc] w32_256x192_adam_lr1e-3.yaml):

- ``augment`` (true): flip, scale, rotation, half body ([HRc] DATASET.*).
- ``flip_test`` (true): [HRc] TEST.FLIP_TEST with SHIFT_HEATMAP, in validation and evaluation.
- ``input_size`` ([256, 192]): the network input (H, W), each divisible by 4; a smaller one (a CPU
  configuration's [128, 96]) resizes the crops and scales the keypoints; it must keep the crops' aspect.
- ``sigma`` (null): the Gaussian sigma of the "heatmaps" target, in heatmap pixels of a 256x192 input
  (64x48 maps). null = the model's own ``heatmap_sigmas`` (HRNet 2, [HRc] MODEL.SIGMA; CPN its kernels'
  sigmas), or 2 for a model without them; a number overrides the "heatmaps" target only (e.g. [A] Eq. 4's
  sigma = 1, spec A5). Every sigma is scaled with the input height / 256, so a target covers the same part
  of the person at every input size, as the official configurations do (384x288: SIGMA 3 = 2 x 384/256):
  a CPU configuration's 128x96 input trains with sigma 1 on its 32x24 maps.
- ``validation_crops`` (2000): validate on at most this many crops (an even subset); null = all.
- ``crops_per_epoch`` (null): train on this many crops an epoch (a fresh random subset each epoch); null = all.

Loss terms: ``heatmap_mse`` ([HRc] JointsMSELoss), ``cpn_global`` and ``cpn_refine`` (CPN's GlobalNet and
RefineNet-with-OHKM losses, :mod:`poselift.detection.cpn`).

Loading: crops are decoded, augmented and turned into targets by a small thread pool (OpenCV releases the
GIL), one batch ahead of the model. Each crop's augmentation draws from its own Generator seeded by (stage
seed, epoch, crop) and the epoch's order from (seed, epoch), so a resumed run is bit-identical.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from poselift.detection.heatmaps import STRIDE, joints_mse
from poselift.errors import InputError
from poselift.training.sampling import batch_count, epoch_count, epoch_order, rank_part

DEFAULT_SIGMA = 2.0  # [HRc] MODEL.SIGMA, for models that do not name their targets' sigmas
REFERENCE_HEIGHT = 256  # sigmas are given for a 256x192 input and scale with the input height


def cpn_global(out: dict, targets: dict):
    """CPN's GlobalNet loss (:func:`poselift.detection.cpn.global_loss`)."""
    from poselift.detection.cpn import global_loss

    return global_loss(out, targets)


def cpn_refine(out: dict, targets: dict):
    """CPN's RefineNet loss with OHKM (:func:`poselift.detection.cpn.refine_loss`)."""
    from poselift.detection.cpn import refine_loss

    return refine_loss(out, targets)


def read_splits(prepared: Path) -> dict[str, str]:
    """{"<subject>/<sequence>": split} of a prepared file, from its attributes only."""
    from poselift.data.prepared import FORMAT, VERSION
    from poselift.io import open_layout

    splits = {}
    with open_layout(prepared, FORMAT, VERSION, "prepared dataset") as f:
        for subject, group in f.get("sequences", {}).items():
            for name, g in group.items():
                split = g.attrs.get("split")
                splits[f"{subject}/{name}"] = split.decode() if isinstance(split, bytes) else str(split)
    return splits


class CropLabels:
    """Every crop's labels of a labelled-crops file, flat over its views (no images): ``view`` (N,) index into
    ``views``, ``index`` (N,) within the view, ``frame``, ``keypoints`` (N, 17, 2) crop pixels,
    ``keypoints_frame``, ``affine`` (N, 2, 3), ``box`` (N, 4), ``visibility`` (N, 17)."""

    def __init__(self, crops):
        import h5py

        from poselift.data.crop_file import ARRAYS

        self.views = list(crops.views)
        arrays = {name: [] for name in ARRAYS}
        view, index = [], []
        with h5py.File(crops.path, "r") as f:
            for v, key in enumerate(self.views):
                for name in ARRAYS:
                    arrays[name].append(f[key][name][()])
                n = crops.counts[key]
                view.append(np.full(n, v, np.int64))
                index.append(np.arange(n, dtype=np.int64))
        for name, parts in arrays.items():
            setattr(self, name, np.concatenate(parts) if parts else np.zeros((0,)))
        self.view = np.concatenate(view) if view else np.zeros(0, np.int64)
        self.index = np.concatenate(index) if index else np.zeros(0, np.int64)
        self.labelled = np.isfinite(self.keypoints).all(axis=-1).astype(np.float32) if len(self.view) else \
            np.zeros((0, 17), np.float32)

    def __len__(self) -> int:
        return len(self.view)


class CropLoader:
    """Decodes crops and builds network inputs and targets on a thread pool (results in order)."""

    def __init__(self, crops, labels: CropLabels, input_size, sigmas: dict, seed: int, augment: bool):
        self.crops, self.labels = crops, labels
        self.input_size, self.sigmas, self.seed, self.augment = tuple(input_size), dict(sigmas), seed, augment
        self.heatmap_size = (self.input_size[0] // STRIDE, self.input_size[1] // STRIDE)
        self._pool = None

    def pool(self):
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None:
            self.crops._h5()  # open the file once here, not racing in the workers
            self._pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
        return self._pool

    def image(self, item: int) -> np.ndarray:
        """Crop ``item`` decoded and resized to the input size (no augmentation), uint8 (H, W, 3)."""
        from poselift.detection.augment import resize_affine, warp

        lab = self.labels
        image = self.crops.crop(lab.views[lab.view[item]], int(lab.index[item]))
        if image.shape[:2] != self.input_size:
            image = warp(image, resize_affine(image.shape[:2], self.input_size), self.input_size, image.shape[:2])
        return image

    def sample(self, item: int, epoch: int) -> tuple:
        """(image uint8 (H, W, 3), {target name: (J, h, w)}, target weight (J,)) of crop ``item``."""
        from poselift.detection.augment import apply_affine, augment, resize_affine, warp
        from poselift.detection.heatmaps import gaussian_targets

        lab = self.labels
        image = self.crops.crop(lab.views[lab.view[item]], int(lab.index[item]))
        keypoints, weight = lab.keypoints[item], lab.labelled[item]
        if self.augment:
            rng = np.random.default_rng([self.seed, epoch, int(item)])
            image, keypoints, weight = augment(image, keypoints, weight, rng, self.input_size)
        elif image.shape[:2] != self.input_size:
            m = resize_affine(image.shape[:2], self.input_size)
            image, keypoints = warp(image, m, self.input_size, image.shape[:2]), apply_affine(keypoints, m)
        targets, weights = {}, {}
        for name, sigma in self.sigmas.items():
            targets[name], weights[name] = gaussian_targets(keypoints, weight, self.heatmap_size, STRIDE, sigma)
        return image, targets, weights.get("heatmaps", next(iter(weights.values())))

    def _ahead(self, fn, chunks, *args):
        """[fn(item, *args) for item in chunk] for each chunk, computed on the pool one chunk ahead."""
        pool = self.pool()

        def submit(b):
            return [pool.submit(fn, int(i), *args) for i in chunks[b]] if b < len(chunks) else []

        pending = submit(0)
        for b in range(len(chunks)):
            current, pending = pending, submit(b + 1)
            yield [f.result() for f in current]

    def batches(self, chunks, epoch: int):
        """Collated training batches of the item chunks."""
        import torch

        for chunk, samples in zip(chunks, self._ahead(self.sample, chunks, epoch)):
            yield {"images": torch.from_numpy(np.stack([s[0] for s in samples])),
                   "targets": {name: torch.from_numpy(np.stack([s[1][name] for s in samples]))
                               for name in self.sigmas},
                   "target_weight": torch.from_numpy(np.stack([s[2] for s in samples])),
                   "items": torch.from_numpy(np.asarray(chunk, dtype=np.int64))}

    def images(self, items, batch_size: int):
        """Batches of un-augmented input images (uint8 (B, H, W, 3)) of ``items``."""
        chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        for images in self._ahead(self.image, chunks):
            yield np.stack(images)


class CropBatches:
    """Training batches: shuffled per epoch from (seed, epoch), ``per_epoch`` crops an epoch (None = all);
    iterating again starts the next epoch; ``epoch`` is settable (the loop's resume contract), and so are
    ``rank``/``world`` (this process's part of each batch, :func:`poselift.training.sampling.rank_part`)."""

    def __init__(self, loader: CropLoader, items: np.ndarray, batch_size: int, seed: int,
                 per_epoch: int | None = None):
        self.loader, self.items, self.batch_size, self.seed = loader, np.asarray(items), int(batch_size), seed
        self.per_epoch = per_epoch
        self.epoch = 0
        self.rank, self.world = 0, 1

    def __len__(self) -> int:
        return batch_count(epoch_count(len(self.items), self.per_epoch), self.batch_size, self.world)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        order = self.items[epoch_order(len(self.items), self.seed, epoch, self.per_epoch)]
        chunks = [rank_part(order[b * self.batch_size:(b + 1) * self.batch_size], self.rank, self.world)
                  for b in range(len(self))]
        return self.loader.batches(chunks, epoch)


def model_sigmas(model, sigma: float | None, input_size=(REFERENCE_HEIGHT, 192)) -> dict[str, float]:
    """{target name: sigma in heatmap pixels}: the model's ``heatmap_sigmas`` (default {"heatmaps": 2}), with
    the stage's ``sigma`` for "heatmaps" when given, all scaled by the input height / 256."""
    sigmas = dict(getattr(model, "heatmap_sigmas", None) or {"heatmaps": DEFAULT_SIGMA})
    if sigma is not None:
        sigmas["heatmaps"] = float(sigma)
    if "heatmaps" not in sigmas:
        raise InputError("heatmap_sigmas", f"{type(model).__name__} names no 'heatmaps' target ({', '.join(sigmas)})")
    scale = input_size[0] / REFERENCE_HEIGHT
    return {name: float(value) * scale for name, value in sigmas.items()}


class HeatmapTask:
    name = "heatmaps"
    losses = {"heatmap_mse": joints_mse, "cpn_global": cpn_global, "cpn_refine": cpn_refine}
    metric, maximise = "val_px", False
    stage_keys = {
        "augment": True,  # [HRc] flip, scale, rotation, half body
        "flip_test": True,  # [HRc] TEST.FLIP_TEST + SHIFT_HEATMAP in validation and evaluation
        "input_size": [256, 192],  # network input (H, W); heatmaps are input / 4
        "sigma": None,  # "heatmaps" target sigma (heatmap px at 256x192); null = the model's heatmap_sigmas, else 2
        "validation_crops": 2000,  # validate on at most this many crops (an even subset), null = all
        "crops_per_epoch": None,  # train on this many crops an epoch (a fresh random subset), null = all
    }

    @staticmethod
    def check_stage_options(o: dict, check, where: str) -> dict:
        for key in ("augment", "flip_test"):
            o[key] = check.boolean(o[key], f"{where}.{key}")
        size = o["input_size"]
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            check.fail(f"{where}.input_size", f"expected [height, width], got {size!r}")
        o["input_size"] = [check.integer(v, f"{where}.input_size", minimum=STRIDE) for v in size]
        if any(v % STRIDE for v in o["input_size"]):
            check.fail(f"{where}.input_size", f"height and width must be multiples of {STRIDE}, got {size}")
        if o["sigma"] is not None:
            o["sigma"] = check.number(o["sigma"], f"{where}.sigma", positive=True)
        for key in ("validation_crops", "crops_per_epoch"):
            if o[key] is not None:
                o[key] = check.integer(o[key], f"{where}.{key}", minimum=1)
        return o

    @staticmethod
    def inputs(experiment) -> dict:
        """The files it reads by default: the dataset's labelled crops and its prepared file (the splits)."""
        from poselift.experiments import renders_path

        return {"crops": renders_path(experiment.dataset.name), "prepared": experiment.prepared_path()}

    def __init__(self, inputs: dict, device):
        from poselift.data.crop_file import CropFile

        for name in ("crops", "prepared"):
            if inputs.get(name) is None:
                raise InputError("--input", f"the heatmaps task needs '{name}' (--input {name}=PATH)")
        self.crops_path, self.prepared = Path(inputs["crops"]), Path(inputs["prepared"])
        self.device = device
        self.crops = CropFile(self.crops_path)
        self.labels = CropLabels(self.crops)
        splits = read_splits(self.prepared)
        view_split = []
        for key in self.labels.views:
            sequence = key.rsplit("/", 1)[0]
            if sequence not in splits:
                raise InputError(self.crops_path, f"view '{key}': sequence '{sequence}' is not in {self.prepared}")
            view_split.append(splits[sequence])
        self.view_split = np.asarray(view_split, dtype=object)

    def items(self, split: str) -> np.ndarray:
        """Indices of the crops of ``split``."""
        if not len(self.labels):
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.view_split[self.labels.view] == split)

    def _input_size(self, size) -> tuple[int, int]:
        size = tuple(int(v) for v in size)
        crop = self.crops.crop_size
        if abs(size[0] * crop[1] - size[1] * crop[0]) > 0:
            raise InputError(self.crops_path, f"input_size {list(size)} does not keep the crops' aspect "
                                              f"({crop[0]}x{crop[1]})")
        return size

    # --- training ---

    def setup(self, model, stage, validation_split: str) -> dict:
        o = stage.options
        fmt = getattr(model, "keypoint_format", None)
        if fmt not in (None, "h36m"):
            raise InputError(type(model).__name__, f"predicts {fmt} keypoints; the heatmaps task trains on the "
                                                   f"crops' Human3.6M-17 labels (keypoint_format: h36m)")
        self.input_size = self._input_size(o["input_size"])
        self.flip_test, self.batch_size = o["flip_test"], stage.batch_size
        self.sigmas = model_sigmas(model, o["sigma"], self.input_size)
        train = self.items("train")
        if len(train) == 0:
            raise InputError(self.crops_path, f"no crops of the train split (splits from {self.prepared})")
        val = self.items(validation_split)
        limit = o["validation_crops"]
        self.val_items = val[::1 if limit is None else max(1, math.ceil(len(val) / limit))]
        if len(self.val_items) == 0:
            raise InputError(self.crops_path, f"no crops of the {validation_split} split to validate on")
        self.loader = CropLoader(self.crops, self.labels, self.input_size, self.sigmas, stage.seed, o["augment"])
        self.batches = CropBatches(self.loader, train, stage.batch_size, stage.seed, o["crops_per_epoch"])
        self.augment = o["augment"]
        return {"train_crops": len(train), "validation_crops": len(self.val_items),
                "input_size": list(self.input_size), "sigmas": self.sigmas}

    def describe(self) -> str:
        sigmas = ", ".join(f"{k} {v:g}" for k, v in self.sigmas.items())
        return (f"{len(self.batches.items):,} training crops at {self.input_size[0]}x{self.input_size[1]} "
                f"(augment {'on' if self.augment else 'off'}; sigma {sigmas}), "
                f"validating on {len(self.val_items):,} crops")

    def step(self, model, batch) -> tuple[dict, dict, int]:
        from poselift.detection.augment import normalise

        out = model(normalise(batch["images"], device=self.device))
        targets = {name: t.to(self.device, non_blocking=True) for name, t in batch["targets"].items()}
        targets["target_weight"] = batch["target_weight"].to(self.device, non_blocking=True)
        got, want = tuple(out["heatmaps"].shape[1:]), tuple(targets["heatmaps"].shape[1:])
        if got != want:
            raise InputError(type(model).__name__, f"predicts heatmaps (J, h, w) = {got} for a "
                                                   f"{self.input_size[0]}x{self.input_size[1]} input; the heatmaps "
                                                   f"task needs 17 joints at input / {STRIDE}: {want}")
        return out, targets, int(batch["images"].shape[0])

    def predict(self, model, items, flip: bool, batch_size: int, loader=None) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (N, J, 2) in stored-crop pixels and scores (N, J) of crops ``items``."""
        from poselift.detection.heatmaps import predict_crops

        loader = loader or self.loader
        model.eval()
        found = [predict_crops(model, images, loader.input_size, self.crops.crop_size, flip, self.device)
                 for images in loader.images(items, batch_size)]
        if not found:
            return np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32)
        return np.concatenate([p for p, _ in found]), np.concatenate([s for _, s in found])

    def validate(self, model) -> float:
        pred, _ = self.predict(model, self.val_items, self.flip_test, self.batch_size)
        gt = self.labels.keypoints[self.val_items]
        labelled = np.isfinite(gt).all(axis=-1)
        return float(np.linalg.norm(pred - gt, axis=-1)[labelled].mean()) if labelled.any() else math.nan

    # --- evaluation ---

    def evaluate(self, model, ckpt: dict, path, out: Path, split: str, batch_size: int, flip_test: bool,
                 pck_joints: str, inputs: dict) -> tuple[dict, int, int]:
        """Predict every crop of ``split`` with checkpoint ``ckpt``'s ``model`` (read from ``path``), carry the
        keypoints to frame pixels and write ``metrics.json`` and ``predictions.npz`` to ``out``; returns
        (metrics, views, 1). ``pck_joints`` is a lifting option (3D-PCK) and is ignored."""
        from poselift.detection.evaluation import keypoint_metrics
        from poselift.detection.heatmaps import to_frame_pixels
        from poselift.io import write_json, write_npz

        stage = ckpt.get("stage") or {}
        size = self._input_size(ckpt.get("input_size") or stage.get("input_size") or self.stage_keys["input_size"])
        items = self.items(split)
        if len(items) == 0:
            raise InputError(self.crops_path, f"no crops of the {split} split (splits from {self.prepared})")
        loader = CropLoader(self.crops, self.labels, size, model_sigmas(model, None, size), 0, augment=False)
        crop_points, scores = self.predict(model, items, flip_test, batch_size, loader)
        fmt = getattr(model, "keypoint_format", None)
        lab = self.labels
        pred = to_frame_pixels(crop_points, lab.affine[items])
        if fmt not in (None, "h36m"):  # an official COCO-17 network: mapped to H36M-17
            from poselift.keypoint_formats import scores_to_h36m17, to_h36m17

            pred, scores = to_h36m17(pred, fmt), scores_to_h36m17(scores, fmt)
        if not np.isfinite(pred).all():
            raise InputError(path, "the model predicted non-finite keypoints")
        gt = lab.keypoints_frame[items].astype(np.float64)
        labelled = np.isfinite(gt).all(axis=-1).astype(np.float64)  # COCO's v > 0: occluded joints count
        out = Path(out)
        try:
            metrics = keypoint_metrics(pred, scores, gt, labelled, lab.box[items])
        except ValueError as e:
            raise InputError(self.crops_path, f"cannot score the {split} split: {e}") from None
        views = sorted({lab.views[v] for v in lab.view[items]})
        metrics["task"] = self.name  # the report's 2D-detector table
        metrics["inputs"] = {**inputs, "input_size": list(size), "crops": str(self.crops_path),
                             "pred": str(out / "predictions.npz")}
        view_ids = {key: i for i, key in enumerate(views)}
        write_npz(out / "predictions.npz", views=np.asarray(views),
                  view=np.asarray([view_ids[lab.views[v]] for v in lab.view[items]], dtype=np.int64),
                  frame=lab.frame[items].astype(np.int64), keypoints=pred.astype(np.float32),
                  scores=np.asarray(scores, dtype=np.float32))
        write_json(out / "metrics.json", metrics)
        return metrics, len(views), 1
