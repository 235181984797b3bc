"""Top eigenpairs of the normalised adjacency of a large connected graph by Chebyshev-filtered
subspace iteration (for :class:`~graphgt.pe.laplacian.LaplacianPE` on millions of nodes).

Problem.  ``S = D^{-1/2} A D^{-1/2}`` of a connected simple graph (``A`` symmetric binary, every
degree > 0); its top eigenvector is ``u_0 = D^{1/2} 1 / ||D^{1/2} 1||`` (eigenvalue 1, known).
Wanted: the next ``m`` largest eigenpairs ``S u_j = θ_j u_j`` (the Laplacian's ``λ_j = 1 - θ_j``),
to a residual ``||S u - θ u|| <= tol``.

Why not ARPACK.  Measured on 2 cores, power-law graphs of ~3e5 nodes / 1.5e7 CSR entries needed
400-1000 Lanczos matrix-vector products and 50-110 s, most of it ARPACK's re-orthogonalisation;
a products-shaped graph (2.45e6 nodes, 1.24e8 entries, a degree-corrected block model of 47
classes) has a cluster of ~46 nearly equal small Laplacian eigenvalues, which a single-vector
Krylov method must resolve one by one.

Method (Zhou & Saad, "A Chebyshev–Davidson algorithm for large symmetric eigenproblems", SIMAX
2007; Zhou et al., J. Comput. Phys. 2006, the "ChFSI" filter).  A block ``X`` of ``b > m`` vectors
(``b`` larger than the eigenvalue cluster, so that the cluster is captured whole and resolved by
Rayleigh-Ritz, not by the iteration) is repeatedly

1. filtered: ``X <- T_p(ℓ(S)) X / T_p(ℓ(1))`` with ``T_p`` the Chebyshev polynomial of degree
   ``p`` and ``ℓ`` the affine map of the damped interval ``[a, c]`` onto ``[-1, 1]``: eigen-
   components above ``c`` grow like ``cosh(p · acosh(ℓ(θ)))``, those in ``[a, c]`` stay below 1
   (the scaled three-term recurrence: nothing overflows).  ``a``: below the smallest eigenvalue
   (a 10-step Lanczos estimate minus a margin).  ``c``: the bottom Ritz value of the block, raised
   by up to its residual (an eigenvalue lies that close) but kept below the ``m``-th Ritz value,
   which bounds the ``m``-th eigenvalue from below, so every wanted eigenvalue stays amplified.
   The first filter (degree 32, ``c = 0``) runs on the random start block before any Ritz value
   exists; ``u_0`` is projected out every 6 steps (rounding brings it back and it grows most);
2. made orthonormal (eigen-decomposition of the float64 Gram matrix; directions lost to float32
   rounding, if any, are replaced by random ones);
3. Rayleigh-Ritz: ``H = X^T S X``, ``M = X^T X``, ``H v = θ M v``; ``X <- X V`` (Ritz vectors, by
   decreasing ``θ``); residual norms from ``G = (S X)^T (S X)``:
   ``||S x - θ x||^2 = v^T G v - θ^2`` (``S X`` in float64, never stored whole);

until the ``m`` wanted residuals are below ``tol``.  The degree ``p`` (at most ``degree``) is what
the current rate needs to reach ``tol``, and small enough that the filter amplifies the block's top
Ritz value at most ``1e5`` times more than its bottom one (the block is float32: a larger spread
would turn the lower columns into rounding noise).

Cost and memory.  Every filter step is one pass over the CSR arrays with ``b`` columns, in a
compiled (numba) kernel fused with the recurrence, with no edge weights: in ``X~ = D^{-1/2} X``
coordinates ``S`` acts as ``P = D^{-1} A`` (a sum of neighbour rows times ``1/d``; float32 runs of
32 rows added in float64).  Graphs of at least ``csr.REORDER_MIN_NNZ`` entries are first relabelled
by degree (``csr.degree_ordered``, 15-25% faster gathers).  Memory: two float32 ``[N, b]`` blocks
(``b = 64``, ``N = 2.45e6``: 1.25 GB), the CSR arrays (a relabelled copy of ``indices``) and float64
row chunks for Rayleigh-Ritz.

Threads and devices.  The numba kernels split rows into ``threads`` ranges (``csr.pe_threads``: numba's and
torch's thread counts set for the call and restored); every output row depends on its own inputs only,
so the products are bit-identical for any thread count.  The ``[N, b]`` dense passes (deflation, Gram
matrix, Rayleigh-Ritz, rotations) are float64 torch matmuls over row chunks, on torch's threads.  With
``device`` a torch device the same iteration runs with ``torch.sparse_csr_tensor`` products on it
(cuSPARSE on CUDA; no degree relabelling).  Until this change the serial and parallel numba kernels
shared one on-disk cache entry (numba's cache ignores ``parallel``), so after a first serial compile
(e.g. by a test) the "parallel" kernel ran on one thread: that was the one-core 813 s of the issue.
Figures: ``docs/benchmarks_large.md`` (positional encodings section).
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Optional, Tuple, Union

import numba
import numpy as np
import torch
from torch import Tensor

from graphgt.pe.csr import (REORDER_MIN_NNZ, compiled_variants, degree_ordered, nnz_balanced_bounds, pe_threads,
                            single_threaded_blas, torch_csr_adjacency, torch_csr_rows)

logger = logging.getLogger(__name__)


def _cheb_step_py(indptr, indices, inv_deg, y, yold, out, alpha, beta, gamma, row0, bounds):  # pragma: no cover
    """``out[r - row0] = alpha * inv_deg[r] * sum_{p in row r} y[indices[p]] + beta * y[r] + gamma * yold[r]``
    for ``r`` in the ranges ``bounds``; ``out`` may be ``yold`` itself (row ``r`` is read before it
    is written).  Neighbour rows are summed in float32 in runs of at most 32, the runs in float64
    (float64 throughout is ~30% slower; float32 throughout loses ~1e-5 relative on hub rows).
    Every output row depends on its own inputs only: the result does not depend on ``bounds``."""
    b = y.shape[1]
    for part in numba.prange(bounds.shape[0] - 1):
        acc = np.empty(b, dtype=np.float64)
        run = np.empty(b, dtype=np.float32)
        for r in range(bounds[part], bounds[part + 1]):
            for j in range(b):
                acc[j] = 0.0
                run[j] = 0.0
            end = indptr[r + 1]
            for start in range(indptr[r], end, 32):
                for p in range(start, min(start + 32, end)):
                    yc = y[indices[p]]
                    for j in range(b):
                        run[j] += yc[j]
                for j in range(b):
                    acc[j] += run[j]
                    run[j] = 0.0
            s = alpha * inv_deg[r]
            yr = y[r]
            ro = out[r - row0]
            if gamma != 0.0:
                yo = yold[r]
                for j in range(b):
                    ro[j] = s * acc[j] + beta * yr[j] + gamma * yo[j]
            elif beta != 0.0:
                for j in range(b):
                    ro[j] = s * acc[j] + beta * yr[j]
            else:
                for j in range(b):
                    ro[j] = s * acc[j]


_cheb_parallel, _cheb_serial = compiled_variants(_cheb_step_py, fastmath={"contract", "reassoc"})


def _spmv_py(indptr, indices, inv_deg, x, out, bounds):  # pragma: no cover - compiled
    """``out = D^{-1} A x`` for one float64 vector."""
    for part in numba.prange(bounds.shape[0] - 1):
        for r in range(bounds[part], bounds[part + 1]):
            acc = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                acc += x[indices[p]]
            out[r] = acc * inv_deg[r]


_spmv_parallel, _spmv_serial = compiled_variants(_spmv_py, fastmath={"contract", "reassoc"})

_CHUNK = 1 << 16


class _Operator:
    """``P = D^{-1} A`` on row blocks (``S`` in ``X~ = D^{-1/2} X`` coordinates) and the solver's dense
    passes, on torch tensors of ``device``.  This base class runs the products with the compiled
    numba kernels (CPU tensors, through their numpy views; rows split by work in ``threads`` ranges);
    :class:`_TorchOperator` with ``torch.sparse_csr_tensor`` products (any device)."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, threads: int = 1,
                 device: Union[str, torch.device] = "cpu"):
        self.indptr, self.indices = indptr, indices
        self.n = indptr.shape[0] - 1
        self.device = torch.device(device)
        deg = np.diff(indptr).astype(np.float64)
        self.deg_np = deg
        self.deg = torch.from_numpy(deg).to(self.device)
        self.sqrt_deg = self.deg.sqrt()
        with np.errstate(divide="ignore"):
            self.inv_deg_np = 1.0 / deg
        self.vol = float(deg.sum())
        self.parts = max(1, int(threads))
        self.bounds = nnz_balanced_bounds(indptr, self.parts)
        self.products = 0  # block-column products done (for reports)

    def _bounds(self, lo: int, hi: int) -> np.ndarray:
        if self.parts == 1:
            return np.array([lo, hi], dtype=np.int64)
        if lo == 0 and hi == self.n:
            return self.bounds
        sub = self.indptr[lo:hi + 1]
        b = np.searchsorted(sub, np.linspace(sub[0], sub[-1], self.parts + 1)).astype(np.int64) + lo
        b[0], b[-1] = lo, hi
        return np.maximum.accumulate(b)

    def apply(self, y: Tensor, yold: Tensor, out: Tensor, alpha, beta, gamma, lo: int = 0,
              hi: Optional[int] = None) -> None:
        """``out = alpha (P y)[lo:hi] + beta y[lo:hi] + gamma yold[lo:hi]`` (``y``, ``yold`` float32
        ``[N, b]``; ``out`` ``[hi - lo, b]`` float32 or float64, may be ``yold`` when the range is all rows)."""
        hi = self.n if hi is None else hi
        kernel = _cheb_parallel if self.parts > 1 else _cheb_serial
        kernel(self.indptr, self.indices, self.inv_deg_np, y.numpy(), yold.numpy(), out.numpy(), float(alpha),
               float(beta), float(gamma), lo, self._bounds(lo, hi))
        self.products += y.shape[1] * (hi - lo) / max(self.n, 1)

    def spmv(self, x: Tensor) -> Tensor:
        """``P x`` for one float64 vector."""
        out = np.empty(self.n)
        kernel = _spmv_parallel if self.parts > 1 else _spmv_serial
        kernel(self.indptr, self.indices, self.inv_deg_np, x.numpy(), out, self.bounds)
        return torch.from_numpy(out)

    def deflate(self, xt: Tensor) -> None:
        """Remove the ``u_0`` component (in ``X~`` coordinates: the ``D``-weighted mean) in place."""
        total = torch.zeros(xt.shape[1], dtype=torch.float64, device=self.device)
        for lo in range(0, self.n, _CHUNK):
            total += self.deg[lo:lo + _CHUNK] @ xt[lo:lo + _CHUNK].double()
        xt -= (total / self.vol).to(xt.dtype)[None, :]


