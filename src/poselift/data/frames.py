"""Real frames from real files: videos decoded with OpenCV, and the labelled images of COCO, Human3.6M and
MPI-INF-3DHP in their published annotation layouts. Everything comes out RGB uint8 (H, W, 3); labelled
frames come out as a :class:`LabelledFrame` (the image, H36M-17 keypoints in its pixels, visibility), and
:func:`labelled_crops` turns them into HRNet crops (:mod:`poselift.data.crops`): a 256x192 RGB crop, its
keypoints in crop pixels, the frame -> crop affine and the box, the form the renderer hands on too.

Sources:

- Videos (:class:`VideoReader`): any file ``cv2.VideoCapture`` decodes (FFmpeg backend). Frame count and
  fps are what OpenCV reports (read from the container's header); ``read(i)`` seeks, iteration decodes
  in order. A missing file, a file OpenCV cannot open or whose first frame does not decode, a frame that
  does not decode (a truncated file still reports its full frame count) -> :class:`InputError`.
- COCO keypoints (:func:`coco_instances`, :func:`coco_frames`): the official ``person_keypoints_*.json``
  (``images``: id, file_name, width, height; ``annotations``: image_id, bbox [x, y, w, h], keypoints
  [x, y, v] * 17, num_keypoints, iscrowd). Crowd regions and instances with no labelled keypoint are
  skipped (as HRNet does). v: 0 unlabelled (stored as (0, 0)), 1 labelled but occluded, 2 visible.
  COCO-17 -> H36M-17 with :data:`poselift.keypoint_formats.COCO17` (pelvis = mean of the hips, ...); an
  interpolated joint's visibility is the minimum of its sources', so it is 0 when any source is unlabelled.
- Human3.6M (:func:`h36m_frames`) and MPI-INF-3DHP (:func:`mpi_inf_3dhp_frames`): MMPose's body3d
  annotation npz (``test_h36m_body3d.npz``; 3DHP's ``test_3dhp_{train,test}.npz``): ``imgname`` (image
  path relative to the image folder), ``center`` (2,) and ``scale`` (a square box of side scale * 200 px),
  ``part`` (17, 3) = 2D keypoints in frame pixels + visibility, ``S`` (17, 4) = 3D camera coordinates (m)
  + visibility. Human3.6M's ``part`` is already H36M-17; 3DHP's is the 17-joint 3DHP test layout
  (head_top, neck, ..., root, spine, head), mapped with :data:`~poselift.keypoint_formats.MPI_INF_3DHP17`.
  In 3DHP, joints outside the image have visibility 0 and keep their (off-image) projected coordinates.

Keypoints are (17, 2) float64 in frame pixels as the annotation stores them (read with pixel centres at
integer coordinates, as HRNet does); visibility is (17,) float64, > 0 for a labelled joint. A joint with
visibility 0 carries no usable coordinate: always mask with visibility.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from poselift.data.crops import (CROP_SIZE, PADDING, PersonBox, box_from_joints, box_from_xywh, crop, crop_affine,
                                 to_crop)
from poselift.errors import InputError
from poselift.keypoint_formats import COCO17, MPI_INF_3DHP17, KeypointFormat, scores_to_h36m17, to_h36m17


@dataclass(frozen=True, eq=False)
class LabelledFrame:
    """One labelled person in one frame: ``image`` RGB uint8 (H, W, 3), ``keypoints`` (17, 2) H36M-17 in frame
    pixels, ``visibility`` (17,) (> 0: labelled), ``source`` (the image file, with ``#<annotation id>`` for
    COCO), ``bbox`` [x, y, w, h] the source's person box in frame pixels, if it has one."""

    image: np.ndarray
    keypoints: np.ndarray
    visibility: np.ndarray
    source: str
    bbox: np.ndarray | None = None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file (JPEG, PNG, ...) as RGB uint8 (H, W, 3); missing or undecodable -> InputError."""
    from poselift.data.images import decode_image

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image file not found")
    return decode_image(np.fromfile(path, dtype=np.uint8), path)


# ----------------------------------------------------------------------------------------------- videos

class VideoReader:
    """A video file decoded by OpenCV: ``frame_count`` (also ``len``), ``fps``, ``height``, ``width``,
    ``read(i)`` (seek to frame i), iteration over all frames, ``frames(start, stop)``. Frames are RGB uint8.

    ``read`` keeps one capture open and decodes on from where it is when frames are read in order;
    iteration opens its own capture, so the two do not disturb each other.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(self.path, "video file not found")
        self._cap = self._open()
        self.frame_count = int(self._cap.get(_cv2().CAP_PROP_FRAME_COUNT))
        self.fps = float(self._cap.get(_cv2().CAP_PROP_FPS))
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise InputError(self.path, "OpenCV opened the video but could not decode its first frame")
        self.height, self.width = first.shape[:2]
        self._next = 1  # the frame the open capture decodes next

    def _open(self):
        cv2 = _cv2()
        previous = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # a broken file is our one-line error,
        try:                                                                # not OpenCV's log lines on stderr
            cap = cv2.VideoCapture(str(self.path))
        finally:
            cv2.utils.logging.setLogLevel(previous)
        if not cap.isOpened():
            raise InputError(self.path, "not a video OpenCV can decode (cv2.VideoCapture could not open it)")
        return cap

    def __len__(self) -> int:
        return self.frame_count

    def _check_index(self, index: int) -> int:
        index = int(index)
        if self.frame_count > 0 and not 0 <= index < self.frame_count:
            raise InputError(self.path, f"has {self.frame_count} frames, no frame {index}")
        if index < 0:
            raise InputError(self.path, f"no frame {index}")
        return index

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based), RGB uint8 (H, W, 3)."""
        cv2 = _cv2()
        index = self._check_index(index)
        if self._cap is None:
            self._cap, self._next = self._open(), 0
        if index != self._next:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            if int(round(self._cap.get(cv2.CAP_PROP_POS_FRAMES))) != index:  # inexact seek: decode up to it
                self._cap.release()
                self._cap = self._open()
                for _ in range(index):
                    if not self._cap.grab():
                        break
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._next = -1  # position unknown: the next read seeks
            raise InputError(self.path, f"frame {index} of {self.frame_count} could not be decoded "
                                        "(truncated or corrupt video)")
        self._next = index + 1
        return np.ascontiguousarray(frame[..., ::-1])

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Frames start..stop-1 decoded in order (all to the end by default), RGB uint8. A stream that ends
        before ``stop`` (or the reported frame count) -> InputError."""
        cv2 = _cv2()
        stop = self.frame_count if stop is None else int(stop)
        start = self._check_index(start) if start else 0
        cap = self._open()
        try:
            if start:
                cap.set(cv2.CAP_PROP_POS_FRAMES, start)
                if int(round(cap.get(cv2.CAP_PROP_POS_FRAMES))) != start:
                    cap.release()
                    cap = self._open()
                    for _ in range(start):
                        cap.grab()
            index = start
            while stop <= 0 or index < stop:  # stop <= 0: OpenCV reported no count, read to the end
                ok, frame = cap.read()
                if not ok or frame is None:
                    if stop > 0:
                        raise InputError(self.path, f"frame {index} of {self.frame_count} could not be decoded "
                                                    "(truncated or corrupt video)")
                    return
                yield np.ascontiguousarray(frame[..., ::-1])
                index += 1
        finally:
            cap.release()

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.frames()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cv2():
    # FFmpeg logs a damaged video's problems ("moov atom not found", decode errors) straight to stderr; the
    # reader reports them as one InputError. Read when OpenCV's FFmpeg backend starts; a setting given wins.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    return cv2


