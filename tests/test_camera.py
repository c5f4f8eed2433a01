"""Camera model: hand-computed projections, round trips, screen normalisation, and agreement with the
real Human3.6M annotations of MMPose's test fixtures (cameras.pkl + 2D/3D joints)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from poselift.camera import (
    Camera, camera_from_mmpose, camera_to_world, image_coordinates, load_mmpose_cameras,
    normalize_screen_coordinates, project, unproject, world_to_camera,
)
from poselift.errors import InputError

F = np.array([1000.0, 1100.0])
C = np.array([500.0, 400.0])


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_point_on_the_optical_axis_lands_on_the_principal_point():
    k, p = np.array([0.3, -0.2, 0.1]), np.array([0.01, -0.02])
    np.testing.assert_array_equal(project(np.array([0.0, 0.0, 3000.0]), F, C, k, p), C)


def test_pinhole_projection_by_hand():
    # (200, -100, 2000) -> (x, y) = (0.1, -0.05) -> (1000 * 0.1 + 500, 1100 * -0.05 + 400)
    uv = project(np.array([[200.0, -100.0, 2000.0]]), F, C)
    np.testing.assert_allclose(uv, [[600.0, 345.0]], rtol=0, atol=1e-12)


def test_distortion_by_hand():
    # x = 0.1, y = -0.05, r^2 = 0.0125, k = (0.1, 0.01, 0.001), p = (0.001, 0.002):
    # radial = 1 + 0.1 * 0.0125 + 0.01 * 0.0125^2 + 0.001 * 0.0125^3 = 1.001251564453125
    # tan = 0.001 * -0.05 + 0.002 * 0.1 = 0.00015
    # x' = 0.1 * (radial + tan) + 0.002 * 0.0125 = 0.1001651564453125
    # y' = -0.05 * (radial + tan) + 0.001 * 0.0125 = -0.05005757822265625
    uv = project(np.array([200.0, -100.0, 2000.0]), F, C, np.array([0.1, 0.01, 0.001]), np.array([0.001, 0.002]))
    np.testing.assert_allclose(uv, [1000 * 0.1001651564453125 + 500, 1100 * -0.05005757822265625 + 400],
                               rtol=0, atol=1e-9)


def test_world_camera_round_trip_and_camera_centre():
    rng = np.random.default_rng(1)
    R, T = _rotation(rng), rng.normal(size=3) * 1000
    X = rng.normal(size=(5, 17, 3)) * 1000
    np.testing.assert_allclose(camera_to_world(world_to_camera(X, R, T), R, T), X, atol=1e-9)
    np.testing.assert_allclose(world_to_camera(T, R, T), 0, atol=1e-12)  # T is the camera centre
    # a point one metre along the camera's z axis (row 2 of R in world terms) is at depth 1000
    np.testing.assert_allclose(world_to_camera(T + 1000 * R[2], R, T), [0, 0, 1000], atol=1e-9)


def test_project_then_unproject_round_trip():
    rng = np.random.default_rng(2)
    X = rng.uniform([-1000, -1000, 2000], [1000, 1000, 6000], size=(4, 17, 3))
    uv = project(X, F, C)
    np.testing.assert_allclose(unproject(uv, X[..., 2], F, C), X, atol=1e-9)


def test_screen_normalisation_known_values_and_round_trip():
    w, h = 1000, 1002
    uv = np.array([[0.0, 0.0], [w, h], [w / 2, h / 2], [250.0, 100.0]])
    xy = normalize_screen_coordinates(uv, w, h)
    np.testing.assert_allclose(xy[0], [-1.0, -h / w])
    np.testing.assert_allclose(xy[1], [1.0, h / w])
    np.testing.assert_allclose(xy[2], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(xy[3], [-0.5, 2 * 100 / w - h / w])  # y scaled by 2 / w like x
    np.testing.assert_allclose(image_coordinates(xy, w, h), uv, atol=1e-9)
    assert normalize_screen_coordinates(uv.astype(np.float32), w, h).dtype == np.float32


def test_camera_methods_agree_with_the_functions():
    rng = np.random.default_rng(3)
    cam = Camera(R=_rotation(rng), T=[0, 0, -5000], f=F, c=C, k=[0.1, 0.01, 0], p=[0.001, 0], width=1000,
                 height=1002)
    X = rng.normal(size=(6, 3)) * 300
    np.testing.assert_allclose(cam.world_to_pixels(X), project(world_to_camera(X, cam.R, cam.T), F, C, cam.k, cam.p))
    np.testing.assert_allclose(cam.world_to_pixels(X, distort=False), project(cam.world_to_camera(X), F, C))
    np.testing.assert_allclose(cam.normalize(C), normalize_screen_coordinates(C, 1000, 1002))


def test_camera_from_mmpose_converts_rotation_and_units():
    """MMPose stores R camera -> world and T in metres: a point 2 m along the camera's optical axis
    (column 2 of MMPose's R, in world terms) lands on the principal point, 2000 mm deep."""
    rng = np.random.default_rng(4)
    r_c2w, centre_m = _rotation(rng), np.array([[1.5], [-2.0], [1.6]])
    entry = {"R": r_c2w, "T": centre_m, "f": F.reshape(2, 1), "c": C.reshape(2, 1),
             "k": np.zeros((3, 1)), "p": np.zeros((2, 1)), "w": 1000, "h": 1002, "name": "camera1"}
    cam = camera_from_mmpose(entry)
    point = (centre_m.ravel() + 2.0 * r_c2w[:, 2]) * 1000.0
    np.testing.assert_allclose(cam.world_to_camera(point), [0, 0, 2000], atol=1e-9)
    np.testing.assert_allclose(cam.world_to_pixels(point), C, atol=1e-9)
    assert (cam.width, cam.height, cam.name) == (1000, 1002, "camera1")
    with pytest.raises(KeyError, match="f"):
        camera_from_mmpose({"c": C})


def _h36m_camera_key(imgname: str) -> str:
    """'S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg' -> 'S1_54138969'."""
    base = imgname.split("/")[-1]
    return base.split("_")[0] + "_" + base.split(".")[1].split("_")[0]


@pytest.fixture
def h36m(mmpose_fixtures):
    root = mmpose_fixtures / "h36m"
    return load_mmpose_cameras(root / "cameras.pkl"), root


def test_mmpose_cameras_load(h36m):
    cameras, _ = h36m
    assert len(cameras) == 44  # 11 subjects x 4 cameras
    cam = cameras["S1_54138969"]
    assert (cam.width, cam.height) == (1000, 1002)
    np.testing.assert_allclose(cam.R @ cam.R.T, np.eye(3), atol=1e-6)
    assert 1000 < cam.T[2] < 2500  # camera centre 1-2.5 m above the floor: T is in mm, world z is up


def test_real_h36m_camera_frame_joints_project_onto_the_2d_annotations(h36m):
    """test_h36m_body3d.npz: S holds camera-frame joints in METRES (+ a visibility column), part the
    2D joints in pixels. Projecting S (converted to mm) with distortion matches to < 1 px."""
    cameras, root = h36m
    data = np.load(root / "test_h36m_body3d.npz")
    for name, joints3d, joints2d in zip(data["imgname"], data["S"], data["part"]):
        cam = cameras[_h36m_camera_key(str(name))]
        uv = cam.project(joints3d[:, :3] * 1000.0)
        assert np.abs(uv - joints2d[:, :2]).max() < 0.01  # the dataset's own distortion model
        # the distortion matters: without it some joints are off by more than a pixel
        assert np.abs(cam.project(joints3d[:, :3] * 1000.0, distort=False) - joints2d[:, :2]).max() > 1.0


def test_real_h36m_world_joints_project_onto_the_2d_annotations(h36m):
    """h36m_coco.json: keypoints_3d are WORLD joints in metres. Through camera_from_mmpose's extrinsics
    they must reproduce the camera-frame joints of test_h36m_body3d.npz and the 2D keypoints (< 1 px)."""
    cameras, root = h36m
    coco = json.loads((root / "h36m_coco.json").read_text())
    images = {im["id"]: im["file_name"] for im in coco["images"]}
    body3d = np.load(root / "test_h36m_body3d.npz")
    camera_frame = {str(n).split("/")[-1]: s[:, :3] * 1000.0 for n, s in zip(body3d["imgname"], body3d["S"])}
    assert len(coco["annotations"]) == 4
    for ann in coco["annotations"]:
        file_name = images[ann["image_id"]]
        cam = cameras[_h36m_camera_key(file_name)]
        world = np.array(ann["keypoints_3d"]).reshape(17, 4)[:, :3] * 1000.0
        keypoints = np.array(ann["keypoints"]).reshape(17, 3)[:, :2]
        np.testing.assert_allclose(cam.world_to_camera(world), camera_frame[file_name], atol=0.01)
        assert np.abs(cam.world_to_pixels(world) - keypoints).max() < 1.0


def test_load_mmpose_cameras_bad_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_mmpose_cameras(tmp_path / "missing.pkl")
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a pickle")
    with pytest.raises(InputError, match="not a readable MMPose cameras pickle"):
        load_mmpose_cameras(garbage)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"S1": print}))  # a pickle naming a callable is refused, not run
    with pytest.raises(InputError, match="refusing to load builtins.print"):
        load_mmpose_cameras(evil)
    no_focal = tmp_path / "no_focal.pkl"
    no_focal.write_bytes(pickle.dumps({("S1", "54138969"): {"c": np.zeros((2, 1))}}))
    with pytest.raises(InputError, match="camera S1_54138969: .*lacks f"):
        load_mmpose_cameras(no_focal)
