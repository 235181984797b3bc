"""Layer-wise full-graph inference: exact predictions of a message-passing model for the nodes of a
split, computed one layer at a time over every node of a graph store with full neighbourhoods.

Sampled evaluation approximates each prediction from a sampled neighbourhood; a full-neighbour
forward of an ``L``-layer model over a 2.45M-node graph does not fit in memory at once.  Layer-wise
inference (GraphSAGE's inference algorithm, PyG's ``inference()`` examples) computes layer ``l``'s
output for *all* nodes before layer ``l + 1`` starts, in chunks of target nodes::

    buffer_0 = input(x)                       [N, d_0]   (or the store's float32 x, read in place)
    buffer_1 = layer_0(buffer_0, A)           [N, d_1]   chunk by chunk of target rows
    buffer_0 = layer_1(buffer_1, A)           [N, d_2]   (the two buffers alternate)
    ...
    pred     = output(layer_{L-1}(buffer, A)[split])     the last layer: the split's rows only

where each chunk reads every in-neighbour of its targets (the store's CSR rows, ``store.indptr`` /
``store.indices``: row ``t`` lists the nodes whose messages ``t`` receives).  At most two ``[N, d]``
float32 buffers exist, in RAM or (``buffer='disk'``) in a temporary memory-mapped file deleted
afterwards, for graphs whose activations do not fit in RAM.

The model side is a duck-typed protocol (this package does not import :mod:`graphgt.nn`), which
:class:`graphgt.nn.model.MPNNModel` (SAGE, GCN, GIN layers) and ``GPSModel`` without attention
follow; other models raise a ``ValueError`` that says why:

* ``layerwise_plan()`` -> an object with ``dims`` (``d_0..d_L``), ``out_dim``, ``raw_input`` (layer
  0 reads the raw float features as they are) and ``needs_degree`` (blocks carry degrees);
* ``layerwise_input(data)`` -> ``[n, d_0]`` from a ``Data`` with ``x`` (and the PE keys) of ``n`` nodes;
* ``layerwise_layer(i, block)`` -> ``[T, d_{i+1}]``, layer ``i`` (and what follows it up to layer
  ``i + 1``'s input) for the ``T`` targets of a :class:`GraphBlock`;
* ``layerwise_output(x)`` -> ``[n, out]`` from the last layer's rows (the head).

Every step is row-wise or reads whole neighbourhoods, so the predictions equal the model's plain
forward over the whole graph (``edge_index = [indices, row of each entry]``) in eval mode.
"""
from __future__ import annotations

import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch_geometric.data import Data

from graphgt.data.sampling.neighbor import check_seeds
from graphgt.data.store.core import GraphStore
from graphgt.pages import release_pages

BUFFERS = ("ram", "disk")


def _float_tensor(rows: np.ndarray) -> torch.Tensor:
    """float32 tensor copy of feature rows (e.g. a memory map's; float16 converted by torch)."""
    return torch.from_numpy(np.array(rows, copy=True)).to(torch.float32)


def split_targets(y: np.ndarray, ids: np.ndarray) -> Tuple[torch.Tensor, np.ndarray]:
    """``(targets of the labelled ids, bool [n] labelled)``, as sampled batches' ``y``/``loss_mask``:
    integer labels -> long (``-1`` = unlabelled), float -> float32 (all-NaN row = unlabelled)."""
    rows = np.take(np.asarray(y), ids, axis=0)
    if np.issubdtype(rows.dtype, np.integer):
        labelled = rows >= 0
        if labelled.ndim > 1:
            labelled = labelled.any(axis=tuple(range(1, labelled.ndim)))
        return torch.from_numpy(rows[labelled].astype(np.int64)), labelled
    vals = rows.astype(np.float32, copy=False)
    finite = ~np.isnan(vals)
    labelled = finite.any(axis=tuple(range(1, finite.ndim))) if finite.ndim > 1 else finite
    return torch.from_numpy(np.ascontiguousarray(vals[labelled])), labelled


