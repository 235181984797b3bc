"""WebKB web-page graphs (Cornell, Texas, Wisconsin): heterophilous node classification, 10 splits."""
from __future__ import annotations

from pathlib import Path

from graphgt.errors import ConfigError
from graphgt.data.common import NodeDataModule, Prepared, require_paths
from graphgt.data.splits import MaskSplit
from graphgt.spec import DataSpec, FloatFeatures, Task


class WebKBData(NodeDataModule):
    """``torch_geometric.datasets.WebKB`` read from ``<root>/webkb/<name lower-case>/raw``, through its
    copy under ``cache_dir/datasets`` (PyG's ``processed/`` is written there, never into ``<root>``).

    The Geom-GCN 60/20/20 splits ship as 10 mask columns; ``split_index`` picks one.

    Args:
        root: folder holding ``webkb/<name>``.
        name: ``Cornell``, ``Texas`` or ``Wisconsin`` (any case).
        split_index: which of the 10 splits, 0..9.
        batch_size: unused (full-batch).
        num_workers: unused.
    """

    NAMES = ("cornell", "texas", "wisconsin")
    NUM_SPLITS = 10

    def __init__(self, root: str, name: str, split_index: int = 0, batch_size: int = 1, num_workers: int = 0):
        super().__init__(root, batch_size, num_workers, split=MaskSplit(index=split_index))
        self.name, self.split_index = str(name).lower(), split_index

    @property
    def rel(self) -> str:
        return f"webkb/{self.name}"

    def check(self) -> None:
        if not isinstance(self.split_index, int) or not 0 <= self.split_index < self.NUM_SPLITS:
            raise ConfigError(f"data.split_index={self.split_index!r} is out of range: WebKB has "
                              f"{self.NUM_SPLITS} splits, 0..{self.NUM_SPLITS - 1}")
        self._check_common()
        if self.name not in self.NAMES:
            raise ConfigError(f"data.name '{self.name}' is not a WebKB dataset; choose one of {list(self.NAMES)}")
        raw = self.source_dir(self.rel) / "raw"
        files = ["out1_node_feature_label.txt", "out1_graph_edges.txt"]
        files += [f"{self.name}_split_0.6_0.2_{i}.npz" for i in range(self.NUM_SPLITS)]
        require_paths([raw] + [raw / f for f in files], f"WebKB {self.name}",
                      f"Copy the Geom-GCN files (new_data/{self.name}/*, splits/{self.name}_split_*.npz) there.")

    def prepare(self, cache_dir: Path) -> Prepared:
        from torch_geometric.datasets import WebKB

        folder = self.load_dir(self.rel, cache_dir)
        dataset = WebKB(str(folder.parent), folder.name)
        data = dataset[0]
        spec = DataSpec(task=Task("multiclass", int(dataset.num_classes), "node", "accuracy"),
                        node_features=FloatFeatures(int(data.x.size(1))), edge_features=None,
                        name=f"WebKB/{self.name}[split {self.split_index}]")
        return Prepared([data], spec, split_source=data, labels=data.y)
