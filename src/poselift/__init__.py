"""poselift: reproducible monocular 3D human pose estimation (images -> 2D keypoints -> 3D poses)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``poselift.load_model`` is imported on first use, so ``import poselift`` stays light (no torch)."""
    if name == "load_model":
        from poselift.training.checkpoint import load_model

        return load_model
    raise AttributeError(f"module 'poselift' has no attribute {name!r}")
