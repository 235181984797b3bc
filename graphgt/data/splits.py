"""Split strategies: which items (nodes of one graph, or graphs of a dataset) go to train/val/test.

Every strategy is a small class built from plain arguments (so Hydra can ``_target_`` it) with one
method, :meth:`Split.split`, shared by node-level and graph-level data modules::

    train_idx, val_idx, test_idx = split.split(num_items, source, labels)

``source`` is what the data module loaded (the single ``Data`` of a node-level dataset, or the
dataset object of a graph-level one) and is only read by strategies that take their split from the
data itself (:class:`MaskSplit`, :class:`OfficialSplit`); ``labels`` (``Tensor[num_items]`` of class
ids) is only read by a stratified :class:`RandomSplit` or :class:`KFoldSplit` (cross-validation).  Indices are sorted ``int64`` tensors.
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Sequence

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


#: what a split pickle may construct: a dict of numpy arrays (LRGB's Peptides split), lists, ints,
#: strings.  ``(module, name)`` pairs; numpy 1.x pickles name ``numpy.core``, numpy 2 ``numpy._core``
_PICKLE_ALLOWED = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # protocol-2 pickles of numpy arrays encode their bytes through it
    ("collections", "OrderedDict"),
    *(("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "bool", "str",
                                "bytes", "bytearray", "complex")),
})


def _numpy_array_globals() -> List[Any]:
    """What ``torch.load(weights_only=True)`` needs to rebuild numpy index arrays and masks (the
    reconstruction function, ``ndarray``, ``dtype``, scalars and the integer/bool dtype classes)."""
    core = getattr(np, "_core", None) or np.core
    out: List[Any] = [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
    out += [type(np.dtype(c)) for c in ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8")]
    return out


class _SplitUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers and numpy arrays (:data:`_PICKLE_ALLOWED`).

    ``pickle.load`` calls whatever a file names (``os.system`` through ``__reduce__``), so a split
    file from elsewhere could run code; every class lookup goes through :meth:`find_class`, which
    refuses anything else with a :class:`ConfigError` naming the file and the class.
    """

    def __init__(self, file: Any, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise ConfigError(f"split.path '{self.path}': refused to unpickle '{module}.{name}': a split pickle may "
                              f"hold only a dict of numpy arrays or lists of ints (loading other classes can run "
                              f"code). Convert the split to .npz or .json, e.g. np.savez('split.npz', train=..., "
                              f"valid=..., test=...)")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):  # numpy 2 reading a numpy 1 pickle
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


