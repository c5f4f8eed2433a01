"""The posable body: MakeHuman's CC0 base mesh with its default skeleton, skinning weights and shape targets.

Method, in the order of this file:

1. **Units and axes.** MakeHuman's files are in decimetres, y up, the body facing +z with its left on +x.
   Everything here is in poselift's world frame (that of the prepared 3D and of Human3.6M: right-handed,
   z up) in **metres** (the prepared files hold mm: multiply by 1000): MakeHuman ``(x, y, z)`` -> ``(x, -z,
   y) / 10``, the same rotation as the Bandai-Namco reader's y-up -> z-up. The rest body thus stands
   upright along +z, faces -y and has its left side on +x (left = up x facing, as for the Bandai clips).
   MakeHuman's origin is kept (about 1 cm above the hip joints' height, between them; the soles of the
   unshaped body are at z = -0.817 m, the top of its head at +0.849 m).
2. **Mesh** (``base.obj``): all vertices are kept, because the skeleton and the shape targets refer to
   them by index; the body is the ``body`` group's quads, re-indexed to the vertices they use (in
   increasing original order), with UVs per face corner. The ``helper-*`` groups (tights, hair, ...) and
   ``joint-*`` clusters are not drawn.
3. **Shape** (``targets/macrodetails/*.target``): a target is a sparse offset per vertex; a shaped mesh is
   the base plus the weighted sum of target offsets, applied to *all* vertices, before the skeleton is
   derived, so the joints follow the shape.
4. **Skeleton** (``default.mhskel``): each joint is the centroid of its listed vertices (a ``joint-*``
   cluster of the mesh, two of them, or one body vertex); a bone runs from its head joint to its tail
   joint. Its rest frame (bone -> world) has its origin at the head, +y along
   the bone, +x the normal of the bone's rotation plane (three joints) made orthogonal to the bone, and
   +z = x cross y. Bones are ordered parents first.
5. **Weights** (``default_weights.mhw``): a sparse (V, B) matrix on the body's vertices, each row
   normalised to sum 1 (over the whole mesh the file's sums range from 0.32 to 1.67, over the body from
   0.95 to 1.06; 124 of the 139 weighted bones weigh body vertices, the rest only helpers).
6. **Posing**: a pose is one rotation per bone about its head, in its rest frame's axes, composed down the
   tree (:func:`forward_kinematics`); it yields each bone's world transform relative to the rest pose,
   ``T_b = posed frame @ inverse(rest frame)``, which linear-blend skinning (:func:`linear_blend_skinning`)
   mixes per vertex: ``v' = sum_b w_vb T_b v``. Both are written as changes from the identity, so the
   rest pose, and every vertex that no moved bone weighs, come back bit for bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np
import scipy.sparse as sp

from poselift.errors import InputError
from poselift.rendering.assets import MESH, SKELETON, TARGETS, WEIGHTS, Assets, load_assets

# --- 1. units and axes -----------------------------------------------------------------------------
DM_TO_M = 0.1
MAKEHUMAN_TO_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # (x, y, z) -> (x, -z, y)
BODY_GROUP = "body"


def to_world(points: np.ndarray) -> np.ndarray:
    """MakeHuman points or offsets (..., 3) in dm, y up -> poselift's world, metres, z up."""
    return (np.asarray(points, dtype=np.float64) @ MAKEHUMAN_TO_WORLD.T) * DM_TO_M


