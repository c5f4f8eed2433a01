"""ResNet-50/101 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) as a feature backbone.

The standard torchvision layout ("v1.5": a bottleneck downsamples with its 3x3 conv, not its first 1x1), so
that a torchvision ImageNet state dict (``resnet50-*.pth``) loads into it key for key
(:func:`load_imagenet_weights`). torchvision itself cannot be imported beside this project's torch, hence
this copy of the architecture. There is no classifier: :meth:`ResNet.forward` returns the four stage outputs
[C2, C3, C4, C5] at strides 4, 8, 16, 32, the pyramid CPN (:mod:`poselift.detection.cpn`) builds on.

    stem    conv1 7x7/2 (width) - bn1 - ReLU - maxpool 3x3/2                      stride 4
    layer1  n1 x Bottleneck(width)       -> C2, 4 * width channels               stride 4
    layer2  n2 x Bottleneck(2 * width)   -> C3, 8 * width channels (first /2)    stride 8
    layer3  n3 x Bottleneck(4 * width)   -> C4, 16 * width channels (first /2)   stride 16
    layer4  n4 x Bottleneck(8 * width)   -> C5, 32 * width channels (first /2)   stride 32

(n1..n4) = (3, 4, 6, 3) for ResNet-50 and (3, 4, 23, 3) for ResNet-101 (He et al. Table 1). ``width=64`` is
the standard network (C2..C5 = 256/512/1024/2048 channels; 23,508,032 parameters for ResNet-50, i.e.
25,557,032 with torchvision's 1000-class fc); a smaller width gives the same topology, narrow enough to train
on a CPU in tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

DEPTHS: dict[int, tuple[int, int, int, int]] = {  # He et al. Table 1: bottlenecks per stage
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


class Bottleneck(nn.Module):
    """1x1 (planes) - 3x3 (planes, stride) - 1x1 (4 * planes), each with BN, ReLU after the sum with the
    shortcut (He et al. Fig. 5 right). The shortcut is a 1x1 conv + BN (``downsample``) when the stride or
    the width changes (option B), else the identity. Parameter names are torchvision's."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNet(nn.Module):
    """ResNet backbone: ``forward(x (B, 3, H, W)) -> [C2, C3, C4, C5]``, C_k of shape
    (B, width * 2**(k+1), H / 2**k, W / 2**k) for H, W divisible by 32.

    ``depth`` (50, 101 or 152) picks the bottlenecks per stage; ``layers`` overrides it with any four counts
    (a tiny network for tests). ``width`` is the stem's and the first stage's width (64 standard).
    ``out_channels`` lists the channels of C2..C5.
    """

    def __init__(self, depth: int = 50, layers: Sequence[int] | None = None, width: int = 64):
        super().__init__()
        if layers is None:
            if depth not in DEPTHS:
                raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
            layers = DEPTHS[depth]
        layers = tuple(int(n) for n in layers)
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be four positive bottleneck counts, got {layers}")
        if width < 1:
            raise ValueError(f"width must be positive, got {width}")
        self.depth, self.layers, self.width = depth, layers, width

        # Stem (He et al. Table 1, conv1 and the max pool of conv2_x).
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        inplanes = width
        stages = []
        for i, n in enumerate(layers):
            planes = width * 2 ** i
            blocks = [Bottleneck(inplanes, planes, stride=1 if i == 0 else 2)]
            inplanes = planes * Bottleneck.expansion
            blocks += [Bottleneck(inplanes, planes) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = tuple(width * 2 ** i * Bottleneck.expansion for i in range(4))
        self.strides = (4, 8, 16, 32)

        # torchvision's initialisation (He et al. 2015 "delving deep" for convs, BN as identity).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]


def load_imagenet_weights(model: ResNet, weights: Mapping[str, torch.Tensor] | str | os.PathLike) -> ResNet:
    """Load a torchvision-format ImageNet state dict (a mapping, or the path of a ``resnet50-*.pth``) into
    ``model``, strictly: every backbone tensor must be present with its shape; the classifier ``fc.*`` is
    dropped. BN ``num_batches_tracked`` counters, which old torchvision files lack, keep the model's values.
    A checkpoint wrapped as ``{"state_dict": ...}`` or saved from ``nn.DataParallel`` (``module.`` prefix)
    is unwrapped. Raises ValueError naming the missing, unexpected or mis-shaped keys. Returns ``model``.
    """
    if isinstance(weights, (str, os.PathLike)):
        weights = torch.load(weights, map_location="cpu", weights_only=True)
    if "state_dict" in weights and isinstance(weights["state_dict"], Mapping):
        weights = weights["state_dict"]
    state = {k.removeprefix("module."): v for k, v in weights.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}

    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shapes differ (e.g. {'; '.join(shapes[:3])})")
    if problems:
        raise ValueError("not a torchvision ResNet state dict for this backbone "
                         f"(depth {model.depth}, width {model.width}): " + "; ".join(problems))
    for k in own:  # keep the model's counters where the file has none
        if k not in state:
            state[k] = own[k]
    model.load_state_dict(state, strict=True)
    return model