@dataclass
class GraphBlock:
    """One chunk of one layer: ``T`` target nodes with every in-neighbour (see the module docstring).

    Attributes:
        x_src: ``[S, d]`` rows the neighbours are read from: the whole ``[N, d]`` buffer (on CPU), or
            the chunk's distinct sources and targets gathered (``gather_sources=True``, e.g. for a GPU).
        x_dst: ``[T, d]`` the targets' own rows.
        adj_t: ``torch.sparse_csr_tensor [T, S]`` of ones: row ``i`` = the whole CSR row of target
            ``i`` (its in-neighbours, self-loops and repeated entries as stored), columns index ``x_src``.
        dst_index: long ``[T]``, the row of each target within ``x_src``.
        dst_ids: long ``[T]``, the targets' node ids in the graph.
        src_degree: long ``[S]`` in-degree (CSR row length) of each ``x_src`` row's node, or ``None``
            unless the model's plan has ``needs_degree``.
        src_self_loops: long ``[S]`` self-loop entries in each such row (``None`` likewise).
    """

    x_src: torch.Tensor
    x_dst: torch.Tensor
    adj_t: torch.Tensor
    dst_index: torch.Tensor
    dst_ids: torch.Tensor
    src_degree: Optional[torch.Tensor] = None
    src_self_loops: Optional[torch.Tensor] = None


