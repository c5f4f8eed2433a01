"""HRNet with [A]'s channel attention (poselift.detection.hrnet) and the import of official pose-HRNet weights."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from poselift.detection.hrnet import (ChannelAttention, BasicBlock, HRNet, PAPER_PARAMETERS, attention_parameters,
                                      attention_sites, convert_official_state_dict, parameter_count)
from poselift.training.checkpoint import load_model, read_checkpoint


# --- an independent official-layout network (leoxiaobin/deep-high-resolution-net.pytorch's module names) -----

def _conv(cin, cout, k=3, stride=1):
    return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)


class _Basic(nn.Module):  # conv1 bn1 conv2 bn2
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2 = _conv(c, c), nn.BatchNorm2d(c), _conv(c, c), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + x)


class _Bottle(nn.Module):  # conv1 bn1 conv2 bn2 conv3 bn3 [downsample.0 conv, downsample.1 bn]
    def __init__(self, cin, p):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, p, 1), nn.BatchNorm2d(p)
        self.conv2, self.bn2 = _conv(p, p), nn.BatchNorm2d(p)
        self.conv3, self.bn3 = _conv(p, 4 * p, 1), nn.BatchNorm2d(4 * p)
        self.downsample = nn.Sequential(_conv(cin, 4 * p, 1), nn.BatchNorm2d(4 * p)) if cin != 4 * p else None

    def forward(self, x):
        y = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return torch.relu(self.bn3(self.conv3(y)) + (x if self.downsample is None else self.downsample(x)))


class _Module(nn.Module):  # branches.b.k, fuse_layers.i.j (None on the diagonal)
    def __init__(self, chans, blocks, multi_scale):
        super().__init__()
        n = len(chans)
        self.branches = nn.ModuleList(nn.Sequential(*[_Basic(c) for _ in range(blocks)]) for c in chans)
        rows = []
        for i in range(n if multi_scale else 1):
            row = []
            for j in range(n):
                if j > i:
                    row.append(nn.Sequential(_conv(chans[j], chans[i], 1), nn.BatchNorm2d(chans[i]),
                                             nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
                elif j == i:
                    row.append(None)
                else:
                    chain = [nn.Sequential(_conv(chans[j], chans[j], 3, 2), nn.BatchNorm2d(chans[j]), nn.ReLU())
                             for _ in range(i - j - 1)]
                    chain.append(nn.Sequential(_conv(chans[j], chans[i], 3, 2), nn.BatchNorm2d(chans[i])))
                    row.append(nn.Sequential(*chain))
            rows.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(rows)

    def forward(self, xs):
        xs = [b(x) for b, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, len(xs)):
                y = y + (xs[j] if i == j else row[j](xs[j]))
            out.append(torch.relu(y))
        return out


class OfficialPoseHRNet(nn.Module):
    """The official pose network's layout: conv1/bn1/conv2/bn2, layer1, transition1-3, stage2-4, final_layer."""

    def __init__(self, width=32, joints=17, modules=(1, 4, 3), blocks=4, layer1=4, stem=64):
        super().__init__()
        self.conv1, self.bn1 = _conv(3, stem, 3, 2), nn.BatchNorm2d(stem)
        self.conv2, self.bn2 = _conv(stem, stem, 3, 2), nn.BatchNorm2d(stem)
        self.layer1 = nn.Sequential(*[_Bottle(stem if k == 0 else 4 * stem, stem) for k in range(layer1)])
        pre = [4 * stem]
        for s, count in zip((2, 3, 4), modules):
            chans = [width * 2 ** b for b in range(s)]
            trans = [None if pre[b] == chans[b] else
                     nn.Sequential(_conv(pre[b], chans[b]), nn.BatchNorm2d(chans[b]), nn.ReLU())
                     for b in range(s - 1)]
            trans.append(nn.Sequential(nn.Sequential(_conv(pre[-1], chans[-1], 3, 2), nn.BatchNorm2d(chans[-1]),
                                                     nn.ReLU())))
            setattr(self, f"transition{s - 1}", nn.ModuleList(trans))
            setattr(self, f"stage{s}", nn.Sequential(*[_Module(chans, blocks, s < 4 or m < count - 1)
                                                       for m in range(count)]))
            pre = chans
        self.final_layer = nn.Conv2d(width, joints, 1)

    def forward(self, x):
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        ys = [self.layer1(x)]
        for s in (2, 3, 4):
            trans = getattr(self, f"transition{s - 1}")
            xs = [ys[i] if trans[i] is None else trans[i](ys[min(i, len(ys) - 1)]) for i in range(s)]
            ys = getattr(self, f"stage{s}")(xs)
        return self.final_layer(ys[0])


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights and BatchNorm statistics far from the init (so a wrong mapping shows), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


# --- official weights ------------------------------------------------------------------------------------------

