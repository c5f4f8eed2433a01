"""The open benchmark: the Bandai-Namco Research Motion Dataset 1 + 2 (real motion capture, CC BY-NC 4.0)
seen by Human3.6M's cameras, under the protocol BN-P1. ``docs/open-benchmark.md`` is the full description.

Pipeline: source files (a local mirror holding the two ``.tar.xz`` archives, an unpacked ``dataset/``
tree, or the upstream repository's archive at the pinned commit, downloaded and cached) -> every file
checked against the per-file SHA-256 manifest shipped with poselift as it is read -> BVH forward
kinematics (:mod:`poselift.data.bvh`) -> the 22 Bandai joints mapped to Human3.6M-17, centimetres to
mm, y up to z up -> each clip placed in Human3.6M's capture volume and projected, with lens distortion,
into its four cameras (:mod:`poselift.data.rig`) -> a :class:`~poselift.data.prepared.PreparedDataset`.

Reading never unpacks to disk: archive members are streamed with :mod:`tarfile`.
"""

from __future__ import annotations

import http.client
import json
import lzma
import os
import re
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from poselift.data.bvh import BVH, end_site_positions, forward_kinematics, parse_bvh
from poselift.data.prepared import PreparedDataset, Sequence
from poselift.data.rig import RIG_SUBJECT, h36m_cameras, place_in_volume, project_views
from poselift.errors import InputError
from poselift.io import atomic_output, mirror_or_download, read_manifest, verify_sha256
from poselift.skeleton import H36M17

# --- where the data comes from ---------------------------------------------------------------------
UPSTREAM_REPO = "BandaiNamcoResearchInc/Bandai-Namco-Research-Motiondataset"
UPSTREAM_COMMIT = "74ead3ba1ae4696404e6086233779f60de8bf9ef"
ARCHIVE_URL = f"https://github.com/{UPSTREAM_REPO}/archive/{UPSTREAM_COMMIT}.tar.gz"
MANIFEST = Path(__file__).with_name("bandai_manifest.sha256")  # copy of the mirror's MANIFEST.sha256
MIRROR_ENV = "POSELIFT_BANDAI_MIRROR"  # folder holding the archives or a dataset/ tree
CACHE_ENV = "POSELIFT_CACHE"  # where the downloaded upstream archive is kept (default ~/.cache/poselift)
PART_FOLDER = "dataset/Bandai-Namco-Research-Motiondataset-{part}"
FPS = 30.0

# --- the protocol ----------------------------------------------------------------------------------
PROTOCOL = "BN-P1"
# Held-out styles, per dataset part. "normal" is the only style recorded for six dataset-1 contents
# (call, dance-short, kick, punch, respond, slash), so it must be a test style for every content to be
# tested; old/elderly and tired/exhausted are the same manner named differently in the two parts, and
# are held out together so that no test or validation manner is seen in training.
TEST_STYLES = {1: ("normal", "old"), 2: ("normal", "elderly")}
VALIDATION_STYLES = {1: ("tired",), 2: ("exhausted",)}
SUBSETS = ("cpu", "full")
CPU_PART2_TAKES = 3  # "cpu": all of dataset-1, and takes 001-003 of every content x style of dataset-2

# --- the skeleton ----------------------------------------------------------------------------------
# Human3.6M-17 joint <- Bandai joint (BVH names). "spine" and "head" have no Bandai joint: see below.
H36M_FROM_BANDAI = {
    "pelvis": "Hips", "right_hip": "UpperLeg_R", "right_knee": "LowerLeg_R", "right_ankle": "Foot_R",
    "left_hip": "UpperLeg_L", "left_knee": "LowerLeg_L", "left_ankle": "Foot_L",
    "thorax": "Neck", "neck_nose": "Head",
    "left_shoulder": "UpperArm_L", "left_elbow": "LowerArm_L", "left_wrist": "Hand_L",
    "right_shoulder": "UpperArm_R", "right_elbow": "LowerArm_R", "right_wrist": "Hand_R",
}
SPINE_CHAIN = ("Hips", "Spine", "Chest", "Neck")
# H36M's spine joint sits this far up the pelvis -> thorax path: pelvis-spine / (pelvis-spine + spine-thorax)
# = 236 / (236 + 254) mm, the mean of the four Human3.6M subjects in MMPose's test fixture (S1, S5, S7, S8).
SPINE_FRACTION = 0.48
# Head top: a point on the Head joint's own +x axis (the axis the rig's head bone points along), at the
# distance of the head End Site that upstream writes in the 11 files that give one (10 cm; the rest give 0).
HEAD_TOP_OFFSET_CM = (10.0, 0.0, 0.0)
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # (x, y, z) -> (x, -z, y)
CM_TO_MM = 10.0


