"""Lifting models: plain ``torch.nn.Module``s with explicit constructor arguments.

Common interface: ``forward(inputs_2d)`` takes screen-normalised 2D keypoints (B, T, 17, 2) and returns a
dict of tensors with at least ``"pose_3d"``: root-relative camera-frame 3D in metres, (B, T_out, 17, 3) with
T_out = 1 for single-frame / centre-frame models and T_out = T for seq2seq models.
"""
