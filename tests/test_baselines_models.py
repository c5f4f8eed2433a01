"""Baseline lifters: Martinez et al.'s linear model and VideoPose3D's temporal convolutions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poselift.errors import InputError
from poselift.lifting.layers import count_parameters
from poselift.lifting.martinez import LinearBaseline, MaxNormLinear
from poselift.lifting.videopose3d import TemporalConvNet
from poselift.models import MODELS


def assert_overfits(model, x, target, steps: int) -> None:
    """Adam on one fixed batch: the MPJPE must fall below 10% of its starting value."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = (model(x)["pose_3d"] - target).norm(dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_registered_under_their_names():
    assert MODELS["martinez"] is LinearBaseline
    assert MODELS["videopose3d"] is TemporalConvNet
    assert {LinearBaseline.output_frames, TemporalConvNet.output_frames} == {"centre"}


# --- Martinez et al. 2017 ------------------------------------------------------------------------


def test_martinez_structure_and_parameter_count():
    m = LinearBaseline()
    linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert len(linears) == 6 and len(m.blocks) == 2  # input, 2 blocks x 2, output
    assert sum(isinstance(x, nn.BatchNorm1d) for x in m.modules()) == 5
    assert (m.input.in_features, m.input.out_features) == (34, 1024)
    assert (m.output.in_features, m.output.out_features) == (1024, 48)  # 16 non-root joints
    # weights + biases of 34->1024, 4 x 1024->1024, 1024->48, plus 5 BatchNorms of 1024 (gamma, beta)
    expected = 34 * 1024 + 1024 + 4 * (1024 * 1024 + 1024) + 1024 * 48 + 48 + 5 * 2 * 1024
    assert count_parameters(m) == expected == 4_293_680
    assert [type(x) for x in m.modules() if isinstance(x, nn.Dropout)] and m.drop.p == 0.5


def test_martinez_residual_block_adds_its_input():
    torch.manual_seed(0)
    m = LinearBaseline(linear_size=32).train()
    block = m.blocks[0]
    x = torch.randn(8, 32)
    assert not torch.allclose(block(x), x)
    with torch.no_grad():  # the branch ends in BN -> ReLU: zero gamma and beta and it outputs 0
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
    assert torch.equal(block(x), x)


def test_martinez_root_is_exactly_zero_and_frames_are_independent():
    torch.manual_seed(0)
    m = LinearBaseline(linear_size=64).eval()
    x = torch.randn(4, 3, 17, 2)
    y = m(x)["pose_3d"]
    assert y.shape == (4, 3, 17, 3)
    assert torch.equal(y[:, :, 0], torch.zeros(4, 3, 3))
    assert (y[:, :, 1:].abs() > 0).all()
    torch.testing.assert_close(m(x[:, 1:2])["pose_3d"][:, 0], y[:, 1])
    with pytest.raises(ValueError, match="17, 2"):
        m(torch.randn(4, 1, 16, 2))


def test_max_norm_clips_each_weight_matrix_to_frobenius_norm_one():
    torch.manual_seed(0)
    layer = MaxNormLinear(10, 20, max_norm=1.0)
    x = torch.randn(5, 10)
    with torch.no_grad():
        layer.weight.mul_(3.0 / layer.weight.norm())  # norm 3 -> used as W / 3
    torch.testing.assert_close(layer(x), x @ (layer.weight / 3).T + layer.bias)
    with torch.no_grad():
        layer.weight.mul_(0.5 / layer.weight.norm())  # norm 0.5 < 1 -> used as is
    torch.testing.assert_close(layer(x), x @ layer.weight.T + layer.bias)

    # so scaling a clipped layer changes nothing in the model; without max-norm it does
    for max_norm, same in ((True, True), (False, False)):
        torch.manual_seed(1)
        m = LinearBaseline(linear_size=64, max_norm=max_norm).eval()
        x = torch.randn(3, 1, 17, 2)
        before = m(x)["pose_3d"]
        with torch.no_grad():
            m.output.weight.mul_(5.0)
        assert torch.allclose(m(x)["pose_3d"], before, atol=1e-6) == same


def test_martinez_overfits_a_small_batch():
    torch.manual_seed(0)
    m = LinearBaseline(linear_size=128, dropout=0.0).train()
    x = torch.randn(32, 1, 17, 2) * 0.3
    target = torch.randn(32, 1, 17, 3) * 0.2
    target[:, :, 0] = 0
    assert_overfits(m, x, target, steps=120)


