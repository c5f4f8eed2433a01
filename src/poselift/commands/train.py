"""``poselift train --experiment NAME --stage N``: train one stage of an experiment of params.yaml.

Default paths (see :mod:`poselift.experiments`): data/prepared/<dataset>.h5,
data/detections/<dataset>/<detector>.h5, results/<experiment>/stage<N>/; a stage's ``init`` reads
``checkpoint.pt`` of the earlier stage's folder beside --out, or the file given with ``--init N=PATH``.
Running it again resumes from last.pt (or does nothing when the stage is finished).
Under ``torchrun --nproc_per_node N`` or ``srun`` (or with ``--processes N``) N processes train the stage
together (:mod:`poselift.training.distributed`); rank 0 writes the files.
"""

from __future__ import annotations

import sys
from pathlib import Path

from poselift.precision import PRECISIONS


def add_parser(sub):
    p = sub.add_parser("train", help="train one stage of an experiment (params.yaml experiments section)")
    p.add_argument("--experiment", required=True, help="experiment name in params.yaml")
    p.add_argument("--stage", required=True, type=int, help="stage number (1-based position in its stages list)")
    add_common(p)
    p.add_argument("--out", type=Path, help="stage folder (default results/<experiment>/stage<N>)")
    p.add_argument("--init", action="append", default=[], metavar="N=PATH",
                   help="checkpoint for the stage-N source of `init` (default: stage<N>/checkpoint.pt beside --out)")
    p.add_argument("--restart", action="store_true", help="ignore an existing last.pt and train from scratch")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="train with N processes on this node, one per GPU (--device cuda) or N on the CPU: the "
                        "command starts itself again under `torchrun --standalone --nproc_per_node N`; the stage's "
                        "batch_size is the global batch, each process takes its part (default 1; 0 = 1, the "
                        "workflow passes a job's GPU count; under torchrun or srun the launcher's processes train)")
    p.add_argument("--keep-state", type=Path, metavar="DIR",
                   help="mirror each epoch's last.pt and checkpoint.pt into DIR (outside the workflow's outputs, "
                        "which Snakemake deletes when a job dies) and resume from them when --out has none and "
                        "they were written by the same stage settings and code; DIR is removed when the stage ends")
    p.set_defaults(run=run)


def add_common(p) -> None:
    """Options shared with ``poselift evaluate``."""
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default params.yaml)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                   help="a data file of the stage's task instead of its default path ('none': absent); lifting "
                        "reads 'prepared' and 'detections', heatmaps 'crops' and 'prepared'")
    p.add_argument("--prepared", type=Path, help="= --input prepared=PATH: prepared-dataset HDF5 "
                                                 "(default data/prepared/<dataset>.h5)")
    p.add_argument("--detections", help="= --input detections=PATH: detections HDF5 (default "
                                        "data/detections/<dataset>/<detector>.h5); 'none': the prepared file's own 2D")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto = cuda if available")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch (default: torch's, one per core). The numbers depend on it at float "
                        "precision, and training amplifies that: the same seed and thread count give the same bits")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else "
                                          "sqlite:///mlflow.db); 'off' disables tracking")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="forward passes in fp32 or under bf16 autocast (default: the stage's `precision`, fp32); "
                        "bf16 only where the device has bf16 matrix units (checked at start), else one warning "
                        "and fp32")


def set_threads(args) -> None:
    """torch's intra-op thread count from --threads (checked)."""
    from poselift.errors import InputError

    if args.threads is not None:
        if args.threads < 1:
            raise InputError("--threads", f"must be >= 1 (got {args.threads})")
        import torch

        torch.set_num_threads(args.threads)


def data_inputs(args, experiment) -> dict:
    """The stages' data files: their tasks' defaults (:meth:`Experiment.inputs`), with --input,
    --prepared and --detections applied; 'none' means absent (None)."""
    from poselift.errors import InputError

    inputs = experiment.inputs()
    given = list(args.input)
    given += [f"prepared={args.prepared}"] if args.prepared is not None else []
    given += [f"detections={args.detections}"] if args.detections is not None else []
    for item in given:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError("--input", f"expected NAME=PATH, got '{item}'")
        if name not in inputs:
            raise InputError("--input", f"'{name}' is not an input of experiment {experiment.name} "
                                        f"(inputs: {', '.join(inputs)})")
        inputs[name] = None if path == "none" else Path(path)
    return inputs


def run(args) -> int:
    from tqdm import tqdm

    from poselift.errors import InputError
    from poselift.experiments import load_experiment
    from poselift.tracking import Tracker
    from poselift.training.distributed import is_main, relaunch, world_size
    from poselift.training.loop import train_stage
    from poselift.training.stage import resolve_device

    if args.processes < 0:
        raise InputError("--processes", f"must be >= 0 (got {args.processes})")
    if args.processes > 1 and world_size() == 1:  # not yet one of several processes: start them
        relaunch(args.processes, sys.argv[1:])
    experiment = load_experiment(args.experiment, args.params)
    stage = experiment.stage(args.stage)
    inputs = data_inputs(args, experiment)
    out = args.out or experiment.stage_dir(stage.number)
    init_paths = {}
    for item in args.init:
        number, sep, path = item.partition("=")
        if not sep or not number.isdigit() or not path:
            raise InputError("--init", f"expected N=PATH, got '{item}'")
        init_paths[int(number)] = Path(path)
    device = resolve_device(args.device)
    set_threads(args)
    tracker = Tracker(experiment.name, args.tracking_uri if is_main() else "off")  # rank 0 alone tracks
    code = ""
    if args.keep_state is not None:  # a kept state of other code, data or earlier stages is stale
        from poselift.fingerprint import code_digest

        init_files = [init_paths.get(n, out.parent / f"stage{n}" / "checkpoint.pt")
                      for n in experiment.init_sources(stage.number)]
        init_files += [Path(p) for p in experiment.init_files(stage.number)]
        code = f"{code_digest('poselift.commands.train')} {inputs_fingerprint(inputs.values(), init_files)}"
    result = train_stage(experiment, stage, inputs, out, init_paths, device, tracker, restart=args.restart,
                         log=tqdm.write, keep=args.keep_state, code=code, precision=args.precision)
    if not result.skipped and is_main():
        print(f"wrote {out}: {result.epochs} epochs, best {result.metric} {result.best_value:.4g} "
              f"(epoch {result.best_epoch}); checkpoint.pt = {stage.select} epoch")
    return 0


def inputs_fingerprint(data_files, init_files) -> str:
    """What a kept training state was built on, besides the stage settings and code: each data file's size and
    modification time, and each ``init`` checkpoint's content (small, and what changes when an earlier stage
    trains again). A rerun of a killed job resumes only when it matches."""
    import hashlib
    import os

    h = hashlib.sha256()
    for path in data_files:
        if path is not None and Path(path).is_file():
            st = os.stat(path)
            h.update(f"{Path(path).name} {st.st_size} {st.st_mtime_ns}\n".encode())
    for path in init_files:
        if Path(path).is_file():
            h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]
