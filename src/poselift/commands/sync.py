"""``poselift sync results/<experiment> [--tracking-uri URI]``: log an experiment's local record into MLflow.

For a run whose MLflow server was unreachable at start or lost mid-run (the warning line of
:mod:`poselift.tracking` says what is missing). What it logs is what the training loop and ``poselift
evaluate`` log, so a synced store looks like one that never lost the server:

* each ``stage<N>/history.json`` into the run ``stage<N>-<name>``: the stage's settings as params, every
  epoch's loss, loss_terms/<term>, validation metric and lr at step = epoch and, once the stage is complete,
  best_<metric> and best_epoch at its last epoch, the artifact history.json and status FINISHED (a run this
  command makes for a stage that stopped short ends KILLED);
* ``evaluation/metrics.json`` into the run ``evaluation-<split>``: its recorded inputs as params (less the
  files the evaluation wrote), its headline metrics, the artifacts metrics.json, per_action.csv,
  per_group.json and status FINISHED;

all nested under the experiment's parent run. Not recorded locally, hence never synced: a stage run's
``data.*`` params (data files, device, threads) and an evaluation's ``window``.

Idempotent: a run is found again by its name (the newest of that name) and only the metric steps, params
and artifacts it has not got are logged, so running it twice, or after a partly logged run, duplicates
nothing. When that run's logged values disagree with the local record (it is another training's or
evaluation's), a new run is made.
"""

from __future__ import annotations

import math
from pathlib import Path

from poselift.errors import InputError

EVALUATION_OUTPUTS = ("pred", "gt", "actions", "sequences")  # metrics.json inputs that are its own files
EVALUATION_ARTIFACTS = ("metrics.json", "per_action.csv", "per_group.json")


def add_parser(sub):
    p = sub.add_parser("sync", help="log an experiment's local results (history.json, metrics.json) into MLflow, "
                                    "e.g. after the server was unreachable; logs only what is missing")
    p.add_argument("folder", type=Path, help="the experiment's results folder, e.g. results/<experiment>")
    p.add_argument("--experiment", help="MLflow experiment name (default: the folder's name)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else "
                                          "sqlite:///mlflow.db)")
    p.set_defaults(run=run)


def run(args) -> int:
    from poselift.tracking import OFF, brief, tracking_uri

    folder = args.folder
    records = read_records(folder)
    uri = tracking_uri(args.tracking_uri)
    if uri == OFF:
        raise InputError("--tracking-uri", "is 'off': there is no MLflow store to sync to")
    experiment = args.experiment or folder.resolve().name
    try:
        store = Store(uri, experiment)
        for record in records:
            print(f"{record.name}: {store.sync(record)}")
    except Exception as e:  # noqa: BLE001 -- MLflow's errors (unreachable, refused) as one line
        raise InputError(uri, f"MLflow failed ({brief(e)})") from None
    print(f"synced {folder} into MLflow experiment {experiment} at {uri}")
    return 0


class Record:
    """One run's local record: its name, tags, params, metrics per step, artifact files and final status."""

    def __init__(self, name: str, tags: dict, params: dict, steps: dict[int, dict], files: list[Path],
                 status: str, complete: bool):
        self.name, self.tags, self.params, self.steps = name, tags, params, steps
        self.files, self.status, self.complete = files, status, complete


def read_records(folder: Path) -> list[Record]:
    """The stage runs (stage<N>/history.json, by N) and the evaluation run (evaluation/metrics.json) of
    ``folder``; an InputError when it is no experiment's results folder."""
    if not folder.is_dir():
        raise InputError(folder, "not a folder (expected an experiment's results folder, e.g. results/<experiment>)")
    stages = sorted((p for p in folder.glob("stage*/history.json") if p.parent.name[5:].isdigit()),
                    key=lambda p: int(p.parent.name[5:]))
    evaluation = folder / "evaluation" / "metrics.json"
    if not stages and not evaluation.is_file():
        raise InputError(folder, "no stage<N>/history.json or evaluation/metrics.json: not an experiment's "
                                 "results folder")
    records = [stage_record(p) for p in stages]
    return records + ([evaluation_record(evaluation)] if evaluation.is_file() else [])


