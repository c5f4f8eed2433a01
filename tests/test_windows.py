"""Windows, flips, normalisation and batches for the lifting models (poselift.data.windows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poselift.camera import Camera, normalize_screen_coordinates
from poselift.data.detections import Detections
from poselift.data.prepared import PreparedDataset, Sequence
from poselift.data.windows import Batches, build_views, flip, flip_average, frame_windows, sequence_windows
from poselift.errors import InputError
from poselift.skeleton import H36M17, flip_poses

LENGTHS = {"S1/Walking 1": 7, "S1/Walking 2": 12, "S1/Eating 1": 3}  # train views; one shorter than T
WIDTHS = {"wide": (1600, 900), "square": (1000, 1000)}


def _camera(name, angle):
    """Camera looking at the origin from 4 m, principal point at the image centre, no distortion."""
    w, h = WIDTHS[name]
    c, s = np.cos(angle), np.sin(angle)
    R = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # rotation about the vertical (y) axis
    return Camera(R=R, T=-4000 * R[2], f=[1100.0, 1150.0], c=[w / 2, h / 2], width=w, height=h, name=name)


def _dataset(seed=0):
    """Three training sequences and one test sequence seen by two cameras of different sizes; detections
    are the exact projections, so 2D and 3D are geometrically consistent."""
    rng = np.random.default_rng(seed)
    cams = {"wide": _camera("wide", 0.3), "square": _camera("square", -1.1)}
    seqs = []
    for key, n in {**LENGTHS, "S9/Walking 1": 5}.items():
        subject, name = key.split("/")
        pose = (rng.normal(0, 250, (n, 17, 3)) + [0, 0, 900]).astype(np.float32)
        seqs.append(Sequence(subject, name, action=name, split="test" if subject == "S9" else "train",
                             rig="rig", cameras=list(cams), positions_3d=pose,
                             positions_2d=np.stack([c.world_to_pixels(pose) for c in cams.values()])))
    data = PreparedDataset("toy", 50.0, {"rig": cams}, seqs)
    det = Detections("gt", "toy", "", keypoints={s.key: s.positions_2d.copy() for s in seqs},
                     scores={s.key: rng.random(s.positions_2d.shape[:3]).astype(np.float32) for s in seqs},
                     cameras={s.key: list(s.cameras) for s in seqs})
    return data, det


@pytest.fixture(scope="module")
def toy():
    data, det = _dataset()
    return data, det, build_views(data, det, split="train")


def _view(views, key, camera):
    v = views.keys.index((key, camera))
    return v, int(views.starts[v])


# --- flat views: normalisation, root-relative targets, validation -------------------------------------------

def test_views_concatenate_every_sequence_camera_pair(toy):
    data, det, views = toy
    assert views.num_views == 6 and len(views) == 2 * sum(LENGTHS.values())
    assert np.array_equal(views.ends - views.starts, np.repeat(list(LENGTHS.values()), 2))
    assert views.actions == ("Eating", "Walking")  # merged: "Walking 1" and "Walking 2" are one action
    v, s = _view(views, "S1/Walking 2", "square")
    assert np.array_equal(views.frame[s:s + 12], np.arange(12)) and set(views.view[s:s + 12]) == {v}
    assert set(views.action[s:s + 12]) == {1}


def test_screen_normalisation_uses_each_cameras_own_size(toy):
    data, det, _ = toy
    det = Detections(**{**det.__dict__, "keypoints": {k: v.copy() for k, v in det.keypoints.items()}})
    for c, (w, h) in enumerate(WIDTHS.values()):
        det.keypoints["S1/Walking 1"][c, 2, 5] = [w, h]  # bottom-right corner -> (1, h / w)
        det.keypoints["S1/Walking 1"][c, 2, 6] = [w / 2, h / 2]  # image centre -> (0, 0)
    views = build_views(data, det, split="train")
    for name, (w, h) in WIDTHS.items():
        _, s = _view(views, "S1/Walking 1", name)
        np.testing.assert_allclose(views.inputs_2d[s + 2, 5], [1.0, h / w], atol=1e-6)
        np.testing.assert_allclose(views.inputs_2d[s + 2, 6], [0.0, 0.0], atol=1e-6)
    assert not np.isclose(900 / 1600, 1000 / 1000)  # the two cameras really differ


def test_without_detections_the_prepared_ground_truth_2d_is_used(toy):
    data, det, _ = toy
    views = build_views(data, None, split="test")
    seq = data.sequences[-1]
    assert views.keys == [(seq.key, "wide"), (seq.key, "square")] and np.all(views.scores == 1)
    np.testing.assert_allclose(views.inputs_2d[:5], normalize_screen_coordinates(seq.positions_2d[0], 1600, 900),
                               atol=1e-6)


def test_targets_are_root_relative_camera_frame_mm(toy):
    data, det, views = toy
    assert np.all(views.targets_3d[:, 0] == 0.0)  # exactly, not approximately
    seq = data.sequences[1]
    for c, name in enumerate(seq.cameras):
        _, s = _view(views, seq.key, name)
        cam = data.camera(seq, c)
        expected = cam.world_to_camera(seq.positions_3d.astype(np.float64))
        rebuilt = views.targets_3d[s:s + seq.num_frames] + views.trajectory[s:s + seq.num_frames, None]
        np.testing.assert_allclose(rebuilt, expected, atol=0.05)
        np.testing.assert_allclose(views.trajectory[s:s + seq.num_frames], expected[:, 0], atol=0.01)


def test_frame_count_mismatch_is_an_input_error(toy):
    data, det, _ = toy
    short = {**det.keypoints, "S1/Walking 2": det.keypoints["S1/Walking 2"][:, :-1]}
    bad = Detections(**{**det.__dict__, "keypoints": short})
    with pytest.raises(InputError, match=r"^dets\.h5: sequence S1/Walking 2: 11 keypoint frames .* 12 3D"):
        build_views(data, bad, split="train", detections_path="dets.h5")


def test_missing_sequence_or_other_cameras_is_an_input_error(toy):
    data, det, _ = toy
    missing = Detections(**{**det.__dict__, "keypoints": {k: v for k, v in det.keypoints.items()
                                                          if k != "S1/Eating 1"}})
    with pytest.raises(InputError, match="no detections for sequence S1/Eating 1"):
        build_views(data, missing, split="train", detections_path="dets.h5")
    swapped = Detections(**{**det.__dict__, "cameras": {k: v[::-1] for k, v in det.cameras.items()}})
    with pytest.raises(InputError, match="cameras"):
        build_views(data, swapped, split="train", detections_path="dets.h5")
    with pytest.raises(InputError, match="no sequences in split 'validation'"):
        build_views(data, det, split="validation")


def test_invalid_frames_are_not_centres_and_are_masked():
    data, det = _dataset()
    seq = data.sequences[0]
    seq.valid = np.ones(seq.num_frames, dtype=bool)
    seq.valid[[0, 4]] = False
    views = build_views(data, det, split="train", subjects=["S1"])
    w = frame_windows(views, 3)
    assert len(w) == len(views) - 2 * 2  # two invalid frames in each of the two cameras
    assert not np.isin(views.starts[:2, None] + [0, 4], w.target_rows()).any()
    batch = Batches(views, sequence_windows(views, 5), shuffle=False).batch(np.array([0]))
    assert np.array_equal(batch["mask"][0], [False, True, True, True, False])


# --- seq2frame windows ----------------------------------------------------------------------------------

def test_seq2frame_window_is_the_hand_sliced_frames_with_edge_replication(toy):
    data, det, views = toy
    _, s = _view(views, "S1/Walking 1", "wide")  # 7 frames
    windows = frame_windows(views, 5)
    batches = Batches(views, windows, shuffle=False)
    raw = normalize_screen_coordinates(det.keypoints["S1/Walking 1"][0], 1600, 900)
    for centre, frames in {0: [0, 0, 0, 1, 2], 1: [0, 0, 1, 2, 3], 3: [1, 2, 3, 4, 5], 6: [4, 5, 6, 6, 6]}.items():
        w = int(np.flatnonzero(windows.target_rows() == s + centre)[0])
        batch = batches.batch(np.array([w]))
        np.testing.assert_allclose(batch["inputs_2d"][0], raw[frames], atol=1e-6)
        assert np.array_equal(batch["scores"][0], det.scores["S1/Walking 1"][0][frames])
        assert np.array_equal(batch["targets_3d"][0], views.targets_3d[s + centre])
        assert batch["frame"][0] == centre and batch["targets_3d"].shape == (1, 17, 3)
    # a receptive field longer than the whole view: replicate both ends
    rows = frame_windows(views, 21, centres=np.array([s + 2])).rows()[0]
    assert np.array_equal(rows - s, [0] * 8 + [0, 1, 2, 3, 4, 5, 6] + [6] * 6)


def test_windows_never_cross_view_boundaries(toy):
    _, _, views = toy
    for T in (1, 9, 27):
        w = frame_windows(views, T)
        rows = w.rows()
        assert np.array_equal(views.view[rows], np.repeat(views.view[w.target_rows()][:, None], T, axis=1))
    for T in (4, 5, 13):
        rows = sequence_windows(views, T).rows()
        assert np.all(views.view[rows] == views.view[rows[:, :1]])


def test_even_receptive_field_is_refused(toy):
    with pytest.raises(ValueError, match="odd"):
        frame_windows(toy[2], 4)


# --- seq2seq windows and stitching ------------------------------------------------------------------------

def test_seq2seq_chunks_have_stride_T_and_cover_every_frame_once(toy):
    _, _, views = toy
    T = 5
    w = sequence_windows(views, T)
    _, s = _view(views, "S1/Walking 2", "wide")  # 12 frames -> chunks at 0, 5 and 7 (shifted from 10)
    mine = w.lo == s
    assert np.array_equal(w.first[mine] - s, [0, 5, 7]) and np.array_equal(w.own[mine] - s, [0, 5, 10])
    for v in range(views.num_views):  # stride T, last chunk ends at the view's end
        first = w.first[w.lo == views.starts[v]]
        L = int(views.lengths[v])
        if L >= T:
            assert np.all(np.diff(first)[:-1] == T) and first[-1] + T == views.ends[v]
    counts = np.bincount(w.target_rows()[w.belongs()], minlength=len(views))
    assert np.all(counts == 1)
    # every frame appears in some chunk; only shifted last chunks repeat frames
    appear = np.bincount(w.rows().ravel(), minlength=len(views))
    assert np.all(appear >= 1)


def test_seq2seq_short_view_is_edge_padded_at_the_end(toy):
    _, _, views = toy
    _, s = _view(views, "S1/Eating 1", "square")  # 3 frames
    w = sequence_windows(views, 5)
    i = int(np.flatnonzero(w.lo == s)[0])
    assert np.array_equal(w.rows()[i] - s, [0, 1, 2, 2, 2])
    batch = Batches(views, w, shuffle=False).batch(np.array([i]))
    assert np.array_equal(batch["mask"][0], [True, True, True, False, False])
    assert batch["targets_3d"].shape == (1, 5, 17, 3)
    assert np.array_equal(batch["targets_3d"][0, 4], views.targets_3d[s + 2])
    assert np.array_equal(batch["frame"][0], [0, 1, 2, 2, 2])


def test_seq2seq_outputs_stitch_back_to_frame_order(toy):
    _, _, views = toy
    pieces = sequence_windows(views, 5)
    rows = pieces.rows()
    outputs = views.targets_3d[rows] + views.frame[rows][..., None, None]  # a "model" of its inputs
    stitched = pieces.stitch(outputs, len(views))
    assert stitched.shape == views.targets_3d.shape  # output length = input length, view by view
    np.testing.assert_array_equal(stitched, views.targets_3d + views.frame[:, None, None])


def test_seq2frame_stitch_gives_per_frame_order(toy):
    _, _, views = toy
    w = frame_windows(views, 9)
    order = np.random.default_rng(3).permutation(len(w))
    outputs = np.empty((len(w), 1))
    outputs[order] = views.frame[w.target_rows()[order], None]
    assert np.array_equal(w.stitch(outputs, len(views))[:, 0], views.frame)


# --- flips ---------------------------------------------------------------------------------------------

def test_flip_twice_is_identity(toy):
    _, _, views = toy
    x = views.inputs_2d[:20]
    assert np.array_equal(flip(flip(x)), x) and not np.allclose(flip(x), x)
    t = torch.from_numpy(views.targets_3d[:20])
    assert torch.equal(flip(flip(t)), t)
    assert torch.equal(flip(t), torch.from_numpy(flip_poses(views.targets_3d[:20])))
    w = sequence_windows(views, 4)
    b = Batches(views, w, shuffle=False)
    sel = np.arange(len(w))
    plain, flipped = b.batch(sel), b.batch(sel, np.ones(len(sel), bool))
    for key in ("inputs_2d", "targets_3d"):
        assert np.array_equal(flip_poses(flipped[key]), plain[key])
    assert np.array_equal(flipped["scores"][..., H36M17.flip_permutation], plain["scores"])
    assert np.array_equal(flipped["trajectory"] * [-1, 1, 1], plain["trajectory"])


def test_flip_of_a_mirror_symmetric_pose_is_the_pose():
    rng = np.random.default_rng(1)
    pose = np.zeros((17, 3))
    centre = [0, 7, 8, 9, 10]  # pelvis, spine, thorax, neck/nose, head lie on the x = 0 plane
    pose[centre, 1:] = rng.normal(size=(5, 2))
    right = rng.normal(size=(6, 3))
    pose[list(H36M17.right)] = right
    pose[list(H36M17.left)] = right * [-1, 1, 1]  # each left joint mirrors its right twin
    np.testing.assert_array_equal(flip_poses(pose), pose)
    assert torch.equal(flip(torch.from_numpy(pose)), torch.from_numpy(pose))
    pose[11, 0] += 1.0  # break the symmetry: the flip must notice
    assert not np.allclose(flip_poses(pose), pose)


def test_flipped_2d_is_the_projection_of_the_flipped_3d(toy):
    """Centred principal point, no distortion: mirroring the scene about the camera's y-z plane mirrors
    the image about its vertical centre line, so the flips of 2D and 3D agree exactly."""
    data, det, views = toy
    batch = Batches(views, frame_windows(views, 1), shuffle=False, flip="all").batch(np.arange(len(views)))
    assert batch["flipped"].all()
    world = batch["targets_3d"] + batch["trajectory"][:, None]  # flipped camera-frame 3D
    cams = [data.rigs["rig"][cam] for _, cam in views.keys]
    for v, cam in enumerate(cams):
        rows = batch["view"] == v
        expected = cam.normalize(cam.project(world[rows].astype(np.float64)))
        np.testing.assert_allclose(batch["inputs_2d"][rows, 0], expected, atol=2e-5)


def test_flip_average(toy):
    _, _, views = toy
    x = views.inputs_2d[:6]
    offset = np.random.default_rng(2).normal(size=(17, 2)).astype(np.float32)

    def model(inp):  # not flip-equivariant: adds a fixed pose
        return inp + (offset if isinstance(inp, np.ndarray) else torch.from_numpy(offset))

    # (x + o + flip(flip(x) + o)) / 2 = x + (o + flip(o)) / 2
    expected = x + (offset + flip_poses(offset)) / 2
    np.testing.assert_allclose(flip_average(model, x), expected, atol=1e-6)
    np.testing.assert_allclose(flip_average(model, torch.from_numpy(x)).numpy(), expected, atol=1e-6)
    scores = np.tile(np.arange(17, dtype=np.float32), (6, 1))
    got = flip_average(lambda inp, sc: inp * sc[..., None], x, scores)  # scores follow their joints
    np.testing.assert_allclose(got, x * scores[..., None], atol=1e-6)


# --- batches --------------------------------------------------------------------------------------------

def test_same_seed_gives_same_batches(toy):
    _, _, views = toy

    def epochs(seed):
        b = Batches(views, frame_windows(views, 3), batch_size=8, seed=seed, flip="random")
        return [[(x["window"].copy(), x["flipped"].copy(), x["inputs_2d"].copy()) for x in b] for _ in range(2)]

    one, two, other = epochs(7), epochs(7), epochs(8)
    for e1, e2 in zip(one, two):
        for (w1, f1, x1), (w2, f2, x2) in zip(e1, e2):
            assert np.array_equal(w1, w2) and np.array_equal(f1, f2) and np.array_equal(x1, x2)
    order = [np.concatenate([w for w, _, _ in e]) for e in one]
    assert not np.array_equal(order[0], order[1])  # a new order every epoch
    assert sorted(order[0]) == list(range(len(views)))  # every window once per epoch
    assert not np.array_equal(order[0], np.concatenate([w for w, _, _ in other[0]]))
    flips = np.concatenate([f for _, f, _ in one[0]])
    assert 0 < flips.sum() < len(flips)  # "random": some flipped, some not


def test_random_flips_mirror_exactly_the_flagged_windows(toy):
    _, _, views = toy
    w = frame_windows(views, 5)
    b = Batches(views, w, batch_size=16, seed=4, flip="random")
    plain = Batches(views, w, shuffle=False)
    for batch in b:
        ref = plain.batch(batch["window"])
        f = batch["flipped"]
        assert np.array_equal(batch["inputs_2d"][~f], ref["inputs_2d"][~f])
        assert np.array_equal(batch["inputs_2d"][f], flip_poses(ref["inputs_2d"][f]))
        assert np.array_equal(batch["targets_3d"][f], flip_poses(ref["targets_3d"][f]))


def test_torch_batches_match_numpy(toy):
    _, _, views = toy
    w = sequence_windows(views, 4)
    sel = np.array([2, 0, 5])
    a = Batches(views, w).batch(sel)
    t = Batches(views, w, as_torch=True).batch(sel)
    assert t["inputs_2d"].shape == (3, 4, 17, 2) and t["targets_3d"].shape == (3, 4, 17, 3)
    for key, value in a.items():
        assert np.array_equal(t[key].numpy(), value), key


def test_per_epoch_subset_is_fresh_each_epoch_and_covers_the_windows(toy):
    _, _, views = toy
    windows = frame_windows(views, 1)
    batches = Batches(views, windows, batch_size=4, seed=3, per_epoch=5)
    assert len(batches) == 2
    seen = []
    for _ in range(300):  # P(some window never drawn) < 1e-12 for these few dozen windows
        epoch = np.concatenate([b["window"] for b in batches])
        assert len(epoch) == 5 and len(set(epoch)) == 5  # a subset without repeats
        seen.append(set(epoch.tolist()))
    assert seen[0] != seen[1]  # a new subset each epoch
    assert set().union(*seen) == set(range(len(windows)))  # every window is drawn over the epochs


# --- flip="both": the official generators' epoch (every window plain and mirrored) ---------------------------

@pytest.mark.parametrize("kind", ["frame", "sequence"])
def test_both_puts_every_window_twice_an_epoch_once_mirrored(toy, kind):
    _, _, views = toy
    w = frame_windows(views, 5) if kind == "frame" else sequence_windows(views, 4)
    b = Batches(views, w, batch_size=7, seed=3, flip="both")
    plain = Batches(views, w, shuffle=False)
    assert len(b) == -(-2 * len(w) // 7)  # 2N samples an epoch
    orders = []
    for _ in range(2):
        batches = list(b)
        assert len(batches) == len(b)
        windows = np.concatenate([x["window"] for x in batches])
        flipped = np.concatenate([x["flipped"] for x in batches])
        assert len(windows) == 2 * len(w)
        assert np.array_equal(np.bincount(windows, minlength=len(w)), np.full(len(w), 2))  # each exactly twice
        assert np.array_equal(np.bincount(windows[flipped], minlength=len(w)), np.ones(len(w)))  # once mirrored
        assert flipped[:len(w)].any() and not flipped[:len(w)].all()  # the two copies are shuffled together
        for x in batches:  # the mirrored copy is the plain one with x -> -x and left/right swapped
            ref, f = plain.batch(x["window"]), x["flipped"]
            for key in ("inputs_2d", "targets_3d"):
                assert np.array_equal(x[key][~f], ref[key][~f])
                assert np.array_equal(x[key][f], flip_poses(ref[key][f]))
            assert np.array_equal(x["scores"][f], ref["scores"][f][..., H36M17.flip_permutation])
        orders.append(windows)
    assert not np.array_equal(orders[0], orders[1])  # a new order every epoch
    again = Batches(views, w, batch_size=7, seed=3, flip="both")
    assert np.array_equal(np.concatenate([x["window"] for x in again]), orders[0])  # reproducible from the seed


def test_both_with_windows_per_epoch_draws_that_many_windows_twice(toy):
    _, _, views = toy
    w = frame_windows(views, 3)
    b = Batches(views, w, batch_size=4, seed=1, flip="both", per_epoch=5)
    assert len(b) == 3  # 10 samples
    batches = list(b)  # one epoch
    windows = np.concatenate([x["window"] for x in batches])
    flipped = np.concatenate([x["flipped"] for x in batches])
    assert len(np.unique(windows)) == 5 and len(windows) == 10
    assert sorted(windows[flipped]) == sorted(windows[~flipped]) == sorted(np.unique(windows))
    with pytest.raises(ValueError, match="flip"):
        Batches(views, w, flip="twice")


def test_frame_targets_give_every_window_row_its_3d(toy):
    _, _, views = toy
    w = frame_windows(views, 5)
    sel = np.arange(len(w))
    flips = np.arange(len(w)) % 2 == 1
    batch = Batches(views, w, shuffle=False, frame_targets=True).batch(sel, flips)
    rows = w.rows(sel)
    expected = views.targets_3d[rows]
    expected[flips] = flip_poses(expected[flips])
    assert np.array_equal(batch["targets_3d_frames"], expected)
    assert np.array_equal(batch["targets_3d_frames"][:, 2], batch["targets_3d"])  # the centre row is the target
    assert np.array_equal(batch["mask_frames"], views.valid[rows])
    assert "targets_3d_frames" not in Batches(views, w, shuffle=False).batch(sel)
