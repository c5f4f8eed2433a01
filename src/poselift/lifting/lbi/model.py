"""Lifting by Image's two stages ([L] Method, Fig. 5), as two plain modules.

:class:`LBIStage1` ("Stage 1: Broad Query"): image tokens and pose tokens (:mod:`.tokens`) through three
Transformer Layers, the middle one pose-guided (Eq. 2, :mod:`.pose_guided`), then a linear head to the
coarse pose J_3d1. :class:`LiftingByImage` ("Stage 2: Focused Exploration"): Stage 1 as its submodule
``stage1``, the Adaptive Feature Selection Module (:mod:`.pruning`) on Stage 1's last-layer attention, a new
block of ``refine_depth`` plain layers in which the keypoint tokens query only the kept image tokens, and a
new linear head to the refined pose J_3d2.

Progressive training (the paper's) is two stages of params.yaml: stage 1 trains ``lbi-stage1`` with the
coarse loss; stage 2 trains ``lbi`` with ``init: {stage1: 1}, freeze: [stage1]`` and the refined loss (a
frozen Stage 1 runs without autograd). End-to-end training (Table 4) is one ``lbi`` stage with no freeze and
the loss terms of the supervision compared (coarse, refined or both).

Switches (constructor arguments):

- ``layers``: the kinds of Stage 1's layers in order, "plain" or "pose_guided" (Table 6: which and where;
  default plain, pose_guided, plain).
- ``normalisation``: the pose-guided layer's normalisation order (Table 11: before | after | double | separate).
- ``retention``: r of the feature selection (Table 7).
- ``residual`` (Stage 2): a new head for J_3d2 (False, the paper's) or a correction of J_3d1 (True).
- ``encoder``: None (default) = the image tokens come from cached feature maps (``forward(keypoints,
  features=...)``: a frozen encoder, its maps written once by ``poselift detect --features``); a mapping =
  the HRNet (:class:`poselift.detection.hrnet.HRNet`, these constructor arguments) runs inside the model on
  ``forward(keypoints, images=...)`` (Tables 4 and 9: the encoder trained end-to-end; its pretraining is the
  checkpoint loaded into ``stage1.encoder`` through a stage's ``init``).

What the paper leaves open (spec 3.1, L1-L4), chosen here: the stride-4 map (``feature_size`` = input / 4,
``feature_channels`` = the HRNet width), d = ``dim``, ``heads`` heads, pre-LN layers, a LayerNorm before
each head; Stage 2's inputs are Stage 1's last keypoint tokens and its pose-guided-updated image tokens
(spec L4). Outputs: ``pose_3d`` (B, 1, 17, 3) metres (the model's final pose; root-relative camera frame),
``pose_3d_coarse``, ``attention`` (B, h, 17, HW: Stage 1's last layer, for the background-attention
diagnostic), ``kept`` (B, k) indices of the kept tokens (Stage 2).
"""

from __future__ import annotations

import torch
from torch import nn

from poselift.lifting.lbi.pose_guided import NORMALISATIONS, PoseGuidedLayer
from poselift.lifting.lbi.pruning import kept_count, select_tokens
from poselift.lifting.lbi.tokens import ImageTokens, PoseTokens
from poselift.lifting.lbi.transformer import TransformerLayer

LAYER_KINDS = ("plain", "pose_guided")


class PoseHead(nn.Sequential):
    """Keypoint tokens (B, N, d) -> 3D (B, N, 3): the paper's linear projection (after a LayerNorm)."""

    def __init__(self, dim: int):
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, 3))


