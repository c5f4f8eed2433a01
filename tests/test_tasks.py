"""The one training loop trains any task: a task defined here (images in, heatmaps out: the shape of the
detector task) plugs in as a class and two registry lines, and `poselift train` trains it, checks its own
stage keys, validates with its own metric and writes checkpoints that name it, with no change to the loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from poselift.data.images import ImageFile, write_images
from poselift.models import MODELS
from poselift.training.checkpoint import read_checkpoint
from poselift.training.tasks import TASKS

SIZE = 24  # images are SIZE x SIZE


def dot_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n noisy images with a red disc (the keypoint) and a green and a blue one (distractors) each, and the
    red discs' centres (x, y) in pixels."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(3, SIZE - 3, size=(n, 3, 2))
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    images = rng.integers(0, 60, size=(n, SIZE, SIZE, 3)).astype(np.uint8)
    for image, discs in zip(images, centres):
        for channel, (cx, cy) in reversed(list(enumerate(discs))):  # red drawn last, on top
            image[(x - cx) ** 2 + (y - cy) ** 2 <= 4] = np.eye(3, dtype=np.uint8)[channel] * 255
    return images, centres[:, 0].astype(np.float32)


class DotBatches:
    """Shuffled batches with a settable ``epoch`` (the loop's contract: epoch e's order derives from (seed, e))."""

    def __init__(self, images, heatmaps, batch_size: int, seed: int):
        self.images, self.heatmaps, self.batch_size, self.seed, self.epoch = images, heatmaps, batch_size, seed, 0

    def __iter__(self):
        order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.images))
        self.epoch += 1
        for i in range(0, len(order), self.batch_size):
            sel = order[i:i + self.batch_size]
            yield {"images": self.images[sel], "heatmaps": self.heatmaps[sel]}


class DotHeatmapTask:
    """Images in, one heatmap out; validated by the argmax's distance to the true centre (px)."""

    name = "dot-heatmaps"
    stage_keys = {"sigma": 1.5}
    losses = {"heatmap_mse": lambda out, targets: (out["heatmaps"] - targets["heatmaps"]).square().mean() * 100}
    metric, maximise = "val_px", False

    @staticmethod
    def check_stage_options(options, check, where):
        options["sigma"] = check.number(options["sigma"], f"{where}.sigma", positive=True)
        return options

    @staticmethod
    def inputs(experiment):
        return {"images": f"data/images/{experiment.dataset.name}.h5"}

    def __init__(self, inputs, device):
        self.file, self.device = ImageFile(inputs["images"]), device

    def _split(self, split):
        images = np.stack([self.file.read(split, i) for i in range(self.file.count(split))])
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        centres = torch.from_numpy(np.load(str(self.file.path) + f".{split}.npy"))
        return x.to(self.device), centres

    def setup(self, model, stage, validation_split):
        images, centres = self._split("train")
        y, x = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
        sigma = stage.options["sigma"]
        heatmaps = torch.exp(-((x - centres[:, :1, None]) ** 2 + (y - centres[:, 1:, None]) ** 2) / (2 * sigma ** 2))
        self.batches = DotBatches(images, heatmaps.float(), stage.batch_size, stage.seed)
        self.val_images, self.val_centres = self._split(validation_split)
        return {"train_images": len(images), "validation_images": len(self.val_images)}

    def describe(self):
        return f"{len(self.batches.images)} training images"

    def step(self, model, batch):
        return model(batch["images"]), batch, len(batch["images"])

    def validate(self, model):
        model.eval()
        with torch.no_grad():
            heatmaps = model(self.val_images)["heatmaps"]
        model.train()
        best = heatmaps.flatten(1).argmax(1)
        found = torch.stack([best % SIZE, best // SIZE], 1).float()
        return float(torch.linalg.vector_norm(found - self.val_centres, dim=1).mean())


class DotNet(nn.Module):
    task = "dot-heatmaps"  # the model chooses its task

    def __init__(self, channels: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, channels, 5, padding=2), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 5, padding=2), nn.ReLU(), nn.Conv2d(channels, 1, 1))

    def forward(self, images):
        return {"heatmaps": self.body(images)[:, 0]}


