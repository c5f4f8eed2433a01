"""Size and speed of every lifting model at its paper and CPU presets.

    python benchmarks/models.py [--quick] [--device cpu|cuda] [--models pot,mixste-cpu] [--threads 2]
                                [--seconds S] [--max-call-seconds C] [--compile] [--json OUT]

Presets are params.yaml's ``models`` section (names ending in ``-cpu`` are the CPU configs, the others the
papers'). ``--models`` selects by class name (``pot``, ``mixste``, ...; see poselift.models.MODELS) or preset
name. For each preset it prints:

- params: trainable parameters.
- FLOPs per window: forward FLOPs of one input window of T_in frames (B = 1), counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on the meta device. These are FLOPs, not MACs: a matmul or
  convolution counts 2 x its multiply-adds. Only matmuls, convolutions and attention kernels are counted;
  softmax, norms, activations and other elementwise work are not. FLOPs / pose divides by the output poses
  T_out (T for seq2seq models, 1 for centre-frame ones).
- Inference throughput: output poses per second (windows/s x T_out) in eval mode under torch.no_grad, at a
  batch grown from 1 (the probe calls warm up) until one call takes about S/4, timed over at least S seconds;
  beside it the achieved GFLOP/s (poses/s x FLOPs/pose) as a share of a 2048^2 GEMM timed in the same run
  (benchmarks/gemm.py), so figures of noisy or different machines compare.
- bf16: the same throughput under ``poselift --precision bf16`` (bf16 autocast, the model's first and last
  layers in fp32: poselift.precision), its share of a 2048^2 bf16 GEMM, and its speed-up over fp32; where
  the device has no bf16 units (poselift.precision.bf16_support) the columns read "no bf16 units".
- Training step: ms per forward + backward + AdamW step in train mode, at the batch size of the params.yaml
  stage that trains the preset ("typical"). Where that batch would make a step slower than about S/2 the
  step is timed at a smaller batch (a power of two) and the typical-batch time is extrapolated linearly
  (marked ``~``). The loss is MPJPE on ``pose_3d`` plus the mean square of every other output (so the
  backward pass covers every head).

- ``--compile``: the same model through ``torch.compile`` (TorchInductor, :mod:`poselift.compilation`, the
  stage key ``compile`` and ``poselift evaluate --compile``), timed at the eager run's inference and training
  batches: compile seconds (the first call of each, in which Inductor generates and builds its kernels),
  poses/s and ms per training step, and each as a speed-up over eager.

A measurement whose single call at the smallest batch is estimated to take longer than C =
``--max-call-seconds`` (inference: FLOPs / the measured matmul rate; training: 3 x the measured inference
time) is skipped and listed with its estimate; a call that turns out slower than C is timed once (after one warm-up call).
Centre-frame models with a receptive field (VideoPose3D) are timed on one window each; on a whole sequence
they compute far fewer FLOPs per pose (printed below the table). Figures on a shared CPU are noisy: other
processes compete for the cores.

Run as a script, it sets OMP_WAIT_POLICY=PASSIVE unless the environment sets it. With OpenMP's default
(threads spin while waiting) and 2 threads on 2 cores that other processes also use, a small model's
forward was ~100x slower here (POT-L, batch 1: 1.85 s instead of 6 ms); passive waiting removes that.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __name__ == "__main__":  # before torch loads OpenMP, which reads it once (see the docstring)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from torch.utils.flop_counter import FlopCounterMode

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/gemm.py, also when loaded by path (tests)
from gemm import gemm_gflops  # noqa: E402

from poselift.experiments import ModelSpec, model_spec, read_params
from poselift.lifting.layers import count_parameters
from poselift.models import MODELS
from poselift.precision import Precision, bf16_support

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
DEFAULT_TRAIN_BATCH = 256  # for presets no params.yaml stage trains, nor any stage of the same class
DENSE_OUTPUTS = 2048  # output frames for the whole-sequence FLOPs of models with a receptive field
MAX_BATCH = 4096


@dataclass
class Preset:
    name: str
    cls: str
    args: dict
    kind: str  # "paper" | "cpu"
    train_batch: int  # the typical training batch (windows)


@dataclass
class Row:
    preset: str
    cls: str
    kind: str
    frames_in: int
    frames_out: int
    params: int
    flops_per_window: float
    flops_per_pose: float
    dense_flops_per_pose: float | None = None  # receptive-field models run on a whole sequence
    infer_batch: int | None = None
    poses_per_s: float | None = None
    train_batch: int | None = None
    train_batch_typical: int | None = None
    train_step_ms: float | None = None
    train_step_ms_typical: float | None = None  # extrapolated when train_batch < train_batch_typical
    gemm_share: float | None = None  # achieved inference FLOP/s / the fp32 2048^2 GEMM's
    poses_per_s_bf16: float | None = None  # under bf16 autocast (None: not timed)
    gemm_share_bf16: float | None = None  # its FLOP/s / the bf16 2048^2 GEMM's
    compile_s: float | None = None  # --compile: the compiled model's first inference call (the compile)
    poses_per_s_compiled: float | None = None
    compile_train_s: float | None = None  # its first training step (compiles forward and backward)
    train_step_ms_compiled: float | None = None  # at train_batch
    notes: str = ""  # measurements skipped or timed on one call


# --- presets --------------------------------------------------------------------------------------


def load_presets(path: Path = PARAMS) -> list[Preset]:
    """params.yaml's lifting-model presets (2D keypoints in, 3D out), each with the batch size its training
    stage uses. The 2D detectors (task "heatmaps": benchmarks/detectors.py) and Lifting by Image (task
    "image_lifting", which reads image features too: benchmarks/lbi.py) have benchmarks of their own."""
    params = read_params(path)
    stages = [s for e in (params.get("experiments") or {}).values() for s in e.get("stages", [])]
    presets = []
    specs = [model_spec(params, name, path) for name in params.get("models") or {}]
    specs = [spec for spec in specs if getattr(MODELS[spec.cls], "task", "lifting") == "lifting"]
    for spec in specs:
        kind = "cpu" if spec.preset.endswith("-cpu") else "paper"
        batch = _typical_batch(params, stages, spec, kind)
        presets.append(Preset(spec.preset, spec.cls, dict(spec.args), kind, batch))
    return presets


def _typical_batch(params: dict, stages: list[dict], spec: ModelSpec, kind: str) -> int:
    """Batch of the first stage training this preset, else of one training the same class and kind."""
    for stage in stages:
        if stage.get("model") == spec.preset:
            return int(stage["batch_size"])
    for stage in stages:
        other = str(stage.get("model"))
        same_class = (params.get("models") or {}).get(other, {}).get("class") == spec.cls
        if same_class and other.endswith("-cpu") == (kind == "cpu"):
            return int(stage["batch_size"])
    return DEFAULT_TRAIN_BATCH


def select(presets: list[Preset], names: str | None) -> list[Preset]:
    if not names:
        return presets
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if not any(n in (p.name, p.cls) for p in presets)]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; classes: {', '.join(MODELS)}; "
                         f"presets: {', '.join(p.name for p in presets)}")
    return [p for p in presets if p.name in wanted or p.cls in wanted]


# --- counting -------------------------------------------------------------------------------------


def input_frames(model: torch.nn.Module) -> int:
    """Frames of one input window: the receptive field, else ``num_frames``, else 1 (single-frame)."""
    if hasattr(model, "receptive_field"):
        return int(model.receptive_field())
    return int(getattr(model, "num_frames", 1))


def count_flops(model: torch.nn.Module, frames: int, num_joints: int = 17) -> tuple[float, int]:
    """(forward FLOPs of one window of ``frames`` frames, output poses T_out) for ``model``.

    Runs a copy of the model on the meta device (no arithmetic, no memory) under FlopCounterMode, which
    counts FLOPs (2 per multiply-add) of matmuls, convolutions and attention only.
    """
    meta = copy.deepcopy(model).to("meta").eval()
    inputs = torch.zeros(1, frames, num_joints, 2, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = meta(inputs)
    return float(counter.get_total_flops()), int(out["pose_3d"].shape[1])


# --- timing ---------------------------------------------------------------------------------------


def matmul_rate(device: torch.device, seconds: float = 0.2) -> float:
    """FLOP/s of a (256 x 1024) @ (1024 x 1024) float32 matmul: a ceiling, for skipping hopeless calls."""
    a, b = torch.randn(256, 1024, device=device), torch.randn(1024, 1024, device=device)
    calls, elapsed = repeat(lambda: a @ b, device, seconds, warmup=seconds / 4)
    return 2 * 256 * 1024 * 1024 * calls / elapsed


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(fn, device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def repeat(fn, device: torch.device, seconds: float, warmup: float = 0.0) -> tuple[int, float]:
    """Call ``fn`` for ``warmup`` seconds (0: no warm-up), then for at least ``seconds`` and at least
    once; returns (calls, elapsed seconds) of the timed part."""
    start = time.perf_counter()
    while warmup and time.perf_counter() - start < warmup:
        timed_call(fn, device)
    calls, start = 0, time.perf_counter()
    while True:
        timed_call(fn, device)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls, elapsed


def grow_batch(make, device: torch.device, low: int, high: int, target: float, limit: float) -> tuple[int, float]:
    """The batch in [low, high] (a power of two, or ``high``) whose call takes about ``target`` seconds.

    ``make(b)`` returns a function running one call at batch ``b``. Starts at ``low`` and jumps by the
    measured ratio; each batch size is called once to warm up (one-off allocations, kernel selection), then
    timed. Stops early when a call takes over ``limit`` seconds, and keeps the last batch that fitted when
    the device runs out of memory. Returns (batch, seconds of its timed probe call).
    """
    batch, call = low, make(low)
    timed_call(call, device)
    while True:
        seconds = timed_call(call, device)
        if seconds >= target / 2 or batch >= high or seconds > limit:
            return batch, seconds
        larger = _batch(batch * max(2.0, target / max(seconds, 1e-6)), low, high)
        try:
            call = make(larger)
            timed_call(call, device)
        except torch.cuda.OutOfMemoryError:
            return batch, seconds
        batch = larger


def time_inference(model, frames: int, frames_out: int, device, seconds: float,
                   limit: float, precision=None) -> tuple[int, float, bool]:
    """(batch, output poses per second, timed on one call only) in eval mode without autograd, at a
    batch whose call takes about ``seconds / 4``; with a :class:`poselift.precision.Precision`, under it."""
    model.eval()
    joints = model_joints(model)
    run = precision.run if precision is not None else (lambda fn, x: fn(x))

    def make(batch):
        inputs = torch.randn(batch, frames, joints, 2, device=device) * 0.3
        return lambda: run(model, inputs)

    with torch.no_grad():
        batch, probe = grow_batch(make, device, 1, MAX_BATCH, seconds / 4, limit)
        if probe > limit:
            return batch, batch * frames_out / probe, True  # one call: too slow to repeat
        calls, elapsed = repeat(make(batch), device, seconds)
    return batch, calls * batch * frames_out / elapsed, False


def training_step(model, batch: int, frames: int, frames_out: int, device, optimizer, joints: int):
    """One training step at ``batch`` (forward, MPJPE + the square of every other output, backward, step)."""
    inputs = torch.randn(batch, frames, joints, 2, device=device) * 0.3
    targets = torch.randn(batch, frames_out, joints, 3, device=device) * 0.2

    def step():
        optimizer.zero_grad(set_to_none=True)
        out = model(inputs)
        loss = (out["pose_3d"] - targets).norm(dim=-1).mean()  # MPJPE
        loss = loss + sum((v.float() ** 2).mean() for k, v in out.items() if k != "pose_3d")
        loss.backward()
        optimizer.step()

    return step


def time_training(model, frames: int, frames_out: int, device, seconds: float, limit: float,
                  low: int, high: int) -> tuple[int, float, bool]:
    """(batch, seconds per training step: forward, backward, AdamW step, timed on one step only) in
    train mode; the batch is ``high`` or a power of two >= ``low`` whose step takes about ``seconds / 2``."""
    model.train()
    joints = model_joints(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def make(batch):
        return training_step(model, batch, frames, frames_out, device, optimizer, joints)

    batch, probe = grow_batch(make, device, low, high, seconds / 2, limit)
    if probe > limit:
        return batch, probe, True  # one step: too slow to repeat
    calls, elapsed = repeat(make(batch), device, seconds)
    return batch, elapsed / calls, False


def time_compiled(model, row: Row, device, seconds: float) -> None:
    """``torch.compile(model)`` timed at the row's inference and training batches (fixed shapes: each new
    shape would compile again); fills the row's compile fields."""
    from poselift.compilation import compile_model

    compiled, joints = compile_model(model, device, "--compile"), model_joints(model)
    if row.infer_batch is not None:
        model.eval()
        inputs = torch.randn(row.infer_batch, row.frames_in, joints, 2, device=device) * 0.3
        with torch.no_grad():
            row.compile_s = timed_call(lambda: compiled(inputs), device)
            calls, elapsed = repeat(lambda: compiled(inputs), device, seconds, warmup=seconds / 4)
        row.poses_per_s_compiled = calls * row.infer_batch * row.frames_out / elapsed
    if row.train_batch is not None:
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        step = training_step(compiled, row.train_batch, row.frames_in, row.frames_out, device, optimizer, joints)
        row.compile_train_s = timed_call(step, device)
        calls, elapsed = repeat(step, device, seconds, warmup=seconds / 4)
        row.train_step_ms_compiled = 1e3 * elapsed / calls


