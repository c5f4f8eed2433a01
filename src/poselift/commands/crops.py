"""``poselift crops SOURCE ... --out C.h5``: real labelled frames as person crops, in the layout ``poselift
render`` writes (:mod:`poselift.data.crop_file`), so detectors and image lifters read real and rendered
people alike.

Sources (:mod:`poselift.data.frames`): ``coco`` (COCO keypoint annotations json + the images folder),
``h36m`` / ``3dhp`` (MMPose's body3d annotation npz + the images folder), ``video`` (one camera's video with
the 2D ground truth of a prepared file's sequence and camera, e.g. Human3.6M's ``S1/Videos/Walking.54138969.mp4``).
"""

from __future__ import annotations

from pathlib import Path

SOURCES = ("coco", "h36m", "3dhp", "video")


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
    p.add_argument("--out", required=True, type=Path, help="labelled-crops HDF5 file to write")
    p.set_defaults(run=run)


def run(args) -> int:
    from poselift.data import frames
    from poselift.data.crop_file import CropWriter
    from poselift.errors import InputError

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
