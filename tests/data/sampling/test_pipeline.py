"""The pipelined loader: workers that gather into reused shared-memory slots, placement on the
device (on CPU: one torch tensor, gathered with torch), ``auto`` resolution of workers and placement."""
from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from graphgt.data.sampling import NeighborSampler, NodeLoader, TokenSampler
from graphgt.data.sampling.loader import (DEVICE_MEMORY_FRACTION, MAX_AUTO_WORKERS, DeviceRows, resolve_num_workers,
                                          resolve_placement)
from graphgt.data.store import write_store

from .test_loader import make_store


def batches_equal(a, b):
    """Same keys in the same order, same values (NaN labels equal NaN), same dtypes."""
    assert a.keys() == b.keys()
    for key in a.keys():
        va, vb = a[key], b[key]
        if isinstance(va, torch.Tensor):
            assert va.dtype == vb.dtype and va.shape == vb.shape, key
            assert torch.equal(va, vb) or torch.allclose(va, vb, rtol=0, atol=0, equal_nan=True), key
        else:
            assert va == vb, key


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("pipeline") / "toy")


def _pool_counts(loader):
    pool = loader._builder.pool
    return pool, int((pool.state.numpy() != 0).sum())


def test_worker_gathered_batches_equal_main_process_ones_and_reuse_slots(store):
    sampler = NeighborSampler(store.indptr, store.indices, [4, 3])
    train = np.asarray(store.split("train"))
    kw = dict(batch_size=16, shuffle=True, seed=5, pe_keys=["rwse", "lap"])
    ref = NodeLoader(store, train, sampler, **kw)
    par = NodeLoader(store, train, sampler, num_workers=2, **kw)
    for _ in range(2):                                          # two passes over persistent workers
        expected = list(ref)
        got = 0
        for a, b in zip(expected, par):                          # one batch held at a time: slots recycle
            batches_equal(a, b)
            assert torch.equal(b.x, torch.from_numpy(np.asarray(store.x)[b.n_id.numpy()].astype(np.float32)))
            got += 1
            del b
        assert got == len(ref) == 10
    gc.collect()
    pool, busy = _pool_counts(par)
    assert busy == 0                                             # every slot freed once its batch was garbage
    assert len(pool._mapped) >= 2                                # batches arrived in slots, not as fresh arrays
    assert par._builder._built == 0                              # the main process gathered nothing


def test_held_batches_are_never_overwritten(store):
    """Holding every batch (more than the slots) falls back to fresh memory; values stay right."""
    sampler = NeighborSampler(store.indptr, store.indices, [4, 3])
    train = np.asarray(store.split("train"))
    ref = list(NodeLoader(store, train, sampler, batch_size=8, shuffle=True, seed=1))
    par = NodeLoader(store, train, sampler, batch_size=8, shuffle=True, seed=1, num_workers=1, prefetch_factor=1)
    held = list(par)                                             # 19 batches, 3 slots
    views = [b.x[:2] for b in held]                              # views keep their slot alive too
    assert len(held) == len(ref) == 19
    for a, b in zip(ref, held):
        batches_equal(a, b)
    del held
    gc.collect()
    pool, busy = _pool_counts(par)
    assert busy >= 1                                             # the views' slots are still held
    for a, v in zip(ref, views):
        assert torch.equal(a.x[:2], v)
    del views
    gc.collect()
    assert _pool_counts(par)[1] == 0


def test_abandoned_pass_frees_its_slots(store):
    sampler = NeighborSampler(store.indptr, store.indices, [3])
    train = np.asarray(store.split("train"))
    ref = NodeLoader(store, train, sampler, batch_size=8, shuffle=True, seed=2)
    par = NodeLoader(store, train, sampler, batch_size=8, shuffle=True, seed=2, num_workers=2)
    for epoch in range(3):                                       # like trainer.limit_train_batches: 2 batches a pass
        ref.set_epoch(epoch)
        par.set_epoch(epoch)
        for i, (a, b) in enumerate(zip(ref, par)):
            batches_equal(a, b)
            if i == 1:
                break
    expected = list(NodeLoader(store, train, sampler, batch_size=8, shuffle=True, seed=2))
    par.set_epoch(0)
    for a, b in zip(expected, par):
        batches_equal(a, b)
    del a, b
    gc.collect()
    assert _pool_counts(par)[1] == 0


def test_token_batches_with_hop_features_in_workers(tmp_path):
    from graphgt.data.store.hop_features import compute_hop_features

    make_store(tmp_path / "s")
    store = compute_hop_features(tmp_path / "s", 2, "gcn")
    sampler = TokenSampler(store.indptr, store.indices, 6)
    train = np.asarray(store.split("train"))
    kw = dict(batch_size=32, shuffle=True, seed=4, pe_keys=["lap"], hop_features=2)
    ref = list(NodeLoader(store, train, sampler, **kw))
    for a, b in zip(ref, NodeLoader(store, train, sampler, num_workers=2, **kw)):
        batches_equal(a, b)
    for a, b in zip(ref, NodeLoader(store, train, sampler, placement="device", **kw)):
        batches_equal(a, b)