# ------------------------------------------------------------------------------------------------- COCO

@dataclass(frozen=True, eq=False)
class CocoInstance:
    """One annotated person of a COCO keypoint file, in COCO-17 order: ``keypoints`` (17, 2) frame pixels,
    ``visibility`` (17,) COCO's v (0 unlabelled, 1 occluded, 2 visible), ``bbox`` [x, y, w, h]."""

    image_path: Path
    image_id: int
    annotation_id: int
    width: int
    height: int
    bbox: np.ndarray
    keypoints: np.ndarray
    visibility: np.ndarray

    def to_h36m17(self) -> tuple[np.ndarray, np.ndarray]:
        """(keypoints (17, 2), visibility (17,)) in H36M-17; see :func:`coco_to_h36m17`."""
        return coco_to_h36m17(self.keypoints, self.visibility)


def coco_to_h36m17(keypoints, visibility) -> tuple[np.ndarray, np.ndarray]:
    """COCO-17 keypoints (17, 2) and v (17,) -> H36M-17 keypoints and visibility (the minimum v of each
    joint's sources); joints with visibility 0 are set to (0, 0)."""
    kp = to_h36m17(np.asarray(keypoints, dtype=np.float64), COCO17)
    vis = scores_to_h36m17(np.asarray(visibility, dtype=np.float64), COCO17)
    kp[vis <= 0] = 0.0
    return kp, vis


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(path, "annotation file not found")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(path, f"not a JSON file ({e})") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object with 'images' and 'annotations' (COCO's layout)")
    return data


def coco_instances(annotations: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[CocoInstance]:
    """The person instances of a COCO keypoint annotation file, in file order, without crowd regions and
    instances with no labelled keypoint. Images are looked up as ``image_root / file_name`` (default: the
    json's folder); they are not opened here."""
    path = Path(annotations)
    data = _load_json(path)
    root = path.parent if image_root is None else Path(image_root)
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise InputError(path, f"no '{key}' list (expected COCO's keypoint annotation layout)")
    images = {}
    for image in data["images"]:
        try:
            images[image["id"]] = (image["file_name"], int(image["width"]), int(image["height"]))
        except (KeyError, TypeError, ValueError):
            raise InputError(path, "an 'images' entry lacks id, file_name, width or height") from None
    out = []
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0) or "keypoints" not in ann:
            continue
        kps = np.asarray(ann["keypoints"], dtype=np.float64)
        if kps.size != 51:
            raise InputError(path, f"annotation {ann.get('id')}: 'keypoints' has {kps.size} numbers, "
                                   "expected 51 (17 x [x, y, v])")
        kps = kps.reshape(17, 3)
        if ann.get("num_keypoints", int((kps[:, 2] > 0).sum())) == 0 or not (kps[:, 2] > 0).any():
            continue
        if ann.get("image_id") not in images:
            raise InputError(path, f"annotation {ann.get('id')}: image_id {ann.get('image_id')} is not in 'images'")
        file_name, width, height = images[ann["image_id"]]
        out.append(CocoInstance(root / file_name, int(ann["image_id"]), int(ann.get("id", -1)), width, height,
                                np.asarray(ann.get("bbox", [np.nan] * 4), dtype=np.float64),
                                kps[:, :2].copy(), kps[:, 2].copy()))
    return out


def coco_frames(annotations: str | os.PathLike, image_root: str | os.PathLike | None = None) -> Iterator[LabelledFrame]:
    """One :class:`LabelledFrame` per instance of :func:`coco_instances`, keypoints in H36M-17 (each image is
    decoded once for all its instances)."""
    cached: tuple[Path | None, np.ndarray | None] = (None, None)
    for inst in coco_instances(annotations, image_root):
        if cached[0] != inst.image_path:
            cached = (inst.image_path, read_image(inst.image_path))
        kp, vis = inst.to_h36m17()
        yield LabelledFrame(cached[1], kp, vis, f"{inst.image_path}#{inst.annotation_id}", inst.bbox)


# ------------------------------------------------------------------------ Human3.6M and MPI-INF-3DHP (MMPose)

PIXEL_STD_MMPOSE = 200.0  # MMPose's body3d `scale` is the side of a square box in units of 200 px


def _mmpose_body3d_frames(annotations: str | os.PathLike, image_root, fmt: KeypointFormat | None
                          ) -> Iterator[LabelledFrame]:
    path = Path(annotations)
    if not path.is_file():
        raise InputError(path, "annotation file not found")
    from poselift.io import npz_array, open_npz

    with open_npz(path) as data:  # sizes checked, no pickles: a truncated or hostile file is one line
        missing = [k for k in ("imgname", "center", "scale", "part") if k not in data.files]
        if missing:
            raise InputError(path, f"no {', '.join(missing)} array (expected MMPose's body3d layout: imgname, "
                                   "center, scale, part, S)")
        arrays = {k: npz_array(data, k, path) for k in ("imgname", "center", "scale", "part")}
    names, part = arrays["imgname"], np.asarray(arrays["part"], dtype=np.float64)
    if part.ndim != 3 or part.shape[1:] != (17, 3) or len(names) != len(part):
        raise InputError(path, f"'part' has shape {part.shape} for {len(names)} images, expected ({len(names)}, 17, 3)")
    center = np.asarray(arrays["center"], dtype=np.float64).reshape(len(names), 2)
    side = PIXEL_STD_MMPOSE * np.asarray(arrays["scale"], dtype=np.float64).reshape(len(names), -1)[:, 0]
    root = path.parent if image_root is None else Path(image_root)
    for i, name in enumerate(names):
        kp, vis = part[i, :, :2], part[i, :, 2]
        if fmt is not None:
            kp, vis = to_h36m17(kp, fmt), scores_to_h36m17(vis, fmt)
        image_path = root / str(name)
        if not image_path.is_file():
            raise InputError(image_path, f"image not found (labelled in {path})")
        bbox = np.array([center[i, 0] - side[i] / 2, center[i, 1] - side[i] / 2, side[i], side[i]])
        yield LabelledFrame(read_image(image_path), np.array(kp), np.array(vis), str(image_path), bbox)



def h36m_frames(annotations: str | os.PathLike, image_root: str | os.PathLike | None = None) -> Iterator[LabelledFrame]:
    """The labelled frames of MMPose's Human3.6M body3d npz (``test_h36m_body3d.npz``); images at
    ``image_root / imgname`` (default: the npz's folder). Keypoints are H36M-17 as stored."""
    return _mmpose_body3d_frames(annotations, image_root, None)


def mpi_inf_3dhp_frames(annotations: str | os.PathLike, image_root: str | os.PathLike | None = None
                        ) -> Iterator[LabelledFrame]:
    """The labelled frames of MMPose's MPI-INF-3DHP body3d npz (``test_3dhp_train.npz``,
    ``test_3dhp_test.npz``); the 17-joint 3DHP layout is mapped to H36M-17."""
    return _mmpose_body3d_frames(annotations, image_root, MPI_INF_3DHP17)


# ------------------------------------------------------------------------------------------------ crops

class LabelledCrop(NamedTuple):
    """A person crop: ``crop`` RGB uint8 (H, W, 3), ``keypoints`` (17, 2) in crop pixels, ``affine`` 2x3
    frame -> crop, ``box`` the :class:`~poselift.data.crops.PersonBox` in frame pixels, ``visibility`` (17,)."""

    crop: np.ndarray
    keypoints: np.ndarray
    affine: np.ndarray
    box: PersonBox
    visibility: np.ndarray


def labelled_crops(records: Iterable[LabelledFrame], size=CROP_SIZE, padding: float = PADDING,
                   rotation: float = 0.0, scale: float = 1.0) -> Iterator[LabelledCrop]:
    """HRNet crops of labelled frames: the box of each record's labelled joints (aspect W/H of ``size``,
    ``padding``), its affine (with optional ``rotation``/``scale`` augmentation), the warped crop and the
    keypoints carried into it. A record whose labelled joints span no area uses its ``bbox`` instead."""
    aspect = size[1] / size[0]
    for record in records:
        try:
            box = box_from_joints(record.keypoints, record.visibility, aspect, padding)
        except ValueError:
            if record.bbox is None or not np.isfinite(record.bbox).all():
                raise ValueError(f"{record.source}: fewer than two distinct labelled joints and no box") from None
            box = box_from_xywh(record.bbox, aspect, padding)
        affine = crop_affine(box, size, rotation, scale)
        yield LabelledCrop(crop(record.image, affine, size), to_crop(record.keypoints, affine), affine, box,
                           np.asarray(record.visibility))


# ------------------------------------------------------------------------------ into the labelled-crops layout

def prepared_video_frames(video: str | os.PathLike, keypoints_2d: np.ndarray, every: int = 1,
                          source: str = "", step: int = 1) -> Iterator[LabelledFrame]:
    """Labelled frames of one camera's video (e.g. Human3.6M's ``S*/Videos/<action>.<camera>.mp4``) with its
    2D ground truth ``keypoints_2d`` (F, 17, 2) in frame pixels (a prepared file's ``positions_2d`` of that
    camera: the person box comes from it): label i is video frame i x ``step`` (a prepared file subsampled by
    ``step``, e.g. 50 fps videos and a 5 fps prepared file: 10); every ``every``-th label; frames past either
    end are refused."""
    keypoints_2d = np.asarray(keypoints_2d, dtype=np.float64)
    needed = (len(keypoints_2d) - 1) * step + 1 if len(keypoints_2d) else 0
    with VideoReader(video) as reader:
        if len(reader) < needed:
            raise InputError(video, f"has {len(reader)} frames, fewer than the {needed} of its 2D labels"
                                    + (f" (one every {step} frames: {len(keypoints_2d)} labels)" if step > 1 else ""))
        for index, image in enumerate(reader.frames(0, needed)):
            label, off = divmod(index, step)
            if off == 0 and label % every == 0:
                labelled = np.isfinite(keypoints_2d[label]).all(-1).astype(np.float64)
                yield LabelledFrame(image, np.nan_to_num(keypoints_2d[label]), labelled, f"{source or video}#{index}")


def crops_view(key: str, records: Iterable[LabelledFrame], frames: Iterable[int] | None = None,
               quality: int = 90):
    """The labelled crops of ``records`` as one view of the labelled-crops layout
    (:class:`poselift.data.crop_file.View`), ready for :class:`~poselift.data.crop_file.CropWriter`: the same
    form ``poselift render`` writes, so the image stages read real and rendered people alike."""
    from poselift.data.crop_file import View
    from poselift.data.crops import to_frame
    from poselift.data.images import encode_image

    rows = {k: [] for k in ("keypoints", "keypoints_frame", "affine", "box", "visibility", "crops")}
    for item in labelled_crops(records):
        labelled = (np.asarray(item.visibility) > 0)[:, None]
        keypoints = np.where(labelled, item.keypoints, np.nan)  # an unlabelled joint has no coordinate
        rows["keypoints"].append(keypoints)
        rows["keypoints_frame"].append(to_frame(keypoints, item.affine))
        rows["affine"].append(item.affine)
        rows["box"].append(item.box.xyxy)
        rows["visibility"].append((np.asarray(item.visibility) > 0).astype(np.float32))
        rows["crops"].append(encode_image(item.crop, "jpeg", quality))
    n = len(rows["crops"])
    frame = np.arange(n) if frames is None else np.asarray(list(frames), dtype=np.int64)
    arrays = {k: np.asarray(v, dtype=np.float32).reshape((n, *np.shape(v)[1:])) for k, v in rows.items()
              if k != "crops"}
    return View(key=key, frame=frame, crops=rows["crops"], **arrays)
