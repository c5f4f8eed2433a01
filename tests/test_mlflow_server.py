"""A real MLflow server on 127.0.0.1 (a free port, a temporary SQLite store), reached through the REST API:

* it answers the runs search with the runs a tiny `poselift train` just logged to it;
* killed mid-run, training still finishes, history.json is complete and one warning line says which
  epochs were not logged; a new server on the same store plus `poselift sync` then holds every epoch's
  metrics exactly once, and a second sync logs nothing;
* unreachable at start (a closed port), the run finishes with one warning and `poselift sync` logs it all.

The servers run without MLflow's job runner (its worker processes cost startup time and cores here).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from workflow_project import BIN, STAGE, TINY_EXPERIMENT, env, make_project

pytestmark = pytest.mark.slow

EPOCHS = 6  # the killed run's: the kill lands after epoch 1, whatever the machine's speed, with epochs left
OUTAGE = {**TINY_EXPERIMENT, "stages": [{**STAGE, "epochs": EPOCHS}]}
CLOSED = {**TINY_EXPERIMENT, "stages": [{**STAGE, "epochs": 2}]}
POSELIFT = str(BIN / "poselift")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


class Server:
    """`mlflow server` on the SQLite store and artifacts of folder ``store``, in its own process group (its
    uvicorn worker too); killed, it can be started again on the same store (on a new port)."""

    def __init__(self, store: Path):
        self.store = store
        self.proc: subprocess.Popen | None = None
        self.base = ""
        store.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        """Launch it; :attr:`url` waits for it to answer."""
        port = free_port()
        self.log = self.store / f"mlflow-server-{port}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{self.store / 'mlflow.db'}",
                 "--artifacts-destination", str(self.store / "artifacts")],
                cwd=self.store, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        self.base = f"http://127.0.0.1:{port}"

    @property
    def url(self) -> str:
        """Its base URL once /health answers (started anew if it is not running)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        end = time.monotonic() + 150
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.base}/health", timeout=5) as response:
                    if response.status == 200:
                        return self.base
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < end, f"mlflow server did not answer {self.base}/health"
            time.sleep(0.25)

    def stop(self, sig=signal.SIGTERM) -> None:
        """Signal its whole process group and reap it; SIGKILL: it dies at once, as in a crash."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """The module's server, launched at once (it starts while the project is prepared); each test uses an
    experiment of its own. Always stopped at the end."""
    server = Server(tmp_path_factory.mktemp("store"))
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)  # its store is thrown away: no need to wait for a graceful shutdown


@pytest.fixture(scope="module")
def prepared_project(tmp_path_factory, server) -> Path:
    """The tiny project with its data prepared (while the server starts), made once; tests work on copies."""
    root = make_project(tmp_path_factory.mktemp("tiny") / "p", {"two": TINY_EXPERIMENT, "outage": OUTAGE,
                                                                 "closed": CLOSED})
    proc = subprocess.run([POSELIFT, "prepare", "h36m", "--source", "src.npz", "--out", "data/prepared/tiny.h5"],
                          cwd=root, env=env(root), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.fixture
def project(prepared_project, tmp_path, monkeypatch) -> Path:
    """A copy of the prepared project, the working directory of in-process commands (``run_cli``); MLflow's
    HTTP limits that poselift sets in-process are undone after the test."""
    from poselift.tracking import _HTTP_LIMITS

    for key, value in _HTTP_LIMITS.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    root = Path(shutil.copytree(prepared_project, tmp_path / "p", symlinks=True))
    monkeypatch.chdir(root)
    return root


def train_args(experiment: str) -> list[str]:
    return ["train", "--experiment", experiment, "--stage", "1", "--detections", "none", "--device", "cpu",
            "--threads", "1"]


def runs_by_name(url: str, experiment: str) -> dict[str, dict]:
    exp = call(f"{url}/api/2.0/mlflow/experiments/get-by-name?"
               + urllib.parse.urlencode({"experiment_name": experiment}))["experiment"]
    runs = call(f"{url}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]}).get("runs", [])
    by_name: dict[str, dict] = {}
    for run in runs:
        assert run["info"]["run_name"] not in by_name, f"two runs named {run['info']['run_name']}"
        by_name[run["info"]["run_name"]] = run
    return by_name


def metric_steps(url: str, run: dict) -> dict[str, list[int]]:
    """Every metric of ``run`` -> the steps of its logged values, in order, repeats included."""
    steps = {}
    for m in run["data"].get("metrics", []):
        query = urllib.parse.urlencode({"run_id": run["info"]["run_id"], "metric_key": m["key"]})
        history = call(f"{url}/api/2.0/mlflow/metrics/get-history?{query}").get("metrics", [])
        steps[m["key"]] = sorted(h.get("step", 0) for h in history)
    return steps


def artifacts(url: str, run: dict) -> set[str]:
    query = urllib.parse.urlencode({"run_id": run["info"]["run_id"]})
    return {f["path"] for f in call(f"{url}/api/2.0/mlflow/artifacts/list?{query}").get("files", [])}


def one_warning(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("poselift: warning:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def assert_complete(url: str, experiment: str, epochs: int, evaluation: bool = False) -> dict[str, list[int]]:
    """The stage run holds every epoch's metrics once, the best ones, its params, history.json and status
    FINISHED; it (and the evaluation run, if ``evaluation``) nested under the experiment's run; returns the
    stage's metric steps."""
    by_name = runs_by_name(url, experiment)
    assert set(by_name) == {experiment, "stage1-pot", *(["evaluation-test"] if evaluation else [])}
    stage = by_name["stage1-pot"]
    for run in by_name.values():
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert run is by_name[experiment] or tags["mlflow.parentRunId"] == by_name[experiment]["info"]["run_id"]
    assert stage["info"]["status"] == "FINISHED"
    assert float({p["key"]: p["value"] for p in stage["data"]["params"]}["epochs"]) == epochs
    steps = metric_steps(url, stage)
    every = list(range(1, epochs + 1))
    for key in ("loss", "loss_terms/pot_stage1", "val_mpjpe", "lr"):
        assert steps[key] == every, (key, steps[key])
    assert steps["best_val_mpjpe"] == steps["best_epoch"] == [epochs]
    assert "history.json" in artifacts(url, stage)
    return steps


