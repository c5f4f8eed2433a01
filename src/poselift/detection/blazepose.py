"""``--detector mediapipe``: MediaPipe's BlazePose (``mediapipe==0.10.14``, the legacy ``solutions.pose`` API,
model complexity 1 = ``pose_landmark_full.tflite``, shipped in the wheel: runs offline) on video frames and
images, its 33 landmarks mapped to Human3.6M-17.

(This module is ``blazepose.py``, not ``mediapipe.py``, so that it never shadows the library.)

It works on pixels, not on a prepared dataset: :class:`BlazePose` is what ``poselift demo`` and
``benchmarks/sim_to_real.py`` call, one RGB frame at a time. Registered in
:data:`poselift.detection.DETECTORS` as ``mediapipe`` (:class:`MediaPipeDetector`) so that the name is known
everywhere; ``poselift detect --prepared`` (sequences without pixels) answers with a one-line error.

**Person box.** BlazePose's own person detector finds people who fill a good part of the image (selfie,
sport and dance footage; ``messi5.jpg``), and nobody in a wide surveillance view (``vtest.avi``: people
100-300 px tall in a 768x576 frame, 0 of the first 100 frames). :meth:`BlazePose.detect` therefore takes an
optional person box: the region around it (a square, 1.25 times the box's longer side) is cut out, resized to
:data:`CROP_SIDE` px and BlazePose runs on that; landmarks come back in frame pixels. :class:`PersonTracker`
gives such boxes for a video: OpenCV's HOG + linear-SVM pedestrian detector
(``cv2.HOGDescriptor_getDefaultPeopleDetector``, in every OpenCV build, no download) on each frame; the
first frame's largest box starts the track, each later frame takes the box that overlaps the previous one
most (IoU), and when none overlaps (the person is missed) the previous box is kept. One person per video.

**BlazePose-33 -> Human3.6M-17** (:data:`BLAZEPOSE_H36M`, a (17, 33) weight matrix, rows summing to 1).
Limbs are copied: hips, knees, ankles, shoulders, elbows, wrists (BlazePose's are the joint centres).
The trunk and head are synthesised:

- pelvis = mean of ``left_hip`` and ``right_hip``;
- thorax = mean of ``left_shoulder`` and ``right_shoulder``;
- spine = mean of pelvis and thorax (a quarter of each hip and shoulder), as for COCO;
- neck_nose = mean of the thorax and the mouth (``mouth_left``, ``mouth_right``): a quarter of each
  shoulder and each mouth corner. Human3.6M's "neck/nose" is the top of the neck bone, where the head
  pivots (116 mm above the thorax in Human3.6M, 65 mm on the open benchmark's figures), not the nose tip:
  on upright people BlazePose's nose sits 0.70-0.72 shoulder widths above the mid-shoulders, the mouth
  0.57-0.58 (``basketball1/2.png``), while the benchmark's 2D puts neck_nose at 0.34 (median over the
  ``bandai-cpu-img`` views); half-way to the mouth gives 0.29. (COCO's mapping,
  :data:`poselift.keypoint_formats.BLAZEPOSE33`, takes the nose: a neck twice too long for a lifter.)
- head = mean of ``left_eye`` and ``right_eye``: the end of the head bone (10-11.5 cm above the pivot) is
  at about eye height (benchmark: 0.85 shoulder widths above the thorax; BlazePose's eyes: 0.82-0.84).

Scores: BlazePose's per-landmark ``visibility`` (in [0, 1]); a synthesised joint gets the minimum over the
landmarks it is made from (as :func:`poselift.keypoint_formats.scores_to_h36m17`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from poselift.errors import InputError
from poselift.keypoint_formats import BLAZEPOSE33, KeypointFormat
from poselift.skeleton import H36M17

CROP_SIDE = 256  # px: a person box's region is resized to this square before BlazePose runs on it
BOX_PADDING = 1.25  # the region around a person box: 1.25 x its longer side, square

LANDMARKS = BLAZEPOSE33.joints  # the 33 landmark names in MediaPipe's order


def _blazepose_h36m() -> KeypointFormat:
    sources = {
        "pelvis": {"left_hip": 0.5, "right_hip": 0.5},
        "thorax": {"left_shoulder": 0.5, "right_shoulder": 0.5},
        "spine": {"left_hip": 0.25, "right_hip": 0.25, "left_shoulder": 0.25, "right_shoulder": 0.25},
        "neck_nose": {"left_shoulder": 0.25, "right_shoulder": 0.25, "mouth_left": 0.25, "mouth_right": 0.25},
        "head": {"left_eye": 0.5, "right_eye": 0.5},
    }
    w = np.zeros((H36M17.num_joints, len(LANDMARKS)))
    for j, name in enumerate(H36M17.names):
        for landmark, weight in sources.get(name, {name: 1.0}).items():
            w[j, LANDMARKS.index(landmark)] = weight
    w.setflags(write=False)
    return KeypointFormat("blazepose-h36m", LANDMARKS, w, BLAZEPOSE33.left, BLAZEPOSE33.right)


BLAZEPOSE_H36M = _blazepose_h36m()


def to_h36m17(landmarks) -> np.ndarray:
    """BlazePose landmarks (..., 33, D) -> Human3.6M-17 (..., 17, D) with :data:`BLAZEPOSE_H36M`."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim < 2 or landmarks.shape[-2] != len(LANDMARKS):
        raise ValueError(f"BlazePose landmarks must have shape (..., 33, D), got {landmarks.shape}")
    return BLAZEPOSE_H36M.weights @ landmarks


