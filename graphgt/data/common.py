"""What every in-memory data module shares: locating (and if need be copying) the files, splitting,
attaching positional encodings, and building the loaders.

A concrete module (one per source) only says where its files are (:meth:`InMemoryDataModule.check`)
and how to read them (:meth:`InMemoryDataModule.prepare`, returning a :class:`Prepared`); the
base class does the rest, for node-level (one graph, a ``loss_mask`` per split) and graph-level
(mini-batches of whole graphs) tasks alike.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any, ClassVar, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from graphgt.data.base import DataModule
from graphgt.data.loader import FullBatchLoader, GraphBatchLoader, PackedGraphs
from graphgt.data.splits import Split, SplitIndices
from graphgt.errors import ConfigError
from graphgt.pe.base import PositionalEncoding
from graphgt.pe.cache import attach_pes
from graphgt.spec import CategoricalFeatures, DataSpec, Level

# --------------------------------------------------------------------------------------------- files


#: the file in a dataset copy that records which source files it was copied from
COPY_STAMP = ".graphgt-source.json"


def _source_files(src: Path, exclude: Sequence[str]) -> List[List[Any]]:
    """``[relative path, size, mtime_ns]`` of every file under ``src`` that a copy would hold, sorted."""
    ignore = shutil.ignore_patterns(*exclude)
    files: List[List[Any]] = []
    for dirpath, dirnames, filenames in os.walk(src):
        skipped = ignore(dirpath, [*dirnames, *filenames])
        dirnames[:] = sorted(d for d in dirnames if d not in skipped)
        for name in sorted(f for f in filenames if f not in skipped):
            st = (Path(dirpath) / name).stat()
            files.append([str((Path(dirpath) / name).relative_to(src)), int(st.st_size), int(st.st_mtime_ns)])
    return files


def _stamp_of(copy: Path) -> Optional[List[List[Any]]]:
    """The source files a copy records (None for a copy without a readable record)."""
    try:
        return json.loads((copy / COPY_STAMP).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def writable_copy(src: Path, cache_dir: Path, rel: str, exclude: Sequence[str] = ("processed",)) -> Path:
    """A private copy of the dataset folder ``src`` under ``cache_dir/datasets/<rel>``, to load from.

    PyG and OGB loaders write ``processed/`` (and sometimes more) next to ``raw/``.  The user's data
    folder is never written: it is copied once, without the ``exclude`` folders, and the loaders
    process the copy.  The copy is made in a temporary folder and renamed into place, so an
    interrupted copy is never mistaken for a complete one.  It records the names, sizes and
    modification times of the files it was made from (:data:`COPY_STAMP`); when the source changes
    (or another data root with other files maps to the same ``rel``), it is made again and the
    loader processes the new files.

    Args:
        src: the dataset folder (e.g. ``<root>/tu/MUTAG``).
        cache_dir: the run's cache folder.
        rel: the dataset folder relative to the data root (e.g. ``tu/MUTAG``).
        exclude: folder/file names (glob patterns) not copied.
    """
    src = Path(src)
    dst = Path(cache_dir) / "datasets" / rel
    if dst.exists() and dst.resolve() == src.resolve():
        return dst  # the data root is the cache's own datasets folder: it is already the copy
    files = _source_files(src, exclude)
    if dst.is_dir() and _stamp_of(dst) == files:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp"))
    stale: Optional[Path] = None
    try:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*exclude), dirs_exist_ok=True)
        for dirpath, dirnames, filenames in os.walk(tmp):  # the copy must be writable (modes are copied)
            for name in [*dirnames, *filenames, "."]:
                p = Path(dirpath) / name
                p.chmod(p.stat().st_mode | stat.S_IWUSR)
        (tmp / COPY_STAMP).write_text(json.dumps({"source": str(src.resolve()), "files": files}))
        if dst.exists():  # an out-of-date copy (or one made before copies recorded their source)
            stale = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".stale"))
            os.replace(dst, stale / "old")
        try:
            os.replace(tmp, dst)
        except OSError:
            if _stamp_of(dst) != files:  # a concurrent copy of the same files that won the race is fine
                raise
    finally:
        for leftover in (tmp, stale):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return dst


def require_paths(paths: Sequence[Path], what: str, fix: str) -> None:
    """Raise :class:`ConfigError` naming the first missing path, the ``data.root`` key and ``fix``."""
    for p in paths:
        if not Path(p).exists():
            raise ConfigError(f"{what} not found: expected '{Path(p).resolve()}' (set by data.root). {fix}")


def as_split(split: Any, default: Split, key: str = "data.split") -> Split:
    """``split`` as a :class:`Split` (an instance, which Hydra builds from the ``data.split`` node,
    or None for ``default``)."""
    if split is None:
        return default
    if isinstance(split, Mapping):  # a DictConfig: the user set data._recursive_=false
        raise ConfigError(f"{key} arrived as an unbuilt config node (_target_: {split.get('_target_', None)}), not a "
                          f"split strategy: '_recursive_: false' stops Hydra from building nested nodes; remove it")
    if not isinstance(split, Split):
        raise ConfigError(f"{key} must be a split strategy (MaskSplit, RandomSplit, IndexFileSplit, "
                          f"OfficialSplit), got {split!r}")
    return split


# ------------------------------------------------------------------------------------------- graphs


def ensure_node_features(graphs: Sequence[Data], name: str = "the dataset") -> int:
    """Give featureless graphs a constant feature ``x = ones[N, 1]`` (in place), and say so in the
    log (logger ``graphgt.data``): a constant feature carries no information, so a model sees only
    the graph structure through message passing.  Returns the number of graphs given features."""
    filled = 0
    for g in graphs:
        if getattr(g, "x", None) is None:
            g.x = torch.ones(int(g.num_nodes), 1)
            filled += 1
    if filled:
        logging.getLogger("graphgt.data").warning(
            "%s: %d of %d graphs have no node features; they get the constant feature x = 1 (ones[N, 1]). "
            "Give the model structural node inputs instead: pe=degree (one-hot degrees), pe=rwse or pe=lap.",
            name, filled, len(graphs))
    return filled


def molecule_features() -> Tuple[CategoricalFeatures, CategoricalFeatures]:
    """OGB's atom and bond features (``smiles2graph``): the cardinalities of their integer columns,
    which the model embeds as OGB's AtomEncoder / BondEncoder do."""
    from ogb.utils.features import get_atom_feature_dims, get_bond_feature_dims

    return CategoricalFeatures(get_atom_feature_dims()), CategoricalFeatures(get_bond_feature_dims())


