"""A config or a command-line override cannot make `graphgt train` run code or touch files: the
validator refuses such targets before Hydra builds anything (exit status 2, nothing changed)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def graphgt(*args: str, cwd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "graphgt.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("overrides", [
    # the repro: with and without _recursive_=false
    ["+data._recursive_=false", "data=pyg-fake", "data.dataset._target_=os.rmdir", "+data.dataset.path={victim}"],
    ["data=pyg-fake", "data.dataset._target_=os.rmdir", "+data.dataset.path={victim}"],
    # only the target is wrong (no leftover keys), and Hydra's own target policy does not block
    # os.mkdir: graphgt's validator still refuses it
    ["data=pyg-fake", "~data.dataset", "+data.dataset._target_=os.mkdir", "+data.dataset.path={victim}/new"],
])
def test_file_system_targets_are_refused_before_anything_runs(tmp_path, overrides):
    victim = tmp_path / "X"
    victim.mkdir()
    run_dir = tmp_path / "run"
    p = graphgt("train", *[o.format(victim=victim) for o in overrides], f"hydra.run.dir={run_dir}",
                cwd=str(tmp_path))
    assert p.returncode == 2, p.stderr
    target = "os.mkdir" if "os.mkdir" in " ".join(overrides) else "os.rmdir"
    assert f"data.dataset._target_: '{target}' is refused: 'os'" in p.stderr
    assert "Traceback" not in p.stderr
    assert victim.is_dir() and list(victim.iterdir()) == []  # not deleted, nothing created
    assert not (run_dir / "results.json").exists()
