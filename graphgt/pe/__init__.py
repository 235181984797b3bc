"""Positional and structural encodings: computed once per graph (cached), encoded at train time.

- :class:`LaplacianPE` -> ``lap_vec``, ``lap_val`` ``[N, k]``; encoders :class:`LapLinearEncoder`,
  :class:`LapDeepSetEncoder`, :class:`LapSignNetEncoder`.
- :class:`RandomWalkSE` -> ``rwse`` ``[N, steps]``; encoder :class:`LinearPEEncoder`.
- :class:`RandomWalkSEEstimator` -> ``rwse`` for huge graphs: probe estimator with a per-entry bound.
- :func:`attach_pes` computes (or loads) them for a list of graphs.

Computing an encoding into a graph store is the store's job (:func:`graphgt.data.store.compute_store_pe`
calls these classes); nothing here imports :mod:`graphgt.data`.
"""
from graphgt.pe.base import PositionalEncoding
from graphgt.pe.cache import attach_pes, compute_cached
from graphgt.pe.degree import DegreePE
from graphgt.pe.encoders import (
    LapDeepSetEncoder,
    LapLinearEncoder,
    LapSignNetEncoder,
    LinearPEEncoder,
    TrainingRange,
    random_sign_flip,
)
from graphgt.pe.laplacian import LaplacianPE
from graphgt.pe.random_walk import RandomWalkSE
from graphgt.pe.rw_estimator import RandomWalkSEEstimator

__all__ = [
    "PositionalEncoding",
    "LaplacianPE",
    "RandomWalkSE",
    "RandomWalkSEEstimator",
    "DegreePE",
    "attach_pes",
    "compute_cached",
    "LinearPEEncoder",
    "TrainingRange",
    "LapLinearEncoder",
    "LapDeepSetEncoder",
    "LapSignNetEncoder",
    "random_sign_flip",
]
