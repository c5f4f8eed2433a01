"""What a lifting stage or evaluation reads: a prepared file with its 2D (a detections file, or the prepared
file's own 2D), one split of it as :class:`~poselift.data.windows.Views`, and the windows a model takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from poselift.errors import InputError


def load_data(prepared: Path, detections: Path | None):
    """(PreparedDataset, Detections or None); detections must belong to this prepared file."""
    from poselift.data.detections import load_detections
    from poselift.data.prepared import content_hash, load_prepared

    data = load_prepared(prepared)
    if detections is None:
        return data, None
    det = load_detections(detections)
    if det.prepared != content_hash(prepared):
        raise InputError(detections, f"made from another prepared dataset than {prepared} (content hash differs)")
    return data, det


def split_views(data, det, split: str, prepared: Path, detections: Path | None):
    """The :class:`~poselift.data.windows.Views` of one split; errors name the files they come from."""
    from poselift.data.windows import build_views

    return build_views(data, det, split=split, prepared_path=prepared,
                       detections_path=detections if detections is not None else "detections")


def make_windows(views, output_frames: str, window: int, stride: int = 1):
    """Windows for a model's ``output_frames`` ("centre": one T-frame window per valid frame; "all": MixSTE's
    T-frame chunks, the last one shifted back to end at its view's end); ``stride`` > 1 keeps every
    stride-th window (validation on a subset)."""
    from poselift.data.windows import Windows, frame_windows, sequence_windows

    if output_frames == "centre":
        centres = np.flatnonzero(views.valid)[::stride]
        return frame_windows(views, window, centres)
    if output_frames == "all":
        w = sequence_windows(views, window)
        if stride > 1:
            keep = slice(None, None, stride)
            w = Windows(w.kind, w.length, w.first[keep], w.lo[keep], w.hi[keep], w.own[keep])
        return w
    raise ValueError(f"output_frames must be 'centre' or 'all', got {output_frames!r}")
