# Helpers shared by the rules: what params.yaml asks for, the file layout, and code fingerprints.
#
# The file layout is poselift's own (poselift.experiments): data/prepared/<dataset>.h5,
# data/detections/<dataset>/<detector>.h5, results/<experiment>/stage<N>/, results/<experiment>/evaluation/.
# The workflow reads params.yaml only for wiring (which files, which stages); every value is checked by the
# `poselift` command that uses it.

import ast
import hashlib
import importlib.util
import os
import shlex
import sys
from pathlib import Path

from poselift.commands.prepare import SOURCE_OPTIONAL
from poselift.detectors import DETECTORS
from poselift.experiments import OWN_2D

# The CLI reads the same file the workflow was configured with (`configfile:` or --configfile).
PARAMS = Path(workflow.configfiles[-1]) if workflow.configfiles else Path("params.yaml")
DEVICE = config.get("device", "auto")  # train/evaluate --device; the local profile sets cpu

# Between-workflow output cache (rules with `cache:`): the environment's location, else one per user, so
# that every project of that user shares it. Set SNAKEMAKE_OUTPUT_CACHE to a group folder to share more.
os.environ.setdefault("SNAKEMAKE_OUTPUT_CACHE",
                      str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "snakemake-output-cache"))
if "://" not in os.environ["SNAKEMAKE_OUTPUT_CACHE"]:  # a local folder (not a storage URI): Snakemake needs it
    Path(os.environ["SNAKEMAKE_OUTPUT_CACHE"]).mkdir(parents=True, exist_ok=True)


def _fail(message):
    raise ValueError(f"{PARAMS}: {message}")


def experiments():
    """Every experiment of params.yaml, in file order: {name: section}."""
    exps = config.get("experiments") or {}
    if not isinstance(exps, dict):
        _fail("experiments: expected a mapping of experiment names")
    for name, exp in exps.items():
        for key in ("dataset", "detector", "stages"):
            if not isinstance(exp, dict) or key not in exp:
                _fail(f"experiments.{name}: missing key '{key}'")
        if not isinstance(exp["stages"], list) or not exp["stages"]:
            _fail(f"experiments.{name}.stages: expected a non-empty list of stages")
    return exps


def missing_data(name):
    """What params.yaml lacks for experiment `name`'s data: a dataset source, or the file of imported
    detections (detectors.<name>.import.<dataset>). Empty when the workflow can make all of it."""
    exp = experiment(name)
    dataset, detector = exp["dataset"], exp["detector"]
    missing = []
    if "source" not in dataset_spec(dataset) and dataset_spec(dataset)["reader"] not in SOURCE_OPTIONAL:
        missing.append(f"datasets.{dataset}.source")
    if detector != OWN_2D and detector not in DETECTORS and imported_detections(dataset, detector) is None:
        missing.append(f"detectors.{detector}.import.{dataset}")
    return missing


def selected():
    """The experiments `all` builds: every one whose data the workflow can make (see missing_data)."""
    return [name for name in experiments() if not missing_data(name)]


def experiment(name):
    exps = experiments()
    if name not in exps:
        _fail(f"experiments: no experiment '{name}' (known: {', '.join(exps) or 'none'})")
    return exps[name]


def dataset_spec(name):
    datasets = config.get("datasets") or {}
    if name not in datasets or not isinstance(datasets[name], dict) or "reader" not in datasets[name]:
        _fail(f"datasets.{name}: missing, or without a 'reader'")
    return datasets[name]


def stage_spec(name, number):
    """Stage `number` (1-based) of experiment `name`, with its model preset spelled out."""
    stages = experiment(name)["stages"]
    if not 1 <= number <= len(stages):
        _fail(f"experiments.{name}: no stage {number} (stages are numbered 1..{len(stages)})")
    stage = dict(stages[number - 1])
    stage["model"] = {"preset": stage.get("model"), "args": (config.get("models") or {}).get(stage.get("model"))}
    return stage


def validation_split(name):
    """The split training validates on (datasets.<dataset>.validation_split): it picks checkpoint.pt."""
    return dataset_spec(experiment(name)["dataset"]).get("validation_split", "validation")


# --- file layout ------------------------------------------------------------------------------------------

def prepared_path(dataset):
    return f"data/prepared/{dataset}.h5"


def detections_path(dataset, detector):
    return f"data/detections/{dataset}/{detector}.h5"


def stage_dir(name, number):
    return f"results/{name}/stage{number}"


def evaluation_dir(name):
    return f"results/{name}/evaluation"


def experiment_inputs(name):
    """The data an experiment's training and evaluation read: {prepared, detections (absent for own 2D)}."""
    exp = experiment(name)
    inputs = {"prepared": prepared_path(exp["dataset"])}
    if exp["detector"] != OWN_2D:
        inputs["detections"] = detections_path(exp["dataset"], exp["detector"])
    return inputs


