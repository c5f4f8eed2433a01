"""`poselift crops`: real labelled frames (MMPose's COCO, Human3.6M and 3DHP fixtures, a video with a prepared
file's 2D) become person crops in the layout `poselift render` writes, read back by the same CropFile."""

from __future__ import annotations

import numpy as np
import pytest

from poselift.camera import Camera
from poselift.data.crop_file import CropFile
from poselift.data.crops import to_frame
from poselift.data.prepared import PreparedDataset, Sequence, write_prepared
from poselift.report import contact_sheet


@pytest.mark.parametrize("source, annotations, images, count", [
    ("coco", "coco/test_coco.json", "coco", 12),
    ("h36m", "h36m/test_h36m_body3d.npz", "h36m", 4),
    ("3dhp", "mpi_inf_3dhp/test_3dhp_test.npz", "mpi_inf_3dhp", 2),
])
def test_fixtures_become_crops_in_the_render_layout(tmp_path, run_cli, mmpose_fixtures, source, annotations,
                                                    images, count):
    out = tmp_path / f"{source}.h5"
    code, _, err = run_cli("crops", source, "--annotations", mmpose_fixtures / annotations,
                           "--images", mmpose_fixtures / images, "--out", out)
    assert code == 0, err
    f = CropFile(out)
    assert f.source == "frames" and f.crop_size == (256, 192) and len(f) == count
    for key in f.views:
        for i in range(f.counts[key]):
            s = f.sample(key, i)  # the same fields a rendered crop has
            assert set(s) == {"image", "keypoints", "keypoints_frame", "affine", "box", "visibility", "frame"}
            assert s["image"].shape == (256, 192, 3) and s["image"].std() > 10
            seen = s["visibility"] > 0
            assert seen.sum() >= 2
            inside = (s["keypoints"][seen] >= -0.5).all() and (s["keypoints"][seen, 0] <= 191.5).all() \
                and (s["keypoints"][seen, 1] <= 255.5).all()
            assert inside  # the box holds every labelled joint
            np.testing.assert_allclose(to_frame(s["keypoints"], s["affine"]), s["keypoints_frame"], atol=1e-3)
            assert np.isnan(s["keypoints"][~seen]).all()  # an unlabelled joint has no coordinate
    assert contact_sheet(out, count=4).shape[2] == 3


