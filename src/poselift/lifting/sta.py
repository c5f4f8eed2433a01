"""STA: the 3D estimator of "Improved 2D-3D Human Pose Estimation System with Proposed Attention Mechanism"
(Sec. II.B), and PoseFormer (Zheng et al., ICCV 2021), which is STA with its two attention modules off.

Per frame, each 2D joint is a token: a linear embedding plus a joint position embedding, then ``depth``
pre-LN transformer blocks over the J joints (the spatial transformer, width ``embed_dim_ratio`` = C).
The J tokens of a frame are concatenated into one frame token of width J*C (joint-major), a frame
position embedding is added and ``depth`` blocks run over the T frames (the temporal transformer). A
learnt weighted mean over frames (a 1x1 Conv1d with the T frames as input channels) and a LayerNorm +
Linear head give the centre frame's 3D pose: (B, 1, J, 3).

STA inserts a convolutional attention module into every block (Eqs. 8 and 11):
``P' = Conv(Norm(GELU(Conv(P)))) + P`` - a residual branch of two depth-wise 1D convolutions over the
token axis; SAM (kernel 5) runs over the joints of a frame in the spatial blocks, TAM (kernel 3) over the
frames in the temporal blocks. ``sam_position`` / ``tam_position`` place them:

- ``AFTER_MSA`` (1, the default): between the MSA and the MLP, on the block's C-wide tokens.
- ``BEFORE_MSA`` (0) / ``AFTER_MLP`` (2): the other two rows of Table VIII's ablation.
- ``IN_MLP`` (3): inside the MLP in place of its activation, MLP(x) = P(x W1 + a1) W2 + a2 with P the
  module of Eq. 8, on the mlp_ratio * C hidden channels: Eqs. 9 and 12 as written ("beta denotes the P
  function in Eq. 8"). P has its own GELU; as conv2 starts at zero, such an MLP starts linear.

The paper contradicts itself: Eqs. 9 and 12 put the module in the MLP, while Sec. II.B.2 says it is
"inserted between the LN layer and MLP" and Table VIII's ablation measures before-MSA / after-MSA /
after-MLP (no in-MLP row) and concludes "this paper decided to put SAM and TAM between the MSA and MLP".
The default is that measured, stated choice (AFTER_MSA): Table VIII is the only experiment the paper
reports on placement, and its result rows (44.1 / 44.9 mm) are for modules outside the MLP; the equations
read as notation that reuses the symbol beta loosely. ``IN_MLP`` is the literal equations, for ablations.

Choices where the paper is silent or contradicts itself (see also the parameter counts below):

- Layout: tokens (N, L, C) are transposed to (N, C, L) and convolved along L with ``groups=C``
  (depth-wise, "two depth-wise convolutions with kernel size 5"; Eq. 8's note calls it a "standard"
  1x5 convolution, which for TAM's 544 channels would add 1.8M parameters a block, far above the
  paper's counts). Zero padding keeps L. SAM's L is the joint index order of H36M17, so joint i sees
  joints i-2..i+2 per convolution, i-4..i+4 through both; TAM's frame t sees t-2..t+2.
- Order, read from Eq. 8 inside out: conv1 -> GELU -> Norm -> conv2, plus the identity.
- Norm: GroupNorm over the channels of each token separately (``norm_groups`` groups of C / G
  channels, per-channel affine). Eq. 8 says the norm is "the normalization used in [15]" (PoseFormer's
  per-token LayerNorm) while the text says "group normalization"; normalising per token honours both
  and keeps the module local (torch's GroupNorm on (N, C, L) would pool statistics over every joint or
  frame). G = 8 = ``num_heads``, so each group is one attention head's channels.
- conv2 starts at zero, so a new STA computes exactly what PoseFormer computes, and official PoseFormer
  weights loaded into an STA (``strict=False``) reproduce PoseFormer's output before fine-tuning.
- The spatial transformer's per-frame 3D output X'_3D (Sec. II.B.4), on which L_s (Eq. 13) is computed,
  is a Linear(C, 3) readout of the spatial features (``spatial_head``); the temporal transformer still
  reads the C-wide features, as in PoseFormer (a literal 3-wide input would not be PoseFormer plus two
  modules, which is how Tables VI and IX compare them). Output ``"pose_3d_spatial"`` (B, T, J, 3).
- Head: PoseFormer's weighted mean over frames (the paper "adopts the PoseFormer codebase");
  ``select_centre=True`` is Sec. II.B.4's literal reading instead: the head regresses every frame and
  the centre frame is kept (no ``weighted_mean`` parameters).
- Dropout: "dropout rate 0.1" is read as PoseFormer's training drop-path rate 0.1 (its token dropout is 0).
- Initialisation as PoseFormer's code: torch defaults, zero position embeddings.

Parameter counts (:func:`poselift.lifting.layers.count_parameters`), T = 81, C = 32, depth 4, 8 heads, MLP
ratio 2: PoseFormer 9,602,885 (paper: 9.60M / 9.59M); STA 9,626,536 = PoseFormer + 23,552 (SAM 4 x 448, TAM
4 x 5,440) + 99 (spatial head). The paper's Table IX gives 9.86M for STA (+0.26M), which no reading of
"depth-wise" gives; a full (non-depth-wise) SAM/TAM would add about 7.1M.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from poselift.errors import InputError
from poselift.lifting import layers

BEFORE_MSA, AFTER_MSA, AFTER_MLP = 0, 1, 2  # positions of SAM / TAM inside a block (Table VIII)
IN_MLP = 3  # in place of the MLP's activation (Eqs. 9 and 12)
POSITIONS = (BEFORE_MSA, AFTER_MSA, AFTER_MLP, IN_MLP)


class ConvAttention(nn.Module):
    """SAM / TAM (Eqs. 8 and 11): x + conv2(Norm(GELU(conv1(x)))) on tokens (N, L, C), convolving along L.

    Both convolutions are depth-wise (one kernel per channel, zero padding, L kept); Norm is GroupNorm
    over each token's channels. conv2 starts at zero, so a new module is the identity.
    """

    def __init__(self, channels: int, kernel: int, groups: int):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd number, got {kernel}")
        if channels % groups:
            raise ValueError(f"{channels} channels are not divisible into {groups} norm groups")
        self.conv1 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2, groups=channels)
        self.norm = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2, groups=channels)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, channels = x.shape
        y = F.gelu(self.conv1(x.transpose(1, 2)))  # (N, C, L)
        y = self.norm(y.transpose(1, 2).reshape(n * length, channels))  # per token
        y = self.conv2(y.reshape(n, length, channels).transpose(1, 2))
        return x + y.transpose(1, 2)


class Block(layers.Block):
    """A PoseFormer block (:class:`poselift.lifting.layers.Block`: x += MSA(LN(x)) (Eq. 6); x += MLP(LN(x))
    (Eq. 7)) with an optional ConvAttention (``kernel`` > 0) before the MSA, between MSA and MLP (default),
    after the MLP, or inside the MLP in place of its GELU (``IN_MLP``, on the hidden channels)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop: float,
                 attn_drop: float, drop_path_rate: float, kernel: int = 0, position: int = AFTER_MSA,
                 norm_groups: int = 8):
        if position not in POSITIONS:
            raise ValueError(f"attention module position must be 0, 1, 2 or 3, got {position}")
        super().__init__(dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop, drop_path_rate)
        width = self.mlp.fc1.out_features if position == IN_MLP else dim
        self.conv_attention = ConvAttention(width, kernel, norm_groups) if kernel else None
        self.position = position

    def _conv(self, x: torch.Tensor, here: int) -> torch.Tensor:
        return self.conv_attention(x) if self.conv_attention is not None and self.position == here else x

    def mlp_step(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_attention is None or self.position != IN_MLP:
            return super().mlp_step(x)
        mlp = self.mlp  # Eqs. 9 / 12: fc2(P(fc1(x))), P in place of the GELU
        hidden = self.conv_attention(mlp.fc1(self.norm2(x)))
        return x + self.drop_path(mlp.drop(mlp.fc2(mlp.drop(hidden))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention_step(self._conv(x, BEFORE_MSA))
        x = self.mlp_step(self._conv(x, AFTER_MSA))
        return self._conv(x, AFTER_MLP)


class STAEstimator(nn.Module):
    """Spatial transformer over joints, temporal transformer over frames, with SAM / TAM; centre frame out.

    Parameter names and shapes with both modules and ``spatial_head`` off are official PoseFormer's.
    """

    output_frames = "centre"

    def __init__(self, num_frames: int = 81, num_joints: int = 17, in_chans: int = 2, embed_dim_ratio: int = 32,
                 depth: int = 4, num_heads: int = 8, mlp_ratio: float = 2.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 spatial_attention_module: bool = True, temporal_attention_module: bool = True,
                 sam_kernel: int = 5, tam_kernel: int = 3, sam_position: int = AFTER_MSA,
                 tam_position: int = AFTER_MSA, norm_groups: int = 8, spatial_head: bool = True,
                 select_centre: bool = False):
        super().__init__()
        self.num_frames, self.num_joints, self.in_chans = num_frames, num_joints, in_chans
        self.select_centre = select_centre
        embed_dim = embed_dim_ratio * num_joints  # a frame token: the J joint tokens concatenated
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth, 0 -> rate

        def blocks(dim: int, kernel: int, position: int) -> nn.ModuleList:
            return nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, r,
                                       kernel, position, norm_groups) for r in rates)

        self.Spatial_patch_to_embedding = nn.Linear(in_chans, embed_dim_ratio)
        self.Spatial_pos_embed = nn.Parameter(torch.zeros(1, num_joints, embed_dim_ratio))
        self.Temporal_pos_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        self.Spatial_blocks = blocks(embed_dim_ratio, sam_kernel if spatial_attention_module else 0, sam_position)
        self.blocks = blocks(embed_dim, tam_kernel if temporal_attention_module else 0, tam_position)
        self.Spatial_norm = nn.LayerNorm(embed_dim_ratio, eps=1e-6)
        self.Temporal_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.spatial_head = nn.Linear(embed_dim_ratio, 3) if spatial_head else None  # X'_3D for L_s
        # weighted mean over frames: the T frames are the input channels of a 1x1 convolution
        self.weighted_mean = None if select_centre else nn.Conv1d(num_frames, 1, kernel_size=1)
        self.head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_joints * 3))

    def forward(self, inputs_2d: torch.Tensor) -> dict[str, torch.Tensor]:
        b, t, j, c = inputs_2d.shape
        if (t, j, c) != (self.num_frames, self.num_joints, self.in_chans):
            raise ValueError(f"expected inputs (B, {self.num_frames}, {self.num_joints}, {self.in_chans}), "
                             f"got {tuple(inputs_2d.shape)}")
        x = self.Spatial_patch_to_embedding(inputs_2d.reshape(b * t, j, c)) + self.Spatial_pos_embed
        x = self.pos_drop(x)
        for block in self.Spatial_blocks:  # attention over the J joints of each frame
            x = block(x)
        x = self.Spatial_norm(x)  # (B T, J, C)
        out = {}
        if self.spatial_head is not None:
            out["pose_3d_spatial"] = self.spatial_head(x).reshape(b, t, j, 3)
        x = self.pos_drop(x.reshape(b, t, -1) + self.Temporal_pos_embed)
        for block in self.blocks:  # attention over the T frames
            x = block(x)
        x = self.Temporal_norm(x)  # (B, T, J C)
        if self.select_centre:
            x = x[:, (t - 1) // 2:(t - 1) // 2 + 1]
        else:
            x = self.weighted_mean(x)  # (B, 1, J C)
        out["pose_3d"] = self.head(x).reshape(b, 1, j, 3)
        return out


class PoseFormer(STAEstimator):
    """PoseFormer (Zheng et al., ICCV 2021): STA without SAM, TAM and the spatial 3D readout.

    Its state dict has exactly the official release's keys and shapes (see :func:`convert_official_state_dict`).
    """

    def __init__(self, num_frames: int = 81, num_joints: int = 17, in_chans: int = 2, embed_dim_ratio: int = 32,
                 depth: int = 4, num_heads: int = 8, mlp_ratio: float = 2.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1):
        super().__init__(num_frames, num_joints, in_chans, embed_dim_ratio, depth, num_heads, mlp_ratio, qkv_bias,
                         drop_rate, attn_drop_rate, drop_path_rate, spatial_attention_module=False,
                         temporal_attention_module=False, spatial_head=False)


def convert_official_state_dict(state_dict: dict, **hints) -> tuple[dict, dict]:
    """Official PoseFormer weights -> (PoseFormer constructor args, state dict for :class:`PoseFormer`).

    Accepts the released checkpoint dict (weights under ``"model_pos"``) or the weights themselves;
    strips DataParallel's ``"module."`` prefix. The configuration is read from tensor shapes; the head
    count is not in them: ``hints["num_heads"]`` (default 8, the released models'). ``hints["source"]``
    names the file in errors.
    """
    source = hints.get("source", "PoseFormer checkpoint")
    weights = state_dict.get("model_pos", state_dict)
    weights = {k.removeprefix("module."): v for k, v in weights.items()}
    try:
        embed = weights["Spatial_patch_to_embedding.weight"]
        temporal = weights["Temporal_pos_embed"]
        joints = weights["Spatial_pos_embed"].shape[1]
        depth = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("Spatial_blocks."))
        hidden = weights["Spatial_blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError, AttributeError, IndexError) as e:
        raise InputError(source, f"not a PoseFormer state dict (missing {e})") from None
    args = dict(num_frames=int(temporal.shape[1]), num_joints=int(joints), in_chans=int(embed.shape[1]),
                embed_dim_ratio=int(embed.shape[0]), depth=depth, num_heads=int(hints.get("num_heads", 8)),
                mlp_ratio=hidden / embed.shape[0], qkv_bias="Spatial_blocks.0.attn.qkv.bias" in weights)
    with torch.device("meta"):  # shapes only, no memory
        expected = {k: v.shape for k, v in PoseFormer(**args).state_dict().items()}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [k for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k])]
    if missing or unexpected or wrong:
        raise InputError(source, f"PoseFormer weights do not match the inferred config {args}: missing "
                                 f"{missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}")
    return args, weights
