"""Building blocks the lifting models share: the input check, the parameter count, and the transformer parts.

The transformer models (POT, MixSTE, PoseFormer, STA) all use one multi-head self-attention,
:class:`Attention`; POT's two variants (PO-SA, UG-SA) only change its logits through :meth:`Attention.forward`'s
``bias`` and ``key_temperature``. MixSTE and PoseFormer/STA (both built on timm's ViT block, as their official
code is) also share the feed-forward part :class:`Mlp`, stochastic depth :class:`DropPath` and the pre-LN
:class:`Block`; POT's layer (its own parameter names and LayerNorm eps) is in :mod:`poselift.lifting.pot`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def check_inputs(x: torch.Tensor, num_joints: int) -> None:
    """``inputs_2d`` must be (B, T, J, 2)."""
    if x.ndim != 4 or x.shape[-2:] != (num_joints, 2):
        raise ValueError(f"inputs_2d must be (B, T, {num_joints}, 2), got {tuple(x.shape)}")


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded), as the papers count them."""
    return sum(p.numel() for p in module.parameters())


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis of x (..., N, C):

        Q, K, V = x W^Q, x W^K, x W^V, each split into h heads of C / h channels
        A = Q K^T * scale (+ bias),  head = softmax(A) V,  out = Concat(head_1, ..., head_h) W^O

    (POT Eqs. 1-2; MixSTE Eqs. 3-5 and 8; STA Eq. 6 and Eq. 10). ``qkv`` packs W^Q, W^K, W^V (output
    [Q | K | V]); ``proj`` is W^O. ``scale`` is 1 / sqrt(C / h), the per-head width, as in every official
    code (MixSTE's Eq. 3 writes sqrt(d_m)), unless ``qk_scale`` is given. ``qkv_bias`` is each paper's:
    POT's Eq. 1 has plain matrices, MixSTE's and PoseFormer's code use a bias.

    softmax(A) V is torch's ``scaled_dot_product_attention``; in training its dropout ``attn_drop`` drops
    attention weights (on CPU it draws the same random numbers as ``nn.Dropout`` on softmax(A) would).
    ``proj_drop`` is a dropout on the output.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None,
                key_temperature: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., N, C) -> (..., N, C); the leading dimensions are independent token sequences (S of them).

        ``bias`` (broadcastable to (S, h, N, N)) is added to the logits A, e.g. POT's Phi(D(i, j)) (Eq. 6).
        ``key_temperature`` (..., N), one positive value t_j a key token, divides A's column of key j:
        A_ij = q_i k_j^T * scale / t_j, e.g. UG-SA's Sum(sigma_j) (POT Eq. 11). It is applied as k_j / t_j,
        which is the same product.
        """
        lead, (n, c) = x.shape[:-2], x.shape[-2:]
        qkv = self.qkv(x.reshape(-1, n, c)).unflatten(-1, (3, self.num_heads, c // self.num_heads))
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (S, h, N, C / h)
        if key_temperature is not None:
            k = k / key_temperature.reshape(-1, 1, n, 1)
        drop = self.attn_drop if self.training else 0.0
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop, scale=self.scale)
        out = self.proj(heads.transpose(1, 2).reshape(-1, n, c))  # concatenate the heads, then W^O
        return self.proj_drop(out).reshape(*lead, n, c)


class Mlp(nn.Module):
    """Feed-forward part of a block (MixSTE Sec. 3.2, STA Eq. 7): fc2(drop(GELU(fc1(x)))), then dropout."""

    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch for a random fraction ``p`` of the token
    sequences (one draw per index of every dimension but the last two) and rescale the rest by 1 / (1 - p)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(*x.shape[:-2], 1, 1, device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1.0 - self.p)


class Block(nn.Module):
    """Pre-LN transformer block on token sequences (..., N, C): x + MSA(LN(x)) (MixSTE Eq. 7), then
    x + MLP(LN(x)), each branch through :class:`DropPath`. LayerNorm eps 1e-6, as the official codes."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop: float,
                 attn_drop: float, drop_path: float, qk_scale: float | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def attention_step(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.attn(self.norm1(x)))

    def mlp_step(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp_step(self.attention_step(x))
