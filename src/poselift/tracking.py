"""MLflow tracking that never stops a run: if MLflow is missing or its server unreachable, the run goes on
(every metric is also written to local JSON by the caller) and one warning line on stderr says what was not
logged.

Layout in MLflow: experiment = the poselift experiment's name; one parent run per experiment (found
again by its tag ``poselift.parent``), and nested runs for each stage (``stage<N>-<name>``) and for each
evaluation (``evaluation-<split>``). The tracking URI is ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``,
else ``sqlite:///mlflow.db`` in the working directory; "off" disables tracking.

Calls are bounded in time: unless set already, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` = 2,
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` = 1 (MLflow requires an integer) and ``MLFLOW_HTTP_REQUEST_TIMEOUT``
= 15 s (MLflow's own defaults retry for minutes), and after the first failure no further call is made.

Outages (MLflow unreachable at start, or its server lost mid-run): from the first failure on, the tracker
notes what it does not log (the run itself, its params, the epochs of its metrics, its artifacts, its final
status), and :meth:`Tracker.end_run`, which the training loop and ``poselift evaluate`` always reach, prints
it as one line, e.g. ``poselift: warning: MLflow tracking at http://host:5000 failed from epoch 3 of
stage1-pot (MlflowException: ...); not logged: metrics of epochs 3-6, artifact history.json, status
FINISHED; run `poselift sync results/two` to log them``. ``poselift sync`` (:mod:`poselift.commands.sync`)
logs them later from the local record (history.json, metrics.json) with the functions below.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import sys
import time
from pathlib import Path

DEFAULT_URI = "sqlite:///mlflow.db"
OFF = "off"
PARENT_TAG = "poselift.parent"
_HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


def tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


class Tracker:
    """One poselift experiment's MLflow runs. Every method is a no-op once tracking is off or failed; after
    a failure each notes what it did not log. ``record``: the experiment's local results folder (default
    ``results/<experiment>``), named in the warning's `poselift sync` hint."""

    def __init__(self, experiment: str, uri: str | None = None, record: str | os.PathLike | None = None):
        self.experiment, self.uri = experiment, tracking_uri(uri)
        self.record = Path(record) if record is not None else Path("results") / experiment
        self.client = None
        self.experiment_id: str | None = None
        self.failure: str | None = None  # where and why tracking failed first
        self.lost = Lost()
        self.names: dict[str, str] = {}  # run id -> run name
        self.current = "the run"  # the name of the run started last (or meant to be)
        if self.uri == OFF:
            return
        try:
            self.client = connect(self.uri)
        except ImportError as e:
            self._fail("at start", f"mlflow is not importable ({e})")
            return
        except Exception as e:  # noqa: BLE001 -- a store MLflow refuses (e.g. a file: store in maintenance mode)
            self._fail("at start", brief(e))
            return
        self.experiment_id = self._call("at start", experiment_id, self.client, self.experiment, self.uri)

    @property
    def active(self) -> bool:
        return self.client is not None and self.experiment_id is not None

    def start_run(self, name: str, tags: dict | None = None, resume: str | None = None) -> str | None:
        """A nested run ``name`` under the parent; ``resume``: the id of a run to continue if it exists."""
        self.current = name

        def start():
            if resume:
                try:
                    run = self.client.get_run(resume)
                    if run.info.experiment_id == self.experiment_id:
                        self.client.update_run(resume, status="RUNNING")
                        return resume
                except Exception:  # noqa: BLE001 -- a run deleted or from another store: start anew
                    pass
            return create_run(self.client, self.experiment_id, self.experiment, name, tags)

        run_id = self._call(f"at the start of {name}", start) if self.active else None
        if run_id is not None:
            self.names[run_id] = name
        elif self.failure is not None:
            self.lost.note(name, run=True)
        return run_id

    def log_params(self, run_id: str | None, params: dict) -> None:
        name = self._name(run_id)
        if not self._send(run_id, f"at the start of {name}", log_new_params, run_id, params):
            self.lost.note(name, params=True)

    def log_metrics(self, run_id: str | None, metrics: dict, step: int = 0) -> None:
        """Finite numbers of ``metrics`` (nested dicts flattened with '/'), at ``step`` (training: the epoch)."""
        name, values = self._name(run_id), metric_values(metrics)
        where = f"from epoch {step} of {name}" if step else f"in {name}"
        if values and not self._send(run_id, where, log_metric_values, run_id, values, step):
            self.lost.note(name, **({"epoch": step} if step else {"values": len(values)}))

    def log_artifacts(self, run_id: str | None, paths) -> None:
        name = self._name(run_id)
        for p in map(Path, paths):
            if p.is_file() and not self._send(run_id, f"at the end of {name}", log_artifact, run_id, p):
                self.lost.note(name, artifact=p.name)

    def end_run(self, run_id: str | None, status: str = "FINISHED") -> None:
        """The run's final status; after a failure, then the one warning line of what was not logged."""
        name = self._name(run_id)
        if not self._send(run_id, f"at the end of {name}", set_status, run_id, status):
            self.lost.note(name, status=status)
        self.warn()

    def warn(self) -> None:
        """One line on stderr of what was not logged since the last such line (none when nothing was lost)."""
        if self.failure is not None and self.lost:
            print(f"poselift: warning: MLflow tracking at {self.uri} failed {self.failure}; not logged: "
                  f"{self.lost}; run `poselift sync {self.record}` to log them", file=sys.stderr)
            self.lost = Lost()

    # --- plumbing ---
    def _name(self, run_id: str | None) -> str:
        return self.names.get(run_id, self.current)

    def _send(self, run_id: str | None, where: str, fn, *args) -> bool:
        """``fn(client, *args)`` for run ``run_id``; False when that was not logged because tracking failed
        (now or earlier). Tracking off, or no run meant (``run_id`` None before any failure): True."""
        if run_id is not None and self.active:
            self._call(where, fn, self.client, *args)
        return self.failure is None

    def _call(self, where: str, fn, *args):
        """``fn(*args)``, or None once tracking is off or failed; an exception turns tracking off."""
        if self.client is None:
            return None
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 -- tracking must never fail a run
            self._fail(where, brief(e))
            return None

    def _fail(self, where: str, why: str) -> None:
        self.client = None
        if self.failure is None:
            self.failure = f"{where} ({why})"


