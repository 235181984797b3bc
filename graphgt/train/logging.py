"""Run loggers: a CSV of every metric per epoch, wandb (offline by default), TensorBoard
(:mod:`graphgt.train.tensorboard`), or nothing; and the per-epoch log line's plumbing.

The trainer also writes one line per epoch to the ``graphgt.train.epochs`` Python logger (rank 0).
Under ``graphgt train`` Hydra's logging config sends it to the run's ``cli.log`` and to stdout;
while tqdm bars are on, :func:`bars_quiet_terminal` keeps those lines off the terminal (the bars
show the same numbers) and in the log file.
"""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

#: the Python logger of the trainer's per-epoch lines
EPOCH_LOG = "graphgt.train.epochs"


class _NotEpochLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(EPOCH_LOG)


@contextlib.contextmanager
def bars_quiet_terminal(active: bool) -> Iterator[None]:
    """While ``active`` (tqdm bars on screen), the handlers that write to a stream other than a
    file (Hydra's ``console`` handler: stdout) drop the per-epoch lines; file handlers (``cli.log``)
    keep them.  Handlers are looked up along the logger chain and restored on exit."""
    if not active:
        yield
        return
    handlers, logger = [], logging.getLogger(EPOCH_LOG)
    while logger is not None:
        handlers += [h for h in logger.handlers
                     if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
        logger = logger.parent if logger.propagate else None
    quiet = _NotEpochLines()
    for h in handlers:
        h.addFilter(quiet)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(quiet)


#: the format of Hydra's default job_logging (``[time][logger][LEVEL] - message``)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def log_files() -> List[str]:
    """The files this process's root logger writes to (under ``graphgt train``: Hydra's ``cli.log``),
    to hand to DDP workers that are spawned without Hydra's logging config."""
    return [h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def follow_log_files(files: List[str], console: bool = True) -> List[logging.Handler]:
    """In a spawned worker (rank 0 of ``trainer=ddp``): log INFO records of graphgt, as Hydra's config
    would, to the launcher's log ``files`` (appended) and, if ``console``, to stdout.  Returns the
    handlers it added (to the ``graphgt`` logger)."""
    import sys

    logger = logging.getLogger("graphgt")
    handlers: List[logging.Handler] = [logging.FileHandler(f, mode="a") for f in files]
    if console:
        handlers.append(logging.StreamHandler(sys.stdout))
    for h in handlers:
        h.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(h)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handlers


def run_name(choices: Mapping[str, Optional[str]], seed: int) -> str:
    """A readable run name from the config groups chosen: ``<data>-<model>-<local>-<attention>-s<seed>``
    (groups without a choice are left out; the ``/`` of a nested choice becomes ``.``), e.g.
    ``cora-gps-gcn-full-s3``."""
    parts = [str(choices[g]).replace("/", ".") for g in ("data", "model", "local", "attention")
             if choices.get(g) not in (None, "", "null")]
    return "-".join(parts + [f"s{seed}"])


class Logger:
    """``start(run_dir, config, resume_epoch, name)``, ``log(epoch, metrics)``, ``finish(results)``; the
    base logs nothing.  ``resume_epoch`` (a resumed run) is the last epoch whose row is kept: rows of
    later epochs, logged after the checkpoint the run resumes from, are dropped, so no epoch appears
    twice.  ``name`` is the run's readable name (:func:`run_name`, from the composition root)."""

    def start(self, run_dir: Path, config: Dict[str, Any], resume_epoch: Optional[int] = None,
              name: Optional[str] = None) -> None:
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

    def start(self, run_dir: Path, config: Dict[str, Any], resume_epoch: Optional[int] = None,
              name: Optional[str] = None) -> None:
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


def _fallback_name(run_dir: Path) -> str:
    """A run's name when the composition root gave none: its folder (with the sweep's, for a job number)."""
    run_dir = Path(run_dir).resolve()
    return f"{run_dir.parent.name}/{run_dir.name}" if run_dir.name.isdigit() else run_dir.name


class WandbLogger(CSVLogger):
    """CSV plus Weights & Biases. ``mode='offline'`` (default) needs no account and no network;
    sync later with ``wandb sync <run_dir>/wandb/offline-run-*``.  ``name`` (``logger.name``)
    overrides the run name given by the composition root (:func:`run_name`); ``tags``
    (``logger.tags=[a,b]``) label the run."""

    def __init__(self, project: str = "graphgt", mode: str = "offline", entity: Optional[str] = None,
                 tags: Optional[List[str]] = None, name: Optional[str] = None, filename: str = "metrics.csv"):
        super().__init__(filename)
        self.project, self.mode, self.entity, self.tags, self.name = project, mode, entity, \
            [str(t) for t in (tags or [])], name
        self._run = None

    def start(self, run_dir: Path, config: Dict[str, Any], resume_epoch: Optional[int] = None,
              name: Optional[str] = None) -> None:
        super().start(run_dir, config, resume_epoch)
        import wandb

        id_file = Path(run_dir) / ".wandb_run_id"
        run_id = id_file.read_text().strip() if resume_epoch is not None and id_file.exists() else None
        self._run = wandb.init(project=self.project, entity=self.entity, mode=self.mode, dir=str(run_dir),
                               config=config, tags=self.tags, name=self.name or name or _fallback_name(run_dir),
                               reinit=True, id=run_id, resume="allow" if run_id else None)
        id_file.write_text(self._run.id)

    def log(self, epoch: int, metrics: Dict[str, float]) -> None:
        super().log(epoch, metrics)
        self._run.log({"epoch": epoch, **metrics}, step=epoch)

    def finish(self, results: Dict[str, Any]) -> None:
        for key in ("best_val", "test_at_best_val", "best_epoch", "num_params"):
            self._run.summary[key] = results[key]
        self._run.finish()

    def __repr__(self) -> str:
        return f"WandbLogger(project={self.project!r}, mode={self.mode!r}, tags={self.tags!r})"
