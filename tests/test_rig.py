"""Virtual camera rigs: Human3.6M's cameras, the capture-volume centre, placing clips, look-at cameras,
random rigs and projection round trips."""

from __future__ import annotations

import numpy as np
import pytest

from poselift.camera import unproject
from poselift.data.h36m_cameras import INTRINSICS
from poselift.data.rig import (MIN_DEPTH_MM, capture_centre, h36m_cameras, in_image, look_at, place_in_volume,
                               project_views, random_rig, yaw_matrix)


def _axis_distance2(point, cams):
    total = 0.0
    for cam in cams.values():
        d = point - cam.T
        total += d @ d - (d @ cam.R[2]) ** 2
    return total


def test_capture_centre_is_where_the_cameras_look():
    cams = h36m_cameras("S1")
    centre = capture_centre(cams)
    assert centre[2] == 0.0
    # every camera sees the centre of the floor and the point 1.8 m above it
    for cam in cams.values():
        assert in_image(cam.world_to_pixels(centre), cam) and in_image(cam.world_to_pixels(centre + [0, 0, 1800]), cam)
    # least squares: the 3D point nearest the optical axes is above the centre, near every image centre,
    # and moving it in any direction brings it farther from the axes
    a = sum(np.eye(3) - np.outer(c.R[2], c.R[2]) for c in cams.values())
    best = np.linalg.solve(a, sum((np.eye(3) - np.outer(c.R[2], c.R[2])) @ c.T for c in cams.values()))
    np.testing.assert_allclose(best[:2], centre[:2])
    for cam in cams.values():
        assert np.linalg.norm(cam.world_to_pixels(best) - cam.c) < 120
    for step in np.eye(3) * 50:
        assert _axis_distance2(best + step, cams) > _axis_distance2(best, cams)
        assert _axis_distance2(best - step, cams) > _axis_distance2(best, cams)


def test_look_at_puts_the_target_on_the_principal_point_upright():
    eye, target = np.array([3000.0, -2000.0, 1800.0]), np.array([100.0, 200.0, 900.0])
    r = look_at(eye, target)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    cam = random_rig(np.random.default_rng(0), 1)["random-0"]
    cam.R, cam.T = r, eye
    np.testing.assert_allclose(cam.world_to_pixels(target), cam.c, atol=1e-9)  # distortion is 0 on the axis
    above = cam.world_to_pixels(target + [0, 0, 300])
    right_of = cam.world_to_camera(target + np.cross(target - eye, [0, 0, 1]))
    assert above[1] < cam.c[1]  # up in the world is up (smaller v) in the image
    assert right_of[0] > 0  # (forward x up) is the camera's right


def test_random_rig_is_seeded_and_looks_at_the_subject():
    target = np.array([500.0, -300.0, 0.0])
    a = random_rig(np.random.default_rng(7), 6, target=target)
    b = random_rig(np.random.default_rng(7), 6, target=target)
    c = random_rig(np.random.default_rng(8), 6, target=target)
    assert list(a) == [f"random-{i}" for i in range(6)]
    for name in a:
        np.testing.assert_array_equal(a[name].R, b[name].R)
        np.testing.assert_array_equal(a[name].T, b[name].T)
    assert any(not np.allclose(a[n].T, c[n].T) for n in a)
    azimuths = []
    for cam in a.values():
        horizontal = np.linalg.norm(cam.T[:2] - target[:2])
        assert 3500 <= horizontal <= 6500 and 800 <= cam.T[2] <= 2400
        azimuths.append(np.arctan2(*(cam.T[:2] - target[:2])[::-1]))
        # the vertical through the target crosses the image centre column and is in front of the camera
        for h in (700.0, 1200.0):
            assert cam.world_to_camera(target + [0, 0, h])[2] > 3000
        uv = cam.world_to_pixels(np.array([target + [0, 0, 700.0], target + [0, 0, 1200.0]]))
        assert np.all(np.abs(uv[:, 0] - cam.c[0]) < 1.0)
        assert any(np.allclose(cam.f, v["f"]) and np.allclose(cam.k, v["k"]) for v in INTRINSICS.values())
    assert np.ptp(azimuths) > 1.0  # not all from one side


def _standing_clip(frames=40, walk=None):
    """A crude 17-joint figure (mm, z up, floor z = 0), optionally walking ``walk`` mm per frame along +y."""
    rng = np.random.default_rng(1)
    body = np.c_[rng.uniform(-200, 200, (17, 2)), rng.uniform(80, 1600, 17)]
    body[0] = (0, 0, 900)
    offsets = np.zeros((frames, 1, 3))
    if walk:
        offsets[:, 0, 1] = np.arange(frames) * walk
    return body[None] + offsets + [2500.0, -7000.0, 0.0]


def test_place_in_volume_recentres_keeps_the_floor_and_the_pose():
    cams = h36m_cameras()
    clip = _standing_clip()
    placed, yaw = place_in_volume(clip, cams)
    assert yaw == 0.0  # a clip that fits is not turned
    np.testing.assert_allclose(placed[:, 0, :2].mean(axis=0), capture_centre(cams)[:2], atol=1e-9)
    np.testing.assert_allclose(placed[..., 2], clip[..., 2])  # heights (and the floor) unchanged
    np.testing.assert_allclose(placed - placed[:, :1], clip - clip[:, :1], atol=1e-9)  # rigid: a translation


def test_long_walk_is_turned_to_stay_in_front_of_every_camera():
    cams = h36m_cameras()
    clip = _standing_clip(frames=300, walk=30.0)  # a 9 m straight walk
    centred = clip - np.r_[clip[:, 0, :2].mean(axis=0), 0.0] + capture_centre(cams)
    depth = min(cam.world_to_camera(centred)[..., 2].min() for cam in cams.values())
    assert depth < MIN_DEPTH_MM  # recentring alone walks it through a camera
    placed, yaw = place_in_volume(clip, cams)
    assert yaw != 0.0
    assert min(cam.world_to_camera(placed)[..., 2].min() for cam in cams.values()) >= MIN_DEPTH_MM
    pairwise = lambda x: np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(pairwise(placed[::50]), pairwise(clip[::50]), atol=1e-6)
    turned = (clip - clip[:1, :1]) @ yaw_matrix(yaw).T
    np.testing.assert_allclose(placed - placed[:1, :1], turned, atol=1e-6)


def test_projection_round_trip_and_distortion():
    cams = h36m_cameras()
    placed, _ = place_in_volume(_standing_clip(), cams)
    uv = project_views(placed, cams)
    assert uv.shape == (4, 40, 17, 2)
    for i, cam in enumerate(cams.values()):
        np.testing.assert_array_equal(uv[i], cam.world_to_pixels(placed))
        cam_xyz = cam.world_to_camera(placed)
        undistorted = cam.project(cam_xyz, distort=False)
        back = cam.camera_to_world(unproject(undistorted, cam_xyz[..., 2], cam.f, cam.c))
        np.testing.assert_allclose(back, placed, atol=1e-6)
        shift = np.linalg.norm(uv[i] - undistorted, axis=-1)
        assert shift.max() > 1.0  # Human3.6M's lenses bend the image by pixels away from the centre
