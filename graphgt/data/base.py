"""The data-module protocol.

The training loop never looks at a dataset's name: everything dataset-specific (how to read it,
how to split it, how its raw features look, which task and metric apply) is answered by the data
module, through the plain descriptions of :mod:`graphgt.spec` (a :class:`~graphgt.spec.DataSpec`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import torch

from graphgt.pe.base import PositionalEncoding
from graphgt.spec import DataSpec


class DataModule:
    """Protocol of data modules (one class per source, built by Hydra from ``configs/data/*.yaml``).

    Life cycle: ``check()`` (cheap, before any compute: files present? raises ``ConfigError``),
    ``load(cache_dir) -> DataSpec`` (read or generate the data, so that combinations can be
    validated against the spec before anything expensive), ``setup(pes, cache_dir)`` (split,
    compute and cache positional encodings), ``place(device)`` (the trainer says where batches are
    consumed; a module may keep its arrays there), then ``spec`` and the three loaders.  Node-level loaders yield batches that carry a boolean
    ``loss_mask`` (which node outputs belong to the split); graph-level batches count every graph.

    Loaders have ``len()`` and ``set_epoch(epoch, start=0)`` (the next pass is pass ``epoch`` of the
    shuffle, beginning at batch ``start``: how a resumed run continues mid-epoch).  Under DDP with
    ``world_size`` ranks, the training loader of rank ``r`` yields its part of every global batch
    (the same number of steps on every rank; the ranks' parts of step ``i`` are together the batch
    ``i`` of one process whose batch is ``world_size`` times larger, every item once per epoch), and
    evaluation loaders deal the single-process batches round-robin: rank ``r`` yields batches
    ``r, r + world_size, ...`` of the single-process order, so the trainer can reassemble exactly the
    single-process predictions.
    """

    def check(self) -> None:
        """Fail fast (``ConfigError``) when the data cannot be found or the settings are inconsistent."""

    def load(self, cache_dir: Path) -> DataSpec:  # pragma: no cover
        raise NotImplementedError

    def setup(self, pes: Sequence[PositionalEncoding], cache_dir: Path) -> None:  # pragma: no cover
        raise NotImplementedError

    def place(self, device: torch.device) -> None:
        """The device the trainer consumes batches on (called before the loaders are asked for).  The
        default ignores it: batches stay on the host and the trainer copies them
        (:class:`~graphgt.data.prefetch.DevicePrefetcher`)."""

    @property
    def spec(self) -> DataSpec:  # pragma: no cover
        raise NotImplementedError

    def train_loader(self, seed: int, rank: int = 0, world_size: int = 1) -> Iterable:  # pragma: no cover
        raise NotImplementedError

    def val_loader(self, rank: int = 0, world_size: int = 1) -> Iterable:  # pragma: no cover
        raise NotImplementedError

    def test_loader(self, rank: int = 0, world_size: int = 1) -> Iterable:  # pragma: no cover
        raise NotImplementedError
