"""``poselift detect`` with a network detector (poselift.detection.network): a tiny real HRNet trained by
``poselift train`` (task heatmaps) on synthetic people (a coloured disc per labelled joint) finds the joints
of a prepared dataset's crops, in frame pixels; frames without a crop are "not detected"; a checkpoint that
does not fit the detector, a missing option or crops of another prepared file are one-line errors that
leave no file behind; a COCO-17 network's output is mapped to Human3.6M-17."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from poselift.data.crop_file import CropWriter, View
from poselift.data.crops import to_frame
from poselift.data.detections import load_detections
from poselift.data.images import encode_image
from poselift.data.prepared import content_hash
from poselift.keypoint_formats import scores_to_h36m17, to_h36m17
from poselift.training.checkpoint import read_checkpoint, save_checkpoint
from test_heatmap_task import CROP as TASK_CROP, LABELLED, person, toy_prepared  # disc crops: a person the tiny nets can find

CROP = TASK_CROP  # (H, W) of the stored crops and of the network input: 64x48 (heatmaps 16x12)
SCALE = 0.25  # frame -> crop: a crop pixel is 4 frame pixels
SEQUENCES = [("S1", "Walk", "train", 40), ("S5", "Eat", "train", 40), ("S6", "Walk", "validation", 8),
             ("S9", "Walk", "test", 12)]
CAMERAS = ("c1", "c2")
BOUND = 16.0  # frame px (4 crop px, half the discs' least distance): a trained network is within it, on average
STEP = 2  # a crop on every other frame: the frames between have none
TINY_HRNET = {"class": "hrnet", "width": 8, "stage_modules": [1, 1, 1], "blocks": 1, "stage1_blocks": 1,
              "stem_width": 16, "input_size": list(CROP)}
STAGE = {"name": "hrnet", "model": "tiny-hrnet", "task": "heatmaps", "epochs": 15, "batch_size": 8, "lr": 5e-3,
         "optimizer": "adam", "losses": {"heatmap_mse": 1.0}, "augment": False, "flip_test": False,
         "input_size": list(CROP), "sigma": 6.0, "validation_crops": 8}


def write_crops(path, prepared_hash: str, seed: int = 0, skip: tuple = ()) -> None:
    """Labelled crops of every view of SEQUENCES (but those in ``skip``) on frames 0, 2, 4, ...: each crop
    is a box of the frame, frame -> crop = scale 1/4 and an offset."""
    rng = np.random.default_rng(seed)
    with CropWriter(path, "render", prepared_hash, {"synthetic": True}, crop_size=CROP, codec="png") as writer:
        for subject, name, _, n in SEQUENCES:
            for cam in CAMERAS:
                if f"{subject}/{name}/{cam}" in skip:
                    continue
                frames = np.arange(0, n, STEP)
                images, kps, affines, boxes = [], [], [], []
                for _ in frames:
                    image, kp = person(rng)
                    origin = rng.uniform(0, 700, 2)
                    images.append(encode_image(image, "png"))
                    kps.append(kp)
                    affines.append([[SCALE, 0, -SCALE * origin[0]], [0, SCALE, -SCALE * origin[1]]])
                    boxes.append([*origin, *(origin + np.array([CROP[1], CROP[0]]) / SCALE)])
                kps, affines = np.array(kps), np.array(affines)
                writer.add(View(key=f"{subject}/{name}/{cam}", frame=frames, keypoints=kps,
                                keypoints_frame=np.stack([to_frame(k, a) for k, a in zip(kps, affines)]),
                                affine=affines, box=np.array(boxes),
                                visibility=np.isfinite(kps).all(-1).astype(np.float32), crops=images))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The prepared file, its crops, and a checkpoint of the tiny HRNet trained on them by `poselift train`
    (and the untrained one: the weights training starts from, saved after no step)."""
    from poselift.cli import main

    root = tmp_path_factory.mktemp("network-detect")
    prepared = toy_prepared(root / "toy.h5", SEQUENCES, CAMERAS)
    crops = root / "crops.h5"
    write_crops(crops, content_hash(prepared))
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"datasets": {"toy": {"reader": "h36m"}}, "models": {"tiny-hrnet": TINY_HRNET},
                                      "experiments": {"det": {"dataset": "toy", "stages": [STAGE]}}}))
    out = root / "stage1"
    code = main([str(a) for a in ("train", "--params", params, "--experiment", "det", "--stage", 1, "--input",
                                  f"crops={crops}", "--input", f"prepared={prepared}", "--out", out, "--device",
                                  "cpu", "--tracking-uri", "off")])
    assert code == 0
    trained = read_checkpoint(out / "checkpoint.pt")
    import torch

    from poselift.detection.hrnet import HRNet

    torch.manual_seed(0)
    args = {k: v for k, v in TINY_HRNET.items() if k != "class"}
    untrained = {**trained, "state_dict": HRNet(**args).state_dict()}
    save_checkpoint(root / "untrained.pt", untrained)
    coco = {**trained, "args": {**trained["args"], "keypoint_format": "coco"}}  # the same weights read as COCO-17
    save_checkpoint(root / "coco.pt", coco)
    return {"root": root, "prepared": prepared, "crops": crops, "checkpoint": out / "checkpoint.pt",
            "untrained": root / "untrained.pt", "coco": root / "coco.pt"}


