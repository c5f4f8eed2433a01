"""``poselift detect``: the gt detector, the synthetic detector's error statistics, and the CLI contract."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.signal import lfilter
from scipy.stats import spearmanr

from poselift.camera import Camera
from poselift.data.detections import load_detections
from poselift.data.prepared import PreparedDataset, Sequence, content_hash, write_prepared
from poselift.detection import synthetic
from poselift.detection.synthetic import SWAP_PAIRS, SyntheticParams, person_scale, simulate
from poselift.skeleton import H36M17

REPO = Path(__file__).resolve().parents[1]

# A standing pose in world mm (z up), H36M17 order; the person faces -y.
TEMPLATE = np.array([
    [0, 0, 900], [-130, 0, 900], [-130, 0, 480], [-130, 0, 80], [130, 0, 900], [130, 0, 480], [130, 0, 80],
    [0, 0, 1130], [0, 0, 1380], [0, -80, 1480], [0, 0, 1600],
    [170, 0, 1360], [190, 0, 1080], [200, 0, 830], [-170, 0, 1360], [-190, 0, 1080], [-200, 0, 830],
], dtype=np.float64)


def h36m_camera(name: str, centre, forward) -> Camera:
    """A camera with Human3.6M-like intrinsics at ``centre`` (mm) looking horizontally along ``forward``."""
    z = np.asarray(forward, dtype=float)
    y = np.array([0.0, 0.0, -1.0])  # image down = world down
    return Camera(R=np.stack([np.cross(y, z), y, z]), T=centre, f=[1145.0, 1145.0], c=[512.0, 515.0],
                  width=1000, height=1000, name=name)


CAMERAS = {"cam0": h36m_camera("cam0", [0, -5000, 1000], [0, 1, 0]),
           "cam1": h36m_camera("cam1", [5000, 0, 1000], [-1, 0, 0])}


def random_walk_poses(frames: int, seed: int) -> np.ndarray:
    """(F, 17, 3): the template drifting (root random walk) and wiggling (AR(1) per joint, ~20 mm)."""
    rng = np.random.default_rng(seed)
    root = np.cumsum(rng.normal(0, 3, (frames, 1, 3)) * [1, 1, 0], axis=0)
    wiggle = lfilter([0.2], [1, -0.98], rng.normal(0, 20, (frames, 17, 3)), axis=0)
    return TEMPLATE + root + wiggle


def make_sequence(key: str, frames: int, seed: int, cameras=("cam0", "cam1")) -> Sequence:
    subject, name = key.split("/")
    pos3d = random_walk_poses(frames, seed)
    pos2d = np.stack([CAMERAS[c].world_to_pixels(pos3d) for c in cameras])
    return Sequence(subject=subject, name=name, action=name, split="test", rig="rig", cameras=list(cameras),
                    positions_3d=pos3d.astype(np.float32), positions_2d=pos2d.astype(np.float32))


def write_dataset(path: Path, sequences: list[Sequence]) -> Path:
    write_prepared(path, PreparedDataset(dataset="toy", fps=50.0, rigs={"rig": dict(CAMERAS)},
                                         sequences=sequences))
    return path


@pytest.fixture(scope="module")
def long_view() -> np.ndarray:
    """20000 frames of one camera's ground-truth 2D, (F, 17, 2); the person box is ~350 px (scale ~0.87)."""
    return CAMERAS["cam0"].world_to_pixels(random_walk_poses(20000, seed=1))


def zero_sigma(**changes) -> SyntheticParams:
    """Noise-free params (sigma, jitter, outliers and swaps off) with ``changes`` applied."""
    off = dict(sigma_px={n: 0.0 for n in H36M17.names}, jitter_px=0.0, p_outlier=0.0, p_swap=0.0)
    return SyntheticParams(**{**off, **changes})


def normalised_error(gt, params, seed=0):
    kp, scores = simulate(gt, params, np.random.default_rng(seed))
    scale = person_scale(gt, params.reference_size_px)
    return (kp - gt) / scale[:, None, None], scores


def lag1(x: np.ndarray) -> np.ndarray:
    """Lag-1 autocorrelation along axis 0, per remaining index."""
    x = x - x.mean(0)
    return (x[1:] * x[:-1]).sum(0) / (x * x).sum(0)


# ---------------------------------------------------------------------------------------------- parameters

