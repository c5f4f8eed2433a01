"""What Lifting by Image's token pruning saves: Stage 2's FLOPs and time at retention r = 1, 0.3, 0.1 (and 0.01).

    python benchmarks/lbi.py [--batch 64] [--seconds 2] [--threads N] [--device cpu|cuda] [--flops-only]

For the CPU preset (``lbi-cpu`` of params.yaml: 32x24 = 768 image tokens of 16 channels, d = 32) and the paper-
sized one (``lbi-w32``: 64x48 = 3,072 tokens of HRNet-W32's 32 channels, d = 256, 8 heads; the spec's reading),
prints per sample:

- Stage 1's forward FLOPs (the same at every r: with Stage 1 frozen, Stage 2's training runs it without
  autograd) and Stage 2's forward FLOPs (feature selection + the new layers + the refined head) at each r,
  counted by ``torch.utils.flop_counter`` (2 x multiply-adds of matmuls; softmax, LayerNorm, GELU not counted);
- the time of one Stage-2 training step (forward + backward of Stage 2 on Stage 1's cached outputs, batch
  ``--batch``) and of Stage-2 inference, in microseconds per sample; each also as "x GEMM": the MFLOPs a
  2048^2 fp32 GEMM timed in the same run does in that time (us x GEMM GFLOP/s / 1e3), which compares across
  machines better than seconds (figures on a shared CPU are noisy); and their ratio to r = 1.

The default run takes about 2 minutes on 2 cores, most of it the paper-sized rows (--flops-only: seconds).
OMP_WAIT_POLICY=PASSIVE unless the environment sets it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

if __name__ == "__main__":  # before torch loads OpenMP, which reads it once
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from gemm import gemm_gflops, timed  # benchmarks/gemm.py

from poselift.lifting.lbi import LiftingByImage
from poselift.lifting.lbi.pruning import select_tokens

PRESETS = ("lbi-cpu", "lbi-w32")  # params.yaml models: the CPU preset and the paper-sized one


def configs(params: Path) -> dict:
    """{preset: LiftingByImage args} of params.yaml (retention set per row)."""
    models = yaml.safe_load(params.read_text())["models"]
    return {name: {k: v for k, v in models[name].items() if k not in ("class", "retention")} for name in PRESETS}


RETENTIONS = (1.0, 0.3, 0.1, 0.01)


def repeat(fn, seconds: float, device: str) -> float:
    """Seconds per call: one warm-up call, then calls until ``seconds`` have passed (at least one)."""
    timed(fn, device)
    calls, elapsed = 0, 0.0
    while calls == 0 or elapsed < seconds:
        elapsed += timed(fn, device)
        calls += 1
    return elapsed / calls


def stage2(model: LiftingByImage, first: dict) -> torch.Tensor:
    """Stage 2 of ``model.forward`` on Stage 1's outputs: selection, the new layers, the refined head."""
    kept, _, _ = select_tokens(first["attention"], first["image_tokens"], model.retention)
    t_j = first["keypoint_tokens"]
    for layer in model.refiner:
        t_j, kept, _ = layer(t_j, kept)
    return model.refine_head(t_j)


def stage1_outputs(model: LiftingByImage, batch: int, device: str) -> dict:
    c, (h, w) = model.stage1.image_tokens.proj.in_features, model.stage1.feature_size
    with torch.no_grad():
        return model.stage1(torch.randn(batch, 17, 2, device=device), torch.randn(batch, c, h, w, device=device))


def flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per row (after a warm-up)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--flops-only", action="store_true", help="FLOPs only, no timing")
    parser.add_argument("--params", type=Path, default=Path(__file__).resolve().parent.parent / "params.yaml",
                        help="params.yaml with the presets lbi-cpu and lbi-w32")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gemm = None if args.flops_only else gemm_gflops(device=args.device)
    if gemm is not None:
        print(f"{args.device}, {torch.get_num_threads()} threads; fp32 GEMM 2048^2: {gemm:.1f} GFLOP/s "
              f"(batch {args.batch})")
    for name, config in configs(args.params).items():
        probe = LiftingByImage(**config, retention=1.0).to(args.device)
        one = stage1_outputs(probe, 1, args.device)
        c, (h, w) = probe.stage1.image_tokens.proj.in_features, probe.stage1.feature_size
        s1 = flops(lambda: probe.stage1(torch.randn(1, 17, 2, device=args.device),
                                        torch.randn(1, c, h, w, device=args.device)))
        print(f"\n{name}: {h}x{w} = {h * w} image tokens, d = {config['dim']}; "
              f"Stage 1 forward {s1 / 1e6:.1f} MFLOPs/sample (any r)")
        timing = "" if gemm is None else \
            f" {'train us':>9} {'x GEMM':>8} {'ratio':>6} {'infer us':>9} {'x GEMM':>8} {'ratio':>6}"
        print(f"{'r':>5} {'tokens':>6} {'S2 MFLOPs':>9} {'ratio':>6}{timing}")
        base = None
        for r in RETENTIONS:
            model = LiftingByImage(**config, retention=r).to(args.device)
            model.stage1.load_state_dict(probe.stage1.state_dict())
            f2 = flops(lambda: stage2(model, one))
            row = [f"{r:5g}", f"{model.kept_tokens:6d}", f"{f2 / 1e6:9.2f}"]
            if base is None:
                base = {"flops": f2}
            row.append(f"{f2 / base['flops']:6.2f}")
            if gemm is not None:
                first = stage1_outputs(model, args.batch, args.device)
                model.train()

                def step():
                    model.zero_grad(set_to_none=True)
                    stage2(model, first).square().sum().backward()

                def infer():
                    with torch.no_grad():
                        stage2(model, first)

                train_us = repeat(step, args.seconds, args.device) / args.batch * 1e6
                model.eval()
                infer_us = repeat(infer, args.seconds, args.device) / args.batch * 1e6
                base.setdefault("train", train_us)
                base.setdefault("infer", infer_us)
                # "x GEMM": the per-sample time as the MFLOPs the same run's GEMM does in it
                row += [f"{train_us:9.1f}", f"{train_us * gemm / 1e3:8.2f}", f"{train_us / base['train']:6.2f}",
                        f"{infer_us:9.1f}", f"{infer_us * gemm / 1e3:8.2f}", f"{infer_us / base['infer']:6.2f}"]
            print(" ".join(row))
    if gemm is not None:
        print("\nx GEMM: the per-sample time as MFLOPs of the same run's GEMM (us x GEMM GFLOP/s / 1e3); "
              "ratio: to r = 1")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