def scores_to_h36m17(visibility) -> np.ndarray:
    """BlazePose visibilities (..., 33) -> Human3.6M-17 scores (..., 17): the minimum over each joint's sources."""
    visibility = np.asarray(visibility, dtype=np.float64)
    if visibility.ndim < 1 or visibility.shape[-1] != len(LANDMARKS):
        raise ValueError(f"BlazePose visibilities must have shape (..., 33), got {visibility.shape}")
    return np.where(BLAZEPOSE_H36M.weights > 0, visibility[..., None, :], np.inf).min(axis=-1)


def import_mediapipe():
    """The ``mediapipe`` module, or a one-line InputError saying how to install it."""
    try:
        import mediapipe
        from mediapipe.python.solutions import pose  # noqa: F401  (the legacy solution this module uses)
    except ImportError as e:
        raise InputError("--detector mediapipe", f"mediapipe is not importable ({e}); it is a dependency of "
                                                 "poselift: pip install mediapipe==0.10.14") from None
    return mediapipe


@dataclass(frozen=True, eq=False)
class BlazePoseResult:
    """One person: ``landmarks`` (33, 2) frame pixels and ``visibility`` (33,); ``keypoints`` (17, 2) and
    ``scores`` (17,) in Human3.6M-17; ``box`` [x, y, w, h] around the landmarks (frame pixels)."""

    landmarks: np.ndarray
    visibility: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    box: np.ndarray