# --- the clips and their labels --------------------------------------------------------------------
_STEM = re.compile(r"^dataset-([12])_([a-z-]+)_([a-z-]+)_(\d{3})$")


@dataclass(frozen=True)
class Clip:
    """One BVH clip, named ``dataset-{part}_{content}_{style}_{take}`` upstream."""

    stem: str
    part: int
    content: str
    style: str
    take: int

    @property
    def subject(self) -> str:
        return f"dataset-{self.part}"

    def member(self, ext: str) -> str:
        return f"{PART_FOLDER.format(part=self.part)}/data/{self.stem}.{ext}"

    @property
    def split(self) -> str:
        return split_of(self)


def parse_stem(stem: str) -> Clip:
    match = _STEM.match(stem)
    if not match:
        raise ValueError(f"not a Bandai-Namco clip name: {stem!r}")
    part, content, style, take = match.groups()
    return Clip(stem=stem, part=int(part), content=content, style=style, take=int(take))


def split_of(clip: Clip) -> str:
    """BN-P1 from the style label alone: test and validation are whole held-out styles."""
    if clip.style in TEST_STYLES[clip.part]:
        return "test"
    if clip.style in VALIDATION_STYLES[clip.part]:
        return "validation"
    return "train"


def load_manifest(path: str | os.PathLike = MANIFEST) -> dict[str, str]:
    """The shipped ``sha256sum``-style manifest -> {path inside the dataset: hex digest}."""
    return read_manifest(path)


def catalogue(manifest: dict[str, str]) -> list[Clip]:
    """Every clip the manifest lists a BVH file for, sorted by name."""
    stems = [Path(name).stem for name in manifest if name.endswith(".bvh")]
    return sorted((parse_stem(s) for s in stems), key=lambda c: c.stem)


