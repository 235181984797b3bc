"""Split strategies: which items (nodes of one graph, or graphs of a dataset) go to train/val/test.

Every strategy is a small class built from plain arguments (so Hydra can ``_target_`` it) with one
method, :meth:`Split.split`, shared by node-level and graph-level data modules::

    train_idx, val_idx, test_idx = split.split(num_items, source, labels)

``source`` is what the data module loaded (the single ``Data`` of a node-level dataset, or the
dataset object of a graph-level one) and is only read by strategies that take their split from the
data itself (:class:`MaskSplit`, :class:`OfficialSplit`); ``labels`` (``Tensor[num_items]`` of class
ids) is only read by a stratified :class:`RandomSplit`.  Indices are sorted ``int64`` tensors.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from graphgt.errors import ConfigError


class SplitIndices(NamedTuple):
    """Sorted ``int64`` index tensors of the three splits."""

    train: Tensor
    val: Tensor
    test: Tensor


class Split:
    """Base class of split strategies."""

    def split(self, num_items: int, source: Any = None, labels: Optional[Tensor] = None) -> SplitIndices:
        """Return ``(train, val, test)`` indices into ``range(num_items)``."""
        raise NotImplementedError  # pragma: no cover

    def check(self) -> None:
        """Cheap validation of the options (no data needed); raises :class:`ConfigError`."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def _as_index(values: Any, name: str, num_items: int, where: str) -> Tensor:
    """Index array or boolean mask -> sorted int64 tensor, range-checked against ``num_items``."""
    t = torch.as_tensor(np.asarray(values))
    if t.dtype == torch.bool:
        if t.numel() != num_items:
            raise ConfigError(f"{where}: boolean mask '{name}' has {t.numel()} entries, expected {num_items}")
        t = t.nonzero().view(-1)
    t = t.reshape(-1).to(torch.int64)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_items):
        raise ConfigError(f"{where}: split '{name}' has indices outside [0, {num_items}) "
                          f"(min {int(t.min())}, max {int(t.max())}); is it the split of this dataset?")
    return torch.sort(t).values


def _check_disjoint(idx: SplitIndices, where: str) -> SplitIndices:
    names = ("train", "val", "test")
    for i in range(3):
        for j in range(i + 1, 3):
            common = np.intersect1d(idx[i].numpy(), idx[j].numpy())
            if common.size:
                raise ConfigError(f"{where}: splits '{names[i]}' and '{names[j]}' share {common.size} items "
                                  f"(e.g. {common[:5].tolist()})")
    return idx


class MaskSplit(Split):
    """The dataset's own boolean masks ``train_mask``, ``val_mask`` (or ``valid_mask``), ``test_mask``.

    Masks of shape ``[N, K]`` hold ``K`` alternative splits (e.g. the 10 Geom-GCN splits of WebKB):
    ``index`` picks one column.  A mask of shape ``[N]`` needs no index (``index`` must be None or 0).

    Args:
        index: the split column to use for ``[N, K]`` masks.
    """

    def __init__(self, index: Optional[int] = None):
        self.index = index

    def check(self) -> None:
        if self.index is not None and (not isinstance(self.index, int) or self.index < 0):
            raise ConfigError(f"split.index must be a non-negative integer or null, got {self.index!r}")

    def _mask(self, source: Any, names: Sequence[str], num_items: int) -> Tensor:
        for name in names:
            mask = getattr(source, name, None)
            if mask is not None:
                break
        else:
            raise ConfigError(f"MaskSplit: the data has no '{names[0]}' attribute; this dataset has no "
                              f"predefined masks, use a RandomSplit or IndexFileSplit as data.split")
        mask = torch.as_tensor(mask)
        if mask.dim() == 2:
            k = mask.size(1)
            if self.index is None:
                raise ConfigError(f"MaskSplit: the dataset has {k} alternative splits ({name} is "
                                  f"{list(mask.shape)}); set split.index to one of 0..{k - 1}")
            if not 0 <= self.index < k:
                raise ConfigError(f"MaskSplit: split.index={self.index} is out of range: "
                                  f"the dataset has {k} splits (0..{k - 1})")
            mask = mask[:, self.index]
        elif self.index not in (None, 0):
            raise ConfigError(f"MaskSplit: the dataset has a single split, split.index={self.index} is out "
                              f"of range (use null or 0)")
        return _as_index(mask.bool(), name, num_items, "MaskSplit")

    def split(self, num_items: int, source: Any = None, labels: Optional[Tensor] = None) -> SplitIndices:
        self.check()
        out = SplitIndices(self._mask(source, ("train_mask",), num_items),
                           self._mask(source, ("val_mask", "valid_mask"), num_items),
                           self._mask(source, ("test_mask",), num_items))
        return _check_disjoint(out, "MaskSplit")


class OfficialSplit(Split):
    """The dataset's own index split from ``source.get_idx_split()`` (OGB datasets: scaffold etc.)."""

    def split(self, num_items: int, source: Any = None, labels: Optional[Tensor] = None) -> SplitIndices:
        getter = getattr(source, "get_idx_split", None)
        if getter is None:
            raise ConfigError("OfficialSplit: this dataset has no official split (no get_idx_split()); "
                              "use a RandomSplit or IndexFileSplit as data.split")
        return _split_from_mapping(getter(), num_items, "OfficialSplit")


