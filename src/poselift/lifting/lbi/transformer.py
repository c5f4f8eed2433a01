"""The plain Transformer Layer of [L] (Method, "Transformer Layer"): MSA over the keypoint tokens, MCA from
the keypoint tokens to the image tokens, FFN, with Eq. 1's attention A(Q, K, V) = softmax(QK^T / sqrt(d)) V
in h heads (d = the per-head width, as every released multi-head code scales).

Unstated in the paper and chosen here (spec 3.1, L1): pre-LayerNorm residual sub-layers, GELU FFN of
``mlp_ratio`` x d, dropout on the sub-layer outputs. Image tokens pass through unchanged (only the
pose-guided layer updates them, :mod:`.pose_guided`). Each layer returns its keypoint -> image attention
(B, h, N, M), which the feature selection (:mod:`.pruning`) and the background-attention diagnostic read.
"""

from __future__ import annotations

import torch
from torch import nn


def heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B, L, d) -> (B, h, L, d / h)."""
    b, n, d = x.shape
    return x.view(b, n, h, d // h).transpose(1, 2)


def merge(x: torch.Tensor) -> torch.Tensor:
    """(B, h, L, d / h) -> (B, L, d)."""
    b, h, n, c = x.shape
    return x.transpose(1, 2).reshape(b, n, h * c)


def attention_map(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Eq. 1's softmax(QK^T / sqrt(d)) over the keys: (B, h, N, c), (B, h, M, c) -> (B, h, N, M)."""
    return torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)


class MultiHeadAttention(nn.Module):
    """Eq. 1 in h heads, queries from ``x`` and keys/values from ``context`` (MSA: context = x; MCA: the image
    tokens). Returns (output (B, N, d), attention (B, h, N, M))."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.num_heads
        a = attention_map(heads(self.q(x), h), heads(self.k(context), h))
        return self.drop(self.out(merge(a @ heads(self.v(context), h)))), a


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mlp_ratio: float, dropout: float):
        hidden = int(round(dim * mlp_ratio))
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))


class TransformerLayer(nn.Module):
    """MSA -> MCA -> FFN on the keypoint tokens; ``forward(t_j, t_i) -> (t_j', t_i, attention)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.norm_self, self.self_attn = nn.LayerNorm(dim), MultiHeadAttention(dim, num_heads, dropout)
        self.norm_query, self.norm_image = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.norm_ffn, self.ffn = nn.LayerNorm(dim), FeedForward(dim, mlp_ratio, dropout)

    def forward(self, t_j: torch.Tensor, t_i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.norm_self(t_j)
        t_j = t_j + self.self_attn(x, x)[0]
        update, a = self.cross_attn(self.norm_query(t_j), self.norm_image(t_i))
        t_j = t_j + update
        t_j = t_j + self.ffn(self.norm_ffn(t_j))
        return t_j, t_i, a
