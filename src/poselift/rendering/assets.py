"""The MakeHuman CC0 body assets: where they come from, and proof that they are the files poselift expects.

Pipeline: a source (``source`` argument, else ``$POSELIFT_MAKEHUMAN_ASSETS``: a mirror folder holding
``makehuman-cc0-assets.tar.xz`` or an unpacked ``makehuman-cc0/`` tree, or the archive or tree itself; else
the needed files downloaded one by one from the upstream repository at the pinned commit and cached) ->
every file checked against the per-file SHA-256 manifest shipped with poselift
(``makehuman_manifest.sha256``, a copy of the mirror's ``MANIFEST.sha256``) as it is read -> an
:class:`Assets` holding the verified bytes and their decoded forms (text, JSON, material settings).
Geometry (the mesh, the skeleton, skinning, shape targets) is :mod:`poselift.rendering.body`.

Only MakeHuman's CC0 assets are used (the mesh, the default skeleton and its weights, the default skin's
material, the macro-detail targets); MakeHuman's code is AGPL and poselift neither includes nor reads it.

``python -m poselift.rendering.assets [SOURCE]`` checks a source: exit code 0, or 2 with one line
``poselift: error: <file>: <problem>`` (the CLI's convention).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import lzma
import os
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator, Mapping

from poselift.errors import InputError
from poselift.io import atomic_output, mirror_or_download, read_manifest, verify_sha256

# --- where the assets come from --------------------------------------------------------------------
UPSTREAM_REPO = "makehumancommunity/makehuman"
UPSTREAM_COMMIT = "a8bc2d54ff0ac92e78ff71431b1023eda42bf482"
UPSTREAM_FOLDER = "makehuman/data"  # the assets' folder in the upstream repository
BASE_URL = f"https://raw.githubusercontent.com/{UPSTREAM_REPO}/{UPSTREAM_COMMIT}"  # raw files at the commit
MANIFEST = Path(__file__).with_name("makehuman_manifest.sha256")  # copy of the mirror's MANIFEST.sha256
ASSETS_ENV = "POSELIFT_MAKEHUMAN_ASSETS"  # a mirror folder (archive or makehuman-cc0/ tree)
CACHE_ENV = "POSELIFT_CACHE"  # where downloaded files are kept (default ~/.cache/poselift)
ROOT = "makehuman-cc0"  # the folder the archive unpacks to; the manifest's paths start with it
ARCHIVE = "makehuman-cc0-assets.tar.xz"

# --- the files the body needs (paths inside makehuman-cc0/, the same inside upstream's makehuman/data/) --
MESH = "3dobjs/base.obj"
SKELETON = "rigs/default.mhskel"
WEIGHTS = "rigs/default_weights.mhw"
MATERIAL = "skins/default.mhmat"
TARGETS = "targets/macrodetails/"  # every *.target the manifest lists under it
# LICENSE.ASSETS.md and SOURCE_COMMIT are written by the mirror (not upstream files): checked when read
# from a mirror, never required.


def load_manifest(path: str | os.PathLike = MANIFEST) -> dict[str, str]:
    """The shipped ``sha256sum``-style manifest -> {path inside makehuman-cc0/: hex digest}."""
    return read_manifest(path, prefix=ROOT)


def needed_files(manifest: Mapping[str, str]) -> set[str]:
    """The files :func:`load_assets` returns: mesh, skeleton, weights, material and every target."""
    wanted = {MESH, SKELETON, WEIGHTS, MATERIAL} | {n for n in manifest if n.startswith(TARGETS)
                                                     and n.endswith(".target")}
    unlisted = sorted(wanted - set(manifest))
    if unlisted:
        raise InputError(MANIFEST, f"does not list {unlisted[0]}")
    return wanted


# --- the one entry point ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Assets:
    """Verified asset files (path inside ``makehuman-cc0/`` -> bytes) and their decoded forms."""

    source: str  # where they were read from (mirror, archive, tree or download cache)
    files: Mapping[str, bytes]

    def where(self, name: str) -> str:
        return f"{self.source}:{name}"

    def text(self, name: str) -> str:
        try:
            return self.files[name].decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(self.where(name), f"not UTF-8 text ({e})") from None

    def json(self, name: str) -> dict:
        try:
            value = json.loads(self.files[name])
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(self.where(name), f"not valid JSON ({e})") from None
        if not isinstance(value, dict):
            raise InputError(self.where(name), "expected a JSON object")
        return value

    @property
    def mesh(self) -> str:
        """``base.obj``: the base mesh as Wavefront OBJ text."""
        return self.text(MESH)

    @cached_property
    def skeleton(self) -> dict:
        """``default.mhskel``: ``bones`` (name -> parent, head, tail, rotation_plane) and ``joints``
        (name -> vertex indices), ``planes`` (name -> three joint names)."""
        value = self.json(SKELETON)
        for key in ("bones", "joints", "planes"):
            if not isinstance(value.get(key), dict):
                raise InputError(self.where(SKELETON), f"missing '{key}' object")
        return value

    @cached_property
    def weights(self) -> dict[str, list]:
        """``default_weights.mhw``: bone name -> [[vertex index, weight], ...] (not normalised)."""
        value = self.json(WEIGHTS).get("weights")
        if not isinstance(value, dict):
            raise InputError(self.where(WEIGHTS), "missing 'weights' object")
        return value

    @cached_property
    def material(self) -> dict[str, str]:
        """``default.mhmat``: setting -> value (text after the key; comments dropped)."""
        settings = {}
        for line in self.text(MATERIAL).splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "//")):
                key, _, value = line.partition(" ")
                settings[key] = value.strip()
        return settings

    @property
    def targets(self) -> dict[str, str]:
        """Target name (file stem) -> ``.target`` text, sorted by name."""
        return {Path(n).stem: self.text(n) for n in sorted(self.files) if n.startswith(TARGETS)}


def load_assets(source: str | os.PathLike | None = None, *, manifest: str | os.PathLike = MANIFEST,
                cache_dir: str | os.PathLike | None = None, base_url: str | None = None,
                opener: Callable = urllib.request.urlopen) -> Assets:
    """The verified assets from ``source``, else ``$POSELIFT_MAKEHUMAN_ASSETS``, else a (cached) download
    from ``base_url`` (default: the upstream repository's raw files at the pinned commit)."""
    sums = load_manifest(manifest)
    wanted = needed_files(sums)
    where = resolve_source(source, wanted, sums, cache_dir, base_url, opener)
    files = dict(read_source(where, wanted, sums))
    missing = sorted(wanted - set(files))
    if missing:
        raise InputError(where, f"lacks {len(missing)} file(s) listed in the manifest, e.g. {ROOT}/{missing[0]}")
    return Assets(source=str(where), files={n: files[n] for n in sorted(wanted)})


def resolve_source(source, wanted: set[str], manifest: Mapping[str, str], cache_dir=None, base_url=None,
                   opener: Callable = urllib.request.urlopen) -> Path:
    """An explicit ``source`` must exist; else ``$POSELIFT_MAKEHUMAN_ASSETS`` if it exists; else download."""
    cache_dir = Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "poselift")
    return mirror_or_download(source, ASSETS_ENV,
                              lambda: download(cache_dir, wanted, manifest, base_url or BASE_URL, opener),
                              "MakeHuman assets", unreachable=DownloadError)


