"""Evaluation metrics for 3D poses: MPJPE, P-MPJPE, N-MPJPE, MPJVE, 3D-PCK and AUC, with the per-action,
per-joint and per-joint-group breakdowns that papers report.

Every function takes ``pred`` and ``gt`` as arrays (N, J, 3) in millimetres, frames first, and joint 0
as the root (the pelvis of H36M-17).

- Protocol 1, MPJPE: mean Euclidean joint error after subtracting each pose's root joint.
- Protocol 2, P-MPJPE: error after a per-frame similarity Procrustes alignment of pred to gt (a proper
  rotation, a translation and a scale; a mirror image is never used as the "rotation").
- N-MPJPE (Rhodin et al. 2018): error after the least-squares scale of the root-relative prediction.
- MPJVE: MPJPE of the first time derivative (mm per frame) of root-relative poses, never differencing
  across a sequence boundary.
- 3D-PCK / AUC as in the MPI-INF-3DHP evaluation (Mehta et al. 2017): the percentage of root-relative
  joints with error strictly below 150 mm, and the mean PCK over the thresholds 0, 5, ..., 150 mm.
"""

from __future__ import annotations

import math

import numpy as np

from poselift.actions import merge_action
from poselift.skeleton import H36M17, POT_GROUP_NAMES, POT_GROUPS

PCK_THRESHOLD = 150.0
AUC_THRESHOLDS = np.linspace(0.0, 150.0, 31)  # 0:5:150 mm, as in the MPI-INF-3DHP evaluation script

# The 14 joints the standard MPI-INF-3DHP PCK/AUC keeps (its script's joint groups: head top, neck,
# shoulders, elbows, wrists, hips, knees, ankles), as indices into H36M-17 when 3DHP's 17 test joints are
# put in H36M-17 order (3DHP head top -> "head", 3DHP neck -> "thorax", 3DHP head -> "neck_nose").
# Left out: pelvis (0, the root, zero error by construction), spine (7) and neck_nose (9).
MPI_INF_3DHP_EVAL_JOINTS = np.array([1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16])

_EPS = 1e-12

# Frames a per-frame error function (joint_errors, procrustes_joint_errors, scale_joint_errors) works on at
# once: their float64 temporaries (~0.4 kB a frame each, a dozen of them for Procrustes) stay ~0.1 GB
# whatever N is, instead of ~1 GB on the full open benchmark's test split (480,896 frames).
CHUNK = 32768


def _pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both have shape (N, J, 3)")
    return pred, gt


def root_relative(poses: np.ndarray) -> np.ndarray:
    """Poses (N, J, 3) with each frame's root joint moved to the origin."""
    return poses - poses[:, :1]


# ---------------------------------------------------------------- per-joint errors (N, J), one per protocol

ROOTS = ("aligned", "gt-only")


