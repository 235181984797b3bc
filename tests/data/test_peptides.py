"""LRGB Peptides-func: SMILES conversion (fast, on a few rows), the module on a tiny copy, and the
full dataset (slow)."""
from __future__ import annotations

import pickle
import time

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("rdkit")

from graphgt.data import PeptidesFunctional  # noqa: E402
from graphgt.data import peptides as pep  # noqa: E402
from graphgt.nn.encoders import feature_encoder  # noqa: E402

from .helpers import SHARED, requires_shared  # noqa: E402

CSV = SHARED / pep.REL / pep.CSV

pytestmark = requires_shared


def _head(n: int) -> pd.DataFrame:
    return pd.read_csv(CSV, nrows=n)


def test_convert_first_rows():
    df = _head(50)
    arrays = pep.convert_smiles(df["smiles"].tolist(), df["labels"].tolist(), processes=1)
    graphs = pep.to_graphs(arrays)
    assert len(graphs) == 50
    for g in graphs:
        assert g.x.shape[1] == 9 and g.x.dtype == torch.long
        assert g.edge_attr.shape[1] == 3 and g.edge_attr.shape[0] == g.edge_index.shape[1]
        assert int(g.edge_index.max()) < g.num_nodes and g.y.shape == (1, 10)
    assert arrays["y"].shape == (50, 10) and set(arrays["y"].unique().tolist()) <= {0.0, 1.0}
    from torch_geometric.loader import DataLoader

    b = next(iter(DataLoader(graphs, batch_size=50)))
    assert b.y.shape == (50, 10) and b.y.dtype == torch.float32


def test_module_on_a_tiny_copy(tmp_path, monkeypatch):
    """The module end to end on 40 molecules: split file, caching of the conversion, loaders."""
    folder = tmp_path / "root" / pep.REL
    (folder / "raw").mkdir(parents=True)
    _head(40).to_csv(folder / pep.CSV, index=False, compression="gzip")
    with open(folder / pep.SPLIT, "wb") as f:
        pickle.dump({"train": np.arange(0, 30), "val": np.arange(30, 35), "test": np.arange(35, 40)}, f)
    m = PeptidesFunctional(str(tmp_path / "root"), batch_size=8, processes=2)
    m.check()
    m.setup([], tmp_path / "cache")
    assert [len(p) for p in m.split_indices] == [30, 5, 5]
    spec = m.spec
    assert (spec.task.kind, spec.task.num_outputs, spec.task.level) == ("multilabel", 10, "graph")
    assert spec.task.metric == "ap"
    b = next(iter(m.train_loader(0)))
    assert b.num_graphs == 8 and b.y.shape == (8, 10)
    assert feature_encoder(spec.node_features, 16)(b.x).shape == (b.num_nodes, 16)
    assert feature_encoder(spec.edge_features, 16)(b.edge_attr).shape == (b.edge_index.size(1), 16)
    assert m.processed_path(tmp_path / "cache").is_file()
    # the second setup reads the cache and does not convert again
    monkeypatch.setattr(pep, "convert_smiles", lambda *a, **k: pytest.fail("converted twice"))
    PeptidesFunctional(str(tmp_path / "root")).setup([], tmp_path / "cache")


@pytest.mark.slow
def test_full_dataset(tmp_path):
    m = PeptidesFunctional(str(SHARED), processes=2)
    m.check()
    t0 = time.perf_counter()
    m.setup([], tmp_path)
    print(f"Peptides-func conversion + setup: {time.perf_counter() - t0:.1f} s")
    assert [len(p) for p in m.split_indices] == [10873, 2331, 2331]
    graphs = [g for split in ("train", "val", "test") for g in m._splits[split]]
    assert len(graphs) == 15535
    assert sum(g.num_nodes for g in graphs) == 2_344_859
    assert sum(g.edge_index.size(1) for g in graphs) == 4_773_974
    # nothing written into SHARED: checked after every data test by tests/data/conftest.py
