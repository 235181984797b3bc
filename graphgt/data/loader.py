"""The in-memory loaders: mini-batches of many small graphs, and the one batch of a node-level graph.

PyG's ``DataLoader`` collates every mini-batch object by object (``Batch.from_data_list``), which
costs milliseconds per batch of small molecules, often more than the model's forward pass on
CPU.  :class:`PackedGraphs` stores the whole dataset once as concatenated tensors with per-graph
offsets (like CSR), and :class:`GraphBatchLoader` cuts a batch out of it with a handful of
vectorised gathers:

.. math::
    \\text{node\\_idx} = \\mathrm{concat}_{g \\in B}\\,[\\,\\mathrm{ptr}_g, \\mathrm{ptr}_{g+1})

Edge indices are stored relative to their graph, so re-basing them is one addition.  Batches are
``torch_geometric.data.Batch`` objects with ``x, edge_index, edge_attr, y, batch, ptr``,
``num_graphs`` and every per-node attribute (positional encodings) of the source graphs.
"""
from __future__ import annotations

import copy
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from graphgt.data.plan import check_plan, check_shard, plan_batches


def _ranges(starts: Tensor, counts: Tensor) -> Tensor:
    """Concatenation of ``arange(s, s + c)`` for every (s, c), without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long)
    offsets = torch.cumsum(counts, 0) - counts
    return torch.repeat_interleave(starts - offsets, counts) + torch.arange(total)


class PackedGraphs:
    """A list of graphs stored as concatenated tensors.

    Per-node attributes (``x``, PE tensors, node-level ``y``...) are concatenated along dim 0
    with ``node_ptr``; per-edge attributes (``edge_attr``) with ``edge_ptr``; per-graph
    attributes (graph-level ``y``) are stacked.  ``edge_index`` is stored relative to its graph.

    Shapes: ``node_ptr [G+1]``, ``edge_ptr [G+1]``, ``edge_index [2, E_total]`` (local ids).
    """

    def __init__(self, graphs: Sequence[Data]):
        if len(graphs) == 0:
            raise ValueError("PackedGraphs needs at least one graph")
        first = graphs[0]
        num_nodes = torch.tensor([int(g.num_nodes) for g in graphs])
        num_edges = torch.tensor([int(g.edge_index.size(1)) for g in graphs])
        self.node_ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(num_nodes, 0)])
        self.edge_ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(num_edges, 0)])
        self.edge_index = torch.cat([g.edge_index for g in graphs], dim=1)
        self.node_attrs: Dict[str, Tensor] = {}
        self.edge_attrs: Dict[str, Tensor] = {}
        self.graph_attrs: Dict[str, Tensor] = {}
        for key in first.keys():
            if key == "edge_index" or not isinstance(first[key], Tensor):
                continue
            values = [g[key] for g in graphs]
            if first.is_node_attr(key) and key != "y":
                self.node_attrs[key] = torch.cat(values, 0)
            elif first.is_edge_attr(key):
                self.edge_attrs[key] = torch.cat(values, 0)
            elif key == "y" and values[0].size(0) == int(first.num_nodes) and values[0].dim() >= 1 \
                    and all(v.size(0) == int(g.num_nodes) for v, g in zip(values, graphs)) and first.num_nodes != 1:
                self.node_attrs[key] = torch.cat(values, 0)
            else:
                self.graph_attrs[key] = torch.cat([v.reshape(1, *v.shape[1:]) if v.dim() else v.reshape(1)
                                                   for v in values], 0)

    def __len__(self) -> int:
        return self.node_ptr.numel() - 1

    def batch(self, index: Tensor) -> Batch:
        """The graphs ``index`` (in that order) as one disjoint-union ``Batch``."""
        index = index.long()
        n = self.node_ptr[index + 1] - self.node_ptr[index]
        e = self.edge_ptr[index + 1] - self.edge_ptr[index]
        node_idx = _ranges(self.node_ptr[index], n)
        edge_idx = _ranges(self.edge_ptr[index], e)
        new_ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(n, 0)])
        edge_index = self.edge_index[:, edge_idx] + torch.repeat_interleave(new_ptr[:-1], e)
        out = Batch(edge_index=edge_index)
        for key, value in self.node_attrs.items():
            out[key] = value[node_idx]
        for key, value in self.edge_attrs.items():
            out[key] = value[edge_idx]
        for key, value in self.graph_attrs.items():
            out[key] = value[index]
        out.batch = torch.repeat_interleave(torch.arange(index.numel()), n)
        out.ptr = new_ptr
        out._num_graphs = index.numel()
        return out


class GraphBatchLoader:
    """Iterates mini-batches of :class:`PackedGraphs` (shuffled with a seeded generator, or in order).

    Every graph appears exactly once per pass over all ranks, in batches of at most ``batch_size``
    whose sizes differ by at most one (no drop_last).  Pass ``e`` uses the order drawn from ``seed``
    and ``e`` (deterministic across runs and across ``num_workers``).  With ``num_workers > 0``
    batches are cut in worker processes (torch ``DataLoader`` with ``collate_fn=packed.batch``), in
    the same order.  ``rank`` and ``world_size`` select this DDP process's share; the plan is the
    one every loader shares (:mod:`graphgt.data.plan`).
    """

    def __init__(self, packed: PackedGraphs, batch_size: int, shuffle: bool = False, seed: int = 0,
                 indices: Optional[Tensor] = None, num_workers: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_shard(rank, world_size)
        self.packed, self.batch_size, self.shuffle, self.seed = packed, batch_size, shuffle, seed
        self.num_workers = num_workers
        self.rank, self.world_size = rank, world_size
        self.indices = torch.arange(len(packed)) if indices is None else torch.as_tensor(indices).long()
        self.epoch = 0
        self._start = 0
        if shuffle:
            check_plan(self.indices.numel(), batch_size, world_size, "graphs")
        self._len = len(self._plan(0))

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next pass is pass ``epoch`` (its shuffle), beginning at its batch ``start``."""
        if not 0 <= start <= len(self):
            raise ValueError(f"start={start} must lie in [0, {len(self)}] (batches per pass)")
        self.epoch, self._start = epoch, start

    def __len__(self) -> int:
        return self._len

    def _plan(self, epoch: int) -> List[Tensor]:
        plan = plan_batches(self.indices.numpy(), self.batch_size, self.shuffle, self.seed, epoch, self.rank,
                            self.world_size)
        return [torch.from_numpy(chunk) for chunk in plan]

    def __iter__(self) -> Iterator[Batch]:
        chunks = self._plan(self.epoch)[self._start:]
        self._start = 0
        if self.shuffle:
            self.epoch += 1
        if self.num_workers > 0 and chunks:
            from torch.utils.data import DataLoader

            yield from DataLoader(chunks, batch_size=None, collate_fn=self.packed.batch,
                                  num_workers=self.num_workers, persistent_workers=False)
        else:
            for chunk in chunks:
                yield self.packed.batch(chunk)