#: what reading damaged or foreign dataset files raises inside PyG/OGB/pandas/torch loaders
UNREADABLE = (ValueError, RuntimeError, EOFError, OSError, KeyError, IndexError, pickle.UnpicklingError,
              zipfile.BadZipFile, UnicodeDecodeError, AttributeError)


def check_graphs(graphs: Sequence[Data], name: str) -> None:
    """:class:`ConfigError` when an ``edge_index`` points outside its graph's nodes (a damaged or
    mismatched file), naming the graph and the bad value, instead of an index error inside a layer."""
    for i, g in enumerate(graphs):
        ei = getattr(g, "edge_index", None)
        if ei is None or ei.numel() == 0:
            continue
        n = int(g.num_nodes)
        low, high = int(ei.min()), int(ei.max())
        if low < 0 or high >= n:
            raise ConfigError(f"{name}: graph {i} has an edge_index entry {low if low < 0 else high} outside its "
                              f"{n} nodes [0, {n}); the dataset files are damaged or do not belong together")


def feature_dim(t: Optional[Tensor]) -> int:
    """Width of a feature tensor (``[N]`` counts as width 1)."""
    if t is None:
        return 0
    return 1 if t.dim() == 1 else int(t.size(-1))


@dataclass
class Prepared:
    """What a concrete module's :meth:`InMemoryDataModule.prepare` returns.

    Attributes:
        graphs: the graphs (one for a node-level task), targets already in graphgt's layout
            (multiclass: long ``[N]``/``[G]``; otherwise float ``[N, T]``/``[1, T]`` per graph).
        spec: the dataset's :class:`DataSpec`.
        split_source: what the split strategy reads (the ``Data`` for masks, the dataset for
            ``get_idx_split``).
        labels: one class id per split item (for stratified splits), or None.
    """

    graphs: List[Data]
    spec: DataSpec
    split_source: Any = None
    labels: Optional[Tensor] = None


