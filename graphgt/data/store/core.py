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

Opening a store (:meth:`GraphStore.open`) reads ``meta.json``, checks every array file's header
(it opens, is not truncated, and has the shape and dtype ``meta.json`` declares) and the contents
that a sampler would trust blindly: ``indptr`` (``[N + 1]``, from 0 to ``len(indices)``,
non-decreasing) and the node ids of ``indices`` and ``split/*`` (in ``[0, N)``).  A corrupt store is a
:class:`StoreError` naming the file, the bad value and the fix, instead of a segfault in a compiled
sampler.  Those scans are sequential plain reads in chunks (memory: one chunk of
:data:`SCAN_CHUNK` entries; measured on 10M ``int32`` indices: 0.003-0.009 s from the page cache,
0.03 s after evicting the file from it, i.e. about 0.5-1.5 s warm and 4-5 s cold for papers100M's
1.6B entries) and run once per process per file version: a second open of an unchanged store
(after adding PEs, in the same run, or by a sampler's own check) costs only the header reads.  :meth:`GraphStore.verify` is the full check (every value, the
checksums recorded at build time); ``scripts/verify_store.py PATH`` runs it.  The arrays are
mapped on first access: no time and no RAM beyond the pages that are touched later.  Pages read through a mapping count in
the process's resident set (RSS) until the kernel drops them; :meth:`GraphStore.release` tells
the kernel to drop them now (``madvise(MADV_DONTNEED)``; the page cache keeps them, so nothing is
re-read from disk needlessly), which keeps the RSS of a long sampled run bounded.

A store is written by :class:`StoreWriter` into a temporary sibling directory that is renamed into
place by :meth:`StoreWriter.commit`: a crash or a kill during a (possibly hour-long) build never
leaves a directory that looks like a complete store.  Big arrays are streamed in chunks with
:meth:`StoreWriter.append_array` (sequential ``write`` calls: the writer's RSS stays at one chunk).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

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


# ------------------------------------------------------------------------------------ checking arrays
#: entries per read of the array scans (8 MiB of int64): plain sequential reads, so a scan holds one
#: chunk in memory whatever the array's size, and the pages it reads never count in the RSS
SCAN_CHUNK = 1 << 20


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header says: ``shape``, ``dtype``, ``fortran_order``, and ``offset`` (the byte
    where the data starts)."""

    shape: Tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def count(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize


def read_npy_header(path: Path) -> NpyHeader:
    """The header of the ``.npy`` file ``path``, without reading (or mapping) its data.

    Raises ``ValueError`` (not a ``.npy`` file, or a version other than 1.0/2.0, which numpy
    writes for anything but structured dtypes with non-latin-1 field names) or ``OSError``.
    """
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        return NpyHeader(tuple(int(d) for d in shape), np.dtype(dtype), bool(fortran), f.tell())


def _file_chunks(path: Path, header: NpyHeader, chunk: int = SCAN_CHUNK) -> Iterator[Tuple[int, np.ndarray]]:
    """``(start, values)`` over the flat data of a ``.npy`` file, read with plain ``readinto`` calls.

    ``values`` is a reused buffer: it is valid until the next step.  A file shorter than its
    header says raises ``EOFError``.
    """
    buf = np.empty(min(chunk, max(header.count, 1)), dtype=header.dtype)
    with open(path, "rb", buffering=0) as f:
        f.seek(header.offset)
        start = 0
        while start < header.count:
            n = min(buf.shape[0], header.count - start)
            view = buf[:n]
            raw = view.view(np.uint8)
            got = 0
            while got < raw.nbytes:
                k = f.readinto(raw[got:])
                if not k:
                    raise EOFError(f"'{path.name}' ends after {header.offset + start * header.dtype.itemsize + got} "
                                   f"bytes; its header declares {header.offset + header.nbytes}")
                got += k
            yield start, view
            start += n


def _array_chunks(arr: np.ndarray, chunk: int = SCAN_CHUNK) -> Iterator[Tuple[int, np.ndarray]]:
    """``(start, values)`` over a 1-D array, ``chunk`` entries at a time."""
    for start in range(0, arr.shape[0], chunk):
        yield start, np.asarray(arr[start:start + chunk])


def _first_outside(chunks: Iterable[Tuple[int, np.ndarray]], upper: int) -> Optional[Tuple[int, int]]:
    """``(position, value)`` of the first value outside ``[0, upper)``, or None (a min/max per chunk)."""
    for start, c in chunks:
        if c.size and (int(c.min()) < 0 or int(c.max()) >= upper):
            i = int(np.flatnonzero((c < 0) | (c >= upper))[0])
            return start + i, int(c[i])
    return None


def _indptr_problem(chunks: Iterable[Tuple[int, np.ndarray]], nnz: int) -> Optional[str]:
    """What is wrong with CSR row pointers that should run from 0 to ``nnz`` without decreasing."""
    prev: Optional[int] = None
    for start, c in chunks:
        if not c.size:
            continue
        if start == 0 and int(c[0]) != 0:
            return f"starts at indptr[0]={int(c[0])} (must be 0)"
        if prev is not None and int(c[0]) < prev:
            return f"decreases at row {start - 1}: indptr[{start - 1}]={prev} > indptr[{start}]={int(c[0])}"
        down = c[1:] < c[:-1]
        if down.any():
            i = int(np.flatnonzero(down)[0])
            return (f"decreases at row {start + i}: indptr[{start + i}]={int(c[i])} > "
                    f"indptr[{start + i + 1}]={int(c[i + 1])}")
        prev = int(c[-1])
    if prev is None:
        return "is empty (must hold N + 1 row pointers)"
    if prev != nnz:
        return f"ends at indptr[-1]={prev}, but indices holds {nnz} entries"
    return None


#: checks that passed in this process, by (check, file identity, parameter): a store opened again
#: (after PEs are added, by each data module of the run) is not scanned again unless a file changed
_PASSED: Dict[Tuple[Any, ...], bool] = {}


def _identity(path: Path) -> Tuple[Any, ...]:
    """A file's identity and version: a rewritten, replaced or truncated file gets another one."""
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _mapped_file(arr: Any) -> Optional[Tuple[Path, NpyHeader]]:
    """The ``.npy`` file that ``arr`` maps in full (as ``np.load(mmap_mode='r')`` returns it), or None."""
    filename = getattr(arr, "filename", None)
    if not isinstance(arr, np.memmap) or not filename:
        return None
    try:
        header = read_npy_header(Path(filename))
    except (OSError, ValueError):
        return None
    if header.offset != arr.offset or header.shape != arr.shape or header.dtype != arr.dtype:
        return None  # a view of part of the file, or a raw map: scan the values as given
    return Path(filename), header


def _scan_once(kind: str, arr: Any, param: int, scan: Callable[[Iterable[Tuple[int, np.ndarray]]], Any],
               source: Optional[Tuple[Path, NpyHeader]] = None) -> Any:
    """Run ``scan`` over the values of ``arr`` (or of ``source``, a file and its header), once per
    process and file version for files; None means the check passed."""
    source = source or _mapped_file(arr)
    if source is None:
        return scan(_array_chunks(np.asarray(arr).reshape(-1)))
    key = (kind, _identity(source[0]), param)
    if key in _PASSED:
        return None
    result = scan(_file_chunks(*source))
    if result is None:
        _PASSED[key] = True
    return result


def csr_problem(indptr: Any, indices: Any, num_nodes: int) -> Optional[str]:
    """What makes ``(indptr, indices)`` unsafe for the compiled samplers, or None.

    ``indptr`` must run from 0 to ``len(indices)`` without decreasing and ``indices`` must hold
    node ids in ``[0, num_nodes)``: the kernels index with these values unchecked.  Arrays that
    map a whole ``.npy`` file (a store's) are scanned once per process and file version.
    """
    nnz = int(np.shape(indices)[0])
    problem = _scan_once("indptr", indptr, nnz, lambda c: _indptr_problem(c, nnz))
    if problem is not None:
        return f"indptr {problem}"
    bad = _scan_once("bounds", indices, int(num_nodes), lambda c: _first_outside(c, int(num_nodes)))
    if bad is not None:
        return f"indices[{bad[0]}]={bad[1]} is not a node id in [0, {num_nodes})"
    return None


def _sha256(path: Path) -> str:
    """SHA-256 of a file, read in 8 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        for block in iter(lambda: f.read(1 << 23), b""):
            h.update(block)
    return h.hexdigest()


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
        """Check the arrays, record their SHA-256 (for :meth:`GraphStore.verify`), write ``meta.json``
        last, rename into place; returns the opened (and checked) store."""
        self.meta["sha256"] = {}
        for key, info in self.meta["arrays"].items():
            arr = _open_npy(self.tmp / f"{key}.npy")
            if list(arr.shape) != info["shape"] or arr.dtype.str != info["dtype"]:
                raise StoreError(f"store array '{key}': wrote {arr.shape} {arr.dtype}, declared {info}")
            del arr
            self.meta["sha256"][key] = _sha256(self.tmp / f"{key}.npy")
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
    def open(cls, path: Union[str, Path], check: bool = True) -> "GraphStore":
        """Open and check ``path``; arrays are mapped on first access.

        Checks (a :class:`StoreError` naming the file, the bad value and the fix): ``meta.json``;
        every array file's header against ``meta.json`` (:meth:`check_files`); ``indptr`` and the
        node ids in ``indices`` and ``split/*`` (:meth:`check_graph`, scanned once per process and
        file version).  ``check=False`` stops after ``meta.json`` and the files' presence, for
        :meth:`verify`, which then reports every problem rather than the first.
        """
        path = Path(path)
        meta_file = path / META
        if not meta_file.is_file():
            hint = " (an interrupted build leaves only a '.<name>.*.tmp' directory; build it again)"
            raise StoreError(f"no graph store at '{path}': '{meta_file.name}' is missing{hint}")
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"graph store '{path}': {META} is not valid JSON ({e}); rebuild the store") from None
        version = meta.get("format_version") if isinstance(meta, dict) else None
        if version != FORMAT_VERSION:
            raise StoreError(f"graph store '{path}' has format_version={version}, this graphgt reads "
                             f"{FORMAT_VERSION}; rebuild the store with this version")
        num_nodes = meta.get("num_nodes")
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 0 \
                or not isinstance(meta.get("arrays", {}), dict):
            raise StoreError(f"graph store '{path}': {META} has num_nodes={num_nodes!r} and arrays of type "
                             f"{type(meta.get('arrays')).__name__} (need an integer >= 0 and a mapping); "
                             f"{cls._fix(path)}")
        meta.setdefault("arrays", {})
        for key in meta["arrays"]:
            if not (path / f"{key}.npy").is_file():
                raise StoreError(f"graph store '{path}': array file '{key}.npy' listed in {META} is missing; "
                                 "rebuild the store")
        store = cls(path, meta)
        if check:
            store.check_files()
            store.check_graph()
        return store

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _fix(path: Path) -> str:
        return (f"rebuild the store: delete '{path}' (graphgt rebuilds a store it built from its source on the "
                f"next run; a store given as data.source.path must be rebuilt by whatever made it); "
                f"'python scripts/verify_store.py {path}' reports every problem")

    def _fail(self, key: str, problem: str) -> StoreError:
        return StoreError(f"graph store '{self.path}': '{key}.npy' {problem}; {self._fix(self.path)}")

    def header(self, key: str) -> NpyHeader:
        """The header of ``<key>.npy``, checked against the file size (a :class:`StoreError` when the
        file is not a ``.npy``, is truncated, or holds Python objects)."""
        f = self.path / f"{key}.npy"
        try:
            h = read_npy_header(f)
        except (OSError, ValueError, EOFError, SyntaxError) as e:
            raise self._fail(key, f"cannot be read as a .npy file ({type(e).__name__}: {e})") from None
        if h.dtype.hasobject:
            raise self._fail(key, f"holds Python objects (dtype {h.dtype}), which a store never does")
        size = f.stat().st_size
        if size < h.offset + h.nbytes:
            raise self._fail(key, f"is truncated: {size} bytes, but its header declares shape {list(h.shape)} "
                                  f"{h.dtype} ({h.offset + h.nbytes} bytes)")
        return h

    def check_files(self) -> Dict[str, NpyHeader]:
        """Check every array file against ``meta.json`` without reading data: the header opens, the
        file is as long as the header says, and shape and dtype are those ``meta.json`` declares;
        ``indptr``/``indices``/``split/*`` are 1-D integer arrays of consistent lengths, and ``x``,
        ``y`` and ``pe/*`` have one row per node.  Returns the headers."""
        headers: Dict[str, NpyHeader] = {}
        n = self.num_nodes
        for key, info in self.meta["arrays"].items():
            h = headers[key] = self.header(key)
            declared = (list(info.get("shape", [])), str(info.get("dtype")))
            if list(h.shape) != declared[0] or h.dtype.str != declared[1]:
                raise self._fail(key, f"has shape {list(h.shape)} dtype {h.dtype.str}, but {META} declares shape "
                                      f"{declared[0]} dtype {declared[1]} (the file or {META} was replaced)")
            one_d_int = key in ("indptr", "indices") or key.startswith("split/")
            if one_d_int and (len(h.shape) != 1 or not np.issubdtype(h.dtype, np.integer)):
                raise self._fail(key, f"must be a 1-D integer array, has shape {list(h.shape)} dtype {h.dtype}")
            if (key in ("x", "y") or key.startswith("pe/")) and (not h.shape or h.shape[0] != n):
                raise self._fail(key, f"has {h.shape[0] if h.shape else 0} rows, but the store has num_nodes={n} "
                                      f"({META})")
        if "indptr" in headers and headers["indptr"].shape[0] != n + 1:
            raise self._fail("indptr", f"has {headers['indptr'].shape[0]} entries; num_nodes={n} in {META} needs "
                                       f"{n + 1}")
        if "indices" in headers and "num_edges" in self.meta and headers["indices"].shape[0] != self.meta["num_edges"]:
            raise self._fail("indices", f"has {headers['indices'].shape[0]} entries, but {META} says "
                                        f"num_edges={self.meta['num_edges']}")
        return headers

    def check_graph(self, once: bool = True) -> List[str]:
        """Check the values a sampler indexes with: ``indptr`` runs from 0 to ``len(indices)`` without
        decreasing, and ``indices`` and ``split/*`` hold node ids in ``[0, N)``.

        Sequential chunked reads (a min/max per chunk, memory one chunk).  With ``once``, a file
        version that passed in this process is not read again.  Returns what was checked; raises
        a :class:`StoreError` on the first problem.
        """
        done: List[str] = []
        for line_or_problem in self._graph_checks(once):
            if isinstance(line_or_problem, StoreError):
                raise line_or_problem
            done.append(line_or_problem)
        return done

    def _graph_checks(self, once: bool = False) -> Iterator[Union[str, StoreError]]:
        """Each check of :meth:`check_graph`: a line saying what passed, or the error of what failed."""
        n = self.num_nodes
        arrays = self.meta["arrays"]
        if "indptr" in arrays and "indices" in arrays:
            nnz = int(arrays["indices"]["shape"][0])
            source = (self.path / "indptr.npy", self.header("indptr"))
            problem = self._scan("indptr", "indptr", nnz, lambda c: _indptr_problem(c, nnz), source, once)
            if problem is not None:
                yield self._fail("indptr", f"{problem}: the CSR row pointers are corrupt")
            else:
                yield f"indptr: {n + 1} row pointers from 0 to {nnz}, non-decreasing"
        for key in [k for k in arrays if k == "indices" or k.startswith("split/")]:
            source = (self.path / f"{key}.npy", self.header(key))
            bad = self._scan(key, "bounds", n, lambda c: _first_outside(c, n), source, once)
            if bad is not None:
                yield self._fail(key, f"holds node id {bad[1]} at position {bad[0]}, outside [0, {n}) (num_nodes="
                                      f"{n} in {META}): the file is corrupt or belongs to another graph")
            else:
                yield f"{key}: {source[1].count} node ids in [0, {n})"

    def _scan(self, key: str, kind: str, param: int, scan: Callable[[Iterable[Tuple[int, np.ndarray]]], Any],
              source: Tuple[Path, NpyHeader], once: bool) -> Any:
        """``scan`` over the values of ``<key>.npy`` (once per process and file version with ``once``)."""
        try:
            if once:
                return _scan_once(kind, None, param, scan, source)
            return scan(_file_chunks(*source))
        except (OSError, EOFError) as e:  # shrank or vanished since its header was checked
            raise self._fail(key, f"cannot be read to the end ({type(e).__name__}: {e})") from None

    def verify(self, report: Callable[[str], None] = lambda line: None) -> List[str]:
        """The full check: everything :meth:`open` checks (read again, not from this process's
        record), every value of ``x`` and ``pe/*`` finite, integer labels ``y >= -1`` (and below
        the task's ``num_outputs`` for multiclass), and each file's SHA-256 against the one recorded
        when it was written (stores built before checksums were recorded say so and skip it).

        Args:
            report: called with one line per check as it completes (``scripts/verify_store.py``
                prints them).

        Returns:
            the lines reported.  Raises :class:`StoreError` listing every problem found.
        """
        lines: List[str] = []
        problems: List[str] = []

        def say(line: str) -> None:
            lines.append(line)
            report(line)

        headers = self.check_files()  # nothing else can be read when this fails
        say(f"files: {len(headers)} arrays open, none truncated, shapes and dtypes as {META} declares")
        for line_or_problem in self._graph_checks():
            if isinstance(line_or_problem, StoreError):
                problems.append(str(line_or_problem))
            else:
                say(line_or_problem)
        n = self.num_nodes
        for key in [k for k in headers if k == "x" or k.startswith("pe/")]:
            h = headers[key]
            if not np.issubdtype(h.dtype, np.floating):
                continue
            bad = 0
            for _, c in _file_chunks(self.path / f"{key}.npy", h):
                bad += int(c.size - np.count_nonzero(np.isfinite(c)))
            if bad:
                problems.append(str(self._fail(key, f"holds {bad} NaN/inf values")))
            else:
                say(f"{key}: {h.count} values, all finite")
        if "y" in headers and np.issubdtype(headers["y"].dtype, np.integer):
            task = self.meta.get("task") or {}
            upper = int(task["num_outputs"]) if task.get("kind") == "multiclass" and task.get("num_outputs") else None
            lo, hi = None, None
            for _, c in _file_chunks(self.path / "y.npy", headers["y"]):
                if c.size:
                    lo = int(c.min()) if lo is None else min(lo, int(c.min()))
                    hi = int(c.max()) if hi is None else max(hi, int(c.max()))
            if lo is not None and (lo < -1 or (upper is not None and hi >= upper)):
                problems.append(str(self._fail("y", f"holds labels in [{lo}, {hi}]; expected -1 (unlabelled) or "
                                                    f"0..{'num_outputs-1' if upper is None else upper - 1}")))
            else:
                say(f"y: {headers['y'].count} labels in [{lo}, {hi}]")
        recorded = self.meta.get("sha256") or {}
        for key in headers:
            if key not in recorded:
                say(f"{key}: no checksum recorded (written before checksums were kept), not compared")
            elif _sha256(self.path / f"{key}.npy") != recorded[key]:
                problems.append(str(self._fail(key, "differs from the file written at build time (SHA-256 "
                                                    "mismatch): it was changed or damaged")))
            else:
                say(f"{key}: SHA-256 matches the one recorded at build time")
        if problems:
            raise StoreError(f"graph store '{self.path}' failed {len(problems)} check(s) (num_nodes={n}):\n  "
                             + "\n  ".join(problems))
        return lines

    # ------------------------------------------------------------------ arrays
    def has(self, key: str) -> bool:
        return key in self.meta["arrays"]

    def array(self, key: str) -> np.ndarray:
        """The memory-mapped array ``<key>.npy`` (mapped once, then reused)."""
        if key not in self._arrays:
            if not self.has(key):
                raise StoreError(f"graph store '{self.path}' has no array '{key}' "
                                 f"(it has: {', '.join(sorted(self.meta['arrays']))})")
            try:
                arr = _open_npy(self.path / f"{key}.npy")
            except (OSError, ValueError, EOFError) as e:  # replaced or truncated since the store was opened
                raise self._fail(key, f"cannot be mapped ({type(e).__name__}: {e})") from None
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
        if "sha256" in meta:  # stores built before checksums were kept stay without them
            meta["sha256"][key] = _sha256(store.path / f"{key}.npy")
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