def data_args(name):
    """--prepared/--detections for `poselift train` and `poselift evaluate`."""
    inputs = experiment_inputs(name)
    return f"--prepared {inputs['prepared']} --detections {inputs.get('detections', 'none')}"


def init_checkpoints(name, number):
    """{stage M: its checkpoint.pt} for every earlier stage that stage `number`'s `init` loads."""
    init = stage_spec(name, number).get("init") or {}
    return {f"stage{m}": f"{stage_dir(name, m)}/checkpoint.pt" for m in sorted(set(init.values()))}


def last_checkpoint(name):
    """The checkpoint evaluation scores: the last stage's."""
    return f"{stage_dir(name, len(experiment(name)['stages']))}/checkpoint.pt"


def init_args(name, number):
    """--init M=PATH for each checkpoint of init_checkpoints (the paths the train rule declares as inputs)."""
    init = stage_spec(name, number).get("init") or {}
    return " ".join(f"--init {m}={stage_dir(name, m)}/checkpoint.pt" for m in sorted(set(init.values())))


# --- what each phase builds ---------------------------------------------------------------------------------

def all_prepared():
    return sorted({prepared_path(experiment(name)["dataset"]) for name in selected()})


def all_detections():
    return sorted({detections_path(experiment(name)["dataset"], experiment(name)["detector"]) for name in selected()
                   if experiment(name)["detector"] != OWN_2D})


def all_checkpoints():
    return [f"{stage_dir(name, n)}/checkpoint.pt" for name in selected()
            for n in range(1, len(experiment(name)["stages"]) + 1)]


def all_metrics():
    return [f"{evaluation_dir(name)}/metrics.json" for name in selected()]


REPORT = {"table": "reports/results.md", "csv": "reports/results.csv", "html": "reports/results.html",
          "metrics": "reports/metrics.json", "plot": "reports/per_action.png"}


# --- prepare's command line ---------------------------------------------------------------------------------

def source_files(dataset):
    """The files a dataset's `source:` option names (a file, or every file under a folder): prepare's inputs,
    so their content is part of the prepared file's provenance (and of the detections' cache key)."""
    source = dataset_spec(dataset).get("source")
    if source is None:
        return []
    path = Path(source)
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.is_file())
    return [str(path)]


def prepare_args(dataset):
    """`poselift prepare` arguments from the dataset's params: its reader, then --<option> <value> each."""
    spec = dict(dataset_spec(dataset))
    reader = spec.pop("reader")
    spec.pop("validation_split", None)  # read by train/evaluate, not by prepare
    args = [reader] + [f"--{key.replace('_', '-')} {shlex.quote(str(value))}" for key, value in spec.items()]
    return " ".join(args)


# --- detect's command line ----------------------------------------------------------------------------------

def imported_detections(dataset, detector):
    """The source file of detections that are imported rather than computed (e.g. CPN's, from VideoPose3D):
    params.yaml detectors.<detector>.import.<dataset>, or None."""
    block = (config.get("detectors") or {}).get(detector)
    source = (block.get("import") or {}).get(dataset) if isinstance(block, dict) else None
    return str(source) if source else None


def detect_inputs(w):
    source = imported_detections(w.dataset, w.detector)
    return {"prepared": prepared_path(w.dataset), **({"source": source} if source else {})}


def detect_command(dataset, detector):
    """`poselift detect` for the detectors poselift runs, `poselift import-detections` for imported ones."""
    source = imported_detections(dataset, detector)
    if source is not None:
        return f"poselift import-detections --prepared {prepared_path(dataset)} --source {shlex.quote(source)}"
    return (f"poselift detect --prepared {prepared_path(dataset)} --detector {shlex.quote(detector)}"
            f" --params {shlex.quote(str(PARAMS))}")


# --- code fingerprints --------------------------------------------------------------------------------------

def _module_file(name):
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def _poselift_imports(path, package):
    """Names of the poselift modules that module file `path` (of `package`) imports, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return {n for n in names if n == "poselift" or n.startswith("poselift.")}


def code_digest(*modules):
    """SHA-256 of the source of `modules` and of every poselift module they import (transitively), plus the
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
        todo.extend(_poselift_imports(path, package) - seen)
    root = _module_file("poselift").parent
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path.relative_to(root.parent)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


CODE = {command: code_digest(f"poselift.commands.{command}")
        for command in ("prepare", "detect", "import_detections", "train", "evaluate", "report")}

if workflow.is_main_process:
    _left_out = {}
    for _name in experiments():
        if missing_data(_name):
            _left_out.setdefault(", ".join(missing_data(_name)), []).append(_name)
    for _keys, _names in _left_out.items():
        print(f"poselift workflow: `all` leaves out {', '.join(_names)}: params.yaml does not set {_keys}",
              file=sys.stderr)
