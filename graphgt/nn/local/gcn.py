"""GCN (Kipf & Welling, 2017) as a :class:`LocalMP`."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.nn import GCNConv

from graphgt.nn.local.base import ConvAdapter, fp32_aggregation


class GCNLayer(ConvAdapter):
    r"""Graph convolution of Kipf & Welling, "Semi-Supervised Classification with Graph
    Convolutional Networks" (ICLR 2017), a thin adapter around PyG's ``GCNConv(dim, dim)``.

    .. math::
        \mathbf{X}' = \hat{\mathbf{D}}^{-1/2} \hat{\mathbf{A}} \hat{\mathbf{D}}^{-1/2}
        \mathbf{X} \mathbf{\Theta} + \mathbf{b}, \qquad \hat{\mathbf{A}} = \mathbf{A} + \mathbf{I}

    Edge features are not used; they are passed through untouched. Under autocast the linear
    layer runs in bf16 while the degree normalisation and the aggregation stay float32.

    Args:
        dim: node feature width ``d`` (input and output).
        normalize: add self-loops and apply the symmetric normalisation (``False``: plain sum of
            neighbour messages, no self-loops).
        cached: cache the normalised adjacency of the first call (transductive, one fixed graph).
        in_dim, out_dim: input/output widths when they differ from ``dim`` (a first or last
            layer fed raw features / emitting the outputs, as ``MPNNModel(raw_io=True)`` builds).

    Shapes:
        x ``[N, d]``, edge_index ``[2, E]``, edge_attr ``[E, d]`` or ``None``
        -> (``[N, d]``, the given ``edge_attr``).
    """

    requires_edge_attr = False
    uses_edge_attr = False

    def __init__(self, dim: int, normalize: bool = True, cached: bool = False,
                 in_dim: Optional[int] = None, out_dim: Optional[int] = None) -> None:
        super().__init__()
        self.dim, self.in_dim, self.out_dim = dim, in_dim or dim, out_dim or dim
        self.normalize = normalize
        self.cached = cached
        self.conv = fp32_aggregation(GCNConv(self.in_dim, self.out_dim, normalize=normalize, cached=cached))

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Optional[Tensor] = None
                ) -> Tuple[Tensor, Optional[Tensor]]:
        # GCNConv computes the degrees (a sum per node) and D^-1/2 in x's dtype: bf16 would round
        # degrees above 256 and their inverse square roots; a float32 x keeps them float32 (its
        # linear layer still runs in bf16 under autocast)
        return self.conv(x.to(torch.promote_types(x.dtype, torch.float32)), edge_index), edge_attr

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self._dims_repr()}, normalize={self.normalize}, "
                f"cached={self.cached})")
