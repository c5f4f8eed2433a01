"""An MLflow server on 127.0.0.1 (a free port, a temporary SQLite store) answers the REST runs search with
the runs a tiny `poselift train` just logged to it through MLFLOW_TRACKING_URI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from workflow_project import BIN, TINY_EXPERIMENT, env, make_project

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def server(tmp_path):
    """`mlflow server` in its own process group; yields its base URL; always terminated."""
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "w")
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                             "--artifacts-destination", str(tmp_path / "artifacts")],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 150
        while True:
            assert proc.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < end, "mlflow server did not answer /health"
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


def test_server_answers_runs_search_with_the_training_run(server, tmp_path):
    root = make_project(tmp_path / "p", {"two": TINY_EXPERIMENT})
    e = env(root, MLFLOW_TRACKING_URI=server)
    poselift = str(BIN / "poselift")
    for cmd in (["prepare", "h36m", "--source", "src.npz", "--out", "data/prepared/tiny.h5"],
                ["train", "--experiment", "two", "--stage", "1", "--detections", "none", "--device", "cpu"]):
        proc = subprocess.run([poselift, *cmd], cwd=root, env=e, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "MLflow tracking" not in proc.stderr, proc.stderr  # no "tracking is off" warning

    experiment = call(f"{server}/api/2.0/mlflow/experiments/get-by-name?"
                      + urllib.parse.urlencode({"experiment_name": "two"}))["experiment"]
    runs = call(f"{server}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    by_name = {r["info"]["run_name"]: r for r in runs}
    assert set(by_name) == {"two", "stage1-pot"}
    parent, stage = by_name["two"], by_name["stage1-pot"]
    tags = {t["key"]: t["value"] for t in stage["data"]["tags"]}
    assert tags["mlflow.parentRunId"] == parent["info"]["run_id"]  # nested under the experiment's run
    assert stage["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in stage["data"]["params"]}
    assert float(params["lr"]) == TINY_EXPERIMENT["stages"][0]["lr"]
    metrics = {m["key"]: m["value"] for m in stage["data"]["metrics"]}
    history = json.loads((root / "results/two/stage1/history.json").read_text())
    assert metrics["val_mpjpe"] == pytest.approx(history["epochs"][-1]["val_mpjpe"])
