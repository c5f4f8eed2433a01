"""The heatmaps task (poselift.training.tasks.heatmaps) trains a 2D detector through the one loop: a tiny
labelled-crops file of synthetic people (a coloured disc per joint), the prepared file that assigns its
splits, and a tiny conv net; `poselift train` learns, resumes bit-identically and checks its stage keys,
`poselift evaluate` writes the 2D metrics in frame pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from poselift.camera import Camera
from poselift.data.crop_file import CropWriter, View
from poselift.data.crops import to_frame
from poselift.data.images import encode_image
from poselift.data.prepared import PreparedDataset, Sequence, write_prepared
from poselift.models import MODELS
from poselift.training.checkpoint import read_checkpoint
from poselift.training.tasks.heatmaps import HeatmapTask

CROP = (64, 48)  # (H, W) of the stored crops: small, for speed
SEQUENCES = [("S1", "Walk", "train", 40), ("S5", "Eat", "train", 40), ("S6", "Walk", "validation", 16),
             ("S9", "Walk", "test", 12)]
CAMERAS = ("c1", "c2")
KILL = {"after": None}  # forward calls left before a simulated Ctrl-C, None = never


class TinyDetector(nn.Module):
    """RGB (B, 3, H, W) -> 17 heatmaps at H/4 x W/4."""

    task = "heatmaps"

    def __init__(self, channels: int = 24):
        super().__init__()
        def block(cin, stride):
            return [nn.Conv2d(cin, channels, 3, stride=stride, padding=1), nn.BatchNorm2d(channels), nn.ReLU()]

        self.body = nn.Sequential(*block(3, 1), *block(channels, 2), *block(channels, 2), *block(channels, 1),
                                  nn.Conv2d(channels, 17, 1))

    def forward(self, images):
        if KILL["after"] is not None:
            KILL["after"] -= 1
            if KILL["after"] < 0:
                KILL["after"] = None
                raise KeyboardInterrupt
        return {"heatmaps": self.body(images)}


@pytest.fixture(autouse=True)
def tiny_detector(monkeypatch):
    monkeypatch.setitem(MODELS, "tiny-detector", TinyDetector)
    KILL["after"] = None
    yield
    KILL["after"] = None


LABELLED = (0, 7, 8, 10)  # pelvis, spine, thorax, head: labelled (centre joints, unchanged by a flip)
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], np.uint8)


def person(rng) -> tuple[np.ndarray, np.ndarray]:
    """A crop with a coloured disc (radius 3) at each labelled joint, at random, separated places, and the
    keypoints (NaN: the other joints are unlabelled, as in a real frame)."""
    h, w = CROP
    kp = []
    while len(kp) < len(LABELLED):
        p = rng.uniform([5, 5], [w - 6, h - 6])
        if all(np.hypot(*(p - q)) > 8 for q in kp):
            kp.append(p)
    y, x = np.mgrid[0:h, 0:w]
    image = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
    for colour, (cx, cy) in zip(COLOURS, kp):
        image[(x - cx) ** 2 + (y - cy) ** 2 <= 9] = colour
    keypoints = np.full((17, 2), np.nan)
    keypoints[list(LABELLED)] = kp
    return image, keypoints


def toy_prepared(path: Path, sequences, cameras) -> Path:
    """A prepared file of ``sequences`` ((subject, name, split, frames) each) seen by ``cameras``: only its
    splits and frame counts matter to the image tasks."""
    cams = {name: Camera(R=np.eye(3), T=np.zeros(3), f=[1000.0, 1000.0], c=[500.0, 500.0], width=1000,
                         height=1000, name=name) for name in cameras}
    seqs = [Sequence(subject, name, action=name, split=split, rig="rig", cameras=list(cameras),
                     positions_3d=np.tile(np.linspace(0, 1, 51, dtype=np.float32).reshape(17, 3), (n, 1, 1)) + 3000,
                     positions_2d=np.zeros((len(cameras), n, 17, 2), np.float32))
            for subject, name, split, n in sequences]
    write_prepared(path, PreparedDataset("toy", 50.0, {"rig": cams}, seqs))
    return path


def make_files(folder: Path) -> tuple[Path, Path]:
    """A prepared file (the splits) and its labelled crops: every crop is the frame region of a box, affine
    frame -> crop = 0.25 scale + offset."""
    rng = np.random.default_rng(0)
    prepared = toy_prepared(folder / "toy.h5", SEQUENCES, CAMERAS)
    crops = folder / "toy-crops.h5"
    with CropWriter(crops, "render", "hash", {"synthetic": True}, crop_size=CROP, codec="png") as writer:
        for subject, name, _, n in SEQUENCES:
            for cam in CAMERAS:
                frames = np.arange(0, n, 2)
                images, kps, affines, boxes = [], [], [], []
                for f in frames:
                    image, kp = person(rng)
                    origin = rng.uniform(0, 700, 2)
                    affine = np.array([[0.25, 0, -0.25 * origin[0]], [0, 0.25, -0.25 * origin[1]]])
                    images.append(encode_image(image, "png"))
                    kps.append(kp)
                    affines.append(affine)
                    boxes.append([*origin, *(origin + 4 * np.array([CROP[1], CROP[0]]))])
                kps = np.array(kps)
                vis = (rng.random((len(frames), 17)) > 0.2) & np.isfinite(kps).all(-1)  # occluded: labelled
                writer.add(View(key=f"{subject}/{name}/{cam}", frame=frames, keypoints=kps,
                                keypoints_frame=np.stack([to_frame(k, a) for k, a in zip(kps, affines)]),
                                affine=np.array(affines), box=np.array(boxes), visibility=vis.astype(np.float32),
                                crops=images))
    return prepared, crops


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("heatmap-data"))


# sigma is given for a 256x192 input and scales with the input: 6 -> 1.5 heatmap px on the 16x12 maps of 64x48
STAGE = {"name": "detector", "model": "tiny", "epochs": 4, "batch_size": 16, "lr": 3e-3,
         "losses": {"heatmap_mse": 1.0}, "augment": False, "flip_test": False, "input_size": [64, 48], "sigma": 6.0}


def write_params(tmp_path, stage: dict) -> Path:
    params = {"datasets": {"toy": {"reader": "h36m"}},
              "models": {"tiny": {"class": "tiny-detector", "channels": 24}},
              "experiments": {"x": {"dataset": "toy", "stages": [stage]}}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def train(run_cli, params, files, out, *extra):
    prepared, crops = files
    return run_cli("train", "--params", params, "--experiment", "x", "--stage", 1, "--input", f"crops={crops}",
                   "--input", f"prepared={prepared}", "--out", out, "--device", "cpu", "--tracking-uri", "off",
                   *extra)


def history(out: Path) -> dict:
    return json.loads((out / "history.json").read_text())


def test_a_detector_learns_through_the_one_loop(tmp_path, run_cli, files):
    out = tmp_path / "stage1"
    code, stdout, err = train(run_cli, write_params(tmp_path, STAGE), files, out)
    assert code == 0, err
    h = history(out)
    errors = [e["val_px"] for e in h["epochs"]]
    losses = [e["loss"] for e in h["epochs"]]
    assert h["stage"]["task"] == "heatmaps" and h["stage"]["input_size"] == [64, 48] and "window" not in h["stage"]
    assert losses[-1] < losses[0]
    prepared, crops = files
    task = HeatmapTask({"crops": crops, "prepared": prepared}, torch.device("cpu"))
    torch.manual_seed(0)  # the stage's seed: the weights training started from
    start = TinyDetector()
    task.setup(start, type("Stage", (), {"options": {**HeatmapTask.stage_keys, **STAGE}, "batch_size": 16,
                                         "seed": 0}), "validation")
    untrained = task.validate(start)
    assert min(errors) < 4.0 < 12.0 < untrained, (errors, untrained)  # px in 64x48 crops; discs 8 px apart
    assert h["best"]["val_px"] == min(errors)
    ckpt = read_checkpoint(out / "checkpoint.pt")
    assert ckpt["task"] == "heatmaps" and ckpt["model"] == "tiny-detector"
    assert "80 training crops at 64x48 (augment off; sigma heatmaps 1.5), validating on 16 crops" in stdout


def test_augmented_training_resumes_bit_identically(tmp_path, run_cli, files):
    """Augmentation on (per-crop Generators), a smaller input (resized crops), flip test: a run killed in its
    second epoch and started again ends with the uninterrupted run's weights and history."""
    stage = {**STAGE, "epochs": 3, "augment": True, "flip_test": True, "input_size": [32, 24],
             "crops_per_epoch": 48, "validation_crops": 8, "select": "last"}
    params = write_params(tmp_path, stage)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(run_cli, params, files, straight)[0] == 0
    per_epoch = 3 + 2  # 48 crops in batches of 16, then 8 validation crops with the flip test (2 calls)
    KILL["after"] = per_epoch + 2  # killed during the second epoch's training
    code, _, err = train(run_cli, params, files, resumed)
    assert code == 130 and "interrupted" in err
    assert read_checkpoint(resumed / "last.pt")["epoch"] == 1
    code, stdout, err = train(run_cli, params, files, resumed)
    assert code == 0, err
    assert "resuming after epoch 1" in stdout
    a, b = read_checkpoint(straight / "last.pt"), read_checkpoint(resumed / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    ha, hb = history(straight), history(resumed)
    assert [e["loss"] for e in ha["epochs"]] == [e["loss"] for e in hb["epochs"]]
    assert [e["val_px"] for e in ha["epochs"]] == [e["val_px"] for e in hb["epochs"]]


@pytest.mark.parametrize("change, message", [
    ({"input_size": [62, 48]}, "stages[1].input_size: height and width must be multiples of 4, got [62, 48]"),
    ({"input_size": 64}, "stages[1].input_size: expected [height, width], got 64"),
    ({"sigma": -1}, "stages[1].sigma: must be > 0, got -1"),
    ({"augment": "yes"}, "stages[1].augment: expected true or false, got 'yes'"),
    ({"validation_crops": 0}, "stages[1].validation_crops: must be >= 1, got 0"),
    ({"window": 3}, "stages[1].window: unknown key"),
    ({"losses": {"mpjpe": 1}}, "unknown loss term 'mpjpe' of task heatmaps (known: cpn_global, cpn_refine, "
                               "heatmap_mse)"),
])
def test_bad_stage_keys_are_one_line_errors(tmp_path, run_cli, files, change, message):
    code, _, err = train(run_cli, write_params(tmp_path, {**STAGE, **change}), files, tmp_path / "out")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_inputs_that_do_not_fit_are_one_line_errors(tmp_path, run_cli, files):
    code, _, err = train(run_cli, write_params(tmp_path, {**STAGE, "input_size": [64, 64]}), files, tmp_path / "a")
    assert code == 2 and "input_size [64, 64] does not keep the crops' aspect (64x48)" in err
    prepared, crops = files
    code, _, err = run_cli("train", "--params", write_params(tmp_path, STAGE), "--experiment", "x", "--stage", 1,
                           "--input", f"crops={crops}", "--tracking-uri", "off", "--out", tmp_path / "b")
    assert code == 2 and "toy.h5: file not found" in err  # the default prepared path


def test_targets_follow_the_models_heatmap_sigmas_scaled_with_the_input(files):
    from poselift.training.tasks.heatmaps import model_sigmas

    assert model_sigmas(TinyDetector(), None, (256, 192)) == {"heatmaps": 2.0}  # [HRc] MODEL.SIGMA
    assert model_sigmas(TinyDetector(), None, (128, 96)) == {"heatmaps": 1.0}
    assert model_sigmas(TinyDetector(), None, (384, 288)) == {"heatmaps": 3.0}  # the official 384x288 config's
    cpn = pytest.importorskip("poselift.detection.cpn", reason="poselift.detection.cpn is not written yet")

    class CPNLike(TinyDetector):  # CPN's targets: four GlobalNet levels and the RefineNet's
        heatmap_sigmas = cpn.CPN.heatmap_sigmas

        def forward(self, images):
            h = super().forward(images)["heatmaps"]
            return {"heatmaps": h, "global_heatmaps": [h] * 4}

    sigmas = model_sigmas(CPNLike(), 1.0, (128, 96))
    assert sigmas["heatmaps"] == 0.5 and sigmas["global_0"] == pytest.approx(cpn.CPN.heatmap_sigmas["global_0"] / 2)
    prepared, crops = files
    task = HeatmapTask({"crops": crops, "prepared": prepared}, torch.device("cpu"))
    model = CPNLike()
    task.setup(model, type("Stage", (), {"options": {**HeatmapTask.stage_keys, **STAGE}, "batch_size": 4,
                                         "seed": 0}), "validation")
    out, targets, n = task.step(model, next(iter(task.batches)))
    assert n == 4 and set(targets) == {"global_0", "global_1", "global_2", "global_3", "heatmaps", "target_weight"}
    # a wider Gaussian for the coarser GlobalNet targets ([CPNc] kernels 15 ... 7)
    assert targets["global_0"].sum() > targets["global_3"].sum() > 0
    for term in ("cpn_global", "cpn_refine", "heatmap_mse"):
        value = HeatmapTask.losses[term](out, targets)
        assert value.ndim == 0 and torch.isfinite(value)


def test_evaluate_writes_the_2d_metrics_in_frame_pixels(tmp_path, run_cli, files):
    pytest.importorskip("poselift.detection.evaluation", reason="poselift.detection.evaluation is not written yet")
    params = write_params(tmp_path, {**STAGE, "epochs": 2, "flip_test": True})
    stage_dir = tmp_path / "stage1"
    assert train(run_cli, params, files, stage_dir)[0] == 0
    prepared, crops = files
    out = tmp_path / "evaluation"
    code, stdout, err = run_cli("evaluate", "--params", params, "--experiment", "x", "--checkpoint",
                                stage_dir / "checkpoint.pt", "--input", f"crops={crops}", "--input",
                                f"prepared={prepared}", "--out", out, "--device", "cpu", "--tracking-uri", "off")
    assert code == 0, err
    assert "12 test crops from 2 views (flip test on)" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("AP", "pck@0.05", "mean_px", "per_joint_px"):
        assert key in metrics
    pred = np.load(out / "predictions.npz")
    assert pred["views"].tolist() == ["S9/Walk/c1", "S9/Walk/c2"]
    assert pred["keypoints"].shape == (12, 17, 2) and pred["scores"].shape == (12, 17)
    assert pred["frame"].tolist() == [0, 2, 4, 6, 8, 10] * 2 and pred["view"].tolist() == [0] * 6 + [1] * 6
    # the metric's pixel error is the predictions' distance to the frame-pixel labels (4 frame px per crop px)
    import h5py

    with h5py.File(crops) as f:
        gt = np.concatenate([f[f"S9/Walk/{c}/keypoints_frame"][()] for c in CAMERAS])
    assert np.isfinite(gt).all(-1).sum() == 12 * len(LABELLED)
    mean_px = np.nanmean(np.linalg.norm(pred["keypoints"] - gt, axis=-1))
    assert metrics["mean_px"] == pytest.approx(mean_px, rel=1e-4)
    assert metrics["samples"] == 12 and metrics["labelled_joints"] == 12 * len(LABELLED)  # occluded ones count
    assert metrics["per_joint_px"]["head"] is not None and metrics["per_joint_px"]["left_wrist"] is None
