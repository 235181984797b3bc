"""Fixtures of the data tests: a private copy of the real datasets, and a guard that no test writes
into a dataset source (the shared folder or that copy), whatever their write permissions."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest

from .helpers import SHARED, set_writable, snapshot


@pytest.fixture(scope="session")
def real_root(tmp_path_factory) -> Iterator[Path]:
    """A copy of the real datasets (``$GRAPHGT_SHARED_DATA`` or ``../shared/data``), made once per
    session and given the modes of a *writable* data folder: the loaders must leave it untouched
    all the same (they read a copy under ``cache_dir``).  Tests read this copy, not the shared
    folder, so even a faulty loader cannot write into the shared data."""
    if not SHARED.exists():
        pytest.skip(f"real datasets not found at {SHARED}")
    root = tmp_path_factory.mktemp("real-data") / "data"
    shutil.copytree(SHARED, root, ignore=shutil.ignore_patterns("processed"))
    set_writable(root, True)
    yield root


@pytest.fixture(autouse=True)
def _sources_stay_untouched(request) -> Iterator[None]:
    """After every data test: nothing was created, changed or deleted in the shared data folder, nor in
    the private copy when the test used it."""
    roots = [SHARED] + ([request.getfixturevalue("real_root")] if "real_root" in request.fixturenames else [])
    before = [snapshot(r) for r in roots]
    yield
    for root, was in zip(roots, before):
        now = snapshot(root)
        assert now == was, (f"a test wrote into the dataset source {root}: "
                            f"{sorted(set(map(str, now)) ^ set(map(str, was)))[:5]}")
