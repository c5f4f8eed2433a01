"""The top-down heatmap codec: Gaussian targets, the joints MSE loss, decoding with the quarter-pixel offset,
the flip test, and keypoints back to frame pixels. It follows the attention paper [A] (Eqs. 4-5) where the
official HRNet code ([HRc], leoxiaobin/deep-high-resolution-net.pytorch: JointsDataset.generate_target,
JointsMSELoss, core/inference.get_final_preds, function.validate) agrees, and the code where they differ
(spec: shared/specs/image-side.md, sections 1.3-1.4 and A5).

Conventions. A heatmap of size (h, w) = input (H, W) / ``stride`` (4: 64x48 for a 256x192 crop). Heatmap
pixel u is crop pixel ``stride * u`` (x and y alike), the convention of HRNet's affine
(:func:`poselift.data.crops.crop_affine`: box centre -> crop (W/2, H/2), and so -> heatmap (w/2, h/2) for the
affine of the heatmap's size): targets are centred at keypoint / stride and decoded keypoints are
heatmap position * stride, so training and decoding agree. (Under poselift's integer-centre convention a
heatmap cell's footprint is centred at crop pixel ``4u + 1.5``; the official code ignores that offset in both
directions, and UDP later removed it; we keep HRNet's, as the imported official weights were trained with it.)

- Targets (:func:`gaussian_targets`): [A] Eq. 4 draws H_n ~ N(a_n, I), sigma = 1 px; the code uses sigma = 2
  on the 64x48 map, which produced the published baselines (spec A5), so the default is 2. The Gaussian is
  unnormalised (peak 1), centred at the nearest heatmap cell int(x / stride + 0.5) and cut to the
  (6 sigma + 1)-cell square around it (|du|, |dv| <= 3 sigma). A joint's weight is 0 when it is unlabelled
  (NaN), invisible (``visibility`` 0), or when its Gaussian has no cell on the map; a joint a little off the
  map keeps weight 1 and the part of its Gaussian that is on the map, as in the code. (For a sigma whose 3
  sigma is not an integer, e.g. CPN's, the code's window would sit off the centre; it stays centred here.)
- Loss (:func:`joints_mse`): the code's JointsMSELoss, (1/J) sum_k 0.5 mean_{b,pixels} (w_bk (H^_bk - H_bk))^2.
  [A] Eq. 5, L = 1/(AB) sum_a sum_b ||S - S^||^2, sums over the pixels and has no weights: for labelled
  joints the code's loss is Eq. 5 times 0.5 / (h w), the same minimiser, a different scale for the lr.
- Decoding (:func:`decode`): the argmax, moved a quarter heatmap pixel towards the higher of its two
  neighbours on each axis when 1 < px < w - 1 and 1 < py < h - 1 (the code's test, both axes at once), times
  the stride; score = the heatmap's maximum. A heatmap whose maximum is <= 0 decodes to (0, 0), as the
  code's argmax mask does. A keypoint's own target decodes to stride * round(x / stride): within
  stride / 2 (2 crop px at stride 4) per axis, the quantisation of the target's centre; a Gaussian centred
  at the exact position (``subpixel=True``) decodes within stride / 4 (1 crop px), the quarter offset's
  resolution.
- Flip test (:func:`flip_test`): the heatmaps of the image and of its mirror, the latter mirrored back, left
  and right channels swapped and shifted one heatmap pixel to the right ([HRc] TEST.SHIFT_HEATMAP: the
  mirror x -> W - 1 - x of the input is crop x -> 4 (w - 1 - u) + 3 on the map, 0.75 cell off the heatmap
  mirror; the code rounds that to one cell), averaged.
"""

from __future__ import annotations

import numpy as np

from poselift.detection.augment import normalise  # noqa: F401  (re-exported: the network input)

STRIDE = 4  # input pixels per heatmap pixel (HRNet and CPN predict at 1/4 resolution)
SIGMA = 2.0  # [HRc] MODEL.SIGMA; [A] Eq. 4 says 1 (spec A5)
HEATMAP_SIZE = (64, 48)  # (h, w) for a 256x192 input