class FullBatchLoader:
    """The one batch of a node-level split: full-batch training and evaluation.

    Training (``shuffle=True``) over ``world_size`` DDP ranks: every rank runs the whole graph and
    rank ``r`` keeps part ``r`` of ``array_split(split nodes, world_size)`` in its ``loss_mask``, so
    the ranks' losses together cover every training node once (the one step of a single process).
    Evaluation: rank 0 yields the batch, the other ranks nothing (one forward pass computes every
    prediction; the result is the single-process one).
    """

    def __init__(self, batch: Batch, shuffle: bool, rank: int = 0, world_size: int = 1):
        check_shard(rank, world_size)
        self.shuffle, self.rank, self.world_size = shuffle, rank, world_size
        self.batch = batch
        if shuffle and world_size > 1:
            nodes = batch.loss_mask.nonzero().view(-1)
            if nodes.numel() < world_size:
                raise ValueError(f"{nodes.numel()} training nodes cannot be shared by world_size={world_size} ranks")
            mask = torch.zeros_like(batch.loss_mask)
            mask[torch.tensor_split(nodes, world_size)[rank]] = True
            self.batch = copy.copy(batch)
            self.batch.loss_mask = mask
        self._len = 1 if shuffle or rank == 0 else 0
        self._start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Full-batch passes are all alike; ``start=1`` skips the pass (a resumed, finished epoch)."""
        if not 0 <= start <= len(self):
            raise ValueError(f"start={start} must lie in [0, {len(self)}] (batches per pass)")
        self._start = start

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Batch]:
        start, self._start = self._start, 0
        return iter([self.batch][start:self._len])