def test_code_defaults_equal_params_yaml():
    assert synthetic.load_params(REPO / "params.yaml") == SyntheticParams()


def test_person_scale_is_the_longer_box_side_over_the_reference():
    frames = np.zeros((3, 17, 2))
    frames[0, 1] = [200, 400]  # box 200 x 400 -> 400 / 400
    frames[1, 1] = [100, 50]  # box 100 x 50 -> 100 / 400
    frames[2] = np.nan  # nothing known -> median of the others
    np.testing.assert_allclose(person_scale(frames, 400.0), [1.0, 0.25, 0.625])


# ------------------------------------------------------------------------------------ error statistics

def test_noise_std_per_joint_matches_sigma(long_view):
    params = replace(SyntheticParams(), p_outlier=0.0, p_swap=0.0, jitter_px=0.0, rho=0.8)
    err, _ = normalised_error(long_view, params)
    std = np.sqrt((err ** 2).mean(axis=(0, 2)))  # per joint, over frames and both axes
    np.testing.assert_allclose(std, params.sigma, rtol=0.04)
    assert np.abs(err.mean(axis=(0, 2))).max() < 0.2 * params.sigma.min()


def test_noise_lag1_autocorrelation_matches_rho(long_view):
    for rho in (0.5, 0.9):
        params = replace(SyntheticParams(), p_outlier=0.0, p_swap=0.0, jitter_px=0.0, rho=rho)
        err, _ = normalised_error(long_view, params, seed=2)
        np.testing.assert_allclose(lag1(err), rho, atol=0.03 if rho == 0.9 else 0.02)


def test_white_jitter_adds_variance_and_lowers_autocorrelation_as_documented(long_view):
    params = replace(SyntheticParams(), p_outlier=0.0, p_swap=0.0, jitter_px=4.0, rho=0.8)
    err, _ = normalised_error(long_view, params, seed=3)
    total = params.sigma ** 2 + params.jitter_px ** 2
    np.testing.assert_allclose(np.sqrt((err ** 2).mean(axis=(0, 2))), np.sqrt(total), rtol=0.04)
    np.testing.assert_allclose(lag1(err).mean(-1), params.rho * params.sigma ** 2 / total, atol=0.025)


def test_outlier_frequency_length_and_direction(long_view):
    p = 0.02
    params = zero_sigma(p_outlier=p, outlier_px=60.0, outlier_spread_px=10.0)
    err, _ = normalised_error(long_view, params, seed=4)
    length = np.linalg.norm(err, axis=-1)
    hit = length > 1e-3
    n = hit.size
    assert abs(hit.sum() - n * p) < 4 * np.sqrt(n * p * (1 - p))  # binomial tolerance
    assert abs(length[hit].mean() - 60.0) < 0.6  # ~5 standard errors (10 / sqrt(6800))
    unit = err[hit] / length[hit][:, None]
    assert np.abs(unit.mean(0)).max() < 0.05  # uniform direction


@pytest.mark.parametrize("limb", list(SWAP_PAIRS))
def test_swap_start_rate_and_length(long_view, limb):
    p, mean_len = 0.01, 5.0
    params = zero_sigma(p_swap=p, swap_frames=mean_len)
    kp, _ = simulate(long_view, params, np.random.default_rng(5))
    left, right = map(list, SWAP_PAIRS[limb])
    same = np.isclose(kp[:, left], long_view[:, left], atol=1e-3).all(axis=(1, 2))
    swapped = (np.isclose(kp[:, left], long_view[:, right], atol=1e-3).all(axis=(1, 2))
               & np.isclose(kp[:, right], long_view[:, left], atol=1e-3).all(axis=(1, 2)))
    assert (same ^ swapped).all()  # every frame: the whole limb pair is either in place or swapped
    others = [j for j in range(17) if not any(j in l + r for l, r in SWAP_PAIRS.values())]  # torso, head
    np.testing.assert_allclose(kp[:, others], long_view[:, others], atol=1e-3)

    off, nxt = ~swapped[:-1], swapped[1:]
    starts, chances = int((off & nxt).sum()), int(off.sum())
    assert abs(starts - chances * p) < 4 * np.sqrt(chances * p * (1 - p))
    q = 1 / mean_len
    ends, on = int((swapped[:-1] & ~nxt).sum()), int(swapped[:-1].sum())
    assert abs(ends - on * q) < 4 * np.sqrt(on * q * (1 - q))


