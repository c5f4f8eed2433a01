"""``poselift detect --prepared P.h5 --detector NAME --out D.h5``: 2D detections of a prepared dataset.

``gt`` copies the prepared file's 2D with score 1; ``synthetic`` runs the error model of
:mod:`poselift.detection.synthetic` with the ``detectors.synthetic`` block of ``--params`` (built-in
defaults, equal to the repository's params.yaml, when it is not given). The network detectors (``hrnet``,
``hrnet-att``, ``cpn``) run a checkpoint (``--checkpoint``: trained by ``poselift train`` or converted by
``poselift import-checkpoint``) on the dataset's person crops (``--images``: ``poselift render`` or
``poselift crops``; :mod:`poselift.detection.network`). Output: the detections layout of
:mod:`poselift.data.detections`, tied to the prepared file by its content hash.

A network detector's outputs are kept in a content-addressed cache (:mod:`poselift.detection.cache`;
``--cache DIR``, default ``$POSELIFT_CACHE``, else ``$SNAKEMAKE_OUTPUT_CACHE/poselift``, else
``~/.cache/poselift``; ``--no-cache`` neither reads nor writes it): the same checkpoint, crops, prepared
file, options, device type and code give a copy of the stored files instead of a network run.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from poselift.detection import DETECTORS
from poselift.detection.network import CHANNELS_LAST
from poselift.precision import PRECISIONS


def add_parser(sub):
    p = sub.add_parser("detect", help="2D detections of a prepared dataset: projected ground truth, a simulated "
                                      "detector, or a heatmap network on its crops")
    p.add_argument("--prepared", required=True, type=Path, help="prepared-dataset HDF5 file")
    p.add_argument("--detector", required=True, metavar="NAME",
                   help="; ".join(f"{k}: {v.__doc__}" for k, v in DETECTORS.items()))
    p.add_argument("--out", required=True, type=Path, help="detections HDF5 file to write")
    p.add_argument("--params", type=Path, default=None,
                   help="params.yaml whose detectors.synthetic block sets the error model "
                        "(default: the built-in values, equal to the repository's params.yaml)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic detector (default 0)")
    p.add_argument("--checkpoint", type=Path, help="network detectors: the poselift checkpoint to run")
    p.add_argument("--images", type=Path, help="network detectors: the labelled-crops file of the dataset "
                                               "(poselift render / poselift crops)")
    p.add_argument("--device", default="auto", help="network detectors: cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--batch-size", type=int, default=64, help="network detectors: crops per batch (default 64)")
    p.add_argument("--no-flip-test", dest="flip_test", action="store_false",
                   help="network detectors: no flip-test averaging (default: on, as the official HRNet test)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="network detectors: forward passes in fp32 (default) or under bf16 autocast, bf16 only "
                        "where the device has bf16 matrix units (checked at start), else one warning and fp32")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=CHANNELS_LAST,
                   help="network detectors: convolutions in channels-last memory format (default: on, faster "
                        "on the CPUs measured, see benchmarks/detectors.py)")
    p.add_argument("--features", type=Path, metavar="OUT.h5",
                   help="network detectors: also write each crop's stride-4 feature map of the same pass (float16, "
                        "keyed by view and frame: poselift.data.features), the image tokens of Lifting by Image")
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="network detectors: the detection cache (default: $POSELIFT_CACHE, else "
                        "$SNAKEMAKE_OUTPUT_CACHE/poselift, else $XDG_CACHE_HOME/poselift or ~/.cache/poselift)")
    p.add_argument("--no-cache", dest="use_cache", action="store_false",
                   help="network detectors: neither read nor write the detection cache")
    p.set_defaults(run=run)


def run(args) -> int:
    from tqdm import tqdm

    from poselift.data.detections import Detections, write_detections
    from poselift.data.prepared import content_hash, load_prepared
    from poselift.errors import InputError

    if args.detector not in DETECTORS:
        raise InputError("--detector", f"unknown detector '{args.detector}' (known: {', '.join(DETECTORS)})")
    if args.seed < 0:
        raise InputError("--seed", f"must be >= 0 (got {args.seed})")
    network = getattr(DETECTORS[args.detector], "reads_images", False)
    if network:
        for option in ("checkpoint", "images"):
            if getattr(args, option) is None:
                raise InputError(f"--{option}", f"required by the network detector '{args.detector}'")
        if args.batch_size < 1:
            raise InputError("--batch-size", f"must be >= 1 (got {args.batch_size})")
        detector = DETECTORS[args.detector](args.params, args.seed, checkpoint=args.checkpoint, images=args.images,
                                            device=args.device, batch_size=args.batch_size,
                                            flip_test=args.flip_test, precision=args.precision,
                                            channels_last=args.channels_last)
    else:
        if args.features is not None:
            raise InputError("--features", f"only network detectors compute feature maps, not '{args.detector}'")
        if args.precision != "fp32":
            raise InputError("--precision", f"only network detectors run at bf16, not '{args.detector}'")
        if args.cache is not None:
            raise InputError("--cache", f"only network detectors use the detection cache, not '{args.detector}'")
        detector = DETECTORS[args.detector](args.params, args.seed)

    if args.cache is not None and not args.use_cache:
        raise InputError("--cache", "and --no-cache: give one of them")
    prepared_hash = content_hash(args.prepared)
    crops = getattr(detector, "crops", None)
    if crops is not None and crops.prepared and crops.prepared != prepared_hash:
        raise InputError(args.images, f"rendered from another prepared file than {args.prepared} (content hash)")
    outputs = {"detections": args.out, **({"features": args.features} if args.features is not None else {})}
    cache = key = None
    if network and args.use_cache:
        from poselift.detection.cache import DetectionCache, default_dir

        cache = DetectionCache(args.cache if args.cache is not None else default_dir())
        key, inputs = cache_key(args, detector, prepared_hash)
        hit = cache.fetch(key, outputs)
        if hit is not None:
            print(f"poselift detect: cache hit {key[:12]} ({cache.root})")
            if args.features is not None:
                print(f"wrote {args.features}: feature maps {hit.get('feature_shape')} per crop")
            print(f"wrote {args.out}: {args.detector} detections for {hit.get('sequences')} sequences")
            return 0

    data = load_prepared(args.prepared)
    det = Detections(detector=args.detector, dataset=data.dataset, prepared=prepared_hash,
                     keypoints={}, scores={}, cameras={}, params=detector.settings)
    with contextlib.ExitStack() as stack:
        if args.features is not None:  # written atomically: complete, or not at all
            from poselift.data.features import FeatureWriter

            detector.feature_sink = stack.enter_context(FeatureWriter(args.features, detector.feature_attrs()))
        for seq in tqdm(data.sequences, desc=f"detect ({args.detector})", unit="seq", disable=None):
            det.keypoints[seq.key], det.scores[seq.key] = detector(seq)
            det.cameras[seq.key] = list(seq.cameras)
        write_detections(args.out, det)
    if args.features is not None:
        print(f"wrote {args.features}: feature maps {list(detector.feature_sink.shape or ())} per crop")
    print(f"wrote {args.out}: {args.detector} detections for {len(data.sequences)} sequences")
    if cache is not None:
        import sys

        shape = list(detector.feature_sink.shape or ()) if args.features is not None else None
        try:
            if cache.store(key, outputs, {"inputs": inputs, "sequences": len(data.sequences),
                                          "feature_shape": shape}):
                print(f"poselift detect: cached {key[:12]} ({cache.root})")
        except OSError as e:
            print(f"poselift: warning: detections not cached in {cache.root} ({e.strerror or e})", file=sys.stderr)
    return 0


def cache_key(args, detector, prepared_hash: str) -> tuple[str, dict]:
    """(key, the inputs it hashes) of a network detector's run: the checkpoint's and the crops file's bytes,
    the prepared file's content hash, the paths and options the output records or depends on, the device
    type, precision and torch version the floats come from, and the code fingerprint."""
    import torch

    from poselift.detection.cache import detection_key, file_digest
    from poselift.fingerprint import code_digest

    inputs = {"detector": args.detector, "checkpoint": file_digest(args.checkpoint), "images": file_digest(args.images),
              "prepared": prepared_hash, "checkpoint_path": str(args.checkpoint), "images_path": str(args.images),
              "flip_test": bool(args.flip_test), "channels_last": bool(args.channels_last),
              "precision": detector.precision.name, "device": detector.device.type,
              "batch_size": int(args.batch_size), "features": args.features is not None,
              "torch": torch.__version__, "code": code_digest("poselift.commands.detect")}
    return detection_key(inputs), inputs
