"""Degree encoding: each node's (in-)degree, one-hot up to a cap — the structural input for graphs
without node features (Xu et al., "How Powerful are Graph Neural Networks?", ICLR 2019, give
featureless social graphs one-hot degrees).

``data.degree[i] = onehot(min(deg(i), max_degree))``, ``deg(i)`` = the number of edges ``j -> i``
of ``edge_index`` (both directions stored for an undirected graph: its degree).
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch
from torch import Tensor

from graphgt.pe.base import PositionalEncoding


class DegreePE(PositionalEncoding):
    """One-hot node degree, capped: ``data.degree [N, max_degree + 1]`` (float, one 1 per row).

    Args:
        max_degree: degrees above it share the last column.

    Shapes:
        - ``compute(edge_index: [2, E], N) -> {"degree": FloatTensor[N, max_degree + 1]}``
    """

    keys = ("degree",)

    def __init__(self, max_degree: int = 32):
        if not isinstance(max_degree, int) or max_degree < 1:
            raise ValueError(f"max_degree must be an int >= 1 (degrees above it share one column), got {max_degree!r}")
        self.max_degree = max_degree

    @property
    def in_dim(self) -> int:
        return self.max_degree + 1

    def _one_hot(self, degree: Tensor) -> Dict[str, Tensor]:
        capped = degree.clamp(max=self.max_degree).long()
        return {"degree": torch.nn.functional.one_hot(capped, self.max_degree + 1).float()}

    def compute(self, edge_index: Tensor, num_nodes: int) -> Dict[str, Tensor]:
        return self._one_hot(torch.bincount(edge_index[1].long(), minlength=num_nodes)[:num_nodes])

    def compute_csr(self, indptr, indices, num_nodes: int) -> Dict[str, Tensor]:
        """From CSR arrays (row ``i`` = the neighbours of ``i``; a store's symmetric graph): ``deg(i)``
        is the row length, as :meth:`compute` counts it on the same graph."""
        rows = np.diff(np.asarray(indptr, dtype=np.int64))[:num_nodes]
        return self._one_hot(torch.from_numpy(rows))
