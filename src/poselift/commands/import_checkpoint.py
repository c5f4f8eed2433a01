"""``poselift import-checkpoint --format {mixste,poseformer,videopose3d,hrnet} IN OUT``: an official release's
checkpoint as a poselift checkpoint (``poselift.load_model`` and ``poselift evaluate --checkpoint`` read it).

The official training scripts of the lifters (all derived from VideoPose3D's run.py) save a dict with the
weights under ``model_pos`` beside ``epoch``, ``lr``, ``optimizer`` and a numpy ``random_state``, with
DataParallel's ``module.`` prefix for MixSTE and PoseFormer; HRNet's model zoo files are plain state dicts.
The file is read with ``torch.load(weights_only=True)`` (plain numpy arrays allowed for that random state);
the weights go through the model module's ``convert_official_state_dict``, which infers the constructor
arguments from the tensor shapes and maps the names; the result loads into the poselift model with
``strict=True``, so its outputs are the official model's.

What the checkpoint records beside the weights depends on the model's training task (its class's ``task``,
"lifting" when absent): a lifter's input length ``window`` and ``output_frames``; an image model's (e.g.
HRNet, ``task = "heatmaps"``) ``input_size`` [height, width] and ``keypoint_format``.
"""

from __future__ import annotations

from pathlib import Path

from poselift.commands import RegistryKeys

WEIGHT_KEYS = ("model_pos", "state_dict", "model")  # where releases keep the weights, in order of preference


def add_parser(sub):
    p = sub.add_parser("import-checkpoint", help="convert an official MixSTE / PoseFormer / VideoPose3D / "
                                                 "HRNet checkpoint into a poselift checkpoint")
    p.add_argument("--format", required=True, metavar="FORMAT",
                   choices=RegistryKeys("poselift.models", "CHECKPOINT_FORMATS"),
                   help="which release the file comes from: %(choices)s")
    p.add_argument("input", type=Path, help="official checkpoint (.bin / .pth)")
    p.add_argument("output", type=Path, help="poselift checkpoint to write")
    p.add_argument("--window", type=int, help="input frames T of a lifting model (default: the model's "
                                              "receptive field / num_frames); not for image models")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                   help="a constructor argument the weights do not determine (e.g. num_heads=8, dropout=0.25; "
                        "hrnet: keypoint_format=coco, input_size=[256,192])")
    p.set_defaults(run=run)


def run(args) -> int:
    from poselift.training.checkpoint import save_checkpoint
    from poselift.errors import InputError

    hints = {}
    for item in args.arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError("--arg", f"expected KEY=VALUE, got '{item}'")
        hints[key] = _value(value)
    if args.window is not None and args.window < 1:
        raise InputError("--window", f"must be >= 1 (got {args.window})")
    ckpt = convert(args.format, args.input, hints, args.window)
    save_checkpoint(args.output, ckpt)
    if "window" in ckpt:
        what = f"window {ckpt['window']}"
    else:
        what = ", ".join([f"input {'x'.join(map(str, ckpt['input_size']))}"] * ("input_size" in ckpt) +
                         [f"{ckpt['keypoint_format']} keypoints"] * ("keypoint_format" in ckpt)) or "image model"
    print(f"wrote {args.output}: {ckpt['model']}({', '.join(f'{k}={v}' for k, v in ckpt['args'].items())}), "
          f"{what}, from {args.format} checkpoint {args.input}")
    return 0


def convert(fmt: str, path: Path, hints: dict | None = None, window: int | None = None) -> dict:
    """The poselift checkpoint dict (not yet saved) for official checkpoint ``path`` of format ``fmt``."""
    import torch

    from poselift.models import CHECKPOINT_FORMATS, MODELS, build_model
    from poselift.training.checkpoint import load_weights_only
    from poselift.errors import InputError

    converter, name = CHECKPOINT_FORMATS[fmt], fmt
    lifting = getattr(MODELS[name], "task", "lifting") == "lifting"
    if window is not None and not lifting:
        raise InputError("--window", f"{fmt} is an image model ({MODELS[name].task}), which has no input "
                                     f"window")
    raw = load_weights_only(Path(path), allow_numpy=True)
    weights = official_weights(raw, path)
    try:
        args, state_dict = converter(weights, **{"path": str(path), "source": str(path), **(hints or {})})
        model = build_model(name, args, path)
        model.load_state_dict(state_dict, strict=True)
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise InputError(path, f"not a {fmt} checkpoint this poselift can read "
                               f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    epoch = raw.get("epoch") if isinstance(raw, dict) else None
    fields = _lifting_fields(model, window, path) if lifting else _image_fields(model)
    return {"model": name, "args": args, **fields,
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "epoch": int(epoch) if isinstance(epoch, (int, float)) else 0,
            "source": {"format": fmt, "file": str(path), "torch": str(torch.__version__)}}


def _lifting_fields(model, window: int | None, path) -> dict:
    """A lifter's input length (``--window`` or the model's own) and its output frames."""
    from poselift.errors import InputError
    from poselift.models import model_window, output_frames

    window = window or model_window(model)
    if not window:
        raise InputError(path, "cannot tell the model's input length: pass --window T")
    return {"window": int(window), "output_frames": output_frames(model)}


def _image_fields(model) -> dict:
    """An image model's crop size [height, width] and joint order (those of the two it has)."""
    fields = {}
    if getattr(model, "input_size", None) is not None:
        fields["input_size"] = [int(s) for s in model.input_size]
    if getattr(model, "keypoint_format", None) is not None:
        fields["keypoint_format"] = str(model.keypoint_format)
    return fields


def official_weights(raw, path) -> dict:
    """The state dict inside an official checkpoint (``model_pos``, ``state_dict`` or ``model``, or the
    file itself when it is one), without DataParallel's ``module.`` prefix."""
    import torch

    from poselift.errors import InputError

    if not isinstance(raw, dict):
        raise InputError(path, f"expected a dict of weights, got {type(raw).__name__}")
    for key in WEIGHT_KEYS:
        if isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    weights = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if not weights or len(weights) != len(raw):
        keys = ", ".join(map(str, list(raw)[:8]))
        raise InputError(path, f"no state dict of tensors found (top-level keys: {keys}; looked for "
                               f"{', '.join(WEIGHT_KEYS)})")
    return {str(k).removeprefix("module."): v for k, v in weights.items()}


def _value(text: str):
    """'8' -> 8, '0.25' -> 0.25, 'true' -> True, else the string."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool, str, list)) else text