def _in_pieces(fn, pred, gt, *args) -> np.ndarray:
    """``fn(pred, gt, *args)`` -> (N, J), computed :data:`CHUNK` frames at a time: the same numbers as one call
    (each frame's error depends on that frame alone), with temporaries the size of one piece."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.ndim != 3 or pred.shape != gt.shape or len(pred) <= CHUNK:
        return fn(pred, gt, *args)
    return np.concatenate([fn(pred[i:i + CHUNK], gt[i:i + CHUNK], *args) for i in range(0, len(pred), CHUNK)])


def joint_errors(pred, gt, root: str = "aligned") -> np.ndarray:
    """(N, J) Euclidean errors after root alignment (Protocol 1). ``root="gt-only"``: only the ground truth's
    root is moved to the origin and the prediction is taken as it is (MixSTE's official evaluation, which
    counts the predicted root's offset in every joint's error)."""
    return _in_pieces(_joint_errors, pred, gt, root)


def _joint_errors(pred, gt, root: str = "aligned") -> np.ndarray:
    pred, gt = _pair(pred, gt)
    if root not in ROOTS:
        raise ValueError(f"root must be one of {ROOTS}, got {root!r}")
    return np.linalg.norm((root_relative(pred) if root == "aligned" else pred) - root_relative(gt), axis=-1)


def procrustes_align(pred, gt) -> np.ndarray:
    """``s R pred + t`` per frame, with the proper rotation R, translation t and scale s > 0 that minimise
    the squared distance to ``gt`` (Umeyama 1991).

    The cross-covariance M = sum_j g_j p_j^T = U S V^T gives R = U D V^T with D = diag(1, 1, det(U V^T)):
    when the best orthogonal matrix is a reflection, the last singular vector flips sign, and so does its
    singular value in the optimal scale s = tr(S D) / sum_j |p_j|^2.
    """
    pred, gt = _pair(pred, gt)
    mu_p, mu_g = pred.mean(axis=1, keepdims=True), gt.mean(axis=1, keepdims=True)
    p0, g0 = pred - mu_p, gt - mu_g
    u, sig, vt = np.linalg.svd(np.einsum("nji,njk->nik", g0, p0))
    d = np.where(np.linalg.det(u @ vt) < 0, -1.0, 1.0)
    u[:, :, -1] *= d[:, None]
    sig[:, -1] *= d
    rot = u @ vt
    scale = sig.sum(axis=1) / np.maximum((p0**2).sum(axis=(1, 2)), _EPS)
    return scale[:, None, None] * p0 @ rot.transpose(0, 2, 1) + mu_g


def procrustes_joint_errors(pred, gt) -> np.ndarray:
    """(N, J) errors after similarity Procrustes alignment (Protocol 2)."""
    return _in_pieces(_procrustes_joint_errors, pred, gt)


def _procrustes_joint_errors(pred, gt) -> np.ndarray:
    pred, gt = _pair(pred, gt)
    return np.linalg.norm(procrustes_align(pred, gt) - gt, axis=-1)


def scale_align(pred, gt) -> np.ndarray:
    """Root-relative ``pred`` times the per-frame scale s = <p, g> / <p, p> that minimises |s p - g|^2."""
    p, g = (root_relative(a) for a in _pair(pred, gt))
    scale = (p * g).sum(axis=(1, 2)) / np.maximum((p * p).sum(axis=(1, 2)), _EPS)
    return scale[:, None, None] * p


def scale_joint_errors(pred, gt) -> np.ndarray:
    """(N, J) errors after root alignment and the optimal scale (N-MPJPE)."""
    return _in_pieces(_scale_joint_errors, pred, gt)


def _scale_joint_errors(pred, gt) -> np.ndarray:
    pred, gt = _pair(pred, gt)
    return np.linalg.norm(scale_align(pred, gt) - root_relative(gt), axis=-1)


def velocity_joint_errors(pred, gt, sequences=None) -> tuple[np.ndarray, np.ndarray]:
    """(N-1, J) errors of root-relative velocities between frames t and t+1, and an (N-1,) mask of the
    pairs that lie inside one sequence (``sequences``: a label per frame; None = all one sequence)."""
    diff = _in_pieces(_relative_difference, pred, gt)
    errors = np.linalg.norm(np.diff(diff, axis=0), axis=-1)
    return errors, _same_sequence(len(pred), sequences)


def _relative_difference(pred, gt) -> np.ndarray:
    pred, gt = _pair(pred, gt)
    return root_relative(pred) - root_relative(gt)


def _same_sequence(n: int, *labels) -> np.ndarray:
    keep = np.ones(max(n - 1, 0), dtype=bool)
    for lab in labels:
        if lab is not None:
            lab = np.asarray(lab)
            if lab.shape != (n,):
                raise ValueError(f"expected {n} per-frame labels, got shape {lab.shape}")
            keep &= lab[1:] == lab[:-1]
    return keep


# ---------------------------------------------------------------- scalar metrics

def mpjpe(pred, gt) -> float:
    """Protocol 1: mean per-joint position error (mm) of root-aligned poses."""
    return float(joint_errors(pred, gt).mean())


def p_mpjpe(pred, gt) -> float:
    """Protocol 2: MPJPE (mm) after per-frame similarity Procrustes alignment."""
    return float(procrustes_joint_errors(pred, gt).mean())


def n_mpjpe(pred, gt) -> float:
    """MPJPE (mm) after root alignment and the per-frame least-squares scale of the prediction."""
    return float(scale_joint_errors(pred, gt).mean())


def mpjve(pred, gt, sequences=None) -> float:
    """Mean per-joint velocity error (mm/frame); NaN when no two consecutive frames share a sequence.

    ``sequences``: a sequence label per frame; consecutive frames with different labels are not
    differenced. Without labels the whole array is one sequence.
    """
    errors, keep = velocity_joint_errors(pred, gt, sequences)
    return float(errors[keep].mean()) if keep.any() else math.nan


def pck_curve(pred, gt, thresholds=AUC_THRESHOLDS, joints=None) -> np.ndarray:
    """3D-PCK (%) at each threshold (mm): the share of root-aligned joint errors strictly below it.

    ``joints``: indices of the joints evaluated (default all; :data:`MPI_INF_3DHP_EVAL_JOINTS` for the
    standard 14-joint MPI-INF-3DHP evaluation). Strict ``<`` follows that benchmark's script.
    """
    errors = joint_errors(pred, gt)
    errors = np.sort((errors if joints is None else errors[:, joints]).ravel())
    below = np.searchsorted(errors, np.asarray(thresholds, dtype=np.float64), side="left")
    return 100.0 * below / errors.size


def pck(pred, gt, threshold: float = PCK_THRESHOLD, joints=None) -> float:
    """3D-PCK (%) at one threshold (mm), default 150 mm."""
    return float(pck_curve(pred, gt, [threshold], joints)[0])


def auc(pred, gt, thresholds=AUC_THRESHOLDS, joints=None) -> float:
    """Area under the PCK curve (%): the mean PCK over ``thresholds`` (default 0, 5, ..., 150 mm)."""
    return float(pck_curve(pred, gt, thresholds, joints).mean())


# ---------------------------------------------------------------- the full report

def _num(x) -> float | None:
    """A JSON-safe float (None for NaN)."""
    x = float(x)
    return None if math.isnan(x) else x


def evaluate(pred, gt, actions=None, sequences=None, pck_joints=None, root: str = "aligned") -> dict:
    """Every metric above for H36M-17 poses (N, 17, 3) in mm, as a JSON-serialisable dict.

    ``actions``: an action label per frame; variants are merged (``"Directions 1"`` and ``"Directions"``
    pool into ``"Directions"``) and each metric is reported per merged action, with the unweighted mean
    over actions (how papers average their tables) and the std (ddof=0) of per-action MPJPE.
    ``sequences``: a sequence label per frame for MPJVE. Without it the whole array is one sequence for
    MPJVE, except that a change of (unmerged) action label always ends a sequence.
    ``pck_joints``: joint indices for PCK/AUC (default all 17).
    ``root``: "aligned" (Protocol 1) or "gt-only" (:func:`joint_errors`); it changes MPJPE and the tables
    derived from it (per joint, per joint group, per action), not P-MPJPE, N-MPJPE, MPJVE or PCK/AUC.
    Returned as ``result["root"]``.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)  # each metric makes float64 pieces (no whole float64 copies)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        _pair(pred, gt)  # raises its ValueError
    n, j, _ = pred.shape
    if j != H36M17.num_joints:
        raise ValueError(f"evaluate expects H36M-17 poses, got {j} joints")
    if n == 0:
        raise ValueError("no frames to evaluate")
    per_frame = {
        "mpjpe": joint_errors(pred, gt, root),
        "p_mpjpe": procrustes_joint_errors(pred, gt),
        "n_mpjpe": scale_joint_errors(pred, gt),
    }
    vel, keep = velocity_joint_errors(pred, gt, sequences)
    keep &= _same_sequence(n, actions)
    e1 = per_frame["mpjpe"]
    curve = pck_curve(pred, gt, AUC_THRESHOLDS, pck_joints)

    result = {name: float(err.mean()) for name, err in per_frame.items()}
    result["mpjve"] = _num(vel[keep].mean()) if keep.any() else None
    result["pck150"] = pck(pred, gt, PCK_THRESHOLD, pck_joints)
    result["auc"] = float(curve.mean())
    result["per_joint"] = {name: float(v) for name, v in zip(H36M17.names, e1.mean(axis=0))}
    result["per_joint_group"] = {
        name: float(e1[:, POT_GROUPS == g].mean()) for g, name in enumerate(POT_GROUP_NAMES)
    }
    result.update(_per_action(per_frame, vel.mean(axis=1), keep, actions, n))
    result["frames"] = int(n)
    result["root"] = root
    return result


