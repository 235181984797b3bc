"""Any PyG dataset class, configured entirely in YAML (no code per dataset).

Example (``configs/data/amazon_photo.yaml``)::

    _target_: graphgt.data.PyGDataset
    dataset:
      _target_: torch_geometric.datasets.Amazon
      root: ${data_root}/amazon
      name: Photo
    level: node
    task: multiclass
    metric: accuracy
    split: {_target_: graphgt.data.splits.RandomSplit, train: 0.6, val: 0.2, seed: 0}
"""
from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any, List, Mapping, Optional, get_args

import torch
from torch_geometric.data import Data

from graphgt.config.errors import ConfigError
from graphgt.data.base import DataSpec, Level, Task, TaskKind
from graphgt.data.common import (InMemoryDataModule, Prepared, as_split, ensure_node_features, feature_dim,
                                 instantiate, writable_copy)
from graphgt.data.splits import MaskSplit
from graphgt.eval.metrics import get_metric
from graphgt.nn.encoders import LinearEncoder


def _as_plain(obj: Any) -> Any:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(obj, DictConfig):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return obj


class PyGDataset(InMemoryDataModule):
    """A data module around any PyG dataset object.

    Args:
        dataset: the dataset: an instantiated PyG dataset (Hydra builds nested ``_target_`` nodes),
            or a ``{_target_: ..., **kwargs}`` mapping, then built in ``setup`` (a read-only
            ``root`` folder is first copied to ``cache_dir/datasets/pyg/<folder name>``).
        level: ``node`` (the dataset's single graph, one prediction per node) or ``graph``.
        task: ``multiclass``, ``binary``, ``multilabel`` or ``regression``.
        metric: a metric name of :func:`graphgt.eval.metrics.get_metric` (``accuracy``, ``rocauc``,
            ``ap``, ``mae``, ``rmse``, ``ogb:<name>``).
        num_outputs: model output width; None infers it (number of classes for multiclass, width of
            ``y`` otherwise).
        split: split strategy; default ``MaskSplit()`` (the dataset's own masks).
        batch_size: graphs per batch (graph level).
        num_workers: loader workers.
        root: unused unless a mapping ``dataset`` has no ``root``: then ``root`` is passed to it.
        name: display name (default: the dataset class and its ``name``).
    """

    def __init__(self, dataset: Any, level: str, task: str, metric: str, num_outputs: Optional[int] = None,
                 split: Any = None, batch_size: int = 32, num_workers: int = 0, root: Optional[str] = None,
                 name: Optional[str] = None):
        super().__init__(root or ".", batch_size, num_workers, split=as_split(split, MaskSplit()))
        self.dataset = _as_plain(dataset)
        self.task_level, self.task, self.metric = str(level), str(task), str(metric)
        self.num_outputs = None if num_outputs is None else int(num_outputs)
        self.name = name
        self._root_given = root is not None

    def check(self) -> None:
        self._check_common()
        if self.task_level not in get_args(Level):
            raise ConfigError(f"data.level must be one of {list(get_args(Level))}, got '{self.task_level}'")
        if self.task not in get_args(TaskKind):
            raise ConfigError(f"data.task must be one of {list(get_args(TaskKind))}, got '{self.task}'")
        get_metric(self.metric)
        if self.num_outputs is not None and self.num_outputs < 1:
            raise ConfigError(f"data.num_outputs must be >= 1 or null, got {self.num_outputs}")
        if isinstance(self.dataset, Mapping):
            target = self.dataset.get("_target_")
            if not target:
                raise ConfigError("data.dataset must be a PyG dataset or a mapping with a '_target_' class path")
            module, _, cls = str(target).rpartition(".")
            try:
                getattr(importlib.import_module(module), cls)
            except (ImportError, AttributeError, ValueError) as e:
                raise ConfigError(f"data.dataset._target_ '{target}' cannot be imported ({e})") from e

    def _build_dataset(self, cache_dir: Path) -> Any:
        if not isinstance(self.dataset, Mapping):
            return self.dataset
        cfg = dict(self.dataset)
        if "root" not in cfg and self._root_given:
            cfg["root"] = self.root
        if "root" in cfg:
            src = Path(str(cfg["root"]))
            if src.is_dir():
                cfg["root"] = str(writable_copy(src, cache_dir, f"pyg/{src.resolve().name}"))
        return instantiate(cfg)

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
        spec = DataSpec(task=Task(self.task, num_outputs, get_metric(self.metric), self.task_level),  # type: ignore[arg-type]
                        node_encoder=functools.partial(LinearEncoder, feature_dim(graphs[0].x)),
                        edge_encoder=functools.partial(LinearEncoder, edge_dim) if edge_dim else None,
                        name=name, node_feature_dim=feature_dim(graphs[0].x))
        source = graphs[0] if self.task_level == "node" else dataset
        return Prepared(graphs, spec, split_source=source, labels=labels)
