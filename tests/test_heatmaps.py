"""The heatmap codec (poselift.detection.heatmaps: targets, loss, decoding, flip test) and the official
training augmentation on stored crops (poselift.detection.augment)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from poselift.detection.augment import (UPPER_BODY, apply_affine, augment, half_body_box, normalise,
                                        random_affine, resize_affine, warp)
from poselift.detection.heatmaps import (decode, flip_back, flip_test, gaussian_targets, joints_mse,
                                         to_frame_pixels)
from poselift.skeleton import H36M17

PERM = H36M17.flip_permutation


# --- targets ----------------------------------------------------------------------------------------------

def test_target_peaks_with_value_one_at_the_nearest_cell_and_is_cut_at_three_sigma():
    kp = np.full((17, 2), 100.0)
    kp[3] = (21.0, 34.5)  # x / 4 = 5.25 -> cell 5; y / 4 = 8.625 -> cell 9
    targets, weight = gaussian_targets(kp, np.ones(17))
    assert targets.shape == (17, 64, 48) and targets.dtype == np.float32 and weight.tolist() == [1.0] * 17
    t = targets[3]
    assert np.unravel_index(t.argmax(), t.shape) == (9, 5) and t[9, 5] == 1.0
    assert t[9, 6] == pytest.approx(np.exp(-1 / 8)) and t[10, 6] == pytest.approx(np.exp(-2 / 8))  # sigma 2
    assert t[9, 5 + 6] == pytest.approx(np.exp(-36 / 8)) and t[9, 5 + 7] == 0  # cut at 3 sigma = 6 cells
    assert t[9 - 6, 5 + 6] > 0 and t[9 - 7, 5] == 0  # a square window, as the official code's
    assert (t > 0).sum() == 13 * 12  # 13 rows x 12 columns (the window's columns -1..11 clipped at 0)
    sigma1, _ = gaussian_targets(kp, np.ones(17), sigma=1.0)  # [A] Eq. 4's sigma
    assert sigma1[3, 9, 6] == pytest.approx(np.exp(-1 / 2)) and sigma1[3, 9, 5 + 4] == 0


def test_invisible_unlabelled_and_off_map_joints_get_weight_zero():
    kp = np.full((17, 2), 96.0)
    vis = np.ones(17)
    vis[1] = 0  # invisible
    kp[2] = np.nan  # unlabelled
    kp[4] = (-40.0, 100.0)  # cell -10: its window (-16..-4) misses the map
    kp[5] = (200.0, 100.0)  # cell 50 on a 48-wide map: the window 44..56 still reaches it
    kp[6] = (100.0, 300.0)  # cell 75 on a 64-high map: the window 69..81 misses it
    targets, weight = gaussian_targets(kp, vis)
    assert weight[[1, 2, 4, 6]].tolist() == [0, 0, 0, 0] and weight[[0, 3, 5]].tolist() == [1, 1, 1]
    assert not targets[[1, 2, 4, 6]].any()
    assert targets[5].max() == pytest.approx(np.exp(-9 / 8)) and targets[5][:, 47].argmax() == 25


@pytest.mark.parametrize("subpixel, bound", [(False, 2.0), (True, 1.0)])
def test_a_keypoints_own_target_decodes_back_within_the_quantisation(subpixel, bound):
    """The official target is centred on the nearest cell, so it decodes to 4 round(x / 4): within half a
    cell, stride / 2 = 2 crop px per axis (its neighbours are equal: no quarter offset). A Gaussian at the exact
    position (subpixel) is decoded to the nearest cell moved a quarter cell towards the keypoint: within a
    quarter cell, stride / 4 = 1 crop px. Keypoints on a fractional grid over the map's interior."""
    xs = np.arange(12.0, 180.0, 0.7)
    ys = np.arange(12.0, 244.0, 1.3)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    grid = grid[: len(grid) // 17 * 17].reshape(-1, 17, 2)
    maps = np.stack([gaussian_targets(k, np.ones(17), subpixel=subpixel)[0] for k in grid])
    found, scores = decode(maps)
    err = np.abs(found - grid)
    assert found.shape == grid.shape and scores.shape == grid.shape[:2]
    assert err.max() <= bound + 1e-4
    assert err.max() > bound - 0.1  # the bound is reached: it is the right one
    if not subpixel:
        assert np.array_equal(found, 4 * np.floor(grid / 4 + 0.5)) and np.allclose(scores, 1.0)


def test_decode_moves_a_quarter_pixel_towards_the_higher_neighbour_only_inside_the_map():
    hm = np.zeros((3, 16, 12), np.float32)
    hm[0, 6, 5] = 1.0
    hm[0, 6, 6], hm[0, 6, 4] = 0.5, 0.2  # right higher -> +0.25 in x
    hm[0, 5, 5], hm[0, 7, 5] = 0.5, 0.2  # upper higher -> -0.25 in y
    hm[1, 6, 1], hm[1, 6, 2] = 1.0, 0.5  # px = 1: the code's 1 < px fails, no offset on either axis
    hm[1, 7, 1] = 0.5
    hm[2] = -1.0  # no positive response: (0, 0), as the code's mask
    hm[2, 4, 4] = -0.5
    found, scores = decode(torch.from_numpy(hm)[None], stride=4)
    assert found[0].tolist() == [[5.25 * 4, 5.75 * 4], [4.0, 24.0], [0.0, 0.0]]
    assert scores[0].tolist() == [1.0, 1.0, -0.5]


def test_joints_mse_is_the_official_weighted_loss():
    gen = torch.Generator().manual_seed(0)
    pred, gt = torch.rand(2, 17, 8, 6, generator=gen), torch.rand(2, 17, 8, 6, generator=gen)
    w = torch.ones(2, 17)
    w[0, 3] = w[1, 10] = 0
    loss = joints_mse({"heatmaps": pred}, {"heatmaps": gt, "target_weight": w})
    official = sum(0.5 * ((pred[:, k] * w[:, k, None, None] - gt[:, k] * w[:, k, None, None]) ** 2).mean()
                   for k in range(17)) / 17
    assert loss.item() == pytest.approx(official.item(), rel=1e-6)
    ones = joints_mse({"heatmaps": pred}, {"heatmaps": gt, "target_weight": torch.ones(2, 17)})
    eq5 = ((pred - gt) ** 2).sum(dim=(2, 3)).mean()  # [A] Eq. 5: 1/(AB) sum ||S - S^||^2
    assert ones.item() == pytest.approx(eq5.item() * 0.5 / (8 * 6), rel=1e-6)


# --- flip test --------------------------------------------------------------------------------------------

class RandomHeatmapNet(nn.Module):
    """Any network: a fixed random conv stack with stride 4 and CPN-like extra outputs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.Tanh(),
                                  nn.Conv2d(8, 17, 5, stride=2, padding=2))

    def forward(self, x):
        h = self.body(x)
        return {"heatmaps": h, "global_heatmaps": [h, 2 * h], "features": x[:, :1, ::4, ::4]}


def test_flip_test_of_a_mirrored_input_gives_mirrored_keypoints():
    """flip_test(mirror(x)) is flip_test(x) mirrored, left/right swapped and shifted one cell (exactly, away
    from column 0), so its keypoints are the mirrored ones about x = W/2: 4 (w - u) = W - x (the code's shift
    rounds the true mirror W - 1 - x by one crop pixel)."""
    model = RandomHeatmapNet().eval()
    x = torch.randn(3, 3, 64, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain, mirrored = flip_test(model, x, PERM), flip_test(model, x.flip(-1), PERM)
        back = flip_back(plain["heatmaps"], PERM)
    assert torch.allclose(mirrored["heatmaps"][..., 1:], back[..., 1:], atol=1e-6)
    k, s = decode(plain["heatmaps"])
    km, sm = decode(mirrored["heatmaps"])
    expected = k[:, PERM].copy()
    expected[..., 0] = 48 - expected[..., 0]
    cells = plain["heatmaps"].flatten(2).argmax(-1).numpy() % 12
    ok = (cells[:, PERM] != 0) & (s[:, PERM] > 0)  # a peak in column 0 leaves the map when mirrored
    assert ok.mean() > 0.8
    np.testing.assert_allclose(km[ok], expected[ok], atol=1e-4)
    # every heatmap output is averaged (lists too); other outputs are the unflipped pass's
    assert torch.allclose(mirrored["global_heatmaps"][1], 2 * mirrored["heatmaps"], atol=1e-6)
    assert torch.equal(mirrored["features"], x.flip(-1)[:, :1, ::4, ::4])
    pairs = np.stack([H36M17.left, H36M17.right], 1)  # pairs work as well as the permutation
    with torch.no_grad():
        assert torch.equal(flip_test(model, x, pairs)["heatmaps"], plain["heatmaps"])


def test_to_frame_pixels_inverts_each_crops_affine():
    from poselift.data.crops import box_from_xywh, crop_affine, to_crop

    rng = np.random.default_rng(0)
    frame_points = rng.uniform(0, 900, (4, 17, 2))
    affines = np.stack([crop_affine(box_from_xywh([100 * i, 50, 200 + 30 * i, 300]), rotation=10 * i)
                        for i in range(4)])
    crop_points = np.stack([to_crop(p, a) for p, a in zip(frame_points, affines)])
    np.testing.assert_allclose(to_frame_pixels(crop_points, affines), frame_points, atol=1e-8)
    np.testing.assert_allclose(to_frame_pixels(crop_points[0], affines[0]), frame_points[0], atol=1e-8)


# --- augmentation -----------------------------------------------------------------------------------------

def frontal_pose() -> np.ndarray:
    """A person facing the camera in a 256x192 crop (its left side on the image's right)."""
    kp = {"pelvis": (96, 140), "right_hip": (80, 140), "right_knee": (78, 185), "right_ankle": (76, 225),
          "left_hip": (112, 140), "left_knee": (114, 185), "left_ankle": (116, 225), "spine": (96, 110),
          "thorax": (96, 80), "neck_nose": (96, 62), "head": (96, 40), "left_shoulder": (122, 82),
          "left_elbow": (132, 112), "left_wrist": (138, 140), "right_shoulder": (70, 82),
          "right_elbow": (60, 112), "right_wrist": (54, 140)}
    return np.array([kp[n] for n in H36M17.names], dtype=np.float64)


def disc(centre, size=(256, 192), radius=5.0) -> np.ndarray:
    y, x = np.mgrid[0:size[0], 0:size[1]]  # pixel centres at integers
    image = np.zeros((*size, 3), np.uint8)
    image[(x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius ** 2] = 255
    return image


def centroid(image) -> np.ndarray:
    w = image[..., 0].astype(np.float64)
    y, x = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    return np.array([(w * x).sum(), (w * y).sum()]) / w.sum()


@pytest.mark.parametrize("input_size", [(256, 192), (128, 96)])
def test_augmented_keypoints_stay_on_their_pixels(input_size):
    """Discs drawn at the keypoints, augmented with the keypoints: each disc's centroid is its keypoint's
    new position (flip, scale, rotation, half-body and resize alike)."""
    kp, vis = frontal_pose(), np.ones(17)
    joints = [H36M17.index(n) for n in ("head", "left_wrist", "right_ankle", "pelvis")]
    kinds = set()
    for seed in range(12):
        affine, flipped = random_affine(kp, vis, np.random.default_rng(seed), (256, 192), input_size)
        kinds.add(flipped)
        for j in joints:
            image, out_kp, out_vis = augment(disc(kp[j]), kp, vis, np.random.default_rng(seed), input_size)
            assert image.shape == (*input_size, 3)
            where = out_kp[PERM[j]] if flipped else out_kp[j]  # joint j's pixels carry the swapped label
            margin = 8 * input_size[0] / 256
            if not (margin < where[0] < input_size[1] - margin and margin < where[1] < input_size[0] - margin):
                continue  # the disc is (partly) cut off by the crop's border
            np.testing.assert_allclose(centroid(image), where, atol=1.0)
            np.testing.assert_allclose(where, apply_affine(kp[j], affine), atol=1e-4)
    assert kinds == {True, False}


def test_flip_swaps_left_and_right_so_the_body_keeps_its_handedness():
    """A mirror reverses the body's orientation (hips x spine); swapping the labels restores it, so every
    augmented pose, flipped or not, has the original's handedness; rotations and scales keep it."""
    kp, vis = frontal_pose(), np.ones(17)
    image = np.zeros((256, 192, 3), np.uint8)

    def handedness(p):
        hips = p[H36M17.index("left_hip")] - p[H36M17.index("right_hip")]
        spine = p[H36M17.index("thorax")] - p[H36M17.index("pelvis")]
        return np.sign(hips[0] * spine[1] - hips[1] * spine[0])

    flips = 0
    for seed in range(20):
        _, out_kp, _ = augment(image, kp, vis, np.random.default_rng(seed))
        _, flipped = random_affine(kp, vis, np.random.default_rng(seed))
        flips += flipped
        assert handedness(out_kp) == handedness(kp)
        if flipped:  # and without the swap it would be reversed
            assert handedness(out_kp[PERM]) == -handedness(kp)
    assert 0 < flips < 20


def test_half_body_fits_the_box_to_the_upper_or_the_lower_joints_only():
    kp, vis = frontal_pose(), np.ones(17)
    upper = np.zeros(17, bool)
    upper[list(UPPER_BODY)] = True
    seeds = {np.random.default_rng(s).standard_normal() < 0.5: s for s in range(10)}
    for pick_upper, seed in seeds.items():
        centre, size = half_body_box(kp, vis, np.random.default_rng(seed), 192 / 256)
        chosen = kp[upper] if pick_upper else kp[~upper]
        np.testing.assert_allclose(centre, chosen.mean(0))
        extent = chosen.max(0) - chosen.min(0)
        assert size[0] / size[1] == pytest.approx(192 / 256)  # grown to the crop's aspect
        assert size[0] >= 1.5 * extent[0] - 1e-9 and size[1] >= 1.5 * extent[1] - 1e-9
        assert min(size[0] / (1.5 * extent[0]), size[1] / (1.5 * extent[1])) == pytest.approx(1.0)
    few = vis.copy()
    few[list(UPPER_BODY)[2:]] = 0  # two upper joints left: the lower body, whatever the draw
    for seed in seeds.values():
        centre, _ = half_body_box(kp, few, np.random.default_rng(seed), 0.75)
        np.testing.assert_allclose(centre, kp[~upper].mean(0))
    only = np.zeros(17)
    only[0] = 1
    assert half_body_box(kp, only, np.random.default_rng(0), 0.75) is None


def test_half_body_only_with_more_than_eight_labelled_joints():
    """Without half body the drawn box is the stored crop's, centred on the crop's centre (96, 128), which the
    affine keeps in place (flipped or not); half body moves it, for about 0.3 of the draws."""
    kp = frontal_pose()

    def moved(vis):
        count = 0
        for seed in range(60):
            a, _ = random_affine(kp, vis, np.random.default_rng(seed))
            count += not np.allclose(apply_affine(np.array([96.0, 128.0]), a), [96, 128], atol=1e-9)
        return count

    eight = np.zeros(17)
    eight[:8] = 1
    assert moved(eight) == 0
    assert 8 <= moved(np.ones(17)) <= 30


def test_augmentation_is_deterministic_given_the_generator():
    kp, vis = frontal_pose(), np.ones(17)
    image = disc(kp[0])
    a = augment(image, kp, vis, np.random.default_rng(5))
    b = augment(image, kp, vis, np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_normalise_is_imagenet_and_resizes_keeping_hrnets_convention():
    images = np.stack([disc((60.0, 100.0)), disc((130.0, 40.0))])
    x = normalise(images)
    assert x.shape == (2, 3, 256, 192) and x.dtype == torch.float32
    assert x[0, 0, 0, 0].item() == pytest.approx(-0.485 / 0.229)
    assert x[0, 2, 100, 60].item() == pytest.approx((1 - 0.406) / 0.225)
    small = normalise(images, (128, 96))
    assert small.shape == (2, 3, 128, 96)
    m = resize_affine((256, 192), (128, 96))
    assert np.allclose(apply_affine(np.array([60.0, 100.0]), m), [30, 50])
    raw = warp(images[0], m, (128, 96), (256, 192))
    np.testing.assert_allclose(centroid(raw), [30, 50], atol=0.3)
