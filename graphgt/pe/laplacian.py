"""Laplacian eigenvector positional encoding (LapPE).

Papers: Dwivedi et al., "Benchmarking Graph Neural Networks" (JMLR 2023,
https://arxiv.org/abs/2003.00982); Kreuzer et al., "Rethinking Graph Transformers with Spectral
Attention" (SAN, NeurIPS 2021); used as LapPE by GraphGPS (Rampášek et al., NeurIPS 2022).

Math. The graph is made undirected (``A = sign(A_0 + A_0^T)``, self loops dropped, multi-edges
merged), ``D = diag(A 1)`` and, with ``D^{-1/2}`` set to 0 on isolated nodes,

.. math::
    L_{\\mathrm{sym}} = I - D^{-1/2} A D^{-1/2}, \\qquad L_{\\mathrm{sym}} u_j = \\lambda_j u_j,
    \\qquad 0 = \\lambda_1 \\le \\lambda_2 \\le \\dots \\le 2 .

The encoding keeps the ``k`` smallest eigenpairs, the trivial one included (as GraphGPS does):
``lap_vec[i, j] = u_j(i)`` (unit L2 norm) and ``lap_val[i, j] = λ_j`` (repeated on every node
row so that PyG batching concatenates it like any node attribute).  With
``normalization="rw"`` the vectors are those of ``L_rw = I - D^{-1} A`` (same eigenvalues,
``v_j = D^{-1/2} u_j``, renormalised to unit norm).  An isolated node ``i`` has ``L_ii = 1``: it
is an eigenvector ``e_i`` of eigenvalue 1.

Solver.  The spectrum of a disconnected graph is the union of the spectra of its connected
components, so each component is solved on its own (which also makes the multiplicity of the
eigenvalue 0, one per component, harmless): components with at most ``eigsh_threshold`` nodes by
a dense LAPACK ``eigh`` restricted to the ``k`` smallest eigenpairs, larger ones by ARPACK
(``scipy.sparse.linalg.eigsh``) on the shifted operator ``2 I - L = I + D^{-1/2} A D^{-1/2}``,
whose largest eigenvalues are the smallest of ``L`` (Lanczos converges to extreme eigenvalues),
started from a fixed vector so that the result is deterministic; components of more than
``chebyshev_threshold`` nodes (graphs of millions of nodes, e.g. from a graph store through
:meth:`LaplacianPE.compute_csr`) by Chebyshev-filtered subspace iteration on a block of vectors
(``pe/chebyshev.py``) to a residual ``||L u - λ u|| <= residual_tol``.  When at least ``k``
components have edges, the answer needs no solver: the ``k`` smallest eigenvalues are all 0,
with the vectors ``D^{1/2} 1_c / ||D^{1/2} 1_c||`` of the ``k`` largest components.  The pairs of
all components are merged by eigenvalue (ties: larger component first).

Eigenvectors are defined up to sign (and, for repeated eigenvalues, up to a rotation); the sign
is fixed so that the entry of largest magnitude is positive (first such entry on ties, up to a
relative 1e-6), which makes the encoding deterministic; encoders flip signs at random during training.

Padding: a graph with ``N < k`` nodes gets NaN in columns ``N..k-1`` of both tensors (encoders
mask NaN).

Shapes:
    - input: ``edge_index: LongTensor[2, E]``, ``num_nodes = N`` (or CSR arrays ``indptr [N + 1]``,
      ``indices [nnz]`` with :meth:`LaplacianPE.compute_csr`)
    - output: ``{"lap_vec": FloatTensor[N, k], "lap_val": FloatTensor[N, k]}``
"""
from __future__ import annotations

import contextlib
from typing import Dict, List, Tuple

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch import Tensor

from graphgt.pe.base import PositionalEncoding, edge_index_numpy
from graphgt.pe.csr import (as_csr_arrays, check_device, csr_components, kernel_device, kernel_threads,
                            simple_undirected, single_threaded_blas, subgraph_csr)

