"""Network detectors: a trained (or imported) heatmap network run on a dataset's person crops.

``poselift detect --detector {hrnet,hrnet-att,cpn} --checkpoint C --images CROPS.h5`` builds one
:class:`NetworkDetector`; like every detector it is called on one prepared sequence and returns keypoints
(C, F, 17, 2) in frame pixels and scores (C, F, 17) (:mod:`poselift.data.detections`). For each camera of the
sequence it reads that view's crops from the labelled-crops file (:mod:`poselift.data.crop_file`: the
rendered benchmark, or real frames through ``poselift crops``), runs the network on them in batches (resized
to the input size the network was trained at, ImageNet-normalised), decodes the heatmaps (argmax with the
quarter-pixel offset, flip test with the one-pixel shift: :mod:`poselift.detection.heatmaps`), and carries
the keypoints back to frame pixels through each crop's affine. A network that predicts COCO-17 (the
official HRNet weights) is mapped to Human3.6M-17 (:mod:`poselift.keypoint_formats`).

The crops' boxes come from the labels (the ground-truth 2D), as in Lifting by Image and in the official
HRNet's ground-truth-box evaluation; a frame of the sequence without a crop is "not detected" (keypoints 0,
score 0), as the ``gt`` detector marks missing ground truth.
"""

from __future__ import annotations

import numpy as np

from poselift.errors import InputError

NETWORKS = {  # detector name -> (model class in poselift.models.MODELS, with channel attention?)
    "hrnet": ("hrnet", False),
    "hrnet-att": ("hrnet", True),
    "cpn": ("cpn", None),
}


class NetworkDetector:
    """A heatmap network's detections on the crops of a labelled-crops file."""

    reads_images = True  # built with a checkpoint and a crops file (poselift detect --checkpoint --images)
    kind = "hrnet"

    def __init__(self, params_path=None, seed: int = 0, *, checkpoint, images, device="cpu", batch_size: int = 64,
                 flip_test: bool = True):
        import torch

        from poselift.data.crop_file import CropFile
        from poselift.training.checkpoint import instantiate, read_checkpoint
        from poselift.training.stage import resolve_device

        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        ckpt = read_checkpoint(checkpoint)
        cls, attention = NETWORKS[self.kind]
        if ckpt.get("model") != cls:
            raise InputError(checkpoint, f"a '{ckpt.get('model')}' checkpoint, not a {self.kind} detector's ({cls})")
        if attention is not None and bool(ckpt["args"].get("attention")) != attention:
            which = "has" if ckpt["args"].get("attention") else "has no"
            raise InputError(checkpoint, f"the network {which} channel attention: use --detector "
                                         f"{'hrnet-att' if ckpt['args'].get('attention') else 'hrnet'}")
        self.model = instantiate(ckpt, checkpoint, self.device)
        stage = ckpt.get("stage") or {}
        self.input_size = tuple(int(v) for v in (ckpt.get("input_size") or stage.get("input_size") or (256, 192)))
        self.keypoint_format = ckpt["args"].get("keypoint_format", getattr(self.model, "keypoint_format", "h36m"))
        _check_joints(checkpoint, self.keypoint_format, getattr(self.model, "num_joints", None))
        self.crops = CropFile(images)
        self.batch_size, self.flip_test = int(batch_size), bool(flip_test)
        self.settings = {"network": self.kind, "checkpoint": str(checkpoint), "model": ckpt["model"],
                         "args": ckpt["args"], "epoch": ckpt.get("epoch"), "input_size": list(self.input_size),
                         "keypoint_format": self.keypoint_format, "flip_test": self.flip_test,
                         "images": str(images), "crops_settings": self.crops.settings}

    def __call__(self, sequence) -> tuple[np.ndarray, np.ndarray]:
        frames = sequence.num_frames
        keypoints = np.zeros((len(sequence.cameras), frames, 17, 2), np.float32)
        scores = np.zeros((len(sequence.cameras), frames, 17), np.float32)
        for c, camera in enumerate(sequence.cameras):
            key = f"{sequence.key}/{camera}"
            if key not in self.crops.counts:
                raise InputError(self.crops.path, f"no crops of view '{key}' (render or crop this dataset first)")
            view = self.crops.view(key)
            if len(view.frame) and (view.frame.min() < 0 or view.frame.max() >= frames):
                raise InputError(self.crops.path, f"view '{key}': frame indices beyond the sequence's {frames}")
            points, confidence = self.detect_view(key, view.affine)
            keypoints[c, view.frame], scores[c, view.frame] = points, confidence
        return keypoints, scores

    def detect_view(self, key: str, affines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (N, 17, 2) in frame pixels and scores (N, 17) for the N crops of view ``key``."""
        from poselift.detection.heatmaps import predict_crops, to_frame_pixels
        from poselift.keypoint_formats import scores_to_h36m17, to_h36m17

        n, size = len(affines), self.batch_size
        found = [predict_crops(self.model, np.stack([self.crops.crop(key, i) for i in range(b, min(n, b + size))]),
                               self.input_size, self.crops.crop_size, self.flip_test, self.device)
                 for b in range(0, n, size)]
        if not found:
            return np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32)
        points = to_frame_pixels(np.concatenate([p for p, _ in found]), affines)
        scores = np.concatenate([c for _, c in found])
        if self.keypoint_format != "h36m":  # an official COCO-17 network
            points, scores = to_h36m17(points, self.keypoint_format), scores_to_h36m17(scores, self.keypoint_format)
        return points.astype(np.float32), scores.astype(np.float32)


def _check_joints(checkpoint, keypoint_format, num_joints) -> None:
    """A network whose heatmaps are H36M-17, or a layout of :data:`poselift.keypoint_formats.FORMATS` with
    its joint count (mapped to H36M-17); anything else (unnamed joints, a count that does not fit) is an
    InputError naming the checkpoint."""
    from poselift.keypoint_formats import FORMATS
    from poselift.skeleton import H36M17

    expected = H36M17.num_joints if keypoint_format == "h36m" else (
        FORMATS[keypoint_format].num_joints if keypoint_format in FORMATS else None)
    if expected is None or num_joints != expected:
        raise InputError(checkpoint, f"the network predicts {num_joints} joints in keypoint format "
                                     f"{keypoint_format!r}: a detector needs 'h36m' (17 joints) or a format of "
                                     f"{', '.join(FORMATS)} with its number of joints")


class HRNetDetector(NetworkDetector):
    """HRNet (official architecture; import-checkpoint --format hrnet or poselift-trained) on the crops"""

    kind = "hrnet"


class HRNetAttentionDetector(NetworkDetector):
    """HRNet with the attention paper's channel attention on the crops"""

    kind = "hrnet-att"


class CPNDetector(NetworkDetector):
    """CPN (ResNet-50 GlobalNet + RefineNet) on the crops"""

    kind = "cpn"