@pytest.fixture
def dot_task(monkeypatch, tmp_path):
    monkeypatch.setitem(TASKS, "dot-heatmaps", DotHeatmapTask)  # the two registry lines
    monkeypatch.setitem(MODELS, "dot-net", DotNet)
    path = tmp_path / "dots.h5"
    frames = {}
    for split, n, seed in (("train", 192, 0), ("validation", 48, 1)):
        images, centres = dot_images(n, seed)
        frames[split] = images
        np.save(str(path) + f".{split}.npy", centres)
    write_images(path, frames, codec="png")
    return path


def write_params(tmp_path, stage: dict):
    params = {"datasets": {"dots": {"reader": "bandai"}}, "models": {"dot": {"class": "dot-net", "channels": 8}},
              "experiments": {"x": {"dataset": "dots", "detector": "prepared", "stages": [stage]}}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


STAGE = {"name": "heatmaps", "model": "dot", "epochs": 3, "batch_size": 16, "lr": 3e-3,
         "losses": {"heatmap_mse": 1.0}, "sigma": 1.5}


def test_a_new_task_trains_through_the_one_loop(tmp_path, run_cli, dot_task):
    params = write_params(tmp_path, STAGE)
    out = tmp_path / "stage1"
    code, stdout, err = run_cli("train", "--params", params, "--experiment", "x", "--stage", 1, "--input",
                                f"images={dot_task}", "--out", out, "--device", "cpu", "--tracking-uri", "off")
    assert code == 0, err
    history = json.loads((out / "history.json").read_text())
    errors = [e["val_px"] for e in history["epochs"]]
    task = DotHeatmapTask({"images": dot_task}, torch.device("cpu"))
    torch.manual_seed(0)  # the stage's seed: the weights training started from
    start = DotNet()
    task.setup(start, type("Stage", (), {"options": {"sigma": 1.5}, "batch_size": 16, "seed": 0}), "validation")
    untrained = task.validate(start)
    assert min(errors) < 1.0 < 4.0 < untrained  # it found the red dots among the distractors
    assert history["best"]["val_px"] == min(errors) and history["stage"]["task"] == "dot-heatmaps"
    assert history["stage"]["sigma"] == 1.5 and "window" not in history["stage"]  # the task's keys only
    ckpt = read_checkpoint(out / "checkpoint.pt")
    assert ckpt["task"] == "dot-heatmaps" and ckpt["model"] == "dot-net"
    assert "best val_px" in stdout


def test_a_tasks_stage_keys_are_its_own(tmp_path, run_cli, dot_task):
    code, _, err = run_cli("train", "--params", write_params(tmp_path, {**STAGE, "sigma": -1}), "--experiment", "x",
                           "--stage", 1, "--input", f"images={dot_task}", "--tracking-uri", "off")
    assert code == 2 and "experiments.x.stages[1].sigma: must be > 0, got -1" in err
    code, _, err = run_cli("train", "--params", write_params(tmp_path, {**STAGE, "window": 3}), "--experiment", "x",
                           "--stage", 1, "--input", f"images={dot_task}", "--tracking-uri", "off")
    assert code == 2 and "experiments.x.stages[1].window: unknown key" in err  # a lifting key
    code, _, err = run_cli("train", "--params", write_params(tmp_path, {**STAGE, "losses": {"mpjpe": 1}}),
                           "--experiment", "x", "--stage", 1, "--tracking-uri", "off")
    assert code == 2 and "unknown loss term 'mpjpe' of task dot-heatmaps (known: heatmap_mse)" in err
    code, _, err = run_cli("train", "--params", write_params(tmp_path, STAGE), "--experiment", "x", "--stage", 1,
                           "--input", "detections=none", "--tracking-uri", "off")
    assert code == 2 and "--input: 'detections' is not an input of experiment x (inputs: images)" in err
