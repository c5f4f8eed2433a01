"""Windows and batches for the lifting models: 2D keypoint windows in, camera-frame 3D poses out.

Three steps:

1. :func:`build_views` concatenates every (sequence, camera) *view* of a prepared dataset into flat arrays
   (:class:`Views`): screen-normalised 2D inputs and their scores, root-relative camera-frame 3D targets
   (pelvis at exactly 0, mm), the root's camera-frame position (trajectory), and per-frame view, action
   and frame ids. View ``v`` occupies rows ``starts[v]:ends[v]``.
2. :func:`frame_windows` (seq2frame) and :func:`sequence_windows` (seq2seq) describe windows as a first
   row, a length and the bounds of their view (:class:`Windows`); a batch's row indices are ONE array
   ``first[:, None] + arange(T)`` clamped to each window's view, so frames past a view's ends repeat the
   edge frame (VideoPose3D's ``np.pad(..., 'edge')``) and no window ever reads another view.
3. :class:`Batches` shuffles windows (seeded, a new order per epoch), gathers them with array indexing and
   mirrors them horizontally (:func:`poselift.skeleton.flip_poses`): ``flip="both"`` puts every window in
   each epoch twice, plain and mirrored, in one shuffled order (2N samples an epoch: the official
   VideoPose3D / PoseFormer / MixSTE ``ChunkedGenerator`` with ``augment``); ``"random"`` mirrors each
   window with probability 1/2 (N samples an epoch); ``"all"`` mirrors every window.
   :func:`flip_average` is test-time flip averaging.

The horizontal flip is x -> -x with left/right joints swapped, on the normalised 2D (whose x = 0 is the
image centre) and on camera-frame 3D (a mirror about the camera's y-z plane). The two agree exactly when
the principal point is the image centre and there is no distortion; otherwise the flip is an augmentation
that is consistent only approximately, as in VideoPose3D.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from poselift.actions import merge_action
from poselift.camera import normalize_screen_coordinates
from poselift.data.detections import Detections
from poselift.data.prepared import PreparedDataset
from poselift.errors import InputError
from poselift.skeleton import H36M17, flip_poses
from poselift.training.sampling import batch_count, rank_part

ROOT = 0  # the pelvis, joint 0 of H36M17
FLIPS = (None, "both", "random", "all")  # Batches' flip modes
_POSE_KEYS = ("inputs_2d", "scores", "targets_3d", "trajectory")


@dataclass
class Views:
    """Every (sequence, camera) view of one selection, concatenated frame by frame (N rows in all)."""

    inputs_2d: np.ndarray  # (N, 17, 2) float32, normalised screen coordinates of the view's camera
    scores: np.ndarray  # (N, 17) float32 detector confidences (1 for ground-truth 2D)
    targets_3d: np.ndarray  # (N, 17, 3) float32, camera frame, root-relative, mm
    trajectory: np.ndarray  # (N, 3) float32, the root's camera-frame position, mm
    valid: np.ndarray  # (N,) bool, frames with a valid 3D annotation
    view: np.ndarray  # (N,) int64 view id
    action: np.ndarray  # (N,) int64 index into ``actions`` (merged labels)
    frame: np.ndarray  # (N,) int64 frame index within the sequence
    starts: np.ndarray  # (V,) int64 first row of each view
    ends: np.ndarray  # (V,) int64 one past the last row of each view
    keys: list[tuple[str, str]]  # (sequence key "subject/name", camera name) per view
    actions: tuple[str, ...]  # merged action labels, sorted
    _doubled: dict | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.inputs_2d.shape[0])

    @property
    def num_views(self) -> int:
        return len(self.keys)

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts

    def poses(self) -> dict[str, np.ndarray]:
        """The arrays a batch gathers from: inputs_2d, scores, targets_3d, trajectory."""
        return {k: getattr(self, k) for k in _POSE_KEYS}

    def doubled(self) -> dict[str, np.ndarray]:
        """:meth:`poses` with their mirror images appended (2N rows; row r + N = row r flipped).

        Built on first use and kept (~0.4 kB more per frame). The plain rows are moved into the first half
        and the view's own arrays become views of it, so the plain rows are held once, not twice, and the
        mirror is written straight into the second half (no temporary copy): building it adds one array
        of the views at most to the peak (on the full open benchmark's training split 0.4 GB, not 1.2 GB).
        """
        if self._doubled is None:
            n, perm, doubled = len(self), H36M17.flip_permutation, {}
            for k in _POSE_KEYS:
                a = getattr(self, k)
                buf = np.empty((2 * n,) + a.shape[1:], dtype=a.dtype)
                buf[:n] = a
                mirror = buf[n:]
                if k == "trajectory":
                    mirror[...] = a
                else:  # flip_poses / the scores' left-right swap, written in place
                    np.take(a, perm, axis=1, out=mirror)
                if k != "scores":
                    mirror[..., 0] *= -1
                setattr(self, k, buf[:n])
                doubled[k] = buf
            self._doubled = doubled
        return self._doubled


def build_views(data: PreparedDataset, detections: Detections | None = None, split: str | None = None,
                subjects=None, detections_path: str | os.PathLike = "detections",
                prepared_path: str | os.PathLike | None = None) -> Views:
    """Flatten the views of the sequences in ``split`` (and ``subjects``) into one :class:`Views`.

    2D comes from ``detections`` (pixels), or from the prepared file's own ground-truth 2D with score 1
    when ``detections`` is None. Missing sequences, other camera lists or other frame counts in the
    detections raise :class:`InputError` naming ``detections_path``; an empty selection names
    ``prepared_path`` (default: the dataset's name). Build it once per (dataset, detections, split)
    and reuse it: everything later only indexes these arrays.
    """
    sequences = data.select(split, subjects)
    if not sequences:
        who = f" for subjects {list(subjects)}" if subjects else ""
        raise InputError(prepared_path or data.dataset, f"no sequences in split {split!r}{who}")
    actions = tuple(sorted({merge_action(s.action) for s in sequences}))
    # The output arrays are allocated once and filled view by view (no per-view pieces concatenated at the
    # end, which held the split twice and left its pieces' freed memory in the process: ~0.3 GB of the
    # full open benchmark's training split). Each view's float64 intermediates are one view's size.
    n, joints = sum(s.num_frames * len(s.cameras) for s in sequences), sequences[0].positions_3d.shape[1]
    out = {"inputs_2d": np.empty((n, joints, 2), np.float32), "scores": np.empty((n, joints), np.float32),
           "targets_3d": np.empty((n, joints, 3), np.float32), "trajectory": np.empty((n, 3), np.float32),
           "valid": np.empty(n, bool), "view": np.empty(n, np.int64), "action": np.empty(n, np.int64),
           "frame": np.empty(n, np.int64)}
    keys: list[tuple[str, str]] = []
    lengths: list[int] = []
    row = 0
    for s in sequences:
        keypoints, scores = _view_2d(s, detections, detections_path)
        valid = s.valid if s.valid is not None else np.ones(s.num_frames, dtype=bool)
        action = actions.index(merge_action(s.action))
        for c, name in enumerate(s.cameras):
            cam = data.camera(s, c)
            pose = cam.world_to_camera(s.positions_3d.astype(np.float64))
            root = pose[:, ROOT:ROOT + 1]
            v = len(keys)
            keys.append((s.key, name))
            rows = slice(row, row + s.num_frames)
            out["inputs_2d"][rows] = normalize_screen_coordinates(keypoints[c].astype(np.float64), cam.width,
                                                                  cam.height)  # cast to float32 on assignment
            out["scores"][rows] = scores[c]
            out["targets_3d"][rows] = pose - root  # root row: x - x = 0 exactly
            out["trajectory"][rows] = root[:, 0]
            out["valid"][rows] = valid
            out["view"][rows] = v
            out["action"][rows] = action
            out["frame"][rows] = np.arange(s.num_frames)
            lengths.append(s.num_frames)
            row += s.num_frames
    lengths_ = np.array(lengths, dtype=np.int64)
    ends = np.cumsum(lengths_)
    return Views(**out, starts=ends - lengths_, ends=ends, keys=keys, actions=actions)


def _view_2d(s, detections: Detections | None, path) -> tuple[np.ndarray, np.ndarray]:
    """(C, F, 17, 2) pixels and (C, F, 17) scores of one sequence, checked against the prepared data."""
    if detections is None:
        return s.positions_2d, np.ones(s.positions_2d.shape[:3], dtype=np.float32)
    if s.key not in detections.keypoints:
        raise InputError(path, f"no detections for sequence {s.key}")
    keypoints, scores = detections.keypoints[s.key], detections.scores[s.key]
    if list(detections.cameras[s.key]) != list(s.cameras):
        raise InputError(path, f"sequence {s.key}: cameras {list(detections.cameras[s.key])} differ from the "
                               f"prepared dataset's {list(s.cameras)}")
    if keypoints.shape[1] != s.num_frames:
        raise InputError(path, f"sequence {s.key}: {keypoints.shape[1]} keypoint frames per camera but "
                               f"{s.num_frames} 3D frames in the prepared dataset")
    return keypoints, scores


@dataclass
class Windows:
    """W windows of T rows of a :class:`Views`; row j of window w is ``clip(first[w] + j, lo[w], hi[w] - 1)``.

    ``kind`` "frame" (seq2frame): the target is the centre row ``first + (T - 1) // 2``.
    ``kind`` "sequence" (seq2seq): the target is every row of the window. Row j *belongs* to window w when
    ``own[w] <= first[w] + j < hi[w]``; over all windows every frame belongs to exactly one (see :meth:`stitch`).
    """

    kind: str
    length: int
    first: np.ndarray  # (W,) int64 unclamped first row
    lo: np.ndarray  # (W,) int64 first row of the window's view
    hi: np.ndarray  # (W,) int64 one past the last row of the window's view
    own: np.ndarray  # (W,) int64 first row this window answers for when stitching

    def __len__(self) -> int:
        return int(self.first.shape[0])

    def rows(self, sel=slice(None)) -> np.ndarray:
        """(B, T) row indices of windows ``sel``, clamped to their views (edge replication)."""
        idx = self.first[sel, None] + np.arange(self.length)
        return np.clip(idx, self.lo[sel, None], self.hi[sel, None] - 1)

    def target_rows(self, sel=slice(None)) -> np.ndarray:
        """(B,) centre rows (seq2frame) or (B, T) rows (seq2seq) whose 3D the windows predict."""
        if self.kind == "frame":
            return self.first[sel] + (self.length - 1) // 2
        return self.rows(sel)

    def belongs(self, sel=slice(None)) -> np.ndarray:
        """(B, T) bool for seq2seq (B,) for seq2frame: outputs that are this window's frames (see class doc)."""
        if self.kind == "frame":
            return np.ones(len(self.first[sel]), dtype=bool)
        idx = self.first[sel, None] + np.arange(self.length)
        return (idx >= self.own[sel, None]) & (idx < self.hi[sel, None])

    def stitch(self, outputs: np.ndarray, num_rows: int) -> np.ndarray:
        """Per-window outputs ((W, ...) or (W, T, ...), window order) -> (num_rows, ...) in row order.

        Rows no window answers for (frames not used as seq2frame centres) are NaN.
        """
        outputs = np.asarray(outputs)
        tail = outputs.shape[1:] if self.kind == "frame" else outputs.shape[2:]
        out = np.full((num_rows,) + tail, np.nan, dtype=np.result_type(outputs.dtype, np.float32))
        keep = self.belongs()
        out[self.target_rows()[keep]] = outputs[keep]
        return out


def frame_windows(views: Views, receptive_field: int, centres: np.ndarray | None = None) -> Windows:
    """seq2frame windows: one per centre row (default: every valid frame), T = ``receptive_field`` (odd).

    The input is frames t - (T-1)/2 .. t + (T-1)/2 of the centre's view, edge-replicated past its ends.
    """
    if receptive_field < 1 or receptive_field % 2 == 0:
        raise ValueError(f"receptive field must be a positive odd number, got {receptive_field}")
    centres = np.flatnonzero(views.valid) if centres is None else np.asarray(centres, dtype=np.int64)
    view = views.view[centres]
    return Windows("frame", receptive_field, centres - (receptive_field - 1) // 2, views.starts[view],
                   views.ends[view], centres.copy())


def sequence_windows(views: Views, length: int) -> Windows:
    """seq2seq windows of ``length`` T frames, stride T inside every view (MixSTE Sec. 4.1: no overlap).

    A view of L frames gets ceil(L / T) chunks starting at its start + k T. The last one, when L is not
    a multiple of T, is moved back to end at the view's end, so it overlaps its predecessor by
    ceil(L/T) T - L frames, which belong to the predecessor when stitching. A view shorter than T is one
    chunk edge-padded at the end. (MixSTE/VideoPose3D pad the sequence symmetrically instead; shifting
    keeps every frame real when L >= T.) Training and evaluation use the same windows.
    """
    if length < 1:
        raise ValueError(f"sequence length must be positive, got {length}")
    counts = -(-views.lengths // length)  # ceil(L / T), >= 1 for a non-empty view
    view = np.repeat(np.arange(views.num_views), counts)
    k = np.arange(len(view)) - np.repeat(np.cumsum(counts) - counts, counts)  # chunk number in its view
    lo, hi = views.starts[view], views.ends[view]
    own = lo + k * length
    first = np.maximum(np.minimum(own, hi - length), lo)
    return Windows("sequence", length, first, lo, hi, own)


class Batches:
    """Batches of windows: shuffled with a per-epoch seed, gathered with array indexing, optionally flipped.

    Each batch is a dict of arrays (torch tensors with ``as_torch=True``):

    - ``inputs_2d`` (B, T, 17, 2), ``scores`` (B, T, 17)
    - ``targets_3d`` (B, 17, 3) and ``trajectory`` (B, 3) for seq2frame; (B, T, 17, 3) and (B, T, 3) for
      seq2seq, with ``mask`` (B, T): real, valid frames (False on edge padding and invalid frames)
    - ``view``, ``action`` (B,) ids, ``frame`` (B,) or (B, T), ``window`` (B,) window indices,
      ``flipped`` (B,) bool
    - with ``frame_targets`` (seq2frame only): ``targets_3d_frames`` (B, T, 17, 3), the 3D of every input
      row (mirrored with its window), and ``mask_frames`` (B, T) of rows with a valid 3D annotation: for
      losses on every frame of a centre-frame model's window (STA's L_s, Eq. 13)

    ``flip``: None (never mirrored); "both" (every window twice an epoch, plain and mirrored, the two copies
    shuffled independently into one order of 2N samples: the official VideoPose3D/PoseFormer/MixSTE
    training generators); "random" (each window once, mirrored with probability 1/2: N samples an epoch);
    "all" (every window mirrored). ``per_epoch``: draw only this many windows per epoch (the first of that
    epoch's shuffled order, so every window is still seen across epochs; with "both" each drawn window
    comes twice, 2 x per_epoch samples); None = all. Iterating again starts the next epoch (new order and
    flips, reproducible from ``seed``). ``len()`` is the number of batches an epoch.

    ``rank``/``world`` (set by the training loop when several processes train): each batch is the global
    batch's contiguous ``rank``-th part of ``world`` (:func:`poselift.training.sampling.rank_part`), with the
    flips drawn for the whole batch, so the ranks together see the one-process batches.
    """

    def __init__(self, views: Views, windows: Windows, batch_size: int = 1024, shuffle: bool = True,
                 seed: int = 0, flip: str | None = None, drop_last: bool = False, as_torch: bool = False,
                 device=None, per_epoch: int | None = None, frame_targets: bool = False):
        if flip not in FLIPS:
            raise ValueError(f"flip must be None, 'both', 'random' or 'all', got {flip!r}")
        self.views, self.windows = views, windows
        self.batch_size, self.shuffle, self.seed, self.flip = int(batch_size), shuffle, seed, flip
        self.drop_last, self.as_torch, self.device = drop_last, as_torch, device
        self.per_epoch = None if per_epoch is None else int(per_epoch)
        self.frame_targets = bool(frame_targets)
        if self.per_epoch is not None and (self.per_epoch < 1 or not shuffle):
            raise ValueError("per_epoch needs shuffle=True and a positive count")
        self.epoch = 0
        self.rank, self.world = 0, 1  # set by the training loop: this process's part of each batch
        self._rng = np.random.default_rng([seed, 1 << 32])  # flips of batches asked for one by one

    def __len__(self) -> int:
        n = self._count()
        return n // self.batch_size if self.drop_last else batch_count(n, self.batch_size, self.world)

    def _count(self) -> int:
        """Samples an epoch: windows drawn (all or ``per_epoch``), twice each with ``flip="both"``."""
        n = len(self.windows)
        n = n if self.per_epoch is None else min(n, self.per_epoch)
        return 2 * n if self.flip == "both" else n

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        n = len(self.windows)
        if self.flip == "both":
            drawn = rng.permutation(n)[:self._count() // 2] if self.shuffle else np.arange(n)
            order = np.concatenate([drawn, drawn])  # sample s < k: plain copy, s >= k: mirrored copy
            mirrored = np.arange(len(order)) >= len(drawn)
            if self.shuffle:
                mix = rng.permutation(len(order))
                order, mirrored = order[mix], mirrored[mix]
            for b in range(len(self)):
                part = rank_part(np.arange(b * self.batch_size, min((b + 1) * self.batch_size, len(order))),
                                 self.rank, self.world)
                yield self.batch(order[part], mirrored[part])
            return
        order = rng.permutation(n)[:self._count()] if self.shuffle else np.arange(n)
        for b in range(len(self)):
            sel = order[b * self.batch_size:(b + 1) * self.batch_size]
            flips = self._flips(len(sel), rng)  # drawn for the whole batch: the same on every rank
            yield self.batch(rank_part(sel, self.rank, self.world), rank_part(flips, self.rank, self.world))

    def _flips(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Mirror flags of ``n`` windows asked for outside an epoch ("both" draws like "random" there)."""
        if self.flip in ("random", "both"):
            return rng.random(n) < 0.5
        return np.full(n, self.flip == "all")

    def batch(self, sel: np.ndarray, flips: np.ndarray | None = None) -> dict:
        """Gather windows ``sel``, mirrored where ``flips`` is True (default: drawn per ``flip``).

        Mirrored rows are gathered from :meth:`Views.doubled` (row r + N is row r flipped) in the same
        single gather, which is ~6x faster than flipping a gathered batch's joints.
        """
        views, w = self.views, self.windows
        rows, target = w.rows(sel), w.target_rows(sel)
        flips = self._flips(len(rows), self._rng) if flips is None else np.asarray(flips, dtype=bool)
        src = views.doubled() if flips.any() else views.poses()
        shift = np.where(flips, len(views), 0)
        shift_target = shift if w.kind == "frame" else shift[:, None]
        out = {"inputs_2d": src["inputs_2d"][rows + shift[:, None]],
               "scores": src["scores"][rows + shift[:, None]],
               "targets_3d": src["targets_3d"][target + shift_target],
               "trajectory": src["trajectory"][target + shift_target]}
        first_row = target if w.kind == "frame" else rows[:, 0]
        out.update(view=views.view[first_row], action=views.action[first_row], frame=views.frame[target],
                   window=np.asarray(sel, dtype=np.int64), flipped=flips)
        if w.kind == "sequence":
            out["mask"] = (w.first[sel, None] + np.arange(w.length) < w.hi[sel, None]) & views.valid[rows]
        elif self.frame_targets:  # the 3D of every input row (edge rows repeat their edge frame, as the 2D)
            out["targets_3d_frames"] = src["targets_3d"][rows + shift[:, None]]
            out["mask_frames"] = views.valid[rows]
        if self.as_torch:
            import torch
            out = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in out.items()}
            if self.device is not None:
                out = {k: t.to(self.device, non_blocking=True) for k, t in out.items()}
        return out


def flip(poses):
    """:func:`poselift.skeleton.flip_poses` for numpy arrays or torch tensors (..., 17, D)."""
    if isinstance(poses, np.ndarray):
        return flip_poses(poses)
    import torch
    perm = torch.as_tensor(H36M17.flip_permutation, device=poses.device)
    sign = torch.ones(poses.shape[-1], dtype=poses.dtype, device=poses.device)
    sign[0] = -1
    return poses.index_select(-2, perm) * sign


def flip_average(model_fn: Callable, inputs, scores=None):
    """Test-time flip averaging: (model(x) + flip(model(flip(x)))) / 2 (VideoPose3D, MixSTE evaluation).

    With ``scores`` (B, T, 17) the model is called as ``model_fn(inputs, scores)`` and the scores are
    left/right swapped for the flipped pass.
    """
    if scores is None:
        return (model_fn(inputs) + flip(model_fn(flip(inputs)))) / 2
    perm = H36M17.flip_permutation
    if not isinstance(scores, np.ndarray):
        import torch
        perm = torch.as_tensor(perm, device=scores.device)
    return (model_fn(inputs, scores) + flip(model_fn(flip(inputs), scores[..., perm]))) / 2
