"""scripts/tunedgnn_split.py: tunedGNN's one random Planetoid split, replayed (the split of Luo et al.'s Cora figures)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "tunedgnn_split.py"


def _script():
    spec = importlib.util.spec_from_file_location("tunedgnn_split", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_sizes_per_class_and_determinism():
    split = _script().class_rand_split
    labels = torch.as_tensor(np.random.default_rng(0).integers(0, 6, 3000))
    a, b, c = split(labels, 123), split(labels, 123), split(labels, 124)
    assert [len(a[k]) for k in ("train", "valid", "test")] == [120, 500, 1000]
    assert np.bincount(labels[a["train"]].numpy(), minlength=6).tolist() == [20] * 6
    assert len(np.unique(np.concatenate(list(a.values())))) == 1620
    assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a["train"], c["train"])


def test_cora_split_of_seed_123(real_root, tmp_path, capsys):
    out = tmp_path / "cora_split123.npz"
    assert _script().main(["--root", str(real_root), "--name", "Cora", "--out", str(out)]) == 0
    assert "140 train / 500 valid / 1000 test" in capsys.readouterr().out
    split = np.load(out, allow_pickle=False)
    # the replayed draws of torch.manual_seed(123) (torch's CPU randperm; the figures in docs/reproducing.md)
    assert split["train"][:5].tolist() == [1332, 1923, 2136, 530, 1110]
    from graphgt.data.splits import IndexFileSplit

    idx = IndexFileSplit(str(out)).split(2708)
    assert [len(p) for p in idx] == [140, 500, 1000]


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _script().main(["--root", str(tmp_path), "--out", str(tmp_path / "s.json")])
    assert e.value.code == 2 and "write an .npz" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        _script().main(["--root", str(tmp_path), "--out", str(tmp_path / "s.npz")])
    assert e.value.code == 2 and "planetoid" in capsys.readouterr().err.lower()
