"""HRNet (Sun et al., "Deep High-Resolution Representation Learning for Human Pose Estimation", CVPR 2019)
with the channel attention module (CAM) of the attention paper [A] (attention-HRNet + STA, §II.A, Eqs. 1-3),
and the import of the official COCO releases (leoxiaobin/deep-high-resolution-net.pytorch).

Architecture (the official pose network; [A]'s prose about it is wrong, see the image-side spec §4-A1)::

    stem     conv3x3/2 (stem_width) BN ReLU - conv3x3/2 (stem_width) BN ReLU                    1/4
    stage 1  stage1_blocks x Bottleneck(stem_width)  -> 4 * stem_width channels                   1/4
    stage 2  stage_modules[0] HR modules, 2 branches  [C, 2C]                             1/4, 1/8
    stage 3  stage_modules[1] HR modules, 3 branches  [C, 2C, 4C]                         ... 1/16
    stage 4  stage_modules[2] HR modules, 4 branches  [C, 2C, 4C, 8C]; the last module   ... 1/32
             outputs the 1/4 branch only ("features")
    final_layer  conv1x1 C -> num_joints (with bias)  -> "heatmaps"

- A transition into stage s keeps the existing branches (stage 2's first branch: conv3x3 4*stem_width -> C
  + BN + ReLU) and opens the new, lowest-resolution one with a conv3x3/2 + BN + ReLU from the previous
  lowest branch.
- An HR module runs ``blocks`` BasicBlocks on every branch, then fuses: output i = ReLU(sum_j T_ij(x_j)),
  T_ii = identity; j lower-resolution than i: conv1x1 + BN, then nearest upsampling to x_i's size; j
  higher-resolution: i - j chained conv3x3/2 + BN, ReLU after all but the last.
- Init: every conv ~ N(0, 0.001) (biases 0), BatchNorm gamma = 1, beta = 0.
- ``width`` = C: 32 and 48 are HRNet-W32 (28.5M parameters) and W48 (63.6M); ``stage_modules=(1, 4, 3)``,
  ``blocks=4``, ``stage1_blocks=4``, ``stem_width=64`` are the official network. Narrower / shallower values
  give the same topology for CPU training (e.g. ``HRNet(width=16, stage_modules=(1, 1, 1), blocks=2,
  stage1_blocks=1, stem_width=32)``, benchmarks/detectors.py's "hrnet-cpu").

Conventions: ``forward(images)`` takes (B, 3, H, W) float RGB, already normalised with the ImageNet mean
and std, and returns ``{"heatmaps": (B, J, H/4, W/4), "features": (B, C, H/4, W/4)}``; features are the
stage-4 high-resolution branch before ``final_layer``. H and W divisible by 32 reproduce the official
network exactly (other sizes run too: upsampling goes to the target branch's size). Joint order is
``keypoint_format``: "h36m" (:data:`poselift.skeleton.H36M17`, poselift's own) or "coco" (COCO-17, the
official releases'). ``task = "heatmaps"`` is the training task; ``heatmap_sigmas`` names the target maps
that task builds and their Gaussian sigma in heatmap pixels (2, the official code's; [A] Eq. 4 says 1,
spec A5).

Channel attention (CAM, [A] Fig. 3) sits inside a BasicBlock with input X and residual branch
F(X) = BN(conv3x3(ReLU(BN(conv3x3(X))))):

    X' = sigmoid(BN(conv1x1(ReLU(BN(conv1x1(ReLU(BN(conv1x1(GAP(X)))))))))   Eq. 1, C -> C/s -> C/s -> C
    Y  = X (x) X'                                   Eq. 2, channel-wise
    Z  = ReLU(F(X) + X + Y)                         Eq. 3, attention_mode="residual" (default)
    Z  = ReLU(F(X) (x) X'(F(X)) + X)                attention_mode="se": squeeze-excitation style

The 1x1 convs are ordinary (a depth-wise conv cannot change C), the last one has no ReLU so that the gate
spans (0, 1) (spec A3); Eq. 3 has no final ReLU, the official BasicBlock has one, kept here (spec A4).
The gate's BatchNorms act on (B, C, 1, 1) maps, normalising over the batch; a training batch of a single
image uses their running statistics instead (:class:`GateBatchNorm`).

``attention`` (where CAMs go; each one turns a BasicBlock into the block above). [A] is ambiguous
(§II.A.2: "last two blocks of the final sub-network ... only six attention modules"; §III.E.2 / Table VII:
placements "by sub-network" and "by stage", "16 attention modules" in all stages, "only 6" in the final
model). Our reading, in HRNet's stages 2-4 and with "the last two blocks" = the last two BasicBlocks of a
branch in one HR module:

- ``None``: plain HRNet.
- ``"default"`` = ``"sub-network:1"`` (spec A2): six CAMs at W32's 8C = 256 channels, +0.23M.
- ``"sub-network:K[+K...]"``: sub-networks are stage 4's branches, counted from the lowest resolution:
  1 = the 8C branch, 2 = 4C, 3 = 2C. CAMs on the last two blocks of every named branch in each of stage 4's
  modules. Table VII's rows "1", "2+1", "3+2+1" are 6, 12, 18 CAMs.
- ``"stage:K[+K...]"``: stages counted from the last: 1 = stage 4, 2 = stage 3, 3 = stage 2. CAMs on the
  last two blocks of the stage's lowest-resolution (newest) branch in each of its modules. Table VII's
  rows "1", "2+1", "3+2+1" are 6, 6 + 8, 6 + 8 + 2 = 16 CAMs (the paper's "16 attention modules").

So "sub-network:1" and "stage:1" are the same six CAMs, as the paper's "the first sub-network and stage
(only 6 were added)" says, although its Table VII lists 28.7M and 28.9M for them. With fewer modules or
blocks (CPU configurations) the same rules apply to what exists (one block: that block).

[A]'s parameter counts (Table I: W32 29.3M, W48 65.9M; Table VII: 28.7 / 28.9 / 29.3M) fit none of these
readings, nor each other (spec A2); :func:`attention_parameters` gives ours and ``benchmarks/detectors.py``
prints them beside [A]'s (:data:`PAPER_PARAMETERS`).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from poselift.errors import InputError

BRANCH_STAGES = (2, 3, 4)  # HRNet's multi-branch stages; stage s has s branches
ATTENTION_MODES = ("residual", "se")
KEYPOINT_FORMATS = ("h36m", "coco")

# [A]'s reported parameter counts in millions, by (width, attention placement in our reading's names);
# Table I for the plain networks and "Ours", Table VII for the placements (W32 only).
PAPER_PARAMETERS: dict[tuple[int, str | None], float] = {
    (32, None): 28.5, (48, None): 63.6,  # Table I, HRNet-W32 / W48
    (32, "sub-network:1"): 28.7, (32, "sub-network:2+1"): 28.9, (32, "sub-network:3+2+1"): 29.3,  # VII
    (32, "stage:1"): 28.9, (32, "stage:2+1"): 29.1, (32, "stage:3+2+1"): 29.3,  # Table VII, by stage
}
PAPER_OURS = {32: 29.3, 48: 65.9}  # Table I "Ours" (the text: six CAMs; no placement fits these counts)


# --- building blocks ----------------------------------------------------------------------------------------

class ConvBN(nn.Sequential):
    """conv (no bias, 'same' padding) + BatchNorm (``norm``), then ReLU when ``relu``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True,
                 norm: type[nn.BatchNorm2d] = nn.BatchNorm2d):
        layers = OrderedDict(conv=nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), bn=norm(cout))
        if relu:
            layers["relu"] = nn.ReLU(inplace=True)
        super().__init__(layers)


