"""poselift's MixSTE and PoseFormer beside the official model code: same outputs, and inference speed.

    python benchmarks/official.py [--mixste-repo DIR] [--poseformer-repo DIR] [--extra-path DIR ...]
                                  [--torchvision-without-ops] [--quick] [--threads 2] [--seconds S]
                                  [--repeats R] [--seed N] [--profile] [--compile] [--json OUT]

The official code is never part of poselift: the script imports it from the user's own checkouts,
``--mixste-repo`` (github.com/JinluZhang1126/MixSTE: ``MixSTE2`` in common/model_cross.py, which also imports
common/rela.py, common/routing_transformer.py and common/linearattention.py) and ``--poseformer-repo``
(github.com/zczcwh/PoseFormer: ``PoseTransformer`` in common/model_poseformer.py), by putting the checkout
first on sys.path while ``common.<module>`` is imported. A model whose repo is not given is skipped (the
script says so). Setting up, outside poselift's environment and never as its dependencies::

    git clone https://github.com/JinluZhang1126/MixSTE /tmp/MixSTE
    git clone https://github.com/zczcwh/PoseFormer /tmp/PoseFormer
    python -m pip install --target /tmp/officialdeps --no-deps timm einops local-attention==1.4.3 torchvision==V
    python benchmarks/official.py --mixste-repo /tmp/MixSTE --poseformer-repo /tmp/PoseFormer \\
        --extra-path /tmp/officialdeps

with V the torchvision release built for the installed torch (timm imports torchvision when it loads;
the official files import timm, einops, and MixSTE's also local_attention: 1.4.3 is the version its
requirements.yaml pins, later ones need more packages). ``--extra-path`` folders go first on sys.path, as
PYTHONPATH entries would (repeatable). Where the only torchvision wheel for this torch is a CUDA build on a
CPU-only torch (its C++ ops do not load, and ``import torchvision`` then fails registering them),
``--torchvision-without-ops`` makes that torchvision's Python modules importable without running its
package ``__init__`` (which only loads and registers those ops); timm, as the official files use it,
needs only pure-Python parts of torchvision (``ops.misc.FrozenBatchNorm2d``, ``transforms``), and
nothing here calls a torchvision op.

For each input (inference, fp32, eval mode, torch.no_grad, one process):

    MixSTE  T=243 d=512 L=8, batch 1      MixSTE  T=81 d=256 L=4, batch 16
    PoseFormer T=81, batch 64             PoseFormer T=27, batch 256

(MixSTE: ``MixSTE2`` as the official run.py builds it, 8 heads, mlp_ratio 2, qkv bias; PoseFormer: the
official defaults, embed_dim_ratio 32, depth 4, 8 heads, mlp_ratio 2; both with drop_path_rate 0 as their
evaluation model; ``--quick``: smaller inputs, listed by the run) it

1. builds the official model with its own random initialisation (``torch.manual_seed(seed)``; the position
   embeddings and LayerNorm biases, zero at initialisation, get seeded N(0, 0.02) values, so that the
   comparison covers them),
2. converts its state dict, as a run.py checkpoint holds it (``model_pos`` with DataParallel's ``module.``
   prefix), in memory with the functions ``poselift import-checkpoint`` uses
   (poselift.commands.import_checkpoint.official_weights, then poselift.models.CHECKPOINT_FORMATS[format] with
   the hint num_heads=8, build_model, load_state_dict(strict=True)),
3. runs both on one seeded input (2D keypoints ~ N(0, 0.3^2)) and prints the largest absolute difference of
   the 3D outputs; over 1e-4 it stops with exit status 1 before any timing,
4. times both: one warm-up of at least one call and S/4 seconds, then R rounds, each timing the official
   model and then poselift's for at least S seconds (at least one call) apiece, alternating, so that load
   from other processes falls on both alike.

It prints a table: output poses/s of each (the best of the R rounds; a pose is one output frame of 17
joints: T per window for MixSTE, seq2seq, and 1 for PoseFormer, centre frame), poselift/official (best over
best, and the median of the R per-round ratios), and each one's achieved GFLOP/s as a share of a 2048^2 fp32
GEMM timed in the same run (benchmarks/gemm.py; timed before and after the models, the faster of the two
counts), the figure that compares across machines and load. FLOPs per pose: ``count_flops`` of
benchmarks/models.py on poselift's model (torch.utils.flop_counter on the meta device: 2 x multiply-adds of
matmuls and attention; softmax, LayerNorm, GELU and other elementwise work not counted), divided by the
output poses of a window. The official model is counted the same way and a note is printed where the two
counts differ (they agree: it writes its attention as two matmuls where poselift calls
scaled_dot_product_attention, which the counter counts as the same FLOPs).
``--compile`` times poselift's model through ``torch.compile`` (TorchInductor, as ``poselift evaluate
--compile`` runs it; :mod:`poselift.compilation`) beside the official model as its code runs it, eager; the
compiled model's output is checked against the official one like the eager one's, and the compile time of its
first call is printed. ``--profile`` adds, per input, torch.profiler's top operators by self CPU time of one call of each model.
``--json OUT`` writes every figure (each round's rates too).

Defaults: S = 1.5 s, R = 3, torch threads 2 (``--quick``: S = 0.25 s, R = 2). The four full-size inputs take
2-5 minutes on 2 cores. Figures on a shared CPU are noisy: other processes compete for the cores, so the
GEMM-share columns and the paired median ratio are what compare. Run as a script, it sets
OMP_WAIT_POLICY=PASSIVE unless the environment sets it (see benchmarks/models.py).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __name__ == "__main__":  # before torch loads OpenMP, which reads it once (see benchmarks/models.py)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/gemm.py and models.py
from gemm import gemm_gflops  # noqa: E402
from models import count_flops  # noqa: E402

JOINTS = 17
TOLERANCE = 1e-4  # largest absolute output difference accepted (metres-scale outputs)
HEADS = 8  # both official training scripts build their models with 8 heads


@dataclass(frozen=True)
class Official:
    """Where an official model lives in its repository and how its training script builds it."""

    fmt: str  # poselift import-checkpoint --format
    module: str  # imported with the checkout first on sys.path
    cls: str
    repo: str  # for messages
    args: dict  # constructor arguments besides the size ones of a Case


OFFICIAL = {
    "mixste": Official("mixste", "common.model_cross", "MixSTE2", "JinluZhang1126/MixSTE",
                       dict(num_joints=JOINTS, in_chans=2, num_heads=HEADS, mlp_ratio=2.0, qkv_bias=True,
                            qk_scale=None, drop_path_rate=0.0)),  # run.py's evaluation model
    "poseformer": Official("poseformer", "common.model_poseformer", "PoseTransformer", "zczcwh/PoseFormer",
                           dict(num_joints=JOINTS, in_chans=2, embed_dim_ratio=32, depth=4, num_heads=HEADS,
                                mlp_ratio=2.0, qkv_bias=True, qk_scale=None, drop_path_rate=0.0)),
}


@dataclass(frozen=True)
class Case:
    model: str  # key of OFFICIAL
    frames: int
    batch: int
    size: dict = field(default_factory=dict)  # official constructor arguments of this size

    @property
    def label(self) -> str:
        if self.model == "mixste":
            return (f"MixSTE T={self.frames} d={self.size['embed_dim_ratio']} L={self.size['depth']}, "
                    f"batch {self.batch}")
        return f"PoseFormer T={self.frames}, batch {self.batch}"


CASES = [  # issue 13's inputs
    Case("mixste", 243, 1, {"embed_dim_ratio": 512, "depth": 8}),
    Case("mixste", 81, 16, {"embed_dim_ratio": 256, "depth": 4}),
    Case("poseformer", 81, 64),
    Case("poseformer", 27, 256),
]
QUICK_CASES = [  # the same models, small enough for a run of well under a minute
    Case("mixste", 27, 1, {"embed_dim_ratio": 128, "depth": 2}),
    Case("mixste", 27, 4, {"embed_dim_ratio": 64, "depth": 2}),
    Case("poseformer", 27, 8),
    Case("poseformer", 9, 32),
]


@dataclass
class Row:
    case: str
    model: str
    frames: int
    batch: int
    poses_per_call: int
    flops_per_pose: float
    official_flops_per_pose: float
    max_abs_diff: float
    official_poses_per_s: list[float] = field(default_factory=list)  # one per round
    poselift_poses_per_s: list[float] = field(default_factory=list)
    official_gemm_share: float | None = None  # of the best round
    poselift_gemm_share: float | None = None

    @property
    def ratio(self) -> float:
        return max(self.poselift_poses_per_s) / max(self.official_poses_per_s)

    @property
    def ratio_median(self) -> float:
        return statistics.median(p / o for p, o in zip(self.poselift_poses_per_s, self.official_poses_per_s))


# --- the official code -----------------------------------------------------------------------------


def allow_torchvision_without_ops() -> str:
    """Register the installed torchvision package without running its ``__init__`` (which loads its C++
    ops and registers their meta kernels, failing where the ops are a CUDA build on a CPU-only torch); its
    Python submodules then import as usual. Returns what was done, for the header."""
    if "torchvision" in sys.modules:
        return "torchvision already imported"
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        raise SystemExit("--torchvision-without-ops: no torchvision on sys.path (see --extra-path)")
    sys.modules["torchvision"] = importlib.util.module_from_spec(spec)  # the package, __init__ not run
    return f"torchvision from {spec.submodule_search_locations[0]} without its ops"


def import_official(repo: Path, spec: Official):
    """The official model class, imported from checkout ``repo`` (put first on sys.path meanwhile).

    Both repositories keep their code in a ``common`` folder without ``__init__.py``; any ``common``
    modules imported before are set aside meanwhile and restored, so the two checkouts do not mix. timm's
    FutureWarnings about the old import paths the official files use are silenced.
    """
    if not (repo / (spec.module.replace(".", "/") + ".py")).is_file():
        raise SystemExit(f"{repo}: no {spec.module.replace('.', '/')}.py; is it a checkout of {spec.repo}?")
    ours = lambda name: name == "common" or name.startswith("common.")  # noqa: E731
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if ours(name)}
    sys.path.insert(0, str(repo))
    try:
        with warnings.catch_warnings():  # timm's deprecation notes on the official files' import paths
            warnings.simplefilter("ignore", FutureWarning)
            module = importlib.import_module(spec.module)
    except ImportError as e:
        raise SystemExit(f"importing {spec.module} from {repo} failed: {type(e).__name__}: {e}\n(the official "
                         "code needs timm, einops (and MixSTE local_attention): see --extra-path and "
                         "--torchvision-without-ops in this script's docstring)") from None
    except RuntimeError as e:
        hint = " (try --torchvision-without-ops)" if "torchvision" in str(e) else ""
        raise SystemExit(f"importing {spec.module} from {repo} failed: {e}{hint}") from None
    finally:
        sys.path.remove(str(repo))
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        sys.modules.update(saved)
    return getattr(module, spec.cls)


def checkout_commit(repo: Path) -> str:
    """The checkout's commit, or why there is none."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "commit unknown"
    return out.stdout.strip()[:12] if out.returncode == 0 else "not a git checkout"