def model_joints(model) -> int:
    return int(getattr(model, "num_joints", None) or getattr(getattr(model, "pot", None), "num_joints", 17))


def min_train_batch(model) -> int:
    """BatchNorm in train mode needs more than one value per channel: 2 windows with one output frame."""
    return 2 if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()) else 1


# --- one preset -----------------------------------------------------------------------------------


def measure(preset: Preset, device: torch.device, rate: float | None, seconds: float, limit: float,
            gemm: dict | None = None, compiled: bool = False) -> Row:
    """Parameters, FLOPs and (unless ``rate`` is None) inference and training speed of one preset; with
    ``gemm`` ({"fp32": GFLOP/s, "bf16": GFLOP/s or None (no bf16 units)}) the inference's share of each, the
    bf16 one timed under bf16 autocast.

    A measurement is skipped when its one call at the smallest batch is estimated to exceed ``limit``
    seconds: by FLOPs / ``rate`` (the matmul rate) for inference, and by the inference speed just measured
    (x 3 for forward + backward) for training.
    """
    torch.manual_seed(0)
    model = MODELS[preset.cls](**preset.args)
    joints = model_joints(model)
    frames = input_frames(model)
    flops, frames_out = count_flops(model, frames, joints)
    row = Row(preset.name, preset.cls, preset.kind, frames, frames_out, count_parameters(model), flops,
              flops / frames_out, train_batch_typical=preset.train_batch)
    if frames > 1 and hasattr(model, "receptive_field"):  # e.g. dilated convolutions on a whole sequence
        dense, outputs = count_flops(model, frames + DENSE_OUTPUTS - 1, joints)
        row.dense_flops_per_pose = dense / outputs
    if rate is None:
        return row
    model.to(device)
    skipped, window_seconds = [], flops / rate
    if window_seconds > limit:
        skipped.append(f"inference not timed: ~{window_seconds:.1f} s/call at batch 1 (FLOPs / matmul rate)")
    else:
        row.infer_batch, row.poses_per_s, cold = time_inference(model, frames, frames_out, device, seconds, limit)
        if cold:
            skipped.append(f"inference timed on one call only (> {limit:g} s)")
        window_seconds = frames_out / row.poses_per_s
        if gemm is not None:
            row.gemm_share = row.poses_per_s * row.flops_per_pose / 1e9 / gemm["fp32"]
            if gemm.get("bf16"):
                bf16 = Precision("bf16", device.type)
                low = bf16.prepare(copy.deepcopy(model))
                _, row.poses_per_s_bf16, _ = time_inference(low, frames, frames_out, device, seconds, limit, bf16)
                row.gemm_share_bf16 = row.poses_per_s_bf16 * row.flops_per_pose / 1e9 / gemm["bf16"]
    if count_parameters(model) == 0:
        skipped.append("training: none (no parameters)")
        return _done(row, skipped)
    low = min(min_train_batch(model), preset.train_batch)
    if 3 * window_seconds * low > limit:
        skipped.append(f"training not timed: ~{3 * window_seconds * low:.1f} s/step at batch {low} "
                       "(3 x inference)")
        return _done(row, skipped)
    row.train_batch, step, cold = time_training(model, frames, frames_out, device, seconds, limit, low,
                                                preset.train_batch)
    if cold:
        skipped.append(f"training timed on one step only (> {limit:g} s)")
    row.train_step_ms = 1e3 * step
    row.train_step_ms_typical = 1e3 * step * preset.train_batch / row.train_batch
    if compiled:
        time_compiled(model, row, device, seconds)
    return _done(row, skipped)


