"""``poselift render``: people rendered from a prepared file's motion, through its cameras, with exact labels.

Method, for each sequence of the prepared file (every ``every``-th frame):

1. **A person** (:mod:`poselift.rendering.appearance`): body shape, skin, hair, clothes and light drawn from
   the seed and the sequence's key, so one sequence is one person in every camera, and another seed is
   another person.
2. **Motion** (:mod:`poselift.rendering.retarget`): the body, sized to the sequence's skeleton, posed so
   its bones follow the prepared 3D joints; linear-blend skinning gives the mesh of every frame
   (:mod:`poselift.rendering.body`).

Then for each camera of the sequence and each of those frames:

3. **Labels**: the prepared 3D joints through the camera as a pinhole (the rasteriser draws no lens
   distortion, so neither do the labels): 2D in frame pixels; from them the HRNet person box (aspect 3:4,
   x1.25) and the frame -> crop affine (:mod:`poselift.data.crops`).
4. **Pixels** (:mod:`poselift.rendering.rasterise`): a crop without rotation is itself a pinhole camera
   (f' = s f, c' = s c + t for the affine's scale s and offset t), so the 256x192 crop is rendered directly,
   over the view's background (one per view, a static camera: :func:`~poselift.rendering.appearance.background`
   at half the camera's resolution, cut by the same affine). With ``full_frames`` the whole frame is rendered too.
5. **Visibility** from the depth buffer: a joint is occluded when the surface seen at its pixel is nearer,
   by more than ``OCCLUSION_MARGIN``, than the nearest surface of the joint's own body parts along its line
   of sight (the parts that meet at it, on its side: thigh and shin for a knee; :data:`OWN_PARTS`): another
   part of the body, or another limb, is in front of it. A hip seen from behind is visible (the buttock is
   its own part), a hip behind the other thigh is not.

Written in the labelled-crops layout (:mod:`poselift.data.crop_file`), tied to the prepared file by its
content hash, with every setting; same settings, same bytes.

**Execution** (no part of the settings: it never changes a byte). A sequence is the unit of work: its person
and posed meshes are made once and drawn in all its cameras (:class:`SequenceRenderer`). With ``workers`` > 1
(default: the CPUs this process may use, :func:`default_workers`), that many spawned processes each build the
body and their rasterisers once and render whole sequences, sent as their motion alone; the parent writes
their views with the one :class:`~poselift.data.crop_file.CropWriter` in the serial order (sequences, then
cameras), so the file is the same bytes for any number of workers (:func:`render_sequences`).
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np

from poselift.errors import InputError

OCCLUSION_MARGIN = 0.02  # m: how much nearer than a joint's own surface another surface must be to hide it
SIGHT_RADIUS = 3.0  # crop pixels: own-part vertices this close to a joint's pixel are on its line of sight
OWN_PARTS = {  # H36M-17 joint -> the body regions (poselift.rendering.appearance.REGIONS) that meet at it
    "pelvis": ("torso", "hips", "thighs"), "spine": ("torso", "hips"), "thorax": ("torso", "head", "upper_arms"),
    "neck_nose": ("head", "hair", "torso"), "head": ("head", "hair"),
    "hip": ("hips", "thighs"), "knee": ("thighs", "shins"), "ankle": ("shins", "feet"),
    "shoulder": ("torso", "upper_arms"), "elbow": ("upper_arms", "forearms"), "wrist": ("forearms", "hands"),
}
SCENE_STEP = 2  # backgrounds are drawn at 1/SCENE_STEP of the camera's resolution (smooth scenes; 4x cheaper)
SKIN_CHUNK = 64  # frames skinned at once (skinning holds a dense (V, 12 n) array)
# A worker process is one core's worth of work: the thread pools of its libraries (OpenMP, BLAS, OpenCV,
# llvmpipe) get one thread each, set in its environment before it loads them.
WORKER_ENVIRONMENT = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                             "OPENCV_FOR_THREADS_NUM", "LP_NUM_THREADS")}


@dataclass(frozen=True)
class RenderSettings:
    every: int = 10  # render every n-th frame of each sequence
    seed: int = 0  # people: shape, skin, hair, clothes, light
    background_seed: int | None = None  # backgrounds (None: ``seed``)
    split: str | None = None  # render one split only (None: all)
    crop_height: int = 256
    crop_width: int = 192
    quality: int = 90  # JPEG quality
    full_frames: bool = False  # also render and store each whole frame

    def to_dict(self) -> dict:
        return asdict(self)


def stream_seed(seed: int, *names: str) -> int:
    """A 63-bit seed for (seed, names): independent people, lights and backgrounds per sequence and view."""
    digest = hashlib.sha256("/".join([str(seed), *names]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def render_prepared(prepared: str | os.PathLike, out: str | os.PathLike, settings: RenderSettings,
                    assets: str | os.PathLike | None = None, progress: bool = True,
                    workers: int | None = None) -> dict:
    """Render every selected view of ``prepared`` into the labelled-crops file ``out`` (atomically); returns
    counts. ``workers`` processes render whole sequences side by side (default: :func:`default_workers`, at
    most one per sequence; 1: in this process); the file is the same bytes for any number of them."""
    from contextlib import closing

    from tqdm import tqdm

    from poselift.data.crop_file import CropWriter
    from poselift.data.prepared import content_hash, load_prepared
    from poselift.rendering.assets import load_assets

    if settings.every < 1:
        raise InputError("--every", f"must be >= 1 (got {settings.every})")
    if workers is not None and workers < 1:
        raise InputError("--workers", f"must be >= 1 (got {workers})")
    data = load_prepared(prepared)
    sequences = data.select(settings.split)
    if not sequences:
        raise InputError(prepared, f"no sequences in split {settings.split!r}")
    assets_ = load_assets(assets)
    record = {**settings.to_dict(), "assets": hashlib.sha256(
        "".join(f"{n}:{hashlib.sha256(b).hexdigest()}" for n, b in sorted(assets_.files.items())).encode()).hexdigest()}
    jobs = [(seq, [data.camera(seq, c) for c in range(len(seq.cameras))]) for seq in sequences]
    workers = min(workers or default_workers(), len(jobs))
    views = crops = 0
    size = (settings.crop_height, settings.crop_width)
    with CropWriter(out, "render", content_hash(prepared), record, crop_size=size) as writer, \
            tqdm(total=sum(len(s.cameras) for s in sequences), desc="render", unit="view",
                 disable=None if progress else True) as bar, \
            closing(render_sequences(jobs, assets_, settings, workers)) as rendered:
        for sequence_views in rendered:
            for view in sequence_views:
                writer.add(view)
                crops += len(view)
            views += len(sequence_views)
            bar.update(len(sequence_views))
    return {"sequences": len(sequences), "views": views, "crops": crops, "workers": workers}


def default_workers() -> int:
    """The number of CPUs this process may use (its affinity: a cluster job's allocation, a ``taskset``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def render_sequences(jobs, assets, settings: RenderSettings, workers: int = 1):
    """For each ``(sequence, its cameras)`` of ``jobs``, in order: the list of its views, one per camera in
    order. ``workers`` = 1: rendered here; more: in that many worker processes (:func:`_in_workers`). Close
    the generator (``contextlib.closing``) to stop early; that stops the workers too."""
    if workers <= 1:
        with SequenceRenderer(assets, settings) as renderer:
            for seq, cameras in jobs:
                yield renderer.render(seq, cameras)
    else:
        yield from _in_workers(jobs, assets, settings, workers)


def _in_workers(jobs, assets, settings: RenderSettings, workers: int):
    """The views of ``jobs`` rendered by ``workers`` processes, yielded in the order of ``jobs``.

    The processes are spawned, not forked (an EGL context or an OpenMP pool must never be forked), with
    :data:`WORKER_ENVIRONMENT`; each builds one :class:`SequenceRenderer` on its first sequence and keeps it.
    A task is one sequence, sent as its motion alone (not its 2D, not the prepared file). Results come in
    the order of the tasks, however they finish (``Pool.imap``). An :class:`InputError` in a worker is raised here as the same
    one-line error. On any error, Ctrl-C or an early close the workers are terminated before this returns;
    they ignore Ctrl-C themselves (a terminal sends it to them too) and exit when the parent dies.
    """
    import multiprocessing
    from dataclasses import replace

    with _environment(WORKER_ENVIRONMENT):  # the workers start (and read it) here
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker,
                                                         initargs=(assets, settings))
    finished = False
    try:
        tasks = ((replace(seq, positions_2d=None, positions_3d_metric=None), cameras) for seq, cameras in jobs)
        for views in pool.imap(_render_in_worker, tasks):  # in the order of the tasks
            if isinstance(views, _WorkerError):
                raise InputError(views.path, views.problem)
            yield views
        finished = True
    finally:
        if finished:
            pool.close()  # the workers finish (closing their rasterisers) and exit
        else:
            pool.terminate()
        pool.join()


