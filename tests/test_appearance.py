"""People and places for the rendered benchmark (``poselift.rendering.appearance``): body regions from the skin
weights, sampled appearances (shape, skin, hair, clothes, light), per-vertex colours, backgrounds without
people; determinism and independent random streams; a contact sheet to look at (/tmp/appearance_sheet.png).
The tests on the body need ../shared/data/makehuman (skipped when absent); the rest run anywhere."""

from __future__ import annotations

import dataclasses
import time

import cv2
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from poselift.rendering.appearance import (GARMENTS, PATTERNS, REGIONS, Garment, background, body_regions,
                                           garment_colours, limb_coordinates, pattern_mix, rng_stream,
                                           sample_appearance, vertex_colours)

SHEET = "/tmp/appearance_sheet.png"


@pytest.fixture
def body(makehuman_body):
    return makehuman_body


# --- regions ---------------------------------------------------------------------------------------
def _components(body, inside: np.ndarray) -> int:
    """Connected pieces of the mesh (quad edges) restricted to the vertices ``inside``."""
    f = body.faces
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 3]], f[:, [3, 0]]])
    edges = edges[inside[edges[:, 0]] & inside[edges[:, 1]]]
    n = len(body.vertices)
    graph = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    labels = connected_components(graph, directed=False)[1]
    return len(np.unique(labels[inside]))


@pytest.mark.parametrize("shaped", [False, True])
def test_regions_cover_the_body_coherently(body, shaped):
    if shaped:  # the regions follow the shape (a heavy, muscular male and the like)
        body = body.shaped(sample_appearance(6).shape)
    ids, names = body_regions(body)
    assert names == REGIONS and ids.shape == (len(body.vertices),)
    assert ids.min() >= 0 and ids.max() < len(names)  # every vertex has exactly one region
    v, name_of = body.vertices, np.array(names)[ids]
    for i, name in enumerate(names):
        inside = ids == i
        assert inside.sum() > 100, name
        # one piece on the midline, or one per side, mirrored
        assert _components(body, inside) == (1 if name in ("hair", "head", "torso", "hips") else 2), name
        assert (v[inside, 0] > 0).sum() == (v[inside, 0] < 0).sum(), name
    order = np.argsort(v[:, 2])
    assert set(name_of[order[:100]]) == {"feet"}  # the lowest vertices are shoes
    assert set(name_of[order[-30:]]) == {"hair"}  # the highest are hair
    assert set(name_of[np.argsort(np.abs(v[:, 0]))[-100:]]) == {"hands"}  # the A-pose's widest
    mean_z = {name: v[ids == i, 2].mean() for i, name in enumerate(names)}
    chain = ["feet", "shins", "thighs", "hips", "torso", "head", "hair"]
    assert all(mean_z[a] < mean_z[b] for a, b in zip(chain, chain[1:])), mean_z
    assert mean_z["hands"] < mean_z["forearms"] < mean_z["upper_arms"] < mean_z["head"]


def test_limb_coordinates_run_from_the_trunk_to_the_wrists_and_ankles(body):
    ids, _ = body_regions(body)
    limb = limb_coordinates(body, ids)
    part = {name: limb[ids == i] for i, name in enumerate(REGIONS)}
    for name in ("hair", "head", "torso", "hands", "feet"):
        assert np.isnan(part[name]).all(), name
    for upper, lower in (("upper_arms", "forearms"), ("thighs", "shins")):
        assert np.isfinite(part[upper]).all() and np.isfinite(part[lower]).all()
        assert np.median(part[upper]) < 0.5 < np.median(part[lower]), (upper, lower)
        assert part[lower].max() == pytest.approx(1.0, abs=0.05)  # the wrist / ankle
    assert np.nanmin(limb) > -0.3 and np.nanmax(limb) < 1.05


# --- appearance ------------------------------------------------------------------------------------
def test_appearances_stay_in_their_ranges():
    people = [sample_appearance(seed) for seed in range(200)]
    for a in people:
        assert 0.2 <= a.ambient <= 0.6
        assert np.linalg.norm(a.light_direction) == pytest.approx(1.0)
        assert np.sin(np.radians(10)) - 1e-9 <= a.light_direction[2] <= np.sin(np.radians(80)) + 1e-9
        assert 0.0 <= a.sleeve <= 1.0 and 0.2 <= a.leg <= 1.0 and -0.1 <= a.hem <= 0.03
        assert a.ethnicity.sum() == pytest.approx(1.0) and 0.1 <= a.muscle <= 0.9 and 0.1 <= a.weight <= 0.9
        ethnic = sum(w for name, w in a.shape.items() if not name.startswith("universal"))
        assert ethnic == pytest.approx(1.0) and all(0 < w <= 1 for w in a.shape.values())
        assert set(a.garments) == set(GARMENTS) and all(g.pattern in PATTERNS for g in a.garments.values())
        for colour in (a.skin, a.hair, *(c for g in a.garments.values() for c in (g.colour, g.second))):
            assert colour.shape == (3,) and (colour >= 0).all() and (colour <= 1).all()
    # variety: both sexes, every pattern, all sleeve and leg lengths, bald heads and dresses, dark and light
    assert {a.gender > 0.5 for a in people} == {True, False}
    assert {g.pattern for a in people for g in a.garments.values()} == set(PATTERNS)
    assert min(a.sleeve for a in people) == 0.0 and max(a.sleeve for a in people) > 0.95
    assert min(a.leg for a in people) < 0.3 and max(a.leg for a in people) > 0.95
    assert any(a.hairline is None for a in people) and any(a.dress for a in people)
    values = np.array([c.max() for a in people for c in (g.colour for g in a.garments.values())])
    assert values.min() < 0.15 and values.max() > 0.9  # dark and light garments


