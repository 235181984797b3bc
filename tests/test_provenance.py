"""results.json provenance (versions, git commit) and a cross-validation run end to end into the report."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from graphgt.app import git_state, run, versions
from graphgt.eval.report import aggregate, find_results
from tests.conftest import compose_with_choices
from tests.data.helpers import SHARED, requires_shared

TINY = ["model.hidden=16", "model.layers=1", "trainer.max_epochs=1", "trainer.progress=false",
        "trainer.checkpoint=false", "pe=none"]
REPO = Path(__file__).resolve().parents[1]


def test_results_record_versions_and_git(tmp_path):
    cfg, choices = compose_with_choices(TINY + ["data.num_nodes=200", "logger=none", f"cache_dir={tmp_path / 'c'}"])
    run(cfg, tmp_path / "run", choices)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["versions"] == versions()
    assert set(results["versions"]) == {"graphgt", "torch", "torch_geometric", "ogb", "python"}
    assert results["versions"]["torch_geometric"] and results["git"] == git_state()


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_git_state_of_this_checkout():
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    state = git_state()
    assert state["commit"] == head and isinstance(state["dirty"], bool)


def test_git_state_never_fails_a_run(monkeypatch):
    assert git_state(timeout_s=1e-9) is None  # git slower than the bound
    monkeypatch.setenv("PATH", "")  # no git at all
    assert git_state() is None


@requires_shared
def test_kfold_runs_are_one_report_row(tmp_path):
    """`+data/split=kfold data.split.fold=0,1` on real MUTAG: the config composes and validates, each
    fold trains on its own split, and the report averages the folds into one row."""
    for fold in (0, 1):
        cfg, choices = compose_with_choices(TINY + ["data=mutag", f"data.root={SHARED}", "+data/split=kfold",
                                                    f"data.split.fold={fold}", f"cache_dir={tmp_path / 'c'}"])
        run(cfg, tmp_path / "cv" / str(fold), choices)
    (row,) = aggregate(find_results([str(tmp_path / "cv")]))
    assert (row["num_folds"], row["num_seeds"], row["folds"]) == (2, 1, ["data.split.fold=0", "data.split.fold=1"])
    assert row["config"]["data.split._target_"] == "graphgt.data.splits.KFoldSplit"


@pytest.mark.parametrize("option", ["kfold", "kfold-file"])
def test_split_group_options_compose_validate_and_build(tmp_path, option):
    from hydra.utils import instantiate

    from graphgt.config.validate import validate_config
    from graphgt.data.splits import KFoldSplit
    from graphgt.errors import ConfigError
    from tests.conftest import compose

    overrides = ["data=mutag", f"+data/split={option}", "data.split.fold=2"]
    if option == "kfold-file":
        folds = tmp_path / "folds.txt"
        KFoldSplit.write_folds(str(folds), [[0, 1], [2, 3], [4, 5], [6]])
        overrides.append(f"data.split.path={folds}")
    cfg = compose(overrides)
    validate_config(cfg)
    split = instantiate(cfg.data.split)
    assert isinstance(split, KFoldSplit) and split.train is None and split.fold == 2
    if option == "kfold":
        assert (split.k, split.path, split.stratify) == (5, None, True)
    else:
        assert split.k is None and split.split(7).test.tolist() == [4, 5]
        with pytest.raises(ConfigError, match="data.split.k is null: set the number of folds, or data.split.path"):
            instantiate(compose(overrides[:-1]).data.split).check()
