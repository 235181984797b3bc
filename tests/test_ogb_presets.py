"""The OGB ogbn-arxiv presets (issue 13): their published figure, OGB's architecture, a full-batch
training batch whose outputs are the full graph's, and 2 epochs on a small fake arxiv in OGB's raw layout."""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch_geometric.data import Data

from graphgt.app import run
from graphgt.data.sampling import NeighborSampler
from graphgt.data.store.core import csr_from_edges
from graphgt.reproduce import published
from graphgt.spec import DataSpec, FloatFeatures, Task
from tests.conftest import CONFIG_DIR, compose, compose_with_choices

# preset -> (published line, parameters of OGB's model for arxiv's 128 features and 40 classes)
PRESETS = {
    "ogbn-arxiv-gcn": ("test accuracy 0.7174 ± 0.0029 (OGB leaderboard, GCN; snap-stanford/ogb "
                       "examples/nodeproppred/arxiv)", 110_120),
    "ogbn-arxiv-sage": ("test accuracy 0.7149 ± 0.0027 (OGB leaderboard, GraphSAGE; snap-stanford/ogb "
                        "examples/nodeproppred/arxiv)", 218_664),
    # Luo et al.'s tuned GCN (raw_in): GCN + residual Linear 128x512 (+b) each, 4 x [GCN, residual Linear
    # 512x512 (+b)], 5 BatchNorms 2x512, head 512x40 (+b): 2 * 66,048 + 8 * 262,656 + 5 * 1,024 + 20,520
    "ogbn-arxiv-gcn-tuned": ("test accuracy 0.7360 ± 0.0018 (Luo et al., NeurIPS 2024, tuned GCN)", 2_258_984),
}


@pytest.fixture(scope="module")
def ogb_root(tmp_path_factory):
    """A 300-node arxiv in OGB's raw layout (directed csv edges with loops and repeats, 128 features)."""
    from tests.data.ogb_fixtures import write_ogb_node_fixture

    root = tmp_path_factory.mktemp("ogb")
    write_ogb_node_fixture(root, "arxiv", num_nodes=300, num_edges=1500, num_feat=128)
    return root


