"""MixSTE (poselift.lifting.mixste) and its losses (WMPJPE, TCLoss, MPJVE): structure, seq2seq output,
joint separation, first-loop position embeddings, training, official-checkpoint conversion."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from poselift.lifting.layers import count_parameters
from poselift.lifting.losses import LOSSES, mpjpe, mpjve, tcloss, wmpjpe
from poselift.lifting.mixste import MixSTE, convert_official_state_dict
from poselift.models import MODELS
from poselift.skeleton import H36M17, MIXSTE_JOINT_WEIGHTS

W = torch.as_tensor(MIXSTE_JOINT_WEIGHTS)


def tiny(**kw) -> MixSTE:
    torch.manual_seed(0)
    args = {"num_frames": 27, "embed_dim": 16, "depth": 2, "num_heads": 2, "drop_path_rate": 0.0, **kw}
    return MixSTE(**args).eval()


def randomise_position_embeddings(model: MixSTE) -> None:
    with torch.no_grad():  # official init is zero; make them visible
        model.spatial_pos.normal_()
        model.temporal_pos.normal_()


# --- structure ------------------------------------------------------------------------------------------


def test_paper_model_has_33_78_million_parameters():
    with torch.device("meta"):
        model = MixSTE(num_frames=243, embed_dim=512, depth=8, num_heads=8, mlp_ratio=2.0)
    d, t, j = 512, 243, 17
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (2 * d * d + 2 * d) + (2 * d * d + d)
    by_hand = 16 * block + (2 * d + d) + j * d + t * d + 2 * (2 * d) + 2 * d + (3 * d + 3)
    assert count_parameters(model) == by_hand == 33_783_811
    assert abs(count_parameters(model) - 33.78e6) < 0.01e6
    assert MODELS["mixste"] is MixSTE and MixSTE.output_frames == "all"


@pytest.mark.parametrize("t", [1, 9, 20, 27])
def test_one_3d_pose_per_input_frame(t):
    out = tiny()(torch.randn(2, t, 17, 2))["pose_3d"]
    assert out.shape == (2, t, 17, 3) and torch.isfinite(out).all()


def test_rejects_too_many_frames_and_wrong_joints():
    model = tiny(num_frames=9)
    with pytest.raises(ValueError, match="1 to 9 frames"):
        model(torch.randn(1, 10, 17, 2))
    with pytest.raises(ValueError, match="17, 2"):
        model(torch.randn(1, 9, 16, 2))


def test_shorter_input_uses_the_first_temporal_positions():
    long = tiny(num_frames=27)
    randomise_position_embeddings(long)
    short = tiny(num_frames=9)
    state = long.state_dict()
    state["temporal_pos"] = state["temporal_pos"][:, :9]
    short.load_state_dict(state)
    x = torch.randn(2, 9, 17, 2)
    torch.testing.assert_close(long(x)["pose_3d"], short(x)["pose_3d"], rtol=1e-5, atol=1e-6)


# --- joint separation (Eq. 1) and spatial attention ------------------------------------------------------


@pytest.mark.parametrize("loop", [0, 1])
def test_temporal_block_mixes_frames_of_the_same_joint_only(loop):
    model = tiny()
    randomise_position_embeddings(model)
    x = torch.randn(2, 9, 17, 16)
    changed = x.clone()
    changed[:, 0, 5] += 3 * torch.randn(2, 16)  # joint 5, frame 0 only
    with torch.no_grad():
        y, y2 = model.temporal_step(x, loop), model.temporal_step(changed, loop)
    others = [j for j in range(17) if j != 5]
    assert (y2[:, :, others] - y[:, :, others]).abs().max() < 1e-6  # other joints: untouched
    assert (y2[:, 1:, 5] - y[:, 1:, 5]).abs().min(dim=-1).values.max() > 1e-4  # joint 5's later frames moved
    # only one joint non-zero: its output does not depend on the zero joints' values
    lone = torch.zeros(1, 9, 17, 16)
    lone[:, :, 5] = torch.randn(1, 9, 16)
    with torch.no_grad():
        alone = model.temporal_step(lone, loop)[:, :, 5]
        lone[:, :, :5] = torch.randn(1, 9, 5, 16)
        torch.testing.assert_close(model.temporal_step(lone, loop)[:, :, 5], alone, rtol=0, atol=1e-6)


def test_spatial_block_mixes_joints_of_the_same_frame_only():
    model = tiny()
    x = torch.randn(2, 9, 17, 16)
    changed = x.clone()
    changed[:, 0, 5] += 3 * torch.randn(2, 16)
    with torch.no_grad():
        y, y2 = model.spatial_step(x, 1), model.spatial_step(changed, 1)
    assert (y2[:, 1:] - y[:, 1:]).abs().max() < 1e-6  # other frames untouched
    assert (y2[:, 0, :5] - y[:, 0, :5]).abs().amax(dim=-1).min() > 1e-4  # other joints of frame 0 moved


def test_one_joint_at_one_frame_reaches_every_joint_and_frame():
    model = tiny()
    x = torch.randn(1, 9, 17, 2)
    changed = x.clone()
    changed[:, 0, 5] += 0.5
    with torch.no_grad():
        delta = (model(changed)["pose_3d"] - model(x)["pose_3d"]).abs().amax(dim=-1)
    assert delta.min() > 1e-6  # STB then TTB: joint 5 at frame 0 -> all joints -> all frames


def test_position_embeddings_are_added_in_the_first_loop_only():
    model = tiny()
    randomise_position_embeddings(model)
    seen = {"spatial_in": [], "temporal_in": [], "spatial_out": [], "temporal_out": []}
    for blocks, key in ((model.spatial_blocks, "spatial_in"), (model.temporal_blocks, "temporal_in")):
        for block in blocks:
            block.register_forward_pre_hook(lambda m, a, key=key: seen[key].append(a[0].clone()))
    for norm, key in ((model.spatial_norm, "spatial_out"), (model.temporal_norm, "temporal_out")):
        norm.register_forward_hook(lambda m, a, out, key=key: seen[key].append(out.clone()))
    x = torch.randn(2, 9, 17, 2)
    with torch.no_grad():
        model(x)
        embedded = model.joint_embed(x)
    t_pos = model.temporal_pos[:, :9].detach()
    close = dict(rtol=0, atol=1e-6)
    # loop 0: spatial positions before the STB, temporal positions (first 9) before the TTB
    torch.testing.assert_close(seen["spatial_in"][0], embedded + model.spatial_pos.detach(), **close)
    torch.testing.assert_close(seen["temporal_in"][0], seen["spatial_out"][0].transpose(1, 2) + t_pos, **close)
    # loop 1: the previous block's normalised output, nothing added
    torch.testing.assert_close(seen["spatial_in"][1], seen["temporal_out"][0].transpose(1, 2), **close)
    torch.testing.assert_close(seen["temporal_in"][1], seen["spatial_out"][1].transpose(1, 2), **close)
    # the temporal tokens are per joint: (B, J, T, d_m)
    assert seen["temporal_in"][1].shape == (2, 17, 9, 16)


# --- training -------------------------------------------------------------------------------------------


def smooth_clips(n: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """2D joints moving linearly (n, frames, 17, 2) and 3D targets from a fixed random map of each joint
    and its parent plus a per-joint offset: the model must know which joint is which and read its parent."""
    g = torch.Generator().manual_seed(0)
    x = 0.5 * torch.randn(n, 1, 17, 2, generator=g) + 0.05 * torch.randn(n, 1, 17, 2, generator=g) * \
        torch.arange(frames)[None, :, None, None]
    a, b = 0.3 * torch.randn(2, 3, 2, generator=g)
    c = 0.2 * torch.randn(17, 3, generator=g)
    parents = torch.as_tensor([max(p, 0) for p in H36M17.parents])
    return x, x @ a.T + x[:, :, parents] @ b.T + c


def test_overfits_a_small_batch_with_the_paper_loss(stage_losses):
    weights = stage_losses("mixste-h36m", "mixste")  # Eq. 9's terms and lambdas
    inputs, poses = smooth_clips(2, 9)
    model = tiny(num_frames=9, embed_dim=32, num_heads=4).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = {"targets_3d": poses}
    with torch.no_grad():
        start = mpjpe(model(inputs)["pose_3d"], poses).item()
    for _ in range(300):
        out = model(inputs)
        loss = sum(w * LOSSES[name](out, batch) for name, w in weights.items())  # Eq. 9
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = mpjpe(model.eval()(inputs)["pose_3d"], poses).item()
    mean_pose = mpjpe(poses.mean(dim=(0, 1), keepdim=True).expand_as(poses), poses).item()
    assert end < 0.1 * start and end < 0.2 * mean_pose, (start, end, mean_pose)


# --- losses (Sec. 3.3) ----------------------------------------------------------------------------------


def test_loss_weights_are_the_official_ones(stage_losses):
    for experiment in ("mixste-h36m", "mixste-cpu"):  # Eq. 9 with the official run.py's lambdas
        assert stage_losses(experiment, "mixste") == {"wmpjpe": 1.0, "tcloss": 0.5, "mpjve": 2.0}
    groups = {"torso": ["pelvis", "right_hip", "left_hip", "spine", "thorax", "neck_nose"],
              "terminal limb": ["left_elbow", "left_wrist", "right_elbow", "right_wrist"]}
    idx = {n: i for i, n in enumerate(H36M17.names)}
    assert all(W[idx[n]] == 1.0 for n in groups["torso"])
    assert all(W[idx[n]] == 4.0 for n in groups["terminal limb"])


def test_wmpjpe_with_unit_weights_is_mpjpe():
    pred, target = torch.randn(2, 5, 17, 3), torch.randn(2, 5, 17, 3)
    torch.testing.assert_close(wmpjpe(pred, target, torch.ones(17)), mpjpe(pred, target))


def test_wmpjpe_of_a_wrist_error_by_hand():
    target = torch.randn(1, 2, 17, 3)
    pred = target.clone()
    wrist = H36M17.names.index("right_wrist")
    pred[0, 1, wrist] += torch.tensor([0.03, 0.04, 0.0])  # 5 cm on one joint of one frame
    batch = {"targets_3d": target}
    expected = 4.0 * 0.05 / (2 * 17)  # weight 4, mean over 2 frames x 17 joints
    torch.testing.assert_close(LOSSES["wmpjpe"]({"pose_3d": pred}, batch), torch.tensor(expected))
    masked = {**batch, "mask": torch.tensor([[True, False]])}  # the wrong frame is padding
    assert LOSSES["wmpjpe"]({"pose_3d": pred}, masked).item() == 0.0
    with pytest.raises(ValueError, match="17 joints"):
        LOSSES["wmpjpe"]({"pose_3d": pred[:, :, :16]}, {"targets_3d": target[:, :, :16]})


def test_temporal_losses_zero_for_smooth_offsets_positive_for_jitter():
    t = torch.linspace(0, 1, 6)[None, :, None, None]
    target = torch.sin(3 * t + torch.randn(1, 1, 17, 3))  # a moving pose (1, 6, 17, 3)
    offset = target + torch.tensor([0.1, -0.2, 0.05])  # constant error
    assert mpjve(offset, target).item() < 1e-7
    static = target[:, :1].expand(1, 6, 17, 3)  # held still: TCLoss ignores the target
    assert tcloss(static, W).item() == 0.0
    d = 0.01
    jitter = offset.clone()
    jitter[0, :, 0, 0] += d * torch.tensor([1.0, -1, 1, -1, 1, -1])  # pelvis x: +-1 cm, frame to frame
    # MPJVE: each of 5 frame pairs has a 2 cm velocity error on 1 of 17 joints
    torch.testing.assert_close(mpjve(jitter, target), torch.tensor(2 * d / 17))
    static_jitter = static.clone()
    static_jitter[0, :, 0, 0] += d * torch.tensor([1.0, -1, 1, -1, 1, -1])
    # TCLoss: weight 1 * (2 cm)^2 on 1 of 17 x 3 coordinates of every pair
    torch.testing.assert_close(tcloss(static_jitter, W), torch.tensor(4 * d * d / 51))
    assert tcloss(target[:, :1], W).item() == 0.0 and mpjve(target[:, :1], target[:, :1]).item() == 0.0


def test_temporal_losses_skip_pairs_touching_padding():
    target = torch.zeros(1, 4, 17, 3)
    pred = target.clone()
    pred[0, 3] += 1.0  # frame 3 is padding
    batch = {"targets_3d": target, "mask": torch.tensor([[True, True, True, False]])}
    assert LOSSES["tcloss"]({"pose_3d": pred}, batch).item() == 0.0
    assert LOSSES["mpjve"]({"pose_3d": pred}, batch).item() == 0.0
    assert LOSSES["mpjve"]({"pose_3d": pred}, {"targets_3d": target}).item() > 0.0


# --- official checkpoints -------------------------------------------------------------------------------


def official_shapes(frames: int, joints: int, dim: int, depth: int, hidden: int) -> dict[str, tuple]:
    """Parameter names and shapes of the official MixSTE2 (common/model_cross.py) as run.py builds it."""
    shapes = {"Spatial_patch_to_embedding.weight": (dim, 2), "Spatial_patch_to_embedding.bias": (dim,),
              "Spatial_pos_embed": (1, joints, dim), "Temporal_pos_embed": (1, frames, dim)}
    for stack in ("STEblocks", "TTEblocks"):
        for i in range(depth):
            p = f"{stack}.{i}."
            shapes.update({p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
                           p + "attn.qkv.weight": (3 * dim, dim), p + "attn.qkv.bias": (3 * dim,),
                           p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
                           p + "norm2.weight": (dim,), p + "norm2.bias": (dim,),
                           p + "mlp.fc1.weight": (hidden, dim), p + "mlp.fc1.bias": (hidden,),
                           p + "mlp.fc2.weight": (dim, hidden), p + "mlp.fc2.bias": (dim,)})
    for norm in ("Spatial_norm", "Temporal_norm", "head.0"):
        shapes.update({f"{norm}.weight": (dim,), f"{norm}.bias": (dim,)})
    shapes.update({"head.1.weight": (3, dim), "head.1.bias": (3,)})
    return shapes


def official_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int) -> torch.Tensor:
    """An independent reading of the official forward, on the official key names (reference for the test)."""
    def lin(t, p):
        return F.linear(t, sd[p + ".weight"], sd[p + ".bias"])

    def norm(t, p, eps=1e-6):
        return F.layer_norm(t, t.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)

    def block(t, p):  # t: (S, N, D)
        s, n, d = t.shape
        qkv = lin(norm(t, p + ".norm1"), p + ".attn.qkv").reshape(s, n, 3, heads, d // heads)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        attn = torch.softmax(q @ k.transpose(-1, -2) * (d // heads) ** -0.5, dim=-1)
        t = t + lin((attn @ v).transpose(1, 2).reshape(s, n, d), p + ".attn.proj")
        return t + lin(F.gelu(lin(norm(t, p + ".norm2"), p + ".mlp.fc1")), p + ".mlp.fc2")

    b, f, j, _ = x.shape
    d = sd["Spatial_pos_embed"].shape[-1]
    depth = len({k.split(".")[1] for k in sd if k.startswith("STEblocks.")})
    t = lin(x.reshape(b * f, j, 2), "Spatial_patch_to_embedding") + sd["Spatial_pos_embed"]
    for i in range(depth):
        t = norm(block(t, f"STEblocks.{i}"), "Spatial_norm")
        t = t.reshape(b, f, j, d).transpose(1, 2).reshape(b * j, f, d)
        if i == 0:
            t = t + sd["Temporal_pos_embed"][:, :f]
        t = norm(block(t, f"TTEblocks.{i}"), "Temporal_norm")
        t = t.reshape(b, j, f, d).transpose(1, 2).reshape(b * f, j, d)
    return lin(norm(t, "head.0", eps=1e-5), "head.1").reshape(b, f, j, 3)


def random_official(frames=9, dim=16, depth=2, hidden=32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {k: 0.3 * torch.randn(s, generator=g) for k, s in official_shapes(frames, 17, dim, depth, hidden).items()}


@pytest.mark.parametrize("t", [9, 5])
def test_official_state_dict_converts_loads_strict_and_matches_official_forward(t):
    official = random_official()
    config, state = convert_official_state_dict(official, num_heads=2)
    assert config == {"num_frames": 9, "num_joints": 17, "in_chans": 2, "embed_dim": 16, "depth": 2,
                      "mlp_ratio": 2.0, "qkv_bias": True, "num_heads": 2}
    model = MixSTE(**config).eval()
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, t, 17, 2)
    with torch.no_grad():
        ours = model(x)["pose_3d"]
    torch.testing.assert_close(ours, official_forward(official, x, heads=2), rtol=1e-4, atol=1e-5)


def test_dataparallel_checkpoint_converts_to_the_same_state():
    official = random_official()
    checkpoint = {"epoch": 120, "lr": 1e-5, "model_pos": {"module." + k: v for k, v in official.items()}}
    assert convert_official_state_dict(checkpoint, num_heads=2)[0] == convert_official_state_dict(
        official, num_heads=2)[0]
    _, a = convert_official_state_dict(checkpoint, num_heads=2)
    _, b = convert_official_state_dict(official, num_heads=2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_official_paper_shapes_give_the_paper_model():
    with torch.device("meta"):
        official = {k: torch.empty(s) for k, s in official_shapes(243, 17, 512, 8, 1024).items()}
        config, state = convert_official_state_dict(official)
        model = MixSTE(**config)
    assert (config["num_frames"], config["embed_dim"], config["depth"], config["mlp_ratio"]) == (243, 512, 8, 2.0)
    assert count_parameters(model) == sum(v.numel() for v in official.values()) == 33_783_811


def test_conversion_rejects_other_layouts():
    official = random_official()
    with pytest.raises(ValueError, match="missing"):
        convert_official_state_dict({k: v for k, v in official.items() if k != "Temporal_norm.bias"})
    with pytest.raises(ValueError, match="unexpected"):  # the older MixSTE class had a weighted_mean conv
        convert_official_state_dict({**official, "weighted_mean.weight": torch.zeros(9, 9, 1)})
    with pytest.raises(ValueError, match="not a MixSTE"):
        convert_official_state_dict({"fc.weight": torch.zeros(3, 3)})
    bad = dict(official)
    bad["head.1.weight"] = torch.zeros(51, 16)  # the older class predicted all joints from one token
    with pytest.raises(ValueError, match="wrong shapes"):
        convert_official_state_dict(bad)
