"""The training loop, resuming, stage initialisation and freezing, evaluation and MLflow tracking
(poselift.training.loop, poselift.tracking, `poselift train` / `poselift evaluate`), on tiny models and a tiny
synthetic prepared dataset."""

from __future__ import annotations

import json
import math
import socket
import time

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from poselift.camera import Camera
from poselift.training.checkpoint import read_checkpoint
from poselift.data.prepared import PreparedDataset, Sequence, write_prepared
from poselift.models import MODELS

# --- tiny models (registered in MODELS for the duration of each test) ----------------------------------

KILL = {"after": None}  # forward calls left before a simulated kill (Ctrl-C), None = never


def _count_call():
    if KILL["after"] is not None:
        KILL["after"] -= 1
        if KILL["after"] < 0:
            KILL["after"] = None
            raise KeyboardInterrupt


class TinyLifter(nn.Module):
    """T frames (B, T, 17, 2) -> the centre frame's pose (B, 1, 17, 3) through one hidden layer with dropout."""

    output_frames = "centre"

    def __init__(self, window: int = 1, hidden: int = 64, dropout: float = 0.2):
        super().__init__()
        self.window = window
        self.body = nn.Sequential(nn.Linear(window * 34, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, 51)

    def forward(self, inputs_2d):
        _count_call()
        b = inputs_2d.shape[0]
        return {"pose_3d": self.head(self.body(inputs_2d.reshape(b, -1))).reshape(b, 1, 17, 3)}


class TinyRefined(nn.Module):
    """A TinyLifter (``first``) plus a residual correction (``refine``) of its output."""

    output_frames = "centre"

    def __init__(self, window: int = 1, hidden: int = 64, dropout: float = 0.5):
        super().__init__()
        self.first = TinyLifter(window, hidden, dropout)
        self.refine = nn.Sequential(nn.Linear(51 + window * 34, 32), nn.ReLU(), nn.Linear(32, 51))

    def forward(self, inputs_2d):
        b = inputs_2d.shape[0]
        stage1 = self.first(inputs_2d)["pose_3d"]
        delta = self.refine(torch.cat([stage1.reshape(b, -1), inputs_2d.reshape(b, -1)], dim=1))
        return {"pose_3d": stage1 + delta.reshape(b, 1, 17, 3), "pose_3d_stage1": stage1}


class TinySeq(nn.Module):
    """seq2seq: every frame's pose from its own 2D and its neighbours' (a temporal convolution)."""

    output_frames = "all"

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.conv = nn.Conv1d(34, hidden, 3, padding=1, padding_mode="replicate")
        self.head = nn.Conv1d(hidden, 51, 1)

    def forward(self, inputs_2d):
        _count_call()
        b, t = inputs_2d.shape[:2]
        x = inputs_2d.reshape(b, t, 34).transpose(1, 2)
        return {"pose_3d": self.head(torch.relu(self.conv(x))).transpose(1, 2).reshape(b, t, 17, 3)}


@pytest.fixture(autouse=True)
def tiny_models(monkeypatch):
    for name, cls in {"tiny": TinyLifter, "tiny-refined": TinyRefined, "tiny-seq": TinySeq}.items():
        monkeypatch.setitem(MODELS, name, cls)
    KILL["after"] = None
    yield
    KILL["after"] = None


# --- a tiny prepared dataset -------------------------------------------------------------------------------

SEQUENCES = [("S1", "Walking 1", "train", 90), ("S1", "Eating 1", "train", 70), ("S5", "Walking 1", "train", 80),
             ("S6", "Walking 1", "validation", 40), ("S9", "Walking 1", "test", 45), ("S9", "Eating 1", "test", 31)]


def _camera(name, angle):
    c, s = np.cos(angle), np.sin(angle)
    R = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    return Camera(R=R, T=-4500 * R[2], f=[1100.0, 1100.0], c=[500.0, 500.0], width=1000, height=1000, name=name)


def make_prepared(path):
    """Smoothly moving skeletons (a fixed pose plus per-joint sinusoids) seen by two cameras."""
    rng = np.random.default_rng(7)
    cams = {"c1": _camera("c1", 0.4), "c2": _camera("c2", -0.9)}
    base = rng.normal(0, 250, (17, 3))
    seqs = []
    for subject, name, split, n in SEQUENCES:
        t = np.arange(n)[:, None, None]
        amp, freq, phase = (rng.uniform(lo, hi, (1, 17, 3)) for lo, hi in ((30, 150), (0.05, 0.3), (0, 6)))
        pose = (base + amp * np.sin(freq * t + phase) + [0, 0, 900]).astype(np.float32)
        pixels = np.stack([c.world_to_pixels(pose) for c in cams.values()])
        seqs.append(Sequence(subject, name, action=name, split=split, rig="rig", cameras=list(cams),
                             positions_3d=pose, positions_2d=pixels))
    write_prepared(path, PreparedDataset("toy", 50.0, {"rig": cams}, seqs))
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("data") / "toy.h5")


