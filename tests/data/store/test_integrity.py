"""Corrupt graph stores are a StoreError naming the file, the value and the fix, never a crash of the
compiled samplers; the full check (verify, scripts/verify_store.py) reports every problem."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from graphgt.data.sampling import NeighborSampler, TokenSampler
from graphgt.data.store import GraphStore, StoreError, add_arrays, csr_from_edges, write_store
from graphgt.data.store import core

from tests.conftest import REPO

N = 200


def _store(path: Path) -> GraphStore:
    rng = np.random.default_rng(0)
    src, dst = rng.integers(0, N, 1500), rng.integers(0, N, 1500)
    indptr, indices = csr_from_edges(np.concatenate([src, dst]), np.concatenate([dst, src]), N)
    x = rng.standard_normal((N, 8)).astype(np.float32)
    y = rng.integers(0, 3, N).astype(np.int64)
    splits = {"train": np.arange(0, 120), "val": np.arange(120, 160), "test": np.arange(160, N)}
    return write_store(path, "toy", N, indptr, indices, x=x, y=y, splits=splits,
                       task={"kind": "multiclass", "num_outputs": 3, "metric": "accuracy"})


def _rewrite(store: GraphStore, key: str, array: np.ndarray) -> Path:
    """Replace ``<key>.npy`` by ``array`` (a new file, as a copy from elsewhere or a rebuild would be)."""
    target = store.path / f"{key}.npy"
    tmp = target.with_suffix(".new.npy")
    np.save(tmp, array)
    os.replace(tmp, target)
    return target


def _load(store: GraphStore, key: str) -> np.ndarray:
    return np.array(np.load(store.path / f"{key}.npy"))


@pytest.mark.parametrize("value", [N, -1, 10 ** 9])
def test_index_out_of_range_names_file_value_and_fix(tmp_path, value):
    store = _store(tmp_path / "s")
    bad = _load(store, "indices")
    bad[137] = value
    _rewrite(store, "indices", bad)
    with pytest.raises(StoreError) as e:
        GraphStore.open(store.path)
    msg = str(e.value)
    assert "'indices.npy' holds node id" in msg and f"{value} at position 137" in msg and f"[0, {N})" in msg
    assert "rebuild the store" in msg and "verify_store.py" in msg


def test_split_out_of_range(tmp_path):
    store = _store(tmp_path / "s")
    _rewrite(store, "split/val", np.array([3, N + 5], dtype=np.int64))
    meta = json.loads((store.path / "meta.json").read_text())
    meta["arrays"]["split/val"]["shape"] = [2]
    (store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=rf"'split/val.npy' holds node id {N + 5} at position 1"):
        GraphStore.open(store.path)


def test_truncated_array_file(tmp_path):
    store = _store(tmp_path / "s")
    f = store.path / "x.npy"
    os.truncate(f, f.stat().st_size - 100)
    with pytest.raises(StoreError, match=r"'x.npy' is truncated: \d+ bytes, but its header declares shape "
                                         r"\[200, 8\].*rebuild the store"):
        GraphStore.open(store.path)
    f.write_bytes(b"not a numpy file")
    with pytest.raises(StoreError, match=r"'x.npy' cannot be read as a .npy file"):
        GraphStore.open(store.path)


def test_shape_or_dtype_other_than_meta_declares(tmp_path):
    store = _store(tmp_path / "s")
    meta = json.loads((store.path / "meta.json").read_text())
    meta["arrays"]["x"]["shape"] = [N, 9]
    (store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=r"'x.npy' has shape \[200, 8\] dtype <f4, but meta.json declares shape "
                                         r"\[200, 9\]"):
        GraphStore.open(store.path)
    meta["arrays"]["x"]["shape"] = [N, 8]
    meta["arrays"]["indices"]["dtype"] = "<i8"
    (store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=r"'indices.npy' has shape \[\d+\] dtype <i4, but meta.json declares"):
        GraphStore.open(store.path)


def test_rows_and_indptr_length_must_match_num_nodes(tmp_path):
    store = _store(tmp_path / "s")
    meta = json.loads((store.path / "meta.json").read_text())
    meta["num_nodes"] = N + 1
    (store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=rf"'(x|y).npy' has {N} rows, but the store has num_nodes={N + 1}"):
        GraphStore.open(store.path)


@pytest.mark.parametrize("how,message", [
    ("decrease", r"'indptr.npy' decreases at row 50: indptr\[50\]=\d+ > indptr\[51\]=\d+"),
    ("start", r"'indptr.npy' starts at indptr\[0\]=3 \(must be 0\)"),
    ("end", r"'indptr.npy' ends at indptr\[-1\]=\d+, but indices holds \d+ entries"),
])
def test_corrupt_indptr(tmp_path, how, message):
    store = _store(tmp_path / "s")
    indptr = _load(store, "indptr")
    if how == "decrease":
        indptr[51] = indptr[50] - 1
    elif how == "start":
        indptr[0] = 3
    else:
        indptr[-1] -= 1
    _rewrite(store, "indptr", indptr)
    with pytest.raises(StoreError, match=message):
        GraphStore.open(store.path)


def test_scans_run_once_per_process_and_file_version(tmp_path, monkeypatch):
    """Opening an unchanged store again only reads headers; a replaced file is scanned again."""
    store = _store(tmp_path / "s")
    calls = []
    real = core._file_chunks
    monkeypatch.setattr(core, "_file_chunks", lambda path, *a, **k: (calls.append(Path(path).name), real(path, *a, **k))[1])
    GraphStore.open(store.path)
    GraphStore.open(store.path)
    store = add_arrays(store.path, {"pe/deg": np.ones((N, 1), dtype=np.float32)})
    NeighborSampler(store.indptr, store.indices, [2])  # the sampler's own check reuses the store's
    assert calls == []  # all scanned by write_store's open, before the patch
    _rewrite(store, "indices", _load(store, "indices"))  # same values, new file
    GraphStore.open(store.path)
    assert calls == ["indices.npy"]


def test_samplers_refuse_a_corrupt_csr_given_directly():
    indptr, indices = csr_from_edges(np.arange(10), (np.arange(10) + 1) % 10, 10)
    bad = indices.copy()
    bad[4] = 10
    for make in (lambda a, b: NeighborSampler(a, b, [2]), lambda a, b: TokenSampler(a, b, num_tokens=4)):
        with pytest.raises(ValueError, match=r"indices\[4\]=10 is not a node id in \[0, 10\)"):
            make(indptr, bad)
        down = indptr.copy()
        down[3] = 0
        with pytest.raises(ValueError, match="indptr decreases at row 2"):
            make(down, indices)


SAMPLE = textwrap.dedent("""
    import sys
    import numpy as np
    from graphgt.data.sampling import NeighborSampler
    path = sys.argv[1]
    if sys.argv[2] == "store":
        from graphgt.data.store import GraphStore
        store = GraphStore.open(path)
        indptr, indices = store.indptr, store.indices
    else:  # the raw memory maps, as a loader worker or a user script would pass them
        indptr = np.load(path + "/indptr.npy", mmap_mode="r")
        indices = np.load(path + "/indices.npy", mmap_mode="r")
    sampler = NeighborSampler(indptr, indices, [10, 10])
    sampler.sample(np.arange(0, 150), seed=1)
    print("sampled")
