"""The on-disk PE cache: load instead of recompute, recompute on change, atomic writes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.utils import grid

import graphgt.pe.cache as cache_mod
from graphgt.pe import LaplacianPE, RandomWalkSE, attach_pes


def graphs():
    return [Data(edge_index=grid(3, 4)[0], num_nodes=12), Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=3)]


def cache_files(root: Path):
    return sorted(p.name for p in (root / "pe").iterdir()) if (root / "pe").exists() else []


class Counting(RandomWalkSE):
    calls = 0

    def compute(self, edge_index, num_nodes):
        type(self).calls += 1
        return super().compute(edge_index, num_nodes)


def test_second_call_loads_instead_of_recomputing(tmp_path, monkeypatch):
    pes = [RandomWalkSE(steps=4), LaplacianPE(k=3)]
    first = attach_pes(graphs(), pes, tmp_path)
    assert len(cache_files(tmp_path)) == 2
    assert first[0].rwse.shape == (12, 4) and first[1].lap_vec.shape == (3, 3)

    def boom(self, *args, **kwargs):
        raise AssertionError("must load from the cache")

    monkeypatch.setattr(RandomWalkSE, "compute", boom)
    monkeypatch.setattr(LaplacianPE, "compute", boom)
    second = attach_pes(graphs(), [RandomWalkSE(steps=4), LaplacianPE(k=3)], tmp_path)
    for a, b in zip(first, second):
        assert torch.equal(a.rwse, b.rwse) and torch.equal(a.lap_vec, b.lap_vec) and torch.equal(a.lap_val, b.lap_val)


def test_changed_parameter_or_graph_recomputes(tmp_path):
    Counting.calls = 0
    attach_pes(graphs(), [Counting(steps=4)], tmp_path)
    assert Counting.calls == 2
    attach_pes(graphs(), [Counting(steps=4)], tmp_path)
    assert Counting.calls == 2                        # cached
    out = attach_pes(graphs(), [Counting(steps=5)], tmp_path)
    assert Counting.calls == 4 and out[0].rwse.shape == (12, 5)
    other = graphs()
    other[1].edge_index = torch.tensor([[0, 2], [2, 0]])
    attach_pes(other, [Counting(steps=4)], tmp_path)
    assert Counting.calls == 6                        # a different graph, a different file
    assert len(cache_files(tmp_path)) == 3


def test_write_is_atomic(tmp_path, monkeypatch):
    Counting.calls = 0
    attach_pes(graphs(), [Counting(steps=4)], tmp_path)
    (path,) = (tmp_path / "pe").iterdir()
    good = path.read_bytes()
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):  # write half a file, then die
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as fh:
            fh.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod.torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        attach_pes(graphs(), [Counting(steps=7)], tmp_path)   # a new file: interrupted
    with pytest.raises(KeyboardInterrupt):
        cache_mod.atomic_save({"x": 1}, path)                # overwriting: interrupted
    assert cache_files(tmp_path) == [path.name]                 # no partial file, no temporary left
    assert path.read_bytes() == good                             # the old cache is intact
    monkeypatch.setattr(cache_mod.torch, "save", real_save)
    calls = Counting.calls
    attach_pes(graphs(), [Counting(steps=4)], tmp_path)
    assert Counting.calls == calls                               # still loads


def test_unreadable_cache_file_is_recomputed(tmp_path):
    Counting.calls = 0
    attach_pes(graphs(), [Counting(steps=4)], tmp_path)
    (path,) = (tmp_path / "pe").iterdir()
    path.write_bytes(b"not a torch file")
    out = attach_pes(graphs(), [Counting(steps=4)], tmp_path)
    assert Counting.calls == 4 and out[0].rwse.shape == (12, 4)
    assert torch.load(path, weights_only=True)["cache_key"] == Counting(steps=4).cache_key()


def test_computing_encodings_keeps_torch_thread_count(tmp_path):
    """numba's threading layer must not change how many threads the run trains with."""
    import torch
    from torch_geometric.data import Data

    from graphgt.pe import RandomWalkSE, attach_pes

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ring = torch.arange(50)
        g = Data(edge_index=torch.stack([torch.cat([ring, (ring + 1) % 50]), torch.cat([(ring + 1) % 50, ring])]),
                 num_nodes=50)
        attach_pes([g], [RandomWalkSE(steps=4)], tmp_path)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
