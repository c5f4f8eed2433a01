"""``poselift prepare DATASET --source DIR --out FILE.h5``: convert a dataset to the prepared layout.

Each dataset's reader module has ``prepare(source: Path, args) -> PreparedDataset``; readers are imported
only when used so the CLI starts fast.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

READERS = {
    "h36m": ("poselift.data.h36m", "prepare_videopose3d", "Human3.6M in VideoPose3D's npz form (data_3d_h36m.npz)"),
    "h36m-archive": ("poselift.data.h36m", "prepare_archive",
                     "Human3.6M in the 3d-pose-baseline archive form (S*/MyPoses/3D_positions/*.h5, cameras.h5)"),
    "3dhp": ("poselift.data.mpi_inf_3dhp", "prepare", "MPI-INF-3DHP test set (TS1..TS6/annot_data.mat)"),
    "humaneva": ("poselift.data.humaneva", "prepare", "HumanEva-I in VideoPose3D's humaneva15 npz form"),
    "bandai": ("poselift.data.bandai", "prepare", "the open benchmark (BN-P1): Bandai-Namco Research Motion "
               "Dataset 1+2 (mirror folder of its .tar.xz archives or dataset/ tree; default "
               "$POSELIFT_BANDAI_MIRROR, else the upstream archive is downloaded)"),
}
SOURCE_OPTIONAL = {"bandai"}


def add_parser(sub):
    p = sub.add_parser("prepare", help="convert a dataset into the prepared-dataset HDF5 layout")
    p.add_argument("dataset", choices=sorted(READERS), help="; ".join(f"{k}: {v[2]}" for k, v in READERS.items()))
    p.add_argument("--source", type=Path, help="folder (or file) holding the dataset (required except for bandai)")
    p.add_argument("--out", required=True, type=Path, help="prepared-dataset HDF5 file to write")
    p.add_argument("--subset", choices=("cpu", "full"), default="full",
                   help="bandai: 'cpu' = dataset-1 + takes 001-003 of dataset-2 (small, for CPU runs); 'full' = both")
    p.set_defaults(run=run)


def run(args) -> int:
    from poselift.data.prepared import write_prepared

    if args.source is None and args.dataset not in SOURCE_OPTIONAL:
        print(f"poselift prepare: error: --source is required for {args.dataset}", file=sys.stderr)
        return 2
    module, function, _ = READERS[args.dataset]
    data = getattr(importlib.import_module(module), function)(args.source, args)
    write_prepared(args.out, data)
    summary = data.summary()
    print(f"wrote {args.out}: {summary['sequences']} sequences, {summary['frames']} frames, "
          f"subjects {', '.join(summary['subjects'])}")
    return 0
