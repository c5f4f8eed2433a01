"""HumanEva-I (Sigal et al., IJCV 2010) in VideoPose3D's ``humaneva15`` npz form -> the prepared-dataset layout.

Source: a folder holding VideoPose3D's two files (or the 3D file itself, with the 2D file beside it):

- ``data_3d_humaneva15.npz``: ``positions_3d`` = {subject: {sequence: (F, 15, 3) metres, world frame}}
- ``data_2d_humaneva15_gt.npz``: ``positions_2d`` = {subject: {sequence: [C1, C2, C3], each (F, 15, 2) px}}

Both are pickled dicts (read here with an unpickler that builds only containers and numpy arrays).
VideoPose3D's ``prepare_data_humaneva.py`` names subjects ``"Train/S1"`` .. ``"Validate/S3"``: each
HumanEva-I recording is cut into the dataset's training part and its validation part (which HumanEva
papers test on), and each part into ``chunk``s where the motion capture dropped out, giving sequences
such as ``"Walking 1 chunk0"``.

Prepared form: subject ``"S1"``, sequence ``"Train Walking 1 chunk0"`` / ``"Validate Walking 1 chunk0"``,
split "train" for ``Train/`` and "test" for ``Validate/``, action ``"Walk"`` / ``"Jog"``, 60 fps, lengths
in mm. Only Walk and Jog are kept: the protocol of MixSTE and the methods it compares with (VideoPose3D
also reports Box; :data:`ACTIONS` is the one place to change that).

Joints: VideoPose3D's HumanEva-15 order (:data:`HUMANEVA15`; parents -1 0 1 2 3 1 5 6 0 8 9 0 11 12 1)
to H36M-17: fifteen joints are copied; H36M's spine is the midpoint of pelvis and thorax and its
neck_nose the midpoint of thorax and head, in 3D and in 2D alike (averaging pixels, as
:mod:`poselift.keypoint_formats` does for detections, differs from projecting the 3D midpoint by under a
pixel at HumanEva's ~4 m distances, and keeps the dataset's lens distortion). Those two are not
measurements: evaluate on :data:`MEASURED_JOINTS`, as the HumanEva protocol does on its 15 joints.

Cameras: one rig per subject (the extrinsics differ by subject) with C1, C2, C3 (640 x 480). Extrinsics
are VideoPose3D's (``humaneva_dataset.py``): a quaternion (w, x, y, z) rotating camera into world axes and
the camera centre in mm, so ``R`` = rotation(q)^T. VideoPose3D has no intrinsics (its 2D comes from the
dataset), so f and c are fitted to the 2D ground truth by least squares (pinhole; the dataset's lens
distortion stays in the residual). A bad fit means the 2D and 3D disagree and is refused.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from poselift.camera import Camera, fit_pinhole, quaternion_to_matrix
from poselift.data.prepared import PreparedDataset, Sequence
from poselift.errors import InputError
from poselift.io import check_finite, read_pickled_npz
from poselift.skeleton import H36M17

FILE_3D = "data_3d_humaneva15.npz"
FILE_2D = "data_2d_humaneva15_gt.npz"
FPS = 60.0
CAMERAS = ("C1", "C2", "C3")
WIDTH, HEIGHT = 640, 480
SPLITS = {"Train": "train", "Validate": "test"}
# HumanEva-I's recording names -> the action labels of HumanEva tables; only those in ACTIONS are kept
ACTION_LABELS = {"Walking": "Walk", "Jog": "Jog", "Box": "Box", "Gestures": "Gestures", "ThrowCatch": "ThrowCatch"}
ACTIONS = ("Walk", "Jog")

HUMANEVA15 = ("pelvis", "thorax", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow",
              "right_wrist", "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee", "right_ankle", "head")
_INTERPOLATED = {"spine": ("pelvis", "thorax"), "neck_nose": ("thorax", "head")}


def _mapping() -> np.ndarray:
    """(17, 15) weights: H36M-17 joint j = sum_k W[j, k] * HumanEva joint k."""
    w = np.zeros((H36M17.num_joints, len(HUMANEVA15)))
    for j, name in enumerate(H36M17.names):
        sources = _INTERPOLATED.get(name, (name,))
        for s in sources:
            w[j, HUMANEVA15.index(s)] = 1.0 / len(sources)
    return w


HUMANEVA15_TO_H36M17 = _mapping()
MEASURED_JOINTS = np.array([j for j, n in enumerate(H36M17.names) if n not in _INTERPOLATED])

# VideoPose3D's HumanEva-I extrinsics: orientation quaternion (w, x, y, z) camera -> world, camera centre (mm)
_S1_S3 = (
    ((0.424207, -0.4983646, -0.5802981, 0.4847012), (4062.227, 663.2477, 1528.397)),
    ((0.6503354, -0.7481602, -0.0919284, 0.0941766), (844.8131, -3805.2092, 1504.9929)),
    ((0.0664734, -0.0690535, 0.7416416, -0.6639132), (-797.67377, 3916.3174, 1433.6602)),
)
EXTRINSICS = {
    "S1": _S1_S3,
    "S2": (
        ((0.4214752, -0.4961493, -0.5838273, 0.4851187), (4112.9121, 626.4929, 1545.2988)),
        ((0.6501393, -0.7476588, -0.0954617, 0.0959808), (923.5740, -3877.9243, 1504.5518)),
        ((0.0699353, -0.0712403, 0.7421637, -0.662742), (-781.4915, 3838.8853, 1444.9929)),
    ),
    "S3": _S1_S3,  # VideoPose3D gives S3 the S1 calibration (to its last digits)
}

MAX_RMS_PX = 15.0  # largest RMS residual of the pinhole fit accepted (leaves room for lens distortion)
_TORSO_RANGE_M = (0.2, 1.0)  # pelvis-thorax distance of an adult, metres


def extrinsics(subject: str, camera: str) -> tuple[np.ndarray, np.ndarray]:
    """(R world -> camera, T camera centre in mm) of ``camera`` ("C1".."C3") for ``subject`` ("S1".."S3")."""
    q, centre = EXTRINSICS[subject][CAMERAS.index(camera)]
    return quaternion_to_matrix(q).T, np.array(centre, dtype=np.float64)


def prepare(source: Path, args=None) -> PreparedDataset:
    """Read VideoPose3D's HumanEva-15 npz files into a :class:`PreparedDataset` (see the module docstring)."""
    source = Path(source)
    path_3d = source / FILE_3D if source.is_dir() else source
    path_2d = path_3d.parent / FILE_2D
    for path in (path_3d, path_2d):
        if not path.is_file():
            raise InputError(path, f"file not found (HumanEva-I needs VideoPose3D's {FILE_3D} and {FILE_2D})")
    poses_3d = _pickled_dict(path_3d, "positions_3d")
    poses_2d = _pickled_dict(path_2d, "positions_2d")
    metadata = _pickled_dict(path_2d, "metadata")
    if metadata.get("num_joints", len(HUMANEVA15)) != len(HUMANEVA15):
        raise InputError(path_2d, f"metadata says {metadata.get('num_joints')} joints, expected 15 (humaneva15)")

    sequences, raw = [], {}  # raw: (subject, name) -> (3D mm (F, 15, 3), 2D px (3, F, 15, 2))
    for key in sorted(poses_3d):
        part, subject = _subject(key, path_3d)
        if not isinstance(poses_3d[key], dict):
            raise InputError(path_3d, f"'{key}' holds a {type(poses_3d[key]).__name__}, expected a dict of sequences")
        for name in sorted(poses_3d[key]):
            action = _action(name, path_3d, key)
            if action not in ACTIONS:
                continue
            p3, p2 = _sequence_arrays(poses_3d, poses_2d, key, name, path_3d, path_2d)
            seq_name = f"{part} {name}"
            raw[(subject, seq_name)] = (p3, p2)
            sequences.append(Sequence(
                subject=subject, name=seq_name, action=action, split=SPLITS[part], rig=subject,
                cameras=list(CAMERAS), positions_3d=to_h36m17(p3), positions_2d=to_h36m17(p2)))
    if not sequences:
        raise InputError(path_3d, f"no {' or '.join(ACTIONS)} sequences of subjects {', '.join(EXTRINSICS)}")
    rigs = {subject: _fit_rig(subject, [v for (s, _), v in raw.items() if s == subject], path_2d)
            for subject in sorted({s.subject for s in sequences})}
    return PreparedDataset(dataset="humaneva", fps=FPS, rigs=rigs, sequences=sequences,
                           protocol="HumanEva-I Walk+Jog; train Train/S1-S3, test Validate/S1-S3 (VideoPose3D split)",
                           source=str(path_3d))


