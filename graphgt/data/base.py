"""What a data module tells the rest of graphgt, and the data-module protocol.

The training loop never looks at a dataset's name: everything dataset-specific (how to read it,
how to split it, how its raw features are embedded, which loss and metric apply) is answered here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal, Optional, Sequence

from torch import nn

from graphgt.eval.metrics import Metric
from graphgt.pe.base import PositionalEncoding

TaskKind = Literal["multiclass", "binary", "multilabel", "regression"]
Level = Literal["node", "graph"]


@dataclass
class Task:
    """The prediction task.

    Attributes:
        kind: ``multiclass`` (cross-entropy over ``num_outputs`` classes, integer targets),
            ``binary``/``multilabel`` (``num_outputs`` independent sigmoid outputs, float targets,
            NaN = missing label, masked out of loss and metric as OGB does), or ``regression``.
        num_outputs: width of the model's output.
        metric: the selection/report metric, computed on a whole split at once.
        level: ``node`` (one prediction per node) or ``graph`` (one per graph).
    """

    kind: TaskKind
    num_outputs: int
    metric: Metric
    level: Level


EncoderFactory = Callable[[int], nn.Module]


@dataclass
class DataSpec:
    """Everything the model builder and the loop need to know about a dataset.

    Attributes:
        task: see :class:`Task`.
        node_encoder: ``factory(out_dim) -> nn.Module`` mapping the raw ``data.x`` to
            ``Tensor[N, out_dim]`` (a Linear for float features, OGB's AtomEncoder for molecules).
        edge_encoder: the same for ``data.edge_attr``, or ``None`` if the dataset has no edge
            features (then layers with ``requires_edge_attr`` are refused by validation).
        name: a human-readable dataset name for reports.
        node_feature_dim: width of the raw float node features (``None`` for categorical ones);
            lets a model feed raw features straight into its first layer (``MPNNModel(raw_io=True)``).
    """

    task: Task
    node_encoder: EncoderFactory
    edge_encoder: Optional[EncoderFactory]
    name: str
    node_feature_dim: Optional[int] = None

    @property
    def has_edge_attr(self) -> bool:
        return self.edge_encoder is not None


class DataModule:
    """Protocol of data modules (one class per source, built by Hydra from ``configs/data/*.yaml``).

    Life cycle: ``check()`` (cheap, before any compute: files present? raises ``ConfigError``),
    ``load(cache_dir) -> DataSpec`` (read or generate the data, so that combinations can be
    validated against the spec before anything expensive), ``setup(pes, cache_dir)`` (split,
    compute and cache positional encodings), then ``spec`` and the three loaders.  Node-level loaders yield batches that carry a boolean
    ``loss_mask`` (which node outputs belong to the split); graph-level batches count every graph.

    Loaders have ``len()`` and ``set_epoch(epoch, start=0)`` (the next pass is pass ``epoch`` of the
    shuffle, beginning at batch ``start``: how a resumed run continues mid-epoch).  Under DDP with
    ``world_size`` ranks, the training loader of rank ``r`` yields its part of every global batch
    (the same number of steps on every rank; the ranks' parts of step ``i`` are together the batch
    ``i`` of one process whose batch is ``world_size`` times larger, every item once per epoch), and
    evaluation loaders deal the single-process batches round-robin: rank ``r`` yields batches
    ``r, r + world_size, ...`` of the single-process order, so the trainer can reassemble exactly the
    single-process predictions.
    """

    def check(self) -> None:
        """Fail fast (``ConfigError``) when the data cannot be found or the settings are inconsistent."""

    def load(self, cache_dir: Path) -> DataSpec:  # pragma: no cover
        raise NotImplementedError

    def setup(self, pes: Sequence[PositionalEncoding], cache_dir: Path) -> None:  # pragma: no cover
        raise NotImplementedError

    @property
    def spec(self) -> DataSpec:  # pragma: no cover
        raise NotImplementedError

    def train_loader(self, seed: int, rank: int = 0, world_size: int = 1) -> Iterable:  # pragma: no cover
        raise NotImplementedError

    def val_loader(self, rank: int = 0, world_size: int = 1) -> Iterable:  # pragma: no cover
        raise NotImplementedError

    def test_loader(self, rank: int = 0, world_size: int = 1) -> Iterable:  # pragma: no cover
        raise NotImplementedError
