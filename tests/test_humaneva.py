"""HumanEva-I in VideoPose3D's humaneva15 npz form through `poselift prepare humaneva`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from poselift.camera import quaternion_to_matrix
from poselift.data.humaneva import MEASURED_JOINTS, extrinsics
from poselift.data.prepared import load_prepared
from poselift.skeleton import H36M17

# VideoPose3D's HumanEva-15 order, spelled as in H36M17 where the joint is the same
JOINTS_HE = ("pelvis", "thorax", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow",
             "right_wrist", "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee", "right_ankle", "head")

# a standing person, world frame (z up), metres, relative to the pelvis; +y is the person's left
TEMPLATE = np.array([
    [0, 0, 0], [0.02, 0, 0.50], [0, 0.19, 0.47], [0.03, 0.22, 0.20], [0.08, 0.23, -0.05], [0, -0.19, 0.47],
    [-0.03, -0.22, 0.20], [-0.06, -0.23, -0.05], [0, 0.10, -0.05], [0.05, 0.11, -0.47], [0, 0.11, -0.88],
    [0, -0.10, -0.05], [-0.04, -0.11, -0.47], [0, -0.11, -0.88], [0.02, 0, 0.75]])

INTRINSICS = {"C1": ([770.0, 772.0], [318.0, 243.0]), "C2": ([765.0, 768.0], [322.0, 238.0]),
              "C3": ([780.0, 781.0], [325.0, 246.0])}

SEQUENCES = {  # VideoPose3D subject -> sequences; Box and Gestures are not in the Walk/Jog protocol
    "Train/S1": ("Walking 1 chunk0", "Jog 1 chunk0", "Box 1 chunk0"),
    "Train/S2": ("Walking 1 chunk0", "Gestures 1 chunk0"),
    "Validate/S1": ("Walking 1 chunk0", "Jog 1 chunk0", "Jog 1 chunk1"),
    "Validate/S3": ("Walking 1 chunk0",),
}


def walk(frames: int, seed: int) -> np.ndarray:
    """(F, 15, 3) metres: the template walking along x through the capture volume, turning slowly."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)
    heading = 0.3 * np.sin(0.05 * t)
    rot = np.zeros((frames, 3, 3))
    rot[:, 0, 0] = rot[:, 1, 1] = np.cos(heading)
    rot[:, 0, 1], rot[:, 1, 0] = -np.sin(heading), np.sin(heading)
    rot[:, 2, 2] = 1
    pelvis = np.stack([-1.0 + 0.03 * t, 0.4 * np.sin(0.04 * t), 0.95 + 0.02 * np.sin(0.5 * t)], axis=-1)
    return np.einsum("fij,kj->fki", rot, TEMPLATE) + pelvis[:, None] + rng.normal(0, 0.005, (frames, 15, 3))


def project(subject: str, world_m: np.ndarray) -> list[np.ndarray]:
    """The dataset's 2D: each camera's pinhole view of the world joints (metres)."""
    views = []
    for cam, (f, c) in INTRINSICS.items():
        R, T = extrinsics(subject, cam)
        X = (world_m * 1000.0 - T) @ R.T
        views.append((X[..., :2] / X[..., 2:] * f + c).astype(np.float32))
    return views


def make_files(folder, frames=30, edit=None):
    """Write data_3d_humaneva15.npz and data_2d_humaneva15_gt.npz as VideoPose3D's prepare_data_humaneva.py does."""
    folder.mkdir(parents=True, exist_ok=True)
    poses_3d, poses_2d, seed = {}, {}, 0
    for subject, names in SEQUENCES.items():
        poses_3d[subject], poses_2d[subject] = {}, {}
        for name in names:
            seed += 1
            p3 = walk(frames + seed, seed).astype(np.float32)
            poses_3d[subject][name] = p3
            poses_2d[subject][name] = project(subject.split("/")[1], p3.astype(np.float64))
    if edit:
        edit(poses_3d, poses_2d)
    metadata = {"layout_name": "humaneva15", "num_joints": 15,
                "keypoints_symmetry": [[2, 3, 4, 8, 9, 10], [5, 6, 7, 11, 12, 13]]}
    np.savez_compressed(folder / "data_3d_humaneva15.npz", positions_3d=poses_3d)
    np.savez_compressed(folder / "data_2d_humaneva15_gt.npz", positions_2d=poses_2d, metadata=metadata)
    return poses_3d, poses_2d


def by_name(points: np.ndarray) -> dict[str, np.ndarray]:
    return {name: points[..., i, :] for i, name in enumerate(JOINTS_HE)}


