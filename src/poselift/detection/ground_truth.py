"""The ``gt`` detector: a prepared sequence's own 2D (projected ground truth), score 1.

Joints whose ground truth is missing (non-finite, e.g. on MPI-INF-3DHP frames marked invalid) are
written as keypoint (0, 0) with score 0: "not detected".
"""

from __future__ import annotations

import numpy as np



class GroundTruth:
    """the prepared dataset's own 2D (projected ground truth), score 1"""

    def __init__(self, params_path=None, seed: int = 0):
        self.settings: dict = {}

    def __call__(self, sequence) -> tuple[np.ndarray, np.ndarray]:
        return ground_truth(sequence.positions_2d)


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