STAGE = {"name": "lift", "model": "tiny", "window": 3, "epochs": 6, "batch_size": 64, "lr": 3e-3,
         "optimizer": "adamw", "weight_decay": 1e-4, "schedule": {"gamma": 0.9, "every": 2}, "max_norm": 5.0,
         "losses": {"mpjpe": 1.0}, "flip_augment": True, "flip_test": True, "seed": 3}


def write_params(tmp_path, stages, models=None):
    params = {"datasets": {"toy": {"reader": "h36m"}},
              "models": models or {"tiny": {"class": "tiny", "window": 3},
                                   "tiny-refined": {"class": "tiny-refined", "window": 3},
                                   "tiny-seq": {"class": "tiny-seq"}},
              "experiments": {"x": {"dataset": "toy", "detector": "prepared", "stages": stages}}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def train(run_cli, params, prepared, out, stage=1, *extra):
    return run_cli("train", "--params", params, "--experiment", "x", "--stage", stage, "--prepared", prepared,
                   "--out", out, "--device", "cpu", "--tracking-uri", "off", *extra)


def history(out):
    return json.loads((out / "history.json").read_text())


# --- training ---------------------------------------------------------------------------------------------

def test_a_stage_trains_the_loss_falls_and_checkpoints_are_self_describing(tmp_path, run_cli, prepared):
    params = write_params(tmp_path, [STAGE])
    out = tmp_path / "stage1"
    code, stdout, err = train(run_cli, params, prepared, out)
    assert code == 0, err
    h = history(out)
    losses = [e["loss"] for e in h["epochs"]]
    val = [e["val_mpjpe"] for e in h["epochs"]]
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0]
    assert val[-1] < 0.75 * _mean_pose_error(prepared)  # it learnt more than the average pose
    assert [e["lr"] for e in h["epochs"]] == pytest.approx([3e-3, 3e-3, 2.7e-3, 2.7e-3, 2.43e-3, 2.43e-3])
    assert h["best"]["val_mpjpe"] == min(val) and val[h["best"]["epoch"] - 1] == min(val)

    for name in ("last.pt", "checkpoint.pt"):  # plain tensors and Python values only
        ckpt = torch.load(out / name, weights_only=True)
        assert (ckpt["format"], ckpt["model"], ckpt["args"], ckpt["window"]) == ("poselift.training.checkpoint", "tiny",
                                                                                 {"window": 3}, 3)
    best = read_checkpoint(out / "checkpoint.pt")
    assert best["epoch"] == h["best"]["epoch"] and best["metrics"]["val_mpjpe"] == h["best"]["val_mpjpe"]
    assert "training" not in best and read_checkpoint(out / "last.pt")["epoch"] == 6

    # a finished stage is a no-op
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, stdout, _ = train(run_cli, params, prepared, out)
    assert code == 0 and "already finished (6 epochs)" in stdout
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def _mean_pose_error(prepared) -> float:
    """Validation MPJPE (mm) of predicting the training split's mean pose for every frame."""
    from poselift.data.loading import load_data, split_views

    data, _ = load_data(prepared, None)
    mean = split_views(data, None, "train", prepared, None).targets_3d.mean(axis=0)
    return float(np.linalg.norm(split_views(data, None, "validation", prepared, None).targets_3d - mean,
                                axis=-1).mean())


def test_load_model_returns_the_trained_model_in_eval_mode(tmp_path, run_cli, prepared):
    import poselift

    params = write_params(tmp_path, [{**STAGE, "epochs": 1}])
    out = tmp_path / "stage1"
    assert train(run_cli, params, prepared, out)[0] == 0
    model = poselift.load_model(out / "checkpoint.pt")
    assert isinstance(model, TinyLifter) and not model.training
    x = torch.randn(5, 3, 17, 2)
    reference = TinyLifter(window=3)
    reference.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["state_dict"])
    reference.eval()
    assert torch.equal(model(x)["pose_3d"], reference(x)["pose_3d"])
    assert torch.equal(model(x)["pose_3d"], model(x)["pose_3d"])  # dropout off


