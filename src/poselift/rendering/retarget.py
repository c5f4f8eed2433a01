"""Retargeting: MakeHuman's body (:mod:`poselift.rendering.body`) driven by Human3.6M-17 joint positions.

**Choice: align bones to the 3D joints** (not a retargeting of BVH rotations). The prepared file
(:mod:`poselift.data.prepared`) holds only H36M-17 positions, and every dataset has that file (the open
benchmark, Human3.6M, 3DHP, HumanEva), whereas rotations exist only for some sources and live on other
skeletons with other rest poses. Driving the body from the prepared joints also makes its joints *be* the
prepared ones, which is the point of rendering them. What positions cannot give (the twist about a segment
with no third joint: the head's yaw, forearm pronation) is left at the parent's (below).

Method, all in poselift's world frame (z up, metres; the prepared files hold mm: divide by 1000):

1. **Correspondence** (:data:`H36M_TO_MAKEHUMAN`): each H36M-17 joint is a joint of the ``default.mhskel``
   skeleton (the head or tail of one bone). Each H36M-17 segment (parent -> child joint) drives one *chain*
   (:data:`CHAINS`): consecutive MakeHuman bones that turn as one rigid piece about the first one's head,
   e.g. thigh = ``upperleg01`` + ``upperleg02`` (hip -> knee): 31 bones in 16 chains. The (weightless)
   ``root`` carries the pelvis frame; the other 131 bones follow their parent rigidly (identity local
   rotation): feet, toes, hands, fingers, face, jaw, tongue, eyes, breasts.

   ======================  ===========================================  ======================================
   H36M-17 joint           MakeHuman joint                              segment it ends -> chain (pivot)
   ======================  ===========================================  ======================================
   pelvis                  ``spine05`` head (= ``pelvis.L/.R`` heads)    (root: the pelvis frame, see 3)
   left/right_hip          ``upperleg01.L/.R`` head                      ``pelvis.L/.R``
   left/right_knee         ``lowerleg01.L/.R`` head                      ``upperleg01`` + ``upperleg02``
   left/right_ankle        ``foot.L/.R`` head                            ``lowerleg01`` + ``lowerleg02``
   spine                   ``spine02`` head                              ``spine05`` + ``spine04`` + ``spine03``
   thorax                  ``neck01`` head (= ``spine01`` tail)          ``spine02`` + ``spine01``
   neck_nose               ``head`` head (skull base)                    ``neck01`` + ``neck02`` + ``neck03``
   head                    ``head`` tail (top of the skull)              ``head``
   left/right_shoulder     ``upperarm01.L/.R`` head                      ``clavicle`` + ``shoulder01`` (pivot
                                                                         off the thorax: the clavicle's head)
   left/right_elbow        ``lowerarm01.L/.R`` head                      ``upperarm01`` + ``upperarm02``
   left/right_wrist        ``wrist.L/.R`` head                           ``lowerarm01`` + ``lowerarm02``
   ======================  ===========================================  ======================================

   ``neck_nose`` is the skull base, as on the open benchmark (the Bandai rig's ``Head`` joint); Human3.6M's
   joint 9 sits nearer the nose, where this table bends the neck forward more than the real one.
2. **Size** (:func:`size_body`, :func:`sizing`). The subject's segment lengths are the medians over frames
   of the 16 H36M-17 segment lengths (:func:`segment_lengths`). :func:`size_body` scales the whole body
   (mesh, skeleton, shape targets) uniformly by ``k``, the geometric mean of the subject/body length ratios
   of the eight limb segments (thighs, shins, upper arms, forearms): girth, hands, feet and head follow
   ``k``. Then every chain except the head is stretched along its own rest axis, about its pivot, so that
   the posed skeleton's segment has exactly the subject's median length (a fixed affine *sizing* per bone,
   part of the transforms; bones outside the chains are only moved with their parent's stretched end). So
   **matched exactly: the 13 segment lengths other than neck_nose -> head and thorax -> shoulders.** The
   clavicle chain pivots at the clavicle's head, 8-10 cm in front of and below the thorax, so it is
   stretched to the median distance from that pivot (posed with the thorax) to the driving shoulder, which
   matches thorax -> shoulder only up to how much the subject's shoulder moves about another pivot (open
   benchmark: 0.1-2.5 cm). The head is not stretched (that would flatten the face): it keeps ``k`` times
   MakeHuman's skull (14.3 cm base to top), so the head top joint lies on the driving neck_nose -> head line
   but not at its distance where that differs (the open benchmark's head top is a fixed 10 cm above its
   Head joint, so the mesh is about 4.5 cm taller than its joints say). The feet below the ankles and the
   mesh's height follow the rest.
3. **Pose** (:func:`pose_from_joints`): per frame, parents first, each chain's world rotation is its
   parent's, then the *swing* (the smallest rotation) that turns the chain's rest axis onto the driving
   segment's direction, then a *twist* about that direction where the joints fix one:

   - **pelvis** (``root``): the frame with x along right_hip -> left_hip and z the pelvis -> spine direction
     made orthogonal to it; the hips (``pelvis.L/.R``) and the lower spine then swing from it.
   - **thorax** (``spine02`` + ``spine01``): swing onto spine -> thorax, then twisted so that the rest
     shoulder line (right -> left shoulder, orthogonal to the segment) lies on the driving one.
   - **thigh and shin**: their rest bend plane (hip-knee-ankle normal) is turned onto the driving one, so
     the knee bends in the joints' plane; **upper arm and forearm** likewise with shoulder-elbow-wrist. A
     straight limb has no plane: the twist is weighted by the bend, from 0 below 5 degrees to 1 above 15
     (smoothly), and a straight limb keeps its swing's twist (that of the pelvis or thorax).
   - **neck, head, clavicles, hips, lower spine**: swing only. H36M-17 has no joint that fixes the head's
     turn about neck_nose -> head (on the open benchmark neck_nose lies on the neck's axis), nor the hands'
     and feet's turn about the forearm and shin.
   - the clavicle, whose pivot is off the thorax, is aimed at the point of the driving thorax -> shoulder
     ray at its (sized) length from the pivot, the one nearer the frame's thorax -> shoulder length, so the
     segment's direction is exact (if the ray misses that sphere: at the ray's point nearest the pivot).

   The world translation puts the posed pelvis on the driving one. The transforms are
   ``posed frame @ sizing`` per bone, relative to the rest pose of the body given, for
   :meth:`Body.pose <poselift.rendering.body.Body.pose>` / ``linear_blend_skinning`` (affine, not rigid,
   where a chain is stretched). Vectorised over frames; the only loop is over the bones, parents first.
4. **Check** (:func:`posed_h36m17`): the H36M-17 joints read off the posed skeleton. Every segment's
   direction is the driving one; the joints are the driving ones where the frame's segment lengths are the
   medians. On the open benchmark (46 clips of dataset-1) the pelvis and legs are exact, spine, thorax and
   neck within 2 mm, the shoulders (and with them the arms) within 0.1-2.5 cm (median clip 4.5 mm), the head
   top 4.5-6 cm short of the skull's top along its ray (above).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from poselift.rendering.body import Body, Target
from poselift.skeleton import H36M17

# --- 1. correspondence -----------------------------------------------------------------------------
H36M_TO_MAKEHUMAN: dict[str, tuple[str, str]] = {
    "pelvis": ("spine05", "head"),
    "right_hip": ("upperleg01.R", "head"), "right_knee": ("lowerleg01.R", "head"), "right_ankle": ("foot.R", "head"),
    "left_hip": ("upperleg01.L", "head"), "left_knee": ("lowerleg01.L", "head"), "left_ankle": ("foot.L", "head"),
    "spine": ("spine02", "head"), "thorax": ("neck01", "head"), "neck_nose": ("head", "head"), "head": ("head", "tail"),
    "left_shoulder": ("upperarm01.L", "head"), "left_elbow": ("lowerarm01.L", "head"),
    "left_wrist": ("wrist.L", "head"),
    "right_shoulder": ("upperarm01.R", "head"), "right_elbow": ("lowerarm01.R", "head"),
    "right_wrist": ("wrist.R", "head"),
}


@dataclass(frozen=True)
class Chain:
    """MakeHuman bones turned as one rigid piece about the first one's head, driven by one H36M-17 segment.

    ``twist``: None (swing only), ``("plane", (a, b, c))`` (the normal of a-b-c, weighted by the bend at b)
    or ``("line", (l, r))`` (the r -> l direction, orthogonal to the segment). ``stretch``: whether the
    chain is stretched to the subject's segment length."""

    bones: tuple[str, ...]
    start: str
    end: str
    twist: tuple[str, tuple[str, ...]] | None = None
    stretch: bool = True


