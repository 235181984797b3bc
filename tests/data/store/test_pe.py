"""compute_store_pe: PEs of a graph store's CSR, stored as pe/<key> with their cache_key in the meta."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch_geometric.utils import erdos_renyi_graph

import graphgt.data.store.core as store_core
import graphgt.data.store.pe as store_pe_mod
from graphgt.data.store import GraphStore, write_store
from graphgt.pe import LaplacianPE, PositionalEncoding, RandomWalkSE
from graphgt.pe.csr import csr_from_edge_index
from graphgt.pe.rw_estimator import RandomWalkSEEstimator
from graphgt.data.store.pe import compute_store_pe, is_up_to_date, pe_of_csr, stored_pe_keys


def make_store(path, edge_index: torch.Tensor, n: int) -> GraphStore:
    indptr, indices = csr_from_edge_index(edge_index, n)
    return write_store(path, "toy", n, indptr, indices, x=np.zeros((n, 2), np.float32))


@pytest.fixture
def toy(tmp_path):
    torch.manual_seed(0)
    edge_index = erdos_renyi_graph(300, 0.03)  # undirected (both directions), some isolated nodes
    n = 302
    return make_store(tmp_path / "store", edge_index, n), edge_index, n


PES = [LaplacianPE(k=4), LaplacianPE(k=5, normalization="rw"), RandomWalkSE(steps=6),
       RandomWalkSEEstimator(steps=6, probes=32)]


@pytest.mark.parametrize("pe", PES, ids=["lap", "lap_rw", "rwse", "rwse_estimator"])
def test_round_trip_equals_compute(toy, pe):
    store, edge_index, n = toy
    store = compute_store_pe(store.path, pe)
    expected = pe.compute(edge_index, n)
    stored = store.pe()
    for key in pe.keys:
        assert stored[key].dtype == np.float32 and stored[key].shape == tuple(expected[key].shape)
        np.testing.assert_array_equal(np.asarray(stored[key]), expected[key].numpy())
        assert store.meta["pe"][key] == pe.cache_key()
        assert store.meta["arrays"][f"pe/{key}"]["shape"] == list(expected[key].shape)
    assert is_up_to_date(store.path, pe)
    # the rest of the store is untouched
    assert store.has("x") and store.indices.shape[0] == edge_index.shape[1]


def test_second_call_reuses_and_mismatch_recomputes(toy, monkeypatch):
    store, _, _ = toy
    calls = []
    real = store_pe_mod.pe_of_csr

    def counting(pe, *args):
        calls.append(pe.cache_key())
        return real(pe, *args)

    monkeypatch.setattr(store_pe_mod, "pe_of_csr", counting)
    exact = RandomWalkSE(steps=4)
    compute_store_pe(store.path, exact)
    compute_store_pe(store.path, exact)
    assert len(calls) == 1
    estimator = RandomWalkSEEstimator(steps=4, probes=16)  # same key "rwse", other cache_key
    assert not is_up_to_date(store.path, estimator)
    reopened = compute_store_pe(store.path, estimator)
    assert len(calls) == 2 and stored_pe_keys(reopened)["rwse"] == estimator.cache_key()
    compute_store_pe(store.path, estimator, overwrite=True)
    assert len(calls) == 3
    lap = LaplacianPE(k=3)
    reopened = compute_store_pe(store.path, lap)
    assert set(stored_pe_keys(reopened)) == {"rwse", "lap_vec", "lap_val"} and len(calls) == 4
    assert stored_pe_keys(reopened)["rwse"] == estimator.cache_key()


def test_interrupted_write_is_not_trusted(toy, monkeypatch):
    store, _, _ = toy
    compute_store_pe(store.path, RandomWalkSE(steps=4))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store_core, "add_arrays", crash)
    with pytest.raises(OSError):
        compute_store_pe(store.path, RandomWalkSE(steps=5))
    meta = json.loads((store.path / "meta.json").read_text())
    assert "rwse" not in meta["pe"]  # the old record is gone: neither PE is trusted now
    assert not is_up_to_date(store.path, RandomWalkSE(steps=4))
    assert not is_up_to_date(store.path, RandomWalkSE(steps=5))
    assert GraphStore.open(store.path).has("pe/rwse")  # the store itself is still valid


def test_non_simple_csr_matches_edge_index(tmp_path):
    """A store CSR with one-way edges, a self loop, duplicates and unsorted rows: LapPE symmetrises
    it exactly like compute(edge_index)."""
    edge_index = torch.tensor([[0, 0, 1, 2, 2, 3, 3, 4, 5, 5, 6], [2, 1, 2, 3, 3, 3, 4, 0, 6, 4, 5]])
    n = 8
    rows, cols = edge_index.numpy()
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    store = write_store(tmp_path / "s", "odd", n, indptr, cols.astype(np.int32))  # rows as given (unsorted)
    pe = LaplacianPE(k=4)
    stored = compute_store_pe(store.path, pe).pe()
    expected = pe.compute(edge_index, n)
    np.testing.assert_array_equal(np.asarray(stored["lap_val"]), expected["lap_val"].numpy())
    np.testing.assert_array_equal(np.asarray(stored["lap_vec"]), expected["lap_vec"].numpy())
    exact = RandomWalkSE(steps=4)
    np.testing.assert_array_equal(exact.compute_csr(indptr, cols, n)["rwse"].numpy(),
                                  exact.compute(edge_index, n)["rwse"].numpy())


class Degree(PositionalEncoding):
    """A PE without compute_csr: the store path falls back to compute(edge_index)."""

    keys = ("deg",)

    def compute(self, edge_index, num_nodes):
        return {"deg": torch.bincount(edge_index[0], minlength=num_nodes).float()}

    @property
    def in_dim(self):
        return 1


def test_pe_without_csr_entry_point(toy):
    store, edge_index, n = toy
    store = compute_store_pe(store.path, Degree())
    deg = np.asarray(store.pe()["deg"])
    assert deg.shape == (n, 1)
    np.testing.assert_array_equal(deg[:, 0], np.diff(store.indptr))
    out = pe_of_csr(Degree(), store.indptr, store.indices, n)
    assert torch.equal(out["deg"], Degree().compute(edge_index, n)["deg"])


def test_torch_threads_restored(toy):
    store, _, _ = toy
    threads = torch.get_num_threads()
    compute_store_pe(store.path, RandomWalkSEEstimator(steps=4, probes=8))
    assert torch.get_num_threads() == threads
