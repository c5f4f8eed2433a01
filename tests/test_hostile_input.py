"""Hostile and broken input (issue 14): one table of cases, each a real ``poselift`` command on a bad file.

Every case must end with exit code 2 and exactly one stderr line ``poselift: error: <file>: <problem>``
naming the offending file, leave no output (or temporary) file behind and write nothing anywhere else: the
whole test folder is listed before and after the command and must be unchanged (a pickle that ran its code
would leave its marker folder there; an archive member extracted through ``../`` or an absolute path would
land there too). Commands run in-process (the ``run_cli`` fixture) with the test folder as working
directory. The files are tiny; the table runs in seconds.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest

from poselift.camera import Camera
from poselift.data.prepared import PreparedDataset, Sequence, write_prepared

HUGE = 10 ** 11  # declared frames of the "gigantic" files: ~20 TB as float32 (17, 3) poses


# --------------------------------------------------------------------------------------------- helpers

class Evil:
    """Unpickling this runs ``os.mkdir(marker)``: a reader that runs pickled code leaves the folder behind."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


class GiantArray:
    """Unpickles as numpy's own ``_reconstruct`` asked for a 9 TB array: a few bytes declaring terabytes."""

    def __reduce__(self):
        return np._core.multiarray._reconstruct, (np.ndarray, (10 ** 13,), b"b")


def prepared_dataset(frames: int = 12, seed: int = 0) -> PreparedDataset:
    rng = np.random.default_rng(seed)
    cam = Camera(R=np.eye(3), T=[0, 0, -5000], f=[1000, 1000], c=[500, 500], width=1000, height=1000, name="c0")
    seqs = []
    for subject, split in (("S1", "train"), ("S2", "validation"), ("S9", "test")):
        p3 = rng.normal(0, 300, (frames, 17, 3)).astype(np.float32)
        seqs.append(Sequence(subject=subject, name="Walk 1", action="Walk", split=split, rig="rig0", cameras=["c0"],
                             positions_3d=p3, positions_2d=cam.world_to_pixels(p3)[None].astype(np.float32)))
    return PreparedDataset(dataset="toy", fps=50.0, rigs={"rig0": {"c0": cam}}, sequences=seqs)


def write_toy_prepared(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_prepared(path, prepared_dataset())
    return path


def edit_h5(path: Path, edit: Callable[[h5py.File], None]) -> Path:
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def replace_dataset(f: h5py.File, name: str, data=None, **kwargs) -> None:
    del f[name]
    f.create_dataset(name, data=data, **kwargs)


def giant_dataset(f: h5py.File, name: str, shape: tuple, dtype="f4") -> None:
    """A chunked dataset declaring ``shape`` with (almost) no chunk written: a few KB on disk."""
    del f[name]
    f.create_dataset(name, shape=shape, dtype=dtype, chunks=(1,) * (len(shape) - 2) + tuple(shape[-2:]))


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:max(1, int(len(data) * keep))])
    return path


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def npy_bytes(header: dict, payload: bytes = b"\0" * 64) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def npz_with_members(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def poses_npz(path: Path, poses) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, poses_3d=poses)
    return path


def good_poses(n: int = 6) -> np.ndarray:
    return np.random.default_rng(1).normal(0, 300, (n, 17, 3))


