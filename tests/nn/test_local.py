"""Tests of the local message-passing layers (graphgt.nn.local)."""
from __future__ import annotations

import pytest
import torch

from graphgt.nn.local import (GATLayer, GatedGCNLayer, GCNLayer, GINELayer, GINLayer, LocalMP,
                              SAGELayer)

DIM = 8

# (factory, requires_edge_attr, repr)
LAYERS = [
    (lambda: GCNLayer(DIM), False, "GCNLayer(8, normalize=True, cached=False)"),
    (lambda: GINLayer(DIM), False, "GINLayer(8, train_eps=False)"),
    (lambda: GINELayer(DIM, train_eps=True), True, "GINELayer(8, train_eps=True)"),
    (lambda: GatedGCNLayer(DIM), True,
     "GatedGCNLayer(8, dropout=0.0, residual=True, batch_norm=True)"),
    (lambda: GATLayer(DIM, heads=2), False,
     "GATLayer(8, heads=2, attn_dropout=0.0, concat=True, edge_dim_aware=False)"),
    (lambda: GATLayer(DIM, heads=2, edge_dim_aware=True), False,
     "GATLayer(8, heads=2, attn_dropout=0.0, concat=True, edge_dim_aware=True)"),
    (lambda: SAGELayer(DIM, aggr="max"), False, "SAGELayer(8, aggr='max')"),
]
IDS = ["gcn", "gin", "gine", "gatedgcn", "gat", "gat_edge", "sage"]


def _graph(seed: int = 0, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, DIM, generator=g)
    src = torch.tensor([0, 1, 1, 2, 3, 4, 5, 0, 2])
    dst = torch.tensor([1, 0, 2, 1, 4, 3, 0, 5, 5])
    edge_attr = torch.randn(src.numel(), DIM, generator=g)
    return x, torch.stack([src, dst]), edge_attr


