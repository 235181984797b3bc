"""DevicePrefetcher: identical batches in the same order, len/set_epoch forwarded, errors raised,
and (on a CUDA machine) batches on the device equal to the host ones."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from graphgt.data.loader import GraphBatchLoader, PackedGraphs
from graphgt.data.prefetch import DevicePrefetcher, prefetch
from graphgt.data.sampling import NeighborSampler, NodeLoader
from tests.data.sampling.test_loader import batches_equal, make_store


def graphs(n=30):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        k = 3 + i % 4
        out.append(Data(x=torch.randn(k, 5, generator=g), edge_index=torch.randint(0, k, (2, 2 * k), generator=g),
                        y=torch.tensor([i % 2])))
    return out


def test_cpu_pass_through_yields_the_same_batches():
    packed = PackedGraphs(graphs())
    plain = GraphBatchLoader(packed, batch_size=7, shuffle=True, seed=3)
    wrapped = DevicePrefetcher(GraphBatchLoader(packed, batch_size=7, shuffle=True, seed=3), "cpu")
    assert not wrapped.overlaps and len(wrapped) == len(plain) == 5
    for epoch, start in ((0, 0), (1, 2), (4, 0)):
        plain.set_epoch(epoch, start)
        wrapped.set_epoch(epoch, start)
        a, b = list(plain), list(wrapped)
        assert len(a) == len(b) == 5 - start
        for u, v in zip(a, b):
            batches_equal(u, v)
            assert v.x.data_ptr() != 0 and v.x.device.type == "cpu"
    assert prefetch(None, "cpu") is None
    with pytest.raises(ValueError, match="depth must be an int >= 1"):
        DevicePrefetcher(plain, "cpu", depth=0)


def test_node_loader_through_the_prefetcher(tmp_path):
    store = make_store(tmp_path / "s")
    sampler = NeighborSampler(store.indptr, store.indices, [3, 2])
    train = np.asarray(store.split("train"))
    ref = list(NodeLoader(store, train, sampler, batch_size=32, shuffle=True, seed=9))
    got = list(prefetch(NodeLoader(store, train, sampler, batch_size=32, shuffle=True, seed=9, num_workers=1), "cpu"))
    assert len(got) == len(ref) == 5
    for u, v in zip(ref, got):
        batches_equal(u, v)


class _Boom:
    def __len__(self):
        return 3

    def __iter__(self):
        yield Data(x=torch.zeros(2, 1))
        raise RuntimeError("loader failed at batch 2")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_prefetch_equals_host_batches_and_raises(tmp_path):
    store = make_store(tmp_path / "s")
    sampler = NeighborSampler(store.indptr, store.indices, [3, 2])
    train = np.asarray(store.split("train"))
    kw = dict(batch_size=32, shuffle=True, seed=9)
    ref = list(NodeLoader(store, train, sampler, **kw))
    for loader in (NodeLoader(store, train, sampler, num_workers=2, device="cuda", **kw),
                   NodeLoader(store, train, sampler, device="cuda", placement="device", **kw),
                   NodeLoader(store, train, sampler, device="cuda", placement="cpu", **kw)):
        wrapped = DevicePrefetcher(loader, "cuda")
        for _ in range(2):
            got = [b.to("cpu") for b in wrapped]
            assert len(got) == len(ref)
            for u, v in zip(ref, got):
                batches_equal(u, v)
        it = iter(wrapped)
        assert next(it).x.is_cuda
        del it                                                    # abandoned: the thread stops, next pass works
        assert len(list(wrapped)) == len(ref)
    with pytest.raises(RuntimeError, match="loader failed at batch 2"):
        list(DevicePrefetcher(_Boom(), "cuda"))
