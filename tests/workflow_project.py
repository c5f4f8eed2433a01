"""A throw-away copy of the workflow around a tiny experiment, for the workflow, Slurm, DVC and MLflow tests.

The project holds the repository's Snakefile, workflow/ (rules, profiles, report captions), the `slurm`
profile link, dvc.yaml and DVC config, and a params.yaml whose detectors section is the repository's and
whose datasets/models/experiments are tiny: one Human3.6M-form source file (``src.npz``, a few hundred
frames of a walking template skeleton for S1 = train and S9 = test) and a two-stage experiment (a small
POT, then POT+UGRN on the frozen POT of stage 1), one epoch each.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# H36M-17 template standing at the origin (mm, z up): pelvis, right leg, left leg, spine, thorax,
# neck/nose, head, left arm, right arm.
TEMPLATE = np.array([
    [0, 0, 950], [0, -130, 940], [10, -140, 500], [0, -150, 80], [0, 130, 940], [10, 140, 500], [0, 150, 80],
    [0, 0, 1180], [0, 0, 1420], [60, 0, 1520], [0, 0, 1650], [0, 170, 1400], [20, 200, 1130], [40, 210, 880],
    [0, -170, 1400], [20, -200, 1130], [40, -210, 880]], dtype=np.float64)

TINY_MODELS = {
    "pot-tiny": {"class": "pot", "dim": 12, "heads": 2, "depth": 1, "dropout": 0.0},
    "pot-ugrn-tiny": {"class": "pot-ugrn", "dim": 12, "heads": 2, "pot_depth": 1, "ugrn_depth": 1, "dropout": 0.0},
}
SIZE = {"epochs": 1, "batch_size": 256, "lr": 1.0e-3, "validation_frames": 200}
STAGE = {"name": "pot", "model": "pot-tiny", **SIZE, "losses": {"pot_stage1": 1.0}}
TINY_EXPERIMENT = {  # POT+UGRN's recipe in miniature: stage II refines with POT loaded from stage I and frozen
    "dataset": "tiny",
    "detector": "synthetic",
    "stages": [STAGE, {"name": "ugrn", "model": "pot-ugrn-tiny", **SIZE, "init": {"pot": 1}, "freeze": ["pot"],
                       "losses": {"pot_refine": 1.0, "pot_uncertainty": 0.001}}],
}


def write_source(path: Path, frames: int = 120, seed: int = 0) -> None:
    """A data_3d_h36m.npz (VideoPose3D form: subject -> action -> (F, 32, 3) metres) of a walking template."""
    from poselift.skeleton import H36M32_TO_17

    rng = np.random.default_rng(seed)
    nested: dict = {}
    for subject, actions in {"S1": ("Walking 1", "Eating"), "S9": ("Walking", "Eating 2")}.items():
        for action in actions:
            sway = np.cumsum(rng.normal(0, 8, (frames, 17, 3)), axis=0) * 0.2
            step = np.zeros((frames, 1, 3))
            step[:, 0, 0] = np.linspace(-500, 500, frames)
            poses = np.zeros((frames, 32, 3))
            poses[:] = TEMPLATE[0]
            poses[:, H36M32_TO_17] = TEMPLATE + sway + step
            nested.setdefault(subject, {})[action] = (poses / 1000.0).astype(np.float32)
    np.savez_compressed(path, positions_3d=nested)


def tiny_params(experiments: dict | None = None) -> dict:
    """params.yaml of the tiny project: the repository's detectors, tiny datasets, models and experiments."""
    repo = yaml.safe_load((REPO / "params.yaml").read_text())
    return {
        "detectors": repo["detectors"],
        "datasets": {"tiny": {"reader": "h36m", "source": "src.npz", "validation_split": "test"}},
        "models": dict(TINY_MODELS),
        "experiments": experiments if experiments is not None else {"two": TINY_EXPERIMENT},
        "render": {},  # no dataset rendered (rendering needs the MakeHuman assets: tests/test_render.py)
    }


def make_project(root: Path, experiments: dict | None = None, frames: int = 120) -> Path:
    """Lay out the tiny project in ``root`` (created) and return it; ``frames`` per recording."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    shutil.copytree(REPO / "workflow", root / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "slurm").symlink_to(os.readlink(REPO / "slurm"))
    write_source(root / "src.npz", frames)
    write_params(root, tiny_params(experiments))
    return root


def write_params(root: Path, params: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def env(root: Path, **extra) -> dict:
    """The environment the workflow runs in: this venv first on PATH, a project-local output cache, no
    MLflow tracking unless asked (each job would otherwise set up an SQLite store)."""
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e["SNAKEMAKE_OUTPUT_CACHE"] = str(root / "output-cache")
    e["MLFLOW_TRACKING_URI"] = "off"
    e.pop("POSELIFT_CACHE", None)  # network detections cached beside the output cache (poselift.detection.cache)
    e.pop("CUDA_VISIBLE_DEVICES", None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def snakemake(root: Path, *args, env_extra: dict | None = None, timeout: float = 300, check: bool = True):
    """Run ``snakemake ARGS`` in ``root``; returns the CompletedProcess (stdout and stderr together)."""
    proc = subprocess.run([str(BIN / "snakemake"), *map(str, args)], cwd=root, env=env(root, **(env_extra or {})),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc
