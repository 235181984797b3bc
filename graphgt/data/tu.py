"""TU graph-classification benchmarks (MUTAG, ENZYMES, PROTEINS, ...)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from graphgt.data.common import GraphDataModule, Prepared, as_split, ensure_node_features, feature_dim, require_paths
from graphgt.data.splits import RandomSplit
from graphgt.spec import DataSpec, FloatFeatures, Task


class TUData(GraphDataModule):
    """``torch_geometric.datasets.TUDataset`` read from ``<root>/tu/<name>/raw``, through its copy under
    ``cache_dir/datasets`` (PyG's ``processed/`` is written there, never into ``<root>``).

    Graph-level multiclass accuracy.  Node features are float (one-hot node labels, plus the
    continuous node attributes with ``use_node_attr``; a constant 1 for datasets with neither);
    edge features (e.g. MUTAG's one-hot bond types) are used when the dataset has them.

    Args:
        root: folder holding ``tu/<name>``.
        name: the dataset (folder) name, e.g. ``MUTAG``.
        use_node_attr: include continuous node attributes (ENZYMES: 18 + 3 label columns = 21).
        split: split strategy; default a stratified 80/10/10 ``RandomSplit`` with seed 0.
        batch_size: graphs per batch.
        num_workers: loader workers.
    """

    def __init__(self, root: str, name: str, use_node_attr: bool = False, split: Any = None,
                 batch_size: int = 32, num_workers: int = 0):
        default = RandomSplit(0.8, 0.1, seed=0, stratify=True)
        super().__init__(root, batch_size, num_workers, split=as_split(split, default))
        self.name, self.use_node_attr = str(name), bool(use_node_attr)

    @property
    def rel(self) -> str:
        return f"tu/{self.name}"

    def check(self) -> None:
        self._check_common()
        raw = self.source_dir(self.rel) / "raw"
        require_paths([raw] + [raw / f"{self.name}_{s}.txt" for s in ("A", "graph_indicator", "graph_labels")],
                      f"TU dataset {self.name}",
                      f"Copy the TU files ({self.name}_A.txt, {self.name}_graph_indicator.txt, ...) there.")

    def prepare(self, cache_dir: Path) -> Prepared:
        from torch_geometric.datasets import TUDataset

        folder = self.load_dir(self.rel, cache_dir)
        dataset = TUDataset(str(folder.parent), folder.name, use_node_attr=self.use_node_attr)
        graphs = [g for g in dataset]
        ensure_node_features(graphs)
        for g in graphs:
            g.x = g.x.float()
            g.y = g.y.view(-1).long()
            if getattr(g, "edge_attr", None) is not None:
                g.edge_attr = g.edge_attr.float()
        edge_dim = feature_dim(getattr(graphs[0], "edge_attr", None))
        spec = DataSpec(task=Task("multiclass", int(dataset.num_classes), "graph", "accuracy"),
                        node_features=FloatFeatures(feature_dim(graphs[0].x)),
                        edge_features=FloatFeatures(edge_dim) if edge_dim else None, name=f"TU/{self.name}")
        return Prepared(graphs, spec, split_source=dataset, labels=torch.cat([g.y for g in graphs]))
