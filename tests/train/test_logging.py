"""Live progress and loggers: the per-epoch line (run log always, terminal only without bars), the
bars' postfix, `graphgt train`'s cli.log, wandb names and tags (offline), TensorBoard (present or
refused at validation)."""
from __future__ import annotations

import importlib
import importlib.util
import io
import logging
import math
import sys
import types
from pathlib import Path

import pytest

from graphgt.app import run
from graphgt.config.validate import validate_config
from graphgt.errors import ConfigError
from graphgt.train.logging import EPOCH_LOG, WandbLogger, bars_quiet_terminal, run_name
from tests.conftest import compose_with_choices
from tests.train.ddp import FAST, explain, graphgt

TINY = ["data=pyg-fake", "data.dataset.num_graphs=200", "local=gin", "pe=none", "model.hidden=8",
        "model.layers=1", "trainer.max_epochs=3", "trainer.checkpoint=false", "logger=none"]


@pytest.fixture
def handlers(tmp_path):
    """A file handler and a terminal-like stream handler on the root logger at INFO, as Hydra's
    default job_logging sets them up (file: cli.log, console: stdout)."""
    root = logging.getLogger()
    level = root.level
    file_handler = logging.FileHandler(tmp_path / "cli.log")
    terminal = io.StringIO()
    console = logging.StreamHandler(terminal)
    root.addHandler(file_handler)
    root.addHandler(console)
    root.setLevel(logging.INFO)
    yield (tmp_path / "cli.log"), terminal, console
    root.removeHandler(file_handler)
    root.removeHandler(console)
    file_handler.close()
    root.setLevel(level)


def _train(tmp_path, overrides):
    cfg, choices = compose_with_choices(TINY + overrides)
    return run(cfg, tmp_path, choices)


def test_one_line_per_epoch_in_the_log_and_on_the_terminal_without_bars(tmp_path, handlers):
    log_file, terminal, console = handlers
    r = _train(tmp_path / "run", ["trainer.progress=false"])
    lines = [line for line in log_file.read_text().splitlines() if line]
    assert len(lines) == 3 and terminal.getvalue().splitlines() == lines
    for epoch, line in enumerate(lines, start=1):
        assert line.startswith(f"epoch {epoch}/3, train loss ")
        for part in ("val accuracy ", "test accuracy ", "best val ", "lr ", " s"):
            assert part in line, (part, line)
    assert f"best val {r['best_val']:.4f} (epoch {r['best_epoch']})" in lines[-1]


def test_bars_keep_epoch_lines_off_the_terminal_but_in_the_log(tmp_path, handlers, capsys):
    log_file, terminal, console = handlers
    r = _train(tmp_path / "run", ["trainer.progress=true"])
    assert len(log_file.read_text().splitlines()) == 3
    assert terminal.getvalue() == ""
    assert console.filters == []                       # the terminal handler is left as it was
    bars = capsys.readouterr().err.replace("\r", "\n")
    # the epoch bar shows the last epoch's train loss, val metric and the best so far
    last = [line for line in bars.splitlines() if line.startswith("epochs: 100%")][-1]
    assert f", best {r['best_val']:.4f}]" in last and "loss " in last and "val accuracy " in last


def test_only_terminal_handlers_are_quieted():
    logger = logging.getLogger(EPOCH_LOG)
    stream, other = io.StringIO(), io.StringIO()
    terminal = logging.StreamHandler(stream)
    logger.addHandler(terminal)
    logger.propagate = False
    try:
        with bars_quiet_terminal(True):
            logger.warning("epoch line")
            logging.getLogger("graphgt.other").addHandler(logging.StreamHandler(other))
            logging.getLogger("graphgt.other").warning("other line")
        logger.warning("after")
    finally:
        logger.removeHandler(terminal)
        logger.propagate = True
        logging.getLogger("graphgt.other").handlers.clear()
    assert stream.getvalue() == "after\n"
    assert other.getvalue() == "other line\n"


