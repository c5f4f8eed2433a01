"""STA (attention paper's 3D estimator) and PoseFormer: shapes, official parity, SAM/TAM locality, loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from poselift.errors import InputError
from poselift.lifting.layers import count_parameters
from poselift.lifting.losses import LOSSES
from poselift.lifting.sta import (AFTER_MLP, AFTER_MSA, BEFORE_MSA, IN_MLP, Block, ConvAttention, PoseFormer,
                                  STAEstimator, convert_official_state_dict)
from poselift.models import MODELS

TINY = dict(num_joints=17, embed_dim_ratio=8, depth=2, num_heads=2, drop_path_rate=0.0)


def official_shapes(frames: int, joints: int = 17, ratio: int = 32, depth: int = 4, mlp_ratio: float = 2.0,
                    chans: int = 2) -> list[tuple[str, tuple[int, ...]]]:
    """State-dict keys and shapes of the official PoseTransformer (zczcwh/PoseFormer,
    common/model_poseformer.py), in its order: own parameters first, then submodules as registered."""
    width = ratio * joints
    items = [("Spatial_pos_embed", (1, joints, ratio)), ("Temporal_pos_embed", (1, frames, width)),
             ("Spatial_patch_to_embedding.weight", (ratio, chans)), ("Spatial_patch_to_embedding.bias", (ratio,))]
    for prefix, d in (("Spatial_blocks", ratio), ("blocks", width)):
        h = int(d * mlp_ratio)
        for i in range(depth):
            p = f"{prefix}.{i}."
            items += [(p + "norm1.weight", (d,)), (p + "norm1.bias", (d,)),
                      (p + "attn.qkv.weight", (3 * d, d)), (p + "attn.qkv.bias", (3 * d,)),
                      (p + "attn.proj.weight", (d, d)), (p + "attn.proj.bias", (d,)),
                      (p + "norm2.weight", (d,)), (p + "norm2.bias", (d,)),
                      (p + "mlp.fc1.weight", (h, d)), (p + "mlp.fc1.bias", (h,)),
                      (p + "mlp.fc2.weight", (d, h)), (p + "mlp.fc2.bias", (d,))]
    items += [("Spatial_norm.weight", (ratio,)), ("Spatial_norm.bias", (ratio,)),
              ("Temporal_norm.weight", (width,)), ("Temporal_norm.bias", (width,)),
              ("weighted_mean.weight", (1, frames, 1)), ("weighted_mean.bias", (1,)),
              ("head.0.weight", (width,)), ("head.0.bias", (width,)),
              ("head.1.weight", (joints * 3, width)), ("head.1.bias", (joints * 3,))]
    return items


def reference_forward(sd: dict, x: torch.Tensor, heads: int) -> torch.Tensor:
    """Official PoseFormer's forward, step by step from its code, on an official-key state dict."""
    b, f, p, _ = x.shape

    def block(h, pre):
        n, length, d = h.shape
        y = F.layer_norm(h, (d,), sd[pre + "norm1.weight"], sd[pre + "norm1.bias"], eps=1e-6)
        qkv = F.linear(y, sd[pre + "attn.qkv.weight"], sd[pre + "attn.qkv.bias"])
        q, k, v = qkv.reshape(n, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(dim=-1)
        h = h + F.linear((attn @ v).transpose(1, 2).reshape(n, length, d), sd[pre + "attn.proj.weight"],
                         sd[pre + "attn.proj.bias"])
        y = F.layer_norm(h, (d,), sd[pre + "norm2.weight"], sd[pre + "norm2.bias"], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, sd[pre + "mlp.fc1.weight"], sd[pre + "mlp.fc1.bias"])),
                     sd[pre + "mlp.fc2.weight"], sd[pre + "mlp.fc2.bias"])
        return h + y

    h = x.permute(0, 3, 1, 2)  # b c f p
    h = h.permute(0, 2, 3, 1).reshape(b * f, p, -1)  # (b f) p c
    h = F.linear(h, sd["Spatial_patch_to_embedding.weight"], sd["Spatial_patch_to_embedding.bias"])
    h = h + sd["Spatial_pos_embed"]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        h = block(h, f"Spatial_blocks.{i}.")
    c = h.shape[-1]
    h = F.layer_norm(h, (c,), sd["Spatial_norm.weight"], sd["Spatial_norm.bias"], eps=1e-6)
    h = h.reshape(b, f, p * c) + sd["Temporal_pos_embed"]  # (b f) w c -> b f (w c)
    for i in range(depth):
        h = block(h, f"blocks.{i}.")
    h = F.layer_norm(h, (p * c,), sd["Temporal_norm.weight"], sd["Temporal_norm.bias"], eps=1e-6)
    h = F.conv1d(h, sd["weighted_mean.weight"], sd["weighted_mean.bias"]).reshape(b, 1, -1)
    h = F.layer_norm(h, (p * c,), sd["head.0.weight"], sd["head.0.bias"])  # nn.LayerNorm default eps 1e-5
    return F.linear(h, sd["head.1.weight"], sd["head.1.bias"]).reshape(b, 1, p, -1)


