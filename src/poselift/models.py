"""The registry of every network poselift trains, and the one factory that builds them.

:data:`MODELS` maps the names that params.yaml's ``models.<preset>.class`` and checkpoints use to classes: the
lifters of :mod:`poselift.lifting` and the 2D detector networks of :mod:`poselift.detection` (HRNet, CPN:
``forward(images) -> {"heatmaps", "features"}``, ``task = "heatmaps"``); image lifters join it as one line
each. :func:`build_model` is the one factory (training, checkpoints, imports).

Lifting models: ``forward(inputs_2d)`` takes screen-normalised 2D keypoints (B, T, 17, 2) and returns a
dict of tensors with at least ``"pose_3d"``: root-relative camera-frame 3D in metres, (B, T_out, 17, 3), with
T_out = 1 for single-frame and centre-frame models and T_out = T for seq2seq models. A class says which with
``output_frames`` ("centre" | "all"), and how many input frames it takes with ``receptive_field()`` or
``num_frames``.
"""

from __future__ import annotations

import os

from poselift.detection import hrnet
from poselift.detection.cpn import CPN
from poselift.detection.hrnet import HRNet
from poselift.errors import InputError
from poselift.lifting.lbi import LBIStage1, LiftingByImage
from poselift.lifting.martinez import LinearBaseline
from poselift.lifting.mixste import MixSTE
from poselift.lifting.pot import POT, POTUGRN
from poselift.lifting.sta import PoseFormer, STAEstimator
from poselift.lifting import mixste, sta
from poselift.lifting.videopose3d import TemporalConvNet

MODELS: dict[str, type] = {  # name -> class
    "pot": POT,  # stage I alone (its state_dict loads into POTUGRN.pot)
    "pot-ugrn": POTUGRN,
    "mixste": MixSTE,
    "sta": STAEstimator,
    "poseformer": PoseFormer,
    "videopose3d": TemporalConvNet,
    "martinez": LinearBaseline,
    "hrnet": HRNet,  # 2D detectors (task heatmaps): HRNet-W32/W48, optionally with channel attention
    "cpn": CPN,
    "lbi-stage1": LBIStage1,  # Lifting by Image (task image_lifting): stage 1 alone (loads into LiftingByImage.stage1)
    "lbi": LiftingByImage,
}


# `poselift import-checkpoint --format NAME`: an official release's state dict -> (constructor args, our state
# dict) of MODELS[NAME] (same name), with outputs identical to the official model's.
CHECKPOINT_FORMATS = {  # name -> convert(state_dict, **hints) -> (args, state_dict)
    "mixste": mixste.convert_official_state_dict,
    "poseformer": sta.convert_official_state_dict,
    "videopose3d": TemporalConvNet.convert_official_state_dict,
    "hrnet": hrnet.convert_official_state_dict,
}


def build_model(name: str, args: dict, path: str | os.PathLike = "checkpoint"):
    """``MODELS[name](**args)``; an unknown name is an InputError naming ``path``."""
    if name not in MODELS:
        raise InputError(path, f"unknown model class '{name}' (known: {', '.join(sorted(MODELS))})")
    return MODELS[name](**args)


def output_frames(model) -> str:
    """"centre" (one output frame per window) or "all" (seq2seq): the model's ``output_frames``."""
    value = getattr(model, "output_frames", None)
    if value not in ("centre", "all"):
        raise ValueError(f"{type(model).__name__} has no output_frames = 'centre' | 'all' (model contract)")
    return value


def model_window(model) -> int | None:
    """The input length a model implies: ``receptive_field()`` or ``num_frames``, else None."""
    rf = getattr(model, "receptive_field", None)
    if callable(rf):
        return int(rf())
    n = getattr(model, "num_frames", None)
    return int(n) if isinstance(n, int) else None
