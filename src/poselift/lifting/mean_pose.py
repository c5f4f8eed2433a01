"""Baselines that every results table carries.

- The training-mean pose: predicts the mean root-relative camera-frame pose of the training split for every
  frame, whatever the input. Any lifting model must beat it; its error measures the spread of the poses.
"""

from __future__ import annotations

import numpy as np

from poselift.data.windows import Views


def mean_pose(train: Views) -> np.ndarray:
    """(17, 3) mean of the valid training targets (root-relative, camera frame, mm)."""
    return train.targets_3d[train.valid].mean(axis=0)
