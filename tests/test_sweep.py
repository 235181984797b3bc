"""Sweeps: the objective is a validation score (never test), a failing trial does not end the sweep
(basic launcher and Optuna), and an existing sweep directory is never overwritten."""
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

SMALL = ["data.num_nodes=300", "model.hidden=32", "model.layers=1", "trainer.max_epochs=2", "trainer.progress=false",
         "pe=none"]

try:
    import hydra_plugins.hydra_optuna_sweeper  # noqa: F401
    HAS_OPTUNA = True
except ImportError:
    HAS_OPTUNA = False
requires_optuna = pytest.mark.skipif(not HAS_OPTUNA, reason="hydra-optuna-sweeper not installed (graphgt[optuna])")

#: runs the CLI with graphgt.app.run wrapped: GRAPHGT_TEST_FAIL=raise|nan makes call GRAPHGT_TEST_FAIL_CALL
#: raise a RuntimeError (a bug, not a GraphGTError) or report a NaN validation score
DRIVER = """
import math, os, sys
import graphgt.app as app
real, calls = app.run, [0]
def run(cfg, run_dir, **kw):
    calls[0] += 1
    if calls[0] == int(os.environ.get("GRAPHGT_TEST_FAIL_CALL", "0")):
        if os.environ["GRAPHGT_TEST_FAIL"] == "raise":
            raise RuntimeError("injected failure")
        return {**real(cfg, run_dir, **kw), "best_val": math.nan}
    return real(cfg, run_dir, **kw)
app.run = run
from graphgt.cli import main
main(sys.argv[1:])
"""


