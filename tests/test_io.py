"""Atomic writes give the mode a plain write would (0666 & ~umask), not mkstemp's 0600, and read
the umask without changing it."""
from __future__ import annotations

import os
import stat
import threading

import pytest
import torch

from graphgt.io import _umask, atomic_save, atomic_write_json
from graphgt.train.logging import CSVLogger


@pytest.fixture
def umask():
    """``umask(mask)`` sets the process umask for the test; the old one is restored after it."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    atomic_save({"w": torch.zeros(2)}, tmp_path / "last.pt")
    atomic_write_json({"best_val": 0.5}, tmp_path / "results.json")
    logger = CSVLogger()
    logger.start(tmp_path, {})
    logger.log(1, {"train_loss": 0.5})
    logger.log(2, {"train_loss": 0.4})
    for name in ("last.pt", "results.json", "metrics.csv"):
        assert _mode(tmp_path / name) == expected, name
    # replacing a file gives the new file the same mode (the rename keeps the temporary file's)
    atomic_write_json({"best_val": 0.6}, tmp_path / "results.json")
    assert _mode(tmp_path / "results.json") == expected
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary file left


def test_reading_the_umask_does_not_change_it(umask):
    umask(0o027)
    assert _umask() == 0o027
    assert os.umask(0o027) == 0o027


def test_files_created_while_the_umask_is_read_keep_their_mode(tmp_path, umask):
    """Another thread creating files while graphgt reads the umask never gets a looser mode."""
    umask(0o022)
    stop = threading.Event()

    def read_umask():
        while not stop.is_set():
            _umask()

    reader = threading.Thread(target=read_umask)
    reader.start()
    try:
        modes = set()
        for i in range(300):
            path = tmp_path / f"f{i}"
            path.write_text("x")
            modes.add(_mode(path))
    finally:
        stop.set()
        reader.join()
    assert modes == {0o644}