def _limb(side: str, upper: str, lower: str, joints: tuple[str, str, str]) -> tuple[Chain, Chain]:
    s = side[0].upper()
    plane = ("plane", tuple(f"{side}_{j}" for j in joints))
    return (Chain((f"{upper}01.{s}", f"{upper}02.{s}"), f"{side}_{joints[0]}", f"{side}_{joints[1]}", plane),
            Chain((f"{lower}01.{s}", f"{lower}02.{s}"), f"{side}_{joints[1]}", f"{side}_{joints[2]}", plane))


CHAINS: tuple[Chain, ...] = (
    Chain(("pelvis.L",), "pelvis", "left_hip"),
    Chain(("pelvis.R",), "pelvis", "right_hip"),
    Chain(("spine05", "spine04", "spine03"), "pelvis", "spine"),
    Chain(("spine02", "spine01"), "spine", "thorax", ("line", ("left_shoulder", "right_shoulder"))),
    Chain(("neck01", "neck02", "neck03"), "thorax", "neck_nose"),
    Chain(("head",), "neck_nose", "head", stretch=False),
    Chain(("clavicle.L", "shoulder01.L"), "thorax", "left_shoulder"),
    Chain(("clavicle.R", "shoulder01.R"), "thorax", "right_shoulder"),
    *_limb("left", "upperarm", "lowerarm", ("shoulder", "elbow", "wrist")),
    *_limb("right", "upperarm", "lowerarm", ("shoulder", "elbow", "wrist")),
    *_limb("left", "upperleg", "lowerleg", ("hip", "knee", "ankle")),
    *_limb("right", "upperleg", "lowerleg", ("hip", "knee", "ankle")),
)
LIMB_SEGMENTS = ("left_knee", "left_ankle", "right_knee", "right_ankle",
                 "left_elbow", "left_wrist", "right_elbow", "right_wrist")  # segments named by their end joint
