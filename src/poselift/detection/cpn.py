"""CPN, the Cascaded Pyramid Network (Chen et al., "Cascaded Pyramid Network for Multi-Person Pose
Estimation", CVPR 2018): the 2D detector behind the CPN keypoints that VideoPose3D, [A] and [L] lift.

The facts follow the image-side spec (/work/shared/specs/image-side.md, section 2), whose practical source is
the first author's TensorFlow re-implementation, chenyilun95/tf-cpn ([CPNc]); this is an independent PyTorch
writing of that method, read top-down:

1. **Backbone**: an ImageNet ResNet-50/101 (:mod:`poselift.detection.resnet`), stages C2..C5 (strides 4..32).
2. **GlobalNet** (paper Sec. 3.1, a feature pyramid): each C_k -> lateral 1x1 conv to ``channels`` (256);
   top-down, the coarser level is bilinearly upsampled to C_k's size, passed through a 1x1 conv and added:
   P5 = lat5(C5), P_k = lat_k(C_k) + merge_k(up(P_{k+1})). Each level predicts heatmaps with a 1x1 conv +
   ReLU and a 3x3 conv to ``num_joints``, resized (bilinear) to the output size H/4 x W/4.
3. **RefineNet** (paper Sec. 3.2): level P_k gets k - 2 bottlenecks (0/1/2/3 for P2..P5), is upsampled to
   H/4 x W/4, the four are concatenated (4 x 256 = 1024 channels), then one bottleneck (1024 -> 256) and a
   3x3 conv to ``num_joints``: the final heatmaps. As in [CPNc] the RefineNet reads the GlobalNet's pyramid
   features P_k (the paper's Fig. 1), i.e. each C_k after its lateral conv and the top-down sum.
4. **Losses** (paper Sec. 3.3; [CPNc]): :func:`global_loss`, an L2 loss on every GlobalNet level on visible
   keypoints, averaged over the levels and halved; :func:`refine_loss`, an L2 loss on the RefineNet's
   heatmaps with online hard keypoint mining (OHKM): per sample only the :data:`TOP_K` = 8 largest of the
   17 keypoint losses count. CPN's total loss is their sum (weights 1 and 1 in the stage's ``losses``).

Targets. [CPNc] draws each target as a one-pixel delta at the keypoint's heatmap cell blurred by
``cv2.GaussianBlur`` with kernel sizes 15, 11, 9, 7 for the GlobalNet levels (in its code the finest level,
from C2, gets 15 and the coarsest, from C5, gets 7) and 7 for the RefineNet, with sigma 0 -- so OpenCV
derives the sigma from the kernel size k: sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8 (:func:`kernel_sigma`), i.e.
2.6, 2.0, 1.7, 1.4 and 1.4 heatmap pixels. :attr:`CPN.heatmap_sigmas` hands these sigmas to the heatmap task
as target-name -> sigma, so the task draws Gaussians (peak 1, as for HRNet) instead of blurred deltas;
[CPNc]'s peak-255 scale only multiplies its loss by 255**2.

Initialisation. The five heatmap-predicting 3x3 convs (four GlobalNet heads, the RefineNet's) start from
normal weights of std :data:`HEAD_INIT_STD` = 0.001 and zero bias, as the official HRNet code initialises its
convs, so that the first heatmaps are near zero. With PyTorch's default initialisation they start at about 0.7
everywhere against targets of peak 1 (a loss 200x that of all-zero maps), the first steps go into shrinking
them, and a CPU-sized CPN trained from scratch (``cpn-cpu``) never learnt to localise: AP 0.0, 120 px error on
the rendered benchmark, and it could not fit 64 fixed crops in 200 steps (52 px), where with this
initialisation it reached 25 px and kept falling. [CPNc] draws peak-255 targets, against which a default
initialisation is as small. The ResNet keeps torchvision's initialisation (or the ImageNet weights).

Choices where the spec is silent (documented, not from the paper): the lateral and the per-level 1x1 convs
are conv + BN + ReLU and the bottlenecks have BN (as [CPNc]'s ResNet argument scope gives them); the
top-down merge conv is a plain 1x1 conv with a bias; the two heatmap-predicting 3x3 convs are plain convs
with a bias (no BN on the output). Upsampling is ``F.interpolate(mode="bilinear", align_corners=False)``.
The RefineNet bottlenecks are 256 -> 128 -> 128 -> 256 (width ``channels // 2``, [CPNc]'s depth 256 /
bottleneck depth 128), identity shortcuts except the final 1024 -> 256 one (1x1 conv + BN).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

from poselift.detection.resnet import ResNet, load_imagenet_weights
from poselift.keypoint_formats import get_format
from poselift.skeleton import H36M17

GLOBAL_KERNELS = (15, 11, 9, 7)  # [CPNc] Gaussian kernel sizes of the GlobalNet targets, levels C2..C5
REFINE_KERNEL = 7  # [CPNc] the RefineNet's target kernel
TOP_K = 8  # OHKM: keypoints kept per sample (of 17) in the RefineNet loss (paper Sec. 3.3, Table 6)
HEAD_INIT_STD = 0.001  # the heatmap-predicting convs' initial weights ([HRc] initialises its convs so)


def kernel_sigma(kernel_size: int) -> float:
    """OpenCV's sigma for a Gaussian kernel of size k given with sigma <= 0 (``cv2.getGaussianKernel``):
    0.3 * ((k - 1) * 0.5 - 1) + 0.8."""
    return round(0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8, 10)


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class GlobalNet(nn.Module):
    """The feature pyramid with one heatmap head per level (CPN Sec. 3.1).

    ``forward(features [C2..C5], size) -> (pyramid [P2..P5], heatmaps [4 x (B, J, *size)])``.
    """

    def __init__(self, in_channels: tuple[int, ...], channels: int = 256, num_joints: int = 17):
        super().__init__()
        self.lateral = nn.ModuleList(_conv_bn_relu(c, channels) for c in in_channels)
        # merge[k] takes the upsampled level k + 1 to level k; the coarsest level has none.
        self.merge = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in in_channels[:-1])
        self.heads = nn.ModuleList(
            nn.Sequential(_conv_bn_relu(channels, channels), nn.Conv2d(channels, num_joints, 3, padding=1))
            for _ in in_channels)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]):
        pyramid: list[torch.Tensor] = [None] * len(features)
        coarser = None
        for k in reversed(range(len(features))):  # top-down: C5 first
            p = self.lateral[k](features[k])
            if coarser is not None:
                p = p + self.merge[k](_resize(coarser, p.shape[-2:]))
            pyramid[k] = coarser = p
        heatmaps = [_resize(head(p), size) for head, p in zip(self.heads, pyramid)]
        return pyramid, heatmaps


class RefineBottleneck(nn.Module):
    """1x1 (mid) - 3x3 (mid) - 1x1 (out), each with BN, ReLU after the sum with the shortcut (identity, or a
    1x1 conv + BN when the width changes): the residual unit of the RefineNet (CPN Sec. 3.2)."""

    def __init__(self, cin: int, cout: int, mid: int):
        super().__init__()
        self.residual = nn.Sequential(_conv_bn_relu(cin, mid), _conv_bn_relu(mid, mid, 3),
                                      nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = (nn.Identity() if cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


class RefineNet(nn.Module):
    """Level k of the pyramid (k = 0..3 for P2..P5) through k bottlenecks, all upsampled to ``size`` and
    concatenated, one bottleneck and a 3x3 conv to the joints (CPN Sec. 3.2).

    ``forward(pyramid, size) -> (heatmaps (B, J, *size), concatenated features (B, levels * channels, *size))``.
    """

    def __init__(self, channels: int = 256, num_levels: int = 4, num_joints: int = 17):
        super().__init__()
        mid = max(1, channels // 2)
        self.levels = nn.ModuleList(
            nn.Sequential(*(RefineBottleneck(channels, channels, mid) for _ in range(k))) for k in range(num_levels))
        self.final = RefineBottleneck(num_levels * channels, channels, mid)
        self.predict = nn.Conv2d(channels, num_joints, 3, padding=1)

    def forward(self, pyramid: list[torch.Tensor], size: tuple[int, int]):
        features = torch.cat([_resize(level(p), size) for level, p in zip(self.levels, pyramid)], dim=1)
        return self.predict(self.final(features)), features


class CPN(nn.Module):
    """Cascaded Pyramid Network: ResNet backbone -> GlobalNet -> RefineNet.

    ``forward(images)``: ImageNet-normalised RGB (B, 3, H, W), H and W divisible by 32 (256 x 192 or
    384 x 288 in the paper) -> a dict of

    - ``"heatmaps"``: the RefineNet's heatmaps (B, J, H/4, W/4), the prediction;
    - ``"global_heatmaps"``: the GlobalNet's four levels' heatmaps, [4 x (B, J, H/4, W/4)] from C2 to C5;
    - ``"features"``: the RefineNet's concatenated features (B, 4 * channels, H/4, W/4).

    Constructor: ``depth`` 50 or 101 (``backbone_layers`` overrides the bottleneck counts, e.g. (1, 1, 1, 1)
    for tests), ``backbone_width`` 64 for the standard ResNet, ``channels`` the pyramid width (256),
    ``num_joints`` and ``keypoint_format`` the joints' layout ("h36m" for H36M-17, or a name of
    :data:`poselift.keypoint_formats.FORMATS`, e.g. "coco"; None for unnamed joints, e.g. a
    synthetic task). ``backbone_weights``: the path of a
    torchvision ImageNet ``resnet50-*.pth`` / ``resnet101-*.pth`` loaded into the backbone at construction
    (:func:`~poselift.detection.resnet.load_imagenet_weights`); None starts from random weights.

    ``heatmap_sigmas``: target name -> Gaussian sigma (heatmap pixels) the heatmap task draws each target
    with: "global_0".."global_3" for the GlobalNet levels C2..C5, "heatmaps" for the RefineNet (see the
    module docstring). The loss terms are :func:`global_loss` and :func:`refine_loss`.
    """

    task = "heatmaps"
    output_stride = 4
    heatmap_sigmas: dict[str, float] = {
        **{f"global_{i}": kernel_sigma(k) for i, k in enumerate(GLOBAL_KERNELS)},
        "heatmaps": kernel_sigma(REFINE_KERNEL),
    }

    def __init__(self, depth: int = 50, num_joints: int = 17, channels: int = 256, backbone_width: int = 64,
                 keypoint_format: str | None = "h36m", backbone_layers: tuple[int, ...] | None = None,
                 backbone_weights: str | os.PathLike | None = None):
        super().__init__()
        if keypoint_format is not None:
            expected = len(H36M17.names) if keypoint_format == "h36m" else get_format(keypoint_format).num_joints
            if num_joints != expected:
                raise ValueError(f"keypoint format '{keypoint_format}' has {expected} joints, not {num_joints}")
        self.num_joints, self.keypoint_format = num_joints, keypoint_format
        self.backbone = ResNet(depth=depth, layers=backbone_layers, width=backbone_width)
        if backbone_weights is not None:
            load_imagenet_weights(self.backbone, backbone_weights)
        self.global_net = GlobalNet(self.backbone.out_channels, channels, num_joints)
        self.refine_net = RefineNet(channels, len(self.backbone.out_channels), num_joints)
        self.feature_channels = channels * len(self.backbone.out_channels)
        # The five heatmap-predicting convs start near zero (normal, std HEAD_INIT_STD; bias 0; see the module
        # docstring): default-initialised, they start with outputs of ~0.7 against peak-1 targets.
        for conv in [head[-1] for head in self.global_net.heads] + [self.refine_net.predict]:
            nn.init.normal_(conv.weight, std=HEAD_INIT_STD)
            nn.init.zeros_(conv.bias)

    def forward(self, images: torch.Tensor) -> dict:
        features = self.backbone(images)
        size = tuple(features[0].shape[-2:])  # the output resolution, H/4 x W/4 (C2's)
        pyramid, global_heatmaps = self.global_net(features, size)
        heatmaps, refine_features = self.refine_net(pyramid, size)
        return {"heatmaps": heatmaps, "global_heatmaps": global_heatmaps, "features": refine_features}


def _weights(targets: dict, like: torch.Tensor) -> torch.Tensor:
    """targets["target_weight"] (B, J), 1 = use the keypoint, as a float of ``like``'s dtype."""
    w = targets["target_weight"]
    if tuple(w.shape) != tuple(like.shape[:2]):
        raise ValueError(f"target_weight must be (B, J) = {tuple(like.shape[:2])}, got {tuple(w.shape)}")
    return w.to(like.dtype)


