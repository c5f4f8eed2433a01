"""What the Snakemake workflow needs from params.yaml, as plain functions: which experiments `all` builds,
the file layout, the `poselift prepare` / `poselift detect` command lines, and code fingerprints.

workflow/rules/common.smk only binds these to Snakemake's ``config`` (``wf = Workflow(config, params_path)``).
The file layout is poselift's own (:mod:`poselift.experiments`): data/prepared/<dataset>.h5,
data/detections/<dataset>/<detector>.h5, results/<experiment>/stage<N>/, results/<experiment>/evaluation/.
params.yaml is read here only for wiring (which files, which stages); every value is checked by the
`poselift` command that uses it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import shlex
from pathlib import Path

from poselift.commands.prepare import SOURCE_OPTIONAL
from poselift.detectors import DETECTORS
from poselift.experiments import DETECTIONS_DIR, OWN_2D, PREPARED_DIR, RESULTS_DIR

# The files `poselift report` writes, by role.
REPORT = {"table": "reports/results.md", "csv": "reports/results.csv", "html": "reports/results.html",
          "metrics": "reports/metrics.json", "plot": "reports/per_action.png"}

# The subcommands the rules run (poselift.commands.<name>): each gets a code fingerprint.
COMMANDS = ("prepare", "detect", "import_detections", "train", "evaluate", "baseline", "report")


# --- file layout ------------------------------------------------------------------------------------------

BASELINE = "mean-pose@"  # results/mean-pose@<dataset>/evaluation: the training-mean pose of a dataset


def baseline_name(dataset: str) -> str:
    return f"{BASELINE}{dataset}"


def prepared_path(dataset: str) -> str:
    return (PREPARED_DIR / f"{dataset}.h5").as_posix()


def detections_path(dataset: str, detector: str) -> str:
    return (DETECTIONS_DIR / dataset / f"{detector}.h5").as_posix()


def stage_dir(name: str, number: int) -> str:
    return (RESULTS_DIR / name / f"stage{number}").as_posix()


def evaluation_dir(name: str) -> str:
    return (RESULTS_DIR / name / "evaluation").as_posix()


# --- params.yaml, read for wiring ------------------------------------------------------------------------------

class Workflow:
    """The workflow's view of a params dict (Snakemake's ``config``) read from ``params_path``.

    Mistakes in what the wiring needs are a ValueError ``"<params_path>: <problem>"``."""

    def __init__(self, config: dict, params_path: str | os.PathLike = "params.yaml"):
        self.config = config
        self.params_path = Path(params_path)

    def _fail(self, message: str):
        raise ValueError(f"{self.params_path}: {message}")

    @property
    def device(self) -> str:
        """train/evaluate --device (config key `device`; the local profile sets cpu)."""
        return self.config.get("device", "auto")

    def experiments(self) -> dict:
        """Every experiment of params.yaml, in file order: {name: section}."""
        exps = self.config.get("experiments") or {}
        if not isinstance(exps, dict):
            self._fail("experiments: expected a mapping of experiment names")
        for name, exp in exps.items():
            for key in ("dataset", "detector", "stages"):
                if not isinstance(exp, dict) or key not in exp:
                    self._fail(f"experiments.{name}: missing key '{key}'")
            if not isinstance(exp["stages"], list) or not exp["stages"]:
                self._fail(f"experiments.{name}.stages: expected a non-empty list of stages")
        return exps

    def experiment(self, name: str) -> dict:
        exps = self.experiments()
        if name not in exps:
            self._fail(f"experiments: no experiment '{name}' (known: {', '.join(exps) or 'none'})")
        return exps[name]

    def dataset_spec(self, name: str) -> dict:
        datasets = self.config.get("datasets") or {}
        if name not in datasets or not isinstance(datasets[name], dict) or "reader" not in datasets[name]:
            self._fail(f"datasets.{name}: missing, or without a 'reader'")
        return datasets[name]

    def stage_spec(self, name: str, number: int) -> dict:
        """Stage `number` (1-based) of experiment `name`, with its model preset spelled out."""
        stages = self.experiment(name)["stages"]
        if not 1 <= number <= len(stages):
            self._fail(f"experiments.{name}: no stage {number} (stages are numbered 1..{len(stages)})")
        stage = dict(stages[number - 1])
        stage["model"] = {"preset": stage.get("model"),
                          "args": (self.config.get("models") or {}).get(stage.get("model"))}
        return stage

    def validation_split(self, name: str) -> str:
        """The split training validates on (datasets.<dataset>.validation_split): it picks checkpoint.pt."""
        return self.dataset_spec(self.experiment(name)["dataset"]).get("validation_split", "validation")

    # --- which experiments `all` builds ---

    def imported_detections(self, dataset: str, detector: str) -> str | None:
        """The source file of detections that are imported rather than computed (e.g. CPN's, from
        VideoPose3D): params.yaml detectors.<detector>.import.<dataset>, or None."""
        block = (self.config.get("detectors") or {}).get(detector)
        source = (block.get("import") or {}).get(dataset) if isinstance(block, dict) else None
        return str(source) if source else None

    def missing_data(self, name: str) -> list[str]:
        """What params.yaml lacks for experiment `name`'s data: a dataset source, or the file of imported
        detections (detectors.<name>.import.<dataset>). Empty when the workflow can make all of it."""
        exp = self.experiment(name)
        dataset, detector = exp["dataset"], exp["detector"]
        missing = []
        spec = self.dataset_spec(dataset)
        if "source" not in spec and spec["reader"] not in SOURCE_OPTIONAL:
            missing.append(f"datasets.{dataset}.source")
        if detector != OWN_2D and detector not in DETECTORS and self.imported_detections(dataset, detector) is None:
            missing.append(f"detectors.{detector}.import.{dataset}")
        return missing

    def selected(self) -> list[str]:
        """The experiments `all` builds: every one whose data the workflow can make (see missing_data)."""
        return [name for name in self.experiments() if not self.missing_data(name)]

    def left_out_messages(self) -> list[str]:
        """One line per set of missing keys, naming the experiments `all` leaves out for lack of them."""
        left_out: dict[str, list[str]] = {}
        for name in self.experiments():
            missing = self.missing_data(name)
            if missing:
                left_out.setdefault(", ".join(missing), []).append(name)
        return [f"poselift workflow: `all` leaves out {', '.join(names)}: params.yaml does not set {keys}"
                for keys, names in left_out.items()]

    # --- an experiment's files and arguments ---

    def experiment_inputs(self, name: str) -> dict:
        """The data an experiment's training and evaluation read: {prepared, detections (absent for own 2D)}."""
        exp = self.experiment(name)
        inputs = {"prepared": prepared_path(exp["dataset"])}
        if exp["detector"] != OWN_2D:
            inputs["detections"] = detections_path(exp["dataset"], exp["detector"])
        return inputs

    def data_args(self, name: str) -> str:
        """--prepared/--detections for `poselift train` and `poselift evaluate`."""
        inputs = self.experiment_inputs(name)
        return f"--prepared {inputs['prepared']} --detections {inputs.get('detections', 'none')}"

    def _init_stages(self, name: str, number: int) -> list[int]:
        init = self.stage_spec(name, number).get("init") or {}
        return sorted(set(init.values()))

    def init_checkpoints(self, name: str, number: int) -> dict:
        """{stage M: its checkpoint.pt} for every earlier stage that stage `number`'s `init` loads."""
        return {f"stage{m}": f"{stage_dir(name, m)}/checkpoint.pt" for m in self._init_stages(name, number)}

    def init_args(self, name: str, number: int) -> str:
        """--init M=PATH for each checkpoint of init_checkpoints (the paths the train rule declares as inputs)."""
        return " ".join(f"--init {m}={stage_dir(name, m)}/checkpoint.pt" for m in self._init_stages(name, number))

    def last_checkpoint(self, name: str) -> str:
        """The checkpoint evaluation scores: the last stage's."""
        return f"{stage_dir(name, len(self.experiment(name)['stages']))}/checkpoint.pt"

    # --- what each phase builds ---

    def all_prepared(self) -> list[str]:
        return sorted({prepared_path(self.experiment(name)["dataset"]) for name in self.selected()})

    def all_detections(self) -> list[str]:
        pairs = [(self.experiment(name)["dataset"], self.experiment(name)["detector"]) for name in self.selected()]
        return sorted({detections_path(dataset, detector) for dataset, detector in pairs if detector != OWN_2D})

    def all_checkpoints(self) -> list[str]:
        return [f"{stage_dir(name, n)}/checkpoint.pt" for name in self.selected()
                for n in range(1, len(self.experiment(name)["stages"]) + 1)]

    def all_metrics(self) -> list[str]:
        """Every selected experiment's evaluation, then the mean-pose baseline of each dataset they use."""
        return [f"{evaluation_dir(name)}/metrics.json" for name in self.report_names()]

    def report_names(self) -> list[str]:
        """The rows of the results table: the selected experiments and a mean-pose baseline per dataset."""
        datasets = sorted({self.experiment(name)["dataset"] for name in self.selected()})
        return self.selected() + [baseline_name(d) for d in datasets]

    # --- prepare's and detect's command lines ---

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
        """detect's inputs: the prepared file, and the imported detections' source file if any."""
        source = self.imported_detections(dataset, detector)
        return {"prepared": prepared_path(dataset), **({"source": source} if source else {})}

    def detect_command(self, dataset: str, detector: str) -> str:
        """`poselift detect` for the detectors poselift runs, `poselift import-detections` for imported ones."""
        source = self.imported_detections(dataset, detector)
        if source is not None:
            return f"poselift import-detections --prepared {prepared_path(dataset)} --source {shlex.quote(source)}"
        return (f"poselift detect --prepared {prepared_path(dataset)} --detector {shlex.quote(detector)}"
                f" --params {shlex.quote(str(self.params_path))}")


# --- between-workflow output cache -------------------------------------------------------------------------

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


# --- code fingerprints --------------------------------------------------------------------------------------

def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def _package_imports(path: Path, package: str, root: str) -> set[str]:
    """Names of the modules of top-level package `root` that module file `path` (of `package`) imports,
    anywhere in it (also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return {n for n in names if n == root or n.startswith(f"{root}.")}


def code_digest(*modules: str, root: str = "poselift") -> str:
    """SHA-256 of the source of `modules` and of every `root` module they import (transitively), plus the
    data files beside them (e.g. the Bandai manifest): a change to the code a rule runs changes its params,
    so Snakemake reruns it, and changes its between-workflow cache key."""
    seen, todo, files = set(), list(modules), {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        files[path] = True
        for data in path.parent.iterdir():
            if data.is_file() and data.suffix not in (".py", ".pyc"):
                files[data] = True
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo.extend(_package_imports(path, package, root) - seen)
    top = _module_file(root).parent
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path.relative_to(top.parent)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def code_digests() -> dict[str, str]:
    """{command: code_digest of poselift.commands.<command>} for every command the rules run."""
    return {command: code_digest(f"poselift.commands.{command}") for command in COMMANDS}
