"""`poselift render` on real motion (two Bandai-Namco clips from ../shared, the MakeHuman assets from ../shared):
the labels are where the pixels are, the crop's 2D maps back to the frame's through its affine, the file is
deterministic (for any number of worker processes) and seeds change only what they should, and bad input is
one line with exit code 2, from a worker too; Ctrl-C stops the workers."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from poselift.data.crop_file import CropFile
from poselift.data.crops import to_frame

CLIPS = ["dataset-1_walk_normal_001", "dataset-1_bow_active_001"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A prepared file of two real clips, and the assets mirror (skips when ../shared lacks them)."""
    from conftest import SHARED

    from poselift.data.bandai import build
    from poselift.data.prepared import write_prepared

    mirror, assets = SHARED / "data" / "bandai-namco", SHARED / "data" / "makehuman"
    if not (mirror / "Bandai-Namco-Research-Motiondataset-1.tar.xz").is_file() or not assets.is_dir():
        pytest.skip(f"{mirror} or {assets} is absent (the Bandai-Namco mirror and the MakeHuman assets)")
    root = tmp_path_factory.mktemp("render")
    write_prepared(root / "small.h5", build(mirror, clips=CLIPS))
    return root, assets


def render(run_cli, small, out, *args):
    root, assets = small
    code, stdout, err = run_cli("render", "--prepared", root / "small.h5", "--out", out, "--every", 20,
                                "--assets", assets, *args)
    assert code == 0, err
    return CropFile(out)


@pytest.fixture(scope="module")
def rendered(small):
    from poselift.cli import main

    root, assets = small
    assert main(["render", "--prepared", str(root / "small.h5"), "--out", str(root / "a.h5"), "--every", "20",
                 "--assets", str(assets)]) == 0
    return CropFile(root / "a.h5")


def test_every_view_and_frame_is_rendered_with_its_labels(rendered, small):
    from poselift.data.prepared import content_hash, load_prepared

    root, _ = small
    data = load_prepared(root / "small.h5")
    assert rendered.prepared == content_hash(root / "small.h5") and rendered.crop_size == (256, 192)
    assert len(rendered.views) == sum(len(s.cameras) for s in data.sequences)
    for seq in data.sequences:
        for camera in seq.cameras:
            view = rendered.view(f"{seq.key}/{camera}")
            assert np.array_equal(view.frame, np.arange(0, seq.num_frames, 20))
            image = rendered.crop(view.key, 0)
            assert image.shape == (256, 192, 3) and image.std() > 10  # not blank


def test_crop_keypoints_map_back_to_the_frames_pinhole_projection(rendered, small):
    from poselift.data.prepared import load_prepared

    root, _ = small
    data = load_prepared(root / "small.h5")
    for seq in data.sequences:
        for c, camera_name in enumerate(seq.cameras):
            view = rendered.view(f"{seq.key}/{camera_name}")
            camera = data.camera(seq, c)
            expected = camera.world_to_pixels(seq.positions_3d[view.frame].astype(np.float64), distort=False)
            np.testing.assert_allclose(view.keypoints_frame, expected, atol=1e-3)
            for i in range(len(view)):
                np.testing.assert_allclose(to_frame(view.keypoints[i], view.affine[i]), view.keypoints_frame[i],
                                           atol=1e-3)


def test_visible_joints_are_on_the_body_and_occluded_ones_behind_it(small, tmp_path):
    """The depth of each crop rendered again: a visible joint's pixel shows the body (finite depth), an
    occluded joint has a surface nearer than itself at its pixel; most joints are visible, some are not."""
    from poselift.data.prepared import load_prepared
    from poselift.rendering.assets import load_assets
    from poselift.rendering.body import build_body
    from poselift.rendering.rasterise import Rasteriser
    from poselift.rendering.render import RenderSettings, SequencePerson

    root, assets = small
    data = load_prepared(root / "small.h5")
    seq = data.sequences[0]
    settings = RenderSettings(every=20)
    person = SequencePerson(build_body(load_assets(assets)), seq, settings)
    checked = hidden = 0
    with Rasteriser(192, 256) as raster:
        for c, name in enumerate(seq.cameras):
            camera = data.camera(seq, c)
            view = person.render_view(raster, camera, name, settings)
            for i in range(len(view)):
                vertices = camera.world_to_camera(person.vertices[i] * 1000.0) / 1000.0
                joints = camera.world_to_camera(person.joints_mm[i]) / 1000.0
                s, tx, ty = view.affine[i][0, 0], view.affine[i][0, 2], view.affine[i][1, 2]
                intr = (s * camera.f[0], s * camera.f[1], s * camera.c[0] + tx, s * camera.c[1] + ty)
                _, depth = raster.render(vertices, person.triangles, (0.5, 0.5, 0.5), intr)
                for j in range(17):
                    u, v = np.round(view.keypoints[i, j]).astype(int)
                    if not (0 <= u < 192 and 0 <= v < 256):
                        continue
                    if view.visibility[i, j]:
                        assert np.isfinite(depth[v, u])  # on the rendered body
                    else:
                        assert depth[v, u] < joints[j, 2]  # something is in front of the joint
                    checked += 1
                    hidden += not view.visibility[i, j]
    assert checked > 100 and 0 < hidden < 0.3 * checked


