"""``poselift import-checkpoint --format {mixste,poseformer,videopose3d} IN OUT``: an official release's
checkpoint as a poselift checkpoint (``poselift.load_model`` and ``poselift evaluate --checkpoint`` read it).

The official training scripts (all derived from VideoPose3D's run.py) save a dict with the weights under
``model_pos`` beside ``epoch``, ``lr``, ``optimizer`` and a numpy ``random_state``, with DataParallel's
``module.`` prefix for MixSTE and PoseFormer. The file is read with ``torch.load(weights_only=True)``
(plain numpy arrays allowed for that random state); the weights go through the model module's
``convert_official_state_dict``, which infers the constructor arguments from the tensor shapes and maps
the names; the result loads into the poselift model with ``strict=True``, so its outputs are the
official model's.
"""

from __future__ import annotations

from pathlib import Path

from poselift.commands import RegistryKeys

WEIGHT_KEYS = ("model_pos", "state_dict", "model")  # where releases keep the weights, in order of preference


def add_parser(sub):
    p = sub.add_parser("import-checkpoint", help="convert an official MixSTE / PoseFormer / VideoPose3D "
                                                 "checkpoint into a poselift checkpoint")
    p.add_argument("--format", required=True, metavar="FORMAT",
                   choices=RegistryKeys("poselift.models", "CHECKPOINT_FORMATS"),
                   help="which release the file comes from: %(choices)s")
    p.add_argument("input", type=Path, help="official checkpoint (.bin / .pth)")
    p.add_argument("output", type=Path, help="poselift checkpoint to write")
    p.add_argument("--window", type=int, help="input frames T (default: the model's receptive field / num_frames)")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                   help="a constructor argument the weights do not determine (e.g. num_heads=8, dropout=0.25)")
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
    print(f"wrote {args.output}: {ckpt['model']}({', '.join(f'{k}={v}' for k, v in ckpt['args'].items())}), "
          f"window {ckpt['window']}, from {args.format} checkpoint {args.input}")
    return 0


def convert(fmt: str, path: Path, hints: dict | None = None, window: int | None = None) -> dict:
    """The poselift checkpoint dict (not yet saved) for official checkpoint ``path`` of format ``fmt``."""
    import torch

    from poselift.models import CHECKPOINT_FORMATS, build_model, model_window, output_frames
    from poselift.training.checkpoint import load_weights_only
    from poselift.errors import InputError

    converter, name = CHECKPOINT_FORMATS[fmt], fmt
    raw = load_weights_only(Path(path), allow_numpy=True)
    weights = official_weights(raw, path)
    try:
        args, state_dict = converter(weights, **{"path": str(path), "source": str(path), **(hints or {})})
        model = build_model(name, args, path)
        model.load_state_dict(state_dict, strict=True)
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise InputError(path, f"not a {fmt} checkpoint this poselift can read "
                               f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    window = window or model_window(model)
    if not window:
        raise InputError(path, "cannot tell the model's input length: pass --window T")
    epoch = raw.get("epoch") if isinstance(raw, dict) else None
    return {"model": name, "args": args, "window": int(window), "output_frames": output_frames(model),
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "epoch": int(epoch) if isinstance(epoch, (int, float)) else 0,
            "source": {"format": fmt, "file": str(path), "torch": str(torch.__version__)}}


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
