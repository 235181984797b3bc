"""Any PyG dataset class, configured entirely in YAML (no code per dataset).

Example (``configs/data/amazon_photo.yaml``)::

    _target_: graphgt.data.PyGDataset
    dataset:
      _target_: torch_geometric.datasets.Amazon
      _partial_: true
      root: ${data_root}/amazon
      name: Photo
    level: node
    task: multiclass
    metric: accuracy
    split: {_target_: graphgt.data.splits.RandomSplit, train: 0.6, val: 0.2, seed: 0}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import torch
from torch_geometric.data import Data

from graphgt.data.common import (InMemoryDataModule, Prepared, as_split, ensure_node_features, feature_dim,
                                 writable_copy)
from graphgt.data.splits import MaskSplit
from graphgt.errors import ConfigError
from graphgt.spec import LEVELS, TASK_KINDS, DataSpec, FloatFeatures, Task


def _is_factory(dataset: Any) -> bool:
    """A callable that builds the dataset (a Hydra partial), rather than a dataset object."""
    return callable(dataset) and not hasattr(dataset, "__getitem__")


class PyGDataset(InMemoryDataModule):
    """A data module around any PyG dataset object.

    Args:
        dataset: the dataset: an instantiated PyG dataset (Hydra builds nested ``_target_`` nodes),
            or a factory of one (a Hydra ``_partial_: true`` node), called when the data is loaded
            (a read-only ``root`` folder is first copied to ``cache_dir/datasets/pyg/<folder name>``).
        level: ``node`` (the dataset's single graph, one prediction per node) or ``graph``.
        task: ``multiclass``, ``binary``, ``multilabel`` or ``regression``.
        metric: a metric name of :func:`graphgt.eval.metrics.get_metric` (``accuracy``, ``rocauc``,
            ``ap``, ``mae``, ``rmse``, ``ogb:<name>``).
        num_outputs: model output width; None infers it (number of classes for multiclass, width of
            ``y`` otherwise).
        split: split strategy; default ``MaskSplit()`` (the dataset's own masks).
        batch_size: graphs per batch (graph level).
        num_workers: loader workers.
        root: unused unless a factory ``dataset`` has no ``root``: then ``root`` is passed to it.
        name: display name (default: the dataset class and its ``name``).
    """

    def __init__(self, dataset: Any, level: str, task: str, metric: str, num_outputs: Optional[int] = None,
                 split: Any = None, batch_size: int = 32, num_workers: int = 0, root: Optional[str] = None,
                 name: Optional[str] = None):
        super().__init__(root or ".", batch_size, num_workers, split=as_split(split, MaskSplit()))
        self.dataset = dataset
        self.task_level, self.task, self.metric = str(level), str(task), str(metric)
        self.num_outputs = None if num_outputs is None else int(num_outputs)
        self.name = name
        self._root_given = root is not None

    def check(self) -> None:
        self._check_common()
        if self.task_level not in LEVELS:
            raise ConfigError(f"data.level must be one of {list(LEVELS)}, got '{self.task_level}'")
        if self.task not in TASK_KINDS:
            raise ConfigError(f"data.task must be one of {list(TASK_KINDS)}, got '{self.task}'")
        if self.num_outputs is not None and self.num_outputs < 1:
            raise ConfigError(f"data.num_outputs must be >= 1 or null, got {self.num_outputs}")
        if isinstance(self.dataset, (dict, str)) or self.dataset is None:
            raise ConfigError("data.dataset must be a PyG dataset, or a factory of one (a node with "
                              "'_target_: <dataset class>' and '_partial_: true'), got "
                              f"{type(self.dataset).__name__}")

    def _build_dataset(self, cache_dir: Path) -> Any:
        """The dataset: as given, or built by its factory, with a read-only ``root`` replaced by its
        writable copy under ``cache_dir`` (PyG writes ``processed/`` next to ``raw/``)."""
        if not _is_factory(self.dataset):
            return self.dataset
        keywords = dict(getattr(self.dataset, "keywords", {}) or {})
        root = keywords.get("root", self.root if self._root_given else None)
        overrides = {}
        if root is not None:
            src = Path(str(root))
            overrides["root"] = str(writable_copy(src, cache_dir, f"pyg/{src.resolve().name}")) if src.is_dir() \
                else str(root)
        return self.dataset(**overrides)

    def _targets(self, y: torch.Tensor, rows: int) -> torch.Tensor:
        if self.task == "multiclass":
            return y.reshape(-1).long()
        return y.reshape(rows, -1).float()

    def prepare(self, cache_dir: Path) -> Prepared:
        dataset = self._build_dataset(cache_dir)
        if self.task_level == "node":
            if len(dataset) != 1:
                raise ConfigError(f"data.level=node needs a dataset of one graph; this one has {len(dataset)} "
                                  f"(use data.level=graph)")
            graphs: List[Data] = [dataset[0]]
        else:
            graphs = [g for g in dataset]
        ensure_node_features(graphs)
        for g in graphs:
            if getattr(g, "y", None) is None:
                raise ConfigError(f"{type(dataset).__name__} has no targets 'y'")
            g.x = g.x.float()
            g.y = self._targets(g.y, int(g.num_nodes) if self.task_level == "node" else 1)
            if getattr(g, "edge_attr", None) is not None:
                g.edge_attr = g.edge_attr.float()
        all_y = torch.cat([g.y for g in graphs])
        if self.task == "multiclass":
            num_outputs = self.num_outputs or int(all_y.max()) + 1
            labels = all_y
        else:
            num_outputs = self.num_outputs or int(all_y.size(-1))
            labels = None
        edge_dim = feature_dim(getattr(graphs[0], "edge_attr", None))
        name = self.name or f"{type(dataset).__name__}" + (f"/{dataset.name}" if hasattr(dataset, "name") else "")
        spec = DataSpec(task=Task(self.task, num_outputs, self.task_level, self.metric),  # type: ignore[arg-type]
                        node_features=FloatFeatures(feature_dim(graphs[0].x)),
                        edge_features=FloatFeatures(edge_dim) if edge_dim else None, name=name)
        source = graphs[0] if self.task_level == "node" else dataset
        return Prepared(graphs, spec, split_source=source, labels=labels)
