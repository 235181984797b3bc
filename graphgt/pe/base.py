"""The positional/structural-encoding protocol.

A :class:`PositionalEncoding` computes, once per graph, per-node tensors that it stores as
attributes of the PyG ``Data`` object (``keys`` names them, first dimension = nodes, so PyG's
batching concatenates them).  It is applied as a pre-transform and cached on disk (``pe/cache.py``)
under a key of the data and of :meth:`cache_key`.  A matching encoder (``pe/encoders.py``) turns
the stored tensors of a batch into ``Tensor[N, out_dim]`` features at train time.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch
from torch import Tensor


def edge_index_numpy(edge_index: Tensor, num_nodes: int) -> np.ndarray:
    """``edge_index`` as an int64 numpy ``[2, E]`` array, checked against ``num_nodes``."""
    ei = edge_index.detach().to("cpu", torch.int64).numpy()
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {tuple(ei.shape)}")
    if ei.size and (ei.min() < 0 or ei.max() >= num_nodes):
        raise ValueError(f"edge_index holds node ids outside [0, num_nodes={num_nodes}); "
                         "pass the graph's true num_nodes")
    return ei


class PositionalEncoding:
    """Base class: ``compute(edge_index, num_nodes) -> {key: Tensor[num_nodes, ...]}``."""

    #: names of the Data attributes written by :meth:`compute`
    keys: Tuple[str, ...] = ()

    def compute(self, edge_index: Tensor, num_nodes: int) -> Dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError

    @property
    def in_dim(self) -> int:  # pragma: no cover - abstract
        """Feature width that the encoder receives per node (e.g. ``k`` for RWSE)."""
        raise NotImplementedError

    def cache_key(self) -> str:
        """A string that changes whenever the computed values would change (class + parameters)."""
        params = ",".join(f"{k}={v!r}" for k, v in sorted(vars(self).items()) if not k.startswith("_"))
        return f"{type(self).__name__}({params})"

    def __call__(self, data):
        """Pre-transform form: write the encodings onto ``data`` and return it."""
        for key, value in self.compute(data.edge_index, data.num_nodes).items():
            data[key] = value
        return data

    def __repr__(self) -> str:
        return self.cache_key()