def build_official(cls, spec: Official, case: Case, seed: int) -> torch.nn.Module:
    """The official model at ``case``'s size with its own initialisation under ``seed``; parameters that
    start at zero (position embeddings, LayerNorm biases) get N(0, 0.02) values from the same generator."""
    torch.manual_seed(seed)
    model = cls(num_frame=case.frames, **spec.args, **case.size)
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.normal_(0.0, 0.02)
    return model.eval()


def convert(model: torch.nn.Module, spec: Official, label: str) -> torch.nn.Module:
    """poselift's model from the official one's state dict, as ``poselift import-checkpoint`` converts a
    run.py checkpoint ({"model_pos": DataParallel state dict}), in memory."""
    from poselift.commands.import_checkpoint import official_weights
    from poselift.models import CHECKPOINT_FORMATS, build_model

    raw = {"model_pos": {f"module.{k}": v.detach().clone() for k, v in model.state_dict().items()}, "epoch": 0}
    weights = official_weights(raw, label)
    args, state_dict = CHECKPOINT_FORMATS[spec.fmt](weights, path=label, source=label, num_heads=HEADS)
    ours = build_model(spec.fmt, args, label)
    ours.load_state_dict(state_dict, strict=True)
    return ours.eval()


# --- counting and timing ---------------------------------------------------------------------------


