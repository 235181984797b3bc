"""Never lose work: bit-exact resume after SIGTERM (one process and two), NaN stops, corrupt and
incompatible checkpoints, resume=auto, gradient accumulation."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from graphgt.errors import ConfigError
from graphgt.data.loader import GraphBatchLoader
from graphgt.train import loop
from graphgt.train.checkpoint import CheckpointError, load_checkpoint, load_model_state
from graphgt.errors import NonFiniteLossError
from graphgt.app import run
from graphgt.train.signals import Preempted
from tests.conftest import compose_with_choices
from tests.train.ddp import (FAST, REPO, assert_same_weights, env, explain, graphgt, last_position, metrics,
                             torchrun_cmd, weights)

JOB = FAST + ["data.batch_size=16"]   # 20 training batches per epoch


def _run(run_dir: Path, overrides=(), epochs: int = 4):
    cfg, choices = compose_with_choices(JOB + [f"trainer.max_epochs={epochs}", *overrides])
    return run(cfg, run_dir, choices)


@pytest.fixture
def sigterm_at(monkeypatch):
    """``sigterm_at(epoch, batch)``: the training loader sends this process SIGTERM as it hands out
    that batch (1-based epoch, 0-based batch), as a cluster would at an arbitrary moment."""
    original = GraphBatchLoader.__iter__

    def arm(epoch: int, batch: int):
        def iterate(self):
            pass_number, start = self.epoch, self._start
            for i, b in enumerate(original(self), start=start):
                if self.shuffle and pass_number == epoch - 1 and i == batch:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield b
        monkeypatch.setattr(GraphBatchLoader, "__iter__", iterate)

    return arm


def test_resume_after_sigterm_mid_epoch_is_bit_exact(tmp_path, sigterm_at):
    """4 epochs straight == 2 epochs + SIGTERM in epoch 3 + resume: same weights, same metrics."""
    torch.set_num_threads(1)
    straight = _run(tmp_path / "straight")
    sigterm_at(epoch=3, batch=5)
    with pytest.raises(Preempted, match=r"stopped by SIGTERM at epoch 3, batch 6") as info:
        _run(tmp_path / "cut")
    assert info.value.exit_code == 143
    assert last_position(tmp_path / "cut") == {"epoch": 3, "batch": 6}
    assert not (tmp_path / "cut" / "results.json").exists()
    assert len(metrics(tmp_path / "cut")) == 2
    resumed = _run(tmp_path / "cut", ["trainer.resume=auto"])
    assert_same_weights(weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "cut" / "last.pt"))
    assert_same_weights(weights(tmp_path / "straight" / "best.pt"), weights(tmp_path / "cut" / "best.pt"))
    assert metrics(tmp_path / "straight") == metrics(tmp_path / "cut")        # every epoch once, same values
    for key in ("best_val", "test_at_best_val", "best_epoch", "final_train_loss"):
        assert resumed[key] == straight[key], key
    assert resumed["resumed_from"] == str(tmp_path / "cut" / "last.pt")


def test_resume_after_sigterm_under_torchrun_is_bit_exact(tmp_path):
    """Two gloo ranks under torchrun; SIGTERM to torchrun once 2 epochs are done; resume == straight."""
    args = FAST + ["data.dataset.num_graphs=2000", "data.batch_size=4", "trainer.max_epochs=4"]
    straight = subprocess.run(torchrun_cmd(args + [f"hydra.run.dir={tmp_path / 'straight'}"]), env=env(),
                              cwd=REPO, capture_output=True, text=True, timeout=400)
    assert straight.returncode == 0, explain(straight)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(torchrun_cmd(args + [f"hydra.run.dir={cut}"]), env=env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while (last_position(cut) or {}).get("epoch", 0) < 3 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "graphgt: stopped by SIGTERM" in err, err[-3000:]
    assert not (cut / "results.json").exists()
    stopped = last_position(cut)
    assert stopped["epoch"] >= 3
    resumed = subprocess.run(torchrun_cmd(args + [f"hydra.run.dir={cut}", "trainer.resume=auto"]), env=env(),
                             cwd=REPO, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, explain(resumed)
    assert_same_weights(weights(tmp_path / "straight" / "last.pt"), weights(cut / "last.pt"))
    assert metrics(tmp_path / "straight") == metrics(cut)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original, calls = loop.select, []

    def poisoned(out, batch):
        calls.append(1)
        if len(calls) == 20 + 3 + 3 + 4:  # epoch 1: 20 train + 3 val + 3 test batches; epoch 2, step 3
            out = out * float("nan")
        return original(out, batch)

    monkeypatch.setattr(loop, "select", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at epoch 2, step 3 .*before this step "
                                                 r"changed the weights.*last good checkpoint is '.*last.pt' "
                                                 r"\(epoch 1 done\)"):
        _run(tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["position"] == {"epoch": 2, "batch": 0}
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "results.json").exists()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    _run(tmp_path / "run", epochs=1)
    last = tmp_path / "run" / "last.pt"
    (tmp_path / "run" / "results.json").unlink()
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])                         # truncated
    with pytest.raises(CheckpointError, match=r"cannot be read .*truncated or corrupt"):
        _run(tmp_path / "run", ["trainer.resume=auto"])
    last.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"cannot be read"):
        _run(tmp_path / "run", [f"trainer.resume={last}"])
    torch.save({"weights": 1}, last)
    with pytest.raises(CheckpointError, match=r"is not a graphgt checkpoint"):
        _run(tmp_path / "run", ["trainer.resume=auto"])
    # best.pt is still loadable
    assert "model" in load_checkpoint(tmp_path / "run" / "best.pt")


def test_corrupt_checkpoint_on_the_command_line_has_no_traceback(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"\x00" * 100)
    proc = graphgt(JOB + ["trainer.max_epochs=1", f"hydra.run.dir={run_dir}", "trainer.resume=auto"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, explain(proc)
    assert f"checkpoint '{run_dir / 'last.pt'}' cannot be read" in proc.stderr


def test_incompatible_config_names_the_keys_that_differ(tmp_path, sigterm_at):
    sigterm_at(epoch=1, batch=3)
    with pytest.raises(Preempted):
        _run(tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"different config:\n  model.hidden: 16 in the checkpoint, 32 now"):
        _run(tmp_path / "run", ["trainer.resume=auto", "model.hidden=32"])


def test_mis_shaped_checkpoint_names_the_parameters(tmp_path):
    small = torch.nn.Sequential(torch.nn.Linear(4, 3))
    big = torch.nn.Sequential(torch.nn.Linear(4, 5))
    with pytest.raises(CheckpointError, match=r"shape of 0.weight: \(3, 4\) in the checkpoint, \(5, 4\) in the model"):
        load_model_state(big, {"model": small.state_dict()}, tmp_path / "x.pt")


def test_resume_latest_finds_the_latest_unfinished_run_and_skips_finished_ones(tmp_path, sigterm_at):
    runs = tmp_path / "runs"
    done = _run(runs / "2026-01-01" / "10-00-00", epochs=2)
    again = _run(runs / "2026-01-01" / "10-00-00", ["trainer.resume=auto"], epochs=2)
    assert again["duration_s"] == done["duration_s"]                 # finished: results kept, nothing retrained
    sigterm_at(epoch=2, batch=1)
    with pytest.raises(Preempted):
        _run(runs / "2026-01-02" / "09-00-00", epochs=2)
    fresh = runs / "2026-01-02" / "11-00-00"                           # a new invocation's own directory
    r = _run(fresh, ["trainer.resume=latest"], epochs=2)
    assert r["resumed_from"] == str(runs / "2026-01-02" / "09-00-00" / "last.pt")
    assert r["run_dir"] == str(runs / "2026-01-02" / "09-00-00")     # the results say where it trained
    assert (runs / "2026-01-02" / "09-00-00" / "results.json").exists() and not (fresh / "results.json").exists()
    # nothing to resume: a new run
    r = _run(runs / "2026-01-03" / "09-00-00", ["trainer.resume=latest", "seed=5"], epochs=1)
    assert r["resumed_from"] is None


def test_resume_auto_never_continues_another_directory(tmp_path, sigterm_at):
    """Issue 15.1: with an explicit run dir and no last.pt there, auto starts a new run *there*, even
    when an unfinished run of the same config sits beside it."""
    runs = tmp_path / "runs"
    sigterm_at(epoch=2, batch=1)
    with pytest.raises(Preempted):
        _run(runs / "2026-01-02" / "09-00-00", epochs=2)
    requested = runs / "2026-01-02" / "11-00-00"
    r = _run(requested, ["trainer.resume=auto"], epochs=1)  # 1 epoch: the armed SIGTERM (epoch 2) stays idle
    assert r["resumed_from"] is None and r["run_dir"] == str(requested)
    assert (requested / "results.json").exists()
    assert not (runs / "2026-01-02" / "09-00-00" / "results.json").exists()  # the other run is untouched


def test_a_run_dir_with_a_checkpoint_is_not_overwritten(tmp_path, sigterm_at):
    sigterm_at(epoch=1, batch=2)
    with pytest.raises(Preempted):
        _run(tmp_path / "run")
    with pytest.raises(ConfigError, match="unfinished run's checkpoint .*trainer.resume=auto"):
        _run(tmp_path / "run")


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    """2 accumulated batches of 8 == 1 batch of 16 (LayerNorm: no batch statistics)."""
    common = ["model.norm=layer", "trainer.checkpoint=false", "logger=none"]
    big = _run(tmp_path / "big", common + ["data.batch_size=16"], epochs=2)
    acc = _run(tmp_path / "acc", common + ["data.batch_size=8", "trainer.accumulate_grad_batches=2"], epochs=2)
    assert acc["final_train_loss"] == pytest.approx(big["final_train_loss"], rel=1e-5)
    assert acc["best_val"] == big["best_val"]


def test_results_json_records_the_world_size(tmp_path):
    _run(tmp_path / "run", epochs=1)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["world_size"] == 1
