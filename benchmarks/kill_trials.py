"""Kill trials: training killed at random points, rerun, and checked against an uninterrupted run.

    python benchmarks/kill_trials.py --mode {direct,local,slurm,all} --trials 10 --seed S --workdir DIR

A tiny project (tests/workflow_project.py: the two-stage POT -> POT+UGRN experiment, here a few epochs and
batches per stage) is trained once without interruption (`snakemake --profile workflow/profiles/local
results`): the reference. Then, per trial, the training is started, killed at a point drawn from the seed,
and run again to the end:

* direct: `poselift train` stage 1 then stage 2 (the rule's command line without --keep-state), killed with
  SIGKILL; the rerun is the same commands (it resumes from last.pt);
* local:  `snakemake --profile workflow/profiles/local results`, the job's process killed with SIGKILL;
* slurm:  `snakemake --profile slurm results` on the local single-node Slurm of tests/test_slurm.py (root,
  Debian's slurmctld/slurmd/munge), the job cancelled with `scancel`.

The points: mid-epoch (before batch k of epoch e), during the validation pass, mid-checkpoint-write (a
partial or complete-but-unrenamed temporary checkpoint.pt/last.pt), between the epoch's file writes (last.pt
written, history.json not; or history.json written, the --keep-state mirror not, or half of it), after the
last epoch's mirror (before the kept state is removed), and, under Snakemake, during `poselift evaluate`.

How a point is hit: `poselift` is found first on PATH as a wrapper (DIR/bin/poselift) that installs
:func:`install_hook` and runs the real CLI. The hook records every epoch a process starts in a ledger and, at
the drawn point, writes a marker file and parks (sleeps) there; this script then kills the process (SIGKILL
or scancel) while it sits at that instruction. Parking is what makes the point exact: a kill at a random
wall-clock time would mostly land in the seconds `import torch` takes.

Checked per trial: the rerun exits 0; checkpoint.pt, last.pt and history.json of both stages (and under
Snakemake evaluation/metrics.json) equal the reference's (torch.equal on every tensor; the wall-clock fields
"seconds" and "data_share" left out); and no epoch but the interrupted one is trained twice (from the ledger: the epochs the
rerun trains that the killed run had already started). One line per trial, a summary line, exit 1 on any
failure. Not part of `make test` (30 trials take many minutes); the suite keeps its single-kill tests.

Every process imports poselift from a snapshot of src/poselift taken at the start (DIR/code, first on
PYTHONPATH), so that edits to the sources meanwhile change no code fingerprint. With --mode all the Slurm
trials run beside the others, in a copy of the project. /etc/slurm is shared with any other run of the Slurm
test on the machine: a trial during which another process changed it is run again (at most twice).
--first K runs only trials K..N of a run (the same points); --only KIND... draws only those kinds, among them
"finished" (after a stage's end, before its process exits), which is not drawn otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# --- the hook (runs inside the `poselift` processes of the trials) ---------------------------------------

POINT_ENV, MARK_ENV, LEDGER_ENV, RUN_ENV = ("POSELIFT_TRIAL_POINT", "POSELIFT_TRIAL_MARK", "POSELIFT_TRIAL_LEDGER",
                                            "POSELIFT_TRIAL_RUN")
_ctx = {"stage": 0, "epoch": 0, "batches": 0, "in_epoch": False, "outputs": 0}


def install_hook() -> None:
    """Patch the training and evaluation code of this process: ledger of epochs, and the parking point."""
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command not in ("train", "evaluate") or not os.environ.get(LEDGER_ENV):
        return
    import torch

    import poselift.io as pio
    import poselift.training.loop as loop
    from poselift.training.tasks import TASKS

    point = json.loads(os.environ[POINT_ENV]) if os.environ.get(POINT_ENV) else None
    phase = point["phase"] if point else None

    def at(stage_epoch: bool = True) -> bool:  # this process is at (or past) the point's stage and epoch
        return (point is not None and command == point["command"]
                and (not stage_epoch or (_ctx["stage"] == point["stage"] and _ctx["epoch"] >= point["epoch"])))

    train_epoch = loop._train_epoch

    def _train_epoch(*args, **kwargs):
        stage, epoch = args[4], args[5]
        _ctx.update(stage=stage.number, epoch=epoch + 1, batches=0, in_epoch=True)
        _ledger(f"start {stage.number} {epoch + 1}")
        out = train_epoch(*args, **kwargs)
        _ctx["in_epoch"] = False
        _ledger(f"trained {stage.number} {epoch + 1} {_ctx['batches']}")
        return out

    loop._train_epoch = _train_epoch

    classes = {klass for cls in TASKS.values() for klass in cls.__mro__ if klass is not object}
    for klass in classes:  # each definition wrapped once, where it is defined
        for name in ("step", "validate", "evaluate"):
            if name in klass.__dict__:
                setattr(klass, name, _wrap_task(klass.__dict__[name], name, at, phase, point))

    save = torch.save

    def torch_save(obj, f, *args, **kwargs):
        name = Path(f).name if isinstance(f, (str, os.PathLike)) else ""
        if phase == "write" and name.startswith(f".{point['file']}.") and name.endswith(".tmp") and at():
            import io

            buffer = io.BytesIO()
            save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            part = data[:max(1, int(len(data) * point["fraction"]))]
            with open(f, "wb") as fh:
                fh.write(part)
                fh.flush()
                os.fsync(fh.fileno())
            share = "complete, not yet renamed" if len(part) == len(data) else f"{len(part)}/{len(data)} bytes"
            _park(f"writing {point['file']} ({share})")
            with open(f, "wb") as fh:
                fh.write(data)
            return None
        return save(obj, f, *args, **kwargs)

    torch.save = torch_save

    write_json = pio.write_json

    def _write_json(path, *args, **kwargs):
        history = Path(path).name == "history.json"
        if phase == "history" and history and at():
            _park("last.pt written, history.json not")
        out = write_json(path, *args, **kwargs)
        if phase == "mirror" and history and at() and point.get("part") == "before":
            _park("history.json written, the kept state not")
        return out

    pio.write_json = _write_json

    link, mirror = loop._link, loop._mirror

    def _link(src, dst):
        out = link(src, dst)
        if phase == "mirror" and point.get("part") == "half" and Path(dst).name == "checkpoint.pt" and at():
            _park("kept checkpoint.pt updated, kept last.pt not")
        return out

    def _mirror(*args, **kwargs):
        out = mirror(*args, **kwargs)
        if phase == "mirrored" and at():
            _park("the epoch mirrored into the kept state")
        return out

    loop._link, loop._mirror = _link, _mirror

    train_stage = loop.train_stage

    def _train_stage(*args, **kwargs):
        out = train_stage(*args, **kwargs)
        if phase == "finished" and at() and not out.skipped:
            _park("stage finished and its kept state removed, process not yet exited")
        return out

    loop.train_stage = _train_stage

    atomic_output = pio.atomic_output
    import contextlib

    @contextlib.contextmanager
    def _atomic_output(path):
        with atomic_output(path) as tmp:
            yield tmp
        if command == "evaluate":
            _ctx["outputs"] += 1
            if phase == "evaluate" and at(False) and _ctx["outputs"] == point["outputs"]:
                _park(f"evaluation: {_ctx['outputs']} output file(s) written")

    pio.atomic_output = _atomic_output


def _wrap_task(fn, name, at, phase, point):
    def wrapped(self, *args, **kwargs):
        if name == "step" and _ctx["in_epoch"]:
            _ctx["batches"] += 1
            if phase == "batch" and at() and _ctx["batches"] == point["batch"]:
                _park(f"mid-epoch, before batch {point['batch']}")
        elif name == "validate" and phase == "validation" and at():
            _park("validation pass")
        elif name == "evaluate" and phase == "evaluate" and at(False) and point["outputs"] == 0:
            _park("evaluation: model loaded, no output written")
        return fn(self, *args, **kwargs)

    wrapped.__wrapped__ = fn
    return wrapped


def _ledger(line: str) -> None:
    with open(os.environ[LEDGER_ENV], "a") as fh:
        fh.write(f"{os.environ.get(RUN_ENV, '?')} {line}\n")


def _park(where: str) -> None:
    """Tell the trial where this process is, and wait there to be killed."""
    mark = Path(os.environ[MARK_ENV])
    if mark.exists():  # the point was taken already (by an earlier process of this run)
        return
    info = {"pid": os.getpid(), "job": os.environ.get("SLURM_JOB_ID"), "where": where,
            "stage": _ctx["stage"], "epoch": _ctx["epoch"]}
    tmp = mark.with_name(mark.name + ".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, mark)
    end = time.monotonic() + 900
    while time.monotonic() < end:
        time.sleep(0.2)
    print("kill_trials: parked for 900 s and nobody killed this process; continuing", file=sys.stderr)


# --- the trials --------------------------------------------------------------------------------------------

EPOCHS = 3  # per stage
BATCH = 32
EXPERIMENT = "two"
STAGES = (1, 2)
IGNORED = {"seconds", "data_share", "mlflow_run_id"}  # wall-clock and tracking-run fields: not part of the result


def experiment_params() -> dict:
    from workflow_project import TINY_EXPERIMENT

    stages = [dict(s, epochs=EPOCHS, batch_size=BATCH) for s in TINY_EXPERIMENT["stages"]]
    return {EXPERIMENT: {**TINY_EXPERIMENT, "stages": stages}}


KINDS = ["batch", "validation", "write", "history", "mirror", "mirrored", "evaluate"]  # the last 3: Snakemake
EXTRA = ["finished"]  # drawn only with --only: the window between a stage's end and its process's exit


def draw_points(mode: str, trials: int, rng: random.Random, batches: dict, only=None) -> list[dict]:
    """``trials`` kill points spread over the kinds (a shuffled round-robin), each placed at random."""
    kinds = KINDS[:4] if mode == "direct" else list(KINDS)
    kinds = [k for k in kinds + EXTRA if k in only] if only else kinds
    order: list[str] = []
    while len(order) < trials:
        block = list(kinds)
        rng.shuffle(block)
        order += block
    points = []
    for kind in order[:trials]:
        stage, epoch = rng.choice(STAGES), rng.randint(1, EPOCHS)
        point = {"phase": kind, "command": "train", "stage": stage, "epoch": epoch}
        if kind == "batch":
            point["batch"] = rng.randint(1, batches[stage])
        elif kind == "write":
            # checkpoint.pt is written in the epochs that improve (the first always does), last.pt every epoch
            point["file"] = rng.choice(["last.pt", "last.pt", "checkpoint.pt"])
            point["fraction"] = rng.choice([rng.uniform(0.05, 0.95), 1.0])
        elif kind == "mirror":
            point["part"] = rng.choice(["before", "half"])
        elif kind == "finished":
            point["epoch"] = EPOCHS
        elif kind == "mirrored":
            point["epoch"] = rng.choice([EPOCHS, rng.randint(1, EPOCHS)])  # the last epoch: before the clean-up
        elif kind == "evaluate":
            point = {"phase": kind, "command": "evaluate", "stage": 0, "epoch": 0, "outputs": rng.randint(0, 3)}
        points.append(point)
    return points


def describe(point: dict) -> str:
    p = point
    if p["phase"] == "evaluate":
        return f"evaluate after {p['outputs']} output(s)"
    at = f"s{p['stage']}e{p['epoch']}"
    return {"batch": f"{at} before batch {p.get('batch')}", "validation": f"{at} validation",
            "write": f"{at} write {p.get('file')} {p.get('fraction', 0):.0%}",
            "history": f"{at} before history.json", "mirror": f"{at} mirror ({p.get('part')})",
            "mirrored": f"{at} after mirror", "finished": f"{at} stage done, before exit"}[p["phase"]]


class Project:
    """The tiny project, its `poselift` wrapper and the commands of each mode."""

    def __init__(self, root: Path, hooks: Path, code: Path, source: Path | None = None):
        from workflow_project import make_project

        self.code = code
        if source is None:
            self.root = make_project(root, experiment_params())
        else:  # a copy of a project (its data prepared, its workflow metadata) for trials run beside its own
            shutil.copytree(source, root, symlinks=True)
            self.root = root
        self.hooks = hooks
        self.bin = hooks / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        wrapper = self.bin / "poselift"
        wrapper.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(HERE)!r})\n"
                           f"import kill_trials\nkill_trials.install_hook()\nfrom poselift.cli import main\n"
                           f"sys.exit(main())\n")
        wrapper.chmod(0o755)
        self.mark, self.ledger = hooks / "mark.json", hooks / "ledger.txt"
        self.slurm_conf: str | None = None
        self.abort = None  # set: the Slurm configuration was disturbed (Disturbed is raised)

    def env(self, run: str, point: dict | None) -> dict:
        from workflow_project import env

        e = env(self.root, OMP_NUM_THREADS=1, MKL_NUM_THREADS=1, PYTHONUNBUFFERED=1)
        e["PATH"] = f"{self.bin}{os.pathsep}{e['PATH']}"
        e["PYTHONPATH"] = str(self.code)  # the snapshot of poselift, before the (editable) install
        e.update({MARK_ENV: str(self.mark), LEDGER_ENV: str(self.ledger), RUN_ENV: run})
        e.pop(POINT_ENV, None)
        if point is not None:
            e[POINT_ENV] = json.dumps(point)
        if self.slurm_conf:
            e["SLURM_CONF"] = self.slurm_conf
        return e

    def snakemake_args(self, mode: str) -> list[str]:
        from workflow_project import BIN

        sizes = ["--set-threads", "train=1", "evaluate=1"]
        if mode == "local":
            return [str(BIN / "snakemake"), "--profile", "workflow/profiles/local", "results", *sizes]
        return [str(BIN / "snakemake"), "--profile", "slurm", "results", *sizes, "--set-resources",
                "train:mem_mb=2000", "evaluate:mem_mb=2000", "--slurm-init-seconds-before-status-checks", "2"]

    def train_args(self, stage: int) -> list[str]:
        """The train rule's command line (threads 1), without --keep-state: `poselift train` alone."""
        init = [] if stage == 1 else ["--init", f"1=results/{EXPERIMENT}/stage1/checkpoint.pt"]
        return [str(self.bin / "poselift"), "train", "--experiment", EXPERIMENT, "--stage", str(stage),
                "--params", "params.yaml", "--input", "prepared=data/prepared/tiny.h5",
                "--input", "detections=data/detections/tiny/synthetic.h5", *init,
                "--out", f"results/{EXPERIMENT}/stage{stage}", "--device", "cpu", "--threads", "1"]

    def reset(self) -> None:
        """Remove what a trial makes (results, logs and kept state of the experiment); the data stay."""
        for path in (f"results/{EXPERIMENT}", f"logs/train/{EXPERIMENT}", ".snakemake/poselift-state",
                     "logs/evaluate"):
            shutil.rmtree(self.root / path, ignore_errors=True)
        for path in (self.mark, self.ledger):
            path.unlink(missing_ok=True)

    def ledger_lines(self) -> list[tuple]:
        if not self.ledger.exists():
            return []
        return [tuple(line.split()) for line in self.ledger.read_text().splitlines() if line.strip()]


