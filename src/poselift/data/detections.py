"""The detections HDF5 layout: 2D keypoints and confidences per sequence, camera and frame.

Every 2D source writes it (projected ground truth, the synthetic detector, imported CPN / Stacked
Hourglass detections, image detectors), so lifting never knows which detector made its input.

Layout (format ``poselift.detections``, version 1)::

    /                                  attrs: format, version, detector, dataset, prepared (the prepared
                                              file's content hash), params (JSON of the detector's settings)
    /sequences/<subject>/<sequence>/   attrs: cameras (same names and order as the prepared file)
        keypoints  (C, F, 17, 2) float32   pixels, Human3.6M-17 order
        scores     (C, F, 17) float32      confidence in [0, 1]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from poselift.errors import InputError
from poselift.io import atomic_output, check_finite, check_joints, open_h5, read_dataset

FORMAT = "poselift.detections"
VERSION = 1


@dataclass
class Detections:
    detector: str
    dataset: str
    prepared: str  # content hash of the prepared dataset these detections belong to
    keypoints: dict[str, np.ndarray]  # "subject/sequence" -> (C, F, 17, 2)
    scores: dict[str, np.ndarray]  # "subject/sequence" -> (C, F, 17)
    cameras: dict[str, list[str]]  # "subject/sequence" -> camera names
    params: dict = field(default_factory=dict)


def write_detections(path: str | os.PathLike, det: Detections) -> None:
    _validate(det, path)
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(format=FORMAT, version=VERSION, detector=det.detector, dataset=det.dataset,
                           prepared=det.prepared, params=json.dumps(det.params, sort_keys=True))
            for key in sorted(det.keypoints):
                g = f.create_group(f"sequences/{key}")
                g.attrs["cameras"] = list(det.cameras[key])
                g.create_dataset("keypoints", data=det.keypoints[key].astype(np.float32), compression="gzip")
                g.create_dataset("scores", data=det.scores[key].astype(np.float32), compression="gzip")


def load_detections(path: str | os.PathLike) -> Detections:
    path = Path(path)
    with open_h5(path) as f:
        if f.attrs.get("format") != FORMAT:
            raise InputError(path, f"not a poselift detections file (format attribute {f.attrs.get('format')!r})")
        if int(f.attrs.get("version", -1)) != VERSION:
            raise InputError(path, f"detections version {f.attrs.get('version')} is not supported")
        try:
            det = Detections(detector=str(f.attrs["detector"]), dataset=str(f.attrs["dataset"]),
                             prepared=str(f.attrs["prepared"]), params=json.loads(f.attrs["params"]),
                             keypoints={}, scores={}, cameras={})
            for subject, group in f["sequences"].items():
                for name, g in group.items():
                    key = f"{subject}/{name}"
                    det.keypoints[key] = read_dataset(g["keypoints"], path)
                    det.scores[key] = read_dataset(g["scores"], path)
                    det.cameras[key] = [str(c) for c in g.attrs["cameras"]]
        except (KeyError, OSError, ValueError) as e:
            raise InputError(path, f"damaged detections file ({type(e).__name__}: {e})") from None
    _validate(det, path)
    return det


def _validate(det: Detections, path) -> None:
    if not det.keypoints:
        raise InputError(path, "no sequences")
    for key, kp in det.keypoints.items():
        check_joints(kp, path, f"sequence {key} keypoints", 17, 2)
        sc = det.scores.get(key)
        if kp.ndim != 4 or sc is None or sc.shape != kp.shape[:3]:
            raise InputError(path, f"sequence {key}: keypoints {kp.shape} and scores "
                                   f"{None if sc is None else sc.shape} do not match as (C, F, 17, 2) / (C, F, 17)")
        if len(det.cameras.get(key, ())) != kp.shape[0]:
            raise InputError(path, f"sequence {key}: {kp.shape[0]} camera views but cameras "
                                   f"{det.cameras.get(key)}")
        check_finite(kp, path, f"sequence {key} keypoints")
        check_finite(sc, path, f"sequence {key} scores")
