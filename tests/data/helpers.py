"""Shared helpers of the data tests: where the real datasets are, and a tiny PE for attach tests."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import pytest
from torch import Tensor
from torch_geometric.utils import degree

from graphgt.pe.base import PositionalEncoding

SHARED = Path(os.environ.get("GRAPHGT_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
requires_shared = pytest.mark.skipif(not SHARED.exists(), reason=f"real datasets not found at {SHARED}")


def processed_dirs(root: Path) -> list:
    """Every ``processed`` folder under ``root`` (loaders must never write into the shared folder)."""
    return sorted(str(p) for p in Path(root).rglob("processed"))


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