class Disturbed(Exception):
    """The shared /etc/slurm/slurm.conf was changed by another process (another Slurm test) mid-trial."""


def wait(proc: subprocess.Popen, project: "Project", end: float, ready=lambda: False) -> None:
    """Until ``proc`` exits or ``ready()``; Disturbed or TimeoutError instead of waiting forever."""
    while proc.poll() is None and not ready():
        if project.abort is not None and project.abort.is_set():
            raise Disturbed()
        if time.monotonic() > end:
            raise TimeoutError(f"{' '.join(map(str, proc.args[:4]))} ... did not end in time")
        time.sleep(0.05)


def run_logged(cmd, project: "Project", env, log: Path, timeout: float) -> int:
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=project.root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            wait(proc, project, time.monotonic() + timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode


def complete_run(project: Project, mode: str, run: str, log: Path, timeout: float = 900) -> int:
    """Run the mode's training (and evaluation) to the end; the exit status."""
    env = project.env(run, None)
    if mode == "direct":
        for stage in STAGES:
            code = run_logged(project.train_args(stage), project, env, log, timeout)
            if code != 0:
                return code
        return 0
    return run_logged(project.snakemake_args(mode), project, env, log, timeout)


def killed_run(project: Project, mode: str, point: dict, log: Path, timeout: float = 900) -> dict:
    """Start the mode's run with the point armed, wait until a process parks there, kill it (SIGKILL, or
    scancel under Slurm), wait for the run to end. The marker's info, or {} when no process parked."""
    env = project.env("killed", point)
    commands = [project.train_args(s) for s in STAGES] if mode == "direct" else [project.snakemake_args(mode)]
    end = time.monotonic() + timeout
    with open(log, "a") as out:
        for cmd in commands:
            out.write(f"\n$ {' '.join(cmd)}   # {POINT_ENV}={json.dumps(point)}\n")
            out.flush()
            proc = subprocess.Popen(cmd, cwd=project.root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                wait(proc, project, end, project.mark.exists)
                if project.mark.exists():
                    info = json.loads(project.mark.read_text())
                    info["left"] = leftovers(project)
                    if mode == "slurm":
                        subprocess.run(["scancel", info["job"]], check=True, timeout=60)
                    else:
                        os.kill(info["pid"], signal.SIGKILL)
                    wait(proc, project, end)
                    info["driver_rc"] = proc.returncode
                    return info
                if proc.returncode != 0:
                    raise RuntimeError(f"{cmd[1]} exited {proc.returncode} before the point (see {log})")
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    return {}


def leftovers(project: Project) -> str:
    """The temporary files in the stage folders at the moment of the kill (a write cut short)."""
    found = []
    for stage in STAGES:
        for tmp in sorted((project.root / "results" / EXPERIMENT / f"stage{stage}").glob(".*.tmp")):
            found.append(f"{'.'.join(tmp.name.split('.')[1:3])} tmp {tmp.stat().st_size} B")
    return ", ".join(found)


def epochs_of(lines, run: str) -> list[tuple[int, int]]:
    return [(int(s), int(e)) for r, what, s, e, *_ in lines if r == run and what == "start"]


# --- comparison ---------------------------------------------------------------------------------------------

def result_files(mode: str) -> list[str]:
    files = [f"results/{EXPERIMENT}/stage{s}/{name}" for s in STAGES
             for name in ("checkpoint.pt", "last.pt", "history.json")]
    if mode != "direct":
        files.append(f"results/{EXPERIMENT}/evaluation/metrics.json")
    return files


def load(path: Path):
    if path.suffix == ".json":
        return json.loads(path.read_text())
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def differences(a, b, where: str = "") -> list[str]:
    """Where ``a`` and ``b`` differ (tensors by torch.equal; keys in IGNORED left out)."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [where or "tensor"]
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if key in IGNORED:
                continue
            if key not in a or key not in b:
                out.append(f"{where}.{key} (missing on one side)")
            else:
                out += differences(a[key], b[key], f"{where}.{key}")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where} (length {len(a)} != {len(b)})"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:  # both NaN
        return []
    return [] if a == b else [f"{where} ({a!r} != {b!r})"]


def compare(project: Project, reference: Path, mode: str) -> list[str]:
    problems = []
    for rel in result_files(mode):
        path = project.root / rel
        if not path.is_file():
            problems.append(f"{rel} missing")
            continue
        problems += [f"{rel}{d}" for d in differences(load(reference / rel), load(path))]
    return problems


# --- main ---------------------------------------------------------------------------------------------------

def make_reference(project: Project, workdir: Path) -> tuple[Path, dict]:
    """The uninterrupted run (local profile; it also prepares the data every mode uses); its files and the
    number of batches per epoch of each stage."""
    log = workdir / "reference.log"
    project.reset()
    start = time.monotonic()
    if complete_run(project, "local", "reference", log) != 0:
        raise SystemExit(f"the reference run failed: see {log}")
    reference = workdir / "reference"
    shutil.rmtree(reference, ignore_errors=True)
    for rel in result_files("local"):
        (reference / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project.root / rel, reference / rel)
    batches = {int(s): int(n) for r, what, s, e, n in (l for l in project.ledger_lines() if l[1] == "trained")}
    print(f"reference: {len(project.ledger_lines()) // 2} epochs, batches per epoch {batches}, "
          f"{time.monotonic() - start:.0f} s", flush=True)
    return reference, batches


def trial(project: Project, reference: Path, mode: str, number: int, point: dict, log: Path) -> bool:
    project.reset()
    with open(log, "a") as out:
        out.write(f"\n===== {mode} trial {number}: {describe(point)}\n")
    start = time.monotonic()
    info = killed_run(project, mode, point, log)
    lines = project.ledger_lines()
    before = epochs_of(lines, "killed")
    if not info:
        print(f"{mode:6} {number:2}  {describe(point):34} NOT REACHED (the run ended first)  FAIL", flush=True)
        return False
    rc = complete_run(project, mode, "rerun", log)
    after = epochs_of(project.ledger_lines(), "rerun")
    repeated = sorted(set(before) & set(after))
    interrupted = [max(before)] if before else []
    total = len(STAGES) * EPOCHS
    problems = [] if rc == 0 else [f"the rerun exited {rc} (see {log})"]
    if rc == 0:
        problems += compare(project, reference, mode)
    if len(repeated) > 1 or any(r not in interrupted for r in repeated):
        problems.append(f"repeated epochs {repeated} (interrupted: {interrupted})")
    if sorted(set(before) | set(after)) != [(s, e) for s in STAGES for e in range(1, EPOCHS + 1)]:
        problems.append(f"epochs trained: killed run {before}, rerun {after}")
    landed = info["where"] + (f" s{info['stage']}e{info['epoch']}" if info["stage"] else "")
    if info.get("left"):
        landed += f" [{info['left']}]"
    status = "PASS" if not problems else "FAIL"
    print(f"{mode:6} {number:2}  {describe(point):34} landed: {landed:70} rerun {len(after)} epochs "
          f"(remaining {total - len(before) + bool(before)}, repeated {len(repeated)})  "
          f"{time.monotonic() - start:4.0f} s  {status}", flush=True)
    for problem in problems[:8]:
        print(f"          {problem}", flush=True)
    with open(log, "a") as out:
        out.write(f"===== {status}: landed {landed}; rerun {after}; killed run {before}; {problems}\n")
    return not problems


def run_trial(project, reference, mode, number, point, log, cluster=None) -> bool:
    """One trial; under Slurm again (at most twice more) when another process changed /etc/slurm meanwhile."""
    for attempt in range(3):
        if project.abort is not None:
            project.abort.clear()
        try:
            return trial(project, reference, mode, number, point, log)
        except Disturbed:
            print(f"{mode:6} {number:2}  {describe(point):34} /etc/slurm/slurm.conf was changed by another "
                  f"process during the trial: again", flush=True)
            for job in cluster.jobs() if cluster is not None else ():
                subprocess.run(["scancel", job], capture_output=True, timeout=60)
            time.sleep(5)
            # the killed snakemake left its lock
            subprocess.run([*project.snakemake_args(mode), "--unlock"], cwd=project.root, env=project.env("x", None),
                           capture_output=True, timeout=300)
    return False


def slurm_cluster():
    """tests/test_slurm.py's Cluster (a context manager) whose slurm.conf and gres.conf are guarded, or the
    reason there is none. The guard: /etc/slurm is shared with every other run of the Slurm test on this
    machine; when another process changed or removed our files, the trial in progress is run again, and a
    removed file is written back."""
    try:
        import threading

        from test_slurm import CONF_DIR, Cluster, ensure_slurm

        ensure_slurm()

        class Guarded(Cluster):
            def __init__(self):
                super().__init__()
                self.texts, self.disturbed, self.done = {}, threading.Event(), threading.Event()

            def write(self, path, text):
                super().write(path, text)
                self.texts[path] = text

            def start(self):
                super().start()
                threading.Thread(target=self.guard, daemon=True).start()

            def guard(self):
                while not self.done.wait(0.5):
                    for path, text in self.texts.items():
                        try:
                            now = path.read_text()
                        except FileNotFoundError:
                            now = None
                        if now != text:
                            self.disturbed.set()
                            if now is None:
                                path.write_text(text)

            def stop(self):
                self.done.set()
                super().stop()

        return Guarded(), str(CONF_DIR / "slurm.conf")
    except BaseException as e:  # pytest.skip raises a BaseException (Skipped)
        if type(e).__name__ in ("Skipped", "ImportError", "ModuleNotFoundError"):
            return None, str(e)
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("direct", "local", "slurm", "all"), default="all")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("kill-trials"))
    parser.add_argument("--first", type=int, default=1,
                        help="run trials FIRST..TRIALS only (the same points as a whole run with this seed)")
    parser.add_argument("--only", nargs="+", choices=KINDS + EXTRA, help="draw only these kinds of point (debugging)")
    args = parser.parse_args(argv)
    sys.path[:0] = [str(REPO / "tests")]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    workdir = args.workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    started = time.monotonic()
    # Every process of the trials imports poselift from a snapshot taken now: the code fingerprints in the
    # train rule's params then stay the same while the repository's sources are being edited (a changed
    # fingerprint reruns every job, and rightly discards the kept training state).
    code = workdir / "code"
    shutil.copytree(REPO / "src" / "poselift", code / "poselift", ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(code))
    project = Project(workdir / "project", workdir / "hooks", code)
    reference, batches = make_reference(project, workdir)
    modes = ["direct", "local", "slurm"] if args.mode == "all" else [args.mode]
    results: dict[str, tuple[int, int] | str] = {}
    runner = None
    if args.mode == "all":  # the Slurm trials (mostly waiting for job status) beside the others, in a copy
        import threading

        twin = Project(workdir / "project-slurm", workdir / "hooks-slurm", code, source=project.root)
        runner = threading.Thread(target=run_modes, args=(["slurm"], twin, reference, batches, args, workdir,
                                                          results))
        runner.start()
        modes = ["direct", "local"]
    run_modes(modes, project, reference, batches, args, workdir, results)
    if runner is not None:
        runner.join()
    results = {m: results[m] for m in ("direct", "local", "slurm") if m in results}
    summary = ", ".join(f"{m} {r[0]}/{r[1]}" if isinstance(r, tuple) else f"{m} {r}" for m, r in results.items())
    print(f"{summary}  ({time.monotonic() - started:.0f} s; logs in {workdir})", flush=True)
    ok = all(isinstance(results.get(m), tuple) and results[m][0] == results[m][1]
             for m in (["direct", "local", "slurm"] if args.mode == "all" else [args.mode]))
    return 0 if ok else 1


def run_modes(modes, project, reference, batches, args, workdir, results) -> None:
    try:
        _run_modes(modes, project, reference, batches, args, workdir, results)
    except Exception as e:  # a mode that could not run to the end counts as failed
        print(f"{', '.join(modes)}: stopped by {type(e).__name__}: {e}", flush=True)


def _run_modes(modes, project, reference, batches, args, workdir, results) -> None:
    for mode in modes:
        rng = random.Random(f"{args.seed}-{mode}")
        points = draw_points(mode, args.trials, rng, batches, args.only)
        numbered = list(enumerate(points))[args.first - 1:]
        log = workdir / f"{mode}.log"
        if mode == "slurm":
            cluster, conf = slurm_cluster()
            if cluster is None:
                print(f"slurm: skipped, no local Slurm ({conf})", flush=True)
                results[mode] = "skipped"
                continue
            project.slurm_conf, project.abort = conf, cluster.disturbed
            with cluster:
                passed = sum(run_trial(project, reference, mode, i + 1, p, log, cluster) for i, p in numbered)
            project.slurm_conf, project.abort = None, None
        else:
            passed = sum(trial(project, reference, mode, i + 1, p, log) for i, p in numbered)
        results[mode] = (passed, len(numbered))


if __name__ == "__main__":
    sys.exit(main())
