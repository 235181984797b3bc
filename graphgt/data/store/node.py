"""Node-level tasks on graphs held in a :mod:`graph store <graphgt.data.store>`, trained on sampled
mini-batches (ogbn-products, ogbn-papers100M, ogbn-arxiv, ogbn-proteins, the synthetic shapes).

A :class:`StoreNodeData` module knows *where its store comes from* (a :class:`StoreSource`: an
existing directory, a synthetic builder, or an OGB download converted in chunks), builds it once
under ``<cache_dir>/stores/<source key>`` when it is missing, computes the requested positional
encodings into it (cached by their parameters), and serves :class:`~graphgt.data.sampling.NodeLoader`
loaders: shuffled, sampled training batches (one disjoint shard of the seeds per DDP rank) and
deterministic sampled inference over every node of the validation and test splits, each node
counted exactly once.

The batches are ``Data`` objects with ``x``, ``edge_index`` (sampled neighbour -> target),
``y``, ``loss_mask`` (the labelled seeds), ``n_id``, ``batch`` (one graph) and the PE keys, so the
training loop and every model are the same as for in-memory datasets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Union

import numpy as np

from graphgt.data.base import DataModule
from graphgt.data.store.core import GraphStore
from graphgt.errors import ConfigError
from graphgt.pe.base import PositionalEncoding
from graphgt.spec import DataSpec, FloatFeatures, Task

SamplerFactory = Callable[..., Any]

# ------------------------------------------------------------------------------------------ sources


class StoreSource:
    """Where a graph store comes from.

    ``key()`` names the store (a different key = a different store directory), ``check(path)``
    fails fast (:class:`ConfigError`) when the store can neither be found nor built, ``build(path)``
    writes it (atomically: see :class:`~graphgt.data.store.StoreWriter`).
    """

    def key(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, path: Path) -> None:
        """Raise ConfigError if ``path`` holds no store and :meth:`build` cannot make one."""

    def build(self, path: Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def store_path(self, store_root: Path) -> Path:
        """Where this source's store lives under ``store_root``."""
        return Path(store_root) / self.key()

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class ExistingStore(StoreSource):
    """A store that was built elsewhere (``scripts/build_synthetic.py``, ``scripts/prepare_ogb.py``).

    Args:
        path: the store directory.
    """

    def __init__(self, path: str):
        self.path = str(path)

    def key(self) -> str:
        return Path(self.path).name

    def store_path(self, store_root: Path) -> Path:
        return Path(self.path)

    def check(self, path: Path) -> None:
        if not GraphStore.exists(path):
            raise ConfigError(f"data.source.path: no graph store at '{Path(path).resolve()}' (no meta.json). "
                              "Build one with scripts/build_synthetic.py or scripts/prepare_ogb.py, "
                              "or fix the path")

    def build(self, path: Path) -> None:
        self.check(path)


class SyntheticShape(StoreSource):
    """A synthetic graph of a real dataset's shape (:mod:`graphgt.data.store.synthetic`).

    Args:
        builder: the preset builder ``builder(path, seed=...)``: a Hydra ``_partial_`` of
            ``build_products_shaped`` or ``build_papers_shaped`` that carries the preset's options
            (``scale`` / ``fraction`` ...).
        name: short name of the preset; the store directory is ``<name>-seed<seed>-<option><value>...``
            (e.g. ``products-shaped-seed0-scale1.0``), so changing any of them builds a new store.
        seed: generator seed.
    """

    def __init__(self, builder: Callable[..., Any], name: str, seed: int = 0):
        self.builder, self.name, self.seed = builder, str(name), int(seed)

    def key(self) -> str:
        keywords = dict(getattr(self.builder, "keywords", {}) or {})
        return f"{self.name}-seed{self.seed}" + "".join(f"-{k}{v}" for k, v in sorted(keywords.items()))

    def build(self, path: Path) -> None:
        self.builder(path, seed=self.seed)