def official_flops(model: torch.nn.Module, frames: int) -> float:
    """Forward FLOPs of one window of the official model (as models.count_flops, for a tensor output)."""
    meta = copy.deepcopy(model).to("meta").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(torch.zeros(1, frames, JOINTS, 2, device="meta"))
    return float(counter.get_total_flops())


def calls_per_second(fn, seconds: float) -> float:
    """Calls of ``fn`` for at least ``seconds`` and at least once; calls per second."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls / elapsed


def warm_up(fn, seconds: float) -> None:
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < seconds:
        fn()


def profile(fn, rows: int = 8) -> str:
    """torch.profiler's operators of one call of ``fn``, by self CPU time."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


# --- one input -------------------------------------------------------------------------------------


def measure(cls, spec: Official, case: Case, seed: int, seconds: float, repeats: int,
            show_profile: bool, compiled: bool = False) -> Row:
    official = build_official(cls, spec, case, seed)
    ours = eager = convert(official, spec, f"official {spec.cls}")
    generator = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randn(case.batch, case.frames, JOINTS, 2, generator=generator) * 0.3
    with torch.no_grad():
        expected = official(inputs.clone())
        if compiled:  # poselift's model through TorchInductor; its first call compiles
            from poselift.compilation import compile_model

            ours = compile_model(ours, "cpu", "--compile")
            tick = time.perf_counter()
            ours(inputs.clone())
            print(f"{case.label}: torch.compile of poselift's model: {time.perf_counter() - tick:.1f} s", flush=True)
        got = ours(inputs.clone())["pose_3d"]
    if got.shape != expected.shape:
        raise SystemExit(f"{case.label}: poselift's output {tuple(got.shape)} is not the official "
                         f"{tuple(expected.shape)}")
    diff = float((got - expected).abs().max())
    print(f"{case.label}: max |poselift - official| = {diff:.3g} (outputs up to "
          f"{float(expected.abs().max()):.3g})", flush=True)
    if not diff <= TOLERANCE:
        raise SystemExit(f"FAIL: {case.label}: poselift's output differs from the official model's by {diff:.3g} "
                         f"> {TOLERANCE:g}")
    flops, poses_per_window = count_flops(eager, case.frames, JOINTS)  # the module itself, never the compiled one
    theirs = official_flops(official, case.frames)
    if abs(theirs - flops) > 1e-3 * flops:
        print(f"  note: FLOPs/window differ: official {theirs / 1e9:.4g} G, poselift {flops / 1e9:.4g} G")
    row = Row(case.label, case.model, case.frames, case.batch, case.batch * poses_per_window,
              flops / poses_per_window, theirs / poses_per_window, diff)

    def call(model):
        return lambda: model(inputs)

    with torch.no_grad():
        for model in (official, ours):
            warm_up(call(model), seconds / 4)
        for _ in range(repeats):  # alternating, so that load from other processes falls on both
            row.official_poses_per_s.append(row.poses_per_call * calls_per_second(call(official), seconds))
            row.poselift_poses_per_s.append(row.poses_per_call * calls_per_second(call(ours), seconds))
        if show_profile:
            for name, model in (("official", official), ("poselift", ours)):
                print(f"--- {case.label}, {name}: one call, top operators by self CPU time\n"
                      f"{profile(call(model))}", flush=True)
    print(f"  official {fmt_rate(max(row.official_poses_per_s))} poses/s, poselift "
          f"{fmt_rate(max(row.poselift_poses_per_s))} poses/s, ratio {row.ratio:.2f}x", flush=True)
    return row


