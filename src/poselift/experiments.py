"""Experiments as data: params.yaml's ``datasets``, ``models`` and ``experiments`` sections, checked and
turned into small dataclasses, and the file layout every command and the workflow follow. This module is
their one owner: the CLI and :mod:`poselift.workflow` both read params.yaml and paths through it.

Shape of the sections (the keys every stage has are :data:`STAGE_KEYS`; a task adds its own, e.g.
:data:`poselift.training.tasks.lifting.LiftingTask.stage_keys`)::

    datasets:
      bandai-cpu: {reader: bandai, subset: cpu}          # reader: a `poselift prepare` dataset
      h36m: {reader: h36m, validation_split: test}       # split validated on each epoch (default validation)
    models:                                              # presets: a class in poselift.lifting.MODELS + its
      pot-cpu: {class: pot, dim: 32, depth: 2}           # constructor arguments
    experiments:
      pot-ugrn-cpu:
        dataset: bandai-cpu
        detector: synthetic       # 2D from data/detections/<dataset>/<detector>.h5; "prepared": the
        stages:                   # prepared file's own 2D (score 1), no detections file
          - {name: pot, model: pot-cpu, epochs: 3, batch_size: 512, lr: 1.0e-3, losses: {mpjpe: 1.0}}
          - {name: ugrn, model: pot-ugrn-cpu, init: {pot: 1}, freeze: [pot], ...}

Stage numbers are 1-based positions in ``stages``. A stage's ``task`` (what a batch holds, how the model is
called, which loss terms exist, which metric validates: :data:`poselift.training.tasks.TASKS`) is the model
class's ``task`` attribute ("lifting" when it has none) unless the stage names one. ``init: {submodule: N}`` loads stage N's
``checkpoint.pt`` into that submodule ("" = the whole model), ``init: {submodule: path.pt}`` a checkpoint file
(e.g. official weights converted by ``poselift import-checkpoint``), ``init: {submodule: <experiment>/<N>}``
another experiment's stage N (a stage several experiments share is trained once); ``freeze: [submodule, ...]`` takes those
submodules out of the optimiser and keeps them in eval mode. ``resources: {gpus, cpus, mem_gb, hours}`` is
what the stage's Slurm job asks for (:data:`RESOURCE_KEYS`; ``gpus`` > 1 trains under torchrun, one process
a GPU). Any mistake is an :class:`InputError` naming the params file and the key, e.g. ``params.yaml: experiments.x.stages[2].losses: unknown loss
term 'l3' (known: mpjpe, ...)``.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from poselift.errors import InputError
from poselift.precision import PRECISIONS

PARAMS = Path("params.yaml")
PREPARED_DIR = Path("data/prepared")
DETECTIONS_DIR = Path("data/detections")
RENDERS_DIR = Path("data/renders")
RESULTS_DIR = Path("results")
OWN_2D = "prepared"  # detector name meaning "the prepared file's own 2D"
BASELINE = "mean-pose@"  # results/mean-pose@<dataset>/: the training-mean pose of a dataset, a row of every table

# Stage keys every task has: name -> default (REQUIRED = must be given).
REQUIRED = object()
STAGE_KEYS = {
    "name": REQUIRED,
    "model": REQUIRED,  # a preset of the models section
    "task": None,  # a key of poselift.training.tasks.TASKS; None: the model class's `task` ("lifting")
    "epochs": REQUIRED,
    "batch_size": REQUIRED,  # samples (windows, crops) per batch
    "lr": REQUIRED,
    "losses": REQUIRED,  # {term of the task's `losses` table: weight}
    "optimizer": "adam",  # adam | adamw
    "weight_decay": 0.0,
    "amsgrad": False,
    "schedule": {"gamma": 1.0, "every": 1},  # lr *= gamma every `every` epochs, or at each epoch of `milestones`
    "max_norm": None,  # gradient-norm clipping
    "init": {},  # {submodule ("" = whole model): an earlier stage's number, or a checkpoint file (.pt)}
    "freeze": [],  # submodules kept fixed (no gradient, eval mode)
    "seed": 0,
    "select": "best",  # checkpoint.pt = the best-validation epoch ("best") or the final one ("last")
    "precision": "fp32",  # forward passes in fp32, or bf16 autocast where the device has bf16 units
    "compile": False,  # training forward passes through torch.compile (TorchInductor): poselift.compilation
}
OPTIMIZERS = ("adam", "adamw")
# Keys added after results existed, left out of Stage.config() at their default: the checkpoints and the
# workflow's params of stages that do not set them stay what they were (no retraining, last.pt resumes).
QUIET_DEFAULTS = {"precision": "fp32", "compile": False}
# A stage's ``resources``: what its Slurm job asks for (GPUs = training processes, one per GPU, under torchrun
# when more than one; CPUs; memory; wall time). Not a training setting, so not in Stage.config(): changing it
# neither retrains a stage nor stops last.pt from resuming. Defaults by the experiment's size: a dataset of the
# ``cpu`` subset (the configs `make run` trains on a laptop) asks for a small job, any other for a paper-scale one.
RESOURCE_KEYS = ("gpus", "cpus", "mem_gb", "hours")
PAPER_RESOURCES = {"gpus": 1, "cpus": 4, "mem_gb": 32, "hours": 24}
# The CPU configs: one CPU a job, so a 2-core machine runs two jobs at once. Their small matrices gain little or
# nothing from a second torch thread (measured on 2 cores: martinez-cpu trains in 56 s on one thread, 85 s on
# two; hrnet-att-cpu's epoch takes 63 s either way), and two one-thread jobs side by side do 1.2-1.4x the work.
SMALL_RESOURCES = {"gpus": 1, "cpus": 1, "mem_gb": 8, "hours": 2}


# --- the file layout --------------------------------------------------------------------------------------

def prepared_path(dataset: str) -> Path:
    return PREPARED_DIR / f"{dataset}.h5"


def detections_path(dataset: str, detector: str) -> Path | None:
    """data/detections/<dataset>/<detector>.h5; None for the prepared file's own 2D (detector "prepared")."""
    return None if detector == OWN_2D else DETECTIONS_DIR / dataset / f"{detector}.h5"