class Bottleneck(nn.Module):
    """Stage 1's block: 1x1 (planes) - 3x3 (planes) - 1x1 (4 * planes), each + BN, ReLU between; the sum
    with the shortcut (1x1 conv + BN when the width changes, else identity) goes through a ReLU."""

    def __init__(self, cin: int, planes: int):
        super().__init__()
        self.conv1 = ConvBN(cin, planes, 1)
        self.conv2 = ConvBN(planes, planes, 3)
        self.conv3 = ConvBN(planes, 4 * planes, 1, relu=False)
        self.shortcut = ConvBN(cin, 4 * planes, 1, relu=False) if cin != 4 * planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.conv3(self.conv2(self.conv1(x))) + skip)


class GateBatchNorm(nn.BatchNorm2d):
    """BatchNorm on the CAM's (B, C, 1, 1) maps. A training batch of one image has one value per channel, so
    no batch statistics: that batch is normalised with the running statistics (which it leaves unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class ChannelAttention(nn.Module):
    """[A]'s CAM: ``weights(x)`` is the gate X' of Eq. 1, (B, C, 1, 1) in (0, 1); ``forward(x)`` is
    Y = X (x) X' (Eq. 2). Widths C -> C/s -> C/s -> C with s = ``reduction`` (at least 1 channel)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = ConvBN(channels, hidden, 1, norm=GateBatchNorm)
        self.mix = ConvBN(hidden, hidden, 1, norm=GateBatchNorm)
        self.excite = ConvBN(hidden, channels, 1, relu=False, norm=GateBatchNorm)  # no ReLU before sigmoid (A3)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        gap = x.mean(dim=(2, 3), keepdim=True)  # GAP: (B, C, 1, 1)
        return torch.sigmoid(self.excite(self.mix(self.squeeze(gap))))  # Eq. 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)  # Eq. 2