# --- output ----------------------------------------------------------------------------------------


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


COLUMNS = [  # header, width, row -> text
    ("input", 34, lambda r: r.case),
    ("MFLOPs/pose", 12, lambda r: f"{r.flops_per_pose / 1e6:.4g}"),
    ("max|diff|", 10, lambda r: f"{r.max_abs_diff:.1e}"),
    ("official poses/s", 17, lambda r: fmt_rate(max(r.official_poses_per_s))),
    ("poselift poses/s", 17, lambda r: fmt_rate(max(r.poselift_poses_per_s))),
    ("ratio", 7, lambda r: f"{r.ratio:.2f}x"),
    ("ratio(med)", 11, lambda r: f"{r.ratio_median:.2f}x"),
    ("official %GEMM", 15, lambda r: percent(r.official_gemm_share)),
    ("poselift %GEMM", 15, lambda r: percent(r.poselift_gemm_share)),
]


def table(rows: list[Row]) -> str:
    def line(cells):
        return cells[0].ljust(COLUMNS[0][1]) + "".join(c.rjust(w) for c, (_, w, _) in zip(cells[1:], COLUMNS[1:]))

    return "\n".join([line([h for h, _, _ in COLUMNS])] + [line([f(r) for _, _, f in COLUMNS]) for r in rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixste-repo", type=Path, help="checkout of JinluZhang1126/MixSTE (omitted: skipped)")
    parser.add_argument("--poseformer-repo", type=Path, help="checkout of zczcwh/PoseFormer (omitted: skipped)")
    parser.add_argument("--extra-path", type=Path, action="append", default=[], metavar="DIR",
                        help="a folder with the official code's dependencies (timm, einops, ...), put first on "
                             "sys.path (repeatable)")
    parser.add_argument("--torchvision-without-ops", action="store_true",
                        help="import torchvision's Python modules without its C++ ops (a CUDA torchvision "
                             "wheel on a CPU-only torch; see the docstring)")
    parser.add_argument("--quick", action="store_true", help="small inputs, short measurements (< 1 min)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--seconds", type=float, help="time per measurement (default 1.5, --quick 0.25)")
    parser.add_argument("--repeats", type=int, help="alternating rounds per input (default 3, --quick 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the models' initialisation and the inputs")
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler's top operators")
    parser.add_argument("--compile", action="store_true",
                        help="time poselift's model through torch.compile (TorchInductor) beside the official one")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.25 if args.quick else 1.5)
    repeats = args.repeats or (2 if args.quick else 3)
    if args.threads < 1 or repeats < 1 or seconds <= 0:
        parser.error("--threads and --repeats must be >= 1, --seconds > 0")

    sys.path[:0] = [str(p.resolve()) for p in args.extra_path]
    torchvision = allow_torchvision_without_ops() if args.torchvision_without_ops else None
    torch.set_num_threads(args.threads)
    repos = {"mixste": args.mixste_repo, "poseformer": args.poseformer_repo}
    classes, sources = {}, []
    for key, spec in OFFICIAL.items():
        if repos[key] is None:
            print(f"skipping {spec.cls}: no --{key}-repo (a checkout of {spec.repo})")
            continue
        repo = repos[key].resolve()
        classes[key] = import_official(repo, spec)
        sources.append(f"{spec.repo} {checkout_commit(repo)} at {repo}")
    if not classes:
        parser.error("nothing to compare: give --mixste-repo and/or --poseformer-repo")

    versions = {name: getattr(sys.modules.get(name), "__version__", "-") for name in ("timm", "einops")}
    gemm_before = gemm_gflops()
    print(f"torch {torch.__version__} ({platform.machine()}), torch threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, timm {versions['timm']}, einops "
          f"{versions['einops']}{f', {torchvision}' if torchvision else ''}; {seconds:g} s x {repeats} rounds "
          f"per model{', quick' if args.quick else ''}; 2048^2 fp32 GEMM {gemm_before:.1f} GFLOP/s")
    for source in sources:
        print(f"official: {source}")
    start, rows = time.perf_counter(), []
    for case in QUICK_CASES if args.quick else CASES:
        if case.model in classes:
            rows.append(measure(classes[case.model], OFFICIAL[case.model], case, args.seed, seconds, repeats,
                                args.profile, args.compile))
    gemm_after = gemm_gflops()
    gemm = max(gemm_before, gemm_after)
    for row in rows:
        row.official_gemm_share = max(row.official_poses_per_s) * row.flops_per_pose / 1e9 / gemm
        row.poselift_gemm_share = max(row.poselift_poses_per_s) * row.flops_per_pose / 1e9 / gemm
    print(table(rows))
    print(f"({time.perf_counter() - start:.0f} s; inference, fp32, eval mode, no_grad"
          f"{'; poselift through torch.compile, the official code eager' if args.compile else ''}; poses/s: output poses "
          f"(frames of 17 joints), best of {repeats} rounds; ratio: poselift/official, best over best; "
          f"ratio(med): median of the per-round ratios; %GEMM: achieved GFLOP/s / the 2048^2 fp32 GEMM's "
          f"{gemm:.1f} GFLOP/s (before {gemm_before:.1f}, after {gemm_after:.1f}); max|diff|: largest absolute "
          f"output difference, tolerance {TOLERANCE:g})")
    if args.json:
        from poselift.io import write_json

        write_json(args.json, {"torch": torch.__version__, "threads": torch.get_num_threads(),
                               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "seconds": seconds,
                               "repeats": repeats, "quick": args.quick, "seed": args.seed, "official": sources,
                               "poselift_compiled": args.compile,
                               "versions": versions, "gemm_2048_gflops": {"before": gemm_before,
                                                                          "after": gemm_after, "used": gemm},
                               "flops": "FLOPs (2 x MACs, FlopCounterMode)", "tolerance": TOLERANCE,
                               "rows": [{**asdict(r), "ratio": r.ratio, "ratio_median": r.ratio_median}
                                        for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
