"""``poselift crops SOURCE ... --out C.h5``: real labelled frames as person crops, in the layout ``poselift
render`` writes (:mod:`poselift.data.crop_file`), so detectors and image lifters read real and rendered
people alike.

Sources (:mod:`poselift.data.frames`): ``coco`` (COCO keypoint annotations json + the images folder),
``h36m`` / ``3dhp`` (MMPose's body3d annotation npz + the images folder), ``video`` (one camera's video with
the 2D ground truth of a prepared file's sequence and camera, e.g. Human3.6M's ``S1/Videos/Walking.54138969.mp4``),
``videos`` (every sequence and camera of a prepared file from a folder of videos, by default in Human3.6M's
layout ``<subject>/Videos/<sequence>.<camera>.mp4``: one view per (sequence, camera) keyed as ``poselift render``
keys them, so the image stages split them by the prepared file's splits; a prepared file subsampled with
``--frame-step`` takes every n-th video frame, n = video fps / prepared fps).
"""

from __future__ import annotations

import sys
from pathlib import Path

SOURCES = ("coco", "h36m", "3dhp", "video", "videos")
H36M_VIDEOS = "{subject}/Videos/{sequence}.{camera}.mp4"  # Human3.6M's own layout of its videos


def add_parser(sub):
    p = sub.add_parser("crops", help="real labelled frames (COCO, Human3.6M, 3DHP, a video) as person crops")
    p.add_argument("source", choices=SOURCES)
    p.add_argument("--annotations", type=Path, help="coco: keypoints json; h36m, 3dhp: MMPose body3d npz")
    p.add_argument("--images", type=Path, help="folder the annotations' image paths are relative to "
                                               "(default: the annotations' folder)")
    p.add_argument("--video", type=Path, help="video: the video file")
    p.add_argument("--prepared", type=Path, help="video: the prepared file holding its 2D ground truth")
    p.add_argument("--sequence", help="video: the prepared sequence (subject/name)")
    p.add_argument("--camera", help="video: the prepared camera")
    p.add_argument("--every", type=int, default=1, help="video: every n-th frame (default 1)")
    p.add_argument("--videos", type=Path, help="videos: the folder of the prepared file's videos")
    p.add_argument("--pattern", default=H36M_VIDEOS,
                   help=f"videos: a video's path under --videos (default Human3.6M's: {H36M_VIDEOS})")
    p.add_argument("--skip-missing", action="store_true",
                   help="videos: leave out the views whose video is missing (one warning line names them; "
                        "e.g. Human3.6M's S11 Directions.54138969 is broken) instead of stopping")
    p.add_argument("--out", required=True, type=Path, help="labelled-crops HDF5 file to write")
    p.set_defaults(run=run)


def run(args) -> int:
    from poselift.data import frames
    from poselift.data.crop_file import CropWriter
    from poselift.errors import InputError

    if args.source == "videos":
        return _videos(args)
    if args.source == "video":
        view = _video_view(args)
    else:
        if args.annotations is None:
            raise InputError("--annotations", f"required for {args.source}")
        read = {"coco": frames.coco_frames, "h36m": frames.h36m_frames, "3dhp": frames.mpi_inf_3dhp_frames}
        view = frames.crops_view(f"{args.source}/{args.annotations.stem}/images",
                                 read[args.source](args.annotations, args.images))
    if len(view) == 0:
        raise InputError(args.annotations or args.video, "no labelled person in it")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("run", "out")}
    with CropWriter(args.out, "frames", "", settings) as writer:
        writer.add(view)
    print(f"wrote {args.out}: {len(view)} crops ({args.source})")
    return 0


