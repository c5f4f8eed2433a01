"""The rasteriser: triangle meshes in a camera's frame -> an RGB image and a metric depth map, with OpenGL.

The pixels of the open benchmark are people rendered through virtual Human3.6M cameras. This module draws
them with a real OpenGL rasteriser (moderngl on a headless EGL context: Mesa's llvmpipe on a CPU machine, the
driver's EGL on a GPU one), in the camera model of :mod:`poselift.camera`, so that a rendered image and the
2D joints projected with :func:`poselift.camera.project` (``distort=False``) agree to far below a pixel.

Usage::

    with Rasteriser(1000, 1002) as raster:              # one EGL context, reused for every frame
        for frame in frames:
            X = camera.world_to_camera(world_vertices_mm) / 1000.0     # metres, camera frame
            rgb, depth = raster.render(X, faces, colours, camera, background=image)

**Conventions**, in the order a vertex meets them:

1. *Camera frame*: that of :mod:`poselift.camera` (``X_cam = R (X_world - T)``): x right, y down, z forward
   (depth), in **metres** (``Camera.world_to_camera`` gives mm: divide by 1000). Pinhole only: Human3.6M's
   distortion is not rendered, so 2D labels for these images are ``camera.project(X, distort=False)``.
2. *Pixels*: the centre of pixel (column i, row j) is at (u, v) = (i, j), as for :func:`poselift.camera.project`
   (``u = fx x / z + cx``); the pixel covers [i - 1/2, i + 1/2]. OpenGL puts pixel centres at half-integers of
   its window coordinates, so ``x_w = u + 1/2`` and ``y_w = v + 1/2``. GL's window row 0 holds image row 0
   (the top): the framebuffer is stored top row first, which is exactly the order ``glReadPixels`` returns
   and numpy expects, so neither the matrix nor the readback flips anything. (The y flip of the usual
   "GL y up" convention is absorbed here: the image as GL would show it is upside down, which only mirrors
   the screen-space winding of triangles; nothing is culled, so that does not matter.)
3. *Projection matrix* (:func:`projection_matrix`), acting on the camera frame directly (no axis flips):
   with ``w_clip = z`` and the viewport ``x_w = W (x_ndc + 1) / 2``, ``y_w = H (y_ndc + 1) / 2``::

       x_ndc = (2u + 1) / W - 1   =>   x_clip = (2 fx / W) x + ((2 cx + 1) / W - 1) z
       y_ndc = (2v + 1) / H - 1   =>   y_clip = (2 fy / H) y + ((2 cy + 1) / H - 1) z
       z_ndc = (f + n) / (f - n) - 2 f n / ((f - n) z)       (-1 at z = near n, +1 at z = far f)

   A camera-frame point therefore lands at ``u = fx x / z + cx`` exactly where GL samples coverage, and a
   pixel is drawn when its centre (u, v) = (i, j) is inside the projected triangle (GL's fill rules settle
   centres exactly on an edge).
4. *Depth*: the depth buffer holds ``d = (z_ndc + 1) / 2`` (glDepthRange 0..1); inverting the projection,
   ``z = n f / (f - d (f - n))`` (:func:`linear_depth`), metres along the optical axis (not along the ray),
   ``inf`` where no surface was drawn (``d`` = the cleared 1.0). Its step is
   ``z^2 (f - n) / (n f) * 2^-24`` for a 24-bit buffer: 4e-5 m at z = 8 m with the defaults near = 0.1 m,
   far = 100 m.
5. *Shading*: Lambert with per-vertex normals, the area-weighted mean of the faces' normals
   (:func:`vertex_normals`: ``(v1 - v0) x (v2 - v0)``, so faces are counter-clockwise seen from outside, the
   right-handed convention of OBJ files; a rotation such as world -> camera keeps it). Per fragment:
   ``colour * (ambient + (1 - ambient) max(0, n . l))`` with ``l`` the unit direction *towards* the light in
   the camera frame (:class:`Light`), in display (sRGB-encoded) values, no gamma handling.
6. *Colours*: per-vertex RGB in [0, 1] (or uint8), or per-vertex UV (OBJ convention: v up from the texture
   image's bottom row) and an RGB uint8 texture (rows top first), sampled trilinearly with mipmaps.
7. *Background*: an (H, W, 3) uint8 image drawn first with ``texelFetch`` (pixels without a surface keep its
   bytes exactly), an RGB triple, or None (black).
8. *Multisampling* (``samples`` > 0, off by default): the colour is drawn into a multisampled framebuffer
   and resolved (averaged) by a blit into a single-sample one, so silhouettes blend with the background;
   depth cannot be averaged meaningfully, so it comes from a second, depth-only pass of the same mesh into a
   single-sample depth buffer: the same per-pixel-centre depth as with ``samples=0``, bit for bit.

Same inputs give the same bytes (llvmpipe's rasterisation is deterministic; so is the numpy here). One
thread at a time per :class:`Rasteriser`; each call makes its context current and restores the previous one,
so several rasterisers (say, two image sizes) can live in one thread. Release with :meth:`Rasteriser.close`
or a ``with`` block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from poselift.errors import InputError

NEAR, FAR = 0.1, 100.0  # metres
CONTEXT_HINT = "no OpenGL context (Mesa's libEGL / llvmpipe needed, or a GPU driver's EGL)"

_VERTEX = """
#version 330
uniform mat4 projection;
in vec3 in_position;
in vec3 in_normal;
#ifdef TEXTURED
in vec2 in_uv;
out vec2 v_uv;
#else
in vec3 in_colour;
out vec3 v_colour;
#endif
out vec3 v_normal;
void main() {
    gl_Position = projection * vec4(in_position, 1.0);
    v_normal = in_normal;
#ifdef TEXTURED
    v_uv = in_uv;
#else
    v_colour = in_colour;
#endif
}
"""

_FRAGMENT = """
#version 330
uniform vec3 light_direction;   // unit, towards the light, camera frame
uniform float ambient;
#ifdef TEXTURED
uniform sampler2D albedo;
in vec2 v_uv;
#else
in vec3 v_colour;
#endif
in vec3 v_normal;
out vec4 f_colour;
void main() {
#ifdef TEXTURED
    vec3 colour = texture(albedo, vec2(v_uv.x, 1.0 - v_uv.y)).rgb;   // OBJ v is up; rows are stored top first
#else
    vec3 colour = v_colour;
#endif
    float lambert = max(dot(normalize(v_normal), light_direction), 0.0);
    f_colour = vec4(colour * (ambient + (1.0 - ambient) * lambert), 1.0);
}
"""

# One triangle covering the viewport; each pixel copies its own background texel.
_BACKGROUND_VERTEX = """
#version 330
void main() {
    vec2 corner = vec2((gl_VertexID << 1) & 2, gl_VertexID & 2);
    gl_Position = vec4(corner * 2.0 - 1.0, 0.0, 1.0);
}
"""

_BACKGROUND_FRAGMENT = """
#version 330
uniform sampler2D background;
out vec4 f_colour;
void main() {
    f_colour = vec4(texelFetch(background, ivec2(gl_FragCoord.xy), 0).rgb, 1.0);
}
"""


@dataclass(frozen=True)
class Light:
    """A directional light: ``direction`` points *towards* the light in the camera frame (x right, y down,
    z forward; normalised here); ``ambient`` in [0, 1] is the share of light every surface gets, the rest is
    Lambertian. The default lights from above, slightly right, and from the camera's side."""

    direction: tuple[float, float, float] = (0.3, -0.6, -1.0)
    ambient: float = 0.35

    def unit_direction(self) -> np.ndarray:
        d = np.asarray(self.direction, dtype=np.float64).reshape(3)
        norm = np.linalg.norm(d)
        if not np.isfinite(norm) or norm == 0:
            raise ValueError(f"light direction must be a finite non-zero 3-vector, got {self.direction}")
        return d / norm


