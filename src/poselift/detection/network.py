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

# Channels-last memory format (NHWC) for the networks' convolutions: on this project's 2-core AVX-512 CPU
# (benchmarks/detectors.py, README "Speed and precision") HRNet and CPN ran 1.06-1.68x faster with it, so it is on
# by default; `poselift detect --no-channels-last` turns it off.
CHANNELS_LAST = True

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
                 flip_test: bool = True, precision: str = "fp32", channels_last: bool = CHANNELS_LAST):
        from poselift.data.crop_file import CropFile
        from poselift.precision import resolve

        self.model, self.device, self.input_size, self.keypoint_format, ckpt = load_network(self.kind, checkpoint,
                                                                                              device)
        self.precision = resolve(precision, self.device)  # forward passes at fp32, or bf16 where it has units
        self.precision.prepare(self.model)
        if channels_last:  # the weights in NHWC: the convolutions then run (and pass on) channels-last tensors
            import torch

            self.model.to(memory_format=torch.channels_last)
        self.crops = CropFile(images)
        self.batch_size, self.flip_test = int(batch_size), bool(flip_test)
        self.settings = {"network": self.kind, "checkpoint": str(checkpoint), "model": ckpt["model"],
                         "args": ckpt["args"], "epoch": ckpt.get("epoch"), "input_size": list(self.input_size),
                         "keypoint_format": self.keypoint_format, "flip_test": self.flip_test,
                         "images": str(images), "crops_settings": self.crops.settings}
        self.feature_sink = None  # poselift detect --features: a FeatureWriter that gets each view's maps
        if self.precision.name != "fp32":  # recorded in the detections file only when it is not the default
            self.settings["precision"] = self.precision.name

    def feature_attrs(self) -> dict:
        """The features file's attributes (:mod:`poselift.data.features`) for this network's maps: the
        high-resolution (stride-4) map the model returns as "features" (HRNet: stage 4's 1/4 branch before
        ``final_layer``), at the input size it detects at."""
        return {"detector": self.kind, "settings": self.settings, "stride": 4,
                "feature_map": f"{self.settings['model']}-features-stride4", "input_size": list(self.input_size),
                "crop_size": list(self.crops.crop_size), "crops": str(self.crops.path),
                "prepared": self.crops.prepared}

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
            taps = [] if self.feature_sink is not None else None
            points, confidence = self.detect_view(key, view.affine, taps)
            keypoints[c, view.frame], scores[c, view.frame] = points, confidence
            if taps:  # a view without crops has no maps
                self.feature_sink.add(key, view.frame, np.concatenate(taps))
        return keypoints, scores

    def detect_view(self, key: str, affines: np.ndarray, taps: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (N, 17, 2) in frame pixels and scores (N, 17) for the N crops of view ``key``; with a list
        ``taps``, the same pass appends each batch's "features" map (unflipped, float16 numpy) to it."""
        from poselift.detection.heatmaps import predict_crops, to_frame_pixels
        from poselift.keypoint_formats import scores_to_h36m17, to_h36m17

        n, size = len(affines), self.batch_size
        model = self.model if taps is None else _FeatureTap(self.model, taps, self.flip_test)
        found = [self.precision.run(predict_crops, model,
                                    np.stack([self.crops.crop(key, i) for i in range(b, min(n, b + size))]),
                                    self.input_size, self.crops.crop_size, self.flip_test, self.device)
                 for b in range(0, n, size)]
        if not found:
            return np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32)
        points = to_frame_pixels(np.concatenate([p for p, _ in found]), affines)
        scores = np.concatenate([c for _, c in found])
        if self.keypoint_format != "h36m":  # an official COCO-17 network
            points, scores = to_h36m17(points, self.keypoint_format), scores_to_h36m17(scores, self.keypoint_format)
        return points.astype(np.float32), scores.astype(np.float32)


class _FeatureTap:
    """The network as :func:`~poselift.detection.heatmaps.predict_crops` calls it, keeping the "features" of
    each batch's unflipped pass in ``taps`` (with the flip test, predict_crops calls the network twice per
    batch, unflipped first): detection and features from one forward pass, the detections unchanged."""

    def __init__(self, model, taps: list, flip: bool):
        self.model, self.taps, self.flip, self.calls = model, taps, flip, 0
        self.keypoint_format = getattr(model, "keypoint_format", None)

    def __call__(self, images):
        out = self.model(images)
        if not self.flip or self.calls % 2 == 0:
            self.taps.append(out["features"].detach().float().cpu().numpy().astype(np.float16))
        self.calls += 1
        return out


def load_network(kind: str, checkpoint, device="cpu"):
    """The heatmap network of detector ``kind`` from a poselift checkpoint: (model in eval mode on the device,
    device, input size (H, W) it was trained at, its keypoint format, the checkpoint dict), or an InputError when the checkpoint
    is another model's or its channel attention does not match ``kind``."""
    import torch

    from poselift.training.checkpoint import instantiate, read_checkpoint
    from poselift.training.stage import resolve_device

    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    ckpt = read_checkpoint(checkpoint)
    cls, attention = NETWORKS[kind]
    if ckpt.get("model") != cls:
        raise InputError(checkpoint, f"a '{ckpt.get('model')}' checkpoint, not a {kind} detector's ({cls})")
    if attention is not None and bool(ckpt["args"].get("attention")) != attention:
        which = "has" if ckpt["args"].get("attention") else "has no"
        raise InputError(checkpoint, f"the network {which} channel attention: use --detector "
                                     f"{'hrnet-att' if ckpt['args'].get('attention') else 'hrnet'}")
    model = instantiate(ckpt, checkpoint, device)
    stage = ckpt.get("stage") or {}
    input_size = tuple(int(v) for v in (ckpt.get("input_size") or stage.get("input_size") or (256, 192)))
    keypoint_format = ckpt["args"].get("keypoint_format", getattr(model, "keypoint_format", "h36m"))
    _check_joints(checkpoint, keypoint_format, getattr(model, "num_joints", None))
    return model, device, input_size, keypoint_format, ckpt


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
