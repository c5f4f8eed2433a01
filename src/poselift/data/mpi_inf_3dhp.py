"""The MPI-INF-3DHP test set (Mehta et al., 3DV 2017) -> the prepared-dataset layout.

Source: the test-set folder with ``TS1`` .. ``TS6``, each holding ``annot_data.mat``. Those are MATLAB v7.3
files, i.e. HDF5 behind a 512-byte MATLAB header. MATLAB stores arrays column-major, so h5py sees every
array with its axes reversed: MATLAB's 2 x 17 x 1 x F ``annot2`` reads as (F, 1, 17, 2) (the shapes MMPose,
PoseFormer, MixSTE and P-STMO read). What we take from each file:

=============  =================  ==========================================  ========================
dataset        h5py shape         content                                     prepared field
=============  =================  ==========================================  ========================
annot2         (F, 1, 17, 2)      2D joints, pixels                           positions_2d (as given)
univ_annot3    (F, 1, 17, 3)      3D joints, mm, camera frame, "universal"    positions_3d
                                  skeleton (bones rescaled to a common size)
annot3         (F, 1, 17, 3)      3D joints, mm, camera frame, the actor's    positions_3d_metric
                                  own skeleton (annot2 is its projection)
valid_frame    (F, 1)             1 where the annotation is valid             valid
=============  =================  ==========================================  ========================

``positions_3d`` is ``univ_annot3`` because that is what the standard evaluation (PCK@150mm, AUC, MPJPE in
PoseFormer, MixSTE, P-STMO) compares against; ``annot3`` is kept as well because only it is consistent
with the camera and the 2D.

Joints: the 17-joint test layout, mapped to H36M-17 by :mod:`poselift.keypoint_formats` (``mpi_inf_3dhp``:
a pure reordering). Scenes, stored as the action so per-action tables are per-scene tables: TS1-TS2
green screen ("GS"), TS3-TS4 studio without green screen ("noGS"), TS5-TS6 outdoors ("Outdoor"). Every
sequence is split "test"; subject "TS1".., sequence "imageSequence" (the folder of its frames).

Camera: the 3D is camera-frame, so each sequence is its own rig with one camera, R = I and T = 0. Its
intrinsics are fitted to the file's own annot3 -> annot2 pairs (valid frames; linear least squares on
u = f X / Z + c), as MMPose's 3DHP preprocessing does, and checked against the published test-set
calibration in :data:`CALIBRATION` (MMPose's fits of the studio camera agree with it to 0.3 % in f and
5 px in c; the outdoor camera's vertical focal length fits ~0.7 % below the square-pixel value). A fit far
from it, or one that leaves large residuals, means annot2 and annot3 disagree (wrong joint order, mixed
files) and is refused.

Invalid frames are kept (temporal models need contiguous sequences) and flagged by ``valid``; any
non-finite value in one is replaced by the nearest valid frame's pose so it cannot spread through a
temporal receptive field. ``fps`` is stored as 50, the rate P-STMO-style 3DHP loaders declare; the 3DHP
metrics (PCK, AUC, MPJPE) do not use it.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from poselift.camera import Camera, fit_pinhole
from poselift.data.prepared import PreparedDataset, Sequence
from poselift.errors import InputError
from poselift.io import check_finite, open_h5, read_h5_dataset
from poselift.keypoint_formats import MPI_INF_3DHP17, to_h36m17

SEQUENCES = ("TS1", "TS2", "TS3", "TS4", "TS5", "TS6")
SCENES = {"TS1": "GS", "TS2": "GS", "TS3": "noGS", "TS4": "noGS", "TS5": "Outdoor", "TS6": "Outdoor"}
FPS = 50.0
CAMERA = "camera"
SEQUENCE_NAME = "imageSequence"

# The published test-set calibration: focal length and principal-point offset in mm on a sensor 10 mm
# wide, and the image size in pixels (pixels per mm = width / 10).
CALIBRATION = {
    "studio": dict(focal_mm=7.32506, offset_mm=(-0.0322884, 0.0929296), sensor_width_mm=10.0, size=(2048, 2048)),
    "outdoor": dict(focal_mm=8.770747185, offset_mm=(-0.104908645, 0.104899704), sensor_width_mm=10.0,
                    size=(1920, 1080)),
}
FOCAL_TOLERANCE = 0.02  # a fitted focal length may differ this much (relative) from the published one
CENTRE_TOLERANCE_PX = 40.0
MAX_RMS_PX = 5.0  # largest RMS reprojection residual accepted after fitting the intrinsics

# annot3 / univ_annot3 are in mm: the root-neck distance of an adult is ~0.5 m
_ROOT, _NECK = MPI_INF_3DHP17.joints.index("root"), MPI_INF_3DHP17.joints.index("neck")
_TORSO_RANGE_MM = (150.0, 1000.0)


def published_camera(sequence: str) -> Camera:
    """The camera of test sequence ``"TS1"``..``"TS6"`` from the published calibration (square pixels)."""
    cal = CALIBRATION["studio" if sequence in ("TS1", "TS2", "TS3", "TS4") else "outdoor"]
    width, height = cal["size"]
    px_per_mm = width / cal["sensor_width_mm"]
    f = cal["focal_mm"] * px_per_mm
    c = np.array([width / 2, height / 2]) + np.array(cal["offset_mm"]) * px_per_mm
    return Camera(R=np.eye(3), T=np.zeros(3), f=[f, f], c=c, width=width, height=height, name=CAMERA)


def prepare(source: Path, args=None) -> PreparedDataset:
    """Read ``source/TS1..TS6/annot_data.mat`` into a :class:`PreparedDataset` (see the module docstring)."""
    source = Path(source)
    if not source.is_dir():
        raise InputError(source, "expected the MPI-INF-3DHP test-set folder holding TS1 .. TS6")
    missing = [ts for ts in SEQUENCES if not (source / ts).is_dir()]
    if missing:
        raise InputError(source, f"missing test sequence folder(s) {', '.join(missing)} "
                                 f"(the test set has {', '.join(SEQUENCES)})")
    rigs, sequences = {}, []
    for ts in SEQUENCES:
        seq, camera = read_sequence(source / ts / "annot_data.mat", ts)
        rigs[ts] = {CAMERA: camera}
        sequences.append(seq)
    return PreparedDataset(dataset="mpi_inf_3dhp", fps=FPS, rigs=rigs, sequences=sequences,
                           protocol="3DHP test set, univ_annot3 (PCK@150mm, AUC, MPJPE)", source=str(source))


def read_sequence(path: Path, ts: str) -> tuple[Sequence, Camera]:
    """One ``annot_data.mat``: the sequence (H36M-17 joints) and its fitted camera."""
    _refuse_matlab_v5(path)
    with open_h5(path) as f:
        annot2 = _points(f, "annot2", 2, path)
        annot3 = _points(f, "annot3", 3, path)
        univ3 = _points(f, "univ_annot3", 3, path)
        valid = _valid(f, path)
    frames = {len(annot2), len(annot3), len(univ3), len(valid)}
    if len(frames) != 1:
        raise InputError(path, f"frame counts differ: annot2 {len(annot2)}, annot3 {len(annot3)}, "
                               f"univ_annot3 {len(univ3)}, valid_frame {len(valid)}")
    if not valid.any():
        raise InputError(path, "valid_frame marks no frame as valid")
    for name, array in (("annot2", annot2), ("annot3", annot3), ("univ_annot3", univ3)):
        check_finite(array[valid], path, f"{name} (valid frames)")
    for name, array in (("annot3", annot3), ("univ_annot3", univ3)):
        _check_millimetres(array[valid], path, name)
    annot2, annot3, univ3 = _fill_invalid(valid, annot2, annot3, univ3)
    camera = _fit_camera(annot3[valid], annot2[valid], ts, path)
    seq = Sequence(subject=ts, name=SEQUENCE_NAME, action=SCENES[ts], split="test", rig=ts, cameras=[CAMERA],
                   positions_3d=to_h36m17(univ3, MPI_INF_3DHP17).astype(np.float32),
                   positions_2d=to_h36m17(annot2, MPI_INF_3DHP17)[None].astype(np.float32),
                   valid=valid, positions_3d_metric=to_h36m17(annot3, MPI_INF_3DHP17).astype(np.float32))
    return seq, camera


def _refuse_matlab_v5(path: Path) -> None:
    """MATLAB v5 files (``save`` without ``-v7.3``) are not HDF5: say so instead of a bare HDF5 error."""
    if not path.is_file():
        raise InputError(path, "file not found (each test sequence folder holds annot_data.mat)")
    with open(path, "rb") as f:
        header = f.read(116)
    if header.startswith(b"MATLAB 5.0 MAT-file"):
        raise InputError(path, "is a MATLAB v5 MAT-file; this reader needs the MATLAB v7.3 (HDF5) annot_data.mat "
                               "shipped with the 3DHP test set (re-save it in MATLAB with save -v7.3)")


def _points(f: h5py.File, key: str, dims: int, path: Path) -> np.ndarray:
    """(F, 1, 17, D) as h5py reads MATLAB's D x 17 x 1 x F -> (F, 17, D)."""
    array = read_h5_dataset(f, key, path)
    shape = array.shape
    if array.ndim == 4 and shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3 or array.shape[1:] != (MPI_INF_3DHP17.num_joints, dims):
        raise InputError(path, f"'{key}' has shape {shape}, expected (F, 1, 17, {dims}) "
                               f"(MATLAB's {dims} x 17 x 1 x F)")
    return array


