"""Bad configs are refused before any compute, with messages that name the key and the fix."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from graphgt.errors import ConfigError
from graphgt.config.validate import validate_config
from tests.conftest import CONFIG_DIR, compose


def test_default_config_is_valid():
    validate_config(compose())


def test_unknown_key_names_path_and_valid_keys():
    cfg = compose(["+attention.hedas=4"])
    with pytest.raises(ConfigError, match=r"attention\.hedas: unknown key .*valid keys: .*heads"):
        validate_config(cfg)


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs='ten': expected int"):
        validate_config(compose(["trainer.max_epochs=ten"]))
    with pytest.raises(ConfigError, match=r"model\.norm='group': expected .*batch"):
        validate_config(compose(["model.norm=group"]))


def test_injected_key_cannot_be_set_twice():
    with pytest.raises(ConfigError, match=r"attention\.dim: is set by graphgt"):
        validate_config(compose(["+attention.dim=32"]))


def test_unimportable_target():
    with pytest.raises(ConfigError, match=r"local\._target_: cannot import 'graphgt.nn.local.GCNLayerr'"):
        validate_config(compose(["local._target_=graphgt.nn.local.GCNLayerr"]))


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as e:
        validate_config(compose(["trainer.max_epochs=ten", "+model.hiden=3"]))
    assert "trainer.max_epochs" in str(e.value) and "model.hiden" in str(e.value)


def _group_options():
    for group in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "experiment"):
        for option in sorted(group.glob("*.yaml")):
            yield group.name, option.stem


@pytest.mark.parametrize("group,option", list(_group_options()))
def test_every_group_option_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if group == "local" and option == "none":
        overrides.append("attention=full")
    if group == "data" and option == "store":
        overrides.append("data.source.path=/a/store")  # mandatory (???)
    validate_config(compose(overrides))


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_validates(experiment):
    validate_config(compose([f"experiment={experiment}"]))


def test_ablation_of_a_preset_turns_groups_off(tmp_path, capsys):
    """experiment=X attention=none / pe=none: the preset's leftover keys are ignored, loudly."""
    from graphgt.app import run
    from tests.conftest import compose_with_choices

    cfg, choices = compose_with_choices(["experiment=peptides-func-gps", "attention=none", "pe=none", "data=synthetic",
                                         "local=gcn", "data.num_nodes=200", "model.hidden=16", "model.layers=1",
                                         "trainer.max_epochs=1", "trainer.progress=false", "logger=none"])
    validate_config(cfg)
    results = run(cfg, tmp_path / "r", choices)
    err = capsys.readouterr().err
    assert "ignoring attention.heads, attention.dropout" in err and "ignoring pe.lap" in err
    assert "attention=None" in results["model_repr"] and results["config"]["model"]["hidden"] == 16
