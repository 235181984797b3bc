"""Layer-wise full-graph inference equals the model's plain full-graph forward (eval mode)."""
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from graphgt.data.layerwise import LayerwiseInference, self_loop_counts
from graphgt.data.store.core import csr_from_edges, write_store
from graphgt.nn.attention import PerformerAttention
from graphgt.nn.local import GATLayer, GatedGCNLayer, GCNLayer, GINLayer, SAGELayer
from graphgt.nn.model import GPSModel, MPNNModel
from graphgt.spec import DataSpec, FloatFeatures, Task

N, F, C = 240, 6, 4


def spec(level="node", edge=False):
    return DataSpec(Task("multiclass", C, level, "accuracy"), FloatFeatures(F), FloatFeatures(2) if edge else None,
                    "toy")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A random directed graph with some self-loops, fp16 features, a few unlabelled nodes."""
    rng = np.random.default_rng(0)
    pairs = np.stack([rng.integers(0, N, 2000), rng.integers(0, N, 2000)], 1)
    pairs = np.unique(np.concatenate([pairs, np.stack([np.arange(0, N, 7)] * 2, 1)]), axis=0)
    indptr, indices = csr_from_edges(pairs[:, 0], pairs[:, 1], N)
    y = rng.integers(0, C, N)
    y[[3, 6, 9]] = -1
    return write_store(tmp_path_factory.mktemp("lw") / "s", "toy", N, indptr, indices,
                       x=rng.standard_normal((N, F)).astype(np.float16), y=y,
                       splits={"val": rng.permutation(N)[:90]})


def full_forward(model, store):
    """The exact full-neighbour forward: every CSR entry ``indices[k]`` of row ``t`` is an edge into ``t``."""
    indptr, indices = np.asarray(store.indptr), np.asarray(store.indices)
    rows = np.repeat(np.arange(N), np.diff(indptr))
    data = Data(x=torch.from_numpy(np.asarray(store.x).astype(np.float32)),
                edge_index=torch.from_numpy(np.stack([indices.astype(np.int64), rows])))
    model.eval()
    with torch.no_grad():
        return model(data)


def warmed(model):
    """``model`` after three training-mode forwards on random graphs: BatchNorm running statistics
    away from their initial (0, 1), which layer-wise (eval-mode) inference must then use."""
    g = torch.Generator().manual_seed(5)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(Data(x=2 * torch.randn(50, F, generator=g) + 1,
                       edge_index=torch.randint(0, 50, (2, 200), generator=g)))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and all(float((m.running_var - 1).abs().max()) > 1e-2 for m in norms)
    return model


MODELS = {
    "sage_raw_io": lambda: MPNNModel(spec(), 16, 2, partial(SAGELayer), raw_io=True),
    # OGB's arxiv baselines: BatchNorm after each hidden layer (model.norm=batch), trained statistics
    "sage_raw_io_batchnorm": lambda: warmed(MPNNModel(spec(), 16, 3, partial(SAGELayer), raw_io=True, norm="batch")),
    "gcn_raw_io_batchnorm": lambda: warmed(MPNNModel(spec(), 16, 3, partial(GCNLayer), raw_io=True, norm="batch")),
    "gcn_encoder_layernorm": lambda: MPNNModel(spec(), 16, 2, partial(GCNLayer), norm="layer"),
    "sage_encoder": lambda: MPNNModel(spec(), 16, 3, partial(SAGELayer)),
    "sage_max": lambda: MPNNModel(spec(), 16, 2, partial(SAGELayer, aggr="max")),
    "gcn_raw_io": lambda: MPNNModel(spec(), 16, 2, partial(GCNLayer), raw_io=True),
    "gcn_encoder": lambda: MPNNModel(spec(), 16, 3, partial(GCNLayer)),
    "gcn_unnormalised": lambda: MPNNModel(spec(), 16, 2, partial(GCNLayer, normalize=False)),
    "gin": lambda: MPNNModel(spec(), 16, 2, partial(GINLayer)),
    "gps_gcn_no_attention": lambda: GPSModel(spec(), 16, 2, partial(GCNLayer)),
    "one_layer": lambda: MPNNModel(spec(), 16, 1, partial(SAGELayer), raw_io=True),
    # tuned GNNs (Luo et al., 2024): the residual reads the targets' own rows, pre-norm is row-wise
    "gcn_tuned_linear_res_batchnorm": lambda: warmed(MPNNModel(spec(), 16, 3, partial(GCNLayer), norm="batch",
                                                               residual="linear", dropout_before_head=True)),
    "sage_identity_res_prenorm": lambda: MPNNModel(spec(), 16, 3, partial(SAGELayer), norm="layer", prenorm=True,
                                                   residual="identity", jk="last"),
    "gcn_raw_in_batchnorm_res": lambda: warmed(MPNNModel(spec(), 16, 3, partial(GCNLayer), raw_in=True, norm="batch",
                                                         residual="linear", dropout_before_head=True)),
    "sage_raw_in_prenorm": lambda: MPNNModel(spec(), 16, 2, partial(SAGELayer), raw_in=True, norm="layer",
                                             prenorm=True, residual="identity"),
    "gcn_raw_io_res_prenorm": lambda: warmed(MPNNModel(spec(), 16, 3, partial(GCNLayer), raw_io=True, norm="batch",
                                                       prenorm=True, residual="identity")),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("options", [dict(chunk_size=17), dict(chunk_size=64, max_chunk_edges=150, gather_sources=True),
                                     dict(buffer="disk", chunk_size=50)], ids=["ram", "gathered", "disk"])
def test_layerwise_equals_full_graph_forward(store, name, options):
    torch.manual_seed(0)
    model = MODELS[name]()
    split = np.asarray(store.split("val"))
    labelled = split[np.asarray(store.y)[split] >= 0]
    assert labelled.shape[0] < split.shape[0]  # unlabelled split nodes are dropped, as loss_mask does
    expected = full_forward(model, store)[torch.from_numpy(labelled)]
    model.train()
    inference = LayerwiseInference(store, split, **options)
    pred, target = inference.predict(model, "cpu")
    assert model.training  # its mode is restored
    assert pred.shape == (labelled.shape[0], C) and pred.dtype == torch.float32
    torch.testing.assert_close(pred, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(target, torch.from_numpy(np.asarray(store.y)[labelled].astype(np.int64)))


def test_disk_buffers_are_deleted(store, tmp_path):
    model = MODELS["gcn_encoder"]()
    LayerwiseInference(store, np.arange(N), buffer="disk", buffer_dir=str(tmp_path), chunk_size=40).predict(model)
    assert list(Path(tmp_path).iterdir()) == []


def test_chunks_respect_both_bounds(store):
    inference = LayerwiseInference(store, np.arange(N), chunk_size=30, max_chunk_edges=40)
    chunks = inference.node_chunks()
    assert chunks[0][0] == 0 and chunks[-1][1] == N
    assert all(a == prev_b for (a, _), (_, prev_b) in zip(chunks[1:], chunks[:-1]))
    indptr = np.asarray(store.indptr)
    for a, b in chunks:
        assert b - a <= 30 and (b - a == 1 or indptr[b] - indptr[a] <= 40)
    assert len(inference) == len(chunks)
    assert sum(int(d.x.shape[0]) for d in inference) == N  # iterating yields the raw inputs


def test_self_loop_counts(store):
    indptr, indices = np.asarray(store.indptr), np.asarray(store.indices)
    rows = np.repeat(np.arange(N), np.diff(indptr))
    expected = np.bincount(rows[indices == rows], minlength=N)
    assert np.array_equal(self_loop_counts(indptr, indices, chunk_entries=50), expected)
    assert expected.sum() > 0


@pytest.mark.parametrize("make, message", [
    (lambda: GPSModel(spec(), 16, 2, partial(SAGELayer), partial(PerformerAttention, heads=2)), "global attention"),
    (lambda: MPNNModel(spec(), 16, 2, partial(GATLayer)), "GATLayer has no layer-wise form"),
    (lambda: MPNNModel(spec(edge=True), 16, 2, partial(GatedGCNLayer)), "edge features"),
    (lambda: MPNNModel(spec("graph"), 16, 2, partial(SAGELayer)), "graph-level"),
    (lambda: MPNNModel(spec(), 16, 2, partial(GCNLayer, cached=True)), "cached GCN"),
    (lambda: torch.nn.Linear(F, C), "has no layerwise_plan"),
    (lambda: MPNNModel(spec(), 16, 2, partial(SAGELayer), jk="cat"), "model.jk='cat' reads every layer's output"),
])
def test_models_that_cannot_run_layerwise_say_why(store, make, message):
    with pytest.raises(ValueError, match=message):
        LayerwiseInference(store, np.arange(10)).predict(make())


def test_bad_arguments(store):
    with pytest.raises(ValueError, match="buffer='gpu' must be one of"):
        LayerwiseInference(store, np.arange(5), buffer="gpu")
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        LayerwiseInference(store, np.arange(5), chunk_size=0)
    with pytest.raises(ValueError, match="distinct"):
        LayerwiseInference(store, np.array([1, 1]))
    with pytest.raises(ValueError, match="outside"):
        LayerwiseInference(store, np.array([N]))