_NORMALIZATIONS = ("sym", "rw")
_SOLVERS = ("auto", "arpack", "chebyshev")


def undirected_adjacency(edge_index: Tensor, num_nodes: int) -> sp.csr_matrix:
    """Binary symmetric adjacency without self loops, CSR float64 ``[N, N]``."""
    ei = edge_index_numpy(edge_index, num_nodes)
    keep = ei[0] != ei[1]
    row = np.concatenate([ei[0, keep], ei[1, keep]])
    col = np.concatenate([ei[1, keep], ei[0, keep]])
    adj = sp.csr_matrix((np.ones(len(row)), (row, col)), shape=(num_nodes, num_nodes))
    adj.sum_duplicates()
    adj.data[:] = 1.0
    return adj


def _canonical_signs(vecs: np.ndarray) -> np.ndarray:
    """Flip each column so that its entry of largest magnitude is positive.

    Entries within a relative ``1e-6`` of the largest count as tied (graph symmetries make exact
    ties common) and the first of them in node order decides, so that round-off does not.
    """
    if vecs.size == 0:
        return vecs
    mag = np.abs(vecs)
    idx = (mag >= mag.max(axis=0, keepdims=True) * (1 - 1e-6)).argmax(axis=0)
    signs = np.sign(vecs[idx, np.arange(vecs.shape[1])])
    signs[signs == 0] = 1.0
    return vecs * signs


