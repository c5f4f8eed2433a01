"""2D metrics of the detectors: COCO keypoint AP/AR (OKS, through pycocotools), PCK of the box, pixel error.

Inputs, for N samples (person instances) of K joints, all in the same pixels (frame pixels for the
detectors' evaluation; any pixels work as long as keypoints and boxes share them):

- ``pred`` (N, K, 2): predicted keypoints, finite.
- ``scores`` (N, K): the predicted keypoints' confidences (heatmap maxima).
- ``gt`` (N, K, 2): ground truth; NaN marks an unlabelled joint.
- ``visibility`` (N, K): > 0 for a labelled joint (poselift's crops store 1: seen, 0: occluded or
  unlabelled; COCO's v in {0, 1, 2} works too). A joint counts in every metric only when its visibility
  is > 0 **and** its ground truth is finite; every other joint is left out of OKS, PCK and pixel error.
- ``boxes`` (N, 4): the person box x0, y0, x1, y1 (:mod:`poselift.data.crop_file`'s ``box``), width and
  height > 0.

K is 17: poselift's H36M-17 (:data:`poselift.skeleton.H36M17` order) with :data:`OKS_SIGMAS`, or COCO-17
(:data:`poselift.keypoint_formats.COCO17` order) with :data:`COCO_SIGMAS`; any K works with K sigmas.

**COCO AP/AR** (:func:`coco_keypoint_ap`) is pycocotools' ``COCOeval(iouType="keypoints")`` on the export of
:func:`to_coco`, with ``params.kpt_oks_sigmas`` set to the given sigmas. pycocotools computes
OKS = sum_i exp(-d_i^2 / (2 s^2 k_i^2)) [v_i > 0] / sum_i [v_i > 0] with k_i = 2 sigma_i and s^2 the ground
truth's ``area``. The export's conventions:

- One image per sample, one ground-truth annotation per image; ``area`` is the **box area** (w * h), since a
  COCO person's segmentation area does not exist for renders. The box area is larger than COCO's segment
  area (1.6-4.1x, median 2.6x, on the 12 people of MMPose's COCO test fixture), so OKS here is more lenient
  than official COCO numbers on the same errors, and the medium/large ranges (32^2-96^2, > 96^2 px^2 of
  area) are ranges of box area.
- One detection per sample (top-down with the ground-truth box: no NMS), its ``score`` HRNet's rescoring
  (HRNet ``lib/dataset/coco.py`` ``evaluate``; MMPose ``CocoMetric`` score_mode "bbox_keypoint"): the mean of
  the keypoint scores above :data:`KEYPOINT_SCORE_THRESHOLD` (0.2, HRNet's ``TEST.IN_VIS_THRE``; 0 if none is
  above it) times the box score, which is 1 for a ground-truth box. The score only ranks detections across
  samples for the precision/recall curve.
- A sample without any labelled joint gets ``num_keypoints`` 0 (pycocotools ignores such a ground truth)
  and no detection.

**PCK** (:func:`pck`) follows MMPose's ``PCKAccuracy(norm_item="bbox")`` / ``keypoint_pck_accuracy``: a joint
is correct when ||pred - gt|| / L < threshold (strictly), L = the box's **longer side** max(w, h) used for
both axes (MMPose 0.x ``TopDownBaseDataset``: ``np.max(bbox[2:])`` of the xywh box; MMPose 1.x writes the
same expression on its x0, y0, x1, y1 boxes, which takes max(x1, y1) instead, so the intended longer side is
used here). Per joint it is the fraction of that joint's labelled samples; the overall value is, as in
MMPose, the **mean of the per-joint values** over joints with at least one labelled sample (not the fraction
over all labelled joints, which weighs joints by how often they are labelled).

**Pixel error** (:func:`pixel_error`): Euclidean distance in pixels; the mean over all labelled
(sample, joint) pairs (MMPose's ``keypoint_epe``), and per joint over that joint's labelled samples.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Sequence

import numpy as np

from poselift.keypoint_formats import COCO17
from poselift.skeleton import H36M17

# COCO's published per-keypoint OKS sigmas (cocodataset.org/#keypoints-eval; pycocotools' Params.setKpParams),
# in COCO-17 order: nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles.
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0
COCO_SIGMAS.setflags(write=False)

_COCO_SIGMA = dict(zip(COCO17.joints, COCO_SIGMAS.tolist()))

# The four H36M-17 joints COCO lacks, from SpineTrack's sigmas (Khan, Krauss, Stricker, "Towards Unconstrained
# 2D Pose Estimation of the Human Spine", CVPRW 2025; github.com/dfki-av/spinepose,
# configs/_base_/datasets/spinetrack.py, an MMPose dataset config), which extend Halpe-FullBody's central-axis
# sigmas (HalpeCOCOAPI cocoeval.py, also in MMPose's configs/_base_/datasets/halpe26.py: head 0.026,
# neck 0.026, hip 0.066) with stated annotation-ambiguity adjustments:
#   pelvis  <- SpineTrack "hip" (sacrum midpoint) 0.07          (Halpe "hip": 0.066)
#   spine   <- SpineTrack "spine_03" (T12/L1) 0.10              (H36M's spine joint sits mid-back, between
#              the pelvis and the thorax; SpineTrack's lower-back landmarks all have 0.10)
#   thorax  <- SpineTrack "neck" (neck base / C7) 0.04           (Halpe "neck": 0.026; H36M's thorax is the
#              base of the neck between the shoulders)
#   head    <- SpineTrack and Halpe "head" (head top) 0.026      (H36M's head joint is the top of the head)
# MMPose's own Human3.6M config (configs/_base_/datasets/h36m.py) has ``sigmas=[]``: it publishes none.
# neck_nose is COCO's nose (poselift maps COCO's nose to it, poselift.keypoint_formats.COCO17).
_EXTRA_SIGMA = {"pelvis": 0.07, "spine": 0.10, "thorax": 0.04, "head": 0.026, "neck_nose": _COCO_SIGMA["nose"]}

OKS_SIGMAS = np.array([_EXTRA_SIGMA[n] if n in _EXTRA_SIGMA else _COCO_SIGMA[n] for n in H36M17.names])
OKS_SIGMAS.setflags(write=False)

KEYPOINT_SCORE_THRESHOLD = 0.2  # HRNet's TEST.IN_VIS_THRE / MMPose CocoMetric keypoint_score_thr
PCK_THRESHOLD = 0.05

AP_KEYS = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")  # COCOeval.stats order


# ------------------------------------------------------------------------------------------------ checks

def _points(name: str, value, n: int | None, k: int | None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 2 or (n is not None and arr.shape[0] != n) or \
            (k is not None and arr.shape[1] != k):
        want = f"({'N' if n is None else n}, {'K' if k is None else k}, 2)"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    return arr


def _per_joint(name: str, value, n: int, k: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n, k):
        raise ValueError(f"{name} must have shape ({n}, {k}), got {arr.shape}")
    return arr


def _boxes(value, n: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n, 4):
        raise ValueError(f"boxes must have shape ({n}, 4) (x0, y0, x1, y1), got {arr.shape}")
    w, h = arr[:, 2] - arr[:, 0], arr[:, 3] - arr[:, 1]
    bad = np.flatnonzero(~(np.isfinite(arr).all(1) & (w > 0) & (h > 0)))
    if bad.size:
        raise ValueError(f"box {bad[0]} ({arr[bad[0]].tolist()}) is not a finite x0, y0, x1, y1 box with x1 > x0 "
                         f"and y1 > y0 ({bad.size} such boxes)")
    return arr


def _inputs(pred, gt, visibility, k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pred, gt, labelled mask (N, K) bool), checked."""
    gt = _points("gt", gt, None, k)
    n, k = gt.shape[:2]
    pred = _points("pred", pred, n, k)
    if not np.isfinite(pred).all():
        raise ValueError("pred has non-finite coordinates (a detector must predict every joint)")
    vis = _per_joint("visibility", visibility, n, k)
    return pred, gt, (vis > 0) & np.isfinite(gt).all(-1)


