"""The detectors' 2D metrics (poselift.detection.evaluation): COCO OKS AP/AR through the real pycocotools,
PCK@0.05 of the box (MMPose's convention), pixel error; on hand-built cases with values worked out here from
the formulas, and on MMPose's COCO fixture read through poselift.data.frames."""

from __future__ import annotations

import json

import numpy as np
import pytest

from poselift.detection.evaluation import (AP_KEYS, COCO_SIGMAS, OKS_SIGMAS, coco_keypoint_ap, keypoint_metrics, pck,
                                           pixel_error, to_coco)
from poselift.keypoint_formats import COCO17
from poselift.skeleton import H36M17

OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's AP thresholds 0.50:0.05:0.95
RECALL_POINTS = 101                          # COCO's interpolated precision at recall 0, 0.01, ..., 1


def _oks(pred, gt, visible, area, sigmas=OKS_SIGMAS) -> float:
    """COCO's OKS written out: mean over visible joints of exp(-d^2 / (2 s^2 k^2)), s^2 = area, k = 2 sigma."""
    d2 = ((np.asarray(pred) - np.asarray(gt)) ** 2).sum(-1)
    e = np.exp(-d2 / (2.0 * area * (2.0 * np.asarray(sigmas)) ** 2))
    return float(e[visible > 0].mean())


def _person(rng, n=1, box=(100.0, 50.0, 300.0, 350.0)):
    """n samples of 17 joints spread inside one box (x0, y0, x1, y1), all labelled."""
    x0, y0, x1, y1 = box
    gt = np.stack([rng.uniform(x0 + 10, x1 - 10, (n, 17)), rng.uniform(y0 + 10, y1 - 10, (n, 17))], -1)
    return gt, np.ones((n, 17)), np.tile(np.array(box), (n, 1))


def _margin(oks: float) -> float:
    return float(np.abs(OKS_THRESHOLDS - oks).min())


# ----------------------------------------------------------------------------------------------- sigmas

def test_sigmas_are_coco_where_coco_has_the_joint():
    from pycocotools.cocoeval import Params

    np.testing.assert_allclose(COCO_SIGMAS, Params(iouType="keypoints").kpt_oks_sigmas)
    coco = dict(zip(COCO17.joints, COCO_SIGMAS))
    assert OKS_SIGMAS.shape == (17,)
    for j, name in enumerate(H36M17.names):
        if name in coco:
            assert OKS_SIGMAS[j] == coco[name], name
    assert OKS_SIGMAS[H36M17.index("neck_nose")] == coco["nose"]
    extra = OKS_SIGMAS[[H36M17.index(n) for n in ("pelvis", "spine", "thorax", "head")]]
    assert (extra > 0).all() and (extra <= 0.107).all()  # none looser than COCO's loosest joint (the hips)
    assert not OKS_SIGMAS.flags.writeable and not COCO_SIGMAS.flags.writeable


# ----------------------------------------------------------------------------------------------- COCO AP

def test_perfect_predictions_give_ap_and_ar_one():
    rng = np.random.default_rng(0)
    gt, vis, boxes = _person(rng, n=6)
    scores = rng.uniform(0.3, 1.0, (6, 17))
    result = coco_keypoint_ap(gt, vis, boxes, gt.copy(), scores)
    assert list(result) == list(AP_KEYS)
    for key in ("AP", "AP50", "AP75", "APL", "AR", "AR50", "AR75", "ARL"):
        assert result[key] == pytest.approx(1.0), key
    assert result["APM"] == -1.0 and result["ARM"] == -1.0  # pycocotools: no ground truth of medium area


@pytest.mark.parametrize("d", [12.0, 28.0, 45.0])
def test_displaced_prediction_matches_oks_by_hand(d):
    """One sample, every joint displaced by d px: pycocotools' AP and AR are the share of the ten OKS
    thresholds that the OKS computed here reaches (precision and recall are 1 or 0 with one detection)."""
    rng = np.random.default_rng(1)
    gt, vis, boxes = _person(rng)
    area = (boxes[0, 2] - boxes[0, 0]) * (boxes[0, 3] - boxes[0, 1])
    direction = rng.normal(size=(1, 17, 2))
    pred = gt + d * direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    oks = _oks(pred[0], gt[0], vis[0], area)
    assert _margin(oks) > 0.003, f"d = {d} puts OKS {oks} on a threshold: choose another d"
    expected = float((OKS_THRESHOLDS <= oks).mean())
    result = coco_keypoint_ap(gt, vis, boxes, pred, np.ones((1, 17)))
    assert result["AP"] == pytest.approx(expected) and result["AR"] == pytest.approx(expected)
    assert result["AP50"] == pytest.approx(float(oks >= 0.5)) and result["AP75"] == pytest.approx(float(oks >= 0.75))
    assert result["APL"] == pytest.approx(expected)