# --- reading verified files ------------------------------------------------------------------------
def verify(data: bytes, name: str, manifest: Mapping[str, str], where: str) -> bytes:
    """``data`` if its SHA-256 is the manifest's for ``name``, else an :class:`InputError` naming it."""
    return verify_sha256(data, name, manifest, where, shown=f"{ROOT}/{name}")


def read_source(source: Path, wanted: set[str], manifest: Mapping[str, str]) -> Iterator[tuple[str, bytes]]:
    """The ``wanted`` files of a mirror folder, an archive, or a ``makehuman-cc0/`` tree, each verified."""
    if source.is_file():
        return read_archive(source, wanted, manifest)
    if not source.is_dir():
        raise InputError(source, "no such MakeHuman assets mirror (folder or archive)")
    if (source / ROOT).is_dir():
        return read_tree(source / ROOT, wanted, manifest)
    if (source / ARCHIVE).is_file():
        return read_archive(source / ARCHIVE, wanted, manifest)
    if source.name == ROOT or any((source / Path(n).parts[0]).is_dir() for n in wanted):
        return read_tree(source, wanted, manifest)
    raise InputError(source, f"holds neither {ARCHIVE} nor a {ROOT}/ tree")


def read_tree(root: Path, wanted: set[str], manifest: Mapping[str, str]) -> Iterator[tuple[str, bytes]]:
    """Read the ``wanted`` files of an unpacked tree (``root/3dobjs/...``), each verified."""
    for name in sorted(wanted):
        path = root / name
        if path.is_file():
            yield name, verify(path.read_bytes(), name, manifest, str(root))


