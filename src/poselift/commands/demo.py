"""``poselift demo VIDEO|IMAGE --lifter CKPT --out OUT.{mp4,gif,png}``: 2D and 3D pose of one person in the wild.

For every frame (a video read with OpenCV, :class:`poselift.data.frames.VideoReader`; or one image):

1. **where the person is** (``--person-box``): ``frame`` looks at the whole frame; ``hog`` follows one
   pedestrian with OpenCV's HOG detector (:class:`poselift.detection.blazepose.PersonTracker`), for small
   people in wide views such as ``vtest.avi``, where BlazePose's own person detector finds nobody;
2. **2D** (``--detector``): ``mediapipe`` is BlazePose on the whole frame (MediaPipe's frame-to-frame tracking)
   or on the region around the HOG box, mapped to Human3.6M-17 (:mod:`poselift.detection.blazepose`).
   ``hrnet``, ``hrnet-att``, ``cpn`` run a heatmap network (``--detector-checkpoint``: trained by poselift
   train, or ``import-checkpoint --format hrnet``) on the HRNet crop (:mod:`poselift.data.crops`: 25 %
   padding, 3:4, 256x192, resized to the network's input) of a person box, with the flip test. The network
   has no person detector of its own: its box is the one around BlazePose's landmarks in that frame, else
   (BlazePose finds nobody) the HOG box with ``--person-box hog``, or the whole frame with ``frame``; the
   overlay says which;
3. **3D**: the lifting checkpoint (``--lifter``, any poselift lifting model) on the sequence of 2D poses,
   screen-normalised by the frame's width as in training and evaluation
   (:func:`poselift.camera.normalize_screen_coordinates`: x in [-1, 1], y with the same scale), in windows of
   the model's receptive field, edge-padded, exactly as ``poselift evaluate`` predicts
   (:func:`poselift.lifting.inference.predict`; its flip test when the checkpoint's stage used it). Frames
   without a person are lifted from the nearest frame that has one (so temporal models see a continuous
   sequence) and drawn with no skeleton;
4. **drawing** (:mod:`poselift.visualise`): the frame with the 2D skeleton beside the 3D skeleton (root-
   relative, y up, fixed axes), written as mp4 (MPEG-4 Part 2, OpenCV/FFmpeg), gif (Pillow) or png (one
   frame), atomically (:func:`poselift.io.atomic_output`).

The 3D is the lifter's: root-relative, in the camera's frame, with the scale and bone lengths of the data it
was trained on (the open benchmark's figures are about 1.5 m tall); there is no global position.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from poselift.errors import InputError

DETECTOR_CHOICES = ("mediapipe", "hrnet", "hrnet-att", "cpn")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
OUTPUT_SUFFIXES = (".mp4", ".gif", ".png")


def add_parser(sub):
    p = sub.add_parser("demo", help="a video or image in the wild -> 2D overlay and 3D skeleton side by side "
                                    "(mp4, gif or png)")
    p.add_argument("input", type=Path, metavar="VIDEO|IMAGE", help="a video OpenCV decodes, or an image "
                                                                    f"({', '.join(IMAGE_SUFFIXES)})")
    p.add_argument("--lifter", required=True, type=Path, metavar="CKPT",
                   help="a poselift lifting checkpoint (results/<experiment>/stage<N>/checkpoint.pt)")
    p.add_argument("--out", required=True, type=Path, metavar="OUT", help="output file: .mp4, .gif or .png "
                                                                          "(png: one frame)")
    p.add_argument("--detector", default="mediapipe", choices=DETECTOR_CHOICES,
                   help="2D detector (default mediapipe: BlazePose, no checkpoint needed)")
    p.add_argument("--detector-checkpoint", type=Path, metavar="C",
                   help="hrnet, hrnet-att, cpn: the network's poselift checkpoint")
    p.add_argument("--person-box", default="frame", choices=("frame", "hog"),
                   help="where to look for the person: the whole frame (default), or the box of one pedestrian "
                        "followed by OpenCV's HOG detector (small people in wide views)")
    p.add_argument("--start", type=int, default=0, help="video: first frame (default 0)")
    p.add_argument("--frames", type=int, default=None, help="video: at most this many frames (default: to the end)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: the video's, else 10)")
    p.add_argument("--device", default="cpu", help="device of the lifter and network detector: cpu (default), "
                                                   "cuda, cuda:N or auto")
    p.set_defaults(run=run)


# ------------------------------------------------------------------------------------------------ input

class Frames:
    """The frames of a video (``start``, at most ``count``) or of one image: ``len``, iteration (RGB uint8,
    decoded again on every pass), ``width``, ``height``, ``fps`` (None for an image)."""

    def __init__(self, path: Path, start: int = 0, count: int | None = None):
        from poselift.data.frames import VideoReader, read_image

        self.path = path
        if not path.is_file():
            raise InputError(path, "file not found")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            self.image = read_image(path)
            self.video, self.start, self.stop, self.fps = None, 0, 1, None
            self.height, self.width = self.image.shape[:2]
            return
        self.image = None
        self.video = VideoReader(path)
        if self.video.frame_count <= 0:
            raise InputError(path, "OpenCV reports no frame count for this video")
        if not 0 <= start < self.video.frame_count:
            raise InputError("--start", f"{path} has {self.video.frame_count} frames, no frame {start}")
        self.start = start
        self.stop = self.video.frame_count if count is None else min(self.video.frame_count, start + count)
        self.fps = self.video.fps if self.video.fps > 0 else None
        self.height, self.width = self.video.height, self.video.width

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        if self.image is not None:
            yield self.image
            return
        yield from self.video.frames(self.start, self.stop)

    def close(self) -> None:
        if self.video is not None:
            self.video.close()


# --------------------------------------------------------------------------------------------- detectors

class FrameNetwork:
    """A heatmap network (``hrnet``, ``hrnet-att``, ``cpn``) on whole frames: ``detect(image, box)`` -> H36M-17
    keypoints (17, 2) in frame pixels and scores (17,), from the HRNet crop of the person box [x, y, w, h]
    (the checks and the decoding of :class:`poselift.detection.network.NetworkDetector`, on frames instead of
    a crops file)."""

    def __init__(self, kind: str, checkpoint: Path, device="cpu", flip_test: bool = True):
        from poselift.detection.network import load_network

        self.model, self.device, self.input_size, self.keypoint_format, _ = load_network(kind, checkpoint, device)
        self.kind, self.flip_test = kind, bool(flip_test)

    def detect(self, image: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
        points, scores = self.detect_batch([image], [box])
        return points[0], scores[0]

    def detect_batch(self, images, boxes) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (N, 17, 2) frame pixels and scores (N, 17) of N (image, box) pairs."""
        from poselift.data.crops import CROP_SIZE, box_from_xywh, crop, crop_affine
        from poselift.detection.heatmaps import predict_crops, to_frame_pixels
        from poselift.keypoint_formats import scores_to_h36m17, to_h36m17

        affines = np.stack([crop_affine(box_from_xywh(b), CROP_SIZE) for b in boxes])
        crops = np.stack([crop(im, a, CROP_SIZE) for im, a in zip(images, affines)])
        points, scores = predict_crops(self.model, crops, self.input_size, CROP_SIZE, self.flip_test, self.device)
        points = to_frame_pixels(points, affines)
        if self.keypoint_format != "h36m":
            points, scores = to_h36m17(points, self.keypoint_format), scores_to_h36m17(scores, self.keypoint_format)
        return points.astype(np.float64), np.asarray(scores, np.float64)


