"""The batch plan: which items each batch of a pass holds, on each DDP rank.

One plan serves every mini-batch loader (:class:`~graphgt.data.loader.GraphBatchLoader` over
whole graphs, :class:`~graphgt.data.sampling.NodeLoader` over sampled seed nodes), so both follow
the same rules.  For pass ``e`` over ``n`` items, ``W = world_size`` ranks and ``b`` items per rank
and batch:

Shuffled passes (training) split every *global* batch across the ranks::

    order       = items[perm(seed, e)]              a permutation drawn from (seed, e) only
    T           = ceil(n / (W * b))                 steps per pass, the same on every rank
    G_i         = array_split(order, T)[i]          global batch i: sizes differ by at most one
    batch_{r,i} = array_split(G_i, W)[r]            rank r's part of step i (at most b items)

so the ranks' step-``i`` batches together are exactly batch ``i`` of one process with batch size
``W * b``, every item is used once per pass, every rank runs the same number of steps (DDP's
collectives never wait on a rank that ran out of data), and no batch is much smaller than the
others (no tiny last batch for BatchNorm).

Ordered passes (evaluation) deal the single-process batches ``array_split(items, ceil(n / b))``
round-robin: rank ``r`` gets batches ``r, r + W, r + 2W, ...``, so every evaluation batch, and
its prediction, is the one a single process computes.
"""
from __future__ import annotations

from typing import List

import numpy as np


def check_shard(rank: int, world_size: int) -> None:
    """``ValueError`` unless ``0 <= rank < world_size`` and ``world_size >= 1``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must lie in [0, world_size={world_size}) with world_size >= 1")


def num_batches(num_items: int, batch_size: int, world_size: int = 1) -> int:
    """Steps of a shuffled pass (every rank): ``ceil(num_items / (world_size * batch_size))``."""
    return -(-num_items // (world_size * batch_size))


def num_eval_batches(num_items: int, batch_size: int, rank: int = 0, world_size: int = 1) -> int:
    """Batches of rank ``rank`` in an ordered pass: its round-robin share of ``ceil(num_items / batch_size)``."""
    return len(range(rank, num_batches(num_items, batch_size), world_size))


def check_plan(num_items: int, batch_size: int, world_size: int, what: str = "items") -> None:
    """``ValueError`` when a shuffled pass would leave some rank an empty batch."""
    t = num_batches(num_items, batch_size, world_size)
    if num_items == 0 or num_items // t < world_size:
        raise ValueError(f"{num_items} {what} over world_size={world_size} ranks with batch_size={batch_size} would "
                         f"leave some rank an empty batch (the smallest of the {t} global batches has "
                         f"{num_items // max(t, 1)} {what} for the ranks to share); raise batch_size or lower "
                         "world_size")


def epoch_order(items: np.ndarray, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The items in the order of pass ``epoch``: a permutation drawn from ``(seed, epoch)``, or as given."""
    if not shuffle:
        return items
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)])))
    return items[rng.permutation(items.shape[0])]


def plan_batches(items: np.ndarray, batch_size: int, shuffle: bool, seed: int, epoch: int,
                 rank: int = 0, world_size: int = 1) -> List[np.ndarray]:
    """The item batches of ``rank`` in pass ``epoch`` (module docstring)."""
    if not shuffle:
        return np.array_split(items, num_batches(items.shape[0], batch_size))[rank::world_size]
    order = epoch_order(items, seed, epoch, shuffle)
    steps = np.array_split(order, num_batches(items.shape[0], batch_size, world_size))
    return [np.array_split(step, world_size)[rank] for step in steps]


__all__ = ["check_shard", "check_plan", "num_batches", "num_eval_batches", "epoch_order", "plan_batches"]
