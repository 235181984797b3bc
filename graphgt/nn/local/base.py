"""The local message-passing protocol.

Every local layer has the signature ``forward(x[N, d], edge_index[2, E], edge_attr[E, d] | None)
-> (x[N, d], edge_attr[E, d] | None)``.  Layers that do not update edge features return the
``edge_attr`` they were given; edge-gated layers (GatedGCN) return the updated edge features, which
the next GPS layer receives.  Returning the pair is what lets one signature cover both kinds.

Constructors take the width ``dim`` first (injected by the model); the rest is config.
``requires_edge_attr`` tells the config validator whether the layer needs edge features, so that
an edge-feature layer on a dataset without edge features is refused before any compute.
"""
from __future__ import annotations

from typing import ClassVar, Optional, Tuple

from torch import Tensor, nn


class LocalMP(nn.Module):
    """Base class of local message-passing layers (see module docstring)."""

    requires_edge_attr: ClassVar[bool] = False
    dim: int

    @property
    def applies_residual(self) -> bool:
        """True if the layer adds its input itself (GatedGCN): the GPS layer then adds none."""
        return False

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Optional[Tensor] = None
                ) -> Tuple[Tensor, Optional[Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _dims_repr(self) -> str:
        """``"d"``, or ``"in, out"`` for a first/last layer whose widths differ from ``dim``."""
        in_dim, out_dim = getattr(self, "in_dim", self.dim), getattr(self, "out_dim", self.dim)
        return f"{self.dim}" if in_dim == out_dim == self.dim else f"{in_dim}, {out_dim}"

    def reset_parameters(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class ConvAdapter(LocalMP):
    """A :class:`LocalMP` around one PyG convolution ``self.conv(x, edge_index)`` that leaves
    edge features untouched (GCN, GIN, SAGE, GAT): subclasses only build ``self.conv``."""

    conv: nn.Module

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Optional[Tensor] = None
                ) -> Tuple[Tensor, Optional[Tensor]]:
        return self.conv(x, edge_index), edge_attr