def preset_overrides(preset, root, tmp_path):
    return [f"experiment={preset}", f"data.source.root={root}", "data.source.download=false",
            f"data.store_root={tmp_path / 'stores'}", "data.num_workers=0", "trainer.progress=false",
            "trainer.checkpoint=false", "logger=none"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_names_its_published_figure(preset):
    assert published(CONFIG_DIR / "experiment" / f"{preset}.yaml") == PRESETS[preset][0]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_trains_two_epochs_on_a_fake_arxiv(preset, ogb_root, tmp_path):
    torch.set_num_threads(1)
    cfg, choices = compose_with_choices(preset_overrides(preset, ogb_root, tmp_path) + ["trainer.max_epochs=2"])
    r = run(cfg, tmp_path / "run", choices)
    assert r["dataset"] == "ogbn-arxiv" and r["metric"] == "acc"  # OGB's Evaluator
    assert r["num_params"] == PRESETS[preset][1]  # OGB's model for arxiv
    assert r["stopped_epoch"] == 2 and 1 <= r["best_epoch"] <= 2
    assert 0.0 <= r["best_val"] <= 1.0 and 0.0 <= r["test_at_best_val"] <= 1.0
    assert math.isfinite(r["final_train_loss"]) and "norm='batch'" in r["model_repr"]
    if preset.endswith("-tuned"):
        assert "residual='linear'" in r["model_repr"] and "dropout_before_head=True" in r["model_repr"]
        assert "raw_in=True" in r["model_repr"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_one_training_batch_holds_every_training_node(preset, ogb_root, tmp_path):
    """Full batch: one batch per epoch, its seeds the whole (shuffled) training split, every
    neighbour kept; evaluation is layer-wise (exact)."""
    cfg, _ = compose_with_choices(preset_overrides(preset, ogb_root, tmp_path))
    data = instantiate(cfg.data)
    data.setup([], tmp_path / "cache")
    loader = data.train_loader(seed=0)
    batches = list(loader)
    assert len(loader) == len(batches) == 1
    train = np.asarray(data.store.split("train"))
    seeds = batches[0].n_id[batches[0].loss_mask].numpy()
    np.testing.assert_array_equal(np.sort(seeds), train)
    assert type(data.val_loader()).__name__ == "LayerwiseInference"
    assert data.store.meta["symmetrised"] is True  # OGB's script symmetrises arxiv too


def sparse_symmetric_graph(n=400, m=420, seed=0):
    """A sparse symmetric CSR without loops or repeats (as the store holds arxiv): long paths, so
    that 3- and 4-hop neighbourhoods of a few seeds differ."""
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, n, (m, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.unique(np.concatenate([pairs, pairs[:, ::-1]]), axis=0)
    return csr_from_edges(pairs[:, 0], pairs[:, 1], n)


@pytest.mark.parametrize("preset, fanouts, exact", [
    ("ogbn-arxiv-gcn", None, True),
    ("ogbn-arxiv-sage", None, True),
    ("ogbn-arxiv-gcn-tuned", None, True),  # 5 layers, 6 hops: residual + BatchNorm, still exact
    # GCN on 3 hops: the outermost nodes' degrees count only their in-batch edges -> not the full graph's
    ("ogbn-arxiv-gcn", [-1, -1, -1], False),
], ids=["gcn", "sage", "gcn_tuned", "gcn_3_hops"])
def test_full_batch_outputs_equal_the_full_graph_forward(preset, fanouts, exact):
    """The preset's sampler and model (BatchNorm with trained running statistics, eval mode): the
    training nodes' outputs on the sampled batch equal those of a forward over the whole graph."""
    cfg = compose([f"experiment={preset}"])
    sampler = instantiate(cfg.data.sampler) if fanouts is None else partial(NeighborSampler, fanouts=fanouts)
    n, f, c = 400, 8, 5
    indptr, indices = sparse_symmetric_graph(n)
    seeds = np.arange(0, n, 40)
    sub = sampler(indptr, indices).sample(seeds, 0)
    assert len(sub.num_sampled_nodes) == len(fanouts or cfg.data.sampler.fanouts) + 1
    assert sub.num_sampled_nodes[-1] > 0  # the last hop reaches new nodes: the comparison is not trivial
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, f, generator=g)
    batch = Data(x=x[torch.from_numpy(sub.node_ids)], edge_index=torch.from_numpy(sub.edge_index),
                 batch=torch.zeros(sub.num_nodes, dtype=torch.long), num_graphs=1,
                 num_sampled_nodes=sub.num_sampled_nodes.tolist(), num_sampled_edges=sub.num_sampled_edges.tolist())
    rows = np.repeat(np.arange(n), np.diff(indptr))
    whole = Data(x=x, edge_index=torch.from_numpy(np.stack([np.asarray(indices, dtype=np.int64), rows])))
    spec = DataSpec(Task("multiclass", c, "node", "accuracy"), FloatFeatures(f), None, "toy")
    torch.manual_seed(0)
    model = instantiate(cfg.model, _partial_=True)(spec=spec, local=instantiate(cfg.local), attention=None, pe=[])
    assert model.trim
    model.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics off (0, 1); trimmed training forwards
            model(batch)
        assert model.norms[0].running_mean.abs().max() > 1e-2
        model.eval()
        out, ref = model(batch)[:len(seeds)], model(whole)[torch.from_numpy(seeds)]
    if exact:
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    else:
        assert not torch.allclose(out, ref, atol=1e-3)


def test_tuned_products_sage_preset_on_a_fake_products(tmp_path, capsys):
    """ogbn-products-sage-tuned: Luo et al.'s tuned GraphSAGE (5 x SAGE 200 wide, LayerNorm, dropout
    0.5, Adam 3e-3) with its leaderboard figure, trained as product.py on random-node subgraphs in 10
    parts; on a 300-node products in OGB's raw layout it trains, evaluates exactly layer by layer, and has product.py's parameters minus one LayerNorm
    (Linear 100x200 + 5 SAGE(200, 200) + 5 LayerNorms + head 200x47: 20,200 + 5 * 80,200 + 5 * 400 + 9,447)."""
    from tests.data.ogb_fixtures import write_ogb_node_fixture

    preset = "ogbn-products-sage-tuned"
    assert published(CONFIG_DIR / "experiment" / f"{preset}.yaml") == \
        "test accuracy 0.8389 ± 0.0036 (Luo et al., NeurIPS 2024, tuned GraphSAGE; OGB leaderboard entry)"
    root = tmp_path / "ogb"
    write_ogb_node_fixture(root, "products", num_nodes=300, num_edges=1500, num_feat=100)
    torch.set_num_threads(1)
    cfg, choices = compose_with_choices(preset_overrides(preset, root, tmp_path) + ["trainer.max_epochs=1"])
    assert cfg.data.sampler._target_ == "graphgt.data.sampling.RandomNodeSampler" and cfg.data.sampler.num_parts == 10
    assert cfg.data.layerwise_eval.buffer == "ram" and cfg.trainer.max_epochs == 1
    r = run(cfg, tmp_path / "run", choices)
    assert "in 10 parts) with their random context" in capsys.readouterr().out
    assert r["dataset"] == "ogbn-products" and r["metric"] == "acc"
    assert r["num_params"] == 20_200 + 5 * 80_200 + 5 * 400 + 9_447 == 433_047 - 400
    assert 0.0 <= r["test_at_best_val"] <= 1.0
