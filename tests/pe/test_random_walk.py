"""RandomWalkSE: exact return probabilities (vs explicit powers of D^-1 A and vs PyG), block sizes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.transforms import AddRandomWalkPE
from torch_geometric.utils import erdos_renyi_graph, grid, to_undirected

from graphgt.pe import RandomWalkSE
from graphgt.pe.random_walk import return_probabilities


def dense_reference(edge_index: torch.Tensor, n: int, steps: int) -> np.ndarray:
    """``[(P^t)_ii for t in 1..steps]`` with P = D^-1 A by explicit dense matrix powers (float64)."""
    a = np.zeros((n, n))
    np.add.at(a, (edge_index[0].numpy(), edge_index[1].numpy()), 1.0)
    d = a.sum(1, keepdims=True)
    p = np.divide(a, d, out=np.zeros_like(a), where=d > 0)
    out, m = [], np.eye(n)
    for _ in range(steps):
        m = m @ p
        out.append(np.diag(m).copy())
    return np.stack(out, axis=1)


def er(n: int, p: float, seed: int, directed: bool = False) -> torch.Tensor:
    torch.manual_seed(seed)
    return erdos_renyi_graph(n, p, directed=directed)


def undirected_graphs():
    ring = torch.stack([torch.arange(9), (torch.arange(9) + 1) % 9])
    loops = torch.cat([er(30, 0.1, 1), torch.tensor([[4, 7], [4, 7]])], dim=1)  # self loops kept
    return {
        "random_with_isolated": (er(50, 0.05, 0), 50),
        "ring": (to_undirected(ring), 9),
        "grid": (grid(5, 6)[0], 30),
        "self_loops": (loops, 30),
        "dense_random": (er(300, 0.2, 2), 300),  # nnz * block >= 2^20: the parallel kernel
    }


def directed_graphs():
    sinks = torch.tensor([[0, 1, 2, 2, 3], [1, 2, 0, 3, 4]])  # node 4 has no out-edge
    return {"random_directed": (er(40, 0.1, 3, directed=True), 40), "sinks": (sinks, 6),
            "dense_directed": (er(200, 0.3, 4, directed=True), 200)}


@pytest.mark.parametrize("name,graph", list(undirected_graphs().items()) + list(directed_graphs().items()))
def test_matches_dense_matrix_powers(name, graph):
    edge_index, n = graph
    out = RandomWalkSE(steps=16).compute(edge_index, n)["rwse"]
    assert out.shape == (n, 16) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), dense_reference(edge_index, n, 16), atol=1e-6)


def test_symmetry_detection():
    _, sym = return_probabilities(undirected_graphs()["grid"][0], 30, 4)
    _, directed = return_probabilities(directed_graphs()["sinks"][0], 6, 4)
    assert sym and not directed


def test_isolated_and_sink_nodes_are_zero():
    edge_index = torch.tensor([[0, 1], [1, 0]])
    out = RandomWalkSE(steps=4).compute(edge_index, 3)["rwse"]
    np.testing.assert_array_equal(out.numpy(), [[0, 1, 0, 1], [0, 1, 0, 1], [0, 0, 0, 0]])
    out = RandomWalkSE(steps=3).compute(torch.tensor([[0], [1]]), 2)["rwse"]  # 0 -> 1, 1 is a sink
    assert torch.all(out == 0)


@pytest.mark.parametrize("directed", [False, True])
def test_matches_pyg_add_random_walk_pe(directed):
    edge_index = er(60, 0.08, 5, directed=directed)
    ours = RandomWalkSE(steps=12).compute(edge_index, 60)["rwse"]
    pyg = AddRandomWalkPE(walk_length=12)(Data(edge_index=edge_index, num_nodes=60)).random_walk_pe
    np.testing.assert_allclose(ours.numpy(), pyg.numpy(), atol=1e-6)


@pytest.mark.parametrize("directed", [False, True])
def test_block_size_and_sparse_stage_do_not_change_the_result(directed):
    edge_index = er(70, 0.06, 6, directed=directed)
    ref = RandomWalkSE(steps=9, dtype=torch.float64).compute(edge_index, 70)["rwse"]
    for block_size in (1, 3, 16, 70, 500):
        for density in (0.0, 0.02, 1.0):  # all dense, the default switch, all sparse
            out = RandomWalkSE(steps=9, block_size=block_size, sparse_density=density).compute(edge_index, 70)
            np.testing.assert_allclose(out["rwse"].numpy(), ref.numpy(), atol=2e-7)


def test_large_ring_stays_sparse_and_is_exact():
    """A 100k-node ring: closed form (P^t)_ii = C(t, t/2) / 2^t for even t < n, 0 for odd t."""
    n, steps = 100_000, 16
    i = torch.arange(n)
    edge_index = torch.cat([torch.stack([i, (i + 1) % n]), torch.stack([(i + 1) % n, i])], dim=1)
    out = RandomWalkSE(steps=steps, block_size=4096).compute(edge_index, n)["rwse"]
    expect = [math.comb(t, t // 2) / 2 ** t if t % 2 == 0 else 0.0 for t in range(1, steps + 1)]
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(expect, (n, steps)), atol=1e-7)


def test_call_writes_data_and_protocol():
    pe = RandomWalkSE(steps=5)
    data = pe(Data(edge_index=grid(3, 3)[0], num_nodes=9))
    assert data.rwse.shape == (9, 5) and pe.keys == ("rwse",) and pe.in_dim == 5
    assert "steps=5" in repr(pe) and "block_size" in repr(pe)
    assert RandomWalkSE(steps=5).cache_key() != RandomWalkSE(steps=6).cache_key()
    assert RandomWalkSE(block_size=8).cache_key() == RandomWalkSE(block_size=64).cache_key()
    assert RandomWalkSE(steps=3).compute(torch.empty(2, 0, dtype=torch.long), 0)["rwse"].shape == (0, 3)


@pytest.mark.parametrize("kwargs,word", [({"steps": 0}, "steps"), ({"block_size": 0}, "block_size"),
                                         ({"dtype": torch.float16}, "dtype"), ({"sparse_density": 2.0}, "sparse_density")])
def test_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        RandomWalkSE(**kwargs)
