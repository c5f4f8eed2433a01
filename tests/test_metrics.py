"""Evaluation metrics: hand-computed values, invariances, optimality of the alignments, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from poselift import metrics as m
from poselift.io import write_npz
from poselift.skeleton import H36M17, POT_GROUP_NAMES

J = 17


def random_poses(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=200.0, size=(n, J, 3))


def noisy(gt: np.ndarray, sigma: float = 20.0, seed: int = 1) -> np.ndarray:
    return gt + np.random.default_rng(seed).normal(scale=sigma, size=gt.shape)


def similarity(poses: np.ndarray, seed: int = 2) -> np.ndarray:
    """A random proper rotation, scale in [0.5, 2] and translation per frame applied to ``poses``."""
    rng = np.random.default_rng(seed)
    n = len(poses)
    rot = Rotation.random(n, random_state=seed).as_matrix()
    scale = rng.uniform(0.5, 2.0, size=(n, 1, 1))
    shift = rng.normal(scale=1000.0, size=(n, 1, 3))
    return scale * np.einsum("nij,nkj->nki", rot, poses) + shift


def sq_error(a, b) -> np.ndarray:
    return ((a - b) ** 2).sum(axis=(1, 2))


# ---------------------------------------------------------------- Protocol 1

def test_mpjpe_hand_computed_and_translation_invariant():
    gt = random_poses(2)
    pred = gt.copy()
    pred[:, 5] += [6.0, 8.0, 0.0]  # 10 mm on one of 17 joints in both frames
    assert m.mpjpe(pred, gt) == pytest.approx(10.0 / 17)
    assert m.mpjpe(pred + [100.0, -50.0, 3000.0], gt) == pytest.approx(10.0 / 17)
    errors = m.joint_errors(pred, gt)
    assert errors[:, 5] == pytest.approx([10.0, 10.0]) and np.delete(errors, 5, axis=1) == pytest.approx(0.0)


def test_mpjpe_root_error_moves_every_joint():
    gt = random_poses(3)
    pred = gt.copy()
    pred[:, 0] += [0.0, 0.0, 34.0]  # a wrong pelvis shifts all 16 other joints relative to it
    assert m.mpjpe(pred, gt) == pytest.approx(34.0 * 16 / 17)


# ---------------------------------------------------------------- Protocol 2

def test_p_mpjpe_zero_for_similarity_transform_of_gt():
    gt = random_poses(20)
    assert m.p_mpjpe(similarity(gt), gt) == pytest.approx(0.0, abs=1e-6)
    assert m.mpjpe(similarity(gt), gt) > 50.0


def test_p_mpjpe_invariant_to_similarity_transforms_of_pred():
    gt = random_poses(20)
    pred = noisy(gt)
    assert m.p_mpjpe(similarity(pred, seed=7), gt) == pytest.approx(m.p_mpjpe(pred, gt), rel=1e-9)


def test_procrustes_is_least_squares_optimal():
    """No similarity transform (root alignment, scale only, or random) gets closer in squared error."""
    gt = random_poses(30)
    pred = noisy(gt, sigma=40.0)
    best = sq_error(m.procrustes_align(pred, gt), gt)
    root_aligned = m.root_relative(pred) + gt[:, :1]
    assert np.all(best <= sq_error(root_aligned, gt) + 1e-6)
    assert np.all(best <= sq_error(m.scale_align(pred, gt), m.root_relative(gt)) + 1e-6)
    for seed in range(3):
        assert np.all(best <= sq_error(similarity(pred, seed=seed), gt) + 1e-6)


def test_p_mpjpe_below_n_mpjpe_below_mpjpe_on_noisy_data():
    gt = random_poses(200)
    pred = noisy(gt, sigma=30.0)
    assert m.p_mpjpe(pred, gt) < m.n_mpjpe(pred, gt) < m.mpjpe(pred, gt)


def reference_p_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """Frame by frame with scipy's proper-rotation fit (Kabsch) and the closed-form scale."""
    errors = []
    for p, g in zip(pred, gt):
        p0, g0 = p - p.mean(0), g - g.mean(0)
        rot, _ = Rotation.align_vectors(g0, p0)  # minimises sum |g0 - R p0|^2 over rotations only
        rp = rot.apply(p0)
        scale = (g0 * rp).sum() / (p0 * p0).sum()
        errors.append(np.linalg.norm(scale * rp + g.mean(0) - g, axis=1))
    return float(np.mean(errors))


