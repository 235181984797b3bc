"""Positional encodings of a graph store's graph, computed once and kept in the store.

:func:`compute_store_pe` computes a :class:`~graphgt.pe.base.PositionalEncoding` from the store's
CSR arrays (memory-mapped, never turned into an ``edge_index`` when the PE has a ``compute_csr``
entry point: :class:`~graphgt.pe.laplacian.LaplacianPE`, :class:`~graphgt.pe.random_walk.RandomWalkSE`
and :class:`~graphgt.pe.rw_estimator.RandomWalkSEEstimator` have one) and writes every key as
``pe/<key>.npy`` (float32 ``[N, d]``) with :func:`graphgt.data.store.write_derived`, the one
path for arrays derived from a store.

The PE's :meth:`~graphgt.pe.base.PositionalEncoding.cache_key` is recorded in ``meta.json`` under
``meta["pe"][<key>]``.  A later call with the same PE finds the arrays and the matching keys and
returns at once; a PE with other parameters (or a store whose record is missing) is recomputed.
Crash safety (:func:`~graphgt.data.store.write_derived`): the record of the keys about to be
replaced is removed *before* their arrays are rewritten and the new record is written *after*
them, so an interrupted run leaves arrays that no record vouches for, which the next call recomputes.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Mapping, Union

import numpy as np
import torch

from graphgt.data.store.core import GraphStore, write_derived
from graphgt.pe.base import PositionalEncoding

PathLike = Union[str, Path]


def pe_of_csr(pe: PositionalEncoding, indptr: np.ndarray, indices: np.ndarray,
              num_nodes: int) -> Dict[str, torch.Tensor]:
    """``pe`` on CSR arrays: its ``compute_csr`` if it has one, else ``compute`` on the edge list
    (rows are sources)."""
    compute_csr = getattr(pe, "compute_csr", None)
    threads = torch.get_num_threads()
    try:
        if compute_csr is not None:
            return compute_csr(indptr, indices, num_nodes)
        indptr = np.asarray(indptr, dtype=np.int64)
        rows = np.repeat(np.arange(num_nodes, dtype=np.int64), np.diff(indptr))
        edge_index = torch.from_numpy(np.stack([rows, np.asarray(indices, dtype=np.int64)]))
        return pe.compute(edge_index, num_nodes)
    finally:
        torch.set_num_threads(threads)  # numba's threading layer may have reset it


def stored_pe_keys(store: Union[GraphStore, PathLike]) -> Dict[str, str]:
    """``{pe key: cache_key}`` recorded in a store's meta (empty when none)."""
    if not isinstance(store, GraphStore):
        store = GraphStore.open(store)
    return dict(store.meta.get("pe", {}))


def is_up_to_date(store: Union[GraphStore, PathLike], pe: PositionalEncoding) -> bool:
    """Whether every key of ``pe`` is stored and recorded with ``pe.cache_key()``."""
    if not isinstance(store, GraphStore):
        store = GraphStore.open(store)
    recorded = stored_pe_keys(store)
    key = pe.cache_key()
    return all(store.has(f"pe/{k}") and recorded.get(k) == key for k in pe.keys)


def compute_store_pe(store_path: PathLike, pe: PositionalEncoding, overwrite: bool = False,
                     log=None) -> GraphStore:
    """Compute ``pe`` for the graph of the store at ``store_path`` and store it as ``pe/<key>``.

    Args:
        store_path: a graph store directory (:class:`~graphgt.data.store.GraphStore`).
        pe: the encoding (its ``compute_csr`` is used when it has one).
        overwrite: recompute even when the store already holds this PE (same ``cache_key``).
        log: called with a progress line (e.g. ``print``).

    Returns:
        The re-opened store (``store.pe()`` maps the new arrays).
    """
    path = Path(store_path)
    store = GraphStore.open(path)
    say = log or (lambda msg: None)
    if not overwrite and is_up_to_date(store, pe):
        say(f"[pe] {store.name}: {', '.join(pe.keys)} up to date ({pe.cache_key()})")
        return store
    t0 = time.perf_counter()
    values = pe_of_csr(pe, store.indptr, store.indices, store.num_nodes)
    store.release()
    store.close()
    store = save_store_pe(path, pe, values)
    say(f"[pe] {store.name}: computed {', '.join(pe.keys)} with {pe!r} in {time.perf_counter() - t0:.1f}s")
    return store


def save_store_pe(store_path: PathLike, pe: PositionalEncoding, values: Mapping[str, object]) -> GraphStore:
    """Write ``values`` (``{key: [N, ...]}``, computed by ``pe``) as ``pe/<key>`` float32 ``[N, d]``
    arrays and record ``pe.cache_key()`` for each key (see the module docstring for the order)."""
    path = Path(store_path)
    n = GraphStore.open(path).num_nodes
    arrays = {}
    for key in pe.keys:
        value = values[key]
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if arr.ndim == 1:
            arr = arr[:, None]
        elif arr.ndim > 2:
            arr = arr.reshape(arr.shape[0], -1)
        if arr.shape[0] != n:
            raise ValueError(f"{pe!r} returned {key!r} with {arr.shape[0]} rows for a store of {n} nodes")
        arrays[f"pe/{key}"] = np.ascontiguousarray(arr, dtype=np.float32)
    return write_derived(path, {("pe", key): pe.cache_key() for key in pe.keys}, arrays)
