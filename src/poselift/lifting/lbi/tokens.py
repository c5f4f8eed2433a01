"""Stage 1's inputs (Method, "Stage 1: Broad Query"): image tokens T_I in R^{HW x d} and pose tokens T_P in
R^{N x d}.

Which feature map (the paper does not say; spec L1): the image encoder's stride-4 map, i.e. HRNet stage 4's
high-resolution branch before ``final_layer`` (what :class:`poselift.detection.hrnet.HRNet` returns as
"features"). It is the only HRNet map fine enough for the paper's retention rates: r = 0.01 of an 8x6 map
keeps half a token, of the 64x48 map (256x192 input, 3,072 tokens) 31. The CPU HRNet runs at 128x96, so its
map is 32x24 = 768 tokens of 16 channels. Each cell is projected to d channels by one linear map and gets a
learned position embedding of its (row, column) cell, added before any selection so that pruned tokens keep
their place (spec L2).

Pose tokens (spec L2, L10): the 2D keypoints carried into the crop by the crop's affine and normalised to
the crop frame (the task does that: x / W * 2 - 1 and y / W * 2 - H / W, so the aspect is kept), then one
linear map 2 -> d (the paper's "linear projection") and a learned per-joint embedding, without which the
keypoint tokens would not know which joint they are once MSA mixes them.
"""

from __future__ import annotations

import torch
from torch import nn


class ImageTokens(nn.Module):
    """(B, C, H, W) feature maps -> (B, H*W, d) tokens, row-major (token t = row t // W, column t % W)."""

    def __init__(self, channels: int, size, dim: int):
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.proj = nn.Linear(channels, dim)
        self.position = nn.Parameter(torch.zeros(1, self.size[0] * self.size[1], dim))
        nn.init.trunc_normal_(self.position, std=0.02)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 4 or tuple(features.shape[2:]) != self.size:
            raise ValueError(f"features must be (B, C, {self.size[0]}, {self.size[1]}), got {tuple(features.shape)}")
        return self.proj(features.flatten(2).transpose(1, 2).to(self.proj.weight.dtype)) + self.position


class PoseTokens(nn.Module):
    """(B, N, 2) crop-normalised keypoints -> (B, N, d) tokens: linear projection + per-joint embedding."""

    def __init__(self, num_joints: int, dim: int):
        super().__init__()
        self.num_joints = num_joints
        self.proj = nn.Linear(2, dim)
        self.joint = nn.Parameter(torch.zeros(1, num_joints, dim))
        nn.init.trunc_normal_(self.joint, std=0.02)

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        if keypoints.ndim != 3 or tuple(keypoints.shape[1:]) != (self.num_joints, 2):
            raise ValueError(f"keypoints must be (B, {self.num_joints}, 2), got {tuple(keypoints.shape)}")
        return self.proj(keypoints) + self.joint
