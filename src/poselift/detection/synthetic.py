"""A 2D detector error model: ground-truth 2D made to look like a CPN-class detector's output on Human3.6M.

For one camera view (F frames, 17 joints), in this order:

1. **Left/right swaps.** For each limb pair (legs: hip-knee-ankle; arms: shoulder-elbow-wrist) a two-state
   Markov chain over frames: an unswapped pair becomes swapped in the next frame with probability
   ``p_swap``; a swap ends with probability ``1 / swap_frames``, so it lasts a geometric number of frames
   with mean ``swap_frames`` (real swaps persist while the ambiguous pose lasts). A swapped joint is put
   at its left/right twin's position, then gets its own noise below.
2. **Correlated noise.** Per joint and axis an AR(1) process ``z_t = rho z_{t-1} + sqrt(1 - rho^2) eps_t``
   started from its stationary law, so ``z`` has unit variance in every frame and lag-1 autocorrelation
   ``rho``; the error is ``sigma_j z``: per-frame std ``sigma_j`` per axis. Consecutive video frames look
   alike, so a detector's errors on them are alike too.
3. **White jitter.** Independent ``N(0, jitter_px^2)`` per joint, axis and frame (heatmap quantisation).
   Per-axis marginal std is then ``sqrt(sigma_j^2 + jitter_px^2)``, lag-1 autocorrelation
   ``rho sigma_j^2 / (sigma_j^2 + jitter_px^2)``.
4. **Outliers.** With probability ``p_outlier`` per joint and frame the keypoint jumps by an offset in a
   uniform direction with length ``|N(outlier_px, outlier_spread_px^2)|`` (a jump to another limb or to
   the background); independent across frames.
5. **Score.** ``s = clip(exp(-(e / tau)^2) + N(0, score_noise^2), 0, 1)`` with ``e`` the keypoint's
   distance to the true joint (swaps and outliers included) and ``tau = score_tau_px``: the form of COCO's
   object keypoint similarity, so the score falls as the error grows.

**Image size.** Every length above (``sigma_px``, ``jitter_px``, ``outlier_*``, ``score_tau_px``) is in
pixels for a person whose ground-truth 2D bounding box has its longer side equal to
``reference_size_px``, and is scaled per frame by ``(longer side of that frame's box) /
reference_size_px``. A top-down detector (CPN) crops the person's box at a fixed aspect ratio and
resizes it to its input, so its pixel error grows with the box, not with the image. Human3.6M is the
reference: a standing subject (about 1.6 m from ankle to head joint) 4.5-5 m from a f = 1145 px camera
spans about 370-410 px, hence ``reference_size_px = 400``.

**Sources of the values** (defaults here equal params.yaml's ``detectors.synthetic``; a test checks it).
They are estimates, not measurements: CPN fine-tuned on Human3.6M (the detections VideoPose3D released)
has a mean 2D error of roughly 5-10 px on the 1000x1000 frames, torso joints best and wrists / ankles
worst. A per-axis std sigma gives a mean 2D error of ``sigma sqrt(pi / 2) ~ 1.25 sigma``; with the
values below the Gaussian part alone averages about 7 px over joints, and with outliers and swaps
(about 2 % of frames per limb pair) about 8-9 px on a frontal view. ``rho``, ``p_swap`` and the other
per-frame rates are per frame at Human3.6M's 50 fps and are used unchanged at other frame rates.

Randomness: every view draws from its own generator seeded by the seed and a SHA-256 hash of
``"subject/sequence/camera"`` (:func:`view_rng`), and always draws the same arrays in the same order, so
a view's noise depends neither on the other sequences in the file nor on which error sources are on.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import yaml

from poselift.detection.ground_truth import mark_missing
from poselift.errors import InputError
from poselift.skeleton import H36M17

# Per-joint per-axis noise std (px at reference_size_px); an estimate of CPN on Human3.6M (see above).
DEFAULT_SIGMA_PX = {
    "pelvis": 3.0, "right_hip": 3.5, "right_knee": 6.0, "right_ankle": 9.0,
    "left_hip": 3.5, "left_knee": 6.0, "left_ankle": 9.0,
    "spine": 3.5, "thorax": 3.0, "neck_nose": 4.0, "head": 4.0,
    "left_shoulder": 4.0, "left_elbow": 6.0, "left_wrist": 10.0,
    "right_shoulder": 4.0, "right_elbow": 6.0, "right_wrist": 10.0,
}

# Limb pairs that swap as a whole: (left joints, right joints) in H36M17 indices.
SWAP_PAIRS = {
    "legs": ((4, 5, 6), (1, 2, 3)),
    "arms": ((11, 12, 13), (14, 15, 16)),
}


@dataclass(frozen=True)
class SyntheticParams:
    """The error model's parameters; lengths in px for a person box of ``reference_size_px``."""

    sigma_px: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SIGMA_PX))
    reference_size_px: float = 400.0  # longer side of a Human3.6M subject's 2D box (see module doc)
    rho: float = 0.9  # lag-1 autocorrelation of the correlated noise (per frame, 50 fps)
    jitter_px: float = 1.0  # white jitter std per axis
    p_outlier: float = 0.005  # per joint and frame
    outlier_px: float = 60.0  # mean outlier jump length
    outlier_spread_px: float = 20.0  # std of the jump length
    p_swap: float = 0.002  # per limb pair and frame: probability that a swap starts
    swap_frames: float = 10.0  # mean length of a swap in frames (>= 1)
    score_tau_px: float = 20.0  # error at which the score is exp(-1) ~ 0.37
    score_noise: float = 0.05  # std of the Gaussian noise added to the score

    @property
    def sigma(self) -> np.ndarray:
        """Per-joint sigma in H36M17 order, shape (17,)."""
        return np.array([self.sigma_px[name] for name in H36M17.names], dtype=np.float64)

    def to_dict(self) -> dict:
        return asdict(self)


