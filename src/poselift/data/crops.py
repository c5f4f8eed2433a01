"""The person crop of the official HRNet code (leoxiaobin/deep-high-resolution-net.pytorch): a box around the
person with the crop's aspect ratio and 25 % padding, the affine from frame pixels to crop pixels, the warp,
and keypoints carried both ways (spec: shared/specs/image-side.md, section 1.4 and [HRc]).

Conventions:

- Pixel centres sit at integer coordinates: pixel (column x, row y) covers [x - 0.5, x + 0.5] x
  [y - 0.5, y + 0.5], in the frame and in the crop alike. Points are (..., 2) arrays of (x, y).
  This is OpenCV's convention, so ``cv2.warpAffine`` samples crop pixel (x, y) at frame point
  ``to_frame((x, y))``, and :func:`poselift.data.images.flip_image` (x -> W - 1 - x) agrees with it.
- Sizes are (height, width) like numpy shapes: :data:`CROP_SIZE` = (256, 192), so a crop is an
  (256, 192, 3) array. The box's aspect ratio is width / height = 192 / 256 = 3 / 4.
- The box (:class:`PersonBox`) is a centre and a (width, height) in frame pixels, with the aspect ratio
  and the padding already applied. HRNet's ``scale`` is that size in units of 200 px
  (:attr:`PersonBox.scale`, ``pixel_std`` = 200).
- From joints (:func:`box_from_joints`): the extent of the labelled joints (x_min..x_max, y_min..y_max),
  centre = the middle of that extent. From an annotated box (:func:`box_from_xywh`, COCO's [x, y, w, h]):
  centre = (x + w/2, y + h/2). Then the shorter side is grown to the aspect ratio (w > aspect * h: h = w /
  aspect, else w = h * aspect), and both sides are multiplied by the padding, 1.25.
- The affine (:func:`crop_affine`, a 2x3 float64 matrix A; crop point = A @ (x, y, 1)) maps frame pixels
  to crop pixels. It is a similarity: the box centre goes to (W/2, H/2) = (96, 128) and the box width
  (times the augmentation ``scale``) to W = 192 crop pixels; the height follows, since the box has the
  crop's aspect. This is HRNet's ``get_affine_transform`` (centre to W*0.5, not (W-1)/2: the half-pixel
  offset that UDP later removed; we keep HRNet's, as its heatmap decoding assumes it). Augmentation:
  ``scale`` > 1 takes a larger region (the person looks smaller, as HRNet's scale factor s),
  ``rotation`` in degrees turns the image content counter-clockwise on screen (y pointing down; the
  same sense as ``cv2.getRotationMatrix2D``): a frame point to the right of the centre lands above it.
- :func:`invert_affine` gives crop -> frame; :func:`to_crop` and :func:`to_frame` carry points.
- :func:`crop` warps with bilinear interpolation and a constant border (black by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CROP_SIZE = (256, 192)  # (height, width) of HRNet's 256x192 input
ASPECT = CROP_SIZE[1] / CROP_SIZE[0]  # box width / height = 3 / 4
PADDING = 1.25
PIXEL_STD = 200.0  # HRNet's unit of `scale`


@dataclass(frozen=True, eq=False)
class PersonBox:
    """A person box in frame pixels: ``center`` (x, y) and ``size`` (width, height), padded and of the crop's
    aspect ratio."""

    center: np.ndarray
    size: np.ndarray

    @property
    def scale(self) -> np.ndarray:
        """HRNet's ``scale``: the size in units of 200 px."""
        return self.size / PIXEL_STD

    @property
    def xywh(self) -> np.ndarray:
        """[x, y, width, height] of the box's top-left corner and size."""
        return np.concatenate([self.center - self.size / 2, self.size])

    @property
    def xyxy(self) -> np.ndarray:
        """[x_min, y_min, x_max, y_max]."""
        return np.concatenate([self.center - self.size / 2, self.center + self.size / 2])


