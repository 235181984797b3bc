"""Compiled (numba) helpers for positional encodings on big graphs given as CSR arrays.

The graph store keeps a graph as ``indptr`` (int64 ``[N + 1]``) and ``indices`` (int32/int64
``[nnz]``), memory-mapped.  The encodings of ``laplacian.py``, ``random_walk.py`` and
``rw_estimator.py`` work on these arrays directly (``compute_csr``) instead of building a
``[2, E]`` edge list and a scipy matrix with a ``data`` array (for ogbn-products, 124M entries:
~1 GB of ``edge_index`` and 1.5 GB of scipy matrix that these helpers never allocate).

Every helper is ``O(N + nnz)`` and allocates at most ``O(N)`` besides what it returns.
``A`` below is the matrix with ``A[i, j]`` = number of CSR entries ``j`` in row ``i`` (duplicates
count with their multiplicity, self loops kept), as ``random_walk.adjacency_matrix`` builds it.
"""
from __future__ import annotations

import contextlib
import types
import warnings
from typing import Optional, Tuple

import numba
import numpy as np
import torch
from torch import Tensor

from graphgt.pages import release_pages
from graphgt.pe.base import edge_index_numpy

_U64 = np.uint64


def as_csr_arrays(indptr, indices, num_nodes: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(indptr int64, indices int32/int64)`` as plain arrays (memory maps stay mapped), checked."""
    indptr = np.asarray(indptr)
    indices = np.asarray(indices)
    n = int(num_nodes)
    if indptr.ndim != 1 or indptr.shape[0] != n + 1:
        raise ValueError(f"indptr must have shape [num_nodes + 1] = [{n + 1}], got {tuple(indptr.shape)}")
    if indices.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {tuple(indices.shape)}")
    if indptr.dtype != np.int64:
        indptr = indptr.astype(np.int64)
    if indices.dtype not in (np.int32, np.int64):
        indices = indices.astype(np.int64)
    if n and (indptr[0] != 0 or indptr[-1] != indices.shape[0]):
        raise ValueError(f"indptr must run from 0 to len(indices)={indices.shape[0]}, "
                         f"got {int(indptr[0])}..{int(indptr[-1])}")
    if indices.shape[0] and not _indices_in_range(indices, n):
        raise ValueError(f"CSR indices outside [0, num_nodes={n})")
    return indptr, indices


@numba.njit(cache=True, nogil=True)
def _indices_in_range(indices, n):  # pragma: no cover - compiled
    for p in range(indices.shape[0]):
        if indices[p] < 0 or indices[p] >= n:
            return False
    return True


def csr_from_edge_index(edge_index: Tensor, num_nodes: int) -> Tuple[np.ndarray, np.ndarray]:
    """CSR ``(indptr int64, indices int64)`` of ``edge_index`` (rows = sources; each row sorted;
    duplicates and self loops kept)."""
    ei = edge_index_numpy(edge_index, num_nodes)
    n = int(num_nodes)
    order = np.lexsort((ei[1], ei[0]))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(ei[0], minlength=n), out=indptr[1:])
    return indptr, np.ascontiguousarray(ei[1][order])


@numba.njit(cache=True, nogil=True)
def csr_profile(indptr, indices):  # pragma: no cover - compiled
    """``(rows_sorted, has_self_loops, has_duplicates)``; duplicates are only detected in sorted rows
    (``has_duplicates`` is meaningful only when ``rows_sorted``)."""
    n = indptr.shape[0] - 1
    rows_sorted, loops, dups = True, False, False
    for i in range(n):
        prev = -1
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            if j == i:
                loops = True
            if j < prev:
                rows_sorted = False
            elif j == prev:
                dups = True
            prev = j
    return rows_sorted, loops, dups


@numba.njit(cache=True, nogil=True)
def _mix64(x):  # pragma: no cover - compiled; splitmix64's finaliser
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


@numba.njit(cache=True, nogil=True)
def _pair_hash_sums(indptr, indices):  # pragma: no cover - compiled
    """Sums (mod 2^64) of two keyed hashes of every entry ``(i, j)`` and of its mirror ``(j, i)``."""
    n = indptr.shape[0] - 1
    f1, m1, f2, m2 = _U64(0), _U64(0), _U64(0), _U64(0)
    k1, k2 = _U64(0x9E3779B97F4A7C15), _U64(0xD1B54A32D192ED03)
    for i in range(n):
        hi1 = _mix64(_U64(i) ^ k1)
        hi2 = _mix64(_U64(i) + k2)
        for p in range(indptr[i], indptr[i + 1]):
            j = _U64(indices[p])
            hj1 = _mix64(j ^ k1)
            hj2 = _mix64(j + k2)
            f1 += _mix64(hi1 + _U64(3) * hj1)
            m1 += _mix64(hj1 + _U64(3) * hi1)
            f2 += _mix64(hi2 ^ (hj2 * _U64(5)))
            m2 += _mix64(hj2 ^ (hi2 * _U64(5)))
    return f1 == m1 and f2 == m2


def csr_is_symmetric(indptr: np.ndarray, indices: np.ndarray) -> bool:
    """Whether ``A == A^T`` (the multiset of entries ``(i, j)`` equals that of ``(j, i)``).

    ``O(nnz)`` time and ``O(1)`` memory: compares the sums of two 64-bit hashes of the entries and
    of their mirrors. Symmetric input always passes; a non-symmetric one passes only on a hash
    collision of both sums at once (probability ~2^-128 for unstructured differences).
    """
    return bool(_pair_hash_sums(indptr, indices))


@numba.njit(cache=True, nogil=True)
def csr_components(indptr, indices):  # pragma: no cover - compiled
    """``(num_components, labels int32 [N])`` of a symmetric CSR graph by BFS; components are
    numbered in the order of their smallest node (as scipy's ``connected_components`` does)."""
    n = indptr.shape[0] - 1
    labels = np.full(n, -1, dtype=np.int32)
    queue = np.empty(n, dtype=np.int64)
    comp = 0
    for s in range(n):
        if labels[s] >= 0:
            continue
        labels[s] = comp
        head, tail = 0, 1
        queue[0] = s
        while head < tail:
            u = queue[head]
            head += 1
            for p in range(indptr[u], indptr[u + 1]):
                v = indices[p]
                if labels[v] < 0:
                    labels[v] = comp
                    queue[tail] = v
                    tail += 1
        comp += 1
    return comp, labels


@numba.njit(cache=True, nogil=True)
def _subgraph_fill(indptr, indices, nodes, local, out_indptr, out_indices):  # pragma: no cover
    for a in range(nodes.shape[0]):
        u = nodes[a]
        q = out_indptr[a]
        for p in range(indptr[u], indptr[u + 1]):
            out_indices[q] = local[indices[p]]
            q += 1


def subgraph_csr(indptr: np.ndarray, indices: np.ndarray, nodes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """CSR of the subgraph on ``nodes`` (ascending), which must be closed under adjacency (a union
    of connected components); node ``nodes[a]`` becomes ``a``."""
    nodes = np.asarray(nodes, dtype=np.int64)
    n = indptr.shape[0] - 1
    local = np.full(n, -1, dtype=np.int32 if len(nodes) < 2 ** 31 else np.int64)
    local[nodes] = np.arange(len(nodes), dtype=local.dtype)
    deg = indptr[nodes + 1] - indptr[nodes]
    out_indptr = np.zeros(len(nodes) + 1, dtype=np.int64)
    np.cumsum(deg, out=out_indptr[1:])
    out_indices = np.empty(int(out_indptr[-1]), dtype=local.dtype)
    _subgraph_fill(indptr, indices, nodes, local, out_indptr, out_indices)
    return out_indptr, out_indices


@numba.njit(cache=True, nogil=True)
def _undirected_fill(src, dst, n, indptr, out):  # pragma: no cover - compiled
    pos = indptr[:-1].copy()
    for e in range(src.shape[0]):
        u, v = src[e], dst[e]
        if u == v:
            continue
        out[pos[u]] = v
        pos[u] += 1
        out[pos[v]] = u
        pos[v] += 1


@numba.njit(cache=True, nogil=True)
def _sort_dedup_rows(indptr, indices, new_indptr):  # pragma: no cover - compiled
    """Sort every row in place and move its distinct entries to the front; ``new_indptr`` gets the
    compacted row pointers (the caller compacts ``indices`` with them)."""
    n = indptr.shape[0] - 1
    q = 0
    for i in range(n):
        a, b = indptr[i], indptr[i + 1]
        row = np.sort(indices[a:b])
        new_indptr[i] = q
        prev = -1
        for t in range(row.shape[0]):
            if row[t] != prev:
                indices[q] = row[t]
                q += 1
                prev = row[t]
    new_indptr[n] = q


@numba.njit(cache=True, nogil=True)
def _degree_pairs(src, dst, n):  # pragma: no cover - compiled
    deg = np.zeros(n, dtype=np.int64)
    for e in range(src.shape[0]):
        u, v = src[e], dst[e]
        if u != v:
            deg[u] += 1
            deg[v] += 1
    return deg


def undirected_csr(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> Tuple[np.ndarray, np.ndarray]:
    """The simple undirected graph of the pairs ``(src[e], dst[e])``: CSR ``(indptr int64, indices)``
    with both directions, rows sorted, self loops dropped, duplicates merged (``indices`` int32 below
    2^31 nodes). Memory: ``2 * len(src)`` indices plus ``O(N)``."""
    n = int(num_nodes)
    src = np.asarray(src)
    dst = np.asarray(dst)
    idx_dtype = np.int32 if n < 2 ** 31 else np.int64
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(_degree_pairs(src, dst, n), out=indptr[1:])
    indices = np.empty(int(indptr[-1]), dtype=idx_dtype)
    _undirected_fill(src, dst, n, indptr, indices)
    new_indptr = np.empty_like(indptr)
    _sort_dedup_rows(indptr, indices, new_indptr)
    if new_indptr[-1] < len(indices):
        indices = indices[: new_indptr[-1]].copy()
    return new_indptr, indices


def simple_undirected(indptr: np.ndarray, indices: np.ndarray, num_nodes: int) -> Tuple[np.ndarray, np.ndarray]:
    """CSR of the simple undirected graph of a CSR graph (``sign(A + A^T)`` without self loops).

    Returns the input arrays themselves when they already are one (symmetric, rows sorted, no self
    loops, no duplicates): the common case of a graph store, at the cost of two ``O(nnz)`` scans.
    """
    rows_sorted, loops, dups = csr_profile(indptr, indices)
    if rows_sorted and not loops and not dups and csr_is_symmetric(indptr, indices):
        return indptr, indices
    rows = np.repeat(np.arange(int(num_nodes), dtype=indices.dtype), np.diff(indptr))
    return undirected_csr(rows, indices, num_nodes)


@numba.njit(parallel=True, cache=True, nogil=True)
def _permute_rows(indptr, indices, order, newid, new_indptr, out):  # pragma: no cover - compiled
    for a in numba.prange(order.shape[0]):
        u = order[a]
        q = new_indptr[a]
        for p in range(indptr[u], indptr[u + 1]):
            out[q] = newid[indices[p]]
            q += 1


#: graphs with at least this many CSR entries are relabelled by degree before the big kernels
REORDER_MIN_NNZ = 1 << 23


def degree_ordered(indptr: np.ndarray, indices: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The graph relabelled by decreasing degree (ties: by id): ``(indptr, indices, order)`` with
    ``order[a]`` the old id of new node ``a``.

    Why: the block kernels gather a row of the ``[N, b]`` block per CSR entry, and a node's row is
    gathered ``deg`` times; with the hubs next to each other, the most gathered rows share cache
    lines and pages (measured: 15-25% faster products on power-law graphs of 3e5-2.4e6 nodes whose
    ids are random).  Memory: a new ``indices`` array; the old one, when memory-mapped, is released
    from the resident set.
    """
    n = indptr.shape[0] - 1
    deg = np.diff(indptr)
    order = np.argsort(-deg, kind="stable")
    newid = np.empty(n, dtype=indices.dtype)
    newid[order] = np.arange(n, dtype=indices.dtype)
    new_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(deg[order], out=new_indptr[1:])
    out = np.empty_like(indices)
    _permute_rows(indptr, indices, order, newid, new_indptr, out)
    release_pages(indices)
    return new_indptr, out, order


def nnz_balanced_bounds(indptr: np.ndarray, parts: int) -> np.ndarray:
    """Row boundaries ``[parts + 1]`` that split a CSR matrix into ``parts`` ranges of ~equal work
    (nnz plus one per row)."""
    n = indptr.shape[0] - 1
    work = indptr.astype(np.float64) + np.arange(n + 1, dtype=np.float64)
    bounds = np.searchsorted(work, np.linspace(0, work[-1], parts + 1), side="left").astype(np.int64)
    bounds[0], bounds[-1] = 0, n
    return np.maximum.accumulate(bounds)


def single_threaded_blas():
    """Run numpy/scipy's BLAS/LAPACK on one thread inside the context (restored afterwards; a no-op
    without ``threadpoolctl``).  What is left there is small (``eigh`` of ``[b, b]`` matrices,
    ARPACK's ``[N, ncv]`` gemv) and memory-bound, and on a loaded machine OpenBLAS's spinning threads
    slow it several-fold (measured: a 2000 x 2000 ``eigh`` 4.4 s -> 0.6 s) and compete with the
    numba kernels' threads.  The ``[N, b]`` dense passes of the large solvers run in torch instead,
    on :func:`pe_threads`'s threads."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def compiled_variants(py_func, **options):
    """``(parallel, serial)`` numba compilations of one kernel whose loop over row ranges is a
    ``numba.prange`` (a plain ``range`` in the serial one).

    Each gets its own ``__qualname__`` (``<name>__parallel`` / ``<name>__serial``) and so its own
    on-disk cache file: numba's cache index is keyed by signature and bytecode, *not* by the
    ``parallel`` flag, so two compilations of the same function share one cache entry and whichever
    was compiled first (e.g. the serial one, by a test on a small graph) was loaded for both ever
    after: the "parallel" kernels of this package then ran on one thread.
    """
    out = []
    for parallel in (True, False):
        name = f"{py_func.__name__}__{'parallel' if parallel else 'serial'}"
        func = types.FunctionType(py_func.__code__, py_func.__globals__, name, py_func.__defaults__,
                                  py_func.__closure__)
        func.__qualname__ = name
        func.__doc__ = py_func.__doc__
        func.__module__ = py_func.__module__
        out.append(numba.njit(parallel=parallel, cache=True, nogil=True, **options)(func))
    return tuple(out)


def kernel_threads(threads: Optional[int] = None) -> int:
    """Threads for the parallel kernels: ``threads`` if given, else torch's thread count; capped by
    numba's pool (``NUMBA_NUM_THREADS``, the core count by default)."""
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be None (torch's thread count) or a positive int, got {threads!r}")
    want = torch.get_num_threads() if threads is None else threads
    return max(1, min(want, numba.config.NUMBA_NUM_THREADS))


class pe_threads:
    """Context manager: run numba's parallel kernels and torch's ops on ``threads`` threads (resolved
    by :func:`kernel_threads`), restoring both thread counts on exit.

    Why explicit: numba's OpenMP threading layer can reset ``torch.get_num_threads()`` when it
    starts, and ``numba.set_num_threads`` may have been lowered by other code; the large PE solvers
    split rows into exactly ``threads`` ranges (``nnz_balanced_bounds``) and want one thread per
    range.  The row kernels write every output row from its own inputs only, so their results do not
    depend on the thread count (bit-identical; ``tests/pe/test_threads.py``).
    """

    def __init__(self, threads: Optional[int] = None):
        self.threads = kernel_threads(threads)

    def __enter__(self):
        self.torch_threads = torch.get_num_threads()
        self.numba_threads = None
        if self.threads > 1:  # setting numba's count starts its threading layer: only when used
            try:
                self.numba_threads = numba.get_num_threads()
                numba.set_num_threads(self.threads)
            except (ValueError, RuntimeError):  # pragma: no cover - no threading layer
                self.numba_threads = None
        torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc):
        if self.numba_threads is not None:
            numba.set_num_threads(self.numba_threads)
        torch.set_num_threads(self.torch_threads)
        return False


class keep_torch_threads:
    """Context manager: restore ``torch.get_num_threads()`` on exit (numba's threading layer can
    reset it when it starts, see ``pe/cache.py``)."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        return self

    def __exit__(self, *exc):
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        return False


#: accepted values of the PE classes' ``device`` option
DEVICE_CHOICES = "'auto', 'cpu', 'cuda' or 'cuda:<index>'"


def check_device(device: str) -> str:
    """Validate a PE ``device`` option (a string, kept as given in the PE's repr)."""
    if not isinstance(device, str):
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {device!r}")
    if device in ("auto", "cpu", "cuda"):
        return device
    if device.startswith("cuda:") and device[5:].isdigit():
        return device
    raise ValueError(f"device={device!r} must be one of {DEVICE_CHOICES}")


def kernel_device(device: str) -> Optional[torch.device]:
    """Where a PE's products run: ``None`` = the compiled numba kernels on the CPU (``"cpu"``, and
    ``"auto"`` without CUDA), else the torch device of the sparse-CSR path (``"cuda[:i]"``, and
    ``"auto"`` when CUDA is available).  A CUDA device that is not there is refused."""
    device = check_device(device)
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return None
    if device == "auto":
        return torch.device("cuda")
    if not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device='cpu' or 'auto'")
    dev = torch.device(device)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return dev


def torch_csr_adjacency(indptr: np.ndarray, indices: np.ndarray, device: torch.device,
                        dtype: torch.dtype = torch.float32) -> Tensor:
    """``A`` (entries 1, duplicates kept as separate entries) as a ``torch.sparse_csr_tensor`` on
    ``device``; int32 index arrays when ``nnz < 2^31`` (half the memory; cuSPARSE takes them)."""
    n = indptr.shape[0] - 1
    nnz = int(indptr[-1]) if n else 0
    idx = torch.int32 if nnz < 2 ** 31 and n < 2 ** 31 else torch.int64
    with warnings.catch_warnings():  # memory-mapped (read-only) arrays: only read here
        warnings.simplefilter("ignore", UserWarning)
        crow = torch.from_numpy(np.asarray(indptr)).to(device=device, dtype=idx)
        col = torch.from_numpy(np.asarray(indices)).to(device=device, dtype=idx)
    values = torch.ones(nnz, dtype=dtype, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, (n, n), check_invariants=False)


def torch_csr_rows(a: Tensor, lo: int, hi: int) -> Tensor:
    """Rows ``lo..hi-1`` of a sparse CSR tensor as a ``[hi - lo, N]`` sparse CSR tensor (views of its
    arrays, no copy of the entries)."""
    if lo == 0 and hi == a.shape[0]:
        return a
    crow, col, val = a.crow_indices(), a.col_indices(), a.values()
    start, stop = int(crow[lo]), int(crow[hi])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow[lo:hi + 1] - start, col[start:stop], val[start:stop],
                                       (hi - lo, a.shape[1]), check_invariants=False)
