"""Prediction heads: node-level (an MLP per node) and graph-level (pooling, then an MLP)."""
from __future__ import annotations

from typing import Callable, Dict, Literal

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter


def mlp(dim: int, out_dim: int, layers: int, dropout: float = 0.0) -> nn.Sequential:
    """``layers - 1`` blocks of Linear(dim, dim)-ReLU-Dropout, then Linear(dim, out_dim)."""
    mods: list[nn.Module] = []
    for _ in range(layers - 1):
        mods += [nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout)]
    mods.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*mods)


class NodeHead(nn.Module):
    """``x [N, dim] -> [N, out_dim]`` by an MLP of ``layers`` linear layers."""

    def __init__(self, dim: int, out_dim: int, layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.dim, self.out_dim, self.layers = dim, out_dim, layers
        self.mlp = mlp(dim, out_dim, layers, dropout)

    def reset_parameters(self) -> None:
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def forward(self, x: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        return self.mlp(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dim}, {self.out_dim}, layers={self.layers})"


class GraphHead(NodeHead):
    """``x [N, dim], batch [N] -> [B, out_dim]``: ``pool`` (mean/sum/max) over each graph, then an MLP.

    The pooling runs in float32 (float64 stays) whatever the input dtype; under autocast the MLP
    then runs in bf16."""

    def __init__(self, dim: int, out_dim: int, layers: int = 2, dropout: float = 0.0,
                 pool: Literal["mean", "sum", "max"] = "mean"):
        super().__init__(dim, out_dim, layers, dropout)
        if pool not in ("mean", "sum", "max"):
            raise ValueError(f"pool='{pool}' must be one of 'mean', 'sum', 'max'")
        self.pool = pool

    def forward(self, x: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        # pool in float32 (bf16 under autocast would accumulate a large graph's sum in bf16)
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        return self.mlp(scatter(x, batch, dim=0, dim_size=num_graphs, reduce=self.pool))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dim}, {self.out_dim}, layers={self.layers}, pool={self.pool!r})"


HEADS: Dict[str, Callable[..., NodeHead]] = {"node": NodeHead, "graph": GraphHead}