def renders_path(dataset: str) -> Path:
    """data/renders/<dataset>.h5: the labelled crops `poselift render` makes of a prepared dataset."""
    return RENDERS_DIR / f"{dataset}.h5"


def stage_dir(experiment: str, number: int) -> Path:
    return RESULTS_DIR / experiment / f"stage{number}"


def evaluation_dir(experiment: str) -> Path:
    return RESULTS_DIR / experiment / "evaluation"


def baseline_name(dataset: str) -> str:
    return f"{BASELINE}{dataset}"


# --- params.yaml ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetSpec:
    name: str
    reader: str
    validation_split: str = "validation"
    options: dict = field(default_factory=dict)  # everything else (source, subset, ...), for the workflow


@dataclass(frozen=True)
class ModelSpec:
    preset: str
    cls: str  # key of poselift.lifting.MODELS
    args: dict


@dataclass(frozen=True)
class Stage:
    number: int  # 1-based
    name: str
    model: ModelSpec
    epochs: int
    batch_size: int
    lr: float
    task: str
    losses: dict
    optimizer: str
    weight_decay: float
    amsgrad: bool
    schedule: dict
    max_norm: float | None
    init: dict
    freeze: list
    seed: int
    select: str
    options: dict  # the task's own stage keys (e.g. lifting's window, flip_augment), checked by the task
    precision: str = "fp32"  # "fp32" | "bf16" (poselift.precision)
    compile: bool = False  # train through torch.compile (poselift.compilation)
    resources: dict = field(default_factory=lambda: dict(PAPER_RESOURCES))  # its job's {gpus, cpus, mem_gb, hours}

    def config(self) -> dict:
        """Plain-dict form (checkpoints, MLflow params, resume checks, the workflow's rerun params): every
        stage key, the task's included, with the model preset spelled out; a key of :data:`QUIET_DEFAULTS`
        only when it is not at its default."""
        d = asdict(self)
        d.update(d.pop("options"))
        del d["resources"]  # what the job asks for, not how it trains
        for key, default in QUIET_DEFAULTS.items():
            if d[key] == default:
                del d[key]
        d["model"] = {"preset": self.model.preset, "class": self.model.cls, "args": dict(self.model.args)}
        return d