class Lost:
    """What a failed tracker did not log, per run name; ``str()``: e.g. "metrics of epochs 3-6, artifact
    history.json, status FINISHED" (with the run's name when the run itself was lost, or several runs)."""

    def __init__(self):
        self.runs: dict[str, dict] = {}

    def __bool__(self) -> bool:
        return bool(self.runs)

    def note(self, name: str, run: bool = False, params: bool = False, epoch: int = 0, values: int = 0,
             artifact: str = "", status: str = "") -> None:
        lost = self.runs.setdefault(name, {"run": False, "params": False, "epochs": set(), "values": 0,
                                           "artifacts": [], "status": ""})
        lost["run"] |= run
        lost["params"] |= params
        lost["epochs"] |= {epoch} if epoch else set()
        lost["values"] += values
        lost["artifacts"] += [artifact] if artifact else []
        lost["status"] = status or lost["status"]

    def __str__(self) -> str:
        parts = []
        for name, lost in self.runs.items():
            items = [f"run {name}"] if lost["run"] else []
            items += ["params"] if lost["params"] else []
            items += [f"metrics of epochs {ranges(lost['epochs'])}"] if lost["epochs"] else []
            items += [f"{lost['values']} metrics"] if lost["values"] else []
            files = lost["artifacts"]
            items += [f"artifact{'s' * (len(files) > 1)} {', '.join(files)}"] if files else []
            items += [f"status {lost['status']}"] if lost["status"] else []
            named = len(self.runs) > 1 and not lost["run"]
            parts.append((f"{name}: " if named else "") + ", ".join(items))
        return "; ".join(parts)


def brief(error: Exception, width: int = 220) -> str:
    """"<type>: <first line>", a long line cut in the middle (an HTTP error's cause is at its end)."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > width:
        text = f"{text[:width // 2 - 3]} ... {text[-(width // 2 - 2):]}"
    return f"{type(error).__name__}: {text}"


def ranges(numbers) -> str:
    """{1, 2, 3, 5} -> "1-3, 5"."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in spans)


# --- the store: what the Tracker does, for `poselift sync` too (which lets errors through) ---

