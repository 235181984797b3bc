"""Whole models: the GPS model and a plain MPNN baseline, both built from injected parts.

``GPSModel`` = input encoders (raw node features ‖ positional encodings, raw edge features)
-> ``layers`` x :class:`GPSLayer` (local MPNN + global attention) -> head.

The model never reads a config: the data module's :class:`~graphgt.spec.DataSpec` describes the
raw features (embedded by :func:`graphgt.nn.encoders.feature_encoder`) and what the head predicts; ``local`` / ``attention`` are factories ``dim -> module``
(Hydra partials of ``configs/local/*.yaml`` / ``configs/attention/*.yaml``); ``pe`` is a list of
``(PositionalEncoding, encoder_factory)`` pairs from ``configs/pe/*.yaml``.

**Per-layer trimming** (``trim=True``, the default): on a node-level batch that carries the hop
counts of a neighbour sample (``num_sampled_nodes``/``num_sampled_edges``, set by
:class:`~graphgt.data.sampling.NodeLoader`), layer ``l`` of ``L`` computes only the nodes of hops
``0..L-1-l`` (:class:`~graphgt.nn.gps_layer.TrimPlan`), and the head only the seeds.  The output
keeps the batch's ``[N, out]`` shape: the seeds' rows equal the untrimmed model's (eval mode; in
training mode BatchNorm sees fewer rows and dropout draws other masks), the other rows are zeros.
GCN keeps the normalisation of the untrimmed batch; edge features are trimmed with their edges
(GatedGCN's updated ones too); a GPS model with global attention trims its last layer only
(attention at layer ``l`` reads every node of layer ``l``'s input).  Batches without hop counts
(whole graphs, molecules) run unchanged.

**Layer-wise inference** (:class:`~graphgt.data.layerwise.LayerwiseInference`): exact full-graph
predictions one layer at a time over all nodes, through the duck-typed protocol
``layerwise_plan()`` / ``layerwise_input(data)`` / ``layerwise_layer(i, block)`` /
``layerwise_output(x)`` that :class:`MPNNModel` (SAGE, GCN, GIN layers) and :class:`GPSModel`
without attention follow; the other models raise a ``ValueError`` saying why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Literal, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from graphgt.nn.attention.base import AttentionContext, GlobalAttention
from graphgt.nn.dropout import ByteDropout
from graphgt.nn.encoders import feature_encoder
from graphgt.nn.gps_layer import NORMS, GPSLayer, LayerTrim, NormKind, TrimPlan, block_support, local_block, \
    local_trimmed, make_norm, trim_mode
from graphgt.nn.heads import HEADS
from graphgt.nn.local.base import LocalMP
from graphgt.nn.local.gcn import GCNLayer
from graphgt.pe.base import PositionalEncoding
from graphgt.spec import DataSpec

LocalFactory = Callable[[int], LocalMP]
AttentionFactory = Callable[[int], GlobalAttention]
PEBranch = Tuple[PositionalEncoding, Callable[..., nn.Module]]


def local_consumes_edge_attr(local: Optional[LocalFactory]) -> bool:
    """Whether the layers that ``local`` builds read edge features, known before any is built.

    ``local`` is normally ``functools.partial(LayerClass, **config)`` (a Hydra partial of
    ``configs/local/*.yaml``): its class and keywords answer
    (:meth:`~graphgt.nn.local.base.LocalMP.consumes_edge_attr`).  A factory that does not show its
    class (a lambda) is assumed to read them; the model drops the edge encoder again once the built
    layers say otherwise (:func:`drop_unread_edge_encoder`).
    """
    if local is None:
        return False
    target = getattr(local, "func", local)
    if isinstance(target, type) and issubclass(target, LocalMP):
        return target.consumes_edge_attr(**dict(getattr(local, "keywords", None) or {}))
    return True


def drop_unread_edge_encoder(encoder: InputEncoder, layers: Sequence[Optional[nn.Module]]) -> None:
    """Remove ``encoder.edge`` when none of the built ``layers`` reads edge features.

    Its parameters would never receive a gradient, which DDP refuses ("Expected to have finished
    reduction in the prior iteration"), and its output would be computed for nothing.  A layer that
    is not a :class:`LocalMP` (no ``reads_edge_attr``) is assumed to read them.
    """
    if encoder.edge is not None and not any(layer is not None and getattr(layer, "reads_edge_attr", True)
                                            for layer in layers):
        encoder.edge = None


def discard_last_edge_output(layer: Optional[nn.Module]) -> None:
    """Tell a model's last local layer that nothing reads the edge features it returns
    (:meth:`~graphgt.nn.local.base.LocalMP.discard_edge_output`; a module without that method is left alone)."""
    discard = getattr(layer, "discard_edge_output", None)
    if discard is not None:
        discard()



@dataclass(frozen=True)
class LayerwisePlan:
    """What a model tells :class:`~graphgt.data.layerwise.LayerwiseInference` before it starts.

    Attributes:
        dims: widths ``(d_0, ..., d_L)``: ``d_0`` of :meth:`layerwise_input`'s output, ``d_{i+1}`` of
            layer ``i``'s (the two buffers of ``N`` rows hold these).
        out_dim: width of :meth:`layerwise_output` (the predictions).
        raw_input: ``layerwise_input`` is the raw float features themselves (``x.float()``): a float32
            feature array can be read in place instead of copied.
        needs_degree: blocks must carry ``src_degree``/``src_self_loops`` (GCN normalisation).
    """

    dims: Tuple[int, ...]
    out_dim: int
    raw_input: bool
    needs_degree: bool


def pad_rows(out: Tensor, num_rows: int) -> Tensor:
    """``out [B, C]`` followed by zero rows up to ``[num_rows, C]`` (a trimmed model's output keeps the
    batch's shape; ``loss_mask`` selects the seeds, which come first)."""
    if out.size(0) == num_rows:
        return out
    return torch.cat([out, out.new_zeros((num_rows - out.size(0),) + tuple(out.shape[1:]))], dim=0)


def _trim_plan(model: nn.Module, data: Any) -> Optional[TrimPlan]:
    """The batch's :class:`TrimPlan` when ``model`` trims it (``model.trim``, node level, every local
    layer trimmable), else ``None``."""
    if not model.trim or model.level != "node":
        return None
    return TrimPlan.of(data)


def _check_layerwise(model: nn.Module, locals_: Sequence[Any], extra: Optional[str] = None) -> None:
    """``ValueError`` naming why ``model`` cannot run layer-wise (see :class:`LayerwisePlan`)."""
    problem = extra
    if problem is None and model.level != "node":
        problem = "it predicts graph-level outputs; layer-wise inference predicts nodes"
    if problem is None and getattr(model, "encoder", None) is not None and model.encoder.edge is not None:
        problem = "its layers read edge features, which layer-wise inference over a graph store does not have"
    if problem is None:
        problem = next((p for p in (block_support(loc) for loc in locals_) if p is not None), None)
    if model.training:
        problem = problem or "it is in training mode (dropout, BatchNorm statistics): call model.eval() first"
    if problem is not None:
        raise ValueError(f"{type(model).__name__} cannot run layer-wise: {problem}; evaluate with sampled batches "
                         "instead (data.eval_mode=sampled)")


def _check_size(hidden: int, layers: int) -> None:
    """``ValueError`` naming the key for a width or depth below 1 (a model with no layer would train
    nothing and fail later, e.g. in its ``repr``)."""
    if layers < 1:
        raise ValueError(f"model.layers={layers} must be >= 1")
    if hidden < 1:
        raise ValueError(f"model.hidden={hidden} must be >= 1")


class InputEncoder(nn.Module):
    """Raw node features ‖ PE features -> ``[N, hidden]``; raw edge features -> ``[E, hidden]``.

    The node encoder gets ``hidden - sum(pe_out_dims)`` columns and each PE encoder its own
    ``out_dim`` (as GraphGPS concatenates them); ``input_dropout`` is applied to the raw node
    features (GCN/GAT practice on citation graphs).  The edge encoder is built only when the data
    has edge features and ``edges=True``: a model whose layers ignore edge features passes
    ``edges=False`` (an unused encoder's parameters get no gradient, which DDP refuses), and
    ``forward`` then returns ``None`` for them.
    """

    def __init__(self, spec: DataSpec, hidden: int, pe: Sequence[PEBranch] = (), input_dropout: float = 0.0,
                 edges: bool = True):
        super().__init__()
        self.pe_encoders = nn.ModuleList(factory(pe=p) for p, factory in pe)
        pe_dim = sum(int(enc.out_dim) for enc in self.pe_encoders)
        if pe_dim >= hidden:
            raise ValueError(f"the PE encoders' out_dim add up to {pe_dim}, which leaves no room in "
                             f"model.hidden={hidden}; raise model.hidden or lower pe.<name>.encoder.out_dim")
        self.node = feature_encoder(spec.node_features, hidden - pe_dim)
        self.edge: Optional[nn.Module] = feature_encoder(spec.edge_features, hidden) \
            if edges and spec.edge_features is not None else None
        self.input_dropout = nn.Dropout(input_dropout)

    def reset_parameters(self) -> None:
        for m in [self.node, self.edge, *self.pe_encoders]:
            if m is not None and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def forward(self, data) -> Tuple[Tensor, Optional[Tensor]]:
        x = data.x
        if x.is_floating_point():
            x = self.input_dropout(x)
        x = self.node(x)
        if len(self.pe_encoders):
            x = torch.cat([x] + [enc(data) for enc in self.pe_encoders], dim=-1)
        edge_attr = self.edge(data.edge_attr) if self.edge is not None else None
        return x, edge_attr


class GPSModel(nn.Module):
    """GraphGPS (Rampášek et al., 2022): encoders -> ``layers`` x GPSLayer(local, attention) -> head.

    Args:
        spec: the data module's :class:`DataSpec` (encoders, task, level).
        hidden: model width ``d``.
        layers: number of GPS layers.
        local: factory ``dim -> LocalMP`` or ``None`` (pure transformer).
        attention: factory ``dim -> GlobalAttention`` or ``None`` (pure MPNN with GPS's FFN blocks).
        pe: ``(PositionalEncoding, encoder_factory)`` pairs; each encoder is built as ``factory(pe=p)``.
        norm, dropout, ffn_ratio: see :class:`GPSLayer`.
        head_layers, head_dropout, pool: the prediction head (``pool`` for graph-level tasks).
        input_dropout: dropout on raw float node features.
        trim: trim sampled batches per layer (module docstring): every layer computes only the
            nodes the later layers read; with attention, only the last layer is trimmed.  ``False``
            (or a cached GCN local layer, which cannot be trimmed exactly): every layer computes
            every sampled node.

    Shapes: ``forward(data) -> [N, out]`` (node level; trimmed: the seeds' rows, zeros after them)
    or ``[B, out]`` (graph level).
    """

    def __init__(self, spec: DataSpec, hidden: int = 64, layers: int = 3,
                 local: Optional[LocalFactory] = None, attention: Optional[AttentionFactory] = None,
                 pe: Sequence[PEBranch] = (), norm: NormKind = "batch", dropout: float = 0.0,
                 ffn_ratio: float = 2.0, head_layers: int = 2, head_dropout: float = 0.0,
                 pool: Literal["mean", "sum", "max"] = "mean", input_dropout: float = 0.0,
                 trim: bool = True):
        super().__init__()
        _check_size(hidden, layers)
        if local is None and attention is None:
            raise ValueError("GPSModel needs local=<layer>, attention=<module>, or both; got local=none "
                             "and attention=none")
        self.hidden, self.level = hidden, spec.task.level
        # edge features feed the local layers only (attention never reads them)
        self.encoder = InputEncoder(spec, hidden, pe, input_dropout, edges=local_consumes_edge_attr(local))
        self.layers = nn.ModuleList(
            GPSLayer(hidden, local(hidden) if local is not None else None,
                     attention(hidden) if attention is not None else None,
                     norm=norm, dropout=dropout, ffn_ratio=ffn_ratio)
            for _ in range(layers))
        drop_unread_edge_encoder(self.encoder, [layer.local for layer in self.layers])
        discard_last_edge_output(self.layers[-1].local if len(self.layers) else None)
        head_kwargs = {"pool": pool} if self.level == "graph" else {}
        self.head = HEADS[self.level](hidden, spec.task.num_outputs, head_layers, head_dropout, **head_kwargs)
        self.trim = bool(trim) and all(trim_mode(layer.local) is not None for layer in self.layers)

    def reset_parameters(self) -> None:
        reset_submodules(self)

    def forward(self, data) -> Tensor:
        x, edge_attr = self.encoder(data)
        ctx = AttentionContext.from_batch(data)
        plan = _trim_plan(self, data)
        if plan is None:
            for layer in self.layers:
                x, edge_attr = layer(x, data.edge_index, edge_attr, ctx)
            return self.head(x, ctx.batch, ctx.num_graphs)
        trims = plan.layers(len(self.layers), last_only=self.layers[0].attention is not None)
        for layer, trim in zip(self.layers, trims):
            x, edge_attr = layer(x, data.edge_index, edge_attr, ctx, trim)
        return pad_rows(self.head(x, ctx.batch[:x.size(0)], ctx.num_graphs), plan.num_nodes)

    # ---- layer-wise inference protocol (graphgt.data.layerwise)
    def layerwise_plan(self) -> LayerwisePlan:
        """Widths and needs of layer-wise inference; ``ValueError`` for a model with global attention
        (it reads every node of every layer's input), edge features or a graph-level head."""
        _check_layerwise(self, [layer.local for layer in self.layers],
                         next((p for p in (layer.block_support() for layer in self.layers) if p), None))
        return LayerwisePlan(dims=(self.hidden,) * (len(self.layers) + 1), out_dim=self.head.out_dim,
                             raw_input=False,
                             needs_degree=any(type(layer.local) is GCNLayer for layer in self.layers))

    def layerwise_input(self, data) -> Tensor:
        """Encoded node features (raw ‖ PE) of the nodes of ``data`` ``[n, hidden]`` (row-wise)."""
        return self.encoder(data)[0]

    def layerwise_layer(self, i: int, block: Any) -> Tensor:
        """GPS layer ``i`` for a block of targets (:meth:`GPSLayer.forward_block`) ``[T, hidden]``."""
        return self.layers[i].forward_block(block)

    def layerwise_output(self, x: Tensor) -> Tensor:
        """The node head on the last layer's rows ``[n, hidden] -> [n, out]`` (row-wise)."""
        return self.head(x, None, 1)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(hidden={self.hidden}, layers={len(self.layers)}, "
                f"layer={self.layers[0]!r}, head={self.head!r}, trim={self.trim})")


ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}
ResidualKind = Literal["none", "identity", "linear"]
JKKind = Literal["none", "last", "cat", "max", "sum"]
RESIDUALS = ("none", "identity", "linear")
JKS = ("none", "last", "cat", "max", "sum")


class MPNNModel(nn.Module):
    r"""A plain message-passing network (GCN/GAT/GIN/SAGE baselines as published):
    input dropout -> encoders -> local -> norm -> act -> ``layers - 1`` x [dropout -> local -> norm -> act]
    -> head.

    No FFN; residual, normalisation, jumping knowledge are options (below), all off by default.  Same constructor
    as :class:`GPSModel` minus the transformer parts; ``attention`` must be ``None``.  With
    ``raw_io=True`` the model is exactly the published GCN/GAT: the first layer reads the raw float
    features (``in_dim``) and the last one emits the outputs (``out_dim``), with no encoder and no
    head in between, ``X -> dropout -> conv -> act -> dropout -> conv`` — an extra encoder/head costs
    ~3 points of Cora accuracy.

    ``norm`` (``none`` | ``batch`` | ``layer``): a BatchNorm1d / LayerNorm after every convolution that
    an activation follows, between the two — the OGB baselines (Hu et al., "Open Graph Benchmark",
    NeurIPS 2020; snap-stanford/ogb ``examples/nodeproppred/arxiv/gnn.py``) compute, for hidden
    layers ``l < L``,

    .. math::
        \mathbf{H}^{(l)} = \operatorname{dropout}\big(\operatorname{ReLU}\big(
        \operatorname{BN}(\operatorname{conv}_l(\mathbf{H}^{(l-1)}))\big)\big), \qquad
        \mathbf{Y} = \operatorname{conv}_L(\mathbf{H}^{(L-1)})

    which is ``raw_io=True, norm="batch"`` (``L - 1`` norms of width ``hidden``, none after the last
    layer).  Without ``raw_io`` every layer is followed by norm and activation (``L`` norms), then
    the head.  ``none`` builds ``nn.Identity`` (no parameters, no state: checkpoints unchanged).

    **Tuned-GNN options** (Luo et al., "Classic GNNs are Strong Baselines: Reassessing GNNs for Node
    Classification", NeurIPS 2024 D&B; code LUOyk1999/tunedGNN ``medium_graph/model.py`` and
    ``large_graph/lg_model.py``, class ``MPNNs``), all off by default (no new submodule, same
    checkpoint keys, same outputs).  Layer ``l`` with input :math:`\mathbf{X}` computes

    .. math::
        \mathbf{H} = \operatorname{PreNorm}(\mathbf{X}), \quad
        \mathbf{Y} = \operatorname{conv}_l(\mathbf{H}) + R_l(\mathbf{H}), \quad
        \mathbf{X}' = \operatorname{act}(\operatorname{PostNorm}(\mathbf{Y}))

    * ``residual``: ``none`` (:math:`R_l = 0`); ``identity``: :math:`R_l(\mathbf{H}) = \mathbf{H}` where
      the widths match, a bias-free linear projection where they do not (``raw_io``'s first and last
      layers); ``linear``: :math:`R_l(\mathbf{H}) = \mathbf{H}W_l + b_l` in every layer, as tunedGNN's
      ``--res`` (``local_conv(x) + lins[i](x)``).  The residual reads the conv's (pre-normed) input.
    * ``prenorm``: the same ``norm`` modules (same keys) move from after the conv to before it
      (PreNorm; PostNorm is then the identity), on hidden-width inputs only (with ``raw_io`` the first
      conv reads the raw features); tunedGNN's ``--pre_ln``.
    * ``jk``: jumping knowledge (Xu et al., ICML 2018) over the layers' outputs
      :math:`\mathbf{X}^{(1..L)}` before the head: ``cat`` (head input ``L * hidden``), ``max``,
      ``sum`` (tunedGNN's ``--jk``: ``x_final = x_final + x``), ``last``/``none`` (the last output).
      Needs a head (``raw_io=False``).
    * ``dropout`` placement: between layers (``X -> dropout -> layer``), and with
      ``dropout_before_head=True`` also after the last layer, before the head: tunedGNN's
      ``conv -> norm -> relu -> dropout`` after every layer.
    * ``raw_in``: no encoder, the first conv reads the raw float features (``in_dim -> hidden``) and
      a head follows the last layer: tunedGNN's ``MPNNs`` without ``--pre_linear`` (node level, no PE).

    Shapes: ``[N, d_l] -> [N, d_{l+1}]`` per layer; ``jk="cat"``: ``[N, L*hidden]`` into the head.

    ``trim`` (default ``True``): on a sampled batch with hop counts, layer ``l`` computes only the
    nodes of hops ``0..L-1-l`` (see the module docstring; exact, seeds' rows, zeros after them).
    With ``norm="batch"`` this holds in eval mode (running statistics, row-wise); in training mode
    BatchNorm normalises with the statistics of the rows each layer computes, fewer than the
    untrimmed batch's, and dropout draws other masks.  The model also follows the layer-wise
    inference protocol (``layerwise_*``) for SAGE, GCN and GIN layers without edge features, norm
    and activation applied per block (row-wise in eval mode, so exact).  The residual reads the
    targets' own input rows, present in both (exact); JK on a trimmed batch combines the seeds' rows
    of every layer (exact), but layer-wise inference keeps one layer's rows only: ``jk`` other than
    ``none``/``last`` refuses it (``ValueError``: evaluate with sampled batches).

    Shapes: ``forward(data) -> [N, out]`` (node level; trimmed: the seeds' rows, zeros after them)
    or ``[B, out]`` (graph level).
    """

    def __init__(self, spec: DataSpec, hidden: int = 64, layers: int = 2,
                 local: Optional[LocalFactory] = None, attention: Optional[AttentionFactory] = None,
                 pe: Sequence[PEBranch] = (), dropout: float = 0.5, input_dropout: float = 0.0,
                 act: Literal["relu", "elu", "gelu"] = "relu", head_layers: int = 1,
                 head_dropout: float = 0.0, pool: Literal["mean", "sum", "max"] = "mean",
                 raw_io: bool = False, trim: bool = True, norm: NormKind = "none",
                 residual: ResidualKind = "none", prenorm: bool = False, jk: JKKind = "none",
                 dropout_before_head: bool = False, raw_in: bool = False):
        super().__init__()
        _check_size(hidden, layers)
        if norm not in NORMS:
            raise ValueError(f"model.norm='{norm}' must be one of {sorted(NORMS)}")
        if residual not in RESIDUALS:
            raise ValueError(f"model.residual='{residual}' must be one of {list(RESIDUALS)}")
        if jk not in JKS:
            raise ValueError(f"model.jk='{jk}' must be one of {list(JKS)}")
        if raw_io and raw_in:
            raise ValueError("model.raw_in=true and model.raw_io=true: raw_io already feeds the raw features to the "
                             "first layer (and emits the outputs from the last); set one of them to false")
        if raw_io and jk not in ("none", "last"):
            raise ValueError(f"model.jk='{jk}' combines the hidden layers' outputs for a head, but model.raw_io=true "
                             "has no head (its last layer emits the outputs); set model.raw_io=false or model.jk=none")
        if raw_io and dropout_before_head:
            raise ValueError("model.dropout_before_head=true needs a head; with model.raw_io=true the last layer emits "
                             "the outputs (dropout already precedes it): set it to false")
        if local is None:
            raise ValueError("MPNNModel needs a local layer: set local=<gcn|gat|gin|gine|gatedgcn|sage>")
        if attention is not None:
            raise ValueError("MPNNModel has no global attention: use attention=none, or model=gps")
        if act not in ACTIVATIONS:
            raise ValueError(f"act='{act}' must be one of {sorted(ACTIVATIONS)}")
        self.hidden, self.level, self.act_name, self.raw_io = hidden, spec.task.level, act, raw_io
        self.norm_name, self.residual_name, self.prenorm, self.jk = norm, residual, bool(prenorm), jk
        self.dropout_before_head, self.raw_in = bool(dropout_before_head), bool(raw_in)
        self.act = ACTIVATIONS[act]()
        self.dropout = ByteDropout(dropout)
        self.trim = bool(trim)
        if raw_io:
            self._build_raw_io(spec, hidden, layers, local, pe, input_dropout)
        else:
            self._build(spec, hidden, layers, local, pe, input_dropout, head_layers, head_dropout, pool)
        self.trim = self.trim and all(trim_mode(layer) is not None for layer in self.layers)
        # one norm per layer that an activation follows: all of them, or all but the last (raw_io);
        # prenorm moves the same norms (same widths, same keys) to the hidden-width inputs of the convs
        num_norms = layers - 1 if raw_io or (self.raw_in and self.prenorm) else layers
        self.norms = nn.ModuleList(make_norm(norm, hidden) for _ in range(num_norms))
        if residual != "none":  # new submodules only when the option is on (checkpoints unchanged)
            dims = self._dims()
            self.residuals = nn.ModuleList(
                nn.Identity() if residual == "identity" and dims[i] == dims[i + 1]
                else nn.Linear(dims[i], dims[i + 1], bias=residual == "linear")
                for i in range(layers))

    def _dims(self) -> List[int]:
        """Widths ``d_0..d_L`` of the layers' inputs and outputs."""
        if self.raw_io:
            return [self.layers[0].in_dim] + [layer.out_dim for layer in self.layers]
        if self.raw_in:
            return [self.layers[0].in_dim] + [self.hidden] * len(self.layers)
        return [self.hidden] * (len(self.layers) + 1)

    @property
    def raw_input(self) -> bool:
        """The first layer reads the raw float features (``raw_io`` or ``raw_in``)."""
        return self.raw_io or self.raw_in

    def _build(self, spec: DataSpec, hidden: int, layers: int, local: LocalFactory, pe: Sequence[PEBranch],
               input_dropout: float, head_layers: int, head_dropout: float, pool: str) -> None:
        """Encoder -> ``layers`` local layers of width ``hidden`` -> head; with ``raw_in`` no encoder: the
        first layer reads the raw float features (``in_dim -> hidden``)."""
        if self.raw_in:
            self._check_raw_features(spec, pe, "raw_in")
            try:
                first = local(hidden, in_dim=spec.node_feature_dim, out_dim=hidden)
            except TypeError:
                name = getattr(local, "func", local).__name__
                raise ValueError(f"{name} has no in_dim/out_dim, which model.raw_in=true needs; use local=gcn, gat, gin "
                                 "or sage, or model.raw_in=false") from None
            self.layers = nn.ModuleList([first] + [local(hidden) for _ in range(layers - 1)])
            self.input_dropout = ByteDropout(input_dropout)
        else:
            self.encoder = InputEncoder(spec, hidden, pe, input_dropout, edges=local_consumes_edge_attr(local))
            self.layers = nn.ModuleList(local(hidden) for _ in range(layers))
            drop_unread_edge_encoder(self.encoder, list(self.layers))
        discard_last_edge_output(self.layers[-1] if len(self.layers) else None)
        head_kwargs = {"pool": pool} if self.level == "graph" else {}
        head_dim = hidden * layers if self.jk == "cat" else hidden
        self.head = HEADS[self.level](head_dim, spec.task.num_outputs, head_layers, head_dropout, **head_kwargs)

    def _build_raw_io(self, spec: DataSpec, hidden: int, layers: int, local: LocalFactory,
                      pe: Sequence[PEBranch], input_dropout: float) -> None:
        """Raw features into the first layer, outputs out of the last one (no encoder, no head)."""
        self._check_raw_features(spec, pe, "raw_io")
        dims = [spec.node_feature_dim] + [hidden] * (layers - 1) + [spec.task.num_outputs]
        try:
            self.layers = nn.ModuleList(local(hidden, in_dim=dims[i], out_dim=dims[i + 1]) for i in range(layers))
        except TypeError:
            name = getattr(local, "func", local).__name__
            raise ValueError(f"{name} has no in_dim/out_dim, which model.raw_io=true needs; use local=gcn, gat, gin or "
                             "sage, or model.raw_io=false") from None
        self.input_dropout = ByteDropout(input_dropout)

    def _check_raw_features(self, spec: DataSpec, pe: Sequence[PEBranch], key: str) -> None:
        """``ValueError`` naming ``model.<key>`` when the first layer cannot read the raw features."""
        if spec.node_feature_dim is None:
            raise ValueError(f"model.{key}=true needs float node features, but '{spec.name}' has categorical ones; "
                             f"set model.{key}=false")
        if self.level != "node" or len(pe):
            raise ValueError(f"model.{key}=true is for node-level tasks without PE (pe=none)")

    def reset_parameters(self) -> None:
        reset_submodules(self)

    # ---- the pieces of one layer, shared by forward and the layer-wise protocol
    def _prenorm(self, i: int) -> Optional[nn.Module]:
        """The norm before conv ``i`` (``prenorm=True``; only on hidden-width inputs: with ``raw_io`` the
        first conv reads the raw features un-normalised), else ``None``."""
        if not self.prenorm:
            return None
        j = i - 1 if self.raw_input else i
        return self.norms[j] if 0 <= j < len(self.norms) else None

    def _enter(self, i: int, x: Tensor) -> Tensor:
        """Conv ``i``'s input from the previous output (after dropout): the pre-norm, if any."""
        norm = self._prenorm(i)
        return x if norm is None else norm(x)

    def _exit(self, i: int, h: Tensor, y: Tensor) -> Tensor:
        """Conv ``i``'s output ``y [T, d_{i+1}]`` (its input ``h``: first ``T`` rows = the targets') ->
        the layer's output: ``+ residual(h)``, then post-norm and activation (none after the last
        ``raw_io`` layer, which emits the outputs)."""
        if self.residual_name != "none":
            y = y + self.residuals[i](h[:y.size(0)])
        if self.raw_io and i == len(self.layers) - 1:
            return y
        return self.act(y if self.prenorm else self.norms[i](y))

    def _jump(self, outs: List[Tensor]) -> Tensor:
        """Jumping knowledge (Xu et al., ICML 2018) over the layers' outputs, each cut to the last one's
        rows (the seeds, on a trimmed batch): ``cat`` ``[n, L*d]``, ``max`` / ``sum`` ``[n, d]``
        (element-wise), ``last`` / ``none`` the last output."""
        n = outs[-1].size(0)
        outs = [o[:n] for o in outs]
        if self.jk == "cat":
            return torch.cat(outs, dim=-1)
        if self.jk == "max":
            return torch.stack(outs, 0).amax(0)
        if self.jk == "sum":
            return torch.stack(outs, 0).sum(0)
        return outs[-1]

    def forward(self, data) -> Tensor:
        plan = _trim_plan(self, data)
        trims: List[Optional[LayerTrim]] = plan.layers(len(self.layers)) if plan is not None \
            else [None] * len(self.layers)

        def step(i: int, x: Tensor, edge_attr: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
            layer, trim = self.layers[i], trims[i]
            if trim is None:
                return layer(x, data.edge_index, edge_attr)
            return local_trimmed(layer, x, edge_attr, trim)

        if self.raw_input:
            x = data.x if plan is None else data.x[:trims[0].num_src]
            x = self.input_dropout(x.float())
            edge_attr = None
        else:
            x, edge_attr = self.encoder(data)
        outs: List[Tensor] = []
        for i in range(len(self.layers)):
            if i > 0:
                x = self.dropout(x)
            h = self._enter(i, x)
            y, edge_attr = step(i, h, edge_attr)
            x = self._exit(i, h, y)
            outs.append(x)
        if self.raw_io:
            return x if plan is None else pad_rows(x, plan.num_nodes)
        x = self._jump(outs)
        if self.dropout_before_head:
            x = self.dropout(x)
        ctx = AttentionContext.from_batch(data)
        out = self.head(x, ctx.batch[:x.size(0)], ctx.num_graphs)
        return out if plan is None else pad_rows(out, plan.num_nodes)

    # ---- layer-wise inference protocol (graphgt.data.layerwise)
    def layerwise_plan(self) -> LayerwisePlan:
        """Widths and needs of layer-wise inference (:class:`LayerwisePlan`); ``ValueError`` naming the
        reason for local layers without a block form (GAT, GIN-E, GatedGCN), edge features, a
        graph-level head or training mode."""
        _check_layerwise(self, list(self.layers),
                         f"model.jk='{self.jk}' reads every layer's output of the predicted nodes, which "
                         "layer-wise inference does not keep (it holds one layer's rows at a time)"
                         if self.jk not in ("none", "last") else None)
        dims = tuple(self._dims())
        out_dim = dims[-1] if self.raw_io else self.head.out_dim
        return LayerwisePlan(dims=dims, out_dim=out_dim, raw_input=self.raw_input,
                             needs_degree=any(type(layer) is GCNLayer for layer in self.layers))

    def layerwise_input(self, data) -> Tensor:
        """Layer 0's input for the nodes of ``data`` (row-wise): the raw float features (``raw_io``)
        or the encoded ones ``[n, d_0]``."""
        return data.x.float() if self.raw_input else self._enter(0, self.encoder(data)[0])

    def layerwise_layer(self, i: int, block: Any) -> Tensor:
        """Layer ``i`` and the norm and activation after it for a block of target nodes
        (:func:`~graphgt.nn.gps_layer.local_block`): ``[T, d_{i+1}]`` (eval mode: dropout is off,
        BatchNorm uses its running statistics, so each row is the full-graph forward's)."""
        x = self._exit(i, block.x_dst, local_block(self.layers[i], block))
        return self._enter(i + 1, x) if i + 1 < len(self.layers) else x

    def layerwise_output(self, x: Tensor) -> Tensor:
        """The head on the last layer's rows (identity with ``raw_io``): ``[n, d_L] -> [n, out]``."""
        return x if self.raw_io else self.head(x, None, 1)

    def __repr__(self) -> str:
        head = "raw_io" if self.raw_io else repr(self.head)
        norm = f", norm={self.norm_name!r}" if self.norm_name != "none" else ""
        norm += ", prenorm=True" if self.prenorm else ""
        norm += f", residual={self.residual_name!r}" if self.residual_name != "none" else ""
        norm += f", jk={self.jk!r}" if self.jk != "none" else ""
        norm += ", dropout_before_head=True" if self.dropout_before_head else ""
        norm += ", raw_in=True" if self.raw_in else ""
        return (f"{type(self).__name__}(hidden={self.hidden}, layers={len(self.layers)}, "
                f"local={self.layers[0]!r}, act={self.act_name!r}{norm}, head={head}, trim={self.trim})")


def reset_submodules(module: nn.Module) -> None:
    """Call ``reset_parameters()`` of every child that has one (looking inside containers)."""
    for child in module.children():
        if hasattr(child, "reset_parameters"):
            child.reset_parameters()
        else:
            reset_submodules(child)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