def random_official(frames: int, seed: int = 0, **kw) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) * 0.3 for k, shape in official_shapes(frames, **kw)}


# --- shapes and structure --------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 9, 27, 81])
def test_outputs_one_centre_frame_and_per_frame_spatial_poses(frames):
    torch.manual_seed(0)
    model = STAEstimator(num_frames=frames, norm_groups=2, **TINY).eval()
    out = model(torch.randn(2, frames, 17, 2))
    assert out["pose_3d"].shape == (2, 1, 17, 3)
    assert out["pose_3d_spatial"].shape == (2, frames, 17, 3)
    assert torch.isfinite(out["pose_3d"]).all()
    assert STAEstimator.output_frames == PoseFormer.output_frames == "centre"
    with pytest.raises(ValueError, match="expected inputs"):
        model(torch.randn(2, frames + 2, 17, 2))


def test_select_centre_head_reads_only_the_centre_frame_token():
    torch.manual_seed(0)
    model = STAEstimator(num_frames=9, norm_groups=2, select_centre=True, **TINY).eval()
    assert model.weighted_mean is None
    seen = {}
    model.head.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    x = torch.randn(2, 9, 17, 2)
    model(x)
    temporal = {}
    model.Temporal_norm.register_forward_hook(lambda m, args, out: temporal.update(x=out))
    model(x)
    assert torch.equal(seen["x"], temporal["x"][:, 4:5])


def test_sam_runs_over_joints_and_tam_over_frames():
    model = STAEstimator(num_frames=9, norm_groups=2, **TINY).eval()
    shapes = {}
    model.Spatial_blocks[0].conv_attention.register_forward_hook(lambda m, a, o: shapes.update(sam=a[0].shape))
    model.blocks[0].conv_attention.register_forward_hook(lambda m, a, o: shapes.update(tam=a[0].shape))
    model(torch.randn(3, 9, 17, 2))
    assert shapes == {"sam": (3 * 9, 17, 8), "tam": (3, 9, 17 * 8)}  # tokens (N, L, C), conv along L
    assert model.Spatial_blocks[0].conv_attention.conv1.kernel_size == (5,)
    assert model.blocks[1].conv_attention.conv2.kernel_size == (3,)


# --- PoseFormer parity -----------------------------------------------------------------------------------


def test_poseformer_state_dict_is_official_and_has_9_6m_parameters():
    model = PoseFormer(num_frames=81)
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == official_shapes(81)
    n = count_parameters(model)
    print(f"PoseFormer T=81 C=32 depth 4: {n} parameters")
    assert n == sum(torch.Size(s).numel() for _, s in official_shapes(81))
    assert abs(n - 9.6e6) < 0.05e6
    off = STAEstimator(num_frames=81, spatial_attention_module=False, temporal_attention_module=False,
                       spatial_head=False)
    assert [(k, tuple(v.shape)) for k, v in off.state_dict().items()] == official_shapes(81)


