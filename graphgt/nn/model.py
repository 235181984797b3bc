"""Whole models: the GPS model and a plain MPNN baseline, both built from injected parts.

``GPSModel`` = input encoders (raw node features ‖ positional encodings, raw edge features)
-> ``layers`` x :class:`GPSLayer` (local MPNN + global attention) -> head.

The model never reads a config: the data module's :class:`DataSpec` says how raw features are
embedded and what the head predicts; ``local`` / ``attention`` are factories ``dim -> module``
(Hydra partials of ``configs/local/*.yaml`` / ``configs/attention/*.yaml``); ``pe`` is a list of
``(PositionalEncoding, encoder_factory)`` pairs from ``configs/pe/*.yaml``.
"""
from __future__ import annotations

from typing import Callable, List, Literal, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from graphgt.data.base import DataSpec
from graphgt.nn.attention.base import AttentionContext, GlobalAttention
from graphgt.nn.gps_layer import GPSLayer, NormKind
from graphgt.nn.heads import HEADS
from graphgt.nn.local.base import LocalMP
from graphgt.pe.base import PositionalEncoding

LocalFactory = Callable[[int], LocalMP]
AttentionFactory = Callable[[int], GlobalAttention]
PEBranch = Tuple[PositionalEncoding, Callable[..., nn.Module]]


class InputEncoder(nn.Module):
    """Raw node features ‖ PE features -> ``[N, hidden]``; raw edge features -> ``[E, hidden]``.

    The node encoder gets ``hidden - sum(pe_out_dims)`` columns and each PE encoder its own
    ``out_dim`` (as GraphGPS concatenates them); ``input_dropout`` is applied to the raw node
    features (GCN/GAT practice on citation graphs).
    """

    def __init__(self, spec: DataSpec, hidden: int, pe: Sequence[PEBranch] = (), input_dropout: float = 0.0):
        super().__init__()
        self.pe_encoders = nn.ModuleList(factory(pe=p) for p, factory in pe)
        pe_dim = sum(int(enc.out_dim) for enc in self.pe_encoders)
        if pe_dim >= hidden:
            raise ValueError(f"the PE encoders' out_dim add up to {pe_dim}, which leaves no room in "
                             f"model.hidden={hidden}; raise model.hidden or lower pe.<name>.encoder.out_dim")
        self.node = spec.node_encoder(hidden - pe_dim)
        self.edge = spec.edge_encoder(hidden) if spec.edge_encoder is not None else None
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

    Shapes: ``forward(data) -> [N, out]`` (node level) or ``[B, out]`` (graph level).
    """

    def __init__(self, spec: DataSpec, hidden: int = 64, layers: int = 3,
                 local: Optional[LocalFactory] = None, attention: Optional[AttentionFactory] = None,
                 pe: Sequence[PEBranch] = (), norm: NormKind = "batch", dropout: float = 0.0,
                 ffn_ratio: float = 2.0, head_layers: int = 2, head_dropout: float = 0.0,
                 pool: Literal["mean", "sum", "max"] = "mean", input_dropout: float = 0.0):
        super().__init__()
        if local is None and attention is None:
            raise ValueError("GPSModel needs local=<layer>, attention=<module>, or both; got local=none "
                             "and attention=none")
        self.hidden, self.level = hidden, spec.task.level
        self.encoder = InputEncoder(spec, hidden, pe, input_dropout)
        self.layers = nn.ModuleList(
            GPSLayer(hidden, local(hidden) if local is not None else None,
                     attention(hidden) if attention is not None else None,
                     norm=norm, dropout=dropout, ffn_ratio=ffn_ratio)
            for _ in range(layers))
        head_kwargs = {"pool": pool} if self.level == "graph" else {}
        self.head = HEADS[self.level](hidden, spec.task.num_outputs, head_layers, head_dropout, **head_kwargs)

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        self.head.reset_parameters()

    def forward(self, data) -> Tensor:
        x, edge_attr = self.encoder(data)
        ctx = AttentionContext.from_batch(data)
        for layer in self.layers:
            x, edge_attr = layer(x, data.edge_index, edge_attr, ctx)
        return self.head(x, ctx.batch, ctx.num_graphs)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(hidden={self.hidden}, layers={len(self.layers)}, "
                f"layer={self.layers[0]!r}, head={self.head!r})")


ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}


class MPNNModel(nn.Module):
    """A plain message-passing network (GCN/GAT/GIN/SAGE baselines as published):
    encoders -> ``layers`` x [local -> act -> dropout] -> head.

    No FFN, no residual, no normalisation: what Kipf & Welling (GCN) and Veličković et al. (GAT)
    trained on citation graphs.  Same constructor as :class:`GPSModel` minus the transformer parts;
    ``attention`` must be ``None``.
    """

    def __init__(self, spec: DataSpec, hidden: int = 64, layers: int = 2,
                 local: Optional[LocalFactory] = None, attention: Optional[AttentionFactory] = None,
                 pe: Sequence[PEBranch] = (), dropout: float = 0.5, input_dropout: float = 0.0,
                 act: Literal["relu", "elu", "gelu"] = "relu", head_layers: int = 1,
                 head_dropout: float = 0.0, pool: Literal["mean", "sum", "max"] = "mean"):
        super().__init__()
        if local is None:
            raise ValueError("MPNNModel needs a local layer: set local=<gcn|gat|gin|gine|gatedgcn|sage>")
        if attention is not None:
            raise ValueError("MPNNModel has no global attention: use attention=none, or model=gps")
        if act not in ACTIVATIONS:
            raise ValueError(f"act='{act}' must be one of {sorted(ACTIVATIONS)}")
        self.hidden, self.level, self.act_name = hidden, spec.task.level, act
        self.encoder = InputEncoder(spec, hidden, pe, input_dropout)
        self.layers = nn.ModuleList(local(hidden) for _ in range(layers))
        self.act = ACTIVATIONS[act]()
        self.dropout = nn.Dropout(dropout)
        head_kwargs = {"pool": pool} if self.level == "graph" else {}
        self.head = HEADS[self.level](hidden, spec.task.num_outputs, head_layers, head_dropout, **head_kwargs)

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        self.head.reset_parameters()

    def forward(self, data) -> Tensor:
        x, edge_attr = self.encoder(data)
        x = self.dropout(x)
        for layer in self.layers:
            x, edge_attr = layer(x, data.edge_index, edge_attr)
            x = self.dropout(self.act(x))
        ctx = AttentionContext.from_batch(data)
        return self.head(x, ctx.batch, ctx.num_graphs)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(hidden={self.hidden}, layers={len(self.layers)}, "
                f"local={self.layers[0]!r}, act={self.act_name!r}, head={self.head!r})")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
