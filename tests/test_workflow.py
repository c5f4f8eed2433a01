"""The Snakemake workflow on a tiny project: the DAG it plans (two-stage experiments, own-2D experiments),
the resources it asks for, the Slurm profile's resolution, the between-workflow cache of prepared data and
detections, and what a killed job leaves behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from workflow_project import BIN, REPO, STAGE, TINY_EXPERIMENT, env, make_project, snakemake, write_params

pytestmark = pytest.mark.slow

OWN_2D = {"dataset": "tiny", "detector": "prepared", "stages": [STAGE]}


def dry_run(root: Path, *args) -> list[dict]:
    """The jobs `snakemake -n -p ARGS` plans: rule, input, output, wildcards, resources and shell command."""
    out = snakemake(root, "-n", "-p", *args).stdout
    jobs, job = [], None
    for line in out.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            job = {"rule": line.split()[1].rstrip(":"), "input": [], "output": [], "wildcards": {}, "resources": {}}
            jobs.append(job)
        elif job is not None and line.startswith("    ") and ": " in line:
            key, value = line.strip().split(": ", 1)
            if key in ("input", "output"):
                job[key] = value.split(", ")
            elif key in ("wildcards", "resources"):
                job[key] = dict(item.split("=", 1) for item in value.split(", "))
        elif job is not None and line.startswith("Shell command: "):
            job["shell"] = line[len("Shell command: "):]
    return jobs


def find(jobs, rule, **wildcards):
    hits = [j for j in jobs if j["rule"] == rule and all(j["wildcards"].get(k) == v for k, v in wildcards.items())]
    assert len(hits) == 1, f"expected one {rule} job {wildcards}, found {len(hits)}"
    return hits[0]


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path / "p", {"two": TINY_EXPERIMENT, "own": OWN_2D})


def test_all_plans_the_chain_with_stage_two_on_stage_one(project):
    jobs = dry_run(project, "all")
    assert sorted(j["rule"] for j in jobs) == sorted(
        ["prepare", "detect", "train", "train", "train", "evaluate", "evaluate", "baseline", "report", "all"])
    baseline = find(jobs, "baseline", dataset="tiny")  # the dataset's mean-pose row of the results table
    assert baseline["output"][0] == "results/mean-pose@tiny/evaluation/metrics.json"
    prepare, detect = find(jobs, "prepare", dataset="tiny"), find(jobs, "detect", detector="synthetic")
    assert prepare["input"] == ["src.npz"] and prepare["output"] == ["data/prepared/tiny.h5"]
    assert detect["input"] == ["data/prepared/tiny.h5"] and detect["output"] == ["data/detections/tiny/synthetic.h5"]

    one, two = find(jobs, "train", experiment="two", stage="1"), find(jobs, "train", experiment="two", stage="2")
    assert one["input"] == ["data/prepared/tiny.h5", "data/detections/tiny/synthetic.h5"]
    assert two["input"] == one["input"] + ["results/two/stage1/checkpoint.pt"]
    assert "--init 1=results/two/stage1/checkpoint.pt" in two["shell"] and "--init" not in one["shell"]
    assert "--stage 2" in two["shell"] and "--out results/two/stage2" in two["shell"]
    evaluate = find(jobs, "evaluate", experiment="two")
    assert "results/two/stage2/checkpoint.pt" in evaluate["input"]
    assert "--checkpoint results/two/stage2/checkpoint.pt" in evaluate["shell"]

    own = find(jobs, "train", experiment="own", stage="1")  # detector "prepared": no detections file
    assert own["input"] == ["data/prepared/tiny.h5"] and "--input detections=none" in own["shell"]
    report = find(jobs, "report")
    assert sorted(report["input"]) == ["results/mean-pose@tiny/evaluation/metrics.json",
                                       "results/own/evaluation/metrics.json", "results/two/evaluation/metrics.json"]
    assert "--experiment two --experiment own --experiment mean-pose@tiny" in report["shell"]


def test_phase_targets_and_experiments_without_data(project):
    assert {j["rule"] for j in dry_run(project, "detections")} == {"prepare", "detect", "detections"}
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"]["h36m"] = {"reader": "h36m", "validation_split": "test"}  # no source: cannot be made
    params["experiments"]["paper"] = {**TINY_EXPERIMENT, "dataset": "h36m", "detector": "cpn"}
    write_params(project, params)
    proc = snakemake(project, "-n", "all")
    assert ("`all` leaves out paper: params.yaml does not set datasets.h36m.source, detectors.cpn.import.h36m"
            in proc.stdout)
    assert "results/paper" not in proc.stdout
    # given both sources, the experiment is in `all`, and its detections are imported, not computed
    params["datasets"]["h36m"]["source"] = "h36m-src"
    params["detectors"]["cpn"] = {"import": {"h36m": "cpn.npz"}}
    write_params(project, params)
    (project / "h36m-src").mkdir()
    (project / "h36m-src" / "data_3d_h36m.npz").write_bytes((project / "src.npz").read_bytes())
    (project / "cpn.npz").write_bytes(b"x")
    jobs = dry_run(project, "all")
    detect = find(jobs, "detect", dataset="h36m", detector="cpn")
    assert detect["input"] == ["data/prepared/h36m.h5", "cpn.npz"]
    assert detect["shell"].startswith("poselift import-detections --prepared data/prepared/h36m.h5 --source cpn.npz")
    assert find(jobs, "prepare", dataset="h36m")["input"] == ["h36m-src/data_3d_h36m.npz"]


def test_only_training_and_evaluation_ask_for_a_gpu(project):
    jobs = dry_run(project, "all")
    for job in jobs:
        if job["rule"] in ("train", "evaluate"):
            assert job["resources"].get("gpu") == "1", job
            assert int(job["resources"]["mem_mb"]) > 0 and int(job["resources"]["runtime"]) > 0
        else:
            assert "gpu" not in job["resources"], job
    # the local profile runs them on the CPU; without a profile the device is chosen at run time
    local = dry_run(project, "--profile", "workflow/profiles/local", "all")
    assert "--device cpu" in find(local, "train", experiment="two", stage="1")["shell"]
    assert "--device auto" in find(jobs, "train", experiment="two", stage="1")["shell"]


def test_slurm_profile_resolves_from_the_repository_root(project, monkeypatch):
    from snakemake.cli import get_profile_dir

    monkeypatch.chdir(REPO)
    directory, config_file = get_profile_dir("slurm")
    assert Path(config_file).resolve() == REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
    profile = yaml.safe_load(Path(config_file).read_text())
    assert profile["executor"] == "slurm" and profile["slurm-status-command"] == "squeue"
    assert "cache" in profile and "gpu" not in json.dumps(profile.get("default-resources", {}))
    # and Snakemake plans the workflow with it (a dry run submits nothing)
    jobs = dry_run(project, "--profile", "slurm", "all")
    assert len([j for j in jobs if j["rule"] == "train"]) == 3


def test_cache_second_project_computes_nothing_and_key_follows_data_and_detector(tmp_path):
    cache = {"SNAKEMAKE_OUTPUT_CACHE": tmp_path / "shared-cache"}
    first = make_project(tmp_path / "first", {"two": TINY_EXPERIMENT})
    snakemake(first, "--profile", "workflow/profiles/local", "detections", env_extra=cache)
    assert "wrote data/detections/tiny/synthetic.h5" in (first / "logs/detect/tiny/synthetic.log").read_text()
    assert len(list((tmp_path / "shared-cache").iterdir())) == 2  # the prepared file and the detections

    # another project asking for the same detections: both files come from the cache, nothing runs
    second = make_project(tmp_path / "second", {"other-name": TINY_EXPERIMENT})
    proc = snakemake(second, "--profile", "workflow/profiles/local", "detections", env_extra=cache)
    assert proc.stdout.count("from cache.") == 2 and "to cache." not in proc.stdout
    assert (second / "logs/detect/tiny/synthetic.log").read_text() == ""
    assert (second / "logs/prepare/tiny.log").read_text() == ""
    for path in ("data/prepared/tiny.h5", "data/detections/tiny/synthetic.h5"):
        assert (second / path).resolve() == (first / path).resolve()
        assert (second / path).resolve().parent == tmp_path / "shared-cache"

    # a detector setting changed: same prepared file from the cache, new detections computed
    third = make_project(tmp_path / "third", {"two": TINY_EXPERIMENT})
    params = yaml.safe_load((third / "params.yaml").read_text())
    params["detectors"]["synthetic"]["sigma_px"]["pelvis"] += 1.0
    write_params(third, params)
    proc = snakemake(third, "--profile", "workflow/profiles/local", "detections", env_extra=cache)
    assert "Moving output file data/detections/tiny/synthetic.h5 to cache." in proc.stdout
    assert "Moving output file data/prepared/tiny.h5 to cache." not in proc.stdout
    assert "wrote data/detections/tiny/synthetic.h5" in (third / "logs/detect/tiny/synthetic.log").read_text()
    assert (third / "data/prepared/tiny.h5").resolve() == (first / "data/prepared/tiny.h5").resolve()
    assert len(list((tmp_path / "shared-cache").iterdir())) == 3

    # other source data under the same dataset name: prepared and detected anew
    fourth = make_project(tmp_path / "fourth", {"two": TINY_EXPERIMENT})
    from workflow_project import write_source

    write_source(fourth / "src.npz", seed=1)
    proc = snakemake(fourth, "--profile", "workflow/profiles/local", "detections", env_extra=cache)
    assert proc.stdout.count("to cache.") == 2
    assert len(list((tmp_path / "shared-cache").iterdir())) == 5


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"snakemake ended before {path} appeared"
        assert time.monotonic() < end, f"{path} did not appear in {timeout} s"
        time.sleep(0.02)


def _default_sigint() -> None:
    """Ctrl-C as in a terminal: pytest-xdist's workers ignore SIGINT, and their children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def started(root: Path) -> Iterator[subprocess.Popen]:
    """`snakemake --profile workflow/profiles/local results` in the background, in its own process group;
    whatever of the group is left when the block ends (a failed assertion) is killed, stopped processes too."""
    proc = subprocess.Popen([str(BIN / "snakemake"), "--profile", "workflow/profiles/local", "results"],
                            cwd=root, env=env(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_default_sigint)
    try:
        yield proc
    finally:
        if proc.poll() is None:  # not yet reaped: its id is still its group's
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def trainers(proc: subprocess.Popen) -> list:
    """The `poselift train` processes among snakemake's descendants."""
    import psutil

    found = []
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            cmdline = child.cmdline()
        except psutil.NoSuchProcess:  # exited (or a zombie) since the listing: not a running trainer
            continue
        if cmdline[1:2] and cmdline[1].endswith("/poselift") and cmdline[2:3] == ["train"]:
            found.append(child)
    return found


def frozen(pid: int) -> bool:
    """Whether every thread of process ``pid`` is stopped (state T): it runs no code until SIGCONT."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):  # a thread that just exited
            states.append(stat.read_text().rpartition(")")[2].split()[0])
    return bool(states) and all(state in "tT" for state in states)


def freeze_training(proc: subprocess.Popen, stage: Path, epochs: int):
    """Once the training job has written its first epoch, stop (SIGSTOP) its `poselift train` process and
    return it, checking it is mid-training: it writes and finishes nothing until continued (SIGCONT)."""
    import psutil

    wait_for(stage / "history.json", proc)
    found = trainers(proc)  # it wrote history.json and has epochs left: it is alive
    assert len(found) == 1, found
    trainer = found[0]
    trainer.suspend()
    end = time.monotonic() + 60
    while not frozen(trainer.pid):
        assert trainer.status() != psutil.STATUS_ZOMBIE, "the trainer exited"
        assert time.monotonic() < end, "the trainer did not stop"
        time.sleep(0.01)
    done = [e["epoch"] for e in json.loads((stage / "history.json").read_text())["epochs"]]
    assert 1 <= len(done) < epochs, done  # stable now (the trainer is its only writer), and not finished
    return trainer


def wait_gone(process, timeout: float) -> None:
    """Wait until ``process`` has exited: gone, or a zombie (its parent, the job's shell, may itself be gone,
    and a container's PID 1 need not reap orphans, so an exited process can stay a zombie)."""
    import psutil

    end = time.monotonic() + timeout
    while True:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        assert time.monotonic() < end, f"process {process.pid} did not exit within {timeout} s"
        time.sleep(0.05)


def test_a_killed_job_leaves_no_output_and_a_rerun_completes(tmp_path):
    import psutil

    # The killed runs train a stage that cannot finish within the test (at least a step, a validation pass
    # and three file writes per epoch), so each kill hits a trainer that is mid-training; the rerun's stage
    # is short. A changed stage makes Snakemake rerun the job anyway, but not past files left incomplete:
    # those need the profile's rerun-incomplete, which step 3 checks.
    endless = dict(TINY_EXPERIMENT["stages"][0], epochs=10**9)
    root = make_project(tmp_path / "p", {"two": {**TINY_EXPERIMENT, "stages": [endless]}})
    stage = root / "results" / "two" / "stage1"
    outputs = [stage / "checkpoint.pt", stage / "last.pt", stage / "history.json"]

    # 1. the training process dies (as by the OOM killer or a node failure) after writing its first epoch
    with started(root) as proc:
        trainer = freeze_training(proc, stage, endless["epochs"])
        trainer.send_signal(signal.SIGTERM)  # fatal (no handler): the stopped process dies without running
        with contextlib.suppress(psutil.NoSuchProcess):
            trainer.resume()
        wait_gone(trainer, 60)
        assert proc.wait(timeout=120) != 0
    assert not any(p.exists() for p in outputs)  # Snakemake removed the failed job's outputs

    # 2. the whole run is interrupted (Ctrl-C reaches every process of the terminal's group)
    with started(root) as proc:
        trainer = freeze_training(proc, stage, endless["epochs"])
        os.killpg(proc.pid, signal.SIGINT)
        trainer.resume()  # it takes the pending SIGINT mid-training (a KeyboardInterrupt)
        wait_gone(trainer, 60)  # so its log is complete
        assert proc.wait(timeout=120) != 0
    assert "poselift: interrupted" in (root / "logs/train/two/stage1.log").read_text()

    # 3. with the short stage, a plain run refuses files left unfinished (if Snakemake did not remove them),
    # and a rerun with the profile (it sets rerun-incomplete) trains the stage from scratch to the end
    short = dict(endless, epochs=3)
    write_params(root, {**yaml.safe_load((root / "params.yaml").read_text()),
                        "experiments": {"two": {**TINY_EXPERIMENT, "stages": [short]}}})
    if any(p.exists() for p in outputs):  # Snakemake marked them unfinished (else it removed them)
        plain = snakemake(root, "-n", "results", check=False)
        assert plain.returncode != 0 and "IncompleteFilesException" in plain.stdout
    left = set(stage.glob(".*.tmp"))  # a killed process's temporary files (io.atomic_output), if it had any
    snakemake(root, "--profile", "workflow/profiles/local", "results")
    history = json.loads((stage / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]
    assert "resuming" not in (root / "logs/train/two/stage1.log").read_text()
    assert (root / "results/two/evaluation/metrics.json").is_file()
    assert set(stage.glob(".*.tmp")) <= left  # the rerun left none of its own
