"""Every global attention of configs/attention/ inside GPS, swapped by one config key, on
graph-level (several graphs per batch) and node-level (a neighbour-sampled store) data."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from graphgt.app import run
from tests.conftest import compose_with_choices

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "attention"
ATTENTIONS = sorted(p.stem for p in CONFIGS.glob("*.yaml") if p.stem != "none")
SMALL = {"performer": ["attention.num_features=8"], "codebook": ["attention.codebook_size=32"],
         "topm": ["attention.m=8"], "expander": ["attention.expander_degree=2"]}
FAST = ["trainer.progress=false", "trainer.checkpoint=false", "logger=none", "pe=none", "model.hidden=16",
        "model.layers=1", "trainer.max_epochs=2", "trainer.scheduler.warmup_epochs=1"]


def test_every_module_has_a_config():
    assert {"full", "performer", "expander", "topm", "codebook"} <= set(ATTENTIONS)


@pytest.mark.parametrize("name", ATTENTIONS)
def test_gps_with_each_attention_on_graph_level_data(tmp_path, name):
    torch.set_num_threads(1)
    cfg, choices = compose_with_choices(FAST + ["data=pyg-fake", "local=gin", f"attention={name}",
                                                "attention.heads=2"] + SMALL.get(name, []))
    r = run(cfg, tmp_path / "run", choices)
    assert 0.0 <= r["best_val"] <= 1.0
    assert r["choices"]["attention"] == name and "Attention(16" in r["model_repr"]


@pytest.mark.parametrize("name", ATTENTIONS)
def test_gps_with_each_attention_on_sampled_node_batches(tmp_path, name):
    from tests.data.store.test_node import csbm_store

    torch.set_num_threads(1)
    store = csbm_store(tmp_path / "store", num_nodes=600)
    cfg, choices = compose_with_choices(FAST + ["data=store", f"data.source.path={store.path}", "local=sage",
                                                "data.sampler.fanouts=[5,5]", "data.batch_size=64",
                                                "data.eval_batch_size=128", f"attention={name}",
                                                "attention.heads=2"] + SMALL.get(name, []))
    r = run(cfg, tmp_path / "run", choices)
    assert 0.0 <= r["best_val"] <= 1.0 and "Attention(16" in r["model_repr"]


GPS_EXPERIMENTS = sorted(p.stem for p in (CONFIGS.parent / "experiment").glob("*gps*.yaml"))


@pytest.mark.parametrize("experiment", GPS_EXPERIMENTS)
def test_every_gps_preset_takes_every_attention(experiment):
    """``experiment=<x>-gps attention=<any>`` is one key: no preset pins a module-specific option."""
    from graphgt.config.validate import validate_config
    from tests.conftest import compose

    for name in ATTENTIONS + ["none"]:
        overrides = [f"experiment={experiment}", f"attention={name}"]
        if "store" in experiment:
            overrides.append("data.source.path=/nonexistent")
        validate_config(compose(overrides))