@dataclass(frozen=True)
class Experiment:
    name: str
    dataset: DatasetSpec
    detector: str
    stages: tuple[Stage, ...]
    params_path: Path
    base: str = ""  # the experiment of params.yaml this run is (itself, or "<base>" of a run "<base>-seed<k>")
    seed_offset: int = 0  # k of a seeded run: every stage's seed + k
    bench_only: bool = False  # built by the `bench` target only, not by `all`
    features: str = ""  # the network detector whose feature maps image tasks read ("": the 2D detector's)

    @property
    def features_detector(self) -> str | None:
        """The detector whose stride-4 feature maps an image task reads: ``features`` when set, else the 2D
        detector (None for the prepared file's own 2D without ``features``: there is no network to read)."""
        return self.features or (self.detector if self.detector != OWN_2D else None)

    @property
    def task(self) -> str:
        """What the experiment makes, by its last stage's task: "lifting" (3D poses), "heatmaps" (a 2D detector)."""
        return self.stages[-1].task

    def stage(self, number: int) -> Stage:
        if not 1 <= number <= len(self.stages):
            raise InputError(self.params_path, f"experiments.{self.name}: no stage {number} "
                                               f"(stages are numbered 1..{len(self.stages)})")
        return self.stages[number - 1]

    # --- the default layout (every command also takes explicit paths) ---
    def prepared_path(self) -> Path:
        return prepared_path(self.dataset.name)

    def detections_path(self) -> Path | None:
        return detections_path(self.dataset.name, self.detector)

    def stage_dir(self, number: int) -> Path:
        return stage_dir(self.name, number)

    def evaluation_dir(self) -> Path:
        return evaluation_dir(self.name)

    def inputs(self) -> dict:
        """The data files its stages' tasks read, at their default paths (None: absent), e.g.
        {"prepared": data/prepared/<dataset>.h5, "detections": data/detections/<dataset>/<detector>.h5}."""
        from poselift.training.tasks import TASKS

        files: dict = {}
        for stage in self.stages:
            files.update(TASKS[stage.task].inputs(self))
        return files

    def init_sources(self, number: int) -> list[int]:
        """The earlier stages whose checkpoint.pt stage ``number``'s ``init`` loads."""
        return sorted({v for v in self.stage(number).init.values() if isinstance(v, int)})

    def init_files(self, number: int) -> list[str]:
        """The checkpoint files (not stages) stage ``number``'s ``init`` loads, e.g. imported official weights."""
        return sorted({v for v in self.stage(number).init.values() if isinstance(v, str)})


