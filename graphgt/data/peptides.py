"""LRGB Peptides-func (Dwivedi et al., 2022): 15,535 peptides, 10-label multilabel, metric AP.

There is no stock offline loader: the raw CSV holds SMILES strings and label lists; molecules are
turned into graphs with OGB's ``smiles2graph`` (rdkit), i.e. 9 categorical atom features and 3
categorical bond features, as in LRGB.  The conversion runs once and is cached (atomic write) as
``<cache_dir>/datasets/lrgb/peptides-functional/processed.pt`` in a compact layout (concatenated
arrays + offsets); a change of the source CSV is detected by its checksum and reprocesses.
"""
from __future__ import annotations

import ast
import hashlib
import multiprocessing as mp
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from graphgt.data.common import GraphDataModule, Prepared, molecule_features, require_paths
from graphgt.io import atomic_save
from graphgt.data.splits import IndexFileSplit
from graphgt.errors import ConfigError
from graphgt.spec import DataSpec, Task

REL = "lrgb/peptides-functional"
CSV = "raw/peptide_multi_class_dataset.csv.gz"
SPLIT = "splits_random_stratified_peptide.pickle"
NUM_LABELS = 10
FORMAT_VERSION = 1


def _smiles2graph(smiles: str) -> Dict[str, np.ndarray]:
    from ogb.utils import smiles2graph

    g = smiles2graph(smiles)
    return {"x": g["node_feat"], "edge_index": g["edge_index"], "edge_attr": g["edge_feat"]}


def convert_smiles(smiles: Sequence[str], labels: Sequence[str], processes: int = 1) -> Dict[str, Tensor]:
    """SMILES + label strings -> compact tensors.

    Args:
        smiles: one SMILES string per molecule.
        labels: one label list per molecule, as the CSV stores it (``"[0, 1, ...]"``).
        processes: worker processes for the rdkit conversion (1: in this process).

    Returns:
        ``x`` uint8 ``[sum N, 9]``, ``edge_index`` int32 ``[2, sum E]`` (local node ids),
        ``edge_attr`` uint8 ``[sum E, 3]``, ``node_ptr``/``edge_ptr`` int64 ``[G + 1]``,
        ``y`` float ``[G, 10]``.
    """
    if processes > 1 and len(smiles) > 1:
        with mp.get_context().Pool(processes) as pool:
            graphs = pool.map(_smiles2graph, smiles, chunksize=max(1, len(smiles) // (8 * processes)))
    else:
        graphs = [_smiles2graph(s) for s in smiles]
    num_nodes = np.array([g["x"].shape[0] for g in graphs], dtype=np.int64)
    num_edges = np.array([g["edge_index"].shape[1] for g in graphs], dtype=np.int64)
    y = np.array([ast.literal_eval(s) if isinstance(s, str) else list(s) for s in labels], dtype=np.float32)
    if y.ndim != 2 or y.shape[1] != NUM_LABELS:
        raise ValueError(f"Peptides-func labels: expected {NUM_LABELS} per molecule, got shape {y.shape}")
    return {
        "x": torch.from_numpy(np.concatenate([g["x"] for g in graphs]).astype(np.uint8)),
        "edge_index": torch.from_numpy(np.concatenate([g["edge_index"] for g in graphs], axis=1).astype(np.int32)),
        "edge_attr": torch.from_numpy(np.concatenate([g["edge_attr"] for g in graphs]).astype(np.uint8)),
        "node_ptr": torch.from_numpy(np.concatenate([[0], np.cumsum(num_nodes)])),
        "edge_ptr": torch.from_numpy(np.concatenate([[0], np.cumsum(num_edges)])),
        "y": torch.from_numpy(y),
    }


def to_graphs(arrays: Dict[str, Tensor]) -> List[Data]:
    """Compact tensors of :func:`convert_smiles` -> one ``Data`` per molecule (x/edge_attr long,
    ``y`` float ``[1, 10]``)."""
    x, edge_attr = arrays["x"].long(), arrays["edge_attr"].long()
    edge_index = arrays["edge_index"].long()
    n_sizes = arrays["node_ptr"].diff().tolist()
    e_sizes = arrays["edge_ptr"].diff().tolist()
    xs, eis, eas = x.split(n_sizes), edge_index.split(e_sizes, dim=1), edge_attr.split(e_sizes)
    ys = arrays["y"].split(1)
    return [Data(x=a, edge_index=b, edge_attr=c, y=d, num_nodes=len(a)) for a, b, c, d in zip(xs, eis, eas, ys)]


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class PeptidesFunctional(GraphDataModule):
    """LRGB Peptides-func from ``<root>/lrgb/peptides-functional`` (raw CSV + official split pickle).

    Multilabel (10 outputs), metric mean average precision over the labels; official random
    stratified split 10873/2331/2331.

    Args:
        root: folder holding ``lrgb/peptides-functional``.
        batch_size: graphs per batch.
        num_workers: loader workers.
        processes: processes for the one-off SMILES conversion.
    """

    def __init__(self, root: str, batch_size: int = 128, num_workers: int = 0, processes: int = 2):
        super().__init__(root, batch_size, num_workers,
                         split=IndexFileSplit(str(Path(root) / REL / SPLIT)))
        self.processes = int(processes)

    def check(self) -> None:
        folder = self.source_dir(REL)
        require_paths([folder, folder / CSV, folder / SPLIT], "LRGB Peptides-func",
                      f"Copy the LRGB release files ({CSV} and {SPLIT}) there.")
        self._check_common()
        if self.processes < 1:
            raise ConfigError(f"data.processes must be >= 1, got {self.processes}")
        try:
            import rdkit  # noqa: F401
        except ImportError:
            raise ConfigError("LRGB Peptides-func needs rdkit to turn SMILES into graphs: pip install rdkit") from None

    def processed_path(self, cache_dir: Path) -> Path:
        """Where the converted graphs are cached."""
        return Path(cache_dir) / "datasets" / REL / "processed.pt"

    def load_arrays(self, cache_dir: Path) -> Dict[str, Tensor]:
        """The converted dataset, from the cache or converted now (and cached)."""
        import pandas as pd

        csv = self.source_dir(REL) / CSV
        key = f"v{FORMAT_VERSION}:{_md5(csv)}"
        path = self.processed_path(cache_dir)
        if path.exists():
            cached = torch.load(path, weights_only=True)
            if cached.get("key") == key:
                return cached["arrays"]
        df = pd.read_csv(csv, usecols=["smiles", "labels"])
        arrays = convert_smiles(df["smiles"].tolist(), df["labels"].tolist(), self.processes)
        atomic_save({"key": key, "arrays": arrays}, path)
        return arrays

    def prepare(self, cache_dir: Path) -> Prepared:
        graphs = to_graphs(self.load_arrays(cache_dir))
        atoms, bonds = molecule_features()
        spec = DataSpec(task=Task("multilabel", NUM_LABELS, "graph", "ap"), node_features=atoms, edge_features=bonds,
                        name="LRGB/Peptides-func")
        return Prepared(graphs, spec, split_source=None, labels=None)
