"""Split strategies: disjoint, covering, deterministic, stratified; clear errors."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from graphgt.errors import ConfigError
from graphgt.data.common import as_split
from graphgt.data.splits import IndexFileSplit, KFoldSplit, MaskSplit, OfficialSplit, PerClassSplit, RandomSplit

from .helpers import SHARED, requires_shared


def _assert_partition(idx, n):
    allidx = torch.cat(list(idx))
    assert allidx.numel() == n and torch.equal(torch.sort(allidx).values, torch.arange(n))


def test_random_split_disjoint_covering_deterministic():
    s = RandomSplit(0.8, 0.1, seed=3)
    a, b = s.split(101), s.split(101)
    _assert_partition(a, 101)
    assert [len(p) for p in a] == [81, 10, 10]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = RandomSplit(0.8, 0.1, seed=4).split(101)
    assert not torch.equal(a.train, c.train)


def test_random_split_stratified():
    y = torch.tensor([0] * 80 + [1] * 20)
    idx = RandomSplit(0.5, 0.25, seed=0, stratify=True).split(100, labels=y)
    _assert_partition(idx, 100)
    assert [int((y[p] == 1).sum()) for p in idx] == [10, 5, 5]
    assert [int((y[p] == 0).sum()) for p in idx] == [40, 20, 20]
    with pytest.raises(ConfigError, match="stratify"):
        RandomSplit(0.5, 0.25, stratify=True).split(100, labels=torch.rand(100, 3))


@pytest.mark.parametrize("train,val", [(0.0, 0.1), (1.2, 0.0), (0.8, 0.3), (0.5, -0.1)])
def test_random_split_bad_fractions(train, val):
    with pytest.raises(ConfigError, match="split"):
        RandomSplit(train, val).check()


def test_per_class_split_planetoid_sizes_seeded():
    y = torch.as_tensor(np.random.default_rng(0).integers(0, 7, 2708))
    a = PerClassSplit(20, 500, 1000, seed=3).split(2708, labels=y)
    b = PerClassSplit(20, 500, 1000, seed=3).split(2708, labels=y)
    c = PerClassSplit(20, 500, 1000, seed=4).split(2708, labels=y)
    assert [len(p) for p in a] == [140, 500, 1000] and all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a.train, c.train)
    assert torch.bincount(y[a.train], minlength=7).tolist() == [20] * 7
    assert len(set(a.train.tolist()) | set(a.val.tolist()) | set(a.test.tolist())) == 1640  # disjoint
    everything = PerClassSplit(20, 500, None, seed=0).split(2708, labels=y)
    assert len(everything.test) == 2708 - 140 - 500
    with pytest.raises(ConfigError, match="train_per_class=500"):
        PerClassSplit(500).split(2708, labels=y)
    with pytest.raises(ConfigError, match="split.val=2000"):
        PerClassSplit(20, 2000, 1000).split(2708, labels=y)
    with pytest.raises(ConfigError, match="use a RandomSplit"):
        PerClassSplit().split(10, labels=None)


def test_mask_split_single_and_multi_column():
    n = 10
    d = Data(train_mask=torch.arange(n) < 5, val_mask=(torch.arange(n) >= 5) & (torch.arange(n) < 7),
             test_mask=torch.arange(n) >= 7)
    idx = MaskSplit().split(n, d)
    assert idx.train.tolist() == [0, 1, 2, 3, 4] and idx.val.tolist() == [5, 6] and idx.test.tolist() == [7, 8, 9]
    multi = Data(train_mask=torch.stack([d.train_mask, d.test_mask], 1), val_mask=torch.stack([d.val_mask] * 2, 1),
                 test_mask=torch.stack([d.test_mask, d.train_mask], 1))
    assert MaskSplit(index=1).split(n, multi).train.tolist() == [7, 8, 9]
    with pytest.raises(ConfigError, match="split.index"):
        MaskSplit().split(n, multi)
    with pytest.raises(ConfigError, match="out of range"):
        MaskSplit(index=2).split(n, multi)
    with pytest.raises(ConfigError, match="RandomSplit"):
        MaskSplit().split(n, Data())


@pytest.mark.parametrize("fmt", ["pt", "pt-numpy", "npz", "json", "pickle", "pkl-protocol2", "npy", "txt"])
def test_index_file_split(tmp_path, fmt):
    d = {"train": np.array([0, 2, 4]), "valid": np.array([1]), "test": np.array([3, 5])}
    p = tmp_path / f"split.{fmt.split('-')[0]}"
    if fmt == "pt":
        torch.save({k: torch.as_tensor(v) for k, v in d.items()}, p)
    elif fmt == "npz":
        np.savez(p, **d)
    elif fmt == "pt-numpy":  # numpy arrays inside a .pt: rebuilt under weights_only=True too
        torch.save(d, p)
    elif fmt == "json":
        p.write_text(json.dumps({k: v.tolist() for k, v in d.items()}))
    elif fmt == "npy":  # one split code per item: 0 train, 1 val, 2 test
        np.save(p, np.array([0, 1, 0, 2, 0, 2]))
    elif fmt == "txt":
        p.write_text("0 2 4\n1\n3\t5\n")
    else:  # numpy 2's default protocol (frombuffer, scalars) and protocol 2 (_codecs.encode), as older files
        protocol = 2 if fmt == "pkl-protocol2" else pickle.DEFAULT_PROTOCOL
        p.write_bytes(pickle.dumps({"train": d["train"], "val": d["valid"], "test": d["test"],
                                    "count": np.int64(6), "note": ["made", 1]}, protocol=protocol))
    idx = IndexFileSplit(str(p)).split(6)
    assert idx.train.tolist() == [0, 2, 4] and idx.val.tolist() == [1] and idx.test.tolist() == [3, 5]
    with pytest.raises(ConfigError, match="assigns 6 items" if fmt == "npy" else "outside"):
        IndexFileSplit(str(p)).split(4)


def test_index_file_split_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        IndexFileSplit(str(tmp_path / "nope.pt")).check()
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"train": [0], "test": [1]}))
    with pytest.raises(ConfigError, match="'valid'"):
        IndexFileSplit(str(p)).split(3)
    p.write_text(json.dumps({"train": [0, 1], "val": [1], "test": [2]}))
    with pytest.raises(ConfigError, match="share"):
        IndexFileSplit(str(p)).split(3)


class _Payload:
    """Unpickling this runs ``touch <marker>`` (a stand-in for any command a foreign split file could run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", ["pkl", "pickle", "pt"])
def test_split_file_that_would_run_code_is_refused(tmp_path, suffix):
    marker = tmp_path / "pwned"
    p = tmp_path / f"split.{suffix}"
    payload = {"train": np.arange(3), "val": _Payload(marker), "test": torch.arange(3, 5)}
    if suffix == "pt":
        torch.save(payload, p)
    else:
        p.write_bytes(pickle.dumps(payload))
    with pytest.raises(ConfigError) as e:
        IndexFileSplit(str(p)).split(6)
    msg = str(e.value)
    assert str(p) in msg and "posix.system" in msg and "refused" in msg
    assert not marker.exists()  # the payload never ran


def test_split_pickle_refuses_any_class_but_arrays(tmp_path):
    from collections import Counter

    p = tmp_path / "split.pkl"
    p.write_bytes(pickle.dumps({"train": Counter([1]), "val": [2], "test": [3]}))
    with pytest.raises(ConfigError, match=r"refused to unpickle 'collections\.Counter'.*\.npz"):
        IndexFileSplit(str(p)).split(6)


def test_npz_and_npy_never_unpickle(tmp_path):
    p = tmp_path / "split.npz"
    np.savez(p, train=np.array([object()], dtype=object), val=np.array([1]), test=np.array([2]))
    with pytest.raises(ConfigError, match="cannot read the split file"):
        IndexFileSplit(str(p)).split(3)
    p = tmp_path / "split.npy"
    np.save(p, np.array([{"train": [0]}], dtype=object))
    with pytest.raises(ConfigError, match="cannot read the split file"):
        IndexFileSplit(str(p)).split(3)


def test_npy_and_txt_format_errors(tmp_path):
    p = tmp_path / "split.npy"
    np.save(p, np.array([0, 1, 2]))
    with pytest.raises(ConfigError, match="assigns 3 items but the dataset has 4"):
        IndexFileSplit(str(p)).split(4)
    np.save(p, np.array([0, 1, 3]))
    with pytest.raises(ConfigError, match="item 2 has split code 3"):
        IndexFileSplit(str(p)).split(3)
    np.save(p, np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ConfigError, match="one integer per item"):
        IndexFileSplit(str(p)).split(3)
    t = tmp_path / "split.txt"
    t.write_text("0 1\n2\n")
    with pytest.raises(ConfigError, match="exactly three lines"):
        IndexFileSplit(str(t)).split(3)
    t.write_text("0 1\n\nx\n")
    with pytest.raises(ConfigError, match=r"line 3 \(test\) is not a list of integers"):
        IndexFileSplit(str(t)).split(3)
    t.write_text("0 1\n\n2\n\n")  # an empty val line and a trailing blank line are fine
    assert [p.tolist() for p in IndexFileSplit(str(t)).split(3)] == [[0, 1], [], [2]]


@requires_shared
def test_real_peptides_split_pickle_loads():
    """LRGB ships Peptides-func's split as a pickle of a dict of numpy arrays: the restricted unpickler reads it."""
    path = SHARED / "lrgb" / "peptides-functional" / "splits_random_stratified_peptide.pickle"
    idx = IndexFileSplit(str(path)).split(15535)
    assert [len(p) for p in idx] == [10873, 2331, 2331]


def test_official_split_needs_get_idx_split():
    with pytest.raises(ConfigError, match="official"):
        OfficialSplit().split(3, object())


def test_as_split_takes_a_split_or_none():
    s = as_split(RandomSplit(0.6, 0.2, seed=1), MaskSplit())
    assert isinstance(s, RandomSplit) and s.seed == 1
    assert isinstance(as_split(None, MaskSplit()), MaskSplit)
    with pytest.raises(ConfigError, match="data.split"):
        as_split(3, MaskSplit())
    with pytest.raises(ConfigError, match="data.split"):  # Hydra builds the node; a raw mapping is refused
        as_split({"_target_": "graphgt.data.splits.RandomSplit", "train": 0.6, "val": 0.2}, MaskSplit())


# ------------------------------------------------------------------------------ cross-validation
def _check_kfold(labels, k, seed=0):
    """Every fold of KFoldSplit(k) on ``labels``: disjoint folds that cover every item, each tested
    once, stratified within one item per class, the same for the same seed."""
    n = labels.numel()
    folds = KFoldSplit(k, seed=seed).folds(n, labels)
    assert len(folds) == k
    every = np.concatenate(folds)
    assert every.size == n and np.array_equal(np.sort(every), np.arange(n))  # disjoint and covering
    assert max(f.size for f in folds) - min(f.size for f in folds) <= 1
    y = labels.numpy()
    for c in np.unique(y):
        per_fold = [int((y[f] == c).sum()) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)  # stratified: within ±1 per class
    tested = []
    for fold in range(k):
        idx = KFoldSplit(k, fold=fold, seed=seed).split(n, labels=labels)
        _assert_partition(idx, n)
        assert np.array_equal(idx.test.numpy(), folds[fold]) and np.array_equal(idx.val.numpy(), folds[(fold + 1) % k])
        again = KFoldSplit(k, fold=fold, seed=seed).split(n, labels=labels)
        assert all(torch.equal(a, b) for a, b in zip(idx, again))  # same seed, same folds
        tested.append(idx.test)
    assert torch.equal(torch.sort(torch.cat(tested)).values, torch.arange(n))  # each item tested once
    return folds


def test_kfold_split_disjoint_covering_stratified_seeded():
    y = torch.tensor([0] * 37 + [1] * 11 + [2] * 3 + [3] * 52)
    y = y[torch.randperm(y.numel(), generator=torch.Generator().manual_seed(0))]
    folds = _check_kfold(y, 5)
    other = KFoldSplit(5, seed=1).folds(y.numel(), y)
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other))
    plain = KFoldSplit(4, stratify=False).folds(10)  # no labels needed without stratification
    assert sorted(f.size for f in plain) == [2, 2, 3, 3]


