"""Per-layer trimming on hop-ordered neighbour samples: the seeds' outputs equal the untrimmed model's."""
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data

from graphgt.data.sampling import NeighborSampler
from graphgt.data.store.core import csr_from_edges
from graphgt.nn import gps_layer
from graphgt.nn.attention import FullAttention, PerformerAttention
from graphgt.nn.gps_layer import TrimPlan
from graphgt.nn.local import GATLayer, GatedGCNLayer, GCNLayer, GINELayer, GINLayer, SAGELayer
from graphgt.nn.model import GPSModel, MPNNModel
from graphgt.spec import DataSpec, FloatFeatures, Task

SEEDS = 12


def spec(edge=True):
    return DataSpec(Task("multiclass", 3, "node", "accuracy"), FloatFeatures(5), FloatFeatures(2) if edge else None,
                    "toy")


def graph(n=120, m=700, self_loops=True, seed=0):
    """A random CSR without repeated entries (row t = the nodes whose messages t receives)."""
    rng = np.random.default_rng(seed)
    pairs = np.stack([rng.integers(0, n, m), rng.integers(0, n, m)], 1)
    if self_loops:
        pairs = np.concatenate([pairs, np.stack([np.arange(0, n, 5)] * 2, 1)])
    pairs = np.unique(pairs, axis=0)
    return csr_from_edges(pairs[:, 0], pairs[:, 1], n)


def sampled(fanouts=(4, 3), seed=1, self_loops=True, edge=True):
    indptr, indices = graph(self_loops=self_loops)
    sub = NeighborSampler(indptr, indices, list(fanouts)).sample(np.arange(SEEDS) * 7, seed)
    g = torch.Generator().manual_seed(seed)
    n = sub.num_nodes
    data = Data(x=torch.randn(n, 5, generator=g), edge_index=torch.from_numpy(sub.edge_index),
                batch=torch.zeros(n, dtype=torch.long), num_graphs=1, num_seeds=sub.num_seeds,
                num_sampled_nodes=sub.num_sampled_nodes.tolist(), num_sampled_edges=sub.num_sampled_edges.tolist())
    if edge:
        data.edge_attr = torch.randn(data.edge_index.size(1), 2, generator=g)
    return data


def pair(make):
    """The same weights, trimmed and untrimmed."""
    torch.manual_seed(0)
    trimmed, full = make(True), make(False)
    full.load_state_dict(trimmed.state_dict())
    return trimmed, full


def warmed(model):
    """``model`` after three training-mode forwards on random whole graphs (no hop counts, so
    untrimmed): BatchNorm running statistics away from their initial (0, 1), which the eval-mode
    comparisons then use."""
    g = torch.Generator().manual_seed(5)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            n, m = 40, 160
            model(Data(x=2 * torch.randn(n, 5, generator=g) + 1, edge_index=torch.randint(0, n, (2, m), generator=g),
                       edge_attr=torch.randn(m, 2, generator=g), batch=torch.zeros(n, dtype=torch.long), num_graphs=1))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and all(float((m.running_var - 1).abs().max()) > 1e-2 for m in norms)
    return model.eval()


