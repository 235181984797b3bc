"""FAVOR+ linear attention (Performer) restricted to each graph of a mini-batch."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter, to_dense_batch

from graphgt.nn.attention.base import AttentionContext, GlobalAttention


def gaussian_random_features(num_features: int, head_dim: int, orthogonal: bool = True) -> Tensor:
    r"""Draw the projection matrix :math:`\mathbf{W} \in \mathbb{R}^{m \times d_h}` of FAVOR+.

    Rows are i.i.d. :math:`\mathcal{N}(0, \mathbf{I})` when ``orthogonal=False``. When
    ``orthogonal=True`` they come in blocks of :math:`d_h` exactly orthogonal directions (QR of a
    Gaussian matrix, sign-corrected so each block is Haar-distributed) and every row is rescaled
    by an independent chi(:math:`d_h`)-distributed norm, so each row is still marginally
    :math:`\mathcal{N}(0, \mathbf{I})` (unbiased estimator) with lower variance.

    Drawn on the CPU from the global torch RNG (``torch.manual_seed`` reproduces it, on any
    device).

    Shapes:
        -> ``[num_features, head_dim]`` (float32, CPU).
    """
    if not orthogonal:
        return torch.randn(num_features, head_dim)
    num_blocks = math.ceil(num_features / head_dim)
    q, r = torch.linalg.qr(torch.randn(num_blocks, head_dim, head_dim))  # batched QR
    signs = torch.where(torch.diagonal(r, dim1=-2, dim2=-1) >= 0, 1.0, -1.0)
    q = q * signs.unsqueeze(-2)                    # fix column signs: each block Haar-distributed
    directions = q.transpose(-2, -1).reshape(-1, head_dim)[:num_features]  # rows orthonormal
    norms = torch.randn(num_features, head_dim).norm(dim=1, keepdim=True)
    return directions * norms


class PerformerAttention(GlobalAttention):
    r"""FAVOR+ attention of Choromanski et al., "Rethinking Attention with Performers" (ICLR 2021),
    over the nodes of each graph of the mini-batch, in time and memory linear in ``N``.

    With :math:`d_h = d/H`, queries and keys scaled by :math:`d_h^{-1/4}` and the positive random
    features

    .. math::
        \phi(\mathbf{x}) = \frac{1}{\sqrt{m}} \exp\!\Big(\mathbf{W}\mathbf{x}
        - \tfrac{1}{2}\lVert\mathbf{x}\rVert^2\Big), \qquad
        \mathbb{E}\big[\phi(\mathbf{q})^\top\phi(\mathbf{k})\big]
        = \exp\big(\mathbf{q}^\top\mathbf{k}/\sqrt{d_h}\big) \ \text{(unscaled } \mathbf{q},
        \mathbf{k}),

    each head computes, for node ``i`` of graph ``g(i)``,

    .. math::
        \mathbf{KV}_g = \sum_{j \in g} \phi(\mathbf{k}_j)\mathbf{v}_j^\top, \quad
        \mathbf{z}_g = \sum_{j \in g} \phi(\mathbf{k}_j), \quad
        \mathrm{out}_i = \frac{\phi(\mathbf{q}_i)^\top \mathbf{KV}_{g(i)}}
        {\phi(\mathbf{q}_i)^\top \mathbf{z}_{g(i)}},

    an unbiased-in-numerator/denominator estimate of softmax attention within the graph; heads are
    concatenated and projected by ``out_proj`` (Q/K/V/out parameters laid out as in
    :class:`~graphgt.nn.attention.FullAttention`). For numerical stability the exponent of
    :math:`\phi(\mathbf{q}_i)` is shifted by its maximum over features (per query and head) and
    that of :math:`\phi(\mathbf{k}_j)` by its maximum over features and the nodes of the graph (per
    graph and head); both shifts cancel exactly between numerator and denominator. ``z`` is
    a scatter-sum over ``ctx.batch``; ``KV`` is batched over graphs with ``to_dense_batch`` (no
    loop over graphs; memory :math:`O(B N_{max} H m)`, never :math:`N \times m \times d`). Cost
    :math:`O(N m d)`.

    **Mixed precision.** The three matmuls (``W q``/``W k``, :math:`\mathbf{KV}_g` and the
    numerator) run in whatever autocast gives them (bf16 under the trainer's autocast); the
    exponents, :math:`\phi`, the normaliser :math:`\mathbf{z}_g` (a sum over the nodes of a
    graph) and the denominator are computed in float32 whatever the input dtype, so the
    normaliser stays exact to float32 on large graphs, and the module runs the same on CPU and
    CUDA autocast (which differ in which ops they run in float32). Measured on CPU (``bench/
    autocast_check.py``): the bf16 output is within about 1e-2 (max abs difference / max abs
    value) of float32.

    The projection :math:`\mathbf{W}` (one for all heads) is the buffer ``projection``; it is
    redrawn from the global torch RNG during training: each draw serves exactly
    ``redraw_interval`` training forward calls, and the next training call draws anew before
    computing (``None``: never redrawn). Eval-mode calls never redraw and are not counted. ``num_calls`` (a buffer, saved in checkpoints) counts the training calls
    served by the current draw. :meth:`redraw_features` redraws on demand.

    Args:
        dim: model width ``d``.
        heads: number of heads ``H`` (must divide ``dim``).
        num_features: number of random features ``m``.
        redraw_interval: training forward calls per feature draw, or ``None`` for a fixed draw.
        dropout: dropout on the attention output of the heads, before ``out_proj`` (training only).
        orthogonal: orthogonal random features (lower variance) instead of i.i.d. Gaussian ones.

    Shapes:
        x ``[N, d]``, ctx.batch ``[N]`` (sorted) -> ``[N, d]``.
    """

    projection: Tensor
    num_calls: Tensor

    def __init__(self, dim: int, heads: int = 4, num_features: int = 64,
                 redraw_interval: Optional[int] = 1000, dropout: float = 0.0,
                 orthogonal: bool = True) -> None:
        super().__init__()
        self._set_heads(dim, heads, dropout)
        if num_features < 1:
            raise ValueError(f"PerformerAttention: num_features={num_features} must be >= 1 "
                             "(typically 64-256).")
        if redraw_interval is not None and redraw_interval < 1:
            raise ValueError(f"PerformerAttention: redraw_interval={redraw_interval} must be >= 1, "
                             "or None to never redraw the random features.")
        self.num_features = num_features
        self.redraw_interval = redraw_interval
        self.orthogonal = orthogonal
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.register_buffer("projection", torch.empty(num_features, self.head_dim))
        self.register_buffer("num_calls", torch.zeros((), dtype=torch.long))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the projections as :class:`torch.nn.MultiheadAttention` does and redraw
        the random features."""
        nn.init.xavier_uniform_(self.in_proj.weight)
        nn.init.zeros_(self.in_proj.bias)
        self.out_proj.reset_parameters()
        nn.init.zeros_(self.out_proj.bias)
        self.redraw_features()

    @torch.no_grad()
    def redraw_features(self) -> None:
        """Draw a new projection matrix from the global torch RNG and reset ``num_calls``."""
        self.projection.copy_(
            gaussian_random_features(self.num_features, self.head_dim, self.orthogonal))
        self.num_calls.zero_()

    def _log_features(self, x: Tensor) -> Tensor:
        r""":math:`\mathbf{W}\mathbf{x} - \lVert\mathbf{x}\rVert^2/2` for ``x [N, H, dh]`` -> ``[N, H, m]``
        in float32 (float64 for a float64 ``x``); the projection is a matmul, so under autocast it
        runs in bf16 and only its result is widened."""
        acc = torch.promote_types(x.dtype, torch.float32)
        proj = torch.einsum("nhd,md->nhm", x, self.projection.to(x.dtype)).to(acc)
        return proj - 0.5 * x.to(acc).pow(2).sum(dim=-1, keepdim=True)

    def forward(self, x: Tensor, ctx: AttentionContext) -> Tensor:
        if self.training and self.redraw_interval is not None:
            if int(self.num_calls) >= self.redraw_interval:
                self.redraw_features()
            self.num_calls += 1

        N = x.size(0)
        q, k, v = self.in_proj(x).view(N, 3, self.heads, self.head_dim).unbind(1)  # [N, H, dh]
        scale = self.head_dim ** -0.25
        norm = self.num_features ** -0.5
        q_log = self._log_features(q * scale)                                     # [N, H, m]
        k_log = self._log_features(k * scale)                                     # [N, H, m]
        # Stabilisers (constant per query row / per graph's keys, so they cancel in the ratio).
        phi_q = torch.exp(q_log - q_log.amax(dim=-1, keepdim=True).detach()) * norm

        if ctx.num_graphs == 1:
            phi_k = torch.exp(k_log - k_log.amax(dim=(0, 2), keepdim=True).detach()) * norm
            kv = torch.einsum("nhm,nhd->hmd", phi_k, v)                           # [H, m, dh]
            z = phi_k.sum(dim=0)                                                   # [H, m]
            num = torch.einsum("nhm,hmd->nhd", phi_q, kv)                          # [N, H, dh]
            den = (phi_q * z).sum(dim=-1)                                          # [N, H]
        else:
            batch, B = ctx.batch, ctx.num_graphs
            k_max = scatter(k_log.amax(dim=-1).detach(), batch, dim=0, dim_size=B,
                            reduce="max")                                          # [B, H]
            phi_k = torch.exp(k_log - k_max[batch].unsqueeze(-1)) * norm           # [N, H, m]
            z = scatter(phi_k, batch, dim=0, dim_size=B, reduce="sum")             # [B, H, m]
            phi_k_d, mask = to_dense_batch(phi_k, batch, batch_size=B)             # [B, L, H, m]
            v_d, _ = to_dense_batch(v, batch, batch_size=B)                        # [B, L, H, dh]
            phi_q_d, _ = to_dense_batch(phi_q, batch, batch_size=B)                # [B, L, H, m]
            kv = torch.einsum("blhm,blhd->bhmd", phi_k_d, v_d)                     # [B, H, m, dh]
            num = torch.einsum("blhm,bhmd->blhd", phi_q_d, kv)[mask]               # [N, H, dh]
            den = (phi_q * z[batch]).sum(dim=-1)                                   # [N, H]

        out = num / den.clamp_min(torch.finfo(den.dtype).tiny).unsqueeze(-1)      # [N, H, dh]
        out = F.dropout(out, p=self.dropout, training=self.training)
        return self.out_proj(out.reshape(N, self.dim))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.dim}, heads={self.heads}, "
                f"num_features={self.num_features}, redraw_interval={self.redraw_interval}, "
                f"orthogonal={self.orthogonal})")
