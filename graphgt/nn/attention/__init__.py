"""Global attention modules; all follow :class:`GlobalAttention` (``forward(x, ctx) -> x``)."""
from graphgt.nn.attention.base import AttentionContext, GlobalAttention
from graphgt.nn.attention.full import FullAttention
from graphgt.nn.attention.performer import PerformerAttention

__all__ = ["AttentionContext", "GlobalAttention", "FullAttention", "PerformerAttention"]
