"""The official HRNet training augmentation ([HRc] JointsDataset.__getitem__ and half_body_transform; spec
shared/specs/image-side.md section 1.4) on a stored person crop, and the network's input normalisation.

One draw (:func:`random_affine`, in the code's order): half body with p = 0.3 when more than 8 joints are
labelled (the upper or the lower body's joints get the box: centre = their mean, extent fitted to the crop's
aspect, x 1.5; upper when a standard normal draw is < 0.5 -- p ~ 0.69, the code's randn -- and it has more
than 2 joints, else lower if it has more than 2, else upper; skipped with fewer than 2); scale: the box
width x clip(1 + 0.35 N, 0.65, 1.35); rotation: clip(45 N, -90, 90) degrees with p = 0.6, else 0; flip with
p = 0.5 (the image mirrored x -> W - 1 - x, the box centre with it, left and right joints swapped). Upper body
on H36M-17 is thorax, neck/nose, head, shoulders, elbows, wrists (the code's MPII split: thorax up); pelvis,
hips, knees, ankles and spine are lower.

All of it is one similarity (:func:`random_affine`, a 2x3 matrix from stored-crop pixels to input pixels,
HRNet's affine of the drawn box, :func:`poselift.data.crops.crop_affine`), applied to the image with one
``cv2.warpAffine`` (bilinear, black border) and to the keypoints by the same matrix, so labels stay on
their pixels. The official code warps from the full frame; this warps the stored 256x192 crop, whose
frame is the box with 25 % padding: whatever a zoom-out (scale > 1), a rotation or a half-body box brings in
from outside that crop is black here, where the official pipeline shows the real surroundings.

Draws are deterministic given a numpy Generator; the heatmap task gives each crop its own Generator seeded
by (stage seed, epoch, crop), so batches are the same whatever the thread count or order of loading.
A network input of another size than the stored crop (a CPU configuration's 128x96) is the same affine
scaled (input = stored x input/stored size, HRNet's convention at both sizes), after a Gaussian blur of
sigma (1/s - 1)/2 when shrinking by s < 1 (anti-aliasing, scikit-image's default for ``rescale``).
"""

from __future__ import annotations

import numpy as np

from poselift.skeleton import H36M17

FLIP_P = 0.5  # [HRc] DATASET.FLIP: random.random() <= 0.5
SCALE_FACTOR = 0.35  # DATASET.SCALE_FACTOR: s * clip(1 + 0.35 N, 0.65, 1.35)
ROTATION_FACTOR = 45.0  # DATASET.ROT_FACTOR: clip(45 N, -90, 90) ...
ROTATION_P = 0.6  # ... when random.random() <= 0.6
HALF_BODY_P = 0.3  # DATASET.PROB_HALF_BODY
HALF_BODY_JOINTS = 8  # DATASET.NUM_JOINTS_HALF_BODY: more than this many labelled joints
HALF_BODY_PADDING = 1.5  # half_body_transform's scale * 1.5
UPPER_BODY = tuple(H36M17.index(n) for n in ("thorax", "neck_nose", "head", "left_shoulder", "left_elbow",
                                               "left_wrist", "right_shoulder", "right_elbow", "right_wrist"))
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, on [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)


