"""The open benchmark (``poselift prepare bandai``): sources and manifest checks on small archives built
here, the BN-P1 protocol on the real manifest, and the skeleton on real clips from ../shared."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from poselift.data import bandai
from poselift.data.bandai import (H36M_FROM_BANDAI, build, catalogue, load_manifest, parse_stem, select_clips,
                                  split_of)
from poselift.data.prepared import content_hash, write_prepared
from poselift.data.rig import capture_centre, h36m_cameras, in_image
from poselift.errors import InputError
from poselift.skeleton import H36M17

PART1 = "dataset/Bandai-Namco-Research-Motiondataset-1"

# --- a small Bandai-like dataset written here -----------------------------------------------------
# (name, parent, offset in cm, y up); +x is the figure's left, as in the real files.
JOINTS = [
    ("Hips", None, (0, 0, 0)), ("Spine", "Hips", (0, 15, 0)), ("Chest", "Spine", (0, 10, 0)),
    ("Neck", "Chest", (0, 15, 0)), ("Head", "Neck", (0, 8, 0)),
    ("UpperArm_L", "Chest", (15, 12, 0)), ("LowerArm_L", "UpperArm_L", (25, 0, 0)),
    ("Hand_L", "LowerArm_L", (22, 0, 0)),
    ("UpperArm_R", "Chest", (-15, 12, 0)), ("LowerArm_R", "UpperArm_R", (-25, 0, 0)),
    ("Hand_R", "LowerArm_R", (-22, 0, 0)),
    ("UpperLeg_L", "Hips", (8, -5, 0)), ("LowerLeg_L", "UpperLeg_L", (0, -40, 0)),
    ("Foot_L", "LowerLeg_L", (0, -40, 0)),
    ("UpperLeg_R", "Hips", (-8, -5, 0)), ("LowerLeg_R", "UpperLeg_R", (0, -40, 0)),
    ("Foot_R", "LowerLeg_R", (0, -40, 0)),
]
CONTENTS = ("walk", "bow")
STYLES = ("normal", "happy", "old", "tired")
CLIPS = ("dataset-1_walk_normal_001", "dataset-1_walk_happy_001", "dataset-1_bow_tired_001")


def bandai_like_bvh(frames: int = 6, step_cm: float = 10.0) -> str:
    """A T-posed figure walking along +z; the Head is turned +90 deg about z so its +x axis points up."""
    children = {n: [c for c, p, _ in JOINTS if p == n] for n, _, _ in JOINTS}
    offsets = {n: o for n, _, o in JOINTS}
    lines = ["HIERARCHY"]

    def emit(name: str, depth: int) -> None:
        pad = "  " * depth
        kind, chans = ("ROOT", "6 Xposition Yposition Zposition") if name == "Hips" else ("JOINT", "3")
        lines.extend([f"{pad}{kind} {name}", f"{pad}{{", f"{pad}  OFFSET {' '.join(map(str, offsets[name]))}",
                      f"{pad}  CHANNELS {chans} Zrotation Xrotation Yrotation"])
        for child in children[name]:
            emit(child, depth + 1)
        if not children[name]:
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET 0 0 0", f"{pad}  }}"])
        lines.append(f"{pad}}}")

    emit("Hips", 0)
    head = [n for n, _, _ in JOINTS].index("Head")
    lines += ["MOTION", f"Frames: {frames}", "Frame Time: 0.0333333"]
    for f in range(frames):
        row = [0.0, 90.0, f * step_cm] + [0.0] * (3 * len(JOINTS))
        row[3 + 3 * head] = 90.0  # Head's Zrotation
        lines.append(" ".join(f"{v:g}" for v in row))
    return "\n".join(lines) + "\n"


def small_dataset(root: Path, corrupt: str | None = None) -> dict[str, bytes]:
    """Files of a 3-clip dataset-1 (paths from dataset/), and its manifest at root/manifest.sha256."""
    files = {f"{PART1}/cfg/content_label.txt": "\n".join(f"dataset-1_{c}" for c in CONTENTS).encode(),
             f"{PART1}/cfg/style_label.txt": "\n".join(f"dataset-1_{s}" for s in STYLES).encode(),
             f"{PART1}/README.md": b"not read\n"}
    for stem in CLIPS:
        clip = parse_stem(stem)
        files[f"{PART1}/data/{stem}.bvh"] = bandai_like_bvh().encode()
        files[f"{PART1}/data/{stem}.json"] = (f'{{"content": {CONTENTS.index(clip.content)}, '
                                              f'"style": {STYLES.index(clip.style)}}}').encode()
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.sha256").write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items()))
    if corrupt:
        data = bytearray(files[corrupt])
        data[len(data) // 2] ^= 0x01
        files[corrupt] = bytes(data)
    return files


def write_tar(path: Path, files: dict[str, bytes], mode: str = "w:xz", prefix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def no_mirror(monkeypatch, tmp_path):
    """No mirror in the environment and a private download cache: nothing reaches the network."""
    monkeypatch.delenv(bandai.MIRROR_ENV, raising=False)
    monkeypatch.setenv(bandai.CACHE_ENV, str(tmp_path / "cache"))


def test_archive_mirror_gives_the_h36m_skeleton_known_positions(tmp_path, no_mirror):
    files = small_dataset(tmp_path)
    write_tar(tmp_path / "mirror" / "Bandai-Namco-Research-Motiondataset-1.tar.xz", files)
    data = build(tmp_path / "mirror", manifest=tmp_path / "manifest.sha256")
    assert [s.name for s in data.sequences] == sorted(CLIPS)
    assert {s.name: (s.subject, s.action, s.split) for s in data.sequences} == {
        "dataset-1_bow_tired_001": ("dataset-1", "bow", "validation"),
        "dataset-1_walk_happy_001": ("dataset-1", "walk", "train"),
        "dataset-1_walk_normal_001": ("dataset-1", "walk", "test")}
    assert data.protocol == "BN-P1" and data.fps == 30.0
    seq = data.sequences[0]
    pose = seq.positions_3d[0] - seq.positions_3d[0, 0]  # relative to the pelvis: placement is a yaw + shift
    assert seq.positions_3d[0, 0, 2] == pytest.approx(900.0)  # hips 90 cm up -> z = 900 mm
    h = {n: pose[H36M17.index(n)] for n in H36M17.names}
    # heights (z, mm) by hand: hips 85 cm, knees 45, ankles 5, spine 0.48 of the 40 cm Hips->Neck chain
    # (19.2 cm, on Spine->Chest), thorax = Neck 130, neck_nose = Head 138, head top 10 cm up the Head's x axis
    for name, z in [("left_hip", -50), ("left_knee", -450), ("right_ankle", -850), ("spine", 192),
                    ("thorax", 400), ("neck_nose", 480), ("head", 580), ("left_shoulder", 370)]:
        assert h[name][2] == pytest.approx(z, abs=1e-3), name
    # left joints on the figure's left: the figure walks along the placed trajectory; left = up x forward
    forward = seq.positions_3d[-1, 0] - seq.positions_3d[0, 0]
    left = np.cross([0, 0, 1], forward)
    for l, r in [("left_hip", "right_hip"), ("left_wrist", "right_wrist")]:
        assert (h[l] - h[r]) @ left > 0
    np.testing.assert_allclose(np.linalg.norm(h["left_wrist"] - h["left_elbow"]), 220, atol=1e-3)


def test_tree_and_download_give_the_same_content_as_the_archive(tmp_path, no_mirror):
    files = small_dataset(tmp_path)
    manifest = tmp_path / "manifest.sha256"
    write_tar(tmp_path / "mirror" / "Bandai-Namco-Research-Motiondataset-1.tar.xz", files)
    for name, data in files.items():
        (tmp_path / "tree" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / name).write_bytes(data)
    upstream = write_tar(tmp_path / "served" / "repo.tar.gz", files, "w:gz",
                         prefix=f"Bandai-Namco-Research-Motiondataset-{bandai.UPSTREAM_COMMIT}/")
    hashes = []
    for source, kwargs in [(tmp_path / "mirror", {}), (tmp_path / "tree", {}), (tmp_path / "tree" / "dataset", {}),
                           (None, {"url": upstream.as_uri()})]:
        out = tmp_path / f"out{len(hashes)}.h5"
        write_prepared(out, build(source, manifest=manifest, **kwargs))
        hashes.append(content_hash(out))
    assert len(set(hashes)) == 1
    cached = tmp_path / "cache" / f"Bandai-Namco-Research-Motiondataset-{bandai.UPSTREAM_COMMIT}.tar.gz"
    assert cached.read_bytes() == upstream.read_bytes()
    upstream.unlink()  # a second run uses the cache
    write_prepared(tmp_path / "again.h5", build(None, manifest=manifest, url=upstream.as_uri()))
    assert content_hash(tmp_path / "again.h5") == hashes[0]


def test_corrupt_member_is_named(tmp_path, no_mirror):
    bad = f"{PART1}/data/dataset-1_walk_happy_001.bvh"
    files = small_dataset(tmp_path, corrupt=bad)
    write_tar(tmp_path / "mirror" / "Bandai-Namco-Research-Motiondataset-1.tar.xz", files)
    with pytest.raises(InputError, match="dataset-1_walk_happy_001.bvh: SHA-256 .* does not match the manifest"):
        build(tmp_path / "mirror", manifest=tmp_path / "manifest.sha256")


def test_missing_files_and_wrong_labels_are_reported(tmp_path, no_mirror):
    files = small_dataset(tmp_path)
    manifest = tmp_path / "manifest.sha256"
    del files[f"{PART1}/data/dataset-1_bow_tired_001.json"]
    write_tar(tmp_path / "a" / "Bandai-Namco-Research-Motiondataset-1.tar.xz", files)
    with pytest.raises(InputError, match="lacks 1 file.*dataset-1_bow_tired_001.json"):
        build(tmp_path / "a", manifest=manifest)
    # a json whose labels disagree with its file name (listed with its own checksum)
    files = small_dataset(tmp_path)
    name = f"{PART1}/data/dataset-1_walk_happy_001.json"
    files[name] = b'{"content": 1, "style": 1}'
    lines = [ln for ln in manifest.read_text().splitlines() if not ln.endswith(name)]
    manifest.write_text("\n".join(lines + [f"{hashlib.sha256(files[name]).hexdigest()}  {name}"]) + "\n")
    write_tar(tmp_path / "b" / "Bandai-Namco-Research-Motiondataset-1.tar.xz", files)
    with pytest.raises(InputError, match=r"content label 1 \(dataset-1_bow\) disagrees with the file name \(walk\)"):
        build(tmp_path / "b", manifest=manifest)
    with pytest.raises(InputError, match="lacks Bandai-Namco-Research-Motiondataset-1.tar.xz"):
        build(tmp_path, manifest=manifest)


def test_no_source_reachable_is_one_clear_error(tmp_path, no_mirror, monkeypatch, run_cli):
    missing = (tmp_path / "nowhere.tar.gz").as_uri()
    with pytest.raises(InputError, match="no Bandai-Namco source reachable: no source given and "
                                         "POSELIFT_BANDAI_MIRROR is unset, and download failed"):
        build(None, url=missing)
    monkeypatch.setenv(bandai.MIRROR_ENV, str(tmp_path / "no-mirror"))
    monkeypatch.setattr(bandai, "ARCHIVE_URL", missing)
    out = tmp_path / "out.h5"
    code, _, err = run_cli("prepare", "bandai", "--subset", "cpu", "--out", out)
    assert code == 2 and "no-mirror does not exist" in err and "download failed" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    code, _, err = run_cli("prepare", "bandai", "--source", tmp_path / "typo", "--out", out)
    assert code == 2 and "typo: no such Bandai-Namco mirror" in err and not out.exists()
    monkeypatch.setenv(bandai.MIRROR_ENV, str(tmp_path))  # an existing mirror is used, nothing downloaded
    assert bandai.resolve_source(None) == tmp_path
    code, _, err = run_cli("prepare", "h36m", "--out", out)
    assert code == 2 and "--source is required for h36m" in err


def test_download_errors_become_input_errors(tmp_path):
    def offline(url, timeout):
        raise OSError("network is unreachable")

    with pytest.raises(InputError, match="download failed \\(network is unreachable\\)"):
        bandai.download_archive(tmp_path, opener=offline)
    assert not list(tmp_path.iterdir())  # no partial archive left in the cache


# --- the protocol, on the real manifest shipped with poselift ------------------------------------
def test_manifest_lists_every_clip_and_matches_the_mirror_copy(shared_dir):
    clips = catalogue(load_manifest())
    assert sum(c.part == 1 for c in clips) == 174 and sum(c.part == 2 for c in clips) == 2902
    mirror = shared_dir / "data" / "bandai-namco" / "MANIFEST.sha256"
    if mirror.is_file():
        assert mirror.read_bytes() == bandai.MANIFEST.read_bytes()


@pytest.mark.parametrize("subset", ["full", "cpu"])
def test_bn_p1_splits_are_disjoint_by_style_and_test_covers_every_content(subset):
    clips = select_clips(catalogue(load_manifest()), subset)
    splits = {s: [c for c in clips if split_of(c) == s] for s in ("train", "validation", "test")}
    assert sum(map(len, splits.values())) == len(clips) and all(splits.values())
    styles = {s: {(c.part, c.style) for c in v} for s, v in splits.items()}
    assert not styles["train"] & styles["test"] and not styles["train"] & styles["validation"]
    assert not styles["test"] & styles["validation"]
    # the same manner under another name in the other part is held out too
    same_manner = {"old": "elderly", "tired": "exhausted", "normal": "normal"}
    for split in ("test", "validation"):
        for part, style in styles[split]:
            if part == 1 and style in same_manner:
                assert (2, same_manner[style]) not in styles["train"]
    contents = {(c.part, c.content) for c in clips}
    assert {(c.part, c.content) for c in splits["test"]} == contents
    assert len(contents) == 26  # 16 contents recorded in dataset-1 (dance-long has no BVH), 10 in dataset-2
    if subset == "cpu":
        assert sum(c.part == 1 for c in clips) == 174 and sum(c.part == 2 for c in clips) == 210


def test_splits_come_from_labels_only():
    assert split_of(parse_stem("dataset-2_run_elderly_017")) == "test"
    assert split_of(parse_stem("dataset-2_run_exhausted_001")) == "validation"
    assert split_of(parse_stem("dataset-1_kick_normal_001")) == "test"
    assert split_of(parse_stem("dataset-1_walk_giant_001")) == "train"
    with pytest.raises(ValueError):
        parse_stem("dataset-3_walk_normal_001")


# --- real clips from the mirror -------------------------------------------------------------------
REAL = ("dataset-1_walk_normal_001", "dataset-1_bow_normal_001", "dataset-1_kick_normal_001",
        "dataset-1_run_old_001")


@pytest.fixture(scope="module")
def real(request):
    from conftest import SHARED

    mirror = SHARED / "data" / "bandai-namco"
    if not (mirror / "Bandai-Namco-Research-Motiondataset-1.tar.xz").is_file():
        pytest.skip(f"{mirror} is absent")
    return mirror, build(mirror, clips=REAL)


def test_real_clips_are_rigid_human_sized_and_on_the_floor(real):
    _, data = real
    rigid = [(p, c) for p, c in H36M17.bones
             if H36M17.names[c] not in ("spine", "thorax", "left_shoulder", "right_shoulder")]
    assert len(rigid) == 12
    for seq in data.sequences:
        x = seq.positions_3d.astype(np.float64)
        for p, c in H36M17.bones:
            length = np.linalg.norm(x[:, c] - x[:, p], axis=-1)
            spread = np.ptp(length) / length.mean()
            # 12 bones are rigid segments of the Bandai rig; spine, thorax and shoulders bridge the rig's
            # extra spine and clavicle joints (docs/open-benchmark.md): bounded, not constant
            assert spread < (1e-4 if (p, c) in rigid else 0.3), (seq.name, H36M17.names[c], spread)
        if "_normal_" in seq.name:  # upright clips ("old" stoops): standing height, head top to floor, in mm
            assert 1400 < np.percentile(x[:, H36M17.index("head"), 2], 95) < 2100, seq.name
        ankles = x[:, [H36M17.index("left_ankle"), H36M17.index("right_ankle")], 2]
        assert 80 < ankles.min() < 150, seq.name  # ankle joints just above the floor z = 0
        assert x[..., 2].min() > 0


def test_real_limbs_match_human36m_proportions(real, mmpose_fixtures):
    _, data = real
    h36m = np.load(mmpose_fixtures / "h36m" / "test_h36m_body3d.npz")["S"][..., :3] * 1000  # 4 subjects, mm
    x = data.sequences[0].positions_3d[0].astype(np.float64)
    for bone in ("right_knee", "right_ankle", "left_elbow", "left_wrist", "neck_nose", "head"):
        c = H36M17.index(bone)
        p = H36M17.parents[c]
        ours = np.linalg.norm(x[c] - x[p])
        theirs = np.linalg.norm(h36m[:, c] - h36m[:, p], axis=-1).mean()
        assert 0.5 < ours / theirs < 1.0, bone  # mm, a smaller figure than Human3.6M's actors


def test_real_walk_has_left_on_the_left(real):
    _, data = real
    walk = next(s for s in data.sequences if s.name == "dataset-1_walk_normal_001").positions_3d.astype(np.float64)
    velocity = np.gradient(walk[:, 0, :2], axis=0)
    moving = np.linalg.norm(velocity, axis=-1) > 10  # mm per frame
    left = np.c_[-velocity[:, 1], velocity[:, 0]]  # up x forward, in the floor plane
    for l, r in [("left_hip", "right_hip"), ("left_shoulder", "right_shoulder")]:
        side = np.einsum("fi,fi->f", walk[:, H36M17.index(l), :2] - walk[:, H36M17.index(r), :2], left)
        assert (side[moving] > 0).mean() > 0.95, l


def test_real_2d_is_the_distorted_projection_in_view(real):
    _, data = real
    rig = data.rigs["h36m-S1"]
    for seq in data.sequences:
        x = seq.positions_3d.astype(np.float64)
        assert np.linalg.norm(x[:, 0, :2].mean(axis=0) - capture_centre(rig)[:2]) < 1.0
        for i, name in enumerate(seq.cameras):
            cam = rig[name]
            np.testing.assert_allclose(seq.positions_2d[i], cam.world_to_pixels(x), rtol=1e-6, atol=1e-3)
            assert (cam.world_to_camera(x)[..., 2] > 1000).all()
            assert in_image(seq.positions_2d[i], cam).mean() > 0.7
    assert list(rig) == list(h36m_cameras())


def test_preparing_twice_gives_the_same_content(real, tmp_path):
    mirror, data = real
    write_prepared(tmp_path / "a.h5", data)
    write_prepared(tmp_path / "b.h5", build(mirror, clips=REAL))
    assert content_hash(tmp_path / "a.h5") == content_hash(tmp_path / "b.h5")


def test_mapping_names_real_bandai_joints():
    assert set(H36M_FROM_BANDAI) | {"spine", "head"} == set(H36M17.names)
