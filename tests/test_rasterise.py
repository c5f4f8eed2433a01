"""The OpenGL rasteriser against poselift's camera model: silhouettes, depth, shading, background,
determinism, textures, and a speed figure (``-s`` shows it).

Needs a headless EGL context (Mesa's llvmpipe is enough); the GL tests skip with the reason if none can be
created. The matrix, depth and normal helpers are checked without one.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from poselift.camera import Camera
from poselift.errors import InputError
from poselift.rendering.rasterise import Light, Rasteriser, linear_depth, projection_matrix, vertex_normals

W, H = 256, 192
# Human3.6M-like intrinsics at 256 x 192: fx != fy and an off-centre, non-integer principal point.
F, C = np.array([293.1, 291.7]), np.array([127.38, 96.71])


@pytest.fixture(scope="module")
def raster():
    try:
        r = Rasteriser(W, H)
    except InputError as e:
        pytest.skip(f"no headless OpenGL here ({e})")
    yield r
    r.close()


@pytest.fixture(scope="module")
def raster_msaa(raster):
    with Rasteriser(W, H, samples=4) as r:
        yield r


def look_at(eye_mm, target_mm=(0.0, 0.0, 0.0)) -> Camera:
    """A Camera at ``eye`` (world, z up, mm) looking at ``target``: x right, y down, z forward."""
    eye, target = np.asarray(eye_mm, float), np.asarray(target_mm, float)
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return Camera(R=np.stack([right, down, forward]), T=eye, f=F, c=C, width=W, height=H)


CAMERA = look_at([2500.0, -3000.0, 1500.0], [100.0, 50.0, 900.0])


def rotation(axis, degrees) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.radians(degrees)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def square(centre, size, R=np.eye(3)):
    """Four corners (4, 3) of a square in the plane spanned by R's first two columns, and 2 faces whose
    normal is -R[:, 2] (towards the camera for R = I)."""
    half = size / 2
    local = np.array([[-half, -half, 0], [half, -half, 0], [half, half, 0], [-half, half, 0]])
    return np.asarray(centre, float) + local @ R.T, np.array([[0, 2, 1], [0, 3, 2]])


def cube(centre, size, R=np.eye(3)):
    """24 vertices (4 per face, so each face is flat-shaded), 12 outward triangles, and per-vertex face ids."""
    corners = (np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * size / 2)
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    vertices, faces = [], []
    for quad in quads:
        q = corners[quad]
        if np.dot(np.cross(q[1] - q[0], q[2] - q[0]), q.mean(0)) < 0:  # make it outward
            q = q[::-1]
        base = len(vertices)
        vertices.extend(q)
        faces += [[base, base + 1, base + 2], [base, base + 2, base + 3]]
    return np.asarray(centre, float) + np.array(vertices) @ R.T, np.array(faces), np.repeat(np.arange(6), 4)


def uv_sphere(centre, radius, rings, segments):
    """A closed UV sphere: (rings - 1) * segments + 2 vertices, 2 * segments * (rings - 1) outward triangles."""
    theta = np.linspace(0, np.pi, rings + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    vertices = np.concatenate([[[0, 0, 1]], ring, [[0, 0, -1]]]) * radius + centre
    n, last = segments, len(vertices) - 1
    j = np.arange(n)
    faces = [np.stack([np.zeros(n, int), 1 + j, 1 + (j + 1) % n], 1)]
    for i in range(rings - 2):
        a, b = 1 + i * n + j, 1 + i * n + (j + 1) % n
        faces += [np.stack([a, a + n, b + n], 1), np.stack([a, b + n, b], 1)]
    a = 1 + (rings - 2) * n + j
    faces.append(np.stack([a, np.full(n, last), 1 + (rings - 2) * n + (j + 1) % n], 1))
    faces = np.concatenate(faces)
    centroids = vertices[faces].mean(1) - centre
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)
    flip = np.sum(normals * centroids, 1) < 0
    faces[flip] = faces[flip][:, ::-1]
    return vertices, faces


# --- 2D geometry of the expected silhouettes --------------------------------------------------------------
PIXELS = np.stack(np.meshgrid(np.arange(W), np.arange(H)), -1).astype(float)  # (H, W, 2): (u, v) centres


def convex_polygon(points_2d):
    """The convex hull of 2D points, counter-clockwise in (u, v) numbers."""
    return points_2d[ConvexHull(points_2d).vertices]


def inside(polygon):
    """(H, W) bool: pixel centres inside the convex, counter-clockwise ``polygon``."""
    mask = np.ones((H, W), bool)
    for a, b in zip(polygon, np.roll(polygon, -1, axis=0)):
        edge, rel = b - a, PIXELS - a
        mask &= edge[0] * rel[..., 1] - edge[1] * rel[..., 0] >= 0
    return mask


def boundary_distance(polygon):
    """(H, W): distance in pixels from each pixel centre to the polygon's boundary."""
    best = np.full((H, W), np.inf)
    for a, b in zip(polygon, np.roll(polygon, -1, axis=0)):
        edge = b - a
        t = np.clip(((PIXELS - a) @ edge) / (edge @ edge), 0, 1)
        best = np.minimum(best, np.linalg.norm(PIXELS - (a + t[..., None] * edge), axis=-1))
    return best