def detect(run_cli, data, out, *extra, checkpoint=None, detector="hrnet"):
    return run_cli("detect", "--detector", detector, "--checkpoint", checkpoint or data["checkpoint"], "--images",
                   data["crops"], "--prepared", data["prepared"], "--out", out, "--device", "cpu", *extra)


def ground_truth(crops) -> dict:
    """{sequence key: (frames with a crop (N,), keypoints_frame (C, N, 17, 2), constant-guess error px)}."""
    import h5py

    out = {}
    with h5py.File(crops) as f:
        for subject, name, _, _ in SEQUENCES:
            key = f"{subject}/{name}"
            frames = f[f"{key}/{CAMERAS[0]}/frame"][()]
            gt = np.stack([f[f"{key}/{c}/keypoints_frame"][()] for c in CAMERAS])
            affine = np.stack([f[f"{key}/{c}/affine"][()] for c in CAMERAS])
            # a constant guess: every joint at the crop's centre
            centre = np.array([(CROP[1] - 1) / 2, (CROP[0] - 1) / 2])
            guess = (centre - affine[..., 2]) / SCALE  # (C, N, 2) frame px
            error = np.linalg.norm(gt[..., LABELLED, :] - guess[:, :, None], axis=-1).mean()
            out[key] = (frames, gt, error)
    return out


def mean_error(det, truth) -> float:
    errors = [np.linalg.norm(det.keypoints[key][:, frames][..., LABELLED, :] - gt[..., LABELLED, :], axis=-1)
              for key, (frames, gt, _) in truth.items()]
    return float(np.mean(np.concatenate([e.ravel() for e in errors])))


def test_a_trained_hrnet_finds_the_joints_in_frame_pixels(tmp_path, run_cli, data):
    out = tmp_path / "hrnet.h5"
    code, stdout, err = detect(run_cli, data, out)
    assert code == 0, err
    assert f"wrote {out}: hrnet detections for 4 sequences" in stdout
    det = load_detections(out)
    truth = ground_truth(data["crops"])
    assert det.detector == "hrnet" and det.prepared == content_hash(data["prepared"])
    assert det.params["flip_test"] is True and det.params["input_size"] == list(CROP)
    guess = np.mean([e for _, _, e in truth.values()])  # ~70 frame px: every joint at the crop's centre
    for subject, name, _, n in SEQUENCES:
        key = f"{subject}/{name}"
        frames = truth[key][0]
        assert det.keypoints[key].shape == (2, n, 17, 2) and det.scores[key].shape == (2, n, 17)
        assert det.cameras[key] == list(CAMERAS)
        assert (det.scores[key][:, frames][..., LABELLED] > 0).all()
        empty = np.setdiff1d(np.arange(n), frames)  # frames without a crop: not detected
        assert len(empty) and (det.keypoints[key][:, empty] == 0).all() and (det.scores[key][:, empty] == 0).all()
    error = mean_error(det, truth)
    test_error = mean_error(det, {"S9/Walk": truth["S9/Walk"]})  # crops it never trained on
    assert error < BOUND and test_error < BOUND < guess, (error, test_error, guess)  # ~5 px when trained

    untrained_out = tmp_path / "untrained.h5"
    code, _, err = detect(run_cli, data, untrained_out, checkpoint=data["untrained"])
    assert code == 0, err
    assert mean_error(load_detections(untrained_out), truth) > BOUND  # the bound is the training's

    plain = tmp_path / "plain.h5"
    code, _, err = detect(run_cli, data, plain, "--no-flip-test", "--batch-size", "5")
    assert code == 0, err
    single = load_detections(plain)
    assert single.params["flip_test"] is False
    assert mean_error(single, truth) < BOUND
    assert not np.array_equal(single.keypoints["S9/Walk"], det.keypoints["S9/Walk"])  # the flip test averages