@pytest.mark.parametrize("factory,requires,expected_repr", LAYERS, ids=IDS)
def test_shapes_edge_attr_grad_repr(factory, requires, expected_repr):
    torch.manual_seed(0)
    layer = factory()
    assert isinstance(layer, LocalMP)
    assert type(layer).requires_edge_attr is requires
    assert repr(layer) == expected_repr
    x, edge_index, edge_attr = _graph()
    x.requires_grad_(True)
    out, e_out = layer(x, edge_index, edge_attr)
    assert out.shape == (6, DIM)
    assert torch.isfinite(out).all()
    if isinstance(layer, GatedGCNLayer):
        assert e_out is not edge_attr and e_out.shape == edge_attr.shape
        assert not torch.allclose(e_out, edge_attr)
    else:
        assert e_out is edge_attr
    (out.square().sum() + (e_out.sum() if e_out is not edge_attr else 0)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
    assert sum(p.grad.abs().sum() for p in layer.parameters()) > 0


@pytest.mark.parametrize("factory", [f for f, req, _ in LAYERS if not req],
                         ids=[i for i, (_, req, _) in zip(IDS, LAYERS) if not req])
def test_no_edge_attr_passes_none_through(factory):
    layer = factory()
    x, edge_index, _ = _graph()
    out, e_out = layer(x, edge_index, None)
    assert out.shape == (6, DIM) and e_out is None


@pytest.mark.parametrize("factory", [f for f, *_ in LAYERS], ids=IDS)
def test_reset_parameters_deterministic_under_seed(factory):
    torch.manual_seed(0)
    layer = factory()
    with torch.no_grad():  # make every parameter non-initial, so a reset must change all
        for p in layer.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    torch.manual_seed(123)
    layer.reset_parameters()
    first = {k: v.clone() for k, v in layer.state_dict().items()}
    torch.manual_seed(123)
    layer.reset_parameters()
    for name, p in layer.named_parameters():
        assert not torch.equal(before[name], first[name]), name
    for k, v in layer.state_dict().items():
        assert torch.equal(v, first[k]), k


@pytest.mark.parametrize("cls", [GINELayer, GatedGCNLayer])
def test_edge_layers_require_edge_attr(cls):
    x, edge_index, _ = _graph()
    with pytest.raises(ValueError, match="edge_attr=None"):
        cls(DIM)(x, edge_index, None)


def test_gat_bad_heads():
    with pytest.raises(ValueError, match="heads=3"):
        GATLayer(DIM, heads=3)
    # concat=False averages heads of full width: any head count is fine
    out, _ = GATLayer(DIM, heads=3, concat=False)(*_graph()[:2])
    assert out.shape == (6, DIM)


def test_gat_edge_dim_aware_uses_edge_attr():
    torch.manual_seed(0)
    layer = GATLayer(DIM, heads=2, edge_dim_aware=True)
    x, edge_index, edge_attr = _graph()
    a, _ = layer(x, edge_index, edge_attr)
    b, _ = layer(x, edge_index, 2 * edge_attr)
    c, _ = layer(x, edge_index, None)  # edge features optional
    assert not torch.allclose(a, b) and c.shape == a.shape


def test_gat_cora_configuration():
    layer = GATLayer(64, heads=8, attn_dropout=0.6)
    assert layer.conv.heads == 8 and layer.conv.out_channels == 8
    assert layer.conv.dropout == 0.6
    x, edge_index, _ = _graph()
    x = torch.randn(6, 64)
    layer.eval()
    assert torch.equal(layer(x, edge_index)[0], layer(x, edge_index)[0])
    layer.train()
    torch.manual_seed(0)
    a = layer(x, edge_index)[0]
    torch.manual_seed(1)
    assert not torch.allclose(a, layer(x, edge_index)[0])  # attention dropout active


def test_gcn_matches_formula():
    torch.manual_seed(0)
    layer = GCNLayer(DIM)
    x, edge_index, _ = _graph()
    n = x.size(0)
    adj = torch.zeros(n, n)
    adj[edge_index[1], edge_index[0]] = 1.0
    adj = adj + torch.eye(n)
    dinv = adj.sum(1).pow(-0.5)
    ref = (dinv[:, None] * adj * dinv[None, :]) @ (x @ layer.conv.lin.weight.T) + layer.conv.bias
    torch.testing.assert_close(layer(x, edge_index)[0], ref, atol=1e-5, rtol=1e-5)


def test_gin_and_gine_match_formula():
    torch.manual_seed(0)
    x, edge_index, edge_attr = _graph()
    gin = GINLayer(DIM, train_eps=True)
    with torch.no_grad():
        gin.conv.eps.fill_(0.3)
    agg = torch.zeros_like(x).index_add_(0, edge_index[1], x[edge_index[0]])
    torch.testing.assert_close(gin(x, edge_index)[0], gin.conv.nn(1.3 * x + agg))

    gine = GINELayer(DIM)
    msg = torch.relu(x[edge_index[0]] + edge_attr)  # GINE: ReLU(x_j + e_ij), no edge projection
    agg = torch.zeros_like(x).index_add_(0, edge_index[1], msg)
    torch.testing.assert_close(gine(x, edge_index, edge_attr)[0], gine.conv.nn(x + agg))


def _gatedgcn_reference(layer: GatedGCNLayer, x, edge_index, edge_attr):
    """Per-edge Python loop over the GatedGCN formula, eval-mode BN, no dropout."""
    def bn(t, m):
        return (t - m.running_mean) / torch.sqrt(m.running_var + m.eps) * m.weight + m.bias

    A, B, C, D, E = (l.weight for l in (layer.A, layer.B, layer.C, layer.D, layer.E))
    a, b, c, d, e = (l.bias for l in (layer.A, layer.B, layer.C, layer.D, layer.E))
    n = x.size(0)
    num = [torch.zeros(DIM) for _ in range(n)]
    den = [torch.zeros(DIM) for _ in range(n)]
    e_new = []
    for k in range(edge_index.size(1)):
        j, i = int(edge_index[0, k]), int(edge_index[1, k])  # message j -> i
        e_hat = C @ edge_attr[k] + c + D @ x[i] + d + E @ x[j] + e
        sigma = torch.sigmoid(e_hat)
        num[i] = num[i] + sigma * (B @ x[j] + b)
        den[i] = den[i] + sigma
        e_new.append(edge_attr[k] + torch.relu(bn(e_hat, layer.bn_edge)))
    h_new = []
    for i in range(n):
        h_hat = A @ x[i] + a + num[i] / (den[i] + 1e-6)
        h_new.append(x[i] + torch.relu(bn(h_hat, layer.bn_node)))
    return torch.stack(h_new), torch.stack(e_new)


def test_gatedgcn_matches_per_edge_loop():
    torch.manual_seed(0)
    layer = GatedGCNLayer(DIM, dropout=0.5)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for bn in (layer.bn_node, layer.bn_edge):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
            bn.bias.normal_()
    layer.eval()
    x, edge_index, edge_attr = _graph()
    h, e = layer(x, edge_index, edge_attr)
    with torch.no_grad():
        h_ref, e_ref = _gatedgcn_reference(layer, x, edge_index, edge_attr)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e, e_ref, atol=1e-5, rtol=1e-5)
    # without BN and residual the outputs are plain ReLU outputs
    layer_nr = GatedGCNLayer(DIM, residual=False, batch_norm=False).eval()
    h2, e2 = layer_nr(x, edge_index, edge_attr)
    assert (h2 >= 0).all() and (e2 >= 0).all()  # ReLU output, no residual


