"""The dataset readers ``poselift prepare`` runs: name -> ``prepare(source, args) -> PreparedDataset``.

A reader turns a dataset in its published layout into poselift's prepared layout
(:mod:`poselift.data.prepared`). Adding a dataset is a reader module in this package and one line here
(see docs/architecture.md).
"""

from __future__ import annotations

from poselift.data import bandai, h36m, humaneva, mpi_inf_3dhp

READERS = {  # name -> prepare(source: Path | None, args) -> PreparedDataset; HELP says what each reads
    "h36m": h36m.prepare_videopose3d,
    "h36m-archive": h36m.prepare_archive,
    "3dhp": mpi_inf_3dhp.prepare,
    "humaneva": humaneva.prepare,
    "bandai": bandai.prepare,
}
SOURCE_OPTIONAL = {"bandai"}  # readers that find their data without --source

HELP = {
    "h36m": "Human3.6M in VideoPose3D's npz form (data_3d_h36m.npz)",
    "h36m-archive": "Human3.6M in the 3d-pose-baseline archive form (S*/MyPoses/3D_positions/*.h5, cameras.h5)",
    "3dhp": "MPI-INF-3DHP test set (TS1..TS6/annot_data.mat)",
    "humaneva": "HumanEva-I in VideoPose3D's humaneva15 npz form",
    "bandai": "the open benchmark (BN-P1): Bandai-Namco Research Motion Dataset 1+2 (mirror folder of its "
              ".tar.xz archives or dataset/ tree; default $POSELIFT_BANDAI_MIRROR, else the upstream archive "
              "is downloaded)",
}
