"""The loss of each task kind, and the trainer's objective (a loss and a metric).

The composition root (:mod:`graphgt.app`) builds the :class:`Objective` of a run from the dataset's
:class:`~graphgt.spec.Task`: :func:`loss_for` maps its ``kind`` (and, for regression, the ``loss``
key: ``l1 | mse | huber | auto``, ``auto`` chosen by the metric) to a loss, and
:func:`graphgt.eval.get_metric` its ``metric`` name to a metric.  For regression the objective may
also hold a :class:`TargetScale` (mean and std per target column of the training split,
:func:`training_targets`): the model learns standardised targets, and :meth:`Objective.predictions`
maps its outputs back to the original units before any metric.

Each loss is computed as a ``(sum, count)`` pair: the summed loss over the labelled entries and
how many there are.  The trainer divides by the count over *all* DDP ranks, so that a step over
``W`` ranks optimises exactly the mean loss of the union of their batches (the single-process
loss of the global batch), whatever the ranks' batch sizes and missing labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Protocol, Tuple

import torch
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


def masked_mse_loss_sum(pred: Tensor, target: Tensor) -> LossSum:
    """Summed squared error over non-NaN targets."""
    target = target.reshape(pred.shape).float()
    valid = ~target.isnan()
    return ((pred[valid] - target[valid]) ** 2).sum(), int(valid.sum())


class MaskedHuberLossSum:
    """Summed Huber loss (``torch.nn.functional.huber_loss`` with ``delta``) over non-NaN targets:
    quadratic for errors up to ``delta``, linear beyond."""

    def __init__(self, delta: float = 1.0):
        if not (isinstance(delta, (int, float)) and not isinstance(delta, bool) and delta > 0):
            raise ValueError(f"huber_delta must be a number > 0, got {delta!r}")
        self.delta = float(delta)
        self.__name__ = "masked_huber_loss_sum"

    def __call__(self, pred: Tensor, target: Tensor) -> LossSum:
        target = target.reshape(pred.shape).float()
        valid = ~target.isnan()
        return F.huber_loss(pred[valid], target[valid], reduction="sum", delta=self.delta), int(valid.sum())

    def __repr__(self) -> str:
        return f"MaskedHuberLossSum(delta={self.delta})"


LOSS_SUMS: Dict[str, Callable[[Tensor, Tensor], LossSum]] = {
    "multiclass": multiclass_loss_sum,
    "binary": masked_bce_loss_sum,
    "multilabel": masked_bce_loss_sum,
    "regression": masked_l1_loss_sum,
}

#: the regression losses ``loss=`` chooses from (``auto``: :func:`auto_regression_loss`)
REGRESSION_LOSSES = ("l1", "mse", "huber")
#: every value of the ``loss`` key
LOSS_NAMES = ("auto",) + REGRESSION_LOSSES
#: what each classification kind trains with (named in the error for ``loss=<regression loss>``)
CLASSIFICATION_LOSSES = {"multiclass": "cross-entropy", "binary": "binary cross-entropy (NaN labels masked)",
                         "multilabel": "binary cross-entropy per label (NaN labels masked)"}
#: metric name -> the regression loss ``loss=auto`` trains with (any other metric: ``mse``)
AUTO_REGRESSION_LOSS = {"mae": "l1", "rmse": "mse", "r2": "mse"}


def auto_regression_loss(metric_name: str) -> str:
    """The loss ``loss=auto`` picks for a regression metric: ``l1`` for MAE, ``mse`` for RMSE, R2 and
    anything else (the loss whose minimiser is what the metric rewards)."""
    return AUTO_REGRESSION_LOSS.get(metric_name, "mse")


def regression_loss_sum(name: str, huber_delta: Optional[float] = None) -> Callable[[Tensor, Tensor], LossSum]:
    """The ``(sum, count)`` regression loss ``l1``, ``mse`` or ``huber`` (``huber_delta``, default 1.0)."""
    if name not in REGRESSION_LOSSES:
        raise ValueError(f"loss={name!r} is not a regression loss; choose one of {', '.join(LOSS_NAMES)}")
    if huber_delta is not None and name != "huber":
        raise ValueError(f"huber_delta={huber_delta} applies to loss=huber only (loss={name}); remove huber_delta")
    if name == "l1":
        return masked_l1_loss_sum
    if name == "mse":
        return masked_mse_loss_sum
    return MaskedHuberLossSum(1.0 if huber_delta is None else huber_delta)


def describe_loss(loss_sum: Callable[[Tensor, Tensor], LossSum]) -> str:
    """A loss's short name for ``results.json``: ``cross_entropy``, ``bce``, ``l1``, ``mse``, ``huber(delta=1.0)``."""
    if isinstance(loss_sum, MaskedHuberLossSum):
        return f"huber(delta={loss_sum.delta:g})"
    names = {multiclass_loss_sum: "cross_entropy", masked_bce_loss_sum: "bce", masked_l1_loss_sum: "l1",
             masked_mse_loss_sum: "mse"}
    return names.get(loss_sum, getattr(loss_sum, "__name__", repr(loss_sum)))


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
masked_mse_loss = _mean(masked_mse_loss_sum)