def params_from_dict(block, path: str | os.PathLike) -> SyntheticParams:
    """Check a ``detectors.synthetic`` mapping (every key required, no unknown keys) and build the params."""
    if not isinstance(block, dict):
        raise InputError(path, "detectors.synthetic is not a mapping")
    names = [f.name for f in fields(SyntheticParams)]
    missing = [n for n in names if n not in block]
    unknown = [k for k in block if k not in names]
    if missing:
        raise InputError(path, f"detectors.synthetic is missing key(s): {', '.join(missing)}")
    if unknown:
        raise InputError(path, f"detectors.synthetic has unknown key(s): {', '.join(map(str, unknown))}")
    sigma = block["sigma_px"]
    if not isinstance(sigma, dict) or set(sigma) != set(H36M17.names):
        have = sorted(sigma) if isinstance(sigma, dict) else type(sigma).__name__
        raise InputError(path, f"detectors.synthetic.sigma_px must map each of the 17 H36M17 joint names "
                               f"to a std in px (got {have})")
    values = {n: _number(block[n], f"detectors.synthetic.{n}", path) for n in names if n != "sigma_px"}
    params = SyntheticParams(
        sigma_px={j: _number(sigma[j], f"detectors.synthetic.sigma_px.{j}", path) for j in H36M17.names},
        **values)
    _check_ranges(params, path)
    return params