class InMemoryDataModule(DataModule):
    """Base of the data modules whose graphs fit in memory.

    Subclasses implement :meth:`check` (cheap; may use :meth:`source_dir`) and :meth:`prepare`
    (read the data from :meth:`load_dir`, a copy under the cache that loaders may write into).  Node-level datasets yield
    their one graph per split as a one-graph ``Batch`` (with ``batch`` and ``ptr``) that carries a
    boolean ``loss_mask`` of the split's nodes; graph-level ones yield PyG mini-batches.

    Args:
        root: the folder holding the dataset folders (``root/tu/MUTAG``, ``root/ogb/...``).
        batch_size: graphs per batch (graph level; node-level datasets are full-batch and ignore it).
        num_workers: loader worker processes (graph level).
        split: the split strategy.
    """

    #: the task level every instance has (None: decided by the instance's spec)
    level: ClassVar[Optional[str]] = None

    def __init__(self, root: str, batch_size: int, num_workers: int = 0, split: Optional[Split] = None):
        self.root = str(root)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.split = split
        self._spec: Optional[DataSpec] = None
        self._splits: Dict[str, Any] = {}
        self._packed: Dict[str, PackedGraphs] = {}
        self._prepared: Optional[Prepared] = None
        self.split_indices: Optional[SplitIndices] = None
        self._copies: List[Path] = []

    # ---- for subclasses
    def prepare(self, cache_dir: Path) -> Prepared:  # pragma: no cover - abstract
        """Read the dataset (from ``cache_dir`` copies if needed) into a :class:`Prepared`."""
        raise NotImplementedError

    def source_dir(self, rel: str) -> Path:
        """``<root>/<rel>``: where the dataset folder is expected."""
        return Path(self.root) / rel

    def load_dir(self, rel: str, cache_dir: Path) -> Path:
        """The folder to load ``rel`` from: its private copy under ``cache_dir`` (:func:`writable_copy`),
        so that the loader's ``processed/`` never lands in the user's data folder."""
        copy_dir = writable_copy(self.source_dir(rel), Path(cache_dir), rel)
        self._copies.append(copy_dir)
        return copy_dir

    def _check_common(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.split is not None:
            self.split.check()

    def check(self) -> None:
        self._check_common()

    # ---- the protocol
    def load(self, cache_dir: Path) -> DataSpec:
        """Read the dataset (once; cached under ``cache_dir``) and return its spec, before any PE."""
        if self._prepared is None:
            self.check()
            self._prepared = self._prepare_checked(Path(cache_dir))
        return self._prepared.spec

    def _prepare_checked(self, cache_dir: Path) -> Prepared:
        """:meth:`prepare`, with unreadable files as a :class:`ConfigError` and the graphs checked.

        A loader's own ``processed/`` file that cannot be read back (a kill while it was written) is
        dropped and rebuilt from the raw files, once; raw files that cannot be read are named with
        what to do.
        """
        try:
            prepared = self.prepare(cache_dir)
        except UNREADABLE:
            dropped = self._drop_processed()
            try:
                if not dropped:
                    raise
                prepared = self.prepare(cache_dir)
            except UNREADABLE as e:
                first = " ".join(str(e).split())[:200] or type(e).__name__
                raise ConfigError(f"{type(self).__name__}: the dataset files under '{Path(self.root).resolve()}' "
                                  f"(set by data.root) cannot be read ({type(e).__name__}: {first}); they are "
                                  "damaged or not in the dataset's format: replace them with the original "
                                  "download") from None
        check_graphs(prepared.graphs, type(self).__name__)
        return prepared

    def _drop_processed(self) -> bool:
        """Remove the ``processed/`` folders of this module's private copies; whether any was removed."""
        dropped = False
        for copy_dir in self._copies:
            for processed in sorted(Path(copy_dir).rglob("processed")):
                if processed.is_dir():
                    shutil.rmtree(processed, ignore_errors=True)
                    dropped = True
        return dropped

    def setup(self, pes: Sequence[PositionalEncoding], cache_dir: Path) -> None:
        """Load, split, attach the positional encodings (cached under ``cache_dir``), build loaders."""
        cache_dir = Path(cache_dir)
        self.load(cache_dir)
        prepared = self._prepared
        level: Level = prepared.spec.task.level
        if self.level is not None and level != self.level:
            raise TypeError(f"{type(self).__name__} is a {self.level}-level module but prepared a {level}-level task")
        graphs = prepared.graphs
        num_items = int(graphs[0].num_nodes) if level == "node" else len(graphs)
        if self.split is None:
            raise ConfigError(f"{type(self).__name__}: data.split is not set")
        idx = self.split.split(num_items, prepared.split_source, prepared.labels)
        for name, part in zip(("train", "val", "test"), idx):
            if part.numel() == 0 and name != "val":
                raise ConfigError(f"{type(self).__name__}: the {name} split is empty (check data.split)")
        graphs = attach_pes(graphs, pes, cache_dir)
        self.split_indices = idx
        self._spec = prepared.spec
        if level == "node":
            self._splits = _node_splits(graphs, idx)
        else:
            self._splits = {name: [graphs[i] for i in part.tolist()] for name, part in zip(("train", "val", "test"), idx)}
        self._packed = {}

    @property
    def spec(self) -> DataSpec:
        if self._spec is None:
            raise RuntimeError(f"{type(self).__name__}.spec is known after setup(pes, cache_dir)")
        return self._spec

    def _loader(self, name: str, seed: Optional[int], rank: int, world_size: int) -> Iterable:
        if not self._splits:
            raise RuntimeError(f"{type(self).__name__}: call setup(pes, cache_dir) before asking for loaders")
        if self.spec.task.level == "node":
            return FullBatchLoader(self._splits[name], shuffle=seed is not None, rank=rank, world_size=world_size)
        if name not in self._packed:
            self._packed[name] = PackedGraphs(self._splits[name])
        return GraphBatchLoader(self._packed[name], self.batch_size, shuffle=seed is not None, seed=seed or 0,
                                num_workers=self.num_workers, rank=rank, world_size=world_size)

    def train_loader(self, seed: int, rank: int = 0, world_size: int = 1) -> Iterable:
        """Training batches, shuffled by a generator seeded with ``seed`` (same seed, same order)."""
        return self._loader("train", seed, rank, world_size)

    def val_loader(self, rank: int = 0, world_size: int = 1) -> Iterable:
        return self._loader("val", None, rank, world_size)

    def test_loader(self, rank: int = 0, world_size: int = 1) -> Iterable:
        return self._loader("test", None, rank, world_size)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "split_indices")
        return f"{type(self).__name__}({params})"


def _node_splits(graphs: Sequence[Data], idx: SplitIndices) -> Dict[str, Batch]:
    """One ``Batch`` of the single graph per split, sharing tensors, each with its ``loss_mask``."""
    if len(graphs) != 1:
        raise ValueError(f"a node-level dataset has one graph, got {len(graphs)}")
    g = copy.copy(graphs[0])  # shallow: tensors are shared, attribute deletions are not
    for key in [k for k in g.keys() if k.endswith("_mask")]:  # the split lives in loss_mask only
        del g[key]
    batch = Batch.from_data_list([g])
    out = {}
    for name, part in zip(("train", "val", "test"), idx):
        b = copy.copy(batch)
        mask = torch.zeros(int(g.num_nodes), dtype=torch.bool)
        mask[part] = True
        b.loss_mask = mask
        out[name] = b
    return out


class NodeDataModule(InMemoryDataModule):
    """A data module of one graph whose nodes are classified/regressed (full-batch loaders)."""

    level: ClassVar[Optional[str]] = "node"


class GraphDataModule(InMemoryDataModule):
    """A data module of many graphs, each one prediction (mini-batch loaders of whole graphs)."""

    level: ClassVar[Optional[str]] = "graph"