def select_clips(clips: list[Clip], subset: str = "full", names: Iterable[str] | None = None) -> list[Clip]:
    """The clips of ``subset`` ("cpu" or "full"), optionally only those named in ``names`` (stems)."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r} (known: {', '.join(SUBSETS)})")
    chosen = [c for c in clips if subset == "full" or c.part == 1 or c.take <= CPU_PART2_TAKES]
    if names is not None:
        names = list(names)
        known = {c.stem for c in chosen}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InputError(unknown[0], f"not a clip of the '{subset}' subset in the manifest")
        chosen = [c for c in chosen if c.stem in set(names)]
    return chosen


# --- reading verified files from a mirror, a tree or the upstream archive --------------------------
def _dataset_path(name: str) -> str | None:
    """Archive member name -> its path from the ``dataset/`` folder on (drops a repository prefix)."""
    parts = name.split("/")
    return "/".join(parts[parts.index("dataset"):]) if "dataset" in parts else None


def read_archive(archive: Path, wanted: set[str], manifest: dict[str, str]) -> Iterator[tuple[str, bytes]]:
    """Stream the ``wanted`` members (paths from ``dataset/``) out of a tar archive, each verified."""
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                name = _dataset_path(member.name)
                if member.isfile() and name in wanted:
                    yield name, verify_sha256(tar.extractfile(member).read(), name, manifest, str(archive))
    except (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError, OSError) as e:
        raise InputError(archive, f"not a readable tar archive ({type(e).__name__}: {e})") from None


def read_tree(root: Path, wanted: set[str], manifest: dict[str, str]) -> Iterator[tuple[str, bytes]]:
    """Read the ``wanted`` files of an unpacked tree (``root/dataset/...``), each verified."""
    for name in sorted(wanted):
        path = root / name
        if path.is_file():
            yield name, verify_sha256(path.read_bytes(), name, manifest, str(root))


def download_archive(cache_dir: Path, url: str = ARCHIVE_URL,
                     opener: Callable = urllib.request.urlopen, timeout: float = 60.0) -> Path:
    """The upstream repository's archive at the pinned commit, fetched once into ``cache_dir``.

    The archive itself has no fixed checksum (the host builds it on demand); every file used from it is
    verified against the manifest when read.
    """
    target = Path(cache_dir) / f"Bandai-Namco-Research-Motiondataset-{UPSTREAM_COMMIT}.tar.gz"
    if target.is_file():
        return target
    try:
        with opener(url, timeout=timeout) as response, atomic_output(target) as tmp, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise InputError(url, f"download failed ({getattr(e, 'reason', e)})") from None
    return target


def find_readers(source: Path, wanted: set[str], manifest: dict[str, str]) -> list[Iterator]:
    """Readers for a mirror folder (the two ``.tar.xz`` archives, or a ``dataset/`` tree) or one archive."""
    if source.is_file():
        return [read_archive(source, wanted, manifest)]
    if not source.is_dir():
        raise InputError(source, "no such Bandai-Namco mirror (folder or archive)")
    root = source.parent if source.name == "dataset" else source
    if (root / "dataset").is_dir():
        return [read_tree(root, wanted, manifest)]
    parts = sorted({int(name.split("/")[1].rsplit("-", 1)[1]) for name in wanted})
    archives = {p: source / f"Bandai-Namco-Research-Motiondataset-{p}.tar.xz" for p in parts}
    absent = [a.name for a in archives.values() if not a.is_file()]
    if absent:
        raise InputError(source, f"holds no dataset/ tree and lacks {', '.join(absent)}")
    return [read_archive(a, {w for w in wanted if w.startswith(PART_FOLDER.format(part=p) + "/")}, manifest)
            for p, a in archives.items()]


def resolve_source(source: Path | None, cache_dir: Path | None = None, url: str | None = None) -> Path:
    """An explicit ``source`` must exist; else ``$POSELIFT_BANDAI_MIRROR`` if it exists; else download."""
    cache_dir = Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "poselift")
    return mirror_or_download(source, MIRROR_ENV, lambda: download_archive(cache_dir, url or ARCHIVE_URL),
                              "Bandai-Namco")


# --- BVH -> Human3.6M-17 ---------------------------------------------------------------------------
def h36m_positions(bvh: BVH, path: str = "<bvh>") -> np.ndarray:
    """Human3.6M-17 joints (F, 17, 3) in mm, z up, from a Bandai-Namco BVH clip (its own world frame)."""
    missing = [n for n in set(H36M_FROM_BANDAI.values()) | set(SPINE_CHAIN) if n not in bvh.names]
    if missing:
        raise InputError(path, f"BVH lacks joint(s) {', '.join(sorted(missing))}: not a Bandai-Namco skeleton")
    positions, rotations = forward_kinematics(bvh)
    out = np.zeros((bvh.num_frames, H36M17.num_joints, 3))
    for name, joint in H36M_FROM_BANDAI.items():
        out[:, H36M17.index(name)] = positions[:, bvh.index(joint)]
    out[:, H36M17.index("spine")] = _along_chain(bvh, positions, SPINE_CHAIN, SPINE_FRACTION)
    head = bvh.index("Head")
    out[:, H36M17.index("head")] = end_site_positions(bvh, positions, rotations,
                                                      {head: np.array(HEAD_TOP_OFFSET_CM)})[head]
    return (out @ Y_UP_TO_Z_UP.T) * CM_TO_MM


def _along_chain(bvh: BVH, positions: np.ndarray, chain: tuple[str, ...], fraction: float) -> np.ndarray:
    """The point ``fraction`` of the way along a joint chain's rest length (per frame, on the bone it
    falls on, so it is fixed in that bone's frame)."""
    index = [bvh.index(n) for n in chain]
    lengths = np.array([np.linalg.norm(bvh.offsets[j]) for j in index[1:]])
    at = fraction * lengths.sum()
    k = min(int(np.searchsorted(np.cumsum(lengths), at)), len(lengths) - 1)
    t = (at - lengths[:k].sum()) / lengths[k]
    return (1 - t) * positions[:, index[k]] + t * positions[:, index[k + 1]]


