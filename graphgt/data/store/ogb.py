"""OGB node-property datasets (ogbn-products, -arxiv, -papers100M, -proteins) converted into a graph store.

:func:`convert_ogb_node` reads the RAW files of a dataset, i.e. what OGB's download zip unpacks to::

    <root>/<ogbn_name>/                 (or the zip's own folder name, e.g. <root>/products)
        RELEASE_v1.txt
        raw/edge.csv.gz                 int  [E, 2]   one row per edge (products/proteins: each
                                                      undirected edge once; arxiv: directed)
        raw/num-node-list.csv.gz        [1]           number of nodes
        raw/num-edge-list.csv.gz        [1]           number of edge rows
        raw/node-feat.csv.gz            float [N, F]  (products 100, arxiv 128)
        raw/edge-feat.csv.gz            float [E, 8]  (proteins)
        raw/node-label.csv.gz           [N, 1] class id, or [N, 112] binary labels (proteins)
        raw/node_year.csv.gz            [N, 1]        (arxiv)   raw/node_species.csv.gz [N, 1] (proteins)
        raw/data.npz                    binary datasets (papers100M): edge_index [2, E], node_feat
                                        [N, 128] (float16), num_nodes_list, num_edges_list, node_year
        raw/node-label.npz              binary datasets: node_label [N, 1] float, NaN = unlabelled
        split/<split type>/{train,valid,test}.csv.gz   node ids of the official split

and writes a :mod:`graphgt.data.store` directory WITHOUT ever holding the dataset as one in-memory
object: csv.gz files are parsed ``chunk_rows`` rows at a time (pandas ``chunksize``) and ``.npz``
members are streamed straight out of the zip archive (:func:`iter_npz_chunks`: the ``.npy`` header
is parsed, then raw bytes are read chunk by chunk; works for stored and deflated members).

What the store holds (and how it differs from ``ogb.nodeproppred.NodePropPredDataset``):

* ``indptr``/``indices``: a SYMMETRIC CSR without self-loops or duplicate entries, each row sorted.
  Every edge is added in both directions.  ogbn-arxiv and ogbn-papers100M are directed citation
  graphs in OGB; the store holds them symmetrised (the standard practice for these benchmarks).
  Built by :class:`SymmetricCSRBuilder` with bounded memory (see there): 1.6 B edges are fine.
* ``x``: node features, float32 (products, arxiv) or float16 (papers100M, as distributed; 128 dims).
  ogbn-proteins has no node features: ``x`` is the MEAN of the 8-dim features of a node's incident
  edges (each raw edge row counted once at each end; nodes without edges get zeros), the common
  practice (it equals PyG's ``scatter(edge_attr, col, reduce='mean')`` over OGB's edge list).
* ``y``: multiclass int16 ``[N]`` with ``-1`` for unlabelled nodes (NaN labels in papers100M);
  ogbn-proteins (112 binary tasks) float32 ``[N, 112]``.
* ``split/train|val|test``: int64 node ids of the official split (OGB's ``valid`` is ``val``).
* ``extra/node_year`` (arxiv, papers100M), ``extra/node_species`` (proteins): int32 ``[N]``.
* ``meta.json``: ``task = {kind, num_outputs, metric, ogb_name}``, plus ``ogb_name``,
  ``split_type``, ``source`` (folder, format, url, version), ``symmetrised``, ``csr`` (build stats).

A missing dataset raises a :class:`~graphgt.errors.ConfigError` naming the expected file and
the command that fetches it (``python scripts/prepare_ogb.py <name> --root <root>``, which uses
OGB's own download helpers for the zip and then converts; OGB's in-memory processing is never run).
"""
from __future__ import annotations

import ast
import os
import shutil
import struct
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from graphgt.errors import ConfigError
from graphgt.data.common import require_paths
from graphgt.data.store.core import GraphStore, StoreWriter, index_dtype, iter_chunks

PathLike = Union[str, Path]

#: The datasets this module converts.
SUPPORTED = ("ogbn-products", "ogbn-arxiv", "ogbn-papers100M", "ogbn-proteins")
DEFAULT_CHUNK_ROWS = 1 << 18
DEFAULT_MEM_BUDGET = 4 << 30  # bytes of sort buffer per CSR bucket
_SPLIT_FILES = (("train", "train"), ("val", "valid"), ("test", "test"))


# =============================================================================================== meta


@dataclass(frozen=True)
class OGBNodeInfo:
    """OGB's master-table row of one node dataset (``ogb/nodeproppred/master.csv``)."""

    name: str
    num_tasks: int
    num_classes: int
    metric: str
    task_type: str
    download_name: str
    version: int
    url: str
    add_inverse_edge: bool
    has_node_attr: bool
    has_edge_attr: bool
    split: str
    additional_node_files: Tuple[str, ...]
    is_hetero: bool
    binary: bool

    @property
    def dir_name(self) -> str:
        """The folder OGB keeps the dataset in (``ogbn-products`` -> ``ogbn_products``)."""
        return "_".join(self.name.split("-"))

    @property
    def multilabel(self) -> bool:
        return self.task_type == "binary classification"

    def task(self) -> Dict[str, Any]:
        if self.multilabel:
            return {"kind": "multilabel", "num_outputs": self.num_tasks, "metric": "rocauc", "ogb_name": self.name}
        return {"kind": "multiclass", "num_outputs": self.num_classes, "metric": "accuracy", "ogb_name": self.name}