class BasicBlock(nn.Module):
    """Two conv3x3 + BN (ReLU between), identity shortcut, ReLU after the sum: Z = ReLU(F(X) + X). With
    ``attention``, a CAM joins it: Z = ReLU(F(X) + X + X (x) X'(X)) (Eq. 3, mode "residual") or
    Z = ReLU(F(X) (x) X'(F(X)) + X) (mode "se")."""

    def __init__(self, channels: int, attention: bool = False, reduction: int = 4, mode: str = "residual"):
        super().__init__()
        self.conv1 = ConvBN(channels, channels, 3)
        self.conv2 = ConvBN(channels, channels, 3, relu=False)
        self.attention = ChannelAttention(channels, reduction) if attention else None
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv2(self.conv1(x))
        if self.attention is None:
            return torch.relu(f + x)
        if self.mode == "se":
            return torch.relu(self.attention(f) + x)
        return torch.relu(f + x + self.attention(x))  # Eq. 3: skip, then the CAM output Y


class HRModule(nn.Module):
    """One HR module: ``blocks`` BasicBlocks per branch (channels[b]), then the fusion (module docstring).
    ``outputs`` is how many branches it returns (all, or 1 for the network's last module); ``attention``
    holds the (branch, block) pairs whose block carries a CAM."""

    def __init__(self, channels: Sequence[int], blocks: int, outputs: int, attention: frozenset = frozenset(),
                 reduction: int = 4, mode: str = "residual"):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(c, (b, k) in attention, reduction, mode) for k in range(blocks)))
            for b, c in enumerate(channels))
        self.fuse = nn.ModuleList()
        for i in range(outputs):
            row = nn.ModuleList()
            for j in range(n):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:  # lower resolution: conv1x1 + BN (upsampled in forward)
                    row.append(ConvBN(channels[j], channels[i], 1, relu=False))
                else:  # higher resolution: i - j stride-2 conv3x3 + BN, ReLU on all but the last
                    steps = [ConvBN(channels[j], channels[j], 3, 2) for _ in range(i - j - 1)]
                    row.append(nn.Sequential(*steps, ConvBN(channels[j], channels[i], 3, 2, relu=False)))
            self.fuse.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse):
            total = None
            for j, (t, x) in enumerate(zip(row, xs)):
                y = t(x)
                if j > i:  # nearest: the official x 2^(j-i) upsampling when sizes divide
                    y = F.interpolate(y, size=xs[i].shape[-2:], mode="nearest")
                total = y if total is None else total + y
            out.append(torch.relu(total))
        return out


# --- attention placements -----------------------------------------------------------------------------------

def attention_sites(attention: str | None, stage_modules: Sequence[int] = (1, 4, 3),
                    blocks: int = 4) -> frozenset[tuple[int, int, int, int]]:
    """The BasicBlocks that carry a CAM for placement ``attention`` (see the module docstring), as
    (stage, module, branch, block) with stage in 2..4 and branch 0 the highest resolution."""
    if attention is None:
        return frozenset()
    spec = "sub-network:1" if attention == "default" else attention
    kind, sep, numbers = str(spec).partition(":")
    try:
        picked = {int(p) for p in numbers.split("+")} if sep else set()
    except ValueError:
        picked = set()
    if kind not in ("sub-network", "stage") or not picked or not picked <= {1, 2, 3}:
        raise ValueError(f"attention placement '{attention}' is not one of None, 'default', "
                         f"'sub-network:K[+K...]', 'stage:K[+K...]' with K in 1, 2, 3 (e.g. 'stage:3+2+1')")
    last_two = range(max(0, blocks - 2), blocks)
    if kind == "sub-network":  # stage 4's branches 3 (8C), 2 (4C), 1 (2C)
        pairs = [(4, 4 - k) for k in picked]
    else:  # stages 4, 3, 2, each on its lowest-resolution branch
        pairs = [(5 - k, 4 - k) for k in picked]
    return frozenset((stage, m, branch, k) for stage, branch in pairs
                     for m in range(stage_modules[stage - 2]) for k in last_two)