def _per_action(per_frame: dict, vel: np.ndarray, keep: np.ndarray, actions, n: int) -> dict:
    """Per merged action: frame-weighted metrics within the action; mean and std across actions."""
    if actions is None:
        return {"per_action": {}, "action_mean": {}, "per_action_std": None}
    actions = np.asarray(actions)
    if actions.shape != (n,):
        raise ValueError(f"expected {n} action labels, got shape {actions.shape}")
    raw, raw_index = np.unique(actions, return_inverse=True)
    names, merged_index = np.unique([merge_action(str(a)) for a in raw], return_inverse=True)
    inverse = merged_index[raw_index]  # merged action of every frame
    frames = np.bincount(inverse, minlength=len(names))
    table = {name: np.bincount(inverse, err.mean(axis=1), len(names)) / frames for name, err in per_frame.items()}
    pairs = np.bincount(inverse[:-1][keep], minlength=len(names))
    vel_sum = np.bincount(inverse[:-1][keep], vel[keep], len(names))
    table["mpjve"] = np.where(pairs > 0, vel_sum / np.maximum(pairs, 1), np.nan)

    per_action = {
        str(a): {**{m: _num(v[i]) for m, v in table.items()}, "frames": int(frames[i])} for i, a in enumerate(names)
    }
    action_mean = {m: _num(np.nanmean(v)) if not np.isnan(v).all() else None for m, v in table.items()}
    return {"per_action": per_action, "action_mean": action_mean, "per_action_std": float(table["mpjpe"].std())}


