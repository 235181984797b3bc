"""Synthetic graphs of the products / papers100M shapes streamed into a graph store (small scales)."""
from __future__ import annotations

import importlib.util
import json
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from graphgt.errors import ConfigError
from graphgt.data.store import synthetic as sl
from graphgt.data.store import GraphStore

SCALE = 0.002  # products: 4,898 nodes, 123,717 undirected edges
ROOT = Path(__file__).resolve().parents[3]


def _arrays(store: GraphStore) -> dict:
    return {k: np.asarray(store.array(k)) for k in store.keys()}


@pytest.fixture(scope="module")
def products(tmp_path_factory) -> GraphStore:
    return sl.build_products_shaped(tmp_path_factory.mktemp("syn") / "products", seed=0, scale=SCALE)


@pytest.fixture(scope="module")
def papers(tmp_path_factory) -> GraphStore:
    return sl.build_papers_shaped(tmp_path_factory.mktemp("syn") / "papers", seed=3, fraction=5e-4)


# ------------------------------------------------------------------------------------- determinism

def test_same_seed_is_bitwise_equal_whatever_the_chunking(products, tmp_path, monkeypatch):
    ref = _arrays(products)
    # tiny chunks, many buckets, a tiny bucket buffer, other thread partitions, forced candidate top-ups
    monkeypatch.setattr(sl.numba, "get_num_threads", lambda: 3)
    other = sl.build_products_shaped(tmp_path / "again", seed=0, scale=SCALE, chunk_size=7777, num_buckets=5,
                                     mem_budget=64 * 1024, oversample=1.0)
    got = _arrays(other)
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key].dtype == ref[key].dtype and np.array_equal(got[key], ref[key]), key
    gen, gen_ref = other.meta["generator"], products.meta["generator"]
    assert gen["build"]["buckets"]["pass2"] >= 5 and gen["edges"]["candidates_generated"] > \
        gen["edges"]["candidates_used"]
    drop = ("candidates_generated",)  # how many were generated depends on oversample; the graph does not
    assert {k: v for k, v in gen["edges"].items() if k not in drop} == \
        {k: v for k, v in gen_ref["edges"].items() if k not in drop}


def test_another_seed_gives_another_graph(products, tmp_path):
    other = sl.build_products_shaped(tmp_path / "seed1", seed=1, scale=SCALE)
    assert other.num_edges == products.num_edges  # the shape is the same ...
    assert not np.array_equal(other.indices, products.indices)  # ... the graph is not
    assert not np.array_equal(other.x, products.x)
    assert not np.array_equal(other.split("train"), products.split("train"))


# ------------------------------------------------------------------------------------------- the CSR

def test_csr_is_symmetric_simple_and_exact(products):
    spec = sl.products_spec(SCALE)
    n, e = spec.num_nodes, spec.num_edges
    indptr, indices = np.asarray(products.indptr), np.asarray(products.indices)
    assert products.num_nodes == n and indptr.dtype == np.int64 and indices.dtype == np.int32
    assert indptr.shape == (n + 1,) and indptr[0] == 0 and np.all(np.diff(indptr) >= 0)
    assert indptr[-1] == indices.size == 2 * e == products.num_edges  # exactly E distinct undirected edges
    assert indices.min() >= 0 and indices.max() < n
    rows = np.repeat(np.arange(n), np.diff(indptr))
    assert not np.any(rows == indices), "self loop"
    step = np.diff(indices.astype(np.int64))
    inside = np.diff(rows) == 0
    assert np.all(step[inside] > 0), "rows must be strictly increasing (sorted, no duplicates)"
    codes = np.sort(rows.astype(np.int64) * n + indices)
    assert np.array_equal(codes, np.sort(indices.astype(np.int64) * n + rows)), "not symmetric"


