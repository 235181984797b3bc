"""Multi-hop neighbour sampling (GraphSAGE; PyG's ``NeighborLoader`` semantics) on a CSR graph.

Given seeds ``S`` and fan-outs ``(f_1, ..., f_L)``, hop ``h`` expands the frontier ``F_{h-1}``
(``F_0 = S``; ``F_h`` = nodes first reached at hop ``h``): every ``t ∈ F_{h-1}`` of degree ``d``
keeps ``min(d, f_h)`` of its CSR entries drawn uniformly without replacement (all of them when
``f_h = -1``) and contributes one edge ``u -> t`` per kept neighbour ``u``.  The nodes are
relabelled to local ids in order of discovery, seeds first::

    node_ids   = [ seeds (given order) | new at hop 1 | new at hop 2 | ... ]
    edge_index = [[ neighbour (message source) ],      local ids, like PyG's NeighborLoader:
                  [ the node it was sampled for ]]     messages flow row 0 -> row 1

so an ``L``-layer message-passing model on ``edge_index`` computes the seeds' outputs from an
``L``-hop sampled computation graph.  The work is one compiled kernel call per batch
(:func:`graphgt.data.sampling.kernels.sample_neighbors`).  Rows of the CSR are assumed free of
repeated entries (a stored multi-edge would be sampled as two edges).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from graphgt.pages import advise_mapping, larger_than_ram_share

from graphgt.data.sampling import kernels


@dataclass
class SampledSubgraph:
    """One neighbour sample.

    Attributes:
        node_ids: int64 ``[n]`` global ids; the ``num_seeds`` seeds first (given order), then the
            nodes new at hop 1, hop 2, ...
        edge_index: int64 ``[2, E]`` local ids; row 0 = sampled neighbour (source), row 1 = the
            node it was sampled for (target).  Edges are grouped by hop, then by target.
        num_seeds: number of seeds ``B`` (= ``num_sampled_nodes[0]``).
        num_sampled_nodes: int64 ``[L + 1]`` nodes first reached at each hop (hop 0 = seeds); ``None``
            for a sample without hop structure (:class:`~graphgt.data.sampling.RandomNodeSampler`).
        num_sampled_edges: int64 ``[L]`` edges sampled at each hop (``None`` likewise).
    """

    node_ids: np.ndarray
    edge_index: np.ndarray
    num_seeds: int
    num_sampled_nodes: Optional[np.ndarray]
    num_sampled_edges: Optional[np.ndarray]

    @property
    def num_nodes(self) -> int:
        return int(self.node_ids.shape[0])


# --------------------------------------------------------------------------- shared helpers
def frozen(arr: Any, dtype: Any = None) -> np.ndarray:
    """A read-only, C-contiguous plain-ndarray view of ``arr`` (a copy only if dtype/layout differ).

    Kernels always see read-only arrays, so numba compiles one specialisation whether the graph
    is in RAM or memory-mapped.
    """
    a = np.asarray(arr)
    if dtype is not None and a.dtype != np.dtype(dtype):
        a = a.astype(dtype)
    a = np.ascontiguousarray(a)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def check_csr(indptr: Any, indices: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Validate and freeze a CSR pair: ``indptr`` int64 ``[N + 1]``, ``indices`` int32/int64 ``[E]``.

    The compiled kernels index with these values unchecked, so a corrupt pair would crash the
    process (a segfault) or read other memory: ``indptr`` must run from 0 to ``E`` without
    decreasing and ``indices`` must hold node ids in ``[0, N)``
    (:func:`graphgt.data.store.core.csr_problem`: a chunked min/max, done once per process for a
    store's memory-mapped files, which :meth:`GraphStore.open` has already scanned).
    """
    from graphgt.data.store.core import csr_problem  # store.node imports the samplers: no import cycle

    indptr_a = np.asarray(indptr)
    indices_a = np.asarray(indices)
    if indptr_a.ndim != 1 or indptr_a.shape[0] < 1 or not np.issubdtype(indptr_a.dtype, np.integer):
        raise ValueError(f"indptr must be a 1-D integer array [N + 1], got shape {indptr_a.shape} "
                         f"dtype {indptr_a.dtype}; pass store.indptr")
    if indices_a.ndim != 1 or not np.issubdtype(indices_a.dtype, np.integer):
        raise ValueError(f"indices must be a 1-D integer array [E], got shape {indices_a.shape} "
                         f"dtype {indices_a.dtype}; pass store.indices")
    if int(indptr_a[0]) != 0 or int(indptr_a[-1]) != indices_a.shape[0]:
        raise ValueError(f"indptr/indices do not form a CSR: indptr[0]={int(indptr_a[0])} (must be 0), "
                         f"indptr[-1]={int(indptr_a[-1])} but len(indices)={indices_a.shape[0]}")
    problem = csr_problem(indptr, indices, int(indptr_a.shape[0]) - 1)
    if problem is not None:
        raise ValueError(f"indptr/indices do not form a CSR of {int(indptr_a.shape[0]) - 1} nodes: {problem}; "
                         "pass the arrays of one graph (a store's: store.indptr, store.indices)")
    col_dtype = np.int32 if indices_a.dtype.itemsize <= 4 and indices_a.dtype != np.uint32 else np.int64
    return frozen(indptr_a, np.int64), frozen(indices_a, col_dtype)


