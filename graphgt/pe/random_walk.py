"""Random-walk structural encoding (RWSE): return probabilities of a random walk, by sparse products.

Paper: Dwivedi et al., "Graph Neural Networks with Learnable Structural and Positional
Representations", ICLR 2022 (https://arxiv.org/abs/2110.07875); used as RWSE by GraphGPS
(Rampášek et al., NeurIPS 2022).

Math. With ``A`` the adjacency matrix (``A[i, j]`` = number of edges ``i -> j`` of ``edge_index``,
self loops included) and ``D = diag(A 1)`` the out-degrees, ``P = D^{-1} A`` is the transition
matrix (rows of nodes without out-edges are 0).  The encoding of node ``i`` is

.. math::
    \\mathrm{rwse}_i = \\big[(P^1)_{ii}, (P^2)_{ii}, \\dots, (P^{T})_{ii}\\big], \\qquad T = \\text{steps}.

This is what PyG's ``AddRandomWalkPE(walk_length=T)`` computes (multi-edges count with their
multiplicity, as in its sparse path), but without ever forming a matrix power: PyG multiplies
``P^t`` as a (dense or sparse) matrix, whose fill-in makes it run out of memory on graphs of ~1e5
nodes.  Here the diagonal is obtained column block by column block.

*Undirected graphs* (``A`` symmetric).  ``S = D^{-1/2} A D^{-1/2}`` is symmetric and similar to
``P`` (``P^t = D^{-1/2} S^t D^{1/2}``), so ``(P^t)_{ii} = (S^t)_{ii}``.  For a block ``B`` of ``b``
nodes let ``Y_0 = E_B`` (their unit vectors, ``[N, b]``) and ``Y_{m+1} = S Y_m``; then

.. math::
    (S^{2m})_{ii} = \\lVert Y_m[:, i] \\rVert^2, \\qquad (S^{2m+1})_{ii} = \\langle Y_m[:, i], Y_{m+1}[:, i] \\rangle,

so ``ceil(T / 2)`` products per block suffice (and ``Y_1 = S[:, B]`` is a slice, not a product).

*Directed graphs.*  ``Y_{t} = P Y_{t-1}``, ``(P^t)_{ii} = Y_t[i, i]``: ``T - 1`` products per block.

Each block starts sparse (``Y_1`` has one column per node of the block holding its neighbours) and
stays sparse (scipy CSR products) while its density is at most ``sparse_density``; after that it
is a dense row-major ``[N, b]`` float array multiplied by the CSR operator in a compiled (numba)
kernel fused with the column dot products, on ``min(torch.get_num_threads(), numba threads)``
threads with rows split by equal nnz (2-3x faster than torch's CSR x dense on 2 cores).  On graphs
whose ``T/2``-hop neighbourhoods are small (meshes, road networks, molecules) the computation stays
sparse throughout and costs ``O(N * |T/2-hop ball| * degree)``.

Cost.  Worst case (an expander: every neighbourhood reaches the whole graph within a few hops)
``O(ceil(T/2) * nnz(A) * N)`` multiply-adds for undirected graphs, ``O(T * nnz(A) * N)`` for
directed ones.  Memory: ``O(nnz(A) + N * b)``; concretely about ``3 * N * b * itemsize`` bytes for
the dense block buffers (``block_size=64``, float32, ``N = 1e5``: ~77 MB) plus the operator and
the ``[N, T]`` float64 output.  Measured on 2 CPU cores (``bench/pe_scaling.py``,
``docs/benchmarks_pe.md``): 1e5 nodes / 2e6 edges, T = 16, in bounded memory, where PyG's
``AddRandomWalkPE`` runs out of memory.

Shapes:
    - input: ``edge_index: LongTensor[2, E]``, ``num_nodes = N``
    - output: ``{"rwse": FloatTensor[N, steps]}`` (column ``t - 1`` holds ``(P^t)_{ii}``)
"""
from __future__ import annotations

from typing import Dict, Tuple

import numba
import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from graphgt.pe.base import PositionalEncoding, edge_index_numpy
from graphgt.pe.csr import compiled_variants, nnz_balanced_bounds

