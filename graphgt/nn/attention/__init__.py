"""Global attention modules; all follow :class:`GlobalAttention` (``forward(x, ctx) -> x``)."""
from graphgt.nn.attention.base import AttentionContext, GlobalAttention
from graphgt.nn.attention.codebook import CodebookAttention
from graphgt.nn.attention.expander import ExpanderAttention, expander_edges
from graphgt.nn.attention.full import FullAttention
from graphgt.nn.attention.performer import PerformerAttention
from graphgt.nn.attention.topm import TopMAttention, topm_windows

__all__ = ["AttentionContext", "GlobalAttention", "CodebookAttention", "ExpanderAttention", "FullAttention",
           "PerformerAttention", "TopMAttention", "expander_edges", "topm_windows"]
