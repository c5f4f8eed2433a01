"""Image lifting: a person crop's image tokens and its 2D keypoints in, root-relative camera-frame 3D out
(Lifting by Image, :mod:`poselift.lifting.lbi`).

Data, one sample per crop of the labelled-crops file (``crops``: ``poselift render`` / ``poselift crops``):

- image tokens: the crop's feature map from the features file (``features``: ``poselift detect --features``,
  the detector's stride-4 map, :mod:`poselift.data.features`), or, for a model that runs its own encoder,
  the crop itself (resized to the encoder's input, ImageNet-normalised);
- pose tokens: the detector's 2D (``detections``; the prepared file's own 2D when absent) carried into the
  crop by the crop's affine and normalised in the crop frame (spec L10): u = 2x / W - 1, v = (2y - H) / W for
  a stored crop of H x W pixels (the aspect kept, as the lifting models' screen normalisation keeps it);
- targets: the prepared file's 3D of that frame in the camera frame, root-relative, in metres (the same
  :class:`~poselift.data.windows.Views` rows the lifting task reads); frames without a valid 3D are left out.

Splits are the prepared file's (sequence attribute ``split``); validation runs on an even subset of
``validation_crops`` crops of the dataset's validation split and reports ``val_mpjpe`` (Protocol 1, mm) of the
model's ``pose_3d`` (Stage 1: the coarse pose; :class:`~poselift.lifting.lbi.LiftingByImage`: the refined).

Loss terms (Eq. 3, L = sum_i ||Y_i - Y^_i||^2 over the joints, averaged over the batch, metres):
``lbi_coarse`` on ``pose_3d_coarse`` (Stage 1), ``lbi_refined`` on ``pose_3d`` (Stage 2).

Evaluation (``poselift evaluate``) writes the lifting task's files (:func:`poselift.evaluation.
write_evaluation`: metrics.json, per_action.csv, ..., so the report's results table shows the experiment)
for the crops of the split, and adds to metrics.json the background-attention share of [L] Tables 1 and 5
(:func:`background_share`) and the kept-token count, and draws ``attention.png``: Stage 1's last-layer
keypoint -> image attention over one test crop.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from poselift.errors import InputError
from poselift.training.sampling import batch_count, epoch_count, epoch_order, rank_part

BACKGROUND_RADIUS = 30.0  # [L] Appendix: circles of 30 px around each joint, in 256x192 crop pixels (spec L7)
REFERENCE_CROP = (256, 192)  # the crop size the radius is given for


def mse_term(key: str):
    def term(out: dict, targets: dict):
        pred = out[key]
        return ((pred - targets["targets_3d"]) ** 2).sum(dim=-1).sum(dim=-1).mean()

    term.__name__ = f"mse_{key}"
    term.__doc__ = f"Eq. 3 on ``{key}``: squared errors summed over the joints, averaged over the batch (m^2)."
    return term


def to_crop(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Frame pixels (N, J, 2) -> crop pixels through the frame -> crop affines (N, 2, 3)."""
    return np.einsum("nij,nkj->nki", affine[:, :, :2], points) + affine[:, None, :, 2]


def crop_normalise(points: np.ndarray, crop_size) -> np.ndarray:
    """Crop pixels -> the crop frame: u = 2x / W - 1, v = (2y - H) / W (H, W = ``crop_size``)."""
    h, w = crop_size
    out = np.empty_like(points, dtype=np.float32)
    out[..., 0] = 2 * points[..., 0] / w - 1
    out[..., 1] = (2 * points[..., 1] - h) / w
    return out


