"""`dvc repro` over the workflow on the tiny project (a git repository holding the repository's dvc.yaml,
.dvc/config, .dvcignore and a copy of src/poselift, which dvc.yaml names as a dependency): after the workflow
(`make run`) a repro computes nothing and a second one
does nothing, a changed training parameter rebuilds only what depends on it, params and metrics diff, and
data, detections and checkpoints go to a local folder remote and come back in a fresh clone."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from workflow_project import BIN, REPO, TINY_EXPERIMENT, env, make_project, write_params

pytestmark = pytest.mark.slow

GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@example.org"}
TRACKED = ["data/prepared/tiny.h5", "data/detections/tiny/synthetic.h5", "results/two/stage1/checkpoint.pt",
           "results/two/stage2/checkpoint.pt", "results/two/evaluation/metrics.json", "reports/results.csv"]


def run(root: Path, *cmd, timeout: float = 300) -> str:
    exe = str(BIN / cmd[0]) if (BIN / cmd[0]).exists() else cmd[0]
    proc = subprocess.run([exe, *cmd[1:]], cwd=root, env=env(root, **GIT), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-5000:]}"
    return proc.stdout


def stamps(root: Path) -> dict[str, int]:
    return {p: (root / p).stat().st_mtime_ns for p in TRACKED}


@pytest.fixture
def project(tmp_path):
    root = make_project(tmp_path / "p", {"two": TINY_EXPERIMENT})
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    (root / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(REPO / ".dvc" / name, root / ".dvc" / name)
    shutil.copytree(REPO / "src" / "poselift", root / "src" / "poselift",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / ".gitignore").write_text((REPO / ".gitignore").read_text() + "/src.npz\n/output-cache/\n")
    run(root, "git", "init", "-q")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "tiny project")
    return root


def contents(root: Path) -> dict[str, bytes]:
    return {p: (root / p).resolve().read_bytes() for p in TRACKED}


def test_repro_after_the_workflow_computes_nothing_then_rebuilds_what_changed_and_round_trips(project, tmp_path):
    """`make run` (Snakemake's `all`), then `dvc repro` twice: DVC runs each phase once to record it, every
    Snakemake inside finds nothing to do although DVC's commit rewrote every tracked file (new mtimes, same
    bytes), and the second repro does not even start a stage. Then a changed parameter rebuilds only what
    depends on it, and the data goes to a remote and back."""
    run(project, "snakemake", "--profile", "workflow/profiles/local", "all")
    made = contents(project)
    first = run(project, "dvc", "repro")
    for stage in ("prepare", "detect", "results", "report"):
        assert f"Running stage '{stage}'" in first
    jobs = re.findall(r"^(?:local)?rule (\w+):$", first, flags=re.M)
    assert set(jobs) <= {"renders"}, first[-3000:]  # the phase target without files (nothing rendered here)
    assert contents(project) == made
    before = stamps(project)

    again = run(project, "dvc", "repro")
    assert "Data and pipelines are up to date." in again and "Running stage" not in again
    assert stamps(project) == before
    assert "Nothing to be done" in run(project, "snakemake", "--profile", "workflow/profiles/local", "all")
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "first results")

    # one training parameter of stage 2: stage 1, the data and the detections stay as they are
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["experiments"]["two"]["stages"][1]["lr"] = 5.0e-4
    write_params(project, params)
    changed = run(project, "dvc", "repro")
    assert "Stage 'prepare' didn't change, skipping" in changed
    after = stamps(project)
    for path in ("data/prepared/tiny.h5", "data/detections/tiny/synthetic.h5", "results/two/stage1/checkpoint.pt"):
        assert after[path] == before[path], f"{path} was rebuilt"
    for path in ("results/two/stage2/checkpoint.pt", "results/two/evaluation/metrics.json", "reports/results.csv"):
        assert after[path] > before[path], f"{path} was not rebuilt"
    history = yaml.safe_load((project / "results/two/stage2/history.json").read_text())
    assert history["stage"]["lr"] == 5.0e-4

    assert "experiments.two.stages" in run(project, "dvc", "params", "diff")
    metrics = run(project, "dvc", "metrics", "diff")
    assert "reports/metrics.json" in metrics and "two.mpjpe" in metrics
    assert "two.mpjpe" in run(project, "dvc", "metrics", "show")

    # push to a folder remote; a fresh clone pulls the same files back
    run(project, "dvc", "remote", "add", "-d", "store", str(tmp_path / "remote"))
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "lr 5e-4")
    run(project, "dvc", "push")
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / "results").exists()
    run(clone, "dvc", "pull")
    for path in TRACKED:
        assert (clone / path).read_bytes() == (project / path).resolve().read_bytes(), path
    assert "up to date" in run(clone, "dvc", "status")
