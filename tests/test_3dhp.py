"""MPI-INF-3DHP test set: reading TS1..TS6/annot_data.mat (MATLAB v7.3 = HDF5) through `poselift prepare 3dhp`."""

from __future__ import annotations

import json
import pickle
import re

import h5py
import numpy as np
import pytest

from poselift.data.mpi_inf_3dhp import SEQUENCES, published_camera
from poselift.data.prepared import load_prepared
from poselift.skeleton import H36M17

# the 17-joint test-set order, and which 3DHP joint each H36M-17 joint is (written out independently of
# the reader's table so that a wrong permutation there fails here)
JOINTS_3DHP = ("head_top", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
               "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
               "root", "spine", "head")
H36M_FROM_3DHP = {"pelvis": "root", "thorax": "neck", "neck_nose": "head", "head": "head_top"}
PERM = [JOINTS_3DHP.index(H36M_FROM_3DHP.get(name, name)) for name in H36M17.names]

# a standing person in 3DHP order, camera frame (x right, y down, z forward), mm, relative to the root
TEMPLATE = np.array([
    [0, -850, 10], [0, -550, 0], [-180, -530, 20], [-200, -280, 60], [-210, -40, 90], [180, -530, -20],
    [200, -280, -50], [210, -40, -80], [-100, 0, 10], [-110, 420, 40], [-115, 830, 0], [100, 0, -10],
    [110, 420, -40], [115, 830, 0], [0, 0, 0], [0, -250, 5], [0, -700, 30]], dtype=np.float64)

STUDIO_TRUE = dict(f=np.array([1500.1, 1500.6]), c=np.array([1017.4, 1043.1]))
OUTDOOR_TRUE = dict(f=np.array([1683.5, 1672.0]), c=np.array([939.9, 560.2]))  # fy below fx, as in the data