def _valid(f: h5py.File, path: Path) -> np.ndarray:
    array = read_h5_dataset(f, "valid_frame", path)
    if array.ndim > 2 or (array.ndim == 2 and 1 not in array.shape):
        raise InputError(path, f"'valid_frame' has shape {array.shape}, expected (F, 1)")
    array = array.reshape(-1)
    if not np.isin(array, (0.0, 1.0)).all():
        raise InputError(path, "'valid_frame' holds values other than 0 and 1")
    return array == 1.0


def _check_millimetres(points: np.ndarray, path: Path, name: str) -> None:
    torso = float(np.median(np.linalg.norm(points[:, _ROOT] - points[:, _NECK], axis=-1)))
    low, high = _TORSO_RANGE_MM
    if not low <= torso <= high:
        raise InputError(path, f"'{name}' does not look like millimetres: median root-neck distance "
                               f"{torso:.4g} (expected {low:g} .. {high:g} mm)")


def _fill_invalid(valid: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """Copy the nearest valid frame into invalid frames that hold any non-finite value."""
    bad = ~valid & ~np.logical_and.reduce([np.isfinite(a).all(axis=(1, 2)) for a in arrays])
    if not bad.any():
        return list(arrays)
    good = np.flatnonzero(valid)
    t = np.arange(len(valid))
    after = np.clip(np.searchsorted(good, t), 0, len(good) - 1)
    before = np.clip(after - 1, 0, len(good) - 1)
    nearest = np.where(np.abs(good[before] - t) <= np.abs(good[after] - t), good[before], good[after])
    out = []
    for a in arrays:
        a = a.copy()
        a[bad] = a[nearest[bad]]
        out.append(a)
    return out


def _fit_camera(annot3: np.ndarray, annot2: np.ndarray, ts: str, path: Path) -> Camera:
    published = published_camera(ts)
    try:
        f, c, rms = fit_pinhole(annot3.reshape(-1, 3), annot2.reshape(-1, 2))
    except ValueError as e:
        raise InputError(path, f"cannot fit the camera intrinsics to annot3 -> annot2: {e}") from None
    fitted = f"fitted f = ({f[0]:.1f}, {f[1]:.1f}), c = ({c[0]:.1f}, {c[1]:.1f})"
    if (np.abs(f / published.f - 1) > FOCAL_TOLERANCE).any() or \
            (np.abs(c - published.c) > CENTRE_TOLERANCE_PX).any():
        raise InputError(path, f"annot2 does not match annot3 through the published {ts} camera ({fitted}; "
                               f"published f = {published.f[0]:.1f}, c = ({published.c[0]:.1f}, "
                               f"{published.c[1]:.1f})); joint orders or frames disagree")
    if rms > MAX_RMS_PX:
        raise InputError(path, f"annot2 does not match annot3: {rms:.1f} px RMS residual after fitting the "
                               f"intrinsics ({fitted}); joint orders or frames disagree")
    return Camera(R=np.eye(3), T=np.zeros(3), f=f, c=c, width=published.width, height=published.height,
                  name=CAMERA)
