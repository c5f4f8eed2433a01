"""Checkpoints (poselift.training.checkpoint), ``poselift.load_model`` and ``poselift import-checkpoint``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from poselift.training.checkpoint import load_model, read_checkpoint, rng_state, save_checkpoint, set_rng_state
from poselift.errors import InputError
from poselift.lifting.videopose3d import TemporalConvNet


def _vp3d():
    torch.manual_seed(0)
    model = TemporalConvNet(filter_widths=[3, 3], channels=16, dropout=0.25)
    for m in model.modules():  # non-trivial batch-norm statistics, so eval mode matters
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_a_checkpoint_round_trips_and_loads_as_a_ready_model(tmp_path):
    model = _vp3d()
    path = tmp_path / "c.pt"
    args = {"filter_widths": [3, 3], "channels": 16, "dropout": 0.25}
    save_checkpoint(path, {"model": "videopose3d", "args": args, "window": 9, "state_dict": model.state_dict(),
                           "epoch": 3, "metrics": {"val_mpjpe": 50.5}})
    raw = torch.load(path, weights_only=True)
    assert (raw["format"], raw["version"], raw["epoch"], raw["metrics"]) == ("poselift.training.checkpoint", 1, 3,
                                                                             {"val_mpjpe": 50.5})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # atomic: no temporary left behind
    loaded = load_model(path)
    assert isinstance(loaded, TemporalConvNet) and not loaded.training
    x = torch.randn(4, 9, 17, 2)
    assert torch.equal(loaded(x)["pose_3d"], model(x)["pose_3d"])


def test_foreign_damaged_and_unsafe_files_are_one_line_input_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_checkpoint(tmp_path / "absent.pt")
    torch.save({"model_pos": {"w": torch.ones(1)}}, tmp_path / "official.pt")
    with pytest.raises(InputError, match="not a poselift checkpoint .*import-checkpoint"):
        read_checkpoint(tmp_path / "official.pt")
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": "videopose3d", "args": {}, "state_dict": {}})
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:100])
    with pytest.raises(InputError, match="not a readable torch checkpoint"):
        read_checkpoint(tmp_path / "cut.pt")
    torch.save({"format": "poselift.training.checkpoint", "code": InputError("x", "y")}, tmp_path / "unsafe.pt")
    with pytest.raises(InputError, match=r"refused by torch.load\(weights_only=True\): Unsupported global") as e:
        read_checkpoint(tmp_path / "unsafe.pt")
    assert "\n" not in str(e.value)
    save_checkpoint(tmp_path / "other.pt", {"model": "no-such-model", "args": {}, "state_dict": {}})
    with pytest.raises(InputError, match="unknown model class 'no-such-model'"):
        load_model(tmp_path / "other.pt")
    save_checkpoint(tmp_path / "wrong.pt", {"model": "videopose3d", "args": {"channels": 8}, "state_dict": {}})
    with pytest.raises(InputError, match="state_dict does not fit videopose3d"):
        load_model(tmp_path / "wrong.pt")


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    save_checkpoint(tmp_path / "r.pt", {"model": "m", "args": {}, "state_dict": {}, "rng": rng_state()})
    first = torch.rand(5), np.random.rand(5), np.random.randn(3)
    torch.manual_seed(99)
    np.random.seed(99)
    set_rng_state(read_checkpoint(tmp_path / "r.pt")["rng"])
    again = torch.rand(5), np.random.rand(5), np.random.randn(3)
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1]) and np.array_equal(first[2], again[2])


def test_import_poselift_stays_light_and_exports_load_model():
    code = ("import sys, poselift; assert 'torch' not in sys.modules, 'torch imported'; "
            "f = poselift.load_model; assert 'torch' not in sys.modules, 'torch imported'; print(f.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "poselift.training.checkpoint"


# --- official checkpoints ------------------------------------------------------------------------------------

def _official_file(path, weights, data_parallel: bool):
    """What the official run.py scripts save: weights under model_pos beside the epoch, lr, optimiser
    and the batch generator's numpy RandomState state."""
    weights = {("module." if data_parallel else "") + k: v.clone() for k, v in weights.items()}
    params = [v for v in weights.values() if v.is_floating_point()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    torch.save({"epoch": 80, "lr": 1.5e-5, "random_state": np.random.RandomState(1234).get_state(),
                "optimizer": optimizer.state_dict(), "model_pos": weights}, path)
    return path


def _import(run_cli, fmt, source, out, *extra):
    code, stdout, err = run_cli("import-checkpoint", "--format", fmt, source, out, *extra)
    assert code == 0, err
    return read_checkpoint(out)


def test_import_videopose3d(tmp_path, run_cli):
    model = _vp3d()
    source = _official_file(tmp_path / "pretrained_h36m_cpn.bin", model.state_dict(), data_parallel=False)
    ckpt = _import(run_cli, "videopose3d", source, tmp_path / "vp3d.pt")
    assert (ckpt["model"], ckpt["window"], ckpt["epoch"]) == ("videopose3d", 9, 80)
    assert ckpt["args"]["filter_widths"] == [3, 3] and ckpt["args"]["channels"] == 16
    x = torch.randn(3, 9, 17, 2)
    assert torch.equal(load_model(tmp_path / "vp3d.pt")(x)["pose_3d"], model(x)["pose_3d"])


def test_import_mixste(tmp_path, run_cli):
    from poselift.lifting.mixste import OFFICIAL_NAMES, MixSTE

    torch.manual_seed(0)
    model = MixSTE(num_frames=9, embed_dim=16, depth=2, num_heads=8).eval()
    ours_to_official = {v: k for k, v in OFFICIAL_NAMES.items()}

    def official(key):
        for ours, theirs in ours_to_official.items():
            if key.startswith(ours):
                return theirs + key[len(ours):]
        return key

    weights = {official(k): v for k, v in model.state_dict().items()}
    assert "STEblocks.0.attn.qkv.weight" in weights and "Spatial_pos_embed" in weights
    source = _official_file(tmp_path / "best_epoch.bin", weights, data_parallel=True)
    ckpt = _import(run_cli, "mixste", source, tmp_path / "mixste.pt", "--arg", "num_heads=8")
    assert (ckpt["model"], ckpt["window"], ckpt["args"]["num_frames"]) == ("mixste", 9, 9)
    x = torch.randn(2, 9, 17, 2)
    torch.testing.assert_close(load_model(tmp_path / "mixste.pt")(x)["pose_3d"], model(x)["pose_3d"], rtol=0, atol=0)


def test_import_poseformer(tmp_path, run_cli):
    from poselift.lifting.sta import PoseFormer

    torch.manual_seed(0)
    model = PoseFormer(num_frames=9, embed_dim_ratio=16, depth=2, num_heads=8).eval()
    source = _official_file(tmp_path / "detected81f.bin", model.state_dict(), data_parallel=True)
    ckpt = _import(run_cli, "poseformer", source, tmp_path / "pf.pt")
    assert (ckpt["model"], ckpt["window"]) == ("poseformer", 9)
    x = torch.randn(2, 9, 17, 2)
    torch.testing.assert_close(load_model(tmp_path / "pf.pt")(x)["pose_3d"], model(x)["pose_3d"], rtol=0, atol=0)


def test_import_refuses_the_wrong_format_and_files_without_weights(tmp_path, run_cli):
    source = _official_file(tmp_path / "vp3d.bin", _vp3d().state_dict(), data_parallel=False)
    code, _, err = run_cli("import-checkpoint", "--format", "mixste", source, tmp_path / "out.pt")
    assert code == 2 and f"{source}: not a mixste checkpoint" in err and err.count("\n") == 1
    assert not (tmp_path / "out.pt").exists()
    torch.save({"epoch": 3, "notes": "no weights here"}, tmp_path / "empty.bin")
    code, _, err = run_cli("import-checkpoint", "--format", "videopose3d", tmp_path / "empty.bin", tmp_path / "out.pt")
    assert code == 2 and "no state dict of tensors found (top-level keys: epoch, notes" in err
    torch.save({"model_pos": {"w": torch.ones(1)}, "hook": InputError("a", "b")}, tmp_path / "code.bin")
    code, _, err = run_cli("import-checkpoint", "--format", "videopose3d", tmp_path / "code.bin", tmp_path / "out.pt")
    assert code == 2 and "refused by torch.load(weights_only=True)" in err
    assert not (tmp_path / "out.pt").exists()
