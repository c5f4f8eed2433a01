"""MixSTE: the seq2seq mixed spatio-temporal encoder of "MixSTE: Seq2seq Mixed Spatio-Temporal Encoder for 3D
Human Pose Estimation in Video" (Zhang et al., CVPR 2022).

A 2D keypoint sequence C (T x N x 2) is embedded joint by joint into P (T x N x d_m) with a spatial position
embedding (Eq. 6), then d_l loops of a spatial transformer block (STB: attention among the N joints of one
frame, Sec. 3.1.2) and a temporal transformer block (TTB: attention among the T frames of ONE joint, the
joint separation of Eq. 1) alternate. The temporal position embedding is added in the first loop only
(Sec. 3.1.3). A regression head maps every token to 3D, so all T frames come out at once (seq2seq).
Losses (Sec. 3.3, Eq. 9): WMPJPE (Eq. 10) + lambda_t TCLoss + lambda_m MPJVE, in :mod:`poselift.lifting.losses`
(``wmpjpe``, ``tcloss``, ``mpjve``), with the Sec. 4.2 joint-group weights (poselift.skeleton.MIXSTE_JOINT_WEIGHTS)
inside both WMPJPE and TCLoss. The paper gives no lambdas; params.yaml's MixSTE stages list the official run.py's
(loss = weighted_mpjpe + 0.5 * TCLoss + 2.0 * velocity error): ``losses: {wmpjpe: 1.0, tcloss: 0.5, mpjve: 2.0}``.

Layer structure, parameter shapes and defaults follow the official implementation (``MixSTE2`` in
JinluZhang1126/MixSTE, common/model_cross.py, built by its run.py), so its checkpoints load through
:func:`convert_official_state_dict`. Where the paper and that code differ, or the paper is silent:

- Attention logits are scaled by 1/sqrt(d_m / h), the per-head width (Eq. 3 writes sqrt(d_m)).
- Blocks (STB and TTB alike, Sec. 3.2: :class:`poselift.lifting.layers.Block`) are pre-LN: x + MSA(LN(x))
  (Eq. 7), then x + MLP(LN(x)) with a GELU MLP of width mlp_ratio * d_m (official: 2). The "Norm" of Eq. 6
  is a LayerNorm after each block; ONE spatial and ONE temporal LayerNorm are shared by all loops, as in
  the official code. LayerNorm eps is 1e-6, except the head's (1e-5, torch's default), as there.
- Position embeddings start at zero; Linear layers keep torch's default initialisation (the official
  model applies no custom init).
- Any T <= num_frames is accepted: the temporal position embedding is sliced to the first T positions.
  (The official model adds the whole embedding and so needs T == num_frames exactly.)
- Stochastic depth ("drop path") rises linearly from 0 to drop_path_rate over the loops (run.py trains
  with 0.1); its mask is per token sequence: per frame in an STB, per joint trajectory in a TTB, as the
  official reshapes imply. The paper's "dropout rate 0.1" is not what run.py does: it passes no dropout
  to the model, so drop_rate and attn_drop_rate default to 0 here too.
- Official H36M training also used AdamW (lr 4e-5, weight decay 0.1, x0.99 a epoch), 243-frame clips
  with stride 243, 4 clips a batch (1024 // 243) and flip augmentation (every clip plain and mirrored each
  epoch); that is the training loop's job. Two more run.py habits are lifting-task stage keys
  (:mod:`poselift.training.tasks.lifting`): ``loss_scaled_gradient`` (its ``loss.backward(loss.clone().detach())``
  scales each batch's gradient by the batch's loss) and ``evaluation_root: gt-only`` (its evaluation zeroes
  only the ground-truth root, so the predicted root's offset counts); both default to off (plain gradient,
  Protocol 1).

Ablation switches (Table 5; defaults = MixSTE):

- ``seq2seq`` False: seq2frame output, only the centre frame (T - 1) // 2 of the encoded sequence goes through
  the head ((B, 1, J, 3), ``output_frames = "centre"``: trained and evaluated on one window per frame).
- ``alternating`` False: the d_l STBs first, then the d_l TTBs (one spatial then one temporal stack, as in
  PoseFormer), instead of STB/TTB alternating per loop; the temporal position embedding still enters the
  first TTB.
- ``joint_separation`` False: the temporal blocks attend over T frame tokens of width J * d_m (all joints of a
  frame concatenated, as PoseFormer's temporal transformer), not over each joint's own trajectory; their
  width (and parameters, FLOPs) grows by J, the temporal position embedding is shared by the joints of a
  frame, and ``num_heads`` must divide J * d_m. (Table 5's "Our Loss" column is the stage's ``losses``.)

Parameter count of the paper's model (T=243, d_m=512, d_l=8, 8 heads, mlp_ratio 2): 33,783,811 = 33.78M
(Table 7's text says "33.7M").
"""

