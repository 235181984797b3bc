"""Random-node subgraphs: training batches as the induced subgraph of a random share of the graph.

This is how Luo et al. (NeurIPS 2024, "Classic GNNs are Strong Baselines", tunedGNN
``large_graph/product.py``) train their deep GNNs on ogbn-products: PyG's ``RandomNodeLoader`` deals
all ``N`` nodes into ``p`` random parts per epoch and each step is full-batch training on the subgraph
induced by one part (about ``N/p`` nodes and ``E/p^2`` edges), with the loss on the training nodes in
it.  A ``p``-layer-deep model costs one pass over the part, not the ``prod(fanouts)`` blow-up of a
neighbour sample.

Here a batch of ``B`` training seeds (``NodeLoader`` cuts the training nodes into ``p`` batches of
``ceil(n_train / p)`` per pass: :meth:`RandomNodeSampler.batch_size`) gets every other node of the
graph independently with probability ``q = 1/p`` as context, and the batch is the subgraph induced on
seeds + context::

    V_b = S_b  ∪  { v ∉ S_b : r_v < q },     E_b = { (u, t) ∈ E : u, t ∈ V_b }

The loss covers the seeds only (``loss_mask``).  Each training node is a loss node once per pass,
as in ``RandomNodeLoader``; a batch holds about ``B + q (N - B)`` nodes, the size of one of its parts.
What differs: ``RandomNodeLoader``'s parts are disjoint and a training node that falls in the part is
always a loss node, here the context of two batches may overlap and a training node drawn as context
of another batch's step is context only.  Batches are ordinary graph batches without hop structure
(no ``num_sampled_nodes``), so models run on every node of the subgraph.  Under DDP each rank's
share of a batch (``B / W`` seeds) draws its own context, so every rank trains on a subgraph of
about ``N/p`` nodes, as every GPU would hold one part.
"""
from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np

from graphgt.data.sampling import kernels
from graphgt.data.sampling.neighbor import SampledSubgraph, check_csr, check_seeds, portable_state, restore_arrays


class RandomNodeSampler:
    """Induced subgraph of the seeds plus each other node with probability ``1 / num_parts``.

    Args:
        indptr: int64 ``[N + 1]`` CSR row pointers (e.g. ``store.indptr``; memory maps are used in place).
        indices: int32/int64 ``[E]`` CSR columns (``store.indices``).  Both are checked once (a corrupt
            CSR is a ``ValueError``).
        num_parts: ``p``: the context probability is ``1/p`` and a training pass has ``p`` batches
            (tunedGNN's products runs: 10).

    :meth:`sample` returns a :class:`SampledSubgraph` whose ``num_sampled_nodes`` /
    ``num_sampled_edges`` are ``None`` (not hop-ordered).  Costs ``O(N)`` random draws plus the CSR
    rows of the kept nodes per batch (one numba kernel call, :func:`kernels.sample_random_nodes`).
    """

    def __init__(self, indptr: Any, indices: Any, num_parts: int):
        if isinstance(num_parts, bool) or not isinstance(num_parts, (int, np.integer)) or num_parts < 1:
            raise ValueError(f"num_parts={num_parts!r} must be an int >= 1 (the context probability is 1/num_parts; "
                             "tunedGNN trains ogbn-products with 10)")
        self.indptr, self.indices = check_csr(indptr, indices)
        self._sources = {"indptr": indptr, "indices": indices}
        self.num_parts = int(num_parts)
        self._threshold = np.uint64(min(2 ** 64 - 1, (2 ** 64) // self.num_parts))

    @property
    def num_nodes(self) -> int:
        return int(self.indptr.shape[0] - 1)

    def batch_size(self, num_seeds: int) -> int:
        """Seeds per training batch so that a pass over ``num_seeds`` training nodes has ``num_parts`` batches."""
        return max(1, math.ceil(int(num_seeds) / self.num_parts))

    def sample(self, seeds: Any, seed: int) -> SampledSubgraph:
        """The subgraph induced on ``seeds`` (local ids ``0..B-1``, given order) and the context nodes
        (then, in id order) drawn with the batch seed ``seed``; edges ``u -> t`` grouped by target."""
        s = check_seeds(seeds, self.num_nodes)
        status, node_ids, src, dst = kernels.sample_random_nodes(
            self.indptr, self.indices, s, self._threshold, np.int64(int(seed) & 0x7FFFFFFFFFFFFFFF))
        if status == kernels.DUPLICATE_SEED:
            raise ValueError("seeds must be distinct node ids (pass np.unique(seeds) or a split's node ids)")
        edge_index = np.empty((2, src.shape[0]), dtype=np.int64)
        edge_index[0], edge_index[1] = src, dst
        return SampledSubgraph(node_ids, edge_index, int(s.shape[0]), None, None)

    def __getstate__(self) -> Dict[str, Any]:
        return {"num_parts": self.num_parts,
                "arrays": portable_state({"indptr": self.indptr, "indices": self.indices}, self._sources)}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        arrays, self._sources = restore_arrays(state["arrays"])
        self.indptr, self.indices = arrays["indptr"], arrays["indices"]
        self.num_parts = int(state["num_parts"])
        self._threshold = np.uint64(min(2 ** 64 - 1, (2 ** 64) // self.num_parts))

    def __repr__(self) -> str:
        return f"RandomNodeSampler(num_nodes={self.num_nodes}, num_parts={self.num_parts})"
