"""The detection cache of ``poselift detect`` (poselift.detection.cache): a second run of a network detector
with the same checkpoint, crops, prepared file, options and code, into another folder, copies the stored
files (byte-identical, no network run); a changed weight or flag is a miss; ``--no-cache`` neither reads
nor writes it; a damaged entry is ignored and replaced; a cache that cannot be written costs one warning;
the location falls back from --cache to $POSELIFT_CACHE, $SNAKEMAKE_OUTPUT_CACHE/poselift, ~/.cache/poselift."""

from __future__ import annotations

from pathlib import Path

import pytest

from poselift.data.prepared import content_hash
from test_detect_network import CAMERAS, CROP, SEQUENCES, write_crops
from test_heatmap_task import toy_prepared

TINY = {"width": 4, "stage_modules": [1, 1, 1], "blocks": 1, "stage1_blocks": 1, "stem_width": 8}


@pytest.fixture(autouse=True)
def no_user_cache(tmp_path, monkeypatch):
    """No test reads or writes the user's cache: the default location is a folder of the test's own."""
    monkeypatch.setenv("POSELIFT_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.delenv("SNAKEMAKE_OUTPUT_CACHE", raising=False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A prepared file, its crops and an untrained tiny HRNet's checkpoint (its weights are all the cache
    needs: the outputs are compared with a run's, not with the truth)."""
    import torch

    from poselift.detection.hrnet import HRNet
    from poselift.training.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("detect-cache")
    prepared = toy_prepared(root / "toy.h5", SEQUENCES, CAMERAS)
    crops = root / "crops.h5"
    write_crops(crops, content_hash(prepared))
    torch.manual_seed(0)
    checkpoint = root / "hrnet.pt"
    save_checkpoint(checkpoint, {"model": "hrnet", "args": TINY, "state_dict": HRNet(**TINY).state_dict(),
                                 "task": "heatmaps", "input_size": list(CROP)})
    return {"root": root, "prepared": prepared, "crops": crops, "checkpoint": checkpoint}


def detect(run_cli, inputs, out, *extra, checkpoint=None):
    return run_cli("detect", "--detector", "hrnet", "--checkpoint", checkpoint or inputs["checkpoint"], "--images",
                   inputs["crops"], "--prepared", inputs["prepared"], "--out", out, "--device", "cpu", *extra)


def entries(cache: Path) -> list[str]:
    folder = cache / "detections"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def no_network(monkeypatch):
    """Any network pass from now on fails the test."""
    from poselift.detection.network import NetworkDetector

    def fail(*args, **kwargs):
        raise AssertionError("the network ran on a cache hit")

    monkeypatch.setattr(NetworkDetector, "detect_view", fail)


def test_a_second_run_into_another_folder_is_a_hit_with_the_same_bytes(tmp_path, run_cli, inputs, monkeypatch):
    cache = tmp_path / "cache"
    first = [tmp_path / "a" / "det.h5", tmp_path / "a" / "features.h5"]
    code, stdout, err = detect(run_cli, inputs, first[0], "--features", first[1], "--cache", cache)
    assert code == 0, err
    assert "cache hit" not in stdout and f"({cache})" in stdout.splitlines()[-1]
    [key] = entries(cache)
    assert sorted(p.name for p in (cache / "detections" / key).iterdir()) == [
        "detections.h5", "features.h5", "manifest.json"]

    fresh = [tmp_path / "fresh" / "det.h5", tmp_path / "fresh" / "features.h5"]  # a run writes the same bytes
    code, stdout, err = detect(run_cli, inputs, fresh[0], "--features", fresh[1], "--no-cache")
    assert code == 0, err
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, fresh))

    no_network(monkeypatch)
    second = [tmp_path / "b" / "det.h5", tmp_path / "b" / "features.h5"]
    code, stdout, err = detect(run_cli, inputs, second[0], "--features", second[1], "--cache", cache)
    assert code == 0, err
    assert stdout.splitlines()[0] == f"poselift detect: cache hit {key[:12]} ({cache})"
    assert f"wrote {second[0]}: hrnet detections for 4 sequences" in stdout
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second))
    assert {p.name for p in second[0].parent.iterdir()} == {"det.h5", "features.h5"}  # no temporary left
    assert second[0].stat().st_ino != (cache / "detections" / key / "detections.h5").stat().st_ino  # a copy
    assert entries(cache) == [key]


