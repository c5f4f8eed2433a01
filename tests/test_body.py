"""The posable MakeHuman body (``poselift.rendering``): the assets from a mirror, a tree or a download, each
file checked against the shipped manifest; the mesh, skeleton, weights and targets against the facts of the
mirror's README; linear-blend skinning. Needs ../shared/data/makehuman (skipped when absent)."""

from __future__ import annotations

import functools
import http.server
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from poselift.errors import InputError
from poselift.rendering import assets as mh
from poselift.rendering.assets import ROOT, load_assets, main
from poselift.rendering.body import build_body, parse_target, parse_weights, posed_joints

_LOADED = {}  # the real assets and body, read once per test session


@pytest.fixture
def mirror(shared_dir) -> Path:
    path = shared_dir / "data" / "makehuman"
    if not (path / mh.ARCHIVE).is_file():
        pytest.skip(f"{path / mh.ARCHIVE} is absent")
    return path


@pytest.fixture
def assets(mirror):
    if "assets" not in _LOADED:
        _LOADED["assets"] = load_assets(mirror)
    return _LOADED["assets"]


@pytest.fixture
def body(assets):
    if "body" not in _LOADED:
        _LOADED["body"] = build_body(assets)
    return _LOADED["body"]


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """No mirror in the environment and a private download cache: nothing reaches the network."""
    monkeypatch.delenv(mh.ASSETS_ENV, raising=False)
    monkeypatch.setenv(mh.CACHE_ENV, str(tmp_path / "cache"))


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def altered(data: bytes) -> bytes:
    data = bytearray(data)
    data[len(data) // 2] ^= 0x01
    return bytes(data)


def rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


# --- the files ---------------------------------------------------------------------------------------
def test_shipped_manifest_is_the_mirror_copy(mirror):
    assert mh.MANIFEST.read_bytes() == (mirror / "MANIFEST.sha256").read_bytes()
    assert (mirror / "makehuman-cc0-assets.tar.xz").is_file() and mh.UPSTREAM_COMMIT in mh.BASE_URL


def test_counts_match_the_mirror_readme(assets, body):
    skeleton = body.skeleton
    assert len(body.vertices) == 13380 and body.faces.shape == (13378, 4) and len(body.base_vertices) == 19158
    assert skeleton.num_bones == 163 and len(body.rig.joint_names) == 326
    raw = parse_weights(assets.weights, skeleton.names, len(body.base_vertices))
    assert (np.asarray((raw != 0).sum(axis=0)).ravel() > 0).sum() == 139
    sums = np.asarray(raw.sum(axis=1)).ravel()
    assert (sums[body.body_vertices] > 0).all()  # every body vertex is weighted
    assert round(sums.min(), 2) == 0.32 and round(sums.max(), 2) == 1.67
    np.testing.assert_allclose(np.asarray(body.weights.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    assert body.faces.max() == len(body.vertices) - 1 and len(np.unique(body.faces)) == len(body.vertices)
    assert body.face_uvs.max() == len(body.uvs) - 1 and (body.uvs >= 0).all() and (body.uvs <= 1).all()
    assert list(skeleton.parents).count(-1) == 1 and all(p < b for b, p in enumerate(skeleton.parents))
    frames = skeleton.rest_frames[:, :3, :3]
    np.testing.assert_allclose(frames.transpose(0, 2, 1) @ frames, np.broadcast_to(np.eye(3), frames.shape),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(frames), 1.0, atol=1e-12)
    assert len(body.targets) == 16 and assets.material["name"] == "DefaultSkin"


# --- posing ------------------------------------------------------------------------------------------
def test_rest_pose_reproduces_the_rest_mesh_exactly(body):
    bones = body.skeleton.num_bones
    assert np.array_equal(body.pose(np.broadcast_to(np.eye(4), (bones, 4, 4))), body.vertices)
    transforms = body.forward_kinematics(np.broadcast_to(np.eye(3), (2, bones, 3, 3)))
    assert np.array_equal(transforms, np.broadcast_to(np.eye(4), (2, bones, 4, 4)))
    assert np.array_equal(body.pose(transforms), np.broadcast_to(body.vertices, (2, *body.vertices.shape)))


def test_rotating_the_left_forearm_moves_only_what_it_carries(body):
    skeleton = body.skeleton
    forearm = skeleton.index("lowerarm01.L")
    subtree = skeleton.subtree("lowerarm01.L")
    names = {skeleton.names[b] for b in subtree}
    assert {"lowerarm02.L", "wrist.L", "finger3-3.L"} <= names and not names & {"upperarm02.L", "lowerarm01.R"}
    rotations = np.broadcast_to(np.eye(3), (skeleton.num_bones, 3, 3)).copy()
    rotations[forearm] = rotation_x(np.pi / 2)  # 90 deg about the forearm's head (the elbow)
    transforms = body.forward_kinematics(rotations)
    posed = body.pose(transforms)

    carried = np.asarray(body.weights[:, subtree].sum(axis=1)).ravel()
    moved = np.linalg.norm(posed - body.vertices, axis=-1)
    assert np.array_equal(posed[carried == 0], body.vertices[carried == 0])  # untouched, bit for bit
    assert (moved[carried > 0.05] > 0).all() and moved.max() > 0.2  # the hand swings by tens of cm
    full = carried > 1 - 1e-9
    elbow = skeleton.heads[forearm]
    assert full.sum() > 500
    np.testing.assert_allclose(np.linalg.norm(posed[full] - elbow, axis=-1),
                               np.linalg.norm(body.vertices[full] - elbow, axis=-1), atol=1e-12)
    heads, _ = posed_joints(skeleton, transforms)
    wrist = skeleton.index("wrist.L")
    before, after = skeleton.heads[wrist] - elbow, heads[wrist] - elbow
    assert np.linalg.norm(after) == pytest.approx(np.linalg.norm(before), abs=1e-12)
    assert np.dot(before, after) == pytest.approx(0.0, abs=1e-12)  # the forearm turned by 90 deg
    others = np.setdiff1d(np.arange(skeleton.num_bones), subtree)
    assert np.array_equal(heads[others], skeleton.heads[others])


def test_a_shape_target_moves_the_mesh_by_its_offsets(body):
    name = "universal-male-young-averagemuscle-maxweight"
    target = body.targets[name]
    shaped = body.shaped({name: 0.5})
    delta = np.zeros_like(body.base_vertices)
    delta[target.indices] = 0.5 * target.offsets
    change = shaped.vertices - body.vertices
    np.testing.assert_allclose(change, delta[body.body_vertices], atol=1e-12)
    assert np.abs(change).max() > 0.01 and np.abs(target.offsets).max() < 0.2  # cm-sized, in metres
    np.testing.assert_allclose(shaped.skeleton.heads - body.skeleton.heads,
                               (body.rig.joint_means @ delta)[body.rig.head_joints], atol=1e-12)
    assert not np.allclose(shaped.skeleton.heads, body.skeleton.heads)  # the joints follow the shape
    assert np.array_equal(shaped.shaped({}).vertices, body.vertices)  # always relative to the base mesh
    assert len(body.targets["universal-female-young-averagemuscle-averageweight"].indices) == 0
    rest = np.broadcast_to(np.eye(4), (shaped.skeleton.num_bones, 4, 4))
    assert np.array_equal(shaped.pose(rest), shaped.vertices)
    with pytest.raises(ValueError, match="unknown shape target 'tall'"):
        body.shaped({"tall": 1.0})


def test_a_target_that_lists_a_vertex_twice_is_refused():
    """Targets are applied by plain indexing, which would add a repeated vertex's offset once: refused."""
    assert len(parse_target("# comment\n3 0.1 0 0\n1 0 0.2 0\n", 5, "ok.target").indices) == 2
    with pytest.raises(InputError, match="twice.target: a vertex index appears twice"):
        parse_target("3 0.1 0 0\n3 0 0.2 0\n", 5, "twice.target")


def test_the_body_is_human_sized_upright_facing_minus_y_with_its_left_on_plus_x(body):
    # poselift's world, metres: z up; the rest body faces -y and has its left on +x (left = up x facing).
    skeleton, vertices = body.skeleton, body.vertices
    height = np.ptp(vertices[:, 2])
    assert 1.6 < height < 1.9
    head = lambda name: skeleton.heads[skeleton.index(name)]  # noqa: E731
    joints = {"head_top": skeleton.tails[skeleton.index("head")], "neck": head("head"), "pelvis": head("spine05")}
    for side, suffix in (("left", "L"), ("right", "R")):
        joints.update({f"{side}_hip": head(f"upperleg01.{suffix}"), f"{side}_knee": head(f"lowerleg01.{suffix}"),
                       f"{side}_ankle": head(f"foot.{suffix}"), f"{side}_shoulder": head(f"upperarm01.{suffix}"),
                       f"{side}_elbow": head(f"lowerarm01.{suffix}"), f"{side}_wrist": head(f"wrist.{suffix}"),
                       f"{side}_toes": skeleton.tails[skeleton.index(f"foot.{suffix}")]})
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    for name, p in joints.items():
        assert (low < p).all() and (p < high).all(), name
    z = {name: p[2] for name, p in joints.items()}
    for side in ("left", "right"):
        assert z["head_top"] > z["neck"] > z[f"{side}_shoulder"] > z[f"{side}_elbow"] > z[f"{side}_wrist"], side
        assert z["neck"] > z["pelvis"] > z[f"{side}_knee"] > z[f"{side}_ankle"] > low[2], side
        assert abs(z[f"{side}_hip"] - z["pelvis"]) < 0.1, side
    for part in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist"):
        assert joints[f"left_{part}"][0] > 0.05 > -0.05 > joints[f"right_{part}"][0], part
        np.testing.assert_allclose(joints[f"left_{part}"] * [-1, 1, 1], joints[f"right_{part}"], atol=1e-6)
    for side in ("left", "right"):  # facing -y: toes and eyes in front of ankles and head
        assert joints[f"{side}_toes"][1] < joints[f"{side}_ankle"][1] - 0.05
    eye = skeleton.heads[skeleton.index("eye.L")]
    assert eye[1] < joints["neck"][1] - 0.05
    assert high[2] - joints["head_top"][2] < 0.03 and 0.8 < z["head_top"] - z["left_ankle"] + 0.1 < 1.9


# --- where the files come from -----------------------------------------------------------------------
def test_a_tree_an_archive_and_the_environment_give_the_same_files(assets, tmp_path, no_env, monkeypatch):
    tree = write_files(tmp_path / "mirror" / ROOT, assets.files)
    assert load_assets(tree.parent).files == assets.files == load_assets(tree).files
    monkeypatch.setenv(mh.ASSETS_ENV, str(tree.parent))
    assert load_assets().source == str(tree.parent)
    archive = tmp_path / "plain.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tree, arcname=ROOT)
    assert load_assets(archive).files == assets.files


def test_an_altered_or_missing_file_is_named(assets, tmp_path, no_env, capsys):
    name = "rigs/default_weights.mhw"
    tree = write_files(tmp_path / "mirror" / ROOT, {**assets.files, name: altered(assets.files[name])})
    with pytest.raises(InputError, match=f"mirror/{ROOT}: {ROOT}/{name}: SHA-256 .* does not match the manifest"):
        load_assets(tree.parent)
    assert main([str(tree.parent)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("poselift: error: ") and name in err and len(err.strip().splitlines()) == 1
    (tree / name).write_bytes(assets.files[name])
    assert main([str(tree.parent)]) == 0
    target = "targets/macrodetails/asian-male-young.target"
    (tree / target).unlink()
    with pytest.raises(InputError, match=f"lacks 1 file.* e.g. {ROOT}/{target}"):
        load_assets(tree.parent)
    with tarfile.open(tmp_path / "bad.tar", "w") as tar:
        write_files(tmp_path / "bad" / ROOT, {**assets.files, mh.MATERIAL: altered(assets.files[mh.MATERIAL])})
        tar.add(tmp_path / "bad" / ROOT, arcname=ROOT)
    with pytest.raises(InputError, match=f"bad.tar: {ROOT}/{mh.MATERIAL}: SHA-256"):
        load_assets(tmp_path / "bad.tar")
    with pytest.raises(InputError, match="typo: no such MakeHuman assets mirror"):
        load_assets(tmp_path / "typo")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: holds neither makehuman-cc0-assets.tar.xz nor a makehuman-cc0/ tree"):
        load_assets(tmp_path / "empty")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def upstream(assets, tmp_path):
    """The needed files laid out as upstream's makehuman/data/, served on 127.0.0.1 (a thread, shut down
    after the test); yields (base URL, served folder)."""
    served = write_files(tmp_path / "upstream", {f"{mh.UPSTREAM_FOLDER}/{n}": d for n, d in assets.files.items()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=served))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_fetches_verifies_and_caches_the_pinned_files(assets, upstream, tmp_path, no_env):
    url, served = upstream
    cache = tmp_path / "cache"
    downloaded = load_assets(cache_dir=cache, base_url=url)
    assert downloaded.files == assets.files and Path(downloaded.source).is_relative_to(cache)
    assert load_assets(cache_dir=cache, base_url="http://127.0.0.1:9/unused").files == assets.files  # cached
    assert load_assets(cache_dir=cache, base_url=served.as_uri()).files == assets.files  # file:// works too

    name = "rigs/default.mhskel"
    fresh = tmp_path / "fresh-cache"
    (served / mh.UPSTREAM_FOLDER / name).write_bytes(altered(assets.files[name]))
    with pytest.raises(InputError, match=f"127.0.0.1:.*/{name}: {ROOT}/{name}: SHA-256 .* does not match"):
        load_assets(cache_dir=fresh, base_url=url)
    assert not list(fresh.rglob("default.mhskel"))  # a corrupt download never enters the cache
    (served / mh.UPSTREAM_FOLDER / name).unlink()
    with pytest.raises(InputError, match=f"no MakeHuman assets source reachable: no source given and "
                                         f"{mh.ASSETS_ENV} is unset, and download failed"):
        load_assets(cache_dir=fresh, base_url=url)
    with pytest.raises(InputError, match=f"{name}: no MakeHuman assets source reachable: .*download failed"):
        load_assets(cache_dir=fresh, base_url=served.as_uri())