LOSSES: Dict[str, Callable[[Tensor, Tensor], Tensor]] = {kind: _mean(fn) for kind, fn in LOSS_SUMS.items()}


def loss_for(kind: str, loss: Optional[str] = None, metric: Optional[str] = None,
             huber_delta: Optional[float] = None) -> Callable[[Tensor, Tensor], LossSum]:
    """The ``(sum, count)`` loss of a task kind (``multiclass``, ``binary``, ``multilabel``, ``regression``).

    ``loss`` (the config key) chooses the regression loss: ``l1``, ``mse``, ``huber`` (with
    ``huber_delta``) or ``auto`` (by the task's ``metric`` name: :func:`auto_regression_loss`);
    ``None`` keeps the loss of a run recorded before the key existed (L1).  Classification kinds
    have one loss each: a regression loss for them is refused, naming the kind's loss.
    """
    if kind not in LOSS_SUMS:
        raise ValueError(f"no loss for task kind {kind!r}; known kinds: {sorted(LOSS_SUMS)}")
    if loss is not None and loss not in LOSS_NAMES:
        raise ValueError(f"loss={loss!r} is not a loss; choose one of {', '.join(LOSS_NAMES)}")
    if kind != "regression":
        if loss not in (None, "auto"):
            raise ValueError(f"loss={loss} applies to regression tasks only; this is a {kind} task, trained with "
                             f"{CLASSIFICATION_LOSSES[kind]}; remove loss={loss} (or set loss=auto)")
        if huber_delta is not None:
            raise ValueError(f"huber_delta={huber_delta} applies to loss=huber on regression tasks only; this is a "
                             f"{kind} task; remove huber_delta")
        return LOSS_SUMS[kind]
    if loss is None:
        return regression_loss_sum("l1", huber_delta)
    name = auto_regression_loss(metric or "") if loss == "auto" else loss
    if loss == "auto" and huber_delta is not None:
        raise ValueError(f"huber_delta={huber_delta} applies to loss=huber only (loss=auto picks {name} for "
                         f"metric {metric!r}); set loss=huber or remove huber_delta")
    return regression_loss_sum(name, huber_delta)