def test_degrees_are_heavy_tailed(products):
    deg = products.degree()
    stats = products.meta["generator"]["edges"]["degree"]
    assert stats["max"] == deg.max() and abs(stats["mean"] - deg.mean()) < 1e-9
    assert deg.mean() == pytest.approx(2 * 61_859_140 / 2_449_029, rel=1e-3)  # products' mean degree kept
    # a Poisson graph of this mean degree (~50) has max degree ~80; a power law has far larger hubs
    assert deg.max() > 5 * deg.mean()
    assert np.percentile(deg, 99) > 3 * np.median(deg)
    # the hubs are spread over the id range (scrambled ids), not at the front
    top = np.argsort(deg)[-20:]
    assert top.min() < products.num_nodes // 2 < top.max()


# ------------------------------------------------------------------------------ labels and features

def test_labels_features_and_homophily(products):
    spec = sl.products_spec(SCALE)
    n, c = spec.num_nodes, spec.num_classes
    y = np.asarray(products.y)
    assert y.dtype == np.int16 and y.min() == 0 and y.max() == c - 1
    counts = np.bincount(y, minlength=c)
    assert counts.max() - counts.min() <= 1  # balanced classes
    assert np.array_equal(sl.node_classes(products), y)
    assert products.meta["task"] == {"kind": "multiclass", "num_outputs": c, "metric": "accuracy", "ogb_name": None}

    x = np.asarray(products.x)
    assert x.dtype == np.float32 and x.shape == (n, spec.num_features)
    means = np.stack([x[y == k].mean(0) for k in range(c)])
    norms = np.linalg.norm(means, axis=1)  # ~ signal (+ the noise of a mean over ~104 nodes)
    assert np.all(np.abs(norms - spec.signal) < 0.5)
    resid = x - means[y]
    assert resid.mean() == pytest.approx(0.0, abs=0.01) and resid.std() == pytest.approx(1.0, abs=0.02)

    indptr, indices = np.asarray(products.indptr), np.asarray(products.indices)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    same = float(np.mean(y[rows] == y[indices]))
    edges = products.meta["generator"]["edges"]
    assert same == pytest.approx(edges["edge_homophily"], abs=1e-9)
    assert same == pytest.approx(spec.homophily + (1 - spec.homophily) / c, abs=0.04)


def test_features_carry_signal_the_graph_adds_more(products):
    """Nearest-class-mean on x beats chance; adding the neighbours' mean beats x alone (here ~0.48 ->
    ~0.81; at scale 0.1 a logistic regression gets 0.53 -> 0.76)."""
    y = np.asarray(products.y).astype(np.int64)
    x = np.asarray(products.x, dtype=np.float64)
    n = x.shape[0]
    indptr, indices = np.asarray(products.indptr), np.asarray(products.indices)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    nbr = np.zeros_like(x)
    np.add.at(nbr, rows, x[indices])
    nbr /= np.maximum(np.diff(indptr), 1)[:, None]
    # class centroids from half of the nodes (the preset's 8 training nodes per class are too few for
    # a 100-dimensional centroid at this scale), accuracy on the other half
    train, test = np.arange(0, n, 2), np.arange(1, n, 2)

    def centroid_accuracy(feats):  # nearest class mean after scaling each column by its within-class std
        cents = np.stack([feats[train][y[train] == k].mean(0) for k in range(y.max() + 1)])
        std = (feats[train] - cents[y[train]]).std(0)
        feats, cents = feats / std, cents / std
        d = ((feats[test][:, None, :] - cents[None]) ** 2).sum(-1)
        return float(np.mean(d.argmin(1) == y[test]))

    majority = np.bincount(y[train]).max() / train.size
    acc_x, acc_graph = centroid_accuracy(x), centroid_accuracy(np.hstack([x, nbr]))
    assert acc_x > 5 * majority
    assert acc_graph > acc_x + 0.2


# -------------------------------------------------------------------------------------------- splits

def test_splits(products):
    spec = sl.products_spec(SCALE)
    parts = {s: np.asarray(products.split(s)) for s in ("train", "val", "test")}
    assert {s: p.size for s, p in parts.items()} == {"train": spec.train, "val": spec.val, "test": spec.test}
    for p in parts.values():
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)
    union = np.concatenate(list(parts.values()))
    assert np.unique(union).size == union.size == products.num_nodes  # disjoint, all nodes labelled
    assert spec.train == round(196_615 * SCALE) and spec.val == round(39_323 * SCALE)