_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def adjacency_matrix(edge_index: Tensor, num_nodes: int, dtype=np.float64) -> sp.csr_matrix:
    """``A[i, j]`` = number of edges ``i -> j`` (duplicates summed, self loops kept), CSR ``[N, N]``."""
    ei = edge_index_numpy(edge_index, num_nodes)
    data = np.ones(ei.shape[1], dtype=dtype)
    adj = sp.csr_matrix((data, (ei[0], ei[1])), shape=(num_nodes, num_nodes))
    adj.sum_duplicates()
    adj.sort_indices()
    return adj


def _is_symmetric(adj: sp.csr_matrix) -> bool:
    diff = adj - adj.T
    return diff.nnz == 0 or not np.any(diff.data)


def _transition_operators(adj: sp.csr_matrix, symmetric: bool, dtype) -> sp.csr_matrix:
    """``S = D^{-1/2} A D^{-1/2}`` (symmetric case) or ``P^T = (D^{-1} A)^T`` (directed case), CSR.

    The directed case returns the *transpose* because the sparse stage keeps ``Y^T`` (rows = the
    block's nodes) and ``Y_{t}^T = Y_{t-1}^T P^T``.
    """
    deg = np.asarray(adj.sum(axis=1), dtype=np.float64).ravel()
    with np.errstate(divide="ignore"):
        if symmetric:
            dis = np.where(deg > 0, 1.0 / np.sqrt(deg), 0.0)
            op = sp.diags(dis) @ adj @ sp.diags(dis)
        else:
            dinv = np.where(deg > 0, 1.0 / deg, 0.0)
            op = (sp.diags(dinv) @ adj).T
    op = sp.csr_matrix(op, dtype=dtype)
    op.sort_indices()
    return op


def _spmm_dots_py(indptr, indices, data, y, z, bounds, acc):  # pragma: no cover - compiled
    """``z = Op @ y`` (CSR x dense ``[N, b]``) fused with ``acc[p, 0] += y*z``, ``acc[p, 1] += z*z``.

    ``p`` indexes the row ranges ``bounds`` (one per thread); ``acc`` is float64 ``[parts, 2, b]``.
    """
    b = y.shape[1]
    for part in numba.prange(len(bounds) - 1):  # a plain range in the serial compilation
        a_yz = acc[part, 0]
        a_zz = acc[part, 1]
        for r in range(bounds[part], bounds[part + 1]):
            zr = z[r]
            for j in range(b):
                zr[j] = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                w = data[p]
                yc = y[indices[p]]
                for j in range(b):
                    zr[j] += w * yc[j]
            yr = y[r]
            for j in range(b):
                a_yz[j] += yr[j] * zr[j]
                a_zz[j] += zr[j] * zr[j]


# distinct cache entries for the two compilations (csr.compiled_variants: numba's cache does not key on
# ``parallel``, and a shared entry made the parallel kernel the serial one)
_spmm_dots_parallel, _spmm_dots_serial = compiled_variants(_spmm_dots_py, fastmath={"contract"})
#: below this many multiply-adds per product, thread start-up costs more than it saves
_PARALLEL_MIN_WORK = 1 << 20


@numba.njit(cache=True)
def _csr_transpose_to_dense(indptr, indices, data, out):  # pragma: no cover - compiled
    """``out[N, b] = (CSR [b, N]).T`` densely (``out`` zero on entry)."""
    for i in range(len(indptr) - 1):
        for p in range(indptr[i], indptr[i + 1]):
            out[indices[p], i] = data[p]


def _densify(yt: sp.csr_matrix) -> np.ndarray:
    """``Y [N, b]`` row-major from the sparse-stage ``Y^T`` (CSR ``[b, N]``)."""
    out = np.zeros((yt.shape[1], yt.shape[0]), dtype=yt.dtype)
    _csr_transpose_to_dense(yt.indptr, yt.indices, yt.data, out)
    return out


