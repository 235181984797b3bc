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


def test_r2_matches_sklearn():
    from sklearn.metrics import r2_score

    from graphgt.eval.metrics import R2

    g = torch.Generator().manual_seed(0)
    y = torch.randn(50, 3, generator=g) * torch.tensor([1.0, 10.0, 100.0]) + 7
    pred = y + torch.randn(50, 3, generator=g) * torch.tensor([0.5, 8.0, 10.0])
    expected = r2_score(y.numpy(), pred.numpy())  # uniform average over the columns
    assert R2()(pred, y) == pytest.approx(expected, rel=1e-5)
    assert 0.3 < expected < 0.95  # a real mix of good and poor columns, not a trivial 0 or 1
    # one column: [N] targets with [N, 1] predictions; NaN targets dropped per column
    assert R2()(pred[:, :1], y[:, 0]) == pytest.approx(r2_score(y[:, 0].numpy(), pred[:, 0].numpy()), rel=1e-5)
    masked = y.clone()
    masked[:10, 1] = float("nan")
    per_column = [r2_score(y[:, 0].numpy(), pred[:, 0].numpy()), r2_score(y[10:, 1].numpy(), pred[10:, 1].numpy()),
                  r2_score(y[:, 2].numpy(), pred[:, 2].numpy())]
    assert R2()(pred, masked) == pytest.approx(float(np.mean(per_column)), rel=1e-5)
    # the mean predictor scores 0, a worse one below 0; a constant target column as sklearn's force_finite
    assert R2()(y.mean(0).expand(50, 3), y) == pytest.approx(0.0, abs=1e-6)
    assert R2()(-y, y) < -1
    assert R2()(torch.tensor([2.0, 2.0]), torch.tensor([2.0, 2.0])) == 1.0
    assert R2()(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 2.0])) == 0.0
    assert get_metric("r2").higher_is_better and get_metric("r2").name == "r2"