class OGBNodeSource(StoreSource):
    """An OGB node-property dataset converted into a store in chunks (:mod:`graphgt.data.store.ogb`).

    Args:
        name: ``ogbn-products``, ``ogbn-papers100M``, ``ogbn-arxiv`` or ``ogbn-proteins``.
        root: folder holding OGB's unzipped download (``<root>/ogbn_products/raw/...``); downloaded
            there first when missing and the machine is online.
        download: allow downloading.
    """

    def __init__(self, name: str, root: str, download: bool = True):
        self.name, self.root, self.download = str(name), str(root), bool(download)

    def key(self) -> str:
        return self.name

    def check(self, path: Path) -> None:
        """Known dataset name; and, when downloading is off, the raw files present (else: path + command)."""
        from graphgt.data.store import ogb

        ogb.ogb_node_info(self.name)
        if not GraphStore.exists(path) and not self.download:
            ogb.locate_ogb_raw(self.name, Path(self.root))

    def build(self, path: Path) -> None:
        from graphgt.data.store import ogb

        ogb.prepare_ogb_node(self.name, Path(self.root), store_path=Path(path), download=self.download)


class InMemorySource(StoreSource):
    """The graph of an in-memory node-level data module (e.g. Planetoid Cora) written as a store, so
    that the store-based samplers and models (LargeGT's token sampler) run on it.

    The module is loaded and split exactly as when it is trained on directly (same split indices),
    then its graph (``edge_index`` made symmetric and deduplicated), float features, labels and splits
    are written.

    Args:
        module: a node-level :class:`~graphgt.data.common.NodeDataModule` (a nested Hydra node).
        name: short name; the store directory is ``<name>-<digest of the module's parameters>``.
        cache_dir: where the module keeps its processed files (the run's ``cache_dir``).
    """

    def __init__(self, module: Any, name: str, cache_dir: str):
        self.module, self.name, self.cache_dir = module, str(name), str(cache_dir)

    def key(self) -> str:
        import hashlib

        return f"{self.name}-{hashlib.sha1(repr(self.module).encode()).hexdigest()[:10]}"

    def check(self, path: Path) -> None:
        if not GraphStore.exists(path):
            self.module.check()

    def build(self, path: Path) -> None:
        import torch
        from torch_geometric.utils import coalesce, to_undirected

        from graphgt.data.store.core import csr_from_edges, write_store

        self.module.setup([], Path(self.cache_dir))
        spec = self.module.spec
        if spec.task.level != "node" or spec.node_feature_dim is None:
            raise ConfigError(f"data.source.module: {type(self.module).__name__} is not a node-level dataset with "
                              "float node features; InMemorySource needs one (e.g. data=cora)")
        graph = self.module._prepared.graphs[0]
        n = int(graph.num_nodes)
        edge_index = coalesce(to_undirected(graph.edge_index, num_nodes=n), num_nodes=n)
        edge_index = edge_index[:, edge_index[0] != edge_index[1]]
        indptr, indices = csr_from_edges(edge_index[0].numpy(), edge_index[1].numpy(), n)
        x = graph.x.to(torch.float32).numpy()
        y = graph.y.numpy().astype(np.float32 if graph.y.is_floating_point() else np.int64)
        splits = {name: part.numpy() for name, part in zip(("train", "val", "test"), self.module.split_indices)}
        task = {"kind": spec.task.kind, "num_outputs": spec.task.num_outputs,
                "metric": "accuracy" if spec.task.kind == "multiclass" else "rocauc"}
        write_store(path, self.name, n, indptr, indices, x=x, y=y, splits=splits, task=task)


# ------------------------------------------------------------------------------------------- module


def _int_or_keep(value: Any) -> Any:
    """``int(value)`` for integral values (Hydra gives ints), else ``value`` itself for check() to refuse."""
    try:
        return int(value) if int(value) == value and not isinstance(value, bool) else value
    except (TypeError, ValueError):
        return value