def test_mirror_image_is_not_aligned_by_a_reflection():
    gt = random_poses(5, seed=3)
    mirrored = gt * [-1.0, 1.0, 1.0]
    # an unconstrained orthogonal Procrustes would "align" the mirror image perfectly ...
    p0, g0 = mirrored[0] - mirrored[0].mean(0), gt[0] - gt[0].mean(0)
    reflection, _ = orthogonal_procrustes(p0, g0)
    assert np.linalg.det(reflection) < 0 and np.allclose(p0 @ reflection, g0)
    # ... but P-MPJPE uses proper rotations only, and agrees with an independent computation
    value = m.p_mpjpe(mirrored, gt)
    assert value > 20.0
    assert value == pytest.approx(reference_p_mpjpe(mirrored, gt), rel=1e-6)


def test_p_mpjpe_matches_reference_on_noisy_data():
    gt = random_poses(10, seed=4)
    pred = similarity(noisy(gt, sigma=50.0), seed=5)
    assert m.p_mpjpe(pred, gt) == pytest.approx(reference_p_mpjpe(pred, gt), rel=1e-6)


# ---------------------------------------------------------------- N-MPJPE

def test_n_mpjpe_zero_for_scaled_root_relative_gt():
    gt = random_poses(10)
    pred = 1.7 * m.root_relative(gt) + [300.0, 0.0, 5000.0]  # scaled about the root, then moved
    assert m.n_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-9)
    assert m.mpjpe(pred, gt) > 50.0


def test_n_mpjpe_scale_is_least_squares_optimal():
    gt = random_poses(10)
    pred = noisy(gt, sigma=40.0)
    best = sq_error(m.scale_align(pred, gt), m.root_relative(gt))
    for s in (0.9, 0.99, 1.0, 1.01, 1.1):
        assert np.all(best <= sq_error(s * m.root_relative(pred), m.root_relative(gt)) + 1e-6)


# ---------------------------------------------------------------- MPJVE

def test_mpjve_zero_for_constant_offset():
    gt = random_poses(10)
    pred = gt.copy()
    pred[:, 3] += [20.0, -5.0, 7.0]
    assert m.mpjve(pred, gt) == pytest.approx(0.0, abs=1e-12)
    assert m.mpjpe(pred, gt) > 0.0


def test_mpjve_linear_drift():
    gt = random_poses(6)
    pred = gt.copy()
    pred[:, 13] += np.arange(6)[:, None] * [3.0, 4.0, 0.0]  # the left wrist drifts 5 mm per frame
    assert m.mpjve(pred, gt) == pytest.approx(5.0 / 17)


def test_mpjve_is_root_relative():
    gt = random_poses(5)
    pred = gt + np.arange(5)[:, None, None] * [10.0, 0.0, 0.0]  # the whole body drifts: no pose error
    assert m.mpjve(pred, gt) == pytest.approx(0.0, abs=1e-9)


def test_mpjve_never_differences_across_sequences():
    gt = random_poses(8)
    pred = gt.copy()
    pred[4:, 2] += [0.0, 100.0, 0.0]  # a constant offset in the second sequence only
    sequences = ["a"] * 4 + ["b"] * 4
    assert m.mpjve(pred, gt, sequences) == pytest.approx(0.0, abs=1e-12)
    assert m.mpjve(pred, gt) == pytest.approx(100.0 / (17 * 7))  # one jump among 7 frame pairs


# ---------------------------------------------------------------- 3D-PCK and AUC

