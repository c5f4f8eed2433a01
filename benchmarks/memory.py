"""Peak resident memory of the lifting data pipeline, a training epoch and `poselift evaluate`, per subset.

    python benchmarks/memory.py [--subset cpu --subset full] [--work DIR] [--limit-gb 4]
    python benchmarks/memory.py --prepared data/prepared/bandai.h5 [--detections FILE.h5]

For each subset of the open benchmark (default: cpu, then full; the Bandai-Namco mirror from
$POSELIFT_BANDAI_MIRROR) it prepares the dataset into --work (``<work>/<subset>/prepared.h5``, reused when
present) and its synthetic detections (``poselift detect --detector synthetic``), then runs each phase as its
own child process and reads that child's RSS high-water mark (``ru_maxrss`` from ``os.wait4``):

- pipeline: a CPU experiment's (--experiment, default pot-ugrn-cpu, stage 1) task setup (prepared file +
  detections -> train and validation views -> windows -> Batches), then one epoch of its batches plus one
  pass over EVERY training window with random flips (the mirrored copy of the views built), no model step;
- train: ``poselift train`` of that stage for one epoch of --windows-per-epoch windows (a params copy),
  tracking off, on the whole dataset (views of both splits, validation included);
- evaluate: ``poselift evaluate --checkpoint`` of that epoch's checkpoint on the test split.

It prints one row per phase: frames of the prepared dataset, peak RSS (GB), seconds, and PASS/FAIL against
--limit-gb (prepare and detect are printed for information, not judged), then how the peaks grow with the
frame count between subsets (flat: the peak grows far slower than the frames). Exit status 1 on any FAIL.
A progress line every --every seconds shows the running child's current and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
JUDGED = ("pipeline", "train", "evaluate")

# The pipeline phase, run in a child: a training stage's data setup and batches, no model step.
PIPELINE = r"""
import json, sys, time
import torch
from poselift.data.windows import Batches
from poselift.experiments import load_experiment
from poselift.models import build_model
from poselift.training.tasks import TASKS

params, experiment, prepared, detections = sys.argv[1:5]
exp = load_experiment(experiment, params)
stage = exp.stage(1)
task = TASKS[stage.task]({"prepared": prepared, "detections": detections}, torch.device("cpu"))
model = build_model(stage.model.cls, stage.model.args, exp.params_path)
info = task.setup(model, stage, exp.dataset.validation_split)
print(f"  setup: {info}", flush=True)
batches = 0
for batch in task.batches:  # one epoch as training draws it
    batches += 1
views = task.batches.views
every = Batches(views, task.train_windows, 1024, shuffle=True, seed=0, flip="random", as_torch=True)
start = time.perf_counter()
for i, batch in enumerate(every):  # every training window once, half of them mirrored
    batches += 1
    if i % 200 == 0:
        print(f"  full pass: batch {i}/{len(every)}", flush=True)
print("RESULT " + json.dumps({"train_rows": len(views), "val_rows": len(task.val_views),
                              "train_windows": len(task.train_windows), "batches": batches}), flush=True)