@contextmanager
def _environment(variables: dict):
    """``with _environment({name: value}):`` those variables set in ``os.environ``, restored after."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class _WorkerError:
    """An :class:`InputError` on its way from a worker to the parent (an InputError itself does not unpickle)."""

    path: str
    problem: str


_WORKER: dict = {}  # in a worker process: the assets and settings, then its SequenceRenderer


def _start_worker(assets, settings: RenderSettings) -> None:
    """A worker process's start: Ctrl-C is the parent's to handle, the worker exits when its parent does, and
    OpenCV's thread pool has one thread (the others: :data:`WORKER_ENVIRONMENT`)."""
    import signal
    import threading
    from multiprocessing import parent_process
    from multiprocessing.connection import wait

    import cv2

    def exit_with_parent(sentinel):
        wait([sentinel])  # ready when the parent is gone, however it ended
        os._exit(1)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=exit_with_parent, args=(parent_process().sentinel,), daemon=True).start()
    cv2.setNumThreads(1)
    _WORKER.update(assets=assets, settings=settings)


def _render_in_worker(job):
    """In a worker: for ``job`` = (sequence, its cameras), the sequence's views (a list of
    :class:`~poselift.data.crop_file.View`), or the :class:`_WorkerError` of an :class:`InputError`."""
    from multiprocessing.util import Finalize

    try:
        if "renderer" not in _WORKER:
            _WORKER["renderer"] = SequenceRenderer(_WORKER["assets"], _WORKER["settings"])
            Finalize(None, _WORKER["renderer"].close, exitpriority=0)  # when the pool is shut down
        return _WORKER["renderer"].render(*job)
    except InputError as e:
        return _WorkerError(e.path, e.problem)


