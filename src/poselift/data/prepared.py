"""The prepared-dataset HDF5 layout: every dataset reader writes it, every later stage reads it.

Layout (format ``poselift.prepared``, version 1; lengths in mm, image quantities in pixels)::

    /                                   attrs: format, version, dataset, fps, joints ("h36m17"),
                                               joint_names, protocol, source
    /cameras/<rig>/<camera>/            datasets R (3,3), T (3,), f (2,), c (2,), k (3,), p (2,)
                                        attrs: width, height          (conventions: poselift.camera)
    /sequences/<subject>/<sequence>/    attrs: action, split ("train" | "validation" | "test"), rig,
                                               cameras (names, the order of positions_2d's first axis)
        positions_3d   (F, 17, 3) float32   world coordinates; for datasets that only give camera-frame
                                            3D (MPI-INF-3DHP) the rig has one camera with R = I, T = 0
        positions_2d   (C, F, 17, 2) float32  the dataset's own 2D per camera (ground truth)
        valid          (F,) bool, optional  frames with a valid annotation (3DHP's valid_frame)
        positions_3d_metric (F, 17, 3) float32, optional  metric camera-frame 3D where positions_3d is a
                                            rescaled skeleton (3DHP: positions_3d = univ_annot3, this = annot3)

A rig is a set of calibrated cameras shared by several sequences (Human3.6M: one rig per subject,
because its extrinsics differ by subject; 3DHP: one per test sequence).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from poselift.camera import Camera
from poselift.errors import InputError
from poselift.io import atomic_output, check_finite, check_joints, open_h5, read_dataset
from poselift.skeleton import H36M17

FORMAT = "poselift.prepared"
VERSION = 1
SPLITS = ("train", "validation", "test")


@dataclass
class Sequence:
    subject: str
    name: str
    action: str
    split: str
    rig: str
    cameras: list[str]
    positions_3d: np.ndarray  # (F, 17, 3)
    positions_2d: np.ndarray  # (C, F, 17, 2)
    valid: np.ndarray | None = None  # (F,) bool
    positions_3d_metric: np.ndarray | None = None  # (F, 17, 3), optional (3DHP's annot3)

    @property
    def num_frames(self) -> int:
        return int(self.positions_3d.shape[0])

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.name}"


@dataclass
class PreparedDataset:
    dataset: str
    fps: float
    rigs: dict[str, dict[str, Camera]]
    sequences: list[Sequence]
    protocol: str = ""
    source: str = ""
    joint_names: tuple[str, ...] = field(default=H36M17.names)

    def camera(self, seq: Sequence, index: int) -> Camera:
        return self.rigs[seq.rig][seq.cameras[index]]

    def select(self, split: str | None = None, subjects=None) -> list[Sequence]:
        return [s for s in self.sequences
                if (split is None or s.split == split) and (subjects is None or s.subject in subjects)]

    def summary(self) -> dict:
        """What ``poselift info`` prints: subjects, actions, frames, joints, cameras, splits."""
        splits = {}
        for split in SPLITS:
            seqs = self.select(split)
            if seqs:
                splits[split] = {
                    "subjects": sorted({s.subject for s in seqs}),
                    "sequences": len(seqs),
                    "frames": int(sum(s.num_frames for s in seqs)),
                }
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "fps": self.fps,
            "joints": len(self.joint_names),
            "joint_names": list(self.joint_names),
            "subjects": sorted({s.subject for s in self.sequences}),
            "actions": sorted({s.action for s in self.sequences}),
            "sequences": len(self.sequences),
            "frames": int(sum(s.num_frames for s in self.sequences)),
            "views": int(sum(s.num_frames * len(s.cameras) for s in self.sequences)),
            "cameras": {rig: sorted(cams) for rig, cams in self.rigs.items()},
            "splits": splits,
        }



def subsample(data: PreparedDataset, step: int) -> PreparedDataset:
    """Every ``step``-th frame of each sequence (from its first), as a video at ``fps / step``: the dataset a
    frame-based stage works on when every frame is costly (rendered and detected; Lifting by Image trains
    on Human3.6M at 5 fps of 50, ``step`` 10). ``step`` 1 returns ``data`` itself."""
    from dataclasses import replace

    if step < 1:
        raise ValueError(f"frame step must be >= 1, got {step}")
    if step == 1:
        return data
    sequences = [replace(s, positions_3d=s.positions_3d[::step], positions_2d=s.positions_2d[:, ::step],
                         valid=None if s.valid is None else s.valid[::step],
                         positions_3d_metric=None if s.positions_3d_metric is None else s.positions_3d_metric[::step])
                 for s in data.sequences]
    return replace(data, fps=data.fps / step, sequences=sequences)

def write_prepared(path: str | os.PathLike, data: PreparedDataset) -> None:
    """Validate ``data`` and write it atomically to ``path``."""
    _validate(data, path)
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(format=FORMAT, version=VERSION, dataset=data.dataset, fps=float(data.fps),
                           joints="h36m17", joint_names=list(data.joint_names), protocol=data.protocol,
                           source=data.source)
            for rig, cams in data.rigs.items():
                for name, cam in cams.items():
                    g = f.create_group(f"cameras/{rig}/{name}")
                    for key in ("R", "T", "f", "c", "k", "p"):
                        g.create_dataset(key, data=getattr(cam, key))
                    g.attrs.update(width=cam.width, height=cam.height)
            for s in data.sequences:
                g = f.create_group(f"sequences/{s.subject}/{s.name}")
                g.attrs.update(action=s.action, split=s.split, rig=s.rig, cameras=list(s.cameras))
                g.create_dataset("positions_3d", data=s.positions_3d.astype(np.float32), compression="gzip")
                g.create_dataset("positions_2d", data=s.positions_2d.astype(np.float32), compression="gzip")
                if s.valid is not None:
                    g.create_dataset("valid", data=s.valid.astype(bool))
                if s.positions_3d_metric is not None:
                    g.create_dataset("positions_3d_metric", data=s.positions_3d_metric.astype(np.float32),
                                     compression="gzip")


def load_prepared(path: str | os.PathLike) -> PreparedDataset:
    """Read and check a prepared-dataset file; any defect becomes a one-line :class:`InputError`."""
    path = Path(path)
    with open_h5(path) as f:
        try:
            return _read(f, path)
        except InputError:
            raise
        except (KeyError, OSError, ValueError, TypeError) as e:
            raise InputError(path, f"damaged prepared dataset ({type(e).__name__}: {e})") from None


def _read(f: h5py.File, path: Path) -> PreparedDataset:
    if f.attrs.get("format") != FORMAT:
        raise InputError(path, f"not a poselift prepared dataset (format attribute {f.attrs.get('format')!r})")
    if int(f.attrs.get("version", -1)) != VERSION:
        raise InputError(path, f"prepared-dataset version {f.attrs.get('version')} is not supported "
                               f"(this poselift reads version {VERSION})")
    rigs: dict[str, dict[str, Camera]] = {}
    for rig, group in f.get("cameras", {}).items():
        rigs[rig] = {name: Camera(**{k: read_dataset(g[k], path) for k in ("R", "T", "f", "c", "k", "p")},
                                  width=g.attrs["width"], height=g.attrs["height"], name=name)
                     for name, g in group.items()}
    sequences = []
    for subject, group in f.get("sequences", {}).items():
        for name, g in group.items():
            sequences.append(Sequence(
                subject=subject, name=name, action=_str(g.attrs["action"]), split=_str(g.attrs["split"]),
                rig=_str(g.attrs["rig"]), cameras=[_str(c) for c in g.attrs["cameras"]],
                positions_3d=read_dataset(g["positions_3d"], path), positions_2d=read_dataset(g["positions_2d"], path),
                valid=read_dataset(g["valid"], path) if "valid" in g else None,
                positions_3d_metric=read_dataset(g["positions_3d_metric"], path) if "positions_3d_metric" in g
                else None))
    data = PreparedDataset(dataset=_str(f.attrs["dataset"]), fps=float(f.attrs["fps"]), rigs=rigs,
                           sequences=sequences, protocol=_str(f.attrs.get("protocol", "")),
                           source=_str(f.attrs.get("source", "")),
                           joint_names=tuple(_str(n) for n in f.attrs["joint_names"]))
    _validate(data, path)
    return data


def _validate(data: PreparedDataset, path) -> None:
    if tuple(data.joint_names) != H36M17.names:
        raise InputError(path, "joints are not the Human3.6M-17 layout")
    if not data.sequences:
        raise InputError(path, "no sequences")
    for s in data.sequences:
        where = f"sequence {s.key}"
        if s.split not in SPLITS:
            raise InputError(path, f"{where}: unknown split '{s.split}' (expected one of {', '.join(SPLITS)})")
        if s.rig not in data.rigs or any(c not in data.rigs[s.rig] for c in s.cameras):
            raise InputError(path, f"{where}: cameras {s.cameras} not all in rig '{s.rig}'")
        check_joints(s.positions_3d, path, f"{where} positions_3d", H36M17.num_joints, 3)
        check_joints(s.positions_2d, path, f"{where} positions_2d", H36M17.num_joints, 2)
        expected = (len(s.cameras), s.num_frames)
        if s.positions_3d.ndim != 3 or s.positions_2d.shape[:2] != expected:
            raise InputError(path, f"{where}: positions_2d has shape {s.positions_2d.shape}, "
                                   f"expected {expected + (17, 2)}")
        if s.valid is not None and s.valid.shape != (s.num_frames,):
            raise InputError(path, f"{where}: valid has shape {s.valid.shape}, expected ({s.num_frames},)")
        frames = s.valid if s.valid is not None else slice(None)
        check_finite(s.positions_3d[frames], path, f"{where} positions_3d")
        check_finite(s.positions_2d[:, frames], path, f"{where} positions_2d")
        if s.positions_3d_metric is not None:
            if s.positions_3d_metric.shape != s.positions_3d.shape:
                raise InputError(path, f"{where}: positions_3d_metric has shape {s.positions_3d_metric.shape}, "
                                       f"expected {s.positions_3d.shape}")
            check_finite(s.positions_3d_metric[frames], path, f"{where} positions_3d_metric")


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 of an HDF5 file's content (every attribute and dataset, in sorted order), not of its bytes.

    Two files with the same content hash the same even if HDF5 laid them out differently on disk; it keys
    caches of work derived from the file (detections, windows).
    """
    path = Path(path)
    digest = hashlib.sha256()

    def feed(name: str, obj) -> None:
        digest.update(name.encode())
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in sorted(obj.attrs.items())}
        digest.update(json.dumps(attrs, sort_keys=True, default=str).encode())
        if isinstance(obj, h5py.Dataset):
            array = obj[()]
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())

    with open_h5(path) as f:
        feed("/", f)
        names: list[str] = []
        f.visit(names.append)
        for name in sorted(names):
            feed(name, f[name])
    return digest.hexdigest()