def stage_record(path: Path) -> Record:
    """A stage's run from its history.json, as the training loop logs it."""
    from poselift.io import read_json
    from poselift.tracking import metric_values

    history = read_json(path)
    config = history.get("stage") if isinstance(history, dict) else None
    epochs = history.get("epochs") if isinstance(history, dict) else None
    best = history.get("best") if isinstance(history, dict) else None
    if not isinstance(config, dict) or not isinstance(epochs, list) or not isinstance(best, dict) or \
            "name" not in config or not all(isinstance(e, dict) and isinstance(e.get("epoch"), int) for e in epochs):
        raise InputError(path, "not a poselift history.json (expected 'stage' with a name, 'best', and 'epochs' "
                               "records with an 'epoch' number)")
    metric = next((k for k in best if k != "epoch"), None)
    if metric is None:
        raise InputError(path, "its 'best' names no validation metric")
    number = config.get("number") or int(path.parent.name[5:])
    try:
        steps = {e["epoch"]: metric_values({"loss": e["loss"], "loss_terms": e.get("terms", {}), metric: e[metric],
                                            "lr": e["lr"]}) for e in epochs}
    except KeyError as e:
        raise InputError(path, f"an epoch record lacks {e}") from None
    complete = bool(epochs) and epochs[-1]["epoch"] >= int(config.get("epochs", 0))
    if complete:
        last = epochs[-1]["epoch"]
        steps[last] = {**steps[last], **metric_values({f"best_{metric}": best[metric], "best_epoch": best["epoch"]})}
    return Record(f"stage{number}-{config['name']}", {"poselift.stage": str(number)}, config, steps,
                  [path] if complete else [], "FINISHED" if complete else "KILLED", complete)


def evaluation_record(path: Path) -> Record:
    """An evaluation's run from its metrics.json, as ``poselift evaluate`` logs it."""
    from poselift.io import read_json
    from poselift.tracking import evaluation_metrics, metric_values

    result = read_json(path)
    inputs = result.get("inputs", {}) if isinstance(result, dict) else None
    if not isinstance(inputs, dict):
        raise InputError(path, "not a poselift metrics.json (expected an object with 'inputs')")
    split = str(inputs.get("split", "test"))
    params = {k: "none" if v is None else v for k, v in inputs.items() if k not in EVALUATION_OUTPUTS}
    files = [path.parent / name for name in EVALUATION_ARTIFACTS if (path.parent / name).is_file()]
    return Record(f"evaluation-{split}", {"poselift.evaluation": split}, params,
                  {0: metric_values(evaluation_metrics(result))}, files, "FINISHED", True)


class Store:
    """The MLflow experiment that records are synced into (errors pass through: sync must not half-succeed
    silently)."""

    def __init__(self, uri: str, experiment: str):
        from poselift.tracking import connect, experiment_id

        self.uri, self.experiment = uri, experiment
        self.client = connect(uri)
        self.experiment_id = experiment_id(self.client, experiment, uri)

    def sync(self, record: Record) -> str:
        """Log what the record's run lacks; returns what was logged, e.g. "logged metrics of 4 steps, artifact
        history.json, status FINISHED", or "up to date"."""
        from poselift.tracking import create_run, log_artifact, log_metric_values, log_new_params, set_status

        run, logged = self.find(record)
        created = run is None
        if created:
            run = create_run(self.client, self.experiment_id, self.experiment, record.name, record.tags)
        done = ["new run"] if created else []
        added = log_new_params(self.client, run, record.params)
        done += [f"{added} params"] if added else []
        missing = {step: {k: v for k, v in values.items() if (k, step) not in logged}
                   for step, values in record.steps.items()}
        for step, values in missing.items():
            if values:
                log_metric_values(self.client, run, values, step)
        steps = sum(1 for values in missing.values() if values)
        done += [f"metrics of {steps} step{'s' * (steps != 1)}"] if steps else []
        have = {a.path for a in self.client.list_artifacts(run)}
        files = [path for path in record.files if path.name not in have]
        for path in files:
            log_artifact(self.client, run, path)
        done += [f"artifact{'s' * (len(files) > 1)} {', '.join(p.name for p in files)}"] if files else []
        status = self.client.get_run(run).info.status
        if (record.complete or created) and status != record.status:  # a stage still training keeps its own
            set_status(self.client, run, record.status)
            done.append(f"status {record.status}")
        return "logged " + ", ".join(done) if done else "up to date"

    def find(self, record: Record) -> tuple[str | None, set]:
        """The newest run named like ``record`` and its logged (metric, step) pairs; (None, empty) when there
        is none, or when a value it logged differs from the record's (another training's run)."""
        runs = self.client.search_runs([self.experiment_id], f"attributes.run_name = '{record.name}'",
                                       max_results=1, order_by=["attributes.start_time DESC"])
        if not runs:
            return None, set()
        run = runs[0].info.run_id
        logged = set()
        for key in sorted({k for values in record.steps.values() for k in values}):
            for m in self.client.get_metric_history(run, key):
                local = record.steps.get(m.step, {}).get(key)
                if local is not None and not math.isclose(m.value, local, rel_tol=1e-9, abs_tol=1e-12):
                    return None, set()
                logged.add((key, m.step))
        return run, logged
