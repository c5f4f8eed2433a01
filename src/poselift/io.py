"""Atomic output files and checked readers for the small formats the CLI exchanges (npz, json, HDF5).

Outputs are written under a temporary name in the destination folder and renamed at the end, so an
interrupted or failed command never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import pickle
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from poselift.errors import InputError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds. A place that
    cannot be written (a file where a folder should be, no permission, a read-only disk) is an InputError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise InputError(path, f"cannot be written ({e.strerror or e})") from None
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        try:
            yield tmp
            os.replace(tmp, path)
        except OSError as e:
            if write_failure(e) is None:
                raise
            raise InputError(path, f"cannot be written ({write_failure(e)}); the previous file, if any, is kept") \
                from None
    finally:
        tmp.unlink(missing_ok=True)


WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}


def write_failure(error: BaseException | None) -> str | None:
    """The ``strerror`` of a disk-full or write error (ENOSPC, EDQUOT, EFBIG, EIO, EROFS) found in ``error`` or
    the exceptions it was raised from or during (torch wraps a failed write in a RuntimeError), else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
            return error.strerror or os.strerror(error.errno)
        error = error.__cause__ or error.__context__
    return None


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_npz(path: str | os.PathLike, **arrays) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:  # a file object stops numpy from appending ".npz" to the temp name
            np.savez_compressed(f, **arrays)


def read_json(path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, f"not valid JSON ({e})") from None


def open_npz(path: str | os.PathLike, allow_pickle: bool = False) -> np.lib.npyio.NpzFile:
    """Open an ``.npz`` archive, turning missing, truncated or foreign files into :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        data = np.load(path, allow_pickle=allow_pickle)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(path, f"not a readable .npz archive ({type(e).__name__}: {e})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError(path, "holds a single array, expected an .npz archive")
    try:
        check_npz_sizes(data.zip, path)
    except BaseException:
        data.close()
        raise
    return data


def check_npz_sizes(archive: zipfile.ZipFile, path: str | os.PathLike) -> None:
    """Refuse, before anything is allocated, an ``.npy`` member whose header declares more bytes than the
    member holds (a tiny file claiming terabytes), or whose header is unreadable."""
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            continue
        key = info.filename[:-4]
        try:
            with archive.open(info) as fp:
                version = np.lib.format.read_magic(fp)
                shape, _, dtype = (np.lib.format.read_array_header_1_0(fp) if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0(fp))
                header = fp.tell()
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise InputError(path, f"key '{key}' is unreadable ({type(e).__name__}: {e})") from None
        if dtype.hasobject:
            continue  # pickled objects: refused when read (no allow_pickle), nothing to size
        declared = math.prod(shape) * dtype.itemsize
        if declared > info.file_size - header:
            raise InputError(path, f"key '{key}' declares shape {tuple(shape)} ({declared:,} bytes) but holds "
                                   f"{max(info.file_size - header, 0):,} bytes")


def npz_array(data: np.lib.npyio.NpzFile, key: str, path: str | os.PathLike):
    """``data[key]`` or an :class:`InputError` naming the missing key and the keys that exist."""
    if key not in data.files:
        raise InputError(path, f"missing key '{key}' (has: {', '.join(data.files) or 'nothing'})")
    try:
        return data[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(path, f"key '{key}' is unreadable ({type(e).__name__}: {e})") from None


def open_h5(path: str | os.PathLike, mode: str = "r") -> h5py.File:
    """Open an HDF5 file for reading, with a one-line error for missing, truncated or non-HDF5 files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        return h5py.File(path, mode)
    except OSError as e:
        raise InputError(path, f"not a readable HDF5 file ({e})") from None


def read_h5_dataset(f: h5py.File, key: str, path: str | os.PathLike, dtype=np.float64) -> np.ndarray:
    """``f[key]`` as an array, or an :class:`InputError` naming the missing or unreadable dataset."""
    obj = f.get(key)
    if not isinstance(obj, h5py.Dataset):
        raise InputError(path, f"missing dataset '{key}' (has: {', '.join(sorted(f.keys())) or 'nothing'})")
    try:
        return np.asarray(read_dataset(obj, path), dtype=dtype)
    except (OSError, ValueError, TypeError) as e:
        raise InputError(path, f"dataset '{key}' is unreadable ({type(e).__name__}: {e})") from None


# gzip, HDF5's strongest standard filter, compresses at most ~1032:1; a dataset may also hold a small
# unwritten tail (fill values). Anything declaring more than this is not data a file of its size can hold.
MAX_COMPRESSION = 1100
SMALL_DATASET = 1 << 20


def read_dataset(obj: h5py.Dataset, path: str | os.PathLike, index=()) -> np.ndarray:
    """``obj[index]`` after checking that the dataset's declared size is one the file can hold: a few KB of
    file declaring terabytes (unwritten chunks read as fill values) is refused before anything is allocated."""
    declared = int(obj.size or 0) * obj.dtype.itemsize
    if declared > SMALL_DATASET:
        stored = obj.id.get_storage_size()
        if declared > MAX_COMPRESSION * stored + SMALL_DATASET:
            raise InputError(path, f"dataset '{obj.name}' declares shape {obj.shape} ({declared:,} bytes) but its "
                                   f"file stores {stored:,} bytes for it")
    return obj[index]


def check_finite(array: np.ndarray, path: str | os.PathLike, what: str) -> None:
    """Raise if ``array`` holds NaN or infinite values."""
    bad = ~np.isfinite(array)
    if bad.any():
        raise InputError(path, f"{what} has {int(bad.sum())} non-finite values (NaN or inf)")


