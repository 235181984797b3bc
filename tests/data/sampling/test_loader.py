"""NodeLoader: gathered rows, loss masks, shuffles, evaluation passes, DDP shards, workers, release."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from graphgt.data.sampling import NeighborSampler, NodeLoader, TokenSampler, num_batches, num_eval_batches, plan_batches
from graphgt.data.store import write_store
from graphgt.nn.attention.base import AttentionContext
from graphgt.train.loop import select

from .graphs import neighbours, random_csr

N, F = 240, 6


def make_store(path, multilabel=False, fp16=True):
    indptr, indices = random_csr(N, 700, seed=12)
    rng = np.random.default_rng(12)
    x = rng.normal(size=(N, F)).astype(np.float16 if fp16 else np.float32)
    if multilabel:
        y = rng.integers(0, 2, size=(N, 3)).astype(np.float32)
        y[rng.random((N, 3)) < 0.3] = np.nan
        y[::7] = np.nan                                                            # fully unlabelled rows
    else:
        y = rng.integers(0, 5, size=N).astype(np.int16)
        y[::4] = -1
    perm = rng.permutation(N)
    extra = {"pe/rwse": rng.normal(size=(N, 4)).astype(np.float32),
             "pe/lap": rng.normal(size=(N, 3)).astype(np.float32)}
    return write_store(path, "toy", N, indptr, indices, x=x, y=y,
                       splits={"train": perm[:150], "val": perm[150:200], "test": perm[200:]}, extra=extra)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("sampling") / "toy")


def batches_equal(a, b):
    assert a.keys() == b.keys()
    for key in a.keys():
        va, vb = a[key], b[key]
        if isinstance(va, torch.Tensor):
            assert torch.equal(va, vb), key
        else:
            assert va == vb, key


def test_neighbor_batches_gather_the_store(store):
    sampler = NeighborSampler(store.indptr, store.indices, [4, 3])
    train = np.asarray(store.split("train"))
    loader = NodeLoader(store, train, sampler, batch_size=64, shuffle=True, pe_keys=["rwse", "lap"])
    adj = neighbours(np.asarray(store.indptr), np.asarray(store.indices))
    x, y, pe = np.asarray(store.x), np.asarray(store.y), store.pe()
    assert len(loader) == 3
    seen = []
    for data in loader:
        n, b = data.num_nodes, data.num_seeds
        ids = data.n_id.numpy()
        assert data.x.dtype == torch.float32 and data.x.shape == (n, F)
        np.testing.assert_array_equal(data.x.numpy(), x[ids].astype(np.float32))
        assert data.y.dtype == torch.long and torch.equal(data.y, torch.from_numpy(y[ids].astype(np.int64)))
        want_mask = np.zeros(n, bool)
        want_mask[:b] = y[ids[:b]] >= 0
        assert torch.equal(data.loss_mask, torch.from_numpy(want_mask))
        for key in ("rwse", "lap"):
            np.testing.assert_array_equal(data[key].numpy(), pe[key][ids])
        assert data.edge_index.dtype == torch.long and int(data.edge_index.max()) < n
        for s, t in ids[data.edge_index.numpy()].T.tolist():
            assert s in adj[t]
        assert torch.equal(data.batch, torch.zeros(n, dtype=torch.long)) and data.num_graphs == 1
        ctx = AttentionContext.from_batch(data)
        assert ctx.num_graphs == 1 and ctx.batch.shape == (n,)
        out, target = select(torch.randn(n, 5), data)
        assert out.shape[0] == target.shape[0] == int(want_mask.sum())
        assert sum(data.num_sampled_nodes) == n
        seen.extend(ids[:b].tolist())
    assert sorted(seen) == sorted(train.tolist())


def test_multilabel_and_float32(tmp_path):
    st = make_store(tmp_path / "ml", multilabel=True, fp16=False)
    sampler = NeighborSampler(st.indptr, st.indices, [3])
    loader = NodeLoader(st, np.arange(N), sampler, batch_size=100, shuffle=False)
    y = np.asarray(st.y)
    for data in loader:
        ids, b = data.n_id.numpy(), data.num_seeds
        assert data.y.dtype == torch.float32 and data.y.shape == (data.num_nodes, 3)
        np.testing.assert_array_equal(data.y.numpy(), y[ids])
        want = np.zeros(data.num_nodes, bool)
        want[:b] = ~np.isnan(y[ids[:b]]).all(1)
        assert torch.equal(data.loss_mask, torch.from_numpy(want))


def test_shuffle_is_new_each_pass_and_reproducible(store):
    sampler = NeighborSampler(store.indptr, store.indices, [3, 2])
    train = np.asarray(store.split("train"))
    a = NodeLoader(store, train, sampler, batch_size=40, shuffle=True, seed=7)
    b = NodeLoader(store, train, sampler, batch_size=40, shuffle=True, seed=7)
    passes_a = [[d.n_id[:d.num_seeds].clone() for d in a] for _ in range(3)]
    passes_b = [[d.n_id[:d.num_seeds].clone() for d in b] for _ in range(3)]
    for pa, pb in zip(passes_a, passes_b):
        assert all(torch.equal(u, v) for u, v in zip(pa, pb))
        assert sorted(torch.cat(pa).tolist()) == sorted(train.tolist())            # every seed once per pass
    assert not torch.equal(torch.cat(passes_a[0]), torch.cat(passes_a[1]))
    a.set_epoch(1)                                                                 # replays pass 1
    again = [d for d in a]
    assert all(torch.equal(d.n_id[:d.num_seeds], s) for d, s in zip(again, passes_a[1]))
    other = NodeLoader(store, train, sampler, batch_size=40, shuffle=True, seed=8)
    assert not torch.equal(torch.cat([d.n_id[:d.num_seeds] for d in other]), torch.cat(passes_a[0]))


def test_evaluation_covers_every_seed_once_in_order(store):
    sampler = NeighborSampler(store.indptr, store.indices, [-1, 8])                 # larger eval fan-outs
    val = np.asarray(store.split("val"))
    loader = NodeLoader(store, val, sampler, batch_size=16, shuffle=False)
    first = list(loader)
    second = list(loader)
    order = torch.cat([d.n_id[:d.num_seeds] for d in first])
    assert order.tolist() == val.tolist()
    assert all(d.num_seeds <= 16 for d in first) and len(first) == len(loader) == 4
    for a, b in zip(first, second):                                                # same samples every pass
        batches_equal(a, b)


@pytest.mark.parametrize("n,batch_size,world_size", [(150, 40, 1), (150, 40, 2), (151, 16, 3), (1000, 64, 4),
                                                     (97, 7, 8), (10, 3, 3), (33, 1, 3)])
def test_ddp_shards_disjoint_covering_equal_length(n, batch_size, world_size):
    seeds = np.random.default_rng(n).permutation(5 * n)[:n]
    for epoch in (0, 3):
        per_rank = [plan_batches(seeds, batch_size, True, 5, epoch, r, world_size) for r in range(world_size)]
        assert {len(p) for p in per_rank} == {num_batches(n, batch_size, world_size)}  # same number of steps
        flat = np.concatenate([np.concatenate(p) for p in per_rank])
        assert len(flat) == n and sorted(flat.tolist()) == sorted(seeds.tolist())  # disjoint and covering
        assert all(0 < len(b) <= batch_size for p in per_rank for b in p)
        # the ranks' step-i batches are together one process's batch i with a W times larger batch
        single = plan_batches(seeds, batch_size * world_size, True, 5, epoch)
        for i, batch in enumerate(single):
            np.testing.assert_array_equal(np.concatenate([p[i] for p in per_rank]), batch)
    # evaluation: the single-process batches dealt round-robin
    single = plan_batches(seeds, batch_size, False, 5, 0)
    per_rank = [plan_batches(seeds, batch_size, False, 5, 0, r, world_size) for r in range(world_size)]
    assert [len(p) for p in per_rank] == [num_eval_batches(n, batch_size, r, world_size) for r in range(world_size)]
    for g, batch in enumerate(single):
        np.testing.assert_array_equal(per_rank[g % world_size][g // world_size], batch)


def test_ddp_loaders(store):
    sampler = NeighborSampler(store.indptr, store.indices, [3])
    train = np.asarray(store.split("train"))
    loaders = [NodeLoader(store, train, sampler, batch_size=32, shuffle=True, seed=1, rank=r, world_size=3)
               for r in range(3)]
    assert {len(ld) for ld in loaders} == {2}
    for _ in range(2):
        got = [torch.cat([d.n_id[:d.num_seeds] for d in ld]) for ld in loaders]
        assert sorted(torch.cat(got).tolist()) == sorted(train.tolist())
    with pytest.raises(ValueError, match="empty batch"):
        NodeLoader(store, train[:3], sampler, batch_size=1, shuffle=True, world_size=4)
    with pytest.raises(ValueError, match="rank=3"):
        NodeLoader(store, train, sampler, batch_size=8, shuffle=True, rank=3, world_size=3)


def test_workers_give_identical_batches(store):
    sampler = NeighborSampler(store.indptr, store.indices, [4, 2])
    train = np.asarray(store.split("train"))
    kw = dict(batch_size=48, shuffle=True, seed=3, pe_keys=["rwse"])
    ref = NodeLoader(store, train, sampler, **kw)
    par = NodeLoader(store, train, sampler, num_workers=2, **kw)
    for _ in range(2):                                                             # persistent workers, 2 passes
        a, b = list(ref), list(par)
        assert len(a) == len(b) == len(ref)
        for u, v in zip(a, b):
            batches_equal(u, v)
    assert par._builder._sampled == 0 and ref._builder._sampled == 2 * len(ref)   # par's were sampled by workers
    tokens = TokenSampler(store.indptr, store.indices, 6)
    one = list(NodeLoader(store, train, tokens, batch_size=64, shuffle=True, num_workers=1))
    zero = list(NodeLoader(store, train, tokens, batch_size=64, shuffle=True, num_workers=0))
    for u, v in zip(one, zero):
        batches_equal(u, v)


def test_token_batches(store):
    sampler = TokenSampler(store.indptr, store.indices, 8)
    train = np.asarray(store.split("train"))
    loader = NodeLoader(store, train, sampler, batch_size=50, shuffle=True, pe_keys=["lap"])
    x, y, lap = np.asarray(store.x), np.asarray(store.y), store.pe()["lap"]
    seen = []
    for data in loader:
        b = data.num_seeds
        seeds = data.n_id.numpy()
        assert data.token_x.shape == (b, 8, F) and data.token_x.dtype == torch.float32
        np.testing.assert_array_equal(data.x.numpy(), x[seeds].astype(np.float32))
        np.testing.assert_array_equal(data.token_x.numpy(), x[data.token_ids.numpy()].astype(np.float32))
        np.testing.assert_array_equal(data.token_lap.numpy(), lap[data.token_ids.numpy()])
        np.testing.assert_array_equal(data.lap.numpy(), lap[seeds])
        assert torch.equal(data.token_ids[:, 0], data.n_id)
        assert data.token_hop.dtype == torch.long and data.token_mask.dtype == torch.bool
        assert torch.equal(data.y, torch.from_numpy(y[seeds].astype(np.int64)))
        assert torch.equal(data.loss_mask, torch.from_numpy(y[seeds] >= 0))
        seen.extend(seeds.tolist())
    assert sorted(seen) == sorted(train.tolist())


def test_release_every(store, monkeypatch):
    sampler = NeighborSampler(store.indptr, store.indices, [2])
    calls = []
    monkeypatch.setattr(store, "release", lambda: calls.append(1))
    loader = NodeLoader(store, np.arange(N), sampler, batch_size=20, shuffle=False, release_every=5)
    assert len(list(loader)) == 12 and len(calls) == 2


def test_argument_errors(store, tmp_path):
    sampler = NeighborSampler(store.indptr, store.indices, [2])
    train = np.asarray(store.split("train"))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        NodeLoader(store, train, sampler, batch_size=0, shuffle=True)
    with pytest.raises(ValueError, match=r"pe_keys \['nope'\]"):
        NodeLoader(store, train, sampler, batch_size=8, shuffle=True, pe_keys=["nope"])
    with pytest.raises(ValueError, match="distinct"):
        NodeLoader(store, np.array([1, 1, 2]), sampler, batch_size=8, shuffle=True)
    small = NeighborSampler(*random_csr(50, 100, seed=1), [2])
    with pytest.raises(ValueError, match="50 nodes"):
        NodeLoader(store, train, small, batch_size=8, shuffle=True)
    with pytest.raises(TypeError, match="NeighborSampler, RandomNodeSampler or TokenSampler"):
        NodeLoader(store, train, object(), batch_size=8, shuffle=True)


def test_batches_train_a_gps_model(store):
    """A loader batch goes through a node-level GPS model and the trainer's loss selection."""
    from functools import partial

    from graphgt.nn.attention import PerformerAttention
    from graphgt.nn.local import GCNLayer
    from graphgt.nn.model import GPSModel
    from graphgt.spec import DataSpec, FloatFeatures, Task
    from graphgt.train.losses import multiclass_loss

    spec = DataSpec(Task("multiclass", 5, "node", "accuracy"), FloatFeatures(F), None, "toy")
    torch.manual_seed(0)
    model = GPSModel(spec, hidden=8, layers=1, local=partial(GCNLayer), attention=partial(PerformerAttention))
    sampler = NeighborSampler(store.indptr, store.indices, [3, 3])
    data = next(iter(NodeLoader(store, np.asarray(store.split("train")), sampler, batch_size=32, shuffle=True)))
    pred, y = select(model(data), data)
    loss = multiclass_loss(pred, y)
    loss.backward()
    assert pred.shape == (int(data.loss_mask.sum()), 5) and torch.isfinite(loss)
