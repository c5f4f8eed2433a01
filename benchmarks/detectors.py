"""Size and speed of the HRNet detector networks (poselift.detection.hrnet) beside the attention paper's counts.

    python benchmarks/detectors.py [--batch 8] [--seconds 3] [--threads N] [--device cpu|cuda] [--no-speed]

Prints:

- parameters of HRNet-W32 and W48, plain and with every channel-attention placement (``attention`` strings
  of :class:`poselift.detection.hrnet.HRNet`; the module docstring gives our reading of each), the CAMs each
  placement adds and what they cost, beside the attention paper's Table I / Table VII counts. Counted on the
  meta device (no memory, no init).
- forward GFLOPs per 256x192 image (``torch.utils.flop_counter``, meta device; 2 x multiply-adds, convs and
  matmuls only) and inference images/s at 256x192, batch ``--batch``, eval mode under ``torch.no_grad``, of
  HRNet-W32, W48, CPN (ResNet-50) and the CPU configurations of both (each: one warm-up call, then calls
  until ``--seconds`` have passed,
  at least one), beside a 2048^2 fp32 GEMM timed in the same run: images/s per GEMM GFLOP/s, so figures of
  noisy or different machines compare. Figures on a shared CPU are noisy.
- the same images/s with the network and its input in channels-last memory format
  (``torch.channels_last``, poselift.detection.network's ``channels_last``), and under bf16 autocast
  (``--precision bf16``: poselift.precision; its first and last layers in fp32) in both formats, where the
  device has bf16 units (else "no bf16 units"); the bf16 share is of a 2048^2 bf16 GEMM.

The default run takes about eight minutes on 2 cores (four timings per network). As in benchmarks/models.py, the script sets
OMP_WAIT_POLICY=PASSIVE unless the environment sets it (spinning OpenMP threads on shared cores are slow).
"""

from __future__ import annotations

import argparse
import os

if __name__ == "__main__":  # before torch loads OpenMP, which reads it once
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from torch.utils.flop_counter import FlopCounterMode

from gemm import gemm_gflops, timed  # benchmarks/gemm.py

from poselift.detection.hrnet import (PAPER_OURS, PAPER_PARAMETERS, attention_parameters, attention_sites,
                                      parameter_count)
from poselift.models import MODELS
from poselift.precision import Precision, bf16_support

PLACEMENTS = (None, "default", "sub-network:1", "sub-network:2+1", "sub-network:3+2+1", "stage:1", "stage:2+1",
              "stage:3+2+1")
SPEED_CONFIGS = {  # name -> (class in poselift.models.MODELS, its args)
    "hrnet-w32": ("hrnet", dict(width=32)),
    "hrnet-w48": ("hrnet", dict(width=48)),
    "hrnet-cpu": ("hrnet", dict(width=16, stage_modules=(1, 1, 1), blocks=2, stage1_blocks=1, stem_width=32)),
    "cpn-r50": ("cpn", dict(depth=50)),  # CPN's ResNet-50 configuration (256-channel GlobalNet/RefineNet)
    "cpn-cpu": ("cpn", dict(depth=50, channels=64, backbone_width=16, backbone_layers=(2, 2, 2, 2))),
}
INPUT = (256, 192)


def parameter_table() -> list[str]:
    lines = [f"{'network':<10} {'attention':<18} {'CAMs':>4} {'params (M)':>10} {'+CAM (M)':>9} {'paper (M)':>9}"]
    for width in (32, 48):
        base = parameter_count(width=width)
        for placement in PLACEMENTS:
            total = parameter_count(width=width, attention=placement)
            assert total - base == attention_parameters(width, placement)  # the analytic count is the model's
            paper = PAPER_PARAMETERS.get((width, placement if placement != "default" else "sub-network:1"))
            note = f"{paper:9.1f}" if paper is not None else f"{'-':>9}"
            lines.append(f"HRNet-W{width:<3} {str(placement):<18} {len(attention_sites(placement)):>4} "
                         f"{total / 1e6:10.3f} {(total - base) / 1e6:9.3f} {note}")
        lines.append(f"{'':<10} paper Table I 'Ours' (six CAMs, per its text): {PAPER_OURS[width]:.1f}M")
    return lines


def flops_per_image(config: tuple) -> float:
    cls, args = config
    with torch.device("meta"):
        model = MODELS[cls](**args).eval()
        images = torch.empty(1, 3, *INPUT)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(images)
    return counter.get_total_flops()


def images_per_second(config: tuple, batch: int, seconds: float, device: str, channels_last: bool = False,
                      precision: Precision | None = None) -> float:
    """Inference images/s of the network ``config`` (class, args), in channels-last memory format or not, at
    ``precision`` (default fp32)."""
    torch.manual_seed(0)
    cls, args = config
    model = MODELS[cls](**args).to(device).eval()
    images = torch.randn(batch, 3, *INPUT, device=device)
    if channels_last:
        model, images = model.to(memory_format=torch.channels_last), images.to(memory_format=torch.channels_last)
    precision = precision or Precision("fp32", torch.device(device).type)
    precision.prepare(model)
    with torch.no_grad():
        timed(lambda: precision.run(model, images), device)  # warm-up
        calls, elapsed = 0, 0.0
        while calls == 0 or elapsed < seconds:
            elapsed += timed(lambda: precision.run(model, images), device)
            calls += 1
    return calls * batch / elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per network (after a warm-up)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--no-speed", action="store_true", help="parameter counts only")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print("\n".join(parameter_table()))
    if args.no_speed:
        return 0
    gemm = gemm_gflops(device=args.device)
    has_bf16, why = bf16_support(args.device)
    gemm16 = gemm_gflops(device=args.device, dtype=torch.bfloat16) if has_bf16 else None
    print(f"\n{args.device}, {torch.get_num_threads()} threads; GEMM 2048^2: fp32 {gemm:.1f} GFLOP/s, bf16 "
          + (f"{gemm16:.1f} GFLOP/s" if has_bf16 else f"no bf16 units ({why})"))
    print(f"{'network':<10} {'GFLOPs/img':>10} {'images/s':>9} {'per GEMM GFLOP/s':>16} {'% of GEMM':>9} "
          f"{'chan-last':>9} {'CL/NCHW':>7} {'bf16':>13} {'bf16 CL':>13} {'% bf16 GEMM':>11}  "
          f"(images/s; 256x192, batch {args.batch})")
    for name, config in SPEED_CONFIGS.items():
        flops = flops_per_image(config)
        rate = images_per_second(config, args.batch, args.seconds, args.device)
        last = images_per_second(config, args.batch, args.seconds, args.device, channels_last=True)
        line = (f"{name:<10} {flops / 1e9:10.2f} {rate:9.2f} {rate / gemm:16.4f} {100 * rate * flops / 1e9 / gemm:8.1f}% "
                f"{last:9.2f} {last / rate:6.2f}x")
        if has_bf16:
            bf16 = Precision("bf16", torch.device(args.device).type)
            low = images_per_second(config, args.batch, args.seconds, args.device, precision=bf16)
            low_last = images_per_second(config, args.batch, args.seconds, args.device, True, bf16)
            line += f" {low:13.2f} {low_last:13.2f} {100 * max(low, low_last) * flops / 1e9 / gemm16:10.1f}%"
        else:
            line += f" {'no bf16 units':>13} {'no bf16 units':>13} {'-':>11}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