def _split_from_mapping(d: Any, num_items: int, where: str) -> SplitIndices:
    keys = list(d.keys()) if hasattr(d, "keys") else []

    def pick(*names: str) -> Any:
        for n in names:
            if n in keys:
                return d[n]
        raise ConfigError(f"{where}: no '{names[0]}' entry (accepted: {list(names)}); found keys {keys}")

    out = SplitIndices(_as_index(pick("train"), "train", num_items, where),
                       _as_index(pick("valid", "val"), "val", num_items, where),
                       _as_index(pick("test"), "test", num_items, where))
    return _check_disjoint(out, where)


class IndexFileSplit(Split):
    """Index arrays read from a file with entries ``train``, ``valid`` (or ``val``) and ``test``.

    Accepted formats by suffix: ``.pt``/``.pth`` (``torch.save`` of a dict), ``.npz``, ``.json``,
    ``.pkl``/``.pickle`` (a dict of arrays, as LRGB ships its splits).  Entries may be index arrays
    or boolean masks.

    Args:
        path: the file.
    """

    SUFFIXES = (".pt", ".pth", ".npz", ".json", ".pkl", ".pickle")

    def __init__(self, path: str):
        self.path = str(path)

    def check(self) -> None:
        p = Path(self.path)
        if p.suffix not in self.SUFFIXES:
            raise ConfigError(f"split.path '{p}': unsupported file type '{p.suffix}' (use one of {list(self.SUFFIXES)})")
        if not p.is_file():
            raise ConfigError(f"split.path: split file not found at '{p.resolve()}'")

    def load(self) -> Any:
        """The raw mapping stored in the file."""
        self.check()
        p = Path(self.path)
        try:
            if p.suffix in (".pt", ".pth"):
                return torch.load(p, weights_only=False)
            if p.suffix == ".npz":
                with np.load(p, allow_pickle=False) as f:
                    return {k: f[k] for k in f.files}
            if p.suffix == ".json":
                return json.loads(p.read_text())
            with open(p, "rb") as f:
                return pickle.load(f)
        except Exception as e:  # corrupt or foreign file
            raise ConfigError(f"split.path '{p}': cannot read the split file ({type(e).__name__}: {e})") from e

    def split(self, num_items: int, source: Any = None, labels: Optional[Tensor] = None) -> SplitIndices:
        return _split_from_mapping(self.load(), num_items, f"IndexFileSplit({self.path})")


class RandomSplit(Split):
    """A seeded random split: fractions ``train`` and ``val``, the rest is test.

    Disjoint, covers every item, identical for the same ``(num_items, seed)``.  With
    ``stratify=True`` each class is split in the same proportions (needs integer class labels).

    Args:
        train: fraction of items for training, in (0, 1).
        val: fraction for validation, in [0, 1); ``train + val <= 1``.
        seed: seed of the permutation.
        stratify: split each class separately.
    """

    def __init__(self, train: float, val: float, seed: int = 0, stratify: bool = False):
        self.train, self.val, self.seed, self.stratify = float(train), float(val), int(seed), bool(stratify)

    def check(self) -> None:
        if not 0.0 < self.train < 1.0:
            raise ConfigError(f"split.train must be in (0, 1), got {self.train}")
        if not 0.0 <= self.val < 1.0 or self.train + self.val > 1.0 + 1e-9:
            raise ConfigError(f"split.val must be in [0, 1) with split.train + split.val <= 1, "
                              f"got train={self.train}, val={self.val}")

    def _cut(self, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = perm.size
        n_train = int(round(self.train * n))
        n_val = min(int(round(self.val * n)), n - n_train)
        return perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]

    def split(self, num_items: int, source: Any = None, labels: Optional[Tensor] = None) -> SplitIndices:
        self.check()
        rng = np.random.default_rng(self.seed)
        if not self.stratify:
            parts = self._cut(rng.permutation(num_items))
        else:
            if labels is None:
                raise ConfigError("split.stratify=true needs class labels, and this dataset has none")
            y = torch.as_tensor(labels)
            if y.dim() > 1 and y.size(-1) == 1:
                y = y.view(-1)
            if y.dim() != 1 or y.numel() != num_items or y.is_floating_point():
                raise ConfigError(f"split.stratify=true needs one integer class label per item; got labels "
                                  f"of shape {list(y.shape)} and dtype {y.dtype} (set split.stratify=false)")
            # rank every item by its relative position inside its (shuffled) class, then cut the
            # global ranking: exact split sizes, each class within one item of its proportion
            y_np = y.numpy()
            perm = rng.permutation(num_items)
            by_class = perm[np.argsort(y_np[perm], kind="stable")]
            _, first, counts = np.unique(y_np[by_class], return_index=True, return_counts=True)
            sizes = np.repeat(counts, counts)
            rank = np.arange(num_items) - np.repeat(first, counts)
            order = np.lexsort((rng.random(num_items), (rank + 0.5) / sizes))
            parts = self._cut(by_class[order])
        return SplitIndices(*(torch.sort(torch.as_tensor(p, dtype=torch.int64)).values for p in parts))
