"""The graph store: round trips, streamed writes, atomic builds, clear errors, page release."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from graphgt.errors import ConfigError
from graphgt.data.store import (GraphStore, NpyAppender, StoreError, StoreWriter, add_arrays, csr_from_edges,
                                index_dtype, iter_chunks, write_store)
from graphgt.pages import release_pages


def _toy(tmp_path, **kw):
    rng = np.random.default_rng(0)
    src, dst = rng.integers(0, 50, 300), rng.integers(0, 50, 300)
    indptr, indices = csr_from_edges(src, dst, 50)
    x = rng.standard_normal((50, 8)).astype(np.float16)
    y = rng.integers(-1, 3, 50).astype(np.int16)
    splits = {"train": np.arange(0, 30), "val": np.arange(30, 40), "test": np.arange(40, 50)}
    store = write_store(tmp_path / "s", "toy", 50, indptr, indices, x=x, y=y, splits=splits,
                        task={"kind": "multiclass", "num_outputs": 3, "metric": "accuracy"}, **kw)
    return store, (src, dst, indptr, indices, x, y, splits)


def test_round_trip_is_memory_mapped_and_exact(tmp_path):
    store, (src, dst, indptr, indices, x, y, splits) = _toy(tmp_path)
    again = GraphStore.open(tmp_path / "s")
    assert isinstance(again.indices, np.memmap) and isinstance(again.x, np.memmap)
    np.testing.assert_array_equal(again.indptr, indptr)
    np.testing.assert_array_equal(again.indices, indices)
    np.testing.assert_array_equal(again.x, x)
    np.testing.assert_array_equal(again.y, y)
    for name, idx in splits.items():
        np.testing.assert_array_equal(again.split(name), idx)
    assert again.indices.dtype == np.int32 and again.indptr.dtype == np.int64 and again.x.dtype == np.float16
    assert again.num_nodes == 50 and again.num_edges == 300
    assert again.meta["task"]["num_outputs"] == 3
    # CSR rows hold exactly the edges (as multisets) by source
    for u in range(50):
        np.testing.assert_array_equal(np.sort(again.indices[again.indptr[u]:again.indptr[u + 1]]),
                                      np.sort(dst[src == u]))
    np.testing.assert_array_equal(again.degree(), np.bincount(src, minlength=50))
    assert "toy" in repr(again) and "indices(300,):int32" in repr(again)


def test_pickles_by_path_and_remaps(tmp_path):
    store, _ = _toy(tmp_path)
    _ = store.x  # mapped in this process
    clone = pickle.loads(pickle.dumps(store))
    assert clone._arrays == {} and clone.path == store.path
    np.testing.assert_array_equal(clone.x, store.x)


def test_appender_streams_chunks_and_checks_row_count(tmp_path):
    data = np.arange(1000 * 3, dtype=np.float32).reshape(1000, 3)
    with StoreWriter(tmp_path / "s", name="a", num_nodes=1000) as w:
        with w.append_array("x", data.shape, np.float16) as a:
            for start, stop in iter_chunks(1000, 77):
                a.write(data[start:stop])
    np.testing.assert_array_equal(GraphStore.open(tmp_path / "s").x, data.astype(np.float16))
    app = NpyAppender(tmp_path / "short.npy", (10, 3), np.float32)
    app.write(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="4 rows written, 10 declared"):
        app.close()
    app = NpyAppender(tmp_path / "long.npy", (2, 3), np.float32)
    with pytest.raises(ValueError, match="more than the declared 2 rows"):
        app.write(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="does not fit rows"):
        app.write(np.zeros((1, 4)))


def test_interrupted_build_leaves_no_store(tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        with StoreWriter(tmp_path / "s", name="a", num_nodes=5) as w:
            w.save_array("indptr", np.zeros(6, dtype=np.int64))
            raise RuntimeError("killed")
    assert not (tmp_path / "s").exists()
    assert list(tmp_path.iterdir()) == []  # the temporary directory is gone too
    with pytest.raises(StoreError, match="meta.json' is missing"):
        GraphStore.open(tmp_path / "s")


def test_existing_store_is_never_overwritten_by_default(tmp_path):
    store, _ = _toy(tmp_path)
    with pytest.raises(StoreError, match="already exists"):
        StoreWriter(tmp_path / "s", name="b", num_nodes=3)
    _toy(tmp_path, overwrite=True)  # explicit overwrite works and leaves no .old behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_clear_errors_for_bad_stores(tmp_path):
    store, _ = _toy(tmp_path)
    assert isinstance(StoreError("x"), ConfigError)
    with pytest.raises(StoreError, match="has no array 'pe/lap'.*it has: indices, indptr"):
        store.array("pe/lap")
    meta = json.loads((store.path / "meta.json").read_text())
    meta["format_version"] = 99
    (store.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="format_version=99.*rebuild"):
        GraphStore.open(store.path)
    meta["format_version"] = 1
    (store.path / "meta.json").write_text(json.dumps(meta))
    (store.path / "x.npy").unlink()
    with pytest.raises(StoreError, match="'x.npy' listed in meta.json is missing"):
        GraphStore.open(store.path)
    (store.path / "meta.json").write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        GraphStore.open(store.path)


def test_add_arrays_atomically(tmp_path):
    store, _ = _toy(tmp_path)
    pe = np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32)
    store = add_arrays(store.path, {"pe/rwse": pe})
    np.testing.assert_array_equal(store.pe()["rwse"], pe)
    with pytest.raises(StoreError, match="already has array 'pe/rwse'"):
        add_arrays(store.path, {"pe/rwse": pe})
    store = add_arrays(store.path, {"pe/rwse": pe * 2}, overwrite=True)
    np.testing.assert_array_equal(store.pe()["rwse"], pe * 2)
    assert not [p for p in store.path.rglob("*.tmp")]


def test_release_drops_mapped_pages_from_rss(tmp_path):
    n = 64 * 1024 * 1024 // 4  # 64 MiB of float32
    with StoreWriter(tmp_path / "s", name="big", num_nodes=n) as w:
        with w.append_array("x", (n, 1), np.float32) as a:
            for start, stop in iter_chunks(n, 1 << 22):
                a.write(np.ones((stop - start, 1), dtype=np.float32))
    store = GraphStore.open(tmp_path / "s")

    def rss_file_kib():
        for line in open("/proc/self/status"):
            if line.startswith("RssFile:"):
                return int(line.split()[1])
        pytest.skip("no RssFile in /proc/self/status")

    before = rss_file_kib()
    assert float(store.x[::1024].sum()) == n / 1024  # touches every page
    touched = rss_file_kib()
    store.release()
    after = rss_file_kib()
    assert touched - before > 32 * 1024  # at least half of the 64 MiB became resident
    assert touched - after > 32 * 1024  # ... and left the RSS on release
    np.testing.assert_array_equal(store.x[:5, 0], 1.0)  # still readable afterwards
    release_pages(np.zeros(3))  # in-RAM arrays: a no-op


def test_index_dtype():
    assert index_dtype(10) == np.int32 and index_dtype(2 ** 31) == np.int64
