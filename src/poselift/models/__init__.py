"""Lifting models: plain ``torch.nn.Module``s with explicit constructor arguments.

Common interface: ``forward(inputs_2d)`` takes screen-normalised 2D keypoints (B, T, 17, 2) and returns a
dict of tensors with at least ``"pose_3d"``: root-relative camera-frame 3D in metres, (B, T_out, 17, 3) with
T_out = 1 for single-frame / centre-frame models and T_out = T for seq2seq models.
"""

from __future__ import annotations

from poselift.models.mixste import MixSTE
from poselift.models.baselines import LinearBaseline, MeanPose, TemporalConvNet
from poselift.models.sta import PoseFormer, STAEstimator
from poselift.models.pot import POT, POTUGRN

MODELS: dict[str, type] = {}  # name -> class; poselift.load_model rebuilds a model from (name, args)
MODELS["mixste"] = MixSTE
MODELS["martinez"] = LinearBaseline
MODELS["videopose3d"] = TemporalConvNet
MODELS["mean-pose"] = MeanPose
MODELS["sta"] = STAEstimator
MODELS["poseformer"] = PoseFormer
MODELS["pot"] = POT  # stage I alone (its state_dict loads into POTUGRN.pot)
MODELS["pot-ugrn"] = POTUGRN
