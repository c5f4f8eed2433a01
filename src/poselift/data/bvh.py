"""A small BVH (Biovision Hierarchy) reader and forward kinematics, vectorised over frames.

Why not a library: the BVH text format is small, and poselift needs three things together that the PyPI
readers checked (``bvh``, ``bvhio``, ``pybvh``) do not all give: parsing from bytes already in memory
(members streamed out of a ``.tar.xz``), translation channels on *every* joint (the Bandai-Namco files
give each joint six channels), and forward kinematics over hundreds of thousands of frames as a
handful of numpy operations per joint.

Conventions (those of the format as common tools read it):

- ``OFFSET`` is a joint's position in its parent's frame. A joint with ``Xposition Yposition Zposition``
  channels takes those values as its local translation *instead of* the offset (the Bandai-Namco files
  carry the root trajectory in the ``Hips`` position channels; adding them to the offset would put the
  hips at twice their height).
- Rotation channels are Euler angles in degrees applied in the order listed on the ``CHANNELS`` line, as
  rotations of the moving frame: ``Zrotation Xrotation Yrotation`` gives ``R = Rz @ Rx @ Ry``.
- World pose of joint j: ``G_j = G_parent(j) @ [R_j | t_j]``; its position is the translation of ``G_j``.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import numpy as np

from poselift.errors import InputError

_AXES = {"X": 0, "Y": 1, "Z": 2}


@dataclass
class BVH:
    """One parsed file: the joint tree (end sites kept apart) and the motion table."""

    names: list[str]
    parents: np.ndarray  # (J,) parent index, -1 for the root
    offsets: np.ndarray  # (J, 3) rest offsets in the parent's frame (file units)
    channels: list[tuple[str, ...]]  # per joint, e.g. ("Xposition", ..., "Yrotation")
    motion: np.ndarray  # (F, sum of channel counts), file order
    frame_time: float
    end_sites: dict[int, np.ndarray] = field(default_factory=dict)  # joint -> End Site offset

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])

    def index(self, name: str) -> int:
        return self.names.index(name)


def parse_bvh(data: bytes | str, path: str | os.PathLike = "<bvh>") -> BVH:
    """Parse BVH text; any defect becomes a one-line :class:`InputError` naming ``path``."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(path, f"not a text BVH file ({e})") from None
    head, sep, motion = data.partition("MOTION")
    if not sep or not head.lstrip().startswith("HIERARCHY"):
        raise InputError(path, "not a BVH file (expected HIERARCHY ... MOTION)")
    bvh = _parse_hierarchy(head.split(), path)
    bvh.motion, bvh.frame_time = _parse_motion(motion, sum(len(c) for c in bvh.channels), path)
    return bvh


def _parse_hierarchy(tokens: list[str], path) -> BVH:
    names, parents, offsets, channels, end_sites = [], [], [], [], {}
    stack: list[int] = []  # open joints; -2 marks an open End Site
    i, n = 1, len(tokens)

    def take(count: int) -> list[str]:
        nonlocal i
        if i + count > n:
            raise InputError(path, "BVH hierarchy ends early")
        out = tokens[i:i + count]
        i += count
        return out

    try:
        while i < n:
            token = take(1)[0]
            if token in ("ROOT", "JOINT"):
                if (token == "ROOT") != (not stack) or (stack and stack[-1] == -2):
                    raise InputError(path, f"misplaced {token} in the BVH hierarchy")
                names.append(take(1)[0])
                parents.append(stack[-1] if stack else -1)
                offsets.append(np.zeros(3))
                channels.append(())
                if take(1)[0] != "{":
                    raise InputError(path, f"expected '{{' after joint {names[-1]}")
                stack.append(len(names) - 1)
            elif token == "End":
                if take(2) != ["Site", "{"] or not stack:
                    raise InputError(path, "malformed End Site in the BVH hierarchy")
                stack.append(-2)
            elif token == "OFFSET":
                value = np.array([float(v) for v in take(3)])
                if stack[-1] == -2:
                    end_sites[stack[-2]] = value
                else:
                    offsets[stack[-1]] = value
            elif token == "CHANNELS":
                count = int(take(1)[0])
                names_ = tuple(take(count))
                if any(c[1:] not in ("position", "rotation") or c[0] not in _AXES for c in names_):
                    raise InputError(path, f"unknown BVH channel in {' '.join(names_)}")
                channels[stack[-1]] = names_
            elif token == "}":
                stack.pop()
            else:
                raise InputError(path, f"unexpected token '{token}' in the BVH hierarchy")
    except (ValueError, IndexError) as e:
        raise InputError(path, f"malformed BVH hierarchy ({type(e).__name__}: {e})") from None
    if stack or not names:
        raise InputError(path, "BVH hierarchy has unbalanced braces or no joints")
    return BVH(names=names, parents=np.array(parents), offsets=np.array(offsets), channels=channels,
               motion=np.zeros((0, 0)), frame_time=0.0, end_sites=end_sites)