class _TorchOperator(_Operator):
    """:class:`_Operator` whose products are ``torch.sparse_csr_tensor @ dense`` on ``device`` (CUDA:
    cuSPARSE SpMM; also runs on the CPU, ~2x slower there than the numba kernel).  The adjacency is
    kept with entries 1 (float32) and the ``1/d`` row scale applied after the product, so the float32
    neighbour sums are torch's (no float64 runs as in the numba kernel)."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, device: Union[str, torch.device]):
        super().__init__(indptr, indices, threads=1, device=device)
        self.adj = torch_csr_adjacency(indptr, indices, self.device)
        self.inv_deg32 = (1.0 / self.deg).float()

    def apply(self, y, yold, out, alpha, beta, gamma, lo=0, hi=None):
        hi = self.n if hi is None else hi
        res = torch_csr_rows(self.adj, lo, hi) @ y
        res *= (float(alpha) * self.inv_deg32[lo:hi])[:, None]
        if beta != 0.0:
            res.add_(y[lo:hi], alpha=float(beta))
        if gamma != 0.0:
            res.add_(yold[lo:hi], alpha=float(gamma))
        out.copy_(res)
        self.products += y.shape[1] * (hi - lo) / max(self.n, 1)

    def spmv(self, x: Tensor) -> Tensor:
        return (self.adj @ x.float()[:, None])[:, 0].double() / self.deg


def _lanczos_extremes(op: _Operator, steps: int, seed: int) -> Tuple[float, float]:
    """Smallest and largest Ritz values of ``S`` (on the complement of ``u_0``) after ``steps`` Lanczos
    steps with full re-orthogonalisation, plus the smallest one's residual bound."""
    n = op.n
    rng = np.random.default_rng(seed)
    sd = op.sqrt_deg
    q = torch.from_numpy(rng.standard_normal(n)).to(op.device)
    q -= (sd @ q) * sd / op.vol
    q /= torch.linalg.vector_norm(q)
    basis = [q]
    alphas, betas = [], []
    for _ in range(min(steps, n - 2)):
        w = op.spmv(q / sd) * sd  # S q
        alpha = float(q @ w)
        alphas.append(alpha)
        w -= (sd @ w) * sd / op.vol
        for v in basis:  # full re-orthogonalisation (few steps)
            w -= (v @ w) * v
        beta = float(torch.linalg.vector_norm(w))
        if beta < 1e-12:
            break
        betas.append(beta)
        q = w / beta
        basis.append(q)
    m = len(alphas)
    tri = np.diag(alphas) + np.diag(betas[: m - 1], 1) + np.diag(betas[: m - 1], -1)
    theta, vecs = np.linalg.eigh(tri)
    beta_last = betas[m - 1] if len(betas) >= m else 0.0
    resid = np.abs(beta_last * vecs[-1, :])
    return float(theta[0] - resid[0]), float(theta[-1] + resid[-1])