def _batch(value: float, low: int, high: int) -> int:
    """``value`` rounded down to a power of two in [low, high]."""
    return int(min(high, max(low, 2 ** math.floor(math.log2(max(value, 1.0))))))


def _done(row: Row, skipped: list[str]) -> Row:
    row.notes = "; ".join(skipped)
    return row


# --- output ---------------------------------------------------------------------------------------


def si(value: float | None, digits: int = 3) -> str:
    """1234567 -> '1.23M'."""
    if value is None:
        return "-"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{unit}"
    return f"{value:.{digits}g}"


COLUMNS = [  # header, width, row -> text
    ("preset", 16, lambda r: r.preset),
    ("kind", 6, lambda r: r.kind),
    ("T_in", 5, lambda r: str(r.frames_in)),
    ("T_out", 6, lambda r: str(r.frames_out)),
    ("params", 8, lambda r: si(r.params)),
    ("FLOPs/win", 10, lambda r: si(r.flops_per_window)),
    ("FLOPs/pose", 11, lambda r: si(r.flops_per_pose)),
    ("inf.batch", 10, lambda r: si(r.infer_batch)),
    ("poses/s", 9, lambda r: si(r.poses_per_s)),
    ("%GEMM", 7, lambda r: percent(r.gemm_share)),
    ("bf16 poses/s", 13, lambda r: si(r.poses_per_s_bf16) if r.gemm_share_bf16 is not None else NO_BF16(r)),
    ("%bf16GEMM", 10, lambda r: percent(r.gemm_share_bf16) if r.gemm_share_bf16 is not None else NO_BF16(r)),
    ("bf16/fp32", 10, lambda r: "-" if r.poses_per_s_bf16 is None else f"{r.poses_per_s_bf16 / r.poses_per_s:.2f}x"),
    ("train batch", 12, lambda r: "-" if r.train_batch is None else f"{r.train_batch}/{r.train_batch_typical}"),
    ("step", 9, lambda r: duration(r.train_step_ms)),
    ("step@typical", 13, lambda r: ("~" if r.train_batch not in (None, r.train_batch_typical) else "")
        + duration(r.train_step_ms_typical)),
]


