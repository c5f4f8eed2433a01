"""``poselift baseline mean-pose --prepared P.h5 --out-dir DIR``: score the training-mean pose on a split.

Writes what ``poselift metrics`` reads: ``predictions.npz`` and ``targets.npz`` (key ``poses_3d``, (N, 17, 3)
mm, root-relative camera frame), ``actions.json`` (merged action per frame) and ``sequences.json`` (view id
per frame, so velocities never straddle two views). Only valid frames are written.
"""

from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("baseline", help="predictions of a trivial baseline, in the files `poselift metrics` reads")
    p.add_argument("model", choices=["mean-pose"], help="mean-pose: the training split's mean pose for every frame")
    p.add_argument("--prepared", required=True, type=Path, help="prepared-dataset HDF5 file")
    p.add_argument("--split", default="test", choices=["validation", "test"], help="split to predict (default: test)")
    p.add_argument("--out-dir", required=True, type=Path, help="folder for predictions.npz, targets.npz, *.json")
    p.set_defaults(run=run)


def run(args) -> int:
    import numpy as np

    from poselift.baselines import mean_pose
    from poselift.data.prepared import load_prepared
    from poselift.data.windows import build_views
    from poselift.io import write_json, write_npz

    data = load_prepared(args.prepared)
    train = build_views(data, split="train", prepared_path=args.prepared)
    evaluated = build_views(data, split=args.split, prepared_path=args.prepared)
    keep = evaluated.valid
    prediction = np.broadcast_to(mean_pose(train), (int(keep.sum()), 17, 3)).astype(np.float32)
    out = args.out_dir
    write_npz(out / "targets.npz", poses_3d=evaluated.targets_3d[keep])
    write_json(out / "actions.json", [evaluated.actions[a] for a in evaluated.action[keep]])
    write_json(out / "sequences.json", evaluated.view[keep].tolist())
    write_npz(out / "predictions.npz", poses_3d=prediction)  # last: its presence means the set is complete
    print(f"wrote {out}: mean pose of {int(train.valid.sum())} training frames, "
          f"{len(prediction)} {args.split} frames from {evaluated.num_views} views")
    return 0