def test_sta_adds_depthwise_sam_and_tam_and_a_spatial_readout():
    extra = count_parameters(STAEstimator(num_frames=81)) - count_parameters(PoseFormer(num_frames=81))
    print(f"STA - PoseFormer (T=81): {extra} parameters")
    c, e = 32, 32 * 17
    sam = 2 * (c * 5 + c) + 2 * c  # two depth-wise k=5 convs (+bias), GroupNorm affine
    tam = 2 * (e * 3 + e) + 2 * e
    assert extra == 4 * sam + 4 * tam + (c * 3 + 3) == 23651


def test_official_checkpoint_converts_loads_strict_and_matches_official_forward():
    frames = 5
    official = random_official(frames, ratio=8, depth=2)
    checkpoint = {"epoch": 3, "lr": 1e-4, "model_pos": {"module." + k: v for k, v in official.items()}}
    args, sd = convert_official_state_dict(checkpoint, num_heads=2)
    assert args == dict(num_frames=5, num_joints=17, in_chans=2, embed_dim_ratio=8, depth=2, num_heads=2,
                        mlp_ratio=2.0, qkv_bias=True)
    model = MODELS["poseformer"](**args).eval()
    model.load_state_dict(sd, strict=True)
    assert count_parameters(model) == sum(v.numel() for v in official.values())
    x = torch.randn(3, frames, 17, 2)
    with torch.no_grad():
        ours = model(x)["pose_3d"]
        mine = PoseFormer(**args).eval()
        mine.load_state_dict(model.state_dict())  # the same tensors by our own names
        assert torch.equal(mine(x)["pose_3d"], ours)
        torch.testing.assert_close(ours, reference_forward(official, x, heads=2), atol=1e-5, rtol=1e-5)


def test_conversion_rejects_foreign_weights():
    official = random_official(5, ratio=8, depth=2)
    with pytest.raises(InputError, match="not a PoseFormer"):
        convert_official_state_dict({"conv.weight": torch.zeros(1)}, source="x.bin")
    del official["blocks.1.mlp.fc2.bias"]
    with pytest.raises(InputError, match="missing"):
        convert_official_state_dict(official)


def test_poseformer_weights_in_a_fresh_sta_give_poseformer_outputs():
    """SAM/TAM start as the identity, so STA fine-tuned from PoseFormer starts at PoseFormer."""
    args, sd = convert_official_state_dict(random_official(5, ratio=8, depth=2), num_heads=2)
    poseformer = PoseFormer(**args).eval()
    poseformer.load_state_dict(sd)
    sta = STAEstimator(**args, norm_groups=2).eval()
    missing, unexpected = sta.load_state_dict(sd, strict=False)
    assert not unexpected and all("conv_attention" in k or "spatial_head" in k for k in missing)
    x = torch.randn(2, 5, 17, 2)
    with torch.no_grad():
        torch.testing.assert_close(sta(x)["pose_3d"], poseformer(x)["pose_3d"], atol=1e-6, rtol=0)
        nn.init.normal_(sta.blocks[0].conv_attention.conv2.weight)
        assert not torch.allclose(sta(x)["pose_3d"], poseformer(x)["pose_3d"], atol=1e-3)


# --- SAM / TAM (Eqs. 8 and 11) ---------------------------------------------------------------------------


@pytest.mark.parametrize("kernel,reach", [(5, 4), (3, 2)])  # SAM k=5: two convs see +-4; TAM k=3: +-2
def test_conv_attention_mixes_only_tokens_within_its_reach(kernel, reach):
    torch.manual_seed(0)
    module = ConvAttention(channels=8, kernel=kernel, groups=2)
    nn.init.normal_(module.conv2.weight)  # the default zero init would make the branch silent
    x = torch.randn(3, 17, 8)
    for i in (0, 7, 16):
        moved = x.clone()
        moved[:, i] += torch.randn(3, 8)
        changed = (module(moved) - module(x)).abs().amax(dim=(0, 2)) > 1e-6
        assert changed.tolist() == ((torch.arange(17) - i).abs() <= reach).tolist()