def connect(uri: str):
    """An MlflowClient of ``uri`` whose HTTP calls are bounded in time (ImportError without mlflow)."""
    for key, value in _HTTP_LIMITS.items():
        os.environ.setdefault(key, value)
    from mlflow.tracking import MlflowClient

    with store_lock(uri):  # a new SQLite store is created (its tables migrated) by the first client
        return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def store_lock(uri: str):
    """Exclusive between processes while held, for a local SQLite store (``sqlite:///path``): a lock on the
    database's folder (nothing is written there). Two jobs that start together (two at once on a 2-core
    machine) would otherwise both create a fresh store's tables, and one fails in MLflow's migration, or both
    create the same experiment. Other stores (a server) serialise themselves: no lock."""
    folder = Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else None
    if folder is None or not folder.is_dir():
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def experiment_id(client, name: str, uri: str) -> str:
    """The id of MLflow experiment ``name``, created when missing."""
    with store_lock(uri):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return client.create_experiment(name, artifact_location=_artifact_location(uri))


def parent_run(client, experiment_id: str, experiment: str) -> str:
    """The experiment's parent run (created on first use, then found again by its tag)."""
    with store_lock(client.tracking_uri):
        runs = client.search_runs([experiment_id], f"tags.`{PARENT_TAG}` = 'true'", max_results=1,
                                  order_by=["attributes.start_time ASC"])
        if runs:
            return runs[0].info.run_id
        run = client.create_run(experiment_id, run_name=experiment, tags={PARENT_TAG: "true"})
        client.set_terminated(run.info.run_id, "FINISHED")  # a container: it never runs itself
        return run.info.run_id


def create_run(client, experiment_id: str, experiment: str, name: str, tags: dict | None = None) -> str:
    """A new run ``name`` nested under the experiment's parent run; its id."""
    tags = {**(tags or {}), "mlflow.parentRunId": parent_run(client, experiment_id, experiment)}
    return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id


def log_new_params(client, run_id: str, params: dict) -> int:
    """``params`` (nested dicts flattened with '.') that the run has not got yet (a resumed run has them);
    how many."""
    from mlflow.entities import Param

    existing = client.get_run(run_id).data.params
    new = [Param(k, str(v)[:6000]) for k, v in flatten(params).items() if k not in existing]
    for i in range(0, len(new), 100):
        client.log_batch(run_id, params=new[i:i + 100])
    return len(new)


def metric_values(metrics: dict) -> dict[str, float]:
    """The finite numbers of ``metrics``, nested dicts flattened with '/'."""
    return {k: float(v) for k, v in flatten(metrics, sep="/").items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def log_metric_values(client, run_id: str, values: dict[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, v, now, step) for k, v in values.items()]
    for i in range(0, len(batch), 500):
        client.log_batch(run_id, metrics=batch[i:i + 500])


def log_artifact(client, run_id: str, path: Path) -> None:
    client.log_artifact(run_id, str(path))


def set_status(client, run_id: str, status: str) -> None:
    client.set_terminated(run_id, status)


def evaluation_metrics(result: dict) -> dict:
    """What an evaluation run logs of its metrics.json ``result``: a lifting result's headline numbers, each
    named by what it averages (the results table's MPJPE is the mean over actions, the papers' protocol;
    metrics.json's "mpjpe" the mean over all test frames); another task's result (heatmaps: AP, PCK, pixel
    errors) as it is."""
    if "mpjpe" not in result:
        return result
    frames = {f"{k}_all_frames": result[k] for k in ("mpjpe", "p_mpjpe", "n_mpjpe", "mpjve")}
    actions = {f"{k}_action_mean": v for k, v in (result.get("action_mean") or {}).items()}
    overall = {k: result[k] for k in ("pck150", "auc", "per_joint_group", "background_attention") if k in result}
    return {**frames, **actions, **overall}


def flatten(d: dict, prefix: str = "", sep: str = ".") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and other values stay as they are. Characters MLflow refuses
    in names ("1: pelvis+hips" -> "1: pelvis_hips") become "_"."""
    out = {}
    for k, v in d.items():
        k = re.sub(r"[^\w\-. :/]", "_", str(k))
        key = f"{prefix}{sep}{k}" if prefix else k
        if isinstance(v, dict) and v:
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def _artifact_location(uri: str) -> str | None:
    """For a local SQLite store: ``mlruns/`` beside the database file; otherwise the server's default."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.resolve().parent / "mlruns").as_uri()
    return None
