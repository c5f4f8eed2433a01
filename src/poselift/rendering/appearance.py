"""Who is rendered, and where: per-person body shape, skin, hair, clothes and lighting, and backgrounds without people.

The rasteriser takes per-vertex colours (V, 3) in [0, 1], one light (a direction and an ambient level) and a
background image (H, W, 3) RGB uint8; this module makes all of them from integer seeds, with numpy (and
OpenCV for the backgrounds), vectorised. Method, in the order of this file:

1. **Random streams.** Every random choice comes from a stream derived from ``(seed, purpose)`` by numpy's
   ``SeedSequence(seed, spawn_key=(sha256(purpose)[:8],))``: the person's shape, skin, hair, clothes,
   light and per-vertex fabric grain, and the background, are independent streams. The same seed gives the
   same bytes; changing how one part is sampled (or the background's seed) changes nothing of the others
   (one link on purpose: the skin tone reads the ethnicity mix that the shape's stream drew); nothing
   touches numpy's global state. Seeds are non-negative integers.
2. **Body regions** (:func:`body_regions`) from the skinning weights: the weights of the bones of each bone
   group below are summed and every vertex goes to the group that weighs it most (a (V, B) @ (B, G)
   product, then argmax, so every vertex has exactly one region).

   ============  =====================================================================================
   group         bones
   ============  =====================================================================================
   head          ``neck01`` and everything below it (neck02/03, head, jaw, eyes, tongue, face muscles)
   torso         ``spine01``-``spine04``, ``clavicle.*``, ``breast.*``; and ``root``, ``spine05``,
                 ``pelvis.*`` above the waist (the height of ``spine04``'s head, about the navel)
   hips          ``upperleg01.*`` (the hip joint and buttocks); ``root``, ``spine05``, ``pelvis.*``
                 below the waist
   upper_arms    ``shoulder01.*``, ``upperarm01.*``, ``upperarm02.*``
   forearms      ``lowerarm01.*``, ``lowerarm02.*``
   hands         ``wrist.*`` and below (metacarpals, fingers)
   thighs        ``upperleg02.*``
   shins         ``lowerleg01.*``, ``lowerleg02.*``
   feet          ``foot.*`` and below (toes)
   ============  =====================================================================================

   The head group is split once more, geometrically: **hair** is the cap of the head above a hairline
   (below), the rest of it (face, ears, neck) is **head**. Every bone that weighs a body vertex must be in
   a group (an error names the one that is not). Region ids index :data:`REGIONS`.
3. **Limb coordinates** (for sleeve and trouser lengths): a vertex of the upper arms or forearms gets its
   position along the rest arm, 0 at the shoulder joint (``upperarm01``'s head), about 0.5 at the elbow
   (``lowerarm01``'s head), 1 at the wrist (``wrist``'s head): its projection on its own segment, scaled
   by the segments' lengths. Thighs and shins likewise: 0 at the hip joint (``upperleg01``'s head), the
   knee (``lowerleg01``'s head), 1 at the ankle (``foot``'s head).
4. **Hairline**: seen from a head centre (x of ``head``'s head; y 3/4 of the way from the eyes to
   ``head``'s head, about the middle of the skull; z the eyes' height), a vertex of the
   head group is hair when its elevation angle is above a hairline that depends on its azimuth from the
   face (0 straight ahead, 90 deg at the ears, 180 deg at the back): ``front`` at 0, ``side`` from 100 deg
   (above the ears), ``back`` from 150 deg (the nape). The regions use 30 / 18 / -30 deg (short hair);
   each person has their own (below). Both are relative to the skeleton, so they follow the body's shape.
5. **Appearance** (:func:`sample_appearance`):

   - *Shape* (MakeHuman's macro model, young adults only, as in the shipped targets): gender ``g``
     (0 female, 1 male; a coin, then U(0, 0.15) or U(0.85, 1)), an ethnicity mix (Dirichlet(0.7, 0.7,
     0.7) over African, Asian, Caucasian), muscle and weight (each N(0.5, 0.18) clipped to [0.1, 0.9]; 0.5
     is average). The ethnic target ``<e>-<sex>-young`` weighs ``mix[e] * (g or 1 - g)``; the universal
     targets weigh ``(g or 1 - g) * max(0, 2 m - 1)`` (``maxmuscle-averageweight``), ``(...) * max(0, 1 - 2
     m)`` (``minmuscle-...``), and the same for weight (``averagemuscle-max/minweight``). The assets have
     no corner targets (e.g. ``maxmuscle-maxweight``): a corner is taken as the sum of its two edge
     targets, so muscle and weight add. ``averagemuscle-averageweight`` is empty (the base) and left out.
     Heights then range about 1.49 m (Asian female) to 1.82 m (African male).
   - *Skin*: a tone ``t`` in [0, 1] (0 very light, 1 very dark) picks a colour on a piecewise-linear locus
     of photographed human skin in sRGB (:data:`SKIN_LOCUS`, 8 anchors from (0.96, 0.84, 0.76) to
     (0.24, 0.16, 0.12)), then an undertone (green x [0.97, 1.03], blue x [0.93, 1.07]) and brightness x
     [0.96, 1.04]. ``t`` follows the ethnicity mix loosely (N(0.15 Cauc. + 0.40 Asian + 0.80 African,
     0.15)) with a 30 % chance of U(0, 1), so every tone occurs for every body. Every skin colour lies in
     the skin cluster of Chai & Ngan (1999) in YCrCb (Cr in [133, 173], Cb in [77, 127]) with R > G > B
     (tested). On the body: a smooth variation (8 plane waves of 5-20 cm: sd 4 %, at most 16 %), darker
     eyelids (x 0.45 upper, x 0.8 lower: eyes read as eyes), redder lips (x (0.85, 0.66, 0.68)); eyelids
     and lips are the vertices that the ``orbicularis03/04.*`` and ``oris*`` bones weigh most.
   - *Hair*: a colour from :data:`HAIR_COLOURS` (black, browns, blondes, auburn, ginger, grey, white) with
     probabilities; the light ones are rarer on darker skin (x max(0.1, 1 - 1.5 t)); brightness x [0.9,
     1.1]. Bald with p = 0.07 (the hair region is then skin), else a hairline front U(22, 38) deg, side
     U(12, 24) deg, back U(-50, -20) deg (-50 covers the nape: longer hair). No eyebrows: the mesh has
     too few vertices above the eyes for a band of colour to stay a band.
   - *Clothes*: three garments, ``shirt``, ``trousers`` and ``shoes``. Colours from a mixture in HSV: 35 %
     neutral (S < 0.12, V in [0.06, 0.95]: black to white), 35 % muted (S in [0.15, 0.5], V in [0.2,
     0.85]), 30 % saturated (S in [0.55, 1], V in [0.35, 1]), uniform hue; trousers are denim (H 205-225
     deg, S 0.35-0.65, V 0.2-0.6) with p = 0.3; shoes take neutral colours with p = 0.7. A pattern per
     garment: plain (0.45; shoes 0.85), stripes (0.2), checks (0.15) or noise (0.2), in a second colour
     (half a new random colour, half the first one darkened x [0.35, 0.7] or lightened halfway to white),
     evaluated on the vertices' rest positions (metres), so the pattern is fixed on the body and moves
     with it. Stripes: planes across z (horizontal bands; p 0.6), across a random horizontal direction
     (vertical stripes; 0.25) or across a random direction (0.15), period U(3, 15) cm, duty U(0.2, 0.6).
     Checks: a 3D checkerboard (parity of the cell index along three axes turned by a random angle about
     z), cells U(3, 12) cm. Noise: 12 random plane
     waves (wavelengths U(0.6, 1.6) x a scale U(4, 20) cm), summed to a unit-variance field ``f``, mixed
     by ``sigmoid(sharpness (f - threshold))``, sharpness U(1, 8) (soft mottling to camouflage blotches),
     threshold U(-0.5, 0.5). Every garment vertex is multiplied by 1 + 0.025 N(0, 1) (fabric grain).
   - *Cut*: the shirt covers the torso and hips above a hem at the waist + U(-0.10, 0.03) m (below the
     waist: untucked), the upper arms and forearms up to a sleeve length (limb coordinate): sleeveless
     0.0 (p 0.1), short U(0.2, 0.45) (0.4), three-quarter U(0.6, 0.85) (0.1), long U(0.93, 1.0) (0.4);
     the trousers cover the rest of torso and hips, and the legs up to a leg length: shorts U(0.22, 0.45)
     (p 0.2), knee to calf U(0.5, 0.8) (0.1), long U(0.93, 1.0) (0.7). With p = 0.15 for g < 0.5 a dress
     (the trousers take the shirt's garment, leg length U(0.25, 0.75)). Shoes cover the feet; hands,
     uncovered arms and legs, face and neck are skin.
   - *Light*: ``light_direction`` is the unit vector from the person towards the light, azimuth U(0, 360)
     deg, elevation U(10, 80) deg (the upper hemisphere); ``ambient`` U(0.2, 0.6); shading is ``colour
     (ambient + (1 - ambient) max(0, n . light_direction))``, as in :mod:`poselift.rendering.rasterise`.
     It is in the **world** frame (z up), fixed in the scene while the person moves: the rasteriser's
     ``Light`` wants the camera frame, ``R_world_to_camera @ light_direction``.
6. **Vertex colours** (:func:`vertex_colours`): the regions, cut and patterns above on the given body's
   rest vertices (shape it first: ``body.shaped(appearance.shape)``), float32 (V, 3) in [0, 1]; colours
   are albedo in sRGB, not lit.
7. **Backgrounds** (:func:`background`): procedural scenes with no people by construction (only gradients,
   noise, rectangles, ellipses and perspective tiles): *room* (0.4: a wall with a horizon at 35-75 % of
   the height, a second wall past a corner, windows, doors, pictures, furniture boxes, a skirting board,
   a floor that is plain, perspective tiles or planks), *outdoor* (0.25: sky gradient with clouds,
   ground of grass, earth or asphalt with texture, blurred tree blobs and buildings on the horizon),
   *abstract* (0.2: two smooth noise fields blending three colours, rectangles and blurred ellipses),
   *studio* (0.15: a backdrop with a radial falloff and a floor sweep). Scenes are drawn at half
   resolution (sides of 64 px or more) and upsampled bilinearly: 4x less work, and edges a pixel soft as
   a camera's. Then camera effects on the full-size uint8 image: white balance (gain x [0.88, 1.12] per
   channel), exposure x [0.75, 1.2], contrast x [0.8, 1.2] and gamma [0.8, 1.25] as one lookup table per
   channel, a defocus blur (p 0.35, sigma 0.5-2.5 px) and sensor noise (uniform over -k..k levels, k in
   0..8: sigma up to 4.9 levels). About 2.5 ms for 256 x 192 (H x W) on one core. The same seed gives
   the same bytes with the same numpy and OpenCV builds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from poselift.rendering.body import Body, Skeleton


# --- 1. random streams -----------------------------------------------------------------------------
def rng_stream(seed: int, purpose: str) -> np.random.Generator:
    """An independent generator for ``purpose`` of ``seed`` (a non-negative int)."""
    key = int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(key,)))


# --- 2. body regions -------------------------------------------------------------------------------
REGIONS = ("hair", "head", "torso", "upper_arms", "forearms", "hands", "hips", "thighs", "shins", "feet")
_PELVIS = ("root", "spine05", "pelvis.L", "pelvis.R")  # split between torso and hips at the waist
_BONE_GROUPS = {  # group -> (bone names, subtrees: a name's whole subtree)
    "head": ((), ("neck01",)),
    "torso": (("spine01", "spine02", "spine03", "spine04", "clavicle.L", "clavicle.R", "breast.L", "breast.R"), ()),
    "upper_arms": (tuple(f"{b}.{s}" for b in ("shoulder01", "upperarm01", "upperarm02") for s in "LR"), ()),
    "forearms": (tuple(f"{b}.{s}" for b in ("lowerarm01", "lowerarm02") for s in "LR"), ()),
    "hands": ((), ("wrist.L", "wrist.R")),
    "hips": (("upperleg01.L", "upperleg01.R"), ()),
    "thighs": (("upperleg02.L", "upperleg02.R"), ()),
    "shins": (tuple(f"{b}.{s}" for b in ("lowerleg01", "lowerleg02") for s in "LR"), ()),
    "feet": ((), ("foot.L", "foot.R")),
    "pelvis": (_PELVIS, ()),
}
DEFAULT_HAIRLINE = (np.radians(30.0), np.radians(18.0), np.radians(-30.0))  # front, side, back


def _group_matrix(skeleton: Skeleton) -> tuple[np.ndarray, tuple[str, ...]]:
    """(B, G) indicator of each bone's group, and the group names (those of ``_BONE_GROUPS``)."""
    groups = tuple(_BONE_GROUPS)
    indicator = np.zeros((skeleton.num_bones, len(groups)))
    for g, name in enumerate(groups):
        bones, subtrees = _BONE_GROUPS[name]
        indicator[[skeleton.index(b) for b in bones], g] = 1.0
        for root in subtrees:
            indicator[skeleton.subtree(root), g] = 1.0
    if (indicator.sum(1) > 1).any():
        raise ValueError(f"bone '{skeleton.names[int(np.argmax(indicator.sum(1) > 1))]}' is in two groups")
    return indicator, groups


