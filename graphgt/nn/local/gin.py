"""GIN (Xu et al., 2019) and GINE (Hu et al., 2020) as :class:`LocalMP` layers."""
from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor, nn
from torch_geometric.nn import GINConv, GINEConv

from graphgt.nn.local.base import ConvAdapter, LocalMP, fp32_aggregation


def _mlp(dim: int, in_dim: Optional[int] = None, out_dim: Optional[int] = None) -> nn.Sequential:
    """The two-layer MLP of GIN: Linear-ReLU-Linear, ``in_dim -> dim -> out_dim`` (``dim`` by default)."""
    return nn.Sequential(nn.Linear(in_dim or dim, dim), nn.ReLU(), nn.Linear(dim, out_dim or dim))


class GINLayer(ConvAdapter):
    r"""Graph isomorphism network layer of Xu et al., "How Powerful are Graph Neural Networks?"
    (ICLR 2019), a thin adapter around PyG's ``GINConv`` with a Linear-ReLU-Linear MLP.

    .. math::
        \mathbf{x}'_i = \mathrm{MLP}\Big((1 + \epsilon)\,\mathbf{x}_i
        + \sum_{j \in \mathcal{N}(i)} \mathbf{x}_j\Big)

    Edge features are not used; they are passed through untouched.

    Args:
        dim: node feature width ``d`` (the MLP's hidden width).
        train_eps: learn :math:`\epsilon` (initialised to 0) instead of fixing it to 0.
        in_dim, out_dim: input/output widths when they differ from ``dim`` (a first or last layer
            of ``model.raw_io``: the MLP is ``in_dim -> dim -> out_dim``).

    Shapes:
        x ``[N, in_dim]``, edge_index ``[2, E]``, edge_attr ``[E, d]`` or ``None``
        -> (``[N, out_dim]``, the given ``edge_attr``).
    """

    requires_edge_attr = False
    uses_edge_attr = False

    def __init__(self, dim: int, train_eps: bool = False, in_dim: Optional[int] = None,
                 out_dim: Optional[int] = None) -> None:
        super().__init__()
        self.dim, self.in_dim, self.out_dim = dim, in_dim or dim, out_dim or dim
        self.train_eps = train_eps
        self.conv = fp32_aggregation(GINConv(_mlp(dim, self.in_dim, self.out_dim), train_eps=train_eps))

    def __repr__(self) -> str:
        widths = "" if self.in_dim == self.out_dim == self.dim else f", in_dim={self.in_dim}, out_dim={self.out_dim}"
        return f"{self.__class__.__name__}({self.dim}{widths}, train_eps={self.train_eps})"


class GINELayer(LocalMP):
    r"""GIN with edge features (GINE) of Hu et al., "Strategies for Pre-training Graph Neural
    Networks" (ICLR 2020), a thin adapter around PyG's ``GINEConv``
    (edge features arrive already ``dim`` wide from the edge encoder, so no extra edge projection).

    .. math::
        \mathbf{x}'_i = \mathrm{MLP}\Big((1 + \epsilon)\,\mathbf{x}_i
        + \sum_{j \in \mathcal{N}(i)} \mathrm{ReLU}(\mathbf{x}_j + \mathbf{W}_e \mathbf{e}_{ji}
        + \mathbf{b}_e)\Big)

    Edge features are required and returned unchanged.

    Args:
        dim: node and edge feature width ``d``.
        train_eps: learn :math:`\epsilon` (initialised to 0) instead of fixing it to 0.

    Shapes:
        x ``[N, d]``, edge_index ``[2, E]``, edge_attr ``[E, d]``
        -> (``[N, d]``, the given ``edge_attr``).
    """

    requires_edge_attr = True
    uses_edge_attr = True

    def __init__(self, dim: int, train_eps: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.train_eps = train_eps
        self.conv = fp32_aggregation(GINEConv(_mlp(dim), train_eps=train_eps))

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Optional[Tensor] = None
                ) -> Tuple[Tensor, Optional[Tensor]]:
        if edge_attr is None:
            raise ValueError(
                f"{self.__class__.__name__} requires edge features but got edge_attr=None; "
                "use a dataset with edge features (and an edge encoder), or choose a local "
                "layer without edge features such as GINLayer.")
        return self.conv(x, edge_index, edge_attr), edge_attr

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dim}, train_eps={self.train_eps})"
