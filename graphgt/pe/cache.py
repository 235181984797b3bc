"""Compute positional encodings once per dataset and cache them on disk.

The cache file is named by a key of the data (a hash of every graph's ``num_nodes`` and
``edge_index``) and of the encoding's parameters (:meth:`PositionalEncoding.cache_key`), so a
change of either recomputes, and the same data with the same parameters is computed once, ever.
Files are written atomically (temporary file, then rename): an interrupted run leaves no
half-written cache behind.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data

from graphgt.io import atomic_save
from graphgt.pe.base import PositionalEncoding


def graphs_fingerprint(graphs: Sequence[Data]) -> str:
    """A short hash of the structure of ``graphs`` (node counts and edge lists, in order)."""
    h = hashlib.sha256()
    for g in graphs:
        h.update(int(g.num_nodes).to_bytes(8, "little"))
        h.update(g.edge_index.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def compute_cached(graphs: Sequence[Data], pe: PositionalEncoding, cache_dir: Path,
                   fingerprint: str | None = None) -> List[Dict[str, Tensor]]:
    """Per-graph encodings ``[{key: Tensor[N_i, ...]}]`` of ``pe`` for ``graphs``, from the cache if present."""
    fingerprint = fingerprint or graphs_fingerprint(graphs)
    pe_hash = hashlib.sha256(pe.cache_key().encode()).hexdigest()[:12]
    path = Path(cache_dir) / "pe" / f"{type(pe).__name__}-{fingerprint}-{pe_hash}.pt"
    if path.exists():
        try:
            cached = torch.load(path, weights_only=True)
        except Exception:  # unreadable (e.g. written by an incompatible version): recompute
            cached = None
        if (isinstance(cached, dict) and cached.get("cache_key") == pe.cache_key()
                and len(cached.get("values", ())) == len(graphs)):
            return cached["values"]
    threads = torch.get_num_threads()
    try:
        values = [pe.compute(g.edge_index, int(g.num_nodes)) for g in graphs]
    finally:
        # numba's OpenMP layer (RWSE kernels) resets torch's thread count when it starts: a run
        # must train with the same threads whether or not its encodings were cached
        torch.set_num_threads(threads)
    atomic_save({"cache_key": pe.cache_key(), "values": values}, path)
    return values


def attach_pes(graphs: Sequence[Data], pes: Sequence[PositionalEncoding], cache_dir: Path) -> List[Data]:
    """Return ``graphs`` with every encoding of ``pes`` stored as node attributes (cached on disk)."""
    graphs = list(graphs)
    if not pes:
        return graphs
    fingerprint = graphs_fingerprint(graphs)
    for pe in pes:
        padded = 0
        for g, values in zip(graphs, compute_cached(graphs, pe, cache_dir, fingerprint)):
            for key, value in values.items():
                g[key] = value
            padded += int(any(bool(torch.isnan(v).any()) for v in values.values() if v.is_floating_point()))
        if padded:
            logging.getLogger("graphgt.pe").warning(
                "%r: %d of %d graphs have NaN entries in %s (e.g. fewer than k Laplacian eigenpairs: a graph "
                "smaller than k nodes). The encoders read them as absent (masked, or 0 for LinearPEEncoder); "
                "lower k below the smallest graph's size to avoid padding.", pe, padded, len(graphs),
                "/".join(pe.keys))
    return graphs
