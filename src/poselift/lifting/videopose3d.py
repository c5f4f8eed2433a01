""":class:`TemporalConvNet` -- VideoPose3D's temporal convolutional model (Pavllo et al. 2019,
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
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from poselift.errors import InputError
from poselift.lifting.layers import check_inputs


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

    def forward(self, inputs_2d: torch.Tensor) -> dict[str, torch.Tensor]:
        check_inputs(inputs_2d, self.num_joints)
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
