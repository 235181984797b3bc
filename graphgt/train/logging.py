"""Run loggers: a CSV of every metric per epoch, wandb (offline by default), or nothing."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple


class Logger:
    """``start(run_dir, config, resume_epoch)``, ``log(epoch, metrics)``, ``finish(results)``; the base
    logs nothing.  ``resume_epoch`` (a resumed run) is the last epoch whose row is kept: rows of later
    epochs, logged after the checkpoint the run resumes from, are dropped, so no epoch appears twice."""

    def start(self, run_dir: Path, config: Dict[str, Any], resume_epoch: Optional[int] = None) -> None:
        pass

    def log(self, epoch: int, metrics: Dict[str, float]) -> None:
        pass

    def finish(self, results: Dict[str, Any]) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoLogger(Logger):
    """``logger=none``: no per-epoch files (results.json is still written by the trainer)."""


class CSVLogger(Logger):
    """Writes ``<run_dir>/<filename>``: one row per epoch, one column per metric, flushed every row."""

    def __init__(self, filename: str = "metrics.csv"):
        self.filename = filename
        self._path: Optional[Path] = None
        self._fields: List[str] = []
        self._rows: List[Dict[str, float]] = []

    def start(self, run_dir: Path, config: Dict[str, Any], resume_epoch: Optional[int] = None) -> None:
        self._path = Path(run_dir) / self.filename
        self._rows, self._fields = [], []
        if resume_epoch is not None and self._path.exists():
            self._fields, self._rows = _complete_rows(self._path, resume_epoch)
            self._rewrite()

    def log(self, epoch: int, metrics: Dict[str, float]) -> None:
        row = {"epoch": epoch, **metrics}
        self._rows.append(row)
        new_fields = [k for k in row if k not in self._fields]
        if new_fields or not self._path.exists():
            self._fields += new_fields
            self._rewrite()
        else:  # one write() of the whole line: a kill leaves the file without it or with it, rarely torn
            line = io.StringIO()
            csv.DictWriter(line, fieldnames=self._fields).writerow(row)
            with open(self._path, "a", newline="") as f:
                f.write(line.getvalue())
                f.flush()

    def _rewrite(self) -> None:
        tmp = self._path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._fields)
            writer.writeheader()
            writer.writerows(self._rows)
        os.replace(tmp, self._path)

    def __repr__(self) -> str:
        return f"CSVLogger({self.filename!r})"


def _complete_rows(path: Path, last_epoch: int) -> Tuple[List[str], List[Dict[str, str]]]:
    """The header and the rows of epochs ``<= last_epoch`` of a ``metrics.csv``, without a torn row
    (one a kill cut short: no final newline, a wrong number of fields, or an epoch that is not an
    integer), so that a resumed run continues a clean file."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]  # the last write was cut short
    reader = csv.reader(lines)
    fields = next(reader, [])
    rows = []
    for values in reader:
        if len(values) != len(fields):
            continue
        row = dict(zip(fields, values))
        try:
            epoch = int(row["epoch"])
        except (KeyError, ValueError):
            continue
        if epoch <= last_epoch:
            rows.append(row)
    return fields, rows


class WandbLogger(CSVLogger):
    """CSV plus Weights & Biases. ``mode='offline'`` (default) needs no account and no network;
    sync later with ``wandb sync <run_dir>/wandb/offline-run-*``."""

    def __init__(self, project: str = "graphgt", mode: str = "offline", entity: Optional[str] = None,
                 tags: Optional[List[str]] = None, filename: str = "metrics.csv"):
        super().__init__(filename)
        self.project, self.mode, self.entity, self.tags = project, mode, entity, list(tags or [])
        self._run = None

    def start(self, run_dir: Path, config: Dict[str, Any], resume_epoch: Optional[int] = None) -> None:
        super().start(run_dir, config, resume_epoch)
        import wandb

        id_file = Path(run_dir) / ".wandb_run_id"
        run_id = id_file.read_text().strip() if resume_epoch is not None and id_file.exists() else None
        self._run = wandb.init(project=self.project, entity=self.entity, mode=self.mode, dir=str(run_dir),
                               config=config, tags=self.tags, reinit=True, id=run_id,
                               resume="allow" if run_id else None)
        id_file.write_text(self._run.id)

    def log(self, epoch: int, metrics: Dict[str, float]) -> None:
        super().log(epoch, metrics)
        self._run.log({"epoch": epoch, **metrics}, step=epoch)

    def finish(self, results: Dict[str, Any]) -> None:
        for key in ("best_val", "test_at_best_val", "best_epoch", "num_params"):
            self._run.summary[key] = results[key]
        self._run.finish()

    def __repr__(self) -> str:
        return f"WandbLogger(project={self.project!r}, mode={self.mode!r})"
