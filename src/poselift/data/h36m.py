"""Human3.6M readers: VideoPose3D's npz form and 3d-pose-baseline's archive form, plus their 2D detections.

Both forms hold the 32-joint mocap skeleton in world coordinates; we keep the 17 joints of
:data:`poselift.skeleton.H36M32_TO_17`, in mm, with one rig of 4 cameras per subject, and compute each
camera's ground-truth 2D by projecting with lens distortion.

- ``prepare_videopose3d``: ``data_3d_h36m.npz``, key ``positions_3d`` = a pickled dict
  subject -> action -> (F, 32, 3) float32 metres. Cameras: the published table (:mod:`.h36m_cameras`).
- ``prepare_archive``: a folder with ``cameras.h5`` (``subject<N>/camera<M>/{R, T, f, c, k, p, Name}``) and
  ``S<N>/MyPoses/3D_positions/<action>.h5`` (dataset ``3D_positions``, (96, F) = 32 joints x 3, mm).
  Cameras come from ``cameras.h5``.

Protocol (both forms): train S1 S5 S6 S7 S8, test S9 S11; the standard protocol has no validation split.
Subjects outside it (S2, S3, S4, S10, never publicly released) would go to ``validation`` so they never
mix into either. Sequence name = the action key as given (``"Directions 1"``); action label =
:func:`poselift.actions.merge_action`. 50 fps.

S11 "Directions": its camera-54138969 video is corrupted. VideoPose3D leaves this recording out of
``data_3d_h36m.npz`` altogether (3D too), and the published detections lack it (CPN entirely, Stacked
Hourglass for that camera). Both readers drop it, so both forms give the same sequences and every
sequence can have detections for all 4 cameras.

2D detections (for ``poselift import-detections``): VideoPose3D 2D npz files (``positions_2d``: subject ->
action -> list of 4 (F, J, 2) pixel arrays, ``metadata``) and the archive's Stacked Hourglass files
(``S<N>/StackedHourglass[FineTuned240]/<Action_1>.<camera>.h5``, dataset ``poses`` (F, 16, 2)).
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from poselift.actions import merge_action
from poselift.camera import Camera, project
from poselift.data.h36m_cameras import H36M_CAMERA_IDS, INTRINSICS, h36m_rig
from poselift.data.prepared import PreparedDataset, Sequence
from poselift.errors import InputError
from poselift.io import check_finite, open_h5, read_h5_dataset, read_pickled_npz
from poselift.keypoint_formats import COCO17, MPII16, KeypointFormat, to_h36m17
from poselift.skeleton import H36M17, H36M32_TO_17

FPS = 50.0
TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")
KNOWN_SUBJECTS = tuple(f"S{i}" for i in range(1, 12))
PROTOCOL = "Human3.6M: train S1 S5 S6 S7 S8, test S9 S11 (no validation split)"
CORRUPTED = {("S11", "Directions")}  # left out by VideoPose3D (corrupted video of camera 54138969)


def split_of(subject: str) -> str:
    return "train" if subject in TRAIN_SUBJECTS else "test" if subject in TEST_SUBJECTS else "validation"


def canonical_name(name: str) -> str:
    """The archive's / VideoPose3D's spelling of a recording: ``"TakingPhoto 1"`` -> ``"Photo 1"``,
    ``"WalkingDog"`` -> ``"WalkDog"``, underscores -> spaces (Stacked Hourglass file names)."""
    return name.replace("_", " ").replace("TakingPhoto", "Photo").replace("WalkingDog", "WalkDog")


# ---------------------------------------------------------------------------------------------- shared

def project_rig(world: np.ndarray, cameras: list[Camera]) -> np.ndarray:
    """World points (F, J, 3) mm -> pixels (C, F, J, 2) in every camera at once, with distortion."""
    R = np.stack([c.R for c in cameras])[:, None]  # (C, 1, 3, 3)
    T = np.stack([c.T for c in cameras])[:, None, None]  # (C, 1, 1, 3)
    X_cam = np.einsum("cxij,cfxj->cfxi", R, world[None] - T)  # X_cam = R (X - T)
    f = np.stack([c.f for c in cameras])[:, None, None]
    c = np.stack([c.c for c in cameras])[:, None, None]
    k = np.stack([cam.k for cam in cameras]).T[:, :, None, None]  # (3, C, 1, 1): k[i] broadcasts per camera
    p = np.stack([cam.p for cam in cameras]).T[:, :, None, None]
    return project(X_cam, f, c, k, p)


def _sequence(path, subject: str, name: str, positions32_mm: np.ndarray, rig: dict[str, Camera]) -> Sequence:
    """A prepared sequence from one recording's (F, 32, 3) world positions in mm."""
    if positions32_mm.ndim != 3 or positions32_mm.shape[1:] != (32, 3) or positions32_mm.shape[0] == 0:
        raise InputError(path, f"{subject} '{name}': positions have shape {positions32_mm.shape}, "
                               f"expected (F, 32, 3) with F > 0 (the 32-joint Human3.6M skeleton)")
    check_finite(positions32_mm, path, f"{subject} '{name}' positions")
    world = positions32_mm[:, H36M32_TO_17].astype(np.float64)
    cameras = list(rig)
    return Sequence(subject=subject, name=name, action=merge_action(name), split=split_of(subject), rig=subject,
                    cameras=cameras, positions_3d=world.astype(np.float32),
                    positions_2d=project_rig(world, [rig[c] for c in cameras]).astype(np.float32))