def graphgt(*args, env=None, driver=False):
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    cmd = [sys.executable, "-c", DRIVER] if driver else [sys.executable, "-m", "graphgt.cli"]
    return subprocess.run([*cmd, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with its bytes' hash and mtime (directories: mtime only)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None,
                                       p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def returned(stdout: str) -> list:
    """The values the jobs returned to the sweeper, from their 'returned to the sweeper as' lines."""
    return [float(line.rsplit(" as ", 1)[1].split()[0]) for line in stdout.splitlines()
            if "returned to the sweeper as" in line and "nothing" not in line]


# ------------------------------------------------------------------------------------ the objective
def test_objective_value_is_oriented_and_nan_is_a_failure():
    from graphgt.cli import _objective_value

    assert _objective_value({"best_val": 0.8, "test_at_best_val": 0.9, "higher_is_better": True}, "best_val") == 0.8
    assert _objective_value({"best_val": 0.25, "higher_is_better": False}, "best_val") == -0.25  # MAE: maximise -MAE
    assert _objective_value({"best_val": math.nan, "higher_is_better": True}, "best_val") is None
    assert _objective_value({"best_val": math.inf, "higher_is_better": True}, "best_val") is None


@pytest.mark.parametrize("bad", ["test_at_best_val", "test", "best_test"])
def test_test_objective_is_refused(bad):
    from graphgt.config.validate import check_objective
    from graphgt.errors import ConfigError
    from tests.conftest import compose
    from graphgt.config.validate import validate_config

    with pytest.raises(ConfigError, match="leaks"):
        check_objective(bad)
    with pytest.raises(ConfigError, match=f"objective={bad}"):
        validate_config(compose([f"objective={bad}", "pe=none"]))
    with pytest.raises(ConfigError, match="valid: best_val: "):
        check_objective("final_train_loss")
    assert check_objective("best_val") == "best_val" and check_objective(None) == "best_val"
    assert compose(["pe=none"]).objective == "best_val"


def test_test_objective_refused_before_anything_is_written(tmp_path):
    sweep = tmp_path / "sweep"
    p = graphgt("train", "--multirun", *SMALL, "seed=0,1", "objective=test_at_best_val", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 2
    assert "objective=test_at_best_val" in p.stderr and "leaks" in p.stderr and "valid: best_val" in p.stderr
    assert not sweep.exists()


def test_basic_sweep_returns_the_validation_score(tmp_path):
    sweep = tmp_path / "sweep"
    p = graphgt("train", "--multirun", *SMALL, "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr
    results = [json.loads((sweep / str(i) / "results.json").read_text()) for i in range(2)]
    assert returned(p.stdout) == pytest.approx([round(r["best_val"], 4) for r in results], abs=1e-4)
    assert all("objective" not in r["config"] for r in results)  # the sweeper's key, not the run's
    cfg = yaml.safe_load((sweep / "0" / ".hydra" / "config.yaml").read_text())
    assert cfg["objective"] == "best_val"


# ---------------------------------------------------------------------------------- failing trials
def test_a_crashing_trial_does_not_end_a_basic_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    p = graphgt("train", "--multirun", *SMALL, "seed=0,1,2", f"hydra.sweep.dir={sweep}", driver=True,
                env={"GRAPHGT_TEST_FAIL": "raise", "GRAPHGT_TEST_FAIL_CALL": "2"})
    assert p.returncode == 1, p.stderr
    assert (sweep / "0" / "results.json").exists() and (sweep / "2" / "results.json").exists()
    assert not (sweep / "1" / "results.json").exists()
    error = json.loads((sweep / "1" / "error.json").read_text())
    assert error["error"] == "RuntimeError" and "injected failure" in error["traceback"]
    assert "1 of 3 trials failed" in p.stderr and "the sweep goes on" in p.stderr


# ------------------------------------------------------------------------------------------ optuna
@requires_optuna
@pytest.mark.parametrize("fail", ["raise", "nan"])
def test_optuna_records_a_failed_trial_and_goes_on(tmp_path, fail):
    sweep = tmp_path / "sweep"
    p = graphgt("train", "--multirun", *SMALL, "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize",
                "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=0", "seed=0,1,2,3,4,5",
                f"hydra.sweep.dir={sweep}", driver=True, env={"GRAPHGT_TEST_FAIL": fail, "GRAPHGT_TEST_FAIL_CALL": "2"})
    done = sorted(sweep.glob("*/results.json"))
    assert len(done) == 3 if fail == "nan" else 2, p.stderr  # a NaN run finished, but its value is no value
    assert "Failed experiment" in p.stdout + p.stderr  # the sweeper told Optuna: TrialState.FAIL (Hydra's log)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    told = [json.loads(f.read_text())["best_val"] for f in done if f.parent.name != "1"]  # job 1 failed
    assert best["best_value"] == pytest.approx(max(told))
    if fail == "raise":
        assert p.returncode == 1 and "1 of 3 trials failed" in p.stderr
    else:
        assert p.returncode == 0, p.stderr
        assert "returned to the sweeper as nothing" in p.stdout


@requires_optuna
def test_optuna_optimises_validation_not_test(tmp_path):
    sweep = tmp_path / "sweep"
    p = graphgt("train", "--multirun", *SMALL, "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize",
                "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=0", "seed=0,1,2,3,4,5",
                f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr
    runs = [json.loads(f.read_text()) for f in sorted(sweep.glob("*/results.json"))]
    assert len(runs) == 3
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    chosen = max(runs, key=lambda r: r["best_val"])
    assert best["best_value"] == pytest.approx(chosen["best_val"])
    assert best["best_params"]["seed"] == chosen["seed"]


@requires_optuna
def test_optuna_minimize_is_refused_before_training(tmp_path):
    sweep = tmp_path / "sweep"
    p = graphgt("train", "--multirun", *SMALL, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "seed=0,1",
                f"hydra.sweep.dir={sweep}")  # the plugin's default direction is minimize
    assert p.returncode == 2
    assert "hydra.sweeper.direction=" in p.stderr and "maximize" in p.stderr
    assert not list(sweep.glob("*/results.json")) and not list(sweep.glob("*/metrics.csv"))


def test_a_search_without_the_optuna_plugin_names_the_extra(monkeypatch, capsys):
    import graphgt.cli as cli

    monkeypatch.setattr(cli, "_has_optuna", lambda: False)
    with pytest.raises(SystemExit) as e:
        cli._check_sweep(["hparams_search=cora-gcn"])
    assert e.value.code == 2 and 'graphgt[optuna]' in capsys.readouterr().err


# ------------------------------------------------------------------------------- sweep directories
def test_existing_sweep_dir_is_refused_and_left_byte_identical(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {mode: MULTIRUN}\n")
    (sweep / "0" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (sweep / "0" / "results.json").write_text('{"best_val": 0.5}')
    before = snapshot(sweep)
    for extra in ([], ["+hydra.sweep.dir=" + str(sweep)], ["trainer.resume=null"]):
        p = graphgt("train", "--multirun", *SMALL, "seed=0,1", f"hydra.sweep.dir={sweep}", *extra)
        assert p.returncode == 2, p.stderr
        assert f"hydra.sweep.dir={sweep} already holds files" in p.stderr
        assert "choose a new hydra.sweep.dir" in p.stderr.lower() and "trainer.resume=auto" in p.stderr
        assert "Traceback" not in p.stderr
        assert snapshot(sweep) == before


def test_a_single_run_and_an_empty_sweep_dir_are_not_refused(tmp_path):
    from graphgt.cli import _check_sweep

    empty = tmp_path / "empty"
    empty.mkdir()
    _check_sweep(["--multirun", f"hydra.sweep.dir={empty}"])  # nothing to lose
    full = tmp_path / "full"
    (full / "0").mkdir(parents=True)
    _check_sweep([f"hydra.sweep.dir={full}"])  # not a multirun: the sweep dir is not used
    with pytest.raises(SystemExit):
        _check_sweep(["-m", f"hydra.sweep.dir={full}"])
    with pytest.raises(SystemExit):
        _check_sweep(["hydra.mode=MULTIRUN", f"hydra.sweep.dir='{full}'"])


def test_a_killed_sweep_continues_with_resume_auto(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["train", "--multirun", *SMALL, "seed=0,1", f"hydra.sweep.dir={sweep}"]
    p = graphgt(*args)
    assert p.returncode == 0, p.stderr
    (sweep / "1" / "results.json").unlink()  # job 1 "killed" after its last checkpoint
    finished = snapshot(sweep / "0")
    old_record = (sweep / "multirun.yaml").read_bytes()
    p = graphgt(*args, "trainer.resume=auto")
    assert p.returncode == 0, p.stderr
    assert "already finished" in p.stderr  # job 0 kept, not retrained
    assert {k: v for k, v in snapshot(sweep / "0").items() if k not in ("cli.log", ".lock")} == \
        {k: v for k, v in finished.items() if k not in ("cli.log", ".lock")}
    assert json.loads((sweep / "1" / "results.json").read_text())["seed"] == 1
    kept = [f for f in sweep.glob("multirun.*.yaml")]
    assert len(kept) == 1 and kept[0].read_bytes() == old_record  # the earlier record is kept


# --------------------------------------------------------------------------------- the Cora search
@pytest.mark.slow
@requires_optuna
def test_eight_trial_optuna_search_on_cora_chooses_by_validation(tmp_path, shared_data):
    root = tmp_path / "data"
    shutil.copytree(shared_data / "planetoid" / "Cora", root / "planetoid" / "Cora")
    sweep = tmp_path / "search"
    p = graphgt("train", "--multirun", "hparams_search=cora-gcn", "trainer.progress=false",
                f"hydra.sweep.dir={sweep}", env={"GRAPHGT_DATA_ROOT": str(root)})
    assert p.returncode == 0, p.stderr
    runs = [json.loads(f.read_text()) for f in sorted(sweep.glob("*/results.json"))]
    assert len(runs) == 8
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    chosen = max(runs, key=lambda r: r["best_val"])
    assert best["best_value"] == pytest.approx(chosen["best_val"])
    assert best["best_params"]["model.hidden"] == chosen["config"]["model"]["hidden"]
    assert chosen["best_val"] > 0.7


@requires_optuna
@pytest.mark.parametrize("search", sorted(p.stem for p in (REPO / "configs" / "hparams_search").glob("*.yaml")))
def test_every_search_maximises_validation_with_a_seeded_sampler(search):
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from graphgt.config.validate import validate_config

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = hydra_compose("train", overrides=[f"hparams_search={search}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert sweeper.direction == "maximize" and sweeper.storage is None and sweeper.n_trials > 0
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed is not None
    assert cfg.objective == "best_val" and sweeper.params
    for key in sweeper.params:  # every searched key exists in the composed config
        assert OmegaConf.select(cfg, key) is not None, key
    with open_dict(cfg):
        del cfg["hydra"]
    validate_config(cfg)
