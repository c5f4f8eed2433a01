"""The Pose-guided Transformer Layer (PGTL) of [L], Eq. 2: one keypoint -> image attention map used both ways.

    A   = softmax(Q K^T / sqrt(d))    in R^{N x HW}, Q from the keypoint tokens, K from the image tokens
    T^_J = A V_I + T_J                 keypoints gather image values (as an MCA would)
    T^_I = A^T V_J + T_I               image tokens gather keypoint values through the *same* A

Because A is normalised over the image tokens *before* it is transposed, an image token's update is weighted
by its column sum of A: tokens the keypoints attend to gather much, background tokens almost nothing
("normalisation before transposition", the paper's choice). The layer is MSA -> this dual attention -> FFN;
the FFN runs on the keypoint tokens only, so the image tokens change only through A^T V_J (spec L3).

``normalisation`` switches Table 11's rows:

- ``"before"`` (Eq. 2): A^T of the softmax over the image tokens.
- ``"after"``: transpose first, then normalise: the image update is softmax over the *keypoints* of the
  transposed logits, so every image token (background too) gets a unit-weight update.
- ``"double"``: our reading of the paper's "double" (not defined there): A as in Eq. 2, and A^T normalised
  again over the keypoints (each row of A^T rescaled to sum to 1): the keypoints' relative weights of
  Eq. 2 per image token, but no longer the column-sum gating.
- ``"separate"`` ("two cross-attentions"): the image tokens query the keypoint tokens with their own Q/K
  projections (an ordinary second MCA); A is not shared.

Multi-head: each head has its own A (B, h, N, HW); the layer returns them (the feature selection averages
over heads). Unstated and chosen as in :mod:`.transformer`: pre-LN, output projections, dropout.
"""

from __future__ import annotations

import torch
from torch import nn

from poselift.lifting.lbi.transformer import FeedForward, MultiHeadAttention, attention_map, heads, merge

NORMALISATIONS = ("before", "after", "double", "separate")


def dual_attention(q: torch.Tensor, k: torch.Tensor, v_i: torch.Tensor, v_j: torch.Tensor,
                   normalisation: str = "before", image_attention: torch.Tensor | None = None):
    """Eq. 2's two updates per head: q (..., N, c) from the keypoints, k and v_i (..., M, c) from the image
    tokens, v_j (..., N, c) from the keypoints. Returns (A V_I (..., N, c), A_I V_J (..., M, c), A (..., N, M),
    A_I (..., M, N)) where A_I is A^T for ``"before"`` (see the module docstring for the others);
    ``image_attention`` is A_I itself for ``"separate"``."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    a = attention_map(q, k)
    if normalisation == "before":
        a_i = a.transpose(-2, -1)
    elif normalisation == "after":
        a_i = torch.softmax((q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).transpose(-2, -1), dim=-1)
    elif normalisation == "double":
        t = a.transpose(-2, -1)
        a_i = t / t.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(t.dtype).tiny)
    else:
        if image_attention is None:
            raise ValueError("normalisation 'separate' needs the image tokens' own attention (image_attention)")
        a_i = image_attention
    return a @ v_i, a_i @ v_j, a, a_i


class PoseGuidedLayer(nn.Module):
    """MSA -> pose-guided dual attention (Eq. 2) -> FFN; ``forward(t_j, t_i) -> (t_j', t_i', attention)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0,
                 normalisation: str = "before"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
        self.num_heads, self.normalisation = num_heads, normalisation
        self.norm_self, self.self_attn = nn.LayerNorm(dim), MultiHeadAttention(dim, num_heads, dropout)
        self.norm_query, self.norm_image = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_image, self.v_joint = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out_joint, self.out_image = nn.Linear(dim, dim), nn.Linear(dim, dim)
        if normalisation == "separate":  # Table 11's "two cross-attentions": the reverse direction's own Q/K
            self.q_image, self.k_joint = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.norm_ffn, self.ffn = nn.LayerNorm(dim), FeedForward(dim, mlp_ratio, dropout)

    def forward(self, t_j: torch.Tensor, t_i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.num_heads
        x = self.norm_self(t_j)
        t_j = t_j + self.self_attn(x, x)[0]
        xj, xi = self.norm_query(t_j), self.norm_image(t_i)
        reverse = None
        if self.normalisation == "separate":
            reverse = attention_map(heads(self.q_image(xi), h), heads(self.k_joint(xj), h))
        upd_j, upd_i, a, _ = dual_attention(heads(self.q(xj), h), heads(self.k(xi), h), heads(self.v_image(xi), h),
                                            heads(self.v_joint(xj), h), self.normalisation, reverse)
        t_j = t_j + self.drop(self.out_joint(merge(upd_j)))
        t_i = t_i + self.drop(self.out_image(merge(upd_i)))
        t_j = t_j + self.ffn(self.norm_ffn(t_j))
        return t_j, t_i, a
