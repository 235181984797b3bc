"""Graphs that do not fit in RAM: the on-disk graph store and everything that writes or serves one.

==================  ==================================================================================
module              what it holds
==================  ==================================================================================
``core``            :class:`GraphStore` (memory-mapped ``.npy`` arrays + ``meta.json``), the atomic
                    :class:`StoreWriter`, :func:`add_arrays` / :func:`write_derived` (the one path
                    for arrays derived from a store, with the record that vouches for them)
``node``            :class:`StoreNodeData`, the node-level data module over a store, and the sources
                    a store comes from (:class:`ExistingStore`, :class:`SyntheticShape`,
                    :class:`OGBNodeSource`, :class:`InMemorySource`)
``ogb``             OGB node datasets streamed from their raw download into a store, in chunks
``synthetic``       products- and papers100M-shaped synthetic graphs written straight into a store
``hop_features``    LargeGT/SIGN propagated features ``Â x, Â² x`` computed into a store
``pe``              positional encodings computed into a store (the store calls :mod:`graphgt.pe`)
==================  ==================================================================================

The memory-mapping helpers (read advice, page release) live beside :mod:`graphgt.io`, in
:mod:`graphgt.pages`, because the PE solvers use them too.
"""
from graphgt.data.store.core import (META, GraphStore, NpyAppender, Streamed, StoreWriter, add_arrays, csr_from_edges,
                                     index_dtype, iter_chunks, update_meta, write_derived, write_store)
from graphgt.data.store.hop_features import compute_hop_features, hop_key
from graphgt.data.store.node import (ExistingStore, InMemorySource, OGBNodeSource, StoreNodeData, StoreSource,
                                     SyntheticShape)
from graphgt.data.store.pe import compute_store_pe
from graphgt.errors import StoreError

__all__ = ["META", "GraphStore", "NpyAppender", "Streamed", "StoreWriter", "StoreError", "add_arrays", "csr_from_edges",
           "index_dtype", "iter_chunks", "update_meta", "write_derived", "write_store", "compute_hop_features",
           "hop_key", "ExistingStore", "InMemorySource", "OGBNodeSource", "StoreNodeData", "StoreSource",
           "SyntheticShape", "compute_store_pe"]
