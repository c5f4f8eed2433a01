"""`snakemake --profile slurm` on a real single-node Slurm: Debian's munge, slurmctld and slurmd started here
as background daemons with a minimal slurm.conf (no accounting, one node with this machine's CPUs and
memory and one GPU GRES that is a name only), the tiny two-stage experiment run through
snakemake-executor-plugin-slurm, then everything torn down, whatever happened.

Needs root (the daemons, and apt-get when the packages are missing). The configuration goes where every
Slurm command looks by default, /etc/slurm/slurm.conf: the plugin's job step drops SLURM_CONF from the
environment before it calls srun, so a configuration anywhere else cannot be used. A slurm.conf that this
test did not write is never touched (the test skips).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from workflow_project import TINY_EXPERIMENT, make_project, snakemake

pytestmark = pytest.mark.slow

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "munged")
CONF_DIR = Path("/etc/slurm")
MARK = "# written by poselift tests/test_slurm.py\n"
# The sizes the tiny jobs ask for on this one small node (the rules' defaults are for real GPU nodes).
SIZES = ["--set-resources", "train:mem_mb=2000", "evaluate:mem_mb=2000", "--set-threads", "train=1", "evaluate=1",
         "--slurm-init-seconds-before-status-checks", "2"]


def _which(name):
    return shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name)
                                       if p.exists()), None)


def ensure_slurm() -> None:
    """Skip unless root; install Debian's Slurm and munge with apt-get when they are missing."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root to start munged, slurmctld and slurmd")
    if all(_which(b) for b in BINARIES):
        return
    if not shutil.which("apt-get"):
        pytest.skip(f"Slurm is not installed ({', '.join(b for b in BINARIES if not _which(b))} missing) "
                    "and there is no apt-get to install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]
    proc = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:  # the package lists may be missing or stale
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        proc = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not all(_which(b) for b in BINARIES):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"could not install {' '.join(PACKAGES)} with apt-get: {last}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class Cluster:
    """munged, slurmctld and slurmd in the foreground of their own process groups, under a temp folder."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.wrote: list[Path] = []
        self.dir = Path(tempfile.mkdtemp(prefix="poselift-slurm-"))

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> None:
        for path in (CONF_DIR / "slurm.conf", CONF_DIR / "gres.conf"):
            if path.exists() and not path.read_text().startswith(MARK):
                pytest.skip(f"{path} exists and was not written by this test: a real Slurm is configured here")
        self.dir.chmod(0o755)
        munge = self.dir / "munge"
        munge.mkdir(mode=0o755)
        shutil.chown(munge, "munge", "munge")
        for sub in ("state", "spool"):
            (self.dir / sub).mkdir()
        socket_path = munge / "munge.socket"
        self.spawn(["runuser", "-u", "munge", "--", _which("munged"), "--foreground", f"--socket={socket_path}",
                    f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                    f"--seed-file={munge}/munged.seed"], "munged.out")
        self.wait(socket_path.exists, "munged to create its socket", 20)

        CONF_DIR.mkdir(parents=True, exist_ok=True)
        self.write(CONF_DIR / "slurm.conf", f"""{MARK}ClusterName=poselift-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
StateSaveLocation={self.dir}/state
SlurmdSpoolDir={self.dir}/spool
SlurmctldPidFile={self.dir}/slurmctld.pid
SlurmdPidFile={self.dir}/slurmd.pid
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory_mb() * 8 // 10} Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
        # A GPU that is only a name: jobs that ask for one get it (and CUDA_VISIBLE_DEVICES), nothing more.
        self.write(CONF_DIR / "gres.conf", f"{MARK}NodeName=localhost Name=gpu File=/dev/null\n")
        self.spawn([_which("slurmctld"), "-D", "-i"], "slurmctld.out")
        self.spawn([_which("slurmd"), "-D", "-N", "localhost"], "slurmd.out")
        self.wait(lambda: "idle" in self.run("sinfo", "-h", "-o", "%T"), "the node to be idle in sinfo", 60)

    def spawn(self, cmd, log) -> None:
        out = open(self.dir / log, "w")
        self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))

    def write(self, path: Path, text: str) -> None:
        path.write_text(text)
        self.wrote.append(path)

    def run(self, *cmd) -> str:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return proc.stdout

    def wait(self, ready, what, timeout) -> None:
        end = time.monotonic() + timeout
        while not ready():
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > end:
                logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.dir.glob("*.out")))
                raise RuntimeError(f"timed out waiting for {what} (exited: {dead})\n{logs}")
            time.sleep(0.5)

    def jobs(self) -> dict[str, dict]:
        """Every job slurmctld still knows: {job id: {field: value}} from `scontrol show job -o`."""
        jobs = {}
        for line in self.run("scontrol", "show", "job", "-o").splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            if "JobId" in fields:
                jobs[fields["JobId"]] = fields
        return jobs

    def stop(self) -> None:
        if self.procs and _which("scancel"):
            for job in self.jobs():
                subprocess.run(["scancel", job], capture_output=True, timeout=30)
        for proc in reversed(self.procs):  # slurmd, slurmctld, then munged
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, 15)
                    proc.wait(timeout=20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(proc.pid, 9)
                    except ProcessLookupError:
                        pass
                    proc.wait(timeout=20)
        for path in self.wrote:
            path.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def test_snakemake_profile_slurm_runs_the_tiny_experiment(tmp_path):
    ensure_slurm()
    root = make_project(tmp_path / "p", {"two": TINY_EXPERIMENT})
    with Cluster() as cluster:
        proc = snakemake(root, "--profile", "slurm", "all", *SIZES, timeout=400,
                         env_extra={"SLURM_CONF": str(CONF_DIR / "slurm.conf")})
        jobs = {j["Comment"]: j for j in cluster.jobs().values() if j.get("Comment", "").startswith("rule_")}

    # training and evaluation ran as Slurm jobs, each given the GPU it asked for; prepare, detect and the
    # report ran beside Snakemake (local rules), prepare and detect through the between-workflow cache
    assert proc.stdout.count("has been submitted with SLURM jobid") == 3, proc.stdout[-3000:]
    assert sorted(jobs) == ["rule_evaluate_wildcards_two", "rule_train_wildcards_two_1", "rule_train_wildcards_two_2"]
    for comment, job in jobs.items():
        assert job["JobState"] == "COMPLETED", (comment, job["JobState"])
        assert "gres:gpu:1" in job.get("TresPerJob", ""), (comment, job.get("TresPerJob"))
    for path in ("data/prepared/tiny.h5", "data/detections/tiny/synthetic.h5"):
        assert (root / path).resolve().parent == root / "output-cache", path
    train_log = (root / "logs/train/two/stage2.log").read_text()
    train_job = jobs["rule_train_wildcards_two_2"]["JobId"]
    assert train_log.startswith(f"job {train_job} on ") and "CUDA_VISIBLE_DEVICES=0" in train_log
    assert "wrote results/two/stage2" in train_log
    assert (root / "logs/evaluate/two.log").read_text().startswith(f"job {jobs['rule_evaluate_wildcards_two']['JobId']} ")

    # the outputs: both stages, the evaluation, the report
    for path in ("results/two/stage1/checkpoint.pt", "results/two/stage2/checkpoint.pt",
                 "results/two/evaluation/metrics.json", "reports/results.md"):
        assert (root / path).is_file(), path
    assert "| two | tiny | synthetic | pot-ugrn |" in (root / "reports/results.md").read_text()
    # and the cluster is gone
    assert not (CONF_DIR / "slurm.conf").exists()