def test_oks_between_half_and_three_quarters():
    rng = np.random.default_rng(2)
    gt, vis, boxes = _person(rng)
    area = (boxes[0, 2] - boxes[0, 0]) * (boxes[0, 3] - boxes[0, 1])
    pred = gt + np.array([30.0, 0.0])
    oks = _oks(pred[0], gt[0], vis[0], area)
    assert 0.5 < oks < 0.75
    result = coco_keypoint_ap(gt, vis, boxes, pred, np.ones((1, 17)))
    assert result["AP50"] == pytest.approx(1.0) and result["AR50"] == pytest.approx(1.0)
    assert result["AP75"] == 0.0 and result["AR75"] == 0.0


@pytest.mark.parametrize("wrong_first", [False, True])
def test_scores_rank_detections(wrong_first):
    """Two samples: A exact (OKS 1), B with 0.5 < OKS < 1. Above B's OKS, B is a false positive; ranked
    below A it costs nothing up to recall 0.5 (interpolated precision 1 there), ranked above A it halves
    the precision. pycocotools averages precision at the 101 recall points 0, 0.01, ..., 1."""
    rng = np.random.default_rng(3)
    gt, vis, boxes = _person(rng, n=2)
    area = (boxes[1, 2] - boxes[1, 0]) * (boxes[1, 3] - boxes[1, 1])
    pred = gt.copy()
    pred[1] += np.array([0.0, 25.0])
    oks_b = _oks(pred[1], gt[1], vis[1], area)
    assert 0.5 < oks_b < 0.95 and _margin(oks_b) > 0.003
    scores = np.full((2, 17), 0.6)
    scores[1 if wrong_first else 0] = 0.9  # the instance score is the mean keypoint score
    passed = int((OKS_THRESHOLDS <= oks_b).sum())
    points = 51  # recall points 0, ..., 0.50 reachable with A alone
    precision = 0.5 if wrong_first else 1.0
    expected_ap = (passed + (10 - passed) * precision * points / RECALL_POINTS) / 10
    result = coco_keypoint_ap(gt, vis, boxes, pred, scores)
    assert result["AP"] == pytest.approx(expected_ap)
    assert result["AR"] == pytest.approx((passed + (10 - passed) * 0.5) / 10)


def test_invisible_and_unlabelled_joints_do_not_count():
    rng = np.random.default_rng(4)
    gt, vis, boxes = _person(rng)
    area = (boxes[0, 2] - boxes[0, 0]) * (boxes[0, 3] - boxes[0, 1])
    pred = gt + np.array([20.0, 0.0])
    hidden, unlabelled = [2, 3, 13], [6, 16]
    pred[0, hidden + unlabelled] += 500.0   # far off, but not counted
    vis[0, hidden] = 0.0                    # occluded: visibility 0
    gt[0, unlabelled] = np.nan              # unlabelled: NaN ground truth (visibility still 1)
    counted = np.ones(17)
    counted[hidden + unlabelled] = 0
    oks = _oks(pred[0], np.nan_to_num(gt[0]), counted, area)
    assert _margin(oks) > 0.003
    result = coco_keypoint_ap(gt, vis, boxes, pred, np.ones((1, 17)))
    assert result["AP"] == pytest.approx(float((OKS_THRESHOLDS <= oks).mean()))

    overall, per_joint = pck(pred, gt, vis, boxes)
    assert np.isnan(per_joint[hidden + unlabelled]).all()
    px, px_joint = pixel_error(pred, gt, vis)
    assert px == pytest.approx(20.0) and np.isnan(px_joint[hidden + unlabelled]).all()