def _parse_motion(text: str, num_channels: int, path) -> tuple[np.ndarray, float]:
    lines = text.lstrip().split("\n", 2)
    if len(lines) < 2 or not lines[0].startswith("Frames:") or not lines[1].startswith("Frame Time:"):
        raise InputError(path, "BVH MOTION section lacks 'Frames:' and 'Frame Time:'")
    try:
        frames = int(lines[0].split(":")[1])
        frame_time = float(lines[1].split(":")[1])
        table = np.loadtxt(io.StringIO(lines[2] if len(lines) > 2 else ""), dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise InputError(path, f"malformed BVH motion data ({e})") from None
    if frames < 1 or table.shape != (frames, num_channels):
        raise InputError(path, f"BVH motion table has shape {table.shape}, expected ({frames}, {num_channels}) "
                               f"from 'Frames:' and the CHANNELS lines")
    if not np.isfinite(table).all():
        raise InputError(path, "BVH motion data has non-finite values")
    return table, frame_time


def euler_matrices(angles_deg: np.ndarray, order: str) -> np.ndarray:
    """(F, 3) Euler angles in degrees, applied in ``order`` (e.g. ``"ZXY"``) -> (F, 3, 3) ``R = R1 @ R2 @ R3``."""
    rad = np.deg2rad(angles_deg)
    out = np.broadcast_to(np.eye(3), rad.shape[:-1] + (3, 3)).copy()
    for k, axis in enumerate(order):
        out = out @ axis_rotation(rad[..., k], axis)
    return out


def axis_rotation(theta: np.ndarray, axis: str) -> np.ndarray:
    """Right-handed rotations by ``theta`` (radians, any shape) about X, Y or Z -> (..., 3, 3)."""
    c, s = np.cos(theta), np.sin(theta)
    m = np.zeros(np.shape(theta) + (3, 3))
    a = _AXES[axis]
    b, d = (a + 1) % 3, (a + 2) % 3
    m[..., a, a] = 1.0
    m[..., b, b] = c
    m[..., d, d] = c
    m[..., b, d] = -s
    m[..., d, b] = s
    return m


def forward_kinematics(bvh: BVH) -> tuple[np.ndarray, np.ndarray]:
    """World positions (F, J, 3) and world rotations (F, J, 3, 3) of every joint, in file units and axes."""
    frames = bvh.num_frames
    positions = np.zeros((frames, len(bvh.names), 3))
    rotations = np.zeros((frames, len(bvh.names), 3, 3))
    column = 0
    for j, chans in enumerate(bvh.channels):  # parents precede children in file order
        values = bvh.motion[:, column:column + len(chans)]
        column += len(chans)
        local_t = np.broadcast_to(bvh.offsets[j], (frames, 3)).copy()
        pos = [k for k, c in enumerate(chans) if c.endswith("position")]
        if pos:
            local_t[:, [_AXES[chans[k][0]] for k in pos]] = values[:, pos]
        rot = [k for k, c in enumerate(chans) if c.endswith("rotation")]
        local_r = euler_matrices(values[:, rot], "".join(chans[k][0] for k in rot))
        p = bvh.parents[j]
        if p < 0:
            positions[:, j], rotations[:, j] = local_t, local_r
        else:
            positions[:, j] = positions[:, p] + np.einsum("fij,fj->fi", rotations[:, p], local_t)
            rotations[:, j] = rotations[:, p] @ local_r
    return positions, rotations


def end_site_positions(bvh: BVH, positions: np.ndarray, rotations: np.ndarray,
                       offsets: dict[int, np.ndarray] | None = None) -> dict[int, np.ndarray]:
    """World positions (F, 3) of End Sites: a point fixed at ``offset`` in its joint's frame.

    ``offsets`` overrides the file's End Site offsets (joint index -> offset in file units).
    """
    offsets = bvh.end_sites if offsets is None else offsets
    return {j: positions[:, j] + rotations[:, j] @ np.asarray(o, dtype=np.float64) for j, o in offsets.items()}