def test_a_coco_network_is_mapped_to_h36m17(tmp_path, run_cli, data):
    """The trained weights read as a COCO-17 network: the detections are its raw decode (the same weights run
    as an H36M-17 network, no flip test) mapped by keypoint_formats.to_h36m17."""
    raw_out, coco_out = tmp_path / "raw.h5", tmp_path / "coco.h5"
    assert detect(run_cli, data, raw_out, "--no-flip-test")[0] == 0
    code, _, err = detect(run_cli, data, coco_out, "--no-flip-test", checkpoint=data["coco"])
    assert code == 0, err
    raw, coco = load_detections(raw_out), load_detections(coco_out)
    assert coco.params["keypoint_format"] == "coco"
    for key, (frames, _, _) in ground_truth(data["crops"]).items():
        points, scores = raw.keypoints[key][:, frames], raw.scores[key][:, frames]
        np.testing.assert_allclose(coco.keypoints[key][:, frames], to_h36m17(points, "coco"), atol=1e-3)
        np.testing.assert_allclose(coco.scores[key][:, frames], scores_to_h36m17(scores, "coco"), atol=1e-6)
        # pelvis (H36M 0) = the mean of COCO's hips (11, 12)
        np.testing.assert_allclose(coco.keypoints[key][:, frames, 0], points[:, :, [11, 12]].mean(axis=2),
                                   atol=1e-3)
    assert not np.allclose(coco.keypoints["S9/Walk"], raw.keypoints["S9/Walk"])
    # the flip test with COCO's left/right pairs runs too
    code, _, err = detect(run_cli, data, tmp_path / "coco-flip.h5", checkpoint=data["coco"])
    assert code == 0, err
    assert load_detections(tmp_path / "coco-flip.h5").keypoints["S9/Walk"].shape == (2, 12, 17, 2)


def test_mistakes_are_one_line_errors_that_leave_no_file(tmp_path, run_cli, data):
    out = tmp_path / "d.h5"

    def fails(*args, **kw) -> str:
        code, _, err = run_cli(*args) if args else detect(run_cli, data, out, **kw)
        assert code == 2 and err.startswith("poselift: error: ") and len(err.strip().splitlines()) == 1, err
        assert {p.name for p in tmp_path.iterdir()} <= {"other.h5", "partial.h5", "j16.pt"}  # no output, no temporary
        return err

    err = fails(detector="hrnet-att")
    assert str(data["checkpoint"]) in err and "has no channel attention: use --detector hrnet" in err
    err = fails(detector="cpn")
    assert str(data["checkpoint"]) in err and "'hrnet' checkpoint, not a cpn detector's" in err
    err = fails("detect", "--detector", "hrnet", "--images", data["crops"], "--prepared", data["prepared"],
                "--out", out)
    assert "--checkpoint: required by the network detector 'hrnet'" in err
    err = fails("detect", "--detector", "hrnet", "--checkpoint", data["checkpoint"], "--prepared",
                data["prepared"], "--out", out)
    assert "--images: required by the network detector 'hrnet'" in err
    other = tmp_path / "other.h5"
    write_crops(other, "0" * 64)  # the same views, rendered from another prepared file
    err = fails("detect", "--detector", "hrnet", "--checkpoint", data["checkpoint"], "--images", other,
                "--prepared", data["prepared"], "--out", out, "--device", "cpu")
    assert f"{other}: rendered from another prepared file than {data['prepared']}" in err
    partial = tmp_path / "partial.h5"
    write_crops(partial, content_hash(data["prepared"]), skip=("S9/Walk/c2",))  # one view not rendered
    err = fails("detect", "--detector", "hrnet", "--checkpoint", data["checkpoint"], "--images", partial,
                "--prepared", data["prepared"], "--out", out, "--device", "cpu")
    assert f"{partial}: no crops of view 'S9/Walk/c2'" in err

    import torch

    from poselift.detection.hrnet import HRNet

    # an MPII-style network with 16 heatmaps (import-checkpoint takes it): its joints are not H36M-17's
    ckpt = read_checkpoint(data["checkpoint"])
    args = {**ckpt["args"], "num_joints": 16}
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "j16.pt", {**ckpt, "args": args, "state_dict": HRNet(**args).state_dict()})
    err = fails(checkpoint=tmp_path / "j16.pt")
    assert f"{tmp_path / 'j16.pt'}: the network predicts 16 joints in keypoint format 'h36m'" in err


def test_channels_last_and_bf16_detect_the_same_joints(tmp_path, run_cli, data):
    """Channels-last convolutions (the default) give the NCHW detections up to float rounding (an argmax may
    flip on a near-tie, hence 98%); bf16 autocast, where this CPU has bf16 units, finds the joints as well as
    fp32 (mean error within 10%) and is recorded in the file's settings."""
    from poselift.precision import bf16_support

    runs = {}
    for name, extra in {"nchw": ("--no-channels-last",), "last": (), "bf16": ("--precision", "bf16")}.items():
        code, _, err = detect(run_cli, data, tmp_path / f"{name}.h5", *extra)
        assert code == 0, err
        runs[name] = load_detections(tmp_path / f"{name}.h5")
    keys = list(runs["nchw"].keypoints)
    a, b = (np.concatenate([runs[n].keypoints[k].ravel() for k in keys]) for n in ("nchw", "last"))
    assert np.mean(np.abs(a - b) < 1e-2) > 0.98
    truth = ground_truth(data["crops"])
    if bf16_support("cpu")[0]:
        assert runs["bf16"].params["precision"] == "bf16"
        assert mean_error(runs["bf16"], truth) == pytest.approx(mean_error(runs["last"], truth), rel=0.1)
    else:  # the one-line fallback ran fp32
        assert "precision" not in runs["bf16"].params