def test_shapes_use_the_bodys_targets_and_stay_human(body):
    heights = []
    for seed in range(12):
        shape = sample_appearance(seed).shape
        assert set(shape) <= set(body.targets)
        v = body.shaped(shape).vertices
        heights.append(v[:, 2].max() - v[:, 2].min())
    assert 1.45 < min(heights) and max(heights) < 1.9 and max(heights) - min(heights) > 0.1, heights


def test_skin_tones_lie_in_the_skin_cluster_of_ycrcb():
    """Chai & Ngan (1999): skin has Cr in [133, 173], Cb in [77, 127]; and R > G > B; light to dark."""
    people = [sample_appearance(seed) for seed in range(300)]
    skin = np.array([a.skin for a in people])
    ycrcb = cv2.cvtColor((skin[None] * 255).round().astype(np.uint8), cv2.COLOR_RGB2YCrCb)[0].astype(int)
    assert (ycrcb[:, 1] >= 133).all() and (ycrcb[:, 1] <= 173).all()
    assert (ycrcb[:, 2] >= 77).all() and (ycrcb[:, 2] <= 127).all()
    assert ((skin[:, 0] > skin[:, 1]) & (skin[:, 1] > skin[:, 2])).all()
    assert ycrcb[:, 0].min() < 60 and ycrcb[:, 0].max() > 210  # very dark and very light skin both occur
    tones = np.array([a.skin_tone for a in people])
    assert np.histogram(tones, bins=5, range=(0, 1))[0].min() >= 10  # every fifth of the range


def test_patterns_are_functions_of_rest_positions():
    grid = np.stack(np.meshgrid(np.linspace(-0.3, 0.3, 61), [-0.1], np.linspace(-0.5, 0.5, 101)), -1).reshape(-1, 3)
    red, blue = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    plain = Garment(colour=red, second=blue, pattern="plain")
    assert (garment_colours(plain, grid) == red).all()
    stripes = Garment(colour=red, second=blue, pattern="stripes", period=0.1, duty=0.3)  # normal along x
    share = pattern_mix(stripes, grid)
    assert set(np.unique(share)) == {0.0, 1.0} and share.mean() == pytest.approx(0.3, abs=0.03)
    same_x = np.isclose(grid[:, 0], grid[0, 0])
    assert len(np.unique(share[same_x])) == 1  # constant across a stripe
    checks = Garment(colour=red, second=blue, pattern="checks", period=0.05)
    assert pattern_mix(checks, grid).mean() == pytest.approx(0.5, abs=0.05)
    noise = dataclasses.replace(sample_appearance(0).garments["shirt"], pattern="noise")
    mix = pattern_mix(noise, grid)
    assert 0 <= mix.min() < 0.3 and 0.7 < mix.max() <= 1


def test_vertex_colours_dress_the_regions(body):
    ids, _ = body_regions(body)
    for seed in range(6):
        a = sample_appearance(seed)
        shaped = body.shaped(a.shape)
        colours = vertex_colours(shaped, a)
        assert colours.shape == (len(body.vertices), 3) and colours.dtype == np.float32
        assert colours.min() >= 0 and colours.max() <= 1
        hands = colours[ids == REGIONS.index("hands")]  # skin, with its smooth variation (4 % sd, at most 16 %)
        assert np.abs(hands / a.skin - 1).max() < 0.17
        feet = ids == REGIONS.index("feet")  # shoes: the garment's pattern with 2.5 % grain (5 sd: 12.5 %)
        expected = garment_colours(a.garments["shoes"], shaped.vertices[feet])
        assert (np.abs(colours[feet] - expected) <= 0.125 * expected + 1e-6).all()
        assert len(np.unique(colours.round(2), axis=0)) > 20


# --- determinism and streams -----------------------------------------------------------------------
def test_same_seed_same_bytes_and_other_seeds_differ(body):
    a, b = sample_appearance(11), sample_appearance(11)
    assert vertex_colours(body, a).tobytes() == vertex_colours(body, b).tobytes()
    others = [vertex_colours(body, sample_appearance(seed)) for seed in (12, 13)]
    assert not np.array_equal(others[0], others[1])
    assert not np.array_equal(vertex_colours(body, a), others[0])


