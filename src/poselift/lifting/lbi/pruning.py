"""The Adaptive Feature Selection Module of [L] (Fig. 6): rank the image tokens by the last Stage-1 layer's
keypoint -> image attention, summed over the keypoints (and averaged over the heads, spec L4), and keep the
top r x HW of each sample (k = max(1, round(r x HW)), ties broken by the lower index; r = 0.3 by default,
Table 7 sweeps 0.01 ... 1). The kept tokens are gathered with their position embedding already added
(:mod:`.tokens`), in descending score order.
"""

from __future__ import annotations

import math

import torch


def kept_count(retention: float, tokens: int) -> int:
    """k = round(r x HW) (halves up), at least 1 and at most HW."""
    if not 0 < retention <= 1:
        raise ValueError(f"retention r must be in (0, 1], got {retention}")
    return min(tokens, max(1, int(math.floor(retention * tokens + 0.5))))


def token_scores(attention: torch.Tensor) -> torch.Tensor:
    """(B, h, N, M) keypoint -> image attention -> (B, M): mean over heads, sum over keypoints."""
    return attention.mean(dim=1).sum(dim=1)


def select_tokens(attention: torch.Tensor, tokens: torch.Tensor, retention: float):
    """Keep the top round(r x M) of ``tokens`` (B, M, d) by :func:`token_scores`; returns (kept (B, k, d),
    indices (B, k), scores (B, M))."""
    scores = token_scores(attention)
    k = kept_count(retention, tokens.shape[1])
    # a stable descending sort: equal scores keep the lower index first
    index = torch.sort(scores.detach(), dim=1, descending=True, stable=True).indices[:, :k]
    kept = torch.gather(tokens, 1, index[..., None].expand(-1, -1, tokens.shape[-1]))
    return kept, index, scores
