"""HRNet person crops (poselift.data.crops): the box, the affine and its inverse, and the warp agreeing with
the keypoints carried into the crop (also under rotation/scale augmentation and a flip)."""

from __future__ import annotations

import numpy as np
import pytest

from poselift.data.crops import (CROP_SIZE, PersonBox, box_from_joints, box_from_xywh, crop, crop_affine,
                                 invert_affine, to_crop, to_frame)
from poselift.data.images import flip_image
from poselift.skeleton import H36M17

H, W = CROP_SIZE

# A standing person in H36M-17 order (frame pixels, non-integer on purpose), joints >= 18 px apart.
JOINTS = np.array([
    [320.3, 300.2], [296.1, 302.7], [290.4, 380.9], [286.2, 455.5], [344.8, 298.4], [352.6, 376.3],
    [360.9, 452.1], [322.5, 250.6], [321.7, 200.3], [323.2, 176.8], [318.4, 150.1], [352.2, 205.7],
    [383.5, 240.2], [402.7, 282.9], [290.6, 206.4], [262.3, 243.8], [245.1, 286.6]])
SIGMA = 3.0  # frame pixels


def blobs(points, shape=(480, 640), sigma=SIGMA) -> np.ndarray:
    """An RGB uint8 image, black with a Gaussian dot (peak 255) at every point."""
    y, x = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    image = np.zeros(shape)
    for px, py in points:
        image = np.maximum(image, np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * sigma ** 2)))
    return np.repeat(np.round(255 * image).astype(np.uint8)[..., None], 3, axis=2)


def dot_centroids(image, points, radius) -> np.ndarray:
    """The intensity centroid of ``image`` within ``radius`` px of each point: where the dots are."""
    gray = image[..., 0].astype(np.float64)
    y, x = np.mgrid[0:gray.shape[0], 0:gray.shape[1]]
    out = []
    for px, py in points:
        w = gray * (((x - px) ** 2 + (y - py) ** 2) <= radius ** 2)
        assert w.sum() > 0, f"no dot near ({px:.1f}, {py:.1f})"
        out.append([(w * x).sum() / w.sum(), (w * y).sum() / w.sum()])
    return np.array(out)


def test_box_has_aspect_3_4_and_padding_1_25():
    tall = np.array([[100.0, 50.0], [160.0, 250.0], [130.0, 120.0]])  # extent 60 x 200: widened
    box = box_from_joints(tall)
    assert np.allclose(box.center, [130.0, 150.0])
    assert np.allclose(box.size, [1.25 * 150.0, 1.25 * 200.0])
    assert np.allclose(box.size[0] / box.size[1], 192 / 256)
    assert np.allclose(box.scale, box.size / 200.0)  # HRNet's `scale`, in units of 200 px
    assert np.allclose(box.xyxy, [130 - 93.75, 150 - 125, 130 + 93.75, 150 + 125])

    wide = np.array([[0.0, 0.0], [300.0, 100.0]])  # extent 300 x 100: heightened
    assert np.allclose(box_from_joints(wide).size, [1.25 * 300.0, 1.25 * 400.0])

    # only labelled joints count (visibility > 0)
    far = np.vstack([tall, [[900.0, 900.0]]])
    assert np.allclose(box_from_joints(far, visibility=[1, 2, 1, 0]).size, box.size)
    # COCO's [x, y, w, h] box: centre x + w/2
    assert np.allclose(box_from_xywh([100.0, 50.0, 60.0, 200.0]).center, [130.0, 150.0])
    assert np.allclose(box_from_xywh([100.0, 50.0, 60.0, 200.0]).size, box.size)
    with pytest.raises(ValueError):
        box_from_joints(tall, visibility=[0, 0, 0])
    with pytest.raises(ValueError):
        box_from_joints([[5.0, 5.0], [5.0, 5.0]])