def _keypoint_mse(pred: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    """Mean squared error per keypoint over its heatmap: (B, J, h, w) x 2 -> (B, J)."""
    if pred.shape != target.shape:
        raise ValueError(f"target '{name}' must be {tuple(pred.shape)}, got {tuple(target.shape)}")
    return (pred - target.to(pred.dtype)).square().mean(dim=(-2, -1))


def global_loss(out: dict, targets: dict) -> torch.Tensor:
    """GlobalNet loss (CPN Sec. 3.3; [CPNc]): for each level l, the L2 loss of its heatmaps against
    targets["global_<l>"], a mean over samples, joints and pixels in which the keypoints with target_weight
    0 count as zero; averaged over the levels and divided by 2."""
    levels = out["global_heatmaps"]
    w = _weights(targets, levels[0])
    total = sum((_keypoint_mse(pred, targets[f"global_{i}"], f"global_{i}") * w).mean()
                for i, pred in enumerate(levels))
    return total / len(levels) / 2


def refine_loss(out: dict, targets: dict) -> torch.Tensor:
    """RefineNet loss with online hard keypoint mining (CPN Sec. 3.3): per sample, the L2 loss of each
    keypoint's heatmap against targets["heatmaps"] (a mean over its pixels, 0 where target_weight is 0);
    the mean of the :data:`TOP_K` largest of them (all of them if J <= TOP_K); averaged over samples."""
    pred = out["heatmaps"]
    per_keypoint = _keypoint_mse(pred, targets["heatmaps"], "heatmaps") * _weights(targets, pred)
    hardest = per_keypoint.topk(min(TOP_K, per_keypoint.shape[1]), dim=1).values
    return hardest.mean()