def _check_subject(path, subject) -> str:
    if not isinstance(subject, str) or subject not in KNOWN_SUBJECTS:
        raise InputError(path, f"unknown subject {subject!r} (Human3.6M has S1..S11)")
    return subject


def _sort_key(seq: Sequence):
    return int(seq.subject[1:]), seq.name


def _dataset(path, rigs, sequences) -> PreparedDataset:
    if not sequences:
        raise InputError(path, "no Human3.6M recordings found")
    sequences.sort(key=_sort_key)
    return PreparedDataset(dataset="h36m", fps=FPS, rigs=rigs, sequences=sequences, protocol=PROTOCOL,
                           source=str(path))


def _nested(path, data, key: str) -> dict:
    """Check ``data`` is {subject: {action: value}} with known subjects."""
    if not isinstance(data, dict) or not data:
        raise InputError(path, f"'{key}' holds {type(data).__name__}, expected a dict subject -> action -> poses")
    for subject, actions in data.items():
        _check_subject(path, subject)
        if not isinstance(actions, dict):
            raise InputError(path, f"'{key}' [{subject}] holds {type(actions).__name__}, expected a dict of actions")
    return data


def prepare_videopose3d(source: Path, args=None) -> PreparedDataset:
    """``data_3d_h36m.npz`` (or a folder holding it) -> prepared dataset (metres -> mm, table cameras)."""
    path = Path(source)
    if path.is_dir():
        path = path / "data_3d_h36m.npz"
    data = _nested(path, read_pickled_npz(path, ("positions_3d",))["positions_3d"], "positions_3d")
    rigs, sequences = {}, []
    for subject, actions in data.items():
        rigs[subject] = h36m_rig(subject)
        for name, positions in actions.items():
            if (subject, name) in CORRUPTED:
                continue
            if not isinstance(positions, np.ndarray) or positions.dtype.kind != "f":
                raise InputError(path, f"{subject} '{name}' holds {type(positions).__name__}, expected a float array")
            mm = positions.astype(np.float64) * 1000.0
            sequences.append(_sequence(path, subject, str(name), mm, rigs[subject]))
    return _dataset(path, rigs, sequences)


# ------------------------------------------------------------------------ 3d-pose-baseline archive (HDF5)

