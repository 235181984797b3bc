"""The embedded default dataset: a contextual stochastic block model (CSBM), generated from a seed.

Needs no file and no network, is generated in milliseconds, and carries learnable signal in both
the node features and the graph, so a GNN beats an MLP on it and both beat chance.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch_geometric.data import Data

from graphgt.errors import ConfigError
from graphgt.data.common import NodeDataModule, Prepared
from graphgt.data.splits import RandomSplit
from graphgt.spec import DataSpec, FloatFeatures, Task


def _sample_pairs(rng: np.random.Generator, count: int, y_sorted_members: np.ndarray, class_ptr: np.ndarray,
                  y: np.ndarray, intra: bool, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """``count`` random node pairs ``(u, v)``: ``v`` in ``u``'s class (intra) or in another class."""
    n = y.size
    u = rng.integers(0, n, size=count)
    cu = y[u]
    cv = cu if intra else (cu + rng.integers(1, num_classes, size=count)) % num_classes
    size = class_ptr[cv + 1] - class_ptr[cv]
    v = y_sorted_members[class_ptr[cv] + (rng.random(count) * size).astype(np.int64)]
    return u, v


def _unique_undirected(rng: np.random.Generator, target: int, n: int, sampler) -> np.ndarray:
    """``target`` distinct unordered pairs (codes ``min*n + max``) without self loops, drawn by ``sampler``."""
    codes = np.zeros(0, dtype=np.int64)
    attempts = 0
    while codes.size < target:
        need = target - codes.size
        u, v = sampler(int(need * 1.1) + 16)
        keep = u != v
        lo, hi = np.minimum(u, v)[keep], np.maximum(u, v)[keep]
        new = np.unique(lo.astype(np.int64) * n + hi)
        new = new[~np.isin(new, codes)]
        codes = np.concatenate([codes, new[rng.permutation(new.size)][:need]])
        attempts += 1
        if attempts > 100:
            raise ConfigError(f"SyntheticCSBM: cannot place {target} distinct edges; lower avg_degree "
                              f"or raise num_nodes")
    return codes


def generate_csbm(num_nodes: int, num_classes: int, num_features: int, avg_degree: float, homophily: float,
                  feature_signal: float, seed: int) -> Data:
    """A CSBM graph.

    Labels are uniform over ``num_classes``; the graph has ``round(num_nodes * avg_degree / 2)``
    distinct undirected edges (no self loops), a fraction ``homophily`` of them joining nodes of
    the same class (edge homophily), the others joining a node to a uniformly chosen other class;
    features are ``x_i = feature_signal * mu_{y_i} + eps_i`` with ``mu_c`` random unit vectors and
    ``eps_i ~ N(0, I)``.  Fully determined by ``seed``.

    Returns:
        ``Data(x: float [N, F], edge_index: long [2, 2E] (both directions, sorted), y: long [N])``.
    """
    rng = np.random.default_rng(seed)
    n = num_nodes
    y = rng.integers(0, num_classes, size=n)
    members = np.argsort(y, kind="stable")
    class_ptr = np.concatenate([[0], np.cumsum(np.bincount(y, minlength=num_classes))])
    if (np.diff(class_ptr) == 0).any():  # an empty class: resample labels as a balanced permutation
        y = rng.permutation(np.arange(n) % num_classes)
        members = np.argsort(y, kind="stable")
        class_ptr = np.concatenate([[0], np.cumsum(np.bincount(y, minlength=num_classes))])
    num_edges = int(round(n * avg_degree / 2))
    num_intra = int(round(num_edges * homophily))
    intra = _unique_undirected(rng, num_intra, n, functools.partial(
        _sample_pairs, rng, y_sorted_members=members, class_ptr=class_ptr, y=y, intra=True, num_classes=num_classes))
    inter = _unique_undirected(rng, num_edges - num_intra, n, functools.partial(
        _sample_pairs, rng, y_sorted_members=members, class_ptr=class_ptr, y=y, intra=False, num_classes=num_classes))
    codes = np.sort(np.concatenate([intra, inter]))
    lo, hi = codes // n, codes % n
    edge_index = np.stack([np.concatenate([lo, hi]), np.concatenate([hi, lo])])
    order = np.lexsort((edge_index[1], edge_index[0]))
    edge_index = edge_index[:, order]

    means = rng.standard_normal((num_classes, num_features))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    x = feature_signal * means[y] + rng.standard_normal((n, num_features))
    return Data(x=torch.from_numpy(x.astype(np.float32)), edge_index=torch.from_numpy(edge_index.astype(np.int64)),
                y=torch.from_numpy(y.astype(np.int64)), num_nodes=n)


class SyntheticCSBM(NodeDataModule):
    """Contextual stochastic block model, node classification (the embedded default dataset).

    Args:
        num_nodes: number of nodes ``N``.
        num_classes: number of classes (and blocks).
        num_features: node feature width.
        avg_degree: expected average degree (``2E / N``).
        homophily: fraction of edges inside a class (edge homophily), in [0, 1].
        feature_signal: norm of the class means (the noise has unit variance per feature).
        seed: the generator seed (graph, features and split).
        train: fraction of nodes for training; ``val`` likewise; the rest is test.
        val: fraction of nodes for validation.
        root: unused (nothing is read); kept for a uniform interface.
        batch_size: unused (full-batch).
        num_workers: unused.
    """

    def __init__(self, num_nodes: int = 3000, num_classes: int = 5, num_features: int = 32,
                 avg_degree: float = 10.0, homophily: float = 0.8, feature_signal: float = 1.0, seed: int = 0,
                 train: float = 0.5, val: float = 0.25, root: str = "data", batch_size: int = 1,
                 num_workers: int = 0):
        super().__init__(root, batch_size, num_workers, split=RandomSplit(train, val, seed=seed))
        self.num_nodes, self.num_classes, self.num_features = int(num_nodes), int(num_classes), int(num_features)
        self.avg_degree, self.homophily, self.feature_signal = float(avg_degree), float(homophily), float(feature_signal)
        self.seed = int(seed)

    def check(self) -> None:
        """Validates the parameters (there are no files to find)."""
        self._check_common()
        if self.num_nodes < 2 or self.num_classes < 2 or self.num_features < 1:
            raise ConfigError("SyntheticCSBM: data.num_nodes and data.num_classes must be >= 2 and "
                              "data.num_features >= 1")
        if not 0.0 <= self.homophily <= 1.0:
            raise ConfigError(f"data.homophily must be in [0, 1], got {self.homophily}")
        if not 0.0 < self.avg_degree <= 0.5 * self.num_nodes / self.num_classes:
            raise ConfigError(f"data.avg_degree must be in (0, num_nodes / (2 * num_classes)] = "
                              f"(0, {0.5 * self.num_nodes / self.num_classes}], got {self.avg_degree}")

    def generate(self) -> Data:
        """The graph of these parameters (identical for the same parameters)."""
        return generate_csbm(self.num_nodes, self.num_classes, self.num_features, self.avg_degree,
                             self.homophily, self.feature_signal, self.seed)

    def prepare(self, cache_dir: Optional[Path] = None) -> Prepared:
        data = self.generate()
        spec = DataSpec(task=Task("multiclass", self.num_classes, "node", "accuracy"),
                        node_features=FloatFeatures(self.num_features), edge_features=None,
                        name=f"CSBM(n={self.num_nodes}, C={self.num_classes}, h={self.homophily}, seed={self.seed})")
        return Prepared([data], spec, split_source=data, labels=data.y)
