"""CPN (poselift.detection.cpn) and its ResNet backbone (poselift.detection.resnet): parameter counts,
strides, ImageNet state-dict loading against an independent functional ResNet, output shapes, the two loss
terms (OHKM, visibility), and a tiny CPN that learns to find a disc."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from poselift.detection.cpn import CPN, GLOBAL_KERNELS, TOP_K, global_loss, kernel_sigma, refine_loss
from poselift.detection.resnet import ResNet, load_imagenet_weights
from poselift.lifting.layers import count_parameters

TINY = dict(backbone_layers=(1, 1, 1, 1), backbone_width=8, channels=32)


# --- ResNet ------------------------------------------------------------------------------------------------

def test_resnet_parameter_counts():
    # torchvision's resnet50 has 25,557,032 parameters, of which its fc (2048 x 1000 + 1000) 2,049,000;
    # the backbone here has no fc: 23,508,032 (23.5M). ResNet-101: 44,549,160 with the fc.
    fc = 2048 * 1000 + 1000
    resnet50 = count_parameters(ResNet(depth=50))
    assert resnet50 == 23_508_032
    assert resnet50 + fc == 25_557_032
    assert count_parameters(ResNet(depth=101)) + fc == 44_549_160
    assert ResNet(layers=(3, 4, 6, 3)).layers == ResNet(depth=50).layers


def test_resnet_strides_and_channels():
    model = ResNet(depth=50).eval()
    assert model.out_channels == (256, 512, 1024, 2048)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 256, 16, 24), (1, 512, 8, 12), (1, 1024, 4, 6), (1, 2048, 2, 3)]
    narrow = ResNet(layers=(1, 1, 1, 1), width=8)
    assert [tuple(o.shape[1:]) for o in narrow(torch.randn(2, 3, 64, 32))] == [
        (32, 16, 8), (64, 8, 4), (128, 4, 2), (256, 2, 1)]
    with pytest.raises(ValueError):
        ResNet(depth=34)


# An independent, functional ResNet with torchvision's parameter names: a state dict built from the layer
# counts alone, and a forward pass over that dict (eval-mode BN).

def _reference_state_dict(layers, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv_bn(conv, bn, cout, cin, k):
        sd[f"{conv}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2 / (cin * k * k)) ** 0.5
        c = cout
        sd[f"{bn}.weight"] = 1 + 0.2 * torch.randn(c, generator=g)
        sd[f"{bn}.bias"] = 0.1 * torch.randn(c, generator=g)
        sd[f"{bn}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        sd[f"{bn}.running_var"] = 0.5 + torch.rand(c, generator=g)
        sd[f"{bn}.num_batches_tracked"] = torch.tensor(1234)

    conv_bn("conv1", "bn1", width, 3, 7)
    cin = width
    for s, n in enumerate(layers):
        mid = width * 2 ** s
        for b in range(n):
            p = f"layer{s + 1}.{b}"
            conv_bn(f"{p}.conv1", f"{p}.bn1", mid, cin, 1)
            conv_bn(f"{p}.conv2", f"{p}.bn2", mid, mid, 3)
            conv_bn(f"{p}.conv3", f"{p}.bn3", 4 * mid, mid, 1)
            if b == 0:
                conv_bn(f"{p}.downsample.0", f"{p}.downsample.1", 4 * mid, cin, 1)
            cin = 4 * mid
    sd["fc.weight"] = torch.randn(1000, cin, generator=g)
    sd["fc.bias"] = torch.randn(1000, generator=g)
    return sd


def _reference_forward(sd, x, layers):
    def cbn(x, conv, bn, stride=1, pad=0, relu=True):
        y = F.conv2d(x, sd[f"{conv}.weight"], stride=stride, padding=pad)
        y = F.batch_norm(y, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"],
                         sd[f"{bn}.bias"], training=False, eps=1e-5)
        return F.relu(y) if relu else y

    x = F.max_pool2d(cbn(x, "conv1", "bn1", 2, 3), 3, 2, 1)
    outs = []
    for s, n in enumerate(layers):
        for b in range(n):
            p = f"layer{s + 1}.{b}"
            stride = 2 if (b == 0 and s > 0) else 1
            y = cbn(x, f"{p}.conv1", f"{p}.bn1")
            y = cbn(y, f"{p}.conv2", f"{p}.bn2", stride, 1)  # v1.5: the 3x3 conv downsamples
            y = cbn(y, f"{p}.conv3", f"{p}.bn3", relu=False)
            short = cbn(x, f"{p}.downsample.0", f"{p}.downsample.1", stride, relu=False) if b == 0 else x
            x = F.relu(y + short)
        outs.append(x)
    return outs


def test_imagenet_state_dict_loads_strictly_and_matches_reference(tmp_path):
    layers, width = (1, 2, 1, 1), 8
    sd = _reference_state_dict(layers, width)
    model = load_imagenet_weights(ResNet(layers=layers, width=width), sd).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model(x)
        ref = _reference_forward(sd, x, layers)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

    # From a file, and without BN counters (as in the old torchvision releases).
    path = tmp_path / "resnet-tiny.pth"
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, path)
    again = load_imagenet_weights(ResNet(layers=layers, width=width), path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x)[-1], ours[-1])


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_imagenet_state_dict_is_strict(damage):
    layers, width = (1, 1, 1, 1), 8
    sd = _reference_state_dict(layers, width)
    if damage == "missing":
        del sd["layer3.0.conv2.weight"]
    elif damage == "unexpected":
        sd["layer5.0.conv1.weight"] = torch.zeros(1)
    else:
        sd["layer2.0.bn1.weight"] = torch.ones(3)
    with pytest.raises(ValueError, match=damage if damage != "shape" else "shapes differ"):
        load_imagenet_weights(ResNet(layers=layers, width=width), sd)


# --- CPN ---------------------------------------------------------------------------------------------------

def test_cpn_output_shapes_256x192():
    model = CPN(**TINY)
    out = model(torch.randn(2, 3, 256, 192))
    assert tuple(out["heatmaps"].shape) == (2, 17, 64, 48)
    assert [tuple(h.shape) for h in out["global_heatmaps"]] == [(2, 17, 64, 48)] * 4
    assert tuple(out["features"].shape) == (2, 4 * 32, 64, 48) and model.feature_channels == 128
    assert model.task == "heatmaps" and model.keypoint_format == "h36m"
    assert CPN(keypoint_format="coco", **TINY).num_joints == 17
    with pytest.raises(ValueError, match="17 joints"):
        CPN(num_joints=16, **TINY)


def test_cpn_resnet50_parameter_count():
    # The HRNet paper's Table 1 lists CPN (ResNet-50, 256x192) at 27.0M parameters.
    model = CPN(depth=50)
    assert abs(count_parameters(model) - 27.0e6) < 0.05e6
    assert count_parameters(model.backbone) == 23_508_032


def test_heatmap_sigmas_follow_opencv_kernel_rule():
    # sigma = 0.3 ((k - 1) / 2 - 1) + 0.8 for CPN's kernels 15/11/9/7 (GlobalNet C2..C5) and 7 (RefineNet).
    assert GLOBAL_KERNELS == (15, 11, 9, 7)
    assert CPN.heatmap_sigmas == pytest.approx(
        {"global_0": 2.6, "global_1": 2.0, "global_2": 1.7, "global_3": 1.4, "heatmaps": 1.4})
    assert kernel_sigma(3) == pytest.approx(0.8)


# --- Losses ------------------------------------------------------------------------------------------------

def test_refine_loss_keeps_exactly_the_8_hardest_keypoints():
    b, j, h, w = 3, 17, 8, 6
    g = torch.Generator().manual_seed(0)
    losses = torch.stack([torch.randperm(j, generator=g).float() + 1 for _ in range(b)])  # distinct per sample
    # A constant heatmap error e on keypoint j gives it the loss e**2 = losses[j].
    pred = (losses.sqrt()[..., None, None] * torch.ones(b, j, h, w)).requires_grad_()
    targets = {"heatmaps": torch.zeros(b, j, h, w), "target_weight": torch.ones(b, j)}
    loss = refine_loss({"heatmaps": pred}, targets)
    expected = losses.sort(dim=1, descending=True).values[:, :TOP_K].mean()
    assert TOP_K == 8
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    used = pred.grad.abs().sum(dim=(-2, -1)) > 0
    hardest = losses >= losses.sort(dim=1, descending=True).values[:, TOP_K - 1:TOP_K]
    assert torch.equal(used, hardest) and int(used.sum()) == b * TOP_K


def test_refine_loss_drops_invisible_keypoints():
    b, j = 2, 17
    pred = torch.zeros(b, j, 4, 4)
    pred[:, 0] = 10.0  # a huge error on keypoint 0, which is not visible
    targets = {"heatmaps": torch.zeros(b, j, 4, 4), "target_weight": torch.ones(b, j)}
    targets["target_weight"][:, 0] = 0
    assert refine_loss({"heatmaps": pred}, targets).item() == 0.0


def test_global_loss_ignores_invisible_joints():
    b, j, h, w = 2, 17, 8, 6
    g = torch.Generator().manual_seed(1)
    levels = [torch.randn(b, j, h, w, generator=g) for _ in range(4)]
    targets = {f"global_{i}": torch.rand(b, j, h, w, generator=g) for i in range(4)}
    weight = torch.ones(b, j)
    weight[0, [2, 5]] = 0
    weight[1, 16] = 0
    targets["target_weight"] = weight
    loss = global_loss({"global_heatmaps": levels}, targets)

    # Anything at the invisible joints (prediction or target) leaves the loss unchanged.
    changed = [lv.clone() for lv in levels]
    other = dict(targets)
    for i in range(4):
        changed[i][weight == 0] = 100.0
        other[f"global_{i}"] = targets[f"global_{i}"].clone()
        other[f"global_{i}"][weight == 0] = -7.0
    assert global_loss({"global_heatmaps": changed}, other).item() == pytest.approx(loss.item())

    # With every joint visible it is the mean squared error, averaged over the 4 levels, halved.
    targets["target_weight"] = torch.ones(b, j)
    full = global_loss({"global_heatmaps": levels}, targets)
    expected = sum(((lv - targets[f"global_{i}"]) ** 2).mean() for i, lv in enumerate(levels)) / 4 / 2
    assert full.item() == pytest.approx(expected.item())
    assert full.item() > loss.item()


# --- A CPN that learns -------------------------------------------------------------------------------------

def _gaussians(centres, size, sigma):
    """(B, 2) centres (x, y) in heatmap pixels -> (B, 1, h, w) unnormalised Gaussians, peak 1."""
    ys = torch.arange(size[0], dtype=torch.float32)[:, None]
    xs = torch.arange(size[1], dtype=torch.float32)[None]
    d2 = (xs - centres[:, 0, None, None]) ** 2 + (ys - centres[:, 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * sigma ** 2))[:, None]


def _disc_batch(n, g, size=64, radius=6):
    """Noisy images of one bright disc; its centre is the single keypoint."""
    centres = torch.rand(n, 2, generator=g) * (size - 2 * radius - 8) + radius + 4
    ys, xs = torch.arange(size)[:, None], torch.arange(size)[None]
    disc = ((xs - centres[:, 0, None, None]) ** 2 + (ys - centres[:, 1, None, None]) ** 2 <= radius ** 2)
    images = (2.0 * disc.float() - 0.5)[:, None].expand(n, 3, size, size)
    images = images + 0.1 * torch.randn(n, 3, size, size, generator=g)
    heat = (centres - 1.5) / 4  # the centre of a 4x4 cell of pixels is one heatmap pixel
    targets = {name: _gaussians(heat, (size // 4, size // 4), s) for name, s in CPN.heatmap_sigmas.items()}
    targets["target_weight"] = torch.ones(n, 1)
    return images, targets, heat


def test_tiny_cpn_learns_to_find_a_disc():
    torch.manual_seed(0)
    model = CPN(num_joints=1, keypoint_format=None, **TINY)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    held_out = _disc_batch(32, torch.Generator().manual_seed(2))

    def evaluate():
        images, targets, centres = held_out
        model.eval()
        with torch.no_grad():
            out = model(images)
            loss = (global_loss(out, targets) + refine_loss(out, targets)).item()
            heat = out["heatmaps"][:, 0]
            index = heat.flatten(1).argmax(1)
            argmax = torch.stack([index % heat.shape[-1], index // heat.shape[-1]], 1).float()
        model.train()
        return loss, (argmax - centres).norm(dim=1).mean().item()

    loss0, dist0 = evaluate()
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        images, targets, _ = _disc_batch(16, g)
        out = model(images)
        loss = global_loss(out, targets) + refine_loss(out, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    loss1, dist1 = evaluate()
    assert loss1 < 0.4 * loss0, (loss0, loss1)
    assert dist1 < 0.3 * dist0 and dist1 < 1.5, (dist0, dist1)  # heatmap pixels, on unseen images


def test_a_fresh_cpn_starts_at_the_loss_of_empty_heatmaps():
    """The heatmap heads start near zero (HEAD_INIT_STD): the first loss is about that of all-zero maps. With
    PyTorch's default initialisation it was ~200x that, and the CPU CPN never learnt to localise."""
    torch.manual_seed(0)
    model = CPN(num_joints=1, keypoint_format=None, **TINY).eval()
    images, targets, _ = _disc_batch(8, torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(images)
    empty = {"heatmaps": torch.zeros_like(out["heatmaps"]),
             "global_heatmaps": [torch.zeros_like(h) for h in out["global_heatmaps"]]}
    start = (global_loss(out, targets) + refine_loss(out, targets)).item()
    zero = (global_loss(empty, targets) + refine_loss(empty, targets)).item()
    assert zero * 0.9 < start < zero * 1.1
    assert all(h.abs().max() < 0.05 for h in [out["heatmaps"], *out["global_heatmaps"]])