MODELS = {
    "sage_raw_io": lambda t: MPNNModel(spec(), 16, 2, partial(SAGELayer), raw_io=True, trim=t),
    # OGB's arxiv baselines: BatchNorm after each hidden layer (model.norm=batch), trained statistics
    "sage_raw_io_batchnorm": lambda t: warmed(MPNNModel(spec(), 16, 3, partial(SAGELayer), raw_io=True, norm="batch",
                                                        trim=t)),
    "gcn_raw_io_batchnorm": lambda t: warmed(MPNNModel(spec(), 16, 3, partial(GCNLayer), raw_io=True, norm="batch",
                                                       trim=t)),
    "gcn_batchnorm": lambda t: warmed(MPNNModel(spec(), 16, 2, partial(GCNLayer), norm="batch", trim=t)),
    "sage_layernorm": lambda t: MPNNModel(spec(), 16, 2, partial(SAGELayer), norm="layer", trim=t),
    "sage_max": lambda t: MPNNModel(spec(), 16, 3, partial(SAGELayer, aggr="max"), trim=t),
    # tuned GNNs (Luo et al., 2024): residual, pre-norm, jumping knowledge, dropout before the head
    "gcn_tuned_linear_res_batchnorm": lambda t: warmed(MPNNModel(spec(), 16, 3, partial(GCNLayer), norm="batch",
                                                                 residual="linear", trim=t)),
    "sage_identity_res_prenorm_jk_cat": lambda t: MPNNModel(spec(), 16, 3, partial(SAGELayer), norm="layer",
                                                            prenorm=True, residual="identity", jk="cat",
                                                            dropout_before_head=True, trim=t),
    "gcn_jk_max": lambda t: MPNNModel(spec(), 16, 3, partial(GCNLayer), jk="max", trim=t),
    "gcn_jk_sum_res": lambda t: MPNNModel(spec(), 16, 2, partial(GCNLayer), jk="sum", residual="identity", trim=t),
    "sage_raw_io_res_prenorm": lambda t: warmed(MPNNModel(spec(), 16, 3, partial(SAGELayer), raw_io=True,
                                                          norm="batch", prenorm=True, residual="identity", trim=t)),
    "gcn_raw_in_res_prenorm_jk_sum": lambda t: MPNNModel(spec(), 16, 3, partial(GCNLayer), raw_in=True, norm="layer",
                                                         prenorm=True, residual="linear", jk="sum", trim=t),
    "gine_res": lambda t: MPNNModel(spec(), 16, 2, partial(GINELayer), residual="linear", trim=t),
    "gcn_raw_io": lambda t: MPNNModel(spec(), 16, 2, partial(GCNLayer), raw_io=True, trim=t),
    "gcn": lambda t: MPNNModel(spec(), 16, 2, partial(GCNLayer), trim=t),
    "gcn_unnormalised": lambda t: MPNNModel(spec(), 16, 2, partial(GCNLayer, normalize=False), trim=t),
    "gin": lambda t: MPNNModel(spec(), 16, 2, partial(GINLayer), trim=t),
    "gine": lambda t: MPNNModel(spec(), 16, 2, partial(GINELayer), trim=t),
    "gat_edges": lambda t: MPNNModel(spec(), 16, 2, partial(GATLayer, heads=2, edge_dim_aware=True), trim=t),
    "gatedgcn": lambda t: MPNNModel(spec(), 16, 3, partial(GatedGCNLayer), trim=t),
    "gps_sage": lambda t: GPSModel(spec(), 16, 2, partial(SAGELayer), trim=t),
    "gps_gcn": lambda t: GPSModel(spec(), 16, 2, partial(GCNLayer), trim=t),
    "gps_gatedgcn": lambda t: GPSModel(spec(), 16, 3, partial(GatedGCNLayer), trim=t),
    "gps_sage_performer": lambda t: GPSModel(spec(), 16, 2, partial(SAGELayer), partial(PerformerAttention, heads=2),
                                             trim=t),
    "gps_gcn_full_attention": lambda t: GPSModel(spec(), 16, 3, partial(GCNLayer), partial(FullAttention, heads=2),
                                                 trim=t),
    "gps_attention_only": lambda t: GPSModel(spec(), 16, 2, None, partial(FullAttention, heads=2), trim=t),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("fanouts", [(4, 3), (3,), (3, 2, 2)], ids=["hops=layers", "hops<layers", "hops>layers"])
def test_trimmed_equals_untrimmed_on_the_seeds(name, fanouts):
    data = sampled(fanouts)
    trimmed, full = pair(MODELS[name])
    trimmed.eval(), full.eval()
    assert trimmed.trim and not full.trim
    with torch.no_grad():
        out, ref = trimmed(data), full(data)
    assert out.shape == ref.shape == (data.num_nodes, 3)
    torch.testing.assert_close(out[:SEEDS], ref[:SEEDS], rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(out[SEEDS:]) == 0  # only the seeds are computed


def test_gcn_trimming_needs_the_untrimmed_normalisation(monkeypatch):
    """Running GCN on the trimmed graph as it is (degrees of the trimmed graph) differs: the test above
    would catch a trimming that dropped the carried normalisation."""
    data = sampled()
    trimmed, full = pair(MODELS["gcn_raw_io"])
    trimmed.eval(), full.eval()
    monkeypatch.setattr(gps_layer, "trim_mode", lambda local: "rows")
    with torch.no_grad():
        assert not torch.allclose(trimmed(data)[:SEEDS], full(data)[:SEEDS], atol=1e-3)


@pytest.mark.parametrize("name", ["sage_raw_io", "sage_raw_io_layernorm", "gcn_raw_io", "gine", "gatedgcn"])
def test_training_gradients_equal_without_dropout_and_batchnorm(name):
    """With dropout 0 and no BatchNorm, the trimmed model is the same function of the weights on the seeds:
    same loss, same gradients (GatedGCN built without its BatchNorm; LayerNorm is row-wise)."""
    make = {"sage_raw_io": lambda t: MPNNModel(spec(), 16, 2, partial(SAGELayer), dropout=0.0, raw_io=True, trim=t),
            "sage_raw_io_layernorm": lambda t: MPNNModel(spec(), 16, 3, partial(SAGELayer), dropout=0.0, raw_io=True,
                                                         norm="layer", trim=t),
            "gcn_raw_io": lambda t: MPNNModel(spec(), 16, 2, partial(GCNLayer), dropout=0.0, raw_io=True, trim=t),
            "gine": lambda t: MPNNModel(spec(), 16, 2, partial(GINELayer), dropout=0.0, trim=t),
            "gatedgcn": lambda t: GPSModel(spec(), 16, 2, partial(GatedGCNLayer, batch_norm=False), norm="layer",
                                           trim=t)}[name]
    data = sampled()
    y = torch.arange(SEEDS) % 3
    trimmed, full = pair(make)
    losses = []
    for model in (trimmed, full):
        model.train()
        loss = F.cross_entropy(model(data)[:SEEDS], y)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    for (n, a), (_, b) in zip(trimmed.named_parameters(), full.named_parameters()):
        if b.grad is None:
            assert a.grad is None, n
        else:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_trimmed_batchnorm_in_training_mode_sees_fewer_rows():
    """Documented limit: in training mode the trimmed model's BatchNorm normalises over the rows each
    layer computes, so its running statistics differ from the untrimmed model's (eval mode is exact,
    above)."""
    data = sampled((4, 3))
    trimmed, full = pair(lambda t: MPNNModel(spec(), 16, 3, partial(SAGELayer), dropout=0.0, raw_io=True,
                                             norm="batch", trim=t))
    for model in (trimmed, full):
        model.train()
        with torch.no_grad():
            model(data)
    # 2 hops, 3 layers: layer 0 computes every sampled node, layer 1 only hops 0..1
    assert TrimPlan.of(data).layers(3)[0].num_dst == data.num_nodes > TrimPlan.of(data).layers(3)[1].num_dst
    torch.testing.assert_close(trimmed.norms[0].running_mean, full.norms[0].running_mean)
    assert not torch.allclose(trimmed.norms[1].running_mean, full.norms[1].running_mean, atol=1e-4)


def test_batches_without_hop_counts_run_unchanged():
    """Whole graphs (no num_sampled_nodes): every node is computed, as without trimming."""
    data = sampled()
    del data.num_sampled_nodes, data.num_sampled_edges
    for make in (MODELS["gcn_raw_io"], MODELS["gps_sage_performer"]):
        trimmed, full = pair(make)
        trimmed.eval(), full.eval()
        with torch.no_grad():
            assert torch.equal(trimmed(data), full(data))


def test_graph_level_models_never_trim():
    s = DataSpec(Task("multiclass", 3, "graph", "accuracy"), FloatFeatures(5), None, "toy")
    trimmed, full = pair(lambda t: GPSModel(s, 16, 2, partial(SAGELayer), trim=t))
    data = sampled(edge=False)
    trimmed.eval(), full.eval()
    with torch.no_grad():
        assert trimmed(data).shape == (1, 3) and torch.equal(trimmed(data), full(data))


def test_layer_plan_prefixes():
    data = sampled((4, 3))
    plan = TrimPlan.of(data)
    n0, n1, n2 = data.num_sampled_nodes
    e1, e2 = data.num_sampled_edges
    assert [(t.num_src, t.num_dst, t.num_edges) for t in plan.layers(2)] == [
        (n0 + n1 + n2, n0 + n1, e1 + e2), (n0 + n1, n0, e1)]
    last = plan.layers(2, last_only=True)
    assert last[0] is None and (last[1].num_src, last[1].num_dst, last[1].num_edges) == (n0 + n1 + n2, n0, e1)
    # the sampler's invariant trimming relies on: edges of hop h target the nodes new at hop h - 1
    dst = data.edge_index[1]
    assert int(dst[:e1].max()) < n0 and int(dst[e1:].min()) >= n0 and int(dst[e1:].max()) < n0 + n1


def test_cached_gcn_is_not_trimmed():
    model = MPNNModel(spec(), 16, 2, partial(GCNLayer, cached=True))
    assert not model.trim and "trim=False" in repr(model)
    assert "trim=True" in repr(MPNNModel(spec(), 16, 2, partial(SAGELayer)))


def test_inconsistent_hop_counts_are_refused():
    model = MPNNModel(spec(), 16, 2, partial(SAGELayer)).eval()
    data = sampled()
    data.edge_index = data.edge_index[:, :-1]
    with pytest.raises(ValueError, match="num_sampled_edges to .* but the batch has"):
        model(data)
    data = sampled()
    del data.num_sampled_edges
    with pytest.raises(ValueError, match="only one of num_sampled_nodes"):
        model(data)
    data = sampled()
    data.num_sampled_nodes = [data.num_sampled_nodes, data.num_sampled_nodes]
    with pytest.raises(ValueError, match="list of non-negative ints"):
        model(data)


def test_collated_molecule_batch_untouched():
    """A Batch of small graphs (no hop counts) gives the same outputs with and without trim."""
    g = torch.Generator().manual_seed(0)
    graphs = [Data(x=torch.randn(k, 5, generator=g), edge_index=torch.randint(0, k, (2, 3 * k), generator=g),
                   edge_attr=torch.randn(3 * k, 2, generator=g)) for k in (4, 6)]
    data = Batch.from_data_list(graphs)
    trimmed, full = pair(MODELS["gps_gatedgcn"])
    trimmed.eval(), full.eval()
    with torch.no_grad():
        assert torch.equal(trimmed(data), full(data))
