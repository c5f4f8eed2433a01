"""Training as the papers' code does, and the ablation switches (issue 12): stage keys of the lifting task,
UG-SA's unit, POT's max-norm weight constraint, MixSTE's loss-scaled gradient and evaluation root, and the
POT / UGRN / MixSTE switches of the papers' ablation tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from poselift.errors import InputError
from poselift.experiments import _Checker
from poselift.lifting.losses import LOSSES
from poselift.lifting.mixste import MixSTE
from poselift.lifting.pot import (POT, POTUGRN, UGRN, MultiHeadAttention, PoseOrientedAttention,
                                  UncertaintyGuidedAttention, apply_weight_max_norm)
from poselift.metrics import evaluate, joint_errors
from poselift.training.tasks.lifting import FLIP_MODES, LiftingTask, batch_loss, loss_scaled_terms

POT_TINY = dict(dim=16, heads=2, mlp_ratio=1.5, dropout=0.0)


# --- stage keys ---------------------------------------------------------------------------------------------

def _options(**given):
    raw = {**LiftingTask.stage_keys, **given}
    return LiftingTask.check_stage_options(raw, _Checker("params.yaml"), "experiments.x.stages[1]")


def test_flip_augment_true_is_the_official_both_and_random_is_kept():
    assert FLIP_MODES[_options(flip_augment=True)["flip_augment"]] == "both"
    assert FLIP_MODES[_options(flip_augment="random")["flip_augment"]] == "random"
    assert FLIP_MODES[_options()["flip_augment"]] is None
    with pytest.raises(InputError, match=r"stages\[1\]\.flip_augment: expected true, false or random"):
        _options(flip_augment="sometimes")
    with pytest.raises(InputError, match="flip_augment"):
        _options(flip_augment=1)


def test_mixste_options_are_checked():
    o = _options(loss_scaled_gradient=True, evaluation_root="gt-only")
    assert (o["loss_scaled_gradient"], o["evaluation_root"]) == (True, "gt-only")
    assert (_options()["loss_scaled_gradient"], _options()["evaluation_root"]) == (False, "aligned")
    with pytest.raises(InputError, match="evaluation_root"):
        _options(evaluation_root="root")
    with pytest.raises(InputError, match="loss_scaled_gradient"):
        _options(loss_scaled_gradient="yes")


# --- MixSTE: loss-scaled gradient and evaluation root ------------------------------------------------------

@pytest.mark.parametrize("model_name", ["mixste", "pot-ugrn"])
def test_loss_scaled_gradient_is_the_official_backward(model_name):
    """The scaled terms' backward == run.py's loss.backward(loss.clone().detach()), also for a model whose
    outputs feed each other (POT+UGRN: Y~ is an output and UGRN's input), and the logged values stay L."""
    torch.manual_seed(0)
    if model_name == "mixste":
        model = MixSTE(num_frames=5, embed_dim=8, depth=1, num_heads=2, drop_path_rate=0.0)
        weights = {"wmpjpe": 1.0, "tcloss": 0.5, "mpjve": 2.0}
        x, batch = torch.randn(2, 5, 17, 2), {"targets_3d": torch.randn(2, 5, 17, 3) * 0.3}
    else:
        model = POTUGRN(pot_depth=1, ugrn_depth=1, ug_sampling=False, **POT_TINY)
        weights = {"pot_stage1": 1.0, "pot_refine": 1.0, "pot_uncertainty": 0.001}
        x, batch = torch.randn(4, 1, 17, 2), {"targets_3d": torch.randn(4, 1, 17, 3) * 0.3}
    scaled_losses = loss_scaled_terms(LOSSES)

    def grads(scaled: bool):
        model.zero_grad()
        out = model(x)
        targets = dict(batch)
        if scaled:
            targets["loss_scale"] = batch_loss(out, targets, weights, LOSSES)
        terms = scaled_losses if scaled else LOSSES
        loss = sum(w * terms[n](out, targets) for n, w in weights.items())
        loss.backward() if scaled else loss.backward(loss.clone().detach())
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    loss, official = grads(False)
    loss2, ours = grads(True)
    assert loss2 == loss and abs(loss - 1) > 0.1  # the logged value is L itself; L != 1, so scaling shows
    for a, b in zip(ours, official):
        torch.testing.assert_close(a, b)
    model.zero_grad()
    plain = sum(w * LOSSES[n](model(x), batch) for n, w in weights.items())
    plain.backward()
    for a, p in zip(official, model.parameters()):  # scaled by L, not 1
        torch.testing.assert_close(a, p.grad * loss)


def test_gt_only_root_counts_the_predicted_root_offset():
    gt = np.zeros((2, 17, 3))
    gt[:, :, 0] = np.arange(17)  # root at x = 0
    gt += [10.0, 20.0, 30.0]  # not root-relative: the ground-truth root is moved to 0 in both modes
    pred = gt - gt[:, :1]
    pred[0] += [3.0, 4.0, 0.0]  # frame 0: the whole prediction shifted by 5 mm (root included)
    np.testing.assert_allclose(joint_errors(pred, gt), 0.0, atol=1e-12)  # Protocol 1 removes the shift
    np.testing.assert_allclose(joint_errors(pred, gt, "gt-only"), [[5.0] * 17, [0.0] * 17])
    assert evaluate(pred, gt, root="gt-only")["mpjpe"] == pytest.approx(2.5)
    assert evaluate(pred, gt)["mpjpe"] == pytest.approx(0.0, abs=1e-9) and evaluate(pred, gt)["root"] == "aligned"
    with pytest.raises(ValueError, match="root"):
        joint_errors(pred, gt, "pred")


# --- UG-SA's temperature -----------------------------------------------------------------------------------

def test_ug_sa_attends_the_same_with_sigma_in_metres_or_millimetres():
    torch.manual_seed(0)
    metres = UncertaintyGuidedAttention(16, 2, 0.0).eval()  # sigma in metres (the default)
    mm = UncertaintyGuidedAttention(16, 2, 0.0, sigma_unit=1e-3).eval()  # the same model fed sigma in mm
    mm.load_state_dict(metres.state_dict())
    x = torch.randn(3, 17, 16)
    sigma = torch.rand(3, 17, 3) * 0.05 + 1e-3
    torch.testing.assert_close(mm(x, sigma * 1000), metres(x, sigma))
    assert not torch.allclose(metres(x, sigma * 1000), metres(x, sigma), atol=1e-3)  # Eq. 11 has a unit
    relative = UncertaintyGuidedAttention(16, 2, 0.0, temperature="relative").eval()
    relative.load_state_dict(metres.state_dict())
    torch.testing.assert_close(relative(x, sigma * 1000), relative(x, sigma))  # unit-free
    assert not torch.allclose(relative(x, sigma), metres(x, sigma), atol=1e-3)
    # by hand: metres divides key j's logits by Sum(sigma_j)
    q, k, v = metres.qkv(x).unflatten(-1, (3, 2, 8)).permute(2, 0, 3, 1, 4)
    a = (q @ k.transpose(-1, -2)) * 8 ** -0.5 / sigma.sum(-1)[:, None, None, :]
    heads = (a.softmax(-1) @ v).transpose(1, 2).reshape(3, 17, 16)
    torch.testing.assert_close(metres(x, sigma), metres.proj(heads))
    with pytest.raises(ValueError, match="temperature"):
        UncertaintyGuidedAttention(16, 2, 0.0, temperature="mm")


# --- POT's max-norm: the weight constraint -----------------------------------------------------------------

def test_weight_max_norm_holds_after_a_step():
    torch.manual_seed(0)
    model = POTUGRN(pot_depth=1, ugrn_depth=1, weight_max_norm=0.5, **POT_TINY)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    optimizer = torch.optim.SGD(model.parameters(), lr=10.0)
    x, target = torch.randn(4, 1, 17, 2), torch.randn(4, 1, 17, 3)
    for _ in range(2):
        loss = LOSSES["mpjpe"](model(x), {"targets_3d": target})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()  # lr 10: the step pushes weights far beyond the bound
    assert max(torch.linalg.vector_norm(m.weight, dim=1).max().item() for m in linears) > 0.6
    seen = {}
    model.pot.head.register_forward_hook(lambda m, a, o: seen.update(norm=m.weight.norm(dim=1).max().item()))
    model(x)  # the projection runs before the weights are used
    assert seen["norm"] <= 0.5 + 1e-6
    for m in linears:
        assert torch.linalg.vector_norm(m.weight, dim=1).max().item() <= 0.5 + 1e-6
    # rows within the bound are left as they are; off by default
    w = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    lin = nn.Linear(2, 2)
    lin.weight.data.copy_(w)
    apply_weight_max_norm(lin, 1.0)
    torch.testing.assert_close(lin.weight.data, torch.tensor([[0.6, 0.8], [0.3, 0.4]]))
    assert POT(**POT_TINY).weight_max_norm is None


# --- POT / UGRN ablation switches (Tables 3-5) -------------------------------------------------------------

def test_mh_sa_equals_torch_multihead_attention():
    torch.manual_seed(0)
    pot = POT(depth=1, attention="mh-sa", **POT_TINY).eval()
    attn = pot.layers[0].attn
    assert isinstance(attn, MultiHeadAttention) and not any("phi" in k for k in pot.state_dict())
    ref = nn.MultiheadAttention(16, 2, bias=True, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(attn.qkv.weight)
        ref.in_proj_bias.zero_()  # Eq. 1: no Q/K/V bias
        ref.out_proj.weight.copy_(attn.proj.weight)
        ref.out_proj.bias.copy_(attn.proj.bias)
    x = torch.randn(3, 17, 16)
    torch.testing.assert_close(attn(x, pot.hop_distance), ref(x, x, x, need_weights=False)[0])


def test_po_sa_off_is_po_sa_without_the_distance_bias():
    torch.manual_seed(0)
    po = POT(depth=2, **POT_TINY).eval()
    mh = POT(depth=2, attention="mh-sa", **POT_TINY).eval()
    mh.load_state_dict({k: v for k, v in po.state_dict().items() if ".phi." not in k})
    x = torch.randn(2, 1, 17, 2)
    assert not torch.allclose(po(x)["pose_3d"], mh(x)["pose_3d"], atol=1e-5)  # Phi(D) matters
    for layer in po.layers:  # Phi = 0: PO-SA computes plain attention
        nn.init.zeros_(layer.attn.phi[2].weight)
        nn.init.zeros_(layer.attn.phi[2].bias)
    torch.testing.assert_close(po(x)["pose_3d"], mh(x)["pose_3d"])
    with pytest.raises(ValueError, match="attention"):
        POT(attention="ug-sa", **POT_TINY)


def test_embedding_switches_remove_k_and_g():
    torch.manual_seed(0)
    full = POT(depth=1, **POT_TINY)
    names = set(full.state_dict())
    assert {"embed.keypoint", "embed.group"} <= names
    no_g = POT(depth=1, group_embedding=False, **POT_TINY)
    no_k = POT(depth=1, keypoint_embedding=False, **POT_TINY)
    assert set(no_g.state_dict()) == names - {"embed.group"}
    assert set(no_k.state_dict()) == names - {"embed.keypoint"}
    x = torch.randn(2, 1, 17, 2)
    no_g.load_state_dict({k: v for k, v in full.state_dict().items() if k != "embed.group"})
    z = full.embed.linear(x) + full.embed.keypoint
    torch.testing.assert_close(no_g.embed(x), z)
    model = POTUGRN(pot_depth=1, ugrn_depth=1, keypoint_embedding=False, group_embedding=False, **POT_TINY)
    assert model.pot.embed.keypoint is None and model.pot.embed.group is None
    assert model.ugrn.embed.keypoint is not None  # Table 3 is about POT; UGRN keeps its embeddings


def test_ug_sampling_switch():
    torch.manual_seed(0)
    x, y, z = torch.randn(2, 1, 17, 2), torch.randn(2, 1, 17, 3), torch.randn(2, 1, 17, 16)
    on = UGRN(depth=1, **POT_TINY).train()
    off = UGRN(depth=1, ug_sampling=False, **POT_TINY).train()
    off.load_state_dict(on.state_dict())
    assert not torch.equal(on(x, y, z)["pose_3d"], on(x, y, z)["pose_3d"])  # Eq. 9 noise in training
    torch.testing.assert_close(off(x, y, z)["pose_3d"], off(x, y, z)["pose_3d"])
    torch.testing.assert_close(off(x, y, z)["pose_3d"], on.eval()(x, y, z)["pose_3d"])  # off: Y- = Y~


def test_ugrn_attention_variants_run_and_differ():
    torch.manual_seed(0)
    x, y, z = torch.randn(2, 1, 17, 2), torch.randn(2, 1, 17, 3), torch.randn(2, 1, 17, 16)
    models = {a: UGRN(depth=1, attention=a, **POT_TINY).eval() for a in ("ug-sa", "po-sa", "mh-sa")}
    kinds = {a: type(m.layers[0].attn) for a, m in models.items()}
    assert kinds == {"ug-sa": UncertaintyGuidedAttention, "po-sa": PoseOrientedAttention, "mh-sa": MultiHeadAttention}
    shared = {k: v for k, v in models["ug-sa"].state_dict().items()}
    for m in models.values():
        m.load_state_dict({k: v for k, v in shared.items() if k in m.state_dict()}, strict=False)
    out = {a: m(x, y, z)["pose_3d"] for a, m in models.items()}
    assert all(torch.isfinite(o).all() for o in out.values())
    assert not torch.allclose(out["ug-sa"], out["mh-sa"], atol=1e-5)
    assert not torch.allclose(out["po-sa"], out["mh-sa"], atol=1e-5)
    two = POTUGRN(pot_depth=1, ugrn_depth=1, ugrn_attention="po-sa", pot_attention="mh-sa", ug_sampling=False,
                  **POT_TINY)
    assert isinstance(two.ugrn.layers[0].attn, PoseOrientedAttention) and not two.ugrn.ug_sampling
    assert isinstance(two.pot.layers[0].attn, MultiHeadAttention)
    with pytest.raises(ValueError, match="attention"):
        UGRN(attention="sa", **POT_TINY)


# --- MixSTE ablation switches (Table 5) ---------------------------------------------------------------------

MIX = dict(num_frames=5, embed_dim=8, depth=2, num_heads=2, drop_path_rate=0.0)


def test_mixste_seq2frame_outputs_the_centre_frame():
    torch.manual_seed(0)
    seq = MixSTE(**MIX).eval()
    frame = MixSTE(seq2seq=False, **MIX).eval()
    frame.load_state_dict(seq.state_dict())
    assert (seq.output_frames, frame.output_frames, MixSTE.output_frames) == ("all", "centre", "all")
    x = torch.randn(2, 5, 17, 2)
    out = frame(x)["pose_3d"]
    assert out.shape == (2, 1, 17, 3)
    torch.testing.assert_close(out, seq(x)["pose_3d"][:, 2:3])


def test_mixste_separate_stacks_run_spatial_then_temporal():
    torch.manual_seed(0)
    alt = MixSTE(**MIX).eval()
    sep = MixSTE(alternating=False, **MIX).eval()
    sep.load_state_dict(alt.state_dict())
    order = []
    for name, blocks in (("s", sep.spatial_blocks), ("t", sep.temporal_blocks)):
        for i, b in enumerate(blocks):
            b.register_forward_hook(lambda m, a, o, tag=f"{name}{i}": order.append(tag))
    x = torch.randn(2, 5, 17, 2)
    out = sep(x)["pose_3d"]
    assert order == ["s0", "s1", "t0", "t1"]
    assert out.shape == (2, 5, 17, 3) and not torch.allclose(out, alt(x)["pose_3d"], atol=1e-5)


def test_mixste_without_joint_separation_attends_over_frame_tokens():
    torch.manual_seed(0)
    model = MixSTE(joint_separation=False, **MIX).eval()
    shapes = []
    model.temporal_blocks[0].register_forward_hook(lambda m, a, o: shapes.append(tuple(a[0].shape)))
    separated = MixSTE(**MIX).eval()
    separated.temporal_blocks[0].register_forward_hook(lambda m, a, o: shapes.append(tuple(a[0].shape)))
    x = torch.randn(2, 5, 17, 2)
    assert model(x)["pose_3d"].shape == separated(x)["pose_3d"].shape == (2, 5, 17, 3)
    assert shapes == [(2, 5, 17 * 8), (2, 17, 5, 8)]  # T frame tokens of J d_m vs each joint's T tokens
    assert model.temporal_blocks[0].attn.qkv.in_features == 17 * 8
