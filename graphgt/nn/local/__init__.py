"""Local message-passing layers; all follow :class:`LocalMP`
(``forward(x, edge_index, edge_attr=None) -> (x, edge_attr)``)."""
from graphgt.nn.local.base import ConvAdapter, LocalMP
from graphgt.nn.local.gat import GATLayer
from graphgt.nn.local.gatedgcn import GatedGCNLayer
from graphgt.nn.local.gcn import GCNLayer
from graphgt.nn.local.gin import GINELayer, GINLayer
from graphgt.nn.local.sage import SAGELayer

__all__ = ["LocalMP", "ConvAdapter", "GCNLayer", "GINLayer", "GINELayer", "GatedGCNLayer", "GATLayer",
           "SAGELayer"]
