"""The local message-passing protocol.

Every local layer has the signature ``forward(x[N, d], edge_index[2, E], edge_attr[E, d] | None)
-> (x[N, d], edge_attr[E, d] | None)``.  Layers that do not update edge features return the
``edge_attr`` they were given; edge-gated layers (GatedGCN) return the updated edge features, which
the next GPS layer receives.  Returning the pair is what lets one signature cover both kinds.  The
edge features the *last* layer returns are read by nothing: a model calls
:meth:`LocalMP.discard_edge_output` on it, and an edge-updating layer then stops computing them.

Constructors take the width ``dim`` first (injected by the model); the rest is config.
``requires_edge_attr`` tells the config validator whether the layer needs edge features, so that
an edge-feature layer on a dataset without edge features is refused before any compute.
``uses_edge_attr`` (refined by the layer's config in :meth:`LocalMP.consumes_edge_attr`) tells the
model whether the layer reads edge features when it is given them, so that the model builds an
edge encoder only for layers that read its output: a module whose parameters never take part in
the loss breaks DDP ("Expected to have finished reduction in the prior iteration").
"""
from __future__ import annotations

import inspect
from typing import Any, ClassVar, Optional, Tuple

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing


LOW_PRECISION = (torch.bfloat16, torch.float16)


def _messages_to_fp32(module: nn.Module, args: tuple) -> Optional[tuple]:
    """Forward pre-hook of an aggregation: bf16/fp16 messages (``args[0]``) -> float32."""
    if args and isinstance(args[0], Tensor) and args[0].dtype in LOW_PRECISION:
        return (args[0].float(),) + tuple(args[1:])
    return None


def fp32_aggregation(conv: MessagePassing) -> MessagePassing:
    """Make ``conv`` aggregate its messages in float32 (returns ``conv``).

    Under bf16 autocast a PyG convolution's messages are bf16 whenever they come straight out of
    an autocast matmul (GIN's ``x_j`` in a bf16 layer stack, GAT's ``alpha * (W x)_j`` on CPU);
    its sum/mean aggregation then accumulates in bf16, which on CUDA (atomic adds into a bf16
    buffer) drops the small terms of a hub's sum: with 8 significant bits, once the partial sum is
    256 times a term the term rounds away. A forward pre-hook on ``conv.aggr_module`` casts
    low-precision messages to float32 before the aggregation; the output is then float32 (the
    next autocast matmul casts it back to bf16). Float32/float64 messages are left as they are,
    so without autocast nothing changes. (PyG skips its own message hooks under ``torch.compile``;
    a module forward pre-hook is kept by it.)
    """
    conv.aggr_module.register_forward_pre_hook(_messages_to_fp32)
    return conv


class LocalMP(nn.Module):
    """Base class of local message-passing layers (see module docstring)."""

    #: the layer cannot run without edge features (refused on data without them)
    requires_edge_attr: ClassVar[bool] = False
    #: the layer reads the edge features it is given (in every configuration, or, when
    #: :meth:`consumes_edge_attr` is overridden, in some); ``False``: it passes them through unread
    uses_edge_attr: ClassVar[bool] = False
    dim: int

    @classmethod
    def consumes_edge_attr(cls, **config: Any) -> bool:
        """Whether a layer built as ``cls(dim, **config)`` reads the ``edge_attr`` it is given.

        Asked before any layer is built (the model decides from it whether to build an edge
        encoder), so it reads the class and the constructor keywords only.  Layers whose use of
        edge features depends on their config (:class:`~graphgt.nn.local.GATLayer`) override it.
        """
        return cls.uses_edge_attr

    @classmethod
    def _config_value(cls, config: Any, name: str) -> Any:
        """``config[name]``, or the constructor's default for ``name`` when it is not given."""
        if name in config:
            return config[name]
        return inspect.signature(cls.__init__).parameters[name].default

    @property
    def reads_edge_attr(self) -> bool:
        """Whether this layer reads the ``edge_attr`` it is given (:meth:`consumes_edge_attr` of a built layer)."""
        return type(self).uses_edge_attr

    def discard_edge_output(self) -> None:
        """Told by the model that nothing reads the edge features this layer returns (its last layer).

        A layer that updates edge features stops doing so and drops the parameters that only that
        update used: they would never get a gradient, which DDP refuses.  Layers that pass the
        edge features through have nothing to drop.
        """

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

