"""Atomic file writes: a temporary file next to the target, then a rename.

A crash or a kill while writing leaves either the old file or the new one, never half of one;
every cache, checkpoint and result file of graphgt is written this way.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)``, atomically."""
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_json(obj: Any, path: Path) -> None:
    """``obj`` as indented JSON at ``path`` (non-JSON values as ``str``), atomically."""
    text = json.dumps(obj, indent=2, default=str)
    _atomic(path, lambda tmp: Path(tmp).write_text(text))
