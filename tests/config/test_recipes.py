"""Per-dataset recommended settings (issue 14): ``configs/recipe/<data>.yaml`` and
``configs/recipe/model/<data>_<model>.yaml``, picked up by every composed command through the
defaults list (``- optional recipe: ${data}``), below presets and command-line keys."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from graphgt.config.validate import validate_config
from tests.conftest import CONFIG_DIR, compose

CONFIGS = Path(CONFIG_DIR)
DATASETS = sorted(p.stem for p in (CONFIGS / "data").glob("*.yaml"))
PRESETS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
NO_RECIPE = ["~recipe", "~recipe/model"]


def test_a_composed_command_picks_up_its_dataset_recipe():
    cfg = compose(["data=cora", "model=mpnn", "local=gcn", "attention=none", "pe=none"])
    assert cfg.trainer.optimizer._target_ == "torch.optim.Adam"
    assert (cfg.trainer.optimizer.lr, cfg.trainer.optimizer.weight_decay) == (0.01, 5.0e-4)
    assert (cfg.trainer.max_epochs, cfg.trainer.scheduler, cfg.trainer.grad_clip) == (200, None, None)
    assert cfg.model.raw_io is True and cfg.model.input_dropout == 0.5
    gps = compose(["data=cora"])                              # the model part follows model=
    assert (gps.model.norm, gps.model.layers, gps.model.dropout, gps.trainer.optimizer.lr) == ("layer", 2, 0.7, 0.01)
    assert gps.trainer.scheduler.warmup_epochs == 10


def test_command_line_and_presets_override_a_recipe_and_it_can_be_dropped():
    assert compose(["data=cora", "trainer.optimizer.lr=0.03", "model.norm=batch"]).trainer.optimizer.lr == 0.03
    assert compose(["data=cora", "model.norm=batch"]).model.norm == "batch"
    assert compose(["experiment=cora-gcn"]).model.hidden == 16             # the preset's own value
    bare, default = compose(["data=cora", *NO_RECIPE]), compose()
    assert OmegaConf.to_container(bare.trainer) == OmegaConf.to_container(default.trainer)
    assert OmegaConf.to_container(bare.model) == OmegaConf.to_container(default.model)
    assert compose(["data=synthetic"]).trainer.optimizer.lr == default.trainer.optimizer.lr  # no recipe: defaults


def test_shared_recipes_are_inherited():
    for data in ("texas", "wisconsin"):
        assert compose([f"data={data}", "model=mpnn"]).model.residual == "linear"
    assert compose(["data=enzymes", "model=mpnn"]).model.pool == "sum"
    assert compose(["data=ogbg-molbbbp"]).trainer.max_epochs == 40


def test_every_recipe_belongs_to_a_shipped_dataset_and_model():
    models = {p.stem for p in (CONFIGS / "model").glob("*.yaml")}
    for path in (CONFIGS / "recipe").glob("*.yaml"):
        assert path.stem in DATASETS, f"{path}: no configs/data/{path.stem}.yaml (the recipe would never apply)"
    for path in (CONFIGS / "recipe" / "model").glob("*.yaml"):
        data, _, model = path.stem.rpartition("_")
        assert data in DATASETS and model in models, f"{path}: not <shipped data>_<shipped model>.yaml"


@pytest.mark.parametrize("data", DATASETS)
@pytest.mark.parametrize("model", ["gps", "mpnn"])
def test_every_shipped_dataset_and_model_composes_to_a_valid_config(data, model):
    extra = ["attention=none", "pe=none"] if model == "mpnn" else []
    validate_config(compose([f"data={data}", f"model={model}", *extra]))


@pytest.mark.parametrize("preset", PRESETS)
def test_recipes_never_change_a_preset(preset):
    """A preset spells out every setting it was measured with, so that a recipe tuned later cannot
    silently change a published reproduction: composed with and without the recipes, it is the same."""
    with_recipes = OmegaConf.to_container(compose([f"experiment={preset}"]))
    without = OmegaConf.to_container(compose([f"experiment={preset}", *NO_RECIPE]))
    assert with_recipes == without
