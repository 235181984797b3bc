"""Thread counts and devices of the large-graph PE solvers: the numba kernels give the same result for
any thread count, and the torch sparse-CSR path (the device path, run here on the CPU) agrees with them."""
from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

from graphgt.pe import LaplacianPE
from graphgt.pe.chebyshev import _cheb_parallel, _cheb_serial, top_eigenpairs
from graphgt.pe.csr import kernel_device, kernel_threads, nnz_balanced_bounds, pe_threads, undirected_csr
from graphgt.pe.random_walk import _spmm_dots_parallel, _spmm_dots_serial
from graphgt.pe.rw_estimator import (RandomWalkSEEstimator, _propagate_parallel, _propagate_serial,
                                     _propagate_torch, probe_sums)
from graphgt.pe.csr import torch_csr_adjacency, torch_csr_rows

CAN_THREAD = numba.config.NUMBA_NUM_THREADS >= 2


def power_law_csr(n: int, m: int, seed: int = 0):
    """A simple undirected graph with hubs (uneven rows: the row split matters)."""
    rng = np.random.default_rng(seed)
    w = (np.arange(1, n + 1) ** -0.7)
    w /= w.sum()
    return undirected_csr(rng.choice(n, m, p=w), rng.integers(0, n, m), n)


def sbm_csr(sizes, p_in: float, p_out: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = int(sum(sizes))
    block = np.repeat(np.arange(len(sizes)), sizes)
    m = int(n * n * max(p_in, p_out) / 2)
    u, v = rng.integers(0, n, m), rng.integers(0, n, m)
    keep = rng.random(m) < np.where(block[u] == block[v], p_in, p_out) / max(p_in, p_out)
    return undirected_csr(u[keep], v[keep], n)


@pytest.fixture(scope="module")
def graph():
    return power_law_csr(4000, 40000, seed=1)


def test_parallel_and_serial_kernels_have_their_own_cache_entries():
    # numba's cache does not key on ``parallel``: one name for both made the parallel kernel serial
    for par, ser in ((_cheb_parallel, _cheb_serial), (_propagate_parallel, _propagate_serial),
                     (_spmm_dots_parallel, _spmm_dots_serial)):
        assert par.py_func.__qualname__.endswith("__parallel")
        assert ser.py_func.__qualname__.endswith("__serial")
        assert par.targetoptions.get("parallel") and not ser.targetoptions.get("parallel")


def test_cheb_kernel_is_bit_identical_for_any_row_split(graph):
    indptr, indices = graph
    n = len(indptr) - 1
    inv = 1.0 / np.diff(indptr)
    rng = np.random.default_rng(0)
    y = rng.standard_normal((n, 16)).astype(np.float32)
    yold = rng.standard_normal((n, 16)).astype(np.float32)
    ref = np.empty_like(y)
    _cheb_serial(indptr, indices, inv, y, yold, ref, 0.7, -0.2, 0.1, 0, np.array([0, n], dtype=np.int64))
    # reference: dense float64 product
    a = np.zeros((n, n))
    np.add.at(a, (np.repeat(np.arange(n), np.diff(indptr)), indices), 1.0)
    dense = 0.7 * inv[:, None] * (a @ y.astype(np.float64)) - 0.2 * y + 0.1 * yold
    np.testing.assert_allclose(ref, dense, rtol=2e-5, atol=2e-6)
    for parts in (2, 3, 7):
        out = np.empty_like(y)
        with pe_threads(min(parts, numba.config.NUMBA_NUM_THREADS)):
            _cheb_parallel(indptr, indices, inv, y, yold, out, 0.7, -0.2, 0.1, 0, nnz_balanced_bounds(indptr, parts))
        assert np.array_equal(out, ref)


def test_propagate_kernel_bit_identical_and_torch_agrees(graph):
    indptr, indices = graph
    n = len(indptr) - 1
    deg = np.diff(indptr).astype(np.float64)
    inv = (1.0 / deg).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((n, 8)).astype(np.float32)
    outs = []
    for parts in (1, 2, 5):
        out, sq, cr = np.empty_like(x), np.empty(n, np.float32), np.empty(n, np.float32)
        kernel = _propagate_serial if parts == 1 else _propagate_parallel
        kernel(indptr, indices, inv, x, x, out, nnz_balanced_bounds(indptr, parts), sq, cr)
        outs.append((out, sq, cr))
    for out, sq, cr in outs[1:]:
        assert np.array_equal(out, outs[0][0]) and np.array_equal(sq, outs[0][1]) and np.array_equal(cr, outs[0][2])
    adj = torch_csr_adjacency(indptr, indices, torch.device("cpu"))
    t_out, t_sq, t_cr = torch.empty(n, 8), torch.empty(n), torch.empty(n)
    _propagate_torch(adj, torch.from_numpy(inv), torch.from_numpy(x), torch.from_numpy(x), t_out, t_sq, t_cr)
    np.testing.assert_allclose(t_out.numpy(), outs[0][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t_sq.numpy(), outs[0][1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(t_cr.numpy(), outs[0][2], rtol=1e-4, atol=1e-6)
    # a row slice of the torch CSR tensor is the same rows of the product
    np.testing.assert_allclose((torch_csr_rows(adj, 100, 900) @ torch.from_numpy(x)).numpy(),
                               (adj @ torch.from_numpy(x)).numpy()[100:900], rtol=1e-6, atol=1e-6)


def test_probe_sums_same_for_any_thread_count_and_on_the_torch_path(graph):
    indptr, indices = graph
    gram1 = probe_sums(indptr, indices, 6, 24, seed=3, probe_block=16, threads=1)
    even_t, cross_t = probe_sums(indptr, indices, 6, 24, seed=3, probe_block=16, device=torch.device("cpu"))
    assert gram1[0].shape == (len(indptr) - 1, 3) and gram1[1].shape == gram1[0].shape
    if CAN_THREAD:
        gram2 = probe_sums(indptr, indices, 6, 24, seed=3, probe_block=16, threads=2)
        assert np.array_equal(gram1[0], gram2[0]) and np.array_equal(gram1[1], gram2[1])
    np.testing.assert_allclose(even_t, gram1[0], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(cross_t, gram1[1], rtol=1e-4, atol=1e-6)
    hut = probe_sums(indptr, indices, 5, 16, seed=3, method="hutchinson", probe_block=8, threads=1)
    hut_t = probe_sums(indptr, indices, 5, 16, seed=3, method="hutchinson", probe_block=8, device=torch.device("cpu"))
    assert hut.shape == (len(indptr) - 1, 5)
    np.testing.assert_allclose(hut_t, hut, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not CAN_THREAD, reason="numba pool of one thread")
def test_estimator_values_identical_across_thread_counts(graph):
    indptr, indices = graph
    n = len(indptr) - 1
    a = RandomWalkSEEstimator(steps=8, probes=32, device="cpu", threads=1).estimate_csr(indptr, indices, n)
    b = RandomWalkSEEstimator(steps=8, probes=32, device="cpu", threads=2).estimate_csr(indptr, indices, n)
    assert np.array_equal(a.values, b.values) and np.array_equal(a.bound, b.bound)


def test_chebyshev_threads_and_torch_path_agree():
    indptr, indices = sbm_csr([250] * 8, p_in=0.08, p_out=0.003, seed=2)  # 2000 nodes, 7 clustered eigenvalues
    th1, v1, r1, i1 = top_eigenpairs(indptr, indices, 7, block=24, tol=1e-6, threads=1)
    tht, vt, rt, it = top_eigenpairs(indptr, indices, 7, block=24, tol=1e-6, device=torch.device("cpu"))
    assert i1["converged"] and it["converged"] and i1["threads"] == 1 and it["device"] == "cpu"
    assert r1.max() <= 1e-6 and rt.max() <= 1e-6
    np.testing.assert_allclose(tht, th1, atol=1e-9)
    # the same invariant subspace (the vectors of a cluster may rotate)
    np.testing.assert_allclose(np.linalg.svd(v1.T @ vt, compute_uv=False), np.ones(7), atol=1e-6)
    if CAN_THREAD:
        th2, v2, r2, i2 = top_eigenpairs(indptr, indices, 7, block=24, tol=1e-6, threads=2)
        assert i2["threads"] == 2 and i2["filter_steps"] == i1["filter_steps"]
        np.testing.assert_allclose(th2, th1, atol=1e-10)
        np.testing.assert_allclose(np.abs(np.sum(v1 * v2, axis=0)), np.ones(7), atol=1e-6)


def test_pe_threads_restores_thread_counts():
    before_torch, before_numba = torch.get_num_threads(), numba.get_num_threads()
    with pe_threads(1) as pt:
        assert pt.threads == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before_torch and numba.get_num_threads() == before_numba
    if CAN_THREAD:
        with pe_threads(2):
            assert numba.get_num_threads() == 2 and torch.get_num_threads() == 2
        assert torch.get_num_threads() == before_torch and numba.get_num_threads() == before_numba
    assert kernel_threads(10 ** 6) == numba.config.NUMBA_NUM_THREADS
    with pytest.raises(ValueError, match="threads"):
        kernel_threads(0)


def test_device_option_validation_and_cache_keys():
    assert kernel_device("cpu") is None
    assert (kernel_device("auto") is None) == (not torch.cuda.is_available())
    with pytest.raises(ValueError, match="device='gpu' must be one of"):
        LaplacianPE(k=4, device="gpu")
    with pytest.raises(ValueError, match="device"):
        RandomWalkSEEstimator(device="cuda:x")
    with pytest.raises(ValueError, match="threads"):
        RandomWalkSEEstimator(threads=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            kernel_device("cuda")
    # device and threads change values by float rounding only: same cache key, shown in the repr
    assert LaplacianPE(k=4, device="cpu", threads=1).cache_key() == LaplacianPE(k=4).cache_key()
    assert "device='cpu'" in repr(LaplacianPE(k=4, device="cpu")) and "threads=1" in repr(LaplacianPE(k=4, threads=1))
    assert RandomWalkSEEstimator(device="cpu", threads=1).cache_key() == RandomWalkSEEstimator().cache_key()
    assert "device='cpu'" in repr(RandomWalkSEEstimator(device="cpu"))
