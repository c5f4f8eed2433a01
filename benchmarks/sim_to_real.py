"""The sim-to-real gap of the render-trained 2D detector, measured.

    .venv/bin/python benchmarks/sim_to_real.py [--checkpoint results/hrnet-att-cpu/stage1/checkpoint.pt]
        [--renders data/renders/bandai-cpu-img.h5] [--prepared data/prepared/bandai-cpu-img.h5]
        [--media ../shared/data/media] [--render-crops 400] [--video-frames 60] [--json OUT.json]

Two domains, two detectors, one metric (:mod:`poselift.detection.evaluation`: PCK@0.05 of the box's longer
side, MMPose's definition, and the mean error in pixels and in % of the box's longer side):

- **rendered**: ``--render-crops`` crops spread evenly over the test split of the rendered benchmark (the
  views of sequences whose split is ``test`` in the prepared file), scored against their labels (the
  projected ground truth, in frame pixels; every joint counts, self-occluded ones too, as in
  ``poselift evaluate``). The render-trained HRNet runs on each crop as ``poselift detect`` does (flip test);
  BlazePose runs on the same 256x192 crop (whole-image mode) and is carried back to frame pixels through the
  crop's affine. A crop where BlazePose finds nobody counts as all joints wrong (PCK) and is left out of the
  pixel errors; the table says how many.
- **real**: frames of ``--media`` (``vtest.avi``: ``--video-frames`` frames spread over the video, BlazePose
  on the region of the person HOG finds, as ``poselift demo --person-box hog``; the images: BlazePose on the
  whole image). There are no labels: BlazePose's keypoints (mapped to H36M-17,
  :mod:`poselift.detection.blazepose`) are the pseudo-labels, and the box is made from them as the renders'
  boxes are made from their labels (the extent of the 17 joints, 3:4, padded by 1.25:
  :func:`poselift.data.crops.box_from_joints`); the HRNet runs on the crop of that box.

The two rows are not symmetric: the real row measures the HRNet's agreement with BlazePose, which has its
own errors and its own joint definitions (the synthesised pelvis, neck and head differ from the benchmark's
by construction), so the table also gives PCK on the 12 limb joints (hips, knees, ankles, shoulders, elbows,
wrists), which both define alike. Read the rendered BlazePose row as the size of that definition and
BlazePose-error floor.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

LIMBS = np.array([1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16])  # H36M-17 hips, knees, ankles, shoulders, elbows, wrists
IMAGES = ("messi5.jpg", "basketball1.png", "basketball2.png")


def scores(pred, gt, boxes_xyxy, found) -> dict:
    """PCK@0.05 (all 17 joints; the 12 limb joints) over every sample (a sample not found = every joint wrong),
    mean px error and mean error in % of the box's longer side over the found samples."""
    from poselift.detection.evaluation import pck, pixel_error

    n = len(gt)
    labelled = np.ones((n, 17))
    missing = ~found
    pred = np.where(missing[:, None, None], gt + 1e6, pred)  # not found: far away, wrong at any threshold
    pck_all, _ = pck(pred, gt, labelled, boxes_xyxy)
    pck_limbs, _ = pck(pred[:, LIMBS], gt[:, LIMBS], labelled[:, LIMBS], boxes_xyxy)
    size = np.maximum(boxes_xyxy[:, 2] - boxes_xyxy[:, 0], boxes_xyxy[:, 3] - boxes_xyxy[:, 1])
    px, _ = pixel_error(pred[found], gt[found], labelled[found]) if found.any() else (np.nan, None)
    rel = float(np.mean(np.linalg.norm(pred[found] - gt[found], axis=-1) / size[found, None]) * 100) if found.any() \
        else np.nan
    return {"samples": n, "found": int(found.sum()), "pck@0.05": pck_all, "pck@0.05_limbs": pck_limbs,
            "mean_px": px, "mean_%box": rel, "median_box_px": float(np.median(size))}


def rendered_test(renders: Path, prepared: Path, count: int, network) -> dict:
    """HRNet and BlazePose on ``count`` test crops of the rendered benchmark, against the labels."""
    import h5py

    from poselift.data.crop_file import CropFile
    from poselift.detection.blazepose import BlazePose
    from poselift.detection.heatmaps import predict_crops, to_frame_pixels

    with h5py.File(prepared, "r") as f:
        test = {f"{s}/{q}" for s in f["sequences"] for q in f["sequences"][s]
                if f["sequences"][s][q].attrs["split"] == "test"}
    crops = CropFile(renders)
    every = [(v, i) for v in crops.views if v.rsplit("/", 1)[0] in test for i in range(crops.counts[v])]
    if not every:
        raise SystemExit(f"{renders}: no crops of the test split of {prepared}")
    picks = [every[k] for k in np.linspace(0, len(every) - 1, min(count, len(every))).round().astype(int)]
    views = {}
    gt, boxes, affines, images = [], [], [], []
    for key, i in picks:
        if key not in views:
            views[key] = crops.view(key)
        v = views[key]
        gt.append(v.keypoints_frame[i]), boxes.append(v.box[i]), affines.append(v.affine[i])
        images.append(crops.crop(key, i))
    gt, boxes, affines, images = (np.asarray(a, np.float64) if k < 3 else np.stack(a)
                                  for k, a in enumerate((gt, boxes, affines, images)))
    t = time.perf_counter()
    found_hrnet = []
    for b in range(0, len(images), 64):
        p, _ = predict_crops(network.model, images[b:b + 64], network.input_size, crops.crop_size, True,
                             network.device)
        found_hrnet.append(p)
    hrnet = to_frame_pixels(np.concatenate(found_hrnet), affines)
    hrnet_s = time.perf_counter() - t
    t = time.perf_counter()
    mp = np.zeros_like(gt)
    mp_found = np.zeros(len(gt), bool)
    with BlazePose() as blazepose:
        for n, image in enumerate(images):
            r = blazepose.detect(image)
            if r is not None:
                mp[n], mp_found[n] = to_frame_pixels(r.keypoints, affines[n]), True
    mp_s = time.perf_counter() - t
    crops.close()
    return {"hrnet": {**scores(hrnet, gt, boxes, np.ones(len(gt), bool)), "seconds": hrnet_s},
            "mediapipe": {**scores(mp, gt, boxes, mp_found), "seconds": mp_s}}