class IndexFileSplit(Split):
    """Index arrays read from a file with entries ``train``, ``valid`` (or ``val``) and ``test``.

    Accepted formats by suffix, all read without running code from the file:

    - ``.pt``/``.pth``: ``torch.save`` of a dict of index tensors (or numpy arrays), read with
      ``weights_only=True``;
    - ``.npz``: ``np.savez(path, train=..., valid=..., test=...)``, read with ``allow_pickle=False``;
    - ``.json``: ``{"train": [...], "valid": [...], "test": [...]}``;
    - ``.npy``: one integer per item, the split it belongs to: 0 train, 1 val, 2 test, -1 none
      (``allow_pickle=False``);
    - ``.txt``: three lines, the train, val and test indices, whitespace-separated (a line may be
      empty);
    - ``.pkl``/``.pickle``: a dict of numpy arrays (as LRGB ships its splits), read by an
      unpickler that builds nothing but containers, numbers, strings and numpy arrays.

    Entries of the mapping formats may be index arrays or boolean masks.

    Args:
        path: the file.
    """

    SUFFIXES = (".pt", ".pth", ".npz", ".json", ".npy", ".txt", ".pkl", ".pickle")
    #: the split each value of a ``.npy`` assignment vector names
    NPY_CODES = {"train": 0, "val": 1, "test": 2}

    def __init__(self, path: str):
        self.path = str(path)

    def check(self) -> None:
        p = Path(self.path)
        if p.suffix not in self.SUFFIXES:
            raise ConfigError(f"split.path '{p}': unsupported file type '{p.suffix}' (use one of {list(self.SUFFIXES)})")
        if not p.is_file():
            raise ConfigError(f"split.path: split file not found at '{p.resolve()}'")

    def _read(self, p: Path) -> Any:
        if p.suffix in (".pt", ".pth"):
            try:
                with torch.serialization.safe_globals(_numpy_array_globals()):
                    return torch.load(p, weights_only=True, map_location="cpu")
            except pickle.UnpicklingError as e:  # torch's own refusal of a non-tensor object
                found = re.search(r"GLOBAL (\S+)", str(e))
                detail = f"'{found.group(1)}'" if found else type(e).__name__
                raise ConfigError(f"split.path '{p}': refused to load {detail}: a .pt split file may hold only "
                                  f"tensors, numpy arrays and containers, and graphgt reads it with "
                                  f"weights_only=True because loading other objects can run code. Save a dict of "
                                  f"index tensors: torch.save({{'train': ..., 'valid': ..., 'test': ...}}, path)") from None
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        if p.suffix == ".npy":
            return self._from_assignment(np.load(p, allow_pickle=False), p)
        if p.suffix == ".json":
            return json.loads(p.read_text())
        if p.suffix == ".txt":
            return self._from_lines(p)
        with open(p, "rb") as f:
            return _SplitUnpickler(f, p).load()

    def _from_assignment(self, a: np.ndarray, p: Path) -> Any:
        """A ``.npy`` vector of split codes -> ``{name: indices}`` (its length is checked in :meth:`split`)."""
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise ConfigError(f"split.path '{p}': a .npy split file holds one integer per item (0 train, 1 val, "
                              f"2 test, -1 none); got shape {list(a.shape)} dtype {a.dtype}")
        bad = ~np.isin(a, [-1, *self.NPY_CODES.values()])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ConfigError(f"split.path '{p}': item {i} has split code {int(a[i])}; use 0 (train), 1 (val), "
                              f"2 (test) or -1 (none)")
        out: Any = {name: np.flatnonzero(a == code) for name, code in self.NPY_CODES.items()}
        out["_num_items"] = int(a.shape[0])
        return out

    def _from_lines(self, p: Path) -> Any:
        """A ``.txt`` file of three lines (train, val, test) of whitespace-separated indices."""
        lines = p.read_text().splitlines()
        while len(lines) > 3 and not lines[-1].strip():  # trailing blank lines
            lines.pop()
        if len(lines) != 3:
            raise ConfigError(f"split.path '{p}': a .txt split file has exactly three lines (the train, val and "
                              f"test indices, whitespace-separated); it has {len(lines)}")
        out = {}
        for name, (number, line) in zip(self.NPY_CODES, enumerate(lines, start=1)):
            try:
                out[name] = np.array([int(t) for t in line.split()], dtype=np.int64)
            except ValueError as e:
                raise ConfigError(f"split.path '{p}': line {number} ({name}) is not a list of integers ({e})") from None
        return out

    def load(self) -> Any:
        """The raw mapping stored in the file."""
        self.check()
        p = Path(self.path)
        try:
            return self._read(p)
        except ConfigError:
            raise
        except Exception as e:  # corrupt or foreign file
            raise ConfigError(f"split.path '{p}': cannot read the split file ({type(e).__name__}: {e})") from e

    def split(self, num_items: int, source: Any = None, labels: Optional[Tensor] = None) -> SplitIndices:
        d = self.load()
        where = f"IndexFileSplit({self.path})"
        if isinstance(d, dict) and "_num_items" in d and d["_num_items"] != num_items:
            raise ConfigError(f"{where}: the .npy split assigns {d['_num_items']} items but the dataset has "
                              f"{num_items}; is it the split of this dataset?")
        return _split_from_mapping(d, num_items, where)


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
            # rank every item by its relative position inside its (shuffled) class, then cut the
            # global ranking: exact split sizes, each class within one item of its proportion
            y_np = _class_labels(labels, num_items, "RandomSplit")
            perm = rng.permutation(num_items)
            by_class = perm[np.argsort(y_np[perm], kind="stable")]
            _, first, counts = np.unique(y_np[by_class], return_index=True, return_counts=True)
            sizes = np.repeat(counts, counts)
            rank = np.arange(num_items) - np.repeat(first, counts)
            order = np.lexsort((rng.random(num_items), (rank + 0.5) / sizes))
            parts = self._cut(by_class[order])
        return SplitIndices(*(torch.sort(torch.as_tensor(p, dtype=torch.int64)).values for p in parts))