TWIST_BEND_DEG = (5.0, 15.0)  # plane twist weight: 0 below, 1 above the bend angle at the middle joint
_J = {name: j for j, name in enumerate(H36M17.names)}


def rest_h36m17(body: Body) -> np.ndarray:
    """(17, 3) the H36M-17 joints of the body's rest skeleton (metres, world frame)."""
    sk = body.skeleton
    return np.stack([(sk.heads if end == "head" else sk.tails)[sk.index(bone)]
                     for bone, end in (H36M_TO_MAKEHUMAN[n] for n in H36M17.names)])


def segment_lengths(joints_3d: np.ndarray) -> np.ndarray:
    """(17,) the median over frames of each H36M-17 segment's length, indexed by its child joint (0 for the
    pelvis), from joints (F, 17, 3)."""
    joints = _check_joints(joints_3d)
    out = np.zeros(H36M17.num_joints)
    for p, c in H36M17.bones:
        out[c] = np.median(np.linalg.norm(joints[:, c] - joints[:, p], axis=-1))
    return out


# --- 2. size -----------------------------------------------------------------------------------------
def body_scale(body: Body, lengths: np.ndarray) -> float:
    """``k``: the geometric mean over the eight limb segments of subject length / the body's rest length."""
    rest = rest_h36m17(body)
    ratios = [lengths[_J[c]] / np.linalg.norm(rest[_J[c]] - rest[H36M17.parents[_J[c]]]) for c in LIMB_SEGMENTS]
    return float(np.exp(np.mean(np.log(ratios))))


