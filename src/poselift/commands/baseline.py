"""``poselift baseline mean-pose --prepared P.h5 --out-dir DIR``: score the training-mean pose on a split.

Writes the files of an evaluation (:mod:`poselift.evaluation`): ``metrics.json`` and what ``poselift
metrics`` reads, ``predictions.npz`` and ``targets.npz`` (key ``poses_3d``, (N, 17, 3) mm, root-relative
camera frame), ``actions.json`` (merged action per frame) and ``sequences.json`` (view id per frame, so
velocities never straddle two views). Only valid frames are scored.
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

    from poselift.lifting.mean_pose import mean_pose
    from poselift.data.prepared import load_prepared
    from poselift.data.windows import build_views
    from poselift.evaluation import write_evaluation

    data = load_prepared(args.prepared)
    train = build_views(data, split="train", prepared_path=args.prepared)
    evaluated = build_views(data, split=args.split, prepared_path=args.prepared)
    frames = int(evaluated.valid.sum())
    prediction = np.broadcast_to(mean_pose(train), (frames, 17, 3)).astype(np.float32)
    write_evaluation(args.out_dir, prediction, evaluated, inputs={
        "model": "mean-pose", "prepared": str(args.prepared), "detections": None, "split": args.split})
    print(f"wrote {args.out_dir}: mean pose of {int(train.valid.sum())} training frames, "
          f"{frames} {args.split} frames from {evaluated.num_views} views")
    return 0
