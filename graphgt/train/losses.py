"""The loss of each task kind, and the trainer's objective (a loss and a metric).

The composition root (:mod:`graphgt.app`) builds the :class:`Objective` of a run from the dataset's
:class:`~graphgt.spec.Task`: :func:`loss_for` maps its ``kind`` to a loss, and
:func:`graphgt.eval.get_metric` its ``metric`` name to a metric.

Each loss is computed as a ``(sum, count)`` pair: the summed loss over the labelled entries and
how many there are.  The trainer divides by the count over *all* DDP ranks, so that a step over
``W`` ranks optimises exactly the mean loss of the union of their batches (the single-process
loss of the global batch), whatever the ranks' batch sizes and missing labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Protocol, Tuple

import torch.nn.functional as F
from torch import Tensor

LossSum = Tuple[Tensor, int]


def multiclass_loss_sum(pred: Tensor, target: Tensor) -> LossSum:
    """Summed cross-entropy; ``pred [M, C]`` logits, ``target [M]`` class ids; count ``M``."""
    return F.cross_entropy(pred, target.reshape(-1).long(), reduction="sum"), int(pred.size(0))


def masked_bce_loss_sum(pred: Tensor, target: Tensor) -> LossSum:
    """Summed binary cross-entropy over labelled entries only (NaN target = missing label, as in OGB)."""
    target = target.reshape(pred.shape).float()
    valid = ~target.isnan()
    return F.binary_cross_entropy_with_logits(pred[valid], target[valid], reduction="sum"), int(valid.sum())


def masked_l1_loss_sum(pred: Tensor, target: Tensor) -> LossSum:
    """Summed absolute error over non-NaN targets."""
    target = target.reshape(pred.shape).float()
    valid = ~target.isnan()
    return (pred[valid] - target[valid]).abs().sum(), int(valid.sum())


LOSS_SUMS: Dict[str, Callable[[Tensor, Tensor], LossSum]] = {
    "multiclass": multiclass_loss_sum,
    "binary": masked_bce_loss_sum,
    "multilabel": masked_bce_loss_sum,
    "regression": masked_l1_loss_sum,
}


def _mean(loss_sum: Callable[[Tensor, Tensor], LossSum]) -> Callable[[Tensor, Tensor], Tensor]:
    def mean(pred: Tensor, target: Tensor) -> Tensor:
        total, count = loss_sum(pred, target)
        return total / count if count else total * float("nan")

    mean.__name__ = loss_sum.__name__.replace("_sum", "")
    mean.__doc__ = f"The mean of :func:`{loss_sum.__name__}` (NaN without labelled entries)."
    return mean


multiclass_loss = _mean(multiclass_loss_sum)
masked_bce_loss = _mean(masked_bce_loss_sum)
masked_l1_loss = _mean(masked_l1_loss_sum)

LOSSES: Dict[str, Callable[[Tensor, Tensor], Tensor]] = {kind: _mean(fn) for kind, fn in LOSS_SUMS.items()}


def loss_for(kind: str) -> Callable[[Tensor, Tensor], LossSum]:
    """The ``(sum, count)`` loss of a task kind (``multiclass``, ``binary``, ``multilabel``, ``regression``)."""
    try:
        return LOSS_SUMS[kind]
    except KeyError:
        raise ValueError(f"no loss for task kind {kind!r}; known kinds: {sorted(LOSS_SUMS)}") from None


class MetricFn(Protocol):
    """What the trainer needs of a metric (:class:`graphgt.eval.Metric` is one)."""

    name: str
    higher_is_better: bool

    def __call__(self, pred: Tensor, target: Tensor) -> float: ...


@dataclass(frozen=True)
class Objective:
    """What the trainer minimises (``loss_sum``) and selects the best epoch by (``metric``).

    Attributes:
        loss_sum: ``(pred [M, ...], target [M, ...]) -> (summed loss, labelled count)``.
        metric: computed once over a whole split's predictions; ``higher_is_better`` gives the
            direction of model selection.
    """

    loss_sum: Callable[[Tensor, Tensor], LossSum]
    metric: MetricFn

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """The mean loss (NaN without labelled entries)."""
        total, count = self.loss_sum(pred, target)
        return total / count if count else total * float("nan")
