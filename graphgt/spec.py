"""What a dataset tells the rest of graphgt, as plain descriptions (no modules, no metric objects).

A data module returns a :class:`DataSpec`; the model builder turns its feature descriptions into
encoders (:func:`graphgt.nn.encoders.feature_encoder`), and the composition root
(:mod:`graphgt.app`) turns ``Task.metric`` into a metric (:func:`graphgt.eval.get_metric`) and
``Task.kind`` into a loss (:func:`graphgt.train.losses.loss_for`).  This module sits at the ground
floor: data, nn, eval and train all read it, and it imports nothing of graphgt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Sequence, Tuple, Union

TaskKind = Literal["multiclass", "binary", "multilabel", "regression"]
Level = Literal["node", "graph"]
TASK_KINDS: Tuple[str, ...] = ("multiclass", "binary", "multilabel", "regression")
LEVELS: Tuple[str, ...] = ("node", "graph")


@dataclass(frozen=True)
class Task:
    """The prediction task.

    Attributes:
        kind: ``multiclass`` (cross-entropy over ``num_outputs`` classes, integer targets),
            ``binary``/``multilabel`` (``num_outputs`` independent sigmoid outputs, float targets,
            NaN = missing label, masked out of loss and metric as OGB does), or ``regression``.
        num_outputs: width of the model's output.
        level: ``node`` (one prediction per node) or ``graph`` (one per graph).
        metric: the name of the selection/report metric, computed on a whole split at once:
            ``accuracy``, ``rocauc``, ``ap``, ``mae``, ``rmse`` or ``ogb:<dataset>`` (OGB's Evaluator).
    """

    kind: TaskKind
    num_outputs: int
    level: Level
    metric: str

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"Task.kind={self.kind!r} is not one of {TASK_KINDS}")
        if self.level not in LEVELS:
            raise ValueError(f"Task.level={self.level!r} is not one of {LEVELS}")
        if int(self.num_outputs) < 1:
            raise ValueError(f"Task.num_outputs={self.num_outputs} must be >= 1")


@dataclass(frozen=True)
class FloatFeatures:
    """Float features of width ``dim`` (``[N, dim]``; integer input is cast)."""

    dim: int


@dataclass(frozen=True)
class CategoricalFeatures:
    """Integer features, one column per entry of ``cardinalities`` (column ``f`` takes values in
    ``[0, cardinalities[f])``), e.g. OGB's atom and bond features."""

    cardinalities: Tuple[int, ...]

    def __init__(self, cardinalities: Sequence[int]):
        object.__setattr__(self, "cardinalities", tuple(int(c) for c in cardinalities))


Features = Union[FloatFeatures, CategoricalFeatures]


@dataclass(frozen=True)
class DataSpec:
    """Everything the model builder and the composition root need to know about a dataset.

    Attributes:
        task: see :class:`Task`.
        node_features: how the raw ``data.x`` looks (:class:`FloatFeatures` or :class:`CategoricalFeatures`).
        edge_features: the same for ``data.edge_attr``, or ``None`` if the dataset has no edge
            features (then layers with ``requires_edge_attr`` are refused before any compute).
        name: a human-readable dataset name for reports.
    """

    task: Task
    node_features: Features
    edge_features: Optional[Features]
    name: str

    @property
    def has_edge_attr(self) -> bool:
        return self.edge_features is not None

    @property
    def node_feature_dim(self) -> Optional[int]:
        """Width of the raw float node features (``None`` for categorical ones); lets a model feed
        raw features straight into its first layer (``MPNNModel(raw_io=True)``)."""
        return self.node_features.dim if isinstance(self.node_features, FloatFeatures) else None


__all__ = ["Task", "TaskKind", "Level", "TASK_KINDS", "LEVELS", "FloatFeatures", "CategoricalFeatures", "Features",
           "DataSpec"]