def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path, run_cli, prepared):
    """Dropout on and random flips: only restored optimiser, scheduler and RNG states give equal weights."""
    stage = {**STAGE, "epochs": 4, "select": "last", "schedule": {"gamma": 0.5, "every": 3}}  # decays after epoch 3
    params = write_params(tmp_path, [stage])
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(run_cli, params, prepared, straight)[0] == 0

    frames = {split: sum(2 * n for _, _, s, n in SEQUENCES if s == split) for split in ("train", "validation")}
    # flip_augment: every window twice an epoch (plain and mirrored); flip test: 2 calls a validation batch
    per_epoch = math.ceil(2 * frames["train"] / 64) + 2 * math.ceil(frames["validation"] / 64)
    KILL["after"] = 2 * per_epoch + 3  # killed during the third epoch's training
    code, _, err = train(run_cli, params, prepared, resumed)
    assert code == 130 and "interrupted" in err
    assert read_checkpoint(resumed / "last.pt")["epoch"] == 2
    code, stdout, err = train(run_cli, params, prepared, resumed)
    assert code == 0, err
    assert "resuming after epoch 2" in stdout

    for name in ("last.pt", "checkpoint.pt"):
        a, b = read_checkpoint(straight / name), read_checkpoint(resumed / name)
        assert a["epoch"] == b["epoch"] == 4
        assert a["state_dict"].keys() == b["state_dict"].keys()
        for key in a["state_dict"]:
            assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    ha, hb = history(straight), history(resumed)
    assert [e["lr"] for e in hb["epochs"]] == pytest.approx([3e-3, 3e-3, 3e-3, 1.5e-3])
    assert [e["loss"] for e in ha["epochs"]] == [e["loss"] for e in hb["epochs"]]
    assert [e["val_mpjpe"] for e in ha["epochs"]] == [e["val_mpjpe"] for e in hb["epochs"]]


def test_a_killed_workflow_job_resumes_from_the_state_kept_outside_its_outputs(tmp_path, run_cli, prepared):
    """What the workflow's train rule does: Snakemake deletes a dead job's outputs (the whole stage folder),
    the rerun restores the mirrored last.pt and checkpoint.pt from --keep-state and ends bit-identical to an
    uninterrupted run; the kept state is removed when the stage completes, and a kept state written by other
    settings is discarded rather than resumed."""
    import shutil

    stage = {**STAGE, "epochs": 4, "schedule": {"gamma": 0.5, "every": 3}}
    params = write_params(tmp_path, [stage])
    straight, resumed, keep = tmp_path / "straight", tmp_path / "resumed", tmp_path / "state" / "x" / "stage1"
    assert train(run_cli, params, prepared, straight)[0] == 0

    frames = {split: sum(2 * n for _, _, s, n in SEQUENCES if s == split) for split in ("train", "validation")}
    per_epoch = math.ceil(2 * frames["train"] / 64) + 2 * math.ceil(frames["validation"] / 64)
    KILL["after"] = 2 * per_epoch + 3  # killed during the third epoch's training
    assert train(run_cli, params, prepared, resumed, 1, "--keep-state", keep)[0] == 130
    assert read_checkpoint(keep / "last.pt")["epoch"] == 2
    shutil.rmtree(resumed)  # Snakemake removes the outputs of a failed job
    code, stdout, err = train(run_cli, params, prepared, resumed, 1, "--keep-state", keep)
    assert code == 0, err
    assert "resuming after epoch 2" in stdout
    for name in ("last.pt", "checkpoint.pt"):
        a, b = read_checkpoint(straight / name), read_checkpoint(resumed / name)
        assert a["epoch"] == b["epoch"] and a["best"] == b["best"]
        for key in a["state_dict"]:
            assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert history(straight)["epochs"] == [{**e, "seconds": a["seconds"], "data_share": a["data_share"]} for e, a in
                                           zip(history(resumed)["epochs"], history(straight)["epochs"])]
    assert not keep.exists()  # the stage completed: nothing left to resume

    # a kept state of other settings (here: another learning rate) is not resumed
    KILL["after"] = per_epoch + 3
    assert train(run_cli, params, prepared, tmp_path / "other", 1, "--keep-state", keep)[0] == 130
    assert keep.is_dir()
    (tmp_path / "p2").mkdir()
    other = write_params(tmp_path / "p2", [{**stage, "lr": 1e-3}])
    code, stdout, err = train(run_cli, other, prepared, tmp_path / "fresh", 1, "--keep-state", keep)
    assert code == 0, err
    assert "discarding the kept training state" in stdout + err and "resuming" not in stdout
    assert history(tmp_path / "fresh")["stage"]["lr"] == 1e-3 and len(history(tmp_path / "fresh")["epochs"]) == 4