def make_sequence(ts: str, frames: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    """A moving person: annot3 (F, 17, 3) mm, univ_annot3 (rescaled about the root), annot2 = projection of
    annot3, valid (F,) bool with a few invalid frames."""
    rng = np.random.default_rng([seed, SEQUENCES.index(ts)])
    t = np.arange(frames)
    angle = 0.08 * t
    rot = np.zeros((frames, 3, 3))
    rot[:, 0, 0] = rot[:, 2, 2] = np.cos(angle)
    rot[:, 0, 2], rot[:, 2, 0] = np.sin(angle), -np.sin(angle)
    rot[:, 1, 1] = 1
    root = np.stack([40.0 * np.sin(0.2 * t) - 30, 150 + 5 * t, 3600 + 20 * t], axis=-1)
    annot3 = np.einsum("fij,kj->fki", rot, TEMPLATE) + root[:, None] + rng.normal(0, 5, (frames, 17, 3))
    univ3 = root[:, None] + 0.9 * (annot3 - root[:, None])
    cam = STUDIO_TRUE if ts in ("TS1", "TS2", "TS3", "TS4") else OUTDOOR_TRUE
    annot2 = annot3[..., :2] / annot3[..., 2:] * cam["f"] + cam["c"]
    valid = np.ones(frames, bool)
    valid[[0, 5, 6, frames - 1]] = False
    return dict(annot2=annot2, annot3=annot3, univ_annot3=univ3, valid=valid)


def write_mat73(path, annot2, annot3, univ_annot3, valid, extra=None) -> None:
    """Write arrays the way MATLAB v7.3 does: HDF5 behind a 512-byte MATLAB header, every MATLAB D x 17 x 1 x F
    array seen by HDF5 (and h5py) with reversed axes, i.e. (F, 1, 17, D); valid_frame 1 x F -> (F, 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"annot2": annot2[:, None], "annot3": annot3[:, None], "univ_annot3": univ_annot3[:, None],
              "valid_frame": valid.astype(np.float64)[:, None],
              "activity_annotation": np.ones((len(valid), 1))}
    arrays.update(extra or {})
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, value in arrays.items():
            if value is None:
                continue
            ds = f.create_dataset(key, data=np.asarray(value, dtype=np.float64))
            ds.attrs["MATLAB_class"] = np.bytes_("double")
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Tue Jan  1 00:00:00 2019 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(text.ljust(116) + bytes(8) + b"\x00\x02" + b"IM")


def write_test_set(root, frames=24, **overrides) -> dict[str, dict]:
    data = {}
    for ts in SEQUENCES:
        seq = make_sequence(ts, frames)
        seq.update(overrides.get(ts, {}))
        data[ts] = seq
        write_mat73(root / ts / "annot_data.mat", **seq)
    return data


@pytest.fixture
def test_set(tmp_path):
    data = write_test_set(tmp_path / "mpi_inf_3dhp_test_set")
    return tmp_path / "mpi_inf_3dhp_test_set", data


def test_prepare_maps_joints_scenes_splits_and_keeps_units(test_set, tmp_path, run_cli):
    source, data = test_set
    out = tmp_path / "3dhp.h5"
    code, stdout, err = run_cli("prepare", "3dhp", "--source", source, "--out", out)
    assert code == 0, err
    assert "6 sequences" in stdout
    prepared = load_prepared(out)
    assert prepared.dataset == "mpi_inf_3dhp" and prepared.fps == 50.0
    scenes = {}
    for seq in prepared.sequences:
        ref = data[seq.subject]
        scenes[seq.subject] = seq.action
        assert (seq.split, seq.rig, seq.cameras, seq.name) == ("test", seq.subject, ["camera"], "imageSequence")
        # a pure permutation, no unit change: univ_annot3 -> positions_3d, annot3 -> metric, annot2 -> 2D
        np.testing.assert_allclose(seq.positions_3d, ref["univ_annot3"][:, PERM], rtol=1e-6)
        np.testing.assert_allclose(seq.positions_3d_metric, ref["annot3"][:, PERM], rtol=1e-6)
        np.testing.assert_allclose(seq.positions_2d[0], ref["annot2"][:, PERM], rtol=1e-6)
        np.testing.assert_array_equal(seq.valid, ref["valid"])
    assert scenes == {"TS1": "GS", "TS2": "GS", "TS3": "noGS", "TS4": "noGS", "TS5": "Outdoor", "TS6": "Outdoor"}
    # the pelvis is 3DHP's root: root-relative univ poses are 0.9 x the metric ones about it
    seq = prepared.sequences[0]
    univ, metric = seq.positions_3d, seq.positions_3d_metric
    np.testing.assert_allclose(univ - univ[:, :1], 0.9 * (metric - metric[:, :1]), atol=1e-2)

    code, stdout, _ = run_cli("info", out, "--json")
    info = json.loads(stdout)
    assert info["subjects"] == list(SEQUENCES) and info["actions"] == ["GS", "Outdoor", "noGS"]
    assert list(info["splits"]) == ["test"] and info["frames"] == 6 * 24 and info["views"] == 6 * 24


def test_fitted_cameras_reproduce_the_2d_and_sit_near_the_published_calibration(test_set, tmp_path, run_cli):
    source, _ = test_set
    out = tmp_path / "3dhp.h5"
    assert run_cli("prepare", "3dhp", "--source", source, "--out", out)[0] == 0
    prepared = load_prepared(out)
    for seq in prepared.sequences:
        cam = prepared.camera(seq, 0)
        true = STUDIO_TRUE if seq.subject in ("TS1", "TS2", "TS3", "TS4") else OUTDOOR_TRUE
        np.testing.assert_allclose(cam.f, true["f"], rtol=1e-5)
        np.testing.assert_allclose(cam.c, true["c"], atol=0.05)
        np.testing.assert_array_equal(cam.R, np.eye(3))
        np.testing.assert_array_equal(cam.T, np.zeros(3))
        assert (cam.width, cam.height) == ((2048, 2048) if true is STUDIO_TRUE else (1920, 1080))
        uv = cam.project(seq.positions_3d_metric.astype(np.float64))
        assert np.abs(uv - seq.positions_2d[0]).max() < 0.01
        # univ_annot3 is a rescaled skeleton: it does not project onto the 2D
        assert np.abs(cam.project(seq.positions_3d.astype(np.float64)) - seq.positions_2d[0]).max() > 5


def test_published_calibration_matches_mmposes_cameras(mmpose_fixtures):
    """MMPose fits the test cameras to annot3/annot2 by least squares; the published values agree with it."""
    with open(mmpose_fixtures / "mpi_inf_3dhp" / "cameras_test.pkl", "rb") as f:
        mmpose = pickle.load(f)
    for ts in SEQUENCES:
        cam, ref = published_camera(ts), mmpose[ts]
        assert (cam.width, cam.height) == (ref["w"], ref["h"])
        np.testing.assert_allclose(cam.c, ref["c"].ravel(), atol=5.0, err_msg=ts)
        np.testing.assert_allclose(cam.f[0], ref["f"][0, 0], rtol=3e-3, err_msg=ts)
        # the outdoor camera's fitted vertical focal length is ~0.7 % below the square-pixel value
        np.testing.assert_allclose(cam.f[1], ref["f"][1, 0], rtol=3e-3 if ts < "TS5" else 1e-2, err_msg=ts)


def test_real_fixture_frames_keep_their_joint_order_and_project_with_the_fitted_camera(mmpose_fixtures, tmp_path,
                                                                                        run_cli):
    """MMPose's two 3DHP test frames (TS1, TS2; 3D in metres, 17-joint test order) read back in H36M order."""
    fixture = np.load(mmpose_fixtures / "mpi_inf_3dhp" / "test_3dhp_test.npz")
    assert [str(n)[:3] for n in fixture["imgname"]] == ["TS1", "TS2"]
    overrides = {}
    for i, ts in enumerate(("TS1", "TS2")):
        annot3 = fixture["S"][i:i + 1, :, :3] * 1000.0
        overrides[ts] = dict(annot2=fixture["part"][i:i + 1, :, :2], annot3=annot3, univ_annot3=annot3,
                             valid=np.ones(1, bool))
    source = tmp_path / "ts"
    write_test_set(source, **overrides)
    out = tmp_path / "3dhp.h5"
    code, _, err = run_cli("prepare", "3dhp", "--source", source, "--out", out)
    assert code == 0, err
    prepared = load_prepared(out)
    with open(mmpose_fixtures / "mpi_inf_3dhp" / "cameras_test.pkl", "rb") as f:
        mmpose = pickle.load(f)
    for seq in prepared.sequences[:2]:
        i = ("TS1", "TS2").index(seq.subject)
        S = fixture["S"][i, :, :3] * 1000.0
        pose = seq.positions_3d[0]
        np.testing.assert_allclose(pose[H36M17.index("pelvis")], S[14], atol=1e-3)
        np.testing.assert_allclose(pose[H36M17.index("head")], S[0], atol=1e-3)
        np.testing.assert_allclose(pose[H36M17.index("right_wrist")], S[4], atol=1e-3)
        np.testing.assert_allclose(pose[H36M17.index("left_ankle")], S[13], atol=1e-3)
        # anatomy: the head is above the pelvis in image terms (y down) and the right wrist is the subject's right
        assert pose[H36M17.index("head"), 1] < pose[H36M17.index("pelvis"), 1] - 500
        cam = prepared.camera(seq, 0)
        np.testing.assert_allclose(cam.f, mmpose[seq.subject]["f"].ravel(), rtol=0.01)
        np.testing.assert_allclose(cam.c, mmpose[seq.subject]["c"].ravel(), atol=15)
        assert np.abs(cam.project(pose.astype(np.float64)) - seq.positions_2d[0, 0]).max() < 2.0


def test_invalid_frames_are_kept_flagged_and_nan_free(tmp_path, run_cli):
    seq = make_sequence("TS2")
    seq["univ_annot3"][5, 3] = np.nan  # frames 5, 6 are invalid; 4 and 7 valid
    seq["annot2"][6] = np.nan
    seq["annot3"][0, :, 2] = np.inf  # frame 0 invalid; its nearest valid frame is 1
    source = tmp_path / "ts"
    write_test_set(source, TS2=seq)
    out = tmp_path / "3dhp.h5"
    code, _, err = run_cli("prepare", "3dhp", "--source", source, "--out", out)
    assert code == 0, err
    back = next(s for s in load_prepared(out).sequences if s.subject == "TS2")
    assert back.num_frames == 24 and back.valid.sum() == 20
    for array in (back.positions_3d, back.positions_2d, back.positions_3d_metric):
        assert np.isfinite(array).all()
    np.testing.assert_allclose(back.positions_3d[5], seq["univ_annot3"][4][PERM], rtol=1e-6)
    np.testing.assert_allclose(back.positions_2d[0, 6], seq["annot2"][7][PERM], rtol=1e-6)
    np.testing.assert_allclose(back.positions_3d_metric[0], seq["annot3"][1][PERM], rtol=1e-6)
    # an invalid frame with finite values keeps them
    np.testing.assert_allclose(back.positions_3d[23], seq["univ_annot3"][23][PERM], rtol=1e-6)


def _swap_left_right(points):
    out = points.copy()
    for a, b in ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13)):
        out[:, [a, b]] = out[:, [b, a]]
    return out