def self_loop_counts(indptr: np.ndarray, indices: np.ndarray, chunk_entries: int = 1 << 24) -> np.ndarray:
    """int64 ``[N]``: how many entries of each CSR row are the row's own id (in chunks of rows)."""
    n = int(indptr.shape[0]) - 1
    out = np.zeros(n, dtype=np.int64)
    start = 0
    while start < n:
        stop = int(np.searchsorted(indptr, int(indptr[start]) + chunk_entries, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        lo, hi = int(indptr[start]), int(indptr[stop])
        rows = np.repeat(np.arange(start, stop, dtype=np.int64), np.diff(np.asarray(indptr[start:stop + 1])))
        hits = rows[np.asarray(indices[lo:hi]) == rows]
        out[start:stop] = np.bincount(hits - start, minlength=stop - start)
        start = stop
    return out


def _csr_rows(indptr: np.ndarray, indices: np.ndarray, ids: Union[np.ndarray, Tuple[int, int]]
              ) -> Tuple[np.ndarray, np.ndarray]:
    """``(crow int64 [T + 1], col int64 [nnz])`` of the CSR rows ``ids`` (a ``(start, stop)`` range is
    read as one slice)."""
    if isinstance(ids, tuple):
        a, b = ids
        ptr = np.asarray(indptr[a:b + 1], dtype=np.int64)
        return ptr - ptr[0], np.asarray(indices[int(ptr[0]):int(ptr[-1])]).astype(np.int64)
    starts = np.asarray(indptr[ids], dtype=np.int64)
    counts = np.asarray(indptr[ids + 1], dtype=np.int64) - starts
    crow = np.zeros(ids.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=crow[1:])
    pos = np.repeat(starts - crow[:-1], counts) + np.arange(int(crow[-1]), dtype=np.int64)
    return crow, np.asarray(indices[pos]).astype(np.int64)


def _chunks(count: int, sizes: Callable[[int, int], np.ndarray], chunk_size: int, max_entries: int
            ) -> List[Tuple[int, int]]:
    """``(start, stop)`` positions cutting ``count`` targets into chunks of at most ``chunk_size``
    targets and ``max_entries`` CSR entries (a single target with more entries is a chunk alone).
    ``sizes(a, b)`` gives the cumulative entry counts of targets ``a..b`` (``[b - a + 1]``, from 0)."""
    out, a = [], 0
    while a < count:
        b = min(a + chunk_size, count)
        cum = sizes(a, b)
        b = a + max(1, int(np.searchsorted(cum, max_entries, side="right")) - 1)
        out.append((a, b))
        a = b
    return out


class LayerwiseInference:
    """Exact full-neighbourhood predictions for the nodes of a split, one layer at a time.

    Args:
        store: the graph store (CSR ``indptr``/``indices``, features ``x`` float16/float32, possibly
            memory-mapped; labels ``y``).
        split_ids: int ``[n]`` distinct node ids to predict (e.g. ``store.split('val')``); the
            predictions come back in this order, for the labelled ones (as ``loss_mask`` selects
            the labelled seeds of sampled batches).
        chunk_size: at most this many target nodes per chunk.
        max_chunk_edges: at most this many CSR entries per chunk (bounds the chunk's sparse
            adjacency and, on the gathered path, its source rows).
        buffer: ``ram`` (two ``np.empty`` buffers) or ``disk`` (two temporary ``np.memmap`` files under
            ``buffer_dir``, deleted when :meth:`predict` returns; their pages are released from RSS as
            the passes go).
        buffer_dir: where ``disk`` buffers go (default: the system's temporary directory).
        pe_keys: stored positional encodings the model's input encoder reads (``store.pe()`` keys).
        gather_sources: gather each chunk's distinct source rows (and move them to ``device``)
            instead of multiplying with the whole buffer; ``None`` = only off CPU.

    :meth:`predict` is what ``Trainer.evaluate`` calls (``pred, target = loader.predict(model,
    device)``); iterating yields the raw input rows in chunks (``Data(x=...)``, what a non-finite
    check inspects).  It runs in one process: every DDP rank computing it gets the same result.
    """

    def __init__(self, store: GraphStore, split_ids: Any, chunk_size: int = 16384,
                 max_chunk_edges: int = 1 << 22, buffer: str = "ram", buffer_dir: Optional[str] = None,
                 pe_keys: Sequence[str] = (), gather_sources: Optional[bool] = None):
        if buffer not in BUFFERS:
            raise ValueError(f"buffer={buffer!r} must be one of {list(BUFFERS)} ('disk' for graphs whose "
                             "activations do not fit in RAM)")
        for name, value in (("chunk_size", chunk_size), ("max_chunk_edges", max_chunk_edges)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not store.has("x"):
            raise ValueError(f"graph store '{store.path}' has no node features 'x'; layer-wise inference reads them")
        if not store.has("y"):
            raise ValueError(f"graph store '{store.path}' has no labels 'y'; layer-wise inference returns them "
                             "as the targets")
        ids = check_seeds(split_ids, store.num_nodes, "split_ids")
        if ids.shape[0] == 0:
            raise ValueError("split_ids is empty: pass the node ids of a non-empty split")
        if np.unique(ids).shape[0] != ids.shape[0]:
            raise ValueError("split_ids must be distinct node ids (pass np.unique(split_ids))")
        if isinstance(pe_keys, str):
            pe_keys = (pe_keys,)
        missing = [k for k in pe_keys if not store.has(f"pe/{k}")]
        if missing:
            raise ValueError(f"pe_keys {missing} are not stored in '{store.path}' (it has: {sorted(store.pe())})")
        self.store, self.pe_keys = store, tuple(pe_keys)
        self.chunk_size, self.max_chunk_edges = int(chunk_size), int(max_chunk_edges)
        self.buffer, self.buffer_dir, self.gather_sources = buffer, buffer_dir, gather_sources
        self.target, labelled = split_targets(store.y, np.asarray(ids))
        self.split_ids = np.ascontiguousarray(np.asarray(ids)[labelled])
        self._degree: Optional[np.ndarray] = None

    # ------------------------------------------------------------------ chunks
    @property
    def num_nodes(self) -> int:
        return self.store.num_nodes

    def node_chunks(self) -> List[Tuple[int, int]]:
        """Ranges ``(start, stop)`` of node ids covering every node (one pass of a layer)."""
        indptr = self.store.indptr
        return _chunks(self.num_nodes, lambda a, b: np.asarray(indptr[a:b + 1]) - int(indptr[a]),
                       self.chunk_size, self.max_chunk_edges)

    def split_chunks(self) -> List[Tuple[int, int]]:
        """Positions ``(start, stop)`` in ``split_ids`` of the last layer's chunks."""
        deg = self._row_lengths(self.split_ids)
        cum = np.zeros(deg.shape[0] + 1, dtype=np.int64)
        np.cumsum(deg, out=cum[1:])
        return _chunks(self.split_ids.shape[0], lambda a, b: cum[a:b + 1] - cum[a],
                       self.chunk_size, self.max_chunk_edges)

    def _row_lengths(self, ids: np.ndarray) -> np.ndarray:
        indptr = self.store.indptr
        return np.asarray(indptr[ids + 1], dtype=np.int64) - np.asarray(indptr[ids], dtype=np.int64)

    def __len__(self) -> int:
        """Chunks of one pass over every node."""
        return len(self.node_chunks())

    def __iter__(self) -> Iterator[Data]:
        """The raw inputs in chunks of nodes: ``Data(x=[n, F] float32, <pe key>=[n, d])``."""
        for a, b in self.node_chunks():
            yield self._input_data(a, b)

    def _input_data(self, a: int, b: int) -> Data:
        data = Data(x=_float_tensor(np.asarray(self.store.x[a:b])))
        pes = self.store.pe() if self.pe_keys else {}
        for key in self.pe_keys:
            data[key] = _float_tensor(np.asarray(pes[key][a:b]))
        data.num_nodes = b - a
        return data

    # ------------------------------------------------------------------ inference
    def predict(self, model: Any, device: Union[str, torch.device] = "cpu") -> Tuple[torch.Tensor, torch.Tensor]:
        """``(pred float32 [n, out], target [n])`` for the labelled split nodes, in ``split_ids`` order.

        ``model`` must follow the protocol of the module docstring; it is put in eval mode for the
        call (its mode is restored afterwards).  ``pred`` is on the CPU.
        """
        for name in ("layerwise_plan", "layerwise_input", "layerwise_layer", "layerwise_output"):
            if not callable(getattr(model, name, None)):
                raise ValueError(f"{type(model).__name__} has no {name}(): layer-wise inference needs a model that "
                                 "follows its protocol (graphgt.nn.model.MPNNModel with SAGE/GCN/GIN layers, or "
                                 "GPSModel without attention); evaluate with sampled batches instead "
                                 "(data.eval_mode=sampled)")
        device = torch.device(device)
        gather = self.gather_sources if self.gather_sources is not None else device.type != "cpu"
        was_training = model.training
        model.eval()
        tmp: Optional[Path] = None
        try:
            plan = model.layerwise_plan()
            dims = [int(d) for d in plan.dims]
            if self.buffer == "disk":
                tmp = Path(tempfile.mkdtemp(prefix="graphgt-layerwise-", dir=self.buffer_dir))
            with torch.inference_mode():
                return self._run(model, plan, dims, device, gather, tmp), self.target
        finally:
            model.train(was_training)
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def _buffers(self, dims: Sequence[int], skip_input: bool, tmp: Optional[Path]) -> List[Optional[np.ndarray]]:
        """Two flat float32 buffers; buffer ``k`` holds the activations ``d_j`` with ``j % 2 == k``,
        ``j < L`` (the last layer's output goes straight to the predictions)."""
        out: List[Optional[np.ndarray]] = []
        for k in (0, 1):
            widths = [d for j, d in enumerate(dims[:-1]) if j % 2 == k and not (j == 0 and skip_input)]
            if not widths:
                out.append(None)
                continue
            size = self.num_nodes * max(widths)
            if tmp is None:
                out.append(np.empty(size, dtype=np.float32))
            else:
                out.append(np.memmap(tmp / f"buffer{k}.f32", dtype=np.float32, mode="w+", shape=(size,)))
        return out

    def _run(self, model: Any, plan: Any, dims: List[int], device: torch.device, gather: bool,
             tmp: Optional[Path]) -> torch.Tensor:
        store, n = self.store, self.num_nodes
        indptr, indices = store.indptr, store.indices
        num_layers = len(dims) - 1
        x_raw = store.x
        skip_input = bool(plan.raw_input) and x_raw.dtype == np.float32 and not self.pe_keys
        flat = self._buffers(dims, skip_input, tmp)

        def view(j: int) -> np.ndarray:  # activations d_j as [N, d_j]
            if j == 0 and skip_input:
                return np.asarray(x_raw)
            return flat[j % 2][:n * dims[j]].reshape(n, dims[j])

        degree = loops = None
        if plan.needs_degree:
            degree = torch.from_numpy(np.diff(np.asarray(indptr)).astype(np.int64))
            loops = torch.from_numpy(self_loop_counts(indptr, indices))
        chunks = self.node_chunks()
        if not skip_input:
            x0 = view(0)
            for i, (a, b) in enumerate(chunks):
                data = self._input_data(a, b).to(device)
                x0[a:b] = model.layerwise_input(data).float().cpu().numpy()
                self._maybe_release(i, x0)
        for layer in range(num_layers):
            with warnings.catch_warnings():  # a read-only memory map as a tensor: never written
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                src = torch.from_numpy(view(layer))
            last = layer == num_layers - 1
            if last:
                pred = torch.empty(self.split_ids.shape[0], int(plan.out_dim), dtype=torch.float32)
                for i, (a, b) in enumerate(self.split_chunks()):
                    ids = self.split_ids[a:b]
                    block = self._block(src, ids, indptr, indices, degree, loops, device, gather)
                    out = model.layerwise_output(model.layerwise_layer(layer, block))
                    pred[a:b] = out.float().cpu()
                    self._maybe_release(i, None)
                return pred
            dst = view(layer + 1)
            for i, (a, b) in enumerate(chunks):
                block = self._block(src, (a, b), indptr, indices, degree, loops, device, gather)
                dst[a:b] = model.layerwise_layer(layer, block).float().cpu().numpy()
                self._maybe_release(i, dst)
            if tmp is not None:
                release_pages(view(layer))
        raise AssertionError("unreachable: a model has at least one layer")  # pragma: no cover

    def _maybe_release(self, i: int, written: Optional[np.ndarray]) -> None:
        """Every 16 chunks on disk buffers: drop the mapped pages of the store and of ``written`` from RSS."""
        if self.buffer == "disk" and i % 16 == 15:
            self.store.release()
            if written is not None:
                release_pages(written)

    def _block(self, src: torch.Tensor, ids: Union[np.ndarray, Tuple[int, int]], indptr: np.ndarray,
               indices: np.ndarray, degree: Optional[torch.Tensor], loops: Optional[torch.Tensor],
               device: torch.device, gather: bool) -> GraphBlock:
        crow, col = _csr_rows(indptr, indices, ids)
        dst_ids = np.arange(ids[0], ids[1], dtype=np.int64) if isinstance(ids, tuple) else ids
        t = dst_ids.shape[0]
        if gather:
            nodes, inverse = np.unique(np.concatenate([dst_ids, col]), return_inverse=True)
            nodes_t = torch.from_numpy(nodes)
            x_src = src[nodes_t].to(device)
            dst_index = torch.from_numpy(inverse[:t].astype(np.int64))
            col_t = torch.from_numpy(inverse[t:].astype(np.int64))
            x_dst = x_src[dst_index.to(device)]
            deg = degree[nodes_t] if degree is not None else None
            lp = loops[nodes_t] if loops is not None else None
        else:
            x_src = src if src.device == device else src.to(device)
            dst_index = torch.from_numpy(dst_ids)
            col_t = torch.from_numpy(col)
            x_dst = x_src[ids[0]:ids[1]] if isinstance(ids, tuple) else x_src[dst_index.to(device)]
            deg, lp = degree, loops
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            adj = torch.sparse_csr_tensor(torch.from_numpy(crow).to(device), col_t.to(device),
                                          torch.ones(col_t.shape[0], dtype=x_src.dtype, device=device),
                                          (t, x_src.shape[0]), check_invariants=False)
        return GraphBlock(x_src=x_src, x_dst=x_dst, adj_t=adj, dst_index=dst_index.to(device),
                          dst_ids=torch.from_numpy(dst_ids).to(device),
                          src_degree=deg.to(device) if deg is not None else None,
                          src_self_loops=lp.to(device) if lp is not None else None)

    def __repr__(self) -> str:
        return (f"LayerwiseInference(store={self.store.name!r}, split={self.split_ids.shape[0]}, "
                f"chunk_size={self.chunk_size}, max_chunk_edges={self.max_chunk_edges}, buffer={self.buffer!r})")
