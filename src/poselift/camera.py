"""The Human3.6M camera model: pinhole intrinsics with radial and tangential distortion, and extrinsics
as a rotation plus the camera centre.

Conventions (those of the Human3.6M metadata and the 3d-pose-baseline ``cameras.h5``):

- ``R`` (3, 3) rotates world into camera axes; ``T`` (3,) is the camera centre in world coordinates (mm):
  ``X_cam = R (X_world - T)``. Camera axes: x right, y down, z forward (depth).
- ``f`` (2,) focal lengths and ``c`` (2,) principal point in pixels; ``k`` (3,) radial and ``p`` (2,)
  tangential coefficients in the order of Human3.6M's metadata (see :func:`project`).

All functions take numpy arrays of any leading shape (..., 3) and broadcast.

:func:`load_mmpose_cameras` / :func:`camera_from_mmpose` read MMPose's ``cameras.pkl``, whose ``R`` is
the transpose (camera -> world) and whose ``T`` is in metres.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from poselift.errors import InputError
from poselift.io import SafeUnpickler


@dataclass
class Camera:
    """One calibrated camera. Lengths in mm, image quantities in pixels."""

    R: np.ndarray
    T: np.ndarray
    f: np.ndarray
    c: np.ndarray
    k: np.ndarray = field(default_factory=lambda: np.zeros(3))
    p: np.ndarray = field(default_factory=lambda: np.zeros(2))
    width: int = 1000
    height: int = 1000
    name: str = ""

    def __post_init__(self):
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.T = np.asarray(self.T, dtype=np.float64).reshape(3)
        self.f = np.asarray(self.f, dtype=np.float64).reshape(2)
        self.c = np.asarray(self.c, dtype=np.float64).reshape(2)
        self.k = np.asarray(self.k, dtype=np.float64).reshape(3)
        self.p = np.asarray(self.p, dtype=np.float64).reshape(2)
        self.width, self.height = int(self.width), int(self.height)

    def world_to_camera(self, X):
        return world_to_camera(X, self.R, self.T)

    def camera_to_world(self, X):
        return camera_to_world(X, self.R, self.T)

    def project(self, X_cam, distort: bool = True):
        """Camera-frame points (..., 3) in mm -> pixels (..., 2)."""
        return project(X_cam, self.f, self.c, self.k if distort else None, self.p if distort else None)

    def world_to_pixels(self, X_world, distort: bool = True):
        return self.project(self.world_to_camera(X_world), distort=distort)

    def normalize(self, uv):
        """Pixels -> VideoPose3D screen coordinates (x in [-1, 1], aspect ratio kept)."""
        return normalize_screen_coordinates(uv, self.width, self.height)

    def to_dict(self) -> dict[str, np.ndarray | int | str]:
        return dict(R=self.R, T=self.T, f=self.f, c=self.c, k=self.k, p=self.p,
                    width=self.width, height=self.height, name=self.name)


def world_to_camera(X, R, T):
    """X_cam = R (X_world - T), for points (..., 3)."""
    return (X - T) @ R.T


def camera_to_world(X, R, T):
    """Inverse of :func:`world_to_camera`: X_world = R^T X_cam + T."""
    return X @ R + T


def project(X_cam, f, c, k=None, p=None):
    """Perspective projection with Human3.6M's radial and tangential distortion.

    With (x, y) = (X/Z, Y/Z), r^2 = x^2 + y^2 and p in the dataset's metadata order:
      radial  = 1 + k1 r^2 + k2 r^4 + k3 r^6
      tan     = p1 y + p2 x
      x'      = x (radial + tan) + p2 r^2
      y'      = y (radial + tan) + p1 r^2
      (u, v)  = f (x', y') + c
    This is the model the Human3.6M 2D annotations were made with (the fixture's 2D is reproduced to
    1e-4 px; OpenCV's Brown-Conrady tangential term differs from it by up to 0.2 px on Human3.6M).
    """
    xy = X_cam[..., :2] / X_cam[..., 2:3]
    if k is not None or p is not None:
        x, y = xy[..., 0], xy[..., 1]
        r2 = x * x + y * y
        radial = 1.0
        if k is not None:
            radial = 1.0 + k[0] * r2 + k[1] * r2 * r2 + k[2] * r2 * r2 * r2
        tan = p[0] * y + p[1] * x if p is not None else 0.0
        xd, yd = x * (radial + tan), y * (radial + tan)
        if p is not None:
            xd, yd = xd + p[1] * r2, yd + p[0] * r2
        xy = np.stack([xd, yd], axis=-1)
    return xy * f + c


def unproject(uv, depth, f, c):
    """Back-project undistorted pixels (..., 2) at camera depth (...) to camera-frame points (..., 3)."""
    xy = (uv - c) / f
    return np.stack([xy[..., 0] * depth, xy[..., 1] * depth, depth], axis=-1)


def fit_pinhole(points_cam: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares pinhole intrinsics from camera-frame points (N, 3) and their pixels (N, 2).

    Per image axis, u = f x / z + c is linear in (f, c). Returns f (2,), c (2,) and the RMS residual in
    pixels. Points with z <= 0 are ignored.
    """
    front = points_cam[:, 2] > 0
    xy = points_cam[front, :2] / points_cam[front, 2:3]
    uv = pixels[front]
    if len(xy) < 3:
        raise ValueError("fewer than 3 points in front of the camera")
    f, c = np.empty(2), np.empty(2)
    for axis in (0, 1):
        design = np.stack([xy[:, axis], np.ones(len(xy))], axis=1)
        (f[axis], c[axis]), *_ = np.linalg.lstsq(design, uv[:, axis], rcond=None)
    rms = float(np.sqrt(np.mean(np.sum((xy * f + c - uv) ** 2, axis=-1))))
    return f, c, rms


def quaternion_to_matrix(q) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> the 3x3 rotation matrix that applies it to column vectors."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def normalize_screen_coordinates(uv, width: int, height: int):
    """VideoPose3D's normalisation: [0, w] -> [-1, 1] on x, the same scale on y (keeps the aspect ratio)."""
    return (uv / width * 2 - np.array([1.0, height / width])).astype(uv.dtype)


def image_coordinates(xy, width: int, height: int):
    """Inverse of :func:`normalize_screen_coordinates`."""
    return ((xy + np.array([1.0, height / width])) * width / 2).astype(xy.dtype)



def camera_from_mmpose(entry: dict, name: str = "") -> Camera:
    """A :class:`Camera` from one entry of MMPose's ``cameras.pkl`` (its H36M / MPI-INF-3DHP preprocessing).

    MMPose stores ``R`` camera -> world (its ``SimpleCamera`` transposes it to get world -> camera) and
    ``T`` = the camera centre in world coordinates in metres, so ``R = entry['R'].T`` and
    ``T = 1000 * entry['T']`` (mm). ``f``, ``c`` (pixels) are required; ``k``, ``p`` default to 0 (3DHP
    has none) and ``R``, ``T`` to the identity and 0 (3DHP's test cameras, whose poses are given in
    camera coordinates). Raises ``KeyError`` naming a missing key.
    """
    missing = [key for key in ("f", "c") if key not in entry]
    if missing:
        raise KeyError(f"MMPose camera entry lacks {', '.join(missing)}")
    return Camera(
        R=np.asarray(entry.get("R", np.eye(3)), dtype=np.float64).reshape(3, 3).T,
        T=np.asarray(entry.get("T", np.zeros(3)), dtype=np.float64).reshape(3) * 1000.0,
        f=entry["f"], c=entry["c"],
        k=entry.get("k", np.zeros(3)), p=entry.get("p", np.zeros(2)),
        width=entry.get("w", 1000), height=entry.get("h", 1000),
        name=name or str(entry.get("name", "")),
    )


def load_mmpose_cameras(path: str | os.PathLike) -> dict[str, Camera]:
    """All cameras of an MMPose ``cameras.pkl``, keyed ``"S1_54138969"`` (its keys are (subject, id)
    tuples for H36M, strings such as ``"TS1"`` for MPI-INF-3DHP)."""
    if not os.path.isfile(path):
        raise InputError(path, "file not found")
    try:
        with open(path, "rb") as f:
            table = SafeUnpickler(f).load()
    except Exception as e:  # any unpickling failure is a bad file
        raise InputError(path, f"not a readable MMPose cameras pickle ({type(e).__name__}: {e})") from None
    if not isinstance(table, dict) or not table:
        raise InputError(path, "expected a non-empty dict of cameras")
    cameras = {}
    for key, entry in table.items():
        name = "_".join(map(str, key)) if isinstance(key, tuple) else str(key)
        if not isinstance(entry, dict):
            raise InputError(path, f"camera {name} is not a dict")
        try:
            cameras[name] = camera_from_mmpose(entry, name=name)
        except (KeyError, ValueError, TypeError) as e:
            raise InputError(path, f"camera {name}: {e}") from None
    return cameras
