"""Training past one process (poselift.training.distributed and the loop's DistributedDataParallel path):
`poselift train` under `torchrun --nproc_per_node 2` on the CPU (gloo), a tiny POT on the tiny prepared dataset
of test_train.py. The same stage (its batch_size is the global batch) gives the same weights as one process,
only rank 0 writes files, and a killed rank ends the job with an error instead of a hang."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from poselift.data.windows import Batches
from poselift.errors import InputError
from poselift.experiments import parse_experiment
from poselift.training.sampling import batch_count
from poselift.workflow import Workflow, slurm_partitions
from test_train import make_prepared

BIN = Path(sys.executable).parent
# 480 training windows in batches of 53: every batch splits 27/26 over two ranks, the last (3) 2/1
STAGE = {"name": "pot", "model": "pot-tiny", "epochs": 2, "batch_size": 53, "lr": 3e-3,
         "losses": {"pot_stage1": 1.0}, "seed": 3, "validation_frames": 100}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("data") / "toy.h5")


def write_params(path: Path, **stage) -> Path:
    params = {"datasets": {"toy": {"reader": "h36m"}},
              "models": {"pot-tiny": {"class": "pot", "dim": 12, "heads": 2, "depth": 1, "dropout": 0.0}},
              "experiments": {"x": {"dataset": "toy", "detector": "prepared", "stages": [{**STAGE, **stage}]}}}
    path.write_text(yaml.safe_dump(params))
    return path


def train_args(params: Path, prepared: Path, out: str, *extra) -> list[str]:
    return ["train", "--params", str(params), "--experiment", "x", "--stage", "1", "--prepared", str(prepared),
            "--out", out, "--device", "cpu", "--threads", "1", *extra]


def torchrun(*args: str) -> list[str]:
    return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", *args]


def env() -> dict:
    e = {k: v for k, v in os.environ.items()
         if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "CUDA_VISIBLE_DEVICES")
         and not k.startswith("SLURM_")}
    return {**e, "PATH": f"{BIN}{os.pathsep}{e.get('PATH', '')}", "OMP_NUM_THREADS": "1",
            "MLFLOW_TRACKING_URI": "off"}


def test_two_ranks_train_the_weights_of_one_process_and_only_rank_0_writes(tmp_path, run_cli, prepared):
    params = write_params(tmp_path / "params.yaml")
    code, _, err = run_cli(*train_args(params, prepared, str(tmp_path / "one")), "--tracking-uri", "off")
    assert code == 0, err
    # each rank runs in its own folder with a relative --out and --keep-state: a file any rank but 0 wrote
    # would land in rank1/
    for r in (0, 1):
        (tmp_path / f"rank{r}").mkdir()
    proc = subprocess.run(torchrun("--no-python", "sh", "-c", 'cd "rank$RANK" && exec "$0" -m poselift "$@"',
                                   sys.executable, *train_args(params, prepared, "stage1", "--keep-state", "kept",
                                                               "--tracking-uri", "off")),
                          cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:]

    assert sorted(p.name for p in (tmp_path / "rank1").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "rank0" / "stage1").iterdir()) == ["checkpoint.pt", "history.json",
                                                                                "last.pt"]
    assert not (tmp_path / "rank0" / "kept").exists()  # rank 0 mirrored the state and removed it at the end
    assert proc.stdout.count("epoch 2/2") == 1  # one log, rank 0's

    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    two = torch.load(tmp_path / "rank0" / "stage1" / "last.pt", weights_only=True)
    for key in ("loss", "val_mpjpe"):
        np.testing.assert_allclose([h[key] for h in two["history"]], [h[key] for h in one["history"]], rtol=1e-6)
    # the gradients agree (Adam's first moments) ...
    m1, m2 = one["training"]["optimizer"]["state"], two["training"]["optimizer"]["state"]
    for i in m1:
        torch.testing.assert_close(m2[i]["exp_avg"], m1[i]["exp_avg"], atol=1e-6, rtol=1e-4)
    # ... and so do the weights: to float rounding, but where a gradient is ~0 and Adam's m / sqrt(v) amplifies
    # it (there up to a fraction of one lr-sized step)
    diffs = torch.cat([(two["state_dict"][k] - v).abs().flatten() for k, v in one["state_dict"].items()])
    assert float(diffs.median()) < 1e-6 and float(diffs.max()) < STAGE["lr"]
    assert len(two["training"]["rng_ranks"]) == 2  # each rank's random state, for resuming


def _children(pid: int) -> dict[int, int]:
    """{rank: pid} of the worker processes torchrun ``pid`` started."""
    ranks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                environ = (stat.parent / "environ").read_bytes().split(b"\0")
                rank = next(int(v[5:]) for v in environ if v.startswith(b"RANK="))
                ranks[rank] = int(stat.parent.name)
        except (OSError, StopIteration, ValueError, IndexError):
            continue
    return ranks


def test_a_killed_rank_ends_the_job_with_an_error_and_a_rerun_resumes_on_every_rank(tmp_path, prepared):
    params = write_params(tmp_path / "params.yaml", epochs=500)
    # --processes 2: poselift replaces itself by torchrun (same pid), whose children are the two ranks
    proc = subprocess.Popen([sys.executable, "-m", "poselift", *train_args(params, prepared, "stage1", "--processes",
                                                                           "2", "--tracking-uri", "off")],
                            cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while not (tmp_path / "stage1" / "history.json").is_file():  # training is under way
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-4000:]
            time.sleep(0.1)
        ranks = _children(proc.pid)
        assert sorted(ranks) == [0, 1]
        os.kill(ranks[1], signal.SIGKILL)
        killed = time.time()
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert time.time() - killed < 60  # torchrun stopped rank 0 instead of leaving it waiting for rank 1
    assert "rank      : 1" in out and "SIGKILL" in out, out[-4000:]
    assert not any(Path(f"/proc/{pid}").exists() for pid in ranks.values())
    assert "epoch 500/500" not in out

    # started again (one epoch more than were done), both ranks resume from rank 0's last.pt
    done = len(json.loads((tmp_path / "stage1" / "history.json").read_text())["epochs"])
    write_params(params, epochs=done + 1)
    again = subprocess.run([sys.executable, "-m", "poselift", *train_args(params, prepared, "stage1", "--processes",
                                                                          "2", "--tracking-uri", "off")],
                           cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stdout[-4000:]
    assert f"resuming after epoch {done}" in again.stdout and f"epoch {done + 1}/{done + 1}" in again.stdout
    history = json.loads((tmp_path / "stage1" / "history.json").read_text())["epochs"]
    assert [h["epoch"] for h in history] == list(range(1, done + 2))


# --- each rank's part of a batch --------------------------------------------------------------------------

@pytest.mark.parametrize("flip", [None, "random", "both"])
def test_the_ranks_parts_of_every_batch_make_the_one_process_batches(flip):
    """Union over ranks = the one-process batch set: same windows, same flips, same number of batches on every
    rank (a last batch smaller than the world is dropped rather than leaving a rank without samples)."""
    class Fake(Batches):  # the sample ids and flips of a batch, without gathering poses
        def batch(self, sel, flips=None):
            return list(zip(np.asarray(sel).tolist(), np.asarray(flips).tolist()))

    windows = range(43)  # 43 windows (86 samples with "both") in batches of 8: a partial last batch
    batches = {world: [] for world in (1, 3)}
    for world in (1, 3):
        for rank in range(world):
            b = Fake(None, windows, batch_size=8, seed=5, flip=flip)
            b.rank, b.world, b.epoch = rank, world, 2
            parts = list(b)
            assert len(parts) == len(b)
            batches[world].append(parts)
    one, three = batches[1][0], batches[3]
    assert len({len(parts) for parts in three}) == 1  # every rank steps as often
    for i, whole in enumerate(one):
        assert sorted(sum((parts[i] for parts in three), [])) == sorted(whole)
        assert max(len(parts[i]) for parts in three) - min(len(parts[i]) for parts in three) <= 1
    # a last batch of fewer samples than ranks is dropped: 41 = 5 x 8 + 1 over 3 ranks
    assert (batch_count(41, 8, world=1), batch_count(41, 8, world=3), batch_count(43, 8, world=3)) == (6, 5, 6)


# --- what a stage's job asks Slurm for ---------------------------------------------------------------------

def _params(**stage):
    return {"datasets": {"small": {"reader": "bandai", "subset": "cpu"}, "big": {"reader": "h36m", "source": "x"}},
            "models": {"pot-tiny": {"class": "pot", "dim": 12, "heads": 2, "depth": 1}},
            "experiments": {name: {"dataset": name, "detector": "prepared", "stages": [{**STAGE, **stage}]}
                            for name in ("small", "big")}}


def test_stage_resources_default_to_the_experiments_size_and_are_not_a_training_setting():
    small, big = (parse_experiment(_params(), name).stage(1) for name in ("small", "big"))
    assert small.resources == {"gpus": 1, "cpus": 1, "mem_gb": 8, "hours": 2}
    assert big.resources == {"gpus": 1, "cpus": 4, "mem_gb": 32, "hours": 24}  # what every job asked before
    four = parse_experiment(_params(resources={"gpus": 4, "hours": 1.5}), "big").stage(1)
    assert four.resources == {"gpus": 4, "cpus": 4, "mem_gb": 32, "hours": 1.5}
    assert four.config() == big.config() and "resources" not in four.config()  # no retraining, last.pt resumes
    wf = Workflow(_params(resources={"gpus": 4, "hours": 1.5}))
    assert wf.train_resources("big", 1) == {"gpu": 4, "cpus": 4, "mem_mb": 32000, "runtime": 90}
    assert wf.evaluate_resources("big") == {"gpu": 1, "cpus": 4, "mem_mb": 32000, "runtime": 90}


@pytest.mark.parametrize("resources, message", [
    ({"gpu": 4}, "stages[1].resources.gpu: unknown key; did you mean 'gpus'? (known: cpus, gpus, hours, mem_gb)"),
    ({"gpus": -1}, "stages[1].resources.gpus: must be >= 0, got -1"),
    ({"mem_gb": "lots"}, "stages[1].resources.mem_gb: expected a finite number, got 'lots'"),
    ([4], "stages[1].resources: expected a mapping, got list"),
])
def test_resource_mistakes_are_one_line_errors_naming_the_key(resources, message):
    with pytest.raises(InputError) as e:
        parse_experiment(_params(resources=resources), "big", "my-params.yaml")
    assert str(e.value) == f"my-params.yaml: experiments.big.{message}"


def test_a_job_no_partition_can_run_is_reported():
    sinfo = "gpu*|32|256000|gpu:a100:4(S:0-1)|2-00:00:00\ngpu*|64+|512000|gpu:a100:2|2-00:00:00\ncpu|128|1000000|(null)|infinite\n"
    partitions = slurm_partitions(lambda *a, **k: subprocess.CompletedProcess(a, 0, sinfo, ""))
    assert partitions == {"gpu": {"gpu": 4, "cpus": 64, "mem_mb": 512000, "runtime": 2880},
                          "cpu": {"gpu": 0, "cpus": 128, "mem_mb": 1000000, "runtime": None}}
    wf = Workflow(_params(resources={"gpus": 4, "cpus": 32, "mem_gb": 64, "hours": 24}), "my-params.yaml")
    wf.missing_data = lambda name: []  # both experiments' data can be made
    assert wf.unschedulable(partitions) == []
    for too_much in ({"gpus": 8}, {"hours": 49}, {"mem_gb": 600}):
        wf = Workflow(_params(resources={"gpus": 4, "cpus": 32, "mem_gb": 64, "hours": 24, **too_much}))
        wf.missing_data = lambda name: []
        lines = wf.unschedulable(partitions)
        assert len(lines) == 2 and "Slurm can never schedule train small stage 1" in lines[0], lines
        assert "experiments.big.stages[1].resources" in lines[1]
    assert wf.unschedulable({}) == []  # no Slurm here: nothing to compare with
    assert slurm_partitions(lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError("sinfo"))) == {}