def intrinsics_tuple(intrinsics) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels from a 4-sequence or anything with ``f`` and ``c`` (a
    :class:`poselift.camera.Camera`)."""
    if hasattr(intrinsics, "f") and hasattr(intrinsics, "c"):
        values = [*np.asarray(intrinsics.f, dtype=np.float64).reshape(2),
                  *np.asarray(intrinsics.c, dtype=np.float64).reshape(2)]
    else:
        values = list(np.asarray(intrinsics, dtype=np.float64).reshape(-1))
    if len(values) != 4 or not np.all(np.isfinite(values)) or values[0] <= 0 or values[1] <= 0:
        raise ValueError(f"intrinsics must be (fx > 0, fy > 0, cx, cy), finite, got {values}")
    fx, fy, cx, cy = (float(v) for v in values)
    return fx, fy, cx, cy


def projection_matrix(intrinsics, width: int, height: int, near: float = NEAR, far: float = FAR) -> np.ndarray:
    """The OpenGL projection (4, 4) of camera-frame points (x right, y down, z forward) for pinhole
    intrinsics, with pixel centres at integer (u, v) and image row 0 in GL window row 0 (module docstring,
    item 3). Row-major: ``clip = P @ (x, y, z, 1)``."""
    fx, fy, cx, cy = intrinsics_tuple(intrinsics)
    if not (0 < near < far < np.inf):
        raise ValueError(f"need 0 < near < far < inf, got near={near}, far={far}")
    return np.array([
        [2 * fx / width, 0.0, (2 * cx + 1) / width - 1, 0.0],
        [0.0, 2 * fy / height, (2 * cy + 1) / height - 1, 0.0],
        [0.0, 0.0, (far + near) / (far - near), -2 * far * near / (far - near)],
        [0.0, 0.0, 1.0, 0.0],
    ])


def linear_depth(depth_buffer: np.ndarray, near: float = NEAR, far: float = FAR) -> np.ndarray:
    """Window depth ``d`` in [0, 1] -> z in metres (``n f / (f - d (f - n))``), float32; ``inf`` where
    ``d >= 1`` (the cleared value: no surface)."""
    d = np.asarray(depth_buffer, dtype=np.float64)
    empty = d >= 1.0
    z = near * far / (far - np.where(empty, 0.0, d) * (far - near))
    z[empty] = np.inf
    return z.astype(np.float32)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit per-vertex normals (V, 3) float32: the area-weighted sum of the normals of the faces around each
    vertex (faces counter-clockwise seen from outside). Vertices in no face, or only in degenerate ones,
    get (0, 0, -1) (facing the camera)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    face_normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 x area
    corners = f.reshape(-1)
    summed = np.empty((len(v), 3))
    for axis in range(3):
        summed[:, axis] = np.bincount(corners, weights=np.repeat(face_normals[:, axis], 3), minlength=len(v))
    norm = np.linalg.norm(summed, axis=1, keepdims=True)
    normals = np.divide(summed, norm, out=np.zeros_like(summed), where=norm > 0)
    normals[norm[:, 0] == 0] = (0.0, 0.0, -1.0)
    return normals.astype(np.float32)


def create_context(device_index: int = 0):
    """A standalone headless OpenGL >= 3.3 context on EGL; :class:`InputError` ``EGL: ...`` (one line,
    naming what is missing) when there is none."""
    try:
        import moderngl
    except ImportError as e:
        raise InputError("moderngl", f"not installed ({e}); pip install moderngl, and Mesa's libEGL") from None
    try:
        return moderngl.create_standalone_context(backend="egl", require=330, device_index=device_index)
    except Exception as e:  # glcontext raises plain Exceptions (libEGL absent, no display, no GL 3.3)
        raise InputError("EGL", f"{CONTEXT_HINT}: {type(e).__name__}: {e}") from None


class Rasteriser:
    """One EGL context with its shader programs and framebuffers for a ``width`` x ``height`` image, reused
    for every frame; ``samples`` > 0 turns on multisampling (module docstring, item 8)."""

    def __init__(self, width: int, height: int, samples: int = 0, device_index: int = 0):
        self.width, self.height, self.samples = int(width), int(height), int(samples)
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size must be positive, got {width} x {height}")
        self._ctx = create_context(device_index)  # InputError without moderngl or EGL
        import moderngl

        self._moderngl = moderngl
        self._objects: list = []
        try:
            with self._ctx:
                self._setup()
        except Exception:
            self.close()
            raise

    def _keep(self, obj):
        self._objects.append(obj)
        return obj

    def _setup(self):
        ctx, size = self._ctx, (self.width, self.height)
        limit = ctx.info["GL_MAX_RENDERBUFFER_SIZE"]
        if max(size) > limit:
            raise ValueError(f"image size {size} exceeds this OpenGL's renderbuffer limit {limit}")
        if self.samples > ctx.max_samples:
            raise ValueError(f"samples={self.samples} exceeds this OpenGL's maximum {ctx.max_samples}")
        self.renderer = str(ctx.info["GL_RENDERER"])
        self._programs = {
            textured: self._keep(ctx.program(
                vertex_shader=_define(_VERTEX, textured), fragment_shader=_define(_FRAGMENT, textured)))
            for textured in (False, True)
        }
        self._background_program = self._keep(ctx.program(
            vertex_shader=_BACKGROUND_VERTEX, fragment_shader=_BACKGROUND_FRAGMENT))
        self._background_program["background"].value = 1
        self._programs[True]["albedo"].value = 0
        self._background_vao = self._keep(ctx.vertex_array(self._background_program, []))
        self._background_texture = self._keep(ctx.texture(size, 3, alignment=1))
        self._background_texture.filter = (self._moderngl.NEAREST, self._moderngl.NEAREST)
        self._albedo = None  # created at the first textured render, remade when its size changes

        # The vertex and index buffers grow (orphan) as needed; the vertex arrays keep pointing at them.
        self._vbo = self._keep(ctx.buffer(reserve=64))
        self._ibo = self._keep(ctx.buffer(reserve=64))
        self._vaos = {
            False: self._keep(ctx.vertex_array(
                self._programs[False], [(self._vbo, "3f 3f 3f", "in_position", "in_normal", "in_colour")],
                index_buffer=self._ibo, index_element_size=4)),
            True: self._keep(ctx.vertex_array(
                self._programs[True], [(self._vbo, "3f 3f 2f", "in_position", "in_normal", "in_uv")],
                index_buffer=self._ibo, index_element_size=4)),
        }

        # Single-sample colour + depth: the output of samples=0, and the resolve target of samples > 0.
        self._colour = self._keep(ctx.renderbuffer(size, 4))
        self._depth = self._keep(ctx.depth_renderbuffer(size))
        self._fbo = self._keep(ctx.framebuffer([self._colour], self._depth))
        if self.samples:
            self._ms_fbo = self._keep(ctx.framebuffer(
                [self._keep(ctx.renderbuffer(size, 4, samples=self.samples))],
                self._keep(ctx.depth_renderbuffer(size, samples=self.samples))))
            self._resolve_fbo = self._keep(ctx.framebuffer([self._colour]))
            self._depth_fbo = self._keep(ctx.framebuffer([], self._depth))

    # --- per frame ---------------------------------------------------------------------------------------
    def render(
        self,
        vertices_cam: np.ndarray,
        faces: np.ndarray,
        vertex_colours: np.ndarray | Sequence[float] | None,
        intrinsics,
        *,
        uv: np.ndarray | None = None,
        texture: np.ndarray | None = None,
        near: float = NEAR,
        far: float = FAR,
        light: Light = Light(),
        background: np.ndarray | Sequence[int] | None = None,
        normals: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw one frame.

        ``vertices_cam`` (V, 3): camera frame, metres. ``faces`` (F, 3): vertex indices. ``vertex_colours``:
        (V, 3) or one (3,) RGB, float in [0, 1] or uint8; None = grey (or the texture's colours). ``uv``
        (V, 2) with ``texture`` (h, w, 3) uint8 instead of colours. ``intrinsics``: (fx, fy, cx, cy) in
        pixels or a :class:`poselift.camera.Camera` (distortion ignored). ``background``: (H, W, 3) uint8,
        an RGB triple (0..255) or None (black). ``normals`` (V, 3): unit vertex normals in the camera frame,
        when the caller has them (a mesh seen by several cameras); None = :func:`vertex_normals`.

        Returns ``rgb`` (H, W, 3) uint8 and ``depth`` (H, W) float32: z in metres, ``inf`` without surface.
        """
        if self._ctx is None:
            raise RuntimeError("this Rasteriser is closed")
        vertices = np.asarray(vertices_cam, dtype=np.float64)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.all(np.isfinite(vertices)):
            raise ValueError(f"vertices_cam must be finite (V, 3), got shape {vertices.shape}")
        faces = np.asarray(faces)
        if faces.size == 0:
            faces = faces.reshape(0, 3).astype(np.int64)
        if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
            raise ValueError(f"faces must be integer (F, 3), got {faces.dtype} {faces.shape}")
        if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
            raise ValueError(f"faces index vertices 0..{len(vertices) - 1}, got {faces.min()}..{faces.max()}")
        projection = projection_matrix(intrinsics, self.width, self.height, near, far)
        textured = texture is not None
        if textured:
            if vertex_colours is not None:
                raise ValueError("give vertex_colours or uv + texture, not both")
            attribute = np.asarray(uv, dtype=np.float64) if uv is not None else None
            if attribute is None or attribute.shape != (len(vertices), 2):
                raise ValueError(f"a texture needs uv of shape ({len(vertices)}, 2)")
            texture = np.ascontiguousarray(texture)
            if texture.dtype != np.uint8 or texture.ndim != 3 or texture.shape[2] != 3:
                raise ValueError(f"texture must be (h, w, 3) uint8, got {texture.dtype} {texture.shape}")
        else:
            attribute = _colours(vertex_colours, len(vertices))
        light_direction = light.unit_direction()
        if not 0.0 <= light.ambient <= 1.0:
            raise ValueError(f"light ambient must be in [0, 1], got {light.ambient}")
        background_image, clear = _background(background, self.height, self.width)

        if normals is None:
            normals = vertex_normals(vertices, faces)
        elif np.shape(normals) != vertices.shape:
            raise ValueError(f"normals must be {vertices.shape}, got {np.shape(normals)}")
        interleaved = np.concatenate([vertices, normals, attribute], axis=1).astype(np.float32)
        indices = np.ascontiguousarray(faces, dtype=np.uint32)

        with self._ctx:
            return self._draw(interleaved, indices, textured, texture, projection, light_direction,
                              float(light.ambient), background_image, clear, near, far)

    def _draw(self, interleaved, indices, textured, texture, projection, light_direction, ambient,
              background_image, clear, near, far):
        mgl, ctx = self._moderngl, self._ctx
        _upload(self._vbo, interleaved)
        _upload(self._ibo, indices)
        program, vao = self._programs[textured], self._vaos[textured]
        program["projection"].write(projection.T.astype(np.float32).tobytes())  # GL wants column-major
        program["light_direction"].value = tuple(light_direction)
        program["ambient"].value = ambient
        if textured:
            self._use_texture(texture)
        if background_image is not None:
            self._background_texture.write(background_image.tobytes())
            self._background_texture.use(1)
        ctx.disable(mgl.CULL_FACE | mgl.BLEND)
        count = indices.size

        def draw_scene(fbo):
            fbo.use()
            ctx.viewport = (0, 0, self.width, self.height)
            fbo.clear(*clear, 1.0, depth=1.0)
            if background_image is not None:
                ctx.disable(mgl.DEPTH_TEST)  # also disables depth writes
                self._background_vao.render(mgl.TRIANGLES, vertices=3)
            ctx.enable(mgl.DEPTH_TEST)
            ctx.depth_func = "<"
            if count:
                vao.render(mgl.TRIANGLES, vertices=count)

        if self.samples:
            draw_scene(self._ms_fbo)
            ctx.copy_framebuffer(self._resolve_fbo, self._ms_fbo)  # averages the samples' colours
            self._depth_fbo.use()                                   # depth-only pass, one sample per pixel
            ctx.viewport = (0, 0, self.width, self.height)
            self._depth_fbo.clear(depth=1.0)
            ctx.enable(mgl.DEPTH_TEST)
            if count:
                vao.render(mgl.TRIANGLES, vertices=count)
        else:
            draw_scene(self._fbo)

        rgb = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self._fbo.read_into(rgb, components=3, alignment=1)
        window_depth = np.empty((self.height, self.width), dtype=np.float32)
        self._fbo.read_into(window_depth, components=1, attachment=-1, alignment=1, dtype="f4")
        return rgb, linear_depth(window_depth, near, far)

    def _use_texture(self, texture: np.ndarray):
        size = (texture.shape[1], texture.shape[0])
        if self._albedo is None or self._albedo.size != size:
            if self._albedo is not None:
                self._objects.remove(self._albedo)
                self._albedo.release()
            self._albedo = self._keep(self._ctx.texture(size, 3, alignment=1))
            self._albedo.filter = (self._moderngl.LINEAR_MIPMAP_LINEAR, self._moderngl.LINEAR)
            self._albedo.repeat_x = self._albedo.repeat_y = False
        self._albedo.write(texture.tobytes())
        self._albedo.build_mipmaps()
        self._albedo.use(0)

    # --- resources -----------------------------------------------------------------------------------------
    def close(self):
        """Release the GL objects and the context (idempotent)."""
        ctx, self._ctx = getattr(self, "_ctx", None), None
        if ctx is None:
            return
        with ctx:
            for obj in reversed(self._objects):
                obj.release()
        self._objects.clear()
        ctx.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _define(source: str, textured: bool) -> str:
    """Insert ``#define TEXTURED`` after the ``#version`` line when ``textured``."""
    if not textured:
        return source
    head, rest = source.lstrip().split("\n", 1)
    return f"{head}\n#define TEXTURED\n{rest}"


