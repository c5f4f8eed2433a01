"""Real frames (poselift.data.frames): a video decoded by OpenCV, COCO keypoint annotations, MMPose's
Human3.6M and MPI-INF-3DHP fixtures, and their HRNet crops."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from poselift.data.crops import CROP_SIZE, crop
from poselift.data.frames import (LabelledFrame, VideoReader, coco_frames, coco_instances, coco_to_h36m17,
                                  h36m_frames, labelled_crops, mpi_inf_3dhp_frames, read_image)
from poselift.errors import InputError
from poselift.keypoint_formats import MPI_INF_3DHP17
from poselift.skeleton import H36M17

H, W = CROP_SIZE
J = H36M17.index


@pytest.fixture
def vtest(shared_dir):
    path = shared_dir / "data" / "media" / "vtest.avi"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def check_crops(records, count):
    crops = list(labelled_crops(records))
    assert len(crops) == count
    for c in crops:
        assert c.crop.shape == (H, W, 3) and c.crop.dtype == np.uint8
        assert c.keypoints.shape == (17, 2) and c.affine.shape == (2, 3)
        kp = c.keypoints[c.visibility > 0]
        assert len(kp) >= 2 and (kp >= 0).all() and (kp <= [W - 1, H - 1]).all()
        assert c.crop.reshape(-1, 3).std(axis=0).max() > 20  # an image, not an empty or uniform crop
    return crops


# ------------------------------------------------------------------------------------------------ video

def test_video_count_fps_size_and_rgb(vtest):
    import cv2

    with VideoReader(vtest) as video:
        assert (len(video), video.frame_count, video.fps) == (795, 795, 10.0)  # as cv2 reports them
        assert (video.height, video.width) == (576, 768)
        frame = video.read(0)
        assert frame.shape == (576, 768, 3) and frame.dtype == np.uint8
        ok, bgr = cv2.VideoCapture(str(vtest)).read()
        assert ok and np.array_equal(frame, bgr[..., ::-1])  # RGB
        assert sum(1 for _ in video) == 795


def test_video_seek_equals_iteration(vtest):
    with VideoReader(vtest) as video:
        decoded = list(video.frames(0, 40))
        assert len(decoded) == 40
        assert not np.array_equal(decoded[0], decoded[39])
        for i in (39, 0, 13, 14, 25, 26):  # out of order: each read seeks
            assert np.array_equal(video.read(i), decoded[i]), i
        assert np.array_equal(next(video.frames(30, 31)), decoded[30])
        with pytest.raises(InputError, match="795 frames, no frame 795"):
            video.read(795)


def test_video_errors(vtest, tmp_path):
    with pytest.raises(InputError, match="not found"):
        VideoReader(tmp_path / "missing.avi")
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video " * 100)
    with pytest.raises(InputError, match="junk.avi: "):
        VideoReader(junk)
    data = vtest.read_bytes()
    head = tmp_path / "head.avi"
    head.write_bytes(data[:1000])  # the header only
    with pytest.raises(InputError, match="head.avi: "):
        VideoReader(head)
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[:200_000])  # a few frames; the header still says 795
    video = VideoReader(truncated)
    assert video.read(0).shape == (576, 768, 3)
    with pytest.raises(InputError, match=r"truncated.avi: frame 100 of 795 could not be decoded"):
        video.read(100)
    with pytest.raises(InputError, match="could not be decoded"):
        list(video)
    video.close()
    assert "\n" not in str(InputError(truncated, "a\nb"))


# ------------------------------------------------------------------------------------------------- COCO

def test_coco_instances(mmpose_fixtures, tmp_path):
    path = mmpose_fixtures / "coco" / "test_coco.json"
    instances = coco_instances(path)
    assert len(instances) == 12  # 14 annotations, 2 with num_keypoints 0
    assert len({i.image_path for i in instances}) == 4
    for inst in instances:
        labelled = inst.visibility > 0
        assert inst.keypoints.shape == (17, 2) and labelled.any()
        assert (inst.keypoints[labelled] >= 0).all()
        assert (inst.keypoints[labelled] <= [inst.width - 1, inst.height - 1]).all()
        assert (inst.keypoints[~labelled] == 0).all()
        assert read_image(inst.image_path).shape == (inst.height, inst.width, 3)

    # crowd regions are skipped
    data = json.loads(path.read_text())
    crowd_id = instances[3].annotation_id
    next(a for a in data["annotations"] if a["id"] == crowd_id)["iscrowd"] = 1
    edited = tmp_path / "coco.json"
    edited.write_text(json.dumps(data))
    ids = [i.annotation_id for i in coco_instances(edited, image_root=path.parent)]
    assert len(ids) == 11 and crowd_id not in ids

    with pytest.raises(InputError, match="not found"):
        coco_instances(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}))
    with pytest.raises(InputError, match="'annotations'"):
        coco_instances(tmp_path / "bad.json")


def test_coco_to_h36m17(mmpose_fixtures):
    instances = coco_instances(mmpose_fixtures / "coco" / "test_coco.json")
    full = next(i for i in instances if (i.visibility > 0).all())
    kp, vis = full.to_h36m17()
    assert np.allclose(kp[J("pelvis")], full.keypoints[[11, 12]].mean(axis=0))  # COCO hips
    assert np.allclose(kp[J("left_wrist")], full.keypoints[9]) and vis[J("left_wrist")] == full.visibility[9]
    # an interpolated joint with an unlabelled source is unlabelled, at (0, 0)
    v = full.visibility.copy()
    v[11] = 0
    kp, vis = coco_to_h36m17(full.keypoints, v)
    assert vis[J("pelvis")] == 0 and vis[J("spine")] == 0 and (kp[J("pelvis")] == 0).all()
    assert vis[J("thorax")] > 0

    frames = list(coco_frames(mmpose_fixtures / "coco" / "test_coco.json"))
    assert len(frames) == 12 and all(isinstance(f, LabelledFrame) for f in frames)
    assert frames[0].image.shape == (425, 640, 3) and frames[0].source.endswith("000000000785.jpg#442619")
    check_crops(frames, 12)


# -------------------------------------------------------------------------------- Human3.6M, MPI-INF-3DHP

def test_h36m_labels_fall_on_the_person(mmpose_fixtures):
    """The fixture ships the person's ground-truth body mask (DensePose IUV, BF_IUV_gt, ~2 % of the frame):
    every labelled joint lies on it, in the frame and in the crop."""
    import cv2

    root = mmpose_fixtures / "h36m"
    frames = list(h36m_frames(root / "test_h36m_body3d.npz"))
    assert len(frames) == 4
    crops = check_crops(frames, 4)
    for frame, c in zip(frames, crops):
        assert frame.image.shape in ((1002, 1000, 3), (1000, 1000, 3)) and (frame.visibility > 0).all()
        stem = frame.source.rsplit("/", 1)[-1][:-4]
        iuv = read_image(next((root / "BF_IUV_gt").glob(stem + "_*.png")))
        assert iuv.shape == frame.image.shape
        mask = (iuv.max(axis=2) > 0).astype(np.uint8)
        assert 0.01 < mask.mean() < 0.05
        x, y = np.round(frame.keypoints).astype(int).T
        assert mask[y, x].all()
        x0, y0, w, h = frame.bbox  # MMPose's centre/scale box holds the joints too
        assert ((frame.keypoints >= [x0, y0]) & (frame.keypoints <= [x0 + w, y0 + h])).all()

        crop_mask = crop(mask * 255, c.affine)
        near = cv2.dilate((crop_mask > 0).astype(np.uint8), np.ones((3, 3), np.uint8))
        x, y = np.round(c.keypoints).astype(int).T
        assert near[y, x].all()


def test_mpi_inf_3dhp_frames(mmpose_fixtures):
    root = mmpose_fixtures / "mpi_inf_3dhp"
    for name, hidden in (("test_3dhp_train.npz", 0), ("test_3dhp_test.npz", 2)):
        frames = list(mpi_inf_3dhp_frames(root / name))
        part = np.load(root / name)["part"]
        assert len(frames) == 2
        assert sum(int((f.visibility == 0).sum()) for f in frames) == hidden  # joints off the image
        for f, p in zip(frames, part):
            assert f.image.shape == (2048, 2048, 3)
            assert np.allclose(f.keypoints[J("pelvis")], p[MPI_INF_3DHP17.joints.index("root"), :2])
            assert np.allclose(f.keypoints[J("head")], p[MPI_INF_3DHP17.joints.index("head_top"), :2])
            labelled = f.keypoints[f.visibility > 0]
            assert (labelled >= 0).all() and (labelled <= 2047).all()
        check_crops(frames, 2)


def test_fixture_errors(mmpose_fixtures, tmp_path):
    with pytest.raises(InputError, match="not found"):
        list(h36m_frames(tmp_path / "none.npz"))
    np.savez(tmp_path / "partial.npz", imgname=np.array(["a.jpg"]))
    with pytest.raises(InputError, match="no center, scale, part array"):
        list(h36m_frames(tmp_path / "partial.npz"))
    shutil.copy(mmpose_fixtures / "h36m" / "test_h36m_body3d.npz", tmp_path)
    with pytest.raises(InputError, match="image not found"):
        list(h36m_frames(tmp_path / "test_h36m_body3d.npz"))
