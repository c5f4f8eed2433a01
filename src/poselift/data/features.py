"""The features layout: an image encoder's feature map per person crop, computed once (``poselift detect
--features``) so that a lifter on a frozen encoder (Lifting by Image, :mod:`poselift.lifting.lbi`) trains
without running the encoder again.

One HDF5 file (version 1)::

    attrs: format "poselift.features", version 1, detector (name), settings (JSON: the detector's settings,
           checkpoint and input size included), feature_map (which map: "hrnet-stage4-high-resolution"),
           stride (input pixels per feature cell, 4), input_size [H, W] (the network input the map was
           computed at), crop_size [H, W] (the stored crops'), shape [C, h, w], crops (the crops file),
           prepared (content hash of the prepared file the crops were rendered from; "" for real frames)
    /<subject>/<sequence>/<camera>/       one group per view, as in the crops file
        frame     (N,) int64            frame index in the prepared sequence (the crops file's ``frame``)
        features  (N, C, h, w) float16  the map of each crop, in the crops file's order (one chunk a crop)

Written atomically, view by view (:class:`FeatureWriter`); :class:`FeatureFile` reads a view or all of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from poselift.errors import InputError

FORMAT = "poselift.features"
VERSION = 1


def features_path(dataset: str, detector: str) -> Path:
    """Default location: data/features/<dataset>/<detector>.h5 (beside the detections of the same pass)."""
    return Path("data") / "features" / dataset / f"{detector}.h5"


class FeatureWriter:
    """``with FeatureWriter(path, attrs) as w: w.add(key, frame, features)``: the file appears complete when
    the block ends without an error, or not at all. ``attrs`` are the file attributes other than format,
    version and shape (shape is taken from the first view)."""

    def __init__(self, path: str | os.PathLike, attrs: dict):
        self.path, self.attrs = Path(path), dict(attrs)
        self.shape = None

    def __enter__(self):
        import h5py

        from poselift.io import atomic_output

        self._atomic = atomic_output(self.path)
        tmp = self._atomic.__enter__()
        self._file = h5py.File(tmp, "w")
        for k, v in {"format": FORMAT, "version": VERSION, **self.attrs}.items():
            self._file.attrs[k] = json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
        return self

    def add(self, key: str, frame: np.ndarray, features: np.ndarray) -> None:
        """One view: frame indices (N,) and maps (N, C, h, w) (stored as float16)."""
        features = np.asarray(features)
        frame = np.asarray(frame, dtype=np.int64)
        if features.ndim != 4 or len(features) != len(frame):
            raise ValueError(f"view {key}: features {features.shape} for {len(frame)} frames")
        if self.shape is None:
            self.shape = tuple(int(v) for v in features.shape[1:])
            self._file.attrs["shape"] = list(self.shape)
        elif features.shape[1:] != self.shape:
            raise ValueError(f"view {key}: feature map {features.shape[1:]}, the file's is {self.shape}")
        g = self._file.create_group(key)
        g.create_dataset("frame", data=frame)
        g.create_dataset("features", data=features.astype(np.float16),
                         chunks=(1, *self.shape) if len(frame) else None)

    def __exit__(self, *exc):
        if self.shape is None and exc[0] is None:
            self._file.attrs["shape"] = [0, 0, 0]
        self._file.close()
        return self._atomic.__exit__(*exc)


class FeatureFile:
    """Read access: ``views`` (keys), ``counts``, ``shape`` (C, h, w), ``stride``, ``input_size``,
    ``crop_size``, ``feature_map``, ``settings``; ``view(key) -> (frame (N,), features (N, C, h, w) float16)``."""

    def __init__(self, path: str | os.PathLike):
        import h5py

        from poselift.io import open_layout

        self.path = Path(path)
        with open_layout(self.path, FORMAT, VERSION, "features file") as f:
            try:
                self.detector = str(f.attrs["detector"])
                self.feature_map = str(f.attrs["feature_map"])
                self.stride = int(f.attrs["stride"])
                self.input_size = tuple(int(v) for v in f.attrs["input_size"])
                self.crop_size = tuple(int(v) for v in f.attrs["crop_size"])
                self.shape = tuple(int(v) for v in f.attrs["shape"])
                self.prepared = str(f.attrs.get("prepared", ""))
                self.settings = json.loads(f.attrs["settings"]) if "settings" in f.attrs else {}
            except KeyError as e:
                raise InputError(self.path, f"features file without the attribute {e}") from None
            views: list[str] = []
            f.visititems(lambda name, obj: views.append(name) if isinstance(obj, h5py.Group) and "features" in obj
                         else None)
            self.views = sorted(views)
            self.counts = {}
            for v in self.views:
                g = f[v]
                if "frame" not in g or g["features"].shape[1:] != self.shape or \
                        g["frame"].shape[0] != g["features"].shape[0]:
                    raise InputError(self.path, f"view '{v}': features {g['features'].shape} do not fit the file's "
                                                f"shape {list(self.shape)} and its frames")
                self.counts[v] = int(g["frame"].shape[0])

    def __len__(self) -> int:
        return sum(self.counts.values())

    def view(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(frame (N,) int64, features (N, C, h, w) float16) of view ``key``."""
        import h5py

        if key not in self.counts:
            raise InputError(self.path, f"no view '{key}'")
        with h5py.File(self.path, "r") as f:
            return f[key]["frame"][()].astype(np.int64), f[key]["features"][()]

    def read(self, keys) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{key: (frame, features)} of several views, the file opened once."""
        import h5py

        missing = [k for k in keys if k not in self.counts]
        if missing:
            raise InputError(self.path, f"no view '{missing[0]}' ({len(missing)} of the {len(keys)} asked for)")
        with h5py.File(self.path, "r") as f:
            return {k: (f[k]["frame"][()].astype(np.int64), f[k]["features"][()]) for k in keys}
