"""``logger=tensorboard``: every epoch's metrics as TensorBoard scalars, plus ``metrics.csv``.

Needs the ``tensorboard`` package (``pip install tensorboard``), which graphgt does not install.
This module imports it when it is imported, so a config that names this logger is refused while
the config is validated, before any data is loaded, with the command that fixes it; the other
loggers never import it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional

from graphgt.errors import ConfigError
from graphgt.train.logging import CSVLogger

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError as e:  # torch's wrapper raises ModuleNotFoundError/ImportError without tensorboard
    raise ConfigError(f"logger=tensorboard needs the 'tensorboard' package, which this Python environment "
                      f"does not have ({e}): pip install tensorboard, or choose another logger "
                      "(logger=csv, logger=wandb, logger=none)") from None

_SPLITS = ("train", "val", "test")


def scalar_tag(key: str) -> str:
    """``val_accuracy`` -> ``accuracy/val``, ``train_loss`` -> ``loss/train`` (one chart per quantity,
    one curve per split); other keys (``lr``, ``epoch_time_s``) stay as they are."""
    split, _, what = key.partition("_")
    return f"{what}/{split}" if split in _SPLITS and what else key


class TensorBoardLogger(CSVLogger):
    """CSV plus TensorBoard event files in ``<run_dir>/<log_dir>`` (``tensorboard --logdir runs``).

    A resumed run purges the events of epochs after its checkpoint, so no epoch appears twice (as
    the CSV does).  NaN values (a test metric that was not computed) are not written.
    """

    def __init__(self, log_dir: str = "tensorboard", filename: str = "metrics.csv", flush_secs: int = 30):
        super().__init__(filename)
        self.log_dir, self.flush_secs = log_dir, flush_secs
        self._writer: Optional[Any] = None

    def start(self, run_dir: Path, config: Dict[str, Any], resume_epoch: Optional[int] = None,
              name: Optional[str] = None) -> None:
        super().start(run_dir, config, resume_epoch, name)
        self._writer = SummaryWriter(log_dir=str(Path(run_dir) / self.log_dir), flush_secs=self.flush_secs,
                                     purge_step=None if resume_epoch is None else resume_epoch + 1)
        if resume_epoch is None and name:
            self._writer.add_text("run", name, 0)

    def log(self, epoch: int, metrics: Dict[str, float]) -> None:
        super().log(epoch, metrics)
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(scalar_tag(key), value, epoch)
        self._writer.flush()

    def finish(self, results: Dict[str, Any]) -> None:
        for key in ("best_val", "test_at_best_val", "best_epoch"):
            value = results.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(f"result/{key}", value, 0)
        self._writer.close()

    def __repr__(self) -> str:
        return f"TensorBoardLogger(log_dir={self.log_dir!r})"
