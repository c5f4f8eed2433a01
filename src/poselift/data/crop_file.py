"""The labelled-crops layout: what ``poselift render`` writes for the open benchmark, and what real labelled
frames (:func:`poselift.data.frames.labelled_crops`) become, so the image stages read both alike.

One HDF5 file (version 1)::

    attrs: format "poselift.crops", version 1, source (what made it: "render" | "frames"),
           prepared (content hash of the prepared file it renders; "" for real frames),
           settings (JSON: every parameter that decided the pixels), crop_size [H, W] (256, 192)
    /<subject>/<sequence>/<camera>/       one group per view (the prepared file's sequence key and camera)
        frame       (N,) int64          frame index in the prepared sequence (or in the source video)
        crops       (N,) vlen uint8     the RGB crop, JPEG or PNG bytes (attrs: codec)
        keypoints   (N, 17, 2) float32  H36M-17 2D in crop pixels (NaN: an unlabelled joint of a real frame)
        keypoints_frame (N, 17, 2) float32  the same in frame pixels
        affine      (N, 2, 3) float32   frame pixels -> crop pixels (:mod:`poselift.data.crops`)
        box         (N, 4) float32      the person box x0, y0, x1, y1 in frame pixels
        visibility  (N, 17) float32     1: seen, 0: occluded (renders: by the body itself, from the depth
                                        buffer) or unlabelled (real frames)
        frames      (N,) vlen uint8     optional: the whole frame, same codec
        attrs: width, height (the frame's size), f (2,), c (2,) (the pinhole intrinsics the frame was
               rendered with, no distortion), R (3, 3), T (3,) (world -> camera, mm)

Pixel centres are at integer coordinates. Written atomically, view by view (:class:`CropWriter`); read crop
by crop (:class:`CropFile`), so a data loader decodes only its batch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poselift.errors import InputError

FORMAT = "poselift.crops"
VERSION = 1
ARRAYS = ("frame", "keypoints", "keypoints_frame", "affine", "box", "visibility")
DTYPES = {"frame": np.int64, "keypoints": np.float32, "keypoints_frame": np.float32, "affine": np.float32,
          "box": np.float32, "visibility": np.float32}


@dataclass
class View:
    """The crops of one (sequence, camera): arrays of :data:`ARRAYS`, the encoded images, the camera."""

    key: str  # "<subject>/<sequence>/<camera>"
    frame: np.ndarray
    keypoints: np.ndarray
    keypoints_frame: np.ndarray
    affine: np.ndarray
    box: np.ndarray
    visibility: np.ndarray
    crops: list  # encoded bytes (uint8 arrays)
    frames: list | None = None
    camera: dict | None = None  # width, height, f, c, R, T

    def __len__(self) -> int:
        return len(self.frame)


class CropWriter:
    """``with CropWriter(path, source, prepared, settings) as w: w.add(view)``: the file appears complete
    when the block ends without an error, or not at all."""

    def __init__(self, path: str | os.PathLike, source: str, prepared: str, settings: dict,
                 crop_size=(256, 192), codec: str = "jpeg"):
        self.path, self.codec = Path(path), codec
        self.attrs = {"format": FORMAT, "version": VERSION, "source": source, "prepared": prepared,
                      "settings": json.dumps(settings, sort_keys=True), "crop_size": list(crop_size)}

    def __enter__(self):
        import h5py

        from poselift.io import atomic_output

        self._atomic = atomic_output(self.path)
        tmp = self._atomic.__enter__()
        self._file = h5py.File(tmp, "w")
        self._file.attrs.update(self.attrs)
        return self

    def add(self, view: View) -> None:
        import h5py

        g = self._file.create_group(view.key)
        n = len(view)
        for name in ARRAYS:
            g.create_dataset(name, data=np.asarray(getattr(view, name), dtype=DTYPES[name]).reshape(n, *_tail(name)))
        for name in ("crops", "frames"):
            images = getattr(view, name)
            if images is None:
                continue
            ds = g.create_dataset(name, (n,), dtype=h5py.vlen_dtype(np.uint8))
            for i, data in enumerate(images):
                ds[i] = data
            ds.attrs["codec"] = self.codec
        for k, v in (view.camera or {}).items():
            g.attrs[k] = v

    def __exit__(self, *exc):
        self._file.close()
        return self._atomic.__exit__(*exc)


def _tail(name: str) -> tuple:
    return {"frame": (), "keypoints": (17, 2), "keypoints_frame": (17, 2), "affine": (2, 3), "box": (4,),
            "visibility": (17,)}[name]


class CropFile:
    """Read access: ``views`` (keys), ``settings``, ``len(f)`` crops in all, ``f.view(key)`` (arrays, no
    images), ``f.crop(key, i)`` (decoded RGB) and ``f.sample(key, i)`` (crop + its labels)."""

    def __init__(self, path: str | os.PathLike):
        import h5py

        from poselift.io import open_layout

        self.path = Path(path)
        with open_layout(self.path, FORMAT, VERSION, "crops file") as f:
            self.source, self.prepared = str(f.attrs["source"]), str(f.attrs["prepared"])
            self.settings = json.loads(f.attrs["settings"])
            self.crop_size = tuple(int(v) for v in f.attrs["crop_size"])
            views: list[str] = []
            f.visititems(lambda name, obj: views.append(name) if isinstance(obj, h5py.Group) and "crops" in obj
                         else None)
            self.views = sorted(views)
            self.counts = {v: int(f[v]["frame"].shape[0]) for v in self.views}
        self._file, self._pid = None, None

    def __len__(self) -> int:
        return sum(self.counts.values())

    def _h5(self):
        import h5py

        if self._file is None or self._pid != os.getpid():  # one handle per process (data-loader workers)
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def view(self, key: str) -> View:
        """The labels and camera of one view (images not decoded: ``crops`` holds the encoded bytes)."""
        if key not in self.counts:
            raise InputError(self.path, f"no view '{key}'")
        from poselift.io import read_dataset

        g = self._h5()[key]
        arrays = {name: read_dataset(g[name], self.path) for name in ARRAYS}
        return View(key=key, crops=list(read_dataset(g["crops"], self.path)),
                    frames=list(read_dataset(g["frames"], self.path)) if "frames" in g else None,
                    camera={k: g.attrs[k] for k in g.attrs}, **arrays)

    def crop(self, key: str, index: int) -> np.ndarray:
        from poselift.data.images import decode_image

        n = self.counts.get(key)
        if n is None:
            raise InputError(self.path, f"no view '{key}'")
        if not 0 <= index < n:
            raise InputError(self.path, f"view '{key}' has {n} crops, no crop {index}")
        return decode_image(self._h5()[key]["crops"][index], f"{self.path}:{key}[{index}]")

    def sample(self, key: str, index: int) -> dict:
        """One crop and its labels: image (H, W, 3) uint8, keypoints, keypoints_frame, affine, box, visibility,
        frame."""
        g = self._h5()[key]
        return {"image": self.crop(key, index), **{name: g[name][index] for name in ARRAYS}}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