def dot_video(path, keypoints, size=(240, 320)):
    """An MJPG video whose frame t shows a white dot at each of keypoints[t] (F, 17, 2) on grey."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (size[1], size[0]))
    for frame_points in keypoints:
        image = np.full((*size, 3), 60, np.uint8)
        for x, y in frame_points:
            cv2.circle(image, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1)
        writer.write(image)
    writer.release()


def test_a_video_with_a_prepared_files_2d_becomes_crops_whose_labels_sit_on_the_pixels(tmp_path, run_cli):
    rng = np.random.default_rng(0)
    frames = 12
    base = rng.uniform([100, 40], [220, 200], (17, 2))
    keypoints = (base + np.arange(frames)[:, None, None] * np.array([2.0, 1.0])).astype(np.float32)  # walks right
    dot_video(tmp_path / "walk.avi", keypoints)
    camera = Camera(R=np.eye(3), T=np.zeros(3), f=[300.0, 300.0], c=[160.0, 120.0], width=320, height=240, name="cam")
    seq = Sequence(subject="S1", name="Walking 1", action="Walking", split="test", rig="rig", cameras=["cam"],
                   positions_3d=np.zeros((frames, 17, 3), np.float32), positions_2d=keypoints[None])
    write_prepared(tmp_path / "p.h5", PreparedDataset(dataset="toy", fps=25.0, rigs={"rig": {"cam": camera}},
                                                     sequences=[seq]))
    out = tmp_path / "walk.h5"
    code, _, err = run_cli("crops", "video", "--video", tmp_path / "walk.avi", "--prepared", tmp_path / "p.h5",
                           "--sequence", "S1/Walking 1", "--camera", "cam", "--every", 2, "--out", out)
    assert code == 0, err
    f = CropFile(out)
    view = f.view("S1/Walking 1/cam")
    assert list(view.frame) == list(range(0, frames, 2))
    for i, t in enumerate(view.frame):
        np.testing.assert_allclose(view.keypoints_frame[i], keypoints[t], atol=1e-3)
        image = f.crop(view.key, i).astype(float).mean(-1)
        for x, y in view.keypoints[i]:
            u, v = int(round(x)), int(round(y))
            assert image[v, u] > 150  # a dot is where its label says

    code, _, err = run_cli("crops", "video", "--video", tmp_path / "walk.avi", "--prepared", tmp_path / "p.h5",
                           "--sequence", "S1/Running", "--camera", "cam", "--out", tmp_path / "x.h5")
    assert code == 2 and "no sequence 'S1/Running'" in err and not (tmp_path / "x.h5").exists()
    short = tmp_path / "short.avi"
    dot_video(short, keypoints[:5])
    code, _, err = run_cli("crops", "video", "--video", short, "--prepared", tmp_path / "p.h5",
                           "--sequence", "S1/Walking 1", "--camera", "cam", "--out", tmp_path / "x.h5")
    assert code == 2 and "short.avi: has 5 frames, fewer than the 12 of its 2D labels" in err
    assert not (tmp_path / "x.h5").exists()


def test_missing_annotations_is_one_line(tmp_path, run_cli):
    code, _, err = run_cli("crops", "coco", "--out", tmp_path / "x.h5")
    assert code == 2 and "--annotations: required for coco" in err and not (tmp_path / "x.h5").exists()


def test_an_unwritable_output_is_one_line(tmp_path, run_cli, mmpose_fixtures):
    (tmp_path / "file").write_text("a file where a folder should be")
    code, _, err = run_cli("crops", "h36m", "--annotations", mmpose_fixtures / "h36m/test_h36m_body3d.npz",
                           "--out", tmp_path / "file" / "x.h5")
    assert code == 2 and "file/x.h5: cannot be written" in err and err.count("\n") == 1


def test_videos_in_the_human36m_layout_become_one_crops_file_keyed_like_the_renders(tmp_path, run_cli):
    """`poselift crops videos`: every (sequence, camera) of a prepared file subsampled to 5 fps from its 25 fps
    video under <subject>/Videos/<sequence>.<camera>.mp4; label i is video frame 5 i, and its dots are there."""
    from poselift.data.prepared import subsample

    rng = np.random.default_rng(1)
    frames, cams = 21, ["c1", "c2"]
    camera = {c: Camera(R=np.eye(3), T=np.zeros(3), f=[300.0, 300.0], c=[160.0, 120.0], width=320, height=240,
                        name=c) for c in cams}
    seqs, root = [], tmp_path / "h36m"
    for subject, name in (("S1", "Walking 1"), ("S9", "Eating")):
        pixels = np.stack([(rng.uniform([100, 40], [200, 180], (17, 2)) + np.arange(frames)[:, None, None] *
                            np.array([1.5, 0.5])).astype(np.float32) for _ in cams])
        (root / subject / "Videos").mkdir(parents=True, exist_ok=True)
        for c, cam in enumerate(cams):
            dot_video(root / subject / "Videos" / f"{name}.{cam}.mp4", pixels[c])
        seqs.append(Sequence(subject=subject, name=name, action=name.split()[0], split="train" if subject == "S1"
                             else "test", rig="rig", cameras=cams, positions_3d=np.zeros((frames, 17, 3), np.float32),
                             positions_2d=pixels))
    full = PreparedDataset(dataset="toy", fps=25.0, rigs={"rig": camera}, sequences=seqs)
    write_prepared(tmp_path / "p5.h5", subsample(full, 5))  # 5 fps, as `poselift prepare --frame-step 5`
    out = tmp_path / "crops.h5"
    code, _, err = run_cli("crops", "videos", "--videos", root, "--prepared", tmp_path / "p5.h5", "--out", out)
    assert code == 0, err
    f = CropFile(out)
    assert f.views == ["S1/Walking 1/c1", "S1/Walking 1/c2", "S9/Eating/c1", "S9/Eating/c2"]
    for s, seq in enumerate(seqs):
        for c, cam in enumerate(cams):
            view = f.view(f"{seq.key}/{cam}")
            assert list(view.frame) == [0, 1, 2, 3, 4]  # prepared frames of the 5 fps file
            for i, t in enumerate(view.frame):
                np.testing.assert_allclose(view.keypoints_frame[i], seq.positions_2d[c, 5 * t], atol=1e-3)
                image = f.crop(view.key, i).astype(float).mean(-1)
                assert all(image[int(round(y)), int(round(x))] > 150 for x, y in view.keypoints[i])

    (root / "S9" / "Videos" / "Eating.c2.mp4").unlink()
    code, _, err = run_cli("crops", "videos", "--videos", root, "--prepared", tmp_path / "p5.h5",
                           "--out", tmp_path / "x.h5")
    assert code == 2 and "Eating.c2.mp4: video file not found (1 of the prepared file's 4 views" in err
    assert not (tmp_path / "x.h5").exists()
    code, _, err = run_cli("crops", "videos", "--videos", root, "--prepared", tmp_path / "p5.h5", "--skip-missing",
                           "--out", tmp_path / "x.h5")
    assert code == 0 and err.count("warning") == 1 and "no video for 1 views, left out: S9/Eating/c2" in err
    assert CropFile(tmp_path / "x.h5").views == ["S1/Walking 1/c1", "S1/Walking 1/c2", "S9/Eating/c1"]
    odd = PreparedDataset(dataset="toy", fps=10.0, rigs={"rig": camera}, sequences=[subsample(full, 5).sequences[0]])
    write_prepared(tmp_path / "p10.h5", odd)  # 25 fps videos are no whole multiple of 10 fps
    code, _, err = run_cli("crops", "videos", "--videos", root, "--prepared", tmp_path / "p10.h5",
                           "--out", tmp_path / "y.h5")
    assert code == 2 and "runs at 25 fps, not a whole multiple of the prepared file's 10 fps" in err