def test_affine_maps_box_centre_to_crop_centre_and_box_width_to_crop_width():
    box = PersonBox(np.array([300.0, 200.0]), np.array([150.0, 200.0]))
    a = crop_affine(box)
    assert a.shape == (2, 3)
    assert np.allclose(to_crop(box.center, a), [W / 2, H / 2])
    left, right = to_crop([[225.0, 200.0], [375.0, 200.0]], a)
    assert np.allclose(right - left, [W, 0])
    top, bottom = to_crop([[300.0, 100.0], [300.0, 300.0]], a)
    assert np.allclose(bottom - top, [0, H])  # the box has the crop's aspect, so its height fills H
    # rotation +90 degrees: a point right of the centre lands above it (counter-clockwise on screen)
    r = crop_affine(box, rotation=90.0)
    assert np.allclose(to_crop([375.0, 200.0], r), [W / 2, H / 2 - W / 2])
    # scale 2: twice the region, the person at half the size
    assert np.allclose(to_crop([375.0, 200.0], crop_affine(box, scale=2.0)), [W / 2 + W / 4, H / 2])


@pytest.mark.parametrize("rotation,scale", [(0.0, 1.0), (35.0, 1.3), (-80.0, 0.7)])
def test_to_frame_inverts_to_crop(rotation, scale):
    rng = np.random.default_rng(0)
    a = crop_affine(box_from_joints(JOINTS), rotation=rotation, scale=scale)
    p = rng.uniform(-500, 1500, (4, 17, 2))
    assert np.abs(to_frame(to_crop(p, a), a) - p).max() < 1e-4
    assert np.allclose(invert_affine(invert_affine(a)), a)
    assert np.allclose(invert_affine(a)[:, :2] @ a[:, :2], np.eye(2))


@pytest.mark.parametrize("rotation,scale", [(0.0, 1.0), (30.0, 1.2), (-60.0, 0.8), (90.0, 1.35)])
def test_dots_of_the_frame_land_on_the_crop_keypoints(rotation, scale):
    image = blobs(JOINTS)
    a = crop_affine(box_from_joints(JOINTS), rotation=rotation, scale=scale)
    patch = crop(image, a)
    assert patch.shape == (H, W, 3) and patch.dtype == np.uint8
    kp = to_crop(JOINTS, a)
    k = np.hypot(*a[:, 0])  # crop pixels per frame pixel
    margin = 3 * SIGMA * k  # a whole dot inside the crop (augmentation may push joints out)
    inside = ((kp >= margin) & (kp <= np.array([W - 1, H - 1]) - margin)).all(axis=1)
    assert inside.sum() >= 12
    found = dot_centroids(patch, kp[inside], radius=margin)
    assert np.abs(found - kp[inside]).max() < 0.1, np.abs(found - kp[inside]).max()
    # and the crop's pixels sample the frame where to_frame says: a dot's peak pixel maps back onto the joint
    peak = np.array(np.unravel_index(np.argmax(patch[..., 0]), patch.shape[:2]))[::-1]
    assert np.min(np.hypot(*(to_frame(peak, a) - JOINTS).T)) < 1.0 / k


def test_flipped_crop_keeps_dots_on_keypoints():
    a = crop_affine(box_from_joints(JOINTS), rotation=20.0, scale=1.1)
    patch, kp = crop(blobs(JOINTS), a), to_crop(JOINTS, a)
    flipped, kp_flipped = flip_image(patch, kp)
    assert np.allclose(kp_flipped[H36M17.flip_permutation, 0], W - 1 - kp[:, 0])
    k = np.hypot(*a[:, 0])
    assert np.abs(dot_centroids(flipped, kp_flipped, radius=3 * SIGMA * k) - kp_flipped).max() < 0.1

    # flipping the frame first, then boxing and cropping the flipped joints, agrees as well
    frame, joints = flip_image(blobs(JOINTS), JOINTS)
    b = crop_affine(box_from_joints(joints), rotation=-15.0)
    kp_b = to_crop(joints, b)
    assert np.abs(dot_centroids(crop(frame, b), kp_b, radius=3 * SIGMA * np.hypot(*b[:, 0])) - kp_b).max() < 0.1


def test_crop_border_is_constant_and_channels_kept():
    image = np.full((40, 30, 3), 200, dtype=np.uint8)
    box = PersonBox(np.array([0.0, 0.0]), np.array([120.0, 160.0]))  # centred on the top-left corner
    patch = crop(image, crop_affine(box))
    assert patch.shape == (H, W, 3)
    assert (patch[:100, :70] == 0).all() and (patch[-40:, -40:] == 0).all()  # outside the frame: black
    assert (patch[H // 2 + 5: H // 2 + 20, W // 2 + 5: W // 2 + 20] == 200).all()
    gray = crop(image[..., :1], crop_affine(box), size=(64, 48))
    assert gray.shape == (64, 48, 1)