def test_conv_attention_residual_path():
    torch.manual_seed(0)
    module = ConvAttention(channels=6, kernel=5, groups=3)
    x = torch.randn(2, 17, 6)
    assert torch.equal(module(x), x)  # conv2 starts at zero: exactly the identity
    with torch.no_grad():
        for p in (module.conv2.weight, module.conv2.bias, module.norm.bias):
            nn.init.normal_(p)
        module.conv1.weight.zero_()
        module.conv1.bias.zero_()
        # conv1 = 0 -> GELU(0) = 0 -> Norm(0) = its bias beta -> conv2 of a constant, zero-padded at the ends
        w, beta = module.conv2.weight[:, 0], module.norm.bias
        expected = torch.stack([beta * w[:, [k for k in range(5) if 0 <= j + k - 2 < 17]].sum(1) + module.conv2.bias
                                for j in range(17)])
        torch.testing.assert_close(module(x) - x, expected.expand(2, 17, 6), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("position", [BEFORE_MSA, AFTER_MSA, AFTER_MLP])
def test_attention_module_position_in_block(position):
    torch.manual_seed(0)
    block = Block(8, 2, 2.0, True, 0.0, 0.0, 0.0, kernel=5, position=position, norm_groups=2).eval()
    nn.init.normal_(block.conv_attention.conv2.weight)
    sam = block.conv_attention
    x = torch.randn(4, 17, 8)

    def msa(h):
        return h + block.attn(block.norm1(h))

    def mlp(h):
        return h + block.mlp(block.norm2(h))

    expected = {BEFORE_MSA: mlp(msa(sam(x))), AFTER_MSA: mlp(sam(msa(x))), AFTER_MLP: sam(mlp(msa(x)))}[position]
    torch.testing.assert_close(block(x), expected)


def test_attention_module_in_the_mlp_replaces_the_activation():
    """Eqs. 9 / 12: MLP(x) = P(x W1 + a1) W2 + a2, P the module of Eq. 8 on the MLP's hidden channels."""
    torch.manual_seed(0)
    block = Block(8, 2, 2.0, True, 0.0, 0.0, 0.0, kernel=5, position=IN_MLP, norm_groups=2).eval()
    sam = block.conv_attention
    assert sam.conv1.in_channels == 16  # the hidden width, mlp_ratio * C
    nn.init.normal_(sam.conv2.weight)
    x = torch.randn(4, 17, 8)
    h = x + block.attn(block.norm1(x))
    expected = h + block.mlp.fc2(sam(block.mlp.fc1(block.norm2(h))))  # no GELU outside P
    torch.testing.assert_close(block(x), expected)


def test_sta_placements_both_run_and_differ():
    torch.manual_seed(0)
    between = STAEstimator(num_frames=9, norm_groups=2, **TINY).eval()  # default: between MSA and MLP
    assert between.Spatial_blocks[0].position == between.blocks[0].position == AFTER_MSA
    inside = STAEstimator(num_frames=9, norm_groups=2, sam_position=IN_MLP, tam_position=IN_MLP, **TINY).eval()
    shared = {k: v for k, v in between.state_dict().items() if "conv_attention" not in k}
    inside.load_state_dict(shared, strict=False)
    for model in (between, inside):  # give both modules the same non-zero kernels where shapes allow
        for m in model.modules():
            if isinstance(m, ConvAttention):
                nn.init.constant_(m.conv2.weight, 0.3)
    x = torch.randn(2, 9, 17, 2)
    a, b = between(x)["pose_3d"], inside(x)["pose_3d"]
    assert a.shape == b.shape == (2, 1, 17, 3) and torch.isfinite(b).all()
    assert not torch.allclose(a, b, atol=1e-4)
    assert inside.blocks[0].conv_attention.conv1.in_channels == 2 * 17 * 8  # TAM on the hidden channels
    with pytest.raises(ValueError, match="position"):
        STAEstimator(num_frames=9, norm_groups=2, sam_position=4, **TINY)


# --- training and the loss (Eqs. 13-15) ------------------------------------------------------------------


def sta_loss(out: dict, batch: dict, weights: dict[str, float]) -> torch.Tensor:
    """Eq. 15: lambda_s L_s + lambda_t L_t, from LOSSES' named terms, as a params.yaml stage sums them."""
    return sum(w * LOSSES[name](out, batch) for name, w in weights.items())


def test_sta_overfits_a_small_batch(stage_losses):
    weights = stage_losses("sta-h36m", "sta")
    torch.manual_seed(0)
    model = STAEstimator(num_frames=9, num_joints=17, embed_dim_ratio=16, depth=2, num_heads=4, norm_groups=4,
                         drop_path_rate=0.0)
    x = torch.randn(4, 9, 17, 2) * 0.5
    frames = x @ torch.randn(2, 3) * 0.2  # Eq. 13: every window frame has a 3D target (here a function of its 2D)
    batch = {"targets_3d": frames[:, 4:5], "targets_3d_frames": frames}
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(250):
        loss = sta_loss(model(x), batch, weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    final = sum(losses[-10:]) / 10  # Adam oscillates a little at the end
    assert final < 0.1 * losses[0], (losses[0], final)


def test_sta_loss_by_hand(stage_losses):
    target = torch.zeros(2, 1, 17, 3)
    pose = torch.zeros(2, 1, 17, 3)
    pose[0, 0, 0] = torch.tensor([3.0, 4.0, 0.0])  # one joint 5 m off
    spatial = torch.full((2, 3, 17, 3), 100.0)  # frames 0 and 2: only the centre-frame reading ignores them
    spatial[:, 1] = 0.0
    spatial[1, 1, 2] = torch.tensor([0.0, 0.0, 2.0])  # centre frame: one joint 2 m off
    frames = torch.zeros(2, 3, 17, 3)  # the 3D of every window frame (Eq. 13 sums over the M frames)
    frames[:, [0, 2]] = 100.0
    frames[0, 0, 3, 0] = 96.0  # frame 0 of window 0: one joint 4 m off, all other joints exact
    frames[1, 2, 7, 1] = 100.0 + 3.0  # frame 2 of window 1: one joint 3 m off
    out = {"pose_3d": pose, "pose_3d_spatial": spatial}
    batch = {"targets_3d": target, "targets_3d_frames": frames}
    weights = stage_losses("sta-h36m", "sta")  # the paper gives no lambdas: 1 and 1 in both experiments
    assert weights == stage_losses("sta-cpu", "sta") == {"sta_spatial": 1.0, "sta_temporal": 1.0}
    spatial_by_hand = (4 + 2 + 3) / (2 * 3 * 17)  # mean over B = 2 windows, M = 3 frames, J = 17 joints
    assert sta_loss(out, batch, weights).item() == pytest.approx(spatial_by_hand + 5 / 34)
    weights = {"sta_spatial": 0.5, "sta_temporal": 2.0}
    assert sta_loss(out, batch, weights).item() == pytest.approx(0.5 * spatial_by_hand + 2.0 * 5 / 34)
    masked = {**batch, "mask_frames": torch.tensor([[False, True, True], [True, True, True]])}
    assert LOSSES["sta_spatial"](out, masked).item() == pytest.approx((2 + 3) / (5 * 17))  # 5 valid frames
    with pytest.raises(ValueError, match="targets_3d_frames"):  # the centre frame alone is not Eq. 13
        LOSSES["sta_spatial"](out, {"targets_3d": target})
    # the centre-frame-only reading, kept as sta_spatial_centre
    assert LOSSES["sta_spatial_centre"](out, {"targets_3d": target}).item() == pytest.approx(2 / 34)
    assert LOSSES["sta_spatial_centre"](out, {"targets_3d": target[:, 0]}).item() == pytest.approx(2 / 34)
    # T target frames (seq2seq batches): every frame counts, masked frames do not
    seq = {"targets_3d": torch.zeros(2, 3, 17, 3), "mask": torch.tensor([[False, True, True], [False, True, False]])}
    spatial[0, 2] = 0.0
    spatial[0, 2, 5] = torch.tensor([1.0, 2.0, 2.0])  # 3 m
    assert LOSSES["sta_spatial"](out, seq).item() == pytest.approx((3 + 2) / (3 * 17))
