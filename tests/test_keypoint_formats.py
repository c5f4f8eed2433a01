"""Keypoint layouts -> H36M-17: weight matrices, exact copies, hand-computed interpolations, scores,
flip consistency, and real COCO / MPI-INF-3DHP keypoints from MMPose's test fixtures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from poselift.keypoint_formats import FORMATS, get_format, scores_to_h36m17, to_h36m17
from poselift.skeleton import H36M17, flip_poses

H = H36M17.index
# joints a layout has under another name (layout name -> H36M name)
RENAMED = {
    "coco": {"nose": "neck_nose"},
    "mpii": {"upper_neck": "neck_nose", "head_top": "head"},
    "mpi_inf_3dhp": {"root": "pelvis", "neck": "thorax", "head": "neck_nose", "head_top": "head"},
    "blazepose": {"nose": "neck_nose"},
}


@pytest.mark.parametrize("name", FORMATS)
def test_rows_are_convex_weights(name):
    w = FORMATS[name].weights
    assert w.shape == (17, FORMATS[name].num_joints)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    assert (w >= 0).all()


@pytest.mark.parametrize("name", FORMATS)
def test_joints_the_layout_has_are_copied_exactly(name):
    fmt = FORMATS[name]
    pose = np.random.default_rng(0).normal(size=(3, fmt.num_joints, 3))
    mapped = to_h36m17(pose, name)
    shared = {n: n for n in fmt.joints if n in H36M17.names} | RENAMED[name]
    for src, dst in shared.items():
        np.testing.assert_array_equal(mapped[:, H(dst)], pose[:, fmt.joints.index(src)])
    # the limbs exist in every layout
    assert {"left_wrist", "right_ankle", "left_hip", "right_shoulder"} <= set(shared.values())


def test_layout_sizes():
    assert {n: f.num_joints for n, f in FORMATS.items()} == {"coco": 17, "mpii": 16, "mpi_inf_3dhp": 17,
                                                            "blazepose": 33}
    assert FORMATS["mpi_inf_3dhp"].joints[:3] == ("head_top", "neck", "right_shoulder")
    assert FORMATS["blazepose"].joints[23:25] == ("left_hip", "right_hip")


@pytest.mark.parametrize("name", ["coco", "blazepose"])  # BlazePose follows COCO's rules
def test_coco_interpolated_joints_by_hand(name):
    coco = FORMATS[name]
    pose = np.zeros((coco.num_joints, 2))
    pose[coco.joints.index("left_hip")] = [2.0, 10.0]
    pose[coco.joints.index("right_hip")] = [4.0, 12.0]
    pose[coco.joints.index("left_shoulder")] = [0.0, 0.0]
    pose[coco.joints.index("right_shoulder")] = [6.0, -4.0]
    pose[coco.joints.index("left_eye")] = [1.0, -10.0]
    pose[coco.joints.index("right_eye")] = [5.0, -12.0]
    pose[coco.joints.index("nose")] = [3.5, -9.0]
    mapped = to_h36m17(pose, name)
    np.testing.assert_array_equal(mapped[H("pelvis")], [3.0, 11.0])  # mean of hips
    np.testing.assert_array_equal(mapped[H("thorax")], [3.0, -2.0])  # mean of shoulders
    np.testing.assert_array_equal(mapped[H("spine")], [3.0, 4.5])  # mean of pelvis and thorax
    np.testing.assert_array_equal(mapped[H("head")], [3.0, -11.0])  # mean of eyes
    np.testing.assert_array_equal(mapped[H("neck_nose")], [3.5, -9.0])  # the nose


def test_mpii_spine_by_hand():
    mpii = FORMATS["mpii"]
    pose = np.zeros((16, 3))
    pose[mpii.joints.index("pelvis")] = [0.0, 100.0, 10.0]
    pose[mpii.joints.index("thorax")] = [20.0, -300.0, 30.0]
    np.testing.assert_array_equal(to_h36m17(pose, "mpii")[H("spine")], [10.0, -100.0, 20.0])


def test_coco_pose_built_from_h36m_pose_gives_it_back():
    """An H36M pose whose torso joints sit where COCO's conversion puts them survives H36M -> COCO -> H36M."""
    rng = np.random.default_rng(1)
    h36m = rng.normal(size=(5, 17, 3)) * 300
    h36m[:, H("pelvis")] = (h36m[:, H("left_hip")] + h36m[:, H("right_hip")]) / 2
    h36m[:, H("thorax")] = (h36m[:, H("left_shoulder")] + h36m[:, H("right_shoulder")]) / 2
    h36m[:, H("spine")] = (h36m[:, H("pelvis")] + h36m[:, H("thorax")]) / 2
    coco = FORMATS["coco"]
    pose = np.zeros((5, 17, 3))
    for i, n in enumerate(coco.joints):
        if n in H36M17.names:
            pose[:, i] = h36m[:, H(n)]
    offset = np.array([30.0, -10.0, 5.0])  # eyes symmetric about the head; ears anywhere
    pose[:, coco.joints.index("left_eye")] = h36m[:, H("head")] + offset
    pose[:, coco.joints.index("right_eye")] = h36m[:, H("head")] - offset
    pose[:, coco.joints.index("nose")] = h36m[:, H("neck_nose")]
    pose[:, coco.joints.index("left_ear")] = rng.normal(size=3)
    np.testing.assert_allclose(to_h36m17(pose, coco), h36m, rtol=0, atol=1e-9)