def polygon_centroid(polygon):
    x, y = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    area = cross.sum() / 2
    return np.array([((x + x1) * cross).sum(), ((y + y1) * cross).sum()]) / (6 * area)


def check_silhouette(mask, polygon):
    """Rendered ``mask`` against the projected convex ``polygon``: the brief's tolerances (edges within
    1 px, centroid within 0.5 px) and the real one (only centres within 0.01 px of an edge may differ)."""
    expected = inside(polygon)
    distance = boundary_distance(polygon)
    wrong = mask != expected
    assert mask.sum() > 500
    assert not wrong.any() or distance[wrong].max() < 1.0
    worst = distance[wrong].max() if wrong.any() else 0.0
    assert worst < 0.01, f"{wrong.sum()} pixels off, up to {worst:.3f} px inside the projected outline"
    v, u = np.nonzero(mask)
    centroid = np.array([u.mean(), v.mean()])
    assert np.linalg.norm(centroid - polygon_centroid(polygon)) < 0.5
    ev, eu = np.nonzero(expected)
    assert np.linalg.norm(centroid - [eu.mean(), ev.mean()]) < 1e-6


# --- without a GL context ---------------------------------------------------------------------------------
def test_projection_matrix_is_poselifts_pinhole():
    """Clip -> NDC -> window (x_w = W (x_ndc + 1) / 2), minus the half-pixel, is camera.project; depth inverts."""
    near, far = 0.1, 100.0
    P = projection_matrix(CAMERA, W, H, near, far)
    X = np.random.default_rng(0).uniform([-2, -2, 0.5], [2, 2, 20], (100, 3))
    clip = np.concatenate([X, np.ones((100, 1))], 1) @ P.T
    ndc = clip[:, :3] / clip[:, 3:]
    window = (ndc[:, :2] + 1) / 2 * [W, H]
    np.testing.assert_allclose(window - 0.5, CAMERA.project(X, distort=False), atol=1e-9)
    np.testing.assert_allclose(linear_depth((ndc[:, 2] + 1) / 2, near, far), X[:, 2], rtol=1e-6)
    assert np.isinf(linear_depth(np.array([1.0]), near, far)).all()


def test_vertex_normals_are_outward_unit():
    vertices, faces = uv_sphere(np.zeros(3), 1.0, 24, 32)
    normals = vertex_normals(vertices, faces)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-6)
    assert np.min(np.sum(normals * vertices, axis=1)) > 0.99