def _archive_root(source: Path) -> Path:
    """The folder holding the ``S<N>`` folders (the archive unpacks into ``h36m/``)."""
    source = Path(source)
    if not source.is_dir():
        raise InputError(source, "not a folder (expected the 3d-pose-baseline archive layout)")
    if not any(source.glob("S*/")) and (source / "h36m").is_dir():
        return source / "h36m"
    return source


def read_archive_cameras(path: Path, subject: str) -> dict[str, Camera]:
    """The 4 cameras of ``subject`` from 3d-pose-baseline's ``cameras.h5``.

    The file was written by MATLAB (column-major), so its ``R`` reads as the transpose of the world ->
    camera rotation; ``T`` (3, 1) is the camera centre in mm. Image sizes come from the camera id.
    """
    rig = {}
    with open_h5(path) as f:
        number = int(subject[1:])
        for m in range(1, 5):
            where = f"subject{number}/camera{m}"
            group = f.get(where)
            if not isinstance(group, h5py.Group):
                parent = f.get(f"subject{number}")
                has = sorted(parent.keys()) if isinstance(parent, h5py.Group) else sorted(f.keys())
                raise InputError(path, f"missing group '{where}' (has: {', '.join(has) or 'nothing'})")
            missing = [k for k in ("R", "T", "f", "c", "k", "p", "Name") if k not in group]
            if missing:
                raise InputError(path, f"'{where}' lacks {', '.join(missing)} (has: {', '.join(sorted(group))})")
            try:
                values = {k: np.asarray(group[k][()], dtype=np.float64) for k in ("R", "T", "f", "c", "k", "p")}
                name = _camera_name(group["Name"][()])
            except (OSError, ValueError, TypeError) as e:
                raise InputError(path, f"'{where}' is unreadable ({type(e).__name__}: {e})") from None
            sizes = {"R": 9, "T": 3, "f": 2, "c": 2, "k": 3, "p": 2}
            for k, n in sizes.items():
                if values[k].size != n:
                    raise InputError(path, f"'{where}/{k}' has {values[k].size} values, expected {n}")
                check_finite(values[k], path, f"'{where}/{k}'")
            if name not in INTRINSICS:
                raise InputError(path, f"'{where}/Name' is {name!r}, not a Human3.6M camera id "
                                       f"({', '.join(H36M_CAMERA_IDS)})")
            size = INTRINSICS[name]
            rig[name] = Camera(R=values["R"].reshape(3, 3).T, T=values["T"], f=values["f"], c=values["c"],
                               k=values["k"], p=values["p"], width=size["width"], height=size["height"], name=name)
    return rig