def test_kfold_split_validation_fraction_of_the_training_folds():
    y = torch.tensor([0] * 60 + [1] * 40)
    idx = KFoldSplit(5, fold=2, val=0.25).split(100, labels=y)
    _assert_partition(idx, 100)
    assert [len(p) for p in idx] == [60, 20, 20]
    assert [int((y[p] == 1).sum()) for p in idx] == [24, 8, 8]  # the validation slice is stratified too
    assert np.array_equal(idx.test.numpy(), KFoldSplit(5).folds(100, y)[2])


def test_kfold_folds_file_one_fold_per_line(tmp_path):
    y = torch.tensor([0, 1] * 15)
    dealt = KFoldSplit(3, seed=7).folds(30, y)
    path = tmp_path / "folds.txt"
    KFoldSplit.write_folds(str(path), dealt)
    assert len(path.read_text().splitlines()) == 3
    for fold in range(3):
        from_file = KFoldSplit(None, fold=fold, path=str(path)).split(30)
        assert all(torch.equal(a, b) for a, b in zip(from_file, KFoldSplit(3, fold=fold, seed=7).split(30, labels=y)))
    (tmp_path / "folds.json").write_text(json.dumps([f.tolist() for f in dealt]))
    assert torch.equal(KFoldSplit(3, fold=1, path=str(tmp_path / "folds.json")).split(30).test,
                       torch.as_tensor(dealt[1]))


