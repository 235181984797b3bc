"""RandomNodeSampler: exact induced subgraphs, the 1/p context share, determinism, loader batches."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from graphgt.data.sampling import NodeLoader, RandomNodeSampler
from graphgt.nn.gps_layer import TrimPlan

from .graphs import random_csr
from .test_loader import batches_equal, make_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("random_nodes") / "toy")


def test_the_batch_is_the_subgraph_induced_on_seeds_and_context():
    indptr, indices = random_csr(3000, 12000, seed=4)
    sampler = RandomNodeSampler(indptr, indices, num_parts=5)
    seeds = np.random.default_rng(0).choice(3000, 200, replace=False)
    sub = sampler.sample(seeds, 11)
    ids = sub.node_ids
    assert sub.num_seeds == 200 and np.array_equal(ids[:200], seeds)        # seeds first, in the given order
    context = ids[200:]
    assert np.all(np.diff(context) > 0) and not np.isin(context, seeds).any()  # id order, no seed twice
    assert sub.num_sampled_nodes is None and sub.num_sampled_edges is None
    adj = sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(3000, 3000))
    ref = adj[ids][:, ids].tocoo()                                            # row = target t, column = source u
    expected = sorted(zip(ref.col.tolist(), ref.row.tolist()))
    got = list(zip(sub.edge_index[0].tolist(), sub.edge_index[1].tolist()))
    assert sorted(got) == expected and len(got) > 1000
    assert np.all(np.diff(sub.edge_index[1]) >= 0)                            # grouped by target


def test_each_other_node_joins_with_probability_one_over_parts():
    n, parts = 20000, 8
    indptr, indices = random_csr(n, 40000, seed=1)
    sampler = RandomNodeSampler(indptr, indices, num_parts=parts)
    seeds = np.arange(0, n, 100)
    counts = np.zeros(n)
    sizes = []
    for s in range(40):
        ids = sampler.sample(seeds, s).node_ids
        counts[ids[len(seeds):]] += 1
        sizes.append(len(ids) - len(seeds))
    others = n - len(seeds)
    q = 1 / parts
    sd = np.sqrt(others * q * (1 - q))
    assert abs(np.mean(sizes) - others * q) < 5 * sd / np.sqrt(40)          # binomial mean per batch
    assert counts[seeds].sum() == 0
    # uniform over nodes: low and high ids, high- and low-degree nodes are all drawn at rate q
    rest = np.setdiff1d(np.arange(n), seeds)
    degree = np.diff(indptr)[rest]
    for group in (rest[rest < n // 2], rest[rest >= n // 2], rest[degree >= np.median(degree)],
                  rest[degree < np.median(degree)]):
        rate = counts[group].mean() / 40
        assert abs(rate - q) < 5 * np.sqrt(q * (1 - q) / (40 * len(group)))
    assert sampler.batch_size(150) == 19 and sampler.batch_size(7) == 1


def test_same_seed_same_batch_and_pickles_for_workers(tmp_path):
    indptr, indices = random_csr(500, 2000, seed=2)
    np.save(tmp_path / "indices.npy", np.asarray(indices))
    mapped = np.load(tmp_path / "indices.npy", mmap_mode="r")
    sampler = RandomNodeSampler(indptr, mapped, num_parts=4)
    seeds = np.arange(10, 60)
    a, b, c = sampler.sample(seeds, 7), sampler.sample(seeds, 7), sampler.sample(seeds, 8)
    assert np.array_equal(a.node_ids, b.node_ids) and np.array_equal(a.edge_index, b.edge_index)
    assert not np.array_equal(a.node_ids, c.node_ids)
    clone = pickle.loads(pickle.dumps(sampler))
    assert clone.num_parts == 4 and repr(clone) == "RandomNodeSampler(num_nodes=500, num_parts=4)"
    assert np.array_equal(clone.sample(seeds, 7).edge_index, a.edge_index)


def test_bad_arguments_are_named():
    indptr, indices = random_csr(50, 100, seed=3)
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="num_parts"):
            RandomNodeSampler(indptr, indices, num_parts=bad)
    sampler = RandomNodeSampler(indptr, indices, num_parts=2)
    with pytest.raises(ValueError, match="distinct"):
        sampler.sample(np.array([3, 4, 3]), 0)
    with pytest.raises(ValueError, match="outside"):
        sampler.sample(np.array([3, 50]), 0)
    assert RandomNodeSampler(indptr, indices, num_parts=1).sample(np.array([0]), 0).num_nodes == 50  # all of it


def test_a_pass_has_num_parts_batches_and_each_training_node_is_a_loss_node_once(store):
    sampler = RandomNodeSampler(store.indptr, store.indices, num_parts=4)
    train = np.asarray(store.split("train"))
    batch_size = sampler.batch_size(len(train))
    loader = NodeLoader(store, train, sampler, batch_size=batch_size, shuffle=True, seed=5, pe_keys=["rwse"])
    assert len(loader) == 4
    x, y, rwse = np.asarray(store.x, dtype=np.float32), np.asarray(store.y), store.pe()["rwse"]
    loss_nodes = []
    for data in loader:
        n_id = data.n_id.numpy()
        b = data.num_seeds
        assert not hasattr(data, "num_sampled_nodes") and TrimPlan.of(data) is None  # models run on every node
        assert torch.equal(data.x, torch.from_numpy(x[n_id]))
        assert torch.equal(data.rwse, torch.from_numpy(np.asarray(rwse)[n_id]))
        mask = data.loss_mask.numpy()
        assert not mask[b:].any() and np.array_equal(mask[:b], y[n_id[:b]] >= 0)
        loss_nodes += n_id[:b][mask[:b]].tolist()
    assert sorted(loss_nodes) == sorted(train[y[train] >= 0].tolist())
    workers = NodeLoader(store, train, sampler, batch_size=batch_size, shuffle=True, seed=5, pe_keys=["rwse"],
                         num_workers=2)
    loader.set_epoch(0)
    for u, v in zip(loader, workers):
        batches_equal(u, v)