# --- VideoPose3D ---------------------------------------------------------------------------------


def test_receptive_field_is_the_product_of_the_filter_widths():
    with torch.device("meta"):
        assert TemporalConvNet(filter_widths=[3, 3, 3]).receptive_field() == 27
        assert TemporalConvNet(filter_widths=[3, 3, 3, 3, 3]).receptive_field() == 243
        assert TemporalConvNet(filter_widths=[3, 5, 5]).receptive_field() == 75
    with pytest.raises(ValueError, match="odd"):
        TemporalConvNet(filter_widths=[3, 4], channels=8)


def test_longer_inputs_give_t_minus_field_plus_one_frames():
    torch.manual_seed(0)
    m = TemporalConvNet(filter_widths=[3, 3, 3], channels=16).eval()
    x = torch.randn(2, 40, 17, 2)
    assert m(x)["pose_3d"].shape == (2, 40 - 27 + 1, 17, 3)
    assert m(x[:, :27])["pose_3d"].shape == (2, 1, 17, 3)
    with pytest.raises(ValueError, match="receptive field 27"):
        m(x[:, :26])


def test_output_frame_depends_only_on_its_receptive_field():
    torch.manual_seed(0)
    m = TemporalConvNet(filter_widths=[3, 3], channels=16).eval()  # field 9: output k reads inputs k..k+8
    x = torch.randn(1, 20, 17, 2)
    y = m(x)["pose_3d"][0]
    for j in (0, 5, 11, 19):
        x2 = x.clone()
        x2[0, j, 3, 0] += 1.0
        changed = (m(x2)["pose_3d"][0] - y).abs().amax(dim=(1, 2)) > 0
        expected = torch.tensor([k <= j <= k + 8 for k in range(12)])
        assert torch.equal(changed, expected), j


def test_strided_single_frame_path_equals_the_dilated_model():
    torch.manual_seed(0)
    m = TemporalConvNet(filter_widths=[3, 5, 3], channels=16).eval()
    x = torch.randn(3, 45, 17, 2).flatten(2).transpose(1, 2)
    with torch.no_grad():
        for bn in [m.expand_bn, *m.layers_bn]:  # non-trivial running statistics
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    torch.testing.assert_close(m.run(x, strided=True), m.run(x, strided=False))
    # and a window of a long sequence gives that sequence's output frame
    long = torch.randn(1, 60, 17, 2)
    torch.testing.assert_close(m(long[:, 7:52])["pose_3d"][:, 0], m(long)["pose_3d"][:, 7])


def _official_state_dict(widths, channels, joints=17, generator=None, device=None):
    """Tensors with exactly VideoPose3D TemporalModel's names and shapes (common/model.py)."""
    def t(*shape):
        return torch.empty(shape, device=device) if device else torch.randn(shape, generator=generator) * 0.3

    def bn(prefix):
        var = torch.empty(channels, device=device) if device else torch.rand(channels, generator=generator) + 0.5
        return {f"{prefix}.weight": t(channels), f"{prefix}.bias": t(channels), f"{prefix}.running_mean": t(channels),
                f"{prefix}.running_var": var, f"{prefix}.num_batches_tracked": torch.tensor(7)}

    sd = {"expand_conv.weight": t(channels, joints * 2, widths[0]), **bn("expand_bn")}
    for i, w in enumerate(widths[1:]):
        sd[f"layers_conv.{2 * i}.weight"] = t(channels, channels, w)
        sd[f"layers_conv.{2 * i + 1}.weight"] = t(channels, channels, 1)
        sd.update(bn(f"layers_bn.{2 * i}"))
        sd.update(bn(f"layers_bn.{2 * i + 1}"))
    sd["shrink.weight"], sd["shrink.bias"] = t(joints * 3, channels, 1), t(joints * 3)
    return sd


