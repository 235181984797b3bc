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
        assert ptr_sizes == [16, 16, 8]
    assert runs[0] == runs[1]                      # same order with workers
    assert runs[0][0] != runs[0][1]                # reshuffled each epoch
    for _ in range(2):
        ids = torch.cat([b.gid for b in GraphBatchLoader(packed, batch_size=16, shuffle=True, seed=3)])
        assert sorted(ids.tolist()) == list(range(40))


@pytest.mark.parametrize("n,b,w", [(100, 8, 2), (101, 8, 3), (17, 4, 4), (9, 4, 2), (33, 16, 2)])
def test_ddp_graph_batches_split_each_global_batch(n, b, w):
    """Rank r's step i is part r of one process's batch i with a w-times larger batch; evaluation
    batches are the single-process ones dealt round-robin; every graph once per pass."""
    from graphgt.data.loader import graph_batch_plan

    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    single = graph_batch_plan(order, b * w, True)
    if single[-1].numel() < w:  # a last global batch too small to share is merged into the one before
        single[-2:] = [torch.cat(single[-2:])]
    ranks = [graph_batch_plan(order, b, True, r, w) for r in range(w)]
    assert {len(p) for p in ranks} == {len(single)}                       # same steps on every rank
    assert all(len(batch) > 0 for p in ranks for batch in p)
    for i, batch in enumerate(single):
        assert torch.equal(torch.cat([p[i] for p in ranks]), batch)
    evals = [graph_batch_plan(order, b, False, r, w) for r in range(w)]
    for g, batch in enumerate(order.split(b)):
        assert torch.equal(evals[g % w][g // w], batch)


def test_full_batch_loader_shares_the_training_nodes():
    from torch_geometric.data import Batch, Data

    from graphgt.data.common import FullBatchLoader

    batch = Batch.from_data_list([Data(x=torch.zeros(10, 1), edge_index=torch.zeros(2, 0, dtype=torch.long))])
    batch.loss_mask = torch.tensor([1, 0, 1, 1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    masks = [next(iter(FullBatchLoader(batch, True, r, 3))).loss_mask for r in range(3)]
    assert torch.equal(sum(m.long() for m in masks).bool(), batch.loss_mask)    # disjoint, covering
    assert [int(m.sum()) for m in masks] == [3, 2, 2]
    assert [len(FullBatchLoader(batch, False, r, 3)) for r in range(3)] == [1, 0, 0]
    loader = FullBatchLoader(batch, True)
    loader.set_epoch(4, start=1)
    assert list(loader) == [] and len(list(loader)) == 1
