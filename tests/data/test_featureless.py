"""Graphs without node features get a constant feature, and the log says so (issue 14)."""
import logging

import pytest
import torch
from torch_geometric.data import Data

from graphgt.data.common import ensure_node_features


def test_featureless_graphs_get_ones_and_a_warning(caplog):
    graphs = [Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=3),
              Data(x=torch.full((2, 4), 5.0), edge_index=torch.tensor([[0], [1]])),
              Data(edge_index=torch.tensor([[0], [1]]), num_nodes=2)]
    with caplog.at_level(logging.WARNING, logger="graphgt.data"):
        assert ensure_node_features(graphs, "toy") == 2
    assert torch.equal(graphs[0].x, torch.ones(3, 1)) and torch.equal(graphs[2].x, torch.ones(2, 1))
    assert torch.equal(graphs[1].x, torch.full((2, 4), 5.0))  # graphs with features are left alone
    [record] = [r for r in caplog.records if r.name == "graphgt.data"]
    assert record.levelno == logging.WARNING
    msg = record.getMessage()
    assert msg.startswith("toy: 2 of 3 graphs have no node features")
    assert "pe=degree" in msg and "pe=rwse" in msg and "pe=lap" in msg


def test_degree_encoding_one_hot_capped():
    from graphgt.pe import DegreePE

    # a star: centre 0 with 4 leaves, plus an isolated node 5
    src = torch.tensor([0, 0, 0, 0, 1, 2, 3, 4])
    dst = torch.tensor([1, 2, 3, 4, 0, 0, 0, 0])
    pe = DegreePE(max_degree=3)
    out = pe.compute(torch.stack([src, dst]), 6)["degree"]
    assert out.shape == (6, 4) and pe.in_dim == 4
    assert out.argmax(1).tolist() == [3, 1, 1, 1, 1, 0]          # degree 4 capped at 3; isolated: 0
    assert torch.equal(out.sum(1), torch.ones(6))
    indptr = torch.tensor([0, 4, 5, 6, 7, 8, 8])                  # the same graph as CSR rows
    assert torch.equal(pe.compute_csr(indptr.numpy(), dst.numpy(), 6)["degree"], out)
    with pytest.raises(ValueError, match="max_degree"):
        DegreePE(max_degree=0)


def test_nan_padded_encodings_are_logged(tmp_path, caplog):
    from graphgt.pe import LaplacianPE, attach_pes

    graphs = [Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=2),
              Data(edge_index=torch.tensor([[0, 1, 1, 2, 2, 3, 3, 4, 4, 0], [1, 0, 2, 1, 3, 2, 4, 3, 0, 4]]),
                   num_nodes=5)]
    with caplog.at_level(logging.WARNING, logger="graphgt.pe"):
        attach_pes(graphs, [LaplacianPE(k=3)], tmp_path)
    assert torch.isnan(graphs[0].lap_vec).any() and not torch.isnan(graphs[1].lap_vec).any()
    [record] = [r for r in caplog.records if r.name == "graphgt.pe"]
    assert "1 of 2 graphs have NaN entries in lap_vec/lap_val" in record.getMessage()


def test_no_warning_when_every_graph_has_features(caplog):
    graphs = [Data(x=torch.zeros(2, 1), edge_index=torch.tensor([[0], [1]]))]
    with caplog.at_level(logging.WARNING, logger="graphgt.data"):
        assert ensure_node_features(graphs) == 0
    assert not [r for r in caplog.records if r.name == "graphgt.data"]