def test_prepare_splits_subjects_actions_units_and_joints(tmp_path, run_cli):
    poses_3d, poses_2d = make_files(tmp_path / "he")
    out = tmp_path / "he.h5"
    code, stdout, err = run_cli("prepare", "humaneva", "--source", tmp_path / "he", "--out", out)
    assert code == 0, err
    data = load_prepared(out)
    assert data.dataset == "humaneva" and data.fps == 60.0
    keys = sorted((s.subject, s.name, s.split, s.action) for s in data.sequences)
    assert keys == [
        ("S1", "Train Jog 1 chunk0", "train", "Jog"), ("S1", "Train Walking 1 chunk0", "train", "Walk"),
        ("S1", "Validate Jog 1 chunk0", "test", "Jog"), ("S1", "Validate Jog 1 chunk1", "test", "Jog"),
        ("S1", "Validate Walking 1 chunk0", "test", "Walk"), ("S2", "Train Walking 1 chunk0", "train", "Walk"),
        ("S3", "Validate Walking 1 chunk0", "test", "Walk")]
    for seq in data.sequences:
        part = seq.name.split(" ", 1)
        src3 = by_name(poses_3d[f"{part[0]}/{seq.subject}"][part[1]].astype(np.float64) * 1000.0)  # m -> mm
        src2 = by_name(np.stack(poses_2d[f"{part[0]}/{seq.subject}"][part[1]]).astype(np.float64))
        assert seq.rig == seq.subject and seq.cameras == ["C1", "C2", "C3"] and seq.valid is None
        for j, name in enumerate(H36M17.names):
            if name == "spine":
                want3, want2 = (src3["pelvis"] + src3["thorax"]) / 2, (src2["pelvis"] + src2["thorax"]) / 2
            elif name == "neck_nose":
                want3, want2 = (src3["thorax"] + src3["head"]) / 2, (src2["thorax"] + src2["head"]) / 2
            else:
                want3, want2 = src3[name], src2[name]
            np.testing.assert_allclose(seq.positions_3d[:, j], want3, atol=1e-3, err_msg=name)
            np.testing.assert_allclose(seq.positions_2d[:, :, j], want2, atol=1e-3, err_msg=name)

    code, stdout, _ = run_cli("info", out, "--json")
    info = json.loads(stdout)
    assert info["subjects"] == ["S1", "S2", "S3"] and info["actions"] == ["Jog", "Walk"]
    assert info["splits"]["train"]["subjects"] == ["S1", "S2"] and info["splits"]["test"]["subjects"] == ["S1", "S3"]
    assert info["cameras"] == {"S1": ["C1", "C2", "C3"], "S2": ["C1", "C2", "C3"], "S3": ["C1", "C2", "C3"]}


def test_cameras_recover_the_intrinsics_and_reproduce_the_2d(tmp_path, run_cli):
    make_files(tmp_path / "he")
    out = tmp_path / "he.h5"
    assert run_cli("prepare", "humaneva", "--source", tmp_path / "he" / "data_3d_humaneva15.npz", "--out", out)[0] == 0
    data = load_prepared(out)
    for seq in data.sequences:
        for i, name in enumerate(seq.cameras):
            cam = data.camera(seq, i)
            R, T = extrinsics(seq.subject, name)
            np.testing.assert_allclose(cam.R, R, atol=1e-12)
            np.testing.assert_allclose(cam.T, T, atol=1e-9)
            np.testing.assert_allclose(cam.f, INTRINSICS[name][0], rtol=1e-4)
            np.testing.assert_allclose(cam.c, INTRINSICS[name][1], atol=0.05)
            assert (cam.width, cam.height) == (640, 480)
            uv = cam.world_to_pixels(seq.positions_3d.astype(np.float64))
            # measured joints project exactly; the two midpoints (mean of pixels) to under a pixel
            assert np.abs(uv[:, MEASURED_JOINTS] - seq.positions_2d[i][:, MEASURED_JOINTS]).max() < 0.01
            assert np.abs(uv - seq.positions_2d[i]).max() < 1.0


def test_extrinsics_look_at_the_capture_volume_with_world_up_as_image_up():
    """Every camera has the capture-volume centre ~4 m in front of it near its optical axis, and a point
    above it higher in the image (smaller v): R must be the transpose of VideoPose3D's quaternion."""
    centre, above = np.array([0.0, 0.0, 1000.0]), np.array([0.0, 0.0, 1800.0])
    for subject in ("S1", "S2", "S3"):
        for cam in ("C1", "C2", "C3"):
            R, T = extrinsics(subject, cam)
            np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
            assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-6)
            c, a = (centre - T) @ R.T, (above - T) @ R.T
            assert 3500 < c[2] < 4500, (subject, cam, c)
            assert np.hypot(c[0], c[1]) < 0.1 * c[2]
            assert a[1] / a[2] < c[1] / c[2] - 0.1