def _write_matlab_v5(path):
    from scipy.io import savemat

    seq = make_sequence("TS4")
    savemat(path, {"annot2": seq["annot2"], "annot3": seq["annot3"], "valid_frame": seq["valid"][None]})


def _damage(root, ts, kind):
    """Rewrite one sequence's file with one defect; returns the path the error must name."""
    path = root / ts / "annot_data.mat"
    seq = make_sequence(ts)
    if kind == "missing file":
        path.unlink()
    elif kind == "missing folder":
        for child in path.parent.iterdir():
            child.unlink()
        path.parent.rmdir()
        return root
    elif kind == "matlab v5":
        _write_matlab_v5(path)
    elif kind == "not hdf5":
        path.write_bytes(b"\x89HDF\r\n" + bytes(100))
    elif kind == "16 joints":
        seq["annot3"] = seq["annot3"][:, :16]
        write_mat73(path, **seq)
    elif kind == "no univ_annot3":
        write_mat73(path, **seq, extra={"univ_annot3": None})
    elif kind == "nan in a valid frame":
        seq["univ_annot3"][3, 7, 1] = np.nan
        write_mat73(path, **seq)
    elif kind == "frame counts differ":
        seq["annot2"] = seq["annot2"][:-1]
        write_mat73(path, **seq)
    elif kind == "2d joints swapped":
        seq["annot2"] = _swap_left_right(seq["annot2"])
        write_mat73(path, **seq)
    elif kind == "2d off by 10 px":
        seq["annot2"] += np.random.default_rng(0).normal(0, 10, seq["annot2"].shape)
        write_mat73(path, **seq)
    elif kind == "metres":
        seq["annot3"] /= 1000.0
        write_mat73(path, **seq)
    elif kind == "no valid frame":
        seq["valid"][:] = False
        write_mat73(path, **seq)
    return path