class LaplacianPE(PositionalEncoding):
    """The ``k`` smallest eigenpairs of the normalised Laplacian (see the module docstring).

    Args:
        k: number of eigenpairs (the trivial one included); also the encoder's ``in_dim``.
        normalization: ``"sym"`` (``I - D^{-1/2} A D^{-1/2}``) or ``"rw"`` (``I - D^{-1} A``).
        eigsh_threshold: components with at most this many nodes use the dense solver, larger ones
            ARPACK ``eigsh``.
        tol: ARPACK's relative residual tolerance (``0`` = machine precision, much slower).
        ncv: ARPACK's number of Lanczos vectors (``None``: ``max(2k + 1, 40)``).
        max_iter: ARPACK's restart limit (``None``: scipy's default ``10 N``).
        solver: ``"auto"`` (ARPACK up to ``chebyshev_threshold`` nodes per component, Chebyshev
            subspace iteration above), ``"arpack"`` or ``"chebyshev"`` (every component above
            ``eigsh_threshold``).
        chebyshev_threshold: components with more nodes use the Chebyshev solver under ``"auto"``.
        residual_tol: the Chebyshev solver's target residual ``||L u - λ u||_2`` per unit vector (the
            eigenvalues are then accurate to about ``residual_tol^2 / gap``; measured on a products-shaped
            graph: ``1e-4`` takes ~15% fewer products than ``1e-5``).
        block_size: the Chebyshev solver's block of vectors (``None``: ``max(64, k + 16)``); should
            exceed ``k`` plus the size of a cluster of nearly equal eigenvalues around the ``k``-th
            (graphs with ``C`` communities have ``C - 1`` small eigenvalues close together).
        device: where the Chebyshev solver runs (the other solvers always run on the CPU):
            ``"auto"`` (default: CUDA when ``torch.cuda.is_available()``, else the CPU; ``pe/`` does
            not know the trainer's device, so pass it explicitly to pin one), ``"cpu"`` (compiled
            numba kernels), ``"cuda"`` / ``"cuda:<i>"`` (``torch.sparse_csr_tensor`` products on the
            GPU).  Devices agree to the solver's tolerance, not bit for bit; not part of :meth:`cache_key`.
        threads: CPU threads of the Chebyshev solver (numba kernels and torch's dense passes); ``None``
            (default): ``torch.get_num_threads()``.  Thread counts restored afterwards; the numba
            products are bit-identical for any count.  Not part of :meth:`cache_key`.

    Shapes:
        - ``compute(edge_index: [2, E], N) -> {"lap_vec": FloatTensor[N, k], "lap_val": FloatTensor[N, k]}``
        - ``compute_csr(indptr: [N + 1], indices: [nnz], N)`` -> the same
    """

    keys = ("lap_vec", "lap_val")

    def __init__(self, k: int = 8, normalization: str = "sym", eigsh_threshold: int = 2000,
                 tol: float = 1e-8, ncv: int | None = None, max_iter: int | None = None,
                 solver: str = "auto", chebyshev_threshold: int = 100_000, residual_tol: float = 1e-4,
                 block_size: int | None = None, device: str = "auto", threads: int | None = None):
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int (number of eigenpairs), got {k!r}")
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
        if not isinstance(eigsh_threshold, int) or eigsh_threshold < 0:
            raise ValueError(f"eigsh_threshold must be an int >= 0 (largest component solved densely), "
                             f"got {eigsh_threshold!r}")
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0 (ARPACK relative tolerance; 0 = machine precision), got {tol!r}")
        if ncv is not None and (not isinstance(ncv, int) or ncv <= k):
            raise ValueError(f"ncv must be None or an int > k={k}, got {ncv!r}")
        if max_iter is not None and (not isinstance(max_iter, int) or max_iter < 1):
            raise ValueError(f"max_iter must be None or a positive int, got {max_iter!r}")
        if solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")
        if not isinstance(chebyshev_threshold, int) or chebyshev_threshold < 0:
            raise ValueError(f"chebyshev_threshold must be an int >= 0, got {chebyshev_threshold!r}")
        if not residual_tol > 0:
            raise ValueError(f"residual_tol must be > 0 (target ||L u - λ u||), got {residual_tol!r}")
        if block_size is not None and (not isinstance(block_size, int) or block_size <= k):
            raise ValueError(f"block_size must be None or an int > k={k} (Chebyshev solver block), got {block_size!r}")
        self.k = k
        self.normalization = normalization
        self.eigsh_threshold = eigsh_threshold
        self.tol = float(tol)
        self.ncv = ncv
        self.max_iter = max_iter
        self.solver = solver
        self.chebyshev_threshold = chebyshev_threshold
        self.residual_tol = float(residual_tol)
        self.block_size = block_size
        self.device = check_device(device)
        kernel_threads(threads)  # validates
        self.threads = threads

    def cache_key(self) -> str:
        # device and threads change the values by float rounding only (within residual_tol)
        params = ",".join(f"{k}={v!r}" for k, v in sorted(vars(self).items())
                          if not k.startswith("_") and k not in ("device", "threads"))
        return f"{type(self).__name__}({params})"

    def __repr__(self) -> str:
        return f"{self.cache_key()[:-1]},device={self.device!r},threads={self.threads!r})"

    @property
    def in_dim(self) -> int:
        return self.k

    # ------------------------------------------------------------------ solvers
    def _solve_dense(self, s: sp.csr_matrix, kc: int) -> Tuple[np.ndarray, np.ndarray]:
        """``kc`` smallest eigenpairs of ``I - S`` by LAPACK (``S`` = normalised adjacency)."""
        n = s.shape[0]
        lap = np.eye(n) - s.toarray()
        with single_threaded_blas() if n >= 256 else contextlib.nullcontext():
            vals, vecs = scipy.linalg.eigh(lap, subset_by_index=[0, kc - 1], overwrite_a=True)
        return vals, vecs

    def _eigsh_largest(self, op, n: int, kc: int, v0: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        ncv = min(n, self.ncv or max(2 * kc + 1, 40))
        for attempt in range(3):
            try:
                with single_threaded_blas():
                    return spla.eigsh(op, k=kc, which="LA", v0=v0, tol=self.tol, ncv=ncv,
                                      maxiter=None if self.max_iter is None else self.max_iter * (attempt + 1))
            except spla.ArpackNoConvergence as err:
                if attempt == 2:
                    raise RuntimeError(
                        f"LaplacianPE: ARPACK did not converge for a component of {n} nodes (k={kc}, "
                        f"ncv={ncv}, tol={self.tol}); raise tol, ncv or max_iter") from err
                ncv = min(n, 2 * ncv)
        raise AssertionError("unreachable")

    def _solve_sparse(self, s: sp.csr_matrix, kc: int) -> Tuple[np.ndarray, np.ndarray]:
        """``kc`` smallest eigenpairs of ``I - S`` as the largest of ``M = I + S`` by ARPACK (Lanczos).

        Lanczos from one start vector can miss a copy of a repeated eigenvalue (rings, grids), so
        the result is verified: ARPACK runs again on ``M`` deflated by the pairs found so far
        (``M - V diag(mu) V^T``, whose top eigenvalue is the best pair not yet found); a pair
        above the ``kc``-th found joins the set, until none does.
        """
        n = s.shape[0]
        shifted = (s + sp.identity(n, format="csr")).tocsr()
        rng = np.random.default_rng(0)
        mu, vecs = self._eigsh_largest(shifted, n, kc, rng.standard_normal(n))
        slack = 10 * max(self.tol, 1e-12)
        for _ in range(kc):
            if len(mu) >= n - 1:
                break
            V, w = vecs, mu

            def matvec(x, V=V, w=w):
                x = np.asarray(x).reshape(-1)
                return shifted @ x - V @ (w * (V.T @ x))

            deflated = spla.LinearOperator((n, n), matvec=matvec, rmatvec=matvec, dtype=np.float64)
            v0 = rng.standard_normal(n)
            extra_mu, extra_vecs = self._eigsh_largest(deflated, n, 1, v0 - V @ (V.T @ v0))
            kth = np.sort(mu)[-kc]
            if extra_mu[0] <= kth + slack:
                break
            mu = np.concatenate([mu, extra_mu])
            vecs = np.concatenate([vecs, extra_vecs], axis=1)
        top = np.argsort(-mu, kind="stable")[:kc]
        mu, vecs = mu[top], vecs[:, top]
        vals = 2.0 - mu
        order = np.argsort(vals, kind="stable")
        return vals[order], vecs[:, order]

    def _uses_chebyshev(self, n_c: int, kc: int) -> bool:
        if self.solver == "arpack" or n_c <= self.eigsh_threshold or n_c <= kc + 9:
            return False
        return self.solver == "chebyshev" or n_c > self.chebyshev_threshold

    def _component_pairs(self, indptr: np.ndarray, indices: np.ndarray, nodes: np.ndarray, deg: np.ndarray
                         ) -> Tuple[np.ndarray, np.ndarray]:
        """The ``min(k, n_c)`` smallest eigenpairs of the component ``nodes`` (vectors ``[n_c, kc]``)."""
        n_c = len(nodes)
        kc = min(self.k, n_c)
        if n_c == len(deg):  # the whole graph: no copy
            sub_indptr, sub_indices = indptr, indices
        else:
            sub_indptr, sub_indices = subgraph_csr(indptr, indices, nodes)
        if self._uses_chebyshev(n_c, kc):
            from graphgt.pe.chebyshev import top_eigenpairs

            block = self.block_size if self.block_size is not None else max(64, self.k + 16)
            theta, vecs, _, _ = top_eigenpairs(sub_indptr, sub_indices, kc - 1, block=block, tol=self.residual_tol,
                                               device=kernel_device(self.device), threads=self.threads)
            vals = np.concatenate([[0.0], 1.0 - theta])
            vecs = np.concatenate([np.zeros((n_c, 1)), vecs], axis=1)
        else:
            sub = sp.csr_matrix((np.ones(len(sub_indices)), sub_indices, sub_indptr), shape=(n_c, n_c))
            dis = 1.0 / np.sqrt(deg[nodes])
            s = (sp.diags(dis) @ sub @ sp.diags(dis)).tocsr()
            # ARPACK needs kc < ncv <= n_c; tiny components go to LAPACK whatever the threshold
            if n_c > self.eigsh_threshold and n_c > 2 * kc + 1:
                vals, vecs = self._solve_sparse(s, kc)
            else:
                vals, vecs = self._solve_dense(s, kc)
        # the trivial pair of a connected component is known exactly: 0 and D^{1/2} 1 / norm
        trivial = np.sqrt(deg[nodes])
        vals[0], vecs[:, 0] = 0.0, trivial / np.linalg.norm(trivial)
        return vals, vecs

    # ------------------------------------------------------------------ protocol
    def compute(self, edge_index: Tensor, num_nodes: int) -> Dict[str, Tensor]:
        n = int(num_nodes)
        adj = undirected_adjacency(edge_index, n)
        return self._compute_simple(adj.indptr.astype(np.int64), adj.indices, n)

    def compute_csr(self, indptr, indices, num_nodes: int) -> Dict[str, Tensor]:
        """The encoding from CSR arrays (e.g. a graph store's, memory-mapped): symmetrised, self loops
        dropped and multi-edges merged as in :meth:`compute`; arrays that already are a simple
        undirected graph (rows sorted) are used in place, without a copy."""
        n = int(num_nodes)
        indptr, indices = as_csr_arrays(indptr, indices, n)
        indptr, indices = simple_undirected(indptr, indices, n)
        return self._compute_simple(indptr, indices, n)

    def _compute_simple(self, indptr: np.ndarray, indices: np.ndarray, n: int) -> Dict[str, Tensor]:
        """:meth:`compute` on the CSR arrays of a simple undirected graph."""
        k = self.k
        vec_out = np.full((n, k), np.nan)
        val_out = np.full((n, k), np.nan)
        if n == 0:
            return {"lap_vec": torch.from_numpy(vec_out).float(), "lap_val": torch.from_numpy(val_out).float()}
        deg = np.diff(indptr).astype(np.float64)
        n_comp, labels = csr_components(indptr, indices)
        sizes = np.bincount(labels, minlength=n_comp)
        comp_nodes = np.split(np.argsort(labels, kind="stable"), np.cumsum(sizes)[:-1])
        # components with edges, largest first (ties: the component of the smaller node id)
        nontrivial = [c for c in np.argsort(-sizes, kind="stable") if sizes[c] > 1]
        isolated = np.flatnonzero(deg == 0)

        # candidates (eigenvalue, tie-break rank, node ids, vector entries)
        cands: List[Tuple[float, int, np.ndarray, np.ndarray]] = []
        if len(nontrivial) >= k:
            for rank, c in enumerate(nontrivial[:k]):
                nodes = comp_nodes[c]
                v = np.sqrt(deg[nodes])
                cands.append((0.0, rank, nodes, v / np.linalg.norm(v)))
        else:
            for rank, c in enumerate(nontrivial):
                nodes = comp_nodes[c]
                vals, vecs = self._component_pairs(indptr, indices, nodes, deg)
                for j in range(len(vals)):
                    cands.append((float(vals[j]), rank, nodes, vecs[:, j]))
            for rank, i in enumerate(isolated[:k], start=len(nontrivial)):
                cands.append((1.0, rank, np.array([i]), np.ones(1)))
        cands.sort(key=lambda c: (c[0], c[1]))
        cands = cands[:k]

        for j, (val, _, nodes, v) in enumerate(cands):
            if self.normalization == "rw":
                d = deg[nodes]
                v = np.where(d > 0, v / np.sqrt(np.where(d > 0, d, 1.0)), v)
                v = v / np.linalg.norm(v)
            vec_out[:, j] = 0.0
            vec_out[nodes, j] = v
            val_out[:, j] = min(max(val, 0.0), 2.0)
        m = len(cands)
        vec_out[:, :m] = _canonical_signs(vec_out[:, :m])
        return {"lap_vec": torch.from_numpy(vec_out).float(), "lap_val": torch.from_numpy(val_out).float()}