def test_gatedgcn_dropout_only_in_training():
    torch.manual_seed(0)
    layer = GatedGCNLayer(DIM, dropout=0.5)
    x, edge_index, edge_attr = _graph()
    layer.train()
    h1, _ = layer(x, edge_index, edge_attr)
    h2, _ = layer(x, edge_index, edge_attr)
    assert not torch.allclose(h1, h2)
    layer.eval()
    assert torch.equal(layer(x, edge_index, edge_attr)[0], layer(x, edge_index, edge_attr)[0])


def test_sage_bad_aggr_rejected_by_pyg():
    with pytest.raises((ValueError, KeyError)):
        SAGELayer(DIM, aggr="no-such-aggregation")


# (class, constructor keywords, reads edge features): what the model decides its edge encoder from
EDGE_READERS = [
    (GCNLayer, {}, False), (GINLayer, {}, False), (SAGELayer, {}, False),
    (GINELayer, {}, True), (GatedGCNLayer, {}, True),
    (GATLayer, {"heads": 2}, False), (GATLayer, {"heads": 2, "edge_dim_aware": False}, False),
    (GATLayer, {"heads": 2, "edge_dim_aware": True}, True),
]


@pytest.mark.parametrize("cls,config,reads", EDGE_READERS,
                         ids=["gcn", "gin", "sage", "gine", "gatedgcn", "gat", "gat_plain", "gat_edge"])
def test_edge_feature_flags_match_what_the_layer_reads(cls, config, reads):
    """consumes_edge_attr (asked before building) and reads_edge_attr (of the built layer) say whether
    the layer's output depends on the edge features it is given, and a layer that needs them reads them."""
    assert cls.consumes_edge_attr(**config) is reads
    torch.manual_seed(0)
    layer = cls(DIM, **config).eval()
    assert layer.reads_edge_attr is reads
    assert not cls.requires_edge_attr or cls.uses_edge_attr
    x, edge_index, edge_attr = _graph()
    a, _ = layer(x, edge_index, edge_attr)
    b, _ = layer(x, edge_index, 3 * edge_attr + 1)
    assert (not torch.allclose(a, b)) is reads