def test_quaternion_to_matrix_known_rotation():
    half = np.pi / 4  # 90 degrees about z: x -> y
    np.testing.assert_allclose(quaternion_to_matrix([np.cos(half), 0, 0, np.sin(half)]),
                               [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)


def test_measured_joints_leave_out_the_two_interpolated_ones():
    assert [H36M17.names[j] for j in range(17) if j not in MEASURED_JOINTS] == ["spine", "neck_nose"]


class _Exploit:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def _swap_c2_c3(poses_3d, poses_2d):
    views = poses_2d["Train/S2"]["Walking 1 chunk0"]
    views[1], views[2] = views[2], views[1]


def _set(poses, key, name, value):
    poses[key][name] = value


@pytest.mark.parametrize("edit, file, message", [
    (lambda p3, p2: _set(p3, "Train/S1", "Jog 1 chunk0", p3["Train/S1"]["Jog 1 chunk0"][:, :14]), "3d",
     r"Train/S1/Jog 1 chunk0 has shape \(32, 14, 3\), expected \(F, 15, 3\)"),
    (lambda p3, p2: p3["Validate/S1"]["Jog 1 chunk1"].__setitem__((3, 2, 0), np.nan), "3d",
     "Validate/S1/Jog 1 chunk1 has 1 non-finite"),
    (lambda p3, p2: p3.__setitem__("Train/S4", {"Walking 1 chunk0": p3["Train/S2"]["Walking 1 chunk0"]}), "3d",
     "unknown subject 'Train/S4'"),
    (lambda p3, p2: _set(p3, "Train/S2", "Walking 1 chunk0", p3["Train/S2"]["Walking 1 chunk0"] * 1000), "3d",
     "does not look like metres"),
    (lambda p3, p2: _set(p3, "Train/S2", "Walk 1", p3["Train/S2"]["Walking 1 chunk0"]), "3d",
     "unknown sequence 'Train/S2/Walk 1'"),
    (lambda p3, p2: p2["Validate/S3"]["Walking 1 chunk0"].pop(), "2d", "has 2D for 2 views, expected 3"),
    (lambda p3, p2: p2["Train/S1"].pop("Jog 1 chunk0"), "2d", "no 2D ground truth for Train/S1/Jog 1 chunk0"),
    (_swap_c2_c3, "2d", "S2 camera C2: the 2D ground truth is not the 3D seen from VideoPose3D's extrinsics"),
    (lambda p3, p2: _set(p3, "Train/S1", "Walking 1 chunk0", np.array(_Exploit(), dtype=object)), "3d",
     "refusing to load builtins"),
])
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, run_cli, edit, file, message):
    make_files(tmp_path / "he", edit=edit)
    named = tmp_path / "he" / ("data_3d_humaneva15.npz" if file == "3d" else "data_2d_humaneva15_gt.npz")
    out = tmp_path / "out" / "he.h5"
    code, stdout, err = run_cli("prepare", "humaneva", "--source", tmp_path / "he", "--out", out)
    assert code == 2 and "pickle code ran" not in stdout
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"poselift: error: {named}:"), err
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_missing_or_foreign_files_are_refused(tmp_path, run_cli):
    make_files(tmp_path / "he")
    (tmp_path / "he" / "data_2d_humaneva15_gt.npz").unlink()
    code, _, err = run_cli("prepare", "humaneva", "--source", tmp_path / "he", "--out", tmp_path / "o.h5")
    assert code == 2 and "data_2d_humaneva15_gt.npz: file not found" in err
    (tmp_path / "he" / "data_2d_humaneva15_gt.npz").write_bytes(b"PK\x03\x04 truncated")
    code, _, err = run_cli("prepare", "humaneva", "--source", tmp_path / "he", "--out", tmp_path / "o.h5")
    assert code == 2 and "not a readable .npz archive" in err
    np.savez(tmp_path / "he" / "data_2d_humaneva15_gt.npz", positions_2d=np.zeros((3, 15, 2)))
    code, _, err = run_cli("prepare", "humaneva", "--source", tmp_path / "he", "--out", tmp_path / "o.h5")
    assert code == 2 and "expected a pickled dict" in err
    assert not (tmp_path / "o.h5").exists()