def test_full_preset_shapes():
    p = sl.products_spec(1.0)
    assert (p.num_nodes, p.num_edges, p.num_features, p.num_classes, p.feature_dtype) == \
        (2_449_029, 61_859_140, 100, 47, "float32")
    assert (p.train, p.val, p.test) == (196_615, 39_323, 2_213_091)
    q = sl.papers_spec(1.0)
    assert (q.num_nodes, q.num_edges, q.num_features, q.num_classes, q.feature_dtype) == \
        (111_059_956, 1_615_685_872, 128, 172, "float16")
    assert (q.train, q.val, q.test) == (1_207_179, 125_265, 214_338)
    assert 40e9 < sl.estimate_bytes(q) < 46e9 and 1.4e9 < sl.estimate_bytes(p) < 1.6e9
    assert sl.papers_spec(0.02).num_edges == round(1_615_685_872 * sl.papers_spec(0.02).num_nodes / 111_059_956)


def test_small_papers_shape(papers):
    spec = sl.papers_spec(5e-4)
    n = spec.num_nodes
    assert papers.num_nodes == n == round(111_059_956 * 5e-4) and papers.num_edges == 2 * spec.num_edges
    x = papers.x
    assert x.dtype == np.float16 and x.shape == (n, 128)
    y = np.asarray(papers.y)
    labelled = np.flatnonzero(y >= 0)
    assert labelled.size / n == pytest.approx(0.0139, abs=0.001)
    parts = [np.asarray(papers.split(s)) for s in ("train", "val", "test")]
    assert [p.size for p in parts] == [spec.train, spec.val, spec.test]
    assert np.array_equal(np.sort(np.concatenate(parts)), labelled)  # splits = exactly the labelled nodes
    classes = sl.node_classes(papers)
    assert np.array_equal(y[labelled], classes[labelled]) and classes.max() == 171
    assert np.isfinite(np.asarray(x[:1000], dtype=np.float32)).all()
    deg = papers.degree()
    assert deg.mean() == pytest.approx(2 * 1_615_685_872 / 111_059_956, rel=1e-3) and deg.max() > 5 * deg.mean()


# ------------------------------------------------------------------------------ errors and the script

def test_errors_name_the_fix(products, tmp_path):
    with pytest.raises(ConfigError, match="overwrite"):
        sl.build_products_shaped(products.path, scale=SCALE)
    with pytest.raises(ConfigError, match="scale must be in"):
        sl.products_spec(0.0)
    with pytest.raises(ConfigError, match="homophily"):
        sl.products_spec(0.01, homophily=1.5)
    with pytest.raises(ConfigError, match="unknown generator option"):
        sl.papers_spec(0.01, beta=1.0)
    assert not (tmp_path / "x").exists()


def _script():
    spec = importlib.util.spec_from_file_location("build_synthetic", ROOT / "scripts" / "build_synthetic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script_refuses_when_the_disk_is_short(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sl.shutil, "disk_usage", lambda p: usage(10**12, 10**12 - 10**6, 10**6))
    with pytest.raises(ConfigError, match="not enough disk space"):
        _script().main(["papers", "--out", str(tmp_path / "p"), "--fraction", "0.01"])
    assert list(tmp_path.iterdir()) == []  # nothing was started


def test_script_builds_and_reports(tmp_path, capsys):
    report = _script().main(["products", "--out", str(tmp_path / "s"), "--scale", "0.001", "--json",
                             str(tmp_path / "r.json"), "--quiet"])
    assert json.loads((tmp_path / "r.json").read_text()) == report
    assert report["num_csr_entries"] == 2 * sl.products_spec(0.001).num_edges and report["peak_rss_bytes"] > 0
    assert report["disk_bytes"] <= report["estimated_bytes"] and report["build_seconds"] > 0
    assert "peak RSS" in capsys.readouterr().out
    assert GraphStore.exists(tmp_path / "s")