def test_pck_monotone_and_auc_in_range():
    gt = random_poses(50)
    pred = noisy(gt, sigma=60.0)
    curve = m.pck_curve(pred, gt, np.linspace(0, 300, 61))
    assert np.all(np.diff(curve) >= 0) and curve[0] == 0.0 and curve[-1] > 90.0
    assert 0.0 < m.auc(pred, gt) < 100.0
    assert m.pck(pred, gt, 100.0) == pytest.approx(100.0 * np.mean(m.joint_errors(pred, gt) < 100.0))


def test_pck_and_auc_hand_computed():
    gt = np.round(random_poses(4))  # whole millimetres keep the arithmetic exact
    pred = gt.copy()
    pred[:, 1:] += [0.0, 0.0, 75.0]  # every non-root joint is off by exactly 75 mm
    joints = m.MPI_INF_3DHP_EVAL_JOINTS  # the 14 evaluation joints exclude the root
    assert m.pck(pred, gt, joints=joints) == 100.0
    assert m.pck(pred, gt, threshold=75.0, joints=joints) == 0.0  # strictly below, as the 3DHP script
    assert m.auc(pred, gt, joints=joints) == pytest.approx(15 / 31 * 100)  # thresholds 80, 85, ..., 150
    # all 17 joints: the root counts as correct at every threshold above 0
    assert m.auc(pred, gt) == pytest.approx((15 * 17 + 15 * 1) / (31 * 17) * 100)


def test_mpi_inf_3dhp_joints():
    names = [H36M17.names[j] for j in m.MPI_INF_3DHP_EVAL_JOINTS]
    assert len(set(names)) == 14
    assert {"pelvis", "spine", "neck_nose"}.isdisjoint(names) and {"head", "thorax"} <= set(names)


# ---------------------------------------------------------------- evaluate: actions and joint groups

def test_per_action_merges_variants_and_reports_std():
    gt = random_poses(6)
    pred = gt.copy()
    pred[0:2, 4] += [17.0, 0.0, 0.0]  # "Directions 1": MPJPE 1
    pred[2:3, 4] += [51.0, 0.0, 0.0]  # "Directions": MPJPE 3
    pred[3:6, 4] += [0.0, 85.0, 0.0]  # "Eating 2": MPJPE 5
    actions = ["Directions 1"] * 2 + ["Directions"] + ["Eating 2"] * 3
    r = m.evaluate(pred, gt, actions=actions)
    assert set(r["per_action"]) == {"Directions", "Eating"}
    assert r["per_action"]["Directions"]["frames"] == 3
    assert r["per_action"]["Directions"]["mpjpe"] == pytest.approx(5.0 / 3)  # (1 + 1 + 3) / 3 frames
    assert r["per_action"]["Eating"]["mpjpe"] == pytest.approx(5.0)
    assert r["action_mean"]["mpjpe"] == pytest.approx((5.0 / 3 + 5.0) / 2)
    assert r["per_action_std"] == pytest.approx(abs(5.0 - 5.0 / 3) / 2)
    assert r["mpjpe"] == pytest.approx((1 + 1 + 3 + 5 * 3) / 6)
    # the constant error inside each recording has no velocity error; the jumps between recordings don't count
    assert r["mpjve"] == pytest.approx(0.0, abs=1e-12) and r["per_action"]["Eating"]["mpjve"] == pytest.approx(0.0)
    json.dumps(r, allow_nan=False)


def test_per_joint_group_wrists_only():
    gt = random_poses(3)
    pred = gt.copy()
    wrists = [H36M17.index("left_wrist"), H36M17.index("right_wrist")]
    pred[:, wrists] += [0.0, 12.0, 0.0]
    r = m.evaluate(pred, gt)
    groups = list(r["per_joint_group"].values())
    assert list(r["per_joint_group"]) == list(POT_GROUP_NAMES)
    assert groups[:4] == pytest.approx([0.0] * 4, abs=1e-12) and groups[4] == pytest.approx(12.0)
    assert r["per_joint"]["right_wrist"] == pytest.approx(12.0) and r["per_joint"]["head"] == pytest.approx(0.0)
    assert r["per_action"] == {} and r["mpjve"] == pytest.approx(0.0, abs=1e-12)
    assert "Directions" not in m.format_table(r) and "wrists 12.00" in m.format_table(r)


