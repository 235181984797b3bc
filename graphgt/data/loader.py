"""A fast loader for datasets of many small graphs.

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

from typing import Dict, Iterator, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data


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

    Every graph appears exactly once per pass; the last batch may be smaller (no drop_last).
    Pass ``e`` uses the order drawn from ``seed`` and ``e`` (deterministic across runs and
    across ``num_workers``).  With ``num_workers > 0`` batches are cut in worker processes
    (torch ``DataLoader`` with ``collate_fn=packed.batch``), in the same order.
    """

    def __init__(self, packed: PackedGraphs, batch_size: int, shuffle: bool = False, seed: int = 0,
                 indices: Optional[Tensor] = None, num_workers: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.packed, self.batch_size, self.shuffle, self.seed = packed, batch_size, shuffle, seed
        self.num_workers = num_workers
        self.indices = torch.arange(len(packed)) if indices is None else torch.as_tensor(indices).long()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.indices.numel() + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        order = self.indices
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = order[torch.randperm(order.numel(), generator=g)]
            self.epoch += 1
        chunks = list(order.split(self.batch_size))
        if self.num_workers > 0:
            from torch.utils.data import DataLoader

            yield from DataLoader(chunks, batch_size=None, collate_fn=self.packed.batch,
                                  num_workers=self.num_workers, persistent_workers=False)
        else:
            for chunk in chunks:
                yield self.packed.batch(chunk)
