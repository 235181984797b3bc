"""OGB graph property prediction on molecules (ogbg-molhiv, -molbace, -molbbbp, -molpcba, ...)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import torch

from graphgt.data.common import GraphDataModule, Prepared, molecule_features, require_paths
from graphgt.data.splits import OfficialSplit
from graphgt.errors import ConfigError
from graphgt.spec import DataSpec, Task


def allow_ogb_pickles() -> None:
    """Let ``torch.load`` (weights_only, torch >= 2.6) read ogb 1.3.6's processed PyG files."""
    import torch
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    torch.serialization.add_safe_globals([DataEdgeAttr, DataTensorAttr, GlobalStorage])


def ogb_meta(name: str):
    """OGB's master-table row of ``name`` (task type, number of tasks, metric, ...), or ConfigError."""
    import pandas as pd
    import ogb.graphproppred as gp

    master = pd.read_csv(Path(gp.__file__).parent / "master.csv", index_col=0, keep_default_na=False)
    if name not in master:
        raise ConfigError(f"data.name '{name}' is not an OGB graph-property dataset; known: {sorted(master.keys())}")
    return master[name]


class OGBGraphData(GraphDataModule):
    """``ogb.graphproppred.PygGraphPropPredDataset`` read from ``<root>/ogb/<name with '-' -> '_'>``, through
    its copy under ``cache_dir/datasets`` (OGB's ``processed/`` is written there, never into ``<root>``).

    Official split (``get_idx_split()``, scaffold for molecules); task and metric from OGB's meta
    data: binary classification (``num_tasks`` sigmoid outputs, ``binary`` if one task else
    ``multilabel``; missing labels stay NaN) or regression; metric ``OGBMetric(name)``.  Atoms
    and bonds are embedded by ``CategoricalEncoder`` with OGB's feature cardinalities (9 / 3 columns).
    Targets ``y``: float ``[G, num_tasks]``.

    ``target``: replace OGB's labels by an RDKit descriptor of each molecule, computed from the
    dataset's own SMILES (``mapping/mol.csv.gz``, row ``i`` = graph ``i``): a regression task
    (one column, metric ``rmse``) on the same graphs and the same official scaffold split. Used to
    study molecular regression under a scaffold shift where only classification data is at hand
    (``data=ogbg-molbace-logp``). Descriptors: :data:`TARGETS` (``logp``: Crippen logP, Wildman &
    Crippen 1999; ``mr``: Crippen molar refractivity; ``tpsa``: topological polar surface area,
    Ertl et al. 2000; ``heavy_atoms``); needs rdkit (``pip install rdkit``).

    Args:
        root: folder holding ``ogb/<dir name>``.
        name: OGB name, e.g. ``ogbg-molbace``.
        batch_size: graphs per batch.
        num_workers: loader workers.
        target: ``null`` (OGB's labels) or a descriptor name of :data:`TARGETS`.
    """

    KINDS = {"binary classification": "binary", "regression": "regression"}
    TARGETS = ("logp", "mr", "tpsa", "heavy_atoms")

    def __init__(self, root: str, name: str, batch_size: int = 32, num_workers: int = 0,
                 target: Optional[str] = None):
        super().__init__(root, batch_size, num_workers, split=OfficialSplit())
        self.name = str(name)
        self.target = None if target is None else str(target)

    @property
    def rel(self) -> str:
        return f"ogb/{self.name.replace('-', '_')}"

    def check(self) -> None:
        self._check_common()
        if not self.name.startswith("ogbg-mol"):
            raise ConfigError(f"data.name '{self.name}': OGBGraphData reads OGB molecule datasets (ogbg-mol*) "
                              f"whose atoms/bonds use OGB's categorical features")
        meta = ogb_meta(self.name)
        if meta["task type"] not in self.KINDS:
            raise ConfigError(f"data.name '{self.name}': task type '{meta['task type']}' is not supported")
        folder = self.source_dir(self.rel)
        fix = (f"Run once online: python -c 'from ogb.graphproppred import PygGraphPropPredDataset as D; "
               f"D(\"{self.name}\", root=\"{Path(self.root).resolve() / 'ogb'}\")' (or copy the dataset folder there).")
        require_paths([folder, folder / "raw", folder / "split" / meta["split"]], f"OGB dataset {self.name}", fix)
        if self.target is not None:
            if self.target not in self.TARGETS:
                raise ConfigError(f"data.target='{self.target}' is not an RDKit descriptor graphgt computes; "
                                  f"choose one of {list(self.TARGETS)} or null (OGB's own labels)")
            require_paths([folder / "mapping" / "mol.csv.gz"], f"OGB dataset {self.name} (its SMILES, for "
                          f"data.target={self.target})", fix)
            try:
                import rdkit  # noqa: F401
            except ImportError:
                raise ConfigError(f"data.target={self.target} computes an RDKit descriptor: pip install rdkit "
                                  "(or data.target=null for OGB's labels)") from None
        release = folder / f"RELEASE_v{meta['version']}.txt"
        if not release.exists():
            raise ConfigError(f"OGB dataset {self.name}: '{release}' is missing (set by data.root); without it "
                              f"ogb asks on stdin whether to re-download. Restore the file (or re-download): {fix}")

    def prepare(self, cache_dir: Path) -> Prepared:
        from ogb.graphproppred import PygGraphPropPredDataset

        allow_ogb_pickles()
        folder = self.load_dir(self.rel, cache_dir)
        dataset = PygGraphPropPredDataset(self.name, root=str(folder.parent))
        kind = self.KINDS[dataset.task_type]
        num_tasks = int(dataset.num_tasks)
        if kind == "binary" and num_tasks > 1:
            kind = "multilabel"
        graphs = [g for g in dataset]
        for g in graphs:
            g.y = g.y.view(1, -1).float()
        metric, name = f"ogb:{self.name}", self.name
        if self.target is not None:
            values = descriptor_targets(folder / "mapping" / "mol.csv.gz", self.target, len(graphs))
            for g, v in zip(graphs, values):
                g.y = torch.tensor([[v]], dtype=torch.float32)
            kind, num_tasks, metric, name = "regression", 1, "rmse", f"{self.name}-{self.target}"
        atoms, bonds = molecule_features()
        spec = DataSpec(task=Task(kind, num_tasks, "graph", metric), node_features=atoms,
                        edge_features=bonds, name=name)
        return Prepared(graphs, spec, split_source=dataset, labels=None)