def check_seeds(seeds: Any, num_nodes: int, name: str = "seeds") -> np.ndarray:
    """``seeds`` as a frozen int64 ``[B]`` array of ids in ``[0, num_nodes)``."""
    s = np.asarray(seeds)
    if s.ndim != 1 or not (np.issubdtype(s.dtype, np.integer) or s.size == 0):
        raise ValueError(f"{name} must be a 1-D integer array of node ids, got shape {s.shape} dtype {s.dtype}")
    s = frozen(s, np.int64)
    if s.size and (int(s.min()) < 0 or int(s.max()) >= num_nodes):
        raise ValueError(f"{name} holds ids outside [0, {num_nodes}) (min {int(s.min())}, max {int(s.max())}); "
                         "pass node ids of this graph")
    return s


def portable_state(arrays: Dict[str, np.ndarray], sources: Dict[str, Any]) -> Dict[str, Any]:
    """Pickle state for arrays: file-backed memory maps travel as (file, offset, dtype, shape)."""
    out: Dict[str, Any] = {}
    for key, arr in arrays.items():
        src = sources.get(key)
        if isinstance(src, np.memmap) and getattr(src, "filename", None) and src.dtype == arr.dtype \
                and src.shape == arr.shape and src.flags.c_contiguous:
            out[key] = ("__mmap__", str(src.filename), int(src.offset), src.dtype.str, tuple(src.shape))
        else:
            out[key] = arr
    return out


def restore_arrays(state: Dict[str, Any]) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Inverse of :func:`portable_state`: re-map files, freeze arrays; returns (arrays, sources)."""
    arrays, sources = {}, {}
    for key, val in state.items():
        if isinstance(val, tuple) and len(val) == 5 and val[0] == "__mmap__":
            _, fname, offset, dtype, shape = val
            mm = np.memmap(fname, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape)
            if key != "indptr" and larger_than_ram_share(mm):
                advise_mapping(mm, "MADV_RANDOM")  # random rows of a huge store: no read-ahead (see GraphStore.array)
            sources[key] = mm
            arrays[key] = frozen(mm)
        else:
            arrays[key] = frozen(val)
    return arrays, sources


class NeighborSampler:
    """Uniform multi-hop neighbour sampling without replacement (see the module docstring).

    Args:
        indptr: int64 ``[N + 1]`` CSR row pointers (row ``i`` = neighbours of ``i``), e.g.
            ``store.indptr`` (memory-mapped arrays are used in place).
        indices: int32/int64 ``[E]`` CSR columns, e.g. ``store.indices``.  Both are checked once
            here (:func:`check_csr`): a corrupt CSR is a ``ValueError``, never a crash of the kernel.
        fanouts: neighbours kept per node at each hop, e.g. ``[15, 10]``; ``-1`` keeps all of them.

    Pickles memory-mapped arrays by file name, so loader workers re-map the graph instead of
    receiving a copy.
    """

    def __init__(self, indptr: Any, indices: Any, fanouts: Sequence[int]):
        self.indptr, self.indices = check_csr(indptr, indices)
        self._sources = {"indptr": indptr, "indices": indices}
        if isinstance(fanouts, (int, np.integer)) or len(fanouts) == 0:
            raise ValueError(f"fanouts must be a non-empty list of ints (one per hop), got {fanouts!r}; "
                             "e.g. fanouts=[15, 10]")
        fo = []
        for i, f in enumerate(fanouts):
            if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or (f < 1 and f != -1):
                raise ValueError(f"fanouts[{i}]={f!r}: use a positive number of neighbours or -1 for all of them")
            fo.append(int(f))
        self.fanouts = tuple(fo)
        self._fanouts = frozen(np.asarray(fo, dtype=np.int64))

    @property
    def num_nodes(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def num_hops(self) -> int:
        return len(self.fanouts)

    def sample(self, seeds: Any, seed: int) -> SampledSubgraph:
        """Sample the ``len(fanouts)``-hop computation graph of ``seeds``.

        Args:
            seeds: int ``[B]`` distinct node ids.
            seed: the batch's random seed (same seed, same sample; see :func:`kernels.mix_seed`
                to derive one from several integers).
        """
        s = check_seeds(seeds, self.num_nodes)
        status, node_ids, src, dst, per_hop_nodes, per_hop_edges = kernels.sample_neighbors(
            self.indptr, self.indices, s, self._fanouts, np.int64(int(seed) & 0x7FFFFFFFFFFFFFFF))
        if status == kernels.DUPLICATE_SEED:
            _, counts = np.unique(s, return_counts=True)
            raise ValueError(f"seeds must be distinct; {int((counts > 1).sum())} ids appear more than once "
                             "(pass np.unique(seeds) or a split's node ids)")
        edge_index = np.empty((2, src.shape[0]), dtype=np.int64)
        edge_index[0] = src
        edge_index[1] = dst
        return SampledSubgraph(node_ids, edge_index, int(s.shape[0]), per_hop_nodes, per_hop_edges)

    def __getstate__(self) -> Dict[str, Any]:
        return {"fanouts": self.fanouts,
                "arrays": portable_state({"indptr": self.indptr, "indices": self.indices}, self._sources)}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        arrays, sources = restore_arrays(state["arrays"])
        self.indptr, self.indices = arrays["indptr"], arrays["indices"]
        self._sources = sources
        self.fanouts = tuple(state["fanouts"])
        self._fanouts = frozen(np.asarray(self.fanouts, dtype=np.int64))

    def __repr__(self) -> str:
        return f"NeighborSampler(num_nodes={self.num_nodes}, fanouts={list(self.fanouts)})"
