"""Evaluation: metrics computed over a whole split (:mod:`graphgt.eval.metrics`) and the OGB-style
report over finished runs (:mod:`graphgt.eval.report`, imported on demand by the CLI).

The metric names are loaded on first use (PEP 562 ``__getattr__``): ``graphgt report`` imports
:mod:`graphgt.eval.report`, which needs no torch, and must not pay for :mod:`graphgt.eval.metrics`.
"""
from typing import Any

__all__ = ["Metric", "Accuracy", "ROCAUC", "AveragePrecision", "MAE", "RMSE", "OGBMetric", "METRICS", "get_metric"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from graphgt.eval import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module 'graphgt.eval' has no attribute '{name}'")
