"""Training losses, shared by every model. Poses are (..., J, 3) tensors in metres.

Two layers: plain tensor functions (``mpjpe``, ``uncertainty_loss``, ``wmpjpe``, ``tcloss``, ``mpjve``) and
loss *terms* ``term(out, batch) -> scalar`` that read a model's output dict and the batch (``targets_3d``
(B, T_out, J, 3) or (B, J, 3), optional ``mask`` (B, T_out)). :data:`LOSSES` names the terms; a stage in
params.yaml lists names and weights and the training loop sums ``weight * LOSSES[name](out, batch)``.
"""

from __future__ import annotations

import torch

from poselift.skeleton import MIXSTE_JOINT_WEIGHTS


def mpjpe(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error: mean over joints (and batch/frames) of ||pred_i - target_i||_2."""
    return torch.linalg.vector_norm(pred - target, dim=-1).mean()


def uncertainty_loss(pred: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """POT's uncertainty loss (Eq. 13): mean over joints (and batch/frames) of
    ||(pred_i - target_i) / sigma_i||^2 + log(||sigma_i||^2).

    Read literally: the division is elementwise over x, y, z (sigma_i is a per-axis standard deviation,
    as in UG-sampling, Eq. 9), the first norm is squared Euclidean, and the log is of the squared
    Euclidean norm of sigma_i, not a sum of per-axis logs. For a residual r the minimising sigma is
    sigma_c = sqrt(|r_c| * ||r||_1). sigma must be positive.
    """
    scaled = (pred - target) / sigma
    return (scaled.square().sum(dim=-1) + torch.log(sigma.square().sum(dim=-1))).mean()


def _frames(batch: dict) -> torch.Tensor:
    """Targets as (B, T_out, J, 3): a seq2frame batch's (B, J, 3) becomes (B, 1, J, 3)."""
    target = batch["targets_3d"]
    return target[:, None] if target.ndim == 3 else target


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` (B, T, ...) over the frames where ``mask`` (B, T) is True (all if None)."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype).reshape(*mask.shape, *([1] * (values.ndim - 2)))
    per_frame = values[0, 0].numel()
    return (values * m).sum() / (m.sum() * per_frame).clamp(min=1)


# --- Plain MPJPE of the final pose (VideoPose3D, Martinez et al., PoseFormer; any model) --------------------


def mpjpe_term(out: dict, batch: dict) -> torch.Tensor:
    """MPJPE of ``pose_3d`` against ``targets_3d`` (B, T_out, J, 3), over the frames ``mask`` keeps (if any)."""
    return _masked_mean(torch.linalg.vector_norm(out["pose_3d"] - _frames(batch), dim=-1), batch.get("mask"))


# --- MixSTE (Zhang et al., CVPR 2022, Sec. 3.3): L = L_w + lambda_t L_t + lambda_m L_m (Eq. 9) -------------
# Weights: params.yaml's MixSTE stages, the official run.py's (wmpjpe 1.0, tcloss 0.5, mpjve 2.0).


def wmpjpe(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    """MixSTE's weighted MPJPE (Eq. 10): mean over frames and joints of w_j * ||pred_j - target_j||_2.

    Poses (B, T, J, 3), weights (J,). Eq. 10 writes a squared norm; the official code (weighted_mpjpe)
    uses the plain norm, so unit weights give exactly MPJPE. Not normalised by the weights' sum.
    """
    return _masked_mean(weights * torch.linalg.vector_norm(pred - target, dim=-1), mask)


def tcloss(pred: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Temporal consistency loss (Hossain & Little, as in MixSTE's T-loss): mean over consecutive frame
    pairs, joints and x/y/z of w_j * (p_{t+1,j} - p_{t,j})^2. Penalises any motion of the prediction;
    independent of the target. Zero for fewer than 2 frames."""
    if pred.shape[1] < 2:
        return pred.sum() * 0.0
    pairs = None if mask is None else mask[:, 1:] & mask[:, :-1]
    return _masked_mean(weights[:, None] * torch.diff(pred, dim=1).square(), pairs)


def mpjve(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean per-joint velocity error (VideoPose3D; MixSTE's MPJVE loss): mean over consecutive frame pairs
    and joints of ||(p_{t+1} - p_t) - (gt_{t+1} - gt_t)||_2. Zero for fewer than 2 frames."""
    if pred.shape[1] < 2:
        return pred.sum() * 0.0
    pairs = None if mask is None else mask[:, 1:] & mask[:, :-1]
    velocity_error = torch.diff(pred, dim=1) - torch.diff(target, dim=1)
    return _masked_mean(torch.linalg.vector_norm(velocity_error, dim=-1), pairs)


def _mixste_weights(pose: torch.Tensor) -> torch.Tensor:
    """MIXSTE_JOINT_WEIGHTS (Sec. 4.2: torso 1, head 1.5, middle limb 2.5, terminal limb 4) as a tensor."""
    if pose.shape[-2] != len(MIXSTE_JOINT_WEIGHTS):
        raise ValueError(f"MixSTE joint weights are for {len(MIXSTE_JOINT_WEIGHTS)} joints, got {pose.shape[-2]}")
    return torch.as_tensor(MIXSTE_JOINT_WEIGHTS, dtype=pose.dtype, device=pose.device)


def wmpjpe_term(out: dict, batch: dict) -> torch.Tensor:
    pred = out["pose_3d"]
    return wmpjpe(pred, batch["targets_3d"], _mixste_weights(pred), batch.get("mask"))


def tcloss_term(out: dict, batch: dict) -> torch.Tensor:
    pred = out["pose_3d"]
    return tcloss(pred, _mixste_weights(pred), batch.get("mask"))


def mpjve_term(out: dict, batch: dict) -> torch.Tensor:
    return mpjve(out["pose_3d"], batch["targets_3d"], batch.get("mask"))


# --- STA (attention paper, Sec. II.B.5): L = lambda_s L_s + lambda_t L_t (Eq. 15) ---------------------------
# Both terms are MPJPE ("the mean of MPJPE"): Eq. 13-14 write sums of plain L2 norms; we average instead
# (a constant factor the lambdas absorb). The paper gives no lambda values; params.yaml's STA stages use 1 and 1
# (sta_spatial 1.0, sta_temporal 1.0: our choice).


def sta_spatial_term(out: dict, batch: dict) -> torch.Tensor:
    """L_s (Eq. 13): MPJPE of the spatial transformer's per-frame 3D ``pose_3d_spatial`` (B, T, J, 3) over
    all M = T input frames of the window, each against its own ground truth, as Eq. 13 sums over the M
    selected 2D poses (the mean instead of the sum: a constant factor lambda_s absorbs).

    The T targets are the batch's ``targets_3d_frames`` (B, T, J, 3) with ``mask_frames`` (B, T) (valid
    annotations), which the lifting task adds for a seq2frame model when a stage uses this term; a seq2seq
    batch's ``targets_3d`` (B, T, J, 3) with ``mask`` serves as well. A batch with only the centre frame's
    target is refused (ValueError); ``sta_spatial_centre`` is the centre-frame-only reading.
    """
    pred = out["pose_3d_spatial"]
    if "targets_3d_frames" in batch:
        target, mask = batch["targets_3d_frames"], batch.get("mask_frames")
    else:
        target, mask = _frames(batch), batch.get("mask")
    if target.shape[1] != pred.shape[1]:
        raise ValueError(f"sta_spatial needs the 3D of all {pred.shape[1]} window frames (targets_3d_frames), "
                         f"got {target.shape[1]} target frame(s); sta_spatial_centre uses the centre frame only")
    return _masked_mean(torch.linalg.vector_norm(pred - target, dim=-1), mask)


def sta_spatial_centre_term(out: dict, batch: dict) -> torch.Tensor:
    """L_s on the centre frame (T - 1) // 2 only (seq2frame targets), the reading before Eq. 13 was followed;
    with T target frames (and ``mask``) every frame counts, as in ``sta_spatial``."""
    pred, target = out["pose_3d_spatial"], _frames(batch)
    if target.shape[1] == 1 and pred.shape[1] != 1:
        centre = (pred.shape[1] - 1) // 2
        pred = pred[:, centre:centre + 1]
    mask = batch.get("mask") if target.shape[1] > 1 else None
    return _masked_mean(torch.linalg.vector_norm(pred - target, dim=-1), mask)


def sta_temporal_term(out: dict, batch: dict) -> torch.Tensor:
    """L_t (Eq. 14): MPJPE of the final (temporal transformer) pose ``pose_3d``."""
    return mpjpe_term(out, batch)


# --- POT + UGRN (Li et al., AAAI 2023): stage I Eq. 12; stage II Eq. 14 + 0.001 Eq. 13 ---------------------
# Weights per stage: params.yaml's POT experiments (stage I pot_stage1 1.0; stage II pot_refine 1.0 and
# pot_uncertainty 0.001, with POT frozen). Single-frame: targets (B, 17, 3) or (B, 1, 17, 3).


def pot_stage1_term(out: dict, batch: dict) -> torch.Tensor:
    """Eq. 12: MPJPE of POT's pose Y~ (``pose_3d_stage1`` of POTUGRN, ``pose_3d`` of a bare POT)."""
    return mpjpe(out.get("pose_3d_stage1", out["pose_3d"]), _frames(batch))


def pot_refine_term(out: dict, batch: dict) -> torch.Tensor:
    """Eq. 14: MPJPE of UGRN's refined pose Y^ (``pose_3d``)."""
    return mpjpe_term(out, batch)


def pot_uncertainty_term(out: dict, batch: dict) -> torch.Tensor:
    """Eq. 13 on POT's pose Y~ and UGRN's ``sigma``."""
    return uncertainty_loss(out["pose_3d_stage1"], _frames(batch), out["sigma"])


LOSSES = {  # name -> term(out, batch), the names params.yaml stages use
    "mpjpe": mpjpe_term,
    "pot_stage1": pot_stage1_term, "pot_refine": pot_refine_term, "pot_uncertainty": pot_uncertainty_term,
    "wmpjpe": wmpjpe_term, "tcloss": tcloss_term, "mpjve": mpjve_term,
    "sta_spatial": sta_spatial_term, "sta_spatial_centre": sta_spatial_centre_term,
    "sta_temporal": sta_temporal_term,
}