def _bone_groups(body: Body) -> tuple[np.ndarray, tuple[str, ...]]:
    """(V,) the bone group that weighs each vertex most (indices into the returned names)."""
    indicator, groups = _group_matrix(body.skeleton)
    weighing = np.asarray(body.weights.sum(axis=0)).ravel() > 0
    loose = np.flatnonzero(weighing & (indicator.sum(1) == 0))
    if len(loose):
        raise ValueError(f"bone '{body.skeleton.names[loose[0]]}' weighs body vertices but is in no region group")
    return np.asarray(body.weights @ indicator).argmax(axis=1), groups


def body_regions(body: Body) -> tuple[np.ndarray, tuple[str, ...]]:
    """(V,) region ids (into the returned names, :data:`REGIONS`) of the body's vertices, from its weights."""
    group, groups = _bone_groups(body)
    ids = np.array([REGIONS.index(g) if g in REGIONS else -1 for g in groups])[group]
    pelvis = group == groups.index("pelvis")
    waist = body.skeleton.heads[body.skeleton.index("spine04"), 2]
    ids[pelvis] = np.where(body.vertices[pelvis, 2] >= waist, REGIONS.index("torso"), REGIONS.index("hips"))
    ids[hair_mask(body, DEFAULT_HAIRLINE, ids == REGIONS.index("head"))] = REGIONS.index("hair")
    return ids, REGIONS


