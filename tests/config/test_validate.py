"""Bad configs are refused before any compute, with messages that name the key and the fix."""
import importlib.util

import pytest

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


def _has_optuna_sweeper() -> bool:
    try:
        return importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
    except ModuleNotFoundError:  # no hydra_plugins namespace at all
        return False


@pytest.mark.parametrize("group,option", list(_group_options()))
def test_every_group_option_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if group == "local" and option == "none":
        overrides.append("attention=full")
    if group == "data" and option == "store":
        overrides.append("data.source.path=/a/store")  # mandatory (???)
    if group == "hparams_search" and not _has_optuna_sweeper():
        pytest.skip("hparams_search needs hydra-optuna-sweeper (pip install 'graphgt[optuna]')")
    if group == "logger" and option == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ConfigError, match=r"logger=tensorboard needs the 'tensorboard' package.*pip install tensorboard"):
            validate_config(compose(overrides))
        return
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


# ------------------------------------------------------------------ targets that run code or touch files
REFUSED = ["os.rmdir", "os.system", "os.path.join", "posix.system", "sys.exit", "subprocess.run", "shutil.rmtree",
           "builtins.eval", "builtins.exec", "builtins.open", "builtins.__import__", "importlib.import_module",
           "pickle.loads", "marshal.loads", "ctypes.CDLL", "socket.socket", "pty.spawn", "runpy.run_path",
           "code.interact", "pathlib.Path", "io.open", "tempfile.mkdtemp", "signal.raise_signal",
           "multiprocessing.Process", "timeit.timeit", "hydra.utils.call", "torch.load", "numpy.load",
           "graphgt.io.atomic_save"]


@pytest.mark.parametrize("target", REFUSED)
def test_targets_that_run_code_or_touch_files_are_refused(target):
    """Any `_target_` of the composed config is checked before Hydra could call it: the error names
    the key, the target and the reason."""
    with pytest.raises(ConfigError) as e:
        validate_config(compose(["data=pyg-fake", f"data.dataset._target_={target}"]))
    msg = str(e.value)
    assert f"data.dataset._target_: '{target}' is refused: '" in msg
    top = target.split(".")[0]
    assert f"'{top}" in msg.split("is refused:")[1]  # the module at fault is named with its reason


def test_a_refused_module_is_not_even_imported():
    import sys

    sys.modules.pop("this", None)
    with pytest.raises(ConfigError, match=r"model\._target_: 'this\.s' is refused: 'this' is a standard-library"):
        validate_config(compose(["model._target_=this.s"]))
    assert "this" not in sys.modules  # the check runs on the path, before the import


def test_a_re_exported_dangerous_callable_is_refused(monkeypatch):
    """`somepkg.rmtree` that is `shutil.rmtree` under another name: the resolved object is checked too."""
    import shutil
    import sys
    import types

    from graphgt.config.validate import import_target

    pkg = types.ModuleType("graphgt_test_reexport")
    pkg.rmtree, pkg.os_module = shutil.rmtree, __import__("os")
    monkeypatch.setitem(sys.modules, "graphgt_test_reexport", pkg)
    with pytest.raises(ConfigError, match=r"data\.x\._target_: 'graphgt_test_reexport\.rmtree' is refused: it is "
                                          r"shutil\.rmtree: 'shutil' creates, changes or deletes files"):
        import_target("graphgt_test_reexport.rmtree", "data.x")
    with pytest.raises(ConfigError, match="is a module, not a class or function"):
        import_target("graphgt_test_reexport.os_module", "data.x")


def test_model_and_data_targets_are_still_allowed():
    from graphgt.config.validate import refused_target

    for target in ("graphgt.data.pyg.PyGDataset", "torch_geometric.datasets.FakeDataset", "torch.optim.AdamW",
                   "torch.nn.Linear", "graphgt.data.splits.IndexFileSplit", "collections.OrderedDict"):
        assert refused_target(target) is None, target
    validate_config(compose(["data=pyg-fake"]))


def test_recursive_false_is_refused_by_the_data_module():
    """`data._recursive_=false` hands PyGDataset unbuilt DictConfigs: check() refuses them clearly."""
    from hydra.utils import instantiate

    cfg = compose(["+data._recursive_=false", "data=pyg-fake"])
    validate_config(cfg)
    data = instantiate(cfg.data)
    with pytest.raises(ConfigError, match=r"data\.dataset arrived as an unbuilt config node \(_target_: "
                                          r"torch_geometric\.datasets\.FakeDataset\).*_recursive_"):
        data.check()
