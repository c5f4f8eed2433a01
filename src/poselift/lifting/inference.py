"""Running a lifting model over every window of a split: 3D predictions in mm, stitched back to frames,
with optional test-time flip averaging; and the validation metric training selects checkpoints by."""

from __future__ import annotations

import numpy as np

MM = 1000.0  # the data is in mm, models work in metres


def predict(model, views, windows, batch_size: int, flip_test: bool, device) -> np.ndarray:
    """(N, 17, 3) root-relative predictions in mm for every row of ``views`` some window answers for
    (NaN elsewhere). With ``flip_test``: (f(x) + flip(f(flip(x)))) / 2."""
    import torch

    from poselift.data.windows import Batches, flip_average

    def pose(x):
        return model(x)["pose_3d"]

    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.no_grad():
            for batch in Batches(views, windows, batch_size, shuffle=False, as_torch=True, device=device):
                x = batch["inputs_2d"]
                y = flip_average(pose, x) if flip_test else pose(x)
                outputs.append(y.float().cpu().numpy())
    finally:
        model.train(was_training)
    out = np.concatenate(outputs) * MM if outputs else np.zeros((0, 1, 17, 3), np.float32)
    if windows.kind == "frame":
        if out.shape[1] != 1:
            raise ValueError(f"a centre-frame model must return 1 frame, got {out.shape[1]}")
        out = out[:, 0]
    elif out.shape[1] != windows.length:
        raise ValueError(f"a seq2seq model must return {windows.length} frames, got {out.shape[1]}")
    return windows.stitch(out, len(views))


def validation_mpjpe(model, views, windows, batch_size: int, flip_test: bool, device) -> float:
    """Protocol-1 MPJPE (mm) over the valid rows the windows predict."""
    from poselift.metrics import joint_errors

    pred = predict(model, views, windows, batch_size, flip_test, device)
    rows = views.valid & np.isfinite(pred).all(axis=(1, 2))
    return float(joint_errors(pred[rows], views.targets_3d[rows]).mean())
