"""LaplacianPE: eigen-equation, ordering, padding, components, dense vs sparse (ARPACK) paths."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.utils import erdos_renyi_graph, grid

from graphgt.pe import LaplacianPE

DENSE, SPARSE = 10_000, 0  # eigsh_threshold values that force each path


def ring(n: int) -> torch.Tensor:
    i = torch.arange(n)
    return torch.stack([i, (i + 1) % n])


def grid_graph(h: int, w: int) -> torch.Tensor:
    return grid(h, w)[0]


def random_graph(n: int, p: float, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return erdos_renyi_graph(n, p)


def disconnected() -> tuple[torch.Tensor, int]:
    """Two rings (12, 30 nodes), a path of 3 and 2 isolated nodes: 47 nodes."""
    a, b = ring(12), ring(30) + 12
    path = torch.tensor([[42, 43], [43, 44]])
    return torch.cat([a, b, path], dim=1), 47


def normalized_laplacian(edge_index: torch.Tensor, n: int, rw: bool = False) -> np.ndarray:
    a = np.zeros((n, n))
    ei = edge_index.numpy()
    a[ei[0], ei[1]] = 1
    a[ei[1], ei[0]] = 1
    np.fill_diagonal(a, 0)
    d = a.sum(1)
    if rw:
        dinv = np.where(d > 0, 1 / np.where(d > 0, d, 1), 0)
        return np.eye(n) - dinv[:, None] * a
    dis = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0)
    return np.eye(n) - dis[:, None] * a * dis[None, :]


GRAPHS = {
    "ring": (ring(40), 40),
    "grid": (grid_graph(9, 11), 99),
    "random": (random_graph(120, 0.06, seed=0), 120),
    "disconnected": disconnected(),
}


def check_eigenpairs(out, edge_index, n, k, rw=False, atol=1e-5):
    vec, val = out["lap_vec"], out["lap_val"]
    assert vec.shape == val.shape == (n, k) and vec.dtype == val.dtype == torch.float32
    m = min(n, k)
    v, lam = vec[:, :m].double().numpy(), val[0, :m].double().numpy()
    assert bool((val[:, :m] == val[0, :m]).all())  # eigenvalues repeated on every row
    lap = normalized_laplacian(edge_index, n, rw=rw)
    np.testing.assert_allclose(lap @ v, v * lam, atol=atol)
    np.testing.assert_allclose(np.linalg.norm(v, axis=0), 1.0, atol=1e-6)
    assert np.all(np.diff(lam) >= -1e-7) and lam.min() >= 0.0 and lam.max() <= 2.0
    # the k smallest: compare with the full dense spectrum
    ref = np.linalg.eigvalsh(normalized_laplacian(edge_index, n))[:m]
    np.testing.assert_allclose(lam, ref, atol=1e-5)
    return v, lam


@pytest.mark.parametrize("threshold", [DENSE, SPARSE], ids=["dense", "sparse"])
@pytest.mark.parametrize("name", list(GRAPHS))
def test_eigen_equation(name, threshold):
    edge_index, n = GRAPHS[name]
    out = LaplacianPE(k=8, eigsh_threshold=threshold).compute(edge_index, n)
    v, lam = check_eigenpairs(out, edge_index, n, 8)
    assert lam[0] == 0.0


def test_disconnected_graph_values():
    edge_index, n = disconnected()
    out = LaplacianPE(k=8, eigsh_threshold=SPARSE).compute(edge_index, n)
    lam = out["lap_val"][0].double().numpy()
    # one 0 per component with edges (2 rings + a path); each 0-vector lives on one component
    np.testing.assert_allclose(lam[:3], 0.0, atol=1e-12)
    supports = [set(np.flatnonzero(out["lap_vec"][:, j].numpy() != 0)) for j in range(3)]
    assert sorted(map(len, supports)) == [3, 12, 30]


def test_isolated_nodes_have_eigenvalue_one():
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])  # triangle 0-1-2, nodes 3, 4, 5 isolated
    out = LaplacianPE(k=6).compute(edge_index, 6)
    np.testing.assert_allclose(out["lap_val"][0].numpy(), [0, 1, 1, 1, 1.5, 1.5], atol=1e-6)
    vec = out["lap_vec"].numpy()
    for j, node in zip(range(1, 4), (3, 4, 5)):
        np.testing.assert_array_equal(vec[:, j], np.eye(6)[node])
    np.testing.assert_allclose(vec[:3, 0], np.full(3, 3 ** -0.5), atol=1e-7)


def test_more_components_than_k_needs_no_solver():
    edge_index = torch.stack([torch.arange(0, 20, 2), torch.arange(1, 20, 2)])  # 10 disjoint edges
    out = LaplacianPE(k=4, eigsh_threshold=SPARSE).compute(edge_index, 20)
    assert torch.all(out["lap_val"] == 0)
    check_eigenpairs(out, edge_index, 20, 4)


def test_fewer_nodes_than_k_pads_with_nan():
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])  # path of 5 nodes
    out = LaplacianPE(k=8).compute(edge_index, 5)
    assert torch.isnan(out["lap_vec"][:, 5:]).all() and torch.isnan(out["lap_val"][:, 5:]).all()
    assert torch.isfinite(out["lap_vec"][:, :5]).all() and torch.isfinite(out["lap_val"][:, :5]).all()
    check_eigenpairs(out, edge_index, 5, 8)
    # a path's spectrum: 1 - cos(pi j / (n - 1)), j = 0..n-1
    np.testing.assert_allclose(out["lap_val"][0, :5].numpy(), 1 - np.cos(np.pi * np.arange(5) / 4), atol=1e-6)


def test_empty_and_edgeless_graphs():
    out = LaplacianPE(k=3).compute(torch.empty(2, 0, dtype=torch.long), 0)
    assert out["lap_vec"].shape == (0, 3)
    out = LaplacianPE(k=3).compute(torch.empty(2, 0, dtype=torch.long), 4)
    np.testing.assert_array_equal(out["lap_val"][0].numpy(), [1, 1, 1])


@pytest.mark.parametrize("edge_index,n", [(grid_graph(14, 15), 210), (random_graph(250, 0.04, seed=1), 250),
                                          (ring(200), 200)], ids=["grid", "random", "ring"])
def test_sparse_path_agrees_with_dense_path(edge_index, n):
    k = 10
    dense = LaplacianPE(k=k, eigsh_threshold=DENSE).compute(edge_index, n)
    sparse = LaplacianPE(k=k, eigsh_threshold=SPARSE).compute(edge_index, n)
    lam_d, lam_s = dense["lap_val"][0].double().numpy(), sparse["lap_val"][0].double().numpy()
    np.testing.assert_allclose(lam_s, lam_d, atol=1e-5)
    full = np.linalg.eigvalsh(normalized_laplacian(edge_index, n))
    for j in range(k):  # same vector (up to sign) wherever the eigenvalue is simple
        gap = np.min(np.abs(np.delete(full, np.argmin(np.abs(full - lam_d[j]))) - lam_d[j]))
        if gap > 1e-3:
            dot = float(dense["lap_vec"][:, j].double() @ sparse["lap_vec"][:, j].double())
            assert abs(dot) == pytest.approx(1.0, abs=1e-4)
    check_eigenpairs(sparse, edge_index, n, k)


def test_directed_input_is_symmetrised_and_self_loops_dropped():
    edge_index, n = ring(16), 16
    both = torch.cat([edge_index, edge_index.flip(0), torch.tensor([[3, 5], [3, 5]])], dim=1)
    a = LaplacianPE(k=5).compute(edge_index, n)
    b = LaplacianPE(k=5).compute(both, n)
    assert torch.equal(a["lap_val"], b["lap_val"]) and torch.equal(a["lap_vec"], b["lap_vec"])


def test_random_walk_normalization():
    edge_index, n = random_graph(60, 0.1, seed=3), 60
    out = LaplacianPE(k=6, normalization="rw").compute(edge_index, n)
    v, lam = out["lap_vec"].double().numpy(), out["lap_val"][0].double().numpy()
    lap_rw = normalized_laplacian(edge_index, n, rw=True)
    np.testing.assert_allclose(lap_rw @ v, v * lam, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(v, axis=0), 1.0, atol=1e-6)
    sym = LaplacianPE(k=6).compute(edge_index, n)
    np.testing.assert_allclose(lam, sym["lap_val"][0].numpy(), atol=1e-6)


def test_deterministic_and_call_writes_data():
    from torch_geometric.data import Data

    edge_index, n = GRAPHS["random"]
    pe = LaplacianPE(k=4, eigsh_threshold=SPARSE)
    a, b = pe.compute(edge_index, n), pe.compute(edge_index, n)
    assert torch.equal(a["lap_vec"], b["lap_vec"])
    data = pe(Data(edge_index=edge_index, num_nodes=n))
    assert torch.equal(data.lap_vec, a["lap_vec"]) and data.lap_val.shape == (n, 4)
    assert pe.keys == ("lap_vec", "lap_val") and pe.in_dim == 4


def test_cache_key_and_repr():
    assert LaplacianPE(k=4).cache_key() != LaplacianPE(k=5).cache_key()
    assert repr(LaplacianPE(k=4)).startswith("LaplacianPE(") and "k=4" in repr(LaplacianPE(k=4))


@pytest.mark.parametrize("kwargs,word", [({"k": 0}, "k"), ({"normalization": "none"}, "normalization"),
                                         ({"eigsh_threshold": -1}, "eigsh_threshold"), ({"tol": -1.0}, "tol"),
                                         ({"k": 8, "ncv": 4}, "ncv")])
def test_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        LaplacianPE(**kwargs)


def test_bad_edge_index():
    with pytest.raises(ValueError, match="num_nodes"):
        LaplacianPE(k=2).compute(torch.tensor([[0, 5], [5, 0]]), 3)
