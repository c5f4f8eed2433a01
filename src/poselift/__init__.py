"""poselift: reproducible monocular 3D human pose estimation (images -> 2D keypoints -> 3D poses)."""

__version__ = "0.1.0"
