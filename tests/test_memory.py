"""Memory fixes from benchmarks/memory.py: the metrics in pieces and the mirrored copy of Views held once.

They must not change a number: the metrics computed CHUNK frames at a time equal one whole-array call bit
for bit, and :meth:`Views.doubled` holds the same rows as the plain arrays followed by their mirror images.
"""

from __future__ import annotations

import numpy as np

from poselift import metrics as m
from poselift.data.windows import Batches, Views, frame_windows
from poselift.skeleton import H36M17, flip_poses


def _poses(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 300.0, (n, 17, 3)).astype(np.float32)


def test_metrics_in_pieces_equal_one_call(monkeypatch):
    gt, pred = _poses(103, 0), _poses(103, 1)
    actions = np.repeat(["Walking 1", "Eating", "Sitting 2"], [40, 40, 23]).tolist()
    sequences = np.repeat([0, 1, 2, 3], [30, 30, 30, 13]).tolist()
    whole = m.evaluate(pred, gt, actions=actions, sequences=sequences)
    errors = {f.__name__: f(pred, gt) for f in (m.joint_errors, m.procrustes_joint_errors, m.scale_joint_errors)}
    velocity = m.velocity_joint_errors(pred, gt, sequences)[0]
    monkeypatch.setattr(m, "CHUNK", 10)  # 11 pieces, the last one short
    assert m.evaluate(pred, gt, actions=actions, sequences=sequences) == whole
    for f in (m.joint_errors, m.procrustes_joint_errors, m.scale_joint_errors):
        np.testing.assert_array_equal(f(pred, gt), errors[f.__name__])
    np.testing.assert_array_equal(m.velocity_joint_errors(pred, gt, sequences)[0], velocity)
    assert m.joint_errors(pred, gt, "gt-only").shape == (103, 17)


def _views(n: int = 50) -> Views:
    rng = np.random.default_rng(3)
    return Views(inputs_2d=rng.normal(size=(n, 17, 2)).astype(np.float32),
                 scores=rng.random((n, 17), dtype=np.float32), targets_3d=_poses(n, 4),
                 trajectory=rng.normal(size=(n, 3)).astype(np.float32), valid=np.ones(n, dtype=bool),
                 view=np.zeros(n, dtype=np.int64), action=np.zeros(n, dtype=np.int64),
                 frame=np.arange(n, dtype=np.int64), starts=np.array([0]), ends=np.array([n]),
                 keys=[("S1/Walking", "cam")], actions=("Walking",))


def test_doubled_holds_the_plain_rows_once_and_their_mirrors():
    views = _views()
    plain = {k: v.copy() for k, v in views.poses().items()}
    doubled = views.doubled()
    n = len(views)
    mirror = {"inputs_2d": flip_poses(plain["inputs_2d"]), "targets_3d": flip_poses(plain["targets_3d"]),
              "scores": plain["scores"][:, H36M17.flip_permutation],
              "trajectory": plain["trajectory"] * np.array([-1, 1, 1], dtype=np.float32)}
    for k, a in plain.items():
        assert doubled[k].dtype == a.dtype and doubled[k].shape == (2 * n,) + a.shape[1:]
        np.testing.assert_array_equal(doubled[k][:n], a)
        np.testing.assert_array_equal(doubled[k][n:], mirror[k])
        np.testing.assert_array_equal(getattr(views, k), a)  # the view's own arrays keep their values...
        assert np.shares_memory(getattr(views, k), doubled[k])  # ...in the first half, not a second copy
    assert views.doubled() is doubled


def test_batches_after_doubling_match_flipped_gathers():
    views = _views()
    plain = {k: v.copy() for k, v in views.poses().items()}
    batches = Batches(views, frame_windows(views, 3), batch_size=16, seed=0, flip="random")
    for batch in batches:
        rows = np.clip(batch["window"][:, None] + np.arange(3) - 1, 0, len(views) - 1)
        expect = plain["inputs_2d"][rows]
        expect[batch["flipped"]] = flip_poses(expect[batch["flipped"]])
        np.testing.assert_array_equal(batch["inputs_2d"], expect)
        target = plain["targets_3d"][batch["window"]]
        target[batch["flipped"]] = flip_poses(target[batch["flipped"]])
        np.testing.assert_array_equal(batch["targets_3d"], target)