# --- 3. limb coordinates ---------------------------------------------------------------------------
def limb_coordinates(body: Body, regions: np.ndarray | None = None) -> np.ndarray:
    """(V,) position along the rest limb: upper arms and forearms 0 shoulder .. 1 wrist, thighs and shins 0 hip
    joint .. 1 ankle; NaN in the other regions. ``regions``: :func:`body_regions`' ids, if already known."""
    regions = body_regions(body)[0] if regions is None else regions
    s, v = body.skeleton, body.vertices
    out = np.full(len(v), np.nan)
    arm, leg = ("upperarm01", "lowerarm01", "wrist"), ("upperleg01", "lowerleg01", "foot")  # joints: bones' heads
    limbs = {"upper_arms": (arm, 0), "forearms": (arm, 1), "thighs": (leg, 0), "shins": (leg, 1)}  # region -> segment
    for side, sign in (("L", 1.0), ("R", -1.0)):
        for region, (bones, segment) in limbs.items():
            joints = s.heads[[s.index(f"{b}.{side}") for b in bones]]
            lengths = np.linalg.norm(np.diff(joints, axis=0), axis=1)
            a, b = joints[segment], joints[segment + 1]
            inside = (regions == REGIONS.index(region)) & (sign * v[:, 0] > 0)
            t = (v[inside] - a) @ (b - a) / np.dot(b - a, b - a)
            out[inside] = (lengths[:segment].sum() + t * lengths[segment]) / lengths.sum()
    return out


# --- 4. the hairline -------------------------------------------------------------------------------
def _head_centre(skeleton: Skeleton) -> np.ndarray:
    head = skeleton.heads[skeleton.index("head")]
    eyes = skeleton.heads[[skeleton.index("eye.L"), skeleton.index("eye.R")]]
    return np.array([head[0], 0.75 * head[1] + 0.25 * eyes[:, 1].mean(), eyes[:, 2].mean()])


def hair_mask(body: Body, hairline: tuple[float, float, float], head: np.ndarray) -> np.ndarray:
    """(V,) vertices of ``head`` (a (V,) mask) above the ``hairline`` (front, side, back elevation, radians)."""
    d = body.vertices - _head_centre(body.skeleton)
    elevation = np.arctan2(d[:, 2], np.hypot(d[:, 0], d[:, 1]))
    azimuth = np.arctan2(np.abs(d[:, 0]), -d[:, 1])  # 0: straight ahead (-y), pi: the back
    front, side, back = hairline
    line = np.interp(azimuth, np.radians([0.0, 100.0, 150.0, 180.0]), [front, side, back, back])
    return head & (elevation > line)


# --- 5. appearance ---------------------------------------------------------------------------------
ETHNICITIES = ("african", "asian", "caucasian")
SKIN_LOCUS = np.array([  # sRGB albedo from very light (t = 0) to very dark (t = 1), evenly spaced in t
    [0.96, 0.84, 0.76], [0.93, 0.77, 0.65], [0.87, 0.68, 0.54], [0.78, 0.58, 0.43],
    [0.65, 0.46, 0.32], [0.50, 0.34, 0.24], [0.35, 0.24, 0.17], [0.24, 0.16, 0.12]])
