"""Virtual camera rigs for motion capture without video: Human3.6M's four calibrated cameras, and random
cameras for augmentation.

- :func:`h36m_cameras` is the fixed rig of the open benchmark: the four cameras of one Human3.6M subject,
  published intrinsics (with distortion) and extrinsics, in Human3.6M's world frame (mm, z up, floor z = 0).
- :func:`place_in_volume` moves a clip into that rig's capture volume: its mean horizontal pelvis position
  goes to :func:`capture_centre`, the floor stays at z = 0, and the clip may be turned about the vertical
  axis (a rigid motion: poses and trajectory shape are unchanged) when its path would otherwise run
  through or behind a camera.
- :func:`random_rig` draws cameras at random azimuth, distance and height that look at the subject, each
  with the intrinsics of one Human3.6M camera, for "infinite 2D-3D pairs by setting different camera views".
"""

from __future__ import annotations

import numpy as np

from poselift.camera import Camera
from poselift.data.h36m_cameras import H36M_CAMERA_IDS, INTRINSICS, h36m_rig

RIG_SUBJECT = "S1"  # whose camera placement the benchmark uses (the rig moved by centimetres between subjects)
MIN_DEPTH_MM = 1000.0  # every joint stays at least this far in front of every camera, where possible
YAW_STEP_DEG = 15.0


def h36m_cameras(subject: str = RIG_SUBJECT) -> dict[str, Camera]:
    """The four Human3.6M cameras of ``subject``, keyed by camera id."""
    return h36m_rig(subject)


def capture_centre(cameras: dict[str, Camera]) -> np.ndarray:
    """Centre of the capture volume on the floor: the point nearest (least squares) to all optical axes,
    dropped to z = 0. For Human3.6M's S1 rig it is about (-59, 320, 0) mm."""
    a, b = np.zeros((3, 3)), np.zeros(3)
    for cam in cameras.values():
        axis = cam.R[2]  # the camera's z axis (viewing direction) in world coordinates
        proj = np.eye(3) - np.outer(axis, axis)
        a += proj
        b += proj @ cam.T
    centre = np.linalg.solve(a, b)
    centre[2] = 0.0
    return centre


def yaw_matrix(angle: float | np.ndarray) -> np.ndarray:
    """Rotation(s) by ``angle`` radians about the world z axis -> (..., 3, 3)."""
    c, s = np.cos(angle), np.sin(angle)
    m = np.zeros(np.shape(angle) + (3, 3))
    m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1], m[..., 2, 2] = c, -s, s, c, 1.0
    return m


def place_in_volume(positions: np.ndarray, cameras: dict[str, Camera], pelvis: int = 0,
                    sample_every: int = 5) -> tuple[np.ndarray, float]:
    """Move a clip (F, J, 3) (mm, z up, floor z = 0) into the rig's capture volume; returns it and the yaw.

    The clip's mean horizontal pelvis position goes to :func:`capture_centre`. Long walks would still leave
    the volume, some through a camera; so the clip is turned about the vertical through that centre by
    the multiple of 15 degrees that keeps every joint at least ``MIN_DEPTH_MM`` in front of every camera
    and, among those, keeps the most frames fully inside all images (ties: the smallest turn, so clips
    that stay in the volume are not turned). Scored on every ``sample_every``-th frame.
    """
    centred = positions - np.r_[positions[:, pelvis, :2].mean(axis=0), 0.0]
    angles = np.deg2rad(np.arange(0.0, 360.0, YAW_STEP_DEG))
    angles = angles[np.argsort(np.minimum(angles, 2 * np.pi - angles), kind="stable")]  # 0, 15, 345, 30, ...
    centre = capture_centre(cameras)
    candidates = np.einsum("aij,fkj->afki", yaw_matrix(angles), centred[::sample_every]) + centre  # (A,F,J,3)
    depth_ok = np.full(len(angles), np.inf)
    inside = np.ones(candidates.shape[:2], dtype=bool)
    for cam in cameras.values():
        cam_xyz = cam.world_to_camera(candidates)
        depth_ok = np.minimum(depth_ok, cam_xyz[..., 2].min(axis=(1, 2)))
        inside &= in_image(cam.project(np.where(cam_xyz[..., 2:] > 0, cam_xyz, np.nan)), cam).all(axis=-1)
    in_front = depth_ok >= MIN_DEPTH_MM
    score = np.where(in_front, inside.sum(axis=1), -1)  # frames fully in view, only where all in front
    best = int(np.argmax(score)) if in_front.any() else int(np.argmax(depth_ok))
    return centred @ yaw_matrix(angles[best]).T + centre, float(angles[best])


def in_image(uv: np.ndarray, cam: Camera) -> np.ndarray:
    """(..., 2) pixels -> (...) bool: inside the image (NaN counts as outside)."""
    with np.errstate(invalid="ignore"):
        return (uv[..., 0] >= 0) & (uv[..., 0] < cam.width) & (uv[..., 1] >= 0) & (uv[..., 1] < cam.height)


def project_views(positions: np.ndarray, cameras: dict[str, Camera], distort: bool = True) -> np.ndarray:
    """World joints (F, J, 3) -> pixels (C, F, J, 2) in every camera, with lens distortion by default."""
    return np.stack([cam.world_to_pixels(positions, distort=distort) for cam in cameras.values()])


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """World -> camera rotation of a camera at ``eye`` looking at ``target`` with no roll
    (camera axes x right, y down, z forward)."""
    z = np.asarray(target, dtype=np.float64) - np.asarray(eye, dtype=np.float64)
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def random_rig(rng: np.random.Generator, n: int, target=None, distance=(3500.0, 6500.0),
               height=(800.0, 2400.0), target_height=(700.0, 1200.0)) -> dict[str, Camera]:
    """``n`` cameras looking at the subject from random directions, reproducible from ``rng``.

    Each camera sits at a uniform random azimuth, horizontal distance (mm) and height above the floor
    around ``target`` (x, y on the floor; default the Human3.6M capture centre), aims at a point a random
    ``target_height`` above it, and copies the intrinsics (focal length, principal point, distortion,
    image size) of a randomly chosen Human3.6M camera. Keys: ``random-0`` .. ``random-{n-1}``.
    """
    if target is None:
        target = capture_centre(h36m_cameras())
    target = np.asarray(target, dtype=np.float64)
    cams = {}
    for i in range(n):
        azimuth = rng.uniform(0.0, 2 * np.pi)
        eye = target[:2] + rng.uniform(*distance) * np.array([np.cos(azimuth), np.sin(azimuth)])
        eye = np.r_[eye, rng.uniform(*height)]
        aim = np.r_[target[:2], rng.uniform(*target_height)]
        intrinsics = INTRINSICS[H36M_CAMERA_IDS[rng.integers(len(H36M_CAMERA_IDS))]]
        cams[f"random-{i}"] = Camera(R=look_at(eye, aim), T=eye, name=f"random-{i}", **intrinsics)
    return cams