def test_no_egl_is_a_one_line_input_error(monkeypatch):
    import moderngl

    def fail(**kwargs):
        raise Exception("libEGL.so: cannot open shared object file:\n No such file")

    monkeypatch.setattr(moderngl, "create_standalone_context", fail)
    with pytest.raises(InputError) as caught:
        Rasteriser(8, 8)
    message = str(caught.value)
    assert message.startswith("EGL: no OpenGL context (Mesa's libEGL / llvmpipe needed")
    assert "libEGL.so" in message and "\n" not in message


# --- with a GL context ------------------------------------------------------------------------------------
def test_square_silhouette_matches_projection(raster):
    R = rotation([1, 2, 0.5], 35)
    corners_world, faces = square([100.0, 50.0, 900.0], 900.0, R)  # mm, world
    X = CAMERA.world_to_camera(corners_world) / 1000.0
    _, depth = raster.render(X, faces, (0.9, 0.2, 0.2), CAMERA)
    check_silhouette(np.isfinite(depth), convex_polygon(CAMERA.project(X, distort=False)))


def test_cube_silhouette_matches_projection(raster, raster_msaa):
    vertices_world, faces, _ = cube([50.0, 0.0, 1000.0], 800.0, rotation([0.3, -1, 2], 50))
    X = CAMERA.world_to_camera(vertices_world) / 1000.0
    polygon = convex_polygon(CAMERA.project(X, distort=False))
    for r in (raster, raster_msaa):
        _, depth = r.render(X, faces, (0.5, 0.5, 0.5), CAMERA)
        check_silhouette(np.isfinite(depth), polygon)


def test_depth_is_the_surfaces_z(raster):
    """A tilted square: depth at each drawn pixel is where that pixel's ray meets its plane."""
    corners, faces = square([0.1, -0.05, 2.5], 0.8, rotation([1, 1, 0], 50))
    _, depth = raster.render(corners, faces, None, CAMERA)
    drawn = np.isfinite(depth)
    normal = np.cross(corners[1] - corners[0], corners[3] - corners[0])
    rays = np.concatenate([(PIXELS - C) / F, np.ones((H, W, 1))], -1)  # z = 1
    plane_z = (normal @ corners[0]) / (rays @ normal)
    error = np.abs(depth[drawn] - plane_z[drawn])
    assert drawn.sum() > 1000 and error.max() < 1e-3, error.max()
    assert 1.9 < depth[drawn].min() < 2.3 and 2.7 < depth[drawn].max() < 3.1


def test_nearer_surface_occludes_farther(raster):
    near_square, faces = square([-0.1, 0.0, 2.0], 0.5)
    far_square, _ = square([0.15, 0.1, 3.0], 1.0)
    vertices = np.concatenate([far_square, near_square])
    colours = np.repeat([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], 4, axis=0)
    both = np.concatenate([faces, faces + 4])
    light = Light((0, 0, -1), 0.5)
    rgb, depth = raster.render(vertices, both, colours, CAMERA, light=light)
    rgb_reversed, depth_reversed = raster.render(vertices, both[::-1], colours, CAMERA, light=light)
    np.testing.assert_array_equal(depth, depth_reversed)  # the depth test, not the drawing order
    np.testing.assert_array_equal(rgb, rgb_reversed)

    project = lambda X: CAMERA.project(X, distort=False)  # noqa: E731
    near_mask = inside(convex_polygon(project(near_square)))
    far_mask = inside(convex_polygon(project(far_square)))
    covered = near_mask & far_mask
    assert covered.sum() > 1000 and (far_mask & ~near_mask).sum() > 1000
    np.testing.assert_allclose(depth[covered], 2.0, atol=1e-3)
    np.testing.assert_allclose(depth[far_mask & ~near_mask], 3.0, atol=1e-3)
    assert (rgb[covered] == [255, 0, 0]).all() and (rgb[far_mask & ~near_mask] == [0, 0, 255]).all()
    # Points of the farther square seen through covered pixels lie behind the depth there.
    v, u = np.nonzero(covered)
    hidden = np.stack([(u - C[0]) / F[0] * 3.0, (v - C[1]) / F[1] * 3.0, np.full(len(u), 3.0)], 1)
    np.testing.assert_allclose(project(hidden), np.stack([u, v], 1), atol=1e-9)
    assert (hidden[:, 2] > depth[v, u] + 0.9).all()


