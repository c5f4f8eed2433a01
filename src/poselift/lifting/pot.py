"""POT and UGRN: the two-stage single-frame lifter of "Pose-Oriented Transformer with Uncertainty-Guided
Refinement for 2D-to-3D Human Pose Estimation" (Li et al., AAAI 2023).

Stage I, :class:`POT`: each 2D joint is a token. Tokens get a linear embedding Z plus a keypoint position
embedding K and a group position embedding G chosen by the joint's hop distance to the pelvis (Eq. 5),
then pass L1 pre-LN transformer layers (Eqs. 7-8) whose pose-oriented self-attention (PO-SA) adds to every
logit a per-head bias Phi(D(i, j)) of the two joints' hop distance (Eq. 6). A linear head gives the
first-stage pose Y~ (J x 3).

Stage II, :class:`UGRN`: an uncertainty head reads POT's features Z^{L1} and gives sigma (J x 3). In
training Y~ is perturbed as Y- = Y~ + sigma * eps (UG-sampling, Eq. 9); concat(Y-, X) is embedded with its
own K and G (Eq. 10) and refined by L2 layers of uncertainty-guided self-attention (UG-SA), which divides
the logits by sqrt(d) * Sum(sigma_j) of the key joint j (Eq. 11). A linear head gives the refined pose Y^.

:class:`POTUGRN` composes them: submodules ``pot`` and ``ugrn``. Stage I trains ``pot`` with Eq. 12; stage
II freezes ``pot`` and trains ``ugrn`` with Eq. 14 + lambda * Eq. 13, lambda = 0.001. The loss terms are
:data:`poselift.lifting.losses.LOSSES`' ``pot_stage1`` (Eq. 12), ``pot_refine`` (Eq. 14) and
``pot_uncertainty`` (Eq. 13); params.yaml's POT experiments list them with these weights (stage I
``losses: {pot_stage1: 1.0}``, stage II ``losses: {pot_refine: 1.0, pot_uncertainty: 0.001}`` and
``freeze: [pot]``). A stage I checkpoint of a ``POT`` loads into ``POTUGRN.pot``.

Both attentions are :class:`poselift.lifting.layers.Attention` (Eqs. 1-2): PO-SA passes Phi(D) as its
additive ``bias``, UG-SA passes Sum(sigma_j) as its ``key_temperature``.

Choices the paper leaves open (or where we read it one particular way):

- The uncertainty head belongs to UGRN, not POT. The paper lists "Uncertainty Estimation" among UGRN's
  components, trains L_sigma only in stage II, and freezes POT in stage II; a head inside the frozen POT
  would never be trained. Its input is POT's Z^{L1} (after POT's final LayerNorm).
- sigma = softplus(raw) + ``min_sigma`` (1e-4 m). Softplus grows linearly, so neither the Eq. 9 noise nor
  the Eq. 11 divisor can explode the way exp(log sigma) can; the floor keeps Eq. 11 and Eq. 13's
  divisions finite. The head starts sigma near ``initial_sigma`` (3 cm, a typical per-axis error; small
  weights, bias softplus^-1) instead of softplus(0) = 0.69 m, which would swamp Y~ with noise at the
  start of stage II.
- sigma is a standard deviation (Eq. 9 multiplies eps by sigma; the text's "variance" disagrees).
- Gradients are not detached: Eq. 9 is a reparameterisation "to enable correct back-propagation", so the
  refinement loss reaches the uncertainty head through Y- and through UG-SA. Gradients into Y~ reach only
  POT, which stage II freezes with ``requires_grad=False``; detaching would change nothing then and would
  rule out joint fine-tuning.
- Stage II's ``freeze: [pot]`` keeps POT in eval mode (the training loop's ``train_mode``), so POT's dropout
  does not perturb Y~ in stage II; UG-sampling is the only noise, as the paper describes.
- UGRN has its own K and G (Eq. 10 reuses the symbols; shared ones would be frozen with POT in stage II).
- Phi is Linear(1, 16) -> GELU -> Linear(16, H), separate in every layer ("each PO-SA" adjusts its own
  receptive field); 134 parameters a layer, which the Method section calls negligible. The Q/K/V
  projections have no bias (Eq. 1 writes them as matrices). Both choices follow the parameter counts
  below; Table 3's "+0.01M for PO-SA" would need a C-wide Phi and then Tables 4 and 6 would not match.
- Heads are single linear layers after a final LayerNorm ("a MLP"); a C-wide hidden layer would add
  0.01M per head and miss Table 4's 0.79M for POT.
- Dropout (0.25) is applied after the embedding, to the attention weights, after the attention
  projection and inside the FFN. Weights are Glorot-initialised, position embeddings N(0, 0.02^2), except
  the regression heads: N(0, 0.01^2), since Glorot on LayerNorm'd features starts poses at ~1 m a
  coordinate, several times a root-relative pose in metres (and made our overfitting test far slower).
- "Max-norm regularization" (Implementation details) has two readings. Default: gradient-norm clipping,
  the stage's ``max_norm`` key in params.yaml (the training loop's ``clip_grad_norm_``; the ``--max_norm``
  of the SemGCN / GraFormer code POT compares with and builds on). Other reading: the max-norm *weight*
  constraint (Srebro et al. 2005; Srivastava et al. 2014's dropout paper): ``weight_max_norm`` = c makes
  every Linear layer's incoming weight vector of each output unit (each row of its weight) have L2 norm
  <= c, projected (rescaled) before every forward pass, so weights an optimiser step pushed beyond c are
  projected back before they are used. None (default) = off.
- POT-S: the paper (Tables 6-7) changes only C to 48; we keep 6 heads (head dim 8), L1 = 12, L2 = 3.
- Eq. 3 writes the FFN with its own residual; Eq. 8 adds the residual, so we add it once.
- T > 1 input frames are lifted independently (these are single-frame models; training uses T = 1).
- The pelvis is predicted like any joint (targets are root-relative, so it learns to be ~0).

UG-SA's temperature (Eq. 11) divides the logits by Sum(sigma_j), which has a unit: the same model gives
other attention weights when sigma is in mm instead of m (logits / 1000). Choice: sigma in metres, the
unit the paper trains in as far as one can tell (it evaluates in mm but trains like the SemGCN / GraFormer
/ VideoPose3D codebases, whose Human3.6M 3D is in metres; a per-axis error of ~3 cm gives Sum(sigma) ~ 0.1,
i.e. logits x10, whereas in mm every UG-SA logit would be divided by ~100 and the attention would be
uniform, which could not beat MH-SA as Table 5 reports). poselift's models work in metres (the loss terms
see 3D in metres), so ``ug_temperature="metres"`` (default) is Eq. 11 with sigma in metres;
``sigma_unit`` (metres per unit of the model's 3D and sigma, default 1) converts sigma to metres first, so
a model fed mm (``sigma_unit=0.001``) attends exactly like one fed metres. ``ug_temperature="relative"``
divides by Sum(sigma_j) / mean over the pose's joints of Sum(sigma) instead: unit-free and invariant to any
global scale of sigma, keeping only which joints are more uncertain (not the paper's equation; an ablation).

Ablation switches (constructor arguments; defaults = the paper's full model):

- Table 3, POT: ``keypoint_embedding`` (K), ``group_embedding`` (G) on/off (an absent embedding has no
  parameters), ``attention="po-sa"`` (Eq. 6) or ``"mh-sa"`` (standard multi-head self-attention, Eq. 2:
  the same Q/K/V/O projections without Phi and its bias).
- Table 4: ``ug_sampling`` on/off (off: Y- = Y~ in training too, Eq. 9 skipped).
- Table 5: UGRN's ``ugrn_attention`` = ``"ug-sa"`` (Eq. 11), ``"po-sa"`` (Eq. 6 with UGRN's own Phi) or
  ``"mh-sa"``.
- Table 6's sizes are ``dim``, ``depth`` / ``pot_depth``, ``ugrn_depth``.

Parameter counts (:func:`poselift.lifting.layers.count_parameters`) against the paper, which rounds to
0.01M. Tables 4 and 6 agree with ours within 1%: POT-L 0.787M (paper 0.79M), POT-L+UGRN 0.986M (0.98M),
POT-S+UGRN 0.252M (0.25M; POT-S alone 0.201M, not given), and Table 6's L1/L2 = 4/1, 8/2, 16/4 and C = 144
rows: 0.333M, 0.660M, 1.313M, 2.205M (0.33M, 0.66M, 1.31M, 2.20M). Table 3 lists 0.97-0.98M for POT
ablations without UGRN, which contradicts Table 4's 0.79M but matches the POT+UGRN total, so we read Table 3
as counting the whole two-stage model; its 0.97M -> 0.98M step for PO-SA is what we do not reproduce (ours:
+0.0016M).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from poselift.lifting.layers import Attention
from poselift.skeleton import H36M17, POT_GROUPS


# --- shared building blocks --------------------------------------------------------------------------


ATTENTIONS = ("mh-sa", "po-sa", "ug-sa")  # Table 5's names; POT takes the first two
TEMPERATURES = ("metres", "relative")  # UG-SA's Sum(sigma_j): in metres (Eq. 11), or relative to the pose's mean


class JointEmbedding(nn.Module):
    """Z^(0)_i = Z_i + K_i + G_phi(i) (Eqs. 5 and 10): linear embedding + keypoint and group embeddings.

    ``keypoint`` / ``group`` False leave K / G out (Table 3's ablation): no parameter, nothing added.
    """

    def __init__(self, in_features: int, dim: int, groups: np.ndarray, dropout: float, keypoint: bool = True,
                 group: bool = True):
        super().__init__()
        groups = torch.as_tensor(np.asarray(groups), dtype=torch.long)
        self.linear = nn.Linear(in_features, dim)  # X_i -> Z_i
        self.keypoint = nn.Parameter(torch.zeros(len(groups), dim)) if keypoint else None  # K, one row per joint
        self.group = nn.Parameter(torch.zeros(int(groups.max()) + 1, dim)) if group else None  # G, one per group
        self.register_buffer("groups", groups, persistent=False)  # phi(i)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        if self.keypoint is not None:
            z = z + self.keypoint
        if self.group is not None:
            z = z + self.group[self.groups]
        return self.drop(z)


class EncoderLayer(nn.Module):
    """Pre-LN transformer layer: Z' = SA(LN(Z)) + Z (Eq. 7); Z = FFN(LN(Z')) + Z' (Eq. 8)."""

    def __init__(self, attention: Attention, dim: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attention
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(  # Eq. 3: MLP(GELU(MLP(x))); its residual is the one of Eq. 8
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        z = self.attn(self.norm1(z), context) + z  # Eq. 7
        return self.ffn(self.norm2(z)) + z  # Eq. 8


def glorot_init(module: nn.Module, head: nn.Linear) -> None:
    """Glorot (Xavier) uniform weights and zero biases for every Linear (paper: Implementation details),
    except the regression ``head``: N(0, 0.01^2) weights, so first poses are ~0.1 m rather than ~1 m."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, JointEmbedding):
            for table in (m.keypoint, m.group):
                if table is not None:
                    nn.init.normal_(table, std=0.02)
    nn.init.normal_(head.weight, std=0.01)


def apply_weight_max_norm(module: nn.Module, max_norm: float) -> None:
    """The max-norm constraint: rescale each row (one output unit's incoming weights) of every Linear weight in
    ``module`` whose L2 norm exceeds ``max_norm`` to norm ``max_norm``, in place. Rows within the bound, and
    weights whose rows all are, are not written (no autograd version bump)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                norms = torch.linalg.vector_norm(m.weight, dim=1, keepdim=True)
                if bool((norms > max_norm).any()):
                    m.weight.mul_((max_norm / norms).clamp(max=1.0))


def _weight_max_norm_hook(module: nn.Module, args) -> None:
    apply_weight_max_norm(module, module.weight_max_norm)


def _use_weight_max_norm(module: nn.Module, max_norm: float | None) -> None:
    """Store ``max_norm`` and, if set, project ``module``'s Linear weights before each of its forward passes."""
    if max_norm is not None and not max_norm > 0:
        raise ValueError(f"weight_max_norm must be positive or None, got {max_norm}")
    module.weight_max_norm = max_norm
    if max_norm is not None:
        module.register_forward_pre_hook(_weight_max_norm_hook)


def _check_joints(name: str, x: torch.Tensor, num_joints: int, features: int) -> None:
    if x.ndim != 4 or x.shape[-2:] != (num_joints, features):
        raise ValueError(f"{name} must be (B, T, {num_joints}, {features}), got {tuple(x.shape)}")


# --- stage I: Pose-Oriented Transformer --------------------------------------------------------------


class PoseOrientedAttention(Attention):
    """PO-SA (Eq. 6): A_ij = q_i k_j^T / sqrt(d) + Phi(D(i, j)), Phi an MLP from hop distance to H biases.

    Q/K/V without bias (Eq. 1); ``dropout`` on the attention weights and after the projection.
    """

    def __init__(self, dim: int, heads: int, dropout: float, distance_hidden: int):
        super().__init__(dim, heads, qkv_bias=False, attn_drop=dropout, proj_drop=dropout)
        self.phi = nn.Sequential(nn.Linear(1, distance_hidden), nn.GELU(), nn.Linear(distance_hidden, heads))

    def distance_bias(self, hop_distance: torch.Tensor) -> torch.Tensor:
        """Phi(D): (J, J) hop distances -> (H, J, J) attention biases."""
        return self.phi(hop_distance.unsqueeze(-1)).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, hop_distance: torch.Tensor) -> torch.Tensor:
        """(N, J, C) tokens, (J, J) hop distances D -> (N, J, C)."""
        return super().forward(x, bias=self.distance_bias(hop_distance))


class MultiHeadAttention(Attention):
    """Standard multi-head self-attention (Eq. 2), the ablations' MH-SA: PO-SA's projections (no Q/K/V
    bias, same dropouts) without any bias or temperature; the layer's context (hop distances, sigma) is
    ignored."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__(dim, heads, qkv_bias=False, attn_drop=dropout, proj_drop=dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


class POT(nn.Module):
    """Pose-Oriented Transformer: 2D joints (B, T, J, 2) -> first-stage 3D pose Y~ and features Z^{L1}.

    POT-L: dim=96, heads=6, depth=12 (the defaults); POT-S: dim=48. ``hop_distance`` (J x J) and
    ``groups`` (J group indices) default to the Human3.6M-17 skeleton. Table 3's switches:
    ``attention`` ("po-sa" | "mh-sa"), ``keypoint_embedding``, ``group_embedding``; ``weight_max_norm``:
    the max-norm weight constraint (module docstring).
    """

    output_frames = "centre"  # single-frame: trained and evaluated on T = 1 windows

    def __init__(self, num_joints: int = 17, dim: int = 96, heads: int = 6, depth: int = 12,
                 mlp_ratio: float = 1.5, dropout: float = 0.25, hop_distance: np.ndarray | None = None,
                 groups: np.ndarray | None = None, distance_hidden: int = 16, attention: str = "po-sa",
                 keypoint_embedding: bool = True, group_embedding: bool = True,
                 weight_max_norm: float | None = None):
        super().__init__()
        _check_choice("POT attention", attention, ATTENTIONS[:2])
        hop_distance = H36M17.hop_distance() if hop_distance is None else np.asarray(hop_distance)
        groups = POT_GROUPS if groups is None else np.asarray(groups)
        if hop_distance.shape != (num_joints, num_joints) or groups.shape != (num_joints,):
            raise ValueError(f"hop_distance must be ({num_joints}, {num_joints}) and groups ({num_joints},)")
        self.num_joints, self.dim, self.attention = num_joints, dim, attention
        self.register_buffer("hop_distance", torch.as_tensor(hop_distance, dtype=torch.float32),
                             persistent=False)  # D(i, j)
        self.embed = JointEmbedding(2, dim, groups, dropout, keypoint_embedding, group_embedding)  # Eq. 5

        def attn():
            if attention == "po-sa":
                return PoseOrientedAttention(dim, heads, dropout, distance_hidden)
            return MultiHeadAttention(dim, heads, dropout)

        self.layers = nn.ModuleList(EncoderLayer(attn(), dim, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)  # regression head -> Y~
        glorot_init(self, self.head)
        _use_weight_max_norm(self, weight_max_norm)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, J, 2) 2D joints -> (N, J, C) features Z^{L1} (after the final LayerNorm)."""
        z = self.embed(x)
        for layer in self.layers:  # Eqs. 6-8, L1 times
            z = layer(z, self.hop_distance)
        return self.norm(z)

    def forward(self, inputs_2d: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_joints("inputs_2d", inputs_2d, self.num_joints, 2)
        b, t = inputs_2d.shape[:2]
        z = self.encode(inputs_2d.flatten(0, 1))
        return {"pose_3d": self.head(z).unflatten(0, (b, t)), "features": z.unflatten(0, (b, t))}


# --- stage II: Uncertainty-Guided Refinement Network ------------------------------------------------


class UncertaintyHead(nn.Module):
    """Z^{L1} (..., C) -> sigma (..., 3) = softplus(Linear(Z)) + min_sigma, in metres."""

    def __init__(self, dim: int, min_sigma: float = 1e-4, initial_sigma: float = 0.03):
        super().__init__()
        if not 0 < min_sigma < initial_sigma:
            raise ValueError("need 0 < min_sigma < initial_sigma")
        self.min_sigma, self.initial_sigma = min_sigma, initial_sigma
        self.linear = nn.Linear(dim, 3)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.linear.weight, std=0.01)  # small, like the regression heads
        # softplus^-1(initial - min) = log(expm1(initial - min)): sigma starts near initial_sigma
        nn.init.constant_(self.linear.bias, math.log(math.expm1(self.initial_sigma - self.min_sigma)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.linear(features)) + self.min_sigma


class UncertaintyGuidedAttention(Attention):
    """UG-SA (Eq. 11): A_ij = q_i k_j^T / (sqrt(d) * Sum(sigma_j)), sigma_j the key joint's 3 uncertainties.

    A larger Sum(sigma_j) pulls the logits of key j towards 0: it lowers j's weight where q_i k_j > 0
    (the paper's intent) but raises it towards uniform where q_i k_j < 0, exactly as Eq. 11 is written.
    Q/K/V without bias and dropout as in PO-SA. ``temperature`` "metres": Sum(sigma_j) in metres, sigma
    given in units of ``sigma_unit`` metres; "relative": Sum(sigma_j) / mean_k Sum(sigma_k) over the pose's
    joints (unit-free). See the module docstring.
    """

    def __init__(self, dim: int, heads: int, dropout: float, temperature: str = "metres", sigma_unit: float = 1.0):
        super().__init__(dim, heads, qkv_bias=False, attn_drop=dropout, proj_drop=dropout)
        _check_choice("UG-SA temperature", temperature, TEMPERATURES)
        if not sigma_unit > 0:
            raise ValueError(f"sigma_unit must be positive, got {sigma_unit}")
        self.temperature, self.sigma_unit = temperature, float(sigma_unit)

    def key_temperature(self, sigma: torch.Tensor) -> torch.Tensor:
        """(N, J, 3) sigma -> (N, J) divisors t_j of Eq. 11 (without sqrt(d), which ``scale`` holds)."""
        total = sigma.sum(dim=-1)
        if self.temperature == "relative":
            return total / total.mean(dim=-1, keepdim=True)
        return total * self.sigma_unit

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """(N, J, C) tokens, (N, J, 3) sigma -> (N, J, C)."""
        return super().forward(x, key_temperature=self.key_temperature(sigma))


class UGRN(nn.Module):
    """Uncertainty-Guided Refinement Network: (X, Y~, Z^{L1}) -> sigma and the refined pose Y^.

    ``pot_dim`` is the width of POT's features (defaults to ``dim``); ``groups`` defaults to POT_GROUPS,
    ``hop_distance`` (for ``attention="po-sa"``) to the Human3.6M-17 skeleton's. Switches: ``attention``
    ("ug-sa" | "po-sa" | "mh-sa", Table 5), ``ug_sampling`` (Table 4), ``ug_temperature`` and ``sigma_unit``
    (UG-SA's divisor), ``weight_max_norm`` (module docstring).
    """

    def __init__(self, num_joints: int = 17, dim: int = 96, heads: int = 6, depth: int = 3,
                 mlp_ratio: float = 1.5, dropout: float = 0.25, groups: np.ndarray | None = None,
                 pot_dim: int | None = None, min_sigma: float = 1e-4, initial_sigma: float = 0.03,
                 attention: str = "ug-sa", ug_sampling: bool = True, ug_temperature: str = "metres",
                 sigma_unit: float = 1.0, hop_distance: np.ndarray | None = None, distance_hidden: int = 16,
                 weight_max_norm: float | None = None):
        super().__init__()
        _check_choice("UGRN attention", attention, ATTENTIONS)
        groups = POT_GROUPS if groups is None else np.asarray(groups)
        if groups.shape != (num_joints,):
            raise ValueError(f"groups must be ({num_joints},)")
        hop_distance = H36M17.hop_distance() if hop_distance is None else np.asarray(hop_distance)
        if hop_distance.shape != (num_joints, num_joints):
            raise ValueError(f"hop_distance must be ({num_joints}, {num_joints})")
        self.num_joints, self.dim, self.pot_dim = num_joints, dim, pot_dim or dim
        self.attention, self.ug_sampling = attention, bool(ug_sampling)
        self.register_buffer("hop_distance", torch.as_tensor(hop_distance, dtype=torch.float32),
                             persistent=False)  # D(i, j), for PO-SA
        self.embed = JointEmbedding(5, dim, groups, dropout)  # Eq. 10 on concat(Y-, X)

        def attn():
            if attention == "ug-sa":
                return UncertaintyGuidedAttention(dim, heads, dropout, ug_temperature, sigma_unit)
            if attention == "po-sa":
                return PoseOrientedAttention(dim, heads, dropout, distance_hidden)
            return MultiHeadAttention(dim, heads, dropout)

        self.layers = nn.ModuleList(EncoderLayer(attn(), dim, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)  # regression head -> Y^
        glorot_init(self, self.head)
        self.uncertainty_head = UncertaintyHead(self.pot_dim, min_sigma, initial_sigma)
        _use_weight_max_norm(self, weight_max_norm)

    def sample(self, pose: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """UG-sampling (Eq. 9): Y- = Y~ + sigma * eps, eps ~ N(0, 1), in training; Y- = Y~ in eval and with
        ``ug_sampling`` off."""
        return pose + sigma * torch.randn_like(pose) if self.training and self.ug_sampling else pose

    def refine(self, x: torch.Tensor, pose: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """(N, J, 2) 2D joints, (N, J, 3) sampled pose Y-, (N, J, 3) sigma -> (N, J, 3) refined pose Y^."""
        z = self.embed(torch.cat([pose, x], dim=-1))  # X~ = Concat(Y-, X)
        context = self.hop_distance if self.attention == "po-sa" else sigma
        for layer in self.layers:  # UG-SA (or the ablation's PO-SA / MH-SA) layers, L2 times
            z = layer(z, context)
        return self.head(self.norm(z))

    def forward(self, inputs_2d: torch.Tensor, pose_stage1: torch.Tensor,
                features: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_joints("inputs_2d", inputs_2d, self.num_joints, 2)
        _check_joints("pose_stage1", pose_stage1, self.num_joints, 3)
        _check_joints("features", features, self.num_joints, self.pot_dim)
        b, t = inputs_2d.shape[:2]
        sigma = self.uncertainty_head(features)
        x, y, s = inputs_2d.flatten(0, 1), pose_stage1.flatten(0, 1), sigma.flatten(0, 1)
        refined = self.refine(x, self.sample(y, s), s)
        return {"pose_3d": refined.unflatten(0, (b, t)), "sigma": sigma}


# --- the two-stage model ----------------------------------------------------------------------------


class POTUGRN(nn.Module):
    """POT followed by UGRN. forward -> {"pose_3d": Y^, "pose_3d_stage1": Y~, "sigma": sigma}.

    The defaults are the paper's model (POT-L + UGRN, L1 = 12, L2 = 3, 0.98M parameters); dim=48 gives the
    S model. Both stages share num_joints, dim, heads, mlp_ratio, dropout, the skeleton arguments and
    ``weight_max_norm``. ``pot_attention``, ``keypoint_embedding`` and ``group_embedding`` are POT's
    (Table 3); ``ugrn_attention``, ``ug_sampling``, ``ug_temperature`` and ``sigma_unit`` UGRN's (Tables 4-5).
    """

    output_frames = "centre"

    def __init__(self, num_joints: int = 17, dim: int = 96, heads: int = 6, pot_depth: int = 12,
                 ugrn_depth: int = 3, mlp_ratio: float = 1.5, dropout: float = 0.25,
                 hop_distance: np.ndarray | None = None, groups: np.ndarray | None = None,
                 distance_hidden: int = 16, pot_attention: str = "po-sa", keypoint_embedding: bool = True,
                 group_embedding: bool = True, ugrn_attention: str = "ug-sa", ug_sampling: bool = True,
                 ug_temperature: str = "metres", sigma_unit: float = 1.0, weight_max_norm: float | None = None):
        super().__init__()
        self.pot = POT(num_joints, dim, heads, pot_depth, mlp_ratio, dropout, hop_distance, groups, distance_hidden,
                       attention=pot_attention, keypoint_embedding=keypoint_embedding,
                       group_embedding=group_embedding, weight_max_norm=weight_max_norm)
        self.ugrn = UGRN(num_joints, dim, heads, ugrn_depth, mlp_ratio, dropout, groups, attention=ugrn_attention,
                         ug_sampling=ug_sampling, ug_temperature=ug_temperature, sigma_unit=sigma_unit,
                         hop_distance=hop_distance, distance_hidden=distance_hidden, weight_max_norm=weight_max_norm)

    def forward(self, inputs_2d: torch.Tensor) -> dict[str, torch.Tensor]:
        stage1 = self.pot(inputs_2d)
        stage2 = self.ugrn(inputs_2d, stage1["pose_3d"], stage1["features"])
        return {"pose_3d": stage2["pose_3d"], "pose_3d_stage1": stage1["pose_3d"], "sigma": stage2["sigma"]}
