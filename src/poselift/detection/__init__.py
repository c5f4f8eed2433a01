"""Stage 2 of the pipeline, images -> 2D: the detectors, as a registry of name -> class.

A detector is built as ``DETECTORS[name](params_path, seed)`` (its settings from params.yaml's
``detectors.<name>`` block when ``params_path`` is given, else its built-in defaults), exposes the
``settings`` it ran with (stored in the detections file for provenance), and is called on one prepared
sequence: ``detector(sequence) -> (keypoints (C, F, 17, 2) px, scores (C, F, 17))`` in the
:mod:`poselift.data.detections` layout, so lifting never knows which detector made its input.

``gt`` (projected ground truth) and ``synthetic`` (a CPN-like error model) need no images. The network
detectors (``reads_images = True``: :mod:`poselift.detection.network`) are built with a checkpoint and a
labelled-crops file as well, ``DETECTORS[name](params_path, seed, checkpoint=..., images=..., device=...)``,
and run the heatmap networks (:mod:`poselift.detection.hrnet`, :mod:`poselift.detection.cpn`) on the crops.
"""

from __future__ import annotations

from poselift.detection.blazepose import MediaPipeDetector
from poselift.detection.ground_truth import GroundTruth
from poselift.detection.network import CPNDetector, HRNetAttentionDetector, HRNetDetector
from poselift.detection.synthetic import SyntheticDetector

DETECTORS: dict[str, type] = {  # name -> class(params_path, seed); instance(sequence) -> (keypoints, scores)
    "gt": GroundTruth,
    "synthetic": SyntheticDetector,
    "hrnet": HRNetDetector,
    "hrnet-att": HRNetAttentionDetector,
    "cpn": CPNDetector,
    "mediapipe": MediaPipeDetector,  # BlazePose on frames and images (poselift demo), not on prepared datasets
}
