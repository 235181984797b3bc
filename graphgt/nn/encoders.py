"""Input encoders for raw node and edge features.

The data module describes its raw features (:class:`~graphgt.spec.FloatFeatures` or
:class:`~graphgt.spec.CategoricalFeatures` in its :class:`~graphgt.spec.DataSpec`) and the model
says how wide their embedding is: :func:`feature_encoder` builds the encoder from both.
"""
from __future__ import annotations

from torch import Tensor, nn

from graphgt.spec import CategoricalFeatures, FloatFeatures, Features


class LinearEncoder(nn.Module):
    """``x[N, in_dim] -> x W + b  [N, out_dim]`` for float features (integer input is cast)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.lin = nn.Linear(in_dim, out_dim)

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        return self.lin(x.float())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_dim}, {self.out_dim})"


class CategoricalEncoder(nn.Module):
    """Sum of one embedding table per integer column: ``x[N, F] (long) -> sum_f E_f[x[:, f]]  [N, out_dim]``.

    With ``cardinalities`` from OGB's ``get_atom_feature_dims()`` / ``get_bond_feature_dims()`` this
    is OGB's AtomEncoder/BondEncoder (Hu et al., 2020), usable for any categorical features.
    """

    def __init__(self, cardinalities: list[int], out_dim: int):
        super().__init__()
        self.cardinalities, self.out_dim = list(cardinalities), out_dim
        self.tables = nn.ModuleList(nn.Embedding(c, out_dim) for c in self.cardinalities)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for t in self.tables:
            nn.init.xavier_uniform_(t.weight.data)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        out = 0
        for f, table in enumerate(self.tables):
            out = out + table(x[:, f].long())
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(columns={len(self.tables)}, {self.out_dim})"


def feature_encoder(features: Features, out_dim: int) -> nn.Module:
    """The encoder of raw features described by ``features`` (:mod:`graphgt.spec`): a
    :class:`LinearEncoder` for :class:`~graphgt.spec.FloatFeatures`, a :class:`CategoricalEncoder`
    for :class:`~graphgt.spec.CategoricalFeatures`.  ``[N, F] -> [N, out_dim]``."""
    if isinstance(features, FloatFeatures):
        return LinearEncoder(features.dim, out_dim)
    if isinstance(features, CategoricalFeatures):
        return CategoricalEncoder(list(features.cardinalities), out_dim)
    raise TypeError(f"features must be FloatFeatures or CategoricalFeatures, got {type(features).__name__}")
