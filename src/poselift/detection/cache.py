"""A content-addressed cache of network detections, so a second workflow (another project, or after the
detections were deleted) copies them instead of running the network again.

``poselift detect`` keys an entry by :func:`detection_key`: SHA-256 over a JSON of the inputs' content
(the checkpoint's and the crops file's bytes, the prepared file's content hash), every option that changes
the output file, the device type and torch version (float results may differ between them), and the code
fingerprint. Layout::

    <DIR>/detections/<key>/detections.h5     the detections file, as `poselift detect` wrote it
                          /features.h5       the feature maps, when --features was asked for
                          /manifest.json     the key's inputs, and each file's size and SHA-256

An entry is built in a temporary folder beside it and renamed into place, so it is complete or absent; one
whose files do not match its manifest (truncated, edited) is removed and counts as a miss. Hits are copied
out, never hard-linked: a link shares the inode, so an in-place change to the workspace file (h5py "r+",
a chmod by DVC or Snakemake) would change the entry every other project reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

LAYOUT = 1  # of the entries: a change makes every old entry a miss
FILES = {"detections": "detections.h5", "features": "features.h5"}
MANIFEST = "manifest.json"
CHUNK = 1 << 20


class DamagedEntry(Exception):
    """A cache entry that cannot be read or does not match its manifest."""


def default_dir(environ=os.environ) -> Path:
    """$POSELIFT_CACHE, else $SNAKEMAKE_OUTPUT_CACHE/poselift (a local folder, not a storage URI), else
    $XDG_CACHE_HOME/poselift or ~/.cache/poselift."""
    if environ.get("POSELIFT_CACHE"):
        return Path(environ["POSELIFT_CACHE"])
    snakemake = environ.get("SNAKEMAKE_OUTPUT_CACHE", "")
    if snakemake and "://" not in snakemake:
        return Path(snakemake) / "poselift"
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "poselift"


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def detection_key(inputs: dict) -> str:
    """SHA-256 of ``inputs`` (JSON values: digests, options, code fingerprint) and the cache layout."""
    text = json.dumps({"layout": LAYOUT, **inputs}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _copy(src: Path, dst: Path) -> dict:
    """Copy ``src`` to ``dst``; {"size", "sha256"} of the bytes copied. A read error is a DamagedEntry (the
    source is the entry on a hit), a write error an OSError."""
    digest, size = hashlib.sha256(), 0
    try:
        fin = open(src, "rb")
    except OSError as e:
        raise DamagedEntry(f"{src}: {e.strerror or e}") from None
    with fin, open(dst, "wb") as fout:
        while True:
            try:
                chunk = fin.read(CHUNK)
            except OSError as e:
                raise DamagedEntry(f"{src}: {e.strerror or e}") from None
            if not chunk:
                return {"size": size, "sha256": digest.hexdigest()}
            digest.update(chunk)
            size += len(chunk)
            fout.write(chunk)


class DetectionCache:
    """The entries under ``root``/detections: :meth:`fetch` copies an entry to the outputs, :meth:`store`
    adds one."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.entries = self.root / "detections"

    def fetch(self, key: str, outputs: dict) -> dict | None:
        """Copy entry ``key`` to ``outputs`` ({"detections": path, "features": path}), each atomically and
        only when every file matches the manifest; returns the manifest, or None on a miss (a damaged entry
        is removed). A failure to write an output raises (poselift.io.atomic_output's InputError)."""
        from poselift.io import atomic_output

        entry = self.entries / key
        if not entry.exists():
            return None
        try:
            manifest = self._manifest(entry, key, outputs)
            with contextlib.ExitStack() as stack:  # every output renamed into place, or none
                for name, dst in outputs.items():
                    tmp = stack.enter_context(atomic_output(dst))
                    if _copy(entry / FILES[name], tmp) != manifest["files"][FILES[name]]:
                        raise DamagedEntry(f"{entry / FILES[name]} does not match the manifest")
        except DamagedEntry:
            self.discard(entry)
            return None
        return manifest

    @staticmethod
    def _manifest(entry: Path, key: str, outputs: dict) -> dict:
        try:
            manifest = json.loads((entry / MANIFEST).read_text())
            files = manifest["files"]
            ok = manifest["key"] == key and set(files) == {FILES[name] for name in outputs} and all(
                set(files[f]) == {"size", "sha256"} for f in files)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DamagedEntry(f"{entry / MANIFEST}: {e}") from None
        if not ok:
            raise DamagedEntry(f"{entry / MANIFEST} does not describe this entry")
        return manifest

    def discard(self, entry: Path) -> None:
        """Remove an entry: renamed aside first (readers then miss it at once), then deleted."""
        trash = entry.with_name(f".{entry.name[:12]}.{os.getpid()}.{time.monotonic_ns()}.trash")
        with contextlib.suppress(OSError):
            entry.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)

    def store(self, key: str, outputs: dict, info: dict) -> bool:
        """Add entry ``key``: copies of ``outputs`` and a manifest (``info`` with the files' sizes and
        digests), renamed into place as one folder. False when the entry exists already (another job stored
        it); an OSError when the cache cannot be written."""
        entry = self.entries / key
        if entry.exists():
            return False
        self.entries.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", suffix=".tmp", dir=self.entries))
        try:
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700 folders; a shared cache needs the usual permissions
            files = {FILES[name]: _copy(Path(src), tmp / FILES[name]) for name, src in outputs.items()}
            (tmp / MANIFEST).write_text(json.dumps({**info, "key": key, "files": files}, indent=1, sort_keys=True))
            try:
                tmp.rename(entry)
            except OSError:
                if entry.exists():  # stored meanwhile by another job
                    return False
                raise
            return True
        except DamagedEntry as e:  # here the source is an output just written: not the cache's fault
            raise OSError(str(e)) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