def _camera_name(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    codes = np.asarray(value).ravel()
    if codes.dtype.kind in "SU":
        return "".join(c.decode() if isinstance(c, bytes) else str(c) for c in codes)
    return "".join(chr(int(c)) for c in codes)  # MATLAB char array saved as numbers


def read_archive_positions(path: Path) -> np.ndarray:
    """One ``3D_positions`` file -> (F, 32, 3) mm (stored (96, F), joint-major: row 3 j + axis)."""
    with open_h5(path) as f:
        data = read_h5_dataset(f, "3D_positions", path)
    if data.ndim != 2 or data.shape[0] != 96:
        raise InputError(path, f"'3D_positions' has shape {data.shape}, expected (96, F) = 32 joints x 3 per frame")
    return data.reshape(32, 3, -1).transpose(2, 0, 1)


def prepare_archive(source: Path, args=None) -> PreparedDataset:
    """3d-pose-baseline's ``h36m`` folder -> prepared dataset (cameras from its ``cameras.h5``)."""
    root = _archive_root(source)
    cameras_path = root / "cameras.h5"
    if not cameras_path.is_file():
        raise InputError(root, "no cameras.h5 (expected the 3d-pose-baseline archive layout)")
    files = sorted(root.glob("S*/MyPoses/3D_positions/*.h5"))
    if not files:
        raise InputError(root, "no S*/MyPoses/3D_positions/*.h5 files")
    rigs, sequences = {}, []
    for path in files:
        subject = _check_subject(path, path.parents[2].name)
        name = path.stem
        if (subject, name) in CORRUPTED:
            continue
        if subject not in rigs:
            rigs[subject] = read_archive_cameras(cameras_path, subject)
        sequences.append(_sequence(path, subject, name, read_archive_positions(path), rigs[subject]))
    return _dataset(root, rigs, sequences)


# --------------------------------------------------------------------------------------- 2D detections

# 3d-pose-baseline's Stacked Hourglass fine-tuned on Human3.6M (``StackedHourglassFineTuned240``,
# VideoPose3D's ``sh_ft_h36m``) outputs 16 H36M joints in MPII's order: MPII's thorax / upper neck /
# head top slots hold H36M's spine / thorax / head, and there is no neck_nose: we take the mean of
# thorax and head for it (an approximation, the only joint not detected).
def _h36m_in_mpii_order() -> KeypointFormat:
    joints = ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "spine",
              "thorax", "head", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
              "left_wrist")
    weights = np.zeros((H36M17.num_joints, len(joints)))
    for j, name in enumerate(H36M17.names):
        sources = ("thorax", "head") if name == "neck_nose" else (name,)
        weights[j, [joints.index(s) for s in sources]] = 1.0 / len(sources)
    weights.setflags(write=False)
    return KeypointFormat(name="sh_h36m", joints=joints, weights=weights, left=(3, 4, 5, 13, 14, 15),
                          right=(2, 1, 0, 12, 11, 10))


H36M_IN_MPII_ORDER = _h36m_in_mpii_order()

# 2D layouts import-detections understands: name -> (joints, map to H36M-17 or None for H36M-17 itself)
LAYOUTS: dict[str, tuple[int, KeypointFormat | None]] = {
    "h36m": (17, None),  # CPN / Detectron fine-tuned on H36M, VideoPose3D's ground-truth 2D
    "coco": (17, COCO17),  # VideoPose3D's detectron_pt_coco
    "mpii": (16, MPII16),  # Stacked Hourglass pre-trained on MPII (archive StackedHourglass/, sh_pt_mpii)
    "sh_h36m": (16, H36M_IN_MPII_ORDER),  # Stacked Hourglass fine-tuned on H36M (FineTuned240/, sh_ft_h36m)
}


def to_h36m(keypoints: np.ndarray, layout: str) -> np.ndarray:
    """(..., J, 2) keypoints of ``layout`` -> (..., 17, 2) in H36M-17 order."""
    fmt = LAYOUTS[layout][1]
    return keypoints if fmt is None else to_h36m17(keypoints, fmt)


def _guess_layout(path: Path, joints: int, metadata: dict) -> str:
    name = str(metadata.get("layout_name", "")).lower() if isinstance(metadata, dict) else ""
    if name in ("h36m", "coco"):  # VideoPose3D's layout names; the joint count is checked by the caller
        return name
    if joints == 17 and not name:
        return "h36m"
    stem = path.name.lower()
    if joints == 16 and ("ft_h36m" in stem or "finetuned" in stem):
        return "sh_h36m"
    if joints == 16 and ("pt_mpii" in stem or "stackedhourglass" in stem):
        return "mpii"
    raise InputError(path, f"cannot tell the keypoint layout of {joints}-joint detections "
                           f"(layout_name {name or 'absent'}); pass --layout ({', '.join(LAYOUTS)})")