def test_real_h36m_pelvis_is_the_mean_of_the_hips(mmpose_fixtures):
    """Human3.6M's own pelvis is the midpoint of its hips (< 1 um), so COCO's pelvis rule is exact there;
    its thorax is NOT the midpoint of the shoulders (4-8 cm off), a known bias of COCO-based inputs."""
    S = np.load(mmpose_fixtures / "h36m" / "test_h36m_body3d.npz")["S"][..., :3] * 1000.0
    coco = FORMATS["coco"]
    pose = np.zeros((len(S), 17, 3))
    for i, n in enumerate(coco.joints):
        if n in H36M17.names:
            pose[:, i] = S[:, H(n)]
    mapped = to_h36m17(pose, coco)
    np.testing.assert_allclose(mapped[:, H("pelvis")], S[:, H("pelvis")], atol=1e-3)
    assert (np.linalg.norm(mapped[:, H("thorax")] - S[:, H("thorax")], axis=-1) > 20).all()


def test_scores_take_the_minimum_of_the_sources():
    coco = FORMATS["coco"]
    scores = np.linspace(0.1, 0.9, 17)[None].repeat(2, 0)  # (2, 17): joint i has score 0.1 + 0.05 i
    scores[1, coco.joints.index("right_hip")] = 0.0
    s = scores_to_h36m17(scores, "coco")
    assert s.shape == (2, 17)
    sc = dict(zip(coco.joints, scores[0]))
    assert s[0, H("pelvis")] == min(sc["left_hip"], sc["right_hip"]) == sc["left_hip"]
    assert s[0, H("spine")] == sc["left_shoulder"]  # min of both hips and both shoulders
    assert s[0, H("thorax")] == sc["left_shoulder"]
    assert s[0, H("head")] == sc["left_eye"]
    assert s[0, H("neck_nose")] == sc["nose"]
    assert s[0, H("right_wrist")] == sc["right_wrist"]
    assert s[1, H("pelvis")] == 0.0 and s[1, H("spine")] == 0.0 and s[1, H("right_hip")] == 0.0
    assert s[1, H("thorax")] == s[0, H("thorax")]  # shoulders unaffected by the hip


@pytest.mark.parametrize("name", FORMATS)
def test_mapping_commutes_with_mirroring(name):
    """Mirroring a pose in its own layout and then mapping equals mapping and then mirroring in H36M."""
    fmt = FORMATS[name]
    pose = np.random.default_rng(2).normal(size=(4, fmt.num_joints, 3))
    mirrored = pose[:, fmt.flip_permutation].copy()
    mirrored[..., 0] *= -1
    np.testing.assert_allclose(to_h36m17(mirrored, fmt), flip_poses(to_h36m17(pose, fmt)), atol=1e-12)
    for left, right in zip(fmt.left, fmt.right):
        assert fmt.joints[left].replace("left", "right") == fmt.joints[right]