def test_face_towards_light_is_brighter(raster):
    """A cube turned 45 degrees about the camera's y axis shows two faces; light from the right."""
    vertices, faces, face_id = cube([0.0, 0.0, 3.0], 1.0, rotation([0, 1, 0], 45))
    light = Light(direction=(1.0, 0.0, -0.3), ambient=0.25)
    rgb, _ = raster.render(vertices, faces, (0.8, 0.8, 0.8), CAMERA, light=light)
    normals = vertex_normals(vertices, faces)
    grey = rgb.astype(float).mean(-1)
    shades = {}
    for face in range(6):
        n = normals[face_id == face][0]
        if n[2] > -0.1:  # not seen
            continue
        corners = CAMERA.project(vertices[face_id == face], distort=False)
        interior = inside(convex_polygon(corners)) & (boundary_distance(convex_polygon(corners)) > 1.5)
        lambert = max(0.0, float(n @ light.unit_direction()))
        expected = 255 * 0.8 * (light.ambient + (1 - light.ambient) * lambert)
        assert interior.sum() > 300 and np.abs(grey[interior] - expected).max() <= 1.0
        shades[lambert > 0] = grey[interior].mean()
    assert shades[True] > shades[False] + 50


def test_given_normals_are_the_computed_ones_rotated(raster):
    """A mesh seen by several cameras: normals computed once in the world and rotated into a camera shade
    like the ones computed in that camera (poselift render passes them), and the wrong shape is refused."""
    R = rotation([1, 2, 0.5], 35)
    world, faces = uv_sphere(np.array([0.1, -0.2, 0.3]), 0.6, 16, 24)
    camera_frame = world @ R.T + [0.0, 0.0, 3.0]
    light = Light(direction=(1.0, -0.5, -0.3), ambient=0.2)
    rgb, depth = raster.render(camera_frame, faces, (0.7, 0.6, 0.5), CAMERA, light=light)
    given = vertex_normals(world, faces) @ R.T
    rgb_given, depth_given = raster.render(camera_frame, faces, (0.7, 0.6, 0.5), CAMERA, light=light,
                                           normals=given)
    np.testing.assert_array_equal(depth_given, depth)
    assert np.abs(rgb_given.astype(int) - rgb).max() <= 1
    with pytest.raises(ValueError, match="normals must be"):
        raster.render(camera_frame, faces, (0.7, 0.6, 0.5), CAMERA, normals=given[:-1])


def test_background_is_kept_where_nothing_is_drawn(raster, raster_msaa):
    background = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    vertices, faces = uv_sphere(np.array([0.05, 0.0, 2.5]), 0.5, 16, 24)
    rgb, depth = raster.render(vertices, faces, (0.2, 0.9, 0.3), CAMERA, background=background)
    empty = np.isinf(depth)
    assert 1000 < (~empty).sum() < empty.sum()
    np.testing.assert_array_equal(rgb[empty], background[empty])
    assert (rgb[~empty] != background[~empty]).any(-1).mean() > 0.99
    # Multisampled: silhouette pixels blend; pixels 2 px away from any surface are the background's.
    rgb_ms, depth_ms = raster_msaa.render(vertices, faces, (0.2, 0.9, 0.3), CAMERA, background=background)
    np.testing.assert_array_equal(depth_ms, depth)
    near = np.zeros_like(empty)
    for dv in range(-2, 3):
        for du in range(-2, 3):
            near |= np.roll(~empty, (dv, du), axis=(0, 1))
    np.testing.assert_array_equal(rgb_ms[~near], background[~near])
    # An RGB triple, and None (black).
    rgb, _ = raster.render(vertices, faces, (0.2, 0.9, 0.3), CAMERA, background=(10, 200, 30))
    assert (rgb[empty] == [10, 200, 30]).all()
    rgb, _ = raster.render(vertices, faces, (0.2, 0.9, 0.3), CAMERA)
    assert (rgb[empty] == 0).all()