def vp3d_3d(path: Path, poses: dict | None = None, frames: int = 5, joints: int = 32) -> Path:
    """VideoPose3D's data_3d_h36m.npz: positions_3d = pickled {subject: {action: (F, 32, 3) metres}}."""
    if poses is None:
        poses = {"S1": {"Walking 1": np.random.default_rng(0).normal(0, 0.3, (frames, joints, 3)).astype(np.float32)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, positions_3d=poses)
    return path


def mat73(path: Path, frames: int = 8, joints: int = 17, nan: bool = False) -> Path:
    """A MATLAB v7.3 annot_data.mat (HDF5 behind a 512-byte user block) in the 3DHP test set's shapes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    annot3 = rng.normal(0, 300, (frames, 1, joints, 3)) + [0, 0, 4000]
    annot2 = rng.normal(500, 100, (frames, 1, joints, 2))
    if nan:
        annot3[2, 0, 3, 1] = np.nan
    with h5py.File(path, "w", userblock_size=512) as f:
        f["annot2"], f["annot3"], f["univ_annot3"] = annot2, annot3, annot3
        f["valid_frame"] = np.ones((frames, 1))
    return path


def torch_file(path: Path, obj) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def vp3d_checkpoint(path: Path, channels: int, args_channels: int | None = None) -> Path:
    """A poselift checkpoint of VideoPose3D whose weights have ``channels`` and whose recorded args say
    ``args_channels`` (a checkpoint of another model when the two differ)."""
    import torch

    from poselift.lifting.videopose3d import TemporalConvNet
    from poselift.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = TemporalConvNet(filter_widths=[3], channels=channels)
    args = {"filter_widths": [3], "channels": args_channels or channels}
    save_checkpoint(path, {"model": "videopose3d", "args": args,
                           "state_dict": model.state_dict(), "window": 3, "output_frames": 1, "epoch": 1})
    return path


PARAMS = """\
datasets:
  toy: {reader: h36m}
models:
  vp-tiny: {class: videopose3d, filter_widths: [3], channels: 8}
experiments:
  tiny:
    dataset: toy
    stages:
      - {name: vp, model: vp-tiny, window: 3, epochs: 1, batch_size: 4, lr: 1.0e-3, losses: {mpjpe: 1.0}}
"""


def params(path: Path, text: str | None = PARAMS) -> Path:
    return write(path, b"datasets: {toy: {reader: \xff\xfe}}\n" if text is None else text)


def coco_json(path: Path, keypoints: int = 17, image: str = "img.jpg") -> Path:
    write(path, json.dumps({
        "images": [{"id": 1, "file_name": image, "width": 64, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "num_keypoints": keypoints, "iscrowd": 0,
                         "bbox": [8, 8, 40, 40], "keypoints": [20, 20, 2] * keypoints}],
        "categories": [{"id": 1, "name": "person"}]}))
    return path


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR declares ``width`` x ``height`` with a few bytes of image data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return write(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                 + chunk(b"IEND", b""))


def bandai_member() -> str:
    """The first BVH file ``prepare bandai --subset cpu`` reads, as its path from ``dataset/``."""
    from poselift.data.bandai import catalogue, load_manifest, select_clips

    return select_clips(catalogue(load_manifest()), "cpu")[0].member("bvh")


def tar_xz(path: Path, members: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:xz") as tar:
        for m in members:
            info, data = m if isinstance(m, tuple) else (m, None)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link_member(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


# ------------------------------------------------------------------------------------------ the table

@dataclass
class Case:
    argv: list  # poselift arguments
    names: Path | str  # the file the error line must name
    problem: str = ""  # regex the problem must match
    subprocess: bool = False  # run the installed `poselift` in a process of its own (what C libraries print counts)


def _prepared_with(edit):
    def build(t: Path) -> Case:
        path = edit_h5(write_toy_prepared(t / "in" / "p.h5"), edit)
        return Case(["info", path], path)
    return build


def _info_file(data: bytes | str, problem: str = ""):
    def build(t: Path) -> Case:
        path = write(t / "in" / "p.h5", data)
        return Case(["info", path], path, problem)
    return build


def _metrics_pred(make, problem: str = ""):
    def build(t: Path) -> Case:
        pred = make(t / "in" / "pred.npz")
        gt = poses_npz(t / "in" / "gt.npz", good_poses())
        return Case(["metrics", "--pred", pred, "--gt", gt, "--out", t / "out" / "m.json"], pred, problem)
    return build


def _metrics_labels(data: str, problem: str = ""):
    def build(t: Path) -> Case:
        pred, gt = poses_npz(t / "in" / "pred.npz", good_poses()), poses_npz(t / "in" / "gt.npz", good_poses())
        actions = write(t / "in" / "actions.json", data)
        return Case(["metrics", "--pred", pred, "--gt", gt, "--actions", actions, "--out", t / "out" / "m.json"],
                    actions, problem)
    return build


def _prepare_h36m(make, problem: str = ""):
    def build(t: Path) -> Case:
        path = make(t / "src" / "data_3d_h36m.npz", t)
        return Case(["prepare", "h36m", "--source", t / "src", "--out", t / "out" / "p.h5"], path, problem)
    return build


def _prepare_archive(make, problem: str = ""):
    def build(t: Path) -> Case:
        root = t / "src" / "h36m"
        root.mkdir(parents=True)
        with h5py.File(root / "cameras.h5", "w") as f:
            from poselift.data.h36m_cameras import H36M_CAMERA_IDS, h36m_camera
            for m, cid in enumerate(H36M_CAMERA_IDS, start=1):
                g, cam = f.create_group(f"subject1/camera{m}"), h36m_camera("S1", cid)
                g["R"], g["T"], g["f"] = cam.R.T, cam.T.reshape(3, 1), cam.f.reshape(2, 1)
                g["c"], g["k"], g["p"] = cam.c.reshape(2, 1), cam.k.reshape(3, 1), cam.p.reshape(2, 1)
                g["Name"] = np.array([ord(ch) for ch in cid], dtype=np.uint16)
        path = make(root, root / "S1" / "MyPoses" / "3D_positions" / "Walking 1.h5")
        return Case(["prepare", "h36m-archive", "--source", root, "--out", t / "out" / "p.h5"], path, problem)
    return build


def _archive_positions(edit):
    def make(root: Path, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            edit(f)
        return path
    return make


def _archive_cameras_not_hdf5(t: Path) -> Case:
    case = _prepare_archive(_archive_positions(lambda f: f.create_dataset("3D_positions", data=np.ones((96, 5)))))(t)
    return Case(case.argv, write(t / "src" / "h36m" / "cameras.h5", b"\x89HDF but not really"))


def _prepare_3dhp(make, problem: str = ""):
    def build(t: Path) -> Case:
        for ts in ("TS1", "TS2", "TS3", "TS4", "TS5", "TS6"):
            (t / "src" / ts).mkdir(parents=True)
        path = make(t / "src" / "TS1" / "annot_data.mat")
        return Case(["prepare", "3dhp", "--source", t / "src", "--out", t / "out" / "p.h5"], path, problem)
    return build


def _prepare_humaneva(make_3d, problem: str = ""):
    def build(t: Path) -> Case:
        from poselift.data.humaneva import FILE_2D, FILE_3D

        path = make_3d(t / "src" / FILE_3D, t)
        np.savez(t / "src" / FILE_2D, positions_2d={}, metadata={"num_joints": 15})
        return Case(["prepare", "humaneva", "--source", t / "src", "--out", t / "out" / "p.h5"], path, problem)
    return build


def _prepare_bandai(make, problem: str = ""):
    def build(t: Path) -> Case:
        source, names = make(t)
        return Case(["prepare", "bandai", "--subset", "cpu", "--source", source, "--out", t / "out" / "p.h5"],
                    names, problem)
    return build


def _import_detections(make, problem: str = ""):
    def build(t: Path) -> Case:
        prepared = write_toy_prepared(t / "in" / "p.h5")
        source, names = make(t)
        return Case(["import-detections", "--prepared", prepared, "--source", source, "--out", t / "out" / "d.h5"],
                    names, problem)
    return build


def _detections_prepared_not_hdf5(t: Path) -> Case:
    source, bad = _vp3d_2d(t / "in" / "d2.npz", {}), write(t / "in" / "bad.h5", "hello")
    return Case(["import-detections", "--prepared", bad, "--source", source, "--out", t / "out" / "d.h5"], bad)


def _vp3d_2d(path: Path, positions) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, positions_2d=positions, metadata={"num_joints": 17, "layout_name": "h36m"})
    return path


def _import_checkpoint(make, fmt: str = "videopose3d", problem: str = ""):
    def build(t: Path) -> Case:
        path = make(t / "in" / "official.bin", t)
        return Case(["import-checkpoint", "--format", fmt, path, t / "out" / "ckpt.pt"], path, problem)
    return build


def _train_params(text: str, problem: str = "", experiment: str = "tiny"):
    def build(t: Path) -> Case:
        path = params(t / "params.yaml", text)
        return Case(["train", "--experiment", experiment, "--stage", 1, "--params", path, "--tracking-uri", "off",
                     "--out", t / "out" / "stage1"], path, problem)
    return build


def _evaluate_checkpoint(make, problem: str = ""):
    def build(t: Path) -> Case:
        p = params(t / "params.yaml")
        path = make(t / "in" / "checkpoint.pt", t)
        return Case(["evaluate", "--experiment", "tiny", "--params", p, "--checkpoint", path, "--tracking-uri", "off",
                     "--device", "cpu", "--prepared", t / "in" / "absent.h5", "--out", t / "out" / "eval"],
                    path, problem)
    return build


def _toy_detections(path: Path, prepared: Path) -> Path:
    """Detections of the toy prepared file (its own 2D, score 1), written as poselift detect --detector gt does."""
    from poselift.data.detections import Detections, write_detections
    from poselift.data.prepared import content_hash

    write_toy_prepared(prepared)
    data = prepared_dataset()
    write_detections(path, Detections(
        detector="gt", dataset="toy", prepared=content_hash(prepared),
        keypoints={s.key: s.positions_2d for s in data.sequences},
        scores={s.key: np.ones(s.positions_2d.shape[:3], np.float32) for s in data.sequences},
        cameras={s.key: list(s.cameras) for s in data.sequences}))
    return path


def _evaluate_detections(edit, problem: str = ""):
    def build(t: Path) -> Case:
        p, ck = params(t / "params.yaml"), vp3d_checkpoint(t / "in" / "checkpoint.pt", 8)
        det = edit_h5(_toy_detections(t / "in" / "d.h5", t / "in" / "p.h5"), edit)
        return Case(["evaluate", "--experiment", "tiny", "--params", p, "--checkpoint", ck, "--tracking-uri", "off",
                     "--device", "cpu", "--prepared", t / "in" / "p.h5", "--detections", det,
                     "--out", t / "out" / "eval"], det, problem)
    return build


def _crops_coco(make, problem: str = ""):
    def build(t: Path) -> Case:
        ann, names = make(t)
        return Case(["crops", "coco", "--annotations", ann, "--images", t / "in", "--out", t / "out" / "c.h5"],
                    names, problem)
    return build


def _crops_h36m(make, problem: str = ""):
    def build(t: Path) -> Case:
        ann = make(t / "in" / "h36m_test.npz")
        return Case(["crops", "h36m", "--annotations", ann, "--images", t / "in", "--out", t / "out" / "c.h5"],
                    ann, problem)
    return build


def _crops_video(data: bytes | Callable[[Path], Path], problem: str = ""):
    def build(t: Path) -> Case:
        prepared = write_toy_prepared(t / "in" / "p.h5")
        video = data(t / "in" / "walk.mp4") if callable(data) else write(t / "in" / "walk.mp4", data)
        return Case(["crops", "video", "--video", video, "--prepared", prepared, "--sequence", "S1/Walk 1",
                     "--camera", "c0", "--out", t / "out" / "c.h5"], video, problem, subprocess=True)
    return build


def mp4(path: Path, frames: int = 20) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (64, 64))
    for i in range(frames):
        writer.write(np.full((64, 64, 3), 10 * i, np.uint8))
    writer.release()
    assert path.stat().st_size > 0
    return path


def _mean_pose_results(t: Path) -> Path:
    """results/mean-pose/evaluation/: a real evaluation (poselift baseline mean-pose of the toy file)."""
    from poselift.cli import main

    assert main(["baseline", "mean-pose", "--prepared", str(write_toy_prepared(t / "in" / "p.h5")),
                 "--out-dir", str(t / "results" / "mean-pose" / "evaluation")]) == 0
    return t / "results"


def _report(make, problem: str = ""):
    def build(t: Path) -> Case:
        path = make(t / "results" / "exp" / "evaluation" / "metrics.json")
        return Case(["report", "--results", t / "results", "--out", t / "out" / "reports"], path, problem)
    return build


def _bandai_tar(members_of):
    def make(t: Path):
        archive = tar_xz(t / "src" / "Bandai-Namco-Research-Motiondataset-1.tar.xz", members_of(t))
        return archive, archive
    return make


def _bvh_tree(data: bytes):
    def make(t: Path):
        path = write(t / "src" / bandai_member(), data)
        return t / "src", path.name
    return make


CASES: dict[str, Callable[[Path], Case]] = {
    # --- poselift info: the prepared-dataset reader -----------------------------------------------
    "info-empty-file": _info_file(b"", "not a readable HDF5"),
    "info-json-not-hdf5": _info_file('{"format": "poselift.prepared"}', "not a readable HDF5"),
    "info-truncated-hdf5": lambda t: (lambda p: Case(["info", truncate(p, 0.6)], p))(
        write_toy_prepared(t / "in" / "p.h5")),
    "info-foreign-hdf5": _prepared_with(lambda f: f.attrs.__setitem__("format", "something.else")),
    "info-nan-positions": _prepared_with(lambda f: replace_dataset(
        f, "sequences/S1/Walk 1/positions_3d", np.full((12, 17, 3), np.nan, np.float32))),
    "info-inf-positions-2d": _prepared_with(lambda f: replace_dataset(
        f, "sequences/S9/Walk 1/positions_2d", np.full((1, 12, 17, 2), np.inf, np.float32))),
    "info-16-joints": _prepared_with(lambda f: replace_dataset(
        f, "sequences/S1/Walk 1/positions_3d", np.zeros((12, 16, 3), np.float32))),
    "info-1d-positions": _prepared_with(lambda f: replace_dataset(
        f, "sequences/S1/Walk 1/positions_3d", np.zeros(12, np.float32))),
    "info-string-positions": _prepared_with(lambda f: replace_dataset(
        f, "sequences/S1/Walk 1/positions_3d", np.array([b"x"] * 12))),
    "info-cameras-attr-wrong-type": _prepared_with(lambda f: f["sequences/S1/Walk 1"].attrs.__setitem__("cameras", 7)),
    "info-giant-declared-dataset": _prepared_with(lambda f: giant_dataset(
        f, "sequences/S1/Walk 1/positions_3d", (HUGE, 17, 3))),
    # --- poselift metrics: npz and json ------------------------------------------------------------
    "metrics-empty-npz": _metrics_pred(lambda p: write(p, b""), "npz"),
    "metrics-truncated-npz": _metrics_pred(lambda p: truncate(poses_npz(p, good_poses(50)), 0.5)),
    "metrics-text-as-npz": _metrics_pred(lambda p: write(p, "poses_3d = [1, 2, 3]\n")),
    "metrics-pickle-file": _metrics_pred(lambda p: write(p, __import__("pickle").dumps(Evil(p.parent / "PWNED")))),
    "metrics-object-array": _metrics_pred(lambda p: poses_npz(p, np.array([Evil(p.parent / "PWNED")], dtype=object))),
    "metrics-nan": _metrics_pred(lambda p: poses_npz(p, np.where(np.eye(17, 3, dtype=bool), np.nan, good_poses())),
                                 "non-finite"),
    "metrics-inf": _metrics_pred(lambda p: poses_npz(p, np.full((6, 17, 3), np.inf)), "non-finite"),
    "metrics-16-joints": _metrics_pred(lambda p: poses_npz(p, np.zeros((6, 16, 3))), "shape"),
    "metrics-giant-declared-npy": _metrics_pred(lambda p: npz_with_members(p, {"poses_3d.npy": npy_bytes(
        {"descr": "<f4", "fortran_order": False, "shape": (HUGE, 17, 3)})})),
    "metrics-actions-truncated-json": _metrics_labels('["Walk", "Walk", "Wa', "JSON"),
    "metrics-actions-wrong-type": _metrics_labels('{"labels": ["Walk"]}', "list"),
    # --- poselift prepare h36m (VideoPose3D npz of pickled dicts) -----------------------------------
    "prepare-h36m-empty-npz": _prepare_h36m(lambda p, t: write(p, b"")),
    "prepare-h36m-truncated-npz": _prepare_h36m(lambda p, t: truncate(vp3d_3d(p, frames=200), 0.5)),
    "prepare-h36m-pickle-runs-code": _prepare_h36m(lambda p, t: vp3d_3d(p, poses={"S1": Evil(t / "PWNED")}),
                                                   "refusing"),
    "prepare-h36m-pickle-runs-code-subprocess": lambda t: (lambda c: Case(c.argv, c.names, c.problem, True))(
        _prepare_h36m(lambda p, t: vp3d_3d(p, poses={"S1": Evil(t / "PWNED")}), "refusing")(t)),
    "prepare-h36m-pickle-giant-declared": _prepare_h36m(lambda p, t: vp3d_3d(p, poses={"S1": GiantArray()}),
                                                        "refusing to allocate"),
    "prepare-h36m-nan": _prepare_h36m(lambda p, t: vp3d_3d(p, poses={"S1": {"Walking 1": np.full(
        (5, 32, 3), np.nan, np.float32)}}), "non-finite"),
    "prepare-h36m-20-joints": _prepare_h36m(lambda p, t: vp3d_3d(p, joints=20)),
    "prepare-h36m-wrong-type": _prepare_h36m(lambda p, t: vp3d_3d(p, poses={"S1": {"Walking 1": "not an array"}})),
    # --- poselift prepare h36m-archive (HDF5) -------------------------------------------------------
    "prepare-archive-truncated-positions": _prepare_archive(lambda root, p: truncate(_archive_positions(
        lambda f: f.create_dataset("3D_positions", data=np.zeros((96, 300)) + 1.0))(root, p), 0.4)),
    "prepare-archive-95-rows": _prepare_archive(_archive_positions(
        lambda f: f.create_dataset("3D_positions", data=np.ones((95, 5))))),
    "prepare-archive-giant-declared": _prepare_archive(_archive_positions(
        lambda f: f.create_dataset("3D_positions", shape=(96, HUGE), dtype="f8", chunks=(96, 1)))),
    "prepare-archive-cameras-not-hdf5": _archive_cameras_not_hdf5,
    # --- poselift prepare 3dhp (MATLAB .mat) --------------------------------------------------------
    "prepare-3dhp-empty-mat": _prepare_3dhp(lambda p: write(p, b"")),
    "prepare-3dhp-matlab-v5": _prepare_3dhp(lambda p: write(p, b"MATLAB 5.0 MAT-file, Platform: GLNXA64" + b" " * 200),
                                            "v5"),
    "prepare-3dhp-truncated-mat": _prepare_3dhp(lambda p: truncate(mat73(p, frames=400), 0.5)),
    "prepare-3dhp-28-joints": _prepare_3dhp(lambda p: mat73(p, joints=28), "shape"),
    "prepare-3dhp-nan": _prepare_3dhp(lambda p: mat73(p, nan=True), "non-finite"),
    # --- poselift prepare humaneva ------------------------------------------------------------------
    "prepare-humaneva-pickle-runs-code": _prepare_humaneva(
        lambda p, t: (p.parent.mkdir(parents=True, exist_ok=True), np.savez(p, positions_3d=Evil(t / "PWNED")), p)[2],
        "refusing"),
    "prepare-humaneva-truncated": _prepare_humaneva(
        lambda p, t: truncate((p.parent.mkdir(parents=True, exist_ok=True),
                               np.savez(p, positions_3d={"Train/S1": {"Walking 1 chunk0": np.ones((300, 15, 3))}}),
                               p)[2], 0.5)),
    # --- poselift prepare bandai: archives and BVH ---------------------------------------------------
    "prepare-bandai-not-a-tar": _prepare_bandai(lambda t: (lambda p: (p, p))(
        write(t / "src" / "Bandai-Namco-Research-Motiondataset-1.tar.xz", b"\xfd7zXZ\0 truncated"))),
    "prepare-bandai-tar-dotdot": _prepare_bandai(_bandai_tar(lambda t: [
        file_member("../escaped.bvh", b"HIERARCHY"), file_member("../../escaped2.bvh", b"x"),
        file_member(f"dataset/../../{bandai_member()}", b"HIERARCHY\n")])),
    "prepare-bandai-tar-absolute": _prepare_bandai(_bandai_tar(lambda t: [
        file_member(str(t / "abs" / "escaped.bvh"), b"x"), file_member(str(t / "abs" / bandai_member()), b"x")])),
    "prepare-bandai-tar-symlink": _prepare_bandai(_bandai_tar(lambda t: [
        link_member(bandai_member(), "/etc/passwd"), link_member("dataset/link", str(t)),
        link_member(bandai_member().replace(".bvh", ".json"), "/etc/hostname", hard=True)])),
    "prepare-bandai-truncated-bvh": _prepare_bandai(_bvh_tree(b"HIERARCHY\nROOT Hips\n{\n  OFFSET 0 0")),
    "prepare-bandai-empty-bvh": _prepare_bandai(_bvh_tree(b"")),
    # --- poselift import-detections -------------------------------------------------------------------
    "import-detections-prepared-not-hdf5": _detections_prepared_not_hdf5,
    "import-detections-pickle-runs-code": _import_detections(
        lambda t: (lambda p: (p, p))(_vp3d_2d(t / "in" / "data_2d_h36m_cpn.npz", {"S1": Evil(t / "PWNED")})),
        "refusing"),
    "import-detections-nan": _import_detections(lambda t: (lambda p: (p, p))(_vp3d_2d(
        t / "in" / "data_2d_h36m_cpn.npz", {"S1": {"Walk 1": [np.full((12, 17, 2), np.nan, np.float32)]}})),
        "non-finite"),
    "import-detections-sh-wrong-joints": _import_detections(lambda t: (t / "in" / "sh", _archive_positions(
        lambda f: f.create_dataset("poses", data=np.zeros((12, 15, 2))))(
        t, t / "in" / "sh" / "S1" / "StackedHourglass" / "Walking.54138969.h5"))),
    # --- poselift import-checkpoint --------------------------------------------------------------------
    "import-checkpoint-empty": _import_checkpoint(lambda p, t: write(p, b"")),
    "import-checkpoint-truncated": _import_checkpoint(lambda p, t: truncate(torch_file(
        p, {"model_pos": {"w": __import__("torch").zeros(2000)}}), 0.5)),
    "import-checkpoint-pickle-runs-code": _import_checkpoint(
        lambda p, t: torch_file(p, {"model_pos": Evil(t / "PWNED")}),
                                                             problem="weights_only.*posix.mkdir"),
    "import-checkpoint-of-another-model": _import_checkpoint(
        lambda p, t: (lambda ck: torch_file(p, {"model_pos": __import__("torch").load(ck)["state_dict"]}))(
            vp3d_checkpoint(t / "tmp-src" / "vp.pt", 8)), fmt="mixste", problem="mixste"),
    # --- params.yaml (poselift train / evaluate) ---------------------------------------------------------
    "params-empty": _train_params("", "mapping"),
    "params-truncated-yaml": _train_params(PARAMS[:PARAMS.index("stages:") + 14] + "{name: vp, model: [", "YAML"),
    "params-typo-stage-key": _train_params(PARAMS.replace("epochs: 1", "epochz: 1"),
                                           r"epochz.*did you mean 'epochs'"),
    "params-typo-model-argument": _train_params(PARAMS.replace("channels: 8", "chanels: 8"),
                                                r"chanels.*did you mean 'channels'"),
    "params-typo-experiment-key": _train_params(PARAMS.replace("    dataset: toy", "    datset: toy"),
                                                r"datset.*did you mean 'dataset'"),
    "params-typo-experiment-name": _train_params(PARAMS, r"tinny.*did you mean 'tiny'", experiment="tinny"),
    "params-typo-section": _train_params(PARAMS.replace("experiments:", "experimets:"),
                                         r"experimets: unknown section; did you mean 'experiments'"),
    "params-typo-loss-term": _train_params(PARAMS.replace("{mpjpe: 1.0}", "{mpjep: 1.0}"),
                                           r"mpjep.*did you mean 'mpjpe'"),
    "params-typo-model-preset": _train_params(PARAMS.replace("model: vp-tiny", "model: vp-tyni"),
                                              r"vp-tyni.*did you mean 'vp-tiny'"),
    "params-not-utf8": _train_params(None, ""),
    "params-wrong-type-epochs": _train_params(PARAMS.replace("epochs: 1", "epochs: three"), "epochs.*integer"),
    "params-wrong-type-losses": _train_params(PARAMS.replace("losses: {mpjpe: 1.0}", "losses: [mpjpe]"), "losses"),
    "params-wrong-type-lr-nan": _train_params(PARAMS.replace("lr: 1.0e-3", "lr: .nan"), "lr.*finite"),
    # --- poselift evaluate --checkpoint ------------------------------------------------------------------
    "evaluate-checkpoint-of-another-model": _evaluate_checkpoint(lambda p, t: vp3d_checkpoint(p, 16, args_channels=8),
                                                                 "does not fit"),
    "evaluate-checkpoint-pickle-runs-code": _evaluate_checkpoint(
        lambda p, t: torch_file(p, {"format": Evil(t / "PWNED")}),
                                                                 "weights_only.*posix.mkdir"),
    "evaluate-checkpoint-not-torch": _evaluate_checkpoint(lambda p, t: write(p, json.dumps({"format": "x"}))),
    "evaluate-checkpoint-truncated": _evaluate_checkpoint(lambda p, t: truncate(vp3d_checkpoint(p, 32), 0.5)),
    "evaluate-detections-giant-declared": _evaluate_detections(lambda f: giant_dataset(
        f, "sequences/S9/Walk 1/keypoints", (1, HUGE, 17, 2)), "declares"),
    "evaluate-detections-nan-scores": _evaluate_detections(lambda f: replace_dataset(
        f, "sequences/S9/Walk 1/scores", np.full((1, 12, 17), np.nan, np.float32)), "non-finite"),
    "evaluate-detections-wrong-shape": _evaluate_detections(lambda f: replace_dataset(
        f, "sequences/S9/Walk 1/keypoints", np.zeros((1, 12, 16, 2), np.float32)), "shape"),
    "detect-network-checkpoint-of-another-model": lambda t: (lambda p, ck: Case(
        ["detect", "--prepared", p, "--detector", "hrnet", "--checkpoint", ck, "--images", t / "in" / "r.h5",
         "--device", "cpu", "--out", t / "out" / "d.h5"], ck, "videopose3d"))(
        write_toy_prepared(t / "in" / "p.h5"), vp3d_checkpoint(t / "in" / "vp.pt", 8)),
    # --- poselift crops: json, npz, images, video ---------------------------------------------------------
    "crops-coco-truncated-json": _crops_coco(
        lambda t: (lambda p: (p, p))(truncate(coco_json(t / "in" / "k.json"), 0.5))),
    "crops-coco-wrong-keypoint-count": _crops_coco(lambda t: (lambda p: (p, p))(coco_json(t / "in" / "k.json", 14))),
    "crops-coco-image-not-an-image": _crops_coco(lambda t: (coco_json(t / "in" / "k.json"),
                                                            write(t / "in" / "img.jpg", b"\xff\xd8\xff garbage"))),
    "crops-coco-image-giant-declared": _crops_coco(lambda t: (coco_json(t / "in" / "k.json", image="img.png"),
                                                              png_declaring(t / "in" / "img.png", 200000, 200000))),
    "crops-h36m-truncated-npz": _crops_h36m(lambda p: truncate(npz_with_members(p, {
        "imgname.npy": npy_bytes({"descr": "<U8", "fortran_order": False, "shape": (400,)}, b"\0" * 12800)}), 0.5)),
    "crops-h36m-object-arrays": _crops_h36m(lambda p: (p.parent.mkdir(parents=True, exist_ok=True), np.savez(
        p, imgname=np.array([Evil(p.parent / "PWNED")], dtype=object), center=np.zeros((1, 2)), scale=np.ones(1),
        part=np.zeros((1, 17, 3))), p)[2]),
    "crops-h36m-giant-declared": _crops_h36m(lambda p: npz_with_members(p, {
        name: npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (HUGE, 17, 3)})
        for name in ("imgname.npy", "center.npy", "scale.npy", "part.npy")})),
    "crops-video-not-a-video": _crops_video(b"\x00\x00\x00\x18ftypmp42 this is not a video"),
    "crops-video-empty": _crops_video(b""),
    "crops-video-truncated": _crops_video(lambda p: truncate(mp4(p), 0.6)),
    # --- poselift report ----------------------------------------------------------------------------------
    "report-truncated-metrics-json": _report(lambda p: write(p, '{"mpjpe": 50.0, "frames": ')),
    "report-crops-not-hdf5": lambda t: (lambda m, c: Case(
        ["report", "--results", t / "results", "--crops", c, "--out", t / "out" / "reports"], c))(
        _mean_pose_results(t), write(t / "in" / "crops.h5", b"PK\3\4")),
    "report-metrics-nan": _report(lambda p: write(p, json.dumps({
        "frames": 10, "mpjpe": float("nan"), "p_mpjpe": 1.0, "n_mpjpe": 1.0, "pck150": 1.0, "auc": 1.0, "mpjve": 1.0,
        "per_action": {}, "action_mean": {}, "per_joint_group": {}, "inputs": {}}))),
    # --- poselift baseline / detect / render: their prepared input ----------------------------------------
    "baseline-prepared-is-a-npz": lambda t: (lambda p: Case(
        ["baseline", "mean-pose", "--prepared", p, "--out-dir", t / "out" / "mp"], p))(
        poses_npz(t / "in" / "p.h5", good_poses())),
    "detect-prepared-nan": lambda t: (lambda p: Case(
        ["detect", "--prepared", p, "--detector", "gt", "--out", t / "out" / "d.h5"], p, "non-finite"))(
        edit_h5(write_toy_prepared(t / "in" / "p.h5"), lambda f: replace_dataset(
            f, "sequences/S2/Walk 1/positions_3d", np.full((12, 17, 3), np.nan, np.float32)))),
    "render-prepared-truncated": lambda t: (lambda p: Case(
        ["render", "--prepared", truncate(p, 0.5), "--out", t / "out" / "r.h5", "--workers", 1], p))(
        write_toy_prepared(t / "in" / "p.h5")),
    "render-assets-tar-escapes": lambda t: (lambda p, a: Case(
        ["render", "--prepared", p, "--assets", a, "--out", t / "out" / "r.h5", "--workers", 1], a))(
        write_toy_prepared(t / "in" / "p.h5"), tar_xz(t / "in" / "makehuman-cc0-assets.tar.xz", [
            file_member("../escaped.obj", b"v 0 0 0\n"), file_member(str(t / "abs" / "escaped.obj"), b"x"),
            link_member("makehuman-cc0/3dobjs/base.obj", "/etc/passwd")])),
    # --- poselift sync: a results folder that is none (checked before MLflow is touched) ------------------
    "sync-folder-missing": lambda t: Case(["sync", t / "results" / "x"], t / "results" / "x", "not a folder"),
    "sync-folder-without-records": lambda t: (lambda d: Case(["sync", d], d, "no stage<N>/history.json"))(
        write(t / "results" / "x" / "notes.txt", "").parent),
    "sync-history-truncated": lambda t: (lambda h: Case(["sync", t / "results" / "x"], h, "not valid JSON"))(
        write(t / "results" / "x" / "stage1" / "history.json", '{"stage": {"name": "pot"}, "epochs": [')),
    "sync-history-not-poselift": lambda t: (lambda h: Case(["sync", t / "results" / "x"], h, "not a poselift"))(
        write(t / "results" / "x" / "stage1" / "history.json", json.dumps({"epochs": [{"loss": 1.0}]}))),
    "sync-metrics-not-an-object": lambda t: (lambda m: Case(["sync", t / "results" / "x"], m, "not a poselift"))(
        write(t / "results" / "x" / "evaluation" / "metrics.json", "[1, 2]")),
}

XFAIL: dict[str, str] = {}


def _tree(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` (links not followed) -> (kind, size)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = ("dir" if p.is_dir() and not p.is_symlink() else "link" if p.is_symlink()
                                             else "file", st.st_size if p.is_file() else 0)
    return out


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=XFAIL[n]))
                                  if n in XFAIL else n for n in CASES])
def test_hostile_input_is_one_line_exit_2_and_leaves_nothing(name, tmp_path, run_cli, monkeypatch):
    work = tmp_path / "t"
    work.mkdir()
    monkeypatch.chdir(work)
    for var in ("POSELIFT_BANDAI_MIRROR", "POSELIFT_MAKEHUMAN_ASSETS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("POSELIFT_CACHE", str(tmp_path / "cache"))
    case = CASES[name](work)
    before = _tree(tmp_path)

    if case.subprocess:
        import subprocess
        import sys

        proc = subprocess.run([str(Path(sys.executable).with_name("poselift")), *map(str, case.argv)], cwd=work,
                              capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        code, err = proc.returncode, proc.stderr
    else:
        code, out, err = run_cli(*case.argv)

    lines = err.strip("\n").splitlines()
    assert code == 2, f"exit {code}, stderr: {err[-2000:]}"
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{err[-2000:]}"
    line = lines[0]
    assert line.startswith("poselift: error: "), line
    named = str(case.names)
    assert re.match(rf"poselift: error: [^\n]*{re.escape(named)}[^\n]*: .+", line), \
        f"the line does not name {named}: {line}"
    if case.problem:
        assert re.search(case.problem, line), f"problem does not match {case.problem!r}: {line}"
    after = _tree(tmp_path)
    escaped = [p for p in (tmp_path.parent / "escaped.bvh", tmp_path.parent / "escaped2.bvh",
                           tmp_path.parent / "escaped.obj") if p.exists()]
    assert not escaped, f"written outside the test folder: {escaped}"
    assert after == before, (f"files changed: added {sorted(set(after) - set(before))}, "
                             f"removed {sorted(set(before) - set(after))}, "
                             f"changed {sorted(k for k in before if k in after and before[k] != after[k])}")


def test_the_table_has_at_least_40_cases():
    assert len(CASES) >= 40


# ------------------------------------------------------------------------------ a failing checkpoint write

def test_disk_full_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch, run_cli):
    """ENOSPC halfway through writing checkpoint.pt: the previous file is byte-identical, no temporary file is
    left, and the command fails with one line naming the file."""
    import errno

    import torch

    from poselift.training.checkpoint import read_checkpoint

    target = vp3d_checkpoint(tmp_path / "stage1" / "checkpoint.pt", 8)
    previous = target.read_bytes()
    source = vp3d_checkpoint(tmp_path / "src" / "vp.pt", 16)
    official = torch_file(tmp_path / "src" / "official.bin", {"model_pos": torch.load(source)["state_dict"]})

    real_save = torch.save

    def save_then_fill_the_disk(obj, f, *args, **kwargs):
        class Full(io.RawIOBase):  # accepts some bytes, then the disk is full
            def __init__(self, path):
                self.file, self.written = open(path, "wb"), 0

            def writable(self):
                return True

            def write(self, b):
                if self.written > 1000:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.written += len(b)
                return self.file.write(b)

            def close(self):
                self.file.close()
                super().close()

        with Full(f) as sink:
            real_save(obj, sink, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_fill_the_disk)
    code, out, err = run_cli("import-checkpoint", "--format", "videopose3d", official, target)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"poselift: error: {target}: ") and "No space left on device" in lines[0], lines[0]
    assert target.read_bytes() == previous
    assert sorted(p.name for p in target.parent.iterdir()) == ["checkpoint.pt"]
    monkeypatch.setattr(torch, "save", real_save)
    assert read_checkpoint(target)["args"]["channels"] == 8


def test_disk_full_while_writing_any_output_keeps_the_previous_file(tmp_path, monkeypatch, run_cli):
    """The same for the small outputs (JSON through poselift.io.atomic_output): one line, old file kept."""
    import errno

    pred, gt = poses_npz(tmp_path / "pred.npz", good_poses()), poses_npz(tmp_path / "gt.npz", good_poses())
    out = write(tmp_path / "out" / "m.json", '{"previous": true}\n')
    real_write_text = Path.write_text

    def half_then_full(self, data, *args, **kwargs):
        real_write_text(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", half_then_full)
    code, _, err = run_cli("metrics", "--pred", pred, "--gt", gt, "--out", out)
    monkeypatch.setattr(Path, "write_text", real_write_text)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"poselift: error: {out}: cannot be written (No space left on device)"), lines[0]
    assert json.loads(out.read_text()) == {"previous": True}
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.json"]
