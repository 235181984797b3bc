"""Propagated features Â^p x of a store (graphgt.data.store.hop_features) and their token batches."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from graphgt.data.store.hop_features import compute_hop_features, hop_key, propagate
from graphgt.data.sampling import NodeLoader, TokenSampler
from graphgt.data.store import GraphStore, csr_from_edges, write_store


def _graph(n=60, m=200, seed=0):
    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, n, m), rng.integers(0, n, m)
    keep = src != dst
    src, dst = np.concatenate([src[keep], dst[keep]]), np.concatenate([dst[keep], src[keep]])
    pairs = np.unique(np.stack([src, dst], 1), axis=0)
    indptr, indices = csr_from_edges(pairs[:, 0], pairs[:, 1], n)
    return indptr, indices


def _dense_reference(indptr, indices, x, norm):
    n = indptr.shape[0] - 1
    a = sp.csr_matrix((np.ones(indices.shape[0]), indices, indptr), shape=(n, n)).toarray()
    deg = a.sum(1)
    if norm == "gcn":
        d = 1 / np.sqrt(deg + 1)
        m = d[:, None] * (a + np.eye(n)) * d[None, :]
    else:
        m = np.divide(a, deg[:, None], out=np.zeros_like(a), where=deg[:, None] > 0)
    return m @ x.astype(np.float64)


@pytest.mark.parametrize("norm", ["gcn", "mean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_propagate_matches_dense_matrix(norm, dtype):
    indptr, indices = _graph()
    x = np.random.default_rng(1).normal(size=(60, 7)).astype(dtype)
    out = propagate(indptr, indices, x, norm, chunk_rows=16)  # several chunks
    ref = _dense_reference(indptr, indices, x.astype(np.float32), norm)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    if norm == "mean":  # a node without neighbours keeps 0
        iso = np.flatnonzero(np.diff(indptr) == 0)
        assert np.all(out[iso] == 0)


def test_half_decoding_covers_subnormals_and_infinities():
    indptr = np.array([0, 0], dtype=np.int64)  # one isolated node: gcn gives x itself (weight 1/1)
    vals = np.array([[1e-7, -2.5, 65504.0, np.inf, -0.0, 6e-5]], dtype=np.float16)
    out = propagate(indptr, np.zeros(0, np.int32), vals, "gcn")
    np.testing.assert_array_equal(out, vals.astype(np.float32))


def _store(path, dtype=np.float32):
    indptr, indices = _graph()
    x = np.random.default_rng(2).normal(size=(60, 5)).astype(dtype)
    y = np.arange(60) % 3
    return write_store(path, "g", 60, indptr, indices, x=x, y=y,
                       splits={"train": np.arange(30), "val": np.arange(30, 45), "test": np.arange(45, 60)},
                       task={"kind": "multiclass", "num_outputs": 3, "metric": "accuracy"})


def test_compute_hop_features_writes_powers_once(tmp_path):
    store = _store(tmp_path / "s", np.float16)
    out = compute_hop_features(store.path, hops=2, chunk_rows=7)
    x = store.x.astype(np.float32)
    a1 = _dense_reference(store.indptr, store.indices, x, "gcn")
    np.testing.assert_allclose(out.array(hop_key(1)).astype(np.float32), a1, rtol=2e-3, atol=2e-3)
    assert out.array(hop_key(2)).dtype == np.float16  # stored like x
    a2 = _dense_reference(store.indptr, store.indices, out.array(hop_key(1)).astype(np.float32), "gcn")
    np.testing.assert_allclose(out.array(hop_key(2)).astype(np.float32), a2, rtol=2e-3, atol=2e-3)
    assert out.meta["hop_features"] == {"hops": 2, "norm": "gcn"}
    mtime = (out.path / f"{hop_key(1)}.npy").stat().st_mtime_ns
    again = compute_hop_features(store.path, hops=1)  # recorded: nothing recomputed
    assert (again.path / f"{hop_key(1)}.npy").stat().st_mtime_ns == mtime
    other = compute_hop_features(store.path, hops=2, norm="mean")  # another norm: recomputed
    assert other.meta["hop_features"]["norm"] == "mean"


def test_interrupted_run_is_not_trusted(tmp_path, monkeypatch):
    store = _store(tmp_path / "s")
    from graphgt.data.store import hop_features as hf

    calls = {"n": 0}
    real = hf.propagate

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(hf, "propagate", failing)
    with pytest.raises(KeyboardInterrupt):
        compute_hop_features(store.path, hops=2)
    meta = json.loads((store.path / "meta.json").read_text())
    assert "hop_features" not in meta  # hop 1 was written, but nothing vouches for a complete run
    assert not list((store.path / "extra").glob(".*tmp"))  # no temporary file left
    monkeypatch.setattr(hf, "propagate", real)
    assert GraphStore.open(store.path).meta.get("hop_features") is None
    done = compute_hop_features(store.path, hops=2)
    assert done.meta["hop_features"]["hops"] == 2


def test_errors_name_the_bad_value(tmp_path):
    store = _store(tmp_path / "s")
    with pytest.raises(ValueError, match="hops=0"):
        compute_hop_features(store.path, hops=0)
    with pytest.raises(ValueError, match="norm='sym'"):
        compute_hop_features(store.path, hops=1, norm="sym")
    sampler = TokenSampler(store.indptr, store.indices, num_tokens=6)
    with pytest.raises(ValueError, match="compute_hop_features"):
        NodeLoader(store, store.split("train"), sampler, batch_size=8, shuffle=False, hop_features=2)


def test_token_batches_carry_the_tokens_propagated_rows(tmp_path):
    store = compute_hop_features(_store(tmp_path / "s").path, hops=2)
    sampler = TokenSampler(store.indptr, store.indices, num_tokens=6)
    loader = NodeLoader(store, store.split("train"), sampler, batch_size=8, shuffle=True, hop_features=2)
    batch = next(iter(loader))
    b, k = batch.token_ids.shape
    assert batch.token_xhop.shape == (b, k, 2, 5)
    for p in (1, 2):
        rows = store.array(hop_key(p))[batch.token_ids.numpy().reshape(-1)].reshape(b, k, 5)
        assert torch.equal(batch.token_xhop[:, :, p - 1], torch.from_numpy(rows.astype(np.float32)))
