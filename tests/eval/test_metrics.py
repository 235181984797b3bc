import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from graphgt.errors import ConfigError
from graphgt.eval.metrics import MAE, RMSE, ROCAUC, Accuracy, AveragePrecision, OGBMetric, get_metric


def test_accuracy_multiclass_and_binary_logits():
    pred = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    assert Accuracy()(pred, torch.tensor([0, 1, 1, 1])) == pytest.approx(0.75)
    assert Accuracy()(torch.tensor([[1.0], [-1.0]]), torch.tensor([1, 1])) == pytest.approx(0.5)


def _multilabel(seed=0, n=200, t=3):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, t, generator=g) > 0.6).float()
    pred = y * 0.8 + torch.randn(n, t, generator=g)
    y[torch.rand(n, t, generator=g) < 0.2] = float("nan")
    return pred, y


def test_rocauc_and_ap_mask_nan_and_average_tasks_like_sklearn():
    pred, y = _multilabel()
    auc, ap = [], []
    for t in range(y.size(1)):
        v = ~torch.isnan(y[:, t])
        auc.append(roc_auc_score(y[v, t].numpy(), pred[v, t].numpy()))
        ap.append(average_precision_score(y[v, t].numpy(), pred[v, t].numpy()))
    assert ROCAUC()(pred, y) == pytest.approx(np.mean(auc), abs=1e-12)
    assert AveragePrecision()(pred, y) == pytest.approx(np.mean(ap), abs=1e-12)


def test_rocauc_skips_single_class_tasks_and_fails_when_none_left():
    pred, y = _multilabel()
    y[:, 0] = 1.0
    expected = ROCAUC()(pred[:, 1:], y[:, 1:])
    assert ROCAUC()(pred, y) == pytest.approx(expected)
    with pytest.raises(ValueError, match="both positive and negative"):
        ROCAUC()(pred[:, :1], y[:, :1])


def test_ogb_evaluator_agrees_with_our_rocauc():
    pred, y = _multilabel(t=1)
    assert OGBMetric("ogbg-molbace")(pred, y) == pytest.approx(ROCAUC()(pred, y), abs=1e-12)
    assert OGBMetric("ogbg-molbace").name == "rocauc"


def test_regression_metrics():
    pred, y = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, float("nan"), 2.0])
    assert MAE()(pred, y) == pytest.approx(1.0)
    assert RMSE()(pred, y) == pytest.approx(math.sqrt(2.0))
    assert not MAE().higher_is_better


def test_get_metric_names_and_errors():
    assert isinstance(get_metric("ap"), AveragePrecision)
    assert isinstance(get_metric("ogb:ogbg-molbbbp"), OGBMetric)
    with pytest.raises(ConfigError, match="unknown metric 'acc'"):
        get_metric("acc")
