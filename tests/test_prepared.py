"""The prepared-dataset and detections layouts: round trips, validation, content hash, atomic writes."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from poselift.camera import Camera
from poselift.data.detections import Detections, load_detections, write_detections
from poselift.data.prepared import (PreparedDataset, Sequence, content_hash, load_prepared, subsample,
                                   write_prepared)
from poselift.errors import InputError
from poselift.io import atomic_output


def make_dataset(frames=20, seed=0) -> PreparedDataset:
    rng = np.random.default_rng(seed)
    cam = Camera(R=np.eye(3), T=[0, 0, -5000], f=[1145, 1144], c=[512, 515], width=1000, height=1002, name="c0")
    seqs = []
    for subject, split in (("S1", "train"), ("S2", "validation"), ("S9", "test")):
        p3 = rng.normal(0, 300, (frames, 17, 3)).astype(np.float32)
        p2 = cam.world_to_pixels(p3)[None].astype(np.float32)
        seqs.append(Sequence(subject=subject, name="Walk 1", action="Walk", split=split, rig="rig0",
                             cameras=["c0"], positions_3d=p3, positions_2d=p2))
    return PreparedDataset(dataset="toy", fps=50.0, rigs={"rig0": {"c0": cam}}, sequences=seqs, protocol="toy-P1")


def test_round_trip_keeps_everything(tmp_path):
    data = make_dataset()
    write_prepared(tmp_path / "d.h5", data)
    back = load_prepared(tmp_path / "d.h5")
    assert back.dataset == "toy" and back.fps == 50.0 and back.protocol == "toy-P1"
    assert [(s.subject, s.split) for s in back.sequences] == [("S1", "train"), ("S2", "validation"), ("S9", "test")]
    np.testing.assert_array_equal(back.sequences[2].positions_3d, data.sequences[2].positions_3d)
    cam = back.camera(back.sequences[0], 0)
    np.testing.assert_allclose(cam.T, [0, 0, -5000])
    assert (cam.width, cam.height) == (1000, 1002)
    summary = back.summary()
    assert summary["frames"] == 60 and summary["splits"]["test"]["subjects"] == ["S9"]


def test_subsample_keeps_every_nth_frame_at_a_lower_frame_rate():
    data = make_dataset(frames=20)
    data.sequences[0].valid = np.arange(20) % 4 != 0
    low = subsample(data, 6)
    assert low.fps == 50.0 / 6 and [s.num_frames for s in low.sequences] == [4, 4, 4]  # frames 0, 6, 12, 18
    np.testing.assert_array_equal(low.sequences[1].positions_3d, data.sequences[1].positions_3d[[0, 6, 12, 18]])
    np.testing.assert_array_equal(low.sequences[2].positions_2d, data.sequences[2].positions_2d[:, [0, 6, 12, 18]])
    np.testing.assert_array_equal(low.sequences[0].valid, [False, True, False, True])
    assert subsample(data, 1) is data and data.sequences[0].num_frames == 20  # the input is left alone
    with pytest.raises(ValueError, match="frame step must be >= 1"):
        subsample(data, 0)


def test_info_command_prints_summary(tmp_path, run_cli):
    write_prepared(tmp_path / "d.h5", make_dataset())
    code, out, _ = run_cli("info", tmp_path / "d.h5", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["subjects"] == ["S1", "S2", "S9"] and info["joints"] == 17 and info["views"] == 60
    code, out, _ = run_cli("info", tmp_path / "d.h5")
    assert code == 0 and "validation" in out and "S9" in out


@pytest.mark.parametrize("defect, message", [
    (lambda d: setattr(d.sequences[0], "split", "holdout"), "unknown split"),
    (lambda d: d.sequences[1].positions_3d.__setitem__((3, 4, 0), np.nan), "non-finite"),
    (lambda d: setattr(d.sequences[0], "positions_3d", d.sequences[0].positions_3d[:, :16]), r"expected \(\.\.\., 17, 3\)"),
    (lambda d: setattr(d.sequences[0], "cameras", ["c9"]), "not all in rig"),
])
def test_invalid_content_is_refused_and_nothing_written(tmp_path, defect, message):
    data = make_dataset()
    defect(data)
    with pytest.raises(InputError, match=message):
        write_prepared(tmp_path / "d.h5", data)
    assert list(tmp_path.iterdir()) == []


def test_nan_in_invalid_frames_is_allowed(tmp_path):
    data = make_dataset()
    seq = data.sequences[0]
    seq.valid = np.ones(seq.num_frames, bool)
    seq.valid[5] = False
    seq.positions_3d[5] = np.nan
    seq.positions_2d[:, 5] = np.nan
    write_prepared(tmp_path / "d.h5", data)
    assert load_prepared(tmp_path / "d.h5").sequences[0].valid.sum() == seq.num_frames - 1


def test_damaged_files_give_one_line_errors(tmp_path, run_cli):
    (tmp_path / "text.h5").write_text("hello")
    write_prepared(tmp_path / "good.h5", make_dataset())
    raw = (tmp_path / "good.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(raw[: len(raw) // 3])
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = 1
    for name, message in (("text.h5", "not a readable HDF5"), ("cut.h5", "HDF5"),
                          ("foreign.h5", "not a poselift prepared dataset"), ("missing.h5", "file not found")):
        code, out, err = run_cli("info", tmp_path / name)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and name in err and message in err, err


def test_content_hash_is_about_content(tmp_path):
    write_prepared(tmp_path / "a.h5", make_dataset(seed=1))
    write_prepared(tmp_path / "b.h5", make_dataset(seed=1))
    write_prepared(tmp_path / "c.h5", make_dataset(seed=2))
    assert content_hash(tmp_path / "a.h5") == content_hash(tmp_path / "b.h5")
    assert content_hash(tmp_path / "a.h5") != content_hash(tmp_path / "c.h5")
    with h5py.File(tmp_path / "b.h5", "a") as f:
        f["sequences/S1/Walk 1"].attrs["split"] = "test"
    assert content_hash(tmp_path / "a.h5") != content_hash(tmp_path / "b.h5")


def test_detections_round_trip_and_checks(tmp_path):
    kp = np.random.default_rng(0).uniform(0, 1000, (2, 10, 17, 2)).astype(np.float32)
    det = Detections(detector="gt", dataset="toy", prepared="abc", keypoints={"S1/Walk 1": kp},
                     scores={"S1/Walk 1": np.ones((2, 10, 17), np.float32)},
                     cameras={"S1/Walk 1": ["c0", "c1"]}, params={"seed": 3})
    write_detections(tmp_path / "d.h5", det)
    back = load_detections(tmp_path / "d.h5")
    np.testing.assert_array_equal(back.keypoints["S1/Walk 1"], kp)
    assert back.params == {"seed": 3} and back.cameras["S1/Walk 1"] == ["c0", "c1"]
    det.scores["S1/Walk 1"] = np.ones((2, 9, 17), np.float32)
    with pytest.raises(InputError, match="do not match"):
        write_detections(tmp_path / "e.h5", det)
    assert not (tmp_path / "e.h5").exists()


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "out.npz") as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(tmp_path / "out.txt") as tmp:
        tmp.write_text("done")
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_output_has_the_usual_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "out.txt") as tmp:
            tmp.write_text("done")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644
