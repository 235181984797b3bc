"""Node-level mini-batches of a (possibly memory-mapped) graph store, from a neighbour sample.

:class:`NodeLoader` cuts the seed nodes of a split into batches, samples each batch's
neighbourhood (:class:`NeighborSampler` or :class:`TokenSampler`), gathers the rows of the
store's features, labels and positional encodings, and yields PyG ``Data`` objects that the
trainer consumes like any other batch (``batch.y[batch.loss_mask]`` are the outputs that count).

The batch plan (which seeds each batch of a pass holds on each DDP rank) is the one every
loader shares, :mod:`graphgt.data.plan`.

Batch ``i`` of rank ``r`` is sampled with the seed ``mix(seed, e, i * W + r)`` in training and
``mix(seed, 0, g)`` for evaluation batch ``g`` of the single-process plan: a batch depends only on
``(seed, e, r, i)``, never on which process builds it, so 0, 1 or 2 worker processes give identical
batches, and evaluation over ``W`` ranks samples exactly what one process samples.  Evaluation uses
``e = 0``: every pass over a validation split sees the same sampled neighbourhoods, so scores of
different epochs are comparable.

Worker processes are a ``torch.utils.data.DataLoader`` over "batch keys" ``(e, i)``: a worker
derives the plan of pass ``e`` itself (once per pass) from the same seeds, so nothing but the
key travels to it, and the workers can persist across passes.
"""
from __future__ import annotations

import weakref
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch_geometric.data import Data

from graphgt.data.plan import check_plan, check_shard, num_batches, num_eval_batches, plan_batches
from graphgt.data.sampling.kernels import mix_seed
from graphgt.data.sampling.largegt import TokenBatch, TokenSampler
from graphgt.data.sampling.neighbor import NeighborSampler, SampledSubgraph, check_seeds
from graphgt.data.store.core import GraphStore
from graphgt.pages import release_pages

Sampler = Union[NeighborSampler, TokenSampler]