def gaussian_targets(keypoints_crop, visibility, heatmap_size=HEATMAP_SIZE, stride: float = STRIDE,
                     sigma: float = SIGMA, subpixel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Target heatmaps (J, h, w) float32 and target weights (J,) float32 for keypoints (J, 2) in input-crop
    pixels with ``visibility`` (J,) (> 0: use the joint).

    Each joint's map is exp(-((u - u0)^2 + (v - v0)^2) / (2 sigma^2)) on the cells with |u - u0|, |v - v0| <=
    3 sigma, 0 elsewhere; (u0, v0) = floor(x / stride + 0.5), the nearest cell ([HRc]'s int(x / stride + 0.5),
    which truncates towards zero: the two differ only for points more than half a cell left of or above
    the map), or x / stride itself with ``subpixel``. Weight 0 (and an all-zero map) for an unlabelled
    (NaN), invisible or off-map joint (no cell of its window on the map).
    """
    kp = np.asarray(keypoints_crop, dtype=np.float64)
    vis = np.asarray(visibility, dtype=np.float64).reshape(-1)
    if kp.ndim != 2 or kp.shape[1] != 2 or vis.shape[0] != kp.shape[0]:
        raise ValueError(f"keypoints must be (J, 2) and visibility (J,), got {kp.shape} and {vis.shape}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    h, w = (int(v) for v in heatmap_size)
    labelled = np.isfinite(kp).all(axis=1) & (vis > 0)
    centre = np.where(labelled[:, None], kp, 0.0) / stride
    if not subpixel:
        centre = np.floor(centre + 0.5)
    radius = 3.0 * sigma
    on_map = ((centre[:, 0] + radius >= 0) & (centre[:, 0] - radius <= w - 1)
              & (centre[:, 1] + radius >= 0) & (centre[:, 1] - radius <= h - 1))
    weight = (labelled & on_map).astype(np.float32)
    du = np.arange(w)[None, :] - centre[:, :1]  # (J, w)
    dv = np.arange(h)[None, :] - centre[:, 1:]  # (J, h)
    gx = np.where(np.abs(du) <= radius, np.exp(-du ** 2 / (2 * sigma ** 2)), 0.0)
    gy = np.where(np.abs(dv) <= radius, np.exp(-dv ** 2 / (2 * sigma ** 2)), 0.0)
    targets = gy[:, :, None] * gx[:, None, :] * weight[:, None, None]  # separable: exp(a + b) = exp(a) exp(b)
    return targets.astype(np.float32), weight


def joints_mse(out: dict, targets: dict):
    """[HRc]'s JointsMSELoss (use_target_weight): (1/J) sum_k 0.5 mean_{b,pixels} (w_bk (H^_bk - H_bk))^2 of
    out["heatmaps"] (B, J, h, w) against targets["heatmaps"] with targets["target_weight"] (B, J)."""
    pred, gt = out["heatmaps"], targets["heatmaps"]
    if pred.shape != gt.shape:
        raise ValueError(f"heatmaps {tuple(pred.shape)} and targets {tuple(gt.shape)} differ in shape")
    weight = targets["target_weight"].to(pred.dtype)[..., None, None]
    return 0.5 * ((pred - gt.to(pred.dtype)) * weight).square().mean()


def decode(heatmaps, stride: float = STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (..., J, 2) in input-crop pixels (float32) and scores (..., J) (the maxima) of heatmaps
    (..., J, h, w), a numpy array or a torch tensor: [HRc]'s get_final_preds before its inverse affine."""
    if not isinstance(heatmaps, np.ndarray):  # a torch tensor
        heatmaps = heatmaps.detach().float().cpu().numpy()
    hm = np.asarray(heatmaps, dtype=np.float32)
    if hm.ndim < 3:
        raise ValueError(f"heatmaps must be (..., J, h, w), got {hm.shape}")
    h, w = hm.shape[-2:]
    flat = hm.reshape(*hm.shape[:-2], h * w)
    index = flat.argmax(axis=-1)  # the first maximum in row-major order, as np.argmax in the code
    scores = np.take_along_axis(flat, index[..., None], axis=-1)[..., 0]
    px, py = index % w, index // w
    # quarter offset towards the higher neighbour, only well inside the map (the code's 1 < p < size - 1)
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    xl, xr = np.clip(px - 1, 0, w - 1), np.clip(px + 1, 0, w - 1)
    yu, yd = np.clip(py - 1, 0, h - 1), np.clip(py + 1, 0, h - 1)

    def at(x, y):
        return np.take_along_axis(flat, (y * w + x)[..., None], axis=-1)[..., 0]

    dx = np.sign(at(xr, py) - at(xl, py))
    dy = np.sign(at(px, yd) - at(px, yu))
    coords = np.stack([px + 0.25 * dx * inside, py + 0.25 * dy * inside], axis=-1)
    coords = np.where((scores > 0)[..., None], coords, 0.0)  # the code's mask: no positive response -> (0, 0)
    return (coords * stride).astype(np.float32), scores.astype(np.float32)


def _permutation(flip_pairs, num_joints: int) -> np.ndarray:
    """A left/right channel permutation from a permutation (J,) or from pairs (K, 2)."""
    from poselift.skeleton import swap_permutation

    pairs = np.asarray(flip_pairs, dtype=np.int64)
    if pairs.ndim == 2 and pairs.shape[1] == 2:
        return swap_permutation(num_joints, pairs[:, 0], pairs[:, 1])
    if pairs.shape != (num_joints,) or sorted(pairs.tolist()) != list(range(num_joints)):
        raise ValueError(f"flip_pairs must be (K, 2) pairs or a permutation of {num_joints} joints, got {pairs.shape}")
    return pairs


def flip_back(heatmaps, flip_pairs, shift: bool = True):
    """The heatmaps (B, J, h, w) of a mirrored input, in the frame of the original: mirrored, left/right
    channels swapped, shifted one pixel right ([HRc] flip_back + SHIFT_HEATMAP: column 0 keeps its value)."""
    import torch

    perm = torch.as_tensor(_permutation(flip_pairs, heatmaps.shape[1]), device=heatmaps.device)
    back = heatmaps.flip(-1)[:, perm]
    if shift:
        back = torch.cat([back[..., :1], back[..., :-1]], dim=-1)
    return back


def flip_test(model, images, flip_pairs) -> dict:
    """``model(images)`` averaged with the flipped-back output of ``model(images mirrored)``.

    ``images`` (B, 3, H, W); ``flip_pairs`` the left/right joint pairs (K, 2) or the swap permutation (J,).
    Every output whose key names heatmaps ("heatmaps", CPN's "global_heatmaps", a tensor or a list of
    (B, J, h, w) tensors) is averaged; the other outputs (e.g. "features") are the unflipped pass's.
    """
    out = model(images)
    mirrored = model(images.flip(-1))
    result = dict(out)
    for key, value in out.items():
        if "heatmaps" not in key:
            continue
        if isinstance(value, (list, tuple)):
            result[key] = type(value)(0.5 * (a + flip_back(b, flip_pairs)) for a, b in zip(value, mirrored[key]))
        else:
            result[key] = 0.5 * (value + flip_back(mirrored[key], flip_pairs))
    return result


def to_frame_pixels(keypoints_crop, affine) -> np.ndarray:
    """Crop points (..., J, 2) -> frame pixels through the frame -> crop affines (..., 2, 3) (one per crop, or
    one for all): :func:`poselift.data.crops.to_frame`, batched. float64."""
    kp = np.asarray(keypoints_crop, dtype=np.float64)
    a = np.asarray(affine, dtype=np.float64)
    linear_inv = np.linalg.inv(a[..., :2])  # (..., 2, 2)
    offset = a[..., 2]  # (..., 2)
    return np.einsum("...ij,...kj->...ki", linear_inv, kp - offset[..., None, :])


# --- a network's keypoints on stored crops (validation, evaluation, poselift detect) ---------------------
def flip_permutation(keypoint_format: str | None) -> np.ndarray:
    """The left/right channel swap of a network's joints: H36M-17's (``"h36m"`` or None), else the layout's."""
    from poselift.skeleton import H36M17

    if keypoint_format in (None, "h36m"):
        return H36M17.flip_permutation
    from poselift.keypoint_formats import get_format

    return get_format(keypoint_format).flip_permutation


def predict_crops(model, images: np.ndarray, input_size, crop_size, flip: bool, device=None):
    """Keypoints (B, J, 2) in the pixels of the stored crops ``images`` (B, H, W, 3) uint8 of ``crop_size``
    and their scores (B, J): the images resized to ``input_size`` and normalised, the model (in eval mode)
    run with or without the flip test, the heatmaps decoded, the input's pixels scaled back to the stored
    crop's (the two share the box: HRNet's affine is a pure scale between them)."""
    import torch

    x = normalise(images, input_size, device=device)
    with torch.no_grad():
        out = flip_test(model, x, flip_permutation(getattr(model, "keypoint_format", None))) if flip else model(x)
    found, scores = decode(out["heatmaps"].float())
    ratio = np.array([crop_size[1] / input_size[1], crop_size[0] / input_size[0]])
    return found * ratio, scores
