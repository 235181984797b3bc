"""PyGDataset: any PyG dataset class from config, node and graph level."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.datasets import FakeDataset

from graphgt.errors import ConfigError
from graphgt.data import PyGDataset, RandomSplit
from graphgt.spec import FloatFeatures

from .helpers import DegreePE, processed_dirs, requires_shared, set_writable, snapshot


def test_graph_level_fake_dataset(tmp_path):
    torch.manual_seed(0)
    ds = FakeDataset(num_graphs=50, avg_num_nodes=12, num_channels=5, edge_dim=2, num_classes=3, task="graph")
    m = PyGDataset(ds, level="graph", task="multiclass", metric="accuracy",
                   split=RandomSplit(0.6, 0.2, seed=0, stratify=True), batch_size=8)
    m.check()
    m.setup([DegreePE()], tmp_path)
    assert [len(p) for p in m.split_indices] == [30, 10, 10]
    spec = m.spec
    assert (spec.task.kind, spec.task.num_outputs, spec.task.level) == ("multiclass", 3, "graph")
    assert spec.node_features == FloatFeatures(5) and spec.edge_features == FloatFeatures(2)
    b = next(iter(m.train_loader(0)))
    assert b.num_graphs == 8 and b.y.shape == (8,) and b.y.dtype == torch.long and b.degree_pe.shape[1] == 1
    assert [x.num_nodes for x in m.train_loader(1)] == [x.num_nodes for x in m.train_loader(1)]


def test_graph_level_from_target_mapping_as_regression(tmp_path):
    from functools import partial

    from torch_geometric.datasets import FakeDataset

    from graphgt.data.splits import RandomSplit

    factory = partial(FakeDataset, num_graphs=20, avg_num_nodes=8, num_channels=4, num_classes=2, task="graph")
    m = PyGDataset(factory, level="graph", task="regression", metric="mae", split=RandomSplit(0.5, 0.25),
                   batch_size=4)
    m.check()
    m.setup([], tmp_path)
    b = next(iter(m.val_loader()))
    assert b.y.shape == (3, 1) and b.y.dtype == torch.float32  # 5 validation graphs: batches of 3 and 2
    assert m.spec.task.num_outputs == 1 and m.spec.edge_features is None and m.spec.task.metric == "mae"


def test_node_level_fake_dataset(tmp_path):
    torch.manual_seed(0)
    ds = FakeDataset(num_graphs=1, avg_num_nodes=100, num_channels=6, num_classes=4, task="node")
    m = PyGDataset(ds, level="node", task="multiclass", metric="accuracy", split=RandomSplit(0.5, 0.2, seed=0))
    m.setup([], tmp_path)
    n = ds[0].num_nodes
    batches = [next(iter(loader)) for loader in (m.train_loader(0), m.val_loader(), m.test_loader())]
    assert sum(int(b.loss_mask.sum()) for b in batches) == n
    assert m.spec.task.level == "node" and m.spec.task.num_outputs == int(ds[0].y.max()) + 1


def test_bad_options_are_config_errors():
    ds = FakeDataset(num_graphs=2)
    for kwargs, key in [({"level": "edge"}, "data.level"), ({"task": "ranking"}, "data.task")]:
        args = dict(level="graph", task="multiclass", metric="accuracy") | kwargs
        with pytest.raises(ConfigError, match=key):
            PyGDataset(ds, **args).check()
    with pytest.raises(ConfigError, match="data.dataset must be a PyG dataset, or a factory"):
        PyGDataset("torch_geometric.datasets.Nope", level="graph", task="multiclass", metric="accuracy").check()
    # an unbuilt node (data._recursive_=false passes DictConfigs): refused before anything calls it
    with pytest.raises(ConfigError, match=r"data\.dataset arrived as an unbuilt config node \(_target_: os\.rmdir\)"):
        PyGDataset({"_target_": "os.rmdir", "path": "/tmp/X"}, level="graph", task="multiclass",
                   metric="accuracy").check()
    unbuilt_split = PyGDataset(ds, level="graph", task="multiclass", metric="accuracy",
                               split={"_target_": "graphgt.data.splits.RandomSplit", "train": 0.5, "val": 0.2})
    with pytest.raises(ConfigError, match=r"data\.split arrived as an unbuilt config node"):
        unbuilt_split.check()
    m = PyGDataset(ds, level="graph", task="multiclass", metric="accuracy")  # default MaskSplit: no masks
    with pytest.raises(ConfigError, match="RandomSplit"):
        m.setup([], "/nonexistent-unused")


@requires_shared
@pytest.mark.parametrize("writable", [True, False], ids=["writable-root", "read-only-root"])
def test_root_of_a_factory_is_copied(tmp_path, real_root, writable):
    """The factory gets a copy of its root under cache_dir: PyG's processed/ never lands in the
    user's folder, writable or not."""
    import shutil
    from functools import partial

    from torch_geometric.datasets import Planetoid

    root = tmp_path / "planetoid"
    shutil.copytree(real_root / "planetoid" / "Cora", root / "Cora")
    set_writable(root, writable)
    before = snapshot(root)
    factory = partial(Planetoid, root=str(root), name="Cora")
    m = PyGDataset(factory, level="node", task="multiclass", metric="accuracy")
    m.setup([], tmp_path / "cache")
    assert [len(p) for p in m.split_indices] == [140, 500, 1000]
    assert (tmp_path / "cache" / "datasets" / "pyg" / "planetoid" / "Cora" / "processed").is_dir()
    assert processed_dirs(root) == [] and snapshot(root) == before


def test_built_by_hydra(tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({
        "_target_": "graphgt.data.PyGDataset",
        "dataset": {"_target_": "torch_geometric.datasets.FakeDataset", "_partial_": True, "num_graphs": 12,
                    "avg_num_nodes": 6,
                    "num_channels": 3, "num_classes": 2, "task": "graph"},
        "level": "graph", "task": "binary", "metric": "rocauc", "batch_size": 4,
        "split": {"_target_": "graphgt.data.splits.RandomSplit", "train": 0.5, "val": 0.25, "seed": 0},
    })
    m = instantiate(cfg)
    assert isinstance(m.split, RandomSplit)
    m.check()
    m.setup([], tmp_path)
    assert next(iter(m.test_loader())).y.shape == (3, 1) and m.spec.task.num_outputs == 1
