"""poselift demo: video/image -> 2D overlay + 3D skeleton (mp4, gif, png); the lifting and drawing it uses."""

from __future__ import annotations

import numpy as np
import pytest

from poselift.commands.demo import lift, load_lifter
from poselift.skeleton import H36M17
from poselift.visualise import Skeleton3DPanel, draw_skeleton_2d, side_by_side


@pytest.fixture(scope="module")
def lifter(tmp_path_factory):
    """A small VideoPose3D lifting checkpoint (T = 3, random weights) in poselift's checkpoint format."""
    import torch

    from poselift.models import build_model
    from poselift.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    args = {"filter_widths": [3], "channels": 16, "dropout": 0.0}
    model = build_model("videopose3d", args)
    path = tmp_path_factory.mktemp("lifter") / "checkpoint.pt"
    save_checkpoint(path, {"model": "videopose3d", "args": args, "window": 3, "output_frames": "centre",
                           "task": "lifting", "state_dict": model.state_dict(), "epoch": 1,
                           "stage": {"flip_test": False}})
    return path


def media(shared_dir, name):
    return shared_dir / "data" / "media" / name


def read_video(path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_lift_fills_frames_without_a_person_from_the_nearest_one(lifter):
    model, window, flip_test, device = load_lifter(lifter)
    assert window == 3
    rng = np.random.default_rng(0)
    kp = rng.uniform(100, 400, (6, 17, 2))
    kp[0] = kp[1]  # frame 0 repeats frame 1 ...
    missing = kp.copy()
    missing[0] = np.nan  # ... which is what a frame without a person is lifted from
    scores = np.ones((6, 17))
    a, b = lift(model, window, flip_test, kp, scores, 640, 480), lift(model, window, flip_test, missing, scores, 640, 480)
    assert a.shape == (6, 17, 3) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.abs(a[:, 0]).max() < 1e-3  # root-relative: the pelvis at the origin
    with pytest.raises(ValueError):
        lift(model, window, flip_test, np.full((3, 17, 2), np.nan), np.ones((3, 17)), 640, 480)


def test_3d_panel_is_y_up_and_draws_the_bones():
    pose = np.zeros((17, 3))
    pose[H36M17.index("head"), 1] = -600.0  # camera y points down: the head is 0.6 m above the pelvis
    pose[H36M17.index("right_ankle"), 1] = 850.0
    plotted = Skeleton3DPanel.plot_coordinates(pose)
    assert plotted[H36M17.index("head"), 2] == 600.0 and plotted[H36M17.index("right_ankle"), 2] == -850.0
    panel = Skeleton3DPanel(size=200)
    empty, drawn = panel.render(None), panel.render(pose)
    assert empty.shape == drawn.shape == (200, 200, 3)
    assert (np.abs(empty.astype(int) - drawn.astype(int)).sum(-1) > 60).sum() > 50  # the skeleton's pixels


def test_2d_overlay_draws_on_a_copy():
    image = np.zeros((100, 80, 3), np.uint8)
    kp = np.stack([np.linspace(10, 70, 17), np.linspace(10, 90, 17)], axis=1)
    out = draw_skeleton_2d(image, kp)
    assert image.sum() == 0 and out.sum() > 0
    both = side_by_side(out, np.zeros((51, 51, 3), np.uint8))
    assert both.shape == (100, 80 + 100, 3)  # the panel scaled to the frame's height, sizes even


@pytest.mark.shared
def test_demo_on_vtest_writes_a_video_of_the_frames(shared_dir, lifter, run_cli, tmp_path):
    out = tmp_path / "vtest.mp4"
    code, stdout, err = run_cli("demo", media(shared_dir, "vtest.avi"), "--lifter", lifter, "--frames", "5",
                                "--start", "20", "--person-box", "hog", "--out", out)
    assert code == 0, err
    frames = read_video(out)
    assert len(frames) == 5
    assert frames[0].shape == (576, 768 + 576, 3)  # the 768x576 frame beside a 576x576 3D panel
    assert "5 frames" in stdout and "a person in" in stdout
    assert [p.name for p in tmp_path.iterdir()] == ["vtest.mp4"]  # no temporary file left


@pytest.mark.shared
def test_demo_on_an_image_writes_one_png(shared_dir, lifter, run_cli, tmp_path):
    import cv2

    out = tmp_path / "messi.png"
    code, stdout, err = run_cli("demo", media(shared_dir, "messi5.jpg"), "--lifter", lifter, "--out", out)
    assert code == 0, err
    image = cv2.imread(str(out))
    width = round(548 * 480 / 342) + 480  # the 548x342 image scaled to the 480x480 panel's height, beside it
    assert image.shape == (480, width + width % 2, 3)  # padded to an even width


@pytest.mark.shared
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(shared_dir, lifter, run_cli, tmp_path):
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video at all" * 100)
    video = media(shared_dir, "vtest.avi")
    cases = [
        (tmp_path / "missing.avi", "--lifter", lifter, "--out", tmp_path / "o1.mp4"),
        (broken, "--lifter", lifter, "--out", tmp_path / "o2.mp4"),
        (video, "--lifter", lifter, "--out", tmp_path / "o3.avi"),  # unknown output type
        (video, "--lifter", lifter, "--frames", "3", "--out", tmp_path / "o4.png"),  # a png holds one frame
        (video, "--lifter", broken, "--frames", "2", "--out", tmp_path / "o5.mp4"),  # not a checkpoint
        (video, "--lifter", lifter, "--detector", "hrnet", "--out", tmp_path / "o6.mp4"),  # no network checkpoint
        # vtest's people are too small for BlazePose's own detector on the whole frame
        (video, "--lifter", lifter, "--frames", "2", "--out", tmp_path / "o7.mp4"),
    ]
    for case in cases:
        code, _, err = run_cli("demo", *case)
        assert code == 2, (case, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("poselift: error: "), err
    assert "--person-box hog" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.avi"]