# --------------------------------------------------------------------------- gathering
def _rows(arr: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``arr[ids]`` along axis 0 (a plain-ndarray copy, also from a memory map)."""
    return np.take(np.asarray(arr), ids, axis=0)


def _float_tensor(rows: np.ndarray) -> torch.Tensor:
    """float32 tensor of gathered rows (fp16 is converted by torch, much faster than numpy's cast)."""
    t = torch.from_numpy(np.ascontiguousarray(rows))
    return t if t.dtype == torch.float32 else t.to(torch.float32)


def _labels(y: np.ndarray, ids: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    """(labels of ``ids``, whether each is labelled): int -> long with -1 kept; float -> float32, NaN = missing."""
    rows = _rows(y, ids)
    if np.issubdtype(rows.dtype, np.integer):
        labelled = rows >= 0
        if labelled.ndim > 1:
            labelled = labelled.any(axis=tuple(range(1, labelled.ndim)))
        return torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(labelled)
    vals = rows.astype(np.float32, copy=False)
    finite = ~np.isnan(vals)
    labelled = finite.any(axis=tuple(range(1, finite.ndim))) if finite.ndim > 1 else finite
    return torch.from_numpy(np.ascontiguousarray(vals)), torch.from_numpy(labelled)


def neighbor_batch(store: GraphStore, sub: SampledSubgraph, pe_keys: Sequence[str] = ()) -> Data:
    """A ``Data`` of a neighbour sample with the store's rows gathered (see :class:`NodeLoader`)."""
    ids = sub.node_ids
    n, b = ids.shape[0], sub.num_seeds
    data = Data(x=_float_tensor(_rows(store.x, ids)), edge_index=torch.from_numpy(sub.edge_index))
    if store.has("y"):
        y, labelled = _labels(store.y, ids)
        loss_mask = torch.zeros(n, dtype=torch.bool)
        loss_mask[:b] = labelled[:b]
        data.y, data.loss_mask = y, loss_mask
    pes = store.pe() if pe_keys else {}
    for key in pe_keys:
        data[key] = _float_tensor(_rows(pes[key], ids))
    data.n_id = torch.from_numpy(ids)
    data.batch = torch.zeros(n, dtype=torch.long)
    data.ptr = torch.tensor([0, n], dtype=torch.long)
    data.num_graphs = 1
    data.num_seeds = b
    data.num_sampled_nodes = sub.num_sampled_nodes.tolist()
    data.num_sampled_edges = sub.num_sampled_edges.tolist()
    return data


def token_batch(store: GraphStore, tb: TokenBatch, pe_keys: Sequence[str] = (), hop_features: int = 0) -> Data:
    """A ``Data`` of a token sample: ``B`` seeds, each with a sequence of ``K`` tokens.

    Attributes: ``x [B, F]`` seed features, ``token_x [B, K, F]`` token features, ``token_ids``,
    ``token_hop`` (long; 0 seed, 1, 2, -1 padding) and ``token_mask`` ``[B, K]``, ``y`` and
    ``loss_mask`` of the seeds ``[B]``, ``n_id [B]``, ``num_seeds``; per PE key ``<key> [B, d]``
    and ``token_<key> [B, K, d]``; with ``hop_features = P > 0``, ``token_xhop [B, K, P, F]`` the
    tokens' propagated features ``extra/x_hop1..P`` (:mod:`graphgt.data.store.hop_features`).
    """
    b, k = tb.tokens.shape
    flat = tb.tokens.reshape(-1)
    x = store.x
    data = Data(x=_float_tensor(_rows(x, tb.seeds)),
                token_x=_float_tensor(_rows(x, flat)).reshape(b, k, -1))
    if hop_features:
        from graphgt.data.store.hop_features import hop_key

        data.token_xhop = torch.stack([_float_tensor(_rows(store.array(hop_key(p)), flat)).reshape(b, k, -1)
                                       for p in range(1, hop_features + 1)], dim=2)
    data.token_ids = torch.from_numpy(tb.tokens)
    data.token_hop = torch.from_numpy(tb.hop.astype(np.int64))
    data.token_mask = torch.from_numpy(tb.mask)
    if store.has("y"):
        data.y, data.loss_mask = _labels(store.y, tb.seeds)
    pes = store.pe() if pe_keys else {}
    for key in pe_keys:
        data[key] = _float_tensor(_rows(pes[key], tb.seeds))
        data[f"token_{key}"] = _float_tensor(_rows(pes[key], flat)).reshape(b, k, -1)
    data.n_id = torch.from_numpy(np.array(tb.seeds))
    data.num_seeds = b
    return data


# --------------------------------------------------------------------------- the per-process builder
class _BatchBuilder(torch.utils.data.Dataset):
    """Samples batch ``(epoch, i)`` of one rank (``__getitem__``, in a worker or in the main process)
    and turns a sample into a ``Data`` by gathering the store's rows (:meth:`build`, in the main
    process: a sample is a few MB, its gathered features tens of MB, which would cost more to ship
    between processes than to gather)."""

    def __init__(self, store: GraphStore, seeds: np.ndarray, sampler: Sampler, batch_size: int, shuffle: bool,
                 seed: int, rank: int, world_size: int, pe_keys: Tuple[str, ...], release_every: int,
                 hop_features: int = 0):
        self.store, self.seeds, self.sampler = store, seeds, sampler
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.pe_keys, self.release_every = pe_keys, release_every
        self.hop_features = hop_features
        self._plan: Optional[Tuple[int, List[np.ndarray]]] = None
        self._sampled = 0
        self._built = 0

    def plan(self, epoch: int) -> List[np.ndarray]:
        if self._plan is None or self._plan[0] != epoch:
            self._plan = (epoch, plan_batches(self.seeds, self.batch_size, self.shuffle, self.seed, epoch,
                                              self.rank, self.world_size))
        return self._plan[1]

    def batch_seed(self, epoch: int, i: int) -> int:
        """Train: ``i * W + r``; evaluation: the global batch number ``r + i * W`` (the same value)."""
        return mix_seed(self.seed, epoch if self.shuffle else 0, i * self.world_size + self.rank)

    def __getitem__(self, key: Tuple[int, int]) -> Union[SampledSubgraph, TokenBatch]:
        epoch, i = key
        out = self.sampler.sample(self.plan(epoch)[i], self.batch_seed(epoch, i))
        self._sampled += 1
        if self.release_every and self._sampled % self.release_every == 0 \
                and torch.utils.data.get_worker_info() is not None:  # a worker touches only the graph
            self.release()
        return out

    def build(self, sample: Union[SampledSubgraph, TokenBatch]) -> Data:
        if isinstance(sample, TokenBatch):
            data = token_batch(self.store, sample, self.pe_keys, self.hop_features)
        else:
            data = neighbor_batch(self.store, sample, self.pe_keys)
        self._built += 1
        if self.release_every and self._built % self.release_every == 0:
            self.release()
        return data

    def release(self) -> None:
        """Drop the mapped pages of the store and of the sampler's graph from this process's RSS."""
        self.store.release()
        for arr in getattr(self.sampler, "_sources", {}).values():
            release_pages(arr)

    def __len__(self) -> int:
        if self.shuffle:
            return num_batches(self.seeds.shape[0], self.batch_size, self.world_size)
        return num_eval_batches(self.seeds.shape[0], self.batch_size, self.rank, self.world_size)


class _KeySampler(torch.utils.data.Sampler):
    """Yields the keys ``(epoch, i)`` of the pass the owning loader is starting."""

    def __init__(self, loader: "NodeLoader"):
        # weak: the loader owns the worker DataLoader that owns this sampler; no reference cycle, so
        # dropping the loader shuts its persistent workers down at once
        self._loader = weakref.ref(loader)
        self._len = len(loader)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        loader = self._loader()
        epoch, start = (loader._current, loader._current_start) if loader is not None else (0, 0)
        return iter([(epoch, i) for i in range(start, self._len)])

    def __len__(self) -> int:
        return self._len


def _first(item: Any) -> Any:
    """``collate_fn`` of the worker loader: each item already is a whole sample."""
    return item


# --------------------------------------------------------------------------- the loader
class NodeLoader:
    """Mini-batches of seed nodes with their sampled neighbourhoods, features, labels and PEs.

    Batches of a :class:`NeighborSampler` are ``torch_geometric.data.Data`` with (``n`` sampled
    nodes, the ``B`` seeds first):

    * ``x`` float32 ``[n, F]`` rows of ``store.x`` (float16 stores are converted);
    * ``edge_index`` long ``[2, E]`` local ids, row 0 = source (sampled neighbour), row 1 = target;
    * ``y`` of all ``n`` nodes: long ``[n]`` (-1 = unlabelled) or float ``[n, T]`` (NaN = missing);
    * ``loss_mask`` bool ``[n]``: True exactly for the seeds that carry a label;
    * ``n_id`` long ``[n]`` global ids; ``batch`` long zeros ``[n]``, ``ptr = [0, n]``,
      ``num_graphs = 1`` (one sampled graph per batch), ``num_seeds = B``;
      ``num_sampled_nodes`` (``L + 1`` ints) and ``num_sampled_edges`` (``L`` ints) per hop;
    * one float32 ``[n, d]`` attribute per entry of ``pe_keys``, named by the key.

    Batches of a :class:`TokenSampler` are described in :func:`token_batch`.

    Args:
        store: the graph store (features ``x``, labels ``y`` if present, ``pe/<key>``).
        seeds: int ``[n]`` distinct node ids to predict (e.g. ``store.split('train')``).
        sampler: a :class:`NeighborSampler` or :class:`TokenSampler` over the store's graph.
        batch_size: at most this many seeds per batch.
        shuffle: new seed order every pass (training); ``False``: seed order, every seed once,
            and the same sampled neighbourhoods every pass (evaluation / inference over a split).
        seed: seed of the shuffles and of every batch's sampling.
        num_workers: worker processes building batches (0 = in this process); results are the
            same for any number.
        prefetch_factor: batches each worker prepares ahead.
        rank, world_size: this process's share under DDP: its part of every global batch
            (shuffled passes; the same number of steps on every rank) or its round-robin share of
            the batches (ordered passes), see the module docstring.
        pe_keys: stored positional encodings to gather (keys of ``store.pe()``).
        release_every: call ``store.release()`` every this many batches in the process that
            gathers (bounded RSS on memory-mapped stores bigger than RAM); 0 = never.
        hop_features: with a :class:`TokenSampler`, also gather the tokens' propagated features
            ``extra/x_hop1..hop_features`` (``token_xhop``); 0 = none.

    A pass draws a new shuffle: pass ``e`` is the ``e``-th call of ``iter`` (or ``set_epoch(e)``).
    """

    def __init__(self, store: GraphStore, seeds: Any, sampler: Sampler, batch_size: int, shuffle: bool,
                 seed: int = 0, num_workers: int = 0, prefetch_factor: int = 2, rank: int = 0,
                 world_size: int = 1, pe_keys: Sequence[str] = (), release_every: int = 0,
                 hop_features: int = 0):
        if not isinstance(sampler, (NeighborSampler, TokenSampler)):
            raise TypeError(f"sampler must be a NeighborSampler or a TokenSampler, got {type(sampler).__name__}")
        if sampler.num_nodes != store.num_nodes:
            raise ValueError(f"the sampler's graph has {sampler.num_nodes} nodes but store '{store.name}' has "
                             f"{store.num_nodes}; build the sampler from store.indptr and store.indices")
        if not store.has("x"):
            raise ValueError(f"graph store '{store.path}' has no node features 'x'; NodeLoader gathers them")
        seeds = check_seeds(seeds, store.num_nodes)
        if seeds.shape[0] == 0:
            raise ValueError("seeds is empty: pass the node ids of a non-empty split")
        if np.unique(seeds).shape[0] != seeds.shape[0]:
            raise ValueError("seeds must be distinct node ids (pass np.unique(seeds))")
        for name, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                                 ("prefetch_factor", prefetch_factor, 1), ("world_size", world_size, 1),
                                 ("release_every", release_every, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        check_shard(rank, world_size)
        if shuffle:
            check_plan(seeds.shape[0], batch_size, world_size, "seeds")
        if isinstance(pe_keys, str):
            pe_keys = (pe_keys,)
        missing = [k for k in pe_keys if not store.has(f"pe/{k}")]
        if missing:
            raise ValueError(f"pe_keys {missing} are not stored in '{store.path}' (it has: "
                             f"{sorted(store.pe())}); compute them into the store first")
        self.store, self.seeds, self.sampler = store, seeds, sampler
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        self.num_workers, self.prefetch_factor = int(num_workers), int(prefetch_factor)
        self.rank, self.world_size = int(rank), int(world_size)
        self.pe_keys = tuple(pe_keys)
        if isinstance(hop_features, bool) or not isinstance(hop_features, (int, np.integer)) or hop_features < 0:
            raise ValueError(f"hop_features must be an int >= 0, got {hop_features!r}")
        if hop_features:
            from graphgt.data.store.hop_features import hop_key

            absent = [hop_key(p) for p in range(1, hop_features + 1) if not store.has(hop_key(p))]
            if absent:
                raise ValueError(f"hop_features={hop_features}: {absent} are not stored in '{store.path}'; "
                                 "compute them with graphgt.data.store.hop_features.compute_hop_features")
        self.hop_features = int(hop_features)
        self.release_every = int(release_every)
        self.epoch = 0
        self._current = self._current_start = self._start = 0
        self._builder = _BatchBuilder(store, seeds, sampler, self.batch_size, self.shuffle, self.seed,
                                      self.rank, self.world_size, self.pe_keys, self.release_every,
                                      self.hop_features)
        self._workers: Optional[torch.utils.data.DataLoader] = None

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Make the next pass pass number ``epoch`` (its shuffle and samples; later passes count on),
        beginning at its batch ``start`` (a resumed run skips the batches it already trained on;
        skipped batches are neither sampled nor gathered)."""
        if not 0 <= start <= len(self):
            raise ValueError(f"start={start} must lie in [0, {len(self)}] (batches per pass)")
        self.epoch, self._start = int(epoch), int(start)

    def __len__(self) -> int:
        """Batches per pass on this rank (shuffled passes: the same on every rank)."""
        return len(self._builder)

    def batches(self, epoch: int) -> List[np.ndarray]:
        """The seed batches of pass ``epoch`` on this rank (what the pass will sample)."""
        return plan_batches(self.seeds, self.batch_size, self.shuffle, self.seed, epoch, self.rank, self.world_size)

    def __iter__(self) -> Iterator[Data]:
        self._current = epoch = self.epoch
        self._current_start, self._start = self._start, 0
        self.epoch += 1
        builder = self._builder
        if self.num_workers == 0 or self._current_start >= len(self):
            return (builder.build(builder[(epoch, i)]) for i in range(self._current_start, len(self)))
        if self._workers is None:
            self._workers = torch.utils.data.DataLoader(
                builder, batch_size=None, sampler=_KeySampler(self), collate_fn=_first,
                num_workers=self.num_workers, prefetch_factor=self.prefetch_factor, persistent_workers=True,
                # the workers' base seed from a private generator: starting them must not advance the
                # global torch RNG (dropout masks would then depend on num_workers)
                generator=torch.Generator().manual_seed(self.seed))
        return (builder.build(sample) for sample in self._workers)

    def __repr__(self) -> str:
        return (f"NodeLoader(store={self.store.name!r}, seeds={self.seeds.shape[0]}, sampler={self.sampler!r}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, num_workers={self.num_workers}, "
                f"rank={self.rank}/{self.world_size}, batches={len(self)})")