HAIR_COLOURS = {  # name -> (sRGB, probability before the skin tone's adjustment, light: rarer on dark skin)
    "black": ((0.04, 0.035, 0.03), 0.28, False), "dark brown": ((0.15, 0.10, 0.07), 0.24, False),
    "brown": ((0.30, 0.20, 0.13), 0.15, False), "light brown": ((0.48, 0.35, 0.23), 0.08, True),
    "dark blonde": ((0.62, 0.50, 0.33), 0.06, True), "blonde": ((0.82, 0.71, 0.50), 0.06, True),
    "auburn": ((0.45, 0.18, 0.10), 0.03, True), "ginger": ((0.72, 0.38, 0.18), 0.03, True),
    "grey": ((0.55, 0.55, 0.54), 0.05, False), "white": ((0.86, 0.85, 0.82), 0.02, False)}
PATTERNS = ("plain", "stripes", "checks", "noise")
GARMENTS = ("shirt", "trousers", "shoes")
NOISE_WAVES = 12


@dataclass(frozen=True)
class Garment:
    """A garment's colours and its pattern, a function of rest positions (metres): see :func:`pattern_mix`."""

    colour: np.ndarray  # (3,) sRGB in [0, 1]
    second: np.ndarray  # (3,) the pattern's second colour
    pattern: str  # one of PATTERNS
    frame: np.ndarray = field(default_factory=lambda: np.eye(3))  # (3, 3) rows: the pattern's axes
    period: float = 0.1  # stripes and checks, metres
    duty: float = 0.5  # stripes: the second colour's share of a period
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))  # metres, along the frame's axes
    waves: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # noise: (K, 3) wave vectors, rad/m
    wave_phases: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K,)
    sharpness: float = 1.0  # noise
    threshold: float = 0.0  # noise


@dataclass(frozen=True)
class Appearance:
    """One person: everything :func:`vertex_colours` and the renderer need besides the motion."""

    seed: int
    gender: float  # 0 female .. 1 male (MakeHuman's macro)
    ethnicity: np.ndarray  # (3,) mix over ETHNICITIES, sums to 1
    muscle: float  # 0 .. 1, 0.5 average
    weight: float  # 0 .. 1, 0.5 average
    shape: dict  # target name -> weight, for Body.shaped
    skin_tone: float  # 0 very light .. 1 very dark
    skin: np.ndarray  # (3,) sRGB
    hair: np.ndarray  # (3,) sRGB
    hairline: tuple[float, float, float] | None  # front, side, back elevation (radians); None: bald
    garments: dict  # GARMENTS -> Garment
    sleeve: float  # the shirt covers the arms up to this limb coordinate (0 shoulder .. 1 wrist)
    leg: float  # the trousers cover the legs up to this limb coordinate (0 hip joint .. 1 ankle)
    hem: float  # shirt / trousers boundary on the trunk, metres above the waist (negative: untucked)
    dress: bool  # the trousers are the shirt's garment
    light_direction: np.ndarray  # (3,) unit, from the person towards the light, WORLD frame (z up)
    ambient: float  # 0.2 .. 0.6


def sample_appearance(seed: int) -> Appearance:
    """The appearance of person ``seed`` (see the module's docstring for every range)."""
    rng = rng_stream(seed, "shape")
    gender = rng.uniform(0.85, 1.0) if rng.random() < 0.5 else rng.uniform(0.0, 0.15)
    ethnicity = rng.dirichlet([0.7, 0.7, 0.7])
    muscle, weight = np.clip(rng.normal(0.5, 0.18, 2), 0.1, 0.9)
    skin_tone, skin = _sample_skin(rng_stream(seed, "skin"), ethnicity)
    hair, hairline = _sample_hair(rng_stream(seed, "hair"), skin_tone)
    garments = {name: _sample_garment(rng_stream(seed, f"clothes/{name}"), name) for name in GARMENTS}
    rng = rng_stream(seed, "cut")
    sleeve = _pick_length(rng, [(0.1, 0.0, 0.0), (0.4, 0.2, 0.45), (0.1, 0.6, 0.85), (0.4, 0.93, 1.0)])
    leg = _pick_length(rng, [(0.2, 0.22, 0.45), (0.1, 0.5, 0.8), (0.7, 0.93, 1.0)])
    hem = rng.uniform(-0.10, 0.03)
    dress = bool(rng.random() < 0.15 and gender < 0.5)
    if dress:
        garments["trousers"], leg = garments["shirt"], rng.uniform(0.25, 0.75)
    rng = rng_stream(seed, "light")
    azimuth, elevation = rng.uniform(0.0, 2 * np.pi), np.radians(rng.uniform(10.0, 80.0))
    light = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    return Appearance(seed=int(seed), gender=float(gender), ethnicity=ethnicity, muscle=float(muscle),
                      weight=float(weight), shape=shape_weights(gender, ethnicity, muscle, weight),
                      skin_tone=skin_tone, skin=skin, hair=hair, hairline=hairline, garments=garments,
                      sleeve=float(sleeve), leg=float(leg), hem=float(hem), dress=dress,
                      light_direction=light, ambient=float(rng.uniform(0.2, 0.6)))


def shape_weights(gender: float, ethnicity: np.ndarray, muscle: float, weight: float) -> dict[str, float]:
    """MakeHuman's macro model on the young-adult targets (corners as sums of edges): target -> weight."""
    out = {}
    for sex, share in (("female", 1.0 - gender), ("male", gender)):
        for name, mix in zip(ETHNICITIES, ethnicity):
            out[f"{name}-{sex}-young"] = share * mix
        universal = f"universal-{sex}-young"
        out[f"{universal}-maxmuscle-averageweight"] = share * max(0.0, 2 * muscle - 1)
        out[f"{universal}-minmuscle-averageweight"] = share * max(0.0, 1 - 2 * muscle)
        out[f"{universal}-averagemuscle-maxweight"] = share * max(0.0, 2 * weight - 1)
        out[f"{universal}-averagemuscle-minweight"] = share * max(0.0, 1 - 2 * weight)
    return {name: float(w) for name, w in out.items() if w > 0}