class PerClassSplit(Split):
    """A seeded random split of the Planetoid kind: ``train_per_class`` training items of every class,
    then ``val`` and ``test`` items drawn from the rest, whatever their class.

    As Kipf & Welling's public split has it (20 per class / 500 / 1000), but drawn at random;
    Shchur et al. (2018) showed rankings change between such random splits and the fixed one, and the
    tuned GNNs of Luo et al. (2024, tunedGNN ``class_rand_splits``) are reported on them. Each class
    is shuffled and gives its first ``train_per_class`` items to train; the other items are shuffled
    together and cut into ``val`` then ``test`` (``test: null``: all that remain). Identical for the
    same ``(labels, seed)``.

    Args:
        train_per_class: training items per class (every class needs at least this many).
        val: validation items.
        test: test items, or null for every item left.
        seed: seed of the shuffles (sweep it for the usual "10 random splits" protocol; ``graphgt
            report`` counts runs that differ in it as folds of one row).
    """

    def __init__(self, train_per_class: int = 20, val: int = 500, test: Optional[int] = 1000, seed: int = 0):
        self.train_per_class, self.val = int(train_per_class), int(val)
        self.test = None if test is None else int(test)
        self.seed = int(seed)

    def check(self) -> None:
        if self.train_per_class < 1:
            raise ConfigError(f"split.train_per_class must be >= 1, got {self.train_per_class}")
        if self.val < 0 or (self.test is not None and self.test < 1):
            raise ConfigError(f"split.val must be >= 0 and split.test >= 1 or null, got val={self.val}, test={self.test}")

    def split(self, num_items: int, source: Any = None, labels: Optional[Tensor] = None) -> SplitIndices:
        self.check()
        y = _class_labels(labels, num_items, "PerClassSplit",
                          "it splits classification data; use a RandomSplit for other tasks")
        rng = np.random.default_rng(self.seed)
        train, rest = [], []
        for c in np.unique(y[y >= 0]):
            members = rng.permutation(np.flatnonzero(y == c))
            if members.size < self.train_per_class:
                raise ConfigError(f"PerClassSplit: class {int(c)} has {members.size} items, fewer than "
                                  f"split.train_per_class={self.train_per_class}; lower it")
            train.append(members[:self.train_per_class])
            rest.append(members[self.train_per_class:])
        rest_all = rng.permutation(np.concatenate(rest))
        test_n = rest_all.size - self.val if self.test is None else self.test
        if self.val + test_n > rest_all.size or test_n < 1:
            raise ConfigError(f"PerClassSplit: {rest_all.size} items remain after the training items, fewer than "
                              f"split.val={self.val} + split.test={self.test}; lower them")
        parts = (np.concatenate(train), rest_all[:self.val], rest_all[self.val:self.val + test_n])
        return SplitIndices(*(torch.sort(torch.as_tensor(p, dtype=torch.int64)).values for p in parts))


def _class_labels(labels: Optional[Tensor], num_items: int, where: str,
                  fix: str = "set data.split.stratify=false") -> np.ndarray:
    """One integer class id per item (``[N]`` or ``[N, 1]``), or a :class:`ConfigError` naming the fix."""
    if labels is None:
        raise ConfigError(f"{where}: needs class labels, and this dataset has none ({fix})")
    y = torch.as_tensor(labels)
    if y.dim() > 1 and y.size(-1) == 1:
        y = y.view(-1)
    if y.dim() != 1 or y.numel() != num_items or y.is_floating_point():
        raise ConfigError(f"{where}: needs one integer class label per item; got labels of shape "
                          f"{list(y.shape)} and dtype {y.dtype} ({fix})")
    return y.numpy()