def _colours(vertex_colours, count: int) -> np.ndarray:
    """Per-vertex RGB (count, 3) float64 in [0, 1] from (count, 3) or (3,), float or uint8; None = grey."""
    if vertex_colours is None:
        return np.full((count, 3), 0.7)
    colours = np.asarray(vertex_colours)
    scale = 255.0 if colours.dtype == np.uint8 else 1.0
    colours = colours.astype(np.float64) / scale
    if colours.shape not in ((3,), (count, 3)):
        raise ValueError(f"vertex_colours must be ({count}, 3) or (3,), got {colours.shape}")
    return np.broadcast_to(np.clip(colours, 0.0, 1.0), (count, 3))


def _background(background, height: int, width: int):
    """(image or None, clear RGB in [0, 1]) for an (H, W, 3) uint8 image, an RGB triple or None."""
    if background is None:
        return None, (0.0, 0.0, 0.0)
    array = np.asarray(background)
    if array.shape == (3,):
        return None, tuple(float(c) / 255.0 for c in np.clip(array, 0, 255))
    if array.shape != (height, width, 3) or array.dtype != np.uint8:
        raise ValueError(f"background must be ({height}, {width}, 3) uint8 or an RGB triple, "
                         f"got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array), (0.0, 0.0, 0.0)


def _upload(buffer, array: np.ndarray):
    """Write ``array`` at the start of ``buffer``, growing it (same GL name) when too small."""
    if array.nbytes > buffer.size:
        buffer.orphan(max(array.nbytes, 2 * buffer.size))
    if array.nbytes:
        buffer.write(array.tobytes())