def skin_colour(tone: float) -> np.ndarray:
    """(3,) the skin locus at ``tone`` (0 very light .. 1 very dark), before the undertone."""
    t = np.linspace(0.0, 1.0, len(SKIN_LOCUS))
    return np.array([np.interp(tone, t, SKIN_LOCUS[:, c]) for c in range(3)])


def _sample_skin(rng: np.random.Generator, ethnicity: np.ndarray) -> tuple[float, np.ndarray]:
    mean = float(np.dot(ethnicity, [0.80, 0.40, 0.15]))  # African, Asian, Caucasian
    tone = rng.uniform(0.0, 1.0) if rng.random() < 0.3 else float(np.clip(rng.normal(mean, 0.15), 0.0, 1.0))
    gains = np.array([1.0, rng.uniform(0.97, 1.03), rng.uniform(0.93, 1.07)]) * rng.uniform(0.96, 1.04)
    return tone, np.clip(skin_colour(tone) * gains, 0.0, 1.0)


def _sample_hair(rng: np.random.Generator, skin_tone: float) -> tuple[np.ndarray, tuple | None]:
    colours = np.array([c for c, _, _ in HAIR_COLOURS.values()])
    p = np.array([p * (max(0.1, 1.0 - 1.5 * skin_tone) if light else 1.0) for _, p, light in HAIR_COLOURS.values()])
    hair = np.clip(colours[rng.choice(len(p), p=p / p.sum())] * rng.uniform(0.9, 1.1), 0.0, 1.0)
    bald = rng.random() < 0.07
    hairline = tuple(np.radians([rng.uniform(22, 38), rng.uniform(12, 24), rng.uniform(-50, -20)]))
    return hair, None if bald else hairline


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """(..., 3) hue, saturation, value in [0, 1] -> sRGB in [0, 1]."""
    hsv = np.asarray(hsv, dtype=np.float64)
    k = (np.array([5.0, 3.0, 1.0]) + hsv[..., :1] * 6.0) % 6.0
    return hsv[..., 2:] * (1.0 - hsv[..., 1:2] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))


def _random_colour(rng: np.random.Generator, kind: str = "any") -> np.ndarray:
    """A garment colour: neutral, muted or saturated (or, for ``kind``, denim / a neutral shoe)."""
    if kind == "trousers" and rng.random() < 0.3:
        return hsv_to_rgb([rng.uniform(205, 225) / 360, rng.uniform(0.35, 0.65), rng.uniform(0.2, 0.6)])
    u = rng.random()
    if u < 0.35 or (kind == "shoes" and rng.random() < 0.7):
        return hsv_to_rgb([rng.random(), rng.uniform(0.0, 0.12), rng.uniform(0.06, 0.95)])
    if u < 0.7:
        return hsv_to_rgb([rng.random(), rng.uniform(0.15, 0.5), rng.uniform(0.2, 0.85)])
    return hsv_to_rgb([rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.35, 1.0)])