def top_eigenpairs(indptr: np.ndarray, indices: np.ndarray, m: int, block: int = 64, tol: float = 1e-5,
                   degree: int = 32, max_products: Optional[int] = None, seed: int = 0,
                   lanczos_steps: int = 10, reorder: bool = True, log=None,
                   device: Union[None, str, torch.device] = None,
                   threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The ``m`` largest eigenpairs of ``S`` after the trivial one, for a connected simple graph.

    Args:
        indptr, indices: symmetric CSR without self loops or duplicates, every row non-empty.
        m: number of wanted pairs (``LaplacianPE(k)`` needs ``k - 1``).
        block: block size ``b`` (``> m``; raised to ``m + 8`` at least).
        tol: target residual ``||S u - θ u||_2`` of every wanted (unit) vector; the float32 block
            limits it to about ``1e-7`` (the iteration stops, with a warning, when it stalls).
        degree: largest Chebyshev degree per filter application.
        max_products: stop after this many filter steps (default ``400``); the result is then
            returned with a warning that names the residual reached.
        seed: seed of the starting block.
        reorder: relabel the nodes by degree first on big graphs (``csr.degree_ordered``: faster products).
        log: called with a progress line per iteration (default: this module's ``logging`` logger, INFO).
        device: ``None`` (default): the block lives in CPU memory and the products run in the compiled
            numba kernels; a torch device (``"cuda"``, also ``"cpu"``): the same iteration with the
            block on that device and ``torch.sparse_csr_tensor`` products (same start block, same
            filter schedule; results agree to the tolerance, not bit for bit).
        threads: CPU threads of the numba kernels and of torch's dense passes (``None``: torch's
            current count, see ``csr.pe_threads``); the numba products are bit-identical for any count.

    Returns:
        ``(theta [m] descending, vectors float64 [N, m] (unit norm), residuals [m], info)``.
    """
    n = indptr.shape[0] - 1
    if m < 1:
        return np.zeros(0), np.zeros((n, 0)), np.zeros(0), {}
    if n < m + 2:
        raise ValueError(f"top_eigenpairs: a component of {n} nodes has fewer than m + 1 = {m + 1} eigenpairs")
    b = min(max(block, m + 8), n - 1)
    order = None
    if reorder and device is None and int(indptr[-1]) >= REORDER_MIN_NNZ:
        indptr, indices, order = degree_ordered(indptr, indices)
    max_products = 400 if max_products is None else max_products
    say = log or logger.info
    t0 = time.perf_counter()
    with pe_threads(threads) as pt, single_threaded_blas():
        op = _Operator(indptr, indices, pt.threads) if device is None else _TorchOperator(indptr, indices, device)
        lo_est, hi_est = _lanczos_extremes(op, lanczos_steps, seed + 1)
        # damped interval's lower end: below the smallest eigenvalue (margin for a loose estimate)
        a = max(-1.0, lo_est - 0.05 * (hi_est - lo_est) - 0.02)
        rng = np.random.default_rng(seed)
        xt, other, steps = _first_block(op, b, rng, min(degree, 32, max_products), a, hi_est)
        iters, dropped = 0, 0
        history = []
        while True:
            op.deflate(xt)
            dropped += b - _orthonormalize(op, xt, rng)
            theta, resid = _rayleigh_ritz(op, xt)
            iters += 1
            done = bool(np.all(resid[:m] <= tol))
            history.append(float(resid[:m].max()))
            # the float32 block bounds the residual below (~1e-8..1e-7): stop when it stops improving
            stalled = len(history) > 3 and history[-1] > 0.5 * min(history[-4:-1])
            say(f"  chebyshev it={iters} filter_steps={steps} theta[0]={theta[0]:.6f} theta[m-1]={theta[m - 1]:.6f} "
                f"theta[-1]={theta[-1]:.4f} a={a:.3f} max_res={resid[:m].max():.2e} ({time.perf_counter() - t0:.1f}s)")
            if done or stalled or steps >= max_products:
                break
            cut = _next_cut(theta, resid, m, a)
            p = _filter_degree(theta, m, a, cut, degree, float(resid[:m].max()) / tol)
            p = max(1, min(p, max_products - steps))
            xt, other = _filter(op, xt, other, p, a, cut)
            steps += p
        if not done:
            warnings.warn(f"LaplacianPE (Chebyshev subspace iteration): stopped after {steps} filter steps with "
                          f"residual {resid[:m].max():.2e} > tol={tol:g} (block={b}, N={n}); raise max_products, "
                          f"block or tol{' (the residual stalled: float32 vectors reach ~1e-7)' if stalled else ''}",
                          RuntimeWarning, stacklevel=3)
        vecs = _unit_vectors(op, xt, m, order)
        threads_used = pt.threads
    info = dict(iterations=iters, filter_steps=steps, block=b, a=a, seconds=time.perf_counter() - t0,
                max_residual=float(resid[:m].max()), converged=done, dropped_columns=dropped,
                device=str(op.device) if device is not None else "cpu (numba)", threads=threads_used)
    return theta[:m].copy(), vecs, resid[:m].copy(), info


def _first_block(op: _Operator, b: int, rng: np.random.Generator, p: int, a: float,
                 hi_est: float) -> Tuple[Tensor, Tensor, int]:
    """A random block ``X~`` of ``b`` columns after a first filter of degree ``p`` (none if ``p < 1``);
    returns ``(block, spare block, filter steps done)``."""
    xt = torch.empty((op.n, b), dtype=torch.float32, device=op.device)
    _random_columns(op, xt, 0, rng)
    other = torch.empty_like(xt)
    # first filter, before any Rayleigh-Ritz step (the Ritz values of a random block are all ~0,
    # the spectrum's mean): damp [a, 0], degree 32. It brings the block to the top of the
    # spectrum, where the next cut is close to the eigenvalue below the block (and many
    # directions grow alike there, so the float32 block keeps its rank)
    op.deflate(xt)
    steps = 0
    if p >= 1:
        xt, other = _filter(op, xt, other, p, a, 0.0 if a < -1e-3 else 0.5 * (a + hi_est))
        steps += p
    return xt, other, steps


def _next_cut(theta: np.ndarray, resid: np.ndarray, m: int, a: float) -> float:
    """Upper end ``cut`` of the next damped interval ``[a, cut]``, from the Ritz values and residuals."""
    # the bottom Ritz value underestimates the eigenvalue below the block early on; an eigenvalue
    # lies within its residual of it, so raise the cut by up to that much, but keep it below
    # theta[m-1] <= lambda_{m-1} (Ritz values bound the top eigenvalues from below), so that every
    # wanted eigenvalue stays above the cut
    cut = float(theta[-1])
    cut = max(cut, min(cut + float(resid[-1]), float(theta[m - 1]) - 0.1 * (float(theta[m - 1]) - cut)))
    if not cut > a + 1e-3:
        cut = a + 0.5 * (float(theta[m - 1]) - a)
    return cut


def _unit_vectors(op: _Operator, xt: Tensor, m: int, order: Optional[np.ndarray]) -> np.ndarray:
    """The first ``m`` columns of ``X = D^{1/2} X~`` in float64, scaled to unit norm, in the input node order."""
    vecs = (xt[:, :m].double() * op.sqrt_deg[:, None]).cpu().numpy()
    vecs /= np.linalg.norm(vecs, axis=0, keepdims=True)
    if order is not None:
        unpermuted = np.empty_like(vecs)
        unpermuted[order] = vecs
        vecs = unpermuted
    return vecs


#: largest filter amplification between the top and the bottom Ritz value of the block: float32
#: columns keep ~7 digits, 5 of which may go to the spread
_MAX_SPREAD = 1e5


def _filter_degree(theta: np.ndarray, m: int, a: float, cut: float, degree: int, reduction: float) -> int:
    """Degree of the next filter, at most ``degree``: enough to reduce the residuals by ``reduction``
    (the slowest wanted Ritz value ``theta[m-1]`` gains ``acosh(ℓ(θ)) - acosh(ℓ(cut))`` per degree
    over the damped part; divided by 0.75, about the fraction of it reached in practice; plus 2),
    and with a spread between ``theta[0]`` and ``theta[-1]`` of at most :data:`_MAX_SPREAD` (beyond
    it the lower columns of the float32 block turn into rounding noise)."""
    e, c0 = (cut - a) / 2, (cut + a) / 2

    def growth(t):
        return math.acosh(max((t - c0) / e, 1.0))

    p = degree
    spread = growth(theta[0]) - growth(theta[-1])
    if spread > 0:
        p = min(p, int(math.log(_MAX_SPREAD) // spread))
    rate = growth(theta[m - 1]) - growth(cut)
    if rate > 0 and reduction > 1:
        p = min(p, int(math.ceil(math.log(reduction) / (0.75 * rate))) + 2)  # measured: ~0.7-1 of the rate
    return max(2, p)


#: filter steps between two removals of the trivial eigenvector (rounding reintroduces it, and the
#: filter amplifies it most: ``e^{6 acosh(...)}`` stays far below float32's 1e7)
_DEFLATE_EVERY = 6


def _filter(op: _Operator, xt: Tensor, other: Tensor, p: int, a: float, cut: float):
    """``T_p(ℓ(S)) X / T_p(ℓ(1))`` by the scaled three-term recurrence; returns ``(result, spare)``."""
    e, c0 = (cut - a) / 2, (cut + a) / 2
    x_rho = (1.0 - c0) / e
    sigma = 1.0 / x_rho
    # Y_1 = sigma_1 * (S - c0) / e X
    y_prev, y = xt, other
    op.apply(y_prev, y_prev, y, sigma / e, -sigma * c0 / e, 0.0)
    for i in range(2, p + 1):
        sigma_new = 1.0 / (2.0 * x_rho - sigma)
        # Y_i = 2 sigma_i (S - c0)/e Y_{i-1} - sigma_i sigma_{i-1} Y_{i-2}, written over Y_{i-2}
        op.apply(y, y_prev, y_prev, 2.0 * sigma_new / e, -2.0 * sigma_new * c0 / e, -sigma_new * sigma)
        y, y_prev = y_prev, y
        sigma = sigma_new
        if i % _DEFLATE_EVERY == 0 and i < p:
            op.deflate(y)
            op.deflate(y_prev)
    return y, y_prev


def _random_columns(op: _Operator, xt: Tensor, start: int, rng: np.random.Generator) -> None:
    """Columns ``start..`` of ``X~`` := ``D^{-1/2}`` times standard normal vectors (drawn on the CPU in
    row chunks: the same block on every device)."""
    for lo in range(0, op.n, _CHUNK):
        hi = min(lo + _CHUNK, op.n)
        z = torch.from_numpy(rng.standard_normal((hi - lo, xt.shape[1] - start))).to(op.device)
        xt[lo:hi, start:] = z / op.sqrt_deg[lo:hi, None]


def _gram(op: _Operator, xt: Tensor) -> np.ndarray:
    """``X^T X = X~^T D X~`` in float64 (row chunks)."""
    b = xt.shape[1]
    out = torch.zeros((b, b), dtype=torch.float64, device=op.device)
    for lo in range(0, op.n, _CHUNK):
        hi = min(lo + _CHUNK, op.n)
        x = xt[lo:hi].double()
        out += x.T @ (x * op.deg[lo:hi, None])
    return out.cpu().numpy()


def _rotate(op: _Operator, xt: Tensor, t: np.ndarray, cols: int) -> None:
    """``X~[:, :cols] = X~ @ t`` in float64 row chunks, in place (``t``: ``[b, cols]``)."""
    tt = torch.from_numpy(np.ascontiguousarray(t)).to(op.device)
    for lo in range(0, op.n, _CHUNK):
        hi = min(lo + _CHUNK, op.n)
        xt[lo:hi, :cols] = xt[lo:hi].double() @ tt


def _orthonormalize(op: _Operator, xt: Tensor, rng: np.random.Generator) -> int:
    """Make the columns of ``X = D^{1/2} X~`` an orthonormal basis of their numerical span, in place;
    directions lost to rounding (Gram eigenvalues below 1e-9 of the largest) are replaced by random
    columns (left for Rayleigh-Ritz, which takes the Gram matrix into account).  Returns the rank kept."""
    g = _gram(op, xt)
    scale = np.sqrt(np.maximum(np.diag(g), 1e-300))
    w, v = np.linalg.eigh(g / scale[:, None] / scale[None, :])
    w, v = w[::-1], v[:, ::-1]
    r = int(np.sum(w > 1e-9 * max(w[0], 1e-300)))
    _rotate(op, xt, (v[:, :r] / np.sqrt(w[:r])) / scale[:, None], r)
    if r < xt.shape[1]:
        _random_columns(op, xt, r, rng)
        op.deflate(xt)
    return r


def _rayleigh_ritz(op: _Operator, xt: Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """Rotate ``X~`` to the Ritz vectors (decreasing Ritz values) in place; returns ``(theta, residuals)``."""
    b = xt.shape[1]
    h = torch.zeros((b, b), dtype=torch.float64, device=op.device)
    g = torch.zeros_like(h)
    mm = torch.zeros_like(h)
    buf = torch.empty((min(_CHUNK, op.n), b), dtype=torch.float64, device=op.device)
    for lo in range(0, op.n, _CHUNK):
        hi = min(lo + _CHUNK, op.n)
        w = buf[: hi - lo]
        op.apply(xt, xt, w, 1.0, 0.0, 0.0, lo, hi)  # (P X~)[lo:hi], float64
        sd = op.sqrt_deg[lo:hi, None]
        w *= sd                                   # (S X)[lo:hi]
        x = xt[lo:hi].double()
        x *= sd                                   # X[lo:hi]
        h += x.T @ w
        g += w.T @ w
        mm += x.T @ x
    h, g, mm = h.cpu().numpy(), g.cpu().numpy(), mm.cpu().numpy()
    h = 0.5 * (h + h.T)
    theta, v = _generalized_eigh(h, 0.5 * (mm + mm.T))
    order = np.argsort(-theta, kind="stable")
    theta, v = theta[order], v[:, order]
    resid = np.sqrt(np.maximum(np.einsum("ij,ik,kj->j", v, g, v) - theta ** 2, 0.0))
    _rotate(op, xt, v, b)
    return theta, resid


def _generalized_eigh(h: np.ndarray, mm: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``H v = θ M v`` with ``V^T M V = I`` (``M`` nearly the identity here)."""
    import scipy.linalg

    return scipy.linalg.eigh(h, mm)
