"""Two workflows started in the same directory: the second refuses with Snakemake's lock message and
changes nothing; the first completes and its outputs are intact and up to date."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest

from poselift.data.prepared import load_prepared
from workflow_project import BIN, env, make_project, snakemake

pytestmark = pytest.mark.slow

TARGET = "data/prepared/tiny.h5"  # one job (`poselift prepare`) of a few seconds
LOCKED = ("Error: Directory cannot be locked. Please make sure that no other Snakemake process is trying to "
          "create the same files in the following directory:")  # Snakemake 9's LockException


def first_job(proc: subprocess.Popen, timeout: float = 120):
    """The first `poselift` process among snakemake's descendants, as soon as it exists."""
    import psutil

    end = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "snakemake ended before its job started"
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.cmdline()[1:2] and child.cmdline()[1].endswith("/poselift"):
                    return child
        assert time.monotonic() < end, f"no poselift job started in {timeout} s"
        time.sleep(0.01)


def test_a_second_workflow_in_the_same_directory_refuses_and_the_first_completes(tmp_path):
    root = make_project(tmp_path / "p")
    command = [str(BIN / "snakemake"), "--profile", "workflow/profiles/local", TARGET]
    first = subprocess.Popen(command, cwd=root, env=env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    try:
        job = first_job(first)
        job.suspend()  # the first workflow holds its lock until this job is let go: no race with its end
        locks = sorted(p.name for p in (root / ".snakemake" / "locks").iterdir())
        assert locks, "the first workflow holds no lock"

        second = snakemake(root, "--profile", "workflow/profiles/local", TARGET, check=False, timeout=120)
        assert second.returncode != 0, second.stdout[-3000:]
        assert LOCKED in second.stdout and str(root) in second.stdout, second.stdout[-3000:]
        assert "--unlock" in second.stdout  # Snakemake says how to clear a stale lock
        assert sorted(p.name for p in (root / ".snakemake" / "locks").iterdir()) == locks  # the first's, untouched
        assert not (root / TARGET).exists()  # the refused run made nothing, and did not run the job

        job.resume()
        out, _ = first.communicate(timeout=120)
        assert first.returncode == 0, out[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()

    locks = root / ".snakemake" / "locks"
    assert not (locks.is_dir() and any(locks.iterdir()))  # released
    data = load_prepared(root / TARGET)  # a whole file: read and validated
    assert {s.subject for s in data.sequences} == {"S1", "S9"}
    after = snakemake(root, "-n", TARGET)
    assert "Nothing to be done" in after.stdout, after.stdout[-3000:]  # complete and up to date for Snakemake
