"""The LargeGT model (graphgt.nn.largegt) on token batches, alone and through the CLI."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from graphgt.data.store.hop_features import compute_hop_features
from graphgt.data.sampling import NodeLoader, TokenSampler
from graphgt.nn.attention.performer import PerformerAttention
from graphgt.nn.encoders import LinearEncoder
from graphgt.nn.largegt import LargeGTModel
from graphgt.spec import DataSpec, FloatFeatures, Task
from graphgt.app import run
from tests.conftest import compose_with_choices
from tests.data.store.test_node import csbm_store

FAST = ["trainer.progress=false", "trainer.checkpoint=false", "logger=none", "pe=none"]


def _spec(features=16, classes=5):
    return DataSpec(task=Task("multiclass", classes, "node", "accuracy"), node_features=FloatFeatures(features),
                    edge_features=None, name="toy")


@pytest.fixture(scope="module")
def token_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("stores") / "csbm"
    csbm_store(path)
    return compute_hop_features(path, hops=2)


def _batch(store, hops=2, k=12):
    sampler = TokenSampler(store.indptr, store.indices, num_tokens=k)
    loader = NodeLoader(store, store.split("train"), sampler, batch_size=64, shuffle=True, hop_features=hops)
    return next(iter(loader))


def test_forward_shapes_and_gradients(token_store):
    torch.manual_seed(0)
    model = LargeGTModel(_spec(), hidden=32, heads=2, global_dim=16,
                         attention=lambda d: PerformerAttention(d, heads=2, num_features=8))
    batch = _batch(token_store)
    out = model(batch)
    assert out.shape == (batch.num_seeds, 5)
    out.square().mean().backward()
    for name in ("token_in.weight", "hop_emb.weight", "prop_emb.weight", "global_in.weight",
                 "attention.in_proj.weight", "readout.score.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert "LargeGTModel(hidden=32, layers=1, hops=2, global_dim=16" in repr(model)


def test_padding_tokens_do_not_matter(token_store):
    torch.manual_seed(0)
    model = LargeGTModel(_spec(), hidden=32, heads=2, attention=None).eval()
    batch = _batch(token_store, k=40)  # low-degree seeds get padding
    pad = ~batch.token_mask
    assert pad.any()
    out = model(batch)
    batch.token_x[pad] = 1e3 * torch.randn(int(pad.sum()), 16)
    batch.token_xhop[pad] = -7.0
    torch.testing.assert_close(model(batch), out, atol=1e-5, rtol=1e-5)


def test_hop_copies_are_used_and_required(token_store):
    torch.manual_seed(0)
    model = LargeGTModel(_spec(), hidden=32, heads=2, attention=None).eval()
    batch = _batch(token_store)
    out = model(batch)
    batch.token_xhop = batch.token_xhop + 1.0
    assert not torch.allclose(model(batch), out)
    with pytest.raises(ValueError, match="data.hop_features=2"):
        batch.token_xhop = batch.token_xhop[:, :, :1]
        model(batch)
    with pytest.raises(ValueError, match="local=none"):
        LargeGTModel(_spec(), local=lambda d: torch.nn.Identity())
    with pytest.raises(ValueError, match="pe=none"):
        LargeGTModel(_spec(), attention=None, pe=[(object(), lambda pe: None)])


def test_largegt_trains_through_the_cli(tmp_path, token_store):
    torch.set_num_threads(1)
    common = FAST + ["data=store-tokens", f"data.source.path={token_store.path}", "model=largegt", "local=none",
                     "model.hidden=32", "model.global_dim=16", "data.sampler.num_tokens=16",
                     "data.batch_size=128", "data.eval_batch_size=300", "trainer.max_epochs=6",
                     "trainer.optimizer.lr=0.005", "trainer.scheduler.warmup_epochs=1"]
    cfg, choices = compose_with_choices(common + ["attention=none"])
    local = run(cfg, tmp_path / "local", choices)
    assert local["best_val"] > 0.8  # 5 classes: chance 0.2
    cfg, choices = compose_with_choices(common + ["attention=performer", "attention.heads=2",
                                                  "attention.num_features=8"])
    both = run(cfg, tmp_path / "global", choices)
    assert both["best_val"] > 0.8
    assert "attention=PerformerAttention" in both["model_repr"]


def test_in_memory_source_writes_cora_as_a_store(tmp_path, shared_data):
    from graphgt.data.planetoid import PlanetoidData
    from graphgt.data.store.node import InMemorySource, StoreNodeData

    root = tmp_path / "data"
    shutil.copytree(shared_data / "planetoid", root / "planetoid")
    module = PlanetoidData(str(root), "Cora")
    source = InMemorySource(module, "cora", str(tmp_path / "cache"))
    dm = StoreNodeData(source, lambda indptr, indices: TokenSampler(indptr, indices, num_tokens=8),
                       store_root=str(tmp_path / "stores"))
    spec = dm.load(tmp_path / "cache")
    store = dm.store
    assert store.num_nodes == 2708 and store.indices.shape[0] == 10556  # PyG's Cora: 5278 undirected edges
    assert spec.task.num_outputs == 7 and spec.node_feature_dim == 1433
    reference = PlanetoidData(str(root), "Cora")
    reference.setup([], tmp_path / "cache2")
    for name, part in zip(("train", "val", "test"), reference.split_indices):
        assert np.array_equal(store.split(name), part.numpy())
    g = reference._prepared.graphs[0]
    assert np.array_equal(store.y, g.y.numpy())
    np.testing.assert_array_equal(store.x, g.x.numpy())
    # symmetric CSR without self loops
    rows = np.repeat(np.arange(2708), np.diff(store.indptr))
    pairs = set(zip(rows.tolist(), store.indices.tolist()))
    assert all((j, i) in pairs for i, j in pairs) and not any(i == j for i, j in pairs)
    assert source.key().startswith("cora-") and source.key() == InMemorySource(PlanetoidData(str(root), "Cora"),
                                                                               "cora", "x").key()
