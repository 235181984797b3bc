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
