"""Training losses, shared by every model. Poses are (..., J, 3) tensors in metres.

Each loss takes the model's output dict and the batch's targets; the training loop combines the terms and
weights listed for a stage in params.yaml.
"""

from __future__ import annotations

import torch


def mpjpe(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error: mean over joints (and batch/frames) of ||pred_i - target_i||_2."""
    return torch.linalg.vector_norm(pred - target, dim=-1).mean()
