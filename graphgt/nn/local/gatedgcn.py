"""Residual gated graph convolution with edge features (GatedGCN) as a :class:`LocalMP`."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

from graphgt.nn.dropout import ByteDropout
from graphgt.nn.local.base import LocalMP


class GatedGCNLayer(LocalMP):
    r"""Residual gated graph ConvNet of Bresson & Laurent, "Residual Gated Graph ConvNets"
    (arXiv:1711.07553, 2017), with explicit edge features as in Dwivedi et al., "Benchmarking
    Graph Neural Networks" (JMLR 2023) and GraphGPS (Rampášek et al., NeurIPS 2022).

    For an edge :math:`j \to i` (PyG convention: ``j = edge_index[0]`` is the source,
    ``i = edge_index[1]`` the destination):

    .. math::
        \hat{\mathbf{e}}_{ij} &= \mathbf{C}\mathbf{e}_{ij} + \mathbf{D}\mathbf{h}_i
            + \mathbf{E}\mathbf{h}_j, \qquad \sigma_{ij} = \mathrm{sigmoid}(\hat{\mathbf{e}}_{ij}) \\
        \hat{\mathbf{h}}_i &= \mathbf{A}\mathbf{h}_i + \frac{\sum_{j} \sigma_{ij} \odot
            \mathbf{B}\mathbf{h}_j}{\sum_{j} \sigma_{ij} + 10^{-6}} \\
        \mathbf{h}'_i &= \mathbf{h}_i + \mathrm{Dropout}(\mathrm{ReLU}(\mathrm{BN}(\hat{\mathbf{h}}_i))),
        \qquad
        \mathbf{e}'_{ij} = \mathbf{e}_{ij} + \mathrm{Dropout}(\mathrm{ReLU}(\mathrm{BN}(\hat{\mathbf{e}}_{ij})))

    Unlike the other local layers this one updates the edge features and returns them; the next
    layer should receive them.  A model's last layer is told that nothing reads them
    (:meth:`discard_edge_output`): it then returns the edge features it was given and has no edge
    batch norm (its parameters would never be trained).
    With ``residual=True`` (default) the residual connections (and
    dropout) are applied *inside* the layer, on nodes and edges, as in benchmarking-gnns and
    GraphGPS. ``applies_residual`` tells the GPS layer so, and it then adds no residual of its own
    (it only normalises the output, as GraphGPS's GPS layer does); with ``residual=False`` the GPS
    layer adds the node residual as for any other local layer.

    Args:
        dim: node and edge feature width ``d``.
        dropout: dropout on the updated node and edge features (training only).
        residual: add the input node and edge features to the outputs.
        batch_norm: batch-normalise :math:`\hat{\mathbf{h}}` and :math:`\hat{\mathbf{e}}`.

    Under autocast the five projections run in bf16; the gated sums over each node's edges (the
    numerator and the normaliser) accumulate in float32.

    Shapes:
        x ``[N, d]``, edge_index ``[2, E]``, edge_attr ``[E, d]``
        -> (``[N, d]``, updated edge_attr ``[E, d]``).
    """

    requires_edge_attr = True
    uses_edge_attr = True

    def __init__(self, dim: int, dropout: float = 0.0, residual: bool = True,
                 batch_norm: bool = True) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GatedGCNLayer: dropout={dropout} must be in [0, 1).")
        self.dim = dim
        self.dropout = dropout
        self.residual = residual
        self.batch_norm = batch_norm
        self.A = nn.Linear(dim, dim)
        self.B = nn.Linear(dim, dim)
        self.C = nn.Linear(dim, dim)
        self.D = nn.Linear(dim, dim)
        self.E = nn.Linear(dim, dim)
        self.bn_node: nn.Module = nn.BatchNorm1d(dim) if batch_norm else nn.Identity()
        self.bn_edge: nn.Module = nn.BatchNorm1d(dim) if batch_norm else nn.Identity()
        self.drop = ByteDropout(dropout)
        self.update_edges = True

    def discard_edge_output(self) -> None:
        """Nothing reads this layer's edge output: stop updating edge features and drop ``bn_edge``.

        (``C``, ``D`` and ``E`` stay: the edge gates they compute weigh the node messages.)
        """
        self.update_edges = False
        self.bn_edge = nn.Identity()

    @property
    def applies_residual(self) -> bool:
        """The GPS layer adds no residual of its own when this layer already did (GraphGPS's rule)."""
        return self.residual

    def reset_parameters(self) -> None:
        for lin in (self.A, self.B, self.C, self.D, self.E):
            lin.reset_parameters()
        for bn in (self.bn_node, self.bn_edge):
            if isinstance(bn, nn.BatchNorm1d):
                bn.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Optional[Tensor] = None
                ) -> Tuple[Tensor, Optional[Tensor]]:
        if edge_attr is None:
            raise ValueError(
                f"{self.__class__.__name__} requires edge features but got edge_attr=None; "
                "use a dataset with edge features (and an edge encoder), or choose a local "
                "layer without edge features such as GINLayer.")
        src, dst = edge_index[0], edge_index[1]                      # j -> i
        num_nodes = x.size(0)
        e_hat = self.C(edge_attr) + self.D(x)[dst] + self.E(x)[src]  # [E, d]
        sigma = e_hat.sigmoid()                                       # [E, d]
        # the two sums over a node's edges accumulate in float32 (bf16 under autocast loses the
        # small terms of a hub's sum); float64 stays float64
        acc = torch.promote_types(sigma.dtype, torch.float32)
        num = scatter((sigma * self.B(x)[src]).to(acc), dst, dim=0, dim_size=num_nodes, reduce="sum")
        den = scatter(sigma.to(acc), dst, dim=0, dim_size=num_nodes, reduce="sum")
        h_hat = self.A(x) + num / (den + 1e-6)                        # [N, d]

        h = self.drop(F.relu(self.bn_node(h_hat)))
        if not self.update_edges:
            return (x + h if self.residual else h), edge_attr
        e = self.drop(F.relu(self.bn_edge(e_hat)))
        if self.residual:
            h = x + h
            e = edge_attr + e
        return h, e

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.dim}, dropout={self.dropout}, "
                f"residual={self.residual}, batch_norm={self.batch_norm}"
                + (")" if self.update_edges else ", edge_output=False)"))