def detect_frames(frames: Frames, detector: str, person_box: str, network: FrameNetwork | None = None,
                  progress: bool = True, resync: int = 10) -> dict:
    """Per frame of ``frames``: ``keypoints`` (F, 17, 2) px (NaN: no person), ``scores`` (F, 17), ``boxes``
    (F, 4) [x, y, w, h] the person box used (NaN: none), ``box_source`` (F,) str (``mediapipe``: around BlazePose's
    landmarks, ``hog``, ``tracked``: the landmark box of the frame before, ``frame`` or ``""``), ``seconds`` of detection.

    With ``person_box="hog"`` BlazePose runs on the region around a box: the box around its own landmarks of
    the frame before, and HOG's (:class:`~poselift.detection.blazepose.PersonTracker`, which follows that
    box by overlap) on the first frame, after a frame where BlazePose lost the person, and every ``resync``
    frames (so that the landmark box cannot drift for long); after three frames in a row without a person in
    the tracked box, the track starts again on the largest pedestrian.
    """
    from tqdm import tqdm

    from poselift.detection.blazepose import BlazePose, PersonTracker

    n = len(frames)
    keypoints = np.full((n, 17, 2), np.nan)
    scores = np.zeros((n, 17))
    boxes = np.full((n, 4), np.nan)
    source = np.full(n, "", dtype=object)
    tracker = PersonTracker() if person_box == "hog" else None
    full = np.array([0.0, 0.0, frames.width, frames.height])
    follow, last_hog, fails = None, -resync, 0  # the last landmark box; the last frame HOG ran on; misses
    start = time.perf_counter()
    # MediaPipe's own tracking suits whole frames of one video in order; regions around moving boxes need
    # fresh detections
    with BlazePose(video=frames.image is None and tracker is None) as blazepose:
        for i, image in enumerate(tqdm(frames, total=n, desc=f"detect ({detector})", unit="frame",
                                       disable=None if progress else True)):
            region, region_source = None, ""
            if tracker is not None:
                if follow is None or i - last_hog >= resync:
                    region, region_source, last_hog = tracker(image), "hog", i
                else:
                    region, region_source = follow, "tracked"
                if region is None:
                    continue  # no pedestrian seen yet
            found = blazepose.detect(image, region)
            if tracker is not None:
                follow = None if found is None else found.box
                if found is not None:
                    tracker.box, tracker.misses, fails = found.box.copy(), 0, 0
                else:
                    fails += 1
                    if fails >= 3:  # BlazePose sees no person in the tracked box: start again on the largest
                        tracker.box, fails = None, 0
            if detector == "mediapipe":
                if found is not None:
                    keypoints[i], scores[i], boxes[i] = found.keypoints, found.scores, found.box
                    source[i] = "mediapipe"
                continue
            if found is not None:
                box, source[i] = found.box, "mediapipe"
            elif region is not None:
                box, source[i] = region, region_source
            else:
                box, source[i] = full, "frame"
            boxes[i] = box
            keypoints[i], scores[i] = network.detect(image, box)
    return {"keypoints": keypoints, "scores": scores, "boxes": boxes, "box_source": source,
            "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------------------------------- lifting

def load_lifter(path: Path, device="cpu"):
    """(model, window, flip_test) of a poselift lifting checkpoint; anything else -> InputError."""
    import torch

    from poselift.models import model_window, output_frames
    from poselift.training.checkpoint import instantiate, read_checkpoint
    from poselift.training.stage import resolve_device

    ckpt = read_checkpoint(path)
    if ckpt.get("task", "lifting") != "lifting" or ckpt.get("output_frames") not in (None, "centre", "all"):
        raise InputError(path, f"a '{ckpt.get('task')}' checkpoint ({ckpt.get('model')}), not a lifting model's")
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    model = instantiate(ckpt, path, device)
    try:
        output_frames(model)
    except ValueError:
        raise InputError(path, f"{ckpt.get('model')} is not a lifting model (no output_frames)") from None
    window = ckpt.get("window") or model_window(model)
    if not window:
        raise InputError(path, "the checkpoint does not say how many input frames the model takes ('window')")
    flip_test = bool((ckpt.get("stage") or {}).get("flip_test", False))
    return model, int(window), flip_test, device


def lift(model, window: int, flip_test: bool, keypoints: np.ndarray, scores: np.ndarray, width: int, height: int,
         device="cpu") -> np.ndarray:
    """Root-relative camera-frame 3D (F, 17, 3) in mm (pelvis at the origin) of 2D keypoints (F, 17, 2) in the
    pixels of a ``width`` x ``height`` frame; frames with NaN keypoints take the nearest frame's 2D."""
    from poselift.camera import normalize_screen_coordinates
    from poselift.data.loading import make_windows
    from poselift.data.windows import Views
    from poselift.lifting.inference import predict
    from poselift.models import output_frames

    keypoints = np.asarray(keypoints, np.float64)
    have = np.flatnonzero(np.isfinite(keypoints).all(axis=(1, 2)))
    if len(have) == 0:
        raise ValueError("no frame has 2D keypoints")
    n = len(keypoints)
    nearest = have[np.abs(np.arange(n)[:, None] - have[None, :]).argmin(axis=1)]
    filled, filled_scores = keypoints[nearest], np.asarray(scores, np.float64)[nearest]
    views = Views(inputs_2d=normalize_screen_coordinates(filled, width, height).astype(np.float32),
                  scores=filled_scores.astype(np.float32), targets_3d=np.zeros((n, 17, 3), np.float32),
                  trajectory=np.zeros((n, 3), np.float32), valid=np.ones(n, bool), view=np.zeros(n, np.int64),
                  action=np.zeros(n, np.int64), frame=np.arange(n, dtype=np.int64), starts=np.array([0]),
                  ends=np.array([n]), keys=[("demo", "camera")], actions=("demo",))
    windows = make_windows(views, output_frames(model), window)
    poses = predict(model, views, windows, 256, flip_test, device)
    return poses - poses[:, :1]  # root-relative as evaluation aligns it: the pelvis at the origin


# ---------------------------------------------------------------------------------------------- output

class _Writer:
    """Frames (RGB uint8, all of one size) into ``path`` as ``kind`` (mp4, gif or png)."""

    def __init__(self, path: Path, kind: str, fps: float):
        self.path, self.kind, self.fps = path, kind, fps
        self.frames, self.size, self._video = [], None, None

    def write(self, frame: np.ndarray) -> None:
        import cv2

        if self.size is None:
            self.size = frame.shape[1], frame.shape[0]
            if self.kind == "mp4":
                self._video = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
                if not self._video.isOpened():
                    raise InputError(self.path, "OpenCV could not open an MPEG-4 video writer here")
        if self.kind == "mp4":
            self._video.write(np.ascontiguousarray(frame[..., ::-1]))
        else:
            self.frames.append(frame)

    def close(self) -> None:
        from PIL import Image

        if self._video is not None:
            self._video.release()
        elif self.kind == "gif":
            images = [Image.fromarray(f) for f in self.frames]
            images[0].save(self.path, format="GIF", save_all=True, append_images=images[1:],
                           duration=max(20, int(round(1000 / self.fps))), loop=0)
        elif self.kind == "png":
            Image.fromarray(self.frames[0]).save(self.path, format="PNG")


def render_frame(image, index: int, det: dict, pose_3d, panel, detector: str) -> np.ndarray:
    """One output frame: the image with its 2D skeleton and box, and the 3D panel beside it."""
    from poselift.visualise import draw_box, draw_skeleton_2d, put_text, side_by_side

    kp, found = det["keypoints"][index], np.isfinite(det["keypoints"][index]).all()
    left = draw_skeleton_2d(image, kp, det["scores"][index]) if found else np.ascontiguousarray(image).copy()
    if np.isfinite(det["boxes"][index]).all():
        draw_box(left, det["boxes"][index])
    box = det["box_source"][index]
    put_text(left, f"#{index}  2D: {detector}" + (f"  box: {box}" if detector != "mediapipe" and box else ""))
    if not found:
        put_text(left, "no person found", row=1)
    return side_by_side(left, panel.render(pose_3d if found else None))


def run(args) -> int:
    from tqdm import tqdm

    from poselift.io import atomic_output
    from poselift.visualise import Skeleton3DPanel

    out = Path(args.out)
    kind = out.suffix.lower().lstrip(".")
    if f".{kind}" not in OUTPUT_SUFFIXES:
        raise InputError(out, f"unknown output type '{out.suffix}' (use {', '.join(OUTPUT_SUFFIXES)})")
    if args.frames is not None and args.frames < 1:
        raise InputError("--frames", f"must be >= 1 (got {args.frames})")
    if args.start < 0:
        raise InputError("--start", f"must be >= 0 (got {args.start})")
    if args.fps is not None and not args.fps > 0:
        raise InputError("--fps", f"must be > 0 (got {args.fps})")
    network = None
    if args.detector != "mediapipe":
        if args.detector_checkpoint is None:
            raise InputError("--detector-checkpoint", f"required by the network detector '{args.detector}'")
    elif args.detector_checkpoint is not None:
        raise InputError("--detector-checkpoint", "mediapipe needs no checkpoint (it ships its models)")
    frames = Frames(args.input, args.start, args.frames)
    if kind == "png" and len(frames) != 1:
        raise InputError(out, f"a .png holds one frame, the input has {len(frames)}: use .mp4 or .gif, or --frames 1")
    model, window, flip_test, device = load_lifter(args.lifter, args.device)
    if args.detector != "mediapipe":
        network = FrameNetwork(args.detector, args.detector_checkpoint, device)
    from poselift.detection.blazepose import import_mediapipe

    import_mediapipe()  # BlazePose finds the person (and its box) for every detector

    started = time.perf_counter()
    try:
        det = detect_frames(frames, args.detector, args.person_box, network)
        if not np.isfinite(det["keypoints"]).all(axis=(1, 2)).any():
            hint = "" if args.person_box == "hog" else " (small people in a wide view: try --person-box hog)"
            raise InputError(args.input, f"no person found in any of its {len(frames)} frames{hint}")
        t = time.perf_counter()
        poses = lift(model, window, flip_test, det["keypoints"], det["scores"], frames.width, frames.height, device)
        lift_seconds = time.perf_counter() - t
        t = time.perf_counter()
        panel = Skeleton3DPanel(size=max(480, min(frames.height, 720)))
        fps = args.fps or frames.fps or 10.0
        with atomic_output(out) as tmp:
            # OpenCV/FFmpeg pick the container from the file name: write under the real suffix, then move
            work = tmp.with_name(tmp.name + out.suffix)
            try:
                writer = _Writer(work, kind, fps)
                for i, image in enumerate(tqdm(frames, total=len(frames), desc="render", unit="frame", disable=None)):
                    writer.write(render_frame(image, i, det, poses[i], panel, args.detector))
                writer.close()
                os.replace(work, tmp)
            finally:
                work.unlink(missing_ok=True)
        render_seconds = time.perf_counter() - t
    finally:
        frames.close()
    total = time.perf_counter() - started
    found = int(np.isfinite(det["keypoints"]).all(axis=(1, 2)).sum())
    n = len(frames)
    print(f"wrote {out}: {n} frames ({writer.size[0]}x{writer.size[1]}, {fps:g} fps), a person in {found}; "
          f"{total:.1f} s = detection {det['seconds']:.1f} s ({1000 * det['seconds'] / n:.0f} ms/frame) + "
          f"lifting {lift_seconds:.1f} s + drawing {render_seconds:.1f} s ({1000 * render_seconds / n:.0f} ms/frame)")
    return 0