class SequenceRenderer:
    """What one process renders with: the body (built once from the assets), a rasteriser for the crops and
    one per full-frame size. :meth:`render` makes a sequence's person and draws it in each of its cameras."""

    def __init__(self, assets, settings: RenderSettings):
        from poselift.rendering.body import build_body
        from poselift.rendering.rasterise import Rasteriser

        self.settings = settings
        self.body = build_body(assets)
        self.raster = Rasteriser(settings.crop_width, settings.crop_height)
        self.full = {}  # (width, height) -> Rasteriser

    def render(self, seq, cameras) -> list:
        """The views of ``seq`` through ``cameras`` (its cameras' models, in the order of ``seq.cameras``)."""
        person = SequencePerson(self.body, seq, self.settings)
        return [person.render_view(self.raster, camera, name, self.settings, self._full_raster(camera))
                for camera, name in zip(cameras, seq.cameras)]

    def _full_raster(self, camera):
        if not self.settings.full_frames:
            return None
        size = (camera.width, camera.height)
        if size not in self.full:
            from poselift.rendering.rasterise import Rasteriser

            self.full[size] = Rasteriser(*size)
        return self.full[size]

    def close(self) -> None:
        for raster in (self.raster, *self.full.values()):
            raster.close()
        self.full = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SequencePerson:
    """One sequence's person: shaped body, colours, light, and the posed mesh of every rendered frame."""

    def __init__(self, body, seq, settings: RenderSettings):
        from poselift.rendering.appearance import sample_appearance, vertex_colours
        from poselift.rendering.rasterise import vertex_normals
        from poselift.rendering.retarget import pose_from_joints, size_body, sizing

        self.key = seq.key
        self.appearance = sample_appearance(stream_seed(settings.seed, "person", seq.key))
        shaped = body.shaped(self.appearance.shape)
        self.colours = vertex_colours(shaped, self.appearance)
        self.frames = np.arange(0, seq.num_frames, settings.every)
        if seq.valid is not None:
            self.frames = self.frames[seq.valid[self.frames]]
        n = len(self.frames)
        self.joints_mm = seq.positions_3d[self.frames].astype(np.float64)  # (N, 17, 3) world
        everything = seq.positions_3d[np.isfinite(seq.positions_3d).all(axis=(1, 2))] / 1000.0
        sized = size_body(shaped, everything)  # the subject's size, from the whole sequence
        transforms, _ = pose_from_joints(sized, self.joints_mm / 1000.0, sizing(sized, everything))
        self.vertices = np.concatenate([sized.pose(transforms[i:i + SKIN_CHUNK])  # (N, V, 3) world, metres
                                        for i in range(0, len(transforms), SKIN_CHUNK)] or [np.zeros((0, 0, 3))])
        self.triangles = sized.triangles
        # unit normals once per frame in the world, rotated into each camera (the same in all of them)
        self.normals = np.stack([vertex_normals(v, self.triangles) for v in self.vertices]) if n else None
        own = own_parts(sized)  # per joint: the vertices of its own body parts, flattened
        self.own = (np.concatenate(own), np.repeat(np.arange(len(own)), [len(o) for o in own]))

    def render_view(self, raster, camera, camera_name: str, settings: RenderSettings, full_raster=None):
        """The crops (and labels) of this person in one camera."""
        from poselift.data.crop_file import View
        from poselift.data.crops import box_from_joints, crop, crop_affine, to_crop
        from poselift.data.images import encode_image
        from poselift.rendering.appearance import background
        from poselift.rendering.rasterise import Light

        size = (settings.crop_height, settings.crop_width)
        scenes = settings.seed if settings.background_seed is None else settings.background_seed
        scene = background(stream_seed(scenes, "background", self.key, camera_name),
                           -(-camera.height // SCENE_STEP), -(-camera.width // SCENE_STEP))
        light = Light(tuple(camera.R @ self.appearance.light_direction), self.appearance.ambient)
        n = len(self.frames)
        out = {k: [] for k in ("keypoints", "keypoints_frame", "affine", "box", "visibility", "crops", "frames")}
        for i in range(n):
            joints_cam = camera.world_to_camera(self.joints_mm[i]) / 1000.0  # (17, 3) m
            vertices_cam = camera.world_to_camera(self.vertices[i] * 1000.0) / 1000.0
            keypoints_frame = camera.project(joints_cam * 1000.0, distort=False)
            box = box_from_joints(keypoints_frame)
            affine = crop_affine(box, size)
            s, tx, ty = affine[0, 0], affine[0, 2], affine[1, 2]
            intrinsics = (s * camera.f[0], s * camera.f[1], s * camera.c[0] + tx, s * camera.c[1] + ty)
            normals_cam = self.normals[i] @ camera.R.T.astype(np.float32)
            rgb, depth = raster.render(vertices_cam, self.triangles, self.colours, intrinsics, light=light,
                                       background=crop(scene, scene_affine(affine), size), normals=normals_cam)
            keypoints = to_crop(keypoints_frame, affine)
            vertices_crop = to_crop(camera.project(vertices_cam * 1000.0, distort=False), affine)
            out["visibility"].append(visibility(depth, keypoints, joints_cam, vertices_crop, vertices_cam, self.own))
            out["keypoints"].append(keypoints)
            out["keypoints_frame"].append(keypoints_frame)
            out["affine"].append(affine)
            out["box"].append(box.xyxy)
            out["crops"].append(encode_image(rgb, "jpeg", settings.quality))
            if full_raster is not None:
                whole = crop(scene, scene_affine(np.eye(3)[:2]), (camera.height, camera.width))
                frame, _ = full_raster.render(vertices_cam, self.triangles, self.colours, camera, light=light,
                                              background=whole, normals=normals_cam)
                out["frames"].append(encode_image(frame, "jpeg", settings.quality))
        camera_attrs = {"width": camera.width, "height": camera.height, "f": camera.f, "c": camera.c,
                        "R": camera.R, "T": camera.T}
        arrays = {k: np.asarray(out[k]) for k in ("keypoints", "keypoints_frame", "affine", "box", "visibility")}
        return View(key=f"{self.key}/{camera_name}", frame=self.frames, crops=out["crops"],
                    frames=out["frames"] or None, camera=camera_attrs, **arrays)


def scene_affine(affine: np.ndarray) -> np.ndarray:
    """``affine`` (frame pixels -> crop) for the background drawn at 1/SCENE_STEP resolution: its pixel q
    (centre) is frame point SCENE_STEP q + (SCENE_STEP - 1) / 2."""
    linear = affine[:, :2]
    return np.concatenate([SCENE_STEP * linear, (affine[:, 2] + linear @ np.full(2, (SCENE_STEP - 1) / 2))[:, None]],
                          axis=1)


def own_parts(body) -> list[np.ndarray]:
    """For each H36M-17 joint, the indices of the body vertices of its own parts (:data:`OWN_PARTS`); a
    limb joint's only on its side (the body's left is +x at rest)."""
    from poselift.rendering.appearance import REGIONS, body_regions
    from poselift.skeleton import H36M17

    ids, _ = body_regions(body)
    left = body.vertices[:, 0] > 0
    own = []
    for name in H36M17.names:
        side, _, part = name.rpartition("_") if name.startswith(("left_", "right_")) else ("", "", name)
        mask = np.isin(ids, [REGIONS.index(r) for r in OWN_PARTS[part]])
        if side == "left":
            mask &= left
        elif side == "right":
            mask &= ~left
        own.append(np.flatnonzero(mask))
    return own


def visibility(depth: np.ndarray, keypoints: np.ndarray, joints_cam: np.ndarray, vertices_crop: np.ndarray,
               vertices_cam: np.ndarray, own: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(17,) 1.0 where the joint is seen, 0.0 where something nearer than its own parts covers its pixel (or
    the pixel is outside the crop). ``vertices_crop`` (V, 2): the vertices in crop pixels. ``own``: the
    vertex indices of every joint's own parts, concatenated, and the joint each belongs to."""
    h, w = depth.shape
    u, v = np.round(keypoints[:, 0]).astype(int), np.round(keypoints[:, 1]).astype(int)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    index, joint = own
    offset = np.take(vertices_crop, index, axis=0) - np.take(keypoints, joint, axis=0)  # (np.take: ~30x faster)
    near = np.einsum("ij,ij->i", offset, offset) < SIGHT_RADIUS ** 2  # on the joint's line of sight
    front = np.full(len(keypoints), np.inf)
    np.minimum.at(front, joint[near], np.take(vertices_cam[:, 2], index[near]))
    front = np.minimum(np.where(np.isfinite(front), front, joints_cam[:, 2]), joints_cam[:, 2])
    seen = np.zeros(len(keypoints), np.float32)
    seen[inside] = depth[v[inside], u[inside]] >= front[inside] - OCCLUSION_MARGIN
    return seen
