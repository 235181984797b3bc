"""Sparse attention over graph edges, a random expander, self loops and virtual nodes (Exphormer)."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn
from torch_geometric.utils import softmax

from graphgt.nn.attention.base import AttentionContext, GlobalAttention
from graphgt.nn.dropout import byte_dropout_keep


def expander_edges(batch: Tensor, num_graphs: int, degree: int,
                   generator: Optional[torch.Generator]) -> Tensor:
    r"""A random ``degree``-regular graph over the nodes of each graph of a mini-batch.

    As in Exphormer, ``degree // 2`` permutations :math:`\pi_1, \dots, \pi_{\mathrm{degree}/2}`
    are drawn, each a uniformly random permutation of the nodes of every graph separately, and
    both :math:`i \to \pi_r(i)` and :math:`\pi_r(i) \to i` are added for every node ``i``. Since
    :math:`\pi_r` is a bijection, every node has exactly ``degree`` out-edges and ``degree``
    in-edges counting multiplicity (a random regular graph, an expander with high probability;
    repeated edges and self loops :math:`\pi_r(i) = i` may occur and are kept here). No edge
    leaves its graph.

    Built for the whole batch at once, without a loop over graphs: with ``rank`` a uniformly
    random permutation of ``0..N-1``, sorting the int64 keys ``batch * N + rank`` lists the nodes
    grouped by graph in uniformly random order within each graph; pairing position ``p`` of that
    order with position ``p`` of the (stable) order by graph id gives the per-graph permutation.

    Args:
        batch: ``LongTensor[N]``, the graph id of each node, in ``[0, num_graphs)`` (need not be
            sorted).
        num_graphs: number of graphs ``B`` of the batch (checks that the int64 sort keys, below
            ``B * N``, cannot overflow).
        degree: out-/in-degree of every node (even, ``>= 0``; ``0`` gives no edges).
        generator: draw the permutations from this generator (on its device, so a CPU
            generator gives the same edges on every device); ``None``: from the global torch RNG
            on ``batch.device``.

    Returns:
        ``LongTensor[2, N * degree]`` on ``batch.device``, row 0 the source, row 1 the target.
    """
    if degree < 0 or degree % 2 != 0:
        raise ValueError(f"expander_edges: degree={degree} must be even and >= 0 (each random "
                         "permutation adds 2 edges per node); use e.g. degree=2 or 4.")
    N = batch.numel()
    if N == 0 or degree == 0:
        return torch.empty(2, 0, dtype=torch.long, device=batch.device)
    if num_graphs * N >= 2 ** 63:
        raise ValueError(f"expander_edges: num_graphs={num_graphs} x N={N} overflows the int64 "
                         "sort keys; split the batch.")
    device = batch.device if generator is None else generator.device
    graph = batch.to(device)
    by_graph = torch.sort(graph, stable=True).indices                     # [N] position -> node
    sources, targets = [], []
    for _ in range(degree // 2):
        rank = torch.randperm(N, generator=generator, device=device)
        shuffled = torch.sort(graph * N + rank).indices                     # [N] random per graph
        # pi(by_graph[p]) = shuffled[p]: both lists hold the nodes of graph g at the same positions
        sources += [by_graph, shuffled]
        targets += [shuffled, by_graph]
    return torch.stack([torch.cat(sources), torch.cat(targets)]).to(batch.device)


class ExpanderAttention(GlobalAttention):
    r"""Sparse multi-head attention after Hamed Shirzad, Ameya Velingker, Balaji Venkatachalam,
    Danica J. Sutherland and Ali Kemal Sinop, "Exphormer: Sparse Transformers for Graphs"
    (ICML 2023): node ``i`` attends only to its neighbours in an interaction graph made of the
    graph's own edges, a random expander, self loops and a few virtual global nodes.

    **Interaction graph.** Over the ``N`` nodes of the mini-batch, the set (duplicates removed)

    .. math::
        \mathcal{E} = \mathcal{E}_{\text{graph}} \cup \mathcal{E}_{\text{exp}}
        \cup \{(i, i)\}_{i}

    of the edges ``ctx.edge_index`` (``graph_edges``), of a random ``expander_degree``-regular
    graph within each graph of the batch (:func:`expander_edges`: ``expander_degree / 2`` random
    per-graph permutations :math:`\pi_r`, edges :math:`i \to \pi_r(i)` and :math:`\pi_r(i) \to i`)
    and of self loops (``self_loops``). Duplicates are removed (int64 keys
    ``target * N + source`` through ``torch.unique``), so attention is over a *set* of
    neighbours :math:`\mathcal{N}(i) = \{j : (j \to i) \in \mathcal{E}\}`: an edge given twice in
    ``ctx.edge_index`` or also drawn by the expander counts once. The edges of ``ctx.edge_index``
    are taken as they are (in a PyG batch they never join two graphs); every other edge stays
    within its graph. :meth:`interaction_edges` returns :math:`\mathcal{E}`.

    **Virtual nodes.** ``num_virtual`` learned vectors :math:`\mathbf{p}_1, \dots, \mathbf{p}_R`
    (the parameter ``virtual [R, d]``, shared by all graphs) give each graph ``g`` its own ``R``
    virtual global nodes. So that they carry information within one call, the forward pass has
    two stages, both with the same projections. With :math:`d_h = d/H`, per head
    :math:`\mathrm{att}_{\mathcal{S}}(\mathbf{q}) = \sum_{s \in \mathcal{S}}
    \operatorname{softmax}_{s \in \mathcal{S}}\big(\mathbf{q}^\top\mathbf{k}_s/\sqrt{d_h}\big)
    \mathbf{v}_s` and :math:`[\cdot]` the concatenation of the heads,

    .. math::
        \text{stage 1:}\quad \mathbf{u}_{g,r} = \mathbf{p}_r + \mathbf{W}^O\big[
        \mathrm{att}_{\{j : g(j) = g\}}(\mathbf{W}^Q\mathbf{p}_r)\big], \\
        \text{stage 2:}\quad \mathrm{out}_i = \mathbf{W}^O\big[
        \mathrm{att}_{\mathcal{N}(i) \cup \{(g(i), r)\}_{r \le R}}(\mathbf{W}^Q\mathbf{x}_i)
        \big],

    (biases omitted) where in stage 1 each virtual node of graph ``g`` attends to all nodes of
    its graph (keys/values :math:`\mathbf{W}^{K,V}\mathbf{x}_j`) and is updated residually, and in
    stage 2 each node attends, in one softmax, to its interaction-graph neighbours (keys/values
    :math:`\mathbf{W}^{K,V}\mathbf{x}_j`) and to the virtual nodes of its graph (keys/values
    :math:`\mathbf{W}^{K,V}\mathbf{u}_{g(i),r}`, from the stage-1 states). Any two nodes of a
    graph are thus two hops apart within one call, and ``virtual`` gets gradients through stage
    1's queries and the residual. The virtual nodes of a graph without nodes keep
    :math:`\mathbf{u} = \mathbf{p}_r + \mathbf{b}^O`; a node with no key at all (no self loop, no
    edge, no virtual node) gets a zero head output (``out_proj``'s bias only). :meth:`virtual_edges`
    returns both stages' (node, virtual) pairs.

    **Expander regeneration.** With ``resample=True`` every training-mode forward draws a new
    expander from the global torch RNG (``torch.manual_seed`` reproduces it). In eval mode, or
    with ``resample=False``, it is drawn from a fresh CPU ``torch.Generator`` seeded with
    ``seed``, so the same batch layout (``ctx.batch``) always gets the same expander, on any
    device (reproducible evaluation).

    Q/K/V/out parameters are laid out as in :class:`~graphgt.nn.attention.FullAttention`
    (``in_proj``: Q, K, V stacked; ``out_proj``), so weights can be copied: with the complete
    graph as ``ctx.edge_index``, self loops, ``expander_degree=0`` and ``num_virtual=0`` the
    module computes exactly FullAttention. Logits are computed per (edge, head), normalised with
    ``torch_geometric.utils.softmax`` over the incoming edges of each target, and the values
    summed with ``index_add_``; no loop over graphs, no dense ``N x N`` matrix.

    Cost: with :math:`E` the edges of ``ctx.edge_index``, :math:`k` = ``expander_degree`` and
    :math:`R` = ``num_virtual``, at most :math:`E + N(k+1)` node pairs plus :math:`2NR` virtual
    pairs are attended; time :math:`O((E + N(k+1+R))\,d + N d^2 + N k \log N)` (the last term:
    sorts of the expander and the deduplication) and memory :math:`O((E + N(k+1+R))\,d)`, linear
    in ``N`` for bounded average degree.

    Args:
        dim: model width ``d``.
        heads: number of heads ``H`` (must divide ``dim``).
        expander_degree: degree ``k`` of the random regular expander (even, ``>= 0``; ``0``: no
            expander).
        num_virtual: number ``R`` of virtual global nodes per graph (``>= 0``).
        graph_edges: attend along ``ctx.edge_index`` (then required; ``ValueError`` if it is
            ``None``).
        self_loops: every node attends to itself.
        resample: draw a fresh expander on every training-mode forward; ``False``: always the
            seeded one.
        seed: seed of the expander in eval mode or with ``resample=False``.
        dropout: dropout on the attention weights, both stages (training only; the drop
            probability is rounded to a multiple of 1/256, see :func:`byte_dropout_keep`).
        bias: use biases in the input and output projections.

    Shapes:
        x ``[N, d]``, ctx.batch ``[N]`` (sorted), ctx.edge_index ``[2, E]`` -> ``[N, d]``.
    """

    def __init__(self, dim: int, heads: int = 4, expander_degree: int = 4, num_virtual: int = 1,
                 graph_edges: bool = True, self_loops: bool = True, resample: bool = True,
                 seed: int = 0, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self._set_heads(dim, heads, dropout)
        if expander_degree < 0 or expander_degree % 2 != 0:
            raise ValueError(
                f"ExpanderAttention: expander_degree={expander_degree} must be even and >= 0 "
                "(each random permutation adds 2 edges per node); use e.g. expander_degree=2 "
                "or 4, or 0 for no expander.")
        if num_virtual < 0:
            raise ValueError(f"ExpanderAttention: num_virtual={num_virtual} must be >= 0 "
                             "(0 for no virtual nodes, typically 1).")
        self.expander_degree = expander_degree
        self.num_virtual = num_virtual
        self.graph_edges = graph_edges
        self.self_loops = self_loops
        self.resample = resample
        self.seed = seed
        self.bias = bias
        self.in_proj = nn.Linear(dim, 3 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.virtual = nn.Parameter(torch.empty(num_virtual, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the projections as :class:`torch.nn.MultiheadAttention` does and draw the
        virtual nodes from :math:`\\mathcal{N}(0, 1)` (as ``nn.Embedding``)."""
        nn.init.xavier_uniform_(self.in_proj.weight)
        self.out_proj.reset_parameters()
        if self.bias:
            nn.init.zeros_(self.in_proj.bias)
            nn.init.zeros_(self.out_proj.bias)
        nn.init.normal_(self.virtual)

    def _generator(self) -> Optional[torch.Generator]:
        """``None`` (global RNG) for a resampled training forward, else a CPU generator at ``seed``."""
        if self.training and self.resample:
            return None
        return torch.Generator().manual_seed(self.seed)

    def interaction_edges(self, x_or_num_nodes: Union[Tensor, int],
                          ctx: AttentionContext) -> Tensor:
        """The node-to-node pairs :math:`\\mathcal{E}` attended in stage 2 (what forward uses).

        The union of ``ctx.edge_index`` (if ``graph_edges``), a random expander (drawn as
        forward draws it, see the class docstring; so in a resampled training-mode call it
        consumes the global RNG) and self loops (if ``self_loops``), duplicates removed. Virtual
        nodes are not included (see :meth:`virtual_edges`).

        Args:
            x_or_num_nodes: the node features ``[N, d]`` or the number of nodes ``N``.
            ctx: the attention context (``batch``, ``num_graphs``, ``edge_index``).

        Returns:
            ``LongTensor[2, E']`` (row 0 source ``j``, row 1 target ``i``), sorted by target then
            source, without duplicates; ``E' <= E + N (expander_degree + 1)``.
        """
        N = x_or_num_nodes.size(0) if isinstance(x_or_num_nodes, Tensor) else int(x_or_num_nodes)
        device = ctx.batch.device
        parts = []
        if self.graph_edges:
            if ctx.edge_index is None:
                raise ValueError(
                    "ExpanderAttention: graph_edges=True but the context has no edge_index "
                    "(ctx.edge_index is None); pass the batch's edge_index in the "
                    "AttentionContext or set graph_edges=False.")
            parts.append(ctx.edge_index.to(device=device, dtype=torch.long))
        if self.expander_degree > 0:
            parts.append(expander_edges(ctx.batch, ctx.num_graphs, self.expander_degree,
                                        self._generator()))
        if self.self_loops:
            parts.append(torch.arange(N, device=device).expand(2, N))
        if not parts:
            return torch.empty(2, 0, dtype=torch.long, device=device)
        src, dst = torch.cat(parts, dim=1)
        key = torch.unique(dst * N + src)                                  # dedup, sorted
        return torch.stack([key % N, torch.div(key, N, rounding_mode="floor")])

    def virtual_edges(self, num_nodes: int, ctx: AttentionContext) -> tuple[Tensor, Tensor]:
        """The (node, virtual node) pairs of both stages; virtual node ``r`` of graph ``g`` is
        slot ``g * num_virtual + r``.

        Returns:
            ``(stage1, stage2)``, each ``LongTensor[2, N * num_virtual]``: ``stage1`` has sources
            the nodes ``j`` and targets the virtual slots of their graph (each virtual node
            attends to all nodes of its graph); ``stage2`` has sources ``N + slot`` (virtual keys
            are appended after the ``N`` node keys) and targets the nodes of that graph.
        """
        N, R, device = num_nodes, self.num_virtual, ctx.batch.device
        nodes = torch.arange(N, device=device).repeat(R)                                # [R N]
        slots = ctx.batch.repeat(R) * R + torch.arange(R, device=device).repeat_interleave(N)
        return torch.stack([nodes, slots]), torch.stack([N + slots, nodes])

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, src: Tensor, dst: Tensor,
                num_targets: int) -> Tensor:
        """Softmax attention of the targets ``q [T, H, dh]`` over the edges ``src -> dst`` into
        ``k, v [S, H, dh]`` -> heads ``[T, H, dh]`` in ``v``'s dtype (zero for a target without
        edges).

        Mixed precision: the logits are summed into float32 (``sum(dtype=...)``, the products
        stay in the input dtype), the softmax (max, exp, normaliser) and the weighted sum of the
        values are computed and accumulated in float32, and only the result is cast back to
        ``v.dtype``. Under bf16 autocast this keeps the per-target sums exact to float32 however
        many edges a target has (an ``index_add_`` into a bf16 buffer loses the small terms of a
        hub's sum on CUDA, where it accumulates in bf16), and the accumulator's dtype never
        depends on which ops autocast runs in float32 (CUDA's autocast runs ``exp`` in float32,
        CPU's does not: a buffer allocated in ``q``'s dtype then mismatched the float32 source).
        """
        acc = torch.promote_types(v.dtype, torch.float32)                  # fp32 (float64 stays)
        logits = (q[dst] * k[src]).sum(-1, dtype=acc) * self.head_dim ** -0.5      # [E, H]
        alpha = softmax(logits, dst, num_nodes=num_targets)                        # [E, H]
        if self.training and self.dropout > 0:
            keep, scale = byte_dropout_keep(alpha.shape, self.dropout, alpha.device)
            alpha = torch.where(keep, alpha * scale, 0.0)
        out = torch.zeros(num_targets, self.heads, self.head_dim, dtype=acc, device=v.device)
        out.index_add_(0, dst, alpha.unsqueeze(-1) * v[src])          # promoted to acc
        return out.to(v.dtype)

    def forward(self, x: Tensor, ctx: AttentionContext) -> Tensor:
        N = x.size(0)
        if N == 0:
            return self.out_proj(x)
        H, dh = self.heads, self.head_dim
        q, k, v = self.in_proj(x).view(N, 3, H, dh).unbind(1)                      # [N, H, dh]
        src, dst = self.interaction_edges(N, ctx)
        if self.num_virtual > 0:
            S = ctx.num_graphs * self.num_virtual                                  # virtual slots
            stage1, stage2 = self.virtual_edges(N, ctx)
            # a bf16 x (autocast) keeps the learned virtual nodes in float32 in the residual
            virtual = self.virtual.to(torch.promote_types(x.dtype, self.virtual.dtype))
            q_virt = self.in_proj(virtual).view(-1, 3, H, dh)[:, 0]                # [R, H, dh]
            heads1 = self._attend(q_virt.repeat(ctx.num_graphs, 1, 1), k, v,
                                  stage1[0], stage1[1], S)                         # [S, H, dh]
            state = virtual.repeat(ctx.num_graphs, 1) + self.out_proj(heads1.reshape(S, self.dim))
            _, k_virt, v_virt = self.in_proj(state).view(S, 3, H, dh).unbind(1)    # [S, H, dh]
            k, v = torch.cat([k, k_virt]), torch.cat([v, v_virt])
            src, dst = torch.cat([src, stage2[0]]), torch.cat([dst, stage2[1]])
        heads = self._attend(q, k, v, src, dst, N)
        return self.out_proj(heads.reshape(N, self.dim))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.dim}, heads={self.heads}, "
                f"expander_degree={self.expander_degree}, num_virtual={self.num_virtual}, "
                f"graph_edges={self.graph_edges}, self_loops={self.self_loops}, "
                f"resample={self.resample}, dropout={self.dropout})")