from __future__ import annotations

import torch
from torch import nn

from poselift.lifting.layers import Block


# --- Sec. 3.1: the mixed spatio-temporal encoder --------------------------------------------------------


class MixSTE(nn.Module):
    """2D keypoints (B, T, J, in_chans), any T <= num_frames -> {"pose_3d": (B, T, J, 3)}.

    Arguments map one-to-one to the official ``MixSTE2``: num_frames = num_frame, embed_dim (d_m) =
    embed_dim_ratio, depth (d_l), num_heads, mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate,
    drop_path_rate. The defaults are the paper's Human3.6M model as run.py trains it. ``seq2seq``,
    ``alternating`` and ``joint_separation``: Table 5's switches (module docstring).
    """

    output_frames = "all"

    def __init__(self, num_frames: int = 243, num_joints: int = 17, in_chans: int = 2, embed_dim: int = 512,
                 depth: int = 8, num_heads: int = 8, mlp_ratio: float = 2.0, qkv_bias: bool = True,
                 qk_scale: float | None = None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, seq2seq: bool = True, alternating: bool = True,
                 joint_separation: bool = True):
        super().__init__()
        if min(num_frames, num_joints, in_chans, embed_dim, depth, num_heads) < 1:
            raise ValueError("num_frames, num_joints, in_chans, embed_dim, depth and num_heads must be >= 1")
        self.num_frames, self.num_joints, self.in_chans = num_frames, num_joints, in_chans
        self.seq2seq, self.alternating, self.joint_separation = bool(seq2seq), bool(alternating), bool(joint_separation)
        self.output_frames = "all" if self.seq2seq else "centre"
        temporal_dim = embed_dim if joint_separation else embed_dim * num_joints
        self.joint_embed = nn.Linear(in_chans, embed_dim)  # L_e, Eq. 6
        self.spatial_pos = nn.Parameter(torch.zeros(1, num_joints, embed_dim))  # E_s-pos, Sec. 3.1.2
        self.temporal_pos = nn.Parameter(torch.zeros(1, num_frames, embed_dim))  # first loop only, Sec. 3.1.3
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear, 0 -> rate

        def blocks(dim: int):
            return nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, rate,
                                       qk_scale) for rate in rates)

        self.spatial_blocks = blocks(embed_dim)  # STB and TTB of each of d_l loops
        self.temporal_blocks = blocks(temporal_dim)
        self.spatial_norm = nn.LayerNorm(embed_dim, eps=1e-6)  # shared by all loops
        self.temporal_norm = nn.LayerNorm(temporal_dim, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, 3))  # regression head

    def spatial_step(self, x: torch.Tensor, loop: int) -> torch.Tensor:
        """STB of loop ``loop``: (B, T, J, d_m) -> same; joints of one frame attend to each other."""
        return self.spatial_norm(self.spatial_blocks[loop](x))

    def temporal_step(self, x: torch.Tensor, loop: int) -> torch.Tensor:
        """TTB of loop ``loop``: (B, T, J, d_m) -> same; each joint's trajectory is its own token
        sequence p_i,1..T (joint separation, Eq. 1), so frames mix only within one joint."""
        if not self.joint_separation:  # frame tokens (B, T, J d_m); the position embedding per frame
            b, t, j, d = x.shape
            if loop == 0:
                x = self.pos_drop(x + self.temporal_pos[:, :t, None])
            x = self.temporal_norm(self.temporal_blocks[loop](x.reshape(b, t, j * d)))
            return x.reshape(b, t, j, d)
        x = x.transpose(1, 2)  # (B, J, T, d_m)
        if loop == 0:
            x = self.pos_drop(x + self.temporal_pos[:, : x.shape[2]])
        return self.temporal_norm(self.temporal_blocks[loop](x)).transpose(1, 2)

    def forward(self, inputs_2d: torch.Tensor) -> dict[str, torch.Tensor]:
        if inputs_2d.ndim != 4 or inputs_2d.shape[-2:] != (self.num_joints, self.in_chans):
            raise ValueError(f"inputs_2d must be (B, T, {self.num_joints}, {self.in_chans}), "
                             f"got {tuple(inputs_2d.shape)}")
        if not 1 <= inputs_2d.shape[1] <= self.num_frames:
            raise ValueError(f"MixSTE takes 1 to {self.num_frames} frames, got {inputs_2d.shape[1]}")
        x = self.pos_drop(self.joint_embed(inputs_2d) + self.spatial_pos)  # Eq. 6 (LN after the STB)
        loops = range(len(self.spatial_blocks))
        if self.alternating:
            for loop in loops:  # d_l alternating loops, Sec. 3.1.3
                x = self.temporal_step(self.spatial_step(x, loop), loop)
        else:  # Table 5's baseline: all spatial blocks, then all temporal blocks
            for loop in loops:
                x = self.spatial_step(x, loop)
            for loop in loops:
                x = self.temporal_step(x, loop)
        if not self.seq2seq:  # seq2frame: the centre frame only
            centre = (x.shape[1] - 1) // 2
            x = x[:, centre:centre + 1]
        return {"pose_3d": self.head(x)}  # every frame: seq2seq


