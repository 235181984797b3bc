"""A molecular regression task under a scaffold shift, generated from a seed (no files).

Molecule-like graphs (atoms of degree <= 3, chains and rings, 4 atom types, 2 bond types) whose
target is an intensive property of the atoms: the mean over atoms of a per-type contribution plus
a degree term, plus a little noise,

.. math::
    y = \\frac{1}{n} \\sum_i \\big(c_{t_i} + 0.25\\, \\deg(i)\\big) + \\varepsilon, \\qquad
    c = (1.0, -0.5, 2.0, 0.3), \\ \\varepsilon \\sim \\mathcal{N}(0, 0.05^2).

The split is a *scaffold* shift: training and validation molecules carry only 6-membered rings
(benzene-like scaffolds), while the test molecules also carry 3- and 5-membered rings
(``test_odd_rings`` of them), scaffolds never seen in training.  The target does not depend on the
rings, so a model that generalises predicts the test molecules as well as the validation ones:
test RMSE close to validation RMSE.  Random-walk structural encodings see the shift, though: the
return probabilities after an odd number of steps are exactly 0 on every training molecule (an
even ring and a tree are bipartite) and positive on a test molecule with an odd ring.  A model that
standardises them with BatchNorm statistics from training (GraphGPS's RWSE encoder) turns those
test values into z-scores in the tens, on weights that never got a gradient, and its test error
explodes (docs/reproducing.md; :class:`graphgt.pe.encoders.TrainingRange` is the fix).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch_geometric.data import Data

from graphgt.data.common import GraphDataModule, Prepared
from graphgt.data.splits import OfficialSplit
from graphgt.errors import ConfigError
from graphgt.spec import CategoricalFeatures, DataSpec, Task

#: per-atom-type contribution c_t to the target
CONTRIBUTIONS = (1.0, -0.5, 2.0, 0.3)
#: bond types: 0 = chain bond, 1 = ring bond
NUM_BOND_TYPES = 2


def _molecule(rng: np.random.Generator, num_atoms: int, ring_sizes: Sequence[int], max_rings: int) -> Data:
    """One molecule-like graph: ``1..max_rings`` rings of the given sizes joined by chains, then
    atoms attached to random atoms of degree < 3 until ``num_atoms``."""
    edges: List[tuple] = []
    ring_bond: List[int] = []
    degree: List[int] = []

    def add_atom() -> int:
        degree.append(0)
        return len(degree) - 1

    def bond(a: int, b: int, ring: int) -> None:
        edges.append((a, b))
        ring_bond.append(ring)
        degree[a] += 1
        degree[b] += 1

    for r in range(int(rng.integers(1, max_rings + 1))):
        size = int(rng.choice(ring_sizes))
        ring = [add_atom() for _ in range(size)]
        for a, b in zip(ring, ring[1:] + ring[:1]):
            bond(a, b, 1)
        if r > 0:  # join to the molecule built so far (a single chain bond)
            bond(free_atom_excluding(degree, ring, rng), ring[0], 0)
    while len(degree) < num_atoms:
        bond(free_atom_excluding(degree, (), rng), add_atom(), 0)
    n = len(degree)
    src = torch.tensor([a for a, b in edges] + [b for a, b in edges], dtype=torch.long)
    dst = torch.tensor([b for a, b in edges] + [a for a, b in edges], dtype=torch.long)
    bonds = torch.tensor(ring_bond + ring_bond, dtype=torch.long).view(-1, 1)
    types = torch.from_numpy(rng.integers(0, len(CONTRIBUTIONS), size=n)).long()
    deg = torch.tensor(degree, dtype=torch.float32)
    contrib = torch.tensor(CONTRIBUTIONS, dtype=torch.float32)[types]
    y = (contrib + 0.25 * deg).mean() + 0.05 * float(rng.standard_normal())
    return Data(x=types.view(-1, 1), edge_index=torch.stack([src, dst]), edge_attr=bonds,
                y=y.view(1, 1).float(), num_nodes=n)


def free_atom_excluding(degree: List[int], exclude: Sequence[int], rng: np.random.Generator) -> int:
    """A random atom of degree < 3 outside ``exclude`` (e.g. the ring being joined)."""
    skip = set(exclude)
    free = [i for i, d in enumerate(degree) if d < 3 and i not in skip]
    return int(rng.choice(free))


class _Split:
    """The fixed train / val / test indices (read by :class:`OfficialSplit`)."""

    def __init__(self, sizes: Sequence[int]):
        ends = np.cumsum(sizes)
        self._idx = {"train": torch.arange(0, ends[0]), "valid": torch.arange(ends[0], ends[1]),
                     "test": torch.arange(ends[1], ends[2])}

    def get_idx_split(self) -> Dict[str, torch.Tensor]:
        return dict(self._idx)


class RingShiftData(GraphDataModule):
    """Molecule-like graph regression with a scaffold shift between train/val and test (module doc).

    Args:
        num_train: training molecules (6-rings only).
        num_val: validation molecules (6-rings only, other molecules than training).
        num_test: test molecules; ``test_odd_rings`` of them carry 3- or 5-rings too.
        test_odd_rings: fraction of test molecules with an odd ring, in [0, 1].
        min_atoms: smallest molecule (atoms); ``max_atoms`` the largest.
        max_atoms: largest molecule.
        seed: the generator seed (molecules, atom types, noise).
        batch_size: molecules per batch.
        root: unused (nothing is read); kept for a uniform interface.
        num_workers: loader workers.

    Shapes: node features ``x [N, 1]`` (atom type), ``edge_attr [E, 1]`` (bond type), ``y [1, 1]``.
    """

    def __init__(self, num_train: int = 1000, num_val: int = 200, num_test: int = 200, test_odd_rings: float = 0.5,
                 min_atoms: int = 14, max_atoms: int = 30, seed: int = 0, batch_size: int = 32,
                 root: str = "data", num_workers: int = 0):
        super().__init__(root, batch_size, num_workers, split=OfficialSplit())
        self.num_train, self.num_val, self.num_test = int(num_train), int(num_val), int(num_test)
        self.test_odd_rings = float(test_odd_rings)
        self.min_atoms, self.max_atoms, self.seed = int(min_atoms), int(max_atoms), int(seed)

    def check(self) -> None:
        self._check_common()
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ConfigError(f"data.num_train / num_val / num_test must be >= 1, got "
                              f"{self.num_train} / {self.num_val} / {self.num_test}")
        if not 0.0 <= self.test_odd_rings <= 1.0:
            raise ConfigError(f"data.test_odd_rings must be in [0, 1], got {self.test_odd_rings}")
        if not 14 <= self.min_atoms <= self.max_atoms:
            raise ConfigError(f"data.min_atoms must be >= 14 (two 6-rings and a bond fit) and <= data.max_atoms, "
                              f"got min_atoms={self.min_atoms}, max_atoms={self.max_atoms}")

    def generate(self) -> List[Data]:
        """The molecules of these parameters, train then val then test (identical for the same seed)."""
        rng = np.random.default_rng(self.seed)
        out: List[Data] = []
        num_odd = int(round(self.test_odd_rings * self.num_test))
        for i in range(self.num_train + self.num_val + self.num_test):
            test_i = i - self.num_train - self.num_val
            rings = (3, 5, 6) if 0 <= test_i < num_odd else (6,)
            size = int(rng.integers(self.min_atoms, self.max_atoms + 1))
            mol = _molecule(rng, size, rings, max_rings=2)
            if rings != (6,) and not _has_odd_ring(mol):
                mol = _molecule(rng, size, (3, 5), max_rings=1)
            out.append(mol)
        return out

    def prepare(self, cache_dir: Optional[Path] = None) -> Prepared:
        graphs = self.generate()
        spec = DataSpec(task=Task("regression", 1, "graph", "rmse"),
                        node_features=CategoricalFeatures((len(CONTRIBUTIONS),)),
                        edge_features=CategoricalFeatures((NUM_BOND_TYPES,)), name="ring-shift")
        return Prepared(graphs, spec, split_source=_Split((self.num_train, self.num_val, self.num_test)))


def _has_odd_ring(mol: Data) -> bool:
    """Whether the molecule has an odd cycle (is not bipartite): 2-colouring by BFS fails."""
    n = int(mol.num_nodes)
    adj: List[List[int]] = [[] for _ in range(n)]
    for a, b in mol.edge_index.t().tolist():
        adj[a].append(b)
    colour = [-1] * n
    for s in range(n):
        if colour[s] >= 0:
            continue
        colour[s], queue = 0, [s]
        while queue:
            u = queue.pop()
            for v in adj[u]:
                if colour[v] < 0:
                    colour[v] = 1 - colour[u]
                    queue.append(v)
                elif colour[v] == colour[u]:
                    return True
    return False