def descriptor_targets(mol_csv: Path, target: str, num_graphs: int) -> List[float]:
    """One RDKit descriptor per row of OGB's ``mapping/mol.csv.gz`` (column ``smiles``; row ``i`` is
    graph ``i``): ``logp`` / ``mr`` (Crippen), ``tpsa``, ``heavy_atoms``.  ``ConfigError`` when the
    file has another number of rows than the dataset has graphs, or a SMILES does not parse."""
    import pandas as pd
    from rdkit import Chem, RDLogger
    from rdkit.Chem import Crippen, rdMolDescriptors

    fns = {"logp": Crippen.MolLogP, "mr": Crippen.MolMR, "tpsa": rdMolDescriptors.CalcTPSA,
           "heavy_atoms": lambda m: float(m.GetNumHeavyAtoms())}
    smiles = pd.read_csv(mol_csv)["smiles"].tolist()
    if len(smiles) != num_graphs:
        raise ConfigError(f"'{mol_csv}' has {len(smiles)} SMILES for {num_graphs} graphs: the mapping file does "
                          "not belong to this dataset (restore it from the OGB download)")
    RDLogger.DisableLog("rdApp.*")
    out = []
    for i, smi in enumerate(smiles):
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            raise ConfigError(f"'{mol_csv}' row {i}: RDKit cannot parse SMILES '{smi}'")
        out.append(float(fns[target](mol)))
    return out
