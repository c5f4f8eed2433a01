"""What the Snakemake workflow needs from params.yaml: which experiments `all` builds, each job's files and
`poselift` command line, and code fingerprints.

workflow/rules/common.smk only binds these to Snakemake's ``config`` (``wf = Workflow(config, params_path)``).
params.yaml and the file layout (data/prepared/<dataset>.h5, data/detections/<dataset>/<detector>.h5,
results/<experiment>/stage<N>/, results/<experiment>/evaluation/) have one owner, :mod:`poselift.experiments`:
this module parses and checks every experiment through it, as the CLI does.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from poselift.data.readers import SOURCE_OPTIONAL
from poselift.detection import DETECTORS
from poselift.errors import InputError
from poselift.fingerprint import code_digest
from poselift.experiments import (OWN_2D, RESULTS_DIR, baseline_name, bench_runs, evaluation_dir, experiment_names,
                                  parse_experiment, prepared_path, renders_path, stage_dir)

# The files `poselift report` writes, by role.
REPORT = {"table": "reports/results.md", "csv": "reports/results.csv", "html": "reports/results.html",
          "metrics": "reports/metrics.json", "plot": "reports/per_action.png"}

# The subcommands the rules run (poselift.commands.<name>): each gets a code fingerprint.
COMMANDS = ("prepare", "render", "crops", "detect", "import_detections", "train", "evaluate", "baseline", "report")
RENDER_KEYS = ("every", "seed", "background_seed", "split", "quality", "full_frames")  # params.yaml render.<dataset> -> poselift render
VIDEO_KEYS = ("videos", "pattern", "skip_missing")  # render.<dataset> with `videos`: crops of real frames -> poselift crops videos


def _posix(path) -> str:
    return Path(path).as_posix()


# --- params.yaml, through poselift.experiments ---------------------------------------------------------------

class Workflow:
    """The workflow's view of a params dict (Snakemake's ``config``) read from ``params_path``.

    Every experiment is parsed and checked by :func:`poselift.experiments.parse_experiment`, the same code
    the CLI runs, so a mistake stops the workflow before any job, with the CLI's one-line message (an
    :class:`~poselift.errors.InputError` naming ``params_path`` and the key)."""

    def __init__(self, config: dict, params_path: str | os.PathLike = "params.yaml"):
        self.config = config
        self.params_path = Path(params_path)
        self._parsed: dict = {}

    @property
    def device(self) -> str:
        """train/evaluate --device (config key `device`; the local profile sets cpu)."""
        return self.config.get("device", "auto")

    def names(self) -> list[str]:
        """Every run: the experiments of params.yaml in file order, then the bench target's seeded runs
        (``<name>-seed<k>``, :func:`poselift.experiments.bench_runs`)."""
        names = experiment_names(self.params_path, self.config)
        return names + [run for run in bench_runs(self.config, self.params_path) if run not in names]

    def experiment(self, name: str):
        """The checked :class:`~poselift.experiments.Experiment` ``name``."""
        if name not in self._parsed:
            self._parsed[name] = parse_experiment(self.config, name, self.params_path)
        return self._parsed[name]

    def stage_config(self, name: str, number: int) -> dict:
        """Stage ``number``'s full settings (defaults filled in, model preset spelled out): a param of its
        train rule, so a changed setting reruns that stage and what depends on it."""
        return self.experiment(name).stage(number).config()

    def num_stages(self, name: str) -> int:
        return len(self.experiment(name).stages)

    def validation_split(self, name: str) -> str:
        """The split training validates on (datasets.<dataset>.validation_split): it picks checkpoint.pt."""
        return self.experiment(name).dataset.validation_split

    # --- which experiments `all` builds ---

    def imported_detections(self, dataset: str, detector: str) -> str | None:
        """The source file of detections that are imported rather than computed (e.g. CPN's, from
        VideoPose3D): params.yaml detectors.<detector>.import.<dataset>, or None."""
        block = (self.config.get("detectors") or {}).get(detector)
        source = (block.get("import") or {}).get(dataset) if isinstance(block, dict) else None
        return str(source) if source else None

    def missing_data(self, name: str) -> list[str]:
        """What params.yaml lacks for experiment `name`'s data: a dataset source, the file of imported
        detections (detectors.<name>.import.<dataset>), or the render.<dataset> block of a dataset whose crops
        it reads (a 2D detector's training; a network detector's detections). Empty when the workflow can
        make all of it."""
        exp = self.experiment(name)
        dataset, detector = exp.dataset, exp.detector
        missing = []
        if "source" not in dataset.options and dataset.reader not in SOURCE_OPTIONAL:
            missing.append(f"datasets.{dataset.name}.source")
        reads_renders = _posix(renders_path(dataset.name)) in self.experiment_inputs(name).values()
        if reads_renders and dataset.name not in self.renders():  # e.g. a 2D detector trained on the crops
            missing.append(f"render.{dataset.name}")
        network = self._network(detector)
        if network is not None:  # detections by a network poselift trains: its experiment's data, and pixels
            missing += [m for m in self._network_needs(dataset.name, network) if m not in missing]
        elif (detector != OWN_2D and not self._image_free(detector)
              and self.imported_detections(dataset.name, detector) is None):  # neither computed nor imported
            missing.append(f"detectors.{detector}.import.{dataset.name}")
        maps = exp.features_detector
        if "features" in self.experiment_inputs(name) and maps != detector:  # another network's feature maps
            if self._network(maps) is None:
                missing.append(f"detectors.{maps} (a network detector, for experiments.{exp.base}.features)")
            else:
                missing += [m for m in self._network_needs(dataset.name, self._network(maps)) if m not in missing]
        for stage in exp.stages:  # an `init` checkpoint file no rule makes (official weights the user imports)
            for path in exp.init_files(stage.number):
                other = self._stage_output(path)
                if other is not None:  # another experiment's stage: what that experiment lacks
                    missing += [m for m in self.missing_data(other) if m not in missing]
                elif not Path(path).is_file() and f"{path} (an init file that does not exist)" not in missing:
                    missing.append(f"{path} (an init file that does not exist)")
        return missing

    def _network_needs(self, dataset: str, network: dict) -> list[str]:
        """What a network detector's run on ``dataset`` lacks: the dataset's crops, and its experiment's data."""
        needs = [] if dataset in self.renders() else [f"render.{dataset}"]
        return needs + [m for m in self.missing_data(network["experiment"]) if m not in needs]

    def _stage_output(self, path: str) -> str | None:
        """The experiment whose train rule makes checkpoint file ``path`` (results/<name>/stage<N>/checkpoint.pt
        of an experiment or seeded run with a stage N), else None."""
        parts = Path(path).parts
        if len(parts) != 4 or Path(*parts[:1]) != RESULTS_DIR or parts[3] != "checkpoint.pt":
            return None
        name, stage = parts[1], parts[2]
        try:
            exp = self.experiment(name)
        except InputError:
            return None
        return name if stage in {f"stage{n}" for n in range(1, len(exp.stages) + 1)} else None

    def selected(self) -> list[str]:
        """The experiments `all` builds: every one whose data the workflow can make (see missing_data), but
        the seeded runs and the experiments marked ``bench_only``."""
        return [name for name in experiment_names(self.params_path, self.config)
                if not self.experiment(name).bench_only and not self.missing_data(name)]

    def bench_selected(self) -> list[str]:
        """The runs the `bench` target builds: params.yaml bench.experiments x bench.seeds, those whose data
        the workflow can make."""
        return [name for name in bench_runs(self.config, self.params_path) if not self.missing_data(name)]

    def bench_metrics(self) -> list[str]:
        """The evaluations the bench report reads: the bench runs' and `all`'s (with their baselines)."""
        names = self.report_names() + [n for n in self.bench_selected() if n not in self.selected()]
        return [f"{_posix(evaluation_dir(name))}/metrics.json" for name in names]

    def bench_report_names(self) -> list[str]:
        return self.report_names() + [n for n in self.bench_selected() if n not in self.selected()]

    def names_of_task(self, *tasks: str) -> list[str]:
        """The experiments whose last stage has one of ``tasks`` ("lifting", "image_lifting": 3D; "heatmaps":
        2D detectors)."""
        return [name for name in self.names() if self.experiment(name).task in tasks]

    def network_detectors(self) -> dict:
        """params.yaml detectors.<name> blocks with ``network``: 2D by a network poselift trains,
        {name: {"network": a DETECTORS key that reads pixels, "experiment": the experiment whose last
        stage's checkpoint it runs}}, run on data/renders/<dataset>.h5."""
        found = {}
        for name, block in (self.config.get("detectors") or {}).items():
            if not isinstance(block, dict) or "network" not in block:
                continue
            where = f"detectors.{name}"
            unknown = sorted(set(block) - {"network", "experiment"})
            if unknown:
                raise InputError(self.params_path, f"{where}.{unknown[0]}: unknown key (known: experiment, network)")
            network, experiment = block.get("network"), block.get("experiment")
            if not getattr(DETECTORS.get(network), "reads_images", False):
                reading = ", ".join(k for k, v in DETECTORS.items() if getattr(v, "reads_images", False))
                raise InputError(self.params_path, f"{where}.network: '{network}' is not a network detector "
                                                   f"(known: {reading})")
            if not isinstance(experiment, str) or not experiment:
                raise InputError(self.params_path, f"{where}.experiment: expected the name of an experiment")
            found[name] = {"network": network, "experiment": experiment}  # checked where it is used
        return found

    def feature_detectors(self) -> list[str]:
        """The network detectors whose feature maps an experiment reads (its inputs name ``features``: Lifting
        by Image): rule detect_images_features runs them with ``poselift detect --features``."""
        networks = self.network_detectors()
        return sorted({self.experiment(name).features_detector for name in self.names()
                       if "features" in self.experiment_inputs(name)} & set(networks))

    def _network(self, detector: str) -> dict | None:
        """network_detectors()[detector] once its experiment is checked to train a 2D detector, or None."""
        network = self.network_detectors().get(detector)
        if network is not None:
            trains = network["experiment"]
            if trains not in self.names() or self.experiment(trains).task != "heatmaps":
                raise InputError(self.params_path, f"detectors.{detector}.experiment: '{trains}' is not an "
                                                   f"experiment that trains a 2D detector (task heatmaps)")
        return network

    @staticmethod
    def _image_free(detector: str) -> bool:
        """A detector `poselift detect` runs without images or checkpoints (gt, synthetic)."""
        cls = DETECTORS.get(detector)
        return cls is not None and not getattr(cls, "reads_images", False) and not getattr(cls, "frames_only", False)

    def left_out_messages(self) -> list[str]:
        """One line per set of missing keys, naming the experiments `all` leaves out for lack of them."""
        left_out: dict[str, list[str]] = {}
        for name in experiment_names(self.params_path, self.config):
            missing = self.missing_data(name)
            if missing:
                left_out.setdefault(", ".join(missing), []).append(name)
        return [f"poselift workflow: `all` leaves out {', '.join(names)}: params.yaml does not set {keys}"
                for keys, names in left_out.items()]

    # --- an experiment's files and arguments ---

    def experiment_inputs(self, name: str) -> dict:
        """The data files an experiment's training and evaluation read (its tasks' inputs, e.g. prepared and
        detections; an absent one, such as the detections of an own-2D experiment, is left out)."""
        return {key: _posix(path) for key, path in self.experiment(name).inputs().items() if path is not None}

    def data_args(self, name: str) -> str:
        """--input NAME=PATH for each of those files ('none' for an absent one): `poselift train`/`evaluate`."""
        return " ".join(f"--input {key}={shlex.quote(_posix(path)) if path is not None else 'none'}"
                        for key, path in self.experiment(name).inputs().items())

    def init_checkpoints(self, name: str, number: int) -> dict:
        """{stage M: its checkpoint.pt} for every earlier stage that stage `number`'s `init` loads, and
        {init<i>: file} for each checkpoint file it loads (e.g. imported official weights)."""
        exp = self.experiment(name)
        return {**{f"stage{m}": f"{_posix(stage_dir(name, m))}/checkpoint.pt" for m in exp.init_sources(number)},
                **{f"init{i}": path for i, path in enumerate(exp.init_files(number))}}

    def init_args(self, name: str, number: int) -> str:
        """--init M=PATH for each checkpoint of init_checkpoints (the paths the train rule declares as inputs)."""
        return " ".join(f"--init {m}={_posix(stage_dir(name, m))}/checkpoint.pt"
                        for m in self.experiment(name).init_sources(number))

    def last_checkpoint(self, name: str) -> str:
        """The checkpoint evaluation scores: the last stage's."""
        return f"{_posix(stage_dir(name, self.num_stages(name)))}/checkpoint.pt"

    # --- what each phase builds ---

    def all_prepared(self) -> list[str]:
        return sorted({_posix(self.experiment(name).prepared_path()) for name in self.selected()})

    def all_detections(self) -> list[str]:
        paths = {self.experiment(name).detections_path() for name in self.selected()}
        return sorted(_posix(p) for p in paths if p is not None)

    def all_checkpoints(self) -> list[str]:
        return [f"{_posix(stage_dir(name, n))}/checkpoint.pt" for name in self.selected()
                for n in range(1, self.num_stages(name) + 1)]

    def wildcard_names(self, names) -> str:
        """A regex matching exactly ``names`` (a rule's wildcard constraint); one matching nothing if empty."""
        import re

        return "|".join(re.escape(n) for n in names) or "(?!)"

    def all_metrics(self) -> list[str]:
        """Every selected experiment's evaluation, then the mean-pose baseline of each dataset they use."""
        return [f"{_posix(evaluation_dir(name))}/metrics.json" for name in self.report_names()]

    def report_names(self) -> list[str]:
        """The rows of the results table: the selected experiments and a mean-pose baseline per dataset."""
        datasets = sorted({self.experiment(name).dataset.name for name in self.selected()})
        return self.selected() + [baseline_name(d) for d in datasets]

    # --- the rendered benchmark ---

    def renders(self) -> dict:
        """params.yaml ``render``: {dataset: settings} of the datasets made into labelled crops: rendered
        (``poselift render``), or, with ``videos``, cut from the dataset's real videos (``poselift crops
        videos``, e.g. Human3.6M's)."""
        section = self.config.get("render") or {}
        if not isinstance(section, dict):
            raise InputError(self.params_path, "render: expected a mapping of dataset names")
        for dataset, settings in section.items():
            self.dataset_spec(dataset)
            known = VIDEO_KEYS if "videos" in (settings or {}) else RENDER_KEYS
            unknown = sorted(set(settings or {}) - set(known))
            if unknown:
                raise InputError(self.params_path, f"render.{dataset}.{unknown[0]}: unknown key "
                                                   f"(known: {', '.join(known)})")
        return {dataset: dict(settings or {}) for dataset, settings in section.items()}

    def all_renders(self) -> list[str]:
        return [_posix(renders_path(d)) for d in self.renders()]

    def render_args(self, dataset: str) -> str:
        """`poselift render` options from params.yaml render.<dataset> (or `poselift crops videos`' with
        ``videos``)."""
        settings = self.renders()[dataset]
        flags = ("full_frames", "skip_missing")
        args = [f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in settings.items()
                if k not in flags and v is not None]
        return " ".join(args + [f"--{k.replace('_', '-')}" for k in flags if settings.get(k)])

    def render_command(self, dataset: str, workers: int) -> str:
        """The command that makes data/renders/<dataset>.h5 (then --prepared and --out follow): `poselift
        render` with render.<dataset>'s settings, or `poselift crops videos` when they name ``videos``."""
        if "videos" in self.renders()[dataset]:
            return f"poselift crops videos {self.render_args(dataset)}"
        return f"poselift render {self.render_args(dataset)} --workers {int(workers)}"

    def render_code(self, dataset: str) -> str:
        """Which command's code fingerprint the render rule of ``dataset`` carries: crops or render."""
        return "crops" if "videos" in self.renders()[dataset] else "render"

    def report_crops_args(self) -> str:
        return " ".join(f"--crops {path}" for path in self.all_renders())

    def report_sheets(self) -> list[str]:
        """The contact sheets `poselift report` draws of the renders: reports/crops-<dataset>.png."""
        return [f"reports/crops-{d}.png" for d in self.renders()]

    def report_attention(self) -> list[str]:
        """reports/attention.png, the Lifting-by-Image attention pictures, where a reported experiment is one."""
        return ["reports/attention.png"] if any(self.experiment(n).task == "image_lifting"
                                                for n in self.selected()) else []

    # --- what a job asks Slurm for ---

    def train_resources(self, name: str, number: int) -> dict:
        """Stage ``number``'s job, from its ``resources`` (:data:`poselift.experiments.RESOURCE_KEYS`): {"gpu",
        "cpus", "mem_mb", "runtime" (minutes)}. The train rule asks for them and passes ``gpu`` to
        ``poselift train --processes`` (torchrun with one process a GPU when more than one)."""
        r = self.experiment(name).stage(number).resources
        return {"gpu": r["gpus"], "cpus": r["cpus"], "mem_mb": int(round(r["mem_gb"] * 1000)),
                "runtime": int(-(-r["hours"] * 60 // 1))}

    def priority(self, name: str) -> int:
        """A job's scheduling priority: 1 for the image chain (an experiment that reads crops, image features
        or a network detector's 2D; render and network detection too), 0 for the rest. Its jobs follow one
        another (render -> detector training -> detection and features -> Lifting by Image): started first,
        they run beside the other experiments instead of after them."""
        inputs = self.experiment_inputs(name)
        network = self.experiment(name).detector in self.network_detectors()
        return int(network or "crops" in inputs or "features" in inputs)

    def evaluate_resources(self, name: str) -> dict:
        """An evaluation's job: one process (at most one GPU), the last stage's CPUs and memory, at most 4 h."""
        r = self.train_resources(name, self.num_stages(name))
        return {**r, "gpu": min(r["gpu"], 1), "runtime": min(r["runtime"], 240)}

    def unschedulable(self, partitions: dict) -> list[str]:
        """One line for each train job of `all` and `bench` that no partition of ``partitions`` (from
        :func:`slurm_partitions`) can ever run: more GPUs, CPUs or memory than its largest node has, or a
        longer time than its limit. Empty without partitions (no Slurm here)."""
        if not partitions:
            return []
        lines, seen = [], set()
        for name in self.selected() + self.bench_selected():
            base = self.experiment(name).base  # a bench run <base>-seed<k> asks for what its base asks
            for stage in self.experiment(name).stages:
                job = self.train_resources(name, stage.number)
                if (base, stage.number) in seen or any(_fits(job, limits) for limits in partitions.values()):
                    continue
                seen.add((base, stage.number))
                largest = "; ".join(f"{part}: {_describe(limits)}" for part, limits in partitions.items())
                lines.append(f"poselift workflow: Slurm can never schedule train {base} stage {stage.number} "
                             f"({_describe(job)}, experiments.{base}.stages[{stage.number}].resources): no "
                             f"partition has a node and time limit that large ({largest})")
        return lines


    def dataset_spec(self, name: str) -> dict:
        """params.yaml datasets.<name> as written (reader and its options)."""
        datasets = self.config.get("datasets") or {}
        if not isinstance(datasets.get(name), dict) or "reader" not in datasets[name]:
            raise InputError(self.params_path, f"datasets.{name}: missing, or without a 'reader'")
        return datasets[name]

    def source_files(self, dataset: str) -> list[str]:
        """The files a dataset's `source:` option names (a file, or every file under a folder): prepare's
        inputs, so their content is part of the prepared file's provenance (and of the detections' cache key)."""
        source = self.dataset_spec(dataset).get("source")
        if source is None:
            return []
        path = Path(source)
        if path.is_dir():
            return sorted(str(p) for p in path.rglob("*") if p.is_file())
        return [str(path)]

    def prepare_args(self, dataset: str) -> str:
        """`poselift prepare` arguments from the dataset's params: its reader, then --<option> <value> each."""
        spec = dict(self.dataset_spec(dataset))
        reader = spec.pop("reader")
        spec.pop("validation_split", None)  # read by train/evaluate, not by prepare
        return " ".join([reader] + [f"--{key.replace('_', '-')} {shlex.quote(str(value))}"
                                    for key, value in spec.items()])

    def detect_inputs(self, dataset: str, detector: str) -> dict:
        """detect's inputs: the prepared file, and the imported detections' source file if any; for a
        network detector its checkpoint and the dataset's rendered crops."""
        network = self._network(detector)
        if network is not None:
            return {"prepared": _posix(prepared_path(dataset)), "images": _posix(renders_path(dataset)),
                    "checkpoint": self.last_checkpoint(network["experiment"])}
        source = self.imported_detections(dataset, detector)
        return {"prepared": _posix(prepared_path(dataset)), **({"source": source} if source else {})}

    def detect_command(self, dataset: str, detector: str) -> str:
        """`poselift detect` for the detectors poselift runs, `poselift import-detections` for imported ones."""
        network = self._network(detector)
        if network is not None:
            inputs = self.detect_inputs(dataset, detector)
            return (f"poselift detect --prepared {inputs['prepared']} --detector {shlex.quote(network['network'])}"
                    f" --checkpoint {inputs['checkpoint']} --images {inputs['images']} --device {self.device}")
        source = self.imported_detections(dataset, detector)
        if source is not None:
            return (f"poselift import-detections --prepared {_posix(prepared_path(dataset))}"
                    f" --source {shlex.quote(source)}")
        return (f"poselift detect --prepared {_posix(prepared_path(dataset))} --detector {shlex.quote(detector)}"
                f" --params {shlex.quote(str(self.params_path))}")


# --- between-workflow output cache -------------------------------------------------------------------------

def slurm_partitions(run=subprocess.run) -> dict:
    """{partition: {"gpu", "cpus", "mem_mb", "runtime"}}: the largest node of each Slurm partition (GPUs, CPUs,
    memory) and its time limit in minutes (None: unlimited), from ``sinfo``; {} where there is no Slurm."""
    try:
        out = run(["sinfo", "--noheader", "--format", "%P|%c|%m|%G|%l"], capture_output=True, text=True,
                  timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    if out.returncode != 0:
        return {}
    partitions: dict = {}
    for line in out.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        name, cpus, mem, gres, limit = fields
        node = {"gpu": _gres_gpus(gres), "cpus": _leading_int(cpus), "mem_mb": _leading_int(mem),
                "runtime": _minutes(limit)}
        best = partitions.setdefault(name.rstrip("*"), node)
        for key in ("gpu", "cpus", "mem_mb"):
            best[key] = max(best[key], node[key])
    return partitions


def _fits(job: dict, limits: dict) -> bool:
    return (job["gpu"] <= limits["gpu"] and job["cpus"] <= limits["cpus"] and job["mem_mb"] <= limits["mem_mb"]
            and (limits["runtime"] is None or job["runtime"] <= limits["runtime"]))


def _describe(r: dict) -> str:
    hours = "no time limit" if r["runtime"] is None else f"{r['runtime'] / 60:g} h"
    return f"{r['gpu']} GPUs, {r['cpus']} CPUs, {r['mem_mb'] / 1000:g} GB, {hours}"


def _leading_int(text: str) -> int:
    """sinfo's "64" or "64+" (nodes differ) -> 64; anything else 0."""
    digits = re.match(r"\d+", text.strip())
    return int(digits.group()) if digits else 0


def _gres_gpus(gres: str) -> int:
    """GPUs a node of sinfo's %G has: "gpu:4", "gpu:a100:4(S:0-1)", "(null)" -> 4, 4, 0."""
    counts = [int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,()]+)?:(\d+)", gres)]
    return max(counts, default=0)


def _minutes(limit: str) -> int | None:
    """sinfo's time limit ("infinite", "1-00:00:00", "2:00:00", "30:00") in minutes; None when unlimited."""
    limit = limit.strip()
    if limit in ("infinite", "UNLIMITED", "n/a", ""):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = parts + [0] * (3 - len(parts))
    elif len(parts) == 3:  # H:M:S
        hours, minutes, seconds = parts
    else:  # M:S or M
        hours, minutes, seconds = 0, parts[0], parts[1] if len(parts) == 2 else 0
    return (int(days or 0) * 24 + hours) * 60 + minutes + (seconds > 0)


def ensure_output_cache(environ=os.environ) -> str:
    """SNAKEMAKE_OUTPUT_CACHE: the environment's, else one per user ($XDG_CACHE_HOME or ~/.cache, then
    snakemake-output-cache) so that every project of that user shares it; set in `environ`. A local folder
    (not a storage URI) is created, as Snakemake needs it."""
    cache_home = environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
    environ.setdefault("SNAKEMAKE_OUTPUT_CACHE", str(Path(cache_home) / "snakemake-output-cache"))
    location = environ["SNAKEMAKE_OUTPUT_CACHE"]
    if "://" not in location:
        Path(location).mkdir(parents=True, exist_ok=True)
    return location


# --- code fingerprints (poselift.fingerprint) -------------------------------------------------------------

def code_digests() -> dict[str, str]:
    """{command: code_digest of poselift.commands.<command>} for every command the rules run."""
    return {command: code_digest(f"poselift.commands.{command}") for command in COMMANDS}