def cam_parameters(channels: int, reduction: int = 4) -> int:
    """Parameters of one CAM on ``channels`` channels: three 1x1 convs (no bias) and their BatchNorms."""
    h = max(1, channels // reduction)
    return channels * h + h * h + h * channels + 2 * (h + h + channels)


def attention_parameters(width: int = 32, attention: str | None = "default", attention_reduction: int = 4,
                         stage_modules: Sequence[int] = (1, 4, 3), blocks: int = 4, **_) -> int:
    """The parameters placement ``attention`` adds to ``HRNet(width, ...)`` (other HRNet args ignored)."""
    return sum(cam_parameters(width * 2 ** branch, attention_reduction)
               for _, _, branch, _ in attention_sites(attention, stage_modules, blocks))


def parameter_count(**args) -> int:
    """Parameters of ``HRNet(**args)``, built on the meta device (no memory, no init time)."""
    with torch.device("meta"):
        return sum(p.numel() for p in HRNet(**args).parameters())


# --- the network --------------------------------------------------------------------------------------------

class HRNet(nn.Module):
    """HRNet-W``width`` pose network with optional channel attention (see the module docstring).

    Args:
        width: C, the high-resolution branch's channels (branches C, 2C, 4C, 8C).
        num_joints: heatmap channels J.
        attention: CAM placement (None, "default", "sub-network:...", "stage:..."; module docstring).
        attention_reduction: s of Eq. 1 (C -> C/s).
        attention_mode: "residual" (Eq. 3) or "se".
        stage_modules: HR modules in stages 2, 3, 4.
        blocks: BasicBlocks per branch per HR module.
        stage1_blocks: Bottlenecks in stage 1.
        stem_width: the stem's channels (stage 1 outputs 4x this).
        keypoint_format: joint order of the heatmaps: "h36m" (poselift's H36M-17) or "coco" (COCO-17).
        input_size: (height, width) of the crops the network is trained / meant to run on.
    """

    task = "heatmaps"
    heatmap_sigmas = {"heatmaps": 2.0}  # target map name -> Gaussian sigma in heatmap pixels
    stride = 4  # input pixels per heatmap pixel

    def __init__(self, width: int = 32, num_joints: int = 17, attention: str | None = None,
                 attention_reduction: int = 4, attention_mode: str = "residual",
                 stage_modules: Sequence[int] = (1, 4, 3), blocks: int = 4, stage1_blocks: int = 4,
                 stem_width: int = 64, keypoint_format: str = "h36m", input_size: Sequence[int] = (256, 192)):
        super().__init__()
        stage_modules = tuple(int(m) for m in stage_modules)
        if len(stage_modules) != 3 or min(stage_modules) < 1 or blocks < 1 or stage1_blocks < 1:
            raise ValueError(f"stage_modules needs three counts >= 1 and blocks, stage1_blocks >= 1 (got "
                             f"{stage_modules}, {blocks}, {stage1_blocks})")
        if attention_mode not in ATTENTION_MODES:
            raise ValueError(f"attention_mode '{attention_mode}' is not one of {', '.join(ATTENTION_MODES)}")
        if keypoint_format not in KEYPOINT_FORMATS:
            raise ValueError(f"keypoint_format '{keypoint_format}' is not one of {', '.join(KEYPOINT_FORMATS)}")
        if len(input_size) != 2 or min(int(s) for s in input_size) < 1:
            raise ValueError(f"input_size must be (height, width) in pixels (got {input_size})")
        self.width, self.num_joints = width, num_joints
        self.attention, self.keypoint_format = attention, keypoint_format
        self.input_size = tuple(int(s) for s in input_size)
        sites = attention_sites(attention, stage_modules, blocks)

        self.stem = nn.Sequential(ConvBN(3, stem_width, 3, 2), ConvBN(stem_width, stem_width, 3, 2))
        self.stage1 = nn.Sequential(*(Bottleneck(stem_width if k == 0 else 4 * stem_width, stem_width)
                                      for k in range(stage1_blocks)))
        self.transitions, self.stages = nn.ModuleList(), nn.ModuleList()
        previous = [4 * stem_width]
        for stage, modules in zip(BRANCH_STAGES, stage_modules):
            channels = [width * 2 ** b for b in range(stage)]
            self.transitions.append(nn.ModuleList(
                [nn.Identity() if previous[b] == c else ConvBN(previous[b], c, 3) for b, c in
                 enumerate(channels[:-1])] + [ConvBN(previous[-1], channels[-1], 3, 2)]))  # new branch, /2
            last_stage = stage == BRANCH_STAGES[-1]
            self.stages.append(nn.ModuleList(
                HRModule(channels, blocks, 1 if last_stage and m == modules - 1 else stage,
                         frozenset((b, k) for s, mm, b, k in sites if (s, mm) == (stage, m)),
                         attention_reduction, attention_mode)
                for m in range(modules)))
            previous = channels
        self.final_layer = nn.Conv2d(width, num_joints, 1)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stage1(self.stem(images))
        xs = [x]
        for transition, modules in zip(self.transitions, self.stages):
            # existing branches pass through (or change width); the new one comes from the lowest branch
            xs = [t(x) for t, x in zip(transition, xs)] + [transition[-1](xs[-1])]
            for module in modules:
                xs = module(xs)
        features = xs[0]
        return {"heatmaps": self.final_layer(features), "features": features}


# --- official checkpoints -----------------------------------------------------------------------------------

_OFFICIAL_RULES = [  # (official key pattern, its match -> our key); None: the fusion rule in _our_key
    (r"conv([12])\.weight", lambda m: f"stem.{int(m[1]) - 1}.conv.weight"),
    (r"bn([12])\.(\w+)", lambda m: f"stem.{int(m[1]) - 1}.bn.{m[2]}"),
    (r"layer1\.(\d+)\.conv([123])\.weight", lambda m: f"stage1.{m[1]}.conv{m[2]}.conv.weight"),
    (r"layer1\.(\d+)\.bn([123])\.(\w+)", lambda m: f"stage1.{m[1]}.conv{m[2]}.bn.{m[3]}"),
    (r"layer1\.(\d+)\.downsample\.0\.weight", lambda m: f"stage1.{m[1]}.shortcut.conv.weight"),
    (r"layer1\.(\d+)\.downsample\.1\.(\w+)", lambda m: f"stage1.{m[1]}.shortcut.bn.{m[2]}"),
    # a transition is conv-BN-ReLU for a kept branch, a chain of one such for the new branch
    (r"transition([123])\.(\d+)\.(?:0\.)?0\.weight", lambda m: f"transitions.{int(m[1]) - 1}.{m[2]}.conv.weight"),
    (r"transition([123])\.(\d+)\.(?:0\.)?1\.(\w+)", lambda m: f"transitions.{int(m[1]) - 1}.{m[2]}.bn.{m[3]}"),
    (r"stage([234])\.(\d+)\.branches\.(\d+)\.(\d+)\.conv([12])\.weight",
     lambda m: f"stages.{int(m[1]) - 2}.{m[2]}.branches.{m[3]}.{m[4]}.conv{m[5]}.conv.weight"),
    (r"stage([234])\.(\d+)\.branches\.(\d+)\.(\d+)\.bn([12])\.(\w+)",
     lambda m: f"stages.{int(m[1]) - 2}.{m[2]}.branches.{m[3]}.{m[4]}.conv{m[5]}.bn.{m[6]}"),
    # fuse_layers.i.j.{0: conv, 1: BN} upsampling (j > i); fuse_layers.i.j.k.{0, 1} downsampling chain (j < i)
    (r"stage([234])\.(\d+)\.fuse_layers\.(\d+)\.(\d+)\.(?:(\d+)\.)?([01])\.(\w+)", None),
    (r"final_layer\.(weight|bias)", lambda m: f"final_layer.{m[1]}"),
]


def _our_key(key: str) -> str | None:
    """Our name for an official key, or None if it is not one of the official pose network's."""
    for pattern, rename in _OFFICIAL_RULES:
        m = re.fullmatch(pattern, key)
        if not m:
            continue
        if rename is not None:
            return rename(m)
        stage, module, i, j, k, part, name = m.groups()
        if (k is None) != (int(j) > int(i)):  # up-paths have no chain index, down-paths have one
            return None
        if part == "0" and name != "weight":
            return None
        layer = "conv" if part == "0" else "bn"
        chain = "" if k is None else f"{k}."
        return f"stages.{int(stage) - 2}.{module}.fuse.{i}.{j}.{chain}{layer}.{name}"
    return None


def convert_official_state_dict(state_dict: dict, **hints) -> tuple[dict, dict]:
    """Official pose-HRNet weights (``pose_hrnet_w32_256x192.pth``, ``pose_hrnet_w48_256x192.pth``, ...) ->
    (:class:`HRNet` constructor args, state dict that loads into it with ``strict=True``).

    Accepts the plain state dict of the model zoo or a training checkpoint's (``"state_dict"``), with or
    without DataParallel's ``"module."`` prefix. Width, joints, stem width and the module and block counts
    are read from tensor shapes and key indices; ``keypoint_format`` is "coco" (the releases are trained
    on COCO) unless ``hints["keypoint_format"]`` says otherwise, ``input_size`` comes from
    ``hints["input_size"]`` or the file name's "HxW" (multiples of 32; else 256x192). Missing BatchNorm
    ``num_batches_tracked`` counters (files from older torch) are set to 0. ``hints["source"]`` names the
    file in errors.
    """
    source = hints.get("source", "HRNet checkpoint")
    unknown = set(hints) - {"source", "path", "keypoint_format", "input_size"}
    if unknown:
        raise InputError(source, f"unknown hint(s) {', '.join(sorted(unknown))} for hrnet (known: "
                                 f"keypoint_format, input_size)")
    weights = state_dict.get("state_dict", state_dict)
    weights = {str(k).removeprefix("module."): v for k, v in weights.items()}

    ours, unexpected = {}, []
    for key, value in weights.items():
        name = _our_key(key)
        if name is None:
            unexpected.append(key)
        else:
            ours[name] = value
    try:
        final = weights["final_layer.weight"]
        stem_width, stem_in = weights["conv1.weight"].shape[:2]
        width = int(weights["transition1.0.0.weight"].shape[0])
        counts = {s: 1 + max(int(k.split(".")[1]) for k in weights if k.startswith(f"stage{s}."))
                  for s in BRANCH_STAGES}
        blocks = 1 + max(int(k.split(".")[4]) for k in weights if k.startswith("stage2.0.branches.0."))
        stage1_blocks = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("layer1."))
    except KeyError as e:
        raise InputError(source, f"not an official pose-HRNet state dict (missing {e})") from None
    except (ValueError, AttributeError, IndexError):
        raise InputError(source, "not an official pose-HRNet state dict (no layer1, stage2-4 and "
                                 "stage2.0.branches.0 blocks)") from None
    if tuple(final.shape[2:]) != (1, 1) or stem_in != 3:
        raise InputError(source, f"unsupported official HRNet variant (final_layer kernel "
                                 f"{tuple(final.shape[2:])}, {stem_in} input channels; expected 1x1 and 3)")
    input_size = hints.get("input_size")
    if input_size is None:  # the releases' names say it: pose_hrnet_w32_256x192.pth
        name = str(hints.get("path", source)).replace("\\", "/").rsplit("/", 1)[-1]
        sizes = [(int(h), int(w)) for h, w in re.findall(r"(\d+)x(\d+)", name)
                 if int(h) % 32 == 0 and int(w) % 32 == 0 and int(h) > 0 and int(w) > 0]
        input_size = list(sizes[0]) if sizes else [256, 192]
    args = dict(width=width, num_joints=int(final.shape[0]), stage_modules=[counts[s] for s in BRANCH_STAGES],
                blocks=blocks, stage1_blocks=stage1_blocks, stem_width=int(stem_width),
                keypoint_format=hints.get("keypoint_format", "coco"), input_size=[int(s) for s in input_size])
    try:
        with torch.device("meta"):  # shapes only, no memory
            expected = {k: v.shape for k, v in HRNet(**args).state_dict().items()}
    except (ValueError, TypeError) as e:
        raise InputError(source, f"cannot build HRNet({args}): {e}") from None
    for key in expected:  # counters absent from files of older torch versions
        if key.endswith(".num_batches_tracked") and key not in ours:
            ours[key] = torch.zeros((), dtype=torch.long)
    missing = sorted(set(expected) - set(ours))
    unexpected += sorted(set(ours) - set(expected))
    wrong = [k for k in expected if k in ours and tuple(ours[k].shape) != tuple(expected[k])]
    if missing or unexpected or wrong:
        raise InputError(source, f"official HRNet weights do not match the inferred config {args}: missing "
                                 f"{missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}")
    return args, ours