@pytest.mark.parametrize("multilabel", [False, True])
def test_device_placement_equals_host_gathering(tmp_path, multilabel):
    store = make_store(tmp_path / "s", multilabel=multilabel)
    sampler = NeighborSampler(store.indptr, store.indices, [4, 3])
    for split, shuffle in (("train", True), ("val", False)):
        seeds = np.asarray(store.split(split))
        kw = dict(batch_size=20, shuffle=shuffle, seed=7, pe_keys=["rwse"])
        host = NodeLoader(store, seeds, sampler, placement="cpu", **kw)
        dev = NodeLoader(store, seeds, sampler, placement="device", device="cpu", **kw)
        assert dev.placement == "device" and isinstance(dev._builder.rows, DeviceRows)
        par = NodeLoader(store, seeds, sampler, placement="device", num_workers=2, **kw)
        assert par._builder.pool is None
        for _ in range(2):
            for a, b, c in zip(host, dev, par):
                batches_equal(a, b)
                batches_equal(a, c)
    rows = dev._builder.rows
    assert rows.arrays["x"].dtype == torch.float16                     # kept as stored, converted per batch
    assert DeviceRows.feature_bytes(store, ["rwse"], 0) == sum(t.numel() * t.element_size()
                                                             for t in [*rows.arrays.values(), rows.y])


def test_shared_device_rows(store):
    sampler = NeighborSampler(store.indptr, store.indices, [2])
    rows = DeviceRows(store, ["rwse"], 0, "cpu")
    train = np.asarray(store.split("train"))
    a = NodeLoader(store, train, sampler, batch_size=30, shuffle=True, placement="device", pe_keys=["rwse"],
                   device_rows=rows)
    assert a._builder.rows is rows
    with pytest.raises(ValueError, match="do not hold this loader's arrays"):
        NodeLoader(store, train, sampler, batch_size=30, shuffle=True, placement="device", pe_keys=["lap"],
                   device_rows=rows)


def test_resolve_placement_rules():
    gib = 2 ** 30
    assert resolve_placement("cpu", "cuda", 1, 100 * gib) == "cpu"
    assert resolve_placement("device", "cpu", 10 ** 12) == "device"
    assert resolve_placement("auto", "cpu", 1) == "cpu"
    assert resolve_placement("auto", None, 1) == "cpu"
    assert resolve_placement("auto", torch.device("cuda", 1), int(DEVICE_MEMORY_FRACTION * 10 * gib) - 1,
                             10 * gib) == "device"
    assert resolve_placement("auto", "cuda:0", int(DEVICE_MEMORY_FRACTION * 10 * gib), 10 * gib) == "cpu"
    with pytest.raises(ValueError, match=r"placement='gpu' must be one of \['auto', 'cpu', 'device'\]"):
        resolve_placement("gpu", "cpu", 1)


def test_resolve_num_workers(monkeypatch):
    assert resolve_num_workers(3) == 3 and resolve_num_workers(0) == 0
    assert resolve_num_workers("auto", cores=1) == 0
    assert resolve_num_workers("auto", cores=2) == 2
    assert resolve_num_workers("auto", cores=64) == MAX_AUTO_WORKERS
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    from graphgt.data.sampling import loader

    monkeypatch.setattr(loader.os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    assert loader.available_cores() == 3 and resolve_num_workers("auto") == 3
    for bad in (-1, "four", 1.5, True):
        with pytest.raises(ValueError, match="must be an int >= 0 or 'auto'"):
            resolve_num_workers(bad)


def test_worker_threads(store):
    """Each worker runs one torch thread; the main process keeps its own."""
    sampler = NeighborSampler(store.indptr, store.indices, [2])
    train = np.asarray(store.split("train"))

    class Probe(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.get_num_threads()

    from graphgt.data.sampling.loader import _worker_init

    before = torch.get_num_threads()
    got = list(torch.utils.data.DataLoader(Probe(), batch_size=None, num_workers=2, worker_init_fn=_worker_init))
    assert got == [1, 1] and torch.get_num_threads() == before
    loader = NodeLoader(store, train, sampler, batch_size=30, shuffle=True, num_workers=1)
    list(loader)
    assert loader._workers.worker_init_fn is _worker_init


def test_store_module_config_errors_and_shared_device_rows(tmp_path):
    from graphgt.data.sampling.neighbor import NeighborSampler as NS
    from graphgt.data.store import ExistingStore, StoreNodeData
    from graphgt.errors import ConfigError
    from functools import partial

    toy = make_store(tmp_path / "toy")
    store = write_store(tmp_path / "s", "toy", toy.num_nodes, np.asarray(toy.indptr), np.asarray(toy.indices),
                        x=np.asarray(toy.x), y=np.asarray(toy.y),
                        splits={k: np.asarray(toy.split(k)) for k in ("train", "val", "test")},
                        task={"kind": "multiclass", "num_outputs": 5, "metric": "accuracy"})
    bad = StoreNodeData(ExistingStore(str(store.path)), partial(NS, fanouts=[2]), placement="gpu")
    with pytest.raises(ConfigError, match=r"data.placement='gpu' must be one of \['auto', 'cpu', 'device'\]"):
        bad.check()
    with pytest.raises(ConfigError, match=r"data.num_workers='many' must be 'auto' or an int >= 0"):
        StoreNodeData(ExistingStore(str(store.path)), partial(NS, fanouts=[2]), num_workers="many").check()
    module = StoreNodeData(ExistingStore(str(store.path)), partial(NS, fanouts=[2]), batch_size=32,
                           num_workers=0, placement="device")
    module.check()
    module.load(tmp_path)
    module.setup([], tmp_path)
    module.place(torch.device("cpu"))
    loaders = [module.train_loader(0), module.val_loader(), module.test_loader()]
    assert all(isinstance(ld._builder.rows, DeviceRows) for ld in loaders)
    assert loaders[0]._builder.rows is loaders[1]._builder.rows is loaders[2]._builder.rows  # one copy
    auto = StoreNodeData(ExistingStore(str(store.path)), partial(NS, fanouts=[2]), batch_size=32, num_workers=0)
    auto.load(tmp_path)
    auto.setup([], tmp_path)
    auto.place(torch.device("cpu"))
    assert auto.train_loader(0).placement == "cpu"                   # auto on a CPU trainer: host gathering