def check_joints(array: np.ndarray, path: str | os.PathLike, what: str, joints: int, dims: int) -> None:
    """Raise unless ``array`` has shape (..., joints, dims)."""
    if array.ndim < 2 or array.shape[-2:] != (joints, dims):
        raise InputError(path, f"{what} has shape {tuple(array.shape)}, expected (..., {joints}, {dims})")


class SafeUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, strings, numbers and numpy arrays only: no code from the file runs.
    (``_codecs.encode`` is how protocol-2 pickles, which numpy < 1.17 wrote, spell bytes.)"""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")} | {
        (module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                                      "numpy._core.numeric")
        for name in ("_reconstruct", "scalar", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        found = super().find_class(module, name)
        return _reconstruct_empty(found) if name == "_reconstruct" else found


def _reconstruct_empty(reconstruct):
    """numpy's ``_reconstruct`` for arrays numpy pickled, which always start empty (shape (0,)) and get their
    data from ``__setstate__`` (which checks it against the shape); a pickle asking it to allocate a declared
    shape (terabytes from a few bytes of file) is refused before anything is allocated."""

    def guarded(subtype, shape, dtype):
        size = math.prod(shape) if isinstance(shape, tuple) else shape
        if not isinstance(size, int) or size > 1:
            raise pickle.UnpicklingError(f"refusing to allocate an array of declared shape {shape!r}")
        return reconstruct(subtype, shape, dtype)

    return guarded


def read_pickled_npz(path: str | Path, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """The objects stored under ``keys`` of a VideoPose3D ``.npz`` (0-d object arrays holding dicts),
    unpickled with an allow-list instead of ``np.load(allow_pickle=True)``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    out = {}
    try:
        with zipfile.ZipFile(path) as archive:
            names = {n[:-4]: n for n in archive.namelist() if n.endswith(".npy")}
            missing = [k for k in keys if k not in names]
            if missing:
                raise InputError(path, f"missing key '{missing[0]}' (has: {', '.join(sorted(names)) or 'nothing'})")
            for key in keys + tuple(k for k in optional if k in names):
                with archive.open(names[key]) as fp:
                    version = np.lib.format.read_magic(fp)
                    _, _, dtype = (np.lib.format.read_array_header_1_0(fp) if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0(fp))
                    if not dtype.hasobject:
                        raise InputError(path, f"key '{key}' holds a plain {dtype} array, expected a pickled dict")
                    array = SafeUnpickler(fp).load()
                out[key] = array.item() if isinstance(array, np.ndarray) and array.shape == () else array
    except InputError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, pickle.UnpicklingError) as e:
        raise InputError(path, f"not a readable .npz archive of pickled objects ({type(e).__name__}: {e})") from None
    return out


def read_manifest(path: str | os.PathLike, prefix: str = "") -> dict[str, str]:
    """A ``sha256sum``-style manifest (``<sha256>  <path>`` per line) -> {path: hex digest}; with ``prefix``
    every path must start with ``prefix/``, which is dropped from the keys."""
    import re

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found")
    manifest = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not name or (prefix and not name.startswith(f"{prefix}/")):
            raise InputError(path, f"line {number} is not '<sha256>  {prefix + '/' if prefix else ''}<path>'")
        manifest[name[len(prefix) + 1:] if prefix else name] = digest
    return manifest


def verify_sha256(data: bytes, name: str, manifest: dict, where: str | os.PathLike, shown: str | None = None) -> bytes:
    """``data`` if its SHA-256 is the manifest's entry for ``name``, else an InputError naming ``where`` and
    the file (``shown``, default ``name``): a file missing from the manifest, or a corrupt or altered one."""
    import hashlib

    shown = shown or name
    if name not in manifest:
        raise InputError(where, f"{shown} is not listed in the manifest")
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest[name]:
        raise InputError(where, f"{shown}: SHA-256 {digest[:16]}... does not match the manifest "
                                f"({manifest[name][:16]}...): corrupt or altered file")
    return data


def mirror_or_download(source, env_var: str, download, what: str, unreachable: type = InputError) -> Path:
    """Where a dataset's or asset's files come from: an explicit ``source`` (which must exist), else the mirror
    ``$env_var`` if it exists, else ``download()`` (-> a local path). A download that fails with
    ``unreachable`` becomes one error saying what was tried; a file that arrives corrupt is reported as is."""
    if source is not None:
        if not Path(source).exists():
            raise InputError(source, f"no such {what} mirror (folder or archive)")
        return Path(source)
    mirror = os.environ.get(env_var)
    if mirror and Path(mirror).exists():
        return Path(mirror)
    try:
        return download()
    except unreachable as e:
        why = f"{env_var}={mirror} does not exist" if mirror else f"no source given and {env_var} is unset"
        raise InputError(e.path, f"no {what} source reachable: {why}, and {e.problem}") from None


@contextlib.contextmanager
def open_layout(path: str | os.PathLike, fmt: str, version: int, what: str) -> Iterator[h5py.File]:
    """An HDF5 file of one of poselift's versioned layouts, open for reading, after checking its ``format``
    and ``version`` attributes; a missing, foreign, newer or unreadable file -> one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(path, f"not a readable HDF5 file ({e})") from None
    with f:
        if f.attrs.get("format") != fmt:
            raise InputError(path, f"not a poselift {what} (format attribute {f.attrs.get('format')!r}, "
                                   f"expected {fmt!r})")
        if f.attrs.get("version") != version:
            raise InputError(path, f"{what} version {f.attrs.get('version')} is not supported (this poselift "
                                   f"reads version {version})")
        yield f
