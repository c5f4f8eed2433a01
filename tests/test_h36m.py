"""Human3.6M: the published camera table, the two dataset readers, and import-detections."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from poselift.data.h36m_cameras import H36M_CAMERA_IDS, H36M_SUBJECTS, h36m_camera


# ---------------------------------------------------------------------------------------------- cameras

def _fixture_frames(mmpose_fixtures):
    """MMPose's four Human3.6M frames: (subject, camera id, camera-frame 3D in mm (17, 3), 2D px (17, 2))."""
    data = np.load(mmpose_fixtures / "h36m" / "test_h36m_body3d.npz")
    for name, S, part in zip(data["imgname"], data["S"], data["part"]):
        subject, rest = str(name).split("/", 1)
        yield subject, rest.split(".")[1][:8], S[:, :3] * 1000.0, part[:, :2]


def test_camera_table_agrees_with_mmpose_cameras_pkl(mmpose_fixtures):
    with open(mmpose_fixtures / "h36m" / "cameras.pkl", "rb") as f:
        ref = pickle.load(f)
    assert len(H36M_SUBJECTS) * len(H36M_CAMERA_IDS) == len(ref) == 44
    for subject in H36M_SUBJECTS:
        for cid in H36M_CAMERA_IDS:
            cam, r = h36m_camera(subject, cid), ref[(subject, cid)]
            # cameras.pkl stores the camera -> world rotation and the centre in metres
            np.testing.assert_allclose(cam.R, r["R"].T, atol=1e-4, err_msg=f"{subject} {cid} R")
            np.testing.assert_allclose(cam.T, r["T"].ravel() * 1000.0, atol=1e-3, err_msg=f"{subject} {cid} T")
            for key in "fckp":
                np.testing.assert_allclose(getattr(cam, key), r[key].ravel(), rtol=1e-6, atol=1e-9,
                                           err_msg=f"{subject} {cid} {key}")
            assert (cam.width, cam.height) == (r["w"], r["h"])
            np.testing.assert_allclose(cam.R @ cam.R.T, np.eye(3), atol=1e-6)
            assert np.linalg.det(cam.R) == pytest.approx(1.0, abs=1e-6)


def test_camera_intrinsics_reproduce_the_dataset_2d(mmpose_fixtures):
    """Projecting the fixture's camera-frame joints with the table's intrinsics gives its 2D to < 1 px."""
    for subject, cid, X_cam, uv in _fixture_frames(mmpose_fixtures):
        cam = h36m_camera(subject, cid)
        err = np.abs(cam.project(X_cam) - uv).max()
        assert err < 1.0, (subject, cid, err)
        # distortion matters: without it the same joints land > 1 px away
        assert np.abs(cam.project(X_cam, distort=False) - uv).max() > 1.0


def test_camera_extrinsics_put_people_on_the_floor_at_the_room_centre(mmpose_fixtures):
    """World z is up with the floor at 0: the lowest joint is near the floor and the pelvis near the centre."""
    for subject, cid, X_cam, _ in _fixture_frames(mmpose_fixtures):
        cam = h36m_camera(subject, cid)
        world = cam.camera_to_world(X_cam)
        assert -50 < world[:, 2].min() < 200, (subject, cid, world[:, 2].min())
        assert np.linalg.norm(world[0, :2]) < 1500, (subject, cid, world[0])
        np.testing.assert_allclose(cam.world_to_camera(world), X_cam, atol=1e-6)
        # the same point from another camera of the rig is in front of it and inside its image
        other = h36m_camera(subject, H36M_CAMERA_IDS[(H36M_CAMERA_IDS.index(cid) + 2) % 4])
        uv = other.world_to_pixels(world)
        assert (other.world_to_camera(world)[:, 2] > 1000).all()
        assert ((uv > 0) & (uv < [other.width, other.height])).all()


def test_camera_table_rejects_unknown_names():
    with pytest.raises(KeyError, match="S12"):
        h36m_camera("S12", "54138969")
    with pytest.raises(KeyError, match="12345678"):
        h36m_camera("S1", "12345678")


# ------------------------------------------------------------------------------- small dataset writers

