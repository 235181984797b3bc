"""Exact multi-head softmax attention restricted to each graph of a mini-batch."""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import to_dense_batch

from graphgt.nn.attention.base import AttentionContext, GlobalAttention
from graphgt.nn.dropout import byte_dropout_keep


class FullAttention(GlobalAttention):
    r"""Multi-head scaled dot-product attention of Vaswani et al., "Attention Is All You Need"
    (NeurIPS 2017), over all nodes of the same graph (the global module of GraphGPS's
    "Transformer" variant).

    .. math::
        \mathbf{Q}_h, \mathbf{K}_h, \mathbf{V}_h = \mathbf{X}_g \mathbf{W}^{Q,K,V}_h, \quad
        \mathrm{head}_h = \operatorname{softmax}\Big(\frac{\mathbf{Q}_h\mathbf{K}_h^\top}
        {\sqrt{d/H}}\Big)\mathbf{V}_h, \quad
        \mathrm{out}_g = [\mathrm{head}_1 \| \dots \| \mathrm{head}_H]\,\mathbf{W}^O

    for the nodes :math:`\mathbf{X}_g` of each graph ``g`` of ``ctx.batch`` separately. Batched
    with ``to_dense_batch`` and a key-padding mask (no loop over graphs); a single graph
    (``ctx.num_graphs == 1``) is processed without padding. Parameters are laid out like
    :class:`torch.nn.MultiheadAttention` (``in_proj``: ``[3d, d]`` = Q, K, V stacked; ``out_proj``),
    so weights can be copied between the two. Cost :math:`O(\sum_g N_g^2 d)` time; memory is
    :math:`O(B N_{max}^2 H)` on backends that materialise the scores.

    Mixed precision: under autocast the projections and ``scaled_dot_product_attention`` run in
    bf16 (the fused kernels accumulate in float32); the explicit dropout path normalises its
    softmax in float32 and casts the weights to ``v``'s dtype for the product.

    Args:
        dim: model width ``d``.
        heads: number of heads ``H`` (must divide ``dim``).
        dropout: dropout on the attention weights (training only; the drop probability is
            rounded to a multiple of 1/256, see :func:`byte_dropout_keep`).
        bias: use biases in the input and output projections.

    Shapes:
        x ``[N, d]``, ctx.batch ``[N]`` (sorted) -> ``[N, d]``.
    """

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self._set_heads(dim, heads, dropout)
        self.bias = bias
        self.in_proj = nn.Linear(dim, 3 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as :class:`torch.nn.MultiheadAttention` does."""
        nn.init.xavier_uniform_(self.in_proj.weight)
        self.out_proj.reset_parameters()
        if self.bias:
            nn.init.zeros_(self.in_proj.bias)
            nn.init.zeros_(self.out_proj.bias)

    def _attend(self, x: Tensor, key_mask: Tensor | None) -> Tensor:
        """Attention on dense ``x [B, L, d]``; ``key_mask [B, L]`` True where a key is real."""
        B, L, _ = x.shape
        qkv = self.in_proj(x).view(B, L, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)              # each [B, H, L, dh]
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]  # [B, 1, 1, L]
        if self.training and self.dropout > 0:
            # explicit softmax + byte-mask dropout: the fused kernel's dropout is the slow part on CPU
            scores = (q @ k.transpose(-1, -2)) * self.head_dim ** -0.5        # [B, H, L, L]
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            keep, scale = byte_dropout_keep(scores.shape, self.dropout, scores.device)
            probs = scores.softmax(-1, dtype=torch.promote_types(scores.dtype, torch.float32))
            out = torch.where(keep, probs * scale, 0.0).to(v.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(B, L, self.dim))

    def forward(self, x: Tensor, ctx: AttentionContext) -> Tensor:
        if ctx.num_graphs == 1:
            return self._attend(x.unsqueeze(0), None).squeeze(0)
        x_dense, mask = to_dense_batch(x, ctx.batch, batch_size=ctx.num_graphs)  # [B, L, d], [B, L]
        # A graph without nodes would have a row of only masked keys (softmax of all -inf -> NaN,
        # and NaN gradients); let such rows attend to padding slot 0. Their output is discarded.
        key_mask = mask.clone()
        key_mask[:, 0] = True
        out = self._attend(x_dense, key_mask)
        return out[mask]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dim}, heads={self.heads}, dropout={self.dropout})"
