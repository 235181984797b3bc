from functools import partial

import pytest
import torch
from torch_geometric.data import Batch, Data

from graphgt.nn.attention import FullAttention, PerformerAttention
from graphgt.nn.encoders import LinearEncoder
from graphgt.nn.gps_layer import GPSLayer
from graphgt.nn.attention.base import AttentionContext
from graphgt.nn.local import GatedGCNLayer, GCNLayer, GINELayer
from graphgt.nn.model import GPSModel, MPNNModel, count_parameters
from graphgt.spec import CategoricalFeatures, DataSpec, FloatFeatures, Task


def spec(level="graph", edge=True, outputs=3):
    return DataSpec(Task("multiclass", outputs, level, "accuracy"), FloatFeatures(5),
                    FloatFeatures(2) if edge else None, "toy")


def batch(seed=0, sizes=(4, 7, 5)):
    g = torch.Generator().manual_seed(seed)
    graphs = []
    for n in sizes:
        src = torch.randint(0, n, (3 * n,), generator=g)
        dst = torch.randint(0, n, (3 * n,), generator=g)
        graphs.append(Data(x=torch.randn(n, 5, generator=g), edge_index=torch.stack([src, dst]),
                           edge_attr=torch.randn(3 * n, 2, generator=g), y=torch.tensor([1])))
    return Batch.from_data_list(graphs)


def test_gps_model_graph_level_shapes_and_grad():
    torch.manual_seed(0)
    model = GPSModel(spec(), hidden=16, layers=2, local=partial(GINELayer), attention=partial(FullAttention, heads=4))
    out = model(batch())
    assert out.shape == (3, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert count_parameters(model) > 0
    assert "GPSLayer(16, local=GINELayer" in repr(model)


def test_gps_model_node_level_and_attention_only():
    model = GPSModel(spec("node", edge=False), hidden=16, layers=1, local=None, attention=partial(PerformerAttention))
    assert model(batch()).shape == (16, 3)


def test_graphs_do_not_interact_through_the_model():
    torch.manual_seed(0)
    model = GPSModel(spec(), hidden=16, layers=2, local=partial(GINELayer), attention=partial(FullAttention),
                     norm="layer").eval()
    b1, b2 = batch(), batch()
    b2.x[b2.batch == 2] += 1.0
    o1, o2 = model(b1), model(b2)
    assert torch.equal(o1[:2], o2[:2]) and not torch.allclose(o1[2], o2[2])


def test_gps_layer_adds_no_second_residual_to_gatedgcn():
    torch.manual_seed(0)
    local = GatedGCNLayer(8)
    layer = GPSLayer(8, local, None, norm="none").eval()
    b = batch()
    x, e = torch.randn(b.num_nodes, 8), torch.randn(b.num_edges, 8)
    with torch.no_grad():
        h, _ = local(x, b.edge_index, e)
        out, _ = layer(x, b.edge_index, e, AttentionContext.from_batch(b))
        expected = h + layer.ffn(h)
    assert torch.allclose(out, expected, atol=1e-6)


def test_configuration_errors_are_clear():
    with pytest.raises(ValueError, match="local=none and attention=none"):
        GPSModel(spec(), local=None, attention=None)
    with pytest.raises(ValueError, match="attention=none"):
        MPNNModel(spec(), local=partial(GCNLayer), attention=partial(FullAttention))
    with pytest.raises(ValueError, match="norm='group'"):
        GPSModel(spec(), local=partial(GCNLayer), norm="group")


def test_mpnn_model_matches_manual_gcn_stack():
    torch.manual_seed(0)
    model = MPNNModel(spec("node", edge=False), hidden=8, layers=2, local=partial(GCNLayer), dropout=0.0).eval()
    b = batch()
    x = model.encoder.node(b.x)
    for layer in model.layers:
        x = torch.relu(layer(x, b.edge_index)[0])
    assert torch.allclose(model(b), model.head.mlp(x), atol=1e-6)


def test_mpnn_raw_io_is_the_published_two_layer_gcn():
    from graphgt.nn.local import GATLayer
    torch.manual_seed(0)
    s = spec("node", edge=False, outputs=3)
    model = MPNNModel(s, hidden=16, layers=2, local=partial(GCNLayer), raw_io=True).eval()
    assert [(l.in_dim, l.out_dim) for l in model.layers] == [(5, 16), (16, 3)]
    assert repr(model.layers[0]) == "GCNLayer(5, 16, normalize=True, cached=False)"
    b = batch()
    h = torch.relu(model.layers[0].conv(b.x, b.edge_index))
    assert torch.allclose(model(b), model.layers[1].conv(h, b.edge_index), atol=1e-6)
    gat = MPNNModel(s, hidden=16, layers=2, local=partial(GATLayer, heads=8), raw_io=True)
    assert gat(b).shape == (16, 3) and not gat.layers[1].concat  # the output layer averages heads
    with pytest.raises(ValueError, match="no in_dim/out_dim"):
        MPNNModel(s, local=partial(GINELayer), raw_io=True)
    with pytest.raises(ValueError, match="float node features"):
        MPNNModel(DataSpec(Task("multiclass", 3, "node", "accuracy"), CategoricalFeatures([4, 2]), None, "toy"),
                  local=partial(GCNLayer), raw_io=True)


def test_reset_parameters_reinitialises_every_model_kind():
    s = spec("node", edge=False, outputs=3)
    for model in (GPSModel(spec(), hidden=16, local=partial(GINELayer), attention=partial(FullAttention)),
                  MPNNModel(s, hidden=16, local=partial(GCNLayer), raw_io=True)):
        before = [p.detach().clone() for p in model.parameters()]
        torch.manual_seed(123)
        model.reset_parameters()
        changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters()) if a.numel() > 1 and a.std() > 0]
        assert changed and all(changed)