def test_same_settings_same_bytes_and_seeds_change_only_pixels(run_cli, small, rendered, tmp_path):
    again = render(run_cli, small, tmp_path / "again.h5")
    scenes = render(run_cli, small, tmp_path / "scenes.h5", "--background-seed", 7)
    people = render(run_cli, small, tmp_path / "people.h5", "--seed", 1)
    labels = ("keypoints", "keypoints_frame", "affine", "box", "frame")
    for key in rendered.views[:4]:
        a, b, s, p = rendered.view(key), again.view(key), scenes.view(key), people.view(key)
        assert all(np.array_equal(x, y) for x, y in zip(a.crops, b.crops))  # same settings, same bytes
        for name in (*labels, "visibility"):  # another background: only the pixels change
            assert np.array_equal(getattr(a, name), getattr(s, name)), name
        for name in labels:  # another person: the same joints (their body may hide other joints)
            assert np.array_equal(getattr(a, name), getattr(p, name)), name
        for other in (scenes, people):
            assert np.abs(rendered.crop(key, 0).astype(int) - other.crop(key, 0)).mean() > 5


def test_one_or_two_workers_write_the_same_bytes(run_cli, small, tmp_path):
    """Worker processes render whole sequences; the parent writes them in the serial order: the same file."""
    one = render(run_cli, small, tmp_path / "one.h5", "--workers", 1, "--full-frames")
    two = render(run_cli, small, tmp_path / "two.h5", "--workers", 2, "--full-frames")
    assert one.views == two.views and one.settings == two.settings and len(one.views) == 8
    for key in one.views:
        a, b = one.view(key), two.view(key)
        for name in ("frame", "keypoints", "keypoints_frame", "affine", "box", "visibility"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), (key, name)
        assert len(a.crops) == len(b.crops) and all(np.array_equal(x, y) for x, y in zip(a.crops, b.crops)), key
        assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames)), key
        assert all(np.array_equal(a.camera[k], b.camera[k]) for k in a.camera), key
    assert (tmp_path / "one.h5").read_bytes() == (tmp_path / "two.h5").read_bytes()


def test_an_input_error_in_a_worker_is_the_same_one_line_and_leaves_nothing(run_cli, small, tmp_path, monkeypatch):
    """Assets that pass the parent's checks but not the body's: the workers fail as one process would."""
    import multiprocessing

    from poselift.rendering import assets as assets_module
    from poselift.rendering.body import MESH

    root, assets = small
    real = assets_module.load_assets
    monkeypatch.setattr(assets_module, "load_assets", lambda source=None: assets_module.Assets(
        real(source).source, {**real(source).files, MESH: b"v 0 0 0\n"}))
    errors = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}.h5"
        code, _, err = run_cli("render", "--prepared", root / "small.h5", "--out", out, "--assets", assets,
                               "--workers", workers)
        assert code == 2 and "has no 'body' group" in err and err.count("\n") == 1 and not out.exists(), err
        errors.append(err)
    assert errors[0] == errors[1] and multiprocessing.active_children() == []
    assert list(tmp_path.glob("*.tmp")) == [] and list(tmp_path.glob(".*")) == []


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_the_workers_and_leaves_nothing(small, tmp_path, how):
    """Ctrl-C in a terminal (SIGINT to the whole process group), or SIGTERM to poselift alone (Snakemake
    cancelling a job, a pre-empted node), while two workers render: exit 130 / 143, no output, no temporary
    file, and no process of the group is left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root, assets = small
    out = tmp_path / "out.h5"
    process = subprocess.Popen(
        [sys.executable, "-m", "poselift.cli", "render", "--prepared", str(root / "small.h5"), "--out", str(out),
         "--every", "1", "--assets", str(assets), "--workers", "2"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # not ignored, as in a background job

    def group() -> set[int]:  # the live processes of its process group, but itself
        pids = set()
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and int(entry) != process.pid and os.getpgid(int(entry)) == process.pid:
                    pids.add(int(entry))
            except ProcessLookupError:
                pass
        return pids

    try:
        deadline = time.monotonic() + 60
        while len(group()) < 3 and time.monotonic() < deadline:  # the resource tracker and two workers
            time.sleep(0.2)
        assert len(group()) >= 3 and process.poll() is None
        time.sleep(1.0)  # the workers are rendering
        if how == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)
        else:
            os.kill(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    code, said = {"ctrl-c": (130, "poselift: interrupted"), "sigterm": (143, "poselift: terminated")}[how]
    assert process.returncode == code and err.strip().endswith(said), err
    deadline = time.monotonic() + 10
    while group() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group() == set() and not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_input_is_one_line_and_leaves_nothing(run_cli, small, tmp_path):
    root, assets = small
    out = tmp_path / "out.h5"
    code, _, err = run_cli("render", "--prepared", tmp_path / "missing.h5", "--out", out, "--assets", assets)
    assert code == 2 and "missing.h5: file not found" in err and err.count("\n") == 1 and not out.exists()
    broken = tmp_path / "mirror"
    broken.mkdir()
    with h5py.File(tmp_path / "not-assets.h5", "w"):
        pass
    code, _, err = run_cli("render", "--prepared", root / "small.h5", "--out", out, "--assets", broken)
    assert code == 2 and "mirror" in err and err.count("\n") == 1 and not out.exists()
    code, _, err = run_cli("render", "--prepared", root / "small.h5", "--out", out, "--assets", assets,
                           "--every", 0)
    assert code == 2 and "--every: must be >= 1" in err and not out.exists()
    code, _, err = run_cli("render", "--prepared", root / "small.h5", "--out", out, "--assets", assets,
                           "--workers", 0)
    assert code == 2 and "--workers: must be >= 1" in err and not out.exists()
    assert list(tmp_path.glob("*.tmp")) == [] and list(tmp_path.glob(".*")) == []
