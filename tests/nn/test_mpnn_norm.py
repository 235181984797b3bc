"""``MPNNModel(norm=...)``: where the normalisation sits, that ``none`` changes nothing, and that
``raw_io=True, norm="batch"`` is OGB's arxiv GCN/SAGE (snap-stanford/ogb examples/nodeproppred/arxiv/gnn.py)."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import GCNConv, SAGEConv

from graphgt.nn.local import GCNLayer, SAGELayer
from graphgt.nn.model import MPNNModel
from graphgt.spec import DataSpec, FloatFeatures, Task

N, F_IN, C = 50, 7, 4


def spec():
    return DataSpec(Task("multiclass", C, "node", "accuracy"), FloatFeatures(F_IN), None, "toy")


def symmetric_graph(seed=0):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, N, (2, 150), generator=g)
    ei = ei[:, ei[0] != ei[1]]
    ei = torch.unique(torch.cat([ei, ei.flip(0)], 1), dim=1)
    return Data(x=2 * torch.randn(N, F_IN, generator=g) + 1, edge_index=ei)


def call_order(model, data):
    """Names of the convolutions and norms in the order a forward calls them."""
    order = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: order.append(name))
             for name, m in model.named_modules() if isinstance(m, (GCNLayer, SAGELayer, nn.BatchNorm1d, nn.LayerNorm))]
    model(data)
    for h in hooks:
        h.remove()
    return order


def test_batch_norm_after_each_hidden_layer_and_none_after_the_last():
    model = MPNNModel(spec(), 16, 3, partial(SAGELayer), raw_io=True, norm="batch")
    assert [type(m) for m in model.norms] == [nn.BatchNorm1d, nn.BatchNorm1d]
    assert all(m.num_features == 16 for m in model.norms)
    assert call_order(model, symmetric_graph()) == ["layers.0", "norms.0", "layers.1", "norms.1", "layers.2"]
    # with an encoder and a head every layer is followed by norm -> act, as by the activation
    model = MPNNModel(spec(), 16, 2, partial(GCNLayer), norm="layer")
    assert [type(m) for m in model.norms] == [nn.LayerNorm, nn.LayerNorm]
    assert call_order(model, symmetric_graph()) == ["layers.0", "norms.0", "layers.1", "norms.1"]
    assert "norm='layer'" in repr(model)


def test_batch_norm_normalises_before_the_activation():
    """Training mode: each hidden layer's output is batch-normalised (zero mean, unit variance per
    feature over the nodes) before the ReLU."""
    model = MPNNModel(spec(), 16, 3, partial(GCNLayer), raw_io=True, norm="batch", dropout=0.0).train()
    seen = {}
    for i, norm in enumerate(model.norms):
        norm.register_forward_hook(lambda mod, inp, out, i=i: seen.setdefault(i, out.detach()))
    model(symmetric_graph())
    for out in seen.values():
        torch.testing.assert_close(out.mean(0), torch.zeros(16), atol=1e-5, rtol=0)
        torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(16), atol=1e-3, rtol=0)
    assert len(seen) == 2


def test_norm_none_adds_no_state_and_is_the_default():
    plain = MPNNModel(spec(), 16, 3, partial(SAGELayer), raw_io=True)
    assert plain.norm_name == "none" and all(isinstance(m, nn.Identity) for m in plain.norms)
    assert not any("norms" in key for key in plain.state_dict())  # checkpoints of earlier models still load
    assert "norm=" not in repr(plain)
    with_bn = MPNNModel(spec(), 16, 3, partial(SAGELayer), raw_io=True, norm="batch")
    extra = set(with_bn.state_dict()) - set(plain.state_dict())
    assert extra == {f"norms.{i}.{k}" for i in (0, 1)
                     for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


def test_bad_norm_names_the_key():
    with pytest.raises(ValueError, match=r"model.norm='group' must be one of \['batch', 'layer', 'none'\]"):
        MPNNModel(spec(), 16, 2, partial(SAGELayer), norm="group")


class OGBNet(nn.Module):
    """``GCN`` / ``SAGE`` of snap-stanford/ogb examples/nodeproppred/arxiv/gnn.py, as written there
    (GCN: ``GCNConv(cached=True)`` on the pre-normalised adjacency; here ``GCNConv``'s own
    normalisation of the same symmetric graph, which adds the self-loops as ``set_diag`` does)."""

    def __init__(self, conv, in_channels, hidden_channels, out_channels, num_layers, dropout):
        super().__init__()
        dims = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.convs = nn.ModuleList(conv(dims[i], dims[i + 1]) for i in range(num_layers))
        self.bns = nn.ModuleList(nn.BatchNorm1d(hidden_channels) for _ in range(num_layers - 1))
        self.dropout = dropout

    def forward(self, x, adj_t):
        for i, conv in enumerate(self.convs[:-1]):
            x = conv(x, adj_t)
            x = self.bns[i](x)
            x = F.relu(x)
            x = F.dropout(x, p=self.dropout, training=self.training)
        x = self.convs[-1](x, adj_t)
        return x.log_softmax(dim=-1)


@pytest.mark.parametrize("layer, conv", [(GCNLayer, GCNConv), (SAGELayer, SAGEConv)], ids=["gcn", "sage"])
def test_raw_io_batch_norm_is_ogbs_arxiv_model(layer, conv):
    """Same weights -> same log-probabilities as OGB's model: in training mode (BatchNorm on the batch
    statistics; dropout 0 so that no mask is drawn), after which both running statistics agree too, and
    in eval mode; and the same parameter count as OGB's for arxiv's 128 features and 40 classes."""
    torch.manual_seed(0)
    ours = MPNNModel(spec(), 16, 3, partial(layer), raw_io=True, norm="batch", dropout=0.0)
    ref = OGBNet(conv, F_IN, 16, C, 3, dropout=0.0)
    state = {k.replace("layers.", "convs.").replace(".conv.", ".").replace("norms.", "bns."): v
             for k, v in ours.state_dict().items()}
    ref.load_state_dict(state)
    data = symmetric_graph()
    for mode in ("train", "eval"):
        ours.train(mode == "train"), ref.train(mode == "train")
        with torch.no_grad():
            torch.testing.assert_close(F.log_softmax(ours(data), -1), ref(data.x, data.edge_index),
                                       rtol=1e-5, atol=1e-5)
        if mode == "train":  # the statistics moved off their initial (0, 1), identically
            assert ours.norms[0].running_mean.abs().max() > 1e-2
            torch.testing.assert_close(ours.norms[1].running_var, ref.bns[1].running_var)
    arxiv = DataSpec(Task("multiclass", 40, "node", "accuracy"), FloatFeatures(128), None, "arxiv")
    params = sum(p.numel() for p in MPNNModel(arxiv, 256, 3, partial(layer), raw_io=True, norm="batch").parameters())
    assert params == {GCNLayer: 110_120, SAGELayer: 218_664}[layer]  # OGB leaderboard's #params