def to_h36m17(points: np.ndarray) -> np.ndarray:
    """HumanEva-15 joints (..., 15, D) -> H36M-17 (..., 17, D) float32 (copies plus two midpoints)."""
    return (HUMANEVA15_TO_H36M17 @ points).astype(np.float32)


def _pickled_dict(path: Path, key: str) -> dict:
    """The dict pickled as ``key`` of the npz archive ``path`` (what ``np.savez(key=dict)`` writes)."""
    value = read_pickled_npz(path, (key,))[key]
    if not isinstance(value, dict):
        raise InputError(path, f"'{key}' holds a {type(value).__name__}, expected a dict")
    return value


def _subject(key: str, path: Path) -> tuple[str, str]:
    """``"Train/S1"`` -> ("Train", "S1"), refusing parts and subjects without published cameras."""
    part, _, subject = str(key).partition("/")
    if part not in SPLITS or subject not in EXTRINSICS:
        raise InputError(path, f"unknown subject '{key}' (expected Train/ or Validate/ with "
                               f"{', '.join(EXTRINSICS)}; VideoPose3D has no cameras for others)")
    return part, subject


def _action(name: str, path: Path, subject: str) -> str:
    """``"Walking 1 chunk0"`` -> ``"Walk"``."""
    match = re.fullmatch(r"(\w+) \d+ chunk\d+", str(name))
    if not match or match.group(1) not in ACTION_LABELS:
        raise InputError(path, f"unknown sequence '{subject}/{name}' (expected e.g. 'Walking 1 chunk0' with "
                               f"an action among {', '.join(ACTION_LABELS)})")
    return ACTION_LABELS[match.group(1)]


