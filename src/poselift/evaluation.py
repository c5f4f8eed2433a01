"""The files an evaluation leaves in its folder, for trained models and baselines alike.

``metrics.json`` (the keys of ``poselift metrics`` plus ``inputs``), ``per_action.csv``, ``per_group.json``
(errors per distance-to-pelvis group, POT's Fig. 4), ``targets.npz``, ``actions.json``, ``sequences.json``,
``views.json`` and, written last so that its presence means the set is complete, ``predictions.npz``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_evaluation(out: Path, pred: np.ndarray, views, pck_joints: str = "all", inputs: dict | None = None,
                     root: str = "aligned") -> dict:
    """Score ``pred`` (N, 17, 3) mm against the valid frames of ``views`` and write every file; returns metrics.

    ``pck_joints``: "all" 17 joints, or "mpi-inf-3dhp" for the 14 of the 3DHP evaluation (3D-PCK and AUC).
    ``root``: "aligned" (Protocol 1) or "gt-only" (MixSTE's official evaluation: MPJPE and its per-joint,
    per-group and per-action tables with only the ground truth's root at 0; :func:`poselift.metrics.evaluate`),
    recorded in metrics.json as ``root``.
    """
    from poselift.io import write_json, write_npz
    from poselift.metrics import MPI_INF_3DHP_EVAL_JOINTS, evaluate, format_table

    out = Path(out)
    keep = views.valid
    gt = views.targets_3d[keep]
    actions = [views.actions[a] for a in views.action[keep]]
    sequences = views.view[keep].tolist()
    joints = MPI_INF_3DHP_EVAL_JOINTS if pck_joints == "mpi-inf-3dhp" else None
    result = evaluate(pred, gt, actions=actions, sequences=sequences, pck_joints=joints, root=root)
    result["pck_joints"] = pck_joints
    result["inputs"] = {"pred": str(out / "predictions.npz"), "gt": str(out / "targets.npz"),
                        "actions": str(out / "actions.json"), "sequences": str(out / "sequences.json"),
                        **(inputs or {})}
    print(format_table(result))
    write_json(out / "metrics.json", result)
    write_per_action_csv(out / "per_action.csv", result)
    write_json(out / "per_group.json", per_group(pred, gt, root))
    write_npz(out / "targets.npz", poses_3d=gt)
    write_json(out / "actions.json", actions)
    write_json(out / "sequences.json", sequences)
    write_json(out / "views.json", [list(k) for k in views.keys])
    write_npz(out / "predictions.npz", poses_3d=pred, view=views.view[keep], frame=views.frame[keep])  # last
    return result


def write_per_action_csv(path: Path, result: dict) -> None:
    """One row per merged action: frames and the four per-action errors (mm; MPJVE mm/frame)."""
    import csv
    import io

    from poselift.io import atomic_output

    cols = ("mpjpe", "p_mpjpe", "n_mpjpe", "mpjve")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("action", "frames", *cols))
    for action, row in result["per_action"].items():
        writer.writerow((action, row["frames"], *("" if row[c] is None else f"{row[c]:.4f}" for c in cols)))
    with atomic_output(path) as tmp:
        tmp.write_text(buf.getvalue())


def per_group(pred, gt, root: str = "aligned") -> dict:
    """MPJPE and P-MPJPE (mm) per distance-to-pelvis joint group (POT Fig. 3 groups, its Fig. 4 analysis);
    ``root`` as in :func:`write_evaluation` (MPJPE only)."""
    from poselift.metrics import joint_errors, procrustes_joint_errors
    from poselift.skeleton import H36M17, POT_GROUP_NAMES, POT_GROUPS

    e1, e2 = joint_errors(pred, gt, root), procrustes_joint_errors(pred, gt)
    return {
        "frames": int(len(pred)),
        "joints": {name: [H36M17.names[j] for j in range(17) if POT_GROUPS[j] == g]
                   for g, name in enumerate(POT_GROUP_NAMES)},
        "mpjpe": {name: float(e1[:, POT_GROUPS == g].mean()) for g, name in enumerate(POT_GROUP_NAMES)},
        "p_mpjpe": {name: float(e2[:, POT_GROUPS == g].mean()) for g, name in enumerate(POT_GROUP_NAMES)},
    }