def real_frames(media: Path, video_frames: int, network) -> dict:
    """BlazePose pseudo-labels on the real media frames and the HRNet on the crops of their boxes."""
    from poselift.data.frames import VideoReader, read_image
    from poselift.detection.blazepose import BlazePose, PersonTracker

    samples = []  # (name, image, BlazePoseResult)
    with BlazePose() as blazepose:
        video = media / "vtest.avi"
        if video.is_file() and video_frames > 0:
            reader = VideoReader(video)
            wanted = set(np.linspace(0, reader.frame_count - 1, video_frames).round().astype(int).tolist())
            tracker = PersonTracker()
            for i, frame in enumerate(reader.frames()):
                if i not in wanted:
                    continue
                tracker.box = None  # the largest pedestrian of each sampled frame (frames are far apart)
                box = tracker(frame)
                r = blazepose.detect(frame, box) if box is not None else None
                if r is not None:
                    samples.append((f"vtest#{i}", frame, r))
            reader.close()
        for name in IMAGES:
            if (media / name).is_file():
                image = read_image(media / name)
                r = blazepose.detect(image)
                if r is not None:
                    samples.append((name, image, r))
    if not samples:
        raise SystemExit(f"{media}: BlazePose found nobody in the media frames")
    from poselift.data.crops import box_from_joints

    gt = np.stack([r.keypoints for _, _, r in samples])
    # the rendered benchmark's box, from the pseudo-labels as the renders' from their labels: the joints'
    # extent grown to 3:4 and padded by 1.25 (poselift.data.crops.box_from_joints); the crop is that box's
    extent = np.concatenate([gt.min(axis=1), gt.max(axis=1) - gt.min(axis=1)], axis=1)  # x, y, w, h
    boxes = np.stack([box_from_joints(k).xyxy for k in gt])
    t = time.perf_counter()
    pred = np.stack([network.detect(image, e)[0] for (_, image, _), e in zip(samples, extent)])
    seconds = time.perf_counter() - t
    video_rows = np.array([name.startswith("vtest") for name, _, _ in samples])
    out = {"all": {**scores(pred, gt, boxes, np.ones(len(gt), bool)), "seconds": seconds}}
    for label, rows in (("vtest.avi", video_rows), ("images", ~video_rows)):
        if rows.any():
            out[label] = scores(pred[rows], gt[rows], boxes[rows], np.ones(int(rows.sum()), bool))
    out["sampled_video_frames"] = int(video_frames)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=REPO / "results/hrnet-att-cpu/stage1/checkpoint.pt")
    p.add_argument("--detector", default="hrnet-att", choices=("hrnet", "hrnet-att", "cpn"))
    p.add_argument("--renders", type=Path, default=REPO / "data/renders/bandai-cpu-img.h5")
    p.add_argument("--prepared", type=Path, default=REPO / "data/prepared/bandai-cpu-img.h5")
    p.add_argument("--media", type=Path, default=Path(os.environ.get("POSELIFT_SHARED", REPO.parent / "shared"))
                   / "data" / "media")
    p.add_argument("--render-crops", type=int, default=400)
    p.add_argument("--video-frames", type=int, default=60)
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)

    import torch

    from poselift.commands.demo import FrameNetwork
    from poselift.errors import InputError

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        network = FrameNetwork(args.detector, args.checkpoint, "cpu")
        rendered = rendered_test(args.renders, args.prepared, args.render_crops, network)
        real = real_frames(args.media, args.video_frames, network)
    except InputError as e:
        print(f"sim_to_real: error: {e}", file=sys.stderr)
        return 2
    rows = [(f"{args.detector} (render-trained)", "rendered test crops", "labels", rendered["hrnet"]),
            ("mediapipe (BlazePose)", "rendered test crops", "labels", rendered["mediapipe"]),
            (f"{args.detector} (render-trained)", "real: vtest.avi + images", "mediapipe", real["all"])]
    rows += [(f"{args.detector} (render-trained)", f"real: {k}", "mediapipe", real[k])
             for k in ("vtest.avi", "images") if k in real]
    print(f"sim-to-real: {args.checkpoint} (input {network.input_size[0]}x{network.input_size[1]})\n")
    print("| detector | frames | reference | found / samples | PCK@0.05 | PCK@0.05 limbs | mean px | mean % box | "
          "median box px |")
    print("|---|---|---|---|---|---|---|---|---|")
    for det, on, ref, s in rows:
        print(f"| {det} | {on} | {ref} | {s['found']} / {s['samples']} | {100 * s['pck@0.05']:.1f} | "
              f"{100 * s['pck@0.05_limbs']:.1f} | {s['mean_px']:.1f} | {s['mean_%box']:.1f} | {s['median_box_px']:.0f} |")
    if args.json:
        from poselift.io import write_json

        write_json(args.json, {"checkpoint": str(args.checkpoint), "rendered": rendered, "real": real})
    return 0


if __name__ == "__main__":
    sys.exit(main())
