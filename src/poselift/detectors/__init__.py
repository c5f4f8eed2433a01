"""2D detectors that need no images: projected ground truth and a simulated detector.

Both turn a prepared sequence's ``positions_2d`` (C, F, 17, 2) into detections ``keypoints`` (C, F, 17, 2)
and ``scores`` (C, F, 17) in the :mod:`poselift.data.detections` layout, the same layout image
detectors write, so lifting never knows which detector made its input.

- ``gt``: the dataset's own 2D, score 1.
- ``synthetic``: the detector error model of :mod:`poselift.detectors.synthetic`.

Joints whose ground truth is missing (non-finite, e.g. on MPI-INF-3DHP frames marked invalid) are
written as keypoint (0, 0) with score 0: "not detected".
"""

from __future__ import annotations

import numpy as np

DETECTORS = {
    "gt": "the prepared dataset's own 2D (projected ground truth), score 1",
    "synthetic": "ground truth plus a CPN-like error model (params.yaml detectors.synthetic)",
}


def ground_truth(positions_2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``gt`` detector: keypoints = positions_2d, scores = 1 (0 where the ground truth is missing)."""
    keypoints = np.asarray(positions_2d, dtype=np.float32)
    return mark_missing(keypoints.copy(), np.ones(keypoints.shape[:-1], dtype=np.float32), keypoints)


def mark_missing(keypoints: np.ndarray, scores: np.ndarray, positions_2d: np.ndarray):
    """Set keypoints to 0 and scores to 0 wherever the ground truth (or the keypoint) is non-finite."""
    missing = ~np.isfinite(positions_2d).all(-1) | ~np.isfinite(keypoints).all(-1)
    keypoints[missing] = 0.0
    scores[missing] = 0.0
    return keypoints, scores
