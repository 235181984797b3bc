"""``graphgt reproduce``: seeds through the real CLI, resumable, one leaderboard table."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from graphgt.reproduce import default_seeds, preset_path, published, seed_list
from tests.conftest import CONFIG_DIR, REPO

FAST = ["trainer.max_epochs=3", "trainer.progress=false", "logger=csv"]


def reproduce(args, cwd: Path, env_extra=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", "from graphgt.cli import main; main()", "reproduce", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_seeds_table_and_rerun_only_runs_missing_seeds(tmp_path, shared_data):
    out = tmp_path / "repro"
    common = ["cora-gcn", f"data.root={shared_data}", f"cache_dir={tmp_path / 'cache'}", *FAST, "--out", str(out)]
    first = reproduce(common + ["--seeds", "1"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    seed0 = out / "seed-0" / "results.json"
    before = seed0.stat().st_mtime_ns, seed0.read_bytes()
    # one more seed: seed 0 answers from its record (not retrained), seed 1 trains
    second = reproduce(common + ["--seeds", "2"], tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert (seed0.stat().st_mtime_ns, seed0.read_bytes()) == before
    record = json.loads((out / "reproduction.json").read_text())
    assert record["seeds"] == [0, 1] and record["failed_seeds"] == []
    assert record["published"].startswith("test accuracy 0.815")
    [row] = record["rows"]
    results = [json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    assert row["num_seeds"] == 2 and row["seeds"] == [0, 1]
    assert row["test_mean"] == pytest.approx(sum(r["test_at_best_val"] for r in results) / 2)
    table = (out / "reproduction.md").read_text()
    assert "Published: test accuracy 0.815" in table and "2 seeds: the OGB protocol reports 10" in table
    assert "| 2 | 1 | 23,063 |" in table  # seeds, folds, #params of the published GCN


def test_a_changed_config_is_not_answered_with_old_results(tmp_path, shared_data):
    out = tmp_path / "repro"
    common = ["cora-gcn", f"data.root={shared_data}", f"cache_dir={tmp_path / 'cache'}", "trainer.progress=false",
              "logger=none", "--seeds", "1", "--out", str(out)]
    assert reproduce(common + ["trainer.max_epochs=2"], tmp_path).returncode == 0
    changed = reproduce(common + ["trainer.max_epochs=3"], tmp_path)
    assert changed.returncode == 1  # the seed is refused (its record differs), reported as failed
    assert "trainer.max_epochs" in changed.stderr and "seed 0 failed" in changed.stderr


def test_presets_seeds_and_bad_arguments(tmp_path):
    assert published(preset_path(CONFIG_DIR, "cora-gat")).startswith("test accuracy 0.830")
    assert published(preset_path(CONFIG_DIR, "products-synth-sage")) is None
    paper = preset_path(CONFIG_DIR, "ogbn-papers100M-largegt").read_text()
    assert default_seeds("ogbn-papers100M-largegt", paper) == 3
    assert default_seeds("cora-gcn", preset_path(CONFIG_DIR, "cora-gcn").read_text()) == 10
    assert seed_list("3", 10) == [0, 1, 2] and seed_list("4,7", 10) == [4, 7] and seed_list(None, 3) == [0, 1, 2]
    with pytest.raises(SystemExit, match="--seeds"):
        seed_list("1,1", 10)
    bad = reproduce(["cora-gcn", "seed=3"], tmp_path)
    assert bad.returncode != 0 and "must be key=value and not set seed" in bad.stderr
    missing = reproduce(["cora-gnc"], tmp_path)
    assert missing.returncode == 2 and "no preset 'cora-gnc'" in missing.stderr and "cora-gcn" in missing.stderr