def test_a_run_killed_after_its_final_last_pt_completes_on_rerun(tmp_path, run_cli, prepared):
    """Killed after the final epoch's last.pt but before its history.json (or, under the workflow, after the
    final epoch's mirror but before the kept state is removed): the rerun trains nothing, writes history.json
    from last.pt and removes the kept state (found by benchmarks/kill_trials.py: the stale history.json stayed,
    and the workflow's rerun, restored from the kept state, left history.json missing)."""
    import shutil

    from poselift.training.loop import _mirror
    from poselift.fingerprint import code_digest

    params = write_params(tmp_path, [{**STAGE, "epochs": 2}])
    out, keep = tmp_path / "out", tmp_path / "state"
    assert train(run_cli, params, prepared, out)[0] == 0
    whole = (out / "history.json").read_text()
    (out / "history.json").write_text(json.dumps({**history(out), "epochs": history(out)["epochs"][:1]}))
    code, stdout, err = train(run_cli, params, prepared, out)
    assert code == 0, err
    assert "already finished" in stdout + err and (out / "history.json").read_text() == whole

    from poselift.commands.train import inputs_fingerprint

    code = f"{code_digest('poselift.commands.train')} {inputs_fingerprint([prepared], [])}"
    _mirror(keep, [out / "checkpoint.pt", out / "last.pt"], {"stage": read_checkpoint(out / "last.pt")["stage"],
                                                            "code": code})
    shutil.rmtree(out)  # Snakemake removes the outputs of the killed job
    code, stdout, err = train(run_cli, params, prepared, out, 1, "--keep-state", keep)
    assert code == 0, err
    assert "restored the training state" in stdout + err and "already finished" in stdout + err
    assert (out / "history.json").read_text() == whole and not keep.exists()


def test_a_kept_stage_two_state_is_stale_once_stage_one_has_trained_again(tmp_path, run_cli, prepared):
    """A killed stage-2 job's kept state was built on stage 1's checkpoint: when stage 1 has changed since (it
    trained again), the rerun starts stage 2 afresh instead of resuming on the old stage 1."""
    from poselift.training.checkpoint import save_checkpoint

    stages = [{**STAGE, "epochs": 1},
              {**STAGE, "name": "refine", "model": "tiny-refined", "epochs": 3, "init": {"first": 1},
               "freeze": ["first"]}]
    params = write_params(tmp_path, stages)
    keep = tmp_path / "state"
    assert train(run_cli, params, prepared, tmp_path / "stage1")[0] == 0
    KILL["after"] = 40  # during stage 2's second epoch or later
    assert train(run_cli, params, prepared, tmp_path / "stage2", 2, "--keep-state", keep)[0] == 130
    assert (keep / "last.pt").is_file()
    one = read_checkpoint(tmp_path / "stage1" / "checkpoint.pt")
    one["state_dict"] = {k: v + 0.01 for k, v in one["state_dict"].items()}  # stage 1 trained again: other weights
    save_checkpoint(tmp_path / "stage1" / "checkpoint.pt", one)
    code, stdout, err = train(run_cli, params, prepared, tmp_path / "stage2b", 2, "--keep-state", keep)
    assert code == 0, err
    assert "discarding the kept training state" in stdout + err and "resuming" not in stdout + err


def test_resuming_with_other_settings_is_refused(tmp_path, run_cli, prepared):
    params = write_params(tmp_path, [{**STAGE, "epochs": 1}])
    out = tmp_path / "stage1"
    assert train(run_cli, params, prepared, out)[0] == 0
    params = write_params(tmp_path, [{**STAGE, "epochs": 2, "lr": 1e-2}])
    code, _, err = train(run_cli, params, prepared, out)
    assert code == 2 and "last.pt: was written by a stage with other settings (lr differ)" in err
    code, stdout, err = train(run_cli, params, prepared, out, 1, "--restart")
    assert code == 0, err
    assert len(history(out)["epochs"]) == 2 and history(out)["stage"]["lr"] == 1e-2


