"""The streaming OGB node-dataset converter, checked against OGB's own loader on small raw fixtures."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from graphgt.errors import ConfigError
from graphgt.data.store import ogb as ogb_node
from graphgt.data.store.ogb import (convert_ogb_node, iter_npz_chunks, npz_member, prepare_ogb_node,
                                   SymmetricCSRBuilder)
from graphgt.data.store import GraphStore

from tests.data.ogb_fixtures import DOWNLOAD_NAME, STYLES, write_ogb_node_fixture, write_ogb_node_zip

REPO = Path(__file__).resolve().parents[3]
TINY = dict(chunk_rows=7, mem_budget=SymmetricCSRBuilder.BYTES_PER_ENTRY * 40)  # many chunks, many CSR buckets


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to use the network")

    import ogb.nodeproppred.dataset as ds
    import ogb.utils.url as url

    for mod in (ds, url):
        monkeypatch.setattr(mod, "decide_download", refuse)
        monkeypatch.setattr(mod, "download_url", refuse)


def _ogb_load(name: str, root: Path):
    """OGB's own reading of the raw files: with ``raw/edge.csv.gz`` (``raw/data.npz`` for binary
    datasets) and ``RELEASE_v1.txt`` present, ``NodePropPredDataset`` neither downloads nor asks."""
    from ogb.nodeproppred import NodePropPredDataset

    (root / name.replace("-", "_") / "processed").mkdir(exist_ok=True)  # OGB saves data_processed there
    ds = NodePropPredDataset(name, root=str(root))
    graph, labels = ds[0]
    return ds, graph, labels, ds.get_idx_split()


def _edge_keys(src: np.ndarray, dst: np.ndarray, n: int) -> np.ndarray:
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    s, d = np.concatenate([src, dst]), np.concatenate([dst, src])
    keep = s != d
    return np.unique(s[keep] * n + d[keep])


def _store_edge_keys(store: GraphStore) -> np.ndarray:
    n = store.num_nodes
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(store.indptr))
    return rows * n + np.asarray(store.indices, dtype=np.int64)


@pytest.mark.parametrize("style", list(STYLES))
def test_matches_ogb_loader(style, tmp_path, monkeypatch):
    _no_network(monkeypatch)
    name = STYLES[style]
    truth = write_ogb_node_fixture(tmp_path, style)
    ds, graph, labels, split = _ogb_load(name, tmp_path)
    store = convert_ogb_node(name, tmp_path, tmp_path / "store", **TINY)
    n = int(graph["num_nodes"])
    assert store.num_nodes == n and store.meta["csr"]["buckets"] > 1

    # edges: our CSR is the symmetrised, self-loop-free, de-duplicated edge set of OGB's edge_index
    ours = _store_edge_keys(store)
    assert np.all(np.diff(ours) > 0), "rows must be sorted and free of repeats"
    np.testing.assert_array_equal(ours, _edge_keys(graph["edge_index"][0], graph["edge_index"][1], n))
    assert store.indices.dtype == np.int32 and store.indptr.dtype == np.int64
    assert store.num_edges == ours.size

    # features
    if style == "proteins":
        assert graph["node_feat"] is None
        ei, ef = graph["edge_index"], graph["edge_feat"]  # OGB lists both directions
        sums = np.zeros((n, ef.shape[1]))
        np.add.at(sums, ei[1], ef)
        mean = sums / np.maximum(np.bincount(ei[1], minlength=n), 1)[:, None]
        assert store.x.dtype == np.float32
        np.testing.assert_allclose(store.x, mean, rtol=1e-6, atol=1e-7)
    else:
        want = np.float16 if style.startswith("papers") else np.float32
        assert graph["node_feat"].dtype == want and store.x.dtype == want
        np.testing.assert_array_equal(store.x, graph["node_feat"])

    # labels
    task = store.meta["task"]
    if style == "proteins":
        assert task == {"kind": "multilabel", "num_outputs": 112, "metric": "rocauc", "ogb_name": name}
        assert store.y.dtype == np.float32
        np.testing.assert_array_equal(store.y, labels.astype(np.float32))
    else:
        assert task["kind"] == "multiclass" and task["metric"] == "accuracy" and task["num_outputs"] == ds.num_classes
        expect = np.where(np.isnan(labels[:, 0].astype(float)), -1, labels[:, 0]).astype(np.int64)
        assert store.y.dtype == np.int16
        np.testing.assert_array_equal(store.y, expect)
        if style.startswith("papers"):
            assert (store.y == -1).sum() == np.isnan(truth["node_label"]).sum() > 0

    # splits (OGB's valid is our val) and extra node arrays
    for ours_key, theirs in (("train", "train"), ("val", "valid"), ("test", "test")):
        assert store.split(ours_key).dtype == np.int64
        np.testing.assert_array_equal(store.split(ours_key), split[theirs])
    for key in ("node_year", "node_species"):
        if key in graph:
            np.testing.assert_array_equal(store.array(f"extra/{key}"), graph[key][:, 0])
    assert store.meta["ogb_name"] == name and store.meta["split_type"] == ds.meta_info["split"]
    assert store.meta["source"]["format"] == ("npz" if style.startswith("papers") else "csv.gz")
    assert store.meta["symmetrised"] is True


def test_chunking_does_not_change_the_store(tmp_path):
    write_ogb_node_fixture(tmp_path, "arxiv", num_nodes=300, num_edges=2000, seed=3)
    a = convert_ogb_node("ogbn-arxiv", tmp_path, tmp_path / "a", **TINY)
    b = convert_ogb_node("ogbn-arxiv", tmp_path, tmp_path / "b")
    assert a.meta["csr"]["buckets"] > 10 and b.meta["csr"]["buckets"] == 1
    for key in a.keys():
        np.testing.assert_array_equal(a.array(key), b.array(key))
    assert not list(tmp_path.glob("**/*.scratch")), "the scratch edge file must be removed"


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_npz_streamer_equals_np_load(tmp_path, compressed):
    rng = np.random.default_rng(1)
    arrays = {
        "edge_index": rng.integers(0, 1000, size=(2, 101)),
        "node_feat": rng.standard_normal((53, 7)).astype(np.float16),
        "fortran": np.asfortranarray(rng.standard_normal((29, 5)).astype(np.float32)),
        "fortran_edges": np.asfortranarray(rng.integers(0, 9, size=(2, 31)).astype(np.int32)),
        "labels": np.where(rng.random((41, 1)) < 0.3, np.nan, rng.integers(0, 9, size=(41, 1))),
        "big_endian": np.arange(37, dtype=">i8"),
        "cube": rng.standard_normal((11, 3, 2)),
    }
    path = tmp_path / "a.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    loaded = np.load(path)
    assert npz_member(path, "fortran").fortran_order and not npz_member(path, "node_feat").fortran_order
    for key, arr in arrays.items():
        axes = [0, 1] if arr.ndim == 2 else [0]
        for axis in axes:
            for chunk in (1, 4, 1000):
                parts = list(iter_npz_chunks(path, key, chunk, axis=axis))
                assert all(p.shape[axis] <= chunk for p in parts)
                got = np.concatenate(parts, axis=axis)
                assert got.dtype == loaded[key].dtype.newbyteorder("=")
                np.testing.assert_array_equal(got, loaded[key])


def test_missing_dataset_names_path_and_command(tmp_path):
    with pytest.raises(ConfigError) as e:
        convert_ogb_node("ogbn-products", tmp_path, tmp_path / "store")
    msg = str(e.value)
    assert str((tmp_path / "ogbn_products" / "raw" / "edge.csv.gz").resolve()) in msg
    assert f"python scripts/prepare_ogb.py ogbn-products --root {tmp_path}" in msg
    # a missing split file is named as well
    write_ogb_node_fixture(tmp_path, "products")
    os.unlink(tmp_path / "ogbn_products" / "split" / "sales_ranking" / "valid.csv.gz")
    with pytest.raises(ConfigError, match="sales_ranking/valid.csv.gz"):
        convert_ogb_node("ogbn-products", tmp_path, tmp_path / "store")
    with pytest.raises(ConfigError, match="not an OGB node-property dataset"):
        convert_ogb_node("ogbn-nonsense", tmp_path, tmp_path / "store")
    with pytest.raises(ConfigError, match="heterogeneous"):
        convert_ogb_node("ogbn-mag", tmp_path, tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_interrupted_conversion_leaves_no_complete_store(tmp_path, monkeypatch):
    write_ogb_node_fixture(tmp_path, "papers")
    real_split = ogb_node._Source.split

    def boom(self, file):
        raise KeyboardInterrupt("killed mid-way")  # after edges, features and labels were written

    monkeypatch.setattr(ogb_node._Source, "split", boom)
    with pytest.raises(KeyboardInterrupt):
        convert_ogb_node("ogbn-papers100M", tmp_path, tmp_path / "store", **TINY)
    assert not (tmp_path / "store").exists() and not GraphStore.exists(tmp_path / "store")
    assert not list(tmp_path.glob(".store*")), "the temporary build folder must be removed"

    # a failed rebuild keeps the previous store intact
    monkeypatch.setattr(ogb_node._Source, "split", real_split)
    first = convert_ogb_node("ogbn-papers100M", tmp_path, tmp_path / "store", **TINY)
    indices = np.array(first.indices)
    monkeypatch.setattr(ogb_node._Source, "split", boom)
    with pytest.raises(KeyboardInterrupt):
        convert_ogb_node("ogbn-papers100M", tmp_path, tmp_path / "store", overwrite=True, **TINY)
    again = GraphStore.open(tmp_path / "store")
    np.testing.assert_array_equal(again.indices, indices)
    assert not list(tmp_path.glob(".store*"))


def test_offline_download_is_a_config_error(tmp_path, monkeypatch):
    import ogb.utils.url as url

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(url, "download_url", offline)
    with pytest.raises(ConfigError) as e:
        prepare_ogb_node("ogbn-arxiv", tmp_path, download=True)
    msg = str(e.value)
    assert "could not download http://snap.stanford.edu/ogb/data/nodeproppred/arxiv.zip" in msg
    assert f"python scripts/prepare_ogb.py ogbn-arxiv --root {tmp_path}" in msg and "ogbn_arxiv" in msg


def test_download_unzips_moves_and_converts(tmp_path, monkeypatch):
    import ogb.utils.url as url

    zipped = write_ogb_node_zip(tmp_path / "remote" / "arxiv.zip", "arxiv")
    calls = []

    def fake_download(link, folder, log=True):
        calls.append(link)
        target = Path(folder) / link.rpartition("/")[2]
        target.write_bytes(zipped.read_bytes())
        return str(target)

    monkeypatch.setattr(url, "download_url", fake_download)
    root = tmp_path / "data"
    store = prepare_ogb_node("ogbn-arxiv", root, download=True, chunk_rows=16)
    assert calls == ["http://snap.stanford.edu/ogb/data/nodeproppred/arxiv.zip"]
    assert (root / "ogbn_arxiv" / "raw" / "edge.csv.gz").exists() and not (root / "arxiv").exists()
    assert not (root / "arxiv.zip").exists()
    assert store.path == root / "store" / "ogbn_arxiv" and store.meta["ogb_name"] == "ogbn-arxiv"
    assert prepare_ogb_node("ogbn-arxiv", root, download=True).path == store.path and len(calls) == 1


def test_unmoved_zip_folder_is_found(tmp_path):
    write_ogb_node_fixture(tmp_path, "products", folder_name=DOWNLOAD_NAME["ogbn-products"])
    store = convert_ogb_node("ogbn-products", tmp_path, tmp_path / "store")
    assert store.meta["source"]["dir"] == str((tmp_path / "products").resolve())


def test_prepare_script(tmp_path, capsys):
    write_ogb_node_fixture(tmp_path, "proteins")
    script = REPO / "scripts" / "prepare_ogb.py"
    out = subprocess.run([sys.executable, str(script), "ogbn-proteins", "--root", str(tmp_path), "--store",
                          str(tmp_path / "s"), "--chunk-rows", "13", "--no-download"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "peak RSS" in out.stdout and GraphStore.open(tmp_path / "s").meta["task"]["kind"] == "multilabel"
    # the error path, in this process (a second interpreter start costs seconds)
    spec = importlib.util.spec_from_file_location("prepare_ogb", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["ogbn-arxiv", "--root", str(tmp_path / "none"), "--no-download"]) == 2
    assert "prepare_ogb.py ogbn-arxiv --root" in capsys.readouterr().err