def test_score_is_the_documented_function_of_the_error(long_view):
    params = replace(SyntheticParams(), score_noise=0.0)
    err, scores = normalised_error(long_view[:2000], params, seed=6)
    e = np.linalg.norm(err, axis=-1)
    np.testing.assert_allclose(scores, np.exp(-(e / params.score_tau_px) ** 2), rtol=1e-4, atol=1e-6)


def test_score_falls_as_error_grows(long_view):
    params = replace(SyntheticParams(), p_outlier=0.02, p_swap=0.01)
    err, scores = normalised_error(long_view[:5000], params, seed=7)
    e = np.linalg.norm(err, axis=-1).ravel()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert spearmanr(e, scores.ravel()).statistic < -0.7
    bins = np.digitize(e, [5, 10, 20, 40])
    means = [scores.ravel()[bins == b].mean() for b in range(5)]
    assert all(a > b for a, b in zip(means, means[1:])), means


# ---------------------------------------------------------------------------------------------------- CLI

@pytest.fixture
def prepared(tmp_path) -> Path:
    seqs = [make_sequence(k, 300, seed=i) for i, k in enumerate(["S1/Walk", "S1/Sit", "S5/Eat"])]
    return write_dataset(tmp_path / "prepared.h5", seqs)


def test_gt_detector_returns_positions_2d_exactly(run_cli, prepared, tmp_path):
    code, out, err = run_cli("detect", "--prepared", prepared, "--detector", "gt", "--out", tmp_path / "d.h5")
    assert code == 0, err
    det = load_detections(tmp_path / "d.h5")
    from poselift.data.prepared import load_prepared
    data = load_prepared(prepared)
    assert det.detector == "gt" and det.prepared == content_hash(prepared)
    for seq in data.sequences:
        np.testing.assert_array_equal(det.keypoints[seq.key], seq.positions_2d)
        assert (det.scores[seq.key] == 1).all()
        assert det.cameras[seq.key] == seq.cameras


def test_synthetic_cli_writes_the_detections_layout(run_cli, prepared, tmp_path):
    out = tmp_path / "d.h5"
    code, stdout, err = run_cli("detect", "--prepared", prepared, "--detector", "synthetic", "--out", out,
                                "--params", REPO / "params.yaml", "--seed", 3)
    assert code == 0, err
    det = load_detections(out)
    assert (det.detector, det.dataset, det.prepared) == ("synthetic", "toy", content_hash(prepared))
    assert det.params == {**SyntheticParams().to_dict(), "seed": 3}
    assert sorted(det.keypoints) == ["S1/Sit", "S1/Walk", "S5/Eat"]
    seq = make_sequence("S1/Walk", 300, seed=0)
    kp = det.keypoints["S1/Walk"]
    assert kp.shape == (2, 300, 17, 2) and det.cameras["S1/Walk"] == ["cam0", "cam1"]
    error = np.linalg.norm(kp - seq.positions_2d, axis=-1)
    assert 2 < np.median(error) < 15  # CPN-sized errors, neither the ground truth nor garbage


def test_same_seed_same_file_different_seed_different(run_cli, prepared, tmp_path):
    outs = {}
    for name, seed in [("a", 7), ("b", 7), ("c", 8)]:
        outs[name] = tmp_path / f"{name}.h5"
        assert run_cli("detect", "--prepared", prepared, "--detector", "synthetic", "--out", outs[name],
                       "--seed", seed)[0] == 0
    assert content_hash(outs["a"]) == content_hash(outs["b"])
    a, c = load_detections(outs["a"]), load_detections(outs["c"])
    for key in a.keypoints:
        assert not np.allclose(a.keypoints[key], c.keypoints[key])