# A standing person in world mm (z up, floor at 0) in H36M-17 order, near the room centre.
TEMPLATE = np.array([
    [0, 0, 950], [0, -130, 940], [10, -140, 500], [0, -150, 80], [0, 130, 940], [10, 140, 500], [0, 150, 80],
    [0, 0, 1180], [0, 0, 1420], [60, 0, 1520], [0, 0, 1650], [0, 170, 1400], [20, 200, 1130], [40, 210, 880],
    [0, -170, 1400], [20, -200, 1130], [40, -210, 880]], dtype=np.float64)
MARKER_X = 234.5  # x of mocap joint 25 (right shoulder) in every frame

# Where each H36M-17 joint goes in MPII-16 order (right_ankle, right_knee, right_hip, left_hip, left_knee,
# left_ankle, pelvis, thorax, upper_neck, head_top, right_wrist, right_elbow, right_shoulder, left_shoulder,
# left_elbow, left_wrist), and in the H36M-fine-tuned hourglass's (slots 7, 8, 9 = spine, thorax, head).
MPII_FROM_H36M = [3, 2, 1, 4, 5, 6, 0, 8, 9, 10, 16, 15, 14, 11, 12, 13]
SH_H36M_FROM_H36M = [3, 2, 1, 4, 5, 6, 0, 7, 8, 10, 16, 15, 14, 11, 12, 13]


def poses32(frames: int, seed: int) -> np.ndarray:
    """(F, 32, 3) mm: the template on a random walk, in the 17 slots H36M32_TO_17 keeps; 7777 elsewhere."""
    from poselift.skeleton import H36M32_TO_17

    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, 15, (frames, 17, 3)), axis=0) + np.cumsum(rng.normal(0, 20, (frames, 1, 3)), 0)
    out = np.full((frames, 32, 3), 7777.0)
    out[:, H36M32_TO_17] = TEMPLATE + walk
    out[:, 25, 0] = MARKER_X
    return out


RECORDINGS = {  # (subject, name as in the file) -> frames
    ("S1", "Directions 1"): 9, ("S1", "Photo"): 7, ("S9", "WalkDog 1"): 8, ("S11", "TakingPhoto 1"): 6,
}


def recordings() -> dict[tuple[str, str], np.ndarray]:
    return {key: poses32(frames, seed) for seed, (key, frames) in enumerate(RECORDINGS.items())}


def write_videopose3d_3d(path, recs) -> None:
    nested: dict = {}
    for (subject, name), p in recs.items():
        nested.setdefault(subject, {})[name] = (p / 1000.0).astype(np.float32)  # metres, as VideoPose3D
    np.savez_compressed(path, positions_3d=nested)


def shifted_rig(subject: str) -> dict:
    """The table's cameras of ``subject`` with changed centres and focal lengths (to tell sources apart)."""
    rig = {}
    for i, cid in enumerate(H36M_CAMERA_IDS):
        cam = h36m_camera(subject, cid)
        cam.T = cam.T + [100.0 * (i + 1), -50.0, 20.0]
        cam.f = cam.f * 1.01
        rig[cid] = cam
    return rig


def write_archive(root, recs, rigs) -> None:
    import h5py

    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "cameras.h5", "w") as f:
        for subject, rig in rigs.items():
            for m, cid in enumerate(H36M_CAMERA_IDS, start=1):
                g, cam = f.create_group(f"subject{subject[1:]}/camera{m}"), rig[cid]
                g["R"] = cam.R.T  # MATLAB's column-major matrix, as h5py reads it
                g["T"], g["f"], g["c"] = cam.T.reshape(3, 1), cam.f.reshape(2, 1), cam.c.reshape(2, 1)
                g["k"], g["p"] = cam.k.reshape(3, 1), cam.p.reshape(2, 1)
                g["Name"] = np.array([ord(ch) for ch in cid], dtype=np.uint16)
    for (subject, name), p in recs.items():
        folder = root / subject / "MyPoses" / "3D_positions"
        folder.mkdir(parents=True, exist_ok=True)
        with h5py.File(folder / f"{name}.h5", "w") as f:
            f["3D_positions"] = p.transpose(1, 2, 0).reshape(96, -1)  # (96, F): joint-major rows