def size_body(body: Body, joints_3d: np.ndarray | None = None, *, lengths: np.ndarray | None = None) -> Body:
    """The body scaled uniformly (mesh, skeleton and shape targets, about the origin) by :func:`body_scale`
    for the subject's median segment lengths (from ``joints_3d`` (F, 17, 3) in metres, or ``lengths``)."""
    if (joints_3d is None) == (lengths is None):
        raise ValueError("give either joints_3d or lengths")
    lengths = segment_lengths(joints_3d) if lengths is None else np.asarray(lengths, dtype=np.float64)
    k = body_scale(body, lengths)
    return replace(body, base_vertices=body.base_vertices * k,
                   targets={n: Target(indices=t.indices, offsets=t.offsets * k) for n, t in body.targets.items()})


@dataclass(frozen=True)
class Sizing:
    """Per-bone affine maps from the body's rest pose to the subject-sized one (:func:`sizing`)."""

    transforms: np.ndarray  # (B, 4, 4)
    stretch: dict[str, float]  # chain (named by its segment's end joint) -> length factor along its rest axis
    lengths: np.ndarray  # (17,) the subject's segment lengths (:func:`segment_lengths`)
    joints: np.ndarray  # (17, 3) the H36M-17 joints of the sized rest pose


def sizing(body: Body, joints_3d: np.ndarray) -> Sizing:
    """The sizing of ``body`` for the subject of ``joints_3d`` (F, 17, 3), metres: each chain but the head
    stretched along its rest axis, about its pivot, to the median length of its segment; for the clavicles
    (pivot off the thorax) to the median distance from the posed pivot to the driving shoulder. Bones
    outside the chains move with their parent's end."""
    return _solve(body, _check_joints(joints_3d), None)[2]