class LBIStage1(nn.Module):
    """Stage 1: tokens -> ``layers`` -> coarse pose. ``forward(keypoints, features=None, images=None)``."""

    task = "image_lifting"
    output_frames = "centre"  # one pose per crop
    num_frames = 1

    def __init__(self, num_joints: int = 17, feature_channels: int = 32, feature_size=(64, 48), dim: int = 256,
                 heads: int = 8, mlp_ratio: float = 2.0, dropout: float = 0.1,
                 layers=("plain", "pose_guided", "plain"), normalisation: str = "before",
                 encoder: dict | None = None):
        super().__init__()
        layers = tuple(layers)
        if not layers or any(kind not in LAYER_KINDS for kind in layers):
            raise ValueError(f"layers must be a non-empty list of {LAYER_KINDS}, got {list(layers)}")
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
        self.num_joints, self.dim, self.heads = num_joints, dim, heads
        self.feature_size = (int(feature_size[0]), int(feature_size[1]))
        self.num_tokens = self.feature_size[0] * self.feature_size[1]
        self.layer_kinds = layers
        if encoder is not None:
            from poselift.detection.hrnet import HRNet

            self.encoder = HRNet(**encoder)
        else:
            self.encoder = None
        self.image_tokens = ImageTokens(feature_channels, self.feature_size, dim)
        self.pose_tokens = PoseTokens(num_joints, dim)
        self.layers = nn.ModuleList(
            PoseGuidedLayer(dim, heads, mlp_ratio, dropout, normalisation) if kind == "pose_guided"
            else TransformerLayer(dim, heads, mlp_ratio, dropout) for kind in layers)
        self.head = PoseHead(dim)

    def image_features(self, features=None, images=None) -> torch.Tensor:
        """The feature map: ``features`` (cached) or the encoder's on ``images`` (ImageNet-normalised)."""
        if self.encoder is not None:
            if images is None:
                raise ValueError("this model runs its image encoder: pass images (B, 3, H, W)")
            return self.encoder(images)["features"]
        if features is None:
            raise ValueError("this model reads cached feature maps: pass features (B, C, h, w)")
        return features

    def forward(self, keypoints: torch.Tensor, features: torch.Tensor | None = None,
                images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        t_i = self.image_tokens(self.image_features(features, images))
        t_j = self.pose_tokens(keypoints)
        attention = None
        for layer in self.layers:
            t_j, t_i, attention = layer(t_j, t_i)
        pose = self.head(t_j)[:, None]
        return {"pose_3d": pose, "pose_3d_coarse": pose, "attention": attention, "keypoint_tokens": t_j,
                "image_tokens": t_i}


class LiftingByImage(nn.Module):
    """Stage 1 (submodule ``stage1``), feature selection, Stage 2 (``refiner``, ``refine_head``).
    ``forward(keypoints, features=None, images=None)``; Stage 1's arguments plus ``refine_depth``
    (3, the paper's), ``retention`` (r, 0.3) and ``residual`` (False, the paper's: a new linear head outputs
    J_3d2; True: the head outputs a correction added to J_3d1, zero at initialisation, so a short Stage 2
    starts from Stage 1's pose instead of from nothing: our choice for the CPU budget)."""

    task = "image_lifting"
    output_frames = "centre"
    num_frames = 1

    def __init__(self, num_joints: int = 17, feature_channels: int = 32, feature_size=(64, 48), dim: int = 256,
                 heads: int = 8, mlp_ratio: float = 2.0, dropout: float = 0.1,
                 layers=("plain", "pose_guided", "plain"), normalisation: str = "before",
                 encoder: dict | None = None, refine_depth: int = 3, retention: float = 0.3,
                 residual: bool = False):
        super().__init__()
        self.stage1 = LBIStage1(num_joints, feature_channels, feature_size, dim, heads, mlp_ratio, dropout, layers,
                                normalisation, encoder)
        self.retention = float(retention)
        self.kept_tokens = kept_count(self.retention, self.stage1.num_tokens)  # checks r
        if refine_depth < 1:
            raise ValueError(f"refine_depth must be >= 1, got {refine_depth}")
        self.refiner = nn.ModuleList(TransformerLayer(dim, heads, mlp_ratio, dropout) for _ in range(refine_depth))
        self.refine_head = PoseHead(dim)
        self.residual = bool(residual)
        if self.residual:  # J_3d2 = J_3d1 + head(tokens), the correction starting at 0: Stage 2 starts at Stage 1
            nn.init.zeros_(self.refine_head[1].weight)
            nn.init.zeros_(self.refine_head[1].bias)

    def forward(self, keypoints: torch.Tensor, features: torch.Tensor | None = None,
                images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        frozen = not any(p.requires_grad for p in self.stage1.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            first = self.stage1(keypoints, features, images)
        kept, index, _ = select_tokens(first["attention"], first["image_tokens"], self.retention)
        t_j = first["keypoint_tokens"]
        for layer in self.refiner:
            t_j, kept, _ = layer(t_j, kept)
        pose = self.refine_head(t_j)[:, None]
        if self.residual:
            pose = pose + first["pose_3d"]
        return {"pose_3d": pose, "pose_3d_coarse": first["pose_3d"],
                "attention": first["attention"], "kept": index}