@dataclass(frozen=True)
class TargetScale:
    """Per-column mean and standard deviation of the regression targets (training split, NaN ignored).

    The model learns ``(target - mean) / std``; its outputs map back with ``pred * std + mean``.
    """

    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    @classmethod
    def fit(cls, targets: Tensor) -> "TargetScale":
        """From training targets ``[M]`` or ``[M, T]``: per column mean and population std over the
        non-NaN entries, in float64.  A column without a labelled entry gets ``(0, 1)``; a constant
        column (std 0) gets std 1 (as scikit-learn's ``StandardScaler``)."""
        y = targets.detach().to(torch.float64).cpu()
        y = y.reshape(y.size(0), -1) if y.dim() else y.reshape(1, 1)
        means, stds = [], []
        for column in y.unbind(dim=1):
            values = column[~column.isnan()]
            if values.numel() == 0:
                means.append(0.0), stds.append(1.0)
                continue
            mean = float(values.mean())
            std = float(((values - mean) ** 2).mean().sqrt())
            means.append(mean), stds.append(std if std > 0 else 1.0)
        return cls(tuple(means), tuple(stds))

    def _columns(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        flat = x.reshape(x.size(0), -1) if x.dim() else x.reshape(1, 1)
        if flat.size(1) != len(self.mean):
            raise ValueError(f"target standardisation holds {len(self.mean)} target column(s) but got a tensor of "
                             f"shape {tuple(x.shape)}")
        mean = torch.tensor(self.mean, dtype=flat.dtype, device=flat.device)
        std = torch.tensor(self.std, dtype=flat.dtype, device=flat.device)
        return flat, mean, std

    def standardize(self, target: Tensor) -> Tensor:
        """``(target - mean) / std`` per column (NaN stays NaN), in ``target``'s shape (as float)."""
        flat, mean, std = self._columns(target.float())
        return ((flat - mean) / std).reshape(target.shape)

    def restore(self, pred: Tensor) -> Tensor:
        """``pred * std + mean`` per column: model outputs in the targets' original units."""
        flat, mean, std = self._columns(pred)
        return (flat * std + mean).reshape(pred.shape)

    def as_dict(self) -> Dict[str, list]:
        return {"mean": list(self.mean), "std": list(self.std)}


def training_targets(data: Any, seed: int) -> Tensor:
    """The regression targets of the training split of a set-up data module, ``[M, T]`` (NaN kept).

    * a store-backed module (``data.store`` with ``y`` and ``split``): ``store.y`` at
      ``store.split("train")``, read from the memory-mapped arrays (no sampling);
    * any other module: one pass over ``data.train_loader(seed)`` (single process), keeping the
      targets of each batch that count (:func:`graphgt.train.loop.select`: ``loss_mask`` of a
      node-level batch, every graph of a graph-level one).  In-memory node data is one batch; graph
      data is one collation pass over the training graphs, without a forward pass.
    The result depends only on the data and the split (the order of the rows does not change the
    statistics), so a resumed run and ``graphgt eval`` recompute the same statistics.
    """
    store = getattr(data, "store", None)
    if store is not None and callable(getattr(store, "split", None)) and hasattr(store, "y"):
        import numpy as np

        ids = np.sort(np.asarray(store.split("train")))
        y = torch.from_numpy(np.asarray(store.y[ids], dtype=np.float64))
        return y.reshape(y.size(0), -1)
    from graphgt.train.loop import select

    parts = []
    for batch in data.train_loader(seed, 0, 1):
        mask = getattr(batch, "loss_mask", None)
        y = batch.y if mask is None else select(batch.y, batch)[1]
        parts.append(y.detach().to(torch.float64).cpu().reshape(y.size(0), -1))
    if not parts:
        raise ValueError("target standardisation: the training split yields no batch; set target_standardize=false")
    return torch.cat(parts)


class MetricFn(Protocol):
    """What the trainer needs of a metric (:class:`graphgt.eval.Metric` is one)."""

    name: str
    higher_is_better: bool

    def __call__(self, pred: Tensor, target: Tensor) -> float: ...


@dataclass(frozen=True)
class Objective:
    """What the trainer minimises (``loss_sum``) and selects the best epoch by (``metric``).

    Attributes:
        criterion: ``(pred [M, ...], target [M, ...]) -> (summed loss, labelled count)`` in the
            units the model learns (standardised targets when ``scale`` is set).
        metric: computed once over a whole split's predictions *in the targets' original units*
            (:meth:`predictions`); ``higher_is_better`` gives the direction of model selection.
        scale: regression target standardisation (:class:`TargetScale`), or None.
    """

    criterion: Callable[[Tensor, Tensor], LossSum]
    metric: MetricFn
    scale: Optional[TargetScale] = None

    def loss_sum(self, pred: Tensor, target: Tensor) -> LossSum:
        """The criterion on raw model outputs and targets in original units (standardised here)."""
        if self.scale is not None:
            target = self.scale.standardize(target)
        return self.criterion(pred, target)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """The mean loss (NaN without labelled entries), in the units the model learns."""
        total, count = self.loss_sum(pred, target)
        return total / count if count else total * float("nan")

    def predictions(self, pred: Tensor) -> Tensor:
        """Raw model outputs in the targets' original units (unchanged without ``scale``)."""
        return pred if self.scale is None else self.scale.restore(pred)

    def score(self, pred: Tensor, target: Tensor) -> float:
        """The metric of raw model outputs (mapped back to original units first)."""
        return float(self.metric(self.predictions(pred), target))