def _video_view(args):
    from poselift.data import frames
    from poselift.data.prepared import load_prepared
    from poselift.errors import InputError

    for name in ("video", "prepared", "sequence", "camera"):
        if getattr(args, name) is None:
            raise InputError(f"--{name}", "required for a video")
    if args.every < 1:
        raise InputError("--every", f"must be >= 1 (got {args.every})")
    data = load_prepared(args.prepared)
    seq = next((s for s in data.sequences if s.key == args.sequence), None)
    if seq is None:
        raise InputError(args.prepared, f"no sequence '{args.sequence}'")
    if args.camera not in seq.cameras:
        raise InputError(args.prepared, f"sequence {seq.key} has no camera '{args.camera}' "
                                        f"(cameras: {', '.join(seq.cameras)})")
    keypoints = seq.positions_2d[seq.cameras.index(args.camera)]
    records = frames.prepared_video_frames(args.video, keypoints, args.every, f"{seq.key}/{args.camera}")
    return frames.crops_view(f"{seq.key}/{args.camera}", records, range(0, len(keypoints), args.every))


def _videos(args) -> int:
    """Every (sequence, camera) of ``--prepared`` from its video under ``--videos`` into one crops file."""
    from tqdm import tqdm

    from poselift.data import frames
    from poselift.data.crop_file import CropWriter
    from poselift.data.prepared import load_prepared
    from poselift.errors import InputError

    for name in ("videos", "prepared"):
        if getattr(args, name) is None:
            raise InputError(f"--{name}", "required for videos")
    if not args.videos.is_dir():
        raise InputError(args.videos, "not a folder")
    data = load_prepared(args.prepared)
    jobs, missing = [], []
    for seq in data.sequences:
        for c, camera in enumerate(seq.cameras):
            try:
                relative = args.pattern.format(subject=seq.subject, sequence=seq.name, camera=camera)
            except (KeyError, IndexError, ValueError) as e:
                raise InputError("--pattern", f"'{args.pattern}' is not a pattern of {{subject}}, {{sequence}}, "
                                              f"{{camera}} ({type(e).__name__}: {e})") from None
            path = args.videos / relative
            (jobs if path.is_file() else missing).append((seq, c, camera, path))
    if missing and not args.skip_missing:
        raise InputError(missing[0][3], f"video file not found ({len(missing)} of the prepared file's "
                                        f"{len(jobs) + len(missing)} views have none; --skip-missing leaves them out)")
    if missing:
        names = ", ".join(f"{s.key}/{camera}" for s, _, camera, _ in missing[:5])
        print(f"poselift: warning: {args.videos}: no video for {len(missing)} views, left out: {names}"
              f"{', ...' if len(missing) > 5 else ''}", file=sys.stderr)
    if not jobs:
        raise InputError(args.videos, "no video of any view of the prepared file")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("run", "out")}
    crops = 0
    with CropWriter(args.out, "frames", str(args.prepared), settings) as writer:
        for seq, c, camera, path in tqdm(jobs, desc="crops from videos", unit="view"):
            keypoints = seq.positions_2d[c]
            step = _frame_step(path, data.fps)
            key = f"{seq.key}/{camera}"
            try:
                view = frames.crops_view(key, frames.prepared_video_frames(path, keypoints, 1, key, step),
                                         range(len(keypoints)))
            except ValueError as e:  # a frame without two labelled joints: no box to crop
                raise InputError(path, str(e)) from None
            writer.add(view)
            crops += len(view)
    print(f"wrote {args.out}: {crops} crops of {len(jobs)} views (videos)")
    return 0


def _frame_step(video: Path, prepared_fps: float) -> int:
    """Video frames per prepared frame: video fps / prepared fps, which must be a whole number."""
    from poselift.data.frames import VideoReader
    from poselift.errors import InputError

    with VideoReader(video) as reader:
        fps = reader.fps
    ratio = fps / prepared_fps if prepared_fps > 0 else float("nan")
    if not ratio >= 0.99 or abs(ratio - round(ratio)) > 0.01:
        raise InputError(video, f"runs at {fps:g} fps, not a whole multiple of the prepared file's {prepared_fps:g} fps")
    return int(round(ratio))
