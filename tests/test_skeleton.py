"""H36M-17 skeleton: tree, hop distances, adjacency, POT groups, MixSTE weights, flips, 32 -> 17 subset."""

from __future__ import annotations

import numpy as np
import pytest

from poselift.skeleton import (
    H36M17, H36M32_TO_17, MIXSTE_JOINT_WEIGHTS, POT_GROUPS, Skeleton, flip_poses,
)

J = H36M17.index


def test_parents_form_a_tree_rooted_at_the_pelvis():
    assert H36M17.names[0] == "pelvis" and H36M17.parents[0] == -1
    assert len(set(H36M17.names)) == 17
    for j in range(17):  # every joint reaches the pelvis by following parents, without cycles
        seen, k = set(), j
        while k != 0:
            assert k not in seen
            seen.add(k)
            k = H36M17.parents[k]
    assert H36M17.parents[J("right_wrist")] == J("right_elbow")
    assert H36M17.parents[J("left_shoulder")] == J("thorax")
    assert H36M17.parents[J("head")] == J("neck_nose")


def test_skeleton_rejects_bad_trees():
    with pytest.raises(ValueError, match="only root"):
        Skeleton(names=("a", "b"), parents=(-1, -1), left=(), right=())
    with pytest.raises(ValueError, match="precede"):
        Skeleton(names=("a", "b", "c"), parents=(-1, 2, 0), left=(), right=())


def test_hop_distances_by_hand():
    d = H36M17.hop_distance()
    assert d[J("left_wrist"), J("right_wrist")] == 6  # wrist-elbow-shoulder-thorax-shoulder-elbow-wrist
    assert d[J("pelvis"), J("head")] == 4  # pelvis-spine-thorax-neck_nose-head
    assert d[J("head"), J("right_ankle")] == 7  # head-neck-thorax-spine-pelvis-hip-knee-ankle
    assert d[J("left_ankle"), J("right_ankle")] == 6
    assert d[J("left_hip"), J("left_shoulder")] == 4
    assert (d == d.T).all() and (np.diag(d) == 0).all()
    assert ((d == 1) == (H36M17.adjacency() == 1)).all()  # distance 1 exactly on the bones


def test_adjacency_is_symmetric_with_16_edges():
    a = H36M17.adjacency()
    assert (a == a.T).all() and np.diag(a).sum() == 0
    assert a.sum() == 2 * 16
    degree = a.sum(1)
    assert degree[J("pelvis")] == 3 and degree[J("thorax")] == 4 and degree[J("right_wrist")] == 1
    assert (H36M17.adjacency(self_loops=True) == a + np.eye(17)).all()


def test_pot_groups_by_hop_distance_to_the_pelvis():
    groups = {g: {H36M17.names[j] for j in np.flatnonzero(POT_GROUPS == g)} for g in range(5)}
    assert groups == {
        0: {"pelvis", "right_hip", "left_hip", "spine"},
        1: {"right_knee", "left_knee", "thorax"},
        2: {"right_ankle", "left_ankle", "neck_nose", "left_shoulder", "right_shoulder"},
        3: {"head", "left_elbow", "right_elbow"},
        4: {"left_wrist", "right_wrist"},
    }
    hops = H36M17.hop_distance()[0]
    for g in range(4):  # groups ordered by distance: every joint of group g is nearer than any of g+1
        assert hops[POT_GROUPS == g].max() < hops[POT_GROUPS == g + 1].min()


def test_mixste_weights_follow_the_released_groups():
    expected = {"pelvis": 1.0, "right_hip": 1.0, "left_hip": 1.0, "spine": 1.0, "thorax": 1.0,
                "neck_nose": 1.0, "head": 1.5, "left_shoulder": 1.5, "right_shoulder": 1.5,
                "right_knee": 2.5, "left_knee": 2.5, "right_ankle": 2.5, "left_ankle": 2.5,
                "left_elbow": 4.0, "right_elbow": 4.0, "left_wrist": 4.0, "right_wrist": 4.0}
    assert {n: float(w) for n, w in zip(H36M17.names, MIXSTE_JOINT_WEIGHTS)} == expected


def test_flip_swaps_left_and_right_and_negates_x():
    rng = np.random.default_rng(0)
    poses = rng.normal(size=(4, 3, 17, 3))
    flipped = flip_poses(poses)
    for left, right in zip(H36M17.left, H36M17.right):
        assert H36M17.names[left].replace("left", "right") == H36M17.names[right]
        np.testing.assert_array_equal(flipped[..., left, 0], -poses[..., right, 0])
        np.testing.assert_array_equal(flipped[..., right, 1:], poses[..., left, 1:])
    for mid in ("pelvis", "spine", "thorax", "neck_nose", "head"):
        np.testing.assert_array_equal(flipped[..., J(mid), :], poses[..., J(mid), :] * [-1, 1, 1])
    np.testing.assert_array_equal(flip_poses(flipped), poses)
    np.testing.assert_array_equal(flip_poses(poses[..., :2])[..., 1], flipped[..., 1])  # works on 2D too


# Human3.6M's 32 mocap joints as named by 3d-pose-baseline (H36M_NAMES; '' = dropped) and their parents
# (VideoPose3D's h36m_skeleton).
H36M32_NAMES = {0: "Hip", 1: "RHip", 2: "RKnee", 3: "RFoot", 6: "LHip", 7: "LKnee", 8: "LFoot",
                12: "Spine", 13: "Thorax", 14: "Neck/Nose", 15: "Head", 17: "LShoulder", 18: "LElbow",
                19: "LWrist", 25: "RShoulder", 26: "RElbow", 27: "RWrist"}
H36M32_PARENTS = [-1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 12,
                  16, 17, 18, 19, 20, 19, 22, 12, 24, 25, 26, 27, 28, 27, 30]


def test_h36m32_to_17_picks_the_documented_joints():
    picked = [H36M32_NAMES[i] for i in H36M32_TO_17]
    assert picked == ["Hip", "RHip", "RKnee", "RFoot", "LHip", "LKnee", "LFoot", "Spine", "Thorax",
                      "Neck/Nose", "Head", "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow", "RWrist"]
    # Reducing the 32-joint tree to the kept joints gives H36M17's parents, except that the shoulders
    # hang from the spine there; VideoPose3D rewires them to the thorax, as H36M17 does.
    kept = list(H36M32_TO_17)
    reduced = []
    for j in kept:
        p = H36M32_PARENTS[j]
        while p >= 0 and p not in kept:
            p = H36M32_PARENTS[p]
        reduced.append(kept.index(p) if p >= 0 else -1)
    shoulders = [J("left_shoulder"), J("right_shoulder")]
    assert [reduced[s] for s in shoulders] == [J("spine")] * 2
    for s in shoulders:
        reduced[s] = J("thorax")
    assert tuple(reduced) == H36M17.parents


def test_real_h36m_poses_have_symmetric_left_and_right_bones(mmpose_fixtures):
    """On real mocap poses the left/right pairs index twin bones of equal length (to < 0.1 mm)."""
    data = np.load(mmpose_fixtures / "h36m" / "test_h36m_body3d.npz")
    poses = data["S"][..., :3] * 1000.0  # metres -> mm
    parents = np.array(H36M17.parents)
    bone = np.linalg.norm(poses - poses[:, np.maximum(parents, 0)], axis=-1)  # length of the bone into j
    np.testing.assert_allclose(bone[:, list(H36M17.left)], bone[:, list(H36M17.right)], atol=0.1)
    assert (bone[:, 1:] > 50).all()  # no joint sits on its parent
