"""Pixels in the data layer: compressed images in HDF5, read back frame by frame, and the horizontal flip of
an image together with its keypoints.

Layout of an image file (one HDF5 file, any number of image sequences)::

    attrs: format "poselift.images", version 1
    /<key>            (N,) variable-length uint8: the N images of one sequence, each a JPEG or PNG file's
                      bytes (OpenCV's codecs), attrs: codec ("jpeg" | "png"), height, width

A key is a plain name such as ``"S1/Walking 1/54138969"`` (HDF5 groups split it at the slashes). Images
are RGB uint8 (H, W, 3). JPEG is lossy (quality 95 by default, ~1/10 the size of PNG for rendered people);
PNG is exact. Writing is atomic (:func:`poselift.io.atomic_output`); reading decodes one image at a time,
so a data loader touches only the frames of its batch.

The flip mirrors about the image's vertical centre line with pixel centres at integer coordinates:
x -> (W - 1) - x, and swaps left and right joints (:data:`poselift.skeleton.H36M17`), the image-side twin of
:func:`poselift.skeleton.flip_poses` for normalised 2D keypoints.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from poselift.errors import InputError

FORMAT = "poselift.images"
VERSION = 1
CODECS = {"jpeg": ".jpg", "png": ".png"}


def encode_image(image: np.ndarray, codec: str = "jpeg", quality: int = 95) -> np.ndarray:
    """An RGB uint8 (H, W, 3) image as the bytes of a JPEG or PNG file (a uint8 array)."""
    import cv2

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if codec == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, data = cv2.imencode(CODECS[codec], np.ascontiguousarray(image[..., ::-1]), params)  # OpenCV is BGR
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {codec}")
    return data.reshape(-1)


def decode_image(data: np.ndarray, where: str | os.PathLike = "image") -> np.ndarray:
    """The RGB uint8 (H, W, 3) image in a JPEG or PNG file's bytes; undecodable bytes -> InputError."""
    import cv2

    try:
        image = cv2.imdecode(np.frombuffer(np.asarray(data, dtype=np.uint8), dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:  # e.g. a header declaring more pixels than CV_IO_MAX_IMAGE_PIXELS: refused unallocated
        reason = str(e).strip().splitlines()[-1].split(")", 1)[-1].strip() or "OpenCV refused it"
        raise InputError(where, f"not a decodable JPEG or PNG image ({reason})") from None
    if image is None:
        raise InputError(where, "not a decodable JPEG or PNG image")
    return image[..., ::-1].copy()


def write_images(path: str | os.PathLike, sequences: dict, codec: str = "jpeg", quality: int = 95,
                 progress: bool = False) -> None:
    """Write {key: iterable of RGB images (or an (N, H, W, 3) array)} atomically; all images of a key share
    one size."""
    import h5py
    from tqdm import tqdm

    from poselift.io import atomic_output

    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"], f.attrs["version"] = FORMAT, VERSION
        for key, images in tqdm(sequences.items(), desc="write images", unit="seq", disable=not progress):
            encoded, shape = [], None
            for image in images:
                if shape is None:
                    shape = np.shape(image)
                elif np.shape(image) != shape:
                    raise ValueError(f"{key}: images of one sequence must share a size ({shape} vs {np.shape(image)})")
                encoded.append(encode_image(image, codec, quality))
            ds = f.create_dataset(key, (len(encoded),), dtype=h5py.vlen_dtype(np.uint8))
            for i, data in enumerate(encoded):
                ds[i] = data
            ds.attrs["codec"] = codec
            ds.attrs["height"], ds.attrs["width"] = (shape[0], shape[1]) if shape is not None else (0, 0)


class ImageFile:
    """Read access to an image file: ``keys``, ``len(f[key])`` via :meth:`count`, ``f.read(key, i)``.

    The HDF5 file is opened on first read, in the process that reads (safe for forked data-loader workers).
    """

    def __init__(self, path: str | os.PathLike):
        import h5py

        from poselift.io import open_layout

        self.path = Path(path)
        with open_layout(self.path, FORMAT, VERSION, "image file") as f:
            keys: list[str] = []
            f.visititems(lambda name, obj: keys.append(name) if isinstance(obj, h5py.Dataset) else None)
            self.sizes = {k: (int(f[k].attrs.get("height", 0)), int(f[k].attrs.get("width", 0))) for k in keys}
            self.counts = {k: int(f[k].shape[0]) for k in keys}
        self.keys = sorted(self.counts)
        self._file = None
        self._pid = None

    def count(self, key: str) -> int:
        if key not in self.counts:
            raise InputError(self.path, f"no images for '{key}'")
        return self.counts[key]

    def read(self, key: str, index: int) -> np.ndarray:
        """Image ``index`` of sequence ``key``, RGB uint8 (H, W, 3)."""
        import h5py

        n = self.count(key)
        if not 0 <= index < n:
            raise InputError(self.path, f"'{key}' has {n} images, no image {index}")
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return decode_image(self._file[key][index], f"{self.path}:{key}[{index}]")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def flip_image(image: np.ndarray, keypoints: np.ndarray | None = None):
    """Mirror an (H, W, C) image left-right; with ``keypoints`` (..., 17, 2) in its pixels, also mirror
    them (x -> W - 1 - x) and swap left and right joints. Returns the image, or (image, keypoints)."""
    from poselift.skeleton import H36M17

    flipped = np.ascontiguousarray(image[:, ::-1])
    if keypoints is None:
        return flipped
    kp = np.array(keypoints, dtype=np.float64 if np.asarray(keypoints).dtype == np.float64 else np.float32)
    kp = kp[..., H36M17.flip_permutation, :]
    kp[..., 0] = (image.shape[1] - 1) - kp[..., 0]
    return flipped, kp