# --- the whole preparation -------------------------------------------------------------------------
def build(source: Path | None = None, subset: str = "full", clips: Iterable[str] | None = None,
          manifest: str | os.PathLike = MANIFEST, cache_dir: Path | None = None, url: str | None = None,
          rig_subject: str = RIG_SUBJECT) -> PreparedDataset:
    """Read, verify, convert and project the clips of ``subset`` (or only the stems in ``clips``)."""
    sums = load_manifest(manifest)
    chosen = select_clips(catalogue(sums), subset, clips)
    labels_files = {f"{PART_FOLDER.format(part=p)}/cfg/{k}_label.txt" for p in {c.part for c in chosen}
                    for k in ("content", "style")}
    wanted = {c.member(e) for c in chosen for e in ("bvh", "json")} | labels_files
    unlisted = sorted(w for w in wanted if w not in sums)
    if unlisted:
        raise InputError(manifest, f"does not list {unlisted[0]}")
    where = resolve_source(source, cache_dir, url)

    poses, jsons, texts, seen = {}, {}, {}, set()
    for reader in find_readers(where, wanted, sums):
        for name, data in reader:
            seen.add(name)
            if name.endswith(".bvh"):
                bvh = parse_bvh(data, f"{where}:{name}")
                if abs(bvh.frame_time * FPS - 1) > 1e-3:
                    raise InputError(f"{where}:{name}", f"frame time {bvh.frame_time} s is not 1/{FPS:g} s")
                poses[Path(name).stem] = h36m_positions(bvh, f"{where}:{name}")
            elif name.endswith(".json"):
                jsons[Path(name).stem] = _json(data, f"{where}:{name}")
            else:
                texts[name] = data.decode().split()
    missing = sorted(wanted - seen)
    if missing:
        raise InputError(where, f"lacks {len(missing)} file(s) listed in the manifest, e.g. {missing[0]}")

    rig = h36m_cameras(rig_subject)
    rig_name = f"h36m-{rig_subject}"
    sequences = []
    for clip in chosen:
        _check_labels(clip, jsons[clip.stem], texts, f"{where}:{clip.member('json')}")
        placed, _ = place_in_volume(poses.pop(clip.stem), rig)
        sequences.append(Sequence(
            subject=clip.subject, name=clip.stem, action=clip.content, split=clip.split, rig=rig_name,
            cameras=list(rig), positions_3d=placed.astype(np.float32),
            positions_2d=project_views(placed, rig).astype(np.float32)))
    return PreparedDataset(
        dataset="bandai-namco" if subset == "full" else f"bandai-namco-{subset}", fps=FPS,
        rigs={rig_name: rig}, sequences=sequences, protocol=PROTOCOL,
        source=f"{UPSTREAM_REPO}@{UPSTREAM_COMMIT} subset={subset} clips={len(chosen)}")


def _json(data: bytes, path: str) -> dict:
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, f"not valid JSON ({e})") from None
    if not isinstance(value, dict) or not isinstance(value.get("content"), int) \
            or not isinstance(value.get("style"), int):
        raise InputError(path, "expected {\"content\": <int>, \"style\": <int>}")
    return value


def _check_labels(clip: Clip, labels: dict, texts: dict[str, list[str]], path: str) -> None:
    """The clip's json label indices, looked up in cfg/*_label.txt, must name the file's content and style."""
    folder = PART_FOLDER.format(part=clip.part)
    for key, expected in (("content", clip.content), ("style", clip.style)):
        names = texts[f"{folder}/cfg/{key}_label.txt"]
        index = labels[key]
        got = names[index] if 0 <= index < len(names) else None
        if got != f"dataset-{clip.part}_{expected}":
            raise InputError(path, f"{key} label {index} ({got}) disagrees with the file name ({expected})")


def prepare(source: Path | None, args) -> PreparedDataset:
    """``poselift prepare bandai``: ``--source`` (default ``$POSELIFT_BANDAI_MIRROR``, else download),
    ``--subset cpu|full``."""
    return build(source, subset=getattr(args, "subset", None) or "full")
