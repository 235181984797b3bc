"""The global-attention protocol that every global module of graphgt follows.

A global attention module maps node features ``x: Tensor[N, d]`` to ``Tensor[N, d]``.  Which nodes
may attend to which is described by an :class:`AttentionContext`: in a mini-batch of several graphs
a node only attends to nodes of its own graph (``ctx.batch``); mechanisms that need the graph
(sparse/expander attention) read ``ctx.edge_index``.  Swapping one mechanism for another is one
config key because they all share this signature.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn


@dataclass
class AttentionContext:
    """What a global attention module may need besides the node features.

    Attributes:
        batch: ``LongTensor[N]``, the graph id of each node, sorted ascending (PyG's ``batch``).
        num_graphs: number of graphs in the mini-batch (``batch.max() + 1`` for a non-empty batch).
        edge_index: ``LongTensor[2, E]`` of the mini-batch, or ``None`` when not needed.
    """

    batch: Tensor
    num_graphs: int
    edge_index: Optional[Tensor] = None

    @classmethod
    def single_graph(cls, num_nodes: int, device: torch.device | str = "cpu",
                     edge_index: Optional[Tensor] = None) -> "AttentionContext":
        """Context for one graph of ``num_nodes`` nodes (every node attends to every node)."""
        return cls(torch.zeros(num_nodes, dtype=torch.long, device=device), 1, edge_index)

    @classmethod
    def from_batch(cls, data) -> "AttentionContext":
        """Context of a PyG ``Data``/``Batch`` (a plain ``Data`` counts as one graph)."""
        batch = getattr(data, "batch", None)
        if batch is None:
            return cls.single_graph(data.num_nodes, data.edge_index.device, data.edge_index)
        return cls(batch, int(data.num_graphs), data.edge_index)


class GlobalAttention(nn.Module):
    """Base class of global attention modules: ``forward(x[N, d], ctx) -> [N, d]``.

    Subclasses take ``dim`` (model width, injected by the model) as their first constructor
    argument and everything else as keyword arguments set in ``configs/attention/<name>.yaml``.
    """

    dim: int

    def _set_heads(self, dim: int, heads: int, dropout: float) -> None:
        """Check and store the options every module shares: ``dim``, ``heads`` (dividing ``dim``;
        sets ``head_dim``) and ``dropout`` (in ``[0, 1)``); errors name the class and the value."""
        name = type(self).__name__
        if heads < 1 or dim % heads != 0:
            raise ValueError(
                f"{name}: dim={dim} is not divisible by heads={heads}; choose heads "
                f"dividing {dim} (e.g. heads=4 or 8 for dim=64).")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout={dropout} must be in [0, 1).")
        self.dim, self.heads, self.head_dim, self.dropout = dim, heads, dim // heads, dropout

    def forward(self, x: Tensor, ctx: AttentionContext) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset_parameters(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
