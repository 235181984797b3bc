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

from collections.abc import Mapping
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
            (an existing ``root`` folder is first copied to ``cache_dir/datasets/pyg/<folder name>``
            and the factory gets the copy, so PyG's ``processed/`` never lands in the user's folder).
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
        # an unbuilt split node (data._recursive_=false) is reported by check(), with the dataset's,
        # rather than raised here, where Hydra would wrap the ConfigError in its own exception
        self._unbuilt_split = split if isinstance(split, Mapping) else None
        super().__init__(root or ".", batch_size, num_workers,
                         split=None if self._unbuilt_split is not None else as_split(split, MaskSplit()))
        self.dataset = dataset
        self.task_level, self.task, self.metric = str(level), str(task), str(metric)
        self.num_outputs = None if num_outputs is None else int(num_outputs)
        self.name = name
        self._root_given = root is not None

    def check(self) -> None:
        if self._unbuilt_split is not None and not isinstance(self.dataset, Mapping):
            as_split(self._unbuilt_split, MaskSplit())  # raises: names the node and '_recursive_: false'
        self._check_common()
        if self.task_level not in LEVELS:
            raise ConfigError(f"data.level must be one of {list(LEVELS)}, got '{self.task_level}'")
        if self.task not in TASK_KINDS:
            raise ConfigError(f"data.task must be one of {list(TASK_KINDS)}, got '{self.task}'")
        if self.num_outputs is not None and self.num_outputs < 1:
            raise ConfigError(f"data.num_outputs must be >= 1 or null, got {self.num_outputs}")
        if isinstance(self.dataset, Mapping):
            # a DictConfig (or dict) arrives here when the user sets data._recursive_=false: Hydra then
            # passes nested nodes unbuilt.  Refuse it here rather than let a later step call or index it
            target = self.dataset.get("_target_", None)
            raise ConfigError(
                "data.dataset arrived as an unbuilt config node"
                + (f" (_target_: {target})" if target is not None else "")
                + ", not a PyG dataset: 'data._recursive_: false' stops Hydra from building nested nodes. "
                "Remove data._recursive_ (graphgt needs data.dataset and data.split built), and give "
                "data.dataset as '_target_: <PyG dataset class>' with '_partial_: true'")
        if isinstance(self.dataset, str) or self.dataset is None:
            raise ConfigError("data.dataset must be a PyG dataset, or a factory of one (a node with "
                              "'_target_: <dataset class>' and '_partial_: true'), got "
                              f"{type(self.dataset).__name__}")

    def _build_dataset(self, cache_dir: Path) -> Any:
        """The dataset: as given, or built by its factory, with an existing ``root`` replaced by its
        copy under ``cache_dir`` (PyG writes ``processed/`` next to ``raw/``; the user's folder stays
        untouched).  A ``root`` that does not exist yet is passed as given: the dataset class
        downloads into it, as the user asked."""
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
