"""Data modules (one class per source), split strategies, loaders and the graph store.

See :mod:`graphgt.data.base` for the protocol and :mod:`graphgt.spec` for what a module reports.
This package imports neither :mod:`graphgt.nn`, :mod:`graphgt.train`, :mod:`graphgt.eval` nor
:mod:`graphgt.config` (``docs/design.md``, checked by ``tests/test_layers.py``).
"""
from graphgt.data.base import DataModule
from graphgt.data.loader import FullBatchLoader, GraphBatchLoader, PackedGraphs
from graphgt.data.common import GraphDataModule, InMemoryDataModule, NodeDataModule, Prepared, writable_copy
from graphgt.data.ogb_graph import OGBGraphData
from graphgt.data.peptides import PeptidesFunctional
from graphgt.data.planetoid import PlanetoidData
from graphgt.data.pyg import PyGDataset
from graphgt.data.store.core import GraphStore, StoreWriter, write_store
from graphgt.data.store.node import ExistingStore, OGBNodeSource, StoreNodeData, StoreSource, SyntheticShape
from graphgt.data.splits import IndexFileSplit, MaskSplit, OfficialSplit, RandomSplit, Split, SplitIndices
from graphgt.data.synthetic import SyntheticCSBM
from graphgt.data.tu import TUData
from graphgt.data.webkb import WebKBData

__all__ = [
    "DataModule", "FullBatchLoader", "GraphBatchLoader", "PackedGraphs", "InMemoryDataModule", "NodeDataModule", "GraphDataModule", "Prepared",
    "writable_copy", "Split", "SplitIndices", "MaskSplit", "IndexFileSplit", "RandomSplit", "OfficialSplit",
    "SyntheticCSBM", "PlanetoidData", "WebKBData", "TUData", "OGBGraphData", "PeptidesFunctional", "PyGDataset",
    "GraphStore", "StoreWriter", "write_store", "StoreNodeData", "StoreSource", "ExistingStore", "SyntheticShape",
    "OGBNodeSource", "InMemorySource",
]