def ogb_node_info(name: str) -> OGBNodeInfo:
    """The master-table row of ``name`` as an :class:`OGBNodeInfo`; ConfigError for unknown/unsupported names."""
    import pandas as pd
    import ogb.nodeproppred as npp

    master = pd.read_csv(Path(npp.__file__).parent / "master.csv", index_col=0, keep_default_na=False)
    if name not in master:
        raise ConfigError(f"'{name}' is not an OGB node-property dataset; known: {sorted(master.keys())}")
    row = master[name]
    extra = row["additional node files"]
    info = OGBNodeInfo(
        name=name, num_tasks=int(row["num tasks"]), num_classes=int(row["num classes"]), metric=row["eval metric"],
        task_type=row["task type"], download_name=row["download_name"], version=int(row["version"]), url=row["url"],
        add_inverse_edge=row["add_inverse_edge"] == "True", has_node_attr=row["has_node_attr"] == "True",
        has_edge_attr=row["has_edge_attr"] == "True", split=row["split"],
        additional_node_files=() if extra == "None" else tuple(extra.split(",")),
        is_hetero=row["is hetero"] == "True", binary=row["binary"] == "True")
    if info.is_hetero:
        raise ConfigError(f"'{name}' is a heterogeneous graph; the OGB node converter supports {', '.join(SUPPORTED)}")
    return info


def default_store_path(root: PathLike, name: str) -> Path:
    """Where :func:`prepare_ogb_node` puts the store when none is given: ``<root>/store/<ogbn_name>``."""
    return Path(root) / "store" / "_".join(name.split("-"))


# ============================================================================================ locating


def _fetch_hint(info: OGBNodeInfo, root: Path) -> str:
    return (f"Fetch it on a machine with internet: python scripts/prepare_ogb.py {info.name} --root {root} "
            f"(downloads {info.url} and converts it), or copy the unzipped '{info.download_name}' folder "
            f"to '{root / info.dir_name}'.")


def _additional_file(raw: Path, name: str) -> Path:
    """``raw/<name>.csv.gz``; OGB's proteins zip may call ``node_species`` just ``species``."""
    path = raw / f"{name}.csv.gz"
    if not path.exists() and name == "node_species" and (raw / "species.csv.gz").exists():
        return raw / "species.csv.gz"
    return path


def required_files(info: OGBNodeInfo, folder: Path) -> List[Path]:
    """The raw and split files the converter reads (most telling first)."""
    raw = folder / "raw"
    if info.binary:
        files = [raw / "data.npz", raw / "node-label.npz"]
    else:
        files = [raw / "edge.csv.gz", raw / "num-node-list.csv.gz", raw / "node-label.csv.gz"]
        if info.has_node_attr:
            files.append(raw / "node-feat.csv.gz")
        if info.has_edge_attr:
            files.append(raw / "edge-feat.csv.gz")
        files += [_additional_file(raw, f) for f in info.additional_node_files]
    split = folder / "split" / info.split
    return files + [split / f"{f}.csv.gz" for _, f in _SPLIT_FILES]


def locate_ogb_raw(name: str, root: PathLike) -> Path:
    """The dataset folder under ``root`` (``<root>/<ogbn_name>``, or the zip's ``<root>/<download_name>``).

    Raises:
        ConfigError: a required file is missing; names it and the command that fetches the dataset.
    """
    info = ogb_node_info(name)
    root = Path(root)
    folder = root / info.dir_name
    if not folder.exists() and (root / info.download_name).is_dir():
        folder = root / info.download_name
    require_paths(required_files(info, folder), f"OGB dataset {name}", _fetch_hint(info, root))
    return folder


def download_ogb_raw(name: str, root: PathLike) -> Path:
    """Download and unzip the raw dataset into ``<root>/<ogbn_name>`` with OGB's own helpers (no processing).

    Raises:
        ConfigError: the download failed (e.g. no internet); says how to copy the files instead.
    """
    from ogb.utils.url import download_url, extract_zip

    info = ogb_node_info(name)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        zip_path = download_url(info.url, str(root))
    except Exception as e:  # URLError (offline), HTTP errors, ogb's RuntimeError on interruption
        raise ConfigError(f"OGB dataset {name}: could not download {info.url} ({type(e).__name__}: {e}). "
                          f"{_fetch_hint(info, root)}") from None
    try:
        extract_zip(zip_path, str(root))
    except zipfile.BadZipFile as e:
        raise ConfigError(f"OGB dataset {name}: '{zip_path}' is not a complete zip archive ({e}); delete it and "
                          f"run again. {_fetch_hint(info, root)}") from None
    os.unlink(zip_path)
    src, dst = root / info.download_name, root / info.dir_name
    if src != dst and src.is_dir():
        if dst.exists():  # keep what is there (e.g. a previous partial copy), add the unpacked files
            shutil.copytree(src, dst, dirs_exist_ok=True)
            shutil.rmtree(src)
        else:
            os.replace(src, dst)
    return locate_ogb_raw(name, root)


