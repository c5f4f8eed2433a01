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
"""

from __future__ import annotations

import hashlib
import os
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
                    assets: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Render every selected view of ``prepared`` into the labelled-crops file ``out`` (atomically); returns
    counts."""
    from tqdm import tqdm

    from poselift.data.crop_file import CropWriter
    from poselift.data.prepared import content_hash, load_prepared
    from poselift.rendering.assets import load_assets
    from poselift.rendering.body import build_body
    from poselift.rendering.rasterise import Rasteriser

    if settings.every < 1:
        raise InputError("--every", f"must be >= 1 (got {settings.every})")
    data = load_prepared(prepared)
    sequences = data.select(settings.split)
    if not sequences:
        raise InputError(prepared, f"no sequences in split {settings.split!r}")
    assets_ = load_assets(assets)
    body = build_body(assets_)
    record = {**settings.to_dict(), "assets": hashlib.sha256(
        "".join(f"{n}:{hashlib.sha256(b).hexdigest()}" for n, b in sorted(assets_.files.items())).encode()).hexdigest()}
    crops = 0
    size = (settings.crop_height, settings.crop_width)
    with Rasteriser(settings.crop_width, settings.crop_height) as raster, \
            CropWriter(out, "render", content_hash(prepared), record, crop_size=size) as writer:
        full = {}
        views = [(s, c) for s in sequences for c in range(len(s.cameras))]
        bar = tqdm(total=len(views), desc="render", unit="view", disable=None if progress else True)
        for seq in sequences:
            person = SequencePerson(body, seq, settings)
            for c in range(len(seq.cameras)):
                camera = data.camera(seq, c)
                if settings.full_frames and (camera.width, camera.height) not in full:
                    full[(camera.width, camera.height)] = Rasteriser(camera.width, camera.height)
                view = person.render_view(raster, camera, seq.cameras[c], settings,
                                          full.get((camera.width, camera.height)))
                writer.add(view)
                crops += len(view)
                bar.update(1)
        bar.close()
        for r in full.values():
            r.close()
    return {"sequences": len(sequences), "views": len(views), "crops": crops}


class SequencePerson:
    """One sequence's person: shaped body, colours, light, and the posed mesh of every rendered frame."""

    def __init__(self, body, seq, settings: RenderSettings):
        from poselift.rendering.appearance import sample_appearance, vertex_colours
        from poselift.rendering.retarget import pose_from_joints, size_body, sizing

        self.key = seq.key
        self.appearance = sample_appearance(stream_seed(settings.seed, "person", seq.key))
        shaped = body.shaped(self.appearance.shape)
        self.colours = vertex_colours(shaped, self.appearance)
        self.frames = np.arange(0, seq.num_frames, settings.every)
        if seq.valid is not None:
            self.frames = self.frames[seq.valid[self.frames]]
        self.joints_mm = seq.positions_3d[self.frames].astype(np.float64)  # (N, 17, 3) world
        everything = seq.positions_3d[np.isfinite(seq.positions_3d).all(axis=(1, 2))] / 1000.0
        sized = size_body(shaped, everything)  # the subject's size, from the whole sequence
        transforms, _ = pose_from_joints(sized, self.joints_mm / 1000.0, sizing(sized, everything))
        self.vertices = np.concatenate([sized.pose(transforms[i:i + SKIN_CHUNK])  # (N, V, 3) world, metres
                                        for i in range(0, len(transforms), SKIN_CHUNK)] or [np.zeros((0, 0, 3))])
        self.triangles = sized.triangles
        self.own = own_parts(sized)  # per joint: the vertices of its own body parts

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
            rgb, depth = raster.render(vertices_cam, self.triangles, self.colours, intrinsics, light=light,
                                       background=crop(scene, scene_affine(affine), size))
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
                                              background=whole)
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
               vertices_cam: np.ndarray, own: list[np.ndarray]) -> np.ndarray:
    """(17,) 1.0 where the joint is seen, 0.0 where something nearer than its own parts covers its pixel (or
    the pixel is outside the crop). ``vertices_crop`` (V, 2): the vertices in crop pixels."""
    h, w = depth.shape
    u, v = np.round(keypoints[:, 0]).astype(int), np.round(keypoints[:, 1]).astype(int)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    seen = np.zeros(len(keypoints), np.float32)
    for j in np.flatnonzero(inside):
        near = own[j][np.linalg.norm(vertices_crop[own[j]] - keypoints[j], axis=1) < SIGHT_RADIUS]
        front = vertices_cam[near, 2].min() if len(near) else joints_cam[j, 2]
        seen[j] = float(depth[v[j], u[j]] >= min(front, joints_cam[j, 2]) - OCCLUSION_MARGIN)
    return seen