def format_table(result: dict) -> str:
    """The report as a terminal table: one row per action, the mean over actions, and all frames."""

    def cell(x) -> str:
        return f"{x:8.2f}" if x is not None else f"{'-':>8}"

    cols = ("mpjpe", "p_mpjpe", "n_mpjpe", "mpjve")
    width = max([len("all frames")] + [len(a) for a in result["per_action"]]) + 2
    lines = [f"{'action':<{width}}{'frames':>8}{'MPJPE':>8}{'P-MPJPE':>8}{'N-MPJPE':>8}{'MPJVE':>8}"]
    for action, row in result["per_action"].items():
        lines.append(f"{action:<{width}}{row['frames']:>8d}" + "".join(cell(row[c]) for c in cols))
    if result["per_action"]:
        k = len(result["per_action"])
        lines.append(f"{f'mean ({k})':<{width}}{'':>8}" + "".join(cell(result["action_mean"][c]) for c in cols))
        lines.append(f"{'std':<{width}}{'':>8}{cell(result['per_action_std'])}")
    lines.append(f"{'all frames':<{width}}{result['frames']:>8d}" + "".join(cell(result[c]) for c in cols))
    lines.append(f"3D-PCK@150mm {result['pck150']:.2f} %   AUC {result['auc']:.2f} %   (mm, MPJVE in mm/frame)")
    lines.append("MPJPE by joint group: " + "   ".join(f"{g} {v:.2f}" for g, v in result["per_joint_group"].items()))
    return "\n".join(lines)