def test_import_official_weights_gives_the_official_heatmaps(tmp_path, run_cli):
    official = _randomise(OfficialPoseHRNet(width=8, joints=17, modules=(1, 4, 3), blocks=2, layer1=2, stem=16))
    assert {"transition1.1.0.0.weight", "stage2.0.fuse_layers.0.1.0.weight", "stage4.1.fuse_layers.3.0.2.1.bias",
            "stage3.3.branches.2.1.bn2.running_var", "layer1.0.downsample.1.weight"} <= set(official.state_dict())
    source = tmp_path / "pose_hrnet_w8_128x96.pth"
    torch.save(official.state_dict(), source)
    code, out, err = run_cli("import-checkpoint", "--format", "hrnet", source, tmp_path / "hrnet.pt")
    assert code == 0, err
    assert "input 128x96, coco keypoints" in out
    ckpt = read_checkpoint(tmp_path / "hrnet.pt")
    assert ckpt["model"] == "hrnet" and "window" not in ckpt and "output_frames" not in ckpt
    assert (ckpt["input_size"], ckpt["keypoint_format"]) == ([128, 96], "coco")
    assert ckpt["args"] == dict(width=8, num_joints=17, stage_modules=[1, 4, 3], blocks=2, stage1_blocks=2,
                                stem_width=16, keypoint_format="coco", input_size=[128, 96])
    model = load_model(tmp_path / "hrnet.pt")
    images = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        expected, out = official(images), model(images)
    assert expected.abs().max() > 0.1  # not a degenerate comparison
    torch.testing.assert_close(out["heatmaps"], expected, rtol=0, atol=1e-5)
    assert out["features"].shape == (2, 8, 32, 24)


def test_the_w32_and_w48_releases_convert_key_for_key():
    """The full-size official layouts (on the meta device: shapes only) map onto HRNet-W32 / W48."""
    for width in (32, 48):
        with torch.device("meta"):
            official = OfficialPoseHRNet(width=width)
        args, state = convert_official_state_dict(official.state_dict(), path=f"pose_hrnet_w{width}_384x288.pth")
        assert args["width"] == width and args["stage_modules"] == [1, 4, 3] and args["input_size"] == [384, 288]
        assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == \
            sum(p.numel() for p in official.parameters()) == parameter_count(**args)


def test_bad_files_are_one_line_errors(tmp_path, run_cli):
    torch.save({"encoder.weight": torch.ones(3, 3)}, tmp_path / "other.pth")
    code, _, err = run_cli("import-checkpoint", "--format", "hrnet", tmp_path / "other.pth", tmp_path / "out.pt")
    assert code == 2 and "not an official pose-HRNet state dict" in err and err.count("\n") == 1
    weights = OfficialPoseHRNet(width=4, modules=(1, 1, 1), blocks=1, layer1=1, stem=8).state_dict()
    del weights["stage3.0.fuse_layers.2.0.1.0.weight"]
    torch.save(weights, tmp_path / "damaged.pth")
    code, _, err = run_cli("import-checkpoint", "--format", "hrnet", tmp_path / "damaged.pth", tmp_path / "out.pt")
    assert code == 2 and "do not match the inferred config" in err and err.count("\n") == 1
    code, _, err = run_cli("import-checkpoint", "--format", "hrnet", "--window", "9", tmp_path / "damaged.pth",
                           tmp_path / "out.pt")
    assert code == 2 and "--window: hrnet is an image model" in err and err.count("\n") == 1
    assert not (tmp_path / "out.pt").exists()


# --- size against the paper ------------------------------------------------------------------------------------

@functools.lru_cache
def _count(width: int, attention: str | None = None) -> int:
    return parameter_count(width=width, attention=attention)


def test_parameter_counts_match_hrnet_w32_and_w48():
    for width in (32, 48):
        assert abs(_count(width) / 1e6 - PAPER_PARAMETERS[(width, None)]) < 0.1


def test_attention_placements_cost_what_the_reading_says():
    base = _count(32)
    for placement in ("default", "sub-network:3+2+1", "stage:3+2+1"):  # analytic == instantiated
        assert _count(32, placement) - base == attention_parameters(32, placement)
    assert abs(attention_parameters(32, "default") / 1e6 - 0.23) < 0.01  # spec A2: six CAMs at 256 channels
    assert attention_sites("default") == attention_sites("sub-network:1") == attention_sites("stage:1")
    for kind, sizes in (("sub-network", (6, 12, 18)), ("stage", (6, 14, 16))):
        rows = [f"{kind}:{k}" for k in ("1", "2+1", "3+2+1")]
        assert tuple(len(attention_sites(r)) for r in rows) == sizes
        costs = [attention_parameters(32, r) for r in rows]
        assert costs == sorted(set(costs))  # strictly increasing, as Table VII's counts
    assert all(stage == 4 and branch == 3 and block in (2, 3) for stage, _, branch, block in attention_sites("default"))
    with pytest.raises(ValueError, match="attention placement 'stage:4'"):
        attention_sites("stage:4")


