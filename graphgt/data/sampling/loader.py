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

Worker processes are a ``torch.utils.data.DataLoader`` over "batch keys" ``(e, i, pass)``: a
worker derives the plan of pass ``e`` itself (once per pass) from the same seeds, so nothing but the
key travels to it, and the workers can persist across passes.  A worker samples and gathers the
batch into one of its reused shared-memory slots (:class:`_SlotPool`); the main process wraps the
tensors around the slot without a copy.  Each worker runs one torch thread (:func:`_worker_init`).

Placement (:func:`resolve_placement`): ``cpu`` gathers from the (memory-mapped) store on the host;
``device`` copies the gathered arrays once into tensors on the trainer's device and gathers each
batch there with ``index_select`` (workers then only sample); both give identical batches.
"""
from __future__ import annotations

import ctypes
import os
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch_geometric.data import Data

from graphgt.data.plan import check_plan, check_shard, num_batches, num_eval_batches, plan_batches
from graphgt.data.sampling.kernels import mix_seed
from graphgt.data.sampling.largegt import TokenBatch, TokenSampler
from graphgt.data.sampling.neighbor import NeighborSampler, SampledSubgraph, check_seeds
from graphgt.data.sampling.random_nodes import RandomNodeSampler
from graphgt.data.store.core import GraphStore
from graphgt.pages import release_pages

Sampler = Union[NeighborSampler, RandomNodeSampler, TokenSampler]


# --------------------------------------------------------------------------- placement and workers
PLACEMENTS = ("auto", "cpu", "device")

#: ``placement="auto"`` keeps the features on the device when they take less than this fraction of
#: the device's free memory (the rest is left to the model's activations and the allocator's cache).
DEVICE_MEMORY_FRACTION = 0.4


def resolve_placement(placement: str, device: Any, feature_bytes: int, free_bytes: Optional[int] = None) -> str:
    """Where a loader keeps the gathered arrays (features, labels, PEs, hop features): ``cpu`` or ``device``.

    ``cpu``: the store's arrays stay in (mapped) host memory and each batch's rows are gathered on the
    host (in the worker processes); ``device``: the arrays are copied once into one tensor each on
    ``device`` and each batch is gathered there with ``index_select`` (the sampler still gives ids).
    ``auto`` is ``device`` when ``device`` is a CUDA device and ``feature_bytes`` is less than
    :data:`DEVICE_MEMORY_FRACTION` of its free memory (``free_bytes``, default: measured with
    ``torch.cuda.mem_get_info``), else ``cpu``.  On a CPU device ``device`` means "one torch tensor in
    RAM, gathered with torch" (the same code path as on a GPU).
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement={placement!r} must be one of {list(PLACEMENTS)}")
    if placement != "auto":
        return placement
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type != "cuda":
        return "cpu"
    if free_bytes is None:
        free_bytes = int(torch.cuda.mem_get_info(dev)[0])
    return "device" if feature_bytes < DEVICE_MEMORY_FRACTION * free_bytes else "cpu"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask), shared by the local DDP ranks."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(1, local))


def resolve_num_workers(num_workers: Union[int, str], cores: Optional[int] = None) -> int:
    """``auto`` -> one worker process per core of this rank's share (:func:`available_cores`), at most
    8; 0 on a single core.  The workers sample and gather, so the process that consumes the batches
    (the trainer) keeps only the copies to the device or its own compute; an int is used as given.
    """
    if num_workers == "auto":
        cores = available_cores() if cores is None else int(cores)
        return 0 if cores <= 1 else min(cores, MAX_AUTO_WORKERS)
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
        raise ValueError(f"num_workers={num_workers!r} must be an int >= 0 or 'auto'")
    return int(num_workers)


MAX_AUTO_WORKERS = 8


def _worker_init(_: int) -> None:
    """Thread decision of a loader worker: one torch (OpenMP) thread.  A worker runs single-threaded
    kernels (the numba samplers, ``np.take``) and the trainer's process owns the other threads; an
    OpenMP pool per worker would only spin against them."""
    torch.set_num_threads(1)