class KFoldSplit(Split):
    """``k``-fold cross-validation: the items are dealt into ``k`` disjoint folds; fold ``fold`` is
    the test set.

    Validation (``val``): ``null`` (default) takes the **next fold**, ``(fold + 1) % k``, and trains on
    the remaining ``k - 2`` folds, so every item is tested exactly once over ``fold = 0..k-1`` and the
    validation set never overlaps test or train (as :class:`RandomSplit`, every item is in exactly
    one of train/val/test). A fraction in ``(0, 1)`` instead keeps ``k - 1`` folds for training and
    holds out that fraction of them (seeded, stratified like the folds) for validation.

    Folds come either from a seeded, stratified shuffle of the items (``seed``, ``stratify``: each
    class is dealt round-robin over the folds, so per class every fold holds ``⌊n_c/k⌋`` or
    ``⌈n_c/k⌉`` items, and fold sizes differ by at most one; the folds depend only on
    ``(num_items, labels, seed, k)``, never on the run's ``seed``), or from a file ``path``: a
    ``.txt`` file with **one fold per line** (whitespace-separated item indices; ``k`` = the number of
    lines; see :meth:`write_folds`) or a ``.json`` list of index lists. The folds of a file must be
    disjoint; items in no fold are in no split.

    Sweeping ``data.split.fold=0,1,...,k-1 seed=...`` and ``graphgt report`` gives one row with the
    mean ± std over folds x seeds.

    Args:
        k: number of folds (>= 2 with ``val`` a fraction, >= 3 with ``val=null``); with ``path``,
            null or the number of folds in the file.
        fold: the test fold, ``0 <= fold < k``.
        seed: seed of the shuffle that deals the folds (and of the validation slice).
        stratify: deal each class separately (needs one integer class label per item: node or
            graph classification).
        val: null (the next fold) or a fraction of the training folds.
        path: a folds file instead of dealing the folds.
        train: must be null: the training part is what test and validation leave. (The key exists
            so that ``+data/split=kfold`` can replace a data config's inline ``RandomSplit``, whose
            ``train`` fraction Hydra's merge keeps.)
    """

    SUFFIXES = (".txt", ".json")

    def __init__(self, k: Optional[int] = 5, fold: int = 0, seed: int = 0, stratify: bool = True,
                 val: Optional[float] = None, path: Optional[str] = None, train: Optional[float] = None):
        self.k = None if k is None else int(k)
        self.fold, self.seed, self.stratify = int(fold), int(seed), bool(stratify)
        self.val = None if val is None else float(val)
        self.path = None if path is None else str(path)
        self.train = train

    def check(self) -> None:
        if self.train is not None:
            raise ConfigError(f"data.split.train={self.train!r}: a KFoldSplit trains on the folds that are neither "
                              "test nor validation; set data.split.train=null (use data.split.val for the "
                              "validation choice)")
        if self.val is not None and not 0.0 < self.val < 1.0:
            raise ConfigError(f"data.split.val must be null (the next fold) or a fraction in (0, 1), got {self.val}")
        if self.path is not None:
            p = Path(self.path)
            if p.suffix not in self.SUFFIXES:
                raise ConfigError(f"data.split.path '{p}': a folds file is .txt (one fold per line) or .json "
                                  f"(a list of index lists), not '{p.suffix}'")
            if not p.is_file():
                raise ConfigError(f"data.split.path: folds file not found at '{p.resolve()}'")
        elif self.k is None:
            raise ConfigError("data.split.k is null: set the number of folds, or data.split.path to a folds file")
        if self.k is not None:
            self._check_k(self.k, "data.split.k")

    def _check_k(self, k: int, what: str) -> None:
        least = 3 if self.val is None else 2
        if k < least:
            why = "test, validation and at least one training fold" if self.val is None else "test and training folds"
            raise ConfigError(f"{what}={k}: a KFoldSplit needs at least {least} folds ({why})")
        if not 0 <= self.fold < k:
            raise ConfigError(f"data.split.fold={self.fold} is out of range: there are {k} folds (0..{k - 1})")

    # ---------------------------------------------------------------------------------- folds
    def folds(self, num_items: int, labels: Optional[Tensor] = None) -> List[np.ndarray]:
        """The ``k`` folds (sorted ``int64`` arrays): read from ``path``, or dealt from a seeded shuffle."""
        self.check()
        if self.path is not None:
            return self._read_folds(num_items)
        k = int(self.k)  # type: ignore[arg-type]
        if num_items < k:
            raise ConfigError(f"data.split.k={k} folds need at least {k} items; the dataset has {num_items}")
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(num_items)
        if self.stratify:
            y = _class_labels(labels, num_items, "KFoldSplit")
            order = order[np.argsort(y[order], kind="stable")]  # classes contiguous, shuffled inside
        assignment = np.empty(num_items, dtype=np.int64)
        assignment[order] = np.arange(num_items) % k  # deal round-robin
        return [np.flatnonzero(assignment == f) for f in range(k)]

    def _read_folds(self, num_items: int) -> List[np.ndarray]:
        p = Path(str(self.path))
        try:
            if p.suffix == ".json":
                raw = json.loads(p.read_text())
                if not isinstance(raw, list) or not all(isinstance(f, list) for f in raw):
                    raise ConfigError(f"data.split.path '{p}': a .json folds file holds a list of index lists, "
                                      f"one per fold")
            else:
                lines = p.read_text().splitlines()
                while lines and not lines[-1].strip():
                    lines.pop()
                raw = []
                for number, line in enumerate(lines, start=1):
                    try:
                        raw.append([int(t) for t in line.split()])
                    except ValueError as e:
                        raise ConfigError(f"data.split.path '{p}': line {number} (fold {number - 1}) is not a list "
                                          f"of integers ({e})") from None
            folds = [np.asarray(f, dtype=np.int64).reshape(-1) for f in raw]
        except ConfigError:
            raise
        except (OSError, UnicodeDecodeError, ValueError, TypeError) as e:
            raise ConfigError(f"data.split.path '{p}': cannot read the folds file ({type(e).__name__}: {e})") from None
        self._check_k(len(folds), f"data.split.path '{p}' holds {len(folds)} folds; k")
        if self.k is not None and self.k != len(folds):
            raise ConfigError(f"data.split.k={self.k} but the folds file '{p}' holds {len(folds)} folds (one per "
                              f"line); set data.split.k={len(folds)} or data.split.k=null")
        out = []
        for f, idx in enumerate(folds):
            if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= num_items):
                raise ConfigError(f"data.split.path '{p}': fold {f} has indices outside [0, {num_items}) (min "
                                  f"{int(idx.min())}, max {int(idx.max())}); is it the folds file of this dataset?")
            out.append(np.unique(idx))
        every = np.concatenate(out)
        if np.unique(every).size != every.size:
            seen, dup = np.unique(every, return_counts=True)
            raise ConfigError(f"data.split.path '{p}': the folds are not disjoint ({int((dup > 1).sum())} items are in "
                              f"more than one fold, e.g. {seen[dup > 1][:5].tolist()})")
        return out

    @staticmethod
    def write_folds(path: str, folds: Sequence[Any]) -> None:
        """Write ``folds`` as a ``.txt`` folds file (one fold per line), e.g. to freeze the folds of
        ``KFoldSplit(k, seed=s).folds(n, labels)`` or to hand folds made elsewhere to ``path``."""
        Path(path).write_text("".join(" ".join(str(int(i)) for i in np.asarray(f).reshape(-1)) + "\n" for f in folds))

    def split(self, num_items: int, source: Any = None, labels: Optional[Tensor] = None) -> SplitIndices:
        folds = self.folds(num_items, labels)
        k = len(folds)
        test = folds[self.fold]
        if self.val is None:
            val_fold = (self.fold + 1) % k
            val = folds[val_fold]
            train = np.concatenate([f for i, f in enumerate(folds) if i not in (self.fold, val_fold)])
        else:
            rest = np.concatenate([f for i, f in enumerate(folds) if i != self.fold])
            y = torch.as_tensor(_class_labels(labels, num_items, "KFoldSplit")[rest]) if self.stratify else None
            t, v, leftover = RandomSplit(1.0 - self.val, self.val, seed=self.seed,
                                         stratify=self.stratify).split(rest.size, labels=y)
            train = np.concatenate([rest[t.numpy()], rest[leftover.numpy()]])
            val = rest[v.numpy()]
        out = SplitIndices(*(torch.sort(torch.as_tensor(np.asarray(p), dtype=torch.int64)).values
                             for p in (train, val, test)))
        return _check_disjoint(out, "KFoldSplit")
