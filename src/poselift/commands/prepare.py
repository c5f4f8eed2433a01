"""``poselift prepare DATASET --source DIR --out FILE.h5``: convert a dataset to the prepared layout.

The readers are :data:`poselift.data.readers.READERS`: name -> ``prepare(source, args) -> PreparedDataset``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from poselift.data.readers import HELP, READERS, SOURCE_OPTIONAL


def add_parser(sub):
    p = sub.add_parser("prepare", help="convert a dataset into the prepared-dataset HDF5 layout")
    p.add_argument("dataset", choices=sorted(READERS), help="; ".join(f"{k}: {v}" for k, v in HELP.items()))
    p.add_argument("--source", type=Path, help="folder (or file) holding the dataset (required except for bandai)")
    p.add_argument("--out", required=True, type=Path, help="prepared-dataset HDF5 file to write")
    p.add_argument("--subset", choices=("cpu", "full"), default="full",
                   help="bandai: 'cpu' = dataset-1 + takes 001-003 of dataset-2 (small, for CPU runs); 'full' = both")
    p.add_argument("--frame-step", type=int, default=1, metavar="N",
                   help="keep every N-th frame of each sequence (a video at 1/N of the frame rate; default 1: all)")
    p.set_defaults(run=run)


def run(args) -> int:
    from poselift.data.prepared import subsample, write_prepared
    from poselift.errors import InputError

    if args.source is None and args.dataset not in SOURCE_OPTIONAL:
        print(f"poselift prepare: error: --source is required for {args.dataset}", file=sys.stderr)
        return 2
    if args.frame_step < 1:
        raise InputError("--frame-step", f"must be >= 1 (got {args.frame_step})")
    data = subsample(READERS[args.dataset](args.source, args), args.frame_step)
    write_prepared(args.out, data)
    summary = data.summary()
    print(f"wrote {args.out}: {summary['sequences']} sequences, {summary['frames']} frames, "
          f"subjects {', '.join(summary['subjects'])}")
    return 0
