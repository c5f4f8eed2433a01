"""MLflow tracking that never stops a run: if MLflow is missing or its server unreachable, one warning on
stderr and the run goes on (every metric is also written to local JSON by the caller).

Layout in MLflow: experiment = the poselift experiment's name; one parent run per experiment (found
again by its tag ``poselift.parent``), and nested runs for each stage (``stage<N>-<name>``) and for each
evaluation. The tracking URI is ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///mlflow.db`` in the working directory; "off" disables tracking.

Calls are bounded in time: unless set already, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` = 2,
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` = 1 (MLflow requires an integer) and ``MLFLOW_HTTP_REQUEST_TIMEOUT``
= 15 s (MLflow's own defaults retry for minutes), and after the first failure no further call is made.
"""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

DEFAULT_URI = "sqlite:///mlflow.db"
OFF = "off"
PARENT_TAG = "poselift.parent"
_HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


def tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


class Tracker:
    """One poselift experiment's MLflow runs. Every method is a no-op once tracking is off or failed."""

    def __init__(self, experiment: str, uri: str | None = None):
        self.experiment, self.uri = experiment, tracking_uri(uri)
        self.client = None
        self.experiment_id: str | None = None
        self.warned = False
        if self.uri == OFF:
            return
        for key, value in _HTTP_LIMITS.items():
            os.environ.setdefault(key, value)
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as e:
            self._fail(f"mlflow is not importable ({e})")
            return
        self.client = MlflowClient(tracking_uri=self.uri)
        self._call(self._set_experiment)

    @property
    def active(self) -> bool:
        return self.client is not None and self.experiment_id is not None

    def _fail(self, why: str) -> None:
        self.client = None
        if not self.warned:
            self.warned = True
            print(f"poselift: warning: MLflow tracking at {self.uri} is off for this run: {why}; "
                  "metrics are still written to local JSON", file=sys.stderr)

    def _call(self, fn, *args, **kwargs):
        if self.client is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 -- tracking must never fail a run
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            self._fail(f"{type(e).__name__}: {first[:300]}")
            return None

    def _set_experiment(self) -> None:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            self.experiment_id = self.client.create_experiment(self.experiment,
                                                               artifact_location=_artifact_location(self.uri))
        else:
            self.experiment_id = exp.experiment_id

    # --- runs ---
    def parent_run(self) -> str | None:
        """The experiment's parent run (created on first use, then found again by its tag)."""
        def find_or_create():
            runs = self.client.search_runs([self.experiment_id], f"tags.`{PARENT_TAG}` = 'true'",
                                           max_results=1, order_by=["attributes.start_time ASC"])
            if runs:
                return runs[0].info.run_id
            run = self.client.create_run(self.experiment_id, run_name=self.experiment,
                                         tags={PARENT_TAG: "true"})
            self.client.set_terminated(run.info.run_id, "FINISHED")  # a container: it never runs itself
            return run.info.run_id

        return self._call(find_or_create) if self.active else None

    def start_run(self, name: str, tags: dict | None = None, resume: str | None = None) -> str | None:
        """A nested run ``name`` under the parent; ``resume``: the id of a run to continue if it exists."""
        if not self.active:
            return None

        def start():
            if resume:
                try:
                    run = self.client.get_run(resume)
                    if run.info.experiment_id == self.experiment_id:
                        self.client.update_run(resume, status="RUNNING")
                        return resume
                except Exception:  # noqa: BLE001 -- a run deleted or from another store: start anew
                    pass
            parent = self.parent_run()
            all_tags = {**(tags or {}), **({"mlflow.parentRunId": parent} if parent else {})}
            return self.client.create_run(self.experiment_id, run_name=name, tags=all_tags).info.run_id

        return self._call(start)

    def log_params(self, run_id: str | None, params: dict) -> None:
        if run_id is None or not self.active:
            return
        from mlflow.entities import Param

        flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]

        def log():
            existing = self.client.get_run(run_id).data.params  # a resumed run has them already
            new = [p for p in flat if p.key not in existing]
            for i in range(0, len(new), 100):
                self.client.log_batch(run_id, params=new[i:i + 100])

        self._call(log)

    def log_metrics(self, run_id: str | None, metrics: dict, step: int = 0) -> None:
        """Finite numbers of ``metrics`` (nested dicts flattened with '/'), at ``step``."""
        if run_id is None or not self.active:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = [Metric(k, float(v), now, step) for k, v in flatten(metrics, sep="/").items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        for i in range(0, len(values), 500):
            self._call(self.client.log_batch, run_id, metrics=values[i:i + 500])

    def log_artifacts(self, run_id: str | None, paths) -> None:
        if run_id is None or not self.active:
            return
        for p in paths:
            if Path(p).is_file():
                self._call(self.client.log_artifact, run_id, str(p))

    def end_run(self, run_id: str | None, status: str = "FINISHED") -> None:
        if run_id is not None and self.active:
            self._call(self.client.set_terminated, run_id, status)


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
