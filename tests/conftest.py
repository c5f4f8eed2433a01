"""Shared test fixtures: paths to ../shared (skip cleanly when absent) and a CLI runner."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("POSELIFT_SHARED", REPO.parent / "shared"))


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the clone; tests that need it skip with the reason when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (a fresh clone without the developers' shared data)")
    return SHARED


@pytest.fixture
def mmpose_fixtures(shared_dir) -> Path:
    path = shared_dir / "data" / "fixtures" / "mmpose"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


_BODY = {}  # MakeHuman's body, read once per test session


@pytest.fixture
def makehuman_body(shared_dir):
    """The unshaped MakeHuman CC0 body (poselift.rendering.body) from ../shared's mirror, loaded once."""
    path = shared_dir / "data" / "makehuman"
    if not (path / "makehuman-cc0-assets.tar.xz").is_file():
        pytest.skip(f"{path}/makehuman-cc0-assets.tar.xz is absent")
    if "body" not in _BODY:
        from poselift.rendering.body import load_body

        _BODY["body"] = load_body(path)
    return _BODY["body"]


@pytest.fixture
def run_cli(capsys):
    """Run ``poselift ARGS...`` in-process; returns (exit code, stdout, stderr)."""
    from poselift.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(autouse=True)
def detection_cache(tmp_path_factory, monkeypatch):
    """`poselift detect`'s cache (poselift.detection.cache) in a folder of this session, not the user's home
    (and not in a test's tmp_path, whose contents some tests check)."""
    monkeypatch.setenv("POSELIFT_CACHE", str(tmp_path_factory.getbasetemp() / "poselift-cache"))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests use tiny models, which run fastest on one thread (and leave the other core to other work)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def stage_losses():
    """``stage_losses(experiment, stage)``: the ``losses`` (term name -> weight) of the stage named ``stage`` of
    ``experiment`` in the repository's params.yaml, the weights the training loop sums."""
    import yaml

    experiments = yaml.safe_load((REPO / "params.yaml").read_text())["experiments"]

    def losses(experiment: str, stage: str) -> dict[str, float]:
        return next(s for s in experiments[experiment]["stages"] if s["name"] == stage)["losses"]

    return losses


# The longest files, longest first. `make test` splits the suite over workers file by file (pytest-xdist's
# loadfile) in collection order, so a long file collected last would run alone at the end.
LONGEST_FIRST = ("test_slurm.py", "test_dvc.py", "test_workflow.py", "test_mlflow_server.py",
                 "test_workflow_helpers.py", "test_distributed.py", "test_workflow_lock.py", "test_precision.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order