def _official_forward(sd, widths, x):
    """VideoPose3D TemporalModel's eval-mode forward, written from the paper / reference code's description."""
    def bn(prefix, h):
        return F.batch_norm(h, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"],
                            sd[f"{prefix}.bias"], training=False, eps=1e-5)

    b, t, j, _ = x.shape
    h = x.reshape(b, t, j * 2).permute(0, 2, 1)
    h = F.relu(bn("expand_bn", F.conv1d(h, sd["expand_conv.weight"])))
    dilation = widths[0]
    for i, w in enumerate(widths[1:]):
        pad = (w - 1) * dilation // 2
        res = h[:, :, pad:h.shape[2] - pad]
        h = F.relu(bn(f"layers_bn.{2 * i}", F.conv1d(h, sd[f"layers_conv.{2 * i}.weight"], dilation=dilation)))
        h = res + F.relu(bn(f"layers_bn.{2 * i + 1}", F.conv1d(h, sd[f"layers_conv.{2 * i + 1}.weight"])))
        dilation *= w
    out = F.conv1d(h, sd["shrink.weight"], sd["shrink.bias"])
    return out.permute(0, 2, 1).reshape(b, -1, j, 3)


def test_official_state_dict_converts_loads_strict_and_matches_the_reference():
    g = torch.Generator().manual_seed(0)
    widths = [3, 5, 3]
    official = _official_state_dict(widths, channels=12, generator=g)
    args, sd = TemporalConvNet.convert_official_state_dict(official)
    assert args == {"num_joints": 17, "filter_widths": [3, 5, 3], "channels": 12, "dropout": 0.25}
    m = TemporalConvNet(**args).eval()
    m.load_state_dict(sd, strict=True)
    x = torch.randn(2, 50, 17, 2, generator=g)
    with torch.no_grad():
        expected = _official_forward(official, widths, x)
        torch.testing.assert_close(m(x)["pose_3d"], expected)  # dilated path, 6 frames
        torch.testing.assert_close(m(x[:, :45])["pose_3d"], expected[:, :1])  # strided path

    # as stored in pretrained_h36m_cpn.bin ('model_pos'), with DataParallel prefixes, from older PyTorch
    old = {f"module.{k}": v for k, v in official.items() if not k.endswith("num_batches_tracked")}
    args2, sd2 = TemporalConvNet.convert_official_state_dict({"epoch": 80, "model_pos": old})
    assert args2 == args and set(sd2) == set(sd)
    TemporalConvNet(**args2).load_state_dict(sd2, strict=True)


def test_official_state_dict_with_wrong_names_or_shapes_is_an_input_error():
    official = _official_state_dict([3, 3], channels=8, generator=torch.Generator().manual_seed(0))
    missing = {k: v for k, v in official.items() if k != "shrink.bias"}
    with pytest.raises(InputError, match="ckpt.bin: .*shrink.bias"):
        TemporalConvNet.convert_official_state_dict(missing, path="ckpt.bin")
    with pytest.raises(InputError, match="not a VideoPose3D"):
        TemporalConvNet.convert_official_state_dict({"foo": torch.zeros(1)})
    wrong = dict(official, **{"layers_conv.1.weight": torch.zeros(8, 8, 3)})
    with pytest.raises(InputError, match=r"layers_conv.1.weight \(8, 8, 3\) != \(8, 8, 1\)"):
        TemporalConvNet.convert_official_state_dict(wrong)


def test_official_cpn_config_has_16_95m_parameters():
    # VideoPose3D paper: 8.56M (27 frames), 12.75M (81), 16.95M (243) with 1024 channels
    official = _official_state_dict([3, 3, 3, 3, 3], channels=1024, device="meta")
    args, sd = TemporalConvNet.convert_official_state_dict(official)
    assert args["filter_widths"] == [3, 3, 3, 3, 3] and args["channels"] == 1024 and args["num_joints"] == 17
    official_params = sum(v.numel() for k, v in sd.items() if not k.split(".")[-1].startswith(("running", "num")))
    with torch.device("meta"):
        assert count_parameters(TemporalConvNet(**args)) == official_params == 16_952_371
        assert round(count_parameters(TemporalConvNet(filter_widths=[3, 3, 3])) / 1e6, 2) == 8.56
        assert round(count_parameters(TemporalConvNet(filter_widths=[3, 3, 3, 3])) / 1e6, 2) == 12.75


def test_temporal_conv_net_overfits_a_small_batch():
    torch.manual_seed(0)
    m = TemporalConvNet(filter_widths=[3, 3], channels=64, dropout=0.0).train()
    x = torch.randn(32, 9, 17, 2) * 0.3
    target = torch.randn(32, 1, 17, 3) * 0.2
    assert_overfits(m, x, target, steps=100)