def test_kfold_errors_name_the_key(tmp_path):
    y = torch.tensor([0, 1] * 10)
    with pytest.raises(ConfigError, match=r"data.split.fold=5 is out of range: there are 5 folds \(0..4\)"):
        KFoldSplit(5, fold=5).split(20, labels=y)
    with pytest.raises(ConfigError, match="data.split.k=2: a KFoldSplit needs at least 3 folds"):
        KFoldSplit(2).split(20, labels=y)
    with pytest.raises(ConfigError, match="data.split.train=0.8"):
        KFoldSplit(5, train=0.8).split(20, labels=y)
    with pytest.raises(ConfigError, match="needs class labels.*data.split.stratify=false"):
        KFoldSplit(5).split(20)
    with pytest.raises(ConfigError, match="one integer class label per item"):
        KFoldSplit(5).split(20, labels=torch.rand(20, 3))
    with pytest.raises(ConfigError, match="folds file not found"):
        KFoldSplit(path=str(tmp_path / "nope.txt")).split(20)
    bad = tmp_path / "bad.txt"
    bad.write_text("0 1 2\n2 3\n4 5\n")
    with pytest.raises(ConfigError, match="not disjoint"):
        KFoldSplit(None, path=str(bad)).split(20)
    bad.write_text("0 1\n2 x\n4 5\n")
    with pytest.raises(ConfigError, match="line 2 \\(fold 1\\) is not a list of integers"):
        KFoldSplit(None, path=str(bad)).split(20)
    bad.write_text("0 1\n2 3\n4 50\n")
    with pytest.raises(ConfigError, match="fold 2 has indices outside"):
        KFoldSplit(None, path=str(bad)).split(20)
    bad.write_text("0 1\n2 3\n4 5\n")
    with pytest.raises(ConfigError, match="data.split.k=5 but the folds file .* holds 3 folds"):
        KFoldSplit(5, path=str(bad)).split(20)


@requires_shared
def test_kfold_on_real_node_and_graph_classification(tmp_path, real_root):
    from graphgt.data import PlanetoidData, TUData

    mutag = TUData(str(real_root), "MUTAG", split=KFoldSplit(5, fold=3))
    mutag.setup([], tmp_path)
    labels = torch.cat([g.y for g in mutag._prepared.graphs])
    assert labels.numel() == 188
    folds = _check_kfold(labels, 5)
    assert torch.equal(mutag.split_indices.test, torch.as_tensor(folds[3]))
    cora = PlanetoidData(str(real_root), "Cora")
    cora.load(tmp_path)
    _check_kfold(cora._prepared.labels, 10)