def _sequence_arrays(poses_3d, poses_2d, key, name, path_3d, path_2d) -> tuple[np.ndarray, np.ndarray]:
    """Checked 3D in mm (F, 15, 3) and 2D in pixels (3, F, 15, 2) of one sequence."""
    where = f"{key}/{name}"
    p3 = np.asarray(poses_3d[key][name])
    if p3.ndim != 3 or p3.shape[1:] != (len(HUMANEVA15), 3) or not np.issubdtype(p3.dtype, np.number):
        raise InputError(path_3d, f"{where} has shape {p3.shape}, expected (F, 15, 3)")
    check_finite(p3, path_3d, where)
    torso = float(np.median(np.linalg.norm(p3[:, 0] - p3[:, 1], axis=-1)))
    if not _TORSO_RANGE_M[0] <= torso <= _TORSO_RANGE_M[1]:
        raise InputError(path_3d, f"{where} does not look like metres: median pelvis-thorax distance {torso:.4g} "
                                  f"(expected {_TORSO_RANGE_M[0]:g} .. {_TORSO_RANGE_M[1]:g})")
    views = poses_2d.get(key, {}).get(name)
    if views is None:
        raise InputError(path_2d, f"no 2D ground truth for {where}")
    if len(views) != len(CAMERAS) or any(v is None for v in views):
        raise InputError(path_2d, f"{where} has 2D for {len(views)} views, expected {len(CAMERAS)} (C1, C2, C3)")
    shapes = {np.shape(v) for v in views}
    if shapes != {(len(p3), len(HUMANEVA15), 2)}:
        shapes = ", ".join(str(np.shape(v)) for v in views)
        raise InputError(path_2d, f"{where} 2D views have shapes {shapes}, expected ({len(p3)}, 15, 2) each")
    p2 = np.stack([np.asarray(v, dtype=np.float64) for v in views])
    check_finite(p2, path_2d, f"{where} 2D")
    return p3.astype(np.float64) * 1000.0, p2


def _fit_rig(subject: str, arrays: list[tuple[np.ndarray, np.ndarray]], path_2d: Path) -> dict[str, Camera]:
    """Fit each camera's intrinsics to all of the subject's 3D (through the extrinsics) and 2D."""
    world = np.concatenate([p3 for p3, _ in arrays]).reshape(-1, 3)
    rig = {}
    for i, name in enumerate(CAMERAS):
        R, T = extrinsics(subject, name)
        pixels = np.concatenate([p2[i] for _, p2 in arrays]).reshape(-1, 2)
        try:
            f, c, rms = fit_pinhole((world - T) @ R.T, pixels)
        except ValueError as e:
            raise InputError(path_2d, f"{subject} camera {name}: cannot fit intrinsics ({e})") from None
        if (f <= 0).any() or not (0 <= c[0] <= WIDTH and 0 <= c[1] <= HEIGHT) or rms > MAX_RMS_PX:
            raise InputError(path_2d, f"{subject} camera {name}: the 2D ground truth is not the 3D seen from "
                                      f"VideoPose3D's extrinsics (fitted f = ({f[0]:.1f}, {f[1]:.1f}), "
                                      f"c = ({c[0]:.1f}, {c[1]:.1f}), RMS {rms:.1f} px); cameras or subjects mixed up?")
        rig[name] = Camera(R=R, T=T, f=f, c=c, width=WIDTH, height=HEIGHT, name=name)
    return rig
