"""``poselift render --prepared P.h5 --out R.h5``: people rendered from a prepared file's motion, through its
cameras, as labelled 256x192 person crops (and optionally whole frames) with exact 2D, boxes and visibility.

The body is MakeHuman's CC0 base mesh (``--assets``, default ``$POSELIFT_MAKEHUMAN_ASSETS``, else downloaded
from the pinned upstream commit and checked against the shipped manifest). ``--workers N`` renders N
sequences at a time in N processes (default: the CPUs this process may use); it never changes a byte of the
file. Method and layout: :mod:`poselift.rendering.render`, :mod:`poselift.data.crop_file`.
"""

from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("render", help="render people from a prepared file's motion: labelled person crops")
    p.add_argument("--prepared", required=True, type=Path, help="prepared-dataset HDF5 file")
    p.add_argument("--out", required=True, type=Path, help="labelled-crops HDF5 file to write")
    p.add_argument("--every", type=int, default=10, help="render every n-th frame of each sequence (default 10)")
    p.add_argument("--seed", type=int, default=0, help="people: shape, skin, hair, clothes, light (default 0)")
    p.add_argument("--background-seed", type=int, help="backgrounds (default: --seed)")
    p.add_argument("--split", choices=("train", "validation", "test"), help="render one split only (default all)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the stored images (default 90)")
    p.add_argument("--full-frames", action="store_true", help="also render and store every whole frame")
    p.add_argument("--assets", type=Path, help="MakeHuman assets mirror (folder, archive or makehuman-cc0/ tree)")
    p.add_argument("--workers", type=int,
                   help="processes rendering sequences side by side; the file is the same bytes for any number "
                        "(default: the CPUs this process may use, at most one per sequence; 1: in this process)")
    p.set_defaults(run=run)


def run(args) -> int:
    from poselift.errors import InputError
    from poselift.rendering.render import RenderSettings, render_prepared

    for name in ("seed", "background_seed"):
        if (getattr(args, name) or 0) < 0:
            raise InputError(f"--{name.replace('_', '-')}", f"must be >= 0 (got {getattr(args, name)})")
    if not 1 <= args.quality <= 100:
        raise InputError("--quality", f"must be in 1..100 (got {args.quality})")
    settings = RenderSettings(every=args.every, seed=args.seed, background_seed=args.background_seed,
                              split=args.split, quality=args.quality, full_frames=args.full_frames)
    counts = render_prepared(args.prepared, args.out, settings, assets=args.assets, workers=args.workers)
    print(f"wrote {args.out}: {counts['crops']} crops of {counts['views']} views ({counts['sequences']} sequences, "
          f"{counts['workers']} worker{'s' * (counts['workers'] != 1)})")
    return 0