""")


@pytest.mark.parametrize("via", ["store", "raw"])
def test_corrupt_indices_never_crash_the_sampler_process(tmp_path, via):
    """The issue's repro: out-of-range ids in indices.npy used to abort (134) or segfault (139) the
    numba kernel; now the process ends with a StoreError / ValueError naming the problem."""
    store = _store(tmp_path / "s")
    bad = _load(store, "indices")
    bad[::7] = N
    bad[::11] = 10 ** 8
    _rewrite(store, "indices", bad)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", SAMPLE, str(store.path), via], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
    assert "sampled" not in p.stdout
    if via == "store":
        assert "StoreError" in p.stderr and "'indices.npy' holds node id" in p.stderr
    else:
        assert "ValueError" in p.stderr and f"indices[0]={10 ** 8} is not a node id in [0, {N})" in p.stderr


def test_verify_reports_every_problem_and_the_script(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import verify_store
    finally:
        sys.path.pop(0)
    store = _store(tmp_path / "s")
    lines = store.verify()
    assert any("indices:" in line and f"node ids in [0, {N})" in line for line in lines)
    assert any(line == "x: SHA-256 matches the one recorded at build time" for line in lines)
    assert verify_store.main([str(store.path)]) == 0
    assert "passed every check" in capsys.readouterr().out
    # damage: a NaN feature (same size: only the checksum and the full check see it) and an id out of range
    x = _load(store, "x")
    x[3, 1] = np.nan
    _rewrite(store, "x", x)
    indices = _load(store, "indices")
    indices[0] = N
    _rewrite(store, "indices", indices)
    with pytest.raises(StoreError) as e:
        GraphStore.open(store.path, check=False).verify()
    msg = str(e.value)
    assert "failed 4 check(s)" in msg
    assert "'indices.npy' holds node id 200" in msg and "'x.npy' holds 1 NaN/inf values" in msg
    assert "'x.npy' differs from the file written at build time" in msg
    assert "'indices.npy' differs from the file written at build time" in msg
    assert verify_store.main([str(store.path)]) == 2
    err = capsys.readouterr().err
    assert "NaN/inf" in err and "'indices.npy' holds node id" in err


def test_checksums_follow_added_arrays(tmp_path):
    store = _store(tmp_path / "s")
    store = add_arrays(store.path, {"pe/deg": np.ones((N, 2), dtype=np.float32)})
    assert "pe/deg" in store.meta["sha256"]
    assert any(line.startswith("pe/deg: SHA-256 matches") for line in store.verify())
    assert any(line == "pe/deg: 400 values, all finite" for line in store.verify())
