"""The command line, end to end in subprocesses: results.json, no overwrite, clear errors, sweeps, report."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SMALL = ["data.num_nodes=300", "model.hidden=32", "model.layers=1", "trainer.max_epochs=2", "trainer.progress=false"]


def graphgt(*args, cwd=None, env=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "graphgt.cli", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_train_writes_results_and_refuses_to_overwrite(tmp_path):
    run_dir = tmp_path / "run"
    p = graphgt("train", *SMALL, f"hydra.run.dir={run_dir}")
    assert p.returncode == 0, p.stderr
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("metric", "best_val", "test_at_best_val", "best_epoch", "num_params", "seed", "duration_s", "config"):
        assert key in results
    assert results["metric"] == "accuracy" and results["seed"] == 0 and results["num_params"] > 0
    assert results["config"]["model"]["hidden"] == 32
    assert (run_dir / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs
    assert (run_dir / "best.pt").exists() and (run_dir / "last.pt").exists()
    before = (run_dir / "results.json").read_bytes()
    again = graphgt("train", *SMALL, f"hydra.run.dir={run_dir}")
    assert again.returncode == 2
    assert "already holds an earlier run" in again.stderr and "Traceback" not in again.stderr
    assert (run_dir / "results.json").read_bytes() == before


@pytest.mark.parametrize("args,message", [
    (["attention=fulll"], "Could not find 'attention/fulll'"),
    (["trainer.max_epochs=ten"], "trainer.max_epochs='ten': expected int"),
    (["+model.hiden=3"], "model.hiden: unknown key"),
    (["local=gine"], "local=gine (GINELayer) needs edge features"),
    (["data=cora", "data.root=/nonexistent"], "/nonexistent/planetoid/Cora"),
])
def test_bad_input_gives_one_clear_message(tmp_path, args, message):
    p = graphgt("train", *SMALL[1:], *args, f"hydra.run.dir={tmp_path / 'r'}")
    assert p.returncode != 0
    assert message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_multirun_seeds_and_report(tmp_path):
    sweep = tmp_path / "sweep"
    p = graphgt("train", "--multirun", *SMALL, "pe=none", "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr
    seeds = sorted(json.loads(f.read_text())["seed"] for f in sweep.rglob("results.json"))
    assert seeds == [0, 1]
    out = tmp_path / "report.json"
    r = graphgt("report", str(sweep), "--json", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    assert len(rows) == 1 and rows[0]["num_seeds"] == 2
    assert "| data=synthetic" in r.stdout


def test_logger_none_and_wandb_offline(tmp_path):
    p = graphgt("train", *SMALL, "logger=none", f"hydra.run.dir={tmp_path / 'a'}")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "a" / "results.json").exists() and not (tmp_path / "a" / "metrics.csv").exists()
    pytest.importorskip("wandb")
    p = graphgt("train", *SMALL, "logger=wandb", f"hydra.run.dir={tmp_path / 'b'}", env={"WANDB_MODE": "offline"})
    assert p.returncode == 0, p.stderr
    assert list((tmp_path / "b" / "wandb").glob("offline-run-*"))


def test_hydra_options_go_before_the_overrides():
    """graphgt appends its own overrides (hydra.output_subdir=null); argparse takes the overrides as one
    positional block, so an option given after them (``data=cora --cfg job``) must move in front."""
    from graphgt.cli import options_first

    assert options_first(["data=cora", "--cfg", "job", "hydra.output_subdir=null"]) == \
        ["--cfg", "job", "data=cora", "hydra.output_subdir=null"]
    assert options_first(["--multirun", "seed=0,1", "~recipe"]) == ["--multirun", "seed=0,1", "~recipe"]
    assert options_first(["a=1", "--info", "defaults", "b=2"]) == ["--info", "defaults", "a=1", "b=2"]
    assert options_first(["a=1", "--cfg=job", "b=2"]) == ["--cfg=job", "a=1", "b=2"]