# ---------------------------------------------------------------- the CLI

@pytest.fixture
def case(tmp_path):
    gt = random_poses(4).astype(np.float32)
    pred = gt.copy()
    pred[:, 5] += [0.0, 0.0, 34.0]  # MPJPE 2 mm
    pred[2:, 16] += [0.0, 17.0, 0.0]  # + 1 mm in "Eating" only
    write_npz(tmp_path / "gt.npz", poses_3d=gt)
    np.savez(tmp_path / "pred.npz", whatever=pred)  # a single array under another key is accepted
    (tmp_path / "actions.json").write_text(json.dumps(["Directions 1", "Directions 2", "Eating", "Eating"]))
    return tmp_path


def test_cli_reproduces_hand_computed_values(case, run_cli):
    out = case / "m.json"
    code, stdout, _ = run_cli("metrics", "--pred", case / "pred.npz", "--gt", case / "gt.npz",
                              "--actions", case / "actions.json", "--out", out)
    assert code == 0
    r = json.loads(out.read_text())
    assert r["frames"] == 4 and r["mpjpe"] == pytest.approx(2.5, rel=1e-5)
    assert r["per_action"]["Directions"]["mpjpe"] == pytest.approx(2.0, rel=1e-5)
    assert r["per_action"]["Eating"]["mpjpe"] == pytest.approx(3.0, rel=1e-5)
    assert r["per_action_std"] == pytest.approx(0.5, rel=1e-5)
    assert r["pck150"] == 100.0 and r["per_joint"]["left_hip"] == pytest.approx(0.0, abs=1e-4)
    assert "Directions" in stdout and "Eating" in stdout


def bad_inputs(tmp_path):
    good = random_poses(4)
    write_npz(tmp_path / "gt.npz", poses_3d=good)
    cases = {"missing.npz": "file not found"}
    (tmp_path / "text.npz").write_text("not an archive")
    cases["text.npz"] = "not a readable"
    np.save(tmp_path / "single.npy", good)
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    cases["single.npz"] = "single array"
    write_npz(tmp_path / "keys.npz", a=good, b=good)
    cases["keys.npz"] = "has: a, b"
    write_npz(tmp_path / "shape.npz", poses_3d=good[:, :16])
    cases["shape.npz"] = "(4, 16, 3)"
    write_npz(tmp_path / "frames.npz", poses_3d=good[:3])
    cases["frames.npz"] = "3 frames"
    nan = good.copy()
    nan[1, 2, 0] = np.nan
    write_npz(tmp_path / "nan.npz", poses_3d=nan)
    cases["nan.npz"] = "non-finite"
    return cases


def test_cli_bad_poses_exit_2_without_output(tmp_path, run_cli):
    for name, problem in bad_inputs(tmp_path).items():
        out = tmp_path / "m.json"
        code, _, err = run_cli("metrics", "--pred", tmp_path / name, "--gt", tmp_path / "gt.npz", "--out", out)
        assert code == 2, name
        assert err.count("\n") == 1 and err.startswith("poselift: error: ") and name in err, err
        assert problem in err, err
        assert not out.exists() and not list(tmp_path.glob(".m.json*"))


@pytest.mark.parametrize("labels, problem", [(["Walking"] * 3, "3 labels"), ({"a": 1}, "JSON list"),
                                             (["Walking", None, "Eating", "Eating"], "None")])
def test_cli_bad_actions_exit_2_without_output(tmp_path, run_cli, labels, problem):
    write_npz(tmp_path / "gt.npz", poses_3d=random_poses(4))
    (tmp_path / "actions.json").write_text(json.dumps(labels))
    out = tmp_path / "m.json"
    code, _, err = run_cli("metrics", "--pred", tmp_path / "gt.npz", "--gt", tmp_path / "gt.npz",
                           "--actions", tmp_path / "actions.json", "--out", out)
    assert code == 2 and "actions.json" in err and problem in err and err.count("\n") == 1
    assert not out.exists()