def read_archive(archive: Path, wanted: set[str], manifest: Mapping[str, str]) -> Iterator[tuple[str, bytes]]:
    """Stream the ``wanted`` members (``makehuman-cc0/<name>``) out of a tar archive, each verified."""
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                name = member.name.removeprefix("./").removeprefix(f"{ROOT}/")
                if member.isfile() and name in wanted:
                    yield name, verify(tar.extractfile(member).read(), name, manifest, str(archive))
    except (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError, OSError) as e:
        raise InputError(archive, f"not a readable tar archive ({type(e).__name__}: {e})") from None


# --- downloading the pinned upstream files ---------------------------------------------------------
class DownloadError(InputError):
    """A file could not be fetched (network, HTTP status, missing file)."""


def download(cache_dir: Path, wanted: set[str], manifest: Mapping[str, str], base_url: str = BASE_URL,
             opener: Callable = urllib.request.urlopen, timeout: float = 60.0) -> Path:
    """Fetch each ``wanted`` file from ``{base_url}/makehuman/data/<name>`` into a cached ``makehuman-cc0/``
    tree (kept files that still verify are not fetched again); returns the tree. A file is checked against
    the manifest before it is stored, so the cache never holds a corrupt file."""
    from tqdm import tqdm

    tree = Path(cache_dir) / f"makehuman-{UPSTREAM_COMMIT}" / ROOT
    todo = [n for n in sorted(wanted) if not _cached(tree / n, manifest[n])]
    for name in tqdm(todo, desc="MakeHuman assets", unit="file", leave=False, disable=None):
        url = f"{base_url.rstrip('/')}/{UPSTREAM_FOLDER}/{name}"
        try:
            with opener(url, timeout=timeout) as response:
                data = response.read()
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            raise DownloadError(url, f"download failed ({getattr(e, 'reason', None) or e})") from None
        verify(data, name, manifest, url)
        with atomic_output(tree / name) as tmp:
            tmp.write_bytes(data)
    return tree


def _cached(path: Path, digest: str) -> bool:
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest


# --- checking a source from the shell --------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Verify a source; 0, or 2 with one ``poselift: error:`` line (as the ``poselift`` CLI does)."""
    parser = argparse.ArgumentParser(prog="python -m poselift.rendering.assets",
                                     description="Check the MakeHuman CC0 assets against poselift's manifest.")
    parser.add_argument("source", nargs="?", help=f"mirror folder, archive or {ROOT}/ tree "
                                                  f"(default ${ASSETS_ENV}, else download)")
    parser.add_argument("--cache-dir", help=f"download cache (default ${CACHE_ENV} or ~/.cache/poselift)")
    parser.add_argument("--base-url", help=f"where makehuman/data/ is served (default {BASE_URL})")
    args = parser.parse_args(argv)
    try:
        assets = load_assets(args.source, cache_dir=args.cache_dir, base_url=args.base_url)
    except InputError as e:
        print(f"poselift: error: {e}", file=sys.stderr)
        return 2
    print(f"{len(assets.files)} MakeHuman asset files verified ({assets.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