# ======================================================================================= npz streaming


@dataclass
class NpyMember:
    """The ``.npy`` header of one member of an ``.npz`` archive."""

    name: str
    shape: Tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool


def _read_header(f) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:  # 3.0 only differs in utf-8 field names (structured dtypes), which never occur here
        (hlen,) = struct.unpack("<I", f.read(4))
        d = ast.literal_eval(f.read(hlen).decode("utf8"))
        shape, fortran, dtype = tuple(d["shape"]), bool(d["fortran_order"]), np.dtype(np.lib.format.descr_to_dtype(d["descr"]))
    if dtype.hasobject:
        raise ValueError("object arrays cannot be streamed")
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype)


def _member_name(zf: zipfile.ZipFile, key: str) -> str:
    names = zf.namelist()
    for cand in (f"{key}.npy", key):
        if cand in names:
            return cand
    raise KeyError(f"'{key}' is not in the archive (members: {', '.join(n[:-4] if n.endswith('.npy') else n for n in names)})")


def npz_keys(path: PathLike) -> List[str]:
    """The array names stored in the ``.npz`` file ``path``."""
    with zipfile.ZipFile(path) as zf:
        return [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]


def npz_member(path: PathLike, key: str) -> NpyMember:
    """The shape/dtype/order of array ``key`` of the ``.npz`` file ``path`` (reads only its header)."""
    with zipfile.ZipFile(path) as zf:
        name = _member_name(zf, key)
        with zf.open(name) as f:
            shape, fortran, dtype = _read_header(f)
    return NpyMember(key, shape, dtype, fortran)


def _read_exact(f, nbytes: int, what: str) -> bytes:
    buf = f.read(nbytes)
    if len(buf) != nbytes:
        raise ValueError(f"{what}: truncated ({len(buf)} of {nbytes} bytes read)")
    return buf


class _Lane:
    """One open stream of a member, positioned at a flat element offset of its data."""

    def __init__(self, zf: zipfile.ZipFile, name: str, start: int):
        self.f = zf.open(name)
        shape, fortran, dtype = _read_header(self.f)
        self.dtype = dtype
        if start:
            self.f.seek(start * dtype.itemsize, os.SEEK_CUR)  # a seek on stored, a skip on deflated members

    def read(self, count: int, what: str) -> np.ndarray:
        buf = _read_exact(self.f, count * self.dtype.itemsize, what)
        # a writable array in native byte order (frombuffer alone would be a read-only view of `buf`)
        return np.frombuffer(buf, dtype=self.dtype).astype(self.dtype.newbyteorder("="), copy=True)

    def close(self) -> None:
        self.f.close()


