"""The embedded default dataset (CSBM): deterministic, well-formed, with signal in features and graph."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch_geometric.utils import is_undirected

from graphgt.errors import ConfigError
from graphgt.data import SyntheticCSBM
from graphgt.data.synthetic import generate_csbm
from graphgt.nn.encoders import feature_encoder

from .helpers import DegreePE


def test_deterministic_by_seed():
    a, b, c = SyntheticCSBM(seed=1).generate(), SyntheticCSBM(seed=1).generate(), SyntheticCSBM(seed=2).generate()
    for key in ("x", "edge_index", "y"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a.y, c.y)


@pytest.mark.parametrize("homophily,avg_degree", [(0.8, 10.0), (0.2, 6.0), (1.0, 4.0)])
def test_structure_matches_parameters(homophily, avg_degree):
    t0 = time.perf_counter()
    d = generate_csbm(3000, 5, 32, avg_degree, homophily, 1.0, seed=0)
    assert time.perf_counter() - t0 < 1.0
    ei = d.edge_index
    assert int((ei[0] == ei[1]).sum()) == 0
    assert is_undirected(ei, num_nodes=3000)
    assert torch.unique(ei[0] * 3000 + ei[1]).numel() == ei.size(1)  # no duplicate edges
    assert abs(ei.size(1) / 3000 - avg_degree) <= 0.1 * avg_degree
    measured = float((d.y[ei[0]] == d.y[ei[1]]).float().mean())
    assert abs(measured - homophily) <= 0.05
    assert d.x.shape == (3000, 32) and d.x.dtype == torch.float32 and d.y.dtype == torch.long
    assert set(d.y.tolist()) == set(range(5))


def test_features_and_graph_both_carry_signal():
    """Logistic regression on x beats chance; on graph-smoothed x (SGC, 2 hops) it is clearly better."""
    from sklearn.linear_model import LogisticRegression

    d = generate_csbm(3000, 5, 32, 10.0, 0.8, 1.0, seed=0)
    n, ei = 3000, d.edge_index
    deg = torch.bincount(ei[0], minlength=n).float() + 1
    x = d.x
    for _ in range(2):  # x <- D^-1/2 (A + I) D^-1/2 x
        xs = x / deg.sqrt().unsqueeze(1)
        x = (xs + torch.zeros_like(xs).index_add_(0, ei[1], xs[ei[0]])) / deg.sqrt().unsqueeze(1)
    tr, te = np.arange(0, 1500), np.arange(2250, 3000)
    y = d.y.numpy()
    acc_mlp = LogisticRegression(max_iter=500).fit(d.x.numpy()[tr], y[tr]).score(d.x.numpy()[te], y[te])
    acc_gnn = LogisticRegression(max_iter=500).fit(x.numpy()[tr], y[tr]).score(x.numpy()[te], y[te])
    assert acc_mlp > 0.2 + 0.1
    assert acc_gnn > acc_mlp + 0.2


def test_module_setup_loaders_and_pe(tmp_path):
    m = SyntheticCSBM(num_nodes=500, num_classes=3, num_features=8, avg_degree=6.0, train=0.6, val=0.2)
    m.check()
    m.setup([DegreePE()], tmp_path)
    spec = m.spec
    assert spec.task.kind == "multiclass" and spec.task.num_outputs == 3 and spec.task.level == "node"
    assert spec.task.metric == "accuracy" and spec.edge_features is None
    assert feature_encoder(spec.node_features, 16)(torch.randn(4, 8)).shape == (4, 16)
    masks = []
    for loader in (m.train_loader(0), m.val_loader(), m.test_loader()):
        (batch,) = list(loader)
        assert batch.num_nodes == 500 and torch.equal(batch.batch, torch.zeros(500, dtype=torch.long))
        assert batch.loss_mask.dtype == torch.bool and batch.degree_pe.shape == (500, 1)
        masks.append(batch.loss_mask)
    assert [int(mk.sum()) for mk in masks] == [300, 100, 100]
    assert int(torch.stack(masks).sum(0).max()) == 1
    assert list((tmp_path / "pe").glob("DegreePE-*.pt"))


def test_check_rejects_bad_parameters():
    SyntheticCSBM().check()
    with pytest.raises(ConfigError, match="homophily"):
        SyntheticCSBM(homophily=1.5).check()


def test_spec_before_setup_is_a_clear_error():
    with pytest.raises(RuntimeError, match="setup"):
        SyntheticCSBM().spec