def load_params(path: str | os.PathLike) -> SyntheticParams:
    """Read the ``detectors.synthetic`` block of a params.yaml file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InputError(path, f"not valid YAML ({type(e).__name__})") from None
    detectors = doc.get("detectors") if isinstance(doc, dict) else None
    block = detectors.get("synthetic") if isinstance(detectors, dict) else None
    if block is None:
        raise InputError(path, "has no detectors.synthetic block")
    return params_from_dict(block, path)


def _number(value, name: str, path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(path, f"{name} must be a finite number (got {value!r})")
    return float(value)


def _check_ranges(p: SyntheticParams, path) -> None:
    checks = [
        (min(p.sigma_px.values()) >= 0, "sigma_px values must be >= 0"),
        (p.reference_size_px > 0, "reference_size_px must be > 0"),
        (0 <= p.rho < 1, "rho must be in [0, 1)"),
        (p.jitter_px >= 0, "jitter_px must be >= 0"),
        (0 <= p.p_outlier <= 1, "p_outlier must be in [0, 1]"),
        (p.outlier_px >= 0 and p.outlier_spread_px >= 0, "outlier_px and outlier_spread_px must be >= 0"),
        (0 <= p.p_swap <= 1, "p_swap must be in [0, 1]"),
        (p.swap_frames >= 1, "swap_frames must be >= 1"),
        (p.score_tau_px > 0, "score_tau_px must be > 0"),
        (p.score_noise >= 0, "score_noise must be >= 0"),
    ]
    for ok, problem in checks:
        if not ok:
            raise InputError(path, f"detectors.synthetic: {problem}")


def view_rng(seed: int, key: str, camera: str) -> np.random.Generator:
    """The generator of one view: from the seed and a stable hash of ``"subject/sequence/camera"``."""
    digest = hashlib.sha256(f"{key}/{camera}".encode()).digest()
    return np.random.default_rng(np.random.SeedSequence([int(seed), int.from_bytes(digest[:16], "little")]))


def person_scale(positions_2d: np.ndarray, reference_size_px: float) -> np.ndarray:
    """Per-frame scale (...,): longer side of the joints' 2D box / reference size (missing joints ignored).

    Frames without any finite joint take the median scale of the others (1 if there are none); boxes
    smaller than 1 px count as 1 px.
    """
    finite = np.isfinite(positions_2d).all(-1, keepdims=True)
    lo = np.where(finite, positions_2d, np.inf).min(-2)
    hi = np.where(finite, positions_2d, -np.inf).max(-2)
    size = (hi - lo).max(-1)
    known = np.isfinite(size)
    fill = np.median(size[known]) if known.any() else reference_size_px
    return np.maximum(np.where(known, size, fill), 1.0) / reference_size_px


def ar1(eps: np.ndarray, start: np.ndarray, rho: float) -> np.ndarray:
    """Unit-variance AR(1) along axis 0: z_0 = g eps_0 + rho start, z_t = rho z_{t-1} + g eps_t, g = sqrt(1-rho^2).

    ``eps`` (F, ...) and ``start`` (...) are standard normal, so z_0 is too and every z_t has variance 1.
    """
    g = math.sqrt(1.0 - rho * rho)
    from scipy.signal import lfilter  # imported here: the CLI lists detectors without loading scipy

    return lfilter([g], [1.0, -rho], eps, axis=0, zi=(rho * start)[None])[0]


def swap_states(u: np.ndarray, p_swap: float, swap_frames: float) -> np.ndarray:
    """(F,) bool: a two-state Markov chain (off -> on with p_swap, on -> off with 1/swap_frames), from (2, F) uniforms.

    Run lengths alternate off, on, off, ... and are geometric (inverse CDF of ``u``): off runs with
    success probability ``p_swap``, on runs with ``1 / swap_frames``. The chain starts unswapped.
    """
    frames = u.shape[1]
    if p_swap <= 0 or frames == 0:
        return np.zeros(frames, dtype=bool)
    with np.errstate(divide="ignore"):
        rates = np.array([p_swap, 1.0 / swap_frames])[:, None]
        runs = np.ceil(np.log1p(-u) / np.log1p(-rates))  # P(run > k) = (1 - rate)^k
    runs = np.clip(np.nan_to_num(runs, nan=1.0), 1, frames).astype(np.int64).T.reshape(-1)  # off0, on0, off1..
    needed = int(np.searchsorted(np.cumsum(runs), frames)) + 1
    return np.repeat(np.arange(needed) % 2 == 1, runs[:needed])[:frames]


def simulate(positions_2d: np.ndarray, params: SyntheticParams, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray]:
    """One view: ground truth (F, 17, 2) -> keypoints (F, 17, 2), scores (F, 17). See the module doc."""
    gt = np.asarray(positions_2d, dtype=np.float64)
    frames, joints = gt.shape[:2]
    # every draw happens, in this order, whatever the parameters: a view's noise is the same with features on/off
    u_swap = rng.random((len(SWAP_PAIRS), 2, frames))
    eps = rng.standard_normal((frames, joints, 2))
    start = rng.standard_normal((joints, 2))
    white = rng.standard_normal((frames, joints, 2))
    u_outlier = rng.random((frames, joints))
    angle = rng.uniform(0.0, 2 * np.pi, (frames, joints))
    length = rng.standard_normal((frames, joints))
    score_eps = rng.standard_normal((frames, joints))

    scale = person_scale(gt, params.reference_size_px)[:, None]  # (F, 1)

    source = np.broadcast_to(np.arange(joints), (frames, joints)).copy()  # which true joint each keypoint sits on
    for u, (left, right) in zip(u_swap, SWAP_PAIRS.values()):
        on = swap_states(u, params.p_swap, params.swap_frames)
        source[np.ix_(on, left)], source[np.ix_(on, right)] = right, left
    keypoints = np.take_along_axis(gt, source[..., None], axis=1)

    noise = ar1(eps, start, params.rho) * params.sigma[:, None] + params.jitter_px * white
    jump = np.abs(params.outlier_px + params.outlier_spread_px * length) * (u_outlier < params.p_outlier)
    noise += jump[..., None] * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    keypoints = keypoints + noise * scale[..., None]

    error = np.linalg.norm(keypoints - gt, axis=-1) / scale  # in reference px
    scores = np.clip(np.exp(-(error / params.score_tau_px) ** 2) + params.score_noise * score_eps, 0.0, 1.0)
    return keypoints.astype(np.float32), scores.astype(np.float32)


def detect_sequence(positions_2d: np.ndarray, key: str, cameras: list[str], params: SyntheticParams,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All views of one sequence: positions_2d (C, F, 17, 2) -> keypoints (C, F, 17, 2), scores (C, F, 17)."""
    views = [simulate(view, params, view_rng(seed, key, cam)) for view, cam in zip(positions_2d, cameras)]
    return mark_missing(np.stack([v[0] for v in views]), np.stack([v[1] for v in views]), positions_2d)


class SyntheticDetector:
    """ground truth plus a CPN-like error model (params.yaml detectors.synthetic)"""

    def __init__(self, params_path: str | os.PathLike | None = None, seed: int = 0):
        self.model = load_params(params_path) if params_path is not None else SyntheticParams()
        self.seed = seed
        self.settings = {**self.model.to_dict(), "seed": seed}

    def __call__(self, sequence) -> tuple[np.ndarray, np.ndarray]:
        return detect_sequence(sequence.positions_2d, sequence.key, sequence.cameras, self.model, self.seed)