def iter_npz_chunks(path: PathLike, key: str, chunk: int, axis: int = 0) -> Iterator[np.ndarray]:
    """Stream array ``key`` of the ``.npz`` file ``path`` in pieces of ``chunk`` slices along ``axis``.

    Only the ``.npy`` header and ``chunk`` slices are in memory at a time; the concatenation of the
    pieces equals ``np.load(path)[key]``.  Works for stored (``np.savez``) and deflated
    (``np.savez_compressed``) members, C and Fortran order.  When the slices are not contiguous in
    the file (a C-order ``[2, E]`` read along axis 1, a Fortran-order ``[N, F]`` read along axis 0),
    one stream per row/column is opened and read side by side (for deflated members each stream
    inflates the data before its start once).

    Args:
        path: the ``.npz`` file.
        key: array name (``edge_index``, ``node_feat`` ...).
        chunk: slices per piece (>= 1).
        axis: 0 for any array; 1 for 2-D arrays (e.g. the edges of an ``[2, E]`` edge index).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    what = f"{path}:{key}"
    with zipfile.ZipFile(path) as zf:
        name = _member_name(zf, key)
        with zf.open(name) as f:
            shape, fortran, dtype = _read_header(f)
        ndim = len(shape)
        if ndim == 0:
            raise ValueError(f"{what} is a scalar; nothing to stream")
        if axis not in (0, 1) or (axis == 1 and ndim != 2):
            raise ValueError(f"{what}: axis {axis} of a {ndim}-D array cannot be streamed (axis 0, or 1 of a 2-D array)")
        if ndim > 2 and fortran:
            raise ValueError(f"{what}: Fortran-order arrays of more than 2 dimensions cannot be streamed")
        total = shape[axis]
        other = shape[1 - axis] if ndim == 2 else 1
        contiguous = ndim == 1 or (axis == 0) != fortran
        if contiguous:
            lane = _Lane(zf, name, 0)
            per = int(np.prod(shape[1:], dtype=np.int64)) if axis == 0 else other
            try:
                for start, stop in iter_chunks(total, chunk):
                    flat = lane.read((stop - start) * per, what)
                    k = stop - start
                    if axis == 0 and not fortran:
                        yield flat.reshape((k,) + shape[1:])
                    elif axis == 0:  # 1-D Fortran == C
                        yield flat
                    else:  # Fortran [R, M] along axis 1: column-major, k columns of R values
                        yield flat.reshape(k, other).T
            finally:
                lane.close()
        else:  # one lane per row (C-order, axis 1) or per column (Fortran, axis 0), each of length `total`
            lanes = [_Lane(zf, name, i * total) for i in range(other)]
            try:
                for start, stop in iter_chunks(total, chunk):
                    parts = [ln.read(stop - start, what) for ln in lanes]
                    yield np.stack(parts, axis=1 if axis == 0 else 0)
            finally:
                for ln in lanes:
                    ln.close()


# ======================================================================================= csv streaming


def iter_csv_chunks(path: PathLike, chunk: int, dtype: Any = None) -> Iterator[np.ndarray]:
    """Stream a header-less (gzipped) csv file as 2-D arrays of at most ``chunk`` rows."""
    import pandas as pd

    with pd.read_csv(path, header=None, chunksize=chunk, compression="infer") as reader:
        for df in reader:
            yield df.to_numpy() if dtype is None else df.to_numpy(dtype=dtype)


def _read_count(path: Path) -> List[int]:
    import pandas as pd

    return [int(v) for v in pd.read_csv(path, header=None)[0].tolist()]


# ============================================================================================== CSR


def _npy_header(dtype: np.dtype, shape: Sequence[int], total: int = 128) -> bytes:
    """A version-1.0 ``.npy`` header of exactly ``total`` bytes (so it can be rewritten in place)."""
    text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (
        np.lib.format.dtype_to_descr(np.dtype(dtype)), tuple(int(s) for s in shape))
    body = total - 10
    if len(text) + 1 > body:
        raise ValueError("npy header does not fit")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", body) + (text.ljust(body - 1) + "\n").encode("latin1")


class SymmetricCSRBuilder:
    """Builds a symmetric, self-loop-free, duplicate-free CSR of an edge stream with bounded memory.

    1. :meth:`add` (one pass over the source): self-loops are dropped, node ids checked, the edges
       appended to a binary scratch file (int32 pairs below 2**31 nodes: 8 bytes an edge) and the
       number of entries per block of 64 nodes (of 1 node below 2**20 nodes) counted (both
       directions, duplicates included).
    2. :meth:`write` cuts the node range into buckets whose entry counts fit ``mem_budget`` (about
       18 bytes an entry: one int64 sort key plus the de-duplicated copy), then, per bucket,
       re-reads the scratch file, keeps both directions of every edge whose end lies in the bucket
       as keys ``(row - lo) * N + col``, sorts them, drops repeats and appends the columns to
       ``indices.npy``.  Rows come out sorted; ``indptr`` is the running sum of the row lengths.

    Memory: ``N + 1`` int64 (``indptr``) + one bucket's sort buffer + one chunk.  Disk: the scratch
    file (deleted afterwards).  Time: one pass over the source + one pass over the scratch file per
    bucket (``ceil(2 E * 18 B / mem_budget)`` buckets).

    Args:
        num_nodes: ``N``.
        scratch: the scratch file to create.
        chunk: edges read from the scratch file at a time.
        mem_budget: bytes of sort buffer per bucket (a bucket always holds at least one block).
    """

    BYTES_PER_ENTRY = 18

    def __init__(self, num_nodes: int, scratch: Path, chunk: int = DEFAULT_CHUNK_ROWS,
                 mem_budget: int = DEFAULT_MEM_BUDGET):
        self.num_nodes = int(num_nodes)
        self.scratch = Path(scratch)
        self.chunk = max(1, int(chunk))
        self.mem_budget = int(mem_budget)
        self.pair_dtype = index_dtype(self.num_nodes)
        # entries are counted per block of 2**BLOCK_SHIFT nodes (per node below 2**20 nodes)
        self.BLOCK_SHIFT = 0 if self.num_nodes <= 1 << 20 else 6
        self.block_counts = np.zeros((self.num_nodes >> self.BLOCK_SHIFT) + 1, dtype=np.int64)
        self.edges_read = 0
        self.self_loops = 0
        self.edges_kept = 0
        self.add_seconds = 0.0
        self._f = open(self.scratch, "wb")

    def add(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Add a chunk of directed edges ``src[i] -> dst[i]`` (the reverse is added by :meth:`write`)."""
        src = np.asarray(src).reshape(-1)
        dst = np.asarray(dst).reshape(-1)
        if src.shape != dst.shape:
            raise ValueError(f"edge chunk with {src.size} sources and {dst.size} targets")
        if src.size == 0:
            return
        t0 = time.perf_counter()
        n = self.num_nodes
        for ends in (src, dst):
            lo, hi = ends.min(), ends.max()
            if lo < 0 or hi >= n:
                raise ValueError(f"edge list refers to node {lo if lo < 0 else hi}, but the graph has {n} nodes")
        self.edges_read += src.size
        keep = src != dst
        if not keep.all():
            self.self_loops += int(src.size - keep.sum())
            src, dst = src[keep], dst[keep]
        self.edges_kept += src.size
        nb = self.block_counts.size
        self.block_counts += np.bincount(src >> self.BLOCK_SHIFT, minlength=nb)
        self.block_counts += np.bincount(dst >> self.BLOCK_SHIFT, minlength=nb)
        pairs = np.empty((src.size, 2), dtype=self.pair_dtype)
        pairs[:, 0] = src
        pairs[:, 1] = dst
        self._f.write(memoryview(pairs).cast("B"))
        self.add_seconds += time.perf_counter() - t0

    def _buckets(self) -> List[Tuple[int, int]]:
        budget = max(1, self.mem_budget // self.BYTES_PER_ENTRY)
        cum = np.concatenate([[0], np.cumsum(self.block_counts)])
        out, b, nb = [], 0, self.block_counts.size
        while b < nb:
            e = int(np.searchsorted(cum, cum[b] + budget, side="right")) - 1  # blocks [b, e) fit
            e = min(max(e, b + 1), nb)
            out.append((b << self.BLOCK_SHIFT, min(e << self.BLOCK_SHIFT, self.num_nodes)))
            b = e
        return [(lo, hi) for lo, hi in out if lo < hi] or [(0, self.num_nodes)]

    def _scan(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        per = 2 * self.chunk
        with open(self.scratch, "rb") as f:
            while True:
                flat = np.fromfile(f, dtype=self.pair_dtype, count=per)
                if flat.size == 0:
                    return
                pairs = flat.reshape(-1, 2)
                yield pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)

    def write(self, writer: StoreWriter) -> Dict[str, Any]:
        """Write ``indptr`` and ``indices`` into ``writer``'s directory; returns build statistics."""
        self._f.close()
        n = self.num_nodes
        idx_dtype = index_dtype(n)
        buckets = self._buckets()
        upper = int(self.block_counts.sum())
        indptr = np.zeros(n + 1, dtype=np.int64)
        path = writer.tmp / "indices.npy"
        nnz = 0
        t_scan = t_sort = 0.0
        with open(path, "wb") as out:
            out.write(_npy_header(idx_dtype, (upper,)))
            for lo, hi in buckets:
                size = int(self.block_counts[lo >> self.BLOCK_SHIFT:((hi - 1) >> self.BLOCK_SHIFT) + 1].sum())
                keys = np.empty(size, dtype=np.int64)
                fill = 0
                whole = len(buckets) == 1
                t0 = time.perf_counter()
                for src, dst in self._scan():
                    for a, b in ((src, dst), (dst, src)):
                        if whole:
                            k = a * n + b
                        else:
                            m = (a >= lo) & (a < hi)
                            k = (a[m] - lo) * n + b[m]
                        keys[fill:fill + k.size] = k
                        fill += k.size
                keys = keys[:fill]
                t1 = time.perf_counter()
                t_scan += t1 - t0
                keys.sort()
                if keys.size:
                    first = np.empty(keys.size, dtype=bool)
                    first[0] = True
                    np.not_equal(keys[1:], keys[:-1], out=first[1:])
                    keys = keys[first]
                    del first
                deg = indptr[lo + 1:hi + 1]
                for s, e in iter_chunks(keys.size, max(self.chunk, 1 << 20)):
                    part = keys[s:e]
                    rows = part // n
                    deg += np.bincount(rows, minlength=hi - lo)
                    out.write(memoryview(np.ascontiguousarray(part - rows * n, dtype=idx_dtype)).cast("B"))
                nnz += keys.size
                del keys
                t_sort += time.perf_counter() - t1
            out.seek(0)
            out.write(_npy_header(idx_dtype, (nnz,)))
        np.cumsum(indptr, out=indptr)
        writer.meta["arrays"]["indices"] = {"shape": [nnz], "dtype": idx_dtype.str}
        writer.save_array("indptr", indptr)
        self.scratch.unlink()
        return {"edges_read": self.edges_read, "self_loops_dropped": self.self_loops, "entries": nnz,
                "duplicates_dropped": 2 * self.edges_kept - nnz, "buckets": len(buckets),
                "mem_budget": self.mem_budget, "seconds_first_pass": round(self.add_seconds, 3),
                "seconds_bucket_scans": round(t_scan, 3), "seconds_sort_write": round(t_sort, 3)}

    def abort(self) -> None:
        self._f.close()
        if self.scratch.exists():
            self.scratch.unlink()


# ========================================================================================== converting


def _int_extra(chunk: np.ndarray, what: str) -> np.ndarray:
    chunk = np.asarray(chunk)
    if chunk.ndim == 2 and chunk.shape[1] == 1:
        chunk = chunk[:, 0]
    if chunk.dtype.kind == "f":
        if np.isnan(chunk).any() or (chunk != np.round(chunk)).any():
            raise ValueError(f"{what}: expected integer values")
    if chunk.size and (chunk.min() < -2 ** 31 or chunk.max() >= 2 ** 31):
        raise ValueError(f"{what}: values do not fit int32")
    return chunk.astype(np.int32)


def _class_labels(chunk: np.ndarray, what: str, num_classes: int) -> np.ndarray:
    chunk = np.asarray(chunk, dtype=np.float64)
    if chunk.ndim == 2:
        if chunk.shape[1] != 1:
            raise ValueError(f"{what}: expected one label column, got {chunk.shape[1]}")
        chunk = chunk[:, 0]
    missing = np.isnan(chunk)
    chunk = np.where(missing, -1.0, chunk)
    if chunk.size and (chunk.max() >= num_classes or chunk.min() < -1):
        raise ValueError(f"{what}: class ids outside [0, {num_classes})")
    return chunk


class _Source:
    """Chunked access to the raw files of one dataset (csv.gz or binary npz layout)."""

    def __init__(self, info: OGBNodeInfo, folder: Path, chunk: int):
        self.info, self.folder, self.raw, self.chunk = info, folder, folder / "raw", chunk
        if info.binary:
            self.data = self.raw / "data.npz"
            keys = npz_keys(self.data)
            for k in ("edge_index", "num_nodes_list", "num_edges_list"):
                if k not in keys:
                    raise ConfigError(f"OGB dataset {info.name}: '{self.data}' has no array '{k}'; "
                                      f"the file is damaged. {_fetch_hint(info, folder.parent)}")
            self.npz_keys = keys
            nodes = self._small("num_nodes_list")
            edges = self._small("num_edges_list")
        else:
            nodes = _read_count(self.raw / "num-node-list.csv.gz")
            cnt = self.raw / "num-edge-list.csv.gz"
            edges = _read_count(cnt) if cnt.exists() else None
        if len(nodes) != 1:
            raise ConfigError(f"OGB dataset {info.name}: expected one graph, num-node-list has {len(nodes)} entries")
        self.num_nodes = int(nodes[0])
        self.num_edges = None if edges is None else int(sum(edges))

    def _small(self, key: str) -> List[int]:
        return [int(v) for c in iter_npz_chunks(self.data, key, 1 << 20) for v in np.asarray(c).reshape(-1)]

    # ---- edges (+ edge features)
    def edges(self) -> Iterator[Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]:
        if self.info.binary:
            member = npz_member(self.data, "edge_index")
            if len(member.shape) != 2 or member.shape[0] != 2:
                raise ValueError(f"{self.data}:edge_index has shape {member.shape}, expected [2, E]")
            for e in iter_npz_chunks(self.data, "edge_index", self.chunk, axis=1):
                yield e[0].astype(np.int64), e[1].astype(np.int64), None
            return
        edges = iter_csv_chunks(self.raw / "edge.csv.gz", self.chunk, np.int64)
        feats = None
        if self.info.has_edge_attr:
            feats = iter_csv_chunks(self.raw / "edge-feat.csv.gz", self.chunk, np.float64)
        for e in edges:
            if e.shape[1] != 2:
                raise ValueError(f"{self.raw / 'edge.csv.gz'}: expected 2 columns, got {e.shape[1]}")
            f = None
            if feats is not None:
                f = next(feats, None)
                if f is None or f.shape[0] != e.shape[0]:
                    raise ValueError(f"{self.raw / 'edge-feat.csv.gz'} has fewer rows than edge.csv.gz")
            yield e[:, 0], e[:, 1], f
        if feats is not None and next(feats, None) is not None:
            raise ValueError(f"{self.raw / 'edge-feat.csv.gz'} has more rows than edge.csv.gz")

    # ---- node arrays
    def rows_for(self, width: int) -> int:
        """Rows per chunk of a table ``width`` values wide: ``chunk`` rows of up to 8 values, fewer
        rows of wider tables (a chunk holds about ``8 * chunk`` values whatever the width)."""
        return max(1, min(self.chunk, self.chunk * 8 // max(1, int(width))))

    def node_feat(self) -> Optional[Iterator[np.ndarray]]:
        if self.info.binary:
            if "node_feat" not in self.npz_keys:
                return None
            return iter_npz_chunks(self.data, "node_feat", self.rows_for(np.prod(self.node_feat_shape()[1:])))
        path = self.raw / "node-feat.csv.gz"
        if not path.exists():
            return None
        return iter_csv_chunks(path, self.rows_for(self.node_feat_shape()[1]), np.float64)

    def node_feat_shape(self) -> Tuple[int, ...]:
        if self.info.binary:
            return npz_member(self.data, "node_feat").shape
        import pandas as pd

        first = pd.read_csv(self.raw / "node-feat.csv.gz", header=None, nrows=1)
        return (self.num_nodes, first.shape[1])

    def labels(self) -> Iterator[np.ndarray]:
        if self.info.binary:
            return iter_npz_chunks(self.raw / "node-label.npz", "node_label", self.chunk)
        return iter_csv_chunks(self.raw / "node-label.csv.gz", self.rows_for(self.info.num_tasks), np.float64)

    def extras(self) -> Dict[str, Iterator[np.ndarray]]:
        if self.info.binary:
            keys = [k for k in self.npz_keys if k.startswith("node_") and k != "node_feat"]
            return {k: iter_npz_chunks(self.data, k, self.chunk) for k in keys}
        return {k: iter_csv_chunks(_additional_file(self.raw, k), self.chunk) for k in self.info.additional_node_files}

    def split(self, file: str) -> np.ndarray:
        import pandas as pd

        path = self.folder / "split" / self.info.split / f"{file}.csv.gz"
        idx = pd.read_csv(path, header=None)[0].to_numpy(dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_nodes):
            raise ValueError(f"{path}: node ids outside [0, {self.num_nodes})")
        return idx


def _write_rows(writer: StoreWriter, key: str, shape: Tuple[int, ...], dtype: Any,
                chunks: Iterator[np.ndarray], convert=None) -> None:
    with writer.append_array(key, shape, dtype) as a:
        for c in chunks:
            a.write(convert(c) if convert is not None else c)


def _convertible_info(name: str, chunk_rows: int) -> OGBNodeInfo:
    """The master-table row of ``name``; ConfigError if it is not supported or ``chunk_rows < 1``."""
    info = ogb_node_info(name)
    if name not in SUPPORTED:
        raise ConfigError(f"'{name}': the OGB node converter supports {', '.join(SUPPORTED)}")
    if int(chunk_rows) < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}")
    return info


def _write_csr(w: StoreWriter, src: _Source, chunk_rows: int, mem_budget: int
               ) -> Tuple[Dict[str, Any], Optional[np.ndarray], Optional[np.ndarray]]:
    """Stream the edges into ``indptr``/``indices``; returns ``(csr stats, feature sums, feature counts)``,
    the per-node sums and counts of incident edge features (proteins), else ``None``."""
    info, n = src.info, src.num_nodes
    builder = SymmetricCSRBuilder(n, w.tmp / "edges.scratch", chunk=chunk_rows, mem_budget=mem_budget)
    feat_sum = feat_cnt = None
    try:
        for s, d, f in src.edges():
            builder.add(s, d)
            if f is not None and not info.has_node_attr:  # proteins: mean of incident edge features
                if feat_sum is None:
                    feat_sum = np.zeros((n, f.shape[1]), dtype=np.float64)
                    feat_cnt = np.zeros(n, dtype=np.int64)
                for ends in (s, d):
                    for j in range(f.shape[1]):
                        feat_sum[:, j] += np.bincount(ends, weights=f[:, j], minlength=n)
                    feat_cnt += np.bincount(ends, minlength=n)
        if src.num_edges is not None and builder.edges_read != src.num_edges:
            raise ValueError(f"OGB dataset {info.name}: read {builder.edges_read} edges, the edge count file says "
                             f"{src.num_edges}")
        csr = builder.write(w)
    except BaseException:
        builder.abort()
        raise
    return csr, feat_sum, feat_cnt


def _write_node_features(w: StoreWriter, src: _Source, x_dtype: np.dtype, feat_sum: Optional[np.ndarray],
                         feat_cnt: Optional[np.ndarray]) -> str:
    """``x`` from the node features, else the means of the incident edge features; returns the meta note."""
    n = src.num_nodes
    feats = src.node_feat()
    if feats is not None:
        shape = src.node_feat_shape()
        if shape[0] != n:
            raise ValueError(f"OGB dataset {src.info.name}: {shape[0]} feature rows for {n} nodes")
        _write_rows(w, "x", shape, x_dtype, feats)
        return "node features as distributed"
    if feat_sum is not None:
        x = feat_sum / np.maximum(feat_cnt, 1)[:, None]
        w.save_array("x", x.astype(x_dtype))
        return "mean of the features of incident edges (each raw edge counted at both ends; 0 if isolated)"
    return "none"


def _write_node_arrays(w: StoreWriter, src: _Source) -> None:
    """``y`` (class ids, or the binary labels of multilabel datasets) and the ``extra/`` node arrays."""
    info, n, name = src.info, src.num_nodes, src.info.name
    what = f"OGB dataset {name} labels"
    if info.multilabel:
        _write_rows(w, "y", (n, info.num_tasks), np.float32, src.labels(),
                    lambda c: np.asarray(c, dtype=np.float32).reshape(-1, info.num_tasks))
    else:
        y_dtype = np.int16 if info.num_classes <= np.iinfo(np.int16).max else np.int32
        _write_rows(w, "y", (n,), y_dtype, src.labels(), lambda c: _class_labels(c, what, info.num_classes))
    for key, chunks in src.extras().items():
        key = "node_species" if key == "species" else key
        _write_rows(w, f"extra/{key}", (n,), np.int32, chunks, lambda c, k=key: _int_extra(c, f"{name} {k}"))


def _write_splits(w: StoreWriter, src: _Source) -> Dict[str, int]:
    """The official split as ``split/train|val|test``; returns the size of each."""
    split_sizes = {}
    for ours, theirs in _SPLIT_FILES:
        idx = src.split(theirs)
        w.save_array(f"split/{ours}", idx)
        split_sizes[ours] = int(idx.size)
    return split_sizes


def convert_ogb_node(name: str, raw_root: PathLike, store_path: PathLike, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                     mem_budget: int = DEFAULT_MEM_BUDGET, feature_dtype: Any = None,
                     overwrite: bool = False) -> GraphStore:
    """Convert the raw files of OGB node dataset ``name`` under ``raw_root`` into a store at ``store_path``.

    Nothing is held whole in memory except ``indptr`` and the split indices (and, for ogbn-proteins,
    the per-node sums of edge features): see the module docstring for the layout and conventions.
    The store is built in a temporary folder and renamed into place at the end, so an interrupted
    conversion never leaves a store that looks complete.

    Args:
        name: ``ogbn-products``, ``ogbn-arxiv``, ``ogbn-papers100M`` or ``ogbn-proteins``.
        raw_root: the folder holding ``<ogbn_name>/raw`` (OGB's ``root``).
        store_path: the store directory to create.
        chunk_rows: rows (edges, nodes) read per chunk.
        mem_budget: bytes of sort buffer per CSR bucket (see :class:`SymmetricCSRBuilder`).
        feature_dtype: dtype of ``x``; default float16 for binary (papers100M) datasets, else float32.
        overwrite: replace an existing store.

    Raises:
        ConfigError: unknown dataset or missing files (with the command that fetches them).
    """
    info = _convertible_info(name, chunk_rows)
    folder = locate_ogb_raw(name, raw_root)
    src = _Source(info, folder, int(chunk_rows))
    n = src.num_nodes
    x_dtype = np.dtype(feature_dtype) if feature_dtype is not None else np.dtype(np.float16 if info.binary else np.float32)
    t0 = time.perf_counter()
    with StoreWriter(store_path, name=name, num_nodes=n, overwrite=overwrite) as w:
        csr, feat_sum, feat_cnt = _write_csr(w, src, int(chunk_rows), mem_budget)
        t_csr = time.perf_counter() - t0
        x_note = _write_node_features(w, src, x_dtype, feat_sum, feat_cnt)
        del feat_sum, feat_cnt
        _write_node_arrays(w, src)
        split_sizes = _write_splits(w, src)
        w.meta.update({
            "task": info.task(),
            "ogb_name": name,
            "split_type": info.split,
            "split_sizes": split_sizes,
            "source": {"format": "npz" if info.binary else "csv.gz", "dir": str(folder.resolve()), "url": info.url,
                       "version": info.version, "directed": not info.add_inverse_edge},
            "symmetrised": True,
            "features": x_note,
            "csr": {**csr, "seconds": round(t_csr, 3)},
            "convert_seconds": round(time.perf_counter() - t0, 3),
        })
    return GraphStore.open(store_path)


def prepare_ogb_node(name: str, root: PathLike, store_path: Optional[PathLike] = None, download: bool = False,
                     overwrite: bool = False, **kwargs: Any) -> GraphStore:
    """The store of ``name``: opened if it exists, else converted from ``<root>/<ogbn_name>`` (downloaded
    first with ``download=True`` when the raw files are missing).

    Args:
        name: OGB name.
        root: folder of the raw dataset folders.
        store_path: the store; default :func:`default_store_path` (``<root>/store/<ogbn_name>``).
        download: fetch the raw zip with OGB's helpers when the files are missing.
        overwrite: rebuild an existing store.
        **kwargs: passed to :func:`convert_ogb_node` (``chunk_rows``, ``mem_budget``, ``feature_dtype``).
    """
    store_path = Path(store_path) if store_path is not None else default_store_path(root, name)
    if GraphStore.exists(store_path) and not overwrite:
        return GraphStore.open(store_path)
    try:
        locate_ogb_raw(name, root)
    except ConfigError:
        if not download:
            raise
        download_ogb_raw(name, root)
    return convert_ogb_node(name, root, store_path, overwrite=overwrite, **kwargs)


__all__ = ["SUPPORTED", "OGBNodeInfo", "ogb_node_info", "default_store_path", "locate_ogb_raw", "download_ogb_raw",
           "required_files", "NpyMember", "npz_keys", "npz_member", "iter_npz_chunks", "iter_csv_chunks",
           "SymmetricCSRBuilder", "convert_ogb_node", "prepare_ogb_node"]
