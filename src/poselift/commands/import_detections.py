"""``poselift import-detections --prepared P.h5 --source FILE_OR_DIR --out D.h5``: existing 2D detections
-> the detections layout (:mod:`poselift.data.detections`).

Sources: a VideoPose3D 2D npz (``data_2d_h36m_cpn_ft_h36m_dbb.npz`` and its siblings) or a folder of
3d-pose-baseline Stacked Hourglass files (``S*/StackedHourglass[FineTuned240]/*.h5``); see
:mod:`poselift.data.h36m`. Keypoints are mapped to H36M-17 (``--layout``; guessed from the file's metadata
and name when ``auto``).

Matching the prepared file: every sequence of the source must be in it and vice versa (names compared
after :func:`~poselift.data.h36m.canonical_name`), with the same number of cameras. Videos can have a
few more frames than the mocap; like VideoPose3D we cut the 2D of such views to the prepared sequence's
length (``params.trimmed_frames`` says where and by how much). A view SHORTER than its sequence is an
error. These sources carry no confidences: scores are written as 1.0 and ``params.scores_absent`` is true.
"""

from __future__ import annotations

from pathlib import Path

# the keys of poselift.data.h36m.LAYOUTS, spelled out so building the CLI does not import h5py
LAYOUTS = ("h36m", "coco", "mpii", "sh_h36m")


def add_parser(sub):
    p = sub.add_parser("import-detections", help="convert existing 2D detections (VideoPose3D npz, Stacked "
                                                 "Hourglass h5) into the detections layout")
    p.add_argument("--prepared", required=True, type=Path, help="prepared-dataset HDF5 file the detections belong to")
    p.add_argument("--source", required=True, type=Path,
                   help="VideoPose3D 2D .npz file, or folder holding S*/StackedHourglass*/*.h5")
    p.add_argument("--out", required=True, type=Path, help="detections HDF5 file to write")
    p.add_argument("--name", help="detector name to record (default: from the source, e.g. cpn_ft_h36m_dbb)")
    p.add_argument("--layout", default="auto", choices=("auto", *LAYOUTS),
                   help="keypoint layout of the source (default: from its metadata / name)")
    p.set_defaults(run=run)


def run(args) -> int:
    import numpy as np

    from poselift.data.detections import Detections, write_detections
    from poselift.data.h36m import read_stacked_hourglass, read_videopose3d_2d
    from poselift.data.prepared import content_hash, load_prepared

    data = load_prepared(args.prepared)
    source = Path(args.source)
    if source.is_dir():
        raw, layout = read_stacked_hourglass(source, args.layout)
        kind, default_name = "stacked_hourglass_h5", {"mpii": "sh_pt_mpii", "sh_h36m": "sh_ft_h36m"}[layout]
    else:
        raw, layout = read_videopose3d_2d(source, args.layout)
        kind, default_name = "videopose3d_npz", source.stem.removeprefix("data_2d_h36m_").removeprefix("data_2d_")
    keypoints, cameras, trimmed = match_to_prepared(raw, layout, data, source, args.prepared)
    det = Detections(
        detector=args.name or default_name, dataset=data.dataset, prepared=content_hash(args.prepared),
        keypoints=keypoints, scores={k: np.ones(v.shape[:3], np.float32) for k, v in keypoints.items()},
        cameras=cameras,
        params={"source": str(source), "source_format": kind, "layout": layout, "scores_absent": True,
                "scores": "the source has no confidences; every score is 1.0", "trimmed_frames": trimmed})
    write_detections(args.out, det)
    print(f"wrote {args.out}: {len(keypoints)} sequences from {source} (layout {layout}); "
          f"{len(trimmed)} sequences cut to the mocap length")
    return 0


def match_to_prepared(raw: dict, layout: str, data, source: Path, prepared_path: Path):
    """Source sequences -> (keypoints {key: (C, F, 17, 2)}, cameras {key: names}, trimmed {key: frames cut}).

    ``raw`` maps (subject, name) to per-camera arrays: a list in the prepared cameras' order, or a dict
    keyed by camera name.
    """
    import numpy as np

    from poselift.data.h36m import canonical_name, to_h36m
    from poselift.errors import InputError

    by_name = {(s.subject, canonical_name(s.name)): s for s in data.sequences}
    extra = [f"{subj} '{name}'" for subj, name in raw if (subj, canonical_name(name)) not in by_name]
    if extra:
        raise InputError(source, f"{len(extra)} sequences are not in {prepared_path}: {', '.join(extra[:3])}"
                                 f"{' ...' if len(extra) > 3 else ''}")
    found = {(subj, canonical_name(name)): views for (subj, name), views in raw.items()}
    missing = [s.key for key, s in by_name.items() if key not in found]
    if missing:
        raise InputError(source, f"no detections for {len(missing)} sequences of {prepared_path}: "
                                 f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    keypoints, cameras, trimmed = {}, {}, {}
    for key, s in by_name.items():
        views = found[key]
        if isinstance(views, dict):
            if sorted(views) != sorted(s.cameras):
                raise InputError(source, f"sequence {s.key}: detections for cameras {sorted(views)}, the prepared "
                                         f"file has {sorted(s.cameras)}")
            views = [views[c] for c in s.cameras]
        if len(views) != len(s.cameras):
            raise InputError(source, f"sequence {s.key}: {len(views)} camera views, the prepared file has "
                                     f"{len(s.cameras)}")
        lengths = [v.shape[0] for v in views]
        if min(lengths) < s.num_frames:
            raise InputError(source, f"sequence {s.key}: {min(lengths)} detected frames in a view, fewer than the "
                                     f"{s.num_frames} mocap frames")
        if max(lengths) > s.num_frames:
            trimmed[s.key] = max(lengths) - s.num_frames
        keypoints[s.key] = to_h36m(np.stack([v[:s.num_frames] for v in views]), layout).astype(np.float32)
        cameras[s.key] = list(s.cameras)
    return keypoints, cameras, trimmed