# --------------------------------------------------------------------------- gathering
Alloc = Callable[[Tuple[int, ...], Any], np.ndarray]


def _fresh(shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.empty(shape, dtype=dtype)


def _pinned(shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
    """Page-locked host memory (torch's caching host allocator), for non-blocking copies to CUDA."""
    return torch.empty(shape, dtype=_TORCH_DTYPES[np.dtype(dtype)], pin_memory=True).numpy()


_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.int64): torch.int64,
                 np.dtype(np.bool_): torch.bool}


class _HostRows:
    """Gathers rows of the store's (mapped) arrays on the host into arrays from ``alloc``."""

    def __init__(self, store: GraphStore, pe_keys: Sequence[str], hop_features: int, alloc: Alloc = _fresh):
        self.store, self.alloc = store, alloc
        self.pe_keys, self.hop_features = tuple(pe_keys), int(hop_features)
        self.has_y = store.has("y")

    def source(self, name: str) -> np.ndarray:
        if name == "x":
            return self.store.x
        if name.startswith("pe/"):
            return self.store.pe()[name[3:]]
        return self.store.array(name)

    def ids(self, arr: np.ndarray) -> torch.Tensor:
        if self.alloc is _fresh:
            return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64))
        out = self.alloc(arr.shape, np.int64)
        np.copyto(out, arr)
        return torch.from_numpy(out)

    def rows(self, name: str, ids: np.ndarray) -> torch.Tensor:
        """float32 ``[len(ids), ...]`` rows of array ``name`` (float16 converted by torch: faster than numpy)."""
        a = np.asarray(self.source(name))
        out = self.alloc((ids.shape[0],) + a.shape[1:], np.float32)
        if a.dtype == np.float32:
            np.take(a, ids, axis=0, out=out, mode="clip")  # ids are checked node ids; "clip" writes straight into out
        else:
            torch.from_numpy(out).copy_(torch.from_numpy(np.take(a, ids, axis=0)))
        return torch.from_numpy(out)

    def labels(self, ids: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
        """(labels of ``ids``, whether each is labelled): int -> long with -1 kept; float -> float32, NaN = missing."""
        rows = np.take(np.asarray(self.store.y), ids, axis=0)
        if np.issubdtype(rows.dtype, np.integer):
            out = self.alloc(rows.shape, np.int64)
            np.copyto(out, rows)
            labelled = rows >= 0
        else:
            out = self.alloc(rows.shape, np.float32)
            np.copyto(out, rows)
            labelled = ~np.isnan(out)
        if labelled.ndim > 1:
            labelled = labelled.any(axis=tuple(range(1, labelled.ndim)))
        return torch.from_numpy(out), torch.from_numpy(labelled)


class DeviceRows:
    """The store's gathered arrays (``x``, ``y``, ``pe/<key>``, hop features) as one torch tensor each
    on ``device``; a batch's rows are ``index_select``-ed there (placement ``device``).

    Gives exactly the host gather's values: float16 features are kept as float16 (half the memory)
    and converted per batch, integer labels are kept as int64, float labels as float32.
    """

    def __init__(self, store: GraphStore, pe_keys: Sequence[str], hop_features: int, device: Any):
        from graphgt.data.store.hop_features import hop_key

        self.device = torch.device(device)
        names = ["x"] + [f"pe/{k}" for k in pe_keys] + [hop_key(p) for p in range(1, int(hop_features) + 1)]
        self.arrays: Dict[str, torch.Tensor] = {}
        for name in names:
            a = np.asarray(store.x if name == "x" else store.array(name))
            keep = a.dtype if a.dtype in (np.float16, np.float32) else np.float32
            self.arrays[name] = torch.from_numpy(np.array(a, dtype=keep)).to(self.device)
        self.y: Optional[torch.Tensor] = None
        if store.has("y"):
            y = np.asarray(store.y)
            y = y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y.astype(np.float32)
            self.y = torch.from_numpy(y).to(self.device)
        self.has_y = self.y is not None

    @staticmethod
    def feature_bytes(store: GraphStore, pe_keys: Sequence[str], hop_features: int) -> int:
        """Device memory :class:`DeviceRows` takes for this store (for :func:`resolve_placement`)."""
        from graphgt.data.store.hop_features import hop_key

        total = 0
        for name in ["x"] + [f"pe/{k}" for k in pe_keys] + [hop_key(p) for p in range(1, int(hop_features) + 1)]:
            a = store.x if name == "x" else store.array(name)
            total += int(np.prod(a.shape)) * (2 if a.dtype == np.float16 else 4)
        if store.has("y"):
            total += int(np.prod(store.y.shape)) * (8 if np.issubdtype(store.y.dtype, np.integer) else 4)
        return total

    def ids(self, arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64)).to(self.device, non_blocking=True)

    def rows(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        return self.arrays[name].index_select(0, ids).to(torch.float32)

    def labels(self, ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        rows = self.y.index_select(0, ids)
        labelled = rows >= 0 if not rows.is_floating_point() else ~torch.isnan(rows)
        if labelled.dim() > 1:
            labelled = labelled.flatten(1).any(dim=1)
        return rows, labelled

    def __repr__(self) -> str:
        mib = sum(t.numel() * t.element_size() for t in self.arrays.values()) / 2 ** 20
        return f"DeviceRows(device='{self.device}', arrays={list(self.arrays)}, {mib:.1f} MiB)"


Rows = Union[_HostRows, DeviceRows]


def _neighbor_data(src: Rows, sub: SampledSubgraph, pe_keys: Sequence[str]) -> Data:
    ids_np = sub.node_ids
    n, b = ids_np.shape[0], sub.num_seeds
    ids = ids_np if isinstance(src, _HostRows) else src.ids(ids_np)
    data = Data(x=src.rows("x", ids), edge_index=src.ids(sub.edge_index))
    if src.has_y:
        y, labelled = src.labels(ids)
        loss_mask = torch.zeros(n, dtype=torch.bool, device=labelled.device)
        loss_mask[:b] = labelled[:b]
        data.y, data.loss_mask = y, loss_mask
    for key in pe_keys:
        data[key] = src.rows(f"pe/{key}", ids)
    data.n_id = src.ids(ids_np)
    data.batch = torch.zeros(n, dtype=torch.long, device=data.x.device)
    data.ptr = torch.tensor([0, n], dtype=torch.long, device=data.x.device)
    data.num_graphs = 1
    data.num_seeds = b
    if sub.num_sampled_nodes is not None:  # hop-ordered (a neighbour sample): models may trim per layer
        data.num_sampled_nodes = sub.num_sampled_nodes.tolist()
        data.num_sampled_edges = sub.num_sampled_edges.tolist()
    return data


def _token_data(src: Rows, tb: TokenBatch, pe_keys: Sequence[str], hop_features: int) -> Data:
    from graphgt.data.store.hop_features import hop_key

    b, k = tb.tokens.shape
    flat_np = tb.tokens.reshape(-1)
    host = isinstance(src, _HostRows)
    seeds, flat = (tb.seeds, flat_np) if host else (src.ids(tb.seeds), src.ids(flat_np))
    data = Data(x=src.rows("x", seeds), token_x=src.rows("x", flat).reshape(b, k, -1))
    if hop_features:
        data.token_xhop = torch.stack([src.rows(hop_key(p), flat).reshape(b, k, -1)
                                       for p in range(1, hop_features + 1)], dim=2)
    data.token_ids = src.ids(tb.tokens)
    data.token_hop = src.ids(tb.hop.astype(np.int64))
    mask = torch.from_numpy(tb.mask)
    data.token_mask = mask if host else mask.to(src.device, non_blocking=True)
    if src.has_y:
        data.y, data.loss_mask = src.labels(seeds)
    for key in pe_keys:
        data[key] = src.rows(f"pe/{key}", seeds)
        data[f"token_{key}"] = src.rows(f"pe/{key}", flat).reshape(b, k, -1)
    data.n_id = src.ids(np.asarray(tb.seeds))
    data.num_seeds = b
    return data


def neighbor_batch(store: GraphStore, sub: SampledSubgraph, pe_keys: Sequence[str] = ()) -> Data:
    """A ``Data`` of a neighbour sample with the store's rows gathered (see :class:`NodeLoader`)."""
    return _neighbor_data(_HostRows(store, pe_keys, 0), sub, pe_keys)


def token_batch(store: GraphStore, tb: TokenBatch, pe_keys: Sequence[str] = (), hop_features: int = 0) -> Data:
    """A ``Data`` of a token sample: ``B`` seeds, each with a sequence of ``K`` tokens.

    Attributes: ``x [B, F]`` seed features, ``token_x [B, K, F]`` token features, ``token_ids``,
    ``token_hop`` (long; 0 seed, 1, 2, -1 padding) and ``token_mask`` ``[B, K]``, ``y`` and
    ``loss_mask`` of the seeds ``[B]``, ``n_id [B]``, ``num_seeds``; per PE key ``<key> [B, d]``
    and ``token_<key> [B, K, d]``; with ``hop_features = P > 0``, ``token_xhop [B, K, P, F]`` the
    tokens' propagated features ``extra/x_hop1..P`` (:mod:`graphgt.data.store.hop_features`).
    """
    return _token_data(_HostRows(store, pe_keys, hop_features), tb, pe_keys, hop_features)


# --------------------------------------------------------------------------- shared-memory slots
_ALIGN = 64


class _Bump:
    """Allocator of arrays inside one slot buffer (64-byte aligned); past its end, fresh arrays."""

    def __init__(self, buf: Optional[np.ndarray]):
        self.buf, self.used, self.wanted = buf, 0, 0
        self.placed: List[Tuple[int, np.ndarray]] = []

    def __call__(self, shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        off = self.wanted
        self.wanted = -(-(off + nbytes) // _ALIGN) * _ALIGN
        if self.buf is None or self.wanted > self.buf.shape[0]:
            return np.empty(shape, dtype=dtype)
        arr = self.buf[off:off + nbytes].view(dtype).reshape(shape)
        self.placed.append((off, arr))
        return arr


class _Packed:
    """A batch gathered by a worker into its shared-memory slot ``slot``: the slot's storage (which
    torch hands over as a file descriptor, mapped once by the main process), where each tensor
    attribute lies in it, and the other attributes as they are."""

    def __init__(self, slot: int, storage: torch.Tensor, keys: List[str], placed: Dict[str, Tuple[int, Any, tuple]],
                 rest: Dict[str, Any]):
        self.slot, self.storage, self.keys, self.placed, self.rest = slot, storage, keys, placed, rest


def _release_slot(state: np.ndarray, slot: int) -> None:
    state[slot] = 0


class _SlotPool:
    """Per-worker ring of shared-memory buffers that workers gather batches into.

    A fresh shared-memory buffer per batch costs a page fault per 4 KiB (measured: a 55 MB batch of the
    products-shaped graph took 52 ms to gather into new shared memory, 12 ms into a reused buffer), so
    each worker owns ``slots`` buffers and reuses them.  ``state[s]`` (shared memory) is 0 when slot
    ``s`` is free, else the number of the pass (``>= 1``) that filled it.  Only the owning worker
    claims a free slot (0 -> pass); only the main process frees it (-> 0), when the last tensor of the
    batch is garbage (a ``weakref.finalize`` on the buffer object every tensor of the batch
    references), so a batch that is still held is never overwritten.  A worker whose slots are all
    held gathers into fresh memory instead (correct, slower).  Slots of results that a pass abandoned
    on its way (a new ``iter`` before the end) are freed when the next pass starts.
    """

    def __init__(self, num_workers: int, slots: int):
        self.slots = int(slots)
        self.state = torch.zeros(num_workers * self.slots, dtype=torch.int32).share_memory_()
        self._state_np = self.state.numpy()
        # worker side
        self._buffers: Dict[int, torch.Tensor] = {}
        self._next = 0
        self._want = 0
        # main side
        self._mapped: Dict[int, torch.Tensor] = {}
        self._live: Dict[int, Any] = {}

    # ---- worker side
    def claim(self, worker: int, pass_id: int) -> Tuple[Optional[int], Optional[np.ndarray]]:
        for j in range(self.slots):
            s = worker * self.slots + (self._next + j) % self.slots
            if self._state_np[s] == 0:
                self._next = (self._next + j + 1) % self.slots
                self._state_np[s] = pass_id
                buf = self._buffers.get(s)
                if buf is None or buf.numel() < self._want:
                    nbytes = max(self._want, _ALIGN)
                    buf = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(nbytes), 0, (nbytes,))
                    self._buffers[s] = buf
                return s, buf.numpy()
        return None, None

    def pack(self, slot: Optional[int], bump: _Bump, data: Data) -> Union[Data, _Packed]:
        self._want = max(self._want, int(bump.wanted * 1.25))
        if slot is None:
            return data
        if not bump.placed:  # nothing fitted: give the slot back, send the batch as it is
            self._state_np[slot] = 0
            return data
        offsets = {arr.ctypes.data: off for off, arr in bump.placed}
        placed, rest = {}, {}
        keys = [key for key, _ in data]  # insertion order (``keys()`` does not keep it)
        for key in keys:
            value = data[key]
            off = offsets.get(value.data_ptr()) if isinstance(value, torch.Tensor) else None
            if off is not None and value.is_contiguous():
                placed[key] = (off, value.numpy().dtype.str, tuple(value.shape))
            else:
                rest[key] = value
        return _Packed(slot, self._buffers[slot], keys, placed, rest)

    # ---- main side
    def new_pass(self, pass_id: int) -> None:
        """Free the slots of results an earlier pass abandoned (not held here, filled before ``pass_id``)."""
        for s in range(self._state_np.shape[0]):
            if 0 < self._state_np[s] < pass_id and s not in self._live:
                self._state_np[s] = 0

    def unpack(self, packed: _Packed) -> Data:
        storage = packed.storage
        self._mapped[packed.slot] = storage  # a strong reference: torch re-uses this mapping next time
        nbytes = storage.numel()
        buf = (ctypes.c_uint8 * nbytes).from_address(storage.data_ptr())
        arr = np.frombuffer(buf, dtype=np.uint8)
        self._live[packed.slot] = True
        weakref.finalize(buf, self._free, packed.slot)
        data = Data()
        for key in packed.keys:
            if key in packed.placed:
                off, dtype, shape = packed.placed[key]
                dt = np.dtype(dtype)
                count = int(np.prod(shape, dtype=np.int64))
                data[key] = torch.from_numpy(arr[off:off + count * dt.itemsize].view(dt).reshape(shape))
            else:
                data[key] = packed.rest[key]
        return data

    def _free(self, slot: int) -> None:
        self._live.pop(slot, None)
        self._state_np[slot] = 0

    def __getstate__(self) -> Dict[str, Any]:  # spawned workers: the shared state, no buffers
        return {"slots": self.slots, "state": self.state}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.slots, self.state = state["slots"], state["state"]
        self._state_np = self.state.numpy()
        self._buffers, self._next, self._want, self._mapped, self._live = {}, 0, 0, {}, {}


# --------------------------------------------------------------------------- the per-process builder
class _BatchBuilder(torch.utils.data.Dataset):
    """Samples batch ``(epoch, i)`` of one rank and turns it into a ``Data`` by gathering the
    store's rows.

    In a worker process (``__getitem__`` with a pool, placement ``cpu``) the worker samples *and*
    gathers, into one of its shared-memory slots (:class:`_SlotPool`), and sends the main process only
    where the tensors lie; the main process (:meth:`finish`) maps the slot once and wraps the tensors
    around it, with no copy.  With placement ``device`` the workers only sample and the main process
    gathers on the device (:class:`DeviceRows`).  Without workers everything happens in
    :meth:`build`.
    """

    def __init__(self, store: GraphStore, seeds: np.ndarray, sampler: Sampler, batch_size: int, shuffle: bool,
                 seed: int, rank: int, world_size: int, pe_keys: Tuple[str, ...], release_every: int,
                 hop_features: int = 0):
        self.store, self.seeds, self.sampler = store, seeds, sampler
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.pe_keys, self.release_every = pe_keys, release_every
        self.hop_features = hop_features
        self.rows: Rows = _HostRows(store, pe_keys, hop_features)
        self.pool: Optional[_SlotPool] = None
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

    def sample(self, epoch: int, i: int) -> Union[SampledSubgraph, TokenBatch]:
        out = self.sampler.sample(self.plan(epoch)[i], self.batch_seed(epoch, i))
        self._sampled += 1
        return out

    def __getitem__(self, key: Tuple[int, int, int]) -> Any:
        """In a worker: the sample of batch ``key = (epoch, i, pass)``, gathered into a slot when there is a pool."""
        epoch, i, pass_id = key
        out = self.sample(epoch, i)
        info = torch.utils.data.get_worker_info()
        if self.pool is not None and info is not None:
            slot, buf = self.pool.claim(info.id, pass_id)
            bump = _Bump(buf)
            data = self._data(_HostRows(self.store, self.pe_keys, self.hop_features, bump), out)
            out = self.pool.pack(slot, bump, data)
        if self.release_every and self._sampled % self.release_every == 0 and info is not None:
            self.release()  # the worker's own mapped pages (graph, and the rows it gathered)
        return out

    def _data(self, src: Rows, sample: Union[SampledSubgraph, TokenBatch]) -> Data:
        if isinstance(sample, TokenBatch):
            return _token_data(src, sample, self.pe_keys, self.hop_features)
        return _neighbor_data(src, sample, self.pe_keys)

    def build(self, sample: Union[SampledSubgraph, TokenBatch]) -> Data:
        """Gather a sample in this process (with :attr:`rows`: host arrays or the device's tensors)."""
        data = self._data(self.rows, sample)
        self._built += 1
        if self.release_every and self._built % self.release_every == 0:
            self.release()
        return data

    def finish(self, item: Any) -> Data:
        """The main process's part of a worker's result."""
        if isinstance(item, _Packed):
            return self.pool.unpack(item)
        if isinstance(item, Data):
            return item
        return self.build(item)

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
    """Yields the keys ``(epoch, i, pass)`` of the pass the owning loader is starting."""

    def __init__(self, loader: "NodeLoader"):
        # weak: the loader owns the worker DataLoader that owns this sampler; no reference cycle, so
        # dropping the loader shuts its persistent workers down at once
        self._loader = weakref.ref(loader)
        self._len = len(loader)

    def __iter__(self) -> Iterator[Tuple[int, int, int]]:
        loader = self._loader()
        epoch, start, pass_id = (loader._current, loader._current_start, loader._passes) \
            if loader is not None else (0, 0, 1)
        return iter([(epoch, i, pass_id) for i in range(start, self._len)])

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
        num_workers: worker processes building batches (0 = in this process; ``"auto"``: see
            :func:`resolve_num_workers`); results are the same for any number.  With placement
            ``cpu`` a worker samples and gathers into its reused shared-memory slots
            (:class:`_SlotPool`), with placement ``device`` it only samples.
        prefetch_factor: batches each worker prepares ahead.
        rank, world_size: this process's share under DDP: its part of every global batch
            (shuffled passes; the same number of steps on every rank) or its round-robin share of
            the batches (ordered passes), see the module docstring.
        pe_keys: stored positional encodings to gather (keys of ``store.pe()``).
        release_every: call ``store.release()`` every this many batches in the process that
            gathers (bounded RSS on memory-mapped stores bigger than RAM); 0 = never.
        hop_features: with a :class:`TokenSampler`, also gather the tokens' propagated features
            ``extra/x_hop1..hop_features`` (``token_xhop``); 0 = none.
        placement: ``cpu``, ``device`` or ``auto`` (:func:`resolve_placement`): gather from the
            host store, or from one tensor per array on ``device`` (batches are then on ``device``).
        device: the device that consumes the batches (the trainer's); ``None`` = CPU.
        pin_memory: gather into page-locked host memory (for non-blocking copies to CUDA) when
            gathering in this process; ``None`` = when ``device`` is a CUDA device.
        device_rows: with placement ``device``, the store's arrays already on the device (a
            :class:`DeviceRows` several loaders share); ``None``: copied here.

    A pass draws a new shuffle: pass ``e`` is the ``e``-th call of ``iter`` (or ``set_epoch(e)``).
    """

    def __init__(self, store: GraphStore, seeds: Any, sampler: Sampler, batch_size: int, shuffle: bool,
                 seed: int = 0, num_workers: int = 0, prefetch_factor: int = 2, rank: int = 0,
                 world_size: int = 1, pe_keys: Sequence[str] = (), release_every: int = 0,
                 hop_features: int = 0, placement: str = "auto", device: Any = None,
                 pin_memory: Optional[bool] = None, device_rows: Optional[DeviceRows] = None):
        if not isinstance(sampler, (NeighborSampler, RandomNodeSampler, TokenSampler)):
            raise TypeError("sampler must be a NeighborSampler, RandomNodeSampler or TokenSampler, "
                            f"got {type(sampler).__name__}")
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
        num_workers = resolve_num_workers(num_workers)
        for name, value, low in (("batch_size", batch_size, 1), ("prefetch_factor", prefetch_factor, 1), ("world_size", world_size, 1),
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
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.placement = resolve_placement(
            placement, self.device,
            DeviceRows.feature_bytes(store, self.pe_keys, self.hop_features) if placement == "auto" else 0)
        self.pin_memory = (self.device.type == "cuda") if pin_memory is None else bool(pin_memory)
        self.epoch = 0
        self._current = self._current_start = self._start = 0
        self._passes = 0
        self._builder = _BatchBuilder(store, seeds, sampler, self.batch_size, self.shuffle, self.seed,
                                      self.rank, self.world_size, self.pe_keys, self.release_every,
                                      self.hop_features)
        if self.placement == "device":
            if device_rows is not None and (device_rows.device != self.device or not set(device_rows.arrays)
                                            >= {"x", *(f"pe/{k}" for k in self.pe_keys)}):
                raise ValueError(f"device_rows {device_rows!r} do not hold this loader's arrays on {self.device}")
            self._builder.rows = device_rows or DeviceRows(store, self.pe_keys, self.hop_features, self.device)
        elif self.pin_memory:
            self._builder.rows = _HostRows(store, self.pe_keys, self.hop_features, _pinned)
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
        self._passes += 1
        builder = self._builder
        if self.num_workers == 0 or self._current_start >= len(self):
            return (builder.build(builder.sample(epoch, i)) for i in range(self._current_start, len(self)))
        if self._workers is None:
            if self.placement == "cpu":
                # slots per worker: the prefetched batches, the one being consumed and the one a
                # device prefetcher holds
                builder.pool = _SlotPool(self.num_workers, self.prefetch_factor + 2)
            self._workers = torch.utils.data.DataLoader(
                builder, batch_size=None, sampler=_KeySampler(self), collate_fn=_first,
                num_workers=self.num_workers, prefetch_factor=self.prefetch_factor, persistent_workers=True,
                worker_init_fn=_worker_init,
                # the workers' base seed from a private generator: starting them must not advance the
                # global torch RNG (dropout masks would then depend on num_workers)
                generator=torch.Generator().manual_seed(self.seed))
        items = iter(self._workers)  # a persistent iterator drains what an abandoned pass left in flight
        if builder.pool is not None:
            builder.pool.new_pass(self._passes)
        return (builder.finish(item) for item in items)

    def __repr__(self) -> str:
        return (f"NodeLoader(store={self.store.name!r}, seeds={self.seeds.shape[0]}, sampler={self.sampler!r}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, num_workers={self.num_workers}, "
                f"placement={self.placement!r}, "
                f"rank={self.rank}/{self.world_size}, batches={len(self)})")
