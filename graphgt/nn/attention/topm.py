"""Top-m attention (TANGNN): each node attends to the m nodes of its graph closest in a learned score."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphgt.nn.attention.base import AttentionContext, GlobalAttention
from graphgt.nn.dropout import byte_dropout_keep


def topm_windows(scores: Tensor, batch: Tensor, num_graphs: int,
                 m: int) -> tuple[Tensor, Tensor, Tensor]:
    r"""Rank the nodes of each graph by ``scores`` and give every node its window of ``m`` keys.

    The nodes are sorted by ``scores`` (descending, stable), then stably by graph id, so graph
    ``g`` occupies the consecutive sorted positions :math:`[\mathrm{start}_g, \mathrm{end}_g)`
    (:math:`N_g` nodes) in decreasing score, ties in node order. The node at sorted position ``p``
    attends to the sorted positions :math:`[w_p, w_p + \ell_p)` with

    .. math::
        \ell_p = \min(m, N_g), \qquad
        w_p = \begin{cases} \mathrm{start}_g & N_g \le m \\
        \operatorname{clamp}(p - \lfloor m/2 \rfloor,\ \mathrm{start}_g,\ \mathrm{end}_g - m)
        & N_g > m \end{cases}

    a window centred on itself, shifted at the ends of its graph so that it always holds exactly
    :math:`\min(m, N_g)` nodes of its own graph, itself included. No loop over graphs.

    Args:
        scores: ``[N]`` relevance score of each node.
        batch: ``[N]`` graph id of each node (need not be sorted).
        num_graphs: number of graphs ``B``.
        m: window size (``>= 1``).

    Returns:
        ``(order, window_start, window_len)``: ``order[p]`` is the node at sorted position ``p``;
        the node ``order[p]`` attends to the nodes ``order[window_start[p] :
        window_start[p] + window_len[p]]``. All ``LongTensor[N]``.
    """
    if m < 1:
        raise ValueError(f"topm_windows: m={m} must be >= 1.")
    by_score = torch.sort(scores, descending=True, stable=True).indices
    by_graph = torch.sort(batch[by_score], stable=True).indices
    order = by_score[by_graph]                                   # [N] sorted position -> node
    graph = batch[order]                                         # [N] sorted graph ids
    counts = torch.bincount(batch, minlength=num_graphs)         # [B]
    ptr = torch.cumsum(counts, 0) - counts                       # [B] first sorted position
    start, n = ptr[graph], counts[graph]                         # [N], [N]
    pos = torch.arange(order.numel(), device=scores.device)
    centred = torch.clamp(torch.maximum(pos - m // 2, start), max=start + n - m)
    window_start = torch.where(n > m, centred, start)
    window_len = n.clamp(max=m)
    return order, window_start, window_len


def _neighbour_blocks(t: Tensor) -> Tensor:
    """``t [nb, b, ...]`` -> ``[nb, 3b, ...]``: blocks ``i-1, i, i+1`` side by side, zero outside."""
    zero = torch.zeros_like(t[:1])
    prev = torch.cat([zero, t[:-1]], dim=0)
    nxt = torch.cat([t[1:], zero], dim=0)
    return torch.cat([prev, t, nxt], dim=1)


class TopMAttention(GlobalAttention):
    r"""Top-m attention after Jiawei E, Yinglong Zhang, Xuewen Xia and Xing Xu, "TANGNN: a
    Concise, Scalable and Effective Graph Neural Networks with Top-m Attention Mechanism for Graph
    Representation Learning" (arXiv:2411.15458, 2024): every node attends to the ``m`` nodes of
    its graph most similar to it in a learned relevance score, never forming an ``N x N`` matrix.

    A learned auxiliary vector :math:`\mathbf{a} \in \mathbb{R}^d` scores each node,
    :math:`s_i = \cos(\mathbf{x}_i, \mathbf{a}) \in [-1, 1]`. The nodes of each graph are ranked
    by :math:`s` and node ``i`` attends to the set :math:`W(i)` of the :math:`\min(m, N_g)`
    consecutive nodes of that ranking centred on itself (shifted at the ends of the ranking; see
    :func:`topm_windows`), the nodes closest to it in score. With :math:`d_h = d/H`, per head

    .. math::
        p_{ij} = \operatorname{softmax}_{j \in W(i)}\Big(\frac{\mathbf{q}_i^\top
        \mathbf{k}_j}{\sqrt{d_h}}\Big), \qquad
        \mathrm{head}_i = \sum_{j \in W(i)} p_{ij}\,
        \frac{\omega_{ij}}{\operatorname{sg}(\omega_{ij})}\,\mathbf{v}_j, \qquad
        \omega_{ij} = e^{-|s_i - s_j|},

    heads concatenated and projected by ``out_proj`` (Q/K/V/out parameters laid out as in
    :class:`~graphgt.nn.attention.FullAttention`, so weights can be copied; with
    :math:`m \ge \max_g N_g` the module computes exactly FullAttention).

    **Straight-through relevance gate.** The choice of :math:`W(i)` is a hard sort, with no
    gradient, so by itself :math:`\mathbf{a}` would never learn. :math:`\operatorname{sg}` is
    stop-gradient: the factor :math:`\omega_{ij}/\operatorname{sg}(\omega_{ij})` is exactly 1 in
    the forward pass (``x / x == 1`` in IEEE arithmetic for finite nonzero ``x``, and
    :math:`\omega_{ij} \ge e^{-2}`), so outputs are bitwise those of the ungated module, while its
    backward pass is that of a soft gate :math:`\omega_{ij}`: :math:`\partial L/\partial s`
    receives :math:`\sum_j (\partial L/\partial \tilde p_{ij})\, p_{ij}\,
    \partial \omega_{ij}/\partial s` (:math:`\tilde p` the gated weight), which pulls a node's
    score towards those of the selected nodes whose values help the loss and pushes it away from
    those that hurt, i.e. it learns to bring useful nodes close in score (hence into each other's
    windows). ``straight_through=False`` drops the gate: :math:`\mathbf{a}` then gets no gradient
    and stays at its initial random direction (a fixed random-projection ranking, like a random
    LSH bucketing), which gives a cheaper backward and a ranking that cannot drift or collapse
    during training; ``True`` (default) lets the ranking adapt to the task, as in TANGNN.

    **Implementation (block-banded).** On the sorted sequence padded to a multiple of the block
    size :math:`b = \min(m, \max_g N_g)`, cut into blocks of :math:`b`, query block ``k`` attends
    to key blocks ``k-1, k, k+1`` (:math:`3b` keys, zero-padded at the ends) under a boolean mask
    that selects exactly each query's window (a window holds its query and at most :math:`b`
    nodes, so it lies in those three blocks); the outputs are then un-sorted. No loop over graphs;
    a node never attends to another graph (its window lies in its own graph).

    Mixed precision: the relevance scores, the gate and the softmax (its normaliser) are float32
    whatever the input dtype; the projections and the two attention matmuls run in whatever
    autocast gives them (bf16 under the trainer's autocast).

    Cost: time :math:`O(N \log N + N m d + N d^2)`; memory :math:`O(N m H + N d)` (scores
    ``[N/b, H, b, 3b]``; never :math:`N \times N` nor :math:`N \times m \times d`), linear in
    ``N`` for fixed ``m`` (up to the sort's log factor).

    Args:
        dim: model width ``d``.
        heads: number of heads ``H`` (must divide ``dim``).
        m: number of keys per query ``m`` (``>= 1``; a node of a graph of :math:`N_g \le m`
            nodes attends to its whole graph).
        dropout: dropout on the attention weights (training only; the drop probability is
            rounded to a multiple of 1/256, see :func:`byte_dropout_keep`).
        straight_through: apply the straight-through relevance gate so that the auxiliary vector
            ``aux`` is trained (see above); ``False``: ``aux`` stays fixed.
        bias: use biases in the input and output projections.

    Shapes:
        x ``[N, d]``, ctx.batch ``[N]`` (sorted) -> ``[N, d]``.
    """

    def __init__(self, dim: int, heads: int = 4, m: int = 32, dropout: float = 0.0,
                 straight_through: bool = True, bias: bool = True) -> None:
        super().__init__()
        self._set_heads(dim, heads, dropout)
        if m < 1:
            raise ValueError(f"TopMAttention: m={m} must be >= 1 (keys per query, e.g. m=32).")
        self.m = m
        self.straight_through = straight_through
        self.bias = bias
        self.in_proj = nn.Linear(dim, 3 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.aux = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the projections as :class:`torch.nn.MultiheadAttention` does and draw
        ``aux`` from :math:`\\mathcal{N}(0, 1/d)`."""
        nn.init.xavier_uniform_(self.in_proj.weight)
        self.out_proj.reset_parameters()
        if self.bias:
            nn.init.zeros_(self.in_proj.bias)
            nn.init.zeros_(self.out_proj.bias)
        nn.init.normal_(self.aux, std=self.dim ** -0.5)

    def relevance(self, x: Tensor) -> Tensor:
        """Relevance scores ``s_i = cos(x_i, aux)``: ``[N, d] -> [N]`` (0 for a zero row), in float32
        (float64 for a float64 ``x``) whatever the input dtype: the ranking sorts them, and bf16
        scores (8 significant bits) tie and reorder nodes that float32 tells apart."""
        acc = torch.promote_types(x.dtype, torch.float32)
        return F.cosine_similarity(x.to(acc), self.aux.to(acc).unsqueeze(0), dim=-1)

    def forward(self, x: Tensor, ctx: AttentionContext) -> Tensor:
        N = x.size(0)
        if N == 0:
            return self.out_proj(x)
        gate = self.straight_through and torch.is_grad_enabled()
        s = self.relevance(x) if gate else self.relevance(x.detach()).detach()
        order, w_start, w_len = topm_windows(s.detach(), ctx.batch, ctx.num_graphs, self.m)

        # Block size b <= m: every window has w_len <= b keys (w_len = min(m, N_g)).
        if ctx.num_graphs > 1:
            b = min(self.m, int(w_len.max()))
        else:
            b = min(self.m, N)
        nb = -(-N // b)
        L = nb * b
        # Padding queries (positions N..L-1) get the one-key window [p, p+1): no NaN rows.
        pad = torch.arange(N, L, device=x.device)
        w_start = torch.cat([w_start, pad])
        w_end = w_start + torch.cat([w_len, torch.ones_like(pad)])

        # Why the window of a query lies in key blocks k-1, k, k+1: the query at sorted position
        # p is in block k = p // b, so k*b <= p < (k+1)*b. Its window [w, w+l) contains p and has
        # l <= b positions, so w >= p - l + 1 >= k*b - b + 1 > (k-1)*b and
        # w + l - 1 <= p + l - 1 <= (k+1)*b - 1 + b - 1 < (k+2)*b, i.e. it lies in the 3b
        # positions [(k-1)*b, (k+2)*b) covered by key blocks k-1, k, k+1 (block -1 and block nb
        # are zero padding, never inside a window since 0 <= w and w + l <= N).
        xs = F.pad(x[order], (0, 0, 0, L - N))                                   # [L, d]
        qkv = self.in_proj(xs).view(nb, b, 3, self.heads, self.head_dim)
        q, k, v = qkv.unbind(2)                                                  # [nb, b, H, dh]
        k, v = _neighbour_blocks(k), _neighbour_blocks(v)                        # [nb, 3b, H, dh]
        q_pos = torch.arange(L, device=x.device).view(nb, b)                     # [nb, b]
        k_pos = q_pos[:, :1] - b + torch.arange(3 * b, device=x.device)          # [nb, 3b]
        mask = ((k_pos.unsqueeze(1) >= w_start.view(nb, b, 1))
                & (k_pos.unsqueeze(1) < w_end.view(nb, b, 1)))                   # [nb, b, 3b]

        scores = torch.einsum("nqhd,nkhd->nhqk", q, k) * self.head_dim ** -0.5  # [nb, H, b, 3b]
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        probs = scores.softmax(-1, dtype=torch.promote_types(scores.dtype, torch.float32))  # fp32
        if gate:
            s_q = F.pad(s[order], (0, L - N)).view(nb, b)                        # [nb, b]
            s_k = _neighbour_blocks(s_q)                                         # [nb, 3b]
            omega = torch.exp(-(s_q.unsqueeze(-1) - s_k.unsqueeze(1)).abs())     # [nb, b, 3b]
            probs = probs * (omega / omega.detach()).unsqueeze(1)                # forward: x 1.0
        if self.training and self.dropout > 0:
            keep, scale = byte_dropout_keep(probs.shape, self.dropout, probs.device)
            probs = torch.where(keep, probs * scale, 0.0)
        out = torch.einsum("nhqk,nkhd->nqhd", probs.to(v.dtype), v).reshape(L, self.dim)[:N]  # sorted
        out = torch.empty_like(out).index_copy_(0, order, out)                    # un-sort
        return self.out_proj(out)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.dim}, heads={self.heads}, m={self.m}, "
                f"dropout={self.dropout}, straight_through={self.straight_through})")