def _sample_garment(rng: np.random.Generator, kind: str) -> Garment:
    colour = _random_colour(rng, kind)
    if rng.random() < 0.5:
        second = _random_colour(rng)
    else:
        second = colour * rng.uniform(0.35, 0.7) if rng.random() < 0.5 else colour + (1.0 - colour) * 0.5
    p = [0.85, 0.05, 0.05, 0.05] if kind == "shoes" else [0.45, 0.2, 0.15, 0.2]
    pattern = PATTERNS[rng.choice(len(PATTERNS), p=p)]
    angle = rng.uniform(0.0, 2 * np.pi)
    turn = np.array([[np.cos(angle), np.sin(angle), 0.0], [-np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    frame, period = turn, rng.uniform(0.03, 0.12)
    if pattern == "stripes":
        u, period = rng.random(), rng.uniform(0.03, 0.15)
        normal = np.array([0.0, 0.0, 1.0]) if u < 0.6 else turn[0] if u < 0.85 else _unit(rng.normal(size=3))
        frame = np.stack([normal, *np.linalg.svd(normal[None])[2][1:]])  # the stripes' normal, then any two
    directions = np.array([_unit(d) for d in rng.normal(size=(NOISE_WAVES, 3))])
    wavelengths = rng.uniform(0.04, 0.20) * rng.uniform(0.6, 1.6, NOISE_WAVES)
    return Garment(colour=colour, second=np.clip(second, 0.0, 1.0), pattern=pattern, frame=frame,
                   period=float(period), duty=float(rng.uniform(0.2, 0.6)), offset=rng.uniform(0.0, 1.0, 3) * period,
                   waves=directions * (2 * np.pi / wavelengths)[:, None],
                   wave_phases=rng.uniform(0.0, 2 * np.pi, NOISE_WAVES),
                   sharpness=float(rng.uniform(1.0, 8.0)), threshold=float(rng.uniform(-0.5, 0.5)))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _pick_length(rng: np.random.Generator, options: list[tuple[float, float, float]]) -> float:
    """One of ``(probability, low, high)``, then U(low, high)."""
    p = np.array([o[0] for o in options])
    _, low, high = options[rng.choice(len(options), p=p / p.sum())]
    return float(rng.uniform(low, high))


def pattern_mix(garment: Garment, points: np.ndarray) -> np.ndarray:
    """(N,) the share in [0, 1] of the second colour at rest ``points`` (N, 3), metres."""
    q = points @ garment.frame.T + garment.offset
    if garment.pattern == "stripes":
        return ((q[:, 0] / garment.period) % 1.0 < garment.duty).astype(np.float64)
    if garment.pattern == "checks":
        return (np.floor(q / garment.period).astype(np.int64).sum(axis=1) % 2).astype(np.float64)
    if garment.pattern == "noise":
        f = np.cos(points @ garment.waves.T + garment.wave_phases).sum(axis=1) * np.sqrt(2.0 / len(garment.wave_phases))
        return 1.0 / (1.0 + np.exp(-garment.sharpness * (f - garment.threshold)))
    return np.zeros(len(points))


def garment_colours(garment: Garment, points: np.ndarray) -> np.ndarray:
    """(N, 3) the garment's colour at rest ``points`` (N, 3): its two colours mixed by the pattern."""
    mix = pattern_mix(garment, points)[:, None]
    return (1.0 - mix) * garment.colour + mix * garment.second


# --- 6. vertex colours -----------------------------------------------------------------------------
LIPS = (0.85, 0.66, 0.68)  # multipliers of the skin colour
UPPER_EYELID, LOWER_EYELID = 0.45, 0.8


def vertex_colours(body: Body, appearance: Appearance) -> np.ndarray:
    """(V, 3) float32 sRGB albedo in [0, 1] of ``body``'s vertices (shape it with ``appearance.shape`` first)."""
    regions, _ = body_regions(body)
    limb = limb_coordinates(body, regions)
    is_ = {name: regions == i for i, name in enumerate(REGIONS)}
    v, skeleton = body.vertices, body.skeleton
    colours = np.tile(appearance.skin, (len(v), 1)) * _skin_variation(appearance.seed, v)[:, None]

    feature = _face_features(body)
    colours[feature == 1] *= LIPS
    colours[feature == 2] *= UPPER_EYELID
    colours[feature == 3] *= LOWER_EYELID
    if appearance.hairline is not None:
        colours[hair_mask(body, appearance.hairline, is_["head"] | is_["hair"])] = appearance.hair

    trunk = is_["torso"] | is_["hips"]
    above_hem = v[:, 2] >= skeleton.heads[skeleton.index("spine04"), 2] + appearance.hem
    arms, legs = is_["upper_arms"] | is_["forearms"], is_["thighs"] | is_["shins"]
    covers = {"shirt": (trunk & above_hem) | (arms & (limb <= appearance.sleeve)),
              "trousers": (trunk & ~above_hem) | (legs & (limb <= appearance.leg)),
              "shoes": is_["feet"]}
    grain = 1.0 + 0.025 * rng_stream(appearance.seed, "fabric").standard_normal(len(v))
    for name, inside in covers.items():
        colours[inside] = garment_colours(appearance.garments[name], v[inside]) * grain[inside, None]
    return np.clip(colours, 0.0, 1.0).astype(np.float32)


def _face_features(body: Body) -> np.ndarray:
    """(V,) 1 lips, 2 upper eyelids, 3 lower eyelids, 0 the rest: the bone set weighing the vertex most (as
    the regions), lips the ``oris*`` bones, eyelids ``orbicularis03.*`` and ``orbicularis04.*``."""
    names = np.array(body.skeleton.names)
    sets = [np.char.startswith(names, p) for p in ("oris", "orbicularis03", "orbicularis04")]
    indicator = np.stack([~np.any(sets, axis=0), *sets], axis=1).astype(np.float64)
    return np.asarray(body.weights @ indicator).argmax(axis=1)


def _skin_variation(seed: int, points: np.ndarray) -> np.ndarray:
    """(N,) a smooth factor over the skin: 1 + 4 % x a unit-variance sum of 8 plane waves of 5-20 cm."""
    rng = rng_stream(seed, "skin/variation")
    waves = np.array([_unit(d) for d in rng.normal(size=(8, 3))]) * (2 * np.pi / rng.uniform(0.05, 0.2, 8))[:, None]
    return 1.0 + 0.04 * np.cos(points @ waves.T + rng.uniform(0, 2 * np.pi, 8)).sum(axis=1) / 2.0


# --- 7. backgrounds --------------------------------------------------------------------------------
SCENES = {"room": 0.4, "outdoor": 0.25, "abstract": 0.2, "studio": 0.15}  # kind -> probability


def background(seed: int, height: int, width: int) -> np.ndarray:
    """(height, width, 3) RGB uint8: a procedural scene without people (see the module's docstring)."""
    rng = rng_stream(seed, "background")
    kind = list(SCENES)[rng.choice(len(SCENES), p=list(SCENES.values()))]
    scale = 2 if min(height, width) >= 64 else 1  # the scene at half resolution, upsampled (speed)
    h, w = -(-height // scale), -(-width // scale)
    image = {"room": _room, "outdoor": _outdoor, "abstract": _abstract, "studio": _studio}[kind](rng, h, w)
    if scale > 1:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return _camera(rng, image)


def _colour(rng: np.random.Generator, hue=(0.0, 1.0), saturation=(0.0, 1.0), value=(0.0, 1.0)) -> np.ndarray:
    """(3,) float32 sRGB from HSV ranges."""
    return hsv_to_rgb([rng.uniform(*hue) % 1.0, rng.uniform(*saturation), rng.uniform(*value)]).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: float) -> np.ndarray:
    """(H, W) float32 noise in about [-1, 1], smooth over ``cells`` cells along the longer side (bicubic)."""
    gh, gw = (max(2, int(np.ceil(cells * n / max(height, width)))) + 1 for n in (height, width))
    grid = rng.uniform(-1.0, 1.0, (gh, gw)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _texture(rng: np.random.Generator, height: int, width: int, strength: float) -> np.ndarray:
    """(H, W, 1) multiplicative texture 1 + strength * (coarse + fine noise)."""
    coarse, fine = (_smooth_noise(rng, height, width, rng.uniform(*cells)) for cells in ((2, 6), (12, 40)))
    noise = 0.6 * coarse + 0.4 * fine
    return (1.0 + strength * noise)[..., None]


def _gradient(height: int, width: int, top: np.ndarray, bottom: np.ndarray, tilt: float = 0.0) -> np.ndarray:
    """(H, W, 3) linear blend from ``top`` to ``bottom``, its direction turned by ``tilt`` (radians) from vertical."""
    y = np.linspace(0.0, np.cos(tilt), height, dtype=np.float32)[:, None]
    x = np.linspace(-0.5 * np.sin(tilt), 0.5 * np.sin(tilt), width, dtype=np.float32)[None, :]
    t = np.clip(y + x, 0.0, 1.0)[..., None]
    return top + t * (np.asarray(bottom, np.float32) - top)


def _box(image: np.ndarray, rng: np.random.Generator, x0, y0, x1, y1, colour, shade: bool = True) -> None:
    """A filled rectangle (clipped to the image), shaded top to bottom by up to +-15 %."""
    h, w = image.shape[:2]
    x0, x1 = sorted((int(np.clip(x0, 0, w)), int(np.clip(x1, 0, w))))
    y0, y1 = sorted((int(np.clip(y0, 0, h)), int(np.clip(y1, 0, h))))
    if x1 <= x0 or y1 <= y0:
        return
    fill = np.broadcast_to(colour, (y1 - y0, x1 - x0, 3))
    if shade:
        top, bottom = 1.0 + rng.uniform(0, 0.15), 1.0 - rng.uniform(0, 0.15)
        fill = fill * np.linspace(top, bottom, y1 - y0, dtype=np.float32)[:, None, None]
    image[y0:y1, x0:x1] = fill


def _blobs(image: np.ndarray, rng: np.random.Generator, count: int, colour_of, band=(0.0, 1.0),
           blur: float = 0.08) -> None:
    """``count`` soft ellipses, colours from ``colour_of(rng)``: drawn premultiplied at 1/4 size, blurred, upsampled."""
    h, w = image.shape[:2]
    sh, sw = max(h // 4, 4), max(w // 4, 4)
    layer = np.zeros((sh, sw, 4), np.float32)  # colour x alpha, alpha
    for _ in range(count):
        centre = (int(rng.uniform(0, sw)), int(rng.uniform(band[0], band[1]) * sh))
        axes = (int(rng.uniform(0.04, 0.25) * sw) + 1, int(rng.uniform(0.04, 0.25) * sh) + 1)
        alpha = rng.uniform(0.5, 1.0)
        colour = (*(float(c) * alpha for c in colour_of(rng)), alpha)
        cv2.ellipse(layer, centre, axes, rng.uniform(0, 180), 0, 360, colour, -1)
    k = int(blur * max(sh, sw)) * 2 + 1
    layer = cv2.resize(cv2.GaussianBlur(layer, (k, k), 0), (w, h), interpolation=cv2.INTER_LINEAR)
    image *= 1.0 - layer[..., 3:]
    image += layer[..., :3]


def _floor(rng: np.random.Generator, height: int, width: int, horizon: int) -> np.ndarray:
    """(height - horizon, W, 3) a floor seen in perspective: plain, tiles or planks, darker far away."""
    rows = height - horizon
    if rng.random() < 0.4:  # wood
        base = _colour(rng, (0.04, 0.12), (0.25, 0.6), (0.25, 0.7))
    else:
        base = _colour(rng, saturation=(0.0, 0.35), value=(0.15, 0.85))
    dy = np.arange(1, rows + 1, dtype=np.float32)[:, None]  # pixels below the horizon
    x = np.arange(width, dtype=np.float32)[None, :] - rng.uniform(0.2, 0.8) * width
    tile = rng.uniform(0.1, 0.35) * width / rows  # ground units: a tile's width at the bottom row in pixels / rows
    ground_x, ground_z = x / dy, rng.uniform(0.5, 1.5) * rows / dy
    kind, contrast = rng.choice(3, p=[0.4, 0.35, 0.25]), rng.uniform(0.05, 0.3)
    fade = np.clip(dy / (0.25 * rows + 1), 0.0, 1.0)  # less contrast near the horizon (no aliasing)
    if kind == 1:  # tiles
        pattern = (np.floor(ground_x / tile) + np.floor(ground_z / tile)) % 2 * 2 - 1
    elif kind == 2:  # planks along the depth, each its own brightness
        plank = np.floor(ground_x / (0.3 * tile)).astype(np.int64) % 64
        pattern = rng.uniform(-1, 1, 64).astype(np.float32)[plank]
    else:
        pattern = np.zeros((rows, width), np.float32)
    shade = (1.0 + contrast * fade * pattern) * (0.75 + 0.25 * dy / rows)
    return base * shade[..., None] * _texture(rng, rows, width, rng.uniform(0.0, 0.15))


def _room(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    horizon = int(rng.uniform(0.35, 0.75) * height)
    wall = _colour(rng, saturation=(0.0, 0.35), value=(0.45, 0.95))
    image = _gradient(height, width, wall * rng.uniform(0.85, 1.15), wall * rng.uniform(0.7, 1.0),
                      rng.uniform(-0.6, 0.6))
    if rng.random() < 0.5:  # a corner: the second wall differently lit
        corner = int(rng.uniform(0.15, 0.85) * width)
        side = slice(0, corner) if rng.random() < 0.5 else slice(corner, width)
        image[:, side] *= rng.uniform(0.65, 0.9)
    image *= _texture(rng, height, width, rng.uniform(0.0, 0.1))
    for _ in range(rng.integers(0, 6)):  # windows, doors, pictures, shelves on the wall
        kind = rng.choice(4)
        x0, w = rng.uniform(-0.1, 1.0) * width, rng.uniform(0.05, 0.35) * width
        if kind == 0:  # a window: bright, often bluish, with a frame
            y0, h = rng.uniform(0.05, 0.4) * horizon, rng.uniform(0.3, 0.6) * horizon
            frame = _colour(rng, saturation=(0, 0.2), value=(0.2, 0.95))
            _box(image, rng, x0 - 3, y0 - 3, x0 + w + 3, y0 + h + 3, frame)
            _box(image, rng, x0, y0, x0 + w, y0 + h, _colour(rng, (0.5, 0.65), (0.0, 0.35), (0.75, 1.0)))
        elif kind == 1:  # a door down to the floor
            _box(image, rng, x0, horizon - rng.uniform(0.6, 0.95) * horizon, x0 + min(w, 0.15 * width), horizon,
                 _colour(rng, saturation=(0.0, 0.6), value=(0.15, 0.9)))
        else:  # a picture or a shelf
            y0 = rng.uniform(0.05, 0.8) * horizon
            _box(image, rng, x0, y0, x0 + 0.5 * w, y0 + rng.uniform(0.03, 0.3) * horizon, _colour(rng))
    image[horizon:] = _floor(rng, height, width, horizon)
    if rng.random() < 0.6:  # a skirting board
        _box(image, rng, 0, horizon - rng.uniform(0.01, 0.04) * height, width, horizon,
             _colour(rng, saturation=(0.0, 0.3), value=(0.1, 0.95)), shade=False)
    for _ in range(rng.integers(0, 4)):  # furniture standing on the floor
        x0, w = rng.uniform(-0.2, 1.0) * width, rng.uniform(0.1, 0.45) * width
        y1 = horizon + rng.uniform(0.0, 0.6) * (height - horizon)
        _box(image, rng, x0, y1 - rng.uniform(0.1, 0.5) * height, x0 + w, y1, _colour(rng, value=(0.08, 0.9)))
    if rng.random() < 0.4:
        _blobs(image, rng, int(rng.integers(1, 5)), lambda r: _colour(r, value=(0.1, 0.9)))
    return image


def _outdoor(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    horizon = int(rng.uniform(0.25, 0.65) * height)
    if rng.random() < 0.6:  # blue sky, paler at the horizon
        top = _colour(rng, (0.55, 0.62), (0.35, 0.75), (0.55, 0.95))
        bottom = top + (1.0 - top) * rng.uniform(0.3, 0.8)
    else:  # overcast
        top = _colour(rng, (0.5, 0.7), (0.0, 0.1), (0.5, 0.9))
        bottom = top * rng.uniform(0.9, 1.15)
    image = _gradient(height, width, top, bottom)
    clouds = np.clip(_smooth_noise(rng, height, width, rng.uniform(3, 8)) * rng.uniform(0.5, 1.5), 0.0, 1.0)[..., None]
    image = (1.0 - 0.7 * clouds) * image + 0.7 * clouds * np.float32(rng.uniform(0.85, 1.0))
    ground = [_colour(rng, (0.2, 0.35), (0.3, 0.7), (0.2, 0.6)),  # grass
              _colour(rng, (0.05, 0.12), (0.25, 0.6), (0.2, 0.6)),  # earth, sand
              _colour(rng, (0.0, 1.0), (0.0, 0.08), (0.2, 0.6))][rng.choice(3)]  # asphalt, concrete
    rows = height - horizon
    image[horizon:] = ground * _gradient(rows, width, np.float32([0.8] * 3), np.float32([1.1] * 3)) \
        * _texture(rng, rows, width, rng.uniform(0.05, 0.3))
    for _ in range(rng.integers(0, 5)):  # buildings on the horizon
        x0, w, h = rng.uniform(-0.1, 1.0) * width, rng.uniform(0.08, 0.4) * width, rng.uniform(0.1, 0.6) * horizon
        _box(image, rng, x0, horizon - h, x0 + w, horizon + 1, _colour(rng, saturation=(0.0, 0.4), value=(0.25, 0.9)))
    green = lambda r: _colour(r, (0.2, 0.4), (0.3, 0.8), (0.1, 0.45))  # noqa: E731 (trees and bushes)
    if rng.random() < 0.7:
        _blobs(image, rng, int(rng.integers(2, 9)), green, band=(horizon / height - 0.15, horizon / height + 0.03))
    return image


def _abstract(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    palette = [_colour(rng) for _ in range(3)]
    a = np.clip(0.5 + 0.8 * _smooth_noise(rng, height, width, rng.uniform(2, 10)), 0, 1)[..., None]
    b = np.clip(0.5 + 0.8 * _smooth_noise(rng, height, width, rng.uniform(2, 10)), 0, 1)[..., None]
    image = ((1 - a) * palette[0] + a * palette[1]) * (1 - b) + b * palette[2]
    image = image * _texture(rng, height, width, rng.uniform(0.0, 0.2))
    for _ in range(rng.integers(0, 8)):
        x0, y0 = rng.uniform(-0.1, 1.0) * width, rng.uniform(-0.1, 1.0) * height
        w, h = rng.uniform(0.05, 0.4) * width, rng.uniform(0.05, 0.4) * height
        _box(image, rng, x0, y0, x0 + w, y0 + h, _colour(rng))
    _blobs(image, rng, int(rng.integers(0, 6)), lambda r: _colour(r), blur=rng.uniform(0.0, 0.1))
    return image


def _studio(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    backdrop = _colour(rng, saturation=(0.0, 0.5), value=(0.3, 0.95)) if rng.random() < 0.8 else _colour(rng)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = rng.uniform(0.2, 0.6) * height, rng.uniform(0.3, 0.7) * width
    r = np.hypot((y - cy) / height, (x - cx) / width)
    image = backdrop * (1.0 - rng.uniform(0.2, 0.7) * np.clip(r, 0, 1))[..., None]
    sweep = int(rng.uniform(0.55, 0.9) * height)  # the floor: the backdrop curving towards the camera
    image[sweep:] *= np.linspace(1.0, rng.uniform(0.75, 1.1), height - sweep, dtype=np.float32)[:, None, None]
    return image * _texture(rng, height, width, rng.uniform(0.0, 0.05))


def _camera(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """White balance, exposure, contrast and gamma (one lookup table per channel), defocus, sensor noise:
    float [0, 1] -> uint8."""
    pixels = cv2.convertScaleAbs(image, alpha=255.0)  # saturating, rounded
    level = np.arange(256, dtype=np.float64)[:, None] / 255.0 * rng.uniform(0.88, 1.12, 3) * rng.uniform(0.75, 1.2)
    level = np.clip((level - 0.5) * rng.uniform(0.8, 1.2) + 0.5, 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    pixels = cv2.LUT(pixels, (level * 255.0 + 0.5).astype(np.uint8)[None])
    if rng.random() < 0.35:
        pixels = cv2.GaussianBlur(pixels, (0, 0), rng.uniform(0.5, 2.5))
    k = int(rng.integers(0, 9))  # noise uniform in -k..k levels: sigma sqrt(k (k + 1) / 3), up to 4.9 levels
    if k:
        noise = rng.integers(0, 2 * k + 1, pixels.shape, dtype=np.uint8)
        pixels = np.clip(np.add(pixels, noise, dtype=np.int16) - k, 0, 255).astype(np.uint8)
    return pixels
