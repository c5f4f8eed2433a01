"""--detector mediapipe: the BlazePose-33 -> H36M-17 mapping, the person-box region, BlazePose on a real image."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from poselift.detection import DETECTORS
from poselift.detection.blazepose import (BLAZEPOSE_H36M, CROP_SIDE, LANDMARKS, BlazePose, MediaPipeDetector,
                                          PersonTracker, _region, import_mediapipe, iou, scores_to_h36m17,
                                          to_h36m17)
from poselift.errors import InputError
from poselift.skeleton import H36M17, flip_poses


def landmark(name: str) -> int:
    return LANDMARKS.index(name)


def joint(name: str) -> int:
    return H36M17.index(name)


@pytest.fixture
def layout() -> np.ndarray:
    """33 distinct random landmarks (x, y)."""
    return np.random.default_rng(0).uniform(0, 500, (33, 2))


def test_trunk_and_head_are_synthesised_as_documented(layout):
    h36m = to_h36m17(layout)
    mid = lambda *names: np.mean([layout[landmark(n)] for n in names], axis=0)  # noqa: E731
    np.testing.assert_allclose(h36m[joint("pelvis")], mid("left_hip", "right_hip"))
    np.testing.assert_allclose(h36m[joint("thorax")], mid("left_shoulder", "right_shoulder"))
    np.testing.assert_allclose(h36m[joint("spine")], (h36m[joint("pelvis")] + h36m[joint("thorax")]) / 2)
    np.testing.assert_allclose(h36m[joint("neck_nose")], (h36m[joint("thorax")] + mid("mouth_left", "mouth_right")) / 2)
    np.testing.assert_allclose(h36m[joint("head")], mid("left_eye", "right_eye"))


def test_limbs_are_copied_from_the_landmarks_of_the_same_name(layout):
    h36m = to_h36m17(layout)
    for name in ("left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_shoulder",
                 "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist"):
        np.testing.assert_array_equal(h36m[joint(name)], layout[landmark(name)])
    np.testing.assert_allclose(BLAZEPOSE_H36M.weights.sum(axis=1), 1.0)  # every joint an affine combination


def test_mapping_commutes_with_a_mirror_image(layout):
    """Mirroring the person (x -> -x, left <-> right landmarks) and mapping = mapping and mirroring H36M-17."""
    mirrored = layout[BLAZEPOSE_H36M.flip_permutation] * np.array([-1.0, 1.0])
    np.testing.assert_allclose(to_h36m17(mirrored), flip_poses(to_h36m17(layout)), atol=1e-9)


def test_synthesised_joints_get_the_least_visible_sources_score():
    visibility = np.ones(33)
    visibility[landmark("mouth_left")] = 0.2
    visibility[landmark("right_hip")] = 0.4
    s = scores_to_h36m17(visibility)
    assert s[joint("neck_nose")] == pytest.approx(0.2)
    assert s[joint("pelvis")] == s[joint("spine")] == s[joint("right_hip")] == pytest.approx(0.4)
    assert s[joint("head")] == s[joint("left_hip")] == 1.0
    with pytest.raises(ValueError):
        to_h36m17(np.zeros((17, 2)))


def test_region_maps_mediapipes_normalised_coordinates_back_to_frame_pixels():
    """A bright pixel at a known frame position is found in the region; its normalised coordinate (MediaPipe's
    convention: the image spans [0, 1] edge to edge) maps back to that frame position."""
    image = np.zeros((300, 400, 3), np.uint8)
    x, y = 250, 140
    image[y - 1:y + 2, x - 1:x + 2] = 255
    pixels, frame_from_input = _region(image, [200, 60, 80, 160])
    assert pixels.shape == (CROP_SIDE, CROP_SIDE, 3)
    weight = pixels[..., 0].astype(float)
    u = (weight.sum(0) * np.arange(CROP_SIDE)).sum() / weight.sum()
    v = (weight.sum(1) * np.arange(CROP_SIDE)).sum() / weight.sum()
    normalised = (np.array([u, v]) + 0.5) / CROP_SIDE
    back = frame_from_input[:, :2] @ normalised + frame_from_input[:, 2]
    np.testing.assert_allclose(back, [x, y], atol=0.05)


def test_iou_and_the_tracker_follow_one_box():
    assert iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / 150)
    assert iou([0, 0, 10, 10], [20, 20, 5, 5]) == 0.0
    tracker = PersonTracker()
    assert tracker(np.zeros((200, 200, 3), np.uint8)) is None  # nobody seen yet


def test_registered_but_refuses_prepared_datasets(run_cli, tmp_path):
    from test_detect import make_sequence, write_dataset

    assert DETECTORS["mediapipe"] is MediaPipeDetector
    prepared = write_dataset(tmp_path / "p.h5", [make_sequence("S1/walk", 5, seed=0)])
    code, _, err = run_cli("detect", "--prepared", prepared, "--detector", "mediapipe", "--out", tmp_path / "d.h5")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "mediapipe" in err and "poselift demo" in err
    assert not (tmp_path / "d.h5").exists()


def test_missing_mediapipe_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # `import mediapipe` raises ImportError
    with pytest.raises(InputError, match="pip install mediapipe==0.10.14"):
        import_mediapipe()
    with pytest.raises(InputError):
        BlazePose()


@pytest.mark.shared
def test_blazepose_finds_the_player_in_messi5(shared_dir):
    from poselift.data.frames import read_image

    image = read_image(shared_dir / "data" / "media" / "messi5.jpg")  # 548x342, one player kicking, left to right
    with BlazePose() as blazepose:
        found = blazepose.detect(image)
        assert found is not None
        kp = found.keypoints
        # the player's region (measured by eye on the image): x 90..460, y 80..342
        assert (kp[:, 0] > 90).all() and (kp[:, 0] < 460).all() and (kp[:, 1] > 80).all() and (kp[:, 1] < 342).all()
        assert kp[joint("head"), 1] < kp[joint("thorax"), 1] < kp[joint("pelvis"), 1]  # upright trunk
        assert kp[joint("left_ankle"), 1] > kp[joint("pelvis"), 1] and kp[joint("right_ankle"), 1] > kp[joint("pelvis"), 1]
        assert (found.scores[[joint("left_shoulder"), joint("right_shoulder"), joint("pelvis")]] > 0.5).all()
        np.testing.assert_allclose(found.keypoints, to_h36m17(found.landmarks))
        # the same player through the person-box path (a region around the box, resized): the same joints
        again = blazepose.detect(image, found.box)
        assert again is not None
        err = np.linalg.norm(again.keypoints - found.keypoints, axis=1)
        assert np.median(err) < 0.05 * found.box[3], err
