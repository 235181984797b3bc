"""``${graphgt_now:PATTERN}``: the run directory's time stamp (``configs/train.yaml``).

Like Hydra's ``${now:PATTERN}`` (the current time, formatted), except that a process can fix the
time with :func:`set_run_stamp`: the ranks of a ``torchrun`` job agree on rank 0's time so that
all of them resolve the same ``runs/<date>/<time>`` directory (:mod:`graphgt.cli`).  Hydra
re-registers ``now`` when it starts, so the fixed clock needs a resolver of its own.
"""
from __future__ import annotations

import datetime
from typing import Optional

from omegaconf import OmegaConf

_STAMP: Optional[datetime.datetime] = None


def set_run_stamp(stamp: Optional[datetime.datetime]) -> None:
    """Resolve ``${graphgt_now:...}`` with ``stamp`` from now on (``None``: the current time again)."""
    global _STAMP
    _STAMP = stamp


def run_stamp(pattern: str) -> str:
    return (_STAMP or datetime.datetime.now()).strftime(pattern)


def register() -> None:
    if not OmegaConf.has_resolver("graphgt_now"):
        OmegaConf.register_new_resolver("graphgt_now", run_stamp, use_cache=True)
