"""``poselift evaluate --experiment NAME``: score a trained model on the test split.

The model is the last stage's ``checkpoint.pt`` (or ``--stage N``, or ``--checkpoint FILE``, e.g. an
imported official release). Every valid frame of every test view is predicted: centre-frame models through
one window per frame, seq2seq models through T-frame pieces of each view stitched back together; with
flip test-time averaging per the stage's ``flip_test`` unless ``--flip-test`` / ``--no-flip-test``.

Writes to --out (default results/<experiment>/evaluation/): ``metrics.json`` (the keys of
``poselift metrics``), ``per_action.csv``, ``per_group.json`` (errors per distance-to-pelvis group, POT
Fig. 4), ``targets.npz``, ``actions.json``, ``sequences.json`` (view id per frame), ``views.json``
(sequence and camera of each view id) and last ``predictions.npz`` (``poses_3d`` (N, 17, 3) mm, with
``view`` and ``frame``): the same set ``poselift metrics`` reads. A 2D detector's experiment (task
``heatmaps``) writes ``metrics.json`` (COCO AP/AR, PCK@0.05, pixel errors, in frame pixels) and
``predictions.npz`` instead (:mod:`poselift.training.tasks.heatmaps`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from poselift.commands.train import add_common, data_inputs, set_threads


def add_parser(sub):
    p = sub.add_parser("evaluate", help="evaluate an experiment's trained model on the test split")
    p.add_argument("--experiment", required=True, help="experiment name in params.yaml")
    p.add_argument("--stage", type=int, help="stage whose checkpoint.pt to evaluate (default: the last)")
    p.add_argument("--checkpoint", type=Path, help="poselift checkpoint to evaluate instead")
    add_common(p)
    p.add_argument("--out", type=Path, help="output folder (default results/<experiment>/evaluation)")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"), help="default test")
    p.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test-time averaging (default: the stage's flip_test)")
    p.add_argument("--batch-size", type=int, help="windows per forward pass (default: the stage's batch_size)")
    p.add_argument("--compile", action="store_true",
                   help="run the model through torch.compile (TorchInductor; poselift.compilation): a compile "
                        "first, then faster where elementwise work bounds the model; equal to float precision")
    p.add_argument("--pck-joints", choices=("all", "mpi-inf-3dhp"), default="all",
                   help="joints for 3D-PCK/AUC: all 17, or the 14 of the MPI-INF-3DHP evaluation")
    p.set_defaults(run=run)


def run(args) -> int:
    from poselift.errors import InputError
    from poselift.experiments import load_experiment
    from poselift.precision import resolve as resolve_precision
    from poselift.tracking import Tracker, evaluation_metrics
    from poselift.training.checkpoint import instantiate, read_checkpoint
    from poselift.training.stage import resolve_device
    from poselift.training.tasks import TASKS

    experiment = load_experiment(args.experiment, args.params)
    stage = experiment.stage(args.stage or len(experiment.stages))
    checkpoint = args.checkpoint or experiment.stage_dir(stage.number) / "checkpoint.pt"
    inputs = data_inputs(args, experiment)
    out = args.out or experiment.evaluation_dir()
    flip_test = stage.options.get("flip_test", False) if args.flip_test is None else args.flip_test
    batch_size = args.batch_size or stage.batch_size
    if batch_size < 1:
        raise InputError("--batch-size", f"must be >= 1 (got {batch_size})")
    device = resolve_device(args.device)
    set_threads(args)
    precision = resolve_precision(args.precision or stage.precision, device)

    ckpt = read_checkpoint(checkpoint)
    model = precision.prepare(instantiate(ckpt, checkpoint, device))
    if args.compile:
        from poselift.compilation import compile_model

        model = compile_model(model, device, "--compile")
    task = TASKS[ckpt.get("task", stage.task)](inputs, device)
    files = {name: str(path) if path is not None else None for name, path in inputs.items()}
    result, num_views, window = precision.run(
        task.evaluate, model, ckpt, checkpoint, out, args.split, batch_size, flip_test, args.pck_joints,
        inputs={"checkpoint": str(checkpoint), "model": ckpt["model"], **files, "split": args.split,
                "flip_test": flip_test, "precision": precision.name,
                **({"compile": True} if args.compile else {})})

    tracker = Tracker(experiment.name, args.tracking_uri)
    run_id = tracker.start_run(f"evaluation-{args.split}", tags={"poselift.evaluation": args.split})
    tracker.log_params(run_id, {"checkpoint": str(checkpoint), "split": args.split, "flip_test": flip_test,
                                "window": window, "model": ckpt["model"],
                                **{name: path or "none" for name, path in files.items()}})
    tracker.log_metrics(run_id, evaluation_metrics(result))  # its headline numbers, as `poselift sync` logs them
    tracker.log_artifacts(run_id, [out / "metrics.json", out / "per_action.csv", out / "per_group.json"])
    tracker.end_run(run_id)
    count = f"{result['frames']} {args.split} frames" if "frames" in result else \
        f"{result.get('samples')} {args.split} crops"
    print(f"wrote {out}: {count} from {num_views} views (flip test {'on' if flip_test else 'off'})")
    return 0