def write_stacked_hourglass(root, data, folder="StackedHourglass", order=MPII_FROM_H36M, extra=0) -> None:
    """One h5 per sequence and camera from the prepared ground-truth 2D, in a 16-joint order."""
    import h5py

    for s in data.sequences:
        out = root / s.subject / folder
        out.mkdir(parents=True, exist_ok=True)
        for c, cid in enumerate(s.cameras):
            poses = s.positions_2d[c][:, order]
            poses = np.concatenate([poses, poses[-1:].repeat(extra, 0)])
            with h5py.File(out / f"{s.name.replace(' ', '_')}.{cid}.h5", "w") as f:
                f["poses"] = poses


def assert_refused(result, out, names, message):
    """Exit 2, one line ``poselift: error: <file>: <problem>`` naming the file, no output left behind."""
    import re

    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("poselift: error: ") and names in lines[0], lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.*")), "output left behind"


# -------------------------------------------------------------------------------------- VideoPose3D npz

@pytest.fixture
def vp3d(tmp_path, run_cli):
    """``poselift prepare h36m`` of a small data_3d_h36m.npz -> (prepared path, recordings)."""
    recs = recordings()
    write_videopose3d_3d(tmp_path / "data_3d_h36m.npz", recs)
    code, out, err = run_cli("prepare", "h36m", "--source", tmp_path, "--out", tmp_path / "p.h5")
    assert code == 0, err
    assert "4 sequences" in out
    return tmp_path / "p.h5", recs


def test_videopose3d_npz_keeps_17_joints_in_mm_with_table_cameras(vp3d):
    from poselift.data.prepared import load_prepared

    path, recs = vp3d
    data = load_prepared(path)
    assert data.dataset == "h36m" and data.fps == 50.0
    assert sorted(s.key for s in data.sequences) == ["S1/Directions 1", "S1/Photo", "S11/TakingPhoto 1", "S9/WalkDog 1"]
    for s in data.sequences:
        p32 = recs[(s.subject, s.name)]
        right_shoulder = s.positions_3d[:, 14]
        np.testing.assert_allclose(right_shoulder[:, 0], MARKER_X, atol=1e-3)  # joint 25 -> right_shoulder
        np.testing.assert_allclose(s.positions_3d[:, 10], p32[:, 15], atol=1e-3)  # joint 15 -> head, metres -> mm
        assert not np.isclose(s.positions_3d, 7777.0, atol=1.0).any()  # the 15 static joints are dropped
        assert s.rig == s.subject and s.cameras == list(H36M_CAMERA_IDS)
        for c, cid in enumerate(s.cameras):
            table = h36m_camera(s.subject, cid)
            np.testing.assert_allclose(data.camera(s, c).R, table.R)
            np.testing.assert_allclose(s.positions_2d[c], table.world_to_pixels(s.positions_3d.astype(np.float64)),
                                       atol=1e-3)
        # the template stands in the middle of the room: every camera sees it inside its image
        assert ((s.positions_2d > 0) & (s.positions_2d < 1000)).all()


def test_videopose3d_npz_splits_and_actions_through_info(vp3d, run_cli):
    import json

    code, out, _ = run_cli("info", vp3d[0], "--json")
    info = json.loads(out)
    assert code == 0 and info["joints"] == 17 and info["fps"] == 50.0
    assert info["actions"] == ["Directions", "Photo", "WalkDog"]  # "TakingPhoto 1" merges into Photo
    assert info["splits"]["train"] == {"subjects": ["S1"], "sequences": 2, "frames": 16}
    assert info["splits"]["test"] == {"subjects": ["S11", "S9"], "sequences": 2, "frames": 14}
    assert "validation" not in info["splits"]
    assert info["views"] == 4 * 30