def _sigmas(sigmas) -> np.ndarray:
    s = np.asarray(sigmas, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or not (np.isfinite(s) & (s > 0)).all():
        raise ValueError(f"sigmas must be a 1-D array of positive numbers, got {s!r}")
    return s


# ------------------------------------------------------------------------------------------- COCO OKS AP

def _rescore(scores: np.ndarray) -> float:
    """HRNet's instance score for a ground-truth box (box score 1): mean keypoint score over the joints
    scoring above KEYPOINT_SCORE_THRESHOLD, 0 when none does."""
    above = scores[scores > KEYPOINT_SCORE_THRESHOLD]
    return float(above.mean()) if above.size else 0.0


def to_coco(gt_keypoints, visibility, boxes, pred_keypoints, scores, sigmas=OKS_SIGMAS) -> tuple[dict, list]:
    """The samples as a COCO keypoint ground truth (a dataset dict for ``pycocotools.coco.COCO``) and the
    predictions as COCO keypoint results (a list for ``COCO.loadRes``).

    Ground truth: image ``i + 1`` per sample i; one "person" annotation per image with ``keypoints``
    [x, y, v] * K (v = 2 for a labelled joint, (0, 0, 0) otherwise, COCO's convention), ``num_keypoints``,
    ``bbox`` [x0, y0, w, h], ``area`` = w * h (the box area, see the module docstring), ``iscrowd`` 0.
    Results: one per sample with a labelled joint, ``keypoints`` [x, y, score] * K and ``score`` HRNet's
    rescoring (mean of the keypoint scores > 0.2, times the ground-truth box's score 1). K = len(sigmas).
    """
    k = _sigmas(sigmas).size
    pred, gt, labelled = _inputs(pred_keypoints, gt_keypoints, visibility, k)
    n = gt.shape[0]
    if n == 0:
        raise ValueError("no samples to evaluate (N = 0)")
    scores = _per_joint("scores", scores, n, k)
    boxes = _boxes(boxes, n)
    images, annotations, results = [], [], []
    for i in range(n):
        kp = np.zeros((k, 3))
        kp[labelled[i], :2] = gt[i, labelled[i]]
        kp[labelled[i], 2] = 2
        x0, y0, x1, y1 = boxes[i].tolist()
        images.append({"id": i + 1, "file_name": f"sample_{i}"})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "keypoints": kp.ravel().tolist(),
                            "num_keypoints": int(labelled[i].sum()), "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        if labelled[i].any():
            results.append({"image_id": i + 1, "category_id": 1,
                            "keypoints": np.column_stack([pred[i], scores[i]]).ravel().tolist(),
                            "score": _rescore(scores[i])})
    gt_dict = {"images": images, "annotations": annotations,
               "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}
    return gt_dict, results


def coco_keypoint_ap(gt_keypoints, visibility, boxes, pred_keypoints, scores, sigmas=OKS_SIGMAS) -> dict:
    """COCO keypoint AP/AR by pycocotools' ``COCOeval(iouType="keypoints")`` with ``kpt_oks_sigmas = sigmas``,
    on :func:`to_coco`'s export. Returns {"AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM",
    "ARL"} as floats in [0, 1], exactly pycocotools' ``stats`` (so -1.0 where an area range holds no ground
    truth, as its summary prints). pycocotools' prints are silenced."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    sigmas = _sigmas(sigmas)
    gt_dict, results = to_coco(gt_keypoints, visibility, boxes, pred_keypoints, scores, sigmas)
    if not results:  # no labelled joint anywhere: every ground truth is ignored, nothing to rank
        return {key: -1.0 for key in AP_KEYS}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))  # loadRes writes area, id and bbox into the dicts
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = sigmas
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {key: float(v) for key, v in zip(AP_KEYS, evaluator.stats)}


# ----------------------------------------------------------------------------------- PCK and pixel error

def pck(pred, gt, visibility, boxes, threshold: float = PCK_THRESHOLD) -> tuple[float, np.ndarray]:
    """PCK of the box (MMPose's ``PCKAccuracy(norm_item="bbox")``): a labelled joint is correct when its
    error is strictly below ``threshold`` x the box's longer side max(x1 - x0, y1 - y0).

    Returns (overall, per_joint (K,)): per_joint[j] = fraction of joint j's labelled samples that are correct
    (NaN when joint j is never labelled); overall = mean of the per-joint values over the joints labelled at
    least once, as MMPose averages (NaN when nothing is labelled)."""
    pred, gt, labelled = _inputs(pred, gt, visibility)
    boxes = _boxes(boxes, gt.shape[0])
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    with np.errstate(invalid="ignore"):
        correct = np.linalg.norm(pred - gt, axis=-1) / size[:, None] < threshold
    count = labelled.sum(0)
    per_joint = np.full(gt.shape[1], np.nan)
    np.divide((correct & labelled).sum(0), count, out=per_joint, where=count > 0)
    overall = float(per_joint[count > 0].mean()) if count.any() else math.nan
    return overall, per_joint


def pixel_error(pred, gt, visibility) -> tuple[float, np.ndarray]:
    """Euclidean keypoint error in pixels over labelled joints. Returns (mean over all labelled
    (sample, joint) pairs, per_joint (K,) mean over each joint's labelled samples, NaN for a joint never
    labelled); the mean is NaN when nothing is labelled."""
    pred, gt, labelled = _inputs(pred, gt, visibility)
    dist = np.where(labelled, np.linalg.norm(np.where(labelled[..., None], pred - gt, 0.0), axis=-1), 0.0)
    count = labelled.sum(0)
    per_joint = np.full(gt.shape[1], np.nan)
    np.divide(dist.sum(0), count, out=per_joint, where=count > 0)
    mean = float(dist.sum() / count.sum()) if count.any() else math.nan
    return mean, per_joint


# ------------------------------------------------------------------------------------------------- all

def _json_number(value: float) -> float | None:
    """A float for a JSON file: None for NaN (nothing to measure)."""
    value = float(value)
    return value if math.isfinite(value) else None


def keypoint_metrics(pred, scores, gt, visibility, boxes, sigmas=OKS_SIGMAS,
                     joint_names: Sequence[str] | None = None) -> dict:
    """All 2D metrics of one evaluation as one JSON-able dict: the COCO keys of :func:`coco_keypoint_ap`,
    "pck@0.05" (:func:`pck`), "mean_px" (:func:`pixel_error`), "per_joint_px" and "per_joint_pck"
    ({joint name: value}), "samples" (N) and "labelled_joints" (labelled (sample, joint) pairs).

    ``pred`` (N, K, 2), ``scores`` (N, K), ``gt`` (N, K, 2) with NaN for unlabelled joints, ``visibility``
    (N, K), ``boxes`` (N, 4) x0, y0, x1, y1, all in the same pixels. ``joint_names`` default to H36M-17's
    (pass ``COCO17.joints`` with :data:`COCO_SIGMAS`). A value with nothing to measure is None: an AP/AR
    whose area range holds no ground truth (pycocotools' -1), a joint never labelled.
    """
    sigmas = _sigmas(sigmas)
    pred, gt_arr, labelled = _inputs(pred, gt, visibility, sigmas.size)
    names = tuple(H36M17.names if joint_names is None else joint_names)
    if len(names) != sigmas.size:
        raise ValueError(f"{len(names)} joint names for {sigmas.size} joints")
    ap = coco_keypoint_ap(gt_arr, visibility, boxes, pred, scores, sigmas)
    pck_all, pck_joint = pck(pred, gt_arr, visibility, boxes, PCK_THRESHOLD)
    px_mean, px_joint = pixel_error(pred, gt_arr, visibility)
    out: dict = {key: (None if value == -1.0 else value) for key, value in ap.items()}
    out.update({
        "pck@0.05": _json_number(pck_all),
        "mean_px": _json_number(px_mean),
        "per_joint_px": {name: _json_number(v) for name, v in zip(names, px_joint)},
        "per_joint_pck": {name: _json_number(v) for name, v in zip(names, pck_joint)},
        "samples": int(gt_arr.shape[0]),
        "labelled_joints": int(labelled.sum()),
    })
    return out