def test_cli_writes_cli_log_and_prints_epochs_without_bars(tmp_path):
    run_dir = tmp_path / "run"
    proc = graphgt(TINY + ["trainer.max_epochs=2", "trainer.progress=false", f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, explain(proc)
    log_lines = [line for line in (run_dir / "cli.log").read_text().splitlines() if "graphgt.train.epochs" in line]
    assert len(log_lines) == 2 and "epoch 2/2, train loss" in log_lines[1]
    assert "epoch 1/2, train loss" in proc.stdout and "epoch 2/2, train loss" in proc.stdout


# ---------------------------------------------------------------------------------------- loggers
def test_run_name_from_choices():
    choices = {"data": "cora", "model": "gps", "local": "gcn", "attention": "full", "pe": "rwse",
               "trainer": "default", "experiment": None}
    assert run_name(choices, 3) == "cora-gps-gcn-full-s3"
    assert run_name({"data": "store/products", "model": "mpnn", "local": "sage", "attention": None}, 0) == \
        "store.products-mpnn-sage-s0"


def test_wandb_tags_and_name_compose_and_work_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg, choices = compose_with_choices(["logger=wandb", "logger.tags=[baseline,cora]"])
    validate_config(cfg)
    assert list(cfg.logger.tags) == ["baseline", "cora"] and cfg.logger.mode == "offline"

    from hydra.utils import instantiate

    logger = instantiate(cfg.logger)
    assert isinstance(logger, WandbLogger) and logger.tags == ["baseline", "cora"]
    logger.start(tmp_path, {"seed": 0}, name=run_name(choices, 0))
    try:
        assert logger._run.name == "synthetic-gps-gcn-full-s0"
        assert list(logger._run.tags) == ["baseline", "cora"]
        logger.log(1, {"train_loss": 0.5, "val_accuracy": 0.7})
    finally:
        logger.finish({"best_val": 0.7, "test_at_best_val": 0.6, "best_epoch": 1, "num_params": 10})
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1] == "1,0.5,0.7"
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_wandb_explicit_name_wins(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(name="my-run")
    logger.start(tmp_path, {}, name="cora-gps-gcn-full-s0")
    try:
        assert logger._run.name == "my-run"
    finally:
        logger.finish({"best_val": 0.0, "test_at_best_val": 0.0, "best_epoch": 1, "num_params": 1})


def test_tensorboard_missing_is_a_config_error_naming_the_fix():
    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here (test_tensorboard_logger_writes_events covers it)")
    cfg, _ = compose_with_choices(["logger=tensorboard"])
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert "logger=tensorboard" in message and "pip install tensorboard" in message


@pytest.fixture
def fake_tensorboard(monkeypatch):
    """``torch.utils.tensorboard`` replaced by a recorder (tensorboard need not be installed)."""
    calls = []

    class SummaryWriter:
        def __init__(self, log_dir, flush_secs, purge_step=None):
            calls.append(("init", Path(log_dir).name, purge_step))

        def add_scalar(self, tag, value, step):
            calls.append(("scalar", tag, value, step))

        def add_text(self, tag, text, step):
            calls.append(("text", tag, text, step))

        def flush(self):
            pass

        def close(self):
            calls.append(("close",))

    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    monkeypatch.delitem(sys.modules, "graphgt.train.tensorboard", raising=False)
    yield importlib.import_module("graphgt.train.tensorboard"), calls
    sys.modules.pop("graphgt.train.tensorboard", None)


def test_tensorboard_logger_scalars_and_resume(tmp_path, fake_tensorboard):
    tb, calls = fake_tensorboard
    logger = tb.TensorBoardLogger()
    logger.start(tmp_path, {}, name="cora-gps-gcn-full-s0")
    logger.log(1, {"train_loss": 0.5, "val_accuracy": 0.7, "test_accuracy": math.nan, "lr": 0.001})
    logger.finish({"best_val": 0.7, "test_at_best_val": math.nan, "best_epoch": 1})
    assert calls == [("init", "tensorboard", None), ("text", "run", "cora-gps-gcn-full-s0", 0),
                     ("scalar", "loss/train", 0.5, 1), ("scalar", "accuracy/val", 0.7, 1), ("scalar", "lr", 0.001, 1),
                     ("scalar", "result/best_val", 0.7, 0), ("scalar", "result/best_epoch", 1, 0), ("close",)]
    assert (tmp_path / "metrics.csv").exists()
    calls.clear()
    tb.TensorBoardLogger().start(tmp_path, {}, resume_epoch=4)   # events after epoch 4 are purged
    assert calls == [("init", "tensorboard", 5)]


def test_tensorboard_logger_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    r = _train(tmp_path / "run", ["logger=tensorboard", "trainer.progress=false"])
    assert r["best_epoch"] >= 1
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 4


def test_spawned_worker_follows_the_launchers_log_file(tmp_path, handlers):
    """trainer=ddp's workers are spawned without Hydra's logging: rank 0 appends to the same cli.log."""
    from graphgt.train.logging import follow_log_files, log_files

    log_file, terminal, console = handlers
    assert str(log_file) in log_files()
    logging.getLogger().removeHandler(console)      # a fresh process: only what follow_log_files adds
    root_handlers = logging.getLogger().handlers[:]
    for h in root_handlers:
        logging.getLogger().removeHandler(h)
    try:
        added = follow_log_files([str(log_file)], console=False)
        logging.getLogger(EPOCH_LOG).info("epoch 1/2, train loss 0.5")
    finally:
        for h in added:
            logging.getLogger("graphgt").removeHandler(h)
            h.close()
        logging.getLogger("graphgt").setLevel(logging.NOTSET)
        for h in root_handlers:
            logging.getLogger().addHandler(h)
        logging.getLogger().addHandler(console)
    assert log_file.read_text().rstrip().endswith("[graphgt.train.epochs][INFO] - epoch 1/2, train loss 0.5")
