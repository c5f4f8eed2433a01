"""Action labels: the standard merging of Human3.6M's action variants for per-action tables.

Recordings are named like ``"Directions 1"``, ``"Eating 2"``, ``"TakingPhoto"`` (3d-pose-baseline) or
``"Photo"`` (VideoPose3D); papers report 15 actions, each the mean over all variants of that action.
"""

from __future__ import annotations

import re

H36M_ACTIONS = ("Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing", "Purchases",
                "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking", "WalkTogether")

_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog", "WalkingTogether": "WalkTogether"}


def merge_action(name: str) -> str:
    """``"Directions 1"`` -> ``"Directions"``, ``"TakingPhoto 2"`` -> ``"Photo"``, ``"WalkDog_1"`` -> ``"WalkDog"``.

    Drops a camera suffix (``".54138969"``) and a trailing variant number, then maps the spellings of the
    two source conventions onto one. Labels of other datasets (no number, no alias) pass through unchanged.
    """
    base = re.sub(r"\.\d+$", "", name.strip())
    base = re.sub(r"[ _-]*\d+$", "", base)
    return _ALIASES.get(base, base)