# --- shapes and the CAM ----------------------------------------------------------------------------------------

def _small(**kw) -> HRNet:
    return HRNet(**{"width": 8, "stage_modules": (1, 1, 1), "blocks": 2, "stage1_blocks": 1, "stem_width": 16, **kw})


def test_output_shapes_at_256x192():
    model = _small(attention="default", num_joints=17)
    out = model(torch.randn(2, 3, 256, 192))
    assert out["heatmaps"].shape == (2, 17, 64, 48) and out["features"].shape == (2, 8, 64, 48)
    assert (model.task, model.heatmap_sigmas, model.keypoint_format) == ("heatmaps", {"heatmaps": 2.0}, "h36m")
    cams = [m for m in model.modules() if isinstance(m, ChannelAttention)]
    assert len(cams) == 2 and all(c.squeeze.conv.in_channels == 64 for c in cams)  # 8C, last two blocks


def test_channel_attention_gate_and_equations():
    torch.manual_seed(0)
    cam = _randomise(ChannelAttention(16, reduction=4))
    x = torch.randn(3, 16, 8, 6) * 3
    gate = cam.weights(x)
    assert gate.shape == (3, 16, 1, 1) and bool(((gate > 0) & (gate < 1)).all()) and gate.std() > 0.01

    def bn(layer, t):
        return nn.functional.batch_norm(t, layer.bn.running_mean, layer.bn.running_var, layer.bn.weight,
                                        layer.bn.bias, eps=layer.bn.eps)

    h = x.mean(dim=(2, 3), keepdim=True)  # Eq. 1 by hand
    for layer, relu in ((cam.squeeze, True), (cam.mix, True), (cam.excite, False)):
        h = bn(layer, nn.functional.conv2d(h, layer.conv.weight))
        h = torch.relu(h) if relu else h
    torch.testing.assert_close(gate, torch.sigmoid(h))
    torch.testing.assert_close(cam(x), x * gate)  # Eq. 2
    assert cam.squeeze.conv.out_channels == cam.mix.conv.out_channels == 4

    for mode in ("residual", "se"):
        block = _randomise(BasicBlock(16, attention=True, reduction=4, mode=mode))
        f = block.conv2(block.conv1(x))
        expected = torch.relu(f + x + x * block.attention.weights(x)) if mode == "residual" else \
            torch.relu(f * block.attention.weights(f) + x)  # Eq. 3 (+ ReLU) / squeeze-excitation style
        torch.testing.assert_close(block(x), expected)
    cam = ChannelAttention(16).train()
    train_gate = cam.weights(x)  # batch statistics: still a gate in (0, 1)
    assert bool(((train_gate > 0) & (train_gate < 1)).all())
    before = cam.squeeze.bn.running_mean.clone()
    one = cam.weights(x[:1])  # a batch of one image: the running statistics, left unchanged
    assert one.shape == (1, 16, 1, 1) and torch.equal(cam.squeeze.bn.running_mean, before)


def test_a_small_hrnet_learns_a_heatmap():
    torch.manual_seed(0)
    model = _small(attention="stage:2+1", width=8, num_joints=2)
    images = torch.randn(4, 3, 64, 48)
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(12.0), indexing="ij")
    peaks = torch.tensor([[4.0, 3.0], [10.0, 8.0]])
    target = torch.exp(-((xs - peaks[:, 0, None, None]) ** 2 + (ys - peaks[:, 1, None, None]) ** 2) / 8)
    target = target.expand(4, -1, -1, -1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = ((model(images)["heatmaps"] - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_a_training_checkpoint_with_data_parallel_names_imports_too(tmp_path, run_cli):
    """The official train.py's checkpoint.pth: weights under state_dict with DataParallel's module. prefix."""
    official = _randomise(OfficialPoseHRNet(width=4, joints=16, modules=(1, 1, 2), blocks=1, layer1=1, stem=8))
    weights = {f"module.{k}": v for k, v in official.state_dict().items()}
    torch.save({"epoch": 140, "model": "pose_hrnet", "state_dict": weights, "perf": 0.71}, tmp_path / "checkpoint.pth")
    code, _, err = run_cli("import-checkpoint", "--format", "hrnet", "--arg", "keypoint_format=h36m",
                           tmp_path / "checkpoint.pth", tmp_path / "hrnet.pt")
    assert code == 0, err
    ckpt = read_checkpoint(tmp_path / "hrnet.pt")
    assert (ckpt["epoch"], ckpt["input_size"], ckpt["keypoint_format"]) == (140, [256, 192], "h36m")
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "hrnet.pt")(images)["heatmaps"], official(images),
                                   rtol=0, atol=1e-5)