# --- the model -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Skeleton:
    """Bones in parents-first order, in one shape of the body (metres, world frame)."""

    names: tuple[str, ...]
    parents: np.ndarray  # (B,) parent index, -1 for the root
    heads: np.ndarray  # (B, 3)
    tails: np.ndarray  # (B, 3)
    rest_frames: np.ndarray  # (B, 4, 4) bone -> world: columns x, y (head -> tail), z, head

    @property
    def num_bones(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def subtree(self, name: str) -> np.ndarray:
        """Indices of the bone ``name`` and all its descendants."""
        inside = np.zeros(self.num_bones, dtype=bool)
        inside[self.index(name)] = True
        for b, p in enumerate(self.parents):  # parents come first
            inside[b] |= p >= 0 and inside[p]
        return np.flatnonzero(inside)


@dataclass(frozen=True)
class Rig:
    """The skeleton's definition on the mesh: joints as vertex sets, bones as joint references."""

    names: tuple[str, ...]  # bones, parents first
    parents: np.ndarray  # (B,)
    joint_names: tuple[str, ...]
    joint_means: sp.csr_matrix  # (J, N): row j averages joint j's vertices
    head_joints: np.ndarray  # (B,) joint index of each bone's head
    tail_joints: np.ndarray  # (B,)
    plane_joints: np.ndarray  # (B, 3) the three joints spanning each bone's rotation plane


@dataclass(frozen=True)
class Body:
    """The body in one shape: mesh, skeleton, weights; :meth:`shaped` and :meth:`pose` make new ones."""

    base_vertices: np.ndarray  # (N, 3) every vertex of base.obj (body, helpers, joint clusters), unshaped
    body_vertices: np.ndarray  # (V,) indices of the body's vertices into mesh_vertices
    faces: np.ndarray  # (F, 4) quads into the body's vertices
    uvs: np.ndarray  # (T, 2) texture coordinates
    face_uvs: np.ndarray  # (F, 4) indices into uvs per face corner
    rig: Rig
    weights: sp.csr_matrix  # (V, B) rows sum to 1
    targets: Mapping[str, "Target"]
    shape: Mapping[str, float] = field(default_factory=dict)  # target name -> weight applied
    mesh_vertices: np.ndarray = field(init=False, repr=False)  # (N, 3) base_vertices with the shape applied
    skeleton: Skeleton = field(init=False, repr=False)

    def __post_init__(self):
        unknown = sorted(set(self.shape) - set(self.targets))
        if unknown:
            raise ValueError(f"unknown shape target {unknown[0]!r} (known: {', '.join(self.targets)})")
        mesh = apply_targets(self.base_vertices, self.targets, self.shape)
        object.__setattr__(self, "mesh_vertices", mesh)
        object.__setattr__(self, "skeleton", skeleton_from_rig(self.rig, mesh))

    def __repr__(self) -> str:
        return (f"Body({len(self.body_vertices)} vertices, {len(self.faces)} quads, {len(self.rig.names)} bones, "
                f"{len(self.targets)} targets, shape={dict(self.shape)})")

    @property
    def vertices(self) -> np.ndarray:
        """(V, 3) the body's rest vertices in metres, world frame."""
        return self.mesh_vertices[self.body_vertices]

    @property
    def triangles(self) -> np.ndarray:
        """(2F, 3) each quad (a, b, c, d) as triangles (a, b, c) and (a, c, d)."""
        return np.concatenate([self.faces[:, [0, 1, 2]], self.faces[:, [0, 2, 3]]])

    def shaped(self, weights: Mapping[str, float]) -> "Body":
        """The base body with ``weights`` (target name -> weight) of the shape targets applied."""
        return replace(self, shape=dict(weights))

    def forward_kinematics(self, rotations: np.ndarray, translation: np.ndarray | None = None) -> np.ndarray:
        return forward_kinematics(self.skeleton, rotations, translation)

    def pose(self, transforms: np.ndarray) -> np.ndarray:
        """(..., V, 3) the body's vertices under bone transforms (..., B, 4, 4) relative to the rest pose."""
        return linear_blend_skinning(self.vertices, self.weights, transforms)


def load_body(source: str | os.PathLike | None = None, **kwargs) -> Body:
    """The unshaped body from verified assets (``source`` and ``kwargs`` as :func:`load_assets`)."""
    return build_body(load_assets(source, **kwargs))


def build_body(assets: Assets) -> Body:
    """Mesh, rig, weights (on the body's vertices, normalised) and targets, parsed from verified assets."""
    mesh = parse_obj(assets.mesh, assets.where(MESH))
    body_faces, body_face_uvs = mesh.groups.get(BODY_GROUP, (None, None))
    if body_faces is None:
        raise InputError(assets.where(MESH), f"has no '{BODY_GROUP}' group")
    if body_faces.shape[1] != 4 or (body_face_uvs < 0).any():
        raise InputError(assets.where(MESH), f"the '{BODY_GROUP}' group must be quads with UVs")
    body_vertices, faces = np.unique(body_faces, return_inverse=True)
    used_uvs, face_uvs = np.unique(body_face_uvs, return_inverse=True)
    rig = parse_rig(assets.skeleton, len(mesh.vertices), assets.where(SKELETON))
    weights = parse_weights(assets.weights, rig.names, len(mesh.vertices), assets.where(WEIGHTS))
    return Body(base_vertices=mesh.vertices, body_vertices=body_vertices, faces=faces.reshape(-1, 4),
                uvs=mesh.uvs[used_uvs], face_uvs=face_uvs.reshape(-1, 4), rig=rig,
                weights=normalise_rows(weights[body_vertices], assets.where(WEIGHTS)),
                targets={name: parse_target(text, len(mesh.vertices), assets.where(f"{TARGETS}{name}.target"))
                         for name, text in assets.targets.items()})


# --- 2. the mesh -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mesh:
    vertices: np.ndarray  # (N, 3) metres, world frame
    uvs: np.ndarray  # (T, 2)
    groups: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (faces (F, k) vertex, (F, k) uv indices; -1: none)


def parse_obj(text: str, where: str = "<obj>") -> Mesh:
    """Vertices, UVs and each group's faces (0-based; a group named twice gathers both parts)."""
    vertices, uvs, corners, current = [], [], {}, None
    for line in text.splitlines():
        if line.startswith("v "):
            vertices.append(line[2:])
        elif line.startswith("vt "):
            uvs.append(line[3:])
        elif line.startswith("f "):
            corners.setdefault(current, []).append(line[2:].split())
        elif line.startswith("g "):
            current = line[2:].strip()
    try:
        xyz = np.array(" ".join(vertices).split(), dtype=np.float64).reshape(-1, 3)
        uv = np.array(" ".join(uvs).split(), dtype=np.float64).reshape(-1, 2)
        groups = {name: _face_indices(faces, len(xyz), len(uv)) for name, faces in corners.items()}
    except ValueError as e:
        raise InputError(where, f"not a readable OBJ mesh ({e})") from None
    return Mesh(vertices=to_world(xyz), uvs=uv, groups=groups)


def _face_indices(faces: list[list[str]], num_vertices: int, num_uvs: int) -> tuple[np.ndarray, np.ndarray]:
    """OBJ corners ``v[/vt[/vn]]`` (1-based) of faces with one corner count -> 0-based (F, k) arrays."""
    if len({len(f) for f in faces}) != 1:
        raise ValueError("a group mixes faces with different corner counts")
    parts = [c.split("/") for f in faces for c in f]
    v = np.array([p[0] for p in parts], dtype=np.int64) - 1
    vt = np.array([p[1] if len(p) > 1 and p[1] else 0 for p in parts], dtype=np.int64) - 1
    if v.min() < 0 or v.max() >= num_vertices or vt.max() >= num_uvs:
        raise ValueError("a face refers to a vertex or UV that does not exist")
    return v.reshape(len(faces), -1), vt.reshape(len(faces), -1)


# --- 3. shape targets ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    indices: np.ndarray  # (K,) vertex indices into the whole mesh
    offsets: np.ndarray  # (K, 3) metres, world frame


def parse_target(text: str, num_vertices: int, where: str = "<target>") -> Target:
    """``index dx dy dz`` lines (comments ``#``) -> a :class:`Target` (may be empty)."""
    rows = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    try:
        table = np.array(" ".join(rows).split(), dtype=np.float64).reshape(-1, 4)
    except ValueError as e:
        raise InputError(where, f"not 'index dx dy dz' lines ({e})") from None
    indices = table[:, 0].astype(np.int64)
    if (indices != table[:, 0]).any() or (indices < 0).any() or (indices >= num_vertices).any():
        raise InputError(where, f"vertex indices must be integers in 0..{num_vertices - 1}")
    if len(np.unique(indices)) != len(indices):  # MakeHuman's targets list a vertex once; apply_targets relies on it
        raise InputError(where, "a vertex index appears twice")
    return Target(indices=indices, offsets=to_world(table[:, 1:]))


def apply_targets(vertices: np.ndarray, targets: Mapping[str, Target], weights: Mapping[str, float]) -> np.ndarray:
    """``vertices`` (N, 3) plus the ``weights``-weighted offsets of the named targets."""
    out = np.array(vertices, dtype=np.float64)
    for name, weight in weights.items():
        if weight:  # a target lists each vertex once (parse_target), so plain indexing adds each offset once
            out[targets[name].indices] += weight * targets[name].offsets
    return out


# --- 4. the skeleton -------------------------------------------------------------------------------
def parse_rig(skeleton: dict, num_vertices: int, where: str = "<mhskel>") -> Rig:
    """Bones (parents first, otherwise in file order), joints and rotation planes of a ``.mhskel``."""
    bones, joints, planes = skeleton["bones"], skeleton["joints"], skeleton["planes"]
    joint_names = tuple(joints)
    joint_index = {n: j for j, n in enumerate(joint_names)}
    order, placed = [], set()
    while len(order) < len(bones):  # parents first: repeated passes over the file order
        ready = [n for n, b in bones.items() if n not in placed and (b.get("parent") is None or b["parent"] in placed)]
        if not ready:
            stuck = next(n for n in bones if n not in placed)
            raise InputError(where, f"bone '{stuck}' has an unknown parent or lies on a cycle")
        order += ready
        placed.update(ready)
    if sum(bones[n].get("parent") is None for n in order) != 1:
        raise InputError(where, "the skeleton must have exactly one root bone")

    def joint(name, bone):
        if name not in joint_index:
            raise InputError(where, f"bone '{bone}' refers to the unknown joint '{name}'")
        return joint_index[name]

    def plane(bone):
        names = planes.get(bones[bone].get("rotation_plane"))
        if not isinstance(names, list) or len(names) != 3:
            raise InputError(where, f"bone '{bone}' has no rotation plane of three joints")
        return [joint(n, bone) for n in names]

    sizes = np.array([len(v) for v in joints.values()])
    rows = np.repeat(np.arange(len(joint_names)), sizes)
    cols = np.array([i for v in joints.values() for i in v], dtype=np.int64)
    if not len(sizes) or sizes.min() < 1 or cols.min() < 0 or cols.max() >= num_vertices:
        raise InputError(where, f"every joint needs vertex indices in 0..{num_vertices - 1}")
    means = sp.csr_matrix((1.0 / sizes[rows], (rows, cols)), shape=(len(joint_names), num_vertices))
    position = {n: b for b, n in enumerate(order)}
    return Rig(names=tuple(order),
               parents=np.array([position.get(bones[n].get("parent"), -1) for n in order]),
               joint_names=joint_names, joint_means=means,
               head_joints=np.array([joint(bones[n]["head"], n) for n in order]),
               tail_joints=np.array([joint(bones[n]["tail"], n) for n in order]),
               plane_joints=np.array([plane(n) for n in order]))


def skeleton_from_rig(rig: Rig, mesh_vertices: np.ndarray) -> Skeleton:
    """Joint centroids on (possibly shaped) mesh vertices -> bone heads, tails and rest frames."""
    joints = rig.joint_means @ mesh_vertices
    heads, tails = joints[rig.head_joints], joints[rig.tail_joints]
    p0, p1, p2 = (joints[rig.plane_joints[:, k]] for k in range(3))
    return Skeleton(names=rig.names, parents=rig.parents, heads=heads, tails=tails,
                    rest_frames=rest_frames(heads, tails, np.cross(p1 - p0, p2 - p0)))


def rest_frames(heads: np.ndarray, tails: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """(B, 4, 4) frames: origin head, +y along the bone, +x ``normals`` made orthogonal to it, z = x cross y.
    Where the normal is (nearly) along the bone, the world axis least aligned with the bone stands in."""
    y = _unit(tails - heads)
    x = normals - np.sum(normals * y, -1, keepdims=True) * y
    weak = np.linalg.norm(x, axis=-1) < 1e-6 * np.maximum(np.linalg.norm(normals, axis=-1), 1e-12)
    if weak.any():
        axis = np.eye(3)[np.argmin(np.abs(y[weak]), axis=-1)]
        x[weak] = axis - np.sum(axis * y[weak], -1, keepdims=True) * y[weak]
    x = _unit(x)
    frames = np.zeros((len(heads), 4, 4))
    frames[:, :3, 0], frames[:, :3, 1], frames[:, :3, 2], frames[:, :3, 3] = x, y, np.cross(x, y), heads
    frames[:, 3, 3] = 1.0
    return frames


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    if (norm == 0).any():
        raise ValueError("a bone has zero length")
    return v / norm


# --- 5. the weights --------------------------------------------------------------------------------
def parse_weights(weights: dict, bone_names: tuple[str, ...], num_vertices: int, where: str = "<mhw>") -> sp.csr_matrix:
    """``bone -> [[vertex, weight], ...]`` -> a sparse (N, B) matrix as written (not normalised)."""
    unknown = sorted(set(weights) - set(bone_names))
    if unknown:
        raise InputError(where, f"weights for '{unknown[0]}', which is not a bone of the skeleton")
    column = {n: b for b, n in enumerate(bone_names)}
    try:
        pairs = {n: np.asarray(v, dtype=np.float64).reshape(-1, 2) for n, v in weights.items()}
    except (ValueError, TypeError) as e:
        raise InputError(where, f"weights must be [vertex, weight] pairs ({e})") from None
    table = np.concatenate(list(pairs.values())) if pairs else np.zeros((0, 2))
    cols = np.repeat([column[n] for n in pairs], [len(p) for p in pairs.values()])
    rows = table[:, 0].astype(np.int64)
    if (rows != table[:, 0]).any() or (rows < 0).any() or (rows >= num_vertices).any() \
            or not np.isfinite(table[:, 1]).all() or (table[:, 1] < 0).any():
        raise InputError(where, f"weights need vertex indices in 0..{num_vertices - 1} and finite weights >= 0")
    return sp.csr_matrix((table[:, 1], (rows, cols)), shape=(num_vertices, len(bone_names)))


def normalise_rows(weights: sp.csr_matrix, where: str = "<weights>") -> sp.csr_matrix:
    """Each row divided by its sum; a row without weight is an error (that vertex could not move)."""
    sums = np.asarray(weights.sum(axis=1)).ravel()
    if (sums <= 0).any():
        raise InputError(where, f"{int((sums <= 0).sum())} body vertices carry no weight")
    out = sp.csr_matrix(sp.diags(1.0 / sums) @ weights)
    out.eliminate_zeros()
    return out


# --- 6. posing -------------------------------------------------------------------------------------
def forward_kinematics(skeleton: Skeleton, rotations: np.ndarray, translation: np.ndarray | None = None) -> np.ndarray:
    """Per-bone rotations (..., B, 3, 3) about each bone's head in its rest frame's axes (identity: rest),
    composed down the tree, and a world ``translation`` (..., 3) of the whole body -> (..., B, 4, 4) world
    transforms relative to the rest pose (``T_b @ rest point`` = posed point; the bone's posed frame is
    ``T_b @ skeleton.rest_frames[b]``).

    A bone's own transform is ``F R F^-1`` (F its rest frame); written as ``I + A`` with
    ``A = F_R (R - I) F_R^T`` and translation ``-A head``, an unrotated bone gives exactly the identity.
    """
    rotations = np.asarray(rotations, dtype=np.float64)
    if rotations.shape[-3:] != (skeleton.num_bones, 3, 3):
        raise ValueError(f"rotations have shape {rotations.shape}, expected (..., {skeleton.num_bones}, 3, 3)")
    batch = rotations.shape[:-3]
    frames = skeleton.rest_frames[:, :3, :3]
    change = np.einsum("bij,...bjk,blk->...bil", frames, rotations - np.eye(3), frames)  # A, (..., B, 3, 3)
    local = np.broadcast_to(np.eye(4), (*batch, skeleton.num_bones, 4, 4)).copy()
    local[..., :3, :3] += change
    local[..., :3, 3] = -np.einsum("...bij,bj->...bi", change, skeleton.heads)
    world = np.empty_like(local)
    for b, p in enumerate(skeleton.parents):  # parents first
        world[..., b, :, :] = local[..., b, :, :] if p < 0 else world[..., p, :, :] @ local[..., b, :, :]
    if translation is not None:
        world[..., :3, 3] += np.asarray(translation, dtype=np.float64)[..., None, :]
    return world


def linear_blend_skinning(rest_vertices: np.ndarray, weights: sp.spmatrix | np.ndarray,
                          transforms: np.ndarray) -> np.ndarray:
    """Posed vertices (..., V, 3): ``v + sum_b w_vb (T_b - I) v`` for rest vertices (V, 3), weights (V, B)
    with rows summing to 1, and bone transforms (..., B, 4, 4) relative to the rest pose."""
    transforms = np.asarray(transforms, dtype=np.float64)
    batch, num_bones = transforms.shape[:-3], transforms.shape[-3]
    if transforms.shape[-2:] != (4, 4) or weights.shape != (len(rest_vertices), num_bones):
        raise ValueError(f"weights {weights.shape} and transforms {transforms.shape} do not fit "
                         f"{len(rest_vertices)} vertices")
    change = (transforms[..., :3, :] - np.eye(4)[:3]).reshape(-1, num_bones, 12)  # (n, B, 12)
    blended = weights @ change.transpose(1, 0, 2).reshape(num_bones, -1)  # (V, n * 12)
    blended = np.asarray(blended).reshape(len(rest_vertices), -1, 3, 4).transpose(1, 0, 2, 3)  # (n, V, 3, 4)
    posed = rest_vertices + np.einsum("nvij,vj->nvi", blended[..., :3], rest_vertices) + blended[..., 3]
    return posed.reshape(*batch, len(rest_vertices), 3)


def posed_joints(skeleton: Skeleton, transforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., B, 3) bone heads and tails under ``transforms`` (..., B, 4, 4) from :func:`forward_kinematics`."""
    def move(points):
        return np.einsum("...bij,bj->...bi", transforms[..., :3, :3], points) + transforms[..., :3, 3]
    return move(skeleton.heads), move(skeleton.tails)
