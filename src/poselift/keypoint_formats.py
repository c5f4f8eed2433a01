"""Other 2D/3D keypoint layouts mapped onto the Human3.6M-17 joints of :data:`poselift.skeleton.H36M17`.

Each layout with K joints is mapped by a (17, K) weight matrix W whose rows sum to 1: H36M joint j is
``sum_k W[j, k] * x_k``. A joint the layout has is copied (one weight 1); a joint it lacks is the mean
of joints it has. Layouts (joint orders as in MMPose's dataset configs):

- ``coco``: COCO-17. Interpolation as in MMPose's COCO -> Human3.6M conversion for its 2D -> 3D lifting
  demo: pelvis = mean of the hips, thorax = mean of the shoulders, spine = mean of pelvis and thorax
  (so a quarter of each hip and shoulder), head = mean of the eyes, neck_nose = the nose.
- ``mpii``: MPII-16. pelvis, thorax are annotated; spine = mean of pelvis and thorax;
  neck_nose = upper_neck; head = head_top. (3d-pose-baseline's fine-tuned stacked hourglass instead
  emits H36M joints in MPII order; that is an H36M layout, not this one.)
- ``mpi_inf_3dhp``: the 17-joint MPI-INF-3DHP test-set layout (``annot_data.mat``; MMPose, PoseFormer,
  MixSTE): head_top, neck, right_shoulder, right_elbow, right_wrist, left_shoulder, left_elbow,
  left_wrist, right_hip, right_knee, right_ankle, left_hip, left_knee, left_ankle, root, spine, head.
  It is the H36M joint set reordered, with three joints named differently:
  3DHP head_top -> H36M head, 3DHP neck -> H36M thorax, 3DHP head -> H36M neck_nose
  (root -> pelvis, spine -> spine; the correspondence HybrIK and cross-dataset evaluations use).
- ``blazepose``: MediaPipe Pose's 33 landmarks, with COCO's choices for the joints it lacks
  (pelvis, spine, thorax from hips/shoulders, head = mean of left_eye and right_eye, neck_nose = nose).

Scores: a copied joint keeps its score; an interpolated joint gets the MIN of its sources' scores, so
it is only as trustworthy as its least visible source (see :func:`scores_to_h36m17`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poselift.skeleton import H36M17, swap_permutation


@dataclass(frozen=True, eq=False)
class KeypointFormat:
    """A keypoint layout: its joint names in order, left/right twins, and the (17, K) map to H36M-17."""

    name: str
    joints: tuple[str, ...]
    weights: np.ndarray
    left: tuple[int, ...]
    right: tuple[int, ...]

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def flip_permutation(self) -> np.ndarray:
        """Index array swapping every left joint of this layout with its right twin."""
        return swap_permutation(self.num_joints, self.left, self.right)


def _format(name: str, joints: tuple[str, ...], sources: dict[str, tuple[str, ...]]) -> KeypointFormat:
    """Build a format from {H36M joint: source joints averaged with equal weights}.

    H36M joints not in ``sources`` are copied from the layout's joint of the same name. Left/right twins
    are found by name: swapping the words "left" and "right" (``left_eye`` <-> ``right_eye``,
    ``mouth_left`` <-> ``mouth_right``).
    """
    w = np.zeros((H36M17.num_joints, len(joints)))
    for j, h36m_name in enumerate(H36M17.names):
        src = sources.get(h36m_name, (h36m_name,))
        for s in src:
            w[j, joints.index(s)] += 1.0 / len(src)
    w.setflags(write=False)
    left = tuple(i for i, n in enumerate(joints) if "left" in n.split("_"))
    right = tuple(joints.index("_".join("right" if w == "left" else w for w in joints[i].split("_")))
                  for i in left)
    return KeypointFormat(name, joints, w, left, right)


_HIPS = ("left_hip", "right_hip")
_SHOULDERS = ("left_shoulder", "right_shoulder")

COCO17 = _format(
    "coco",
    ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
     "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
     "left_knee", "right_knee", "left_ankle", "right_ankle"),
    {"pelvis": _HIPS, "spine": _HIPS + _SHOULDERS, "thorax": _SHOULDERS,
     "neck_nose": ("nose",), "head": ("left_eye", "right_eye")},
)

MPII16 = _format(
    "mpii",
    ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
     "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder",
     "left_elbow", "left_wrist"),
    {"spine": ("pelvis", "thorax"), "neck_nose": ("upper_neck",), "head": ("head_top",)},
)

MPI_INF_3DHP17 = _format(
    "mpi_inf_3dhp",
    ("head_top", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
     "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
     "root", "spine", "head"),
    {"pelvis": ("root",), "thorax": ("neck",), "neck_nose": ("head",), "head": ("head_top",)},
)

BLAZEPOSE33 = _format(
    "blazepose",
    ("nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
     "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
     "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
     "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
     "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
     "left_foot_index", "right_foot_index"),
    {"pelvis": _HIPS, "spine": _HIPS + _SHOULDERS, "thorax": _SHOULDERS,
     "neck_nose": ("nose",), "head": ("left_eye", "right_eye")},
)

FORMATS: dict[str, KeypointFormat] = {f.name: f for f in (COCO17, MPII16, MPI_INF_3DHP17, BLAZEPOSE33)}


def get_format(fmt: str | KeypointFormat) -> KeypointFormat:
    """A :class:`KeypointFormat` from itself or its name in :data:`FORMATS`."""
    if isinstance(fmt, KeypointFormat):
        return fmt
    if fmt not in FORMATS:
        raise ValueError(f"unknown keypoint format '{fmt}' (known: {', '.join(FORMATS)})")
    return FORMATS[fmt]


def to_h36m17(points, fmt: str | KeypointFormat) -> np.ndarray:
    """Map keypoints (..., K, D) of layout ``fmt`` to H36M-17 (..., 17, D). Pass coordinates only.

    Joints missing in the input (e.g. COCO's unlabelled (0, 0)) leak into the joints interpolated from
    them; mask them with the scores from :func:`scores_to_h36m17`.
    """
    fmt = get_format(fmt)
    points = np.asarray(points)
    if points.ndim < 2 or points.shape[-2] != fmt.num_joints:
        raise ValueError(f"{fmt.name} keypoints must have shape (..., {fmt.num_joints}, D), "
                         f"got {points.shape}")
    dtype = points.dtype if np.issubdtype(points.dtype, np.floating) else np.float64
    return fmt.weights.astype(dtype) @ points.astype(dtype, copy=False)


def scores_to_h36m17(scores, fmt: str | KeypointFormat) -> np.ndarray:
    """Map confidence scores (..., K) to H36M-17 (..., 17): copied joints keep their score, an
    interpolated joint gets the minimum score of the joints it is averaged from."""
    fmt = get_format(fmt)
    scores = np.asarray(scores)
    if scores.ndim < 1 or scores.shape[-1] != fmt.num_joints:
        raise ValueError(f"{fmt.name} scores must have shape (..., {fmt.num_joints}), got {scores.shape}")
    dtype = scores.dtype if np.issubdtype(scores.dtype, np.floating) else np.float64
    masked = np.where(fmt.weights > 0, scores[..., None, :].astype(dtype, copy=False), np.inf)
    return masked.min(axis=-1)