def test_a_changed_weight_or_flag_is_a_miss(tmp_path, run_cli, inputs):
    from poselift.training.checkpoint import read_checkpoint, save_checkpoint

    cache = tmp_path / "cache"
    checkpoint = tmp_path / "hrnet.pt"  # a copy: the same bytes, at a path of this test's own
    checkpoint.write_bytes(inputs["checkpoint"].read_bytes())

    def run(name, *extra) -> str:
        code, stdout, err = detect(run_cli, inputs, tmp_path / f"{name}.h5", *extra, "--cache", cache,
                                   checkpoint=checkpoint)
        assert code == 0, err
        return stdout

    assert "cache hit" not in run("first")
    assert run("again").startswith("poselift detect: cache hit")
    flags = {"flip": ("--no-flip-test",), "nchw": ("--no-channels-last",), "batch": ("--batch-size", "7"),
             "features": ("--features", tmp_path / "f.h5")}
    for n, (name, extra) in enumerate(flags.items(), 2):
        assert "cache hit" not in run(name, *extra), name
        assert len(entries(cache)) == n
    ckpt = read_checkpoint(checkpoint)
    weight = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    state = {k: v.clone() for k, v in ckpt["state_dict"].items()}
    state[weight].view(-1)[0] += 0.5  # one weight, the file rewritten in place
    save_checkpoint(checkpoint, {**ckpt, "state_dict": state})
    assert "cache hit" not in run("weight")
    assert len(entries(cache)) == len(flags) + 2


def test_no_cache_neither_reads_nor_writes(tmp_path, run_cli, inputs, monkeypatch):
    from poselift.detection.cache import DetectionCache

    env_cache = tmp_path / "env-cache"
    code, stdout, err = detect(run_cli, inputs, tmp_path / "d.h5", "--no-cache")
    assert code == 0, err
    assert not env_cache.exists() and "poselift detect:" not in stdout
    assert detect(run_cli, inputs, tmp_path / "e.h5")[0] == 0  # the default location: $POSELIFT_CACHE
    assert len(entries(env_cache)) == 1

    def fail(*args, **kwargs):
        raise AssertionError("--no-cache used the cache")

    monkeypatch.setattr(DetectionCache, "fetch", fail)
    monkeypatch.setattr(DetectionCache, "store", fail)
    code, stdout, err = detect(run_cli, inputs, tmp_path / "f.h5", "--no-cache")
    assert code == 0, err
    assert (tmp_path / "f.h5").read_bytes() == (tmp_path / "d.h5").read_bytes()
    code, _, err = detect(run_cli, inputs, tmp_path / "g.h5", "--no-cache", "--cache", tmp_path / "c")
    assert code == 2 and "--cache: and --no-cache: give one of them" in err and len(err.strip().splitlines()) == 1
    # not a network detector: the cache is not theirs
    code, _, err = run_cli("detect", "--detector", "gt", "--prepared", inputs["prepared"], "--out", tmp_path / "gt.h5")
    assert code == 0, err
    code, _, err = run_cli("detect", "--detector", "gt", "--prepared", inputs["prepared"], "--out",
                           tmp_path / "gt2.h5", "--cache", tmp_path / "c")
    assert code == 2 and "only network detectors use the detection cache, not 'gt'" in err
    assert len(entries(env_cache)) == 1 and not (tmp_path / "c").exists()


