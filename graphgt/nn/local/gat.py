"""GAT (Veličković et al., 2018) as a :class:`LocalMP`."""
from __future__ import annotations

from typing import Any, Optional, Tuple

from torch import Tensor
from torch_geometric.nn import GATConv

from graphgt.nn.local.base import ConvAdapter, fp32_aggregation


class GATLayer(ConvAdapter):
    r"""Graph attention layer of Veličković et al., "Graph Attention Networks" (ICLR 2018), a
    thin adapter around PyG's ``GATConv``.

    .. math::
        \alpha_{ij}^{k} = \operatorname{softmax}_{j \in \mathcal{N}(i) \cup \{i\}}
        \mathrm{LeakyReLU}\big(\mathbf{a}^{k\top}[\mathbf{W}^k\mathbf{x}_i \,\|\,
        \mathbf{W}^k\mathbf{x}_j \,(\|\, \mathbf{W}^k_e \mathbf{e}_{ij})\big), \qquad
        \mathbf{x}'_i = \big\Vert_{k=1}^{K} \sum_j \alpha_{ij}^k \mathbf{W}^k \mathbf{x}_j

    With ``concat=True`` the ``heads`` outputs of width ``dim // heads`` are concatenated (so
    ``dim`` must be divisible by ``heads``); with ``concat=False`` each head has width ``dim`` and
    the heads are averaged (GAT's output-layer form). GAT on Cora is 8 heads x 8 hidden units with
    attention dropout 0.6: ``GATLayer(64, heads=8, attn_dropout=0.6)`` (input dropout and ELU
    belong to the model).

    Args:
        dim: node feature width ``d``.
        in_dim, out_dim: input/output widths when they differ from ``dim`` (first/last layer of
            ``MPNNModel(raw_io=True)``); a layer whose ``out_dim`` differs from ``dim`` is an
            output layer and averages its heads, as GAT's output layer does.
        heads: number of attention heads ``K``.
        attn_dropout: dropout on the attention coefficients (training only).
        concat: concatenate the heads (``True``) or average them (``False``).
        edge_dim_aware: feed edge features (width ``dim``) into the attention logits when
            ``edge_attr`` is given; otherwise edge features are ignored.

    Shapes:
        x ``[N, d]``, edge_index ``[2, E]``, edge_attr ``[E, d]`` or ``None``
        -> (``[N, d]``, the given ``edge_attr``).
    """

    requires_edge_attr = False
    uses_edge_attr = True  # only when built with edge_dim_aware=True (consumes_edge_attr)

    @classmethod
    def consumes_edge_attr(cls, **config: Any) -> bool:
        """GAT reads edge features only when built edge-aware (``edge_dim_aware=True``)."""
        return bool(cls._config_value(config, "edge_dim_aware"))

    @property
    def reads_edge_attr(self) -> bool:
        """True for a layer built with ``edge_dim_aware=True``."""
        return self.edge_dim_aware

    def __init__(self, dim: int, heads: int = 8, attn_dropout: float = 0.0, concat: bool = True,
                 edge_dim_aware: bool = False, in_dim: Optional[int] = None,
                 out_dim: Optional[int] = None) -> None:
        super().__init__()
        if out_dim is not None and out_dim != dim:
            concat = False  # an output layer averages its heads (GAT's output layer)
        dim_out = out_dim or dim
        if heads < 1:
            raise ValueError(f"GATLayer: heads={heads} must be >= 1.")
        if concat and dim_out % heads != 0:
            raise ValueError(
                f"GATLayer: dim={dim} is not divisible by heads={heads}; with concat=True each "
                f"head has width dim // heads. Choose heads dividing {dim} or set concat=False.")
        if not 0.0 <= attn_dropout < 1.0:
            raise ValueError(f"GATLayer: attn_dropout={attn_dropout} must be in [0, 1).")
        self.dim = dim
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.concat = concat
        self.edge_dim_aware = edge_dim_aware
        self.in_dim, self.out_dim = in_dim or dim, dim_out
        out_channels = dim_out // heads if concat else dim_out
        self.conv = fp32_aggregation(GATConv(self.in_dim, out_channels, heads=heads, concat=concat,
                                             dropout=attn_dropout, edge_dim=dim if edge_dim_aware else None))

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Optional[Tensor] = None
                ) -> Tuple[Tensor, Optional[Tensor]]:
        if self.edge_dim_aware and edge_attr is not None:
            return self.conv(x, edge_index, edge_attr), edge_attr
        return self.conv(x, edge_index), edge_attr

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self._dims_repr()}, heads={self.heads}, "
                f"attn_dropout={self.attn_dropout}, concat={self.concat}, "
                f"edge_dim_aware={self.edge_dim_aware})")
