"""Propagated node features ``Â x``, ``Â² x``, ... of a graph store, computed once and kept in it.

LargeGT (Dwivedi et al., "Graph Transformers for Large Graphs", 2023) gives every token of its
local module the token's own features *and* its 1- and 2-hop propagated features, so a token drawn
2 hops away also summarises 2 further hops: a 4-hop receptive field from 2-hop operations.  SIGN
(Frasca et al., 2020) precomputes the same powers.  Here they are computed out of core over the
store's CSR and written as ``extra/x_hop1``, ``extra/x_hop2``, ... (same shape and dtype as ``x``).

Propagation matrix (``norm``):

* ``"gcn"`` (default): :math:`\\hat A = \\tilde D^{-1/2}(A + I)\\tilde D^{-1/2}`, the GCN
  normalisation with self loops (:math:`\\tilde D_{ii} = 1 + \\deg(i)`), as SIGN uses;
* ``"mean"``: :math:`\\hat A = D^{-1} A`, the mean of the neighbours (an isolated node keeps 0).

``x_hop{k} = Â x_hop{k-1}`` with ``x_hop0 = x``, accumulated in float32 and stored in ``x``'s dtype.

Memory: rows are produced in chunks of ``chunk_rows`` and streamed into a memory-mapped ``.npy``
file, while the previous hop is read through its mapping; the process holds one output chunk plus
the pages the kernel touches, so papers100M-sized stores (whose ``x`` does not fit in RAM) work,
at the price of random reads.  The arrays and the record ``meta["hop_features"] = {"hops": K,
"norm": ...}`` are written by :func:`graphgt.data.store.write_derived` (record removed first,
arrays renamed into place, record written last), so an interrupted run is recomputed rather than
trusted.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Union

import numba
import numpy as np

from graphgt.data.store.core import GraphStore, Streamed, iter_chunks, write_derived

NORMS = ("gcn", "mean")
PathLike = Union[str, Path]


def hop_key(k: int) -> str:
    """The store key of the ``k``-hop propagated features (``extra/x_hop<k>``)."""
    return f"extra/x_hop{k}"


@numba.njit(cache=True, nogil=True)
def _half_to_float(h: np.uint16) -> np.float32:  # pragma: no cover - compiled
    """IEEE binary16 bits -> float32 (numba has no float16 arithmetic)."""
    sign = -1.0 if (h >> 15) & 1 else 1.0
    exp = (h >> 10) & 0x1F
    man = h & 0x3FF
    if exp == 0:
        return np.float32(sign * man * 2.0 ** -24)
    if exp == 31:
        return np.float32(sign * np.inf) if man == 0 else np.float32(np.nan)
    return np.float32(sign * (1.0 + man / 1024.0) * 2.0 ** (exp - 15))


@numba.njit(cache=True, nogil=True)
def _as_float(v) -> np.float32:  # pragma: no cover - compiled
    return np.float32(v)


def _make_kernel(load):
    """The row-propagation kernel for one element loader (float16 bits or a float)."""

    def kernel(indptr, indices, src, scale_in, scale_out, self_weight, start, out):  # pragma: no cover
        """``out[r - start] = scale_out[r] (self_weight scale_in[r] x[r] + sum_j scale_in[j] x[j])``."""
        rows, feats = out.shape
        for i in numba.prange(rows):
            r = start + i
            acc = np.zeros(feats, dtype=np.float32)
            if self_weight != 0.0:
                w = np.float32(self_weight * scale_in[r])
                for f in range(feats):
                    acc[f] += w * load(src[r, f])
            for p in range(indptr[r], indptr[r + 1]):
                j = indices[p]
                w = np.float32(scale_in[j])
                for f in range(feats):
                    acc[f] += w * load(src[j, f])
            s = np.float32(scale_out[r])
            for f in range(feats):
                out[i, f] = acc[f] * s

    return numba.njit(parallel=True, nogil=True)(kernel)


_KERNELS = {"half": _make_kernel(_half_to_float), "float": _make_kernel(_as_float)}


def propagation_scales(degree: np.ndarray, norm: str) -> tuple[np.ndarray, np.ndarray, float]:
    """``(scale_in, scale_out, self_weight)`` such that ``Â x = diag(scale_out) (A + self_weight I)
    diag(scale_in) x``."""
    deg = np.asarray(degree, dtype=np.float64)
    if norm == "gcn":
        s = 1.0 / np.sqrt(deg + 1.0)
        return s.astype(np.float32), s.astype(np.float32), 1.0
    if norm == "mean":
        inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
        return np.ones_like(deg, dtype=np.float32), inv.astype(np.float32), 0.0
    raise ValueError(f"norm={norm!r} is not one of {NORMS}")


def propagate(indptr: np.ndarray, indices: np.ndarray, x: np.ndarray, norm: str = "gcn",
              out: Optional[np.ndarray] = None, chunk_rows: int = 65536) -> np.ndarray:
    """``Â x`` for a CSR graph (module docstring); ``x`` may be a float16/float32 memory map.

    Args:
        indptr, indices: the CSR (symmetric for an undirected graph).
        x: ``[N, F]`` features.
        norm: ``"gcn"`` or ``"mean"``.
        out: ``[N, F]`` array (e.g. a memory map) to write into; a new float32 array when None.
        chunk_rows: rows computed per kernel call.

    Returns:
        ``out``.
    """
    n, feats = x.shape
    if indptr.shape[0] != n + 1:
        raise ValueError(f"x has {n} rows but the CSR has {indptr.shape[0] - 1} nodes")
    scale_in, scale_out, self_weight = propagation_scales(np.diff(indptr), norm)
    half = x.dtype == np.float16
    src = x.view(np.uint16) if half else x
    kernel = _KERNELS["half" if half else "float"]
    if out is None:
        out = np.empty((n, feats), dtype=np.float32)
    buf = np.empty((min(chunk_rows, max(n, 1)), feats), dtype=np.float32)
    for start, stop in iter_chunks(n, chunk_rows):
        view = buf[: stop - start]
        kernel(indptr, indices, src, scale_in, scale_out, self_weight, start, view)
        out[start:stop] = view.astype(out.dtype, copy=False)
    return out


def is_up_to_date(store: GraphStore, hops: int, norm: str) -> bool:
    """Whether ``extra/x_hop1..hops`` are stored and recorded with this ``norm``."""
    record = store.meta.get("hop_features") or {}
    return (record.get("norm") == norm and int(record.get("hops", 0)) >= hops
            and all(store.has(hop_key(k)) for k in range(1, hops + 1)))


def compute_hop_features(store_path: PathLike, hops: int = 2, norm: str = "gcn", chunk_rows: int = 65536,
                         log: Optional[Callable[[str], None]] = None) -> GraphStore:
    """Write ``extra/x_hop1..hops`` into a store (nothing to do when already recorded; module docstring).

    Returns:
        the re-opened store.
    """
    if isinstance(hops, bool) or not isinstance(hops, (int, np.integer)) or hops < 1:
        raise ValueError(f"hops={hops!r} must be an int >= 1 (LargeGT uses 2)")
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not one of {NORMS}")
    store = GraphStore.open(store_path)
    if is_up_to_date(store, hops, norm):
        return store
    if not store.has("x"):
        raise ValueError(f"graph store '{store.path}' has no node features 'x' to propagate")

    def hop(k: int) -> Streamed:
        def fill(out: np.ndarray) -> None:
            t0 = time.time()
            prev = store.x if k == 1 else np.load(store.path / f"{hop_key(k - 1)}.npy", mmap_mode="r")
            propagate(store.indptr, store.indices, prev, norm, out=out, chunk_rows=chunk_rows)
            if log is not None:
                log(f"hop features: {hop_key(k)} {tuple(store.x.shape)} in {time.time() - t0:.1f}s")
        return Streamed(tuple(store.x.shape), store.x.dtype, fill)

    arrays = {hop_key(k): hop(k) for k in range(1, hops + 1)}
    return write_derived(store.path, {("hop_features",): {"hops": int(hops), "norm": norm}}, arrays)


__all__ = ["NORMS", "compute_hop_features", "hop_key", "is_up_to_date", "propagate", "propagation_scales"]