def test_noise_does_not_depend_on_other_sequences_or_their_order(run_cli, tmp_path):
    walk, eat = make_sequence("S1/Walk", 200, seed=0), make_sequence("S5/Eat", 200, seed=2)
    full = write_dataset(tmp_path / "full.h5", [walk, make_sequence("S1/Sit", 200, seed=1), eat])
    subset = write_dataset(tmp_path / "subset.h5", [eat, walk])
    for src in (full, subset):
        assert run_cli("detect", "--prepared", src, "--detector", "synthetic", "--out",
                       src.with_suffix(".det.h5"), "--seed", 1)[0] == 0
    a, b = load_detections(tmp_path / "full.det.h5"), load_detections(tmp_path / "subset.det.h5")
    assert a.prepared != b.prepared
    for key in ("S1/Walk", "S5/Eat"):
        np.testing.assert_array_equal(a.keypoints[key], b.keypoints[key])
        np.testing.assert_array_equal(a.scores[key], b.scores[key])
    # ... yet every view has its own noise: sequences and cameras do not share it
    noise = {key: a.keypoints[key] - seq.positions_2d for key, seq in (("S1/Walk", walk), ("S5/Eat", eat))}
    corr = lambda x, y: np.corrcoef(x.ravel(), y.ravel())[0, 1]  # noqa: E731
    assert abs(corr(noise["S1/Walk"], noise["S5/Eat"])) < 0.2
    assert abs(corr(noise["S1/Walk"][0], noise["S1/Walk"][1])) < 0.2
    # reversed order, called directly: the same views again
    kp, _ = synthetic.detect_sequence(walk.positions_2d[::-1], walk.key, walk.cameras[::-1],
                                      SyntheticParams(), seed=1)
    np.testing.assert_array_equal(kp[::-1], a.keypoints["S1/Walk"])


def test_missing_ground_truth_becomes_score_zero(run_cli, tmp_path):
    seq = make_sequence("TS1/TS1", 50, seed=0)
    seq.valid = np.ones(50, dtype=bool)
    seq.valid[10:20] = False
    seq.positions_2d[:, 10:20] = np.nan
    src = write_dataset(tmp_path / "p.h5", [seq])
    for detector in ("gt", "synthetic"):
        out = tmp_path / f"{detector}.h5"
        assert run_cli("detect", "--prepared", src, "--detector", detector, "--out", out)[0] == 0
        det = load_detections(out)
        kp, sc = det.keypoints["TS1/TS1"], det.scores["TS1/TS1"]
        assert (kp[:, 10:20] == 0).all() and (sc[:, 10:20] == 0).all()
        assert (sc[:, :10] > 0).mean() > 0.9


def _params_without(tmp_path, drop: str) -> Path:
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    block = doc["detectors"]["synthetic"]
    if drop.startswith("sigma_px."):
        del block["sigma_px"][drop.split(".")[1]]
    else:
        del block[drop]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("case", ["missing prepared", "not hdf5", "unknown detector", "missing key",
                                  "missing joint sigma", "no block", "bad value", "negative seed"])
def test_bad_input_exits_2_with_one_line_and_no_output(run_cli, prepared, tmp_path, case):
    out = tmp_path / "out" / "d.h5"
    args = ["--prepared", prepared, "--detector", "synthetic", "--out", out]
    expect = {"missing prepared": "file not found", "not hdf5": "not a readable HDF5 file",
              "unknown detector": "unknown detector 'openpose'", "missing key": "missing key(s): rho",
              "missing joint sigma": "sigma_px", "no block": "no detectors.synthetic block",
              "bad value": "rho must be in [0, 1)", "negative seed": "--seed"}[case]
    if case == "missing prepared":
        args[1] = tmp_path / "absent.h5"
    elif case == "not hdf5":
        args[1] = tmp_path / "text.h5"
        args[1].write_text("not hdf5")
    elif case == "unknown detector":
        args[3] = "openpose"
    elif case == "missing key":
        args += ["--params", _params_without(tmp_path, "rho")]
    elif case == "missing joint sigma":
        args += ["--params", _params_without(tmp_path, "sigma_px.left_wrist")]
    elif case == "no block":
        (tmp_path / "p.yaml").write_text("training:\n  epochs: 3\n")
        args += ["--params", tmp_path / "p.yaml"]
    elif case == "bad value":
        doc = yaml.safe_load((REPO / "params.yaml").read_text())
        doc["detectors"]["synthetic"]["rho"] = 1.0
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
        args += ["--params", tmp_path / "p.yaml"]
    elif case == "negative seed":
        args += ["--seed", -1]
    code, stdout, err = run_cli("detect", *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("poselift: error: ") and expect in err, err
    assert not out.parent.exists() or not any(out.parent.iterdir())
