"""The GPS layer (Rampášek et al., "Recipe for a General, Powerful, Scalable Graph Transformer",
NeurIPS 2022).

.. math::
    X_M^{l+1}, E^{l+1} = \\mathrm{MPNN}^l(X^l, E^l, A), \\qquad
    X_T^{l+1} = \\mathrm{GlobalAttn}^l(X^l) \\\\
    \\hat X_M = \\mathrm{Norm}(X^l + \\mathrm{Dropout}(X_M^{l+1})), \\qquad
    \\hat X_T = \\mathrm{Norm}(X^l + \\mathrm{Dropout}(X_T^{l+1})) \\\\
    X^{l+1} = \\mathrm{Norm}(\\hat X + \\mathrm{FFN}(\\hat X)), \\quad \\hat X = \\hat X_M + \\hat X_T

The local layer and the global attention are *given* to the layer as modules (dependency
injection); either may be ``None``.  Shapes: ``x [N, dim]``, ``edge_attr [E, dim] | None``.

Two narrower ways to run a layer live here as well, both exact (equal outputs on the rows they
compute, in eval mode):

* **per-layer trimming** of a hop-ordered neighbour sample (:class:`TrimPlan`, :class:`LayerTrim`,
  :func:`local_trimmed`): the nodes of a sampled batch are ordered seeds first, then the nodes new
  at hop 1, 2, ..., and the edges of hop ``h`` are exactly the in-edges of the nodes new at hop
  ``h - 1`` (:class:`~graphgt.data.sampling.NeighborSampler`).  With ``L`` layers, layer ``l`` only
  needs outputs for the nodes of hops ``0..L-1-l``, which read the edges of hops ``1..L-l`` and the
  nodes of hops ``0..L-l`` (PyG's ``trim_to_layer`` idea, here with bipartite outputs: a layer
  computes rows only for the nodes still needed);
* **blocks** of layer-wise full-graph inference (:func:`local_block`): one layer for a chunk of
  target nodes from a sparse ``[targets, sources]`` adjacency holding every in-neighbour
  (:mod:`graphgt.data.layerwise`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import scatter

from graphgt.nn.attention.base import AttentionContext, GlobalAttention
from graphgt.nn.dropout import ByteDropout
from graphgt.nn.local.base import LocalMP
from graphgt.nn.local.gat import GATLayer
from graphgt.nn.local.gcn import GCNLayer
from graphgt.nn.local.gin import GINELayer, GINLayer
from graphgt.nn.local.sage import SAGELayer

NormKind = Literal["batch", "layer", "none"]

NORMS: Dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm1d,
    "layer": nn.LayerNorm,
    "none": lambda dim: nn.Identity(),
}


def make_norm(kind: str, dim: int) -> nn.Module:
    """``batch`` -> BatchNorm1d, ``layer`` -> LayerNorm, ``none`` -> Identity."""
    if kind not in NORMS:
        raise ValueError(f"norm='{kind}' is not one of {sorted(NORMS)}")
    return NORMS[kind](dim)


# --------------------------------------------------------------------------- per-layer trimming
def _hop_counts(value: Any, name: str) -> List[int]:
    """``value`` (a list/tuple/1-D tensor of ints) as a list of non-negative ints, or a ``ValueError``."""
    if isinstance(value, Tensor):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ValueError(f"batch.{name}={value!r} must be a list of non-negative ints (one per hop), as "
                         "graphgt.data.sampling.NodeLoader sets it; a collated list of several samples "
                         "cannot be trimmed (build the model with trim=False)")
    return list(value)


class TrimPlan:
    """How the layers of a model trim one hop-ordered neighbour sample.

    Args:
        edge_index: ``[2, E]`` of the batch (row 0 = source, row 1 = target), edges grouped by hop.
        num_sampled_nodes: ``H + 1`` ints, the nodes first reached at each hop (hop 0 = seeds).
        num_sampled_edges: ``H`` ints, the edges sampled at each hop.
        num_nodes: rows of the batch (``sum(num_sampled_nodes)`` is checked against it).

    Prefix sums: ``nodes(k)`` = nodes of hops ``0..k``, ``edges(k)`` = edges of hops ``1..k``.  Layer
    ``l`` of ``L`` reads the ``nodes(s)`` first rows and ``edges(s)`` first edges and writes the
    ``nodes(t)`` first rows, ``s = min(H, L - l)``, ``t = min(H, L - 1 - l)`` (:meth:`layers`).
    Exactness needs the sampler's invariant that the edges of hop ``h`` are all the sampled in-edges
    of the nodes new at hop ``h - 1``: then the first ``edges(s)`` edges are exactly the in-edges of
    the first ``nodes(s - 1)`` nodes.
    """

    def __init__(self, edge_index: Tensor, num_sampled_nodes: Any, num_sampled_edges: Any, num_nodes: int):
        nodes = _hop_counts(num_sampled_nodes, "num_sampled_nodes")
        edges = _hop_counts(num_sampled_edges, "num_sampled_edges")
        if len(nodes) != len(edges) + 1:
            raise ValueError(f"batch.num_sampled_nodes has {len(nodes)} entries and num_sampled_edges {len(edges)}; "
                             "a sample of H hops has H + 1 and H")
        if sum(nodes) != num_nodes or sum(edges) != edge_index.size(1):
            raise ValueError(f"batch.num_sampled_nodes sums to {sum(nodes)} and num_sampled_edges to {sum(edges)}, "
                             f"but the batch has {num_nodes} nodes and {edge_index.size(1)} edges: nodes or edges "
                             "were changed after sampling, so the hop counts no longer describe the batch; drop "
                             "num_sampled_nodes from the batch or build the model with trim=False")
        self.edge_index, self.num_nodes, self.hops = edge_index, int(num_nodes), len(edges)
        self.node_prefix = [sum(nodes[:k + 1]) for k in range(len(nodes))]
        self.edge_prefix = [sum(edges[:k]) for k in range(len(nodes))]
        self._gcn: Dict[bool, "GCNWeights"] = {}

    @classmethod
    def of(cls, data: Any) -> Optional["TrimPlan"]:
        """The plan of a batch that carries ``num_sampled_nodes``/``num_sampled_edges``, else ``None``."""
        nodes = getattr(data, "num_sampled_nodes", None)
        edges = getattr(data, "num_sampled_edges", None)
        if nodes is None and edges is None:
            return None
        if nodes is None or edges is None:
            raise ValueError("the batch carries only one of num_sampled_nodes / num_sampled_edges; trimming "
                             "needs both (or neither: then the model runs on every node)")
        return cls(data.edge_index, nodes, edges, int(data.num_nodes))

    @property
    def num_seeds(self) -> int:
        return self.node_prefix[0]

    def layers(self, num_layers: int, last_only: bool = False) -> List[Optional["LayerTrim"]]:
        """One :class:`LayerTrim` per layer; ``last_only`` (global attention reads every node of each
        layer's input): ``None`` (untrimmed) for all but the last layer, which reads every row and
        every edge of hop 1 and writes the seeds' rows only."""
        h, L = self.hops, num_layers
        if last_only:
            last = LayerTrim(self, self.num_nodes, self.num_seeds, self.edge_prefix[min(h, 1)])
            return [None] * (L - 1) + [last]
        return [LayerTrim(self, self.node_prefix[min(h, L - l)], self.node_prefix[min(h, L - 1 - l)],
                          self.edge_prefix[min(h, L - l)]) for l in range(L)]

    def gcn_weights(self, add_self_loops: bool, dtype: torch.dtype) -> "GCNWeights":
        """GCN's symmetric normalisation of the *untrimmed* batch, computed once per batch.

        The normalisation reads the degree of each edge's source node, and trimming removes the
        in-edges of the outermost nodes: recomputing it on a trimmed graph would change the weights
        of the kept edges.  So it is computed here on every edge (PyG's ``gcn_norm``, as ``GCNConv``
        does) and each layer keeps the weights of its edge prefix.
        """
        if add_self_loops not in self._gcn:
            ei, w = gcn_norm(self.edge_index, None, self.num_nodes, False, add_self_loops, "source_to_target", dtype)
            if add_self_loops:  # gcn_norm drops existing loops, keeps the rest in order, appends one loop per node
                kept = (self.edge_index[0] != self.edge_index[1]).long().cumsum(0)
                m = ei.size(1) - self.num_nodes
                self._gcn[add_self_loops] = GCNWeights(ei[:, :m], w[:m], w[m:],
                                                       lambda e: int(kept[e - 1]) if e > 0 else 0)
            else:
                self._gcn[add_self_loops] = GCNWeights(ei, w, None, lambda e: e)
        return self._gcn[add_self_loops]


@dataclass
class GCNWeights:
    """GCN edge weights of an untrimmed batch: ``edge_index``/``weight`` of its non-loop edges (in batch
    order), ``loop_weight [N]`` of the self-loop added to every node (``None`` without added loops),
    and ``prefix(e)``: how many of the non-loop edges lie among the batch's first ``e`` edges."""

    edge_index: Tensor
    weight: Tensor
    loop_weight: Optional[Tensor]
    prefix: Callable[[int], int]


@dataclass(frozen=True)
class LayerTrim:
    """What one layer computes on a trimmed batch: it reads the first ``num_src`` rows of its input
    and the first ``num_edges`` edges (and edge features), and writes the first ``num_dst`` rows."""

    plan: TrimPlan
    num_src: int
    num_dst: int
    num_edges: int


def trim_mode(local: Optional[nn.Module]) -> Optional[str]:
    """How :func:`local_trimmed` runs ``local`` exactly, or ``None`` when it cannot:

    * ``"bipartite"`` (SAGE, GIN, GINE, GAT): the PyG convolution with ``(x_src, x_dst)`` and
      ``size=(num_src, num_dst)``: rows are computed for the targets only;
    * ``"gcn"``: GCN with the untrimmed batch's normalisation carried through
      (:meth:`TrimPlan.gcn_weights`); ``None`` for a ``cached=True`` GCN (its cached normalisation
      belongs to another graph, which trimming could not reproduce);
    * ``"rows"`` (any other :class:`LocalMP`, e.g. GatedGCN): the layer on the trimmed rows and
      edges, then its first ``num_dst`` rows; exact for a layer whose output row ``i`` reads only
      ``x_i``, the edges into ``i`` and their sources (what local message passing means; GatedGCN's
      BatchNorm in training mode sees fewer rows, so equality holds in eval mode).
    """
    if local is None:
        return "rows"
    if type(local) is GCNLayer:
        return None if local.cached else "gcn"
    if type(local) in (SAGELayer, GINLayer, GINELayer, GATLayer):
        return "bipartite"
    return "rows"


def local_trimmed(local: LocalMP, x: Tensor, edge_attr: Optional[Tensor], trim: LayerTrim
                  ) -> Tuple[Tensor, Optional[Tensor]]:
    """Run ``local`` for the first ``trim.num_dst`` nodes only (see :func:`trim_mode`).

    Shapes: ``x [>= num_src, d_in]``, ``edge_attr [>= num_edges, d] | None``
    -> (``[num_dst, d_out]``, edge features of the first ``num_edges`` edges).
    """
    ei = trim.plan.edge_index[:, :trim.num_edges]
    ea = edge_attr[:trim.num_edges] if edge_attr is not None else None
    x_src, x_dst = x[:trim.num_src], x[:trim.num_dst]
    size = (trim.num_src, trim.num_dst)
    mode = trim_mode(local)
    if mode == "bipartite":
        conv: Any = local.conv  # type: ignore[union-attr]
        if isinstance(local, GINELayer) or (isinstance(local, GATLayer) and local.edge_dim_aware and ea is not None):
            if ea is None:
                return local(x_src, ei, ea)  # the layer's own error for missing edge features
            return conv((x_src, x_dst), ei, ea, size=size), ea
        return conv((x_src, x_dst), ei, size=size), ea
    if mode == "gcn":
        conv = local.conv  # type: ignore[union-attr]
        h = conv.lin(x_src)
        if not conv.normalize:  # a plain sum over the edges as given (self-loop edges included)
            out = scatter(h[ei[0]], ei[1], dim=0, dim_size=trim.num_dst, reduce="sum")
            return (out + conv.bias if conv.bias is not None else out), ea
        weights = trim.plan.gcn_weights(bool(conv.add_self_loops), h.dtype)
        m = weights.prefix(trim.num_edges)
        src, dst = weights.edge_index[0, :m], weights.edge_index[1, :m]
        out = scatter(weights.weight[:m, None] * h[src], dst, dim=0, dim_size=trim.num_dst, reduce="sum")
        if weights.loop_weight is not None:
            out = out + weights.loop_weight[:trim.num_dst, None] * h[:trim.num_dst]
        return (out + conv.bias if conv.bias is not None else out), ea
    if mode is None:
        raise ValueError(f"{local!r} cannot be trimmed exactly (a cached GCN); build the model with trim=False")
    h, ea = local(x_src, ei, ea)
    return h[:trim.num_dst], ea


# --------------------------------------------------------------------------- layer-wise blocks
BLOCK_AGGRS = ("add", "sum", "mean", "min", "max")


def block_support(local: Optional[nn.Module]) -> Optional[str]:
    """``None`` when :func:`local_block` can run ``local``, else why not (for an error message)."""
    if type(local) is GCNLayer:
        return "a cached GCN normalises with another graph's degrees" if local.cached else None
    if type(local) in (SAGELayer, GINLayer):
        aggr = local.conv.aggr
        if isinstance(aggr, str) and aggr in BLOCK_AGGRS:
            return None
        return f"aggr={aggr!r} has no sparse-matrix form (supported: {', '.join(BLOCK_AGGRS)})"
    return (f"{type(local).__name__} has no layer-wise form (supported local layers: SAGELayer, GCNLayer, "
            "GINLayer without edge features)")


def local_block(local: LocalMP, block: Any) -> Tensor:
    """One local layer for a chunk of target nodes of a whole graph (layer-wise inference).

    ``block`` (built by :class:`graphgt.data.layerwise.LayerwiseInference`) has:

    * ``x_src [S, d]`` rows of the possible sources, ``x_dst [T, d]`` the targets' rows;
    * ``adj_t``: ``torch.sparse_csr_tensor [T, S]`` of ones, row ``i`` = every in-neighbour of
      target ``i`` (its whole CSR row of the graph), columns index ``x_src``;
    * ``dst_index [T]``: row of each target within ``x_src``;
    * ``src_degree [S]`` / ``src_self_loops [S]`` (long): each source's in-degree in the whole graph
      and how many of those entries are self-loops (only when the model's plan asks,
      ``needs_degree``; GCN's normalisation reads them).

    Returns ``[T, d_out]``: the rows the layer computes on the whole graph for these targets
    (SAGE/GIN through PyG's fused sparse-matrix product, GCN with its symmetric normalisation of the
    whole graph, aggregating before the linear map).
    """
    problem = block_support(local)
    if problem is not None:
        raise ValueError(f"layer-wise inference cannot run {local!r}: {problem}")
    conv: Any = local.conv
    if type(local) is not GCNLayer:
        return conv((block.x_src, block.x_dst), block.adj_t)
    adj = block.adj_t
    if not conv.normalize:  # a plain sum over the CSR row (self-loop entries included), no added loops
        out = conv.lin(torch.sparse.mm(adj, block.x_src))
        return out + conv.bias if conv.bias is not None else out
    crow, col = adj.crow_indices(), adj.col_indices()
    deg = block.src_degree.to(block.x_src.dtype)
    loops = bool(conv.add_self_loops)
    if loops:  # gcn_norm replaces existing self-loops by one added loop of weight 1 per node
        deg = deg - block.src_self_loops.to(deg.dtype) + 1
    dinv = deg.pow(-0.5)
    dinv.masked_fill_(torch.isinf(dinv), 0.0)
    row = torch.repeat_interleave(torch.arange(crow.numel() - 1, device=crow.device), crow[1:] - crow[:-1])
    dst = block.dst_index[row]
    w = dinv[col] * dinv[dst]
    if loops:
        w = w * (col != dst).to(w.dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        norm = torch.sparse_csr_tensor(crow, col, w, adj.shape, check_invariants=False)
    agg = torch.sparse.mm(norm, block.x_src)
    if loops:
        agg = agg + (dinv[block.dst_index] ** 2)[:, None] * block.x_dst
    out = conv.lin(agg)
    return out + conv.bias if conv.bias is not None else out


class GPSLayer(nn.Module):
    """One GPS layer: local MPNN and global attention in parallel, summed, then a feed-forward block.

    Args:
        dim: width of node (and edge) features.
        local: a :class:`LocalMP` (or ``None`` for a pure transformer layer).
        attention: a :class:`GlobalAttention` (or ``None`` for a pure MPNN layer).
        norm: ``batch`` (GraphGPS default), ``layer`` or ``none``.
        dropout: dropout on each branch's output and inside the FFN.
        ffn_ratio: hidden width of the FFN is ``ffn_ratio * dim`` (GraphGPS: 2).
        residual: add the input to each branch (and to the FFN output).
    """

    def __init__(self, dim: int, local: Optional[LocalMP], attention: Optional[GlobalAttention],
                 norm: NormKind = "batch", dropout: float = 0.0, ffn_ratio: float = 2.0,
                 residual: bool = True):
        super().__init__()
        if local is None and attention is None:
            raise ValueError("GPSLayer needs a local layer, a global attention, or both (got neither)")
        self.dim, self.norm_kind, self.residual = dim, norm, residual
        self.local, self.attention = local, attention
        self.norm_local = make_norm(norm, dim) if local is not None else None
        self.norm_attn = make_norm(norm, dim) if attention is not None else None
        self.dropout = ByteDropout(dropout)
        hidden = int(round(ffn_ratio * dim))
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), ByteDropout(dropout),
                                 nn.Linear(hidden, dim), ByteDropout(dropout))
        self.norm_ffn = make_norm(norm, dim)

    def reset_parameters(self) -> None:
        for module in (self.local, self.attention, self.norm_local, self.norm_attn, self.norm_ffn):
            if module is not None and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for m in self.ffn:
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Optional[Tensor],
                ctx: AttentionContext, trim: Optional[LayerTrim] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """``x [N, d]`` -> ``[N, d]`` (with ``trim``: ``[trim.num_dst, d]``, the first rows only).

        With ``trim`` (:class:`LayerTrim`) the local branch, the norms and the FFN compute the first
        ``trim.num_dst`` rows only, and edge features come back for the first ``trim.num_edges``
        edges; attention still reads every row of ``x`` (queries sliced after), so a layer with
        attention must be given all rows (``trim.num_src == N``).  Rows are equal to the untrimmed
        layer's in eval mode; in training mode BatchNorm normalises with the statistics of fewer rows
        and dropout draws other masks.
        """
        if trim is not None and self.attention is not None and trim.num_src != x.size(0):
            raise ValueError(f"a GPS layer with attention reads every node: trim.num_src={trim.num_src} must equal "
                             f"the {x.size(0)} input rows (TrimPlan.layers(..., last_only=True))")
        x_out = x if trim is None else x[:trim.num_dst]
        branches = []
        if self.local is not None:
            if trim is None:
                h, edge_attr = self.local(x, edge_index, edge_attr)
            else:
                h, edge_attr = local_trimmed(self.local, x, edge_attr, trim)
            if self.residual and not self.local.applies_residual:
                h = x_out + self.dropout(h)
            branches.append(self.norm_local(h))
        if self.attention is not None:
            h = self.attention(x, ctx)
            h = self.dropout(h if trim is None else h[:trim.num_dst])
            branches.append(self.norm_attn(x_out + h if self.residual else h))
        return self._ffn(branches), edge_attr

    def _ffn(self, branches: Sequence[Tensor]) -> Tensor:
        h = branches[0] if len(branches) == 1 else branches[0] + branches[1]
        h = h + self.ffn(h) if self.residual else self.ffn(h)
        return self.norm_ffn(h)

    def block_support(self) -> Optional[str]:
        """``None`` when :meth:`forward_block` can run this layer, else why not."""
        if self.attention is not None:
            return (f"its global attention ({type(self.attention).__name__}) reads every node of the layer's input, "
                    "which a chunk of target nodes does not have")
        return block_support(self.local)

    def forward_block(self, block: Any) -> Tensor:
        """This layer for a chunk of target nodes of a whole graph (see :func:`local_block`):
        ``[T, d]`` rows equal to the full-graph layer's in eval mode.  Layers with attention cannot."""
        problem = self.block_support()
        if problem is not None:
            raise ValueError(f"layer-wise inference cannot run {self!r}: {problem}")
        h = local_block(self.local, block)
        if self.residual and not self.local.applies_residual:
            h = block.x_dst + self.dropout(h)
        return self._ffn([self.norm_local(h)])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.dim}, local={self.local!r}, attention={self.attention!r}, "
                f"norm={self.norm_kind!r})")
