"""Shared helpers of the data tests: where the real datasets are, and a tiny PE for attach tests."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from torch import Tensor
from torch_geometric.utils import degree

from graphgt.pe.base import PositionalEncoding

SHARED = Path(os.environ.get("GRAPHGT_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
requires_shared = pytest.mark.skipif(not SHARED.exists(), reason=f"real datasets not found at {SHARED}")


def processed_dirs(root: Path) -> list:
    """Every ``processed`` folder under ``root`` (loaders must never write into the shared folder)."""
    return sorted(str(p) for p in Path(root).rglob("processed"))


def snapshot(root: Path) -> List[Tuple[str, int, int]]:
    """``(relative path, size, mtime_ns)`` of everything under ``root``: equal before and after a
    test when nothing was created, changed or deleted there."""
    root = Path(root)
    if not root.exists():
        return []
    out = []
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out.append((str(p.relative_to(root)), st.st_size if p.is_file() else 0, st.st_mtime_ns))
    return out


def set_writable(root: Path, writable: bool) -> None:
    """Give a folder tree the modes of a writable data folder, or of a read-only shared one."""
    for p in [Path(root), *Path(root).rglob("*")]:
        if p.is_dir():
            p.chmod(0o755 if writable else 0o555)
        else:
            p.chmod(0o644 if writable else 0o444)


class DegreePE(PositionalEncoding):
    """Node degree as a one-column encoding (a minimal PE for attach/caching tests)."""

    keys = ("degree_pe",)

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    @property
    def in_dim(self) -> int:
        return 1

    def compute(self, edge_index: Tensor, num_nodes: int) -> Dict[str, Tensor]:
        return {"degree_pe": self.scale * degree(edge_index[0], num_nodes).view(-1, 1)}