def test_to_coco_export():
    rng = np.random.default_rng(5)
    gt, vis, boxes = _person(rng, n=3)
    vis[1, :5] = 0
    gt[2] = np.nan  # a sample with no labelled joint
    scores = np.full((3, 17), 0.1)
    scores[0, :4] = [0.9, 0.5, 0.3, 0.2]  # only scores > 0.2 count, HRNet's IN_VIS_THRE
    gt_dict, results = to_coco(gt, vis, boxes, np.nan_to_num(gt), scores)
    anns = gt_dict["annotations"]
    assert [a["image_id"] for a in anns] == [1, 2, 3] and len(gt_dict["images"]) == 3
    w, h = boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]
    assert anns[0]["bbox"] == pytest.approx([boxes[0, 0], boxes[0, 1], w, h])
    assert anns[0]["area"] == pytest.approx(w * h)
    assert [a["num_keypoints"] for a in anns] == [17, 12, 0] and all(a["iscrowd"] == 0 for a in anns)
    kp1 = np.array(anns[1]["keypoints"]).reshape(17, 3)
    assert (kp1[:5] == 0).all() and (kp1[5:, 2] == 2).all() and np.allclose(kp1[5:, :2], gt[1, 5:])
    assert [r["image_id"] for r in results] == [1, 2]  # no detection for the unlabelled sample
    assert results[0]["score"] == pytest.approx((0.9 + 0.5 + 0.3) / 3) and results[1]["score"] == 0.0
    assert np.allclose(np.array(results[0]["keypoints"]).reshape(17, 3)[:, 2], scores[0])
    json.dumps(gt_dict, allow_nan=False), json.dumps(results, allow_nan=False)
    # the sample without labels is ignored by pycocotools: the other two are still perfect
    assert coco_keypoint_ap(gt, vis, boxes, np.nan_to_num(gt), scores)["AP"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------- PCK, pixels

def test_pck_on_a_hand_built_case():
    """Box 0: 100 x 200 (longer side 200: threshold 10 px); box 1: 400 x 100 (threshold 20 px)."""
    boxes = np.array([[0.0, 0.0, 100.0, 200.0], [50.0, 50.0, 450.0, 150.0]])
    gt = np.zeros((2, 17, 2))
    pred = gt.copy()
    vis = np.ones((2, 17))
    pred[0, 0] = [9.0, 0.0]     # 9 < 10: correct
    pred[1, 0] = [0.0, 21.0]    # 21 > 20: wrong      -> joint 0: 1/2
    pred[0, 1] = [6.0, 8.0]     # 10 = 10: not strictly below: wrong
    pred[1, 1] = [12.0, 16.0]   # 20 = 20: wrong      -> joint 1: 0/2
    pred[0, 2] = [15.0, 0.0]    # 15 > 10 in box 0 (its width 100 would allow it: longer side, not width)
    pred[1, 2] = [15.0, 0.0]    # 15 < 20: correct    -> joint 2: 1/2
    pred[0, 3] = [50.0, 50.0]   # wrong, but occluded
    vis[0, 3] = 0               #                     -> joint 3: 1/1 (sample 1 exact)
    vis[:, 4] = 0               #                     -> joint 4: never labelled (NaN)
    overall, per_joint = pck(pred, gt, vis, boxes)
    expected = np.r_[0.5, 0.0, 0.5, 1.0, np.nan, np.ones(12)]
    np.testing.assert_allclose(per_joint, expected)
    assert overall == pytest.approx(np.nanmean(expected))  # MMPose: mean of the per-joint values
    overall_10, per_joint_10 = pck(pred, gt, vis, boxes, threshold=0.1)  # 20 px and 40 px
    assert per_joint_10[0] == 1.0 and per_joint_10[1] == 1.0 and per_joint_10[2] == 1.0


def test_pixel_error_per_joint():
    gt = np.zeros((3, 17, 2))
    pred = gt.copy()
    vis = np.ones((3, 17))
    pred[:, 0] = [[3.0, 4.0], [6.0, 8.0], [0.0, 0.0]]    # 5, 10, 0 -> 5
    pred[:, 1] = [[1.0, 0.0], [100.0, 0.0], [0.0, 2.0]]  # 1, (occluded), 2 -> 1.5
    vis[1, 1] = 0
    gt[:, 2] = np.nan                                     # never labelled
    pred[:, 2] = 7.0
    mean, per_joint = pixel_error(pred, gt, vis)
    assert per_joint[0] == pytest.approx(5.0) and per_joint[1] == pytest.approx(1.5) and np.isnan(per_joint[2])
    assert (per_joint[3:] == 0).all()
    assert mean == pytest.approx((5 + 10 + 0 + 1 + 2) / (3 * 17 - 1 - 3))  # over all labelled pairs


def test_keypoint_metrics_is_one_json_dict():
    rng = np.random.default_rng(6)
    gt, vis, boxes = _person(rng, n=4)
    pred = gt + rng.normal(0.0, 3.0, gt.shape)
    vis[0, 5] = 0
    metrics = keypoint_metrics(pred, rng.uniform(0.3, 1.0, (4, 17)), gt, vis, boxes)
    text = json.dumps(metrics, allow_nan=False)
    assert set(AP_KEYS) <= set(metrics) and json.loads(text) == metrics
    assert metrics["APM"] is None and metrics["ARM"] is None  # pycocotools' -1: no medium-sized person
    assert list(metrics["per_joint_px"]) == list(H36M17.names) == list(metrics["per_joint_pck"])
    assert metrics["samples"] == 4 and metrics["labelled_joints"] == 4 * 17 - 1
    mean, per_joint = pixel_error(pred, gt, vis)
    assert metrics["mean_px"] == pytest.approx(mean)
    assert metrics["per_joint_px"]["left_knee"] == pytest.approx(per_joint[H36M17.index("left_knee")])
    assert metrics["pck@0.05"] == pytest.approx(pck(pred, gt, vis, boxes)[0])
    assert 0.0 < metrics["AP"] <= 1.0


def test_bad_input_is_refused():
    rng = np.random.default_rng(7)
    gt, vis, boxes = _person(rng, n=2)
    scores = np.ones((2, 17))
    with pytest.raises(ValueError, match="pred must have shape"):
        keypoint_metrics(gt[:, :16], scores, gt, vis, boxes)
    with pytest.raises(ValueError, match="visibility must have shape"):
        pck(gt, gt, vis[:1], boxes)
    with pytest.raises(ValueError, match="boxes must have shape"):
        coco_keypoint_ap(gt, vis, boxes[:, :3], gt, scores)
    with pytest.raises(ValueError, match="scores must have shape"):
        to_coco(gt, vis, boxes, gt, scores[:, :5])
    with pytest.raises(ValueError, match="box 1"):
        pck(gt, gt, vis, np.array([[0, 0, 10, 10], [5, 5, 5, 9]]))
    with pytest.raises(ValueError, match="non-finite"):
        pixel_error(np.full_like(gt, np.nan), gt, vis)
    with pytest.raises(ValueError, match="gt must have shape"):
        coco_keypoint_ap(gt, vis, boxes, gt, scores, sigmas=COCO_SIGMAS[:10])
    with pytest.raises(ValueError, match="joint names"):
        keypoint_metrics(gt, scores, gt, vis, boxes, joint_names=("a", "b"))


# ------------------------------------------------------------------------------------- the COCO fixture

def _fixture(mmpose_fixtures):
    from poselift.data.frames import coco_frames

    path = mmpose_fixtures / "coco" / "test_coco.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    frames = list(coco_frames(path))
    gt = np.stack([f.keypoints for f in frames])
    vis = np.stack([f.visibility for f in frames])
    xywh = np.stack([f.bbox for f in frames])
    return gt, vis, np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]])


