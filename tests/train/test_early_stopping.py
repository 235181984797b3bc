"""trainer.early_stopping: the patience rule (direction, NaN, min_delta), what results.json records,
the test at the best validation epoch (also with test_every_epoch=false), and a bit-exact resume
that stops at the same epoch as an uninterrupted run."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from graphgt.app import run
from graphgt.errors import ConfigError
from graphgt.train.loop import Trainer, _Run
from graphgt.train.signals import Preempted
from tests.conftest import compose_with_choices
from tests.train.ddp import FAST, assert_same_weights, last_position, metrics, weights
from tests.train.test_resume import sigterm_at  # noqa: F401  (fixture)

JOB = FAST + ["data.batch_size=32"]   # 10 training batches per epoch; val accuracy reaches 1.0 and stays


def _run(run_dir: Path, overrides=(), epochs: int = 12):
    cfg, choices = compose_with_choices(JOB + [f"trainer.max_epochs={epochs}", *overrides])
    return run(cfg, run_dir, choices)


def _expected_stop(vals, patience: int, higher: bool = True, min_delta: float = 0.0):
    """The rule, written out independently: epochs without an improvement > min_delta over the last
    value that improved that much; NaN never improves."""
    sign, ref, wait = (1.0 if higher else -1.0), -math.inf, 0
    for epoch, v in enumerate(vals, start=1):
        if sign * v > ref + min_delta:  # NaN: False
            ref, wait = sign * v, 0
        else:
            wait += 1
        if wait >= patience and epoch < len(vals):
            return epoch
    return None


def _rule(vals, patience, higher=True, min_delta=0.0):
    """What _Run._early_stopping decides for a sequence of validation metrics (no training)."""
    trainer = Trainer(max_epochs=len(vals), device="cpu", progress=False, early_stopping=patience,
                      early_stopping_min_delta=min_delta)
    state = SimpleNamespace(trainer=trainer, sign=1.0 if higher else -1.0, history={})
    for epoch, v in enumerate(vals, start=1):
        _Run._early_stopping(state, epoch, v)
        if state.history.get("early_stopped"):
            return epoch
    return None


@pytest.mark.parametrize("vals, patience, higher, min_delta, stop", [
    ([0.5, 0.6, 0.6, 0.6, 0.7, 0.8], 2, True, 0.0, 4),          # equal is no improvement
    ([0.5, 0.6, 0.55, 0.7, 0.65, 0.6, 0.9], 2, True, 0.0, 6),   # an improvement resets the count
    ([1.0, 0.9, 0.95, 0.92, 0.91, 0.5], 2, False, 0.0, 4),      # lower is better (e.g. MAE)
    ([0.5, float("nan"), float("nan"), 0.9], 2, True, 0.0, 3),  # NaN never improves
    ([float("nan"), float("nan"), 0.1], 2, True, 0.0, 2),       # not even the first epoch's NaN
    ([0.50, 0.505, 0.509, 0.52, 0.6], 2, True, 0.01, 3),        # small gains do not reset the count
    ([0.50, 0.505, 0.512, 0.52, 0.6], 3, True, 0.01, None),     # 0.512 > 0.50 + 0.01 resets it
    ([0.5, 0.4, 0.3], 2, True, 0.0, None),                      # patience reached on the last epoch: not a stop
])
def test_patience_rule(vals, patience, higher, min_delta, stop):
    assert _expected_stop(vals, patience, higher, min_delta) == stop
    assert _rule(vals, patience, higher, min_delta) == stop


@pytest.mark.parametrize("override, message", [
    ("trainer.early_stopping=0", "trainer.early_stopping must be null or a patience in epochs >= 1"),
    ("trainer.early_stopping_min_delta=-0.1", "trainer.early_stopping_min_delta must be >= 0"),
])
def test_bad_early_stopping_values_are_config_errors(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        _run(tmp_path / "run", [override])
    assert not (tmp_path / "run" / "last.pt").exists()


def test_early_stopping_stops_at_the_rule_epoch_and_reports_the_best(tmp_path):
    torch.set_num_threads(1)
    full = _run(tmp_path / "full")
    rows = metrics(tmp_path / "full")
    vals = [r["val_accuracy"] for r in rows]
    stop = _expected_stop(vals, patience=2)
    assert stop is not None and stop < 12, f"the job's validation accuracy never plateaus: {vals}"
    assert full["early_stopped"] is False and full["stopped_epoch"] == 12

    es = _run(tmp_path / "es", ["trainer.early_stopping=2"])
    assert es["early_stopped"] is True and es["stopped_epoch"] == stop
    saved = json.loads((tmp_path / "es" / "results.json").read_text())
    assert saved["early_stopped"] is True and saved["stopped_epoch"] == stop
    assert metrics(tmp_path / "es") == rows[:stop]            # training itself is unchanged, and ends there
    best = max(range(stop), key=lambda i: (vals[i], -i))      # the first epoch with the best val
    assert es["best_epoch"] == best + 1
    assert es["best_val"] == rows[best]["val_accuracy"]
    assert es["test_at_best_val"] == rows[best]["test_accuracy"]
    assert last_position(tmp_path / "es") == {"epoch": stop + 1, "batch": 0}

    # test_every_epoch=false: one test pass at the end, with the best epoch's weights
    once = _run(tmp_path / "once", ["trainer.early_stopping=2", "trainer.test_every_epoch=false"])
    assert once["stopped_epoch"] == stop and once["best_epoch"] == best + 1
    assert once["test_at_best_val"] == pytest.approx(rows[best]["test_accuracy"], abs=1e-9)
    assert all(math.isnan(r["test_accuracy"]) for r in metrics(tmp_path / "once"))


def test_resumed_run_stops_at_the_same_epoch(tmp_path, sigterm_at):  # noqa: F811
    """SIGTERM while the patience counter is running; the resume stops where the straight run did."""
    torch.set_num_threads(1)
    straight = _run(tmp_path / "straight", ["trainer.early_stopping=3"])
    stop = straight["stopped_epoch"]
    assert straight["early_stopped"] and stop - straight["best_epoch"] == 3
    cut_at = stop - 1                                           # the counter is at 1 or 2 there
    sigterm_at(epoch=cut_at, batch=4)
    with pytest.raises(Preempted):
        _run(tmp_path / "cut", ["trainer.early_stopping=3"])
    assert last_position(tmp_path / "cut") == {"epoch": cut_at, "batch": 5}
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert state["history"]["es_wait"] >= 1                     # the counter travels in last.pt
    resumed = _run(tmp_path / "cut", ["trainer.early_stopping=3", "trainer.resume=auto"])
    for key in ("stopped_epoch", "early_stopped", "best_val", "test_at_best_val", "best_epoch", "final_train_loss"):
        assert resumed[key] == straight[key], key
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "straight")
    assert_same_weights(weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "cut" / "last.pt"))


def test_a_run_killed_after_it_stopped_early_does_not_train_on(tmp_path):
    """last.pt says the run stopped early (killed before results.json): the resume trains no epoch."""
    torch.set_num_threads(1)
    first = _run(tmp_path / "run", ["trainer.early_stopping=2"])
    (tmp_path / "run" / "results.json").unlink()                  # as if killed before writing it
    before = weights(tmp_path / "run" / "last.pt")
    again = _run(tmp_path / "run", ["trainer.early_stopping=2", "trainer.resume=auto"])
    assert again["stopped_epoch"] == first["stopped_epoch"] and again["early_stopped"] is True
    assert again["test_at_best_val"] == first["test_at_best_val"]
    assert len(metrics(tmp_path / "run")) == first["stopped_epoch"]
    assert_same_weights(before, weights(tmp_path / "run" / "last.pt"))


def test_checkpoints_from_before_early_stopping_still_resume():
    """A last.pt written before trainer.early_stopping existed: absent means the default (no early
    stopping); a real change of the patience is still a refused difference."""
    from graphgt.train.checkpoint import config_differences

    old = {"trainer": {"max_epochs": 4, "progress": False}, "seed": 0}
    now = {"trainer": {"max_epochs": 4, "progress": True, "early_stopping": None, "early_stopping_min_delta": 0.0},
           "seed": 0}
    assert config_differences(old, now) == []
    now["trainer"]["early_stopping"] = 3
    assert config_differences(old, now) == ["trainer.early_stopping: None in the checkpoint, 3 now"]
    saved = {**now, "trainer": {**now["trainer"], "early_stopping": 2}}
    assert config_differences(saved, now) == ["trainer.early_stopping: 2 in the checkpoint, 3 now"]
