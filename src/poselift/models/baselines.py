"""Baseline lifters that every results table carries.

:class:`LinearBaseline` -- Martinez et al. 2017, "A simple yet effective baseline for 3d human pose
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

:class:`TemporalConvNet` -- VideoPose3D's temporal convolutional model (Pavllo et al. 2019,
facebookresearch/VideoPose3D ``common/model.py``, ``TemporalModel``). Frames are flattened to J*2 channels;
an expand conv of width W0 (no bias) -> BN -> ReLU -> Dropout, then per further width W_i a residual block:
a conv of width W_i dilated by W_0 * ... * W_{i-1} (no bias) -> BN -> ReLU -> Dropout -> 1x1 conv -> BN ->
ReLU -> Dropout, plus the block input cropped to the block output's frames; a 1x1 ``shrink`` conv (with
bias) gives J*3 channels. Valid convolutions: T input frames give T - receptive_field + 1 output frames,
output k looking at inputs k .. k + receptive_field - 1 (its centre is input k + receptive_field // 2).
poselift trains and evaluates it seq2frame ("centre"): T = receptive_field, one output frame. For that
case the forward pass uses VideoPose3D's ``TemporalModelOptimized1f`` trick (strided instead of dilated
convolutions, same weights), which skips the intermediate frames nothing reads: in eval mode the result is
the same, in training mode BatchNorm sees only the frames that are used, as in VideoPose3D's training.
Parameter names are VideoPose3D's, so official checkpoints load after :meth:`convert_official_state_dict`.
Symmetric convolutions only (no ``causal`` or ``dense`` variants). Like the original, all J joints are
regressed, the root too (targets are root-relative, so it learns to be ~0).

:class:`MeanPose` -- the training-mean pose (:func:`poselift.baselines.mean_pose`) as a module: a buffer,
no parameters, the same output for every input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from poselift.baselines import mean_pose
from poselift.errors import InputError


def _check_inputs(x: torch.Tensor, num_joints: int) -> None:
    if x.ndim != 4 or x.shape[-2:] != (num_joints, 2):
        raise ValueError(f"inputs_2d must be (B, T, {num_joints}, 2), got {tuple(x.shape)}")


# --- Martinez et al. 2017 ------------------------------------------------------------------------


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
        _check_inputs(inputs_2d, self.num_joints)
        b, t = inputs_2d.shape[:2]
        y = self.drop(F.relu(self.input_bn(self.input(inputs_2d.flatten(2).flatten(0, 1)))))
        for block in self.blocks:
            y = block(y)
        others = self.output(y).view(b, t, self.num_joints - 1, 3)
        root = others.new_zeros(b, t, 1, 3)  # joint 0 (the pelvis) is every poselift skeleton's root
        return {"pose_3d": torch.cat([root, others], dim=2)}


# --- VideoPose3D (Pavllo et al. 2019) ------------------------------------------------------------


class TemporalConvNet(nn.Module):
    """VideoPose3D's dilated temporal convolutions: (B, T, J, 2) -> (B, T - receptive_field + 1, J, 3).

    The H36M CPN model: ``filter_widths=[3, 3, 3, 3, 3]`` (243 frames), ``channels=1024``, 16.95M parameters.
    """

    output_frames = "centre"

    def __init__(self, num_joints: int = 17, filter_widths: list[int] = (3, 3, 3, 3, 3), channels: int = 1024,
                 dropout: float = 0.25):
        super().__init__()
        self.filter_widths = [int(w) for w in filter_widths]
        if not self.filter_widths or any(w < 1 or w % 2 == 0 for w in self.filter_widths):
            raise ValueError(f"filter widths must be odd and positive, got {list(filter_widths)}")
        self.num_joints = num_joints
        self.expand_conv = nn.Conv1d(num_joints * 2, channels, self.filter_widths[0], bias=False)
        self.expand_bn = nn.BatchNorm1d(channels, momentum=0.1)
        self.layers_conv, self.layers_bn = nn.ModuleList(), nn.ModuleList()
        dilation = self.filter_widths[0]
        for w in self.filter_widths[1:]:
            self.layers_conv.append(nn.Conv1d(channels, channels, w, dilation=dilation, bias=False))
            self.layers_conv.append(nn.Conv1d(channels, channels, 1, bias=False))
            self.layers_bn.extend([nn.BatchNorm1d(channels, momentum=0.1), nn.BatchNorm1d(channels, momentum=0.1)])
            dilation *= w
        self.shrink = nn.Conv1d(channels, num_joints * 3, 1)
        self.drop = nn.Dropout(dropout)

    def receptive_field(self) -> int:
        """Input frames per output frame: the product of the filter widths."""
        return math.prod(self.filter_widths)

    def set_bn_momentum(self, momentum: float) -> None:
        """VideoPose3D decays every BatchNorm's momentum during training (0.1 -> 0.001)."""
        for bn in [self.expand_bn, *self.layers_bn]:
            bn.momentum = momentum

    def forward(self, inputs_2d: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_inputs(inputs_2d, self.num_joints)
        frames, field = inputs_2d.shape[1], self.receptive_field()
        if frames < field:
            raise ValueError(f"inputs_2d has {frames} frames, fewer than the receptive field {field}")
        y = self.run(inputs_2d.flatten(2).transpose(1, 2), strided=frames == field)
        return {"pose_3d": y.transpose(1, 2).unflatten(-1, (self.num_joints, 3))}

    def run(self, x: torch.Tensor, strided: bool) -> torch.Tensor:
        """(B, J*2, T) -> (B, J*3, T - receptive_field + 1); ``strided`` (T = receptive field only)
        replaces each dilation d by a stride of the filter width, keeping only the frames the output reads."""
        def conv(layer: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
            return F.conv1d(x, layer.weight, layer.bias, stride=layer.kernel_size[0]) if strided else layer(x)

        x = self.drop(F.relu(self.expand_bn(conv(self.expand_conv, x))))
        for i, w in enumerate(self.filter_widths[1:]):
            dilated, pointwise = self.layers_conv[2 * i], self.layers_conv[2 * i + 1]
            crop = (w - 1) * dilated.dilation[0] // 2  # frames the dilated conv drops at each end
            residual = x[:, :, w // 2::w] if strided else x[:, :, crop:x.shape[2] - crop]
            x = self.drop(F.relu(self.layers_bn[2 * i](conv(dilated, x))))
            x = residual + self.drop(F.relu(self.layers_bn[2 * i + 1](pointwise(x))))
        return self.shrink(x)

    @staticmethod
    def convert_official_state_dict(state_dict: dict, dropout: float = 0.25, path: str = "state_dict",
                                     **hints) -> tuple[dict, dict[str, torch.Tensor]]:
        """VideoPose3D's ``TemporalModel`` / ``TemporalModelOptimized1f`` state dict -> (constructor args, ours).

        Accepts the checkpoint itself too (its ``model_pos``), ``module.`` prefixes (DataParallel) and state
        dicts without BatchNorm ``num_batches_tracked`` (older PyTorch; filled with 0). The names are the same
        as ours; filter widths, channels and joints come from the conv weights' shapes: expand_conv (C, J*2,
        W0), layers_conv.{2i} (C, C, W_{i+1}), layers_conv.{2i+1} (C, C, 1), shrink (J*3, C, 1). Dropout is
        not stored in a checkpoint (default 0.25, VideoPose3D's). A ``causal`` or ``dense`` checkpoint has
        the same names but other semantics (dense: other widths); neither is supported.
        """
        if isinstance(state_dict.get("model_pos"), dict):
            state_dict = state_dict["model_pos"]
        sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
        bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise InputError(path, f"not a state dict of tensors: {', '.join(bad[:5])}")
        try:
            channels, in_channels, first = sd["expand_conv.weight"].shape
            out_channels = sd["shrink.weight"].shape[0]
            blocks = sum(1 for k in sd if k.startswith("layers_conv.") and k.endswith(".weight")) // 2
            widths = [first] + [sd[f"layers_conv.{2 * i}.weight"].shape[2] for i in range(blocks)]
        except (KeyError, ValueError, IndexError, AttributeError, TypeError) as e:
            raise InputError(path, f"not a VideoPose3D TemporalModel state dict ({type(e).__name__}: {e})") from e
        if in_channels % 2 or out_channels % 3 or in_channels // 2 != out_channels // 3:
            raise InputError(path, f"expand_conv takes {in_channels} channels and shrink gives {out_channels}: "
                                   "not J*2 and J*3 for one joint count J")
        args = {"num_joints": in_channels // 2, "filter_widths": [int(w) for w in widths],
                "channels": int(channels), "dropout": float(dropout)}
        with torch.device("meta"):
            expected = TemporalConvNet(**args).state_dict()
        for k, v in expected.items():
            if k.endswith("num_batches_tracked") and k not in sd:
                sd[k] = torch.zeros((), dtype=torch.long)
        problems = sorted(set(sd) ^ set(expected)) + [
            f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
            if k in sd and sd[k].shape != v.shape]
        if problems:
            raise InputError(path, f"does not match VideoPose3D's TemporalModel{args}: {', '.join(problems[:5])}")
        return args, sd


# --- the training-mean pose ----------------------------------------------------------------------


class MeanPose(nn.Module):
    """Predicts the stored mean pose (J, 3) in metres for every frame, whatever the input. No parameters.

    :meth:`fit` sets it from a training :class:`~poselift.data.windows.Views` with
    :func:`poselift.baselines.mean_pose` (mm -> m); it is a buffer, so it is saved in the state dict.
    """

    output_frames = "centre"

    def __init__(self, num_joints: int = 17):
        super().__init__()
        self.num_joints = num_joints
        self.register_buffer("mean", torch.zeros(num_joints, 3))

    def receptive_field(self) -> int:
        return 1

    @torch.no_grad()
    def fit(self, train) -> MeanPose:
        """Store the mean valid root-relative camera-frame target of ``train`` (a Views, mm) in metres."""
        value = torch.as_tensor(mean_pose(train), dtype=torch.float64) / 1000.0
        if value.shape != self.mean.shape:
            raise ValueError(f"mean pose has shape {tuple(value.shape)}, expected {tuple(self.mean.shape)}")
        self.mean.copy_(value)
        return self

    def forward(self, inputs_2d: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_inputs(inputs_2d, self.num_joints)
        b, t = inputs_2d.shape[:2]
        return {"pose_3d": self.mean.to(inputs_2d.dtype).expand(b, t, -1, -1)}
