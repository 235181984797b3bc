"""The real benchmark datasets (skipped when ../shared/data is absent): counts, splits, targets,
sources copied to the cache (never written, writable or not), and clear errors for missing folders.

The tests read ``real_root``, a private copy of the shared folder with writable modes
(tests/data/conftest.py), and a guard checks after each test that neither that copy nor the
shared folder changed: the results do not depend on the shared folder's permissions."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from graphgt.errors import ConfigError
from graphgt.data import OGBGraphData, PeptidesFunctional, PlanetoidData, TUData, WebKBData
from graphgt.data.common import COPY_STAMP
from graphgt.eval import get_metric
from graphgt.nn.encoders import feature_encoder
from graphgt.spec import FloatFeatures

from .helpers import DegreePE, processed_dirs, requires_shared, set_writable, snapshot

pytestmark = requires_shared


def _one(loader):
    items = list(loader)
    assert len(items) == 1
    return items[0]


def test_cora_public_split_and_loaders(tmp_path, real_root):
    m = PlanetoidData(str(real_root), "Cora")
    m.check()
    m.setup([DegreePE()], tmp_path)
    assert [len(p) for p in m.split_indices] == [140, 500, 1000]
    spec = m.spec
    assert (spec.task.kind, spec.task.num_outputs, spec.task.level) == ("multiclass", 7, "node")
    assert spec.edge_features is None and spec.node_features == FloatFeatures(1433)
    for loader, count in ((m.train_loader(0), 140), (m.val_loader(), 500), (m.test_loader(), 1000)):
        b = _one(loader)
        assert b.num_nodes == 2708 and b.edge_index.shape == (2, 10556)
        assert b.loss_mask.dtype == torch.bool and int(b.loss_mask.sum()) == count
        assert b.y.dtype == torch.long and b.degree_pe.shape == (2708, 1)
        assert not hasattr(b, "train_mask") or b.get("train_mask") is None
    sums = b.x.sum(1)
    assert torch.allclose(sums[sums > 0], torch.ones_like(sums[sums > 0]), atol=1e-5)  # row-normalised
    # the (writable) source was copied once into the cache and processed there
    assert (tmp_path / "datasets" / "planetoid" / "Cora" / "processed").is_dir()
    assert processed_dirs(real_root) == []


@pytest.mark.parametrize("writable", [True, False], ids=["writable-root", "read-only-root"])
def test_the_data_root_is_never_written(tmp_path, real_root, writable):
    """Loaders process a copy under cache_dir/datasets whatever the root's modes; the copy is made
    once, and again only when the source files change."""
    root = tmp_path / "root"
    shutil.copytree(real_root / "tu" / "MUTAG", root / "tu" / "MUTAG")
    set_writable(root, writable)
    before = snapshot(root)
    cache = tmp_path / "cache"
    TUData(str(root), "MUTAG").setup([], cache)
    copy = cache / "datasets" / "tu" / "MUTAG"
    assert snapshot(root) == before and processed_dirs(root) == []
    assert (copy / "processed").is_dir() and (copy / "raw" / "MUTAG_A.txt").is_file()
    stamp = json.loads((copy / COPY_STAMP).read_text())
    assert stamp["source"] == str((root / "tu" / "MUTAG").resolve()) and len(stamp["files"]) == len(
        [p for p in (root / "tu" / "MUTAG").rglob("*") if p.is_file()])
    processed = sorted(p.name for p in (copy / "processed").iterdir())
    mtime = (copy / COPY_STAMP).stat().st_mtime_ns
    TUData(str(root), "MUTAG").setup([], cache)  # reused: not copied nor processed again
    assert (copy / COPY_STAMP).stat().st_mtime_ns == mtime and sorted(p.name for p in (copy / "processed").iterdir()) == processed
    # a changed source file is noticed: the copy is made again (and processed again)
    set_writable(root, True)
    labels = root / "tu" / "MUTAG" / "raw" / "MUTAG_graph_labels.txt"
    labels.write_text(labels.read_text().replace("-1", "0", 1))
    TUData(str(root), "MUTAG").setup([], cache)
    assert json.loads((copy / COPY_STAMP).read_text())["files"] != stamp["files"]
    assert processed_dirs(root) == [] and not list(copy.parent.glob(".MUTAG.*"))  # no temporary folder left


def test_webkb_split_index(tmp_path, real_root):
    masks = []
    for index in (0, 1):
        m = WebKBData(str(real_root), "Cornell", split_index=index)
        m.check()
        m.setup([], tmp_path)
        b = _one(m.train_loader(0))
        assert b.num_nodes == 183 and m.spec.task.num_outputs == 5
        masks.append(b.loss_mask)
    assert not torch.equal(masks[0], masks[1])
    with pytest.raises(ConfigError, match="split_index"):
        WebKBData(str(real_root), "cornell", split_index=10).check()


def test_mutag_graphs_edge_features_and_split(tmp_path, real_root):
    m = TUData(str(real_root), "MUTAG", batch_size=16)
    m.check()
    m.setup([DegreePE()], tmp_path)
    train, val, test = m.split_indices
    assert len(train) + len(val) + len(test) == 188
    assert torch.equal(torch.sort(torch.cat([train, val, test])).values, torch.arange(188))  # disjoint, covering
    spec = m.spec
    assert (spec.task.kind, spec.task.num_outputs, spec.task.level) == ("multiclass", 2, "graph")
    assert spec.edge_features == FloatFeatures(4) and spec.node_features == FloatFeatures(7)
    # stratified: class proportions of each split are close to the whole
    y = torch.cat([g.y for split in ("train", "val", "test") for g in m._splits[split]])
    labels = torch.empty(188, dtype=torch.long)
    labels[torch.cat([train, val, test])] = y
    whole = labels.float().mean()
    for part in (train, val, test):
        assert abs(float(labels[part].float().mean()) - float(whole)) < 0.06
    # deterministic: same seed -> same split and same batch order; other seed -> other order
    m2 = TUData(str(real_root), "MUTAG", batch_size=16)
    m2.setup([], tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(m.split_indices, m2.split_indices))
    order = lambda mod, seed: torch.cat([b.y for b in mod.train_loader(seed)])  # noqa: E731
    first = next(iter(m.train_loader(5)))
    assert first.edge_attr.shape[1] == 4 and first.x.dtype == torch.float32 and first.degree_pe.shape[1] == 1
    assert torch.equal(order(m, 5), order(m2, 5))
    sizes = lambda mod, seed: [b.num_nodes for b in mod.train_loader(seed)]  # noqa: E731
    assert sizes(m, 5) != sizes(m, 6)
    assert sum(b.num_graphs for b in m.val_loader()) == len(val)  # no drop_last
    assert [b.num_nodes for b in m.val_loader()] == [b.num_nodes for b in m.val_loader()]  # not shuffled


def test_enzymes_node_attributes(tmp_path, real_root):
    m = TUData(str(real_root), "ENZYMES", use_node_attr=True)
    m.setup([], tmp_path)
    assert m.spec.node_features == FloatFeatures(21) and m.spec.task.num_outputs == 6
    assert sum(len(p) for p in m.split_indices) == 600 and m.spec.edge_features is None


def test_proteins_loads(tmp_path, real_root):
    m = TUData(str(real_root), "PROTEINS")
    m.setup([], tmp_path)
    assert sum(len(p) for p in m.split_indices) == 1113 and m.spec.node_features == FloatFeatures(3)


@pytest.mark.parametrize("name,sizes", [("ogbg-molbace", (1210, 151, 152)), ("ogbg-molbbbp", (1631, 204, 204))])
def test_ogb_molecules(tmp_path, real_root, name, sizes):
    m = OGBGraphData(str(real_root), name, batch_size=64)
    m.check()
    m.setup([], tmp_path)
    assert tuple(len(p) for p in m.split_indices) == sizes
    spec = m.spec
    assert (spec.task.kind, spec.task.num_outputs, spec.task.level) == ("binary", 1, "graph")
    assert spec.task.metric == f"ogb:{name}"
    b = next(iter(m.val_loader()))
    assert b.y.shape == (51, 1) and b.y.dtype == torch.float32  # ceil(n / 64) batches of equal size (+-1)
    assert b.x.shape[1] == 9 and b.edge_attr.shape[1] == 3
    assert feature_encoder(spec.node_features, 8)(b.x).shape == (b.num_nodes, 8)
    assert feature_encoder(spec.edge_features, 8)(b.edge_attr).shape == (b.edge_index.size(1), 8)
    y = torch.cat([batch.y for batch in m.val_loader()])
    score = get_metric(spec.task.metric)(torch.randn(len(y), 1), y)
    assert 0.0 <= score <= 1.0


def test_ogb_molecules_with_an_rdkit_target(tmp_path, real_root):
    """data=ogbg-molbace-logp: the same molecules and scaffold split, y = RDKit's Crippen logP of
    OGB's own SMILES (row i = graph i), a one-column regression scored by RMSE."""
    pytest.importorskip("rdkit")
    import pandas as pd
    from rdkit import Chem
    from rdkit.Chem import Crippen

    m = OGBGraphData(str(real_root), "ogbg-molbace", batch_size=64, target="logp")
    m.check()
    m.setup([], tmp_path)
    assert tuple(len(p) for p in m.split_indices) == (1210, 151, 152)
    assert (m.spec.task.kind, m.spec.task.num_outputs, m.spec.task.metric) == ("regression", 1, "rmse")
    smiles = pd.read_csv(real_root / "ogb" / "ogbg_molbace" / "mapping" / "mol.csv.gz")["smiles"]
    val = m.split_indices[1]
    y = torch.cat([batch.y for batch in m.val_loader()]).view(-1)
    expected = torch.tensor([Crippen.MolLogP(Chem.MolFromSmiles(smiles[int(i)])) for i in val])
    torch.testing.assert_close(y, expected.float())
    with pytest.raises(ConfigError, match="data.target='pka'"):
        OGBGraphData(str(real_root), "ogbg-molbace", target="pka").check()


@pytest.mark.parametrize("module,expected", [
    (lambda r: PlanetoidData(r, "Cora"), "planetoid/Cora"),
    (lambda r: WebKBData(r, "Texas"), "webkb/texas"),
    (lambda r: TUData(r, "MUTAG"), "tu/MUTAG"),
    (lambda r: OGBGraphData(r, "ogbg-molbace"), "ogb/ogbg_molbace"),
    (lambda r: PeptidesFunctional(r), "lrgb/peptides-functional"),
])
def test_missing_dataset_is_a_clear_error(tmp_path, module, expected):
    with pytest.raises(ConfigError) as e:
        module(str(tmp_path)).check()
    msg = str(e.value)
    assert str(tmp_path / expected) in msg and "data.root" in msg


def test_missing_ogb_dataset_says_how_to_download(tmp_path, real_root):
    with pytest.raises(ConfigError, match="PygGraphPropPredDataset"):
        OGBGraphData(str(tmp_path), "ogbg-molhiv").check()
    with pytest.raises(ConfigError, match="ogbg-mol"):
        OGBGraphData(str(real_root), "ogbg-ppa").check()
