"""Planetoid citation graphs (Cora, CiteSeer, PubMed), node classification, public split."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from graphgt.errors import ConfigError
from graphgt.data.common import NodeDataModule, Prepared, as_split, require_paths
from graphgt.data.splits import MaskSplit
from graphgt.spec import DataSpec, FloatFeatures, Task

_RAW = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


class PlanetoidData(NodeDataModule):
    """``torch_geometric.datasets.Planetoid`` read from ``<root>/planetoid/<name>/raw``, through its copy
    under ``cache_dir/datasets`` (PyG's ``processed/`` is written there, never into ``<root>``).

    Node-level multiclass accuracy; float bag-of-words features (row-normalised by default, as in
    the GCN and GAT papers); no edge features.

    Args:
        root: folder holding ``planetoid/<name>``.
        name: ``Cora``, ``CiteSeer`` or ``PubMed`` (the folder name).
        batch_size: unused (full-batch).
        split: split strategy; default the public split (``MaskSplit()``: 20 per class/500/1000).
        normalize_features: row-normalise ``x`` (PyG ``NormalizeFeatures``).
        num_workers: unused.
    """

    NAMES = ("Cora", "CiteSeer", "PubMed")

    def __init__(self, root: str, name: str, batch_size: int = 1, split: Any = None,
                 normalize_features: bool = True, num_workers: int = 0):
        super().__init__(root, batch_size, num_workers, split=as_split(split, MaskSplit()))
        self.name, self.normalize_features = str(name), bool(normalize_features)

    @property
    def rel(self) -> str:
        return f"planetoid/{self.name}"

    def check(self) -> None:
        self._check_common()
        if self.name.lower() not in {n.lower() for n in self.NAMES}:
            raise ConfigError(f"data.name '{self.name}' is not a Planetoid dataset; choose one of {list(self.NAMES)}")
        raw = self.source_dir(self.rel) / "raw"
        require_paths([raw] + [raw / f"ind.{self.name.lower()}.{s}" for s in _RAW], f"Planetoid {self.name}",
                      f"Copy the Planetoid raw files (ind.{self.name.lower()}.*) there, or point data.root at "
                      f"the folder that holds planetoid/{self.name}.")

    def prepare(self, cache_dir: Path) -> Prepared:
        from torch_geometric.datasets import Planetoid
        from torch_geometric.transforms import NormalizeFeatures

        folder = self.load_dir(self.rel, cache_dir)
        transform = NormalizeFeatures() if self.normalize_features else None
        dataset = Planetoid(str(folder.parent), folder.name, transform=transform)
        data = dataset[0]
        spec = DataSpec(task=Task("multiclass", int(dataset.num_classes), "node", "accuracy"),
                        node_features=FloatFeatures(int(data.x.size(1))), edge_features=None,
                        name=f"Planetoid/{self.name}")
        return Prepared([data], spec, split_source=data, labels=data.y)
