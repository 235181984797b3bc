"""Sampled mini-batches of one large graph: compiled neighbour/token samplers and the node loader.

* :class:`NeighborSampler` -- multi-hop uniform neighbour sampling without replacement
  (GraphSAGE; PyG ``NeighborLoader`` semantics), one numba kernel call per batch.
* :class:`RandomNodeSampler` -- the subgraph induced on the seeds plus a random ``1/p`` of the other
  nodes (tunedGNN's ``RandomNodeLoader`` training of deep GNNs on ogbn-products).
* :class:`TokenSampler` -- LargeGT's token sequences: ``K`` nodes per seed from its 1- and 2-hop
  neighbourhood.
* :class:`NodeLoader` -- batches of seed nodes of a :class:`~graphgt.data.store.GraphStore` with
  their sample, gathered features/labels/PEs, worker processes, deterministic shuffles and DDP
  shards of equal length.
"""
from graphgt.data.sampling.largegt import TokenBatch, TokenSampler
from graphgt.data.plan import num_batches, num_eval_batches, plan_batches
from graphgt.data.sampling.loader import NodeLoader, neighbor_batch, token_batch
from graphgt.data.sampling.neighbor import NeighborSampler, SampledSubgraph
from graphgt.data.sampling.random_nodes import RandomNodeSampler

__all__ = ["NeighborSampler", "RandomNodeSampler", "SampledSubgraph", "TokenSampler", "TokenBatch", "NodeLoader", "neighbor_batch",
           "token_batch", "num_batches", "num_eval_batches", "plan_batches"]