def _fit(center, width: float, height: float, aspect: float, padding: float) -> PersonBox:
    if width <= 0 and height <= 0:
        raise ValueError("the box has no extent (a single point): cannot size a crop from it")
    if width > aspect * height:
        height = width / aspect
    else:
        width = height * aspect
    return PersonBox(np.asarray(center, dtype=np.float64),
                     np.array([width * padding, height * padding], dtype=np.float64))


def box_from_xywh(xywh, aspect: float = ASPECT, padding: float = PADDING) -> PersonBox:
    """The crop box of an annotated box [x, y, w, h] (COCO's ``bbox``): its centre, grown to ``aspect`` and
    padded."""
    x, y, w, h = (float(v) for v in np.asarray(xywh, dtype=np.float64).reshape(4))
    return _fit((x + w / 2, y + h / 2), w, h, aspect, padding)


def box_from_joints(joints, visibility=None, aspect: float = ASPECT, padding: float = PADDING) -> PersonBox:
    """The crop box of the labelled joints (J, 2): the middle of their extent, grown to ``aspect`` and padded.
    A joint counts when its ``visibility`` (J,) is > 0 (HRNet's rule; all joints when None)."""
    joints = np.asarray(joints, dtype=np.float64).reshape(-1, 2)
    if visibility is not None:
        joints = joints[np.asarray(visibility).reshape(-1) > 0]
    joints = joints[np.isfinite(joints).all(axis=1)]
    if len(joints) == 0:
        raise ValueError("no labelled joints to put a box around")
    lo, hi = joints.min(axis=0), joints.max(axis=0)
    return _fit((lo + hi) / 2, hi[0] - lo[0], hi[1] - lo[1], aspect, padding)


def crop_affine(box: PersonBox, size=CROP_SIZE, rotation: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """The 2x3 affine from frame pixels to the pixels of a crop of ``size`` (H, W) around ``box``.

    Box centre -> (W/2, H/2); box width * ``scale`` -> W pixels; ``rotation`` degrees counter-clockwise on
    screen (augmentation; HRNet draws scale ~ clip(1 + 0.35 N, 0.65, 1.35) and rotation ~ clip(45 N, -90, 90)
    with probability 0.6).
    """
    height, width = size
    region = float(box.size[0]) * float(scale)  # frame pixels that span the crop's width
    if not region > 0:
        raise ValueError(f"box width times scale must be positive, got {region}")
    k = width / region
    t = np.deg2rad(rotation)
    c, s = np.cos(t), np.sin(t)
    linear = k * np.array([[c, s], [-s, c]])
    offset = np.array([width / 2, height / 2]) - linear @ np.asarray(box.center, dtype=np.float64)
    return np.concatenate([linear, offset[:, None]], axis=1)


def invert_affine(affine) -> np.ndarray:
    """The inverse 2x3 affine (crop pixels -> frame pixels for a :func:`crop_affine`)."""
    a = np.asarray(affine, dtype=np.float64)
    linear = np.linalg.inv(a[:, :2])
    return np.concatenate([linear, (-linear @ a[:, 2])[:, None]], axis=1)


def _apply(points, affine) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {p.shape}")
    a = np.asarray(affine, dtype=np.float64)
    return p @ a[:, :2].T + a[:, 2]


def to_crop(points, affine) -> np.ndarray:
    """Frame points (..., 2) -> crop points (..., 2), float64."""
    return _apply(points, affine)


def to_frame(points, affine) -> np.ndarray:
    """Crop points (..., 2) -> frame points (..., 2) for the frame -> crop ``affine``, float64."""
    return _apply(points, invert_affine(affine))


def crop(image: np.ndarray, affine, size=CROP_SIZE, border_value=0) -> np.ndarray:
    """Warp ``image`` (H, W[, C]) into a crop of ``size`` (H, W): bilinear, constant border; same dtype."""
    import cv2

    height, width = size
    out = cv2.warpAffine(np.ascontiguousarray(image), np.asarray(affine, dtype=np.float64), (int(width), int(height)),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)
    if out.ndim == 2 and np.ndim(image) == 3:  # OpenCV drops a single channel axis
        out = out[..., None]
    return out
