"""Retargeting (``poselift.rendering.retarget``): MakeHuman's body driven by H36M-17 joints, on two real clips
of the open benchmark (Bandai-Namco walk and kick, read from the mirror in ../shared) and on synthetic poses.
Needs ../shared/data/makehuman and ../shared/data/bandai-namco (skipped when absent).

Tolerances (the measured values are printed with -s):
- joints: every posed H36M-17 joint but the head top within 2 cm of the driving one (the legs and the pelvis
  within 0.1 mm: rigid segments at the median length); every segment's direction within 0.1 degree; the
  head top on the driving neck_nose -> head ray at the body's own head length.
- mesh: limb lengths between the centroids of the vertices nearest the joints within 2 cm of the driving
  ones (and within 1 cm of the same measure's bias in the sized rest pose); the lowest vertex at the floor
  (z = 0) within 2 cm in the median frame and never more than 4 cm below it; the top of the head within
  2 cm of where the unstretched skull puts it.
- twist: the elbow's and knee's bony tips stay outside the bend (> 5 mm), at their rest distance (1 cm) from
  its plane; the forearm's and shin's vertices keep their rest place along and around elbow -> wrist and
  knee -> ankle (fraction within 0.08, distance within 2 cm).
- a rest-like input (the body's own joints, scaled, turned and moved) gives the rest mesh to < 1 mm.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from poselift.rendering.body import linear_blend_skinning
from poselift.rendering.retarget import (CHAINS, H36M_TO_MAKEHUMAN, pose_from_joints, posed_h36m17, rest_h36m17,
                                         segment_lengths, size_body, sizing)
from poselift.skeleton import H36M17

CLIPS = ("dataset-1_walk_normal_001", "dataset-1_kick_normal_001")
J = {name: j for j, name in enumerate(H36M17.names)}
_CACHE = {}


@pytest.fixture
def base(makehuman_body):
    return makehuman_body


@pytest.fixture
def clips(shared_dir):
    """Clip name -> H36M-17 joints (F, 17, 3) in metres, world frame (as in the prepared file, / 1000)."""
    from poselift.data.bandai import build

    mirror = shared_dir / "data" / "bandai-namco"
    if not (mirror / "Bandai-Namco-Research-Motiondataset-1.tar.xz").is_file():
        pytest.skip(f"{mirror} lacks Bandai-Namco-Research-Motiondataset-1.tar.xz")
    if "clips" not in _CACHE:
        data = build(mirror, clips=CLIPS)
        _CACHE["clips"] = {s.name: s.positions_3d.astype(np.float64) / 1000 for s in data.sequences}
    return _CACHE["clips"]


@pytest.fixture
def posed(base, clips):
    """Clip name -> (driving joints, sized body, transforms)."""
    if "posed" not in _CACHE:
        out = {}
        for name, joints in clips.items():
            body = size_body(base, joints)
            transforms, _ = pose_from_joints(body, joints)
            out[name] = (joints, body, transforms)
        _CACHE["posed"] = out
    return _CACHE["posed"]


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def bones_weighing(body, names, at_least):
    """Body vertices whose summed weight on the bones ``names`` is at least ``at_least``."""
    columns = [body.skeleton.index(n) for n in names]
    return np.flatnonzero(np.asarray(body.weights[:, columns].sum(axis=1)).ravel() >= at_least)


def skin(body, transforms, vertices):
    """The posed positions (F, n, 3) of some body vertices only (fast)."""
    return linear_blend_skinning(body.vertices[vertices], body.weights[vertices], transforms)


def segment_angles(a, b):
    """(F, 16) degrees between the H36M-17 segments of joints a and b (F, 17, 3)."""
    out = []
    for p, c in H36M17.bones:
        cos = np.einsum("fi,fi->f", unit(a[:, c] - a[:, p]), unit(b[:, c] - b[:, p]))
        out.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return np.stack(out, axis=-1)


# --- the correspondence ------------------------------------------------------------------------------
def test_correspondence_names_real_bones_and_covers_every_segment(base):
    sk = base.skeleton
    assert set(H36M_TO_MAKEHUMAN) == set(H36M17.names)
    for bone, end in H36M_TO_MAKEHUMAN.values():
        assert bone in sk.names and end in ("head", "tail")
    assert sorted((J[c.start], J[c.end]) for c in CHAINS) == sorted(H36M17.bones)  # one chain per segment
    for chain in CHAINS:
        indices = [sk.index(b) for b in chain.bones]
        assert all(sk.parents[b] == a for a, b in zip(indices, indices[1:])), chain.bones  # consecutive
        # the chain ends where its segment's end joint is, and that joint rides on the chain or a child of it
        end_bone = sk.index(H36M_TO_MAKEHUMAN[chain.end][0])
        assert end_bone in sk.subtree(chain.bones[-1]), chain
        np.testing.assert_allclose(sk.tails[indices[-1]], rest_h36m17(base)[J[chain.end]], atol=1e-9)
    rest = rest_h36m17(base)
    for name in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist"):  # left on +x, as the body's left
        assert rest[J[f"left_{name}"], 0] > 0.05 > -0.05 > rest[J[f"right_{name}"], 0], name
    assert rest[J["head"], 2] > rest[J["neck_nose"], 2] > rest[J["thorax"], 2] > rest[J["spine"], 2] \
        > rest[J["pelvis"], 2] > rest[J["left_knee"], 2] > rest[J["left_ankle"], 2]


# --- joints --------------------------------------------------------------------------------------------
def test_posed_skeleton_has_the_driving_joints(posed, base):
    for name, (joints, body, transforms) in posed.items():
        got = posed_h36m17(body, transforms)
        error = np.linalg.norm(got - joints, axis=-1)  # (F, 17) metres
        worst = error.max(axis=0)
        print(f"\n{name}: {len(joints)} frames, max joint error (mm): "
              + ", ".join(f"{n} {w * 1000:.1f}" for n, w in zip(H36M17.names, worst)))
        legs = [J[n] for n in ("pelvis", "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee",
                               "right_ankle")]
        assert worst[legs].max() < 1e-4, name  # rigid segments at their (constant) length: exact
        assert np.delete(worst, J["head"]).max() < 0.02, name  # shoulders: the clavicle's pivot is off the thorax
        angles = segment_angles(got, joints)
        print(f"  max segment direction error {angles.max():.2e} degrees")
        assert angles.max() < 0.1, name
        # the head is not stretched: its top lies on the driving ray, at the (scaled) skull's length
        rest = rest_h36m17(body)
        along = joints[:, J["neck_nose"]] + np.linalg.norm(rest[J["head"]] - rest[J["neck_nose"]]) * unit(
            joints[:, J["head"]] - joints[:, J["neck_nose"]])
        assert np.linalg.norm(got[:, J["head"]] - along, axis=-1).max() < 0.02, name
        # the sized rest pose has the subject's median segment lengths (the head excepted; the clavicles match
        # the distance from their pivot, so thorax -> shoulder only roughly)
        size = sizing(body, joints)
        lengths = segment_lengths(joints)
        for p, c in H36M17.bones:
            rest_length = np.linalg.norm(size.joints[c] - size.joints[p])
            if H36M17.names[c] not in ("head", "left_shoulder", "right_shoulder"):
                assert rest_length == pytest.approx(lengths[c], abs=1e-9), H36M17.names[c]
            elif H36M17.names[c] != "head":
                assert rest_length == pytest.approx(lengths[c], abs=0.02), H36M17.names[c]


# --- the mesh ------------------------------------------------------------------------------------------
def test_posed_mesh_has_the_driving_limb_lengths_and_height(posed):
    joints, body, transforms = posed["dataset-1_walk_normal_001"]
    rest = rest_h36m17(body)
    rings = {}  # joint -> the body vertices within 2.5 cm of its nearest one at rest: their posed centroid
    for side in ("left", "right"):  # stands for the joint
        for part in ("shoulder", "elbow", "wrist", "knee", "ankle"):
            name = f"{side}_{part}"
            distance = np.linalg.norm(body.vertices - rest[J[name]], axis=-1)
            rings[name] = np.flatnonzero(distance < distance.min() + 0.025)
            assert len(rings[name]) > 30, name
    centroid = {n: skin(body, transforms, v).mean(axis=1) for n, v in rings.items()}
    size = sizing(body, joints)  # the sized rest pose: the same rings' centroids measure the bias of the method
    at_rest = {n: skin(body, size.transforms[None], v).mean(axis=1) for n, v in rings.items()}
    for side in ("left", "right"):
        for a, b in (("shoulder", "elbow"), ("elbow", "wrist"), ("knee", "ankle")):
            a, b = f"{side}_{a}", f"{side}_{b}"
            mesh = np.linalg.norm(centroid[b] - centroid[a], axis=-1)
            driving = np.linalg.norm(joints[:, J[b]] - joints[:, J[a]], axis=-1)
            bias = np.linalg.norm(at_rest[b] - at_rest[a]) - np.linalg.norm(size.joints[J[b]] - size.joints[J[a]])
            print(f"\n{a}-{b}: mesh - driving length, max |.| {np.abs(mesh - driving).max() * 1000:.1f} mm "
                  f"(sized rest pose: {bias * 1000:.1f} mm; posed - rest: "
                  f"{np.abs(mesh - driving - bias).max() * 1000:.1f} mm)")
            assert np.abs(mesh - driving).max() < 0.02 and np.abs(mesh - driving - bias).max() < 0.01, (a, b)

    # height: the soles on the floor (z = 0 on the open benchmark) ...
    feet = np.concatenate([bones_weighing(body, (f"foot.{s}",) + tuple(f"toe{i}-{j}.{s}" for i in range(1, 6)
                                                                        for j in (1, 2, 3) if (i, j) != (1, 3)),
                                          0.5) for s in "LR"])
    lowest = skin(body, transforms, feet)[..., 2].min(axis=1)
    print(f"lowest vertex z (mm): median {np.median(lowest) * 1000:.1f}, min {lowest.min() * 1000:.1f}")
    assert abs(np.median(lowest)) < 0.02 and lowest.min() > -0.04
    # ... and the top of the head where the unstretched skull puts it on the driving neck_nose -> head ray
    head = bones_weighing(body, ("head",), 0.99)
    top = head[np.argmax(body.vertices[head, 2])]
    sk = body.skeleton
    offset = body.vertices[top] - sk.tails[sk.index("head")]  # the top vertex's offset from the head joint at rest
    assert np.linalg.norm(offset) < 0.08
    head_top = posed_h36m17(body, transforms)[:, J["head"]]
    top_z = skin(body, transforms, [top])[:, 0, 2]
    print(f"mesh top - driving head top (z, mm): median {np.median(top_z - joints[:, J['head'], 2]) * 1000:.1f} "
          f"(skull not stretched: {np.linalg.norm(rest[J['head']] - rest[J['neck_nose']]) * 1000:.0f} mm vs "
          f"{np.median(np.linalg.norm(joints[:, J['head']] - joints[:, J['neck_nose']], axis=-1)) * 1000:.0f} mm)")
    assert np.abs(top_z - head_top[:, 2]).max() < np.linalg.norm(offset) + 0.02


def test_left_stays_left(posed):
    for name, (joints, body, transforms) in posed.items():
        for side, other in (("L", "R"), ("R", "L")):
            cluster = bones_weighing(body, (f"wrist.{side}",), 0.5)
            wrist = skin(body, transforms, cluster).mean(axis=1)  # (F, 3), every frame
            own = {"L": "left_wrist", "R": "right_wrist"}
            near = np.linalg.norm(wrist - joints[:, J[own[side]]], axis=-1)
            far = np.linalg.norm(wrist - joints[:, J[own[other]]], axis=-1)
            assert (near < far).all() and near.max() < 0.04, (name, side)


def bony_tip(body, joint, outward):
    """The rest body vertex within 6 cm of ``joint`` farthest along ``outward`` (the olecranon, the patella)."""
    near = np.flatnonzero(np.linalg.norm(body.vertices - joint, axis=-1) < 0.06)
    return near[np.argmax((body.vertices[near] - joint) @ outward)]


def along(points, b, c):
    """Fraction along b -> c and distance from that line of points (..., n, 3), for b, c (..., 3)."""
    segment = (c - b)[..., None, :]
    t = np.sum((points - b[..., None, :]) * segment, axis=-1) / np.sum(segment * segment, axis=-1)
    return t, np.linalg.norm(points - b[..., None, :] - t[..., None] * segment, axis=-1)


def check_bend(body, transforms, joints, chain_bones, names, tip, min_bend_deg=30.0):
    """Where the a-b-c bend exceeds ``min_bend_deg``: the lower chain's vertices keep their place along and
    around b -> c (fraction within 0.08, distance from the line within 2 cm of the rest pose's), and the
    bony ``tip`` stays outside the bend (by > 5 mm), at its rest distance from the bend's plane (1 cm)."""
    a, b, c = (joints[:, J[n]] for n in names)
    bend = np.degrees(np.arccos(np.einsum("fi,fi->f", unit(b - a), unit(c - b))))
    frames = np.flatnonzero(bend > min_bend_deg)
    assert len(frames) > 0
    a, b, c = a[frames], b[frames], c[frames]
    lower = bones_weighing(body, chain_bones, 0.9)
    posed = skin(body, transforms[frames], np.append(lower, tip))
    rest = rest_h36m17(body)
    ra, rb, rc = (rest[J[n]] for n in names)
    t0, off0 = along(body.vertices[lower], rb, rc)
    t, off = along(posed[:, :-1], b, c)
    print(f"  {names[1]}: |t - t0| {np.abs(t - t0).max():.3f}, |off - off0| {np.abs(off - off0).max() * 1000:.1f} mm, "
          f"outside {np.einsum('fi,fi->f', posed[:, -1] - b, -unit(unit(a - b) + unit(c - b))).min() * 1000:.1f} mm")
    assert t0.min() > -0.1 and np.abs(t - t0).max() < 0.08 and np.abs(off - off0).max() < 0.02
    outside = -unit(unit(a - b) + unit(c - b))
    assert np.einsum("fi,fi->f", posed[:, -1] - b, outside).min() > 0.005
    normal = unit(np.cross(b - a, c - b))
    rest_side = (body.vertices[tip] - rb) @ unit(np.cross(rb - ra, rc - rb))
    assert np.abs(np.einsum("fi,fi->f", posed[:, -1] - b, normal) - rest_side).max() < 0.01
    return len(frames)


def test_twist_bends_elbows_and_knees_in_the_joints_plane(posed, base):
    # real motion: elbows and knees bent by more than 30 degrees
    for name, (joints, body, transforms) in posed.items():
        rest = rest_h36m17(body)
        for side, s in (("left", "L"), ("right", "R")):
            sho, elb, wri = (rest[J[f"{side}_{p}"]] for p in ("shoulder", "elbow", "wrist"))
            olecranon = bony_tip(body, elb, -unit(unit(sho - elb) + unit(wri - elb)))
            n = check_bend(body, transforms, joints, (f"lowerarm01.{s}", f"lowerarm02.{s}"),
                           tuple(f"{side}_{p}" for p in ("shoulder", "elbow", "wrist")), olecranon)
            patella = bony_tip(body, rest[J[f"{side}_knee"]], np.array([0.0, -1.0, 0.0]))  # the body faces -y
            m = check_bend(body, transforms, joints, (f"lowerleg01.{s}", f"lowerleg02.{s}"),
                           tuple(f"{side}_{p}" for p in ("hip", "knee", "ankle")), patella)
            print(f"\n{name} {side}: {n} frames with the elbow bent > 30 deg, {m} with the knee")
    # synthetic: the left forearm at 90 degrees to the upper arm, its bend plane turned about the upper arm by
    # 0..300 degrees (the upper arm must roll with it: a swing alone puts the olecranon inside the bend)
    rest = rest_h36m17(base)
    sho, elb, wri = (rest[J[f"left_{p}"]] for p in ("shoulder", "elbow", "wrist"))
    upper = unit(elb - sho)
    across = unit(np.cross(upper, [0.0, 1.0, 0.0]))
    poses = []
    for angle in np.radians(np.arange(0, 360, 60)):
        turned = across * np.cos(angle) + np.cross(upper, across) * np.sin(angle)
        pose = rest.copy()
        pose[J["left_wrist"]] = elb + np.linalg.norm(wri - elb) * turned
        poses.append(pose)
    poses = np.array(poses)
    transforms, _ = pose_from_joints(base, poses)
    olecranon = bony_tip(base, elb, -unit(unit(sho - elb) + unit(wri - elb)))
    assert check_bend(base, transforms, poses, ("lowerarm01.L", "lowerarm02.L"),
                      ("left_shoulder", "left_elbow", "left_wrist"), olecranon) == len(poses)


# --- rest, NaN, speed ---------------------------------------------------------------------------------
def test_rest_like_input_gives_the_rest_mesh(base):
    yaw = np.radians(30.0)
    turn = np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    move = np.array([0.5, -1.0, 0.9])
    joints = (0.9 * rest_h36m17(base)) @ turn.T + move
    joints = np.repeat(joints[None], 3, axis=0)
    body = size_body(base, joints)
    np.testing.assert_allclose(body.vertices, 0.9 * base.vertices, atol=1e-12)  # the size: k = 0.9
    transforms, translation = pose_from_joints(body, joints)
    assert np.isfinite(transforms).all()
    np.testing.assert_allclose(posed_h36m17(body, transforms), joints, atol=1e-9)
    expected = body.vertices @ turn.T + move
    error = np.linalg.norm(body.pose(transforms) - expected, axis=-1).max()
    print(f"\nrest-like input: max vertex error {error:.1e} m")
    assert error < 1e-3
    np.testing.assert_allclose(translation, np.broadcast_to(move + 0.9 * rest_h36m17(base)[0] @ turn.T
                                                            - rest_h36m17(body)[0], (3, 3)), atol=1e-9)
    # the unsized body on the same input: the chains are stretched (by 0.9) instead, the joints still match
    transforms, _ = pose_from_joints(base, joints)
    np.testing.assert_allclose(posed_h36m17(base, transforms)[:, J["left_wrist"]], joints[:, J["left_wrist"]],
                               atol=1e-9)


def test_unstretched_transforms_are_the_bodys_forward_kinematics(base):
    # poses with the body's own segment lengths: no stretch, so the transforms are rigid and are
    # body.forward_kinematics of per-bone rotations in rest-frame axes (identity for the undriven bones)
    rest = rest_h36m17(base)
    rng = np.random.default_rng(0)
    poses = np.repeat(rest[None], 4, axis=0)
    for pose in poses[1:]:  # turn the limbs' end segments about their start joints
        for a, b in (("left_elbow", "left_wrist"), ("right_knee", "right_ankle"), ("neck_nose", "head")):
            axis = unit(rng.normal(size=3))
            v = pose[J[b]] - pose[J[a]]
            angle = rng.uniform(0.3, 1.2)
            pose[J[b]] = pose[J[a]] + v * np.cos(angle) + np.cross(axis, v) * np.sin(angle) \
                + axis * (axis @ v) * (1 - np.cos(angle))
    transforms, _ = pose_from_joints(base, poses)
    sk = base.skeleton
    world = transforms[..., :3, :3]
    np.testing.assert_allclose(world @ world.swapaxes(-1, -2), np.broadcast_to(np.eye(3), world.shape), atol=1e-9)
    frames = sk.rest_frames[:, :3, :3]
    parent = np.where(sk.parents >= 0, sk.parents, np.arange(sk.num_bones))
    local = frames.swapaxes(-1, -2) @ world[:, parent].swapaxes(-1, -2) @ world @ frames
    root = sk.index("root")
    local[:, root] = frames[root].T @ world[:, root] @ frames[root]
    head = sk.heads[root]
    translation = transforms[:, root, :3, 3] - head + world[:, root] @ head
    np.testing.assert_allclose(base.forward_kinematics(local, translation), transforms, atol=1e-9)
    driven = {sk.index(c.bones[0]) for c in CHAINS} | {root}
    still = [b for b in range(sk.num_bones) if b not in driven]
    np.testing.assert_allclose(local[:, still], np.broadcast_to(np.eye(3), local[:, still].shape), atol=1e-9)
    np.testing.assert_allclose(posed_h36m17(base, transforms), poses, atol=1e-9)


def test_no_nan_pieces_agree_and_timing(posed):
    joints, body, _ = posed["dataset-1_kick_normal_001"]
    frames = np.resize(np.arange(len(joints)), 1000)
    many = joints[frames]
    start = time.perf_counter()
    transforms, translation = pose_from_joints(body, many)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    mesh = body.pose(transforms[:100])
    skinning = time.perf_counter() - start
    print(f"\npose_from_joints: 1000 frames in {seconds:.3f} s ({transforms.shape}); "
          f"linear_blend_skinning: 100 frames x {mesh.shape[1]} vertices in {skinning:.3f} s")
    assert np.isfinite(transforms).all() and np.isfinite(translation).all() and np.isfinite(mesh).all()
    # a sequence posed in pieces with its whole sizing gives the same transforms
    size = sizing(body, joints)
    whole, _ = pose_from_joints(body, joints, size)
    pieces = np.concatenate([pose_from_joints(body, joints[i:i + 100], size)[0] for i in range(0, len(joints), 100)])
    np.testing.assert_allclose(pieces, whole, atol=1e-12)


def test_bad_input_is_refused(base):
    rest = rest_h36m17(base)
    with pytest.raises(ValueError, match=r"expected \(F, 17, 3\)"):
        pose_from_joints(base, rest)
    bad = np.repeat(rest[None], 2, axis=0)
    bad[1, 5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pose_from_joints(base, bad)
    bad[1] = rest
    bad[1, J["left_wrist"]] = bad[1, J["left_elbow"]]
    with pytest.raises(ValueError, match="zero length"):
        pose_from_joints(base, bad)