def test_stage_two_starts_from_stage_one_and_its_frozen_part_never_changes(tmp_path, run_cli, prepared):
    stages = [{**STAGE, "epochs": 2},
              {**STAGE, "name": "refine", "model": "tiny-refined", "epochs": 2, "init": {"first": 1},
               "freeze": ["first"], "lr": 1e-3}]
    params = write_params(tmp_path, stages)
    assert train(run_cli, params, prepared, tmp_path / "stage1")[0] == 0
    code, _, err = train(run_cli, params, prepared, tmp_path / "stage2", 2)
    assert code == 0, err
    one = read_checkpoint(tmp_path / "stage1" / "checkpoint.pt")["state_dict"]
    two = read_checkpoint(tmp_path / "stage2" / "last.pt")
    for key, value in one.items():  # bit-identical after two epochs of stage II
        assert torch.equal(two["state_dict"][f"first.{key}"], value), key
    fresh = TinyRefined(window=3).state_dict()
    assert not torch.equal(two["state_dict"]["refine.0.weight"], fresh["refine.0.weight"])
    # the optimiser holds only the trainable parameters
    n_refine = len([k for k in two["state_dict"] if k.startswith("refine.")])
    assert len(two["training"]["optimizer"]["param_groups"][0]["params"]) == n_refine


def test_frozen_submodules_get_no_gradient_and_stay_in_eval_mode(tmp_path, prepared):
    """One training epoch through the loop's own functions: frozen parameters never receive a gradient
    and their dropout is off (so stage I's output is deterministic during stage II)."""
    from poselift.experiments import load_experiment
    from poselift.training.loop import _train_epoch
    from poselift.training.stage import freeze, make_optimizer
    from poselift.training.tasks import TASKS

    params = write_params(tmp_path, [STAGE, {**STAGE, "name": "r", "model": "tiny-refined", "freeze": ["first"],
                                             "window": 3, "flip_augment": True}])
    exp = load_experiment("x", params)
    stage = exp.stage(2)
    model = TinyRefined(window=3, dropout=0.5)
    frozen = freeze(model, ["first"], "params.yaml")
    modes = []
    model.first.register_forward_pre_hook(lambda m, _: modes.append(m.training))
    optimizer, _ = make_optimizer(model, stage)
    task = TASKS[stage.task]({"prepared": prepared, "detections": None}, torch.device("cpu"))
    task.setup(model, stage, exp.dataset.validation_split)
    before = {k: v.clone() for k, v in model.first.state_dict().items()}
    _train_epoch(model, frozen, task, optimizer, stage, 0)
    assert modes and not any(modes)
    assert all(p.grad is None for p in model.first.parameters())
    assert all(p.grad is not None for p in model.refine.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.first.state_dict().items())
    assert model.refine.training


def test_init_from_a_checkpoint_that_does_not_fit_is_an_input_error(tmp_path, run_cli, prepared):
    stages = [{**STAGE, "epochs": 1, "model": "tiny-seq", "window": 5},
              {**STAGE, "name": "refine", "model": "tiny-refined", "epochs": 1, "init": {"first": 1}}]
    params = write_params(tmp_path, stages)
    assert train(run_cli, params, prepared, tmp_path / "stage1")[0] == 0
    code, _, err = train(run_cli, params, prepared, tmp_path / "stage2", 2)
    assert code == 2 and "stage1/checkpoint.pt: does not fit submodule 'first' of TinyRefined" in err
    code, _, err = train(run_cli, params, prepared, tmp_path / "stage2", 2, "--init", f"1={tmp_path / 'nope.pt'}")
    assert code == 2 and "nope.pt: file not found" in err