def test_videopose3d_npz_written_by_old_numpy_is_read(vp3d, tmp_path, run_cli):
    """VideoPose3D's files predate numpy 1.17: protocol-2 pickles naming ``numpy.core``."""
    import io
    import pickle
    import zipfile

    from poselift.data.prepared import load_prepared

    nested: dict = {}
    for (subject, name), p in vp3d[1].items():
        nested.setdefault(subject, {})[name] = (p / 1000.0).astype(np.float32)
    array = np.empty((), dtype=object)
    array[()] = nested
    stream = pickle.dumps(array, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    header = io.BytesIO()  # magic and version 1.0 header, then the pickle
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": ()})
    with zipfile.ZipFile(tmp_path / "old.npz", "w") as archive:
        archive.writestr("positions_3d.npy", header.getvalue() + stream)
    code, _, err = run_cli("prepare", "h36m", "--source", tmp_path / "old.npz", "--out", tmp_path / "old.h5")
    assert code == 0, err
    old = {s.key: s.positions_3d for s in load_prepared(tmp_path / "old.h5").sequences}
    new = {s.key: s.positions_3d for s in load_prepared(vp3d[0]).sequences}
    assert old.keys() == new.keys() and all(np.array_equal(old[k], new[k]) for k in old)


# ------------------------------------------------------------------------------ 3d-pose-baseline archive

def test_archive_reads_cameras_from_cameras_h5_and_matches_the_npz_form(tmp_path, run_cli, vp3d):
    from poselift.data.prepared import load_prepared

    recs = dict(recordings())
    recs[("S11", "Directions")] = poses32(5, 99)  # the recording VideoPose3D leaves out
    rigs = {s: shifted_rig(s) for s in ("S1", "S9", "S11")}
    write_archive(tmp_path / "archive" / "h36m", recs, rigs)
    code, _, err = run_cli("prepare", "h36m-archive", "--source", tmp_path / "archive", "--out", tmp_path / "a.h5")
    assert code == 0, err
    archive, npz = load_prepared(tmp_path / "a.h5"), load_prepared(vp3d[0])
    by_key = {s.key: s for s in npz.sequences}
    assert sorted(s.key for s in archive.sequences) == sorted(by_key)  # S11 Directions dropped
    for a in archive.sequences:
        n = by_key[a.key]
        assert (a.action, a.split) == (n.action, n.split)
        np.testing.assert_allclose(a.positions_3d, n.positions_3d, atol=1e-3)  # mm file vs metres file
        for c, cid in enumerate(a.cameras):
            cam, written = archive.camera(a, c), rigs[a.subject][cid]
            np.testing.assert_allclose(cam.R, written.R, atol=1e-12)  # transposed back from the file
            np.testing.assert_allclose(cam.T, written.T)
            np.testing.assert_allclose(cam.f, written.f)
            assert (cam.width, cam.height) == (written.width, written.height)
            np.testing.assert_allclose(a.positions_2d[c], written.world_to_pixels(a.positions_3d.astype(float)),
                                       atol=1e-3)
        # the moved cameras see the same poses elsewhere than the published ones
        assert np.abs(a.positions_2d - n.positions_2d).max() > 5.0


# ---------------------------------------------------------------------------------- import-detections

def test_import_videopose3d_2d_round_trip_cuts_longer_videos(vp3d, tmp_path, run_cli):
    from poselift.data.detections import load_detections
    from poselift.data.prepared import content_hash, load_prepared

    data = load_prepared(vp3d[0])
    nested: dict = {}
    for s in data.sequences:
        views = [s.positions_2d[c] for c in range(4)]
        if s.name == "Photo":  # two videos have 3 and 1 frames more than the mocap
            views[1] = np.concatenate([views[1], np.zeros((3, 17, 2), np.float32)])
            views[2] = np.concatenate([views[2], np.zeros((1, 17, 2), np.float32)])
        nested.setdefault(s.subject, {})[s.name] = views
    source = tmp_path / "data_2d_h36m_cpn_ft_h36m_dbb.npz"
    np.savez_compressed(source, positions_2d=nested, metadata={"layout_name": "h36m", "num_joints": 17})
    code, out, err = run_cli("import-detections", "--prepared", vp3d[0], "--source", source,
                             "--out", tmp_path / "d.h5")
    assert code == 0, err
    det = load_detections(tmp_path / "d.h5")
    assert det.detector == "cpn_ft_h36m_dbb" and det.dataset == "h36m"
    assert det.prepared == content_hash(vp3d[0])
    assert det.params["scores_absent"] is True and det.params["layout"] == "h36m"
    assert det.params["trimmed_frames"] == {"S1/Photo": 3}
    for s in data.sequences:
        np.testing.assert_array_equal(det.keypoints[s.key], s.positions_2d)
        assert det.cameras[s.key] == s.cameras
        np.testing.assert_array_equal(det.scores[s.key], np.ones((4, s.num_frames, 17), np.float32))


def test_import_detections_offers_every_layout():
    from poselift.commands import import_detections
    from poselift.data.h36m import LAYOUTS

    assert import_detections.LAYOUTS == tuple(LAYOUTS)


@pytest.mark.parametrize("folder, order, layout, interpolated, sources", [
    ("StackedHourglass", MPII_FROM_H36M, "mpii", 7, (0, 8)),  # spine = mean(pelvis, thorax)
    ("StackedHourglassFineTuned240", SH_H36M_FROM_H36M, "sh_h36m", 9, (8, 10)),  # neck_nose = mean(thorax, head)
])
def test_import_stacked_hourglass_maps_16_joints(vp3d, tmp_path, run_cli, folder, order, layout, interpolated,
                                                  sources):
    import h5py

    from poselift.data.detections import load_detections
    from poselift.data.prepared import load_prepared

    data = load_prepared(vp3d[0])
    write_stacked_hourglass(tmp_path / "sh", data, folder, order, extra=2)
    for cid in H36M_CAMERA_IDS[1:]:  # the published files hold S11 Directions for 3 cameras: skipped
        with h5py.File(tmp_path / "sh" / "S11" / folder / f"Directions.{cid}.h5", "w") as f:
            f["poses"] = np.zeros((5, 16, 2))
    code, _, err = run_cli("import-detections", "--prepared", vp3d[0], "--source", tmp_path / "sh",
                           "--out", tmp_path / "d.h5")
    assert code == 0, err
    det = load_detections(tmp_path / "d.h5")
    assert det.params["layout"] == layout and len(det.params["trimmed_frames"]) == 4
    for s in data.sequences:
        got, want = det.keypoints[s.key], s.positions_2d
        copied = [j for j in range(17) if j != interpolated]
        np.testing.assert_allclose(got[:, :, copied], want[:, :, copied], atol=1e-4)
        np.testing.assert_allclose(got[:, :, interpolated], want[:, :, list(sources)].mean(axis=2), atol=1e-3)


# ------------------------------------------------------------------------------------------ bad inputs

def _bad_npz(tmp_path, defect):
    recs = recordings()
    path = tmp_path / "data_3d_h36m.npz"
    if defect == "missing key":
        np.savez_compressed(path, poses=np.zeros(3))
    elif defect == "joints":
        recs[("S9", "WalkDog 1")] = recs[("S9", "WalkDog 1")][:, :31]
        write_videopose3d_3d(path, recs)
    elif defect == "nan":
        recs[("S1", "Photo")][2, 13, 1] = np.nan
        write_videopose3d_3d(path, recs)
    elif defect == "subject":
        recs[("S12", "Walking")] = recs.pop(("S9", "WalkDog 1"))
        write_videopose3d_3d(path, recs)
    elif defect == "truncated":
        write_videopose3d_3d(path, recs)
        path.write_bytes(path.read_bytes()[:300])
    elif defect == "code":  # a pickle that would construct an arbitrary class
        from fractions import Fraction
        np.savez(path, positions_3d={"S1": {"Walking": Fraction(1, 3)}})
    return path


@pytest.mark.parametrize("defect, message", [
    ("missing key", r"missing key 'positions_3d' \(has: poses\)"),
    ("joints", r"S9 'WalkDog 1'.*\(8, 31, 3\).*32"),
    ("nan", r"S1 'Photo'.*non-finite"),
    ("subject", r"unknown subject 'S12'"),
    ("truncated", r"not a readable"),
    ("code", r"refusing to load fractions\.Fraction"),
])
def test_bad_videopose3d_npz_is_refused(tmp_path, run_cli, defect, message):
    path = _bad_npz(tmp_path, defect)
    out = tmp_path / "out" / "p.h5"
    result = run_cli("prepare", "h36m", "--source", path, "--out", out)
    assert_refused(result, out, str(path), message)


@pytest.mark.parametrize("defect, culprit, message", [
    ("not hdf5", "S9/MyPoses/3D_positions/WalkDog 1.h5", r"not a readable HDF5"),
    ("truncated", "S1/MyPoses/3D_positions/Photo.h5", r"not a readable HDF5"),
    ("shape", "S1/MyPoses/3D_positions/Directions 1.h5", r"\(93, 9\).*\(96, F\)"),
    ("key", "S1/MyPoses/3D_positions/Directions 1.h5", r"missing dataset '3D_positions' \(has: poses\)"),
    ("camera", "cameras.h5", r"missing group 'subject9/camera3' \(has: camera1, camera2, camera4\)"),
    ("subject", "S13/MyPoses/3D_positions/Walking.h5", r"unknown subject 'S13'"),
    ("nan", "S11/MyPoses/3D_positions/TakingPhoto 1.h5", r"non-finite"),
])
def test_bad_archive_is_refused(tmp_path, run_cli, defect, culprit, message):
    import h5py

    root = tmp_path / "h36m"
    recs = recordings()
    if defect == "nan":
        recs[("S11", "TakingPhoto 1")][0, 0, 0] = np.nan
    write_archive(root, recs, {s: shifted_rig(s) for s in ("S1", "S9", "S11")})
    target = root / culprit
    if defect == "not hdf5":
        target.write_text("Directions 1, frame 1: 0.0 0.0 0.0\n")
    elif defect == "truncated":
        target.write_bytes(target.read_bytes()[:1000])
    elif defect in ("shape", "key"):
        with h5py.File(target, "w") as f:
            f["3D_positions" if defect == "shape" else "poses"] = np.zeros((93, 9))
    elif defect == "camera":
        with h5py.File(target, "a") as f:
            del f["subject9/camera3"]
    elif defect == "subject":
        target.parent.mkdir(parents=True)
        with h5py.File(target, "w") as f:
            f["3D_positions"] = np.zeros((96, 4))
    out = tmp_path / "out" / "a.h5"
    result = run_cli("prepare", "h36m-archive", "--source", root, "--out", out)
    assert_refused(result, out, str(target), message)


@pytest.mark.parametrize("defect, message", [
    ("extra sequence", r"1 sequences are not in .*p\.h5: S9 'Walking 1'"),
    ("missing sequence", r"no detections for 1 sequences .*S1/Photo"),
    ("three cameras", r"S11/TakingPhoto 1: 3 camera views, the prepared file has 4"),
    ("short video", r"S1/Directions 1: 8 detected frames in a view, fewer than the 9 mocap frames"),
    ("joints", r"layout 'h36m' has 17 joints, the keypoints have 16"),
])
def test_bad_detections_are_refused(vp3d, tmp_path, run_cli, defect, message):
    from poselift.data.prepared import load_prepared

    data = load_prepared(vp3d[0])
    nested: dict = {}
    for s in data.sequences:
        nested.setdefault(s.subject, {})[s.name] = [s.positions_2d[c] for c in range(4)]
    if defect == "extra sequence":
        nested["S9"]["Walking 1"] = nested["S9"]["WalkDog 1"]
    elif defect == "missing sequence":
        del nested["S1"]["Photo"]
    elif defect == "three cameras":
        nested["S11"]["TakingPhoto 1"] = nested["S11"]["TakingPhoto 1"][:3]
    elif defect == "short video":
        nested["S1"]["Directions 1"][2] = nested["S1"]["Directions 1"][2][:8]
    elif defect == "joints":
        nested = {s: {a: [v[:, :16] for v in views] for a, views in acts.items()} for s, acts in nested.items()}
    source = tmp_path / "dets.npz"
    np.savez_compressed(source, positions_2d=nested, metadata={"layout_name": "h36m"})
    out = tmp_path / "out" / "d.h5"
    result = run_cli("import-detections", "--prepared", vp3d[0], "--source", source, "--out", out)
    assert_refused(result, out, str(source), message)
