"""``poselift detect --prepared P.h5 --detector {gt,synthetic} --out D.h5``: 2D detections without images.

``gt`` copies the prepared file's 2D with score 1; ``synthetic`` runs the error model of
:mod:`poselift.detection.synthetic` with the ``detectors.synthetic`` block of ``--params`` (built-in
defaults, equal to the repository's params.yaml, when it is not given). Output: the detections layout
of :mod:`poselift.data.detections`, tied to the prepared file by its content hash.
"""

from __future__ import annotations

from pathlib import Path

from poselift.detection import DETECTORS


def add_parser(sub):
    p = sub.add_parser("detect", help="2D detections for data without images (projected ground truth or "
                                      "a simulated detector)")
    p.add_argument("--prepared", required=True, type=Path, help="prepared-dataset HDF5 file")
    p.add_argument("--detector", required=True, metavar="NAME",
                   help="; ".join(f"{k}: {v.__doc__}" for k, v in DETECTORS.items()))
    p.add_argument("--out", required=True, type=Path, help="detections HDF5 file to write")
    p.add_argument("--params", type=Path, default=None,
                   help="params.yaml whose detectors.synthetic block sets the error model "
                        "(default: the built-in values, equal to the repository's params.yaml)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic detector (default 0)")
    p.set_defaults(run=run)


def run(args) -> int:
    from tqdm import tqdm

    from poselift.data.detections import Detections, write_detections
    from poselift.data.prepared import content_hash, load_prepared
    from poselift.errors import InputError

    if args.detector not in DETECTORS:
        raise InputError("--detector", f"unknown detector '{args.detector}' (known: {', '.join(DETECTORS)})")
    if args.seed < 0:
        raise InputError("--seed", f"must be >= 0 (got {args.seed})")
    detector = DETECTORS[args.detector](args.params, args.seed)

    data = load_prepared(args.prepared)
    det = Detections(detector=args.detector, dataset=data.dataset, prepared=content_hash(args.prepared),
                     keypoints={}, scores={}, cameras={}, params=detector.settings)
    for seq in tqdm(data.sequences, desc=f"detect ({args.detector})", unit="seq", disable=None):
        det.keypoints[seq.key], det.scores[seq.key] = detector(seq)
        det.cameras[seq.key] = list(seq.cameras)
    write_detections(args.out, det)
    print(f"wrote {args.out}: {args.detector} detections for {len(data.sequences)} sequences")
    return 0