def test_init_from_a_checkpoint_file_loads_it_into_the_submodule(tmp_path, run_cli, prepared):
    """``init: {first: path.pt}`` (e.g. official weights through import-checkpoint) starts the submodule from
    that file, as a stage number starts it from an earlier stage (here: the same weights, no stage 1 run)."""
    stages = [{**STAGE, "epochs": 1}]
    params = write_params(tmp_path, stages)
    assert train(run_cli, params, prepared, tmp_path / "donor")[0] == 0
    donor = tmp_path / "donor" / "checkpoint.pt"
    refine = {**STAGE, "name": "refine", "model": "tiny-refined", "epochs": 1, "init": {"first": str(donor)},
              "freeze": ["first"]}
    params = write_params(tmp_path, [refine])
    code, _, err = train(run_cli, params, prepared, tmp_path / "stage1")
    assert code == 0, err
    one = read_checkpoint(donor)["state_dict"]
    two = read_checkpoint(tmp_path / "stage1" / "checkpoint.pt")["state_dict"]
    assert all(torch.equal(two[f"first.{k}"], v) for k, v in one.items())
    (tmp_path / "donor" / "checkpoint.pt").unlink()
    code, _, err = train(run_cli, params, prepared, tmp_path / "stage1b")
    assert code == 2 and f"{donor}: file not found" in err


# --- evaluation -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model,window", [("tiny", 3), ("tiny-seq", 16)])
def test_evaluate_writes_the_metrics_set_and_its_mpjpe_matches_the_files(tmp_path, run_cli, prepared, model, window):
    params = write_params(tmp_path, [{**STAGE, "model": model, "window": window, "epochs": 2}])
    out = tmp_path / "eval"
    assert train(run_cli, params, prepared, tmp_path / "stage1")[0] == 0
    code, stdout, err = run_cli("evaluate", "--params", params, "--experiment", "x", "--prepared", prepared,
                                "--checkpoint", tmp_path / "stage1" / "checkpoint.pt", "--out", out,
                                "--device", "cpu", "--tracking-uri", "off")
    assert code == 0, err
    result = json.loads((out / "metrics.json").read_text())
    n_test = sum(2 * n for _, _, split, n in SEQUENCES if split == "test")
    assert result["frames"] == n_test  # every valid test frame of every view
    assert result["inputs"]["flip_test"] is True

    code, _, err = run_cli("metrics", "--pred", out / "predictions.npz", "--gt", out / "targets.npz",
                           "--actions", out / "actions.json", "--sequences", out / "sequences.json",
                           "--out", tmp_path / "recomputed.json")
    assert code == 0, err
    recomputed = json.loads((tmp_path / "recomputed.json").read_text())
    assert result.keys() == recomputed.keys()
    for key in ("mpjpe", "p_mpjpe", "n_mpjpe", "mpjve", "pck150", "auc"):
        assert result[key] == pytest.approx(recomputed[key], rel=1e-12)
    pred = np.load(out / "predictions.npz")["poses_3d"]
    gt = np.load(out / "targets.npz")["poses_3d"]
    assert result["mpjpe"] == pytest.approx(np.linalg.norm((pred - pred[:, :1]) - (gt - gt[:, :1]), axis=-1).mean())

    lines = (out / "per_action.csv").read_text().splitlines()
    assert lines[0] == "action,frames,mpjpe,p_mpjpe,n_mpjpe,mpjve"
    assert sorted(line.split(",")[0] for line in lines[1:]) == ["Eating", "Walking"]
    groups = json.loads((out / "per_group.json").read_text())
    assert groups["mpjpe"] == pytest.approx(result["per_joint_group"])
    assert json.loads((out / "views.json").read_text())[0] == ["S9/Eating 1", "c1"]


def test_evaluation_predictions_are_the_models_outputs_in_mm(tmp_path, run_cli, prepared):
    """Frame k of a view is the loaded model applied to frames k-1..k+1 (edge-replicated), flip-averaged."""
    import poselift
    from poselift.data.windows import flip_average
    from poselift.data.loading import load_data, split_views

    params = write_params(tmp_path, [{**STAGE, "epochs": 1}])
    assert train(run_cli, params, prepared, tmp_path / "stage1")[0] == 0
    out = tmp_path / "eval"
    code, _, err = run_cli("evaluate", "--params", params, "--experiment", "x", "--prepared", prepared, "--stage", 1,
                           "--out", out, "--device", "cpu", "--tracking-uri", "off", "--checkpoint",
                           tmp_path / "stage1" / "checkpoint.pt")
    assert code == 0, err
    model = poselift.load_model(tmp_path / "stage1" / "checkpoint.pt")
    data, _ = load_data(prepared, None)
    test = split_views(data, None, "test", prepared, None)
    a, b = int(test.starts[0]), int(test.ends[0])
    rows = np.clip(np.arange(a, b)[:, None] + np.arange(-1, 2), a, b - 1)
    x = torch.from_numpy(test.inputs_2d[rows])
    with torch.no_grad():
        expected = flip_average(lambda t: model(t)["pose_3d"], x)[:, 0].numpy() * 1000
    saved = np.load(out / "predictions.npz")
    assert np.array_equal(saved["view"][: b - a], np.zeros(b - a)) and np.array_equal(saved["frame"][: b - a],
                                                                                      np.arange(b - a))
    np.testing.assert_allclose(saved["poses_3d"][: b - a], expected, rtol=0, atol=1e-3)