@pytest.mark.shared
def test_coco_fixture_ground_truth_is_perfect_and_noise_lowers_ap(mmpose_fixtures):
    gt, vis, boxes = _fixture(mmpose_fixtures)
    n = len(gt)
    assert n >= 10
    scores = np.ones((n, 17))
    perfect = keypoint_metrics(gt, scores, gt, vis, boxes)
    assert perfect["AP"] == pytest.approx(1.0) and perfect["AR"] == pytest.approx(1.0)
    assert perfect["APM"] == pytest.approx(1.0) and perfect["APL"] == pytest.approx(1.0)  # both ranges present
    assert perfect["pck@0.05"] == 1.0 and perfect["mean_px"] == 0.0
    assert perfect["labelled_joints"] == int((vis > 0).sum())

    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    direction = np.random.default_rng(8).normal(size=gt.shape)
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    aps = []
    for fraction in (0.02, 0.05, 0.1):
        noisy = keypoint_metrics(gt + fraction * size[:, None, None] * direction, scores, gt, vis, boxes)
        aps.append(noisy["AP"])
        offsets = np.broadcast_to(fraction * size[:, None], vis.shape)
        assert noisy["mean_px"] == pytest.approx(float(offsets[vis > 0].mean()))
    assert aps[0] < 1.0 and aps[0] > aps[1] > aps[2]
    assert keypoint_metrics(gt + 0.04 * size[:, None, None] * direction, scores, gt, vis, boxes)["pck@0.05"] == 1.0


@pytest.mark.shared
def test_coco_fixture_in_coco17_with_coco_sigmas(mmpose_fixtures):
    from poselift.data.frames import coco_instances

    path = mmpose_fixtures / "coco" / "test_coco.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    instances = coco_instances(path)
    gt = np.stack([i.keypoints for i in instances])
    vis = np.stack([i.visibility for i in instances])
    xywh = np.stack([i.bbox for i in instances])
    boxes = np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]])
    pred = gt.copy()
    pred[vis == 0] = 0.0  # COCO stores unlabelled joints as (0, 0)
    metrics = keypoint_metrics(pred, np.ones(vis.shape), gt, vis, boxes, sigmas=COCO_SIGMAS,
                               joint_names=COCO17.joints)
    assert metrics["AP"] == pytest.approx(1.0) and list(metrics["per_joint_px"]) == list(COCO17.joints)
    pred[:, COCO17.joints.index("left_wrist")] += 15.0
    assert keypoint_metrics(pred, np.ones(vis.shape), gt, vis, boxes, sigmas=COCO_SIGMAS,
                            joint_names=COCO17.joints)["AP"] < 1.0