def NO_BF16(row: Row) -> str:  # noqa: N802 -- a column's text where bf16 was not timed
    return "no bf16 units" if row.gemm_share is not None else "-"


def percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def duration(ms: float | None) -> str:
    """Milliseconds as '12.3ms' / '4.56s'."""
    if ms is None:
        return "-"
    return f"{ms:.3g}ms" if ms < 1e3 else f"{ms / 1e3:.3g}s"


def table(rows: list[Row]) -> str:
    def line(cells):
        return cells[0].ljust(COLUMNS[0][1]) + "".join(c.rjust(w) for c, (_, w, _) in zip(cells[1:], COLUMNS[1:]))

    out = [line([h for h, _, _ in COLUMNS])]
    out += [line([fmt(r) for _, _, fmt in COLUMNS]) for r in rows]
    notes = [f"  {r.preset}: {r.dense_flops_per_pose / 1e6:.4g} MFLOPs/pose on a whole sequence "
             f"({DENSE_OUTPUTS} outputs from {r.frames_in + DENSE_OUTPUTS - 1} frames, no strides)"
             for r in rows if r.dense_flops_per_pose is not None]
    notes += [f"  {r.preset}: {r.notes}" for r in rows if r.notes]
    text = "\n".join(out + (["notes:"] + notes if notes else []))
    compiled = [r for r in rows if r.compile_s is not None or r.compile_train_s is not None]
    if compiled:
        text += "\n\ntorch.compile (TorchInductor) at the same batches:\n" + compile_table(compiled)
    return text


