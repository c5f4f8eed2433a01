"""BVH parsing and forward kinematics: hand-computed chains, channel order, position-channel semantics,
bad files, and rigid bones on real Bandai-Namco clips."""

from __future__ import annotations

import numpy as np
import pytest

from poselift.data.bvh import axis_rotation, end_site_positions, euler_matrices, forward_kinematics, parse_bvh
from poselift.errors import InputError

CHAIN = """HIERARCHY
ROOT A
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT B
  {
    OFFSET 0 10 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {
      OFFSET 0 5 0
    }
  }
}
MOTION
Frames: 5
Frame Time: 0.0333333
0 0 0 0 0 0 0 0 0
1 2 3 90 0 0 0 0 0
0 0 0 0 90 0 0 0 0
0 0 0 90 90 0 0 0 0
0 0 0 0 0 0 90 0 0
"""


def test_two_joint_chain_matches_hand_computed_positions():
    bvh = parse_bvh(CHAIN.encode())
    assert bvh.names == ["A", "B"] and bvh.parents.tolist() == [-1, 0] and bvh.num_frames == 5
    assert bvh.frame_time == pytest.approx(1 / 30, rel=1e-5)
    positions, rotations = forward_kinematics(bvh)
    tip = end_site_positions(bvh, positions, rotations)[1]
    expected_b = [(0, 10, 0),  # rest
                  (-9, 2, 3),  # root moved to (1, 2, 3) and turned +90 deg about z: y -> -x
                  (0, 0, 10),  # +90 about x: y -> +z
                  (0, 0, 10),  # Z then X (R = Rz Rx): Rx takes y to z, Rz leaves z alone
                  (0, 10, 0)]  # only B turns: B stays, its end site swings
    expected_tip = [(0, 15, 0), (-14, 2, 3), (0, 0, 15), (0, 0, 15), (-5, 10, 0)]
    np.testing.assert_allclose(positions[:, 1], expected_b, atol=1e-9)
    np.testing.assert_allclose(tip, expected_tip, atol=1e-9)


def test_channel_order_matters():
    # The same two angles in the opposite order (X then Z) take B elsewhere: (-10, 0, 0) instead of (0, 0, 10).
    swapped = CHAIN.replace("CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation",
                            "CHANNELS 6 Xposition Yposition Zposition Xrotation Zrotation Yrotation")
    positions, _ = forward_kinematics(parse_bvh(swapped))
    np.testing.assert_allclose(positions[3, 1], (-10, 0, 0), atol=1e-9)


def test_position_channels_replace_the_offset():
    text = CHAIN.replace("CHANNELS 3 Zrotation Xrotation Yrotation",
                         "CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation")
    lines = text.splitlines()
    start = lines.index("Frame Time: 0.0333333") + 1
    lines[start:] = ["0 0 0 0 0 0 0 20 0 0 0 0"] * 5  # B's translation channels say (0, 20, 0); OFFSET says 10
    positions, _ = forward_kinematics(parse_bvh("\n".join(lines)))
    np.testing.assert_allclose(positions[:, 1], [(0, 20, 0)] * 5, atol=1e-12)


def test_euler_matrices_are_rotations_composed_in_channel_order():
    rng = np.random.default_rng(0)
    angles = rng.uniform(-180, 180, size=(50, 3))
    r = euler_matrices(angles, "ZXY")
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    rad = np.deg2rad(angles)
    manual = axis_rotation(rad[:, 0], "Z") @ axis_rotation(rad[:, 1], "X") @ axis_rotation(rad[:, 2], "Y")
    np.testing.assert_allclose(r, manual, atol=1e-12)
    np.testing.assert_allclose(axis_rotation(np.pi / 2, "Z") @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(axis_rotation(np.pi / 2, "X") @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(axis_rotation(np.pi / 2, "Y") @ [0, 0, 1], [1, 0, 0], atol=1e-12)


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.replace("MOTION", "MOTON"), "HIERARCHY ... MOTION"),
    (lambda t: t.replace("Frames: 5", "Frames: 6"), r"expected \(6, 9\)"),
    (lambda t: t.rsplit("\n", 2)[0] + "\n0 0 0\n", "malformed BVH motion data"),
    (lambda t: t.replace("1 2 3 90", "1 2 x 90"), "malformed BVH motion data"),
    (lambda t: t.replace("1 2 3 90", "1 2 nan 90"), "non-finite"),
    (lambda t: t.replace("Zrotation Xrotation Yrotation\n    End", "Zrotation Xrotation Wrotation\n    End"),
     "unknown BVH channel"),
    (lambda t: t.replace("    }\n  }\n}", "    }\n  }\n"), "unbalanced"),
    (lambda t: t.replace("OFFSET 0 10 0", "OFFSET 0 ten 0"), "malformed BVH hierarchy"),
])
def test_bad_files_raise_one_line_input_errors(mutate, message):
    with pytest.raises(InputError, match=message) as info:
        parse_bvh(mutate(CHAIN), "clip.bvh")
    assert info.value.path == "clip.bvh" and "\n" not in str(info.value)


def test_real_clip_bones_are_rigid_and_hips_carry_the_trajectory(shared_dir):
    from poselift.data.bandai import load_manifest, read_archive

    archive = shared_dir / "data" / "bandai-namco" / "Bandai-Namco-Research-Motiondataset-1.tar.xz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent")
    member = "dataset/Bandai-Namco-Research-Motiondataset-1/data/dataset-1_walk_normal_001.bvh"
    [(name, data)] = list(read_archive(archive, {member}, load_manifest()))
    bvh = parse_bvh(data, name)
    assert len(bvh.names) == 22 and bvh.num_frames == 195
    positions, _ = forward_kinematics(bvh)
    for j, p in enumerate(bvh.parents):
        if p <= 0:  # joint_Root -> Hips is the trajectory, not a bone
            continue
        length = np.linalg.norm(positions[:, j] - positions[:, p], axis=-1)
        assert np.ptp(length) / length.mean() < 1e-4, bvh.names[j]
    hips = positions[:, bvh.index("Hips")]
    assert 80 < np.median(hips[:, 1]) < 100  # hip height in cm: position channels replace the offset
    assert np.linalg.norm(hips[-1, [0, 2]] - hips[0, [0, 2]]) > 150  # a walk moves the hips metres
