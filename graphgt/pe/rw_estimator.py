"""Random-walk structural encoding (RWSE) *estimated* with random probes, for graphs of millions of nodes.

:class:`RandomWalkSE` computes ``(P^t)_{ii}``, ``t = 1..T``, exactly at a cost of
``O(T/2 * nnz * N)``: hours to days beyond ~1e5 nodes.  :class:`RandomWalkSEEstimator` writes the
same ``rwse`` tensor (same key, same encoders) from ``s`` random sign vectors ("probes") in
``O(T/2 * nnz * s)`` time and ``O(nnz + N * block)`` memory, with a per-entry error bound.

Math.  The graph must be undirected (``A = A^T``; ``A[i, j]`` = number of edges ``i -> j``,
self loops and multi-edges counted as in :class:`RandomWalkSE`).  With ``D = diag(A 1)`` and
``S = D^{-1/2} A D^{-1/2}`` (symmetric, spectrum in ``[-1, 1]``), ``P^t = D^{-1/2} S^t D^{1/2}``
so ``(P^t)_{ii} = (S^t)_{ii}``.  Let ``Z`` be ``N x s`` with i.i.d. Rademacher (``±1``) entries and
``Y_m = S^m Z`` (``Y_0 = Z``); write ``a_m = S^m e_i`` (so ``(Y_m)_{ip} = a_m · z_p``).

* Exact steps (``exact_steps=2``, always computed, ``O(nnz)``): ``(S)_{ii} = A_ii / d_i`` and
  ``(S^2)_{ii} = sum_j A_ij^2 / (d_i d_j)``.  ``(S^2)_{ii}`` also bounds every later step:
  ``0 <= (S^t)_{ii} <= (S^2)_{ii}`` for ``t >= 2`` (``(S^t)_{ii} = (P^t)_{ii} >= 0``; even
  ``t``: ``sum_l λ_l^t u_l(i)^2 <= sum_l λ_l^2 u_l(i)^2``; odd ``t = 2m + 1``: Cauchy-Schwarz,
  ``|<a_m, a_{m+1}>| <= ||a_m|| ||a_{m+1}||``), so estimates are clipped to ``[0, (S^2)_{ii}]``,
  which can only reduce their error.

* ``method="gram"`` (default).  ``(S^{2m})_{ii} = ||a_m||^2`` and
  ``(S^{2m+1})_{ii} = <a_m, a_{m+1}>`` are estimated by

  .. math::
      \\widehat{(S^{2m})_{ii}} = \\frac1s \\sum_p (Y_m)_{ip}^2, \\qquad
      \\widehat{(S^{2m+1})_{ii}} = \\frac1s \\sum_p (Y_m)_{ip} (Y_{m+1})_{ip},

  both unbiased (``E[(a·z)(b·z)] = a·b``), from ``ceil(T / 2)`` products with ``S`` (half of
  Hutchinson's ``T``).  Their error is *relative*: ``≈ sqrt(2 / s)`` times the value (a
  chi-square-like average) instead of an absolute ``sqrt((S^{2t})_{ii} / s)``, which matters for
  large ``t`` where ``(S^t)_{ii}`` tends to the tiny stationary value ``d_i / vol``.

  *Bound.*  ``X = a·z`` is sub-Gaussian with variance proxy ``v = ||a||^2`` (Hoeffding's lemma),
  so ``E exp(λ X^2) <= (1 - 2λv)^{-1/2}`` (average ``exp(sqrt(2λ) g X)`` over ``g ~ N(0, 1)``)
  and, by Chernoff, the mean ``Q`` of ``s`` independent copies of ``X^2`` satisfies
  ``P(Q >= v(1 + ε)) <= exp(-s (ε - ln(1 + ε)) / 2)``.  Below, ``e^{-x} <= 1 - x + x^2/2`` and
  ``E X^4 = 3v^2 - 2 sum a_j^4 <= 3 v^2`` give ``P(Q <= v(1 - ε)) <= exp(-s ε^2 / 6)``.  Splitting a
  failure probability ``δ_q`` over the two tails: with probability ``>= 1 - δ_q``,
  ``|Q - v| <= ε* v`` with ``ε_lo = sqrt(6 ln(2/δ_q) / s)``, ``ε_hi`` the root of
  ``ε - ln(1 + ε) = 2 ln(2/δ_q) / s`` and ``ε* = max(ε_lo, ε_hi)``; on the same event
  ``v <= Q / (1 - ε_lo)``.  Hence, with probability ``>= 1 - δ`` for each (node, step):

  - even ``t = 2m``: ``|err| <= ε*(δ) · min(Q_m / (1 - ε_lo(δ)), (S^2)_{ii})``;
  - odd ``t = 2m + 1``: by polarisation ``(a·z)(b·z) = (((a+b)·z)^2 - ((a-b)·z)^2) / 4``, two such
    events (``δ_q = δ/2`` each) give ``|err| <= ε*(δ/2) (||a||^2 + ||b||^2) / 2``
    ``<= ε*(δ/2) · min((Q_m + Q_{m+1}) / (2 (1 - ε_lo(δ/2))), (S^2)_{ii})`` (the mean of the two
    squared polarised forms is ``2 (Q_m + Q_{m+1})``, with ``Q_0 = 1``);

  both capped at ``(S^2)_{ii}`` (the clipping interval).  ``Q_m`` are the raw probe averages, so the
  bound is known after the run: :attr:`RWSEEstimate.bound`.

* ``method="hutchinson"``: ``\\widehat{(S^t)_{ii}} = \\frac1s \\sum_p z_{ip} (Y_t)_{ip}``
  (``T`` products).  Each probe's term is ``(S^t)_{ii} + sum_{j != i} z_i z_j (S^t)_{ij}``: the
  ``z_i z_j`` (``j != i``) are i.i.d. Rademacher, so the error is a Rademacher sum with variance
  proxy ``σ^2 = sum_{j != i} (S^t)_{ij}^2 = (S^{2t})_{ii} - (S^t)_{ii}^2 <= (S^{2t})_{ii} <= (S^2)_{ii}``
  (``λ^{2t} <= λ^2`` on ``[-1, 1]``), and Hoeffding gives, with probability ``>= 1 - δ`` for each
  (node, step), ``|err| <= sqrt(2 (S^2)_{ii} ln(2/δ) / s)`` (capped at ``(S^2)_{ii}``).  The bound
  is data-independent but does not shrink with ``t``, and the actual error at large ``t`` is
  ``≈ sqrt(d_i / (vol · s))`` (the stationary part of ``S^t``): far worse than ``gram`` there.

Both bounds are per (node, step) pair; a guarantee for all ``N·T`` pairs at once follows from the
union bound with ``delta / (N * T)``.  They cover the sampling error only, not float32 rounding
of the products (relative ~1e-6).  Measured errors: ``tests/pe/test_rw_estimator.py`` (2,500 nodes,
against :class:`RandomWalkSE`) and ``bench/pe_large.py`` (2.45M nodes, against
:func:`exact_rwse_nodes` on sampled nodes).

Products run in a compiled (numba) kernel over blocks of ``probe_block`` probes: with
``X_m = D^{-1/2} Y_m``, ``X_{m+1} = D^{-1} A X_m`` (a sum of neighbour rows, no edge weights), fused
with the per-row dot products ``d_i <X_m, X_m>_i`` and ``d_i <X_{m-1}, X_m>_i``; rows are split
by work over ``min(torch threads, numba threads)`` threads.  Memory: the CSR arrays (read in
place, e.g. memory-mapped from a graph store), three ``[N, probe_block]`` float32 buffers and the
``[N, T]`` float64 sums.  Probe ``p`` is the bit ``p % 8`` of the bytes of
``default_rng([seed, p // 8])``: the result does not depend on ``probe_block`` or the thread
count (beyond float rounding).

Shapes:
    - ``compute(edge_index: [2, E], N)`` / ``compute_csr(indptr [N+1], indices [nnz], N)``
      ``-> {"rwse": FloatTensor[N, steps]}`` (column ``t - 1`` estimates ``(P^t)_{ii}``)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numba
import numpy as np
import torch
from torch import Tensor

from graphgt.pe.base import PositionalEncoding
from graphgt.pe.csr import (REORDER_MIN_NNZ, as_csr_arrays, check_device, compiled_variants, csr_from_edge_index,
                            csr_is_symmetric, degree_ordered, kernel_device, kernel_threads,
                            nnz_balanced_bounds, pe_threads, torch_csr_adjacency)

_METHODS = ("gram", "hutchinson")


# ---------------------------------------------------------------------------------------- kernels
@numba.njit(cache=True, nogil=True)
def exact_first_steps(indptr, indices):  # pragma: no cover - compiled
    """``(S_ii, (S^2)_ii)`` float64 ``[N]`` each, ``O(nnz)`` (rows sorted on the fly where needed;
    multi-edges count with their multiplicity ``c``: ``(S^2)_ii = sum_j c_ij^2 / (d_i d_j)``)."""
    n = indptr.shape[0] - 1
    s1 = np.zeros(n)
    s2 = np.zeros(n)
    for i in range(n):
        a, b = indptr[i], indptr[i + 1]
        if b == a:
            continue
        row = indices[a:b]
        ordered = True
        for p in range(1, b - a):
            if row[p] < row[p - 1]:
                ordered = False
                break
        if not ordered:
            row = np.sort(row)
        acc = 0.0
        loops = 0
        p = 0
        while p < b - a:
            j = row[p]
            c = 1
            while p + c < b - a and row[p + c] == j:
                c += 1
            if j == i:
                loops = c
            acc += c * c / float(indptr[j + 1] - indptr[j])
            p += c
        d = float(b - a)
        s1[i] = loops / d
        s2[i] = acc / d
    return s1, s2


def _propagate_py(indptr, indices, inv_deg, x, w, out, bounds, sq, cross):  # pragma: no cover
    """``out = D^{-1} A x`` (rows of ``[N, b]`` float32), ``sq[r] = <out_r, out_r>``,
    ``cross[r] = <w_r, out_r>``; rows split in ranges ``bounds`` (one per thread)."""
    b = x.shape[1]
    for part in numba.prange(bounds.shape[0] - 1):
        for r in range(bounds[part], bounds[part + 1]):
            zr = out[r]
            for j in range(b):
                zr[j] = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                xc = x[indices[p]]
                for j in range(b):
                    zr[j] += xc[j]
            s = inv_deg[r]
            wr = w[r]
            e = np.float32(0.0)
            o = np.float32(0.0)
            for j in range(b):
                v = zr[j] * s
                zr[j] = v
                e += v * v
                o += wr[j] * v
            sq[r] = e
            cross[r] = o


_propagate_parallel, _propagate_serial = compiled_variants(_propagate_py, fastmath={"contract", "reassoc"})


def _propagate_torch(adj: Tensor, inv_deg: Tensor, x: Tensor, w: Tensor, out: Tensor, sq: Tensor,
                     cross: Tensor) -> None:
    """:func:`_propagate_py` with a ``torch.sparse_csr_tensor`` ``adj`` (entries 1) on any device."""
    out.copy_(adj @ x)
    out *= inv_deg[:, None]
    sq.copy_(torch.einsum("rj,rj->r", out, out))
    cross.copy_(torch.einsum("rj,rj->r", w, out))
#: below this many additions per product, thread start-up costs more than it saves
_PARALLEL_MIN_WORK = 1 << 20


def rademacher_probes(num_nodes: int, start: int, stop: int, seed: int, order: np.ndarray | None = None,
                      out: np.ndarray | None = None) -> np.ndarray:
    """Probes ``start..stop-1`` as a float32 ``[N, stop - start]`` array of ``±1``: probe ``p`` is bit
    ``p % 8`` of ``default_rng([seed, p // 8]).bytes(N)`` (so any block split gives the same probes).

    ``order`` (optional): row ``a`` of the result is then node ``order[a]``'s (a relabelled graph);
    ``out`` (optional): the array to fill."""
    if out is None:
        out = np.empty((num_nodes, stop - start), dtype=np.float32)
    for chunk in range(start // 8, (stop + 7) // 8):
        raw = np.frombuffer(np.random.default_rng([seed, chunk]).bytes(num_nodes), dtype=np.uint8)
        if order is not None:
            raw = raw[order]
        lo, hi = max(start, 8 * chunk), min(stop, 8 * chunk + 8)
        bits = np.unpackbits(raw[:, None], axis=1)[:, lo - 8 * chunk: hi - 8 * chunk]
        out[:, lo - start: hi - start] = 1 - 2 * bits.astype(np.int8)  # small temporaries: int8
    return out


# ---------------------------------------------------------------------------------------- bounds
def gram_epsilons(probes: int, delta: float) -> Tuple[float, float]:
    """``(ε_lo, ε*)`` of the module docstring: with probability ``>= 1 - delta`` the mean ``Q`` of
    ``probes`` squared Rademacher forms ``(a·z)^2`` satisfies ``|Q - v| <= ε* v`` and
    ``v <= Q / (1 - ε_lo)``, ``v = ||a||^2`` (``ε_lo >= 1`` means no such relative bound)."""
    log_term = math.log(2.0 / delta)
    eps_lo = math.sqrt(6.0 * log_term / probes)
    target = 2.0 * log_term / probes  # ε - ln(1 + ε) = target, increasing in ε > 0
    lo, hi = 0.0, 1.0
    while hi - math.log1p(hi) < target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid - math.log1p(mid) < target:
            lo = mid
        else:
            hi = mid
    return eps_lo, max(eps_lo, hi)


def hutchinson_bound(s2: np.ndarray, probes: int, delta: float) -> np.ndarray:
    """Per-node Hoeffding bound ``min(sqrt(2 (S^2)_ii ln(2/δ) / s), (S^2)_ii)`` of ``method="hutchinson"``
    (each step ``t >= 1``; per (node, step) with probability ``>= 1 - delta``)."""
    s2 = np.asarray(s2, dtype=np.float64)
    return np.minimum(np.sqrt(2.0 * s2 * math.log(2.0 / delta) / probes), s2)


def gram_bound(raw_even: np.ndarray, s2: np.ndarray, steps: int, probes: int, delta: float) -> np.ndarray:
    """Per-(node, step) bound ``[N, steps]`` of ``method="gram"`` (module docstring).

    Args:
        raw_even: ``[N, M + 1]`` raw probe means ``Q_m`` of ``(Y_m)_{ip}^2``, ``m = 0..M``
            (``Q_0 = 1``), ``M = ceil(steps / 2)``.
        s2: exact ``(S^2)_ii`` ``[N]``.
    """
    n = s2.shape[0]
    out = np.empty((n, steps))
    lo_e, eps_e = gram_epsilons(probes, delta)
    lo_o, eps_o = gram_epsilons(probes, delta / 2)
    for t in range(1, steps + 1):
        m = t // 2
        cap = np.minimum(1.0, np.sqrt(s2)) if t == 1 else s2  # the clipping interval's width
        if t % 2 == 0:
            scale = s2 if lo_e >= 1 else np.minimum(raw_even[:, m] / (1 - lo_e), s2)
            out[:, t - 1] = np.minimum(eps_e * scale, cap)
        else:
            known = 0.5 * (1.0 + s2) if m == 0 else s2  # (||a_m||^2 + ||a_{m+1}||^2) / 2 <= this
            pair = 0.5 * (raw_even[:, m] + raw_even[:, m + 1])
            scale = known if lo_o >= 1 else np.minimum(pair / (1 - lo_o), known)
            out[:, t - 1] = np.minimum(eps_o * scale, cap)
    return out


def exact_rwse_nodes(indptr, indices, nodes, steps: int, threads: Optional[int] = None) -> np.ndarray:
    """Exact ``(P^t)_{ii}``, ``t = 1..steps``, for a few nodes ``i`` of an undirected graph (to check
    the estimator at scales where :class:`RandomWalkSE` cannot run): ``[len(nodes), steps]`` float64.

    With ``a_m = S^m e_i`` (``ceil(steps / 2)`` products of ``S`` with the ``[N, len(nodes)]`` block
    of unit vectors, the estimator's kernel), ``(S^{2m})_{ii} = ||a_m||^2`` and
    ``(S^{2m+1})_{ii} = <a_m, a_{m+1}>``; the block is float32, sums float64 (relative error ~1e-6).
    """
    n = len(indptr) - 1
    indptr, indices = as_csr_arrays(indptr, indices, n)
    nodes = np.asarray(nodes, dtype=np.int64)
    deg = np.diff(indptr).astype(np.float64)
    inv_deg = np.where(deg > 0, 1.0 / np.maximum(deg, 1.0), 0.0).astype(np.float32)
    b = len(nodes)
    x = np.zeros((n, b), dtype=np.float32)  # X_0 = D^{-1/2} E_B
    x[nodes, np.arange(b)] = np.where(deg[nodes] > 0, 1.0 / np.sqrt(np.maximum(deg[nodes], 1.0)), 0.0)
    nxt = np.empty_like(x)
    sq = np.empty(n, dtype=np.float32)
    cr = np.empty(n, dtype=np.float32)
    parts = kernel_threads(threads)
    kernel = _propagate_parallel if parts > 1 else _propagate_serial
    bounds = nnz_balanced_bounds(indptr, parts) if parts > 1 else np.array([0, n], dtype=np.int64)
    out = np.zeros((b, steps))
    chunk = 1 << 16

    def dots(u, v):  # sum_r d_r u[r, j] v[r, j] (= <Y, Y'> per column), float64
        acc = np.zeros(b)
        for lo in range(0, n, chunk):
            acc += np.einsum("r,rj,rj->j", deg[lo:lo + chunk], u[lo:lo + chunk].astype(np.float64),
                             v[lo:lo + chunk].astype(np.float64))
        return acc

    with pe_threads(threads):
        for m in range(1, (steps + 1) // 2 + 1):
            kernel(indptr, indices, inv_deg, x, x, nxt, bounds, sq, cr)
            if 2 * m - 1 <= steps:
                out[:, 2 * m - 2] = dots(x, nxt)  # <a_{m-1}, a_m> = (S^{2m-1})_ii
            if 2 * m <= steps:
                out[:, 2 * m - 1] = dots(nxt, nxt)  # ||a_m||^2 = (S^{2m})_ii
            x, nxt = nxt, x
    return out


# ---------------------------------------------------------------------------------------- estimator
@dataclass
class RWSEEstimate:
    """Result of :meth:`RandomWalkSEEstimator.estimate_csr`.

    Attributes:
        values: ``[N, steps]`` float64 estimates of ``(P^t)_{ii}`` (exact columns exact, the others
            clipped to ``[0, (S^2)_ii]``).
        bound: ``[N, steps]`` float64: ``|values - exact| <= bound`` with probability ``>= 1 - delta``
            for each entry (0 on exact columns and isolated nodes).
        s2: ``[N]`` exact ``(S^2)_ii = (P^2)_ii``.
        probes, delta, method: the parameters used.
    """

    values: np.ndarray
    bound: np.ndarray
    s2: np.ndarray
    probes: int
    delta: float
    method: str


class RandomWalkSEEstimator(PositionalEncoding):
    """Probe estimate of the random-walk encoding ``data.rwse[i, t-1] ≈ (P^t)_{ii}`` (module docstring).

    Args:
        steps: number of walk lengths ``T`` (columns), ``t = 1..T``.
        probes: number ``s`` of Rademacher probes; the error shrinks as ``1 / sqrt(s)``, the time
            grows as ``s`` (``ceil(T/2) * nnz * s`` additions for ``gram``).  The default 256 makes
            the ``gram`` bound (``delta = 0.05``) 0.42 times the estimate for even steps and 0.47
            times the mean of the neighbouring even estimates for odd ones (64: 1.4 / 1.8, i.e.
            vacuous; 1024: 0.17 / 0.19); the observed error is ~10x smaller (``sqrt(2 / s)``
            relative at one standard deviation).  On the 2.45M-node products-shaped graph: 4.6 min.
        seed: seed of the probes (same seed, same result).
        exact_steps: ``0..2``: steps ``t <= exact_steps`` are computed exactly (``O(nnz)``).
        delta: failure probability of the reported per-entry bound (does not change the values).
        method: ``"gram"`` (default; relative error, ``ceil(T/2)`` products) or ``"hutchinson"``
            (``z_i (S^t z)_i``; absolute error ``~ sqrt((S^2)_ii / s)``, ``T`` products).
        probe_block: probes per pass (memory ``~ 3 * N * probe_block * 4`` bytes); does not change
            the result beyond float rounding.
        check_symmetric: verify ``A == A^T`` (an ``O(nnz)`` hash check); directed graphs are refused.
        reorder: on graphs of at least ``csr.REORDER_MIN_NNZ`` entries, run the products on a copy
            relabelled by degree (``csr.degree_ordered``: faster gathers; same probes per node, so
            the same result up to float rounding; memory: one more ``indices`` array).  Numba path only.
        device: where the products run: ``"auto"`` (default: CUDA when ``torch.cuda.is_available()``,
            else the CPU; ``pe/`` does not know the trainer's device, so pass it to pin one),
            ``"cpu"`` (compiled numba kernels), ``"cuda"`` / ``"cuda:<i>"`` (``torch.sparse_csr_tensor``
            products; the same probes, so the same result up to float32 rounding).  Not in :meth:`cache_key`.
        threads: CPU threads of the numba kernels (``None``, default: ``torch.get_num_threads()``; both
            counts restored afterwards); the result is bit-identical for any count.  Not in :meth:`cache_key`.

    Shapes:
        - ``compute(edge_index: [2, E], N) -> {"rwse": FloatTensor[N, steps]}``
    """

    keys = ("rwse",)

    def __init__(self, steps: int = 16, probes: int = 256, seed: int = 0, exact_steps: int = 2,
                 delta: float = 0.05, method: str = "gram", probe_block: int = 64,
                 check_symmetric: bool = True, reorder: bool = True, device: str = "auto",
                 threads: int | None = None):
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int (walk lengths 1..steps), got {steps!r}")
        if not isinstance(probes, int) or probes < 1:
            raise ValueError(f"probes must be a positive int (number of random sign vectors), got {probes!r}")
        if not isinstance(exact_steps, int) or not 0 <= exact_steps <= 2:
            raise ValueError(f"exact_steps must be 0, 1 or 2 (steps computed exactly), got {exact_steps!r}")
        if not 0.0 < float(delta) < 1.0:
            raise ValueError(f"delta must lie in (0, 1) (failure probability of the bound), got {delta!r}")
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        if not isinstance(probe_block, int) or probe_block < 1:
            raise ValueError(f"probe_block must be a positive int (probes per pass), got {probe_block!r}")
        self.steps = steps
        self.probes = probes
        self.seed = int(seed)
        self.exact_steps = exact_steps
        self.delta = float(delta)
        self.method = method
        self.probe_block = probe_block
        self.check_symmetric = bool(check_symmetric)
        self.reorder = bool(reorder)
        self.device = check_device(device)
        kernel_threads(threads)  # validates
        self.threads = threads

    @property
    def in_dim(self) -> int:
        return self.steps

    def cache_key(self) -> str:
        # delta (bound only), probe_block, check_symmetric, reorder, device and threads do not change
        # the values (beyond float rounding)
        return (f"{type(self).__name__}(steps={self.steps}, probes={self.probes}, seed={self.seed}, "
                f"exact_steps={self.exact_steps}, method={self.method!r})")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(steps={self.steps}, probes={self.probes}, seed={self.seed}, "
                f"exact_steps={self.exact_steps}, delta={self.delta}, method={self.method!r}, "
                f"probe_block={self.probe_block}, device={self.device!r}, threads={self.threads!r})")

    # ------------------------------------------------------------------ protocol
    def compute(self, edge_index: Tensor, num_nodes: int) -> Dict[str, Tensor]:
        indptr, indices = csr_from_edge_index(edge_index, num_nodes)
        return self.compute_csr(indptr, indices, num_nodes)

    def compute_csr(self, indptr, indices, num_nodes: int) -> Dict[str, Tensor]:
        """The encoding from CSR arrays (row ``i`` = out-neighbours of ``i``; e.g. a graph store's)."""
        est = self.estimate_csr(indptr, indices, num_nodes)
        return {"rwse": torch.from_numpy(np.clip(est.values, 0.0, 1.0).astype(np.float32))}

    def estimate(self, edge_index: Tensor, num_nodes: int) -> RWSEEstimate:
        indptr, indices = csr_from_edge_index(edge_index, num_nodes)
        return self.estimate_csr(indptr, indices, num_nodes)

    # ------------------------------------------------------------------ estimation
    def estimate_csr(self, indptr, indices, num_nodes: int) -> RWSEEstimate:
        """Estimates and per-entry bounds (:class:`RWSEEstimate`) from CSR arrays."""
        n, steps = int(num_nodes), self.steps
        indptr, indices = as_csr_arrays(indptr, indices, n)
        if self.check_symmetric and not csr_is_symmetric(indptr, indices):
            raise ValueError("RandomWalkSEEstimator needs an undirected graph (A == A^T: every edge stored in "
                             "both directions, e.g. torch_geometric.utils.to_undirected); use the exact "
                             "RandomWalkSE for directed graphs")
        values = np.zeros((n, steps))
        if n == 0:
            return RWSEEstimate(values, np.zeros((0, steps)), np.zeros(0), self.probes, self.delta, self.method)
        s1, s2 = exact_first_steps(indptr, indices)
        deg = np.diff(indptr).astype(np.float64)
        device = kernel_device(self.device)
        sums = probe_sums(indptr, indices, self.steps, self.probes, seed=self.seed, method=self.method,
                          probe_block=self.probe_block, reorder=self.reorder, device=device, threads=self.threads)
        if self.method == "gram":
            even, cross = sums
            raw_even = np.empty((n, even.shape[1] + 1))
            raw_even[:, 0] = 1.0
            np.divide(even, self.probes, out=raw_even[:, 1:])
            del even
            for t in range(1, steps + 1):  # t = 2m: Q_m; t = 2m - 1: cross sum of step m
                m = (t + 1) // 2
                values[:, t - 1] = raw_even[:, m] if t % 2 == 0 else cross[:, m - 1] / self.probes
            del cross
            bound = gram_bound(raw_even, s2, steps, self.probes, self.delta)
            del raw_even
        else:
            values[:] = sums
            values /= self.probes
            bound = np.repeat(hutchinson_bound(s2, self.probes, self.delta)[:, None], steps, axis=1)
            bound[:, 0] = np.minimum(bound[:, 0], np.minimum(1.0, np.sqrt(s2)))
        values[:, 0] = np.clip(values[:, 0], 0.0, np.minimum(1.0, np.sqrt(s2)))
        if steps > 1:
            np.clip(values[:, 1:], 0.0, s2[:, None], out=values[:, 1:])
        exact = [s1, s2][: min(self.exact_steps, steps)]
        for t, col in enumerate(exact):
            values[:, t] = col
            bound[:, t] = 0.0
        isolated = deg == 0
        values[isolated] = 0.0
        bound[isolated] = 0.0
        return RWSEEstimate(values, bound, s2, self.probes, self.delta, self.method)


# ---------------------------------------------------------------------------------------- products
def probe_sums(indptr: np.ndarray, indices: np.ndarray, steps: int, probes: int, seed: int = 0,
               method: str = "gram", probe_block: int = 64, reorder: bool = True,
               device: Optional[torch.device] = None, threads: Optional[int] = None):
    """The estimator's probe sums (``O(ceil(T/2) nnz s)`` for ``gram``, ``O(T nnz s)`` for ``hutchinson``).

    Returns ``(even [N, M], cross [N, M])`` for ``method="gram"`` (sums over probes of ``(Y_m)_i^2``
    and ``(Y_{m-1})_i (Y_m)_i``, ``m = 1..M = ceil(steps / 2)``) and ``[N, steps]`` (sums of
    ``z_i (Y_t)_i``) for ``"hutchinson"``; float64, in the input node order.

    ``device=None``: compiled numba kernels on the CPU over ``threads`` row ranges (bit-identical for
    any thread count), on a degree-relabelled copy of the graph if ``reorder`` and the graph has at
    least ``csr.REORDER_MIN_NNZ`` entries; a torch device (``"cuda"``, also ``"cpu"``): the same
    probes and recurrence with ``torch.sparse_csr_tensor`` products on that device (float32 sums
    ordered by torch: equal to the numba path up to float32 rounding).
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    n = indptr.shape[0] - 1
    with pe_threads(threads) as pt:
        order = None
        if device is None and reorder and int(indptr[-1]) >= REORDER_MIN_NNZ:
            indptr, indices, order = degree_ordered(indptr, indices)
        runner = _Products(indptr, indices, probes, probe_block, seed, order, pt.threads, device)
        if method == "gram":
            big_m = (steps + 1) // 2
            even = torch.zeros((big_m, n), dtype=torch.float64, device=runner.device)
            cross = torch.zeros_like(even)
            for x, nxt in runner.blocks(2):
                x *= runner.inv_sqrt[:, None]  # X_0 = D^{-1/2} Z (in place: Z itself is not needed again)
                for m in range(big_m):
                    runner.propagate(x, x, nxt)
                    even[m] += runner.deg * runner.sq  # d_i <X_m, X_m>_i = |Y_m|_i^2
                    cross[m] += runner.deg * runner.cr
                    x, nxt = nxt, x
            return runner.original_order(even), runner.original_order(cross)
        out = torch.zeros((steps, n), dtype=torch.float64, device=runner.device)
        sqrt_deg = runner.deg.sqrt()
        for z, x, nxt in runner.blocks(3):
            torch.mul(z, runner.inv_sqrt[:, None], out=x)
            for t in range(steps):
                runner.propagate(x, z, nxt)
                out[t] += sqrt_deg * runner.cr  # sqrt(d_i) <Z, X_t>_i = <Z, Y_t>_i
                x, nxt = nxt, x
        return runner.original_order(out)


class _Products:
    """Probe blocks and ``X -> D^{-1} A X`` (fused row dots) on the numba kernels or torch's sparse CSR."""

    def __init__(self, indptr, indices, probes: int, probe_block: int, seed: int, order, threads: int,
                 device: Optional[torch.device]):
        self.indptr, self.indices = indptr, indices
        self.n = n = indptr.shape[0] - 1
        self.probes, self.probe_block, self.seed, self.order = probes, probe_block, seed, order
        self.numba = device is None
        self.device = torch.device("cpu") if device is None else torch.device(device)
        deg = np.diff(indptr).astype(np.float64)
        inv_deg = np.where(deg > 0, 1.0 / np.maximum(deg, 1.0), 0.0).astype(np.float32)
        self.deg = torch.from_numpy(deg).to(self.device)
        self.inv_deg = torch.from_numpy(inv_deg).to(self.device)
        self.inv_sqrt = self.inv_deg.sqrt()
        self.sq = torch.empty(n, dtype=torch.float32, device=self.device)
        self.cr = torch.empty_like(self.sq)
        if self.numba:
            self.parts = threads
            self.bounds = nnz_balanced_bounds(indptr, threads) if threads > 1 else np.array([0, n], dtype=np.int64)
            self.inv_deg_np = inv_deg
        else:
            self.adj = torch_csr_adjacency(indptr, indices, self.device)

    def blocks(self, buffers: int):
        """Per probe block: ``buffers`` float32 ``[N, w]`` tensors, the first holding the block's probes
        (rows in the kernel's node order); they reuse ``buffers`` allocations of ``N * probe_block``
        floats (a block's arrays are freed before the next one's exist)."""
        n = self.n
        width = min(self.probe_block, self.probes)
        flat = [torch.empty(n * width, dtype=torch.float32, device=self.device) for _ in range(buffers)]
        for start in range(0, self.probes, self.probe_block):
            stop = min(start + self.probe_block, self.probes)
            w = stop - start
            arrays = [f[: n * w].view(n, w) for f in flat]  # contiguous views
            if self.numba:
                rademacher_probes(n, start, stop, self.seed, self.order, out=arrays[0].numpy())
                parallel = self.parts > 1 and int(self.indptr[-1]) * w >= _PARALLEL_MIN_WORK
                self.kernel = _propagate_parallel if parallel else _propagate_serial
                self.kernel_bounds = self.bounds if parallel else np.array([0, n], dtype=np.int64)
            else:
                arrays[0].copy_(torch.from_numpy(rademacher_probes(n, start, stop, self.seed, self.order)))
            yield arrays

    def propagate(self, x: Tensor, w: Tensor, out: Tensor) -> None:
        """``out = D^{-1} A x``; ``self.sq[r] = <out_r, out_r>``, ``self.cr[r] = <w_r, out_r>``."""
        if self.numba:
            self.kernel(self.indptr, self.indices, self.inv_deg_np, x.numpy(), w.numpy(), out.numpy(),
                        self.kernel_bounds, self.sq.numpy(), self.cr.numpy())
        else:
            _propagate_torch(self.adj, self.inv_deg, x, w, out, self.sq, self.cr)

    def original_order(self, rows: Tensor) -> np.ndarray:
        """``[T, N]`` sums in kernel order -> ``[N, T]`` numpy in the original node order."""
        rows = rows.cpu().numpy()
        if self.order is None:
            return rows.T
        out = np.empty((rows.shape[1], rows.shape[0]))
        out[self.order] = rows.T
        return out
