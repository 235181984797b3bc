"""Evaluation: metrics computed over a whole split (:mod:`graphgt.eval.metrics`) and the OGB-style
report over finished runs (:mod:`graphgt.eval.report`, imported on demand by the CLI)."""
from graphgt.eval.metrics import MAE, METRICS, RMSE, ROCAUC, Accuracy, AveragePrecision, Metric, OGBMetric, get_metric

__all__ = ["Metric", "Accuracy", "ROCAUC", "AveragePrecision", "MAE", "RMSE", "OGBMetric", "METRICS", "get_metric"]
