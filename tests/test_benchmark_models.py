"""benchmarks/models.py: FLOP and parameter counts checked against hand counts (no timing is tested)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_models", REPO / "benchmarks" / "models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


class PerFrameLinear(nn.Module):
    """nn.Linear(34, 51) on every frame: 2 x 34 x 51 FLOPs per output pose."""

    output_frames = "all"

    def __init__(self, num_frames: int = 1):
        super().__init__()
        self.num_frames, self.num_joints = num_frames, 17
        self.linear = nn.Linear(34, 51)

    def forward(self, inputs_2d):
        return {"pose_3d": self.linear(inputs_2d.flatten(2)).unflatten(-1, (17, 3))}


def test_linear_flops_are_two_per_multiply_add(bench):
    flops, frames_out = bench.count_flops(PerFrameLinear(), frames=1)
    assert (flops, frames_out) == (2 * 34 * 51, 1)
    assert bench.count_parameters(PerFrameLinear()) == 34 * 51 + 51


@pytest.mark.parametrize("frames", [1, 5])
def test_seq2seq_flops_per_pose_divide_by_output_frames(bench, monkeypatch, frames):
    monkeypatch.setitem(bench.MODELS, "toy", PerFrameLinear)
    row = bench.measure(bench.Preset("toy", "toy", {"num_frames": frames}, "cpu", 8), torch.device("cpu"),
                        rate=None, seconds=0.0, limit=0.0)
    assert (row.frames_in, row.frames_out) == (frames, frames)
    assert row.flops_per_window == frames * 2 * 34 * 51
    assert row.flops_per_pose == 2 * 34 * 51
    assert row.poses_per_s is None and row.train_step_ms is None  # rate None: nothing timed


PARAMS = """
models:
  tcn-paper: {class: videopose3d, filter_widths: [3, 3], channels: 8, dropout: 0.0}
  tcn-other: {class: videopose3d, filter_widths: [3], channels: 8}
  tcn-cpu: {class: videopose3d, filter_widths: [3], channels: 4}
  mlp-cpu: {class: martinez, linear_size: 64, num_blocks: 2}
experiments:
  a: {stages: [{name: s, model: tcn-paper, batch_size: 1024}]}
  b: {stages: [{name: s, model: tcn-cpu, batch_size: 64}]}
"""


@pytest.fixture
def params(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS)
    return path


def test_presets_take_the_batch_of_the_stage_that_trains_them(bench, params):
    presets = {p.name: p for p in bench.load_presets(params)}
    assert list(presets) == ["tcn-paper", "tcn-other", "tcn-cpu", "mlp-cpu"]
    assert presets["tcn-paper"].train_batch == 1024  # its own stage
    assert presets["tcn-other"].train_batch == 1024  # a stage of the same class and kind
    assert presets["tcn-cpu"].train_batch == 64
    assert presets["mlp-cpu"].train_batch == bench.DEFAULT_TRAIN_BATCH  # no stage of its class
    assert [p.kind for p in presets.values()] == ["paper", "paper", "cpu", "cpu"]
    chosen = bench.select(list(presets.values()), "videopose3d,mlp-cpu")
    assert [p.name for p in chosen] == ["tcn-paper", "tcn-other", "tcn-cpu", "mlp-cpu"]
    with pytest.raises(SystemExit, match="unknown model"):
        bench.select(list(presets.values()), "nope")


def test_flops_only_run_matches_hand_counts(bench, params, tmp_path, capsys):
    out = tmp_path / "figures.json"
    bench.main(["--flops-only", "--threads", "1", "--params", str(params), "--models", "tcn-paper,mlp-cpu",
                "--json", str(out)])
    rows = {r["preset"]: r for r in json.loads(out.read_text())["models"]}
    assert "tcn-paper" in capsys.readouterr().out

    # VideoPose3D, widths [3, 3], 8 channels, 17 joints, one 9-frame window (strided): expand conv 3 positions
    # x 8 x 34 x 3 MACs, dilated conv 8 x 8 x 3, pointwise 8 x 8, shrink 51 x 8 (biases are not counted).
    tcn = rows["tcn-paper"]
    assert (tcn["frames_in"], tcn["frames_out"]) == (9, 1)
    assert tcn["flops_per_window"] == tcn["flops_per_pose"] == 2 * (3 * 8 * 34 * 3 + 8 * 8 * 3 + 8 * 8 + 51 * 8)
    # On a sequence of N + 8 frames (no strides): N + 6 expand positions, N of everything else.
    n = bench.DENSE_OUTPUTS
    dense = 2 * ((n + 6) * 8 * 34 * 3 + n * (8 * 8 * 3 + 8 * 8 + 51 * 8))
    assert tcn["dense_flops_per_pose"] == pytest.approx(dense / n)
    assert tcn["params"] == 8 * 34 * 3 + 8 * 8 * 3 + 8 * 8 + 51 * 8 + 51 + 3 * 2 * 8  # convs, shrink bias, 3 BNs

    # Martinez, 64 wide, 2 residual blocks: Linear 34->64, 4 x 64->64, 64->48 (16 joints x 3).
    mlp = rows["mlp-cpu"]
    assert mlp["flops_per_window"] == mlp["flops_per_pose"] == 2 * (34 * 64 + 4 * 64 * 64 + 64 * 48)
    assert mlp["params"] == (34 * 64 + 64) + 4 * (64 * 64 + 64) + (64 * 48 + 48) + 5 * 2 * 64  # + 5 BNs


def test_inference_is_reported_as_a_share_of_the_gemm_and_bf16_is_marked_where_there_are_no_units(bench, monkeypatch):
    monkeypatch.setitem(bench.MODELS, "toy", PerFrameLinear)
    preset = bench.Preset("toy", "toy", {"num_frames": 1}, "cpu", 8)
    row = bench.measure(preset, torch.device("cpu"), rate=1e12, seconds=0.01, limit=1.0,
                        gemm={"fp32": 2.0, "bf16": None})
    assert row.gemm_share == pytest.approx(row.poses_per_s * 2 * 34 * 51 / 1e9 / 2.0)
    assert row.poses_per_s_bf16 is None and row.gemm_share_bf16 is None
    assert bench.table([row]).splitlines()[1].count("no bf16 units") == 2
    row = bench.measure(preset, torch.device("cpu"), rate=1e12, seconds=0.01, limit=1.0,
                        gemm={"fp32": 2.0, "bf16": 4.0})  # bf16 timed under autocast whatever this CPU has
    assert row.gemm_share_bf16 == pytest.approx(row.poses_per_s_bf16 * 2 * 34 * 51 / 1e9 / 4.0)
    assert "no bf16 units" not in bench.table([row])


def test_the_shipped_presets_are_the_lifting_models_only(bench):
    """A plain run (no --models) times every 2D-to-3D preset; the detectors and Lifting by Image, which read
    pixels or image features, have benchmarks/detectors.py and benchmarks/lbi.py (and broke this run)."""
    classes = {p.cls for p in bench.load_presets(bench.PARAMS)}
    assert {"pot", "pot-ugrn", "mixste", "sta", "poseformer", "videopose3d", "martinez"} == classes