def test_streams_are_independent(body):
    state = np.random.get_state()[1].copy()
    colours = vertex_colours(body, sample_appearance(5))
    for seed in (0, 1, 2):  # other backgrounds, other people in between: nothing of person 5 changes
        background(seed, 64, 48)
        vertex_colours(body, sample_appearance(seed))
    assert np.array_equal(vertex_colours(body, sample_appearance(5)), colours)
    assert np.array_equal(np.random.get_state()[1], state)  # numpy's global state is never touched
    # one seed, different purposes: unrelated numbers; the same purpose: the same numbers
    assert rng_stream(5, "skin").random() != rng_stream(5, "hair").random()
    assert rng_stream(5, "skin").random() == rng_stream(5, "skin").random()


def test_appearance_without_the_body_is_deterministic():
    a, b = sample_appearance(3), sample_appearance(3)
    assert a.shape == b.shape and np.array_equal(a.skin, b.skin)
    assert np.array_equal(a.light_direction, b.light_direction)
    assert all(np.array_equal(a.garments[g].colour, b.garments[g].colour) for g in GARMENTS)
    assert not np.array_equal(sample_appearance(4).skin, a.skin)


# --- backgrounds -----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(256, 192), (192, 256), (64, 48), (37, 23), (480, 640)])
def test_backgrounds_of_several_sizes(size):
    images = [background(seed, *size) for seed in range(8)]
    for image in images:
        assert image.shape == (*size, 3) and image.dtype == np.uint8
        assert image.reshape(-1, 3).std(axis=0).max() > 1.0  # not one colour
    assert all(background(seed, *size).tobytes() == images[seed].tobytes() for seed in range(8))
    assert len({image.tobytes() for image in images}) == 8


def test_backgrounds_are_fast():
    for seed in range(5):  # warm up
        background(seed, 256, 192)
    start = time.perf_counter()
    n = 50
    for seed in range(n):
        background(seed, 256, 192)
    per_image = (time.perf_counter() - start) / n * 1000
    print(f"background 256x192: {per_image:.2f} ms per image (mean of {n})")
    assert per_image < 50


# --- contact sheet ---------------------------------------------------------------------------------
def _swatches(a, height: int = 256, width: int = 192) -> np.ndarray:
    """One person's colours as flat patches (no 3D): skin, hair, the garments' patterns on a 40 x 60 cm
    plane of rest positions, a disc shaded by the light; the cut as text."""
    tile = np.full((height, width, 3), 255, np.uint8)
    tile[4:40, 4:92], tile[4:40, 100:188] = a.skin * 255, a.hair * 255
    u, w = np.meshgrid(np.linspace(-0.2, 0.2, 56), np.linspace(0.3, -0.3, 84))
    plane = np.stack([u, np.full_like(u, -0.1), w], -1).reshape(-1, 3)
    for k, name in enumerate(GARMENTS):
        patch = garment_colours(a.garments[name], plane).reshape(84, 56, 3)
        tile[46:130, 4 + k * 62:60 + k * 62] = patch * 255
    y, x = np.mgrid[-1:1:64j, -1:1:64j]  # the light on a sphere seen from -y (the body's front)
    inside = x ** 2 + y ** 2 <= 1
    normal = np.stack([x, -np.sqrt(np.clip(1 - x ** 2 - y ** 2, 0, 1)), -y], -1)
    shade = a.ambient + (1 - a.ambient) * np.clip(normal @ a.light_direction, 0, 1)
    tile[136:200, 4:68][inside] = (np.outer(shade[inside], a.skin) * 255).astype(np.uint8)
    lines = [f"seed {a.seed} {'M' if a.gender > 0.5 else 'F'} tone {a.skin_tone:.2f}",
             f"sleeve {a.sleeve:.2f} leg {a.leg:.2f}", f"amb {a.ambient:.2f}{' dress' if a.dress else ''}"
             f"{' bald' if a.hairline is None else ''}", " ".join(g.pattern for g in a.garments.values())]
    for i, line in enumerate(lines):
        cv2.putText(tile, line, (72 if i < 3 else 4, 150 + 16 * i if i < 3 else 218), cv2.FONT_HERSHEY_SIMPLEX,
                    0.33, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def test_contact_sheet(tmp_path):
    """Not asserted beyond being written: a strip of 8 backgrounds over 8 people's swatches."""
    backgrounds = np.concatenate([background(seed, 256, 192) for seed in range(8)], axis=1)
    swatches = np.concatenate([_swatches(sample_appearance(seed)) for seed in range(8)], axis=1)
    sheet = np.concatenate([backgrounds, np.full((4, backgrounds.shape[1], 3), 255, np.uint8), swatches])
    for path in (tmp_path / "appearance_sheet.png", SHEET):
        assert cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"contact sheet: {SHEET}")
