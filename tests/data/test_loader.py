import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.datasets import FakeDataset

from graphgt.data.loader import GraphBatchLoader, PackedGraphs


def _graphs():
    torch.manual_seed(0)
    graphs = [g for g in FakeDataset(num_graphs=40, avg_num_nodes=12, edge_dim=3, task="graph")]
    for i, g in enumerate(graphs):
        g.rwse = torch.randn(g.num_nodes, 4)
        g.gid = torch.tensor([i])
    return graphs


def test_packed_batch_equals_pyg_collate():
    graphs = _graphs()
    idx = torch.tensor([5, 2, 31, 7, 0])
    ours, ref = PackedGraphs(graphs).batch(idx), Batch.from_data_list([graphs[i] for i in idx])
    for key in ("x", "edge_index", "edge_attr", "y", "batch", "ptr", "rwse"):
        assert torch.equal(ours[key], ref[key]), key
    assert ours.num_graphs == 5


def test_loader_covers_every_graph_once_deterministically_with_and_without_workers():
    packed = PackedGraphs(_graphs())
    runs = []
    for workers in (0, 2):
        loader = GraphBatchLoader(packed, batch_size=16, shuffle=True, seed=3, num_workers=workers)
        assert len(loader) == 3
        epochs = [[b.y.tolist() for b in loader] for _ in range(2)]
        runs.append(epochs)
        ptr_sizes = [b.num_graphs for b in GraphBatchLoader(packed, batch_size=16)]
        assert ptr_sizes == [14, 13, 13]  # ceil(40 / 16) = 3 batches of sizes differing by at most one
    assert runs[0] == runs[1]                      # same order with workers
    assert runs[0][0] != runs[0][1]                # reshuffled each epoch
    for _ in range(2):
        ids = torch.cat([b.gid for b in GraphBatchLoader(packed, batch_size=16, shuffle=True, seed=3)])
        assert sorted(ids.tolist()) == list(range(40))


@pytest.mark.parametrize("n,b,w", [(100, 8, 2), (101, 8, 3), (17, 4, 4), (9, 4, 2), (33, 16, 2)])
def test_ddp_graph_batches_split_each_global_batch(n, b, w):
    """Rank r's step i is part r of one process's batch i with a w-times larger batch; evaluation
    batches are the single-process ones dealt round-robin; every graph once per pass."""
    import numpy as np

    from graphgt.data.plan import plan_batches

    items = np.arange(n)
    single = plan_batches(items, b * w, True, seed=n, epoch=0)
    ranks = [plan_batches(items, b, True, n, 0, r, w) for r in range(w)]
    assert {len(p) for p in ranks} == {len(single)}                       # same steps on every rank
    assert all(0 < len(batch) <= b for p in ranks for batch in p)
    assert max(map(len, single)) - min(map(len, single)) <= 1            # no tiny last batch
    for i, batch in enumerate(single):
        assert np.array_equal(np.concatenate([p[i] for p in ranks]), batch)
    assert sorted(np.concatenate(single).tolist()) == list(range(n))      # every graph once per pass
    evals = [plan_batches(items, b, False, n, 0, r, w) for r in range(w)]
    for g, batch in enumerate(np.array_split(items, -(-n // b))):
        assert np.array_equal(evals[g % w][g // w], batch)


def test_full_batch_loader_shares_the_training_nodes():
    from torch_geometric.data import Batch, Data

    from graphgt.data.loader import FullBatchLoader

    batch = Batch.from_data_list([Data(x=torch.zeros(10, 1), edge_index=torch.zeros(2, 0, dtype=torch.long))])
    batch.loss_mask = torch.tensor([1, 0, 1, 1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    masks = [next(iter(FullBatchLoader(batch, True, r, 3))).loss_mask for r in range(3)]
    assert torch.equal(sum(m.long() for m in masks).bool(), batch.loss_mask)    # disjoint, covering
    assert [int(m.sum()) for m in masks] == [3, 2, 2]
    assert [len(FullBatchLoader(batch, False, r, 3)) for r in range(3)] == [1, 0, 0]
    loader = FullBatchLoader(batch, True)
    loader.set_epoch(4, start=1)
    assert list(loader) == [] and len(list(loader)) == 1