def compile_table(rows: list[Row]) -> str:
    def ratio(new, old, inverse=False):
        if new is None or old is None:
            return "-"
        return f"{(old / new if inverse else new / old):.2f}x"

    head = ["preset", "compile", "poses/s", "vs eager", "train compile", "step", "vs eager"]
    widths = [16, 9, 10, 10, 15, 10, 10]
    lines = [head[0].ljust(widths[0]) + "".join(h.rjust(w) for h, w in zip(head[1:], widths[1:]))]
    for r in rows:
        cells = [r.preset, "-" if r.compile_s is None else f"{r.compile_s:.1f}s", si(r.poses_per_s_compiled),
                 ratio(r.poses_per_s_compiled, r.poses_per_s),
                 "-" if r.compile_train_s is None else f"{r.compile_train_s:.1f}s",
                 duration(r.train_step_ms_compiled), ratio(r.train_step_ms_compiled, r.train_step_ms, inverse=True)]
        lines.append(cells[0].ljust(widths[0]) + "".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:])))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short measurements (whole run < 1 min on 2 cores)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--models", help="comma-separated classes or presets (default: all)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--seconds", type=float, help="time per measurement (default 1.5, --quick 0.25)")
    parser.add_argument("--max-call-seconds", type=float,
                        help="skip measurements whose one call is estimated longer (default 5, --quick 0.5)")
    parser.add_argument("--flops-only", action="store_true", help="parameters and FLOPs only, no timing")
    parser.add_argument("--params", type=Path, default=PARAMS, help="params.yaml with the model presets")
    parser.add_argument("--compile", action="store_true",
                        help="also time each model through torch.compile (TorchInductor), with its compile time")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.25 if args.quick else 1.5)
    limit = args.max_call_seconds or (0.5 if args.quick else 5.0)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available to this torch ({torch.__version__})")
    presets = select(load_presets(args.params), args.models)
    rate = None if args.flops_only else matmul_rate(device)
    gemm = None if args.flops_only else gemm_yardstick(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    timing = "no timing" if rate is None else (f"matmul {rate / 1e9:.1f} GFLOP/s, {seconds:g} s per measurement"
                                               f"{', quick' if args.quick else ''}")
    if gemm is not None:
        bf16 = f"{gemm['bf16']:.1f} GFLOP/s" if gemm["bf16"] else f"no bf16 units ({gemm['bf16_why']})"
        timing += f"; 2048^2 GEMM fp32 {gemm['fp32']:.1f} GFLOP/s, bf16 {bf16}"
    print(f"torch {torch.__version__}, device {device} ({name}), torch threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, {timing}; "
          f"FLOPs = 2 x MACs (FlopCounterMode)")
    start, rows = time.perf_counter(), []
    for preset in presets:
        rows.append(measure(preset, device, rate, seconds, limit, gemm, compiled=args.compile and rate is not None))
    print(table(rows))
    print(f"({time.perf_counter() - start:.0f} s; throughput = output poses/s, eval mode, no_grad; "
          f"train batch = used/typical; ~ = extrapolated linearly from the used batch)")
    if args.json:
        from poselift.io import write_json

        write_json(args.json, {"torch": torch.__version__, "device": str(device), "device_name": name,
                               "threads": torch.get_num_threads(), "matmul_flops_per_s": rate,
                               "seconds": seconds, "quick": args.quick, "flops": "FLOPs (2 x MACs)",
                               "gemm_2048_gflops": gemm,
                               "models": [asdict(r) for r in rows]})


def gemm_yardstick(device: torch.device) -> dict:
    """GFLOP/s of a 2048^2 GEMM in fp32 and, where the device has bf16 units (poselift.precision), in bf16
    (else None, with the reason in "bf16_why")."""
    ok, why = bf16_support(device)
    return {"fp32": gemm_gflops(device=str(device)),
            "bf16": gemm_gflops(device=str(device), dtype=torch.bfloat16) if ok else None, "bf16_why": why}


if __name__ == "__main__":
    main()
