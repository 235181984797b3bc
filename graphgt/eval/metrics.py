"""Metrics computed on a whole split at once (predictions gathered over every batch).

All metrics take ``pred`` (raw model outputs: logits for classification, values for regression)
and ``target`` as CPU tensors and return a Python float.  Multi-label metrics follow OGB's rules:
a NaN target is a missing label and is ignored; ROC-AUC / AP are averaged over the tasks that have
both a positive and a negative label in the split (an error if none has).
"""
from __future__ import annotations

from typing import Dict, Type

import numpy as np
import torch
from torch import Tensor

from graphgt.errors import ConfigError


class Metric:
    """``metric(pred, target) -> float``; ``higher_is_better`` drives model selection."""

    name: str = "metric"
    higher_is_better: bool = True

    def __call__(self, pred: Tensor, target: Tensor) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Accuracy(Metric):
    """Top-1 accuracy. ``pred: [N, C]`` logits (or ``[N]``/``[N, 1]`` logits of a binary task)."""

    name = "accuracy"

    def __call__(self, pred: Tensor, target: Tensor) -> float:
        target = target.reshape(-1)
        if pred.dim() == 1 or pred.size(-1) == 1:
            label = (pred.reshape(-1) > 0).long()
        else:
            label = pred.argmax(dim=-1)
        return float((label == target.long()).float().mean()) if target.numel() else float("nan")


def _per_task(pred: Tensor, target: Tensor, fn) -> float:
    from sklearn.metrics import roc_auc_score  # noqa: F401  (import error surfaces early)

    pred_np = pred.detach().float().reshape(pred.size(0), -1).numpy()
    y = target.detach().float().reshape(target.size(0), -1).numpy()
    scores = []
    for t in range(y.shape[1]):
        valid = ~np.isnan(y[:, t])
        yt = y[valid, t]
        if yt.size and yt.min() != yt.max():
            scores.append(fn(yt, pred_np[valid, t]))
    if not scores:
        raise ValueError("no task has both positive and negative labels in this split; "
                         "the metric is undefined")
    return float(np.mean(scores))


class ROCAUC(Metric):
    """Mean ROC-AUC over tasks (OGB's ``rocauc``), NaN targets ignored."""

    name = "rocauc"

    def __call__(self, pred: Tensor, target: Tensor) -> float:
        from sklearn.metrics import roc_auc_score

        return _per_task(pred, target, roc_auc_score)


class AveragePrecision(Metric):
    """Mean average precision over tasks (OGB's ``ap``, LRGB Peptides-func), NaN targets ignored."""

    name = "ap"

    def __call__(self, pred: Tensor, target: Tensor) -> float:
        from sklearn.metrics import average_precision_score

        return _per_task(pred, target, average_precision_score)


class MAE(Metric):
    """Mean absolute error (lower is better), NaN targets ignored."""

    name = "mae"
    higher_is_better = False

    def __call__(self, pred: Tensor, target: Tensor) -> float:
        pred, target = pred.reshape(target.shape).float(), target.float()
        valid = ~torch.isnan(target)
        return float((pred[valid] - target[valid]).abs().mean())


class RMSE(Metric):
    """Root mean squared error (lower is better), NaN targets ignored."""

    name = "rmse"
    higher_is_better = False

    def __call__(self, pred: Tensor, target: Tensor) -> float:
        pred, target = pred.reshape(target.shape).float(), target.float()
        valid = ~torch.isnan(target)
        return float(((pred[valid] - target[valid]) ** 2).mean().sqrt())


class R2(Metric):
    """Coefficient of determination ``1 - SS_res / SS_tot`` (higher is better; 1 is perfect, 0 is the
    mean predictor), per target column over its non-NaN entries, averaged over the columns that
    have any (scikit-learn's ``r2_score``, ``multioutput="uniform_average"``; a constant column
    scores 1 if predicted exactly, else 0, as ``force_finite=True``)."""

    name = "r2"

    def __call__(self, pred: Tensor, target: Tensor) -> float:
        pred = pred.detach().double().reshape(target.size(0), -1)
        target = target.detach().double().reshape(target.size(0), -1)
        scores = []
        for p, y in zip(pred.unbind(dim=1), target.unbind(dim=1)):
            valid = ~torch.isnan(y)
            if not bool(valid.any()):
                continue
            p, y = p[valid], y[valid]
            ss_res = float(((y - p) ** 2).sum())
            ss_tot = float(((y - y.mean()) ** 2).sum())
            scores.append(1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0))
        return float(np.mean(scores)) if scores else float("nan")


class OGBMetric(Metric):
    """OGB's own ``Evaluator`` for an OGB dataset (``ogbg-*`` or ``ogbn-*``).

    The evaluator decides the metric (``evaluator.eval_metric``); classification logits are passed
    as OGB expects them (scores for rocauc/ap, argmax labels for accuracy).
    """

    def __init__(self, dataset: str):
        if dataset.startswith("ogbg-"):
            from ogb.graphproppred import Evaluator
        elif dataset.startswith("ogbn-"):
            from ogb.nodeproppred import Evaluator
        else:
            raise ConfigError(f"OGBMetric: '{dataset}' is not an ogbg-/ogbn- dataset name")
        self.dataset = dataset
        self._evaluator = Evaluator(dataset)
        self.name = self._evaluator.eval_metric
        self.higher_is_better = self.name not in ("mae", "rmse")

    def __call__(self, pred: Tensor, target: Tensor) -> float:
        pred = pred.detach().float()
        if self.name == "acc":
            y_pred = pred.argmax(-1, keepdim=True) if pred.size(-1) > 1 else (pred > 0).long()
            y_true = target.reshape(-1, 1)
        else:
            y_pred = pred.reshape(pred.size(0), -1)
            y_true = target.reshape(target.size(0), -1)
        out = self._evaluator.eval({"y_true": y_true.numpy(), "y_pred": y_pred.numpy()})
        return float(out[self.name])

    def __repr__(self) -> str:
        return f"OGBMetric({self.dataset!r}, metric={self.name!r})"


METRICS: Dict[str, Type[Metric]] = {cls.name: cls for cls in (Accuracy, ROCAUC, AveragePrecision, MAE, RMSE, R2)}


def get_metric(name: str) -> Metric:
    """Metric by name (``accuracy``, ``rocauc``, ``ap``, ``mae``, ``rmse``, ``r2``) or ``ogb:<dataset>``."""
    if name.startswith("ogb:"):
        return OGBMetric(name[4:])
    try:
        return METRICS[name]()
    except KeyError:
        raise ConfigError(f"unknown metric '{name}'; choose one of {sorted(METRICS)} or 'ogb:<dataset-name>'") from None
