"""GraphSAGE (Hamilton et al., 2017) as a :class:`LocalMP`."""
from __future__ import annotations

from typing import Optional

from torch_geometric.nn import SAGEConv

from graphgt.nn.local.base import ConvAdapter, fp32_aggregation


class SAGELayer(ConvAdapter):
    r"""GraphSAGE layer of Hamilton et al., "Inductive Representation Learning on Large Graphs"
    (NeurIPS 2017), a thin adapter around PyG's ``SAGEConv(dim, dim, aggr=aggr)``.

    .. math::
        \mathbf{x}'_i = \mathbf{W}_1 \mathbf{x}_i
        + \mathbf{W}_2 \cdot \operatorname{aggr}_{j \in \mathcal{N}(i)} \mathbf{x}_j

    Edge features are not used; they are passed through untouched.

    Args:
        dim: node feature width ``d``.
        aggr: neighbour aggregation passed to PyG (``"mean"``, ``"max"``, ``"sum"``, ...); PyG
            validates it.

    Shapes:
        x ``[N, d]``, edge_index ``[2, E]``, edge_attr ``[E, d]`` or ``None``
        -> (``[N, d]``, the given ``edge_attr``).
    """

    requires_edge_attr = False
    uses_edge_attr = False

    def __init__(self, dim: int, aggr: str = "mean", in_dim: Optional[int] = None,
                 out_dim: Optional[int] = None) -> None:
        super().__init__()
        self.dim = dim
        self.aggr = aggr
        self.in_dim, self.out_dim = in_dim or dim, out_dim or dim
        self.conv = fp32_aggregation(SAGEConv(self.in_dim, self.out_dim, aggr=aggr))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self._dims_repr()}, aggr={self.aggr!r})"