def read_params(path: str | os.PathLike = PARAMS) -> dict:
    """params.yaml as a dict, or an InputError (missing file, bad YAML, not a mapping)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InputError(path, f"not valid YAML ({e})") from None
    except UnicodeDecodeError as e:
        raise InputError(path, f"not a UTF-8 text file ({e})") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a mapping of sections at the top level")
    return data


def load_experiment(name: str, path: str | os.PathLike = PARAMS) -> Experiment:
    """Read and check experiment ``name`` of params file ``path`` (its dataset, presets and stages)."""
    return parse_experiment(read_params(path), name, path)


def parse_experiment(params: dict, name: str, path: str | os.PathLike = PARAMS) -> Experiment:
    """Check experiment ``name`` of an already-read params dict (``path`` names it in errors)."""
    path = Path(path)
    check = _Checker(path)
    experiments = check.section(params, "experiments")
    base, offset = split_seed_run(name)
    if base not in experiments or (offset and offset >= bench_seeds(params, path)):
        raise InputError(path, f"experiments: no experiment '{name}'{did_you_mean(name, experiments)} "
                               f"(known: {', '.join(experiments) or 'none'}"
                               f"{SEED_RUNS_HELP if offset else ''})")
    where = f"experiments.{base}"
    exp = check.mapping(experiments[base], where)
    check.keys(exp, where, required=("dataset", "stages"), optional=("detector", "features", "bench_only"))
    bench_only = check.boolean(exp.get("bench_only", False), f"{where}.bench_only")
    dataset = _dataset(check, params, exp["dataset"], f"{where}.dataset")
    # the 2D a lifting experiment lifts (default: the prepared file's own); image tasks read pixels instead
    detector = check.string(exp.get("detector", OWN_2D), f"{where}.detector")
    # image tokens (Lifting by Image) from another detector's feature maps than the 2D's, e.g. ground-truth 2D
    # (the paper's ablations) with the HRNet's maps
    features = check.string(exp["features"], f"{where}.features") if "features" in exp else ""
    stages_raw = exp["stages"]
    if not isinstance(stages_raw, list) or not stages_raw:
        raise InputError(path, f"{where}.stages: expected a non-empty list of stages")
    stages: list[Stage] = []
    for number, raw in enumerate(stages_raw, 1):
        stage = _stage(check, params, raw, number, f"{where}.stages[{number}]", default_resources(dataset))
        init = {sub: _stage_checkpoint(params, path, source, base, offset, f"{where}.stages[{number}].init.{sub or '(whole model)'}")
                if isinstance(source, str) and STAGE_REF.match(source) else source
                for sub, source in stage.init.items()}
        stages.append(replace(stage, seed=stage.seed + offset, init=init))
    return Experiment(name=name, dataset=dataset, detector=detector, stages=tuple(stages), params_path=path,
                      base=base, seed_offset=offset, bench_only=bench_only, features=features)


def _stage_checkpoint(params: dict, path: Path, ref: str, base: str, offset: int, where: str) -> str:
    """``init``'s "<experiment>/<N>" as the checkpoint file it names, results/<experiment>/stage<N>/checkpoint.pt:
    stages that several experiments share (e.g. one Lifting-by-Image Stage 1 under each Stage 2 variant) are
    trained once. In seeded run k the reference follows the seed (<experiment>-seed<k>) when that experiment
    is itself run with seeds (bench.experiments)."""
    other, n = STAGE_REF.match(ref).groups()
    if other == base:
        raise InputError(path, f"{where}: '{ref}' is this experiment: name its stage by number ({n})")
    if offset and other in (params.get("bench") or {}).get("experiments", []):
        other = f"{other}-seed{offset}"
    return (stage_dir(other, int(n)) / "checkpoint.pt").as_posix()


def experiment_names(path: str | os.PathLike = PARAMS, params: dict | None = None) -> list[str]:
    """The experiments of params file ``path`` (or of the already-read ``params``), in file order."""
    params = read_params(path) if params is None else params
    return list(_Checker(Path(path)).section(params, "experiments"))


# --- seeded runs and the bench section ------------------------------------------------------------------------
#
# params.yaml's ``bench`` section lists what the longer `bench` target runs (the ablation grid, the detector
# table, the Lifting-by-Image sweeps)::
#
#     bench:
#       seeds: 3                         # runs per experiment: <name>, <name>-seed1, <name>-seed2
#       experiments: [pot-b, pot-b-mhsa, ...]   # each run `seeds` times
#       once: [hrnet-cpu]                # run once (e.g. the 2D detectors whose outputs the grid lifts)
#       ablations: [...]                 # rows of the report's ablation table (poselift report --bench)
#       detector_table: {...}            # the attention paper's Table V
#
# Run ``<name>-seed<k>`` is experiment ``<name>`` with every stage's seed increased by k, so run k of every
# experiment shares its seeds, and the same run gives the same numbers. Experiments with ``bench_only: true``
# are built by `bench` alone; `all` (make run) builds the others.

SEED_RUN = re.compile(r"^(.+)-seed([1-9][0-9]*)$")
STAGE_REF = re.compile(r"^([A-Za-z0-9_.@-]+)/([1-9][0-9]*)$")  # init: {submodule: <experiment>/<N>}
SEED_RUNS_HELP = "; <name>-seed<k> is run k of <name>, for k < bench.seeds"
BENCH_KEYS = ("seeds", "experiments", "once", "ablations", "detector_table", "tables")


def split_seed_run(name: str) -> tuple[str, int]:
    """"pot-b-seed2" -> ("pot-b", 2); a plain name -> (name, 0)."""
    m = SEED_RUN.match(name)
    return (m.group(1), int(m.group(2))) if m else (name, 0)


def bench_section(params: dict, path: str | os.PathLike = PARAMS) -> dict:
    """params.yaml ``bench`` checked: {"seeds": int >= 1, "experiments": [names of the experiments section]}
    plus the report's tables as written (``poselift report --bench`` checks those)."""
    check = _Checker(Path(path))
    raw = params.get("bench")
    if raw is None:
        return {"seeds": 1, "experiments": [], "once": []}
    raw = check.mapping(raw, "bench")
    check.keys(raw, "bench", required=(), optional=BENCH_KEYS)
    seeds = check.integer(raw.get("seeds", 1), "bench.seeds", minimum=1)
    known = check.mapping(params.get("experiments"), "experiments")
    lists = {}
    for key in ("experiments", "once"):
        names = raw.get(key, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            check.fail(f"bench.{key}", "expected a list of experiment names")
        for n in names:
            if n not in known:
                check.fail(f"bench.{key}", f"no experiment '{n}' in the experiments section")
        lists[key] = list(names)
    for n, exp in known.items():
        if isinstance(exp, dict) and exp.get("bench_only") and n not in lists["experiments"] + lists["once"]:
            check.fail(f"experiments.{n}.bench_only", "the experiment is not listed in bench.experiments or "
                                                      "bench.once, so no target builds it")
    return {**raw, "seeds": seeds, **lists}


def bench_seeds(params: dict, path: str | os.PathLike = PARAMS) -> int:
    return bench_section(params, path)["seeds"]


def bench_runs(params: dict, path: str | os.PathLike = PARAMS) -> list[str]:
    """Every run the `bench` target trains: each of bench.experiments with its seeded runs, then bench.once."""
    section = bench_section(params, path)
    runs = [f"{n}-seed{k}" if k else n for n in section["experiments"] for k in range(section["seeds"])]
    return runs + [n for n in section["once"] if n not in runs]


def _dataset(check: _Checker, params: dict, name, where: str) -> DatasetSpec:
    from poselift.data.readers import READERS

    name = check.string(name, where)
    datasets = check.section(params, "datasets")
    if name not in datasets:
        raise InputError(check.path, f"{where}: unknown dataset '{name}'{did_you_mean(name, datasets)} "
                                     f"(datasets: {', '.join(datasets) or 'none'})")
    spec = dict(check.mapping(datasets[name], f"datasets.{name}"))
    if "reader" not in spec:
        raise InputError(check.path, f"datasets.{name}: missing key 'reader'")
    reader = check.string(spec.pop("reader"), f"datasets.{name}.reader")
    if reader not in READERS:
        raise InputError(check.path, f"datasets.{name}.reader: unknown reader '{reader}'"
                                     f"{did_you_mean(reader, READERS)} "
                                     f"(known: {', '.join(sorted(READERS))})")
    split = check.string(spec.pop("validation_split", "validation"), f"datasets.{name}.validation_split")
    if split not in ("train", "validation", "test"):
        raise InputError(check.path, f"datasets.{name}.validation_split: '{split}' is not a split "
                                     f"(train, validation, test)")
    return DatasetSpec(name=name, reader=reader, validation_split=split, options=spec)


def model_spec(params: dict, preset, path: Path, where: str = "model") -> ModelSpec:
    """The ``models`` preset ``preset``: its class (checked against MODELS) and constructor arguments."""
    from poselift.models import MODELS

    check = _Checker(path)
    preset = check.string(preset, where)
    models = check.section(params, "models")
    if preset not in models:
        raise InputError(path, f"{where}: unknown model preset '{preset}'{did_you_mean(preset, models)} "
                               f"(models: {', '.join(models) or 'none'})")
    args = dict(check.mapping(models[preset], f"models.{preset}"))
    if "class" not in args:
        raise InputError(path, f"models.{preset}: missing key 'class'")
    cls = check.string(args.pop("class"), f"models.{preset}.class")
    if cls not in MODELS:
        raise InputError(path, f"models.{preset}.class: unknown model class '{cls}'{did_you_mean(cls, MODELS)} "
                               f"(known: {', '.join(sorted(MODELS)) or 'none'})")
    check_model_args(MODELS[cls], args, path, f"models.{preset}")
    return ModelSpec(preset=preset, cls=cls, args=args)


def check_model_args(factory, args: dict, path, where: str) -> None:
    """Every key of ``args`` must be a constructor argument, and every argument without default given."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    for key in args:
        if key not in params:
            raise InputError(path, f"{where}.{key}: not an argument of {getattr(factory, '__name__', factory)}"
                                   f"{did_you_mean(key, params)} (arguments: {', '.join(params)})")
    for key, p in params.items():
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and key not in args:
            raise InputError(path, f"{where}: missing key '{key}' (a required argument of "
                                   f"{getattr(factory, '__name__', factory)})")


def default_resources(dataset: DatasetSpec) -> dict:
    """What a stage's job asks for unless its ``resources`` say otherwise: small for a ``cpu``-subset dataset."""
    return dict(SMALL_RESOURCES if dataset.options.get("subset") == "cpu" else PAPER_RESOURCES)


def _resources(check: _Checker, raw, where: str, defaults: dict) -> dict:
    """A stage's ``resources`` mapping checked, the keys it leaves out at ``defaults``."""
    if raw is None:
        return dict(defaults)
    check.keys(check.mapping(raw, where), where, required=(), optional=RESOURCE_KEYS)
    out = {**defaults, **raw}
    out["gpus"] = check.integer(out["gpus"], f"{where}.gpus", minimum=0)
    out["cpus"] = check.integer(out["cpus"], f"{where}.cpus", minimum=1)
    for key in ("mem_gb", "hours"):
        value = check.number(out[key], f"{where}.{key}", positive=True)
        out[key] = int(value) if value == int(value) else value
    return out


def _stage(check: _Checker, params: dict, raw, number: int, where: str,
           resources: dict | None = None) -> Stage:
    from poselift.models import MODELS
    from poselift.training.tasks import TASKS

    raw = check.mapping(raw, where)
    model = model_spec(params, raw.get("model"), check.path, f"{where}.model") if "model" in raw else None
    task_name = raw.get("task") or getattr(MODELS[model.cls], "task", "lifting") if model else "lifting"
    task_name = check.choice(task_name, f"{where}.task", tuple(TASKS))
    task = TASKS[task_name]
    check.keys(raw, where, required=[k for k, v in STAGE_KEYS.items() if v is REQUIRED],
               optional=[k for k, v in STAGE_KEYS.items() if v is not REQUIRED] + list(task.stage_keys)
               + ["resources"])
    s = {k: raw.get(k, v) for k, v in STAGE_KEYS.items()}
    s["name"] = check.string(s["name"], f"{where}.name")
    s["task"] = task_name
    for key in ("epochs", "batch_size"):
        s[key] = check.integer(s[key], f"{where}.{key}", minimum=1)
    s["seed"] = check.integer(s["seed"], f"{where}.seed", minimum=0)
    s["lr"] = check.number(s["lr"], f"{where}.lr", positive=True)
    s["weight_decay"] = check.number(s["weight_decay"], f"{where}.weight_decay")
    if s["max_norm"] is not None:
        s["max_norm"] = check.number(s["max_norm"], f"{where}.max_norm", positive=True)
    s["amsgrad"] = check.boolean(s["amsgrad"], f"{where}.amsgrad")
    s["optimizer"] = check.choice(s["optimizer"], f"{where}.optimizer", OPTIMIZERS)
    s["select"] = check.choice(s["select"], f"{where}.select", ("best", "last"))
    s["precision"] = check.choice(s["precision"], f"{where}.precision", PRECISIONS)
    s["compile"] = check.boolean(s["compile"], f"{where}.compile")

    schedule = check.mapping(s["schedule"], f"{where}.schedule")
    check.keys(schedule, f"{where}.schedule", required=("gamma",), optional=("every", "milestones"))
    s["schedule"] = {"gamma": check.number(schedule["gamma"], f"{where}.schedule.gamma", positive=True),
                     "every": check.integer(schedule.get("every", 1), f"{where}.schedule.every", minimum=1)}
    if "milestones" in schedule:  # lr *= gamma at each listed epoch (MultiStepLR), e.g. [HRc]'s LR_STEP
        if "every" in schedule:
            check.fail(f"{where}.schedule", "give either 'every' (a step each n epochs) or 'milestones', not both")
        steps = schedule["milestones"]
        if not isinstance(steps, list) or not steps:
            check.fail(f"{where}.schedule.milestones", f"expected a list of epochs, got {steps!r}")
        steps = [check.integer(v, f"{where}.schedule.milestones", minimum=1) for v in steps]
        if steps != sorted(set(steps)):
            check.fail(f"{where}.schedule.milestones", f"epochs must increase, got {steps}")
        s["schedule"] = {"gamma": s["schedule"]["gamma"], "milestones": steps}

    losses = check.mapping(s["losses"], f"{where}.losses")
    if not losses:
        raise InputError(check.path, f"{where}.losses: no loss terms")
    for term, weight in losses.items():
        if term not in task.losses:
            raise InputError(check.path, f"{where}.losses: unknown loss term '{term}' of task {task_name}"
                                         f"{did_you_mean(term, task.losses)} "
                                         f"(known: {', '.join(sorted(task.losses))})")
        check.number(weight, f"{where}.losses.{term}")
    s["losses"] = {str(k): float(v) for k, v in losses.items()}

    init = check.mapping(s["init"], f"{where}.init")
    for sub, source in init.items():
        key = f"{where}.init.{sub or '(whole model)'}"
        if isinstance(source, str) and STAGE_REF.match(source):  # another experiment's stage: "<name>/<N>"
            other, n = STAGE_REF.match(source).groups()
            experiments = check.section(params, "experiments")
            if other not in experiments:
                check.fail(key, f"unknown experiment '{other}'{did_you_mean(other, experiments)}")
            stages = experiments[other].get("stages") if isinstance(experiments[other], dict) else None
            if not isinstance(stages, list) or not 1 <= int(n) <= len(stages):
                check.fail(key, f"experiment '{other}' has no stage {n}")
            continue
        if isinstance(source, str):  # a checkpoint file, e.g. official weights through `import-checkpoint`
            if not source.endswith(".pt"):
                check.fail(key, f"expected an earlier stage's number, another experiment's stage "
                                f"(<experiment>/<N>) or a poselift checkpoint file (.pt), got '{source}'")
            continue
        n = check.integer(source, key, minimum=1)
        if n >= number:
            raise InputError(check.path, f"{key}: stage {n} is not an earlier stage (this is stage {number})")
    s["init"] = {("" if k is None else str(k)): v if isinstance(v, str) else int(v) for k, v in init.items()}
    freeze = s["freeze"]
    if not isinstance(freeze, list) or not all(isinstance(f, str) for f in freeze):
        raise InputError(check.path, f"{where}.freeze: expected a list of submodule names")
    s["freeze"] = list(freeze)
    options = task.check_stage_options({k: raw.get(k, v) for k, v in task.stage_keys.items()}, check, where)
    resources = _resources(check, raw.get("resources"), f"{where}.resources", resources or PAPER_RESOURCES)
    return Stage(number=number, model=model, options=options, resources=resources,
                 **{k: v for k, v in s.items() if k != "model"})


def did_you_mean(word, choices) -> str:
    """"; did you mean 'x'?" naming the valid choice closest to a misspelt ``word`` (difflib), or ""."""
    import difflib

    choices = [str(c) for c in choices]
    swapped = [c for c in choices if sorted(c) == sorted(str(word))]  # letters swapped: 'mpjep' is 'mpjpe'
    close = swapped or difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class _Checker:
    """Type checks that raise one-line InputErrors naming the params file and the key."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, problem: str):
        raise InputError(self.path, f"{where}: {problem}")

    def mapping(self, value, where: str) -> dict:
        if value is None:
            self.fail(where, "missing (expected a mapping)")
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {type(value).__name__}")
        return value

    def section(self, params: dict, name: str) -> dict:
        """The top-level section ``name``; when it is absent, a misspelt one is named with ``name``."""
        if params.get(name) is None:
            import difflib

            typo = difflib.get_close_matches(name, [str(k) for k in params], n=1, cutoff=0.6)
            if typo and typo[0] != name:
                self.fail(typo[0], f"unknown section; did you mean '{name}'?")
        return self.mapping(params.get(name), name)

    def keys(self, d: dict, where: str, required, optional) -> None:
        known = set(required) | set(optional)
        for key in d:  # unknown keys first: a typo is reported as itself, not as the key it misses
            if key not in known:
                self.fail(f"{where}.{key}", f"unknown key{did_you_mean(key, known)} "
                                            f"(known: {', '.join(sorted(known))})")
        for key in required:
            if key not in d:
                self.fail(where, f"missing key '{key}'")

    def string(self, value, where: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(where, f"expected a non-empty string, got {value!r}")
        return value

    def integer(self, value, where: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(where, f"must be >= {minimum}, got {value}")
        return int(value)

    def number(self, value, where: str, positive: bool = False) -> float:
        if isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(where, f"expected a finite number, got {value!r}")
        if positive and value <= 0:
            self.fail(where, f"must be > 0, got {value}")
        return float(value)

    def boolean(self, value, where: str) -> bool:
        if not isinstance(value, bool):
            self.fail(where, f"expected true or false, got {value!r}")
        return value

    def choice(self, value, where: str, choices) -> str:
        if value not in choices:
            self.fail(where, f"expected one of {', '.join(choices)}, got {value!r}{did_you_mean(value, choices)}")
        return value