# --- 3. pose -----------------------------------------------------------------------------------------
def pose_from_joints(body: Body, joints_3d: np.ndarray, size: Sizing | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Bone transforms (F, B, 4, 4) relative to ``body``'s rest pose (for ``body.pose``) that put its
    skeleton on H36M-17 joints (F, 17, 3) in metres, world frame, and the world translation (F, 3) of the
    sized rest pelvis to the driving one (already in the transforms). ``size``: the :func:`sizing` to use
    (default: that of ``joints_3d``; pass the whole sequence's to pose it in pieces)."""
    joints = _check_joints(joints_3d)
    rot, shift, size = _solve(body, joints, size)
    x = size.transforms
    out = np.zeros((*rot.shape[:2], 4, 4))
    out[..., :3, :3] = rot @ x[:, :3, :3]
    out[..., :3, 3] = np.einsum("fbij,bj->fbi", rot, x[:, :3, 3]) + shift
    out[..., 3, 3] = 1.0
    return out, joints[:, _J["pelvis"]] - size.joints[_J["pelvis"]]


def _solve(body: Body, joints: np.ndarray, size: Sizing | None) -> tuple[np.ndarray, np.ndarray, Sizing]:
    """World rotations (F, B, 3, 3) and shifts (F, B, 3) of the posed bones (posed point = rotation @ sized
    rest point + shift), and the sizing (computed here, parents first, where ``size`` is None)."""
    sk = body.skeleton
    rest = rest_h36m17(body)
    lengths = segment_lengths(joints) if size is None else size.lengths
    x = np.broadcast_to(np.eye(4), (sk.num_bones, 4, 4)).copy() if size is None else size.transforms
    stretch = {} if size is None else size.stretch
    first = {sk.index(c.bones[0]): c for c in CHAINS}
    member = {sk.index(b): sk.index(c.bones[0]) for c in CHAINS for b in c.bones[1:]}
    frames = len(joints)
    rot = np.empty((frames, sk.num_bones, 3, 3))
    shift = np.empty((frames, sk.num_bones, 3))
    for b, p in enumerate(sk.parents):
        if p < 0:  # the pelvis frame (the root is not sized); the pelvis lands on the driving one
            rot[:, b] = _pelvis_frame(joints) @ _pelvis_frame(rest[None])[0].T
            shift[:, b] = joints[:, _J["pelvis"]] - rot[:, b] @ rest[_J["pelvis"]]
            continue
        rot[:, b], shift[:, b] = rot[:, p], shift[:, p]
        if b in member:
            if size is None:
                x[b] = x[member[b]]
            continue
        head = sk.heads[b]
        pivot = _apply(x[p], head)  # sized
        if b not in first:
            if size is None:
                x[b, :3, 3] = pivot - head
            continue
        chain = first[b]
        start, end = rest[_J[chain.start]], rest[_J[chain.end]]
        axis = _unit(end - head)
        off_pivot = np.linalg.norm(head - start) > 1e-6  # the clavicles
        sized_start = _apply(x[p], start)
        posed_pivot = rot[:, p] @ pivot + shift[:, p]
        if size is None:
            s = 1.0
            if chain.stretch:
                if not off_pivot:
                    s = lengths[_J[chain.end]] / np.linalg.norm(end - head)
                else:  # the median distance from the posed pivot to the driving end
                    reach = np.linalg.norm(joints[:, _J[chain.end]] - posed_pivot, axis=-1)
                    s = float(np.median(reach)) / np.linalg.norm(end - head)
            stretch[chain.end] = float(s)
            x[b, :3, :3] = np.eye(3) + (s - 1.0) * np.outer(axis, axis)
            x[b, :3, 3] = pivot - x[b, :3, :3] @ head
        radius = stretch[chain.end] * np.linalg.norm(end - head)
        posed_start = rot[:, p] @ sized_start + shift[:, p] if off_pivot else None
        rot[:, b] = _chain_rotation(chain, rot[:, p], posed_pivot, posed_start, axis, radius, joints, rest)
        shift[:, b] = posed_pivot - rot[:, b] @ pivot
    if size is None:
        sized = np.stack([_apply(x[sk.index(bone)], point)
                          for (bone, _), point in zip((H36M_TO_MAKEHUMAN[n] for n in H36M17.names), rest)])
        size = Sizing(transforms=x, stretch=stretch, lengths=lengths, joints=sized)
    return rot, shift, size


def _apply(transform: np.ndarray, point: np.ndarray) -> np.ndarray:
    return transform[..., :3, :3] @ point + transform[..., :3, 3]


def _chain_rotation(chain: Chain, parent_rot, posed_pivot, posed_start, axis, radius, joints, rest) -> np.ndarray:
    """(F, 3, 3) the chain's world rotation: its parent's, the swing onto the driving segment, the twist.
    ``posed_start``: the posed segment start where the pivot is off it (else None)."""
    start, end = _J[chain.start], _J[chain.end]
    segment = joints[:, end] - joints[:, start]
    direction = _unit(segment)
    aim = direction
    if posed_start is not None:  # pivot off the segment's start: aim at the ray's point at ``radius``
        offset = posed_start - posed_pivot
        b = np.einsum("fi,fi->f", direction, offset)
        disc = b * b - (np.einsum("fi,fi->f", offset, offset) - radius ** 2)
        root = np.sqrt(np.maximum(disc, 0.0))
        length = np.linalg.norm(segment, axis=-1)
        near = np.where(np.abs(-b + root - length) <= np.abs(-b - root - length), -b + root, -b - root)
        aim = _unit(offset + np.where(disc >= 0, near, -b)[:, None] * direction)
    swung = _swing(parent_rot @ axis, aim) @ parent_rot
    if chain.twist is None:
        return swung
    kind, names = chain.twist
    idx = [_J[n] for n in names]
    if kind == "plane":
        a, b, c = (joints[:, i] for i in idx)
        normal = np.cross(b - a, c - b)
        bend = np.arctan2(np.linalg.norm(normal, axis=-1), np.einsum("fi,fi->f", b - a, c - b))
        lo, hi = np.radians(TWIST_BEND_DEG)
        t = np.clip((bend - lo) / (hi - lo), 0.0, 1.0)
        weight = t * t * (3 - 2 * t)
        ra, rb, rc = (rest[i] for i in idx)
        reference = np.cross(rb - ra, rc - rb)
    else:
        normal = joints[:, idx[0]] - joints[:, idx[1]]
        weight = np.ones(len(joints))
        reference = rest[idx[0]] - rest[idx[1]]
    reference = reference - (reference @ axis) * axis  # orthogonal to the rest axis
    carried = swung @ reference  # (F, 3), orthogonal to aim
    normal = normal - np.einsum("fi,fi->f", normal, aim)[:, None] * aim
    angle = np.arctan2(np.einsum("fi,fi->f", np.cross(carried, normal), aim), np.einsum("fi,fi->f", carried, normal))
    angle = np.where(np.linalg.norm(normal, axis=-1) > 1e-12, angle, 0.0)
    return _axis_angle(aim, weight * angle) @ swung


def _pelvis_frame(joints: np.ndarray) -> np.ndarray:
    """(F, 3, 3) columns: right -> left hip, up x that (backwards), pelvis -> spine made orthogonal to it."""
    left = _unit(joints[:, _J["left_hip"]] - joints[:, _J["right_hip"]])
    up = joints[:, _J["spine"]] - joints[:, _J["pelvis"]]
    up = _unit(up - np.einsum("fi,fi->f", up, left)[:, None] * left)
    return np.stack([left, np.cross(up, left), up], axis=-1)


def _swing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(F, 3, 3) the smallest rotations turning unit vectors a (F, 3) onto b (F, 3)."""
    cross = np.cross(a, b)
    cos = np.einsum("fi,fi->f", a, b)
    k = _skew(cross)
    out = np.eye(3) + k + (k @ k) / np.maximum(1.0 + cos, 1e-12)[:, None, None]
    opposite = cos < -1.0 + 1e-9
    if opposite.any():  # a half turn about any axis orthogonal to a
        other = np.eye(3)[np.argmin(np.abs(a[opposite]), axis=-1)]
        p = _unit(np.cross(a[opposite], other))
        out[opposite] = 2.0 * p[:, :, None] * p[:, None, :] - np.eye(3)
    return out


def _axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """(F, 3, 3) rotations by ``angle`` (F,) about unit ``axis`` (F, 3) (Rodrigues)."""
    k = _skew(axis)
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3) + s * k + (1.0 - c) * (k @ k)


def _skew(v: np.ndarray) -> np.ndarray:
    out = np.zeros((*v.shape[:-1], 3, 3))
    out[..., 0, 1], out[..., 0, 2], out[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    out[..., 1, 0], out[..., 2, 0], out[..., 2, 1] = v[..., 2], -v[..., 1], v[..., 0]
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    if (norm < 1e-9).any():
        raise ValueError("a driving segment has zero length (two H36M-17 joints coincide)")
    return v / norm


def _check_joints(joints_3d: np.ndarray) -> np.ndarray:
    joints = np.asarray(joints_3d, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (H36M17.num_joints, 3):
        raise ValueError(f"joints have shape {joints.shape}, expected (F, {H36M17.num_joints}, 3)")
    if not np.isfinite(joints).all():
        raise ValueError("joints hold NaN or infinite values")
    return joints


# --- 4. check ----------------------------------------------------------------------------------------
def posed_h36m17(body: Body, transforms: np.ndarray) -> np.ndarray:
    """(F, 17, 3) the H36M-17 joints of ``body``'s skeleton under ``transforms`` (F, B, 4, 4)."""
    sk = body.skeleton
    bones = [sk.index(H36M_TO_MAKEHUMAN[n][0]) for n in H36M17.names]
    t = np.asarray(transforms)[..., bones, :, :]
    return np.einsum("...jik,jk->...ji", t[..., :3, :3], rest_h36m17(body)) + t[..., :3, 3]
