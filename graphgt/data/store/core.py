"""The graph store: a directory of memory-mapped arrays for graphs that do not fit in RAM.

Layout of a store directory (every array is a standard ``.npy`` file, opened with ``mmap``)::

    meta.json           format version, name, num_nodes, num_edges, task, array shapes/dtypes
    indptr.npy          int64   [N + 1]     CSR row pointers (row i = the neighbours of node i)
    indices.npy         int32   [E]         CSR column indices (int64 once N >= 2**31)
    x.npy               float16/float32 [N, F]   node features
    y.npy               int16/int32/int64 [N] class ids (-1 = unlabelled), or float32 [N, T]
    split/train.npy     int64   [n_train]   node ids of each split (also val, test)
    pe/<key>.npy        float32 [N, d]      optional precomputed positional encodings
    extra/<name>.npy    anything else a builder wants to keep (e.g. OGB's node years)

Opening a store (:meth:`GraphStore.open`) reads ``meta.json`` and maps the arrays: it costs no
time and no RAM beyond the pages that are touched later.  Pages read through a mapping count in
the process's resident set (RSS) until the kernel drops them; :meth:`GraphStore.release` tells
the kernel to drop them now (``madvise(MADV_DONTNEED)``; the page cache keeps them, so nothing is
re-read from disk needlessly), which keeps the RSS of a long sampled run bounded.

A store is written by :class:`StoreWriter` into a temporary sibling directory that is renamed into
place by :meth:`StoreWriter.commit`: a crash or a kill during a (possibly hour-long) build never
leaves a directory that looks like a complete store.  Big arrays are streamed in chunks with
:meth:`StoreWriter.append_array` (sequential ``write`` calls: the writer's RSS stays at one chunk).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from graphgt.errors import StoreError
from graphgt.io import atomic_write_json
from graphgt.pages import advise_mapping, larger_than_ram_share, release_pages

FORMAT_VERSION = 1
META = "meta.json"
SPLITS = ("train", "val", "test")

ArrayLike = Union[np.ndarray, "np.memmap"]


def index_dtype(num_nodes: int) -> np.dtype:
    """The narrowest dtype for CSR column indices of a graph with ``num_nodes`` nodes."""
    return np.dtype(np.int32) if num_nodes < 2 ** 31 else np.dtype(np.int64)


def _open_npy(path: Path) -> np.ndarray:
    """Map a ``.npy`` file read-only (an empty array is read normally: ``mmap`` refuses size 0)."""
    try:
        arr = np.load(path, mmap_mode="r")
    except ValueError:  # zero-size arrays cannot be mapped
        arr = np.load(path)
    return arr


class NpyAppender:
    """Write a ``.npy`` file of a known final shape chunk by chunk along axis 0.

    The header is written first; ``write(chunk)`` appends rows with plain file writes (no mapping,
    so the writer's memory stays at one chunk); ``close()`` checks that exactly ``shape[0]`` rows
    were written.

    Args:
        path: the ``.npy`` file to create.
        shape: the final shape (rows first).
        dtype: element type; chunks are cast to it.
    """

    def __init__(self, path: Path, shape: Sequence[int], dtype: Any):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._f = open(self.path, "wb")
        np.lib.format.write_array_header_1_0(
            self._f, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": self.shape})

    def write(self, chunk: np.ndarray) -> None:
        chunk = np.ascontiguousarray(chunk, dtype=self.dtype)
        if chunk.shape[1:] != self.shape[1:]:
            raise ValueError(f"{self.path.name}: chunk of shape {chunk.shape} does not fit rows of shape {self.shape[1:]}")
        if self.rows + chunk.shape[0] > self.shape[0]:
            raise ValueError(f"{self.path.name}: more than the declared {self.shape[0]} rows written")
        self._f.write(memoryview(chunk).cast("B"))
        self.rows += chunk.shape[0]

    def close(self) -> None:
        if self._f.closed:
            return
        self._f.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path.name}: {self.rows} rows written, {self.shape[0]} declared")

    def __enter__(self) -> "NpyAppender":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._f.close()


class StoreWriter:
    """Builds a store in ``<path>.tmp-*`` and renames it to ``path`` on :meth:`commit`.

    Usage::

        with StoreWriter(path, name="ogbn-products", num_nodes=n) as w:
            w.save_array("indptr", indptr)              # small/medium arrays in one go
            with w.append_array("indices", (nnz,), np.int32) as a:
                for chunk in chunks: a.write(chunk)     # big arrays streamed
            w.save_array("split/train", train_idx)
            w.meta["task"] = {...}
        # committed on a clean exit; the temporary directory is removed on an exception

    Args:
        path: the final store directory (must not exist unless ``overwrite``).
        name: dataset name for reports.
        num_nodes: number of nodes ``N``.
        overwrite: replace an existing store at ``path`` on commit.
    """

    def __init__(self, path: Union[str, Path], name: str, num_nodes: int, overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise StoreError(f"graph store '{self.path}' already exists; remove it or pass overwrite=True")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"))
        self.overwrite = overwrite
        self.meta: Dict[str, Any] = {"format_version": FORMAT_VERSION, "name": name, "num_nodes": int(num_nodes),
                                     "arrays": {}}
        self._committed = False

    def _file(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"array key '{key}' must be a relative name such as 'x' or 'split/train'")
        f = self.tmp / f"{key}.npy"
        f.parent.mkdir(parents=True, exist_ok=True)
        return f

    def save_array(self, key: str, array: np.ndarray) -> None:
        """Write ``array`` as ``<key>.npy`` in one go."""
        array = np.ascontiguousarray(array)
        np.save(self._file(key), array)
        self.meta["arrays"][key] = {"shape": list(array.shape), "dtype": array.dtype.str}

    def append_array(self, key: str, shape: Sequence[int], dtype: Any) -> NpyAppender:
        """An :class:`NpyAppender` that streams rows into ``<key>.npy``."""
        self.meta["arrays"][key] = {"shape": [int(s) for s in shape], "dtype": np.dtype(dtype).str}
        return NpyAppender(self._file(key), shape, dtype)

    def array_path(self, key: str, shape: Sequence[int], dtype: Any) -> np.memmap:
        """A writable memory map of a new ``<key>.npy`` (for builders that scatter rather than append)."""
        self.meta["arrays"][key] = {"shape": [int(s) for s in shape], "dtype": np.dtype(dtype).str}
        return np.lib.format.open_memmap(self._file(key), mode="w+", dtype=np.dtype(dtype),
                                         shape=tuple(int(s) for s in shape))

    def commit(self) -> "GraphStore":
        """Check the arrays, write ``meta.json`` last, rename into place; returns the opened store."""
        for key, info in self.meta["arrays"].items():
            arr = _open_npy(self.tmp / f"{key}.npy")
            if list(arr.shape) != info["shape"] or arr.dtype.str != info["dtype"]:
                raise StoreError(f"store array '{key}': wrote {arr.shape} {arr.dtype}, declared {info}")
            del arr
        if "indices" in self.meta["arrays"]:
            self.meta["num_edges"] = int(self.meta["arrays"]["indices"]["shape"][0])
        (self.tmp / META).write_text(json.dumps(self.meta, indent=2, default=str))
        if self.path.exists():
            if not self.overwrite:
                raise StoreError(f"graph store '{self.path}' appeared while building; not replacing it")
            old = self.path.with_name(f".{self.path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.path, old)
            os.replace(self.tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)
        self._committed = True
        return GraphStore.open(self.path)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self._committed:
            self.commit()
        elif exc_type is not None:
            self.abort()


class GraphStore:
    """A read-only view of a store directory (see the module docstring for the layout).

    Attributes:
        path: the directory.
        meta: the parsed ``meta.json`` (``name``, ``num_nodes``, ``num_edges``, ``task`` ...).
    """

    def __init__(self, path: Path, meta: Dict[str, Any]):
        self.path = Path(path)
        self.meta = meta
        self._arrays: Dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ opening
    @staticmethod
    def exists(path: Union[str, Path]) -> bool:
        """Whether ``path`` holds a complete store (its ``meta.json`` is written last)."""
        return (Path(path) / META).is_file()

    @classmethod
    def open(cls, path: Union[str, Path]) -> "GraphStore":
        """Open ``path`` (reads only ``meta.json``; arrays are mapped on first access)."""
        path = Path(path)
        meta_file = path / META
        if not meta_file.is_file():
            hint = " (an interrupted build leaves only a '.<name>.*.tmp' directory; build it again)"
            raise StoreError(f"no graph store at '{path}': '{meta_file.name}' is missing{hint}")
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"graph store '{path}': {META} is not valid JSON ({e}); rebuild the store") from None
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreError(f"graph store '{path}' has format_version={version}, this graphgt reads "
                             f"{FORMAT_VERSION}; rebuild the store with this version")
        for key in meta.get("arrays", {}):
            if not (path / f"{key}.npy").is_file():
                raise StoreError(f"graph store '{path}': array file '{key}.npy' listed in {META} is missing; "
                                 "rebuild the store")
        return cls(path, meta)

    # ------------------------------------------------------------------ arrays
    def has(self, key: str) -> bool:
        return key in self.meta["arrays"]

    def array(self, key: str) -> np.ndarray:
        """The memory-mapped array ``<key>.npy`` (mapped once, then reused)."""
        if key not in self._arrays:
            if not self.has(key):
                raise StoreError(f"graph store '{self.path}' has no array '{key}' "
                                 f"(it has: {', '.join(sorted(self.meta['arrays']))})")
            arr = _open_npy(self.path / f"{key}.npy")
            if key != "indptr" and not key.startswith("split/") and larger_than_ram_share(arr):
                # rows are read at random (sampled nodes): on a store that does not fit in the page
                # cache, the kernel's read-ahead turns each 256-byte feature row into a ~128 KiB disk
                # read (measured: 1.1 GB/s of reads for a few MB of features per batch).  Arrays that
                # fit keep the default (its fault-around maps 16 cached pages per fault)
                advise_mapping(arr, "MADV_RANDOM")
            self._arrays[key] = arr
        return self._arrays[key]

    def keys(self, prefix: str = "") -> Tuple[str, ...]:
        """Array keys, optionally those under ``prefix`` (e.g. ``'pe/'``)."""
        return tuple(k for k in self.meta["arrays"] if k.startswith(prefix))

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.path.name))

    @property
    def num_nodes(self) -> int:
        return int(self.meta["num_nodes"])

    @property
    def num_edges(self) -> int:
        """Number of stored (directed) CSR entries."""
        return int(self.meta.get("num_edges", self.array("indices").shape[0]))

    @property
    def indptr(self) -> np.ndarray:
        return self.array("indptr")

    @property
    def indices(self) -> np.ndarray:
        return self.array("indices")

    @property
    def x(self) -> np.ndarray:
        return self.array("x")

    @property
    def y(self) -> np.ndarray:
        return self.array("y")

    def split(self, name: str) -> np.ndarray:
        """Node ids of split ``name`` (``train``, ``val`` or ``test``)."""
        return self.array(f"split/{name}")

    def pe(self) -> Dict[str, np.ndarray]:
        """Stored positional encodings ``{key: [N, d]}`` (keys as the PE classes name them)."""
        return {k[len("pe/"):]: self.array(k) for k in self.keys("pe/")}

    def degree(self) -> np.ndarray:
        return np.diff(self.indptr)

    # ------------------------------------------------------------------ memory
    def release(self) -> None:
        """Drop the pages of every mapped array from this process's RSS (they stay in the page cache)."""
        for arr in self._arrays.values():
            release_pages(arr)

    def close(self) -> None:
        self._arrays.clear()

    def __getstate__(self) -> Dict[str, Any]:  # worker processes re-map the files themselves
        return {"path": self.path, "meta": self.meta}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.path, self.meta, self._arrays = Path(state["path"]), dict(state["meta"]), {}

    def __repr__(self) -> str:
        arrays = ", ".join(f"{k}{tuple(v['shape'])}:{np.dtype(v['dtype']).name}" for k, v in self.meta["arrays"].items())
        return f"GraphStore('{self.path}', name={self.name!r}, num_nodes={self.num_nodes}, arrays=[{arrays}])"


@dataclass
class Streamed:
    """An array too big to hold in memory, written by ``fill(out)`` into a writable memory map ``out``
    of ``shape`` and ``dtype`` (e.g. propagated features of a papers100M-sized store, row chunk by
    row chunk)."""

    shape: Tuple[int, ...]
    dtype: Any
    fill: Callable[[np.ndarray], None]


def _write_meta(path: Path, meta: Mapping[str, Any]) -> None:
    atomic_write_json(dict(meta), Path(path) / META)


def update_meta(path: Union[str, Path], updates: Mapping[Tuple[str, ...], Any]) -> None:
    """Set (or, for the value ``None``, remove) entries of a store's ``meta.json``, atomically.

    Keys are paths into the JSON object: ``("hop_features",)`` is a top-level record,
    ``("pe", "rwse")`` the entry ``rwse`` of the record ``pe`` (created when missing).
    """
    meta = json.loads((Path(path) / META).read_text())
    for keys, value in updates.items():
        node = meta
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    _write_meta(Path(path), meta)


def _write_npy(target: Path, array: Union[np.ndarray, Streamed]) -> Tuple[List[int], str]:
    """Write one ``.npy`` file through a temporary file and a rename; its (shape, dtype string)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        if isinstance(array, Streamed):
            os.close(fd)
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(array.dtype),
                                            shape=tuple(int(s) for s in array.shape))
            array.fill(out)
            out.flush()
            shape, dtype = list(out.shape), out.dtype.str
            del out
        else:
            array = np.ascontiguousarray(array)
            with os.fdopen(fd, "wb") as f:
                np.save(f, array)
            shape, dtype = list(array.shape), array.dtype.str
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return shape, dtype


def add_arrays(path: Union[str, Path], arrays: Mapping[str, Union[np.ndarray, Streamed]],
               overwrite: bool = False) -> GraphStore:
    """Add arrays (e.g. ``pe/rwse``) to an existing store, in the given order; each file and then
    ``meta.json`` is replaced atomically after each array, so a crash leaves the store with the
    arrays written so far, never a half-written one, and a later array's ``fill`` may read an
    earlier one from disk.

    Args:
        path: the store directory.
        arrays: ``{key: array or Streamed}``; an array's first dimension need not be ``num_nodes``.
        overwrite: replace arrays that already exist (otherwise an existing key is an error).
    """
    store = GraphStore.open(path)
    meta = json.loads((store.path / META).read_text())
    for key in arrays:
        if key in meta["arrays"] and not overwrite:
            raise StoreError(f"graph store '{store.path}' already has array '{key}'; pass overwrite=True")
    for key, array in arrays.items():
        shape, dtype = _write_npy(store.path / f"{key}.npy", array)
        meta["arrays"][key] = {"shape": shape, "dtype": dtype}
        _write_meta(store.path, meta)
    return GraphStore.open(path)


def write_derived(path: Union[str, Path], records: Mapping[Tuple[str, ...], Any],
                  arrays: Mapping[str, Union[np.ndarray, Streamed]]) -> GraphStore:
    """The one way to add arrays computed from a store (PEs, hop features) with the records that vouch
    for them (the parameters they were computed with, e.g. ``meta["pe"]["rwse"] = cache_key``).

    Crash safety: the records are removed first, the arrays written (:func:`add_arrays`), the records
    written last, so an interrupted call leaves arrays that no record vouches for, and the caller's
    up-to-date check (records present and matching) recomputes them.
    """
    update_meta(path, {keys: None for keys in records})
    add_arrays(path, arrays, overwrite=True)
    update_meta(path, records)
    return GraphStore.open(path)


def csr_from_edges(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(indptr int64 [N+1], indices [E])``: CSR rows by ``src`` (stable), columns ``dst``.

    An in-memory helper for small and medium graphs (fixtures, conversions of graphs that fit).
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst)
    order = np.argsort(src, kind="stable")
    counts = np.bincount(src, minlength=num_nodes)
    indptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, dst[order].astype(index_dtype(num_nodes))


def write_store(path: Union[str, Path], name: str, num_nodes: int, indptr: np.ndarray, indices: np.ndarray,
                x: Optional[np.ndarray] = None, y: Optional[np.ndarray] = None,
                splits: Optional[Mapping[str, np.ndarray]] = None, task: Optional[Mapping[str, Any]] = None,
                extra: Optional[Mapping[str, np.ndarray]] = None, overwrite: bool = False) -> GraphStore:
    """Write an in-memory graph as a store (small graphs, fixtures, tests)."""
    with StoreWriter(path, name=name, num_nodes=num_nodes, overwrite=overwrite) as w:
        w.save_array("indptr", np.asarray(indptr, dtype=np.int64))
        w.save_array("indices", np.asarray(indices).astype(index_dtype(num_nodes), copy=False))
        if x is not None:
            w.save_array("x", x)
        if y is not None:
            w.save_array("y", y)
        for split, idx in (splits or {}).items():
            w.save_array(f"split/{split}", np.asarray(idx, dtype=np.int64))
        for key, arr in (extra or {}).items():
            w.save_array(key, arr)
        if task is not None:
            w.meta["task"] = dict(task)
    return GraphStore.open(path)


def iter_chunks(total: int, chunk: int) -> Iterable[Tuple[int, int]]:
    """``(start, stop)`` ranges covering ``[0, total)`` in steps of ``chunk``."""
    for start in range(0, total, chunk):
        yield start, min(start + chunk, total)
