"""Skeletons: the Human3.6M-17 joint set every poselift stage works in, its graph, and joint groupings.

- ``H36M17``: names, parents, left/right pairs (for flip augmentation), adjacency and hop distances.
- ``POT_GROUPS``: the five distance-to-pelvis groups of the POT paper (Fig. 3, Eq. 5).
- ``MIXSTE_JOINT_WEIGHTS``: MixSTE's WMPJPE weights (Sec. 4.1: torso 1.0, head 1.5, middle limb 2.5,
  terminal limb 4.0).
- ``H36M32_TO_17``: the 17 of Human3.6M's 32 mocap joints that VideoPose3D and 3d-pose-baseline keep.

Mappings from other 2D/3D layouts (COCO-17, MPII-16, MPI-INF-3DHP-17, BlazePose-33) live in
:mod:`poselift.keypoint_formats`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Skeleton:
    """A kinematic tree: joint names, parent of each joint (-1 for the root), and left/right joint pairs."""

    names: tuple[str, ...]
    parents: tuple[int, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]

    def __post_init__(self):
        if len(self.names) != len(self.parents):
            raise ValueError("names and parents differ in length")
        if len(self.left) != len(self.right):
            raise ValueError("left and right joint lists differ in length")
        roots = [j for j, p in enumerate(self.parents) if p < 0]
        if roots != [0]:
            raise ValueError("joint 0 must be the only root")
        if any(p >= j for j, p in enumerate(self.parents) if p >= 0):
            raise ValueError("parents must precede their children")

    @property
    def num_joints(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    @property
    def bones(self) -> list[tuple[int, int]]:
        """(parent, child) pairs, one per non-root joint."""
        return [(p, j) for j, p in enumerate(self.parents) if p >= 0]

    def adjacency(self, self_loops: bool = False) -> np.ndarray:
        """Symmetric (J, J) 0/1 adjacency matrix of the skeleton graph."""
        a = np.zeros((self.num_joints, self.num_joints), dtype=np.float32)
        for p, c in self.bones:
            a[p, c] = a[c, p] = 1.0
        if self_loops:
            a += np.eye(self.num_joints, dtype=np.float32)
        return a

    def hop_distance(self) -> np.ndarray:
        """(J, J) integer matrix D(i, j): shortest-path length in bones between joints i and j."""
        n = self.num_joints
        neighbours = [[] for _ in range(n)]
        for p, c in self.bones:
            neighbours[p].append(c)
            neighbours[c].append(p)
        dist = np.full((n, n), -1, dtype=np.int64)
        for source in range(n):  # breadth-first search from every joint (J is tiny)
            dist[source, source] = 0
            queue = deque([source])
            while queue:
                u = queue.popleft()
                for v in neighbours[u]:
                    if dist[source, v] < 0:
                        dist[source, v] = dist[source, u] + 1
                        queue.append(v)
        return dist

    @property
    def flip_permutation(self) -> np.ndarray:
        """Index array that swaps every left joint with its right twin (use with a sign flip of x)."""
        return swap_permutation(self.num_joints, self.left, self.right)


def swap_permutation(num_joints: int, left, right) -> np.ndarray:
    """Index array over ``num_joints`` joints that exchanges ``left[i]`` with ``right[i]``."""
    perm = np.arange(num_joints)
    perm[list(left)] = right
    perm[list(right)] = left
    return perm


H36M17 = Skeleton(
    names=(
        "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
        "spine", "thorax", "neck_nose", "head",
        "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
    ),
    parents=(-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15),
    left=(4, 5, 6, 11, 12, 13),
    right=(1, 2, 3, 14, 15, 16),
)

# Human3.6M's 32-joint mocap skeleton -> the 17 joints of H36M17, in H36M17's order
# (the subset VideoPose3D's `remove_joints` and 3d-pose-baseline keep).
H36M32_TO_17 = np.array([0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27])


def pot_groups(skeleton: Skeleton = H36M17) -> np.ndarray:
    """Group index 0..4 of every joint for POT's group position embeddings G (Eq. 5, Fig. 3).

    phi(i) = D(i, root), the hop distance to the pelvis. On H36M-17 it takes six values (0..5) while the
    paper has five groups G in R^{5xC}; the pelvis has no error under root-relative evaluation, so we put
    it in the group of its neighbours: group = max(D(i, root), 1) - 1. Groups 4 and 5 of the paper's
    Fig. 4 (indices 3, 4 here) are then head/elbows and wrists, its "difficult joints".
    """
    return np.maximum(skeleton.hop_distance()[0], 1) - 1


POT_GROUPS = pot_groups(H36M17)
POT_GROUP_NAMES = ("1: pelvis+hips+spine", "2: knees+thorax", "3: ankles+neck+shoulders",
                   "4: head+elbows", "5: wrists")

# MixSTE's WMPJPE weights (Sec. 4.1). The groups follow the authors' released code: torso (pelvis, hips,
# spine, thorax, neck) 1.0; head and shoulders 1.5; knees and ankles 2.5; elbows and wrists 4.0.
MIXSTE_JOINT_WEIGHTS = np.array(
    [1.0, 1.0, 2.5, 2.5, 1.0, 2.5, 2.5, 1.0, 1.0, 1.0, 1.5, 1.5, 4.0, 4.0, 1.5, 4.0, 4.0], dtype=np.float32
)


def flip_poses(poses: np.ndarray, skeleton: Skeleton = H36M17) -> np.ndarray:
    """Mirror poses (..., J, D) about the x = 0 plane: negate x and swap left/right joints."""
    out = poses[..., skeleton.flip_permutation, :].copy()
    out[..., 0] *= -1
    return out
