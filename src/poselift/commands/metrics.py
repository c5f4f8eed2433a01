"""``poselift metrics --pred P.npz --gt G.npz [--actions A.json] [--sequences S.json] --out M.json``.

Both npz archives hold H36M-17 poses (N, 17, 3) in mm under the key ``poses_3d`` (or as their only
array). A.json / S.json are JSON lists of N per-frame labels. Prints the table, writes the JSON report.
"""

from __future__ import annotations

import numpy as np

from poselift.errors import InputError

POSES_KEY = "poses_3d"


def add_parser(sub):
    p = sub.add_parser("metrics", help="MPJPE, P-MPJPE, N-MPJPE, MPJVE, 3D-PCK/AUC of predicted vs true 3D poses")
    p.add_argument("--pred", required=True, help=f"predicted poses: npz with '{POSES_KEY}' (N, 17, 3) in mm")
    p.add_argument("--gt", required=True, help=f"ground-truth poses: npz with '{POSES_KEY}' (N, 17, 3) in mm")
    p.add_argument("--actions", help="JSON list of N action labels (variants like 'Directions 1' are merged)")
    p.add_argument("--sequences", help="JSON list of N sequence labels (MPJVE never differences across them)")
    p.add_argument("--pck-joints", choices=("all", "mpi-inf-3dhp"), default="all",
                   help="joints for 3D-PCK/AUC: all 17, or the 14 of the MPI-INF-3DHP evaluation")
    p.add_argument("--out", required=True, help="JSON report to write")
    p.set_defaults(run=run)


def run(args) -> int:
    from poselift.io import write_json
    from poselift.metrics import MPI_INF_3DHP_EVAL_JOINTS, evaluate, format_table

    pred = load_poses(args.pred)
    gt = load_poses(args.gt)
    if len(pred) != len(gt):
        raise InputError(args.pred, f"has {len(pred)} frames but {args.gt} has {len(gt)}")
    actions = load_labels(args.actions, len(gt)) if args.actions else None
    sequences = load_labels(args.sequences, len(gt)) if args.sequences else None
    joints = MPI_INF_3DHP_EVAL_JOINTS if args.pck_joints == "mpi-inf-3dhp" else None

    result = evaluate(pred, gt, actions=actions, sequences=sequences, pck_joints=joints)
    result["pck_joints"] = args.pck_joints
    result["inputs"] = {"pred": str(args.pred), "gt": str(args.gt), "actions": args.actions,
                        "sequences": args.sequences}
    print(format_table(result))
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


def load_poses(path) -> np.ndarray:
    """(N, 17, 3) finite float64 poses from an npz (key ``poses_3d`` or its only array), else InputError."""
    from poselift.io import check_finite, npz_array, open_npz

    with open_npz(path) as data:
        if POSES_KEY in data.files:
            key = POSES_KEY
        elif len(data.files) == 1:
            key = data.files[0]
        else:
            keys = ", ".join(data.files) or "nothing"
            raise InputError(path, f"expected key '{POSES_KEY}' or a single array (has: {keys})")
        poses = npz_array(data, key, path)
    if poses.dtype.kind not in "fiu":
        raise InputError(path, f"'{key}' has dtype {poses.dtype}, expected numbers")
    if poses.ndim != 3 or poses.shape[1:] != (17, 3) or len(poses) == 0:
        raise InputError(path, f"'{key}' has shape {tuple(poses.shape)}, expected (N, 17, 3) with N > 0")
    check_finite(poses, path, f"'{key}'")
    return poses.astype(np.float64)


def load_labels(path, n: int) -> list:
    """A JSON list of ``n`` string or integer labels, else InputError."""
    from poselift.io import read_json

    labels = read_json(path)
    if not isinstance(labels, list):
        raise InputError(path, f"expected a JSON list of {n} labels, got {type(labels).__name__}")
    if len(labels) != n:
        raise InputError(path, f"has {len(labels)} labels, expected one per frame ({n})")
    bad = [x for x in labels if not isinstance(x, (str, int)) or isinstance(x, bool)]
    if bad:
        raise InputError(path, f"labels must be strings or integers (found {bad[0]!r})")
    if len({type(x) for x in labels}) > 1:
        raise InputError(path, "labels mix strings and integers")
    return labels