@pytest.mark.parametrize("damage", ["truncated", "features truncated", "no manifest", "bad manifest"])
def test_a_damaged_entry_is_ignored_and_replaced(tmp_path, run_cli, inputs, damage):
    cache = tmp_path / "cache"
    ref = [tmp_path / "ref.h5", tmp_path / "ref-f.h5"]
    assert detect(run_cli, inputs, ref[0], "--features", ref[1], "--cache", cache)[0] == 0
    [key] = entries(cache)
    entry = cache / "detections" / key
    target = {"truncated": "detections.h5", "features truncated": "features.h5", "no manifest": "manifest.json",
              "bad manifest": "manifest.json"}[damage]
    if damage == "no manifest":
        (entry / target).unlink()
    else:
        data = (entry / target).read_bytes()
        (entry / target).write_bytes(data[: len(data) // 2])
    out = [tmp_path / "out" / "det.h5", tmp_path / "out" / "f.h5"]
    code, stdout, err = detect(run_cli, inputs, out[0], "--features", out[1], "--cache", cache)
    assert code == 0, err
    assert "cache hit" not in stdout and f"poselift detect: cached {key[:12]}" in stdout
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(ref, out))
    assert entries(cache) == [key]  # replaced, and the damaged one's trash removed
    again = [tmp_path / "again" / "det.h5", tmp_path / "again" / "f.h5"]
    code, stdout, err = detect(run_cli, inputs, again[0], "--features", again[1], "--cache", cache)
    assert stdout.startswith("poselift detect: cache hit") and all(
        a.read_bytes() == b.read_bytes() for a, b in zip(ref, again))


def test_a_cache_that_cannot_be_written_is_one_warning(tmp_path, run_cli, inputs):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    code, stdout, err = detect(run_cli, inputs, tmp_path / "d.h5", "--cache", blocked / "cache")
    assert code == 0, err
    assert err.strip().startswith("poselift: warning: detections not cached in ") and len(err.strip().splitlines()) == 1
    assert f"wrote {tmp_path / 'd.h5'}" in stdout and blocked.read_text() == "not a folder"


def test_the_location_falls_back_as_documented(tmp_path, monkeypatch):
    from poselift.detection.cache import default_dir

    assert default_dir({"POSELIFT_CACHE": "/p", "SNAKEMAKE_OUTPUT_CACHE": "/s"}) == Path("/p")
    assert default_dir({"POSELIFT_CACHE": "", "SNAKEMAKE_OUTPUT_CACHE": "/s"}) == Path("/s/poselift")
    assert default_dir({"SNAKEMAKE_OUTPUT_CACHE": "s3://bucket/c", "XDG_CACHE_HOME": "/x"}) == Path("/x/poselift")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_dir({}) == tmp_path / "home" / ".cache" / "poselift"
    assert default_dir({"SNAKEMAKE_OUTPUT_CACHE": "s3://bucket/c"}) == tmp_path / "home" / ".cache" / "poselift"


def test_the_workflow_jobs_use_the_snakemake_cache_folder(tmp_path, run_cli, inputs, monkeypatch):
    """With $SNAKEMAKE_OUTPUT_CACHE set (as the Snakefile sets it for its jobs) and no $POSELIFT_CACHE, the
    entries go to its poselift folder; the workflow tests' environment sets it to a project-local folder."""
    from workflow_project import env

    monkeypatch.delenv("POSELIFT_CACHE")
    monkeypatch.setenv("SNAKEMAKE_OUTPUT_CACHE", str(tmp_path / "smk"))
    code, stdout, err = detect(run_cli, inputs, tmp_path / "d.h5")
    assert code == 0, err
    assert len(entries(tmp_path / "smk" / "poselift")) == 1 and f"({tmp_path / 'smk' / 'poselift'})" in stdout
    assert env(tmp_path / "project")["SNAKEMAKE_OUTPUT_CACHE"] == str(tmp_path / "project" / "output-cache")