"""


def run_phase(name: str, cmd: list[str], log: Path, every: float, env: dict) -> dict:
    """Run ``cmd`` as a child (output to ``log``); its peak RSS (GB), seconds and exit status."""
    shown = ["<pipeline script>" if c == PIPELINE else str(c) for c in cmd]
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(shown)}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        last = start
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.5)
            if time.perf_counter() - last >= every:
                last = time.perf_counter()
                now, high = _proc_rss(proc.pid)
                tail = _last_line(log)
                print(f"  {name}: {last - start:5.0f} s, RSS {now:.2f} GB (peak {high:.2f} GB)"
                      f"{'  | ' + tail if tail else ''}", flush=True)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    peak = usage.ru_maxrss / 1024 ** 2  # kB on Linux -> GB
    result = {"rss_gb": peak, "seconds": seconds, "rc": proc.returncode, "log": str(log)}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("RESULT "):
            result.update(json.loads(line[len("RESULT "):]))
    print(f"[{time.strftime('%H:%M:%S')}] {name}: peak RSS {peak:.2f} GB, {seconds:.0f} s, exit {proc.returncode}",
          flush=True)
    if proc.returncode != 0:
        print("\n".join("  | " + line for line in log.read_text(errors="replace").splitlines()[-15:]), flush=True)
    return result


def _proc_rss(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a running process in GB (0 when it is gone)."""
    values = {"VmRSS": 0, "VmHWM": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in values:
                values[key] = int(line.split()[1])
    except OSError:
        pass
    return values["VmRSS"] / 1024 ** 2, values["VmHWM"] / 1024 ** 2


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").replace("\r", "\n").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:100] if lines else ""


def count_frames(prepared: Path) -> int:
    """Frames of a prepared file (sum of its sequences' frames, one camera), from the HDF5 shapes only."""
    import h5py

    with h5py.File(prepared, "r") as f:
        return sum(g["positions_3d"].shape[0] for subject in f["sequences"].values() for g in subject.values())


def params_copy(src: Path, dst: Path, experiment: str, windows: int) -> None:
    """``src`` with stage 1 of ``experiment`` cut to one epoch of ``windows`` windows."""
    params = yaml.safe_load(src.read_text())
    stage = params["experiments"][experiment]["stages"][0]
    stage.update(epochs=1, windows_per_epoch=windows)
    dst.write_text(yaml.safe_dump(params, sort_keys=False))


def measure(label: str, prepared: Path | None, detections: Path | None, work: Path, args, env) -> list[dict]:
    """Every phase of one dataset; rows of the table."""
    work.mkdir(parents=True, exist_ok=True)
    poselift = [sys.executable, "-m", "poselift"]
    rows = []
    if prepared is None:
        prepared = work / "prepared.h5"
        if not prepared.is_file():
            r = run_phase(f"{label} prepare", poselift + ["prepare", "bandai", "--subset", label, "--out", prepared],
                          work / "prepare.log", args.every, env)
            rows.append({"phase": "prepare", **r})
            if r["rc"] != 0:
                return rows
        else:
            print(f"{label}: reusing {prepared}", flush=True)
    if detections is None:
        detections = work / "synthetic.h5"
        if not detections.is_file():
            r = run_phase(f"{label} detect", poselift + ["detect", "--prepared", prepared, "--detector", "synthetic",
                                                          "--out", detections], work / "detect.log", args.every, env)
            rows.append({"phase": "detect", **r})
            if r["rc"] != 0:
                return rows
        else:
            print(f"{label}: reusing {detections}", flush=True)
    frames = count_frames(prepared)
    print(f"{label}: {frames:,} frames in {prepared}", flush=True)
    for row in rows:
        row["frames"] = frames

    params = work / "params.yaml"
    params_copy(ROOT / args.params, params, args.experiment, args.windows_per_epoch)
    r = run_phase(f"{label} pipeline", [sys.executable, "-c", PIPELINE, params, args.experiment, prepared, detections],
                  work / "pipeline.log", args.every, env)
    rows.append({"phase": "pipeline", "frames": frames, **r})
    stage_dir = work / "stage1"
    r = run_phase(f"{label} train", poselift + ["train", "--experiment", args.experiment, "--stage", "1",
                                                 "--params", params, "--prepared", prepared, "--detections", detections,
                                                 "--device", "cpu", "--threads", "1", "--tracking-uri", "off",
                                                 "--out", stage_dir, "--restart"],
                  work / "train.log", args.every, env)
    rows.append({"phase": "train", "frames": frames, **r})
    if r["rc"] == 0:
        r = run_phase(f"{label} evaluate", poselift + ["evaluate", "--experiment", args.experiment, "--stage", "1",
                                                        "--checkpoint", stage_dir / "checkpoint.pt", "--params", params,
                                                        "--prepared", prepared, "--detections", detections,
                                                        "--device", "cpu", "--threads", "1", "--tracking-uri", "off",
                                                        "--out", work / "evaluation"],
                      work / "evaluate.log", args.every, env)
        rows.append({"phase": "evaluate", "frames": frames, **r})
    for row in rows:
        row["label"] = label
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subset", action="append", choices=("cpu", "full"),
                        help="open-benchmark subset(s) to prepare and measure, in order (default: cpu, then full)")
    parser.add_argument("--prepared", type=Path, help="measure this prepared file instead of preparing subsets")
    parser.add_argument("--detections", type=Path, help="its detections (default: synthetic ones made into --work)")
    parser.add_argument("--work", type=Path, default=ROOT / "results" / "memory-bench",
                        help="folder for prepared files, detections, logs and the trained stage "
                             "(default results/memory-bench; reused on a rerun)")
    parser.add_argument("--experiment", default="pot-ugrn-cpu", help="CPU experiment whose stage 1 is measured")
    parser.add_argument("--params", default="params.yaml", help="params file it comes from")
    parser.add_argument("--windows-per-epoch", type=int, default=4096, help="windows of the one training epoch")
    parser.add_argument("--limit-gb", type=float, default=4.0, help="peak RSS a judged phase must stay under")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between progress lines")
    args = parser.parse_args(argv)

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    rows: list[dict] = []
    if args.prepared is not None:
        rows += measure(args.prepared.stem, args.prepared.resolve(),
                        args.detections.resolve() if args.detections else None, args.work / args.prepared.stem,
                        args, env)
    else:
        for subset in args.subset or ["cpu", "full"]:
            rows += measure(subset, None, None, args.work / subset, args, env)

    print()
    print(f"{'data':<10}{'phase':<10}{'frames':>10}{'peak RSS (GB)':>15}{'seconds':>9}  result")
    failed = False
    for row in rows:
        if row["rc"] != 0:
            verdict, failed = f"FAIL (exit {row['rc']}, {row['log']})", True
        elif row["phase"] in JUDGED:
            ok = row["rss_gb"] < args.limit_gb
            verdict, failed = ("PASS" if ok else "FAIL") + f" (< {args.limit_gb:g} GB)", failed or not ok
        else:
            verdict = "setup, not judged"
        frames = f"{row['frames']:,}" if "frames" in row else "-"
        print(f"{row['label']:<10}{row['phase']:<10}{frames:>10}{row['rss_gb']:>15.2f}{row['seconds']:>9.0f}  {verdict}")
    labels = list(dict.fromkeys(r["label"] for r in rows))
    if len(labels) >= 2:
        a, b = labels[0], labels[-1]
        fa = next((r["frames"] for r in rows if r["label"] == a and "frames" in r), 0)
        fb = next((r["frames"] for r in rows if r["label"] == b and "frames" in r), 0)
        if fa and fb:
            print(f"\n{b} vs {a}: frames x{fb / fa:.2f}")
            for phase in JUDGED:
                pa = next((r for r in rows if r["label"] == a and r["phase"] == phase and r["rc"] == 0), None)
                pb = next((r for r in rows if r["label"] == b and r["phase"] == phase and r["rc"] == 0), None)
                if pa and pb:
                    print(f"  {phase:<10} peak RSS x{pb['rss_gb'] / pa['rss_gb']:.2f} "
                          f"(+{pb['rss_gb'] - pa['rss_gb']:.2f} GB)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
