"""Lifting by Image (poselift.lifting.lbi, the image_lifting task, poselift detect --features): Eq. 2 against
a hand computation and its normalisation switch; the feature selection keeps exactly round(r x HW) of the
highest-scored tokens (all of them at r = 1); a frozen Stage 1 gets no gradient in Stage 2; a tiny model
learns through `poselift train` (Stage 1, then Stage 2 on the frozen Stage 1) and `poselift evaluate` writes
the lifting files with the background-attention share; the features file round-trips, is keyed by view and
frame and holds the detector's own map; the background share is 0 / 1 at the extremes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from poselift.camera import Camera
from poselift.data.crop_file import CropWriter, View
from poselift.data.crops import to_frame
from poselift.data.features import FeatureFile, FeatureWriter
from poselift.data.images import encode_image
from poselift.data.prepared import PreparedDataset, Sequence, content_hash, write_prepared
from poselift.errors import InputError
from poselift.lifting.lbi import LBIStage1, LiftingByImage
from poselift.lifting.lbi.pose_guided import PoseGuidedLayer, dual_attention
from poselift.lifting.lbi.pruning import kept_count, select_tokens
from poselift.lifting.lbi.transformer import heads, merge
from poselift.training.tasks.image_lifting import background_share, token_centres

CROP = (32, 24)  # stored crops (H, W)
FEATURES = (4, 8, 6)  # (C, h, w): stride 4
TINY = {"feature_channels": 4, "feature_size": [8, 6], "dim": 16, "heads": 2, "mlp_ratio": 2.0, "dropout": 0.0}


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --- Eq. 2 ------------------------------------------------------------------------------------------------

def test_eq2_matches_a_hand_computation_and_uses_one_attention_map_both_ways():
    q = np.array([[1.0, 0.0], [0.5, -1.0]])  # N = 2 keypoints, c = 2
    k = np.array([[1.0, 1.0], [0.0, 2.0], [-1.0, 0.5]])  # M = 3 image tokens
    v_i = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 1.0]])
    v_j = np.array([[2.0, 0.0], [-1.0, 4.0]])
    a = softmax(q @ k.T / np.sqrt(2), axis=1)  # over the image tokens
    t = [torch.tensor(x) for x in (q, k, v_i, v_j)]
    upd_j, upd_i, a_got, a_i = dual_attention(*t, normalisation="before")
    np.testing.assert_allclose(a_got.numpy(), a, rtol=1e-12)
    np.testing.assert_allclose(upd_j.numpy(), a @ v_i, rtol=1e-12)
    np.testing.assert_allclose(upd_i.numpy(), a.T @ v_j, rtol=1e-12)  # the same A, transposed
    np.testing.assert_allclose(a_i.numpy(), a.T)
    # an image token's update is weighted by its column sum of A (normalised before the transpose)
    np.testing.assert_allclose(a_i.numpy().sum(axis=1), a.sum(axis=0))

    # "after": transposed, then normalised over the keypoints: every image token gets a unit-weight update
    _, upd_after, a_after, a_i_after = dual_attention(*t, normalisation="after")
    np.testing.assert_allclose(a_after.numpy(), a)  # the keypoints' side is unchanged
    np.testing.assert_allclose(a_i_after.numpy(), softmax((q @ k.T / np.sqrt(2)).T, axis=1), rtol=1e-12)
    np.testing.assert_allclose(a_i_after.numpy().sum(axis=1), 1.0)
    assert not np.allclose(upd_after.numpy(), a.T @ v_j)
    # "double": A^T re-normalised over the keypoints
    _, upd_double, _, a_i_double = dual_attention(*t, normalisation="double")
    np.testing.assert_allclose(a_i_double.numpy(), a.T / a.T.sum(axis=1, keepdims=True), rtol=1e-12)
    assert not np.allclose(upd_double.numpy(), a.T @ v_j)
    with pytest.raises(ValueError):
        dual_attention(*t, normalisation="sideways")


def test_the_pose_guided_layer_updates_both_sides_with_the_attention_it_returns():
    torch.manual_seed(0)
    layer = PoseGuidedLayer(dim=8, num_heads=2, dropout=0.0).eval()
    t_j, t_i = torch.randn(3, 17, 8), torch.randn(3, 20, 8)
    with torch.no_grad():
        new_j, new_i, a = layer(t_j, t_i)
        x = layer.norm_self(t_j)
        mid = t_j + layer.self_attn(x, x)[0]
        xj, xi = layer.norm_query(mid), layer.norm_image(t_i)
        want_i = t_i + layer.out_image(merge(a.transpose(-2, -1) @ heads(layer.v_joint(xj), 2)))
        want_j = mid + layer.out_joint(merge(a @ heads(layer.v_image(xi), 2)))
        want_j = want_j + layer.ffn(layer.norm_ffn(want_j))
    assert a.shape == (3, 2, 17, 20)
    torch.testing.assert_close(a.sum(-1), torch.ones(3, 2, 17))
    torch.testing.assert_close(new_i, want_i)
    torch.testing.assert_close(new_j, want_j)


def test_the_normalisation_order_changes_the_image_update_only():
    torch.manual_seed(1)
    before = PoseGuidedLayer(8, 2, normalisation="before").eval()
    after = PoseGuidedLayer(8, 2, normalisation="after").eval()
    after.load_state_dict(before.state_dict())
    t_j, t_i = torch.randn(2, 17, 8), torch.randn(2, 30, 8)
    with torch.no_grad():
        jb, ib, ab = before(t_j, t_i)
        ja, ia, aa = after(t_j, t_i)
    torch.testing.assert_close(jb, ja)
    torch.testing.assert_close(ab, aa)
    assert (ib - ia).abs().max() > 1e-3


# --- feature selection, Stage 2 ----------------------------------------------------------------------------

@pytest.mark.parametrize("r, m, k", [(0.3, 768, 230), (0.01, 3072, 31), (0.1, 48, 5), (1.0, 48, 48), (0.001, 48, 1)])
def test_pruning_keeps_round_r_hw_of_the_highest_scored_tokens(r, m, k):
    assert kept_count(r, m) == k
    torch.manual_seed(2)
    attention = torch.softmax(torch.randn(4, 3, 17, m), dim=-1)
    tokens = torch.randn(4, m, 5)
    kept, index, scores = select_tokens(attention, tokens, r)
    assert kept.shape == (4, k, 5) and index.shape == (4, k)
    torch.testing.assert_close(scores, attention.mean(1).sum(1))
    for b in range(4):
        assert set(index[b].tolist()) == set(np.argsort(-scores[b].numpy(), kind="stable")[:k].tolist())
        rest = np.setdiff1d(np.arange(m), index[b].numpy())
        if len(rest):
            assert scores[b, index[b]].min() >= scores[b, rest].max()
        torch.testing.assert_close(kept[b], tokens[b, index[b]])
    with pytest.raises(ValueError):
        kept_count(0.0, 10)


def test_stage2_with_r_1_sees_every_image_token():
    torch.manual_seed(3)
    model = LiftingByImage(**TINY, retention=1.0, refine_depth=1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 17, 2), torch.randn(2, *FEATURES))
    m = FEATURES[1] * FEATURES[2]
    assert model.kept_tokens == m
    assert [sorted(row) for row in out["kept"].tolist()] == [list(range(m))] * 2
    assert out["pose_3d"].shape == (2, 1, 17, 3) and out["attention"].shape == (2, 2, 17, m)


def test_a_residual_stage2_starts_at_the_coarse_pose():
    torch.manual_seed(9)
    model = LiftingByImage(**TINY, residual=True).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 17, 2), torch.randn(2, *FEATURES))
    torch.testing.assert_close(out["pose_3d"], out["pose_3d_coarse"])
    plain = LiftingByImage(**TINY).eval()
    with torch.no_grad():
        out = plain(torch.randn(2, 17, 2), torch.randn(2, *FEATURES))
    assert not torch.allclose(out["pose_3d"], out["pose_3d_coarse"])


def test_a_frozen_stage1_gets_no_gradient_in_stage2():
    from poselift.training.stage import freeze

    torch.manual_seed(4)
    model = LiftingByImage(**TINY, retention=0.3)
    before = {k: v.clone() for k, v in model.stage1.state_dict().items()}
    freeze(model, ["stage1"], "params.yaml")
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        out = model(torch.randn(4, 17, 2), torch.randn(4, *FEATURES))
        loss = (out["pose_3d"] ** 2).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert all(p.grad is None for p in model.stage1.parameters())
    assert all(p.grad is not None for p in model.refiner.parameters())
    for k, v in model.stage1.state_dict().items():
        torch.testing.assert_close(v, before[k])
    # the stage-1 preset's weights load into the stage-2 model's submodule (init: {stage1: 1})
    model.stage1.load_state_dict(LBIStage1(**TINY).state_dict())


def test_switches_build_the_ablations():
    m = LBIStage1(**TINY, layers=["plain", "plain", "plain"])  # Table 6 / Tables 1, 5: without the PGTL
    assert [type(layer).__name__ for layer in m.layers] == ["TransformerLayer"] * 3
    m = LBIStage1(**TINY, layers=["pose_guided", "plain"], normalisation="separate")
    assert type(m.layers[0]).__name__ == "PoseGuidedLayer" and hasattr(m.layers[0], "q_image")
    out = m(torch.randn(1, 17, 2), torch.randn(1, *FEATURES))
    assert out["pose_3d"].shape == (1, 1, 17, 3)
    with pytest.raises(ValueError):
        LBIStage1(**TINY, layers=["plain", "fancy"])


# --- background-attention share --------------------------------------------------------------------------

def test_background_share_is_0_on_the_joints_and_1_off_them():
    size, crop = (64, 48), (256, 192)
    centres = token_centres(size, crop)
    np.testing.assert_allclose(centres[:2], [[1.5, 1.5], [5.5, 1.5]])  # spec L7: 4j + 1.5
    joints = np.tile(np.array([[96.0, 128.0]]), (1, 17, 1))  # every joint at the crop's centre
    near = np.argmin(np.linalg.norm(centres - joints[0, 0], axis=1))
    far = np.argmax(np.linalg.norm(centres - joints[0, 0], axis=1))
    on = np.zeros((1, 17, size[0] * size[1]))
    on[..., near] = 1.0
    off = np.zeros_like(on)
    off[..., far] = 1.0
    assert background_share(on, joints, size, crop)[0] == 0.0
    assert background_share(off, joints, size, crop)[0] == 1.0
    half = 0.5 * on + 0.5 * off
    assert background_share(half[:, None].repeat(2, axis=1), joints, size, crop)[0] == pytest.approx(0.5)
    # 30 px at 256x192 is 15 px of a 128x96 crop
    small = np.tile(np.array([[48.0, 64.0]]), (1, 17, 1))
    c = token_centres((32, 24), (128, 96))
    at20 = np.argmin(np.abs(np.linalg.norm(c - small[0, 0], axis=1) - 20))
    att = np.zeros((1, 17, 32 * 24))
    att[..., at20] = 1
    assert background_share(att, small, (32, 24), (128, 96))[0] == 1.0


# --- features file -------------------------------------------------------------------------------------------

def test_the_features_file_round_trips_keyed_by_view_and_frame(tmp_path):
    rng = np.random.default_rng(0)
    maps = {"S1/Walk/c1": (np.array([0, 2, 4]), rng.normal(size=(3, *FEATURES))),
            "S1/Walk/c2": (np.array([1, 3]), rng.normal(size=(2, *FEATURES)))}
    path = tmp_path / "f.h5"
    with FeatureWriter(path, {"detector": "hrnet", "settings": {"a": 1}, "stride": 4, "feature_map": "x",
                              "input_size": [32, 24], "crop_size": list(CROP), "crops": "c.h5",
                              "prepared": "abc"}) as w:
        for key, (frame, f) in maps.items():
            w.add(key, frame, f)
    f = FeatureFile(path)
    assert f.views == sorted(maps) and f.counts == {"S1/Walk/c1": 3, "S1/Walk/c2": 2} and len(f) == 5
    assert f.shape == FEATURES and f.stride == 4 and f.settings == {"a": 1} and f.prepared == "abc"
    for key, (frame, want) in maps.items():
        got_frame, got = f.view(key)
        np.testing.assert_array_equal(got_frame, frame)
        assert got.dtype == np.float16
        np.testing.assert_allclose(got, want.astype(np.float16))
    assert f.read(["S1/Walk/c2"])["S1/Walk/c2"][0].tolist() == [1, 3]
    with pytest.raises(InputError, match="no view 'S1/Walk/c3'"):
        f.view("S1/Walk/c3")
    other = tmp_path / "other.h5"
    write_prepared(other, toy_dataset([("S1", "Walk", "train", 4)]))
    with pytest.raises(InputError, match="not a poselift features file") as e:
        FeatureFile(other)
    assert "\n" not in str(e.value)
    # a failed write leaves nothing behind
    with pytest.raises(ValueError):
        with FeatureWriter(tmp_path / "bad.h5", {"detector": "x"}) as w:
            w.add("a/b/c", np.arange(2), rng.normal(size=(3, *FEATURES)))
    assert not (tmp_path / "bad.h5").exists() and not list(tmp_path.glob(".bad.h5*"))


# --- toy data: the task end to end ----------------------------------------------------------------------------

SEQUENCES = [("S1", "Walk", "train", 48), ("S5", "Eat", "train", 48), ("S6", "Walk", "validation", 12),
             ("S9", "Walk", "test", 12)]
CAMERAS = ("c1",)


def toy_dataset(sequences) -> PreparedDataset:
    """3D poses that are a function of the 2D (camera = world, so the targets are these joints, root-relative):
    a tiny lifter can learn them. 2D in frame pixels; the crops cut frame -> crop by a scale 1/4 + offset."""
    rng = np.random.default_rng(5)
    cams = {"c1": Camera(R=np.eye(3), T=np.zeros(3), f=[100.0, 100.0], c=[64.0, 64.0], width=128, height=128,
                         name="c1")}
    seqs = []
    for subject, name, split, n in sequences:
        uv = rng.uniform(-1, 1, (n, 17, 2))
        xyz = np.concatenate([uv * 400, (uv[..., :1] * uv[..., 1:]) * 300], axis=-1) + [0, 0, 4000]
        pixels = (uv + 1) * 40 + 20  # frame px, inside the crop box at (16, 16) .. (16 + 96, 16 + 128)
        seqs.append(Sequence(subject, name, action=name, split=split, rig="rig", cameras=["c1"],
                             positions_3d=xyz.astype(np.float32), positions_2d=pixels[None].astype(np.float32)))
    return PreparedDataset("toy", 50.0, {"rig": cams}, seqs)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("lbi")
    prepared = root / "toy.h5"
    data = toy_dataset(SEQUENCES)
    write_prepared(prepared, data)
    crops, features = root / "crops.h5", root / "features.h5"
    rng = np.random.default_rng(6)
    affine = np.array([[0.25, 0, -4.0], [0, 0.25, -4.0]])  # frame -> crop: the box from (16, 16), 1/4 scale
    with CropWriter(crops, "render", content_hash(prepared), {"toy": True}, crop_size=CROP, codec="png") as cw, \
            FeatureWriter(features, {"detector": "hrnet", "settings": {}, "stride": 4, "feature_map": "toy",
                                     "input_size": list(CROP), "crop_size": list(CROP), "crops": str(crops),
                                     "prepared": content_hash(prepared)}) as fw:
        for seq in data.sequences:
            frames = np.arange(seq.num_frames)
            kp_frame = seq.positions_2d[0]
            kp = kp_frame * 0.25 - 4.0
            images = [encode_image(rng.integers(0, 255, (*CROP, 3)).astype(np.uint8), "png") for _ in frames]
            key = f"{seq.key}/c1"
            cw.add(View(key=key, frame=frames, keypoints=kp.astype(np.float32),
                        keypoints_frame=np.stack([to_frame(k, affine) for k in kp]).astype(np.float32),
                        affine=np.tile(affine, (len(frames), 1, 1)), box=np.tile([16, 16, 112, 144], (len(frames), 1)),
                        visibility=np.ones((len(frames), 17), np.float32), crops=images))
            fw.add(key, frames, rng.normal(size=(len(frames), *FEATURES)))
    params = root / "params.yaml"
    stage = {"name": "stage1", "model": "tiny-1", "epochs": 12, "batch_size": 16, "lr": 3e-3, "optimizer": "adam",
             "losses": {"lbi_coarse": 1.0}, "validation_crops": 12}
    params.write_text(yaml.safe_dump({
        "datasets": {"toy": {"reader": "h36m", "validation_split": "validation"}},
        "models": {"tiny-1": {"class": "lbi-stage1", **TINY},
                   "tiny-2": {"class": "lbi", **TINY, "refine_depth": 1, "retention": 0.3}},
        "experiments": {"x": {"dataset": "toy", "stages": [
            stage, {**stage, "name": "stage2", "model": "tiny-2", "epochs": 3, "init": {"stage1": 1},
                    "freeze": ["stage1"], "losses": {"lbi_refined": 1.0}}]}}}))
    return {"root": root, "prepared": prepared, "crops": crops, "features": features, "params": params}


def inputs(toy):
    return ["--input", f"prepared={toy['prepared']}", "--input", "detections=none", "--input",
            f"crops={toy['crops']}", "--input", f"features={toy['features']}"]


def test_a_tiny_model_learns_through_the_task_then_stage2_and_evaluation(toy, run_cli):
    root = toy["root"]
    common = ["--params", toy["params"], "--experiment", "x", *inputs(toy), "--device", "cpu",
              "--tracking-uri", "off"]
    code, _, err = run_cli("train", *common, "--stage", 1, "--out", root / "stage1")
    assert code == 0, err
    h1 = json.loads((root / "stage1" / "history.json").read_text())["epochs"]
    assert h1[-1]["loss"] < 0.6 * h1[0]["loss"]
    assert min(e["val_mpjpe"] for e in h1) < 0.8 * h1[0]["val_mpjpe"]
    stage1 = torch.load(root / "stage1" / "checkpoint.pt", weights_only=True)["state_dict"]

    code, _, err = run_cli("train", *common, "--stage", 2, "--out", root / "stage2", "--init",
                           f"1={root / 'stage1' / 'checkpoint.pt'}")
    assert code == 0, err
    ckpt = torch.load(root / "stage2" / "checkpoint.pt", weights_only=True)
    for k, v in stage1.items():  # Stage 1 frozen: bit-identical inside the Stage-2 model
        torch.testing.assert_close(ckpt["state_dict"][f"stage1.{k}"], v, rtol=0, atol=0)
    assert json.loads((root / "stage2" / "history.json").read_text())["epochs"][-1]["terms"].keys() == {"lbi_refined"}

    out = root / "evaluation"
    code, stdout, err = run_cli("evaluate", "--params", toy["params"], "--experiment", "x", *inputs(toy),
                                "--checkpoint", root / "stage2" / "checkpoint.pt", "--out", out, "--device", "cpu",
                                "--tracking-uri", "off")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 12 and np.isfinite(metrics["mpjpe"])
    assert 0.0 <= metrics["background_attention"] <= 1.0
    assert metrics["image_tokens"] == 48 and metrics["kept_tokens"] == 14
    assert (out / "attention.png").read_bytes()[:4] == b"\x89PNG"
    assert {"per_action.csv", "predictions.npz", "targets.npz"} <= {p.name for p in out.iterdir()}


def test_features_that_do_not_fit_the_model_are_one_line_errors(toy, run_cli, tmp_path):
    params = yaml.safe_load(toy["params"].read_text())
    params["models"]["tiny-1"]["feature_channels"] = 5
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    code, _, err = run_cli("train", "--params", path, "--experiment", "x", *inputs(toy), "--stage", 1, "--out",
                           tmp_path / "s1", "--device", "cpu", "--tracking-uri", "off")
    assert code == 2 and "do not fit the model's [5, 8, 6]" in err and len(err.strip().splitlines()) == 1


# --- poselift detect --features ---------------------------------------------------------------------------

def test_detect_writes_the_networks_own_map_and_the_same_detections(toy, run_cli, tmp_path):
    from poselift.data.detections import load_detections
    from poselift.detection.augment import normalise
    from poselift.detection.hrnet import HRNet
    from poselift.training.checkpoint import save_checkpoint

    args = {"width": 4, "stage_modules": [1, 1, 1], "blocks": 1, "stage1_blocks": 1, "stem_width": 8}
    torch.manual_seed(7)
    net = HRNet(**args).eval()
    checkpoint = tmp_path / "hrnet.pt"
    save_checkpoint(checkpoint, {"model": "hrnet", "args": args, "state_dict": net.state_dict(), "task": "heatmaps",
                                 "input_size": list(CROP), "stage": {"input_size": list(CROP)}})
    base = ["detect", "--prepared", toy["prepared"], "--detector", "hrnet", "--checkpoint", checkpoint, "--images",
            toy["crops"], "--device", "cpu"]
    code, _, err = run_cli(*base, "--out", tmp_path / "plain.h5")
    assert code == 0, err
    code, stdout, err = run_cli(*base, "--out", tmp_path / "det.h5", "--features", tmp_path / "f.h5",
                                "--batch-size", 5)
    assert code == 0, err
    plain, det = load_detections(tmp_path / "plain.h5"), load_detections(tmp_path / "det.h5")
    for key in plain.keypoints:
        np.testing.assert_array_equal(plain.keypoints[key], det.keypoints[key])
    f = FeatureFile(tmp_path / "f.h5")
    assert f.shape == (4, CROP[0] // 4, CROP[1] // 4) and f.input_size == CROP and f.detector == "hrnet"
    assert f.views == [f"{s}/{n}/c1" for s, n, _, _ in sorted(SEQUENCES)]
    from poselift.data.crop_file import CropFile

    crops = CropFile(toy["crops"])
    key = "S6/Walk/c1"
    frame, maps = f.view(key)
    np.testing.assert_array_equal(frame, crops.view(key).frame)
    images = np.stack([crops.crop(key, i) for i in range(len(frame))])
    with torch.no_grad():
        want = net(normalise(images, CROP))["features"].numpy()
    np.testing.assert_allclose(maps.astype(np.float32), want, rtol=1e-2, atol=1e-2)
    code, _, err = run_cli("detect", "--prepared", toy["prepared"], "--detector", "gt", "--out", tmp_path / "g.h5",
                           "--features", tmp_path / "g-f.h5")
    assert code == 2 and "--features" in err and not (tmp_path / "g-f.h5").exists()


def test_a_model_with_its_own_encoder_reads_the_crops_and_trains_it(toy):
    from poselift.training.tasks.image_lifting import ImageLiftingTask

    task = ImageLiftingTask({"prepared": toy["prepared"], "detections": None, "crops": toy["crops"],
                             "features": None}, torch.device("cpu"))
    samples = task.samples("train", with_features=False)
    assert samples.features is None and len(samples) == 96
    hrnet = {"width": 4, "stage_modules": [1, 1, 1], "blocks": 1, "stage1_blocks": 1, "stem_width": 8}
    torch.manual_seed(8)
    model = LiftingByImage(**TINY, encoder=hrnet, refine_depth=1)  # end-to-end: nothing frozen
    out, targets, n = task.step(model, task.batch(samples, np.arange(4)))
    assert n == 4 and out["pose_3d"].shape == targets["targets_3d"].shape == (4, 1, 17, 3)
    task.losses["lbi_refined"](out, targets).backward()
    assert model.stage1.encoder.final_layer.weight.grad is None  # heatmaps are not used
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.stage1.encoder.parameters())
    with pytest.raises(InputError, match="needs 'features'"):
        task.samples("train")