def test_same_inputs_same_bytes(raster):
    vertices, faces = uv_sphere(np.array([0.0, 0.1, 2.0]), 0.6, 40, 60)
    colours = np.random.default_rng(2).random((len(vertices), 3))
    background = np.full((H, W, 3), 77, np.uint8)
    first = raster.render(vertices, faces, colours, CAMERA, background=background)
    raster.render(*square([0, 0, 1.5], 0.3), (1, 1, 1), CAMERA)  # something else in between
    second = raster.render(vertices, faces, colours, CAMERA, background=background)
    with Rasteriser(W, H) as other:
        third = other.render(vertices, faces, colours, CAMERA, background=background)
    for a in (second, third):
        assert a[0].tobytes() == first[0].tobytes() and a[1].tobytes() == first[1].tobytes()


def test_texture_orientation(raster):
    """OBJ-style UVs (v up): the texture's top rows land on the square's top (smaller image v)."""
    corners, faces = square([0.0, 0.0, 2.0], 0.8)  # corners 0, 1 at y = -0.4 (up in the image)
    uv = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    texture = np.zeros((64, 64, 3), np.uint8)
    texture[:32, :, 0] = 255  # top half red
    texture[32:, :, 2] = 255  # bottom half blue
    texture[:, :32, 1] = 255  # left half green
    rgb, depth = raster.render(corners, faces, None, CAMERA, uv=uv, texture=texture, light=Light((0, 0, -1), 1.0))
    v, u = np.nonzero(np.isfinite(depth))
    top, bottom = v < v.min() + 0.2 * np.ptp(v), v > v.max() - 0.2 * np.ptp(v)
    left, right = u < u.min() + 0.2 * np.ptp(u), u > u.max() - 0.2 * np.ptp(u)
    assert (rgb[v[top], u[top], 0] == 255).all() and (rgb[v[bottom], u[bottom], 2] == 255).all()
    assert (rgb[v[left], u[left], 1] == 255).all() and (rgb[v[right], u[right], 1] == 0).all()


def test_close_releases_and_is_idempotent():
    try:
        r = Rasteriser(16, 16)
    except InputError as e:
        pytest.skip(f"no headless OpenGL here ({e})")
    r.close()
    r.close()
    with pytest.raises(RuntimeError, match="closed"):
        r.render(np.zeros((3, 3)), np.zeros((1, 3), int), None, (10, 10, 8, 8))


def test_speed_figure(raster):
    """ms per frame for a ~26k-triangle sphere, vertex upload and normals included (printed, not asserted)."""
    vertices, faces = uv_sphere(np.array([0.0, 0.0, 2.5]), 0.7, 115, 114)
    colours = np.random.default_rng(3).random((len(vertices), 3))
    sizes = [(raster, W, H)]
    big = Rasteriser(1000, 1000)
    intrinsics = {W: CAMERA, 1000: (1145.0, 1143.8, 512.5, 515.5)}
    try:
        for r, width, height in sizes + [(big, 1000, 1000)]:
            r.render(vertices, faces, colours, intrinsics[width])  # warm up
            frames = 20
            start = time.perf_counter()
            for i in range(frames):
                r.render(vertices + [0.001 * i, 0, 0], faces, colours, intrinsics[width])
            ms = (time.perf_counter() - start) / frames * 1000
            print(f"\nrasterise: {len(faces)} triangles, {width}x{height}: {ms:.1f} ms/frame ({r.renderer})")
    finally:
        big.close()
    assert len(faces) > 25000
