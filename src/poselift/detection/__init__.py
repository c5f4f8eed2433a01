"""Stage 2 of the pipeline, images -> 2D: the detectors, as a registry of name -> class.

A detector is built as ``DETECTORS[name](params_path, seed)`` (its settings from params.yaml's
``detectors.<name>`` block when ``params_path`` is given, else its built-in defaults), exposes the
``settings`` it ran with (stored in the detections file for provenance), and is called on one prepared
sequence: ``detector(sequence) -> (keypoints (C, F, 17, 2) px, scores (C, F, 17))`` in the
:mod:`poselift.data.detections` layout, so lifting never knows which detector made its input.

Today's detectors need no images: ``gt`` (projected ground truth) and ``synthetic`` (a CPN-like error
model). Detectors that read pixels join this table as one line each (see docs/architecture.md).
"""

from __future__ import annotations

from poselift.detection.ground_truth import GroundTruth
from poselift.detection.synthetic import SyntheticDetector

DETECTORS: dict[str, type] = {  # name -> class(params_path, seed); instance(sequence) -> (keypoints, scores)
    "gt": GroundTruth,
    "synthetic": SyntheticDetector,
}