def apply_affine(points, affine) -> np.ndarray:
    """Points (..., 2) through a 2x3 affine, float64 (NaN stays NaN)."""
    a = np.asarray(affine, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ a[:, :2].T + a[:, 2]


def resize_affine(crop_size, input_size) -> np.ndarray:
    """The 2x3 affine from a stored crop of ``crop_size`` (H, W) to a network input of ``input_size`` (H, W)
    of the same box: a pure scale, since HRNet's affine puts the box centre at (W/2, H/2) at every size."""
    (h0, w0), (h1, w1) = crop_size, input_size
    return np.array([[w1 / w0, 0.0, 0.0], [0.0, h1 / h0, 0.0]])


def half_body_box(keypoints, visibility, rng: np.random.Generator, aspect: float):
    """[HRc]'s half_body_transform on labelled joints: (centre (2,), (width, height)) of the upper or the
    lower body's joints, or None. Draws one standard normal (upper body when < 0.5)."""
    use = (np.asarray(visibility) > 0) & np.isfinite(keypoints).all(axis=1)
    upper_mask = np.zeros(len(use), bool)
    upper_mask[list(UPPER_BODY)] = True
    upper, lower = keypoints[use & upper_mask], keypoints[use & ~upper_mask]
    if rng.standard_normal() < 0.5 and len(upper) > 2:
        chosen = upper
    else:
        chosen = lower if len(lower) > 2 else upper
    if len(chosen) < 2:
        return None
    centre = chosen.mean(axis=0)
    w, h = chosen.max(axis=0) - chosen.min(axis=0)
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    return centre, np.array([w, h]) * HALF_BODY_PADDING


def random_affine(keypoints, visibility, rng: np.random.Generator, crop_size=(256, 192),
                  input_size=(256, 192)) -> tuple[np.ndarray, bool]:
    """One draw of the official augmentation for a stored crop of ``crop_size`` (H, W) with keypoints (J, 2)
    in its pixels: (the 2x3 affine stored-crop pixels -> input pixels, flipped?). A flipped draw's affine
    mirrors the image; the caller swaps left and right joints (:func:`augment` does)."""
    from poselift.data.crops import PersonBox, crop_affine

    height, width = crop_size
    kp = np.asarray(keypoints, dtype=np.float64)
    # the stored crop as the frame: HRNet's box is centred at (W/2, H/2) and W wide
    centre, size = np.array([width / 2, height / 2]), np.array([float(width), float(height)])
    labelled = int(((np.asarray(visibility) > 0) & np.isfinite(kp).all(axis=1)).sum())
    if labelled > HALF_BODY_JOINTS and rng.random() < HALF_BODY_P:
        half = half_body_box(kp, visibility, rng, width / height)
        if half is not None:
            centre, size = half
    scale = float(np.clip(1 + SCALE_FACTOR * rng.standard_normal(), 1 - SCALE_FACTOR, 1 + SCALE_FACTOR))
    rotation = float(np.clip(ROTATION_FACTOR * rng.standard_normal(), -2 * ROTATION_FACTOR, 2 * ROTATION_FACTOR))
    rotation = rotation if rng.random() <= ROTATION_P else 0.0
    flip = bool(rng.random() <= FLIP_P)
    mirror = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    if flip:  # the code flips the frame (x -> W - 1 - x) and the box centre with it
        mirror = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        centre = np.array([width - 1.0 - centre[0], centre[1]])
    box = PersonBox(np.asarray(centre, dtype=np.float64), np.asarray(size, dtype=np.float64))
    affine = crop_affine(box, tuple(input_size), rotation=rotation, scale=scale) @ mirror
    return affine, flip


def warp(image: np.ndarray, affine, input_size, crop_size=None) -> np.ndarray:
    """``image`` (H, W, 3) uint8 warped by ``affine`` into ``input_size`` (H, W): bilinear, black border; blurred
    first (sigma (1/s - 1)/2) when the input is smaller than ``crop_size`` by s < 1."""
    import cv2

    if crop_size is not None:
        s = min(input_size[0] / crop_size[0], input_size[1] / crop_size[1])
        if s < 1:
            image = cv2.GaussianBlur(image, (0, 0), sigmaX=(1 / s - 1) / 2)
    return cv2.warpAffine(np.ascontiguousarray(image), np.asarray(affine, dtype=np.float64),
                          (int(input_size[1]), int(input_size[0])), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def augment(image: np.ndarray, keypoints, visibility, rng: np.random.Generator, input_size=None,
            flip_permutation=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The official augmentation of a stored crop ``image`` (H, W, 3) uint8 with keypoints (J, 2) in its
    pixels (NaN: unlabelled) and ``visibility`` (J,): (image (h, w, 3) uint8 of ``input_size`` (default the
    crop's size), keypoints (J, 2) float32 in its pixels, visibility (J,) float32), left and right swapped
    (``flip_permutation``, default H36M-17's) when the draw flips."""
    crop_size = image.shape[:2]
    input_size = tuple(crop_size if input_size is None else input_size)
    kp = np.asarray(keypoints, dtype=np.float64)
    vis = np.asarray(visibility, dtype=np.float32)
    affine, flipped = random_affine(kp, vis, rng, crop_size, input_size)
    out = warp(image, affine, input_size, crop_size)
    kp = apply_affine(kp, affine)
    if flipped:
        perm = H36M17.flip_permutation if flip_permutation is None else np.asarray(flip_permutation)
        kp, vis = kp[perm], vis[perm]
    return out, kp.astype(np.float32), vis.astype(np.float32)


def normalise(images, input_size=None, device=None):
    """RGB uint8 images (B, H, W, 3) (a numpy array or a uint8 torch tensor; one image (H, W, 3) too) ->
    a float32 tensor (B, 3, H, W) on ``device`` with ImageNet's mean and std (torchvision's ToTensor and
    Normalize, as the code's transform). With ``input_size`` (H, W) other than the images', each is first
    resized (:func:`resize_affine`, :func:`warp`): keypoints of the input are the stored crop's x the ratio."""
    import torch

    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[None]
        if input_size is not None and tuple(input_size) != images.shape[1:3]:
            m = resize_affine(images.shape[1:3], input_size)
            images = np.stack([warp(im, m, input_size, images.shape[1:3]) for im in images])
        images = torch.from_numpy(np.ascontiguousarray(images))
    elif input_size is not None and tuple(input_size) != tuple(images.shape[1:3]):
        raise ValueError("resize numpy images (a tensor must already have the input size)")
    x = images.to(device) if device is not None else images
    x = x.permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