@pytest.mark.parametrize("kind, ts, message", [
    ("missing file", "TS3", "file not found"),
    ("missing folder", "TS6", "missing test sequence folder.*TS6"),
    ("matlab v5", "TS4", "MATLAB v5 MAT-file.*v7.3"),
    ("not hdf5", "TS1", "not a readable HDF5 file"),
    ("16 joints", "TS2", r"'annot3' has shape \(24, 1, 16, 3\), expected \(F, 1, 17, 3\)"),
    ("no univ_annot3", "TS5", "missing dataset 'univ_annot3'"),
    ("nan in a valid frame", "TS5", r"univ_annot3 \(valid frames\) has 1 non-finite"),
    ("frame counts differ", "TS1", "frame counts differ: annot2 23, annot3 24"),
    ("2d joints swapped", "TS2", "annot2 does not match annot3 through the published TS2 camera"),
    ("2d off by 10 px", "TS5", r"annot2 does not match annot3: 1\d.\d px RMS residual"),
    ("metres", "TS6", "'annot3' does not look like millimetres"),
    ("no valid frame", "TS3", "no frame as valid"),
])
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, run_cli, kind, ts, message):
    root = tmp_path / "ts"
    write_test_set(root)
    named = _damage(root, ts, kind)
    out = tmp_path / "out" / "3dhp.h5"
    code, stdout, err = run_cli("prepare", "3dhp", "--source", root, "--out", out)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"poselift: error: {named}:"), err
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_prepared_layout_checks_the_metric_3d(test_set, tmp_path, run_cli):
    """positions_3d_metric (the optional prepared dataset 3DHP adds) is validated like positions_3d."""
    from poselift.data.prepared import write_prepared
    from poselift.errors import InputError

    source, _ = test_set
    assert run_cli("prepare", "3dhp", "--source", source, "--out", tmp_path / "a.h5")[0] == 0
    data = load_prepared(tmp_path / "a.h5")
    seq = data.sequences[2]
    seq.positions_3d_metric[~seq.valid] = np.nan  # NaN only in invalid frames: accepted
    write_prepared(tmp_path / "b.h5", data)
    assert np.isnan(load_prepared(tmp_path / "b.h5").sequences[2].positions_3d_metric[0]).all()
    seq.positions_3d_metric[3, 0, 0] = np.nan  # frame 3 is valid
    with pytest.raises(InputError, match="TS3/imageSequence positions_3d_metric has 1 non-finite"):
        write_prepared(tmp_path / "c.h5", data)
    seq.positions_3d_metric = seq.positions_3d_metric[:-1]
    with pytest.raises(InputError, match=r"positions_3d_metric has shape \(23, 17, 3\), expected \(24, 17, 3\)"):
        write_prepared(tmp_path / "c.h5", data)
    assert not (tmp_path / "c.h5").exists()