class _DenseOp:
    """The CSR operator for the dense stage: ``step(y) -> (Op y, <y, Op y>, ||Op y||^2)`` per column."""

    def __init__(self, op: sp.csr_matrix):
        self.op = op
        self.parts = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
        self.bounds = nnz_balanced_bounds(op.indptr, self.parts)
        self.serial_bounds = np.array([0, op.shape[0]], dtype=np.int64)

    def step(self, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        z = np.empty_like(y)
        if self.parts > 1 and self.op.nnz * y.shape[1] >= _PARALLEL_MIN_WORK:
            kernel, bounds = _spmm_dots_parallel, self.bounds
        else:
            kernel, bounds = _spmm_dots_serial, self.serial_bounds
        acc = np.zeros((len(bounds) - 1, 2, y.shape[1]), dtype=np.float64)
        kernel(self.op.indptr, self.op.indices, self.op.data, y, z, bounds, acc)
        acc = acc.sum(axis=0)
        return z, acc[0], acc[1]


def _sparse_dot(a: sp.csr_matrix, c: sp.csr_matrix) -> np.ndarray:
    """Row-wise ``<a[i], c[i]>`` of two CSR matrices, ``[rows]`` float64."""
    return np.asarray(a.multiply(c).sum(axis=1), dtype=np.float64).ravel()


def _block_symmetric(s: sp.csr_matrix, dense_op: _DenseOp, cols: np.ndarray, steps: int,
                     sparse_density: float, out: np.ndarray) -> None:
    """Columns ``1..steps-1`` of ``out[cols]`` for symmetric ``S``: ``<Y_m, Y_m>`` and ``<Y_m, Y_{m+1}>``."""
    n = s.shape[0]
    yt = s[cols]  # Y_1^T = S[B, :] (a CSR row slice, no product); sparse stage keeps Y^T [b, N]
    y = None      # dense stage: Y [N, b] row-major
    m = 1
    while True:
        if y is None and yt.nnz > sparse_density * yt.shape[0] * n:
            y = _densify(yt)
            yy = np.einsum("ij,ij->j", y, y, dtype=np.float64)
        if y is None:
            if 2 * m <= steps:
                out[cols, 2 * m - 1] = _sparse_dot(yt, yt)
            if 2 * m + 1 > steps:
                return
            yt_next = yt @ s  # Y_{m+1}^T = Y_m^T S
            out[cols, 2 * m] = _sparse_dot(yt, yt_next)
            yt = yt_next
        else:
            if 2 * m <= steps:
                out[cols, 2 * m - 1] = yy
            if 2 * m + 1 > steps:
                return
            y, yz, yy = dense_op.step(y)
            out[cols, 2 * m] = yz
        m += 1


def _block_directed(pt: sp.csr_matrix, dense_op: _DenseOp, cols: np.ndarray, steps: int,
                    sparse_density: float, out: np.ndarray) -> None:
    """Columns ``1..steps-1`` of ``out[cols]`` for a directed graph: ``Y_t = P Y_{t-1}``, ``Y_t[B_i, i]``."""
    n = pt.shape[0]
    local = np.arange(len(cols))
    yt = pt[cols]  # Y_1^T = P^T[B, :]
    y = None
    for t in range(2, steps + 1):
        if y is None and yt.nnz > sparse_density * yt.shape[0] * n:
            y = _densify(yt)
        if y is None:
            yt = yt @ pt  # Y_t^T = Y_{t-1}^T P^T
            out[cols, t - 1] = np.asarray(yt[local, cols], dtype=np.float64).ravel()
        else:
            y, _, _ = dense_op.step(y)
            out[cols, t - 1] = y[cols, local]


def return_probabilities(edge_index: Tensor, num_nodes: int, steps: int, block_size: int = 64,
                         dtype: torch.dtype = torch.float32, sparse_density: float = 0.02,
                         symmetric: bool | None = None) -> Tuple[Tensor, bool]:
    """``[N, steps]`` float64 tensor of ``(P^t)_{ii}``, ``t = 1..steps``, and whether ``A`` was symmetric.

    ``symmetric=None`` detects it (``A == A^T``); ``True``/``False`` force the method (``True`` on a
    non-symmetric ``A`` is wrong; it is for callers that know).
    """
    n = int(num_nodes)
    if n == 0 or steps == 0:
        return torch.zeros((n, steps), dtype=torch.float64), True
    return _return_probabilities_adj(adjacency_matrix(edge_index, n, dtype=np.float64), steps, block_size,
                                     dtype, sparse_density, symmetric)


def _return_probabilities_adj(adj: sp.csr_matrix, steps: int, block_size: int, dtype: torch.dtype,
                              sparse_density: float, symmetric: bool | None) -> Tuple[Tensor, bool]:
    """:func:`return_probabilities` from the adjacency matrix (CSR, duplicates summed, indices sorted)."""
    n = adj.shape[0]
    out = np.zeros((n, steps), dtype=np.float64)
    if n == 0 or steps == 0:
        return torch.from_numpy(out), True
    if symmetric is None:
        symmetric = _is_symmetric(adj)
    op = _transition_operators(adj, symmetric, np.float64)
    out[:, 0] = op.diagonal()  # t = 1: S_ii = P_ii = A_ii / d_i
    op = op.astype(_DTYPES[dtype])
    # dense stage multiplies by Op itself: S (symmetric) or P = (P^T)^T
    dense_op = _DenseOp(op if symmetric else op.T.tocsr())
    block = _block_symmetric if symmetric else _block_directed
    for start in range(0, n, block_size):
        block(op, dense_op, np.arange(start, min(start + block_size, n)), steps, sparse_density, out)
    return torch.from_numpy(out), symmetric


class RandomWalkSE(PositionalEncoding):
    """Random-walk structural encoding ``data.rwse[i, t-1] = (P^t)_{ii}`` (see the module docstring).

    Args:
        steps: number of walk lengths ``T`` (columns), ``t = 1..T``.
        block_size: nodes per block of unit vectors; memory ~ ``3 * N * block_size * itemsize``
            bytes. Does not change the result (beyond float rounding).
        dtype: precision of the products (``torch.float32`` is twice as fast as ``float64`` and
            accurate to ~1e-7 here); the stored tensor is always float32.
        sparse_density: a block's iterate stays sparse while its density is at most this.

    Shapes:
        - ``compute(edge_index: [2, E], N) -> {"rwse": FloatTensor[N, steps]}``
    """

    keys = ("rwse",)

    def __init__(self, steps: int = 16, block_size: int = 64, dtype: torch.dtype = torch.float32,
                 sparse_density: float = 0.02):
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int (walk lengths 1..steps), got {steps!r}")
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive int (nodes per block; memory ~ "
                             f"3*N*block_size*itemsize bytes), got {block_size!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        if not 0.0 <= float(sparse_density) <= 1.0:
            raise ValueError(f"sparse_density must lie in [0, 1], got {sparse_density!r}")
        self.steps = steps
        self.block_size = block_size
        self.dtype = dtype
        self.sparse_density = float(sparse_density)

    @property
    def in_dim(self) -> int:
        return self.steps

    def compute(self, edge_index: Tensor, num_nodes: int) -> Dict[str, Tensor]:
        probs, _ = return_probabilities(edge_index, num_nodes, self.steps, self.block_size,
                                        self.dtype, self.sparse_density)
        return {"rwse": probs.clamp_(0.0, 1.0).float()}

    def compute_csr(self, indptr, indices, num_nodes: int) -> Dict[str, Tensor]:
        """The encoding from CSR arrays (row ``i`` = out-neighbours of ``i``, duplicates counted, e.g. a
        graph store's) without building an ``edge_index``; same values as :meth:`compute`."""
        from graphgt.pe.csr import as_csr_arrays

        n = int(num_nodes)
        indptr, indices = as_csr_arrays(indptr, indices, n)
        if n == 0:
            return {"rwse": torch.zeros((0, self.steps))}
        adj = sp.csr_matrix((np.ones(len(indices)), np.asarray(indices), np.asarray(indptr)), shape=(n, n))
        adj.sum_duplicates()
        adj.sort_indices()
        probs, _ = _return_probabilities_adj(adj, self.steps, self.block_size, self.dtype, self.sparse_density, None)
        return {"rwse": probs.clamp_(0.0, 1.0).float()}

    def cache_key(self) -> str:
        # block_size and sparse_density change only the schedule, not the values
        return f"{type(self).__name__}(steps={self.steps}, dtype={self.dtype})"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(steps={self.steps}, block_size={self.block_size}, "
                f"dtype={self.dtype}, sparse_density={self.sparse_density})")