def test_server_answers_runs_search_with_the_training_run(server, project, run_cli, monkeypatch):
    url = server.url
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    code, _, err = run_cli(*train_args("two"))
    assert code == 0, err
    assert "MLflow tracking" not in err, err  # no warning: everything was logged

    by_name = runs_by_name(url, "two")
    assert set(by_name) == {"two", "stage1-pot"}
    parent, stage = by_name["two"], by_name["stage1-pot"]
    tags = {t["key"]: t["value"] for t in stage["data"]["tags"]}
    assert tags["mlflow.parentRunId"] == parent["info"]["run_id"]  # nested under the experiment's run
    assert stage["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in stage["data"]["params"]}
    assert float(params["lr"]) == TINY_EXPERIMENT["stages"][0]["lr"]
    metrics = {m["key"]: m["value"] for m in stage["data"]["metrics"]}
    history = json.loads((project / "results/two/stage1/history.json").read_text())
    assert metrics["val_mpjpe"] == pytest.approx(history["epochs"][-1]["val_mpjpe"])


def test_server_killed_mid_run_then_sync_logs_the_rest_once(server, project, tmp_path, run_cli):
    url = server.url
    with open(tmp_path / "train.err", "w+") as err, subprocess.Popen(
            [POSELIFT, *train_args("outage")], cwd=project, stdout=subprocess.PIPE, stderr=err, text=True,
            env=env(project, MLFLOW_TRACKING_URI=url, PYTHONUNBUFFERED="1")) as train:
        try:
            for line in train.stdout:  # unbuffered: "epoch 1/N" comes right after epoch 1's metrics were sent
                if line.startswith("epoch 1/"):
                    server.stop(signal.SIGKILL)  # the server dies at once, mid-training
                    break
            server.start()  # a new server on the same store (a new port), starting while training goes on
            train.stdout.read()
            assert train.wait(timeout=300) == 0, (tmp_path / "train.err").read_text()[-3000:]
        finally:
            if train.poll() is None:
                train.kill()

    warning = one_warning((tmp_path / "train.err").read_text())
    assert f"MLflow tracking at {url} failed from epoch" in warning, warning
    lost = re.search(r"from epoch (\d+) of stage1-pot .*; not logged: metrics of epochs (\d+)-(\d+), "
                     r"artifact history\.json, status FINISHED; run `poselift sync results/outage` to log them$",
                     warning)
    assert lost, warning
    first_lost = int(lost[1])
    assert 2 <= first_lost == int(lost[2]) and int(lost[3]) == EPOCHS, warning
    history = json.loads((project / "results/outage/stage1/history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == list(range(1, EPOCHS + 1))

    url = server.url
    stage = runs_by_name(url, "outage")["stage1-pot"]
    assert stage["info"]["status"] == "RUNNING"  # as the killed server left it
    assert metric_steps(url, stage)["val_mpjpe"] == list(range(1, first_lost))  # what it logged before the kill

    code, out, err = run_cli("sync", "results/outage", "--tracking-uri", url)
    assert code == 0 and "stage1-pot: logged" in out, out + err
    steps = assert_complete(url, "outage", EPOCHS)

    code, out, err = run_cli("sync", "results/outage", "--tracking-uri", url)
    assert code == 0 and "stage1-pot: up to date" in out, out + err
    assert assert_complete(url, "outage", EPOCHS) == steps  # nothing duplicated


def test_unreachable_at_start_warns_once_then_sync_logs_everything(server, project, run_cli, monkeypatch):
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refused at once (the retries: test_train.py)
    code, _, err = run_cli(*train_args("closed"), "--tracking-uri", closed)
    assert code == 0, err
    assert re.fullmatch(rf"poselift: warning: MLflow tracking at {closed} failed at start \(.*\); not logged: run "
                        r"stage1-pot, params, metrics of epochs 1-2, artifact history\.json, status FINISHED; run "
                        r"`poselift sync results/closed` to log them", one_warning(err)), err
    assert len(json.loads((project / "results/closed/stage1/history.json").read_text())["epochs"]) == 2
    code, _, err = run_cli("evaluate", "--experiment", "closed", "--detections", "none", "--device", "cpu",
                           "--tracking-uri", closed)
    assert code == 0, err
    assert re.search(r"failed at start \(.*\); not logged: run evaluation-test, params, \d+ metrics, artifacts "
                     r"metrics\.json, per_action\.csv, per_group\.json, status FINISHED; run `poselift sync "
                     r"results/closed` to log them$", one_warning(err)), err

    code, out, err = run_cli("sync", "results/closed", "--tracking-uri", closed)  # still down: one error line
    assert code == 2 and re.fullmatch(rf"poselift: error: {closed}: MLflow failed \(.+\)\n", err), err

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    code, out, err = run_cli("sync", "results/closed", "--tracking-uri", server.url)
    assert code == 0 and "stage1-pot: logged new run" in out and "evaluation-test: logged new run" in out, out + err
    assert_complete(server.url, "closed", 2, evaluation=True)
    evaluation = runs_by_name(server.url, "closed")["evaluation-test"]
    metrics = {m["key"]: m["value"] for m in evaluation["data"]["metrics"]}
    result = json.loads((project / "results/closed/evaluation/metrics.json").read_text())
    assert metrics["mpjpe_all_frames"] == pytest.approx(result["mpjpe"])  # named as `poselift evaluate` names it
    assert {p["key"]: p["value"] for p in evaluation["data"]["params"]}["split"] == "test"
    assert {"metrics.json", "per_action.csv", "per_group.json"} <= artifacts(server.url, evaluation)
    assert evaluation["info"]["status"] == "FINISHED"


def test_a_store_mlflow_refuses_turns_tracking_off_with_one_warning(tmp_path, monkeypatch, capsys):
    """MLflow 3 refuses a file: store (maintenance mode) with an exception when the client is made: a user's
    MLFLOW_TRACKING_URI=file:... must cost a warning line, not the run (it was a traceback before)."""
    from poselift.tracking import Tracker

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = f"file:{tmp_path / 'mlruns'}"
    tracker = Tracker("refused", uri, record=tmp_path / "results")
    assert not tracker.active and tracker.failure.startswith("at start (MlflowException: ")
    run = tracker.start_run("stage1-pot")
    tracker.log_metrics(run, {"loss": 1.0}, step=1)
    tracker.end_run(run)
    tracker.warn()
    err = capsys.readouterr().err
    assert re.fullmatch(rf"poselift: warning: MLflow tracking at {re.escape(uri)} failed at start \(MlflowException: "
                        r".*\); not logged: run stage1-pot, .*; run `poselift sync .*results` to log them\n", err), err


RACE = """
import sys, time
from poselift.tracking import Tracker
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
tracker = Tracker("together", sys.argv[1])
run = tracker.start_run(sys.argv[3])
tracker.end_run(run)
print("active" if tracker.active and tracker.failure is None else f"failed {tracker.failure}")
"""


def test_jobs_that_start_together_share_a_new_sqlite_store(tmp_path):
    """Two jobs at once on a 2-core machine (make run) both create a fresh mlflow.db: MLflow's table migration
    then fails in all but one (measured: 8 of 9 processes, three rounds of three). The store's lock lets every
    one of three simultaneous trackers log, into one experiment."""
    import sys

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = time.time() + 8  # after the three imports of mlflow
    procs = [subprocess.Popen([sys.executable, "-c", RACE, uri, str(start), f"run{k}"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env(tmp_path)) for k in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(o.strip().endswith("active") for o in outs), outs
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("together")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["run0", "run1", "run2", "together"]  # one parent run
