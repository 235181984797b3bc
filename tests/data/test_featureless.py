"""Graphs without node features get a constant feature, and the log says so (issue 14)."""
import logging

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
    assert "pe=rwse" in msg and "pe=lap" in msg


def test_no_warning_when_every_graph_has_features(caplog):
    graphs = [Data(x=torch.zeros(2, 1), edge_index=torch.tensor([[0], [1]]))]
    with caplog.at_level(logging.WARNING, logger="graphgt.data"):
        assert ensure_node_features(graphs) == 0
    assert not [r for r in caplog.records if r.name == "graphgt.data"]