def read_videopose3d_2d(path: Path, layout: str = "auto"):
    """A VideoPose3D 2D npz -> ({(subject, name): [per camera (F, J, 2) float32]}, layout).

    Cameras are listed in the dataset's order (VideoPose3D's camera index); their frame counts may differ.
    """
    path = Path(path)
    data = read_pickled_npz(path, ("positions_2d",), optional=("metadata",))
    positions = _nested(path, data["positions_2d"], "positions_2d")
    metadata = data.get("metadata") or {}
    out, joints = {}, set()
    for subject, actions in positions.items():
        for name, views in actions.items():
            if (subject, name) in CORRUPTED:
                continue
            where = f"{subject} '{name}'"
            if not isinstance(views, (list, tuple)) or not views or any(
                    not isinstance(v, np.ndarray) or v.ndim != 3 or v.shape[-1] != 2 for v in views):
                raise InputError(path, f"{where}: expected a list of per-camera (F, J, 2) arrays")
            views = [v.astype(np.float32) for v in views]
            for c, v in enumerate(views):
                check_finite(v, path, f"{where} camera {c} keypoints")
                joints.add(v.shape[1])
            out[(subject, str(name))] = views
    if len(joints) != 1:
        raise InputError(path, f"sequences have different joint counts {sorted(joints)}")
    (count,) = joints
    declared = metadata.get("num_joints") if isinstance(metadata, dict) else None
    if declared is not None and int(declared) != count:
        raise InputError(path, f"metadata says {declared} joints but the keypoints have {count}")
    layout = _guess_layout(path, count, metadata) if layout == "auto" else layout
    if LAYOUTS[layout][0] != count:
        raise InputError(path, f"layout '{layout}' has {LAYOUTS[layout][0]} joints, the keypoints have {count}")
    return out, layout


_SH_FILE = re.compile(r"^(?P<name>.+)\.(?P<camera>\d{8})\.h5$")


def read_stacked_hourglass(source: Path, layout: str = "auto"):
    """3d-pose-baseline Stacked Hourglass files under ``source`` (``S*/StackedHourglass*/``)
    -> ({(subject, name): {camera id: (F, 16, 2) float32}}, layout)."""
    root = _archive_root(source)
    folders = sorted({p.parent for p in root.glob("S*/StackedHourglass*/*.h5")})
    kinds = sorted({f.name for f in folders})
    if layout == "auto":
        if len(kinds) != 1:
            raise InputError(root, f"found Stacked Hourglass folders {kinds or 'none'}; expected exactly one kind "
                                   f"(or pass --layout mpii for StackedHourglass/, sh_h36m for FineTuned240/)")
        layout = "sh_h36m" if "finetuned" in kinds[0].lower() else "mpii"
    else:
        if layout not in ("mpii", "sh_h36m"):
            raise InputError(root, f"Stacked Hourglass files have 16 joints: layout mpii or sh_h36m, not '{layout}'")
        wanted = [k for k in kinds if ("finetuned" in k.lower()) == (layout == "sh_h36m")]
        if len(wanted) != 1:
            raise InputError(root, f"no single Stacked Hourglass folder for layout '{layout}' "
                                   f"(found {kinds or 'none'})")
        folders = [f for f in folders if f.name == wanted[0]]
    out: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for folder in folders:
        subject = _check_subject(folder, folder.parent.name)
        for path in sorted(folder.glob("*.h5")):
            match = _SH_FILE.match(path.name)
            if not match:
                raise InputError(path, "file name is not <Action>.<camera id>.h5")
            if match["camera"] not in INTRINSICS:
                raise InputError(path, f"unknown camera id {match['camera']} (known: {', '.join(H36M_CAMERA_IDS)})")
            with open_h5(path) as f:
                poses = read_h5_dataset(f, "poses", path, np.float32)
            if poses.ndim != 3 or poses.shape[1:] != (16, 2):
                raise InputError(path, f"'poses' has shape {poses.shape}, expected (F, 16, 2)")
            check_finite(poses, path, "'poses'")
            key = (subject, match["name"].replace("_", " "))
            if key not in CORRUPTED:  # VideoPose3D skips it too (3 of 4 cameras)
                out.setdefault(key, {})[match["camera"]] = poses
    if not out:
        raise InputError(root, "no S*/StackedHourglass*/<Action>.<camera>.h5 files")
    return out, layout
