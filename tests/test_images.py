"""Images in the data layer (poselift.data.images): JPEG/PNG bytes in HDF5, read back frame by frame, and
the horizontal flip of an image with its keypoints."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from poselift.data.images import ImageFile, decode_image, encode_image, flip_image, write_images
from poselift.errors import InputError
from poselift.skeleton import H36M17


def smooth_image(h=48, w=64, seed=0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(0.05, 0.2, 3)
    rgb = np.stack([128 + 100 * np.sin(a * x), 128 + 100 * np.cos(b * y), 128 + 100 * np.sin(c * (x + y))], -1)
    return rgb.astype(np.uint8)


def test_png_is_exact_and_jpeg_is_close():
    image = smooth_image()
    assert np.array_equal(decode_image(encode_image(image, "png")), image)
    jpeg = decode_image(encode_image(image, "jpeg", quality=95))
    assert jpeg.shape == image.shape and np.abs(jpeg.astype(int) - image).mean() < 2.0
    assert np.array_equal(decode_image(encode_image(image[..., [2, 1, 0]], "png")), image[..., [2, 1, 0]])  # RGB kept


def test_image_file_round_trip_by_key_and_index(tmp_path):
    frames = {"S1/Walking 1/cam0": [smooth_image(seed=i) for i in range(3)], "S5/Eating/cam1": [smooth_image(32, 24)]}
    path = tmp_path / "images.h5"
    write_images(path, frames, codec="png")
    f = ImageFile(path)
    assert f.keys == sorted(frames) and f.count("S1/Walking 1/cam0") == 3 and f.sizes["S5/Eating/cam1"] == (32, 24)
    for key, images in frames.items():
        for i, image in enumerate(images):
            assert np.array_equal(f.read(key, i), image)
    with pytest.raises(InputError, match=r"images.h5: 'S5/Eating/cam1' has 1 images, no image 1"):
        f.read("S5/Eating/cam1", 1)
    with pytest.raises(InputError, match=r"no images for 'S9/x'"):
        f.read("S9/x", 0)


def test_a_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "images.h5"
    with pytest.raises(ValueError, match="must share a size"):
        write_images(path, {"a": [smooth_image(), smooth_image(32, 32)]})
    assert list(tmp_path.iterdir()) == []


def test_bad_files_are_one_line_input_errors(tmp_path):
    with pytest.raises(InputError, match="missing.h5: file not found"):
        ImageFile(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(InputError, match="text.h5: not a readable HDF5 file"):
        ImageFile(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(InputError, match="other.h5: not a poselift image file"):
        ImageFile(tmp_path / "other.h5")
    path = tmp_path / "broken.h5"
    write_images(path, {"a": [smooth_image()]})
    with h5py.File(path, "r+") as f:
        f["a"][0] = np.frombuffer(b"garbage bytes", dtype=np.uint8)
    with pytest.raises(InputError, match=r"broken.h5:a\[0\]: not a decodable JPEG or PNG image"):
        ImageFile(path).read("a", 0)


def test_flipped_keypoints_land_on_the_flipped_pixels():
    """A dot of a distinct colour at each joint: after the flip, joint j's keypoint is where its left/right
    twin's dot went, and a second flip gives back the image and the keypoints."""
    h, w = 40, 57
    rng = np.random.default_rng(1)
    keypoints = np.stack([rng.choice(w, 17, replace=False), rng.integers(0, h, 17)], -1).astype(np.float32)
    image = np.zeros((h, w, 3), np.uint8)
    colours = np.stack([np.arange(17) * 10 + 50, 255 - np.arange(17) * 10, np.full(17, 7)], -1).astype(np.uint8)
    for j, (x, y) in enumerate(keypoints.astype(int)):
        image[y, x] = colours[j]
    flipped, kp = flip_image(image, keypoints)
    for j in range(17):
        x, y = kp[j].astype(int)
        twin = H36M17.flip_permutation[j]
        assert np.array_equal(flipped[y, x], colours[twin])
    again, kp2 = flip_image(flipped, kp)
    assert np.array_equal(again, image) and np.array_equal(kp2, keypoints)


def test_a_real_frame_survives_storage_and_its_joints_follow_the_flip(tmp_path, mmpose_fixtures):
    """A Human3.6M frame (MMPose's fixture) stored as JPEG reads back close to the original, and the patch
    around each labelled joint is the mirror image of the patch around its flipped keypoint."""
    labels = np.load(mmpose_fixtures / "h36m" / "test_h36m_body3d.npz")
    name = str(labels["imgname"][0])
    with open(mmpose_fixtures / "h36m" / name, "rb") as fh:
        frame = decode_image(np.frombuffer(fh.read(), np.uint8))
    write_images(tmp_path / "real.h5", {"S1/Directions 1/54138969": [frame]}, codec="jpeg", quality=95)
    stored = ImageFile(tmp_path / "real.h5").read("S1/Directions 1/54138969", 0)
    assert stored.shape == frame.shape and np.abs(stored.astype(int) - frame).mean() < 3.0
    keypoints = labels["part"][0][:, :2]
    flipped, kp = flip_image(frame, keypoints)
    r = 4
    for j in range(17):
        x, y = np.round(keypoints[j]).astype(int)
        fx, fy = np.round(kp[H36M17.flip_permutation[j]]).astype(int)
        assert fy == y and fx == frame.shape[1] - 1 - x
        patch = frame[y - r:y + r + 1, x - r:x + r + 1]
        assert np.array_equal(flipped[fy - r:fy + r + 1, fx - r:fx + r + 1], patch[:, ::-1])