class BlazePose:
    """MediaPipe BlazePose on RGB uint8 frames: ``detect(image, box=None) -> BlazePoseResult | None``.

    ``video=True`` lets MediaPipe track the landmarks from frame to frame (its own region of interest; only
    for whole frames of one video in order); otherwise every call detects afresh. Use as a context manager
    or call :meth:`close`.
    """

    def __init__(self, model_complexity: int = 1, video: bool = False, min_detection_confidence: float = 0.5):
        mp = import_mediapipe()
        if model_complexity not in (0, 1, 2):
            raise InputError("--model-complexity", f"must be 0, 1 or 2 (got {model_complexity})")
        self.settings = {"detector": "mediapipe", "mediapipe": mp.__version__, "model_complexity": model_complexity,
                         "video": bool(video), "min_detection_confidence": float(min_detection_confidence),
                         "mapping": "blazepose-h36m (poselift.detection.blazepose)", "crop_side": CROP_SIDE,
                         "box_padding": BOX_PADDING}
        self.video = bool(video)
        self._pose = mp.solutions.pose.Pose(static_image_mode=not video, model_complexity=model_complexity,
                                            smooth_landmarks=video, enable_segmentation=False,
                                            min_detection_confidence=min_detection_confidence)

    def detect(self, image: np.ndarray, box=None) -> BlazePoseResult | None:
        """The person in ``image`` (RGB uint8 (H, W, 3)), or in the region around ``box`` [x, y, w, h]; None when
        BlazePose finds nobody."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        if box is None:
            frame_from_input = np.array([[image.shape[1], 0, -0.5], [0, image.shape[0], -0.5]], np.float64)
            pixels = np.ascontiguousarray(image)
        else:
            pixels, frame_from_input = _region(image, box)
        with warnings.catch_warnings():  # mediapipe 0.10.14 calls an API protobuf deprecates, on every frame
            warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
            found = self._pose.process(pixels).pose_landmarks
        if found is None:
            return None
        normalised = np.array([[p.x, p.y] for p in found.landmark], np.float64)  # in [0, 1] of the input
        landmarks = normalised @ frame_from_input[:, :2].T + frame_from_input[:, 2]
        visibility = np.clip(np.array([p.visibility for p in found.landmark], np.float64), 0.0, 1.0)
        lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
        return BlazePoseResult(landmarks, visibility, to_h36m17(landmarks), scores_to_h36m17(visibility),
                               np.concatenate([lo, hi - lo]))

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None

    def __enter__(self) -> BlazePose:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _region(image: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
    """The square region around ``box`` resized to CROP_SIDE (black outside the frame), and the 2x3 affine from
    the region's normalised [0, 1] coordinates to frame pixels."""
    import cv2

    x, y, w, h = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    if not (w > 0 and h > 0):
        raise ValueError(f"a person box needs a positive size, got {box}")
    side = BOX_PADDING * max(w, h)
    x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
    k = CROP_SIDE / side  # frame -> region pixels; pixel centres at integer coordinates in both (OpenCV's)
    to_region = np.array([[k, 0, -k * x0 + 0.5 * k - 0.5], [0, k, -k * y0 + 0.5 * k - 0.5]])
    pixels = cv2.warpAffine(np.ascontiguousarray(image), to_region, (CROP_SIDE, CROP_SIDE), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # MediaPipe's normalised n in [0, 1] spans the image's edges: region pixel n * CROP_SIDE - 0.5
    linear_inv = 1.0 / k
    frame_from_input = np.array([[CROP_SIDE * linear_inv, 0, (-0.5 - to_region[0, 2]) * linear_inv],
                                 [0, CROP_SIDE * linear_inv, (-0.5 - to_region[1, 2]) * linear_inv]])
    return pixels, frame_from_input


def iou(a, b) -> float:
    """Intersection over union of two [x, y, w, h] boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return float(inter / union) if union > 0 else 0.0


class PersonTracker:
    """Person boxes [x, y, w, h] for the frames of one video, in order: OpenCV's HOG pedestrian detector, the
    largest box of the first frame with a detection, then the box that overlaps the previous one most; the
    previous box again when no box overlaps it (a missed detection), up to ``patience`` calls in a row, after
    which the track starts again on the largest box (the person has left or is hidden); None before the first
    detection."""

    def __init__(self, scale: float = 1.05, patience: int = 3):
        import cv2

        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.scale, self.patience = float(scale), int(patience)
        self.box: np.ndarray | None = None
        self.misses = 0

    def boxes(self, image: np.ndarray) -> np.ndarray:
        """Every pedestrian box [x, y, w, h] HOG finds in ``image`` (N, 4) float64."""
        found, _ = self._hog.detectMultiScale(np.ascontiguousarray(image), winStride=(8, 8), padding=(8, 8),
                                              scale=self.scale)
        return np.asarray(found, np.float64).reshape(-1, 4)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        found = self.boxes(image)
        overlaps = [iou(self.box, b) for b in found] if self.box is not None else []
        if overlaps and max(overlaps) > 0:
            self.box, self.misses = found[int(np.argmax(overlaps))], 0
        elif self.box is not None and self.misses < self.patience:
            self.misses += 1
        elif len(found):
            self.box, self.misses = found[np.argmax(found[:, 2] * found[:, 3])], 0
        return None if self.box is None else self.box.copy()


class MediaPipeDetector:
    """MediaPipe BlazePose (33 landmarks -> H36M-17) on video frames and images: poselift demo, not poselift detect"""

    reads_images = False  # not a crops-file network for `poselift detect --images`
    frames_only = True  # it needs whole frames (poselift demo), which a prepared dataset does not have

    def __init__(self, params_path=None, seed: int = 0, model_complexity: int = 1):
        import_mediapipe()
        self.settings = {"detector": "mediapipe", "model_complexity": int(model_complexity)}

    def __call__(self, sequence):
        raise InputError("--detector mediapipe", "runs on video frames and images (poselift demo VIDEO|IMAGE), not "
                                                 "on a prepared dataset's sequences, which hold no pixels")