def token_centres(feature_size, crop_size) -> np.ndarray:
    """(h * w, 2) crop-pixel (x, y) centres of the feature cells, row-major: a cell of stride s covers pixels
    s*j .. s*j + s - 1, its centre s*j + (s - 1) / 2 (at stride 4: 4j + 1.5, spec L7)."""
    h, w = feature_size
    sy, sx = crop_size[0] / h, crop_size[1] / w
    ys, xs = np.meshgrid(np.arange(h) * sy + (sy - 1) / 2, np.arange(w) * sx + (sx - 1) / 2, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def background_share(attention: np.ndarray, joints_crop: np.ndarray, feature_size, crop_size,
                     radius: float = BACKGROUND_RADIUS) -> np.ndarray:
    """Per sample, the share of keypoint -> image attention outside the union of ``radius``-pixel circles
    around the ground-truth joints, averaged over the keypoints ([L] Tables 1 and 5, Appendix).

    ``attention`` (B, N, M) (heads already averaged) or (B, h, N, M); ``joints_crop`` (B, J, 2) ground truth
    in crop pixels of ``crop_size`` (non-finite = unlabelled, no circle); the radius is in pixels of a
    256-pixel-high crop and scales with ``crop_size``. Returns (B,)."""
    a = np.asarray(attention, dtype=np.float64)
    if a.ndim == 4:
        a = a.mean(axis=1)
    centres = token_centres(feature_size, crop_size)  # (M, 2)
    r = radius * crop_size[0] / REFERENCE_CROP[0]
    joints = np.asarray(joints_crop, dtype=np.float64)
    d = np.linalg.norm(centres[None, None] - joints[:, :, None], axis=-1)  # (B, J, M)
    near = np.where(np.isfinite(d), d <= r, False).any(axis=1)  # (B, M) inside some circle
    total = a.sum(axis=-1)  # (B, N): 1 for softmax rows
    outside = (a * ~near[:, None]).sum(axis=-1)
    return (outside / np.maximum(total, 1e-12)).mean(axis=-1)


@dataclasses.dataclass
class Samples:
    """The crops of one split with a valid 3D: inputs, targets and where they come from."""

    keypoints: np.ndarray  # (N, 17, 2) float32, crop frame
    targets: np.ndarray  # (N, 1, 17, 3) float32, metres
    joints_crop: np.ndarray  # (N, 17, 2) ground-truth 2D in crop pixels (diagnostic)
    items: np.ndarray  # (N,) rows of the crop labels
    rows: np.ndarray  # (N,) rows of ``views``
    views: object  # Views of the split
    features: object = None  # torch float16 (N, C, h, w), or None (a model with its own encoder)

    def __len__(self) -> int:
        return len(self.items)


class SampleBatches:
    """Training batches, shuffled per epoch from (seed, epoch), ``per_epoch`` crops an epoch (None = all);
    ``epoch`` is settable (the loop's resume contract), and so are ``rank``/``world`` (this process's part of
    each batch, :func:`poselift.training.sampling.rank_part`)."""

    def __init__(self, task, samples: Samples, batch_size: int, seed: int, per_epoch: int | None):
        self.task, self.samples, self.batch_size, self.seed, self.per_epoch = task, samples, batch_size, seed, per_epoch
        self.epoch = 0
        self.rank, self.world = 0, 1

    def __len__(self) -> int:
        return batch_count(epoch_count(len(self.samples), self.per_epoch), self.batch_size, self.world)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        order = epoch_order(len(self.samples), self.seed, epoch, self.per_epoch)
        for b in range(len(self)):
            part = rank_part(order[b * self.batch_size:(b + 1) * self.batch_size], self.rank, self.world)
            yield self.task.batch(self.samples, part)


def encoder_of(model):
    """The image encoder a model runs itself (None: it reads cached feature maps)."""
    stage1 = getattr(model, "stage1", model)
    return getattr(stage1, "encoder", None)


class ImageLiftingTask:
    name = "image_lifting"
    losses = {"lbi_coarse": mse_term("pose_3d_coarse"), "lbi_refined": mse_term("pose_3d")}
    metric, maximise = "val_mpjpe", False
    stage_keys = {
        "validation_crops": 2000,  # validate on at most this many crops (an even subset), null = all
        "crops_per_epoch": None,  # train on this many crops an epoch (a fresh random subset), null = all
    }

    @staticmethod
    def check_stage_options(o: dict, check, where: str) -> dict:
        for key in ("validation_crops", "crops_per_epoch"):
            if o[key] is not None:
                o[key] = check.integer(o[key], f"{where}.{key}", minimum=1)
        return o

    @staticmethod
    def inputs(experiment) -> dict:
        """The files it reads by default: prepared (3D, splits), detections (2D), the crops (affines, labels,
        pixels) and the feature maps (data/features/<dataset>/<detector>.h5) of the experiment's
        ``features`` detector, by default its 2D detector."""
        from poselift.data.features import features_path
        from poselift.experiments import renders_path

        maps = experiment.features_detector
        return {"prepared": experiment.prepared_path(), "detections": experiment.detections_path(),
                "crops": renders_path(experiment.dataset.name),
                "features": features_path(experiment.dataset.name, maps) if maps is not None else None}

    def __init__(self, inputs: dict, device):
        from poselift.data.crop_file import CropFile
        from poselift.data.loading import load_data
        from poselift.training.tasks.heatmaps import CropLabels

        for name in ("prepared", "crops"):
            if inputs.get(name) is None:
                raise InputError("--input", f"the image_lifting task needs '{name}' (--input {name}=PATH)")
        self.prepared, self.detections = Path(inputs["prepared"]), inputs.get("detections")
        self.features_path = Path(inputs["features"]) if inputs.get("features") is not None else None
        self.crops_path = Path(inputs["crops"])
        self.device = device
        self.data, self.det = load_data(self.prepared, self.detections)
        self.crops = CropFile(self.crops_path)
        self.labels = CropLabels(self.crops)
        self.sequences = {s.key: s for s in self.data.sequences}
        self._features = None

    def feature_file(self):
        from poselift.data.features import FeatureFile

        if self._features is None:
            if self.features_path is None:
                raise InputError("--input", "this model reads cached feature maps: the image_lifting task needs "
                                            "'features' (poselift detect --features; --input features=PATH)")
            f = FeatureFile(self.features_path)
            if tuple(f.crop_size) != tuple(self.crops.crop_size) or (
                    f.prepared and self.crops.prepared and f.prepared != self.crops.prepared):
                raise InputError(self.features_path, f"computed on other crops than {self.crops_path}")
            self._features = f
        return self._features

    # --- data ---

    def samples(self, split: str, with_features: bool = True) -> Samples:
        """Every crop of ``split`` with a valid 3D target."""
        import torch

        from poselift.data.loading import split_views

        lab = self.labels
        views = split_views(self.data, self.det, split, self.prepared, self.detections)
        view_row = {f"{s}/{c}": v for v, (s, c) in enumerate(views.keys)}
        in_split = np.asarray([key in view_row for key in lab.views], dtype=bool)
        items = np.flatnonzero(in_split[lab.view]) if len(lab) else np.zeros(0, np.int64)
        if len(items) == 0:
            raise InputError(self.crops_path, f"no crops of the {split} split (splits from {self.prepared})")
        keys = [lab.views[v] for v in lab.view[items]]
        frames = lab.frame[items].astype(np.int64)
        rows = np.asarray([views.starts[view_row[k]] for k in keys], np.int64) + frames
        if (rows >= views.ends[[view_row[k] for k in keys]]).any() or (views.frame[rows] != frames).any():
            raise InputError(self.crops_path, f"crop frames do not fit the sequences of {self.prepared}")
        pixels = np.empty((len(items), 17, 2), np.float64)
        for n, (key, frame) in enumerate(zip(keys, frames)):
            sequence, camera = key.rsplit("/", 1)
            seq = self.sequences[sequence]
            c = seq.cameras.index(camera)
            pixels[n] = self.det.keypoints[sequence][c, frame] if self.det is not None else seq.positions_2d[c, frame]
        keypoints = crop_normalise(to_crop(pixels, lab.affine[items].astype(np.float64)), self.crops.crop_size)
        valid = views.valid[rows] & np.isfinite(keypoints).all(axis=(1, 2))
        items, rows, keys, keypoints = items[valid], rows[valid], [k for k, ok in zip(keys, valid) if ok], \
            keypoints[valid]
        targets = (views.targets_3d[rows] / 1000.0).astype(np.float32)[:, None]
        features = None
        if with_features:
            f = self.feature_file()
            wanted = sorted(set(keys))
            stored = f.read(wanted)
            offsets, parts, start = {}, [], 0
            for key in wanted:  # the maps of a view are its crops', in the crops file's order
                frame, maps = stored[key]
                if len(frame) != self.crops.counts[key]:
                    raise InputError(self.features_path, f"view '{key}': {len(frame)} feature maps for "
                                                         f"{self.crops.counts[key]} crops")
                offsets[key] = start
                parts.append(maps)
                start += len(frame)
            index = np.asarray([offsets[k] for k in keys], np.int64) + lab.index[items]
            order_frames = np.concatenate([stored[k][0] for k in wanted])[index]
            if (order_frames != lab.frame[items]).any():
                raise InputError(self.features_path, f"frames differ from the crops of {self.crops_path}")
            features = torch.from_numpy(np.concatenate(parts)[index])
        return Samples(keypoints=keypoints.astype(np.float32), targets=targets,
                       joints_crop=lab.keypoints[items].astype(np.float32), items=items, rows=rows, views=views,
                       features=features)

    def batch(self, samples: Samples, index: np.ndarray) -> dict:
        import torch

        out = {"keypoints": torch.from_numpy(samples.keypoints[index]),
               "targets_3d": torch.from_numpy(samples.targets[index])}
        if samples.features is not None:
            out["features"] = samples.features[torch.from_numpy(np.asarray(index, np.int64))]
        else:
            out["items"] = np.asarray(samples.items[index])
        return out

    def images(self, items, input_size):
        """ImageNet-normalised crops (B, 3, H, W) of label rows ``items``, resized to ``input_size``."""
        from poselift.detection.augment import normalise

        lab = self.labels
        crops = np.stack([self.crops.crop(lab.views[lab.view[i]], int(lab.index[i])) for i in items])
        return normalise(crops, input_size, device=self.device)

    def forward(self, model, batch) -> dict:
        from poselift.training.distributed import unwrap

        keypoints = batch["keypoints"].to(self.device, non_blocking=True)
        encoder = encoder_of(unwrap(model))  # the model itself, also when training wraps it in DDP
        if encoder is not None:
            stage1 = getattr(unwrap(model), "stage1", unwrap(model))
            size = (stage1.feature_size[0] * 4, stage1.feature_size[1] * 4)
            return model(keypoints, images=self.images(batch["items"], size))
        return model(keypoints, features=batch["features"].to(self.device, non_blocking=True).float())

    # --- training ---

    def setup(self, model, stage, validation_split: str) -> dict:
        o = stage.options
        self.batch_size = stage.batch_size
        with_features = encoder_of(model) is None
        self.train = self.samples("train", with_features)
        self.check_model(model)
        val = self.samples(validation_split, with_features)
        limit = o["validation_crops"]
        keep = np.arange(len(val))[::1 if limit is None else max(1, math.ceil(len(val) / limit))]
        self.val = self._subset(val, keep)
        self.batches = SampleBatches(self, self.train, stage.batch_size, stage.seed, o["crops_per_epoch"])
        return {"train_crops": len(self.train), "validation_crops": len(self.val)}

    def check_model(self, model) -> None:
        if encoder_of(model) is not None:
            return
        stage1 = getattr(model, "stage1", model)
        shape = tuple(self.feature_file().shape)
        want = (stage1.image_tokens.proj.in_features, *stage1.feature_size)
        if shape != want:
            raise InputError(self.features_path, f"feature maps {list(shape)} (C, h, w) do not fit the model's "
                                                 f"{list(want)} (feature_channels, feature_size)")

    @staticmethod
    def _subset(samples: Samples, keep: np.ndarray) -> Samples:
        return dataclasses.replace(samples, keypoints=samples.keypoints[keep], targets=samples.targets[keep],
                                   joints_crop=samples.joints_crop[keep], items=samples.items[keep],
                                   rows=samples.rows[keep],
                                   features=None if samples.features is None else samples.features[keep])

    def describe(self) -> str:
        return f"{len(self.train):,} training crops, validating on {len(self.val):,} crops"

    def step(self, model, batch) -> tuple[dict, dict, int]:
        out = self.forward(model, batch)
        return out, {"targets_3d": batch["targets_3d"].to(self.device, non_blocking=True)}, \
            int(batch["keypoints"].shape[0])

    def predict(self, model, samples: Samples, batch_size: int, share: bool = False):
        """(poses (N, 17, 3) metres, background share (N,) or None) of every sample, in order."""
        import torch

        from tqdm import tqdm

        model.eval()
        stage1 = getattr(model, "stage1", model)
        poses, shares = [], []
        with torch.no_grad():
            for b in tqdm(range(0, len(samples), batch_size), desc="predict", unit="batch", leave=False,
                          disable=None):
                index = np.arange(b, min(len(samples), b + batch_size))
                out = self.forward(model, self.batch(samples, index))
                poses.append(out["pose_3d"][:, 0].float().cpu().numpy())
                if share:
                    shares.append(background_share(out["attention"].float().mean(1).cpu().numpy(),
                                                   samples.joints_crop[index], stage1.feature_size,
                                                   self.crops.crop_size))
        poses = np.concatenate(poses) if poses else np.zeros((0, 17, 3), np.float32)
        return poses, (np.concatenate(shares) if share and shares else None)

    def validate(self, model) -> float:
        from poselift.metrics import joint_errors

        pred, _ = self.predict(model, self.val, self.batch_size)
        return float(joint_errors(pred * 1000.0, self.val.targets[:, 0] * 1000.0).mean())

    # --- evaluation ---

    def evaluate(self, model, ckpt: dict, path, out: Path, split: str, batch_size: int, flip_test: bool,
                 pck_joints: str, inputs: dict) -> tuple[dict, int, int]:
        """Predict every crop of ``split`` and write the evaluation files, the background-attention share and
        ``attention.png`` to ``out``; returns (metrics, views, 1). No flip test (``flip_test`` is ignored: the
        cached feature maps are of the unflipped crops)."""
        from poselift.evaluation import write_evaluation
        from poselift.io import write_json

        test = self.samples(split, encoder_of(model) is None)
        if encoder_of(model) is None:
            self.check_model(model)
        pred, share = self.predict(model, test, batch_size, share=True)
        if not np.isfinite(pred).all():
            raise InputError(path, "the model predicted non-finite 3D poses")
        order = np.argsort(test.rows, kind="stable")
        valid = np.zeros(len(test.views), bool)
        valid[test.rows] = True
        views = dataclasses.replace(test.views, valid=valid)
        out = Path(out)
        stage1 = getattr(model, "stage1", model)
        result = write_evaluation(out, (pred[order] * 1000.0).astype(np.float32), views, pck_joints,
                                  inputs={**inputs, "window": 1, "flip_test": False})
        result["background_attention"] = float(share.mean())
        result["background_radius_px"] = BACKGROUND_RADIUS
        result["image_tokens"] = int(stage1.num_tokens)
        result["kept_tokens"] = int(getattr(model, "kept_tokens", stage1.num_tokens))
        result["samples"] = int(len(test))
        picture = out / "attention.png"
        draw_attention(self, model, test, int(np.argsort(share)[len(share) // 2]), picture, float(np.median(share)))
        result["inputs"]["attention_picture"] = str(picture)
        write_json(out / "metrics.json", result)
        print(f"background attention share (outside {BACKGROUND_RADIUS:g}-px circles around the joints): "
              f"{result['background_attention']:.3f}")
        return result, test.views.num_views, 1


def draw_attention(task: ImageLiftingTask, model, samples: Samples, i: int, path: Path, share: float) -> None:
    """One crop with Stage 1's last-layer attention (heads averaged, summed over keypoints) over it, the
    ground-truth joints with their 30-px circles and, for Stage 2, the kept tokens' centres."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from poselift.io import atomic_output

    lab = task.labels
    item = int(samples.items[i])
    image = task.crops.crop(lab.views[lab.view[item]], int(lab.index[item]))
    model.eval()
    with torch.no_grad():
        out = task.forward(model, task.batch(samples, np.asarray([i])))
    stage1 = getattr(model, "stage1", model)
    h, w = stage1.feature_size
    heat = out["attention"][0].float().mean(0).sum(0).reshape(h, w).cpu().numpy()
    crop_h, crop_w = task.crops.crop_size
    fig, ax = plt.subplots(figsize=(3.2, 4.2), dpi=120)
    ax.imshow(image)
    ax.imshow(heat, extent=(-0.5, crop_w - 0.5, crop_h - 0.5, -0.5), cmap="inferno", alpha=0.6,
              interpolation="nearest")
    r = BACKGROUND_RADIUS * crop_h / REFERENCE_CROP[0]
    for x, y in samples.joints_crop[i]:
        if np.isfinite(x) and np.isfinite(y):
            ax.add_patch(plt.Circle((x, y), r, fill=False, color="cyan", lw=0.6))
            ax.plot(x, y, ".", color="cyan", ms=3)
    if "kept" in out:
        centres = token_centres((h, w), task.crops.crop_size)[out["kept"][0].cpu().numpy()]
        ax.plot(centres[:, 0], centres[:, 1], "s", mfc="none", mec="lime", ms=1.5, mew=0.3)
    ax.set_title(f"keypoint->image attention\nbackground share {share:.2f} (median crop)", fontsize=7)
    ax.axis("off")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