def test_shapes_dtypes_and_errors():
    pts = np.arange(2 * 3 * 17 * 2, dtype=np.int64).reshape(2, 3, 17, 2)  # integer COCO pixels
    out = to_h36m17(pts, "coco")
    assert out.shape == (2, 3, 17, 2) and out.dtype == np.float64
    assert to_h36m17(pts.astype(np.float32), "coco").dtype == np.float32
    np.testing.assert_array_equal(out[1, 2], to_h36m17(pts[1, 2], "coco"))
    assert get_format("mpii") is FORMATS["mpii"] and get_format(FORMATS["mpii"]) is FORMATS["mpii"]
    with pytest.raises(ValueError, match=r"coco keypoints must have shape \(\.\.\., 17, D\)"):
        to_h36m17(np.zeros((16, 2)), "coco")
    with pytest.raises(ValueError, match=r"mpii scores must have shape \(\.\.\., 16\)"):
        scores_to_h36m17(np.zeros(17), "mpii")
    with pytest.raises(ValueError, match="unknown keypoint format 'openpose'"):
        to_h36m17(np.zeros((17, 2)), "openpose")


def test_real_coco_keypoints(mmpose_fixtures):
    """Real COCO annotations: the published joint order, and the pelvis of every person with both hips
    labelled lies midway between them; labelled joints map to finite points inside the image."""
    data = json.loads((mmpose_fixtures / "coco" / "test_coco.json").read_text())
    assert tuple(data["categories"][0]["keypoints"]) == FORMATS["coco"].joints
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    anns = [a for a in data["annotations"] if a["num_keypoints"] > 0]
    kp = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, 17, 3)
    pts, vis = to_h36m17(kp[..., :2], "coco"), scores_to_h36m17(kp[..., 2], "coco")
    coco = FORMATS["coco"]
    lh, rh = coco.joints.index("left_hip"), coco.joints.index("right_hip")
    both = (kp[:, lh, 2] > 0) & (kp[:, rh, 2] > 0)
    assert both.sum() >= 5
    assert (vis[both, H("pelvis")] > 0).all() and (vis[~both, H("pelvis")] == 0).all()
    pelvis, left, right = pts[both, H("pelvis")], kp[both, lh, :2], kp[both, rh, :2]
    np.testing.assert_allclose(pelvis, (left + right) / 2)
    assert ((pelvis >= np.minimum(left, right)) & (pelvis <= np.maximum(left, right))).all()
    seen = vis > 0
    assert np.isfinite(pts[seen]).all()
    wh = np.array([sizes[a["image_id"]] for a in anns], dtype=np.float64)[:, None].repeat(17, 1)
    assert ((pts[seen] >= 0) & (pts[seen] <= wh[seen])).all()


def test_real_mpi_inf_3dhp_joints_map_onto_the_h36m_skeleton(mmpose_fixtures):
    """Real 3DHP test/train joints (camera frame, metres): after mapping, the pelvis is the midpoint of
    the hips, twin shins / upper arms / forearms have equal length, and the head chain rises in order
    thorax (3DHP neck) < neck_nose (3DHP head) < head (3DHP head_top) away from the pelvis."""
    for split in ("test", "train"):
        S = np.load(mmpose_fixtures / "mpi_inf_3dhp" / f"test_3dhp_{split}.npz")["S"][..., :3] * 1000.0
        p = to_h36m17(S, "mpi_inf_3dhp")
        np.testing.assert_allclose(p[:, H("pelvis")], (p[:, H("left_hip")] + p[:, H("right_hip")]) / 2, atol=1e-6)
        for a, b in (("knee", "ankle"), ("shoulder", "elbow"), ("elbow", "wrist")):
            left = np.linalg.norm(p[:, H("left_" + a)] - p[:, H("left_" + b)], axis=-1)
            right = np.linalg.norm(p[:, H("right_" + a)] - p[:, H("right_" + b)], axis=-1)
            np.testing.assert_allclose(left, right, atol=1.0)
            assert (left > 150).all()
        up = [np.linalg.norm(p[:, H(j)] - p[:, H("pelvis")], axis=-1) for j in ("thorax", "neck_nose", "head")]
        assert ((up[0] < up[1]) & (up[1] < up[2])).all()