def task_from_meta(store: GraphStore) -> Task:
    """The :class:`Task` stored in ``meta["task"]`` (metric: OGB's Evaluator for OGB datasets)."""
    task = store.meta.get("task")
    if not task:
        raise ConfigError(f"graph store '{store.path}' has no 'task' in meta.json; rebuild it")
    ogb_name = task.get("ogb_name")
    metric = f"ogb:{ogb_name}" if ogb_name else ("accuracy" if task.get("metric", "accuracy") == "accuracy" else "rocauc")
    return Task(kind=task["kind"], num_outputs=int(task["num_outputs"]), level="node", metric=metric)


class StoreNodeData(DataModule):
    """Node classification on a graph store with sampled mini-batches.

    Args:
        source: where the store comes from (:class:`StoreSource`).
        sampler: factory ``(indptr, indices) -> sampler`` for training batches (a Hydra partial of
            :class:`~graphgt.data.sampling.NeighborSampler` with its ``fanouts``, or of
            :class:`~graphgt.data.sampling.RandomNodeSampler` with its ``num_parts``: then a training
            pass has ``num_parts`` batches of ``ceil(n_train / num_parts)`` seeds and ``batch_size``
            applies to evaluation only).
        eval_sampler: the same for evaluation (default: ``sampler``); larger fan-outs give
            evaluation closer to full-neighbourhood inference.
        batch_size: seeds per training batch.
        eval_batch_size: seeds per evaluation batch (default ``batch_size``).
        num_workers: worker processes that sample and gather (each maps the store itself); ``auto``
            = one per core of this rank's share, at most 8, 0 on one core
            (:func:`~graphgt.data.sampling.loader.resolve_num_workers`).
        prefetch_factor: batches each worker prepares ahead.
        placement: ``auto``, ``cpu`` or ``device``: where the gathered arrays (features, labels, PEs,
            hop features) live (:func:`~graphgt.data.sampling.loader.resolve_placement`): ``device``
            copies them once to the trainer's device and gathers each batch there; ``auto`` does so
            on a CUDA device when they take less than ``DEVICE_MEMORY_FRACTION`` (0.4) of its free
            memory, else ``cpu`` (host gathering in the workers).
        store_root: where built stores live (default ``<cache_dir>/stores``).
        release_every: drop the store's mapped pages from RSS every this many batches (0: never;
            for stores larger than RAM, e.g. papers100M).
        hop_features: precompute ``Â x .. Â^P x`` into the store (once) and give token batches
            their ``token_xhop`` (LargeGT's propagated token features,
            :mod:`graphgt.data.store.hop_features`); 0 = none.
        hop_norm: the propagation matrix of ``hop_features``: ``gcn`` or ``mean``.
        layerwise_eval: ``None`` (evaluate with sampled batches of ``eval_sampler``) or a factory
            ``(store, split_ids, pe_keys=...) -> LayerwiseInference`` (a Hydra partial,
            ``data/layerwise_eval=ram|disk``): exact full-neighbourhood evaluation, one layer at a time
            over all nodes (:class:`graphgt.data.layerwise.LayerwiseInference`; MPNN/GPS models
            without global attention).
    """

    def __init__(self, source: StoreSource, sampler: SamplerFactory, eval_sampler: Optional[SamplerFactory] = None,
                 batch_size: int = 1024, eval_batch_size: Optional[int] = None,
                 num_workers: Union[int, str] = "auto", prefetch_factor: int = 2, store_root: Optional[str] = None,
                 release_every: int = 0, hop_features: int = 0, hop_norm: str = "gcn", placement: str = "auto",
                 layerwise_eval: Optional[Callable[..., Any]] = None):
        self.source = source
        self.sampler, self.eval_sampler = sampler, eval_sampler or sampler
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = num_workers if num_workers == "auto" else _int_or_keep(num_workers)
        self.prefetch_factor = int(prefetch_factor)
        self.placement = str(placement)
        self.device: Any = None
        self._device_rows: Any = None  # one device copy of the arrays, shared by the three loaders
        self.store_root = store_root
        self.release_every = int(release_every)
        self.hop_features, self.hop_norm = int(hop_features), str(hop_norm)
        self.layerwise_eval = layerwise_eval
        self.store: Optional[GraphStore] = None
        self._spec: Optional[DataSpec] = None
        self._pe_keys: Sequence[str] = ()
        self._samplers: Dict[str, Any] = {}

    # ---- protocol
    def _store_path(self, cache_dir: Optional[Path]) -> Path:
        root = Path(self.store_root) if self.store_root else Path(cache_dir or ".") / "stores"
        return self.source.store_path(root)

    def check(self) -> None:
        for key, value in (("batch_size", self.batch_size), ("eval_batch_size", self.eval_batch_size),
                           ("prefetch_factor", self.prefetch_factor)):
            if value < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {value}")
        from graphgt.data.sampling.loader import PLACEMENTS

        if self.num_workers != "auto" and (not isinstance(self.num_workers, int) or self.num_workers < 0):
            raise ConfigError(f"data.num_workers={self.num_workers!r} must be 'auto' or an int >= 0")
        if self.release_every < 0:
            raise ConfigError(f"data.release_every must be >= 0, got {self.release_every}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"data.placement='{self.placement}' must be one of {list(PLACEMENTS)}")
        if self.layerwise_eval is not None and not callable(self.layerwise_eval):
            raise ConfigError(f"data.layerwise_eval={self.layerwise_eval!r} must be null or a factory of "
                              "graphgt.data.layerwise.LayerwiseInference (data/layerwise_eval=ram or disk)")
        from graphgt.data.store.hop_features import NORMS

        if self.hop_features < 0:
            raise ConfigError(f"data.hop_features must be >= 0 (LargeGT uses 2), got {self.hop_features}")
        if self.hop_norm not in NORMS:
            raise ConfigError(f"data.hop_norm='{self.hop_norm}' is not one of {list(NORMS)}")
        if self.store_root is not None or isinstance(self.source, ExistingStore):
            self.source.check(self._store_path(None))

    def load(self, cache_dir: Path) -> DataSpec:
        """Open the store (building it first if it is missing) and return the spec."""
        if self._spec is not None:
            return self._spec
        path = self._store_path(cache_dir)
        if not GraphStore.exists(path):
            self.source.check(path)
            self.source.build(path)
        self.store = GraphStore.open(path)
        task = task_from_meta(self.store)
        num_features = int(self.store.x.shape[1])
        self._spec = DataSpec(task=task, node_features=FloatFeatures(num_features), edge_features=None,
                              name=self.store.name)
        return self._spec

    def setup(self, pes: Sequence[PositionalEncoding], cache_dir: Path) -> None:
        """Compute the positional encodings into the store (once per PE parameters) and build samplers."""
        self.load(cache_dir)
        if pes:
            from graphgt.data.store.pe import compute_store_pe

            for pe in pes:
                compute_store_pe(self.store.path, pe)
            self.store = GraphStore.open(self.store.path)
        if self.hop_features:
            from graphgt.data.store.hop_features import compute_hop_features

            self.store = compute_hop_features(self.store.path, self.hop_features, self.hop_norm,
                                              log=lambda m: print(f"graphgt: {m}", flush=True))
        self._pe_keys = tuple(key for pe in pes for key in pe.keys)
        indptr, indices = self.store.indptr, self.store.indices
        self._samplers = {"train": self.sampler(indptr, indices), "eval": self.eval_sampler(indptr, indices)}
        for name in ("train", "val", "test"):
            if not self.store.has(f"split/{name}") or self.store.split(name).shape[0] == 0:
                raise ConfigError(f"graph store '{self.store.path}' has an empty or missing '{name}' split")
        from graphgt.data.sampling import RandomNodeSampler

        train = self._samplers["train"]
        if isinstance(train, RandomNodeSampler):
            print(f"graphgt: data.sampler {train!r}: training batches of {self._train_batch_size()} seeds "
                  f"(the {self.store.split('train').shape[0]} training nodes in {train.num_parts} parts) with their "
                  f"random context; data.batch_size={self.batch_size} sets evaluation batches only", flush=True)

    def place(self, device: Any) -> None:
        """The trainer's device: loaders resolve ``placement`` against it and yield batches for it."""
        if self.device is None or str(device) != str(self.device):
            self._device_rows = None
        self.device = device

    def _rows(self) -> Any:
        """The arrays on the device when ``placement`` resolves to ``device`` (built once), else ``None``."""
        from graphgt.data.sampling.loader import DeviceRows, resolve_placement

        if self._device_rows is None:
            need = DeviceRows.feature_bytes(self.store, self._pe_keys, self.hop_features) \
                if self.placement == "auto" else 0
            if resolve_placement(self.placement, self.device, need) == "device":
                self._device_rows = DeviceRows(self.store, self._pe_keys, self.hop_features, self.device or "cpu")
        return self._device_rows

    @property
    def spec(self) -> DataSpec:
        if self._spec is None:
            raise RuntimeError("StoreNodeData.spec is known after load(cache_dir)")
        return self._spec

    def _train_batch_size(self) -> int:
        """``data.batch_size``, or with a :class:`RandomNodeSampler` ``ceil(n_train / num_parts)``."""
        from graphgt.data.sampling import RandomNodeSampler

        sampler = self._samplers["train"]
        if isinstance(sampler, RandomNodeSampler):
            return sampler.batch_size(self.store.split("train").shape[0])
        return self.batch_size

    def _loader(self, split: str, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1) -> Iterable:
        from graphgt.data.sampling import NodeLoader

        if not self._samplers:
            raise RuntimeError("StoreNodeData: call setup(pes, cache_dir) before asking for loaders")
        rows = self._rows()
        return NodeLoader(self.store, np.asarray(self.store.split(split)),
                          self._samplers["train" if shuffle else "eval"],
                          batch_size=self._train_batch_size() if shuffle else self.eval_batch_size, shuffle=shuffle,
                          seed=seed, num_workers=self.num_workers, prefetch_factor=self.prefetch_factor,
                          rank=rank, world_size=world_size, pe_keys=self._pe_keys,
                          release_every=self.release_every, hop_features=self.hop_features,
                          placement="cpu" if rows is None else "device", device=self.device, device_rows=rows)

    def train_loader(self, seed: int, rank: int = 0, world_size: int = 1) -> Iterable:
        """Shuffled sampled batches (this rank's part of each); a new deterministic order every epoch."""
        return self._loader("train", True, seed, rank, world_size)

    def _eval_loader(self, split: str, rank: int, world_size: int) -> Iterable:
        if self.layerwise_eval is None:
            return self._loader(split, False, 0, rank, world_size)
        if self.store is None:
            raise RuntimeError("StoreNodeData: call setup(pes, cache_dir) before asking for loaders")
        # one process computes every node exactly: each DDP rank gets the same, complete predictions
        return self.layerwise_eval(self.store, np.asarray(self.store.split(split)), pe_keys=self._pe_keys)

    def val_loader(self, rank: int = 0, world_size: int = 1) -> Iterable:
        """Every validation node exactly once over all ranks, in order, with deterministic sampling
        (or one :class:`~graphgt.data.layerwise.LayerwiseInference` with ``layerwise_eval``)."""
        return self._eval_loader("val", rank, world_size)

    def test_loader(self, rank: int = 0, world_size: int = 1) -> Iterable:
        return self._eval_loader("test", rank, world_size)

    def __repr__(self) -> str:
        return (f"StoreNodeData(source={self.source!r}, batch_size={self.batch_size}, "
                f"eval_batch_size={self.eval_batch_size}, num_workers={self.num_workers!r}, placement={self.placement!r}, "
                f"layerwise_eval={'off' if self.layerwise_eval is None else 'on'})")

