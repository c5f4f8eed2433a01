""":class:`LinearBaseline` -- Martinez et al. 2017, "A simple yet effective baseline for 3d human pose
estimation" (una-dinosauria/3d-pose-baseline, ``linear_model.py``). One frame's flattened 2D pose goes
through Linear(J*2, 1024) -> BatchNorm -> ReLU -> Dropout(0.5), then two residual blocks of
[Linear(1024, 1024) -> BatchNorm -> ReLU -> Dropout] x 2 whose output is added to the block's input, then
Linear(1024, (J - 1) * 3). As in the original, only the J - 1 non-root joints are regressed; the root row
(joint 0, the pelvis) is a constant zero concatenated in front, so the output is exactly root-relative.
Details kept from the original code:

- Max-norm: every weight matrix is clipped in the forward pass to Frobenius norm <= 1 (``tf.clip_by_norm``
  over the whole matrix, gradients flow through the clip). Biases are not clipped.
- BatchNorm as TensorFlow's defaults: eps 1e-3, running-average momentum 0.99 (PyTorch ``momentum=0.01``).
- Weights and biases start as N(0, 2 / fan) truncated at 2 standard deviations (their "kaiming"), with fan
  the first dimension of the TF variable: the input size for weights, the output size for biases.

What differs: the input is all 17 screen-normalised joints (the original drops Neck/Nose to match 16-joint
Stacked Hourglass detections) and the output is in metres; the original z-scores both 2D inputs and 3D
targets with training-set statistics, which poselift does not do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from poselift.lifting.layers import check_inputs


class MaxNormLinear(nn.Linear):
    """``nn.Linear`` whose weight is used as W * min(1, max_norm / ||W||_F) (None: no clipping)."""

    def __init__(self, in_features: int, out_features: int, max_norm: float | None):
        super().__init__(in_features, out_features)
        self.max_norm = max_norm
        _tf_kaiming_(self.weight, in_features)
        _tf_kaiming_(self.bias, out_features)

    def effective_weight(self) -> torch.Tensor:
        if self.max_norm is None:
            return self.weight
        return self.weight * (self.max_norm / self.weight.norm().clamp_min(self.max_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


def _tf_kaiming_(tensor: torch.Tensor, fan: int) -> None:
    std = math.sqrt(2.0 / fan)
    nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


def _batch_norm(features: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(features, eps=1e-3, momentum=0.01)  # TF defaults (decay 0.99)


class ResidualBlock(nn.Module):
    """x + Dropout(ReLU(BN(Linear(Dropout(ReLU(BN(Linear(x)))))))) -- Martinez's "two_linear" block."""

    def __init__(self, size: int, dropout: float, max_norm: float | None):
        super().__init__()
        self.linear1, self.bn1 = MaxNormLinear(size, size, max_norm), _batch_norm(size)
        self.linear2, self.bn2 = MaxNormLinear(size, size, max_norm), _batch_norm(size)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(F.relu(self.bn1(self.linear1(x))))
        return x + self.drop(F.relu(self.bn2(self.linear2(y))))


class LinearBaseline(nn.Module):
    """Martinez et al.'s fully connected residual lifter: one frame (J, 2) -> (J, 3), root fixed at 0.

    Single-frame: inputs (B, T, J, 2) are lifted frame by frame to (B, T, J, 3); training uses T = 1.
    ``max_norm`` True clips every weight matrix to Frobenius norm 1 in the forward pass (the original's
    ``--max_norm``, which the paper's experiments use).
    """

    output_frames = "centre"

    def __init__(self, num_joints: int = 17, linear_size: int = 1024, num_blocks: int = 2,
                 dropout: float = 0.5, max_norm: bool = True):
        super().__init__()
        self.num_joints = num_joints
        clip = 1.0 if max_norm else None
        self.input = MaxNormLinear(num_joints * 2, linear_size, clip)
        self.input_bn = _batch_norm(linear_size)
        self.blocks = nn.ModuleList(ResidualBlock(linear_size, dropout, clip) for _ in range(num_blocks))
        self.output = MaxNormLinear(linear_size, (num_joints - 1) * 3, clip)  # every joint but the root
        self.drop = nn.Dropout(dropout)

    def receptive_field(self) -> int:
        return 1

    def forward(self, inputs_2d: torch.Tensor) -> dict[str, torch.Tensor]:
        check_inputs(inputs_2d, self.num_joints)
        b, t = inputs_2d.shape[:2]
        y = self.drop(F.relu(self.input_bn(self.input(inputs_2d.flatten(2).flatten(0, 1)))))
        for block in self.blocks:
            y = block(y)
        others = self.output(y).view(b, t, self.num_joints - 1, 3)
        root = others.new_zeros(b, t, 1, 3)  # joint 0 (the pelvis) is every poselift skeleton's root
        return {"pose_3d": torch.cat([root, others], dim=2)}