def test_flip_test_averaging_is_mirror_equivariant():
    """g(x) = (f(x) + flip(f(flip(x)))) / 2 satisfies g(flip(x)) = flip(g(x)) for any model f."""
    from poselift.data.windows import flip, flip_average

    torch.manual_seed(0)
    for model in (TinyLifter(window=3).eval(), TinySeq().eval()):
        x = torch.randn(4, 3, 17, 2)

        def f(t):
            return model(t)["pose_3d"]

        with torch.no_grad():
            g, g_mirrored = flip_average(f, x), flip_average(f, flip(x))
            assert not torch.allclose(f(flip(x)), flip(f(x)), atol=1e-3)  # the model alone is not
            torch.testing.assert_close(g_mirrored, flip(g), rtol=0, atol=1e-6)


# --- MLflow -----------------------------------------------------------------------------------------------

def test_mlflow_logs_nested_stage_and_evaluation_runs(tmp_path, run_cli, prepared, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = write_params(tmp_path, [{**STAGE, "epochs": 2}])
    code, _, err = run_cli("train", "--params", params, "--experiment", "x", "--stage", 1, "--prepared", prepared,
                           "--out", tmp_path / "stage1", "--device", "cpu", "--tracking-uri", uri)
    assert code == 0, err
    code, _, err = run_cli("evaluate", "--params", params, "--experiment", "x", "--prepared", prepared,
                           "--checkpoint", tmp_path / "stage1" / "checkpoint.pt", "--out", tmp_path / "eval",
                           "--device", "cpu", "--tracking-uri", uri)
    assert code == 0, err
    assert "warning" not in err

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("x")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"x", "stage1-lift", "evaluation-test"}
    parent = runs["x"].info.run_id
    stage, evaluation = runs["stage1-lift"], runs["evaluation-test"]
    assert stage.data.tags["mlflow.parentRunId"] == evaluation.data.tags["mlflow.parentRunId"] == parent
    h = history(tmp_path / "stage1")
    val = client.get_metric_history(stage.info.run_id, "val_mpjpe")
    assert [(m.step, m.value) for m in val] == [(e["epoch"], pytest.approx(e["val_mpjpe"])) for e in h["epochs"]]
    assert stage.data.params["lr"] == "0.003" and stage.data.params["losses.mpjpe"] == "1.0"
    assert stage.info.status == runs["x"].info.status == "FINISHED"
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # each MPJPE named by what it averages: metrics.json's "mpjpe" (all frames), the table's (action mean)
    assert evaluation.data.metrics["mpjpe_all_frames"] == pytest.approx(metrics["mpjpe"])
    assert evaluation.data.metrics["mpjpe_action_mean"] == pytest.approx(metrics["action_mean"]["mpjpe"])
    assert "mpjpe" not in evaluation.data.metrics
    found = client.search_runs([exp.experiment_id], "metrics.mpjpe_all_frames > 0")
    assert [r.info.run_name for r in found] == ["evaluation-test"]
    artifacts = {a.path for a in client.list_artifacts(evaluation.info.run_id)}
    assert {"metrics.json", "per_action.csv", "per_group.json"} <= artifacts


def test_unreachable_tracking_server_warns_once_and_training_completes(tmp_path, run_cli, prepared):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    params = write_params(tmp_path, [{**STAGE, "epochs": 2}])
    tick = time.monotonic()
    code, stdout, err = run_cli("train", "--params", params, "--experiment", "x", "--stage", 1, "--prepared", prepared,
                                "--out", tmp_path / "stage1", "--device", "cpu",
                                "--tracking-uri", f"http://127.0.0.1:{port}")
    assert code == 0, err
    assert time.monotonic() - tick < 60  # bounded retries, not MLflow's default minutes
    assert err.count("poselift: warning: MLflow tracking") == 1
    assert f"API request to http://127.0.0.1:{port}/api/" in err  # it failed to connect, not on our settings
    assert len(history(tmp_path / "stage1")["epochs"]) == 2