# --- official checkpoints ------------------------------------------------------------------------------

# official (MixSTE2) name prefix -> ours; the names inside a block (norm1, attn.qkv, attn.proj, norm2,
# mlp.fc1, mlp.fc2) and the head (head.0 = LayerNorm, head.1 = Linear) are the same in both.
OFFICIAL_NAMES = {
    "Spatial_patch_to_embedding.": "joint_embed.",
    "Spatial_pos_embed": "spatial_pos",
    "Temporal_pos_embed": "temporal_pos",
    "STEblocks.": "spatial_blocks.",
    "TTEblocks.": "temporal_blocks.",
    "Spatial_norm.": "spatial_norm.",
    "Temporal_norm.": "temporal_norm.",
    "head.": "head.",
}


def convert_official_state_dict(state_dict: dict, **hints) -> tuple[dict, dict[str, torch.Tensor]]:
    """Official MixSTE checkpoint -> (MixSTE constructor arguments, our state dict).

    ``state_dict`` is the model's state dict or the whole run.py checkpoint (its ``"model_pos"`` entry),
    with or without DataParallel's ``"module."`` prefix. num_frames, num_joints, in_chans, embed_dim,
    depth, mlp_ratio and qkv_bias come from tensor shapes; num_heads (not visible in shapes, run.py
    uses 8) and the drop rates may be given as ``hints``. Raises ValueError if names or shapes do not fit.
    """
    if "model_pos" in state_dict:
        state_dict = state_dict["model_pos"]
    sd = {_rename(k.removeprefix("module.")): v for k, v in state_dict.items()}
    try:
        embed_dim, in_chans = sd["joint_embed.weight"].shape
        config = {
            "num_frames": sd["temporal_pos"].shape[1],
            "num_joints": sd["spatial_pos"].shape[1],
            "in_chans": in_chans,
            "embed_dim": embed_dim,
            "depth": len({k.split(".")[1] for k in sd if k.startswith("spatial_blocks.")}),
            "mlp_ratio": sd["spatial_blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
            "qkv_bias": "spatial_blocks.0.attn.qkv.bias" in sd,
        }
    except KeyError as e:
        raise ValueError(f"not a MixSTE state dict: no {e}") from None
    config.update({k: hints[k] for k in ("num_heads", "qk_scale", "drop_rate", "attn_drop_rate",
                                         "drop_path_rate") if k in hints})
    with torch.device("meta"):
        expected = MixSTE(**config).state_dict()
    missing, unexpected = sorted(expected.keys() - sd.keys()), sorted(sd.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"state dict does not fit MixSTE{config}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]} (older MixSTE variants are not supported)")
    wrong = [k for k in expected if sd[k].shape != expected[k].shape]
    if wrong:
        raise ValueError(f"state dict does not fit MixSTE{config}: wrong shapes for {wrong[:5]}")
    return config, sd


def _rename(key: str) -> str:
    for official, ours in OFFICIAL_NAMES.items():
        if key.startswith(official):
            return ours + key[len(official):]
    return key
