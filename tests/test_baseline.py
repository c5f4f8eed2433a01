"""The training-mean-pose baseline, end to end through the CLI and `poselift metrics`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from poselift.camera import Camera
from poselift.data.prepared import PreparedDataset, Sequence, write_prepared


def test_mean_pose_baseline_scores_the_spread_of_test_poses(tmp_path, run_cli):
    rng = np.random.default_rng(0)
    cam = Camera(R=np.eye(3), T=[0, 0, -5000], f=[1000, 1000], c=[500, 500], width=1000, height=1000, name="c")
    base = rng.normal(0, 200, (17, 3))
    base[0] = 0
    seqs = []
    for subject, split, shift in (("S1", "train", 0.0), ("S2", "train", 0.0), ("S9", "test", 30.0)):
        poses = base + rng.normal(0, 5, (40, 17, 3))
        poses[:, 1:] += shift  # test poses are offset by 30 mm on every axis of every non-root joint
        poses[:, 0] = 0
        seqs.append(Sequence(subject, "walk", "Walk", split, "r", ["c"], poses.astype(np.float32),
                             cam.world_to_pixels(poses)[None].astype(np.float32)))
    write_prepared(tmp_path / "d.h5", PreparedDataset("toy", 50.0, {"r": {"c": cam}}, seqs))

    code, out, err = run_cli("baseline", "mean-pose", "--prepared", tmp_path / "d.h5", "--out-dir", tmp_path / "mp")
    assert code == 0, err
    pred = np.load(tmp_path / "mp" / "predictions.npz")["poses_3d"]
    train_mean = np.concatenate([s.positions_3d for s in seqs[:2]]).mean(0)
    np.testing.assert_allclose(pred[0], train_mean - train_mean[0], atol=1e-3)  # camera = world axes here
    assert pred.shape == (40, 17, 3) and json.load(open(tmp_path / "mp" / "actions.json")) == ["Walk"] * 40

    code, out, err = run_cli("metrics", "--pred", tmp_path / "mp" / "predictions.npz",
                             "--gt", tmp_path / "mp" / "targets.npz", "--actions", tmp_path / "mp" / "actions.json",
                             "--sequences", tmp_path / "mp" / "sequences.json", "--out", tmp_path / "m.json")
    assert code == 0, err
    m = json.load(open(tmp_path / "m.json"))
    # errors are dominated by the 30 mm offset on all three axes: |(30, 30, 30)| = 52 mm on 16 of 17 joints
    assert abs(m["mpjpe"] - 52.0 * 16 / 17) < 2.5
    assert m["p_mpjpe"] < m["mpjpe"]
    # the baseline's own metrics.json (what the workflow's report reads) holds the same values
    own = json.load(open(tmp_path / "mp" / "metrics.json"))
    assert own["mpjpe"] == pytest.approx(m["mpjpe"]) and own["inputs"]["model"] == "mean-pose"
    assert (tmp_path / "mp" / "per_action.csv").is_file() and (tmp_path / "mp" / "per_group.json").is_file()