def test_default_layout(tmp_path, run_cli, monkeypatch):
    """Without explicit paths: data/prepared/<dataset>.h5 in, results/<experiment>/... out."""
    monkeypatch.chdir(tmp_path)
    make_prepared(tmp_path / "data" / "prepared" / "toy.h5")
    write_params(tmp_path, [{**STAGE, "epochs": 1}])
    code, _, err = run_cli("train", "--experiment", "x", "--stage", 1, "--device", "cpu", "--tracking-uri", "off")
    assert code == 0, err
    code, _, err = run_cli("evaluate", "--experiment", "x", "--device", "cpu", "--tracking-uri", "off",
                           "--no-flip-test")
    assert code == 0, err
    assert (tmp_path / "results/x/stage1/checkpoint.pt").is_file()
    metrics = json.loads((tmp_path / "results/x/evaluation/metrics.json").read_text())
    assert metrics["inputs"]["flip_test"] is False
    assert metrics["inputs"]["checkpoint"] == "results/x/stage1/checkpoint.pt"
    assert (tmp_path / "results/x/evaluation/predictions.npz").is_file()


def test_official_training_switches_run_through_the_loop_and_gt_only_evaluation(tmp_path, run_cli, prepared):
    """flip_augment (both copies), sta_spatial on every window frame, the loss-scaled gradient and MixSTE's
    gt-only evaluation root, end to end through `poselift train` / `poselift evaluate`."""
    models = {"sta-tiny": {"class": "sta", "num_frames": 3, "embed_dim_ratio": 8, "depth": 1, "num_heads": 2,
                           "norm_groups": 2}}
    stage = {**STAGE, "model": "sta-tiny", "epochs": 1, "losses": {"sta_spatial": 1.0, "sta_temporal": 1.0},
             "loss_scaled_gradient": True, "evaluation_root": "gt-only"}
    params = write_params(tmp_path, [stage], models)
    code, _, err = train(run_cli, params, prepared, tmp_path / "stage1")
    assert code == 0, err
    assert read_checkpoint(tmp_path / "stage1" / "checkpoint.pt")["stage"]["evaluation_root"] == "gt-only"
    out = tmp_path / "eval"
    code, _, err = run_cli("evaluate", "--params", params, "--experiment", "x", "--prepared", prepared,
                           "--checkpoint", tmp_path / "stage1" / "checkpoint.pt", "--out", out,
                           "--device", "cpu", "--tracking-uri", "off")
    assert code == 0, err
    result = json.loads((out / "metrics.json").read_text())
    pred = np.load(out / "predictions.npz")["poses_3d"]
    gt = np.load(out / "targets.npz")["poses_3d"]
    assert result["root"] == "gt-only"
    assert result["mpjpe"] == pytest.approx(np.linalg.norm(pred - (gt - gt[:, :1]), axis=-1).mean())
    assert result["mpjpe"] != pytest.approx(np.linalg.norm((pred - pred[:, :1]) - (gt - gt[:, :1]), axis=-1).mean())


def test_the_data_pipelines_share_of_the_step_time_is_measured(tmp_path, prepared):
    """_train_epoch returns the share of the pass spent waiting for batches (history's `data_share`, the log
    line's "waiting for data"): near 1 when the loader is the bottleneck, small when it is not."""
    import time as _time

    from poselift.experiments import load_experiment
    from poselift.training.loop import _train_epoch
    from poselift.training.stage import make_optimizer
    from poselift.training.tasks import TASKS

    exp = load_experiment("x", write_params(tmp_path, [STAGE]))
    stage = exp.stage(1)
    model = TinyLifter(window=3)
    optimizer, _ = make_optimizer(model, stage)
    task = TASKS[stage.task]({"prepared": prepared, "detections": None}, torch.device("cpu"))
    task.setup(model, stage, exp.dataset.validation_split)
    batches = list(task.batches)[:4]

    class Loader:
        def __init__(self, delay):
            self.delay = delay

        def __iter__(self):
            for batch in batches:
                _time.sleep(self.delay)
                yield batch

    task.batches = Loader(0.25)  # 250 ms a batch against a step of a few ms
    _, slow = _train_epoch(model, [], task, optimizer, stage, 0)
    task.batches = Loader(0.0)
    _, fast = _train_epoch(model, [], task, optimizer, stage, 0)
    assert 0.6 < slow < 1.0 and 0.0 <= fast < 0.4, (slow, fast)
