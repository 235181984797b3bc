from functools import partial

import pytest
import torch
from torch_geometric.data import Batch, Data

from graphgt.nn.attention import FullAttention, PerformerAttention
from graphgt.nn.gps_layer import GPSLayer
from graphgt.nn.attention.base import AttentionContext
from graphgt.nn.local import GATLayer, GatedGCNLayer, GCNLayer, GINELayer, GINLayer, SAGELayer
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


# local layer factories: (name, factory, reads edge features)
LOCALS = [("gcn", partial(GCNLayer), False), ("gin", partial(GINLayer), False), ("sage", partial(SAGELayer), False),
          ("gine", partial(GINELayer), True), ("gatedgcn", partial(GatedGCNLayer), True),
          ("gat", partial(GATLayer, heads=4), False),
          ("gat_edge", partial(GATLayer, heads=4, edge_dim_aware=True), True),
          ("none", None, False)]


def _models(local, s):
    """The GPS model (with full attention) and, when there is a local layer, the plain MPNN on spec ``s``."""
    models = [GPSModel(s, hidden=16, layers=2, local=local, attention=partial(FullAttention, heads=4))]
    if local is not None:
        models.append(MPNNModel(s, hidden=16, layers=2, local=local))
    return models


@pytest.mark.parametrize("edge", [True, False], ids=["edge_data", "edgeless_data"])
@pytest.mark.parametrize("name,local,reads", LOCALS, ids=[n for n, *_ in LOCALS])
def test_every_parameter_gets_a_gradient(name, local, reads, edge):
    """DDP needs every parameter in the loss: an edge encoder exists only if the layers read its output."""
    if local is not None and local.func.requires_edge_attr and not edge:
        pytest.skip("refused before the model is built (check_compatibility)")
    if name == "gat_edge" and not edge:
        pytest.skip("known gap: an edge-aware GAT on data without edge features keeps its unused edge "
                    "projection (no config uses edge_dim_aware)")
    torch.manual_seed(0)
    b = batch()
    if not edge:
        del b.edge_attr
    for model in _models(local, spec(edge=edge)):
        assert (model.encoder.edge is not None) is (edge and reads), type(model).__name__
        model(b).square().sum().backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"{type(model).__name__} with local={name}: no gradient for {missing}"


def test_edge_reading_models_keep_their_parameter_count():
    """Models whose layers read edge features are unchanged; the others lose exactly the unread edge
    encoder (Linear 2 -> 16: 48 parameters), GatedGCN the edge batch norm of its last layer, whose
    output nothing reads (2 x 16).  The numbers subtracted from are the counts before the fix."""
    counts = {name: [count_parameters(m) for m in _models(local, spec())] for name, local, _ in LOCALS}
    assert counts["gine"] == [6067, 1283]
    assert counts["gatedgcn"] == [7827 - 32, 3043 - 32]
    assert counts["gat_edge"] == [6131, 1347]
    assert counts["gcn"] == [5523 - 48, 739 - 48] and counts["gin"] == [6067 - 48, 1283 - 48]
    assert counts["sage"] == [6035 - 48, 1251 - 48] and counts["gat"] == [5587 - 48, 803 - 48]
    assert counts["none"] == [4915 - 48]
    # on data without edge features the non-readers are the same models
    assert [count_parameters(m) for m in _models(partial(GCNLayer), spec(edge=False))] == counts["gcn"]


def test_a_factory_that_hides_its_class_gets_an_edge_encoder_only_if_its_layers_read_it():
    """A lambda does not show its class before it builds a layer: the built layers decide."""
    gcn = GPSModel(spec(), hidden=16, layers=2, local=lambda d: GCNLayer(d), attention=None)
    gine = GPSModel(spec(), hidden=16, layers=2, local=lambda d: GINELayer(d), attention=None)
    assert gcn.encoder.edge is None and gine.encoder.edge is not None
    assert count_parameters(gcn) == count_parameters(GPSModel(spec(), hidden=16, layers=2, local=partial(GCNLayer)))


def test_largegt_builds_no_edge_encoder():
    """LargeGT's global branch encodes the seed nodes only: edge features of the data are not encoded."""
    from graphgt.nn.attention import PerformerAttention
    from graphgt.nn.largegt import LargeGTModel

    with_edges = DataSpec(Task("multiclass", 3, "node", "accuracy"), FloatFeatures(5), FloatFeatures(2), "toy")
    without = DataSpec(Task("multiclass", 3, "node", "accuracy"), FloatFeatures(5), None, "toy")
    model = LargeGTModel(with_edges, hidden=16, global_dim=8, attention=partial(PerformerAttention))
    assert model.seed_encoder.edge is None
    assert count_parameters(model) == count_parameters(
        LargeGTModel(without, hidden=16, global_dim=8, attention=partial(PerformerAttention)))


def test_gatedgcn_last_layer_returns_its_input_edge_features():
    """The last GatedGCN layer's edge output is read by nothing: it is not computed (nor its batch norm built)."""
    torch.manual_seed(0)
    for model in _models(partial(GatedGCNLayer), spec()):
        layers = [getattr(layer, "local", layer) for layer in model.layers]
        assert [layer.update_edges for layer in layers] == [True, False]
        assert not list(layers[-1].bn_edge.parameters()) and len(list(layers[0].bn_edge.parameters())) == 2
        assert repr(layers[-1]).endswith("batch_norm=True, edge_output=False)")
    last = _models(partial(GatedGCNLayer), spec())[0].layers[-1].local.eval()
    x, e, b = torch.randn(16, 16), torch.randn(48, 16), batch()
    h, e_out = last(x, b.edge_index, e)
    assert e_out is e and h.shape == (16, 16)

