"""Memory-mapped pages: advise the kernel how an array's file mapping will be read, or drop its
resident pages from this process's RSS.

Graph stores (:mod:`graphgt.data.store`) map their ``.npy`` arrays; stores larger than RAM
(papers100M) are read at random rows, where read-ahead only wastes memory (``MADV_RANDOM``), and
long passes release the pages they touched (``MADV_DONTNEED``) so the RSS stays bounded.  The PE
solvers (:mod:`graphgt.pe.csr`) release the CSR they were given the same way.  Plain arrays (not
mapped) make every function here a no-op.
"""
from __future__ import annotations

import mmap
import os
from typing import Optional

import numpy as np


def _mapping(arr: np.ndarray) -> Optional[mmap.mmap]:
    """The ``mmap`` behind a memory-mapped array, or None for in-RAM arrays."""
    mm = getattr(arr, "_mmap", None)
    base = arr
    while mm is None and getattr(base, "base", None) is not None:
        base = base.base
        mm = base if isinstance(base, mmap.mmap) else getattr(base, "_mmap", None)
    return mm if isinstance(mm, mmap.mmap) else None


def larger_than_ram_share(arr: np.ndarray, share: float = 0.25) -> bool:
    """Whether ``arr`` takes more than ``share`` of the machine's physical memory."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return True
    return arr.nbytes > share * ram


def advise_mapping(arr: np.ndarray, advice: str) -> None:
    """``madvise(advice)`` over the file mapping behind ``arr`` (a no-op where unsupported)."""
    mm = _mapping(arr)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, advice):
        try:
            mm.madvise(getattr(mmap, advice))
        except (OSError, ValueError):  # closed or not madvise-able
            pass


def release_pages(arr: np.ndarray) -> None:
    """``madvise(MADV_DONTNEED)`` over the file mapping behind ``arr`` (a no-op for in-RAM arrays)."""
    advise_mapping(arr, "MADV_DONTNEED")


__all__ = ["larger_than_ram_share", "advise_mapping", "release_pages"]
