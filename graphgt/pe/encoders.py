"""Learned encoders that turn stored positional encodings into node features at train time.

Every encoder is built as ``Cls(pe, out_dim, **options)``: the model passes the
:class:`~graphgt.pe.base.PositionalEncoding` (which names the ``Data`` keys and their width) and
the feature width, a config supplies only the options (``_partial_: true``).  ``forward(data)``
reads ``pe.keys`` from a PyG ``Data``/``Batch`` (and ``data.batch`` when present; without it the
input is one graph) and returns ``Tensor[N, out_dim]``.

LapPE encoders receive ``lap_vec[N, k]`` and ``lap_val[N, k]``, NaN where a graph has fewer than
``k`` eigenpairs; NaN entries are masked (they contribute exactly 0).  Eigenvectors are only
defined up to sign, so the encoders that are not sign invariant flip the sign of every eigenvector
of every graph at random during training (``sign_flip=True``): one ``±1`` per (graph, eigenvector),
broadcast to the graph's nodes by ``data.batch``.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from graphgt.pe.base import PositionalEncoding


def _check_out_dim(out_dim: int) -> None:
    if not isinstance(out_dim, int) or out_dim < 1:
        raise ValueError(f"out_dim must be a positive int, got {out_dim!r}")


def _check_layers(layers: int) -> None:
    if not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers must be an int >= 1, got {layers!r}")


def _graph_index(data, num_nodes: int, device) -> Tuple[Tensor, int]:
    """``(batch[N], num_graphs)``; a ``data`` without ``batch`` is one graph."""
    batch = getattr(data, "batch", None)
    if batch is None:
        return torch.zeros(num_nodes, dtype=torch.long, device=device), 1
    num_graphs = getattr(data, "num_graphs", None)
    if not isinstance(num_graphs, int):
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    return batch, num_graphs


def random_sign_flip(vec: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """``vec[i, j] * s[batch[i], j]`` with independent uniform ``s ∈ {-1, +1}^{num_graphs × k}``.

    Shapes: ``vec: [N, k]``, ``batch: [N]`` -> ``[N, k]``.
    """
    signs = torch.randint(0, 2, (max(num_graphs, 1), vec.size(1)), device=vec.device).to(vec.dtype) * 2 - 1
    return vec * signs[batch]


def _lap_keys(pe: PositionalEncoding, cls: str) -> Tuple[str, str]:
    keys = tuple(pe.keys)
    if len(keys) != 2:
        raise ValueError(f"{cls} needs a PE with two keys (eigenvectors, eigenvalues) such as "
                         f"LaplacianPE, got {pe!r} with keys {keys}; use LinearPEEncoder for single-key PEs")
    return keys[0], keys[1]


def _mlp(in_dim: int, hidden: int, layers: int) -> nn.Sequential:
    """``layers`` x (Linear -> ReLU), ``in_dim -> hidden -> ... -> hidden``."""
    mods = []
    for i in range(layers):
        mods += [nn.Linear(in_dim if i == 0 else hidden, hidden), nn.ReLU()]
    return nn.Sequential(*mods)


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()


class _LapBase(nn.Module):
    """Shared input handling of the LapPE encoders: ``[N, k, 2]`` pairs ``(v_j(i), λ_j)`` and a NaN mask."""

    def __init__(self, pe: PositionalEncoding, out_dim: int, sign_flip: bool):
        super().__init__()
        _check_out_dim(out_dim)
        self.vec_key, self.val_key = _lap_keys(pe, type(self).__name__)
        self.k, self.out_dim, self.sign_flip = int(pe.in_dim), out_dim, bool(sign_flip)

    def _pairs(self, data) -> Tuple[Tensor, Tensor]:
        """``(x[N, k, 2], mask[N, k])``: pairs with NaN replaced by 0, and where they were NaN."""
        vec, val = data[self.vec_key].float(), data[self.val_key].float()
        if vec.dim() != 2 or vec.shape != val.shape or vec.size(1) != self.k:
            raise ValueError(f"{type(self).__name__}: expected {self.vec_key} and {self.val_key} of shape "
                             f"[N, {self.k}], got {tuple(vec.shape)} and {tuple(val.shape)}")
        mask = torch.isnan(vec) | torch.isnan(val)
        if self.sign_flip and self.training:
            batch, num_graphs = _graph_index(data, vec.size(0), vec.device)
            vec = random_sign_flip(vec, batch, num_graphs)
        x = torch.stack([vec, val], dim=-1).masked_fill(mask.unsqueeze(-1), 0.0)
        return x, mask


class LapLinearEncoder(_LapBase):
    """GraphGPS's "linear" LapPE encoder (Rampášek et al., NeurIPS 2022; Kreuzer et al., SAN 2021).

    .. math::
        h_i = \\sum_{j \\le k,\\ \\text{not NaN}} W [v_j(i), \\lambda_j]^T + b

    Args:
        pe: the :class:`~graphgt.pe.laplacian.LaplacianPE` whose keys are read.
        out_dim: output width.
        sign_flip: flip eigenvector signs at random per graph in training mode.

    Shapes:
        - ``data[lap_vec], data[lap_val]: [N, k]`` (NaN padded) -> ``[N, out_dim]``
    """

    def __init__(self, pe: PositionalEncoding, out_dim: int, sign_flip: bool = True):
        super().__init__(pe, out_dim, sign_flip)
        self.lin = nn.Linear(2, out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()

    def forward(self, data) -> Tensor:
        x, mask = self._pairs(data)                                  # [N, k, 2], [N, k]
        h = self.lin(x).masked_fill(mask.unsqueeze(-1), 0.0)         # [N, k, out_dim]
        return h.sum(dim=1)                                          # [N, out_dim]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, out_dim={self.out_dim}, sign_flip={self.sign_flip})"


class LapDeepSetEncoder(_LapBase):
    """GraphGPS's DeepSet LapPE encoder (Zaheer et al., "Deep Sets", NeurIPS 2017).

    .. math::
        h_i = \\rho\\Big(\\operatorname{reduce}_{j \\le k,\\ \\text{not NaN}}
              \\phi\\big([v_j(i), \\lambda_j]\\big)\\Big)

    with ``phi = layers x (Linear -> ReLU)`` of width ``hidden``, ``reduce`` the sum (or mean) over the
    non-padded eigenpairs and ``rho`` a Linear ``hidden -> out_dim``.

    Args:
        pe: the :class:`~graphgt.pe.laplacian.LaplacianPE` whose keys are read.
        out_dim: output width.
        layers: number of Linear+ReLU layers of ``phi``.
        sign_flip: flip eigenvector signs at random per graph in training mode.
        hidden: width of ``phi`` (default ``out_dim``).
        reduce: ``"sum"`` or ``"mean"`` over eigenpairs.

    Shapes:
        - ``data[lap_vec], data[lap_val]: [N, k]`` (NaN padded) -> ``[N, out_dim]``
    """

    def __init__(self, pe: PositionalEncoding, out_dim: int, layers: int = 2, sign_flip: bool = True,
                 hidden: int | None = None, reduce: str = "sum"):
        super().__init__(pe, out_dim, sign_flip)
        _check_layers(layers)
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        self.hidden = hidden or out_dim
        _check_out_dim(self.hidden)
        self.layers, self.reduce = layers, reduce
        self.phi = _mlp(2, self.hidden, layers)
        self.rho = nn.Linear(self.hidden, out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self.phi)
        self.rho.reset_parameters()

    def forward(self, data) -> Tensor:
        x, mask = self._pairs(data)                                   # [N, k, 2], [N, k]
        h = self.phi(x).masked_fill(mask.unsqueeze(-1), 0.0)          # [N, k, hidden]
        h = h.sum(dim=1)                                              # [N, hidden]
        if self.reduce == "mean":
            h = h / (~mask).sum(dim=1, keepdim=True).clamp(min=1)
        return self.rho(h)                                            # [N, out_dim]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(k={self.k}, out_dim={self.out_dim}, hidden={self.hidden}, "
                f"layers={self.layers}, reduce={self.reduce!r}, sign_flip={self.sign_flip})")


class LapSignNetEncoder(_LapBase):
    """SignNet LapPE encoder (Lim et al., "Sign and Basis Invariant Networks for Spectral Graph
    Representation Learning", ICLR 2023), with a per-node MLP ``phi``.

    .. math::
        z_{ij} = \\phi([v_j(i), \\lambda_j]) + \\phi([-v_j(i), \\lambda_j]), \\qquad
        h_i = \\rho\\big([z_{i1} \\Vert \\dots \\Vert z_{ik}]\\big)

    ``z`` is exactly invariant to the sign of each eigenvector (the two terms swap; floating-point
    addition commutes), so no random sign flips are needed.  Padded (NaN) eigenpairs give
    ``z_{ij} = 0``.  ``phi = layers x (Linear -> ReLU)`` of width ``hidden``; ``rho = Linear(k * hidden,
    hidden) -> ReLU -> Linear(hidden, out_dim)``.

    Args:
        pe: the :class:`~graphgt.pe.laplacian.LaplacianPE` whose keys are read.
        out_dim: output width.
        layers: number of Linear+ReLU layers of ``phi``.
        hidden: width of ``phi`` and ``rho`` (default ``out_dim``).

    Shapes:
        - ``data[lap_vec], data[lap_val]: [N, k]`` (NaN padded) -> ``[N, out_dim]``
    """

    def __init__(self, pe: PositionalEncoding, out_dim: int, layers: int = 2, hidden: int | None = None):
        super().__init__(pe, out_dim, sign_flip=False)
        _check_layers(layers)
        self.hidden = hidden or out_dim
        _check_out_dim(self.hidden)
        self.layers = layers
        self.phi = _mlp(2, self.hidden, layers)
        self.rho = nn.Sequential(nn.Linear(self.k * self.hidden, self.hidden), nn.ReLU(),
                                 nn.Linear(self.hidden, out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset(self.phi)
        _reset(self.rho)

    def forward(self, data) -> Tensor:
        x, mask = self._pairs(data)                                   # [N, k, 2], [N, k]
        x_neg = torch.stack([-x[..., 0], x[..., 1]], dim=-1)          # (-v, λ)
        z = self.phi(x) + self.phi(x_neg)                             # [N, k, hidden], sign invariant
        z = z.masked_fill(mask.unsqueeze(-1), 0.0)
        return self.rho(z.flatten(1))                                 # [N, out_dim]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(k={self.k}, out_dim={self.out_dim}, hidden={self.hidden}, "
                f"layers={self.layers})")


class TrainingRange(nn.Module):
    r"""Clamps each column to the range it took in training: ``x_ij -> min(max(x_ij, lo_j), hi_j)``
    with ``lo_j``/``hi_j`` the smallest/largest value of column ``j`` over every batch seen in
    training mode (buffers, saved with the model; a column never seen passes unchanged).

    In training mode it only updates the range (the batch is inside it by construction, so the
    output is the input); in eval mode it clamps.  Why: a BatchNorm on raw structural encodings
    divides each column by its training standard deviation, and a column that (almost) never varies
    in training (e.g. RWSE's 3-step return probability when no training molecule has a 3-ring, an
    odd step when every training ring is even) has a running std near ``sqrt(eps)`` = 0.003: one test
    molecule with that structure gets a z-score in the tens, on weights that never received a
    gradient, and its prediction explodes (GPS test RMSE far above validation RMSE on a scaffold
    split; docs/reproducing.md).  Clamped, such a node reads as the nearest value seen in training.

    Under DDP the buffers are rank 0's (``broadcast_buffers``): the range of its share of the data.

    Shapes: ``[N, dim] -> [N, dim]``.
    """

    low: Tensor
    high: Tensor

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)
        self.register_buffer("low", torch.full((self.dim,), float("inf")))
        self.register_buffer("high", torch.full((self.dim,), float("-inf")))

    def reset_parameters(self) -> None:
        self.low.fill_(float("inf"))
        self.high.fill_(float("-inf"))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            if x.size(0) > 0:
                with torch.no_grad():
                    torch.minimum(self.low, x.detach().amin(0).to(self.low.dtype), out=self.low)
                    torch.maximum(self.high, x.detach().amax(0).to(self.high.dtype), out=self.high)
            return x
        seen = self.low <= self.high
        low = torch.where(seen, self.low, torch.full_like(self.low, float("-inf"))).to(x.dtype)
        high = torch.where(seen, self.high, torch.full_like(self.high, float("inf"))).to(x.dtype)
        return torch.maximum(torch.minimum(x, high), low)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # checkpoints written before the range existed load as "nothing seen" (no clamping)
        for name, fill in (("low", float("inf")), ("high", float("-inf"))):
            state_dict.setdefault(prefix + name, torch.full((self.dim,), fill))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dim})"


class LinearPEEncoder(nn.Module):
    """GraphGPS's RWSE encoder: optional BatchNorm of the raw features, then a Linear.

    .. math::
        h_i = W\\, \\mathrm{BN}(\\operatorname{clamp}(p_i)) + b, \\qquad p_i \\in \\mathbb{R}^{\\text{in\\_dim}}

    where ``clamp`` (:class:`TrainingRange`, ``clamp=True``) keeps each column inside the range it
    took in training, so that a structure never seen in training (a BatchNorm column of near-zero
    training variance) cannot turn into an exploding z-score at test time.

    For PEs with a single key (e.g. :class:`~graphgt.pe.random_walk.RandomWalkSE`, ``p_i`` = the
    return probabilities); NaN entries are read as 0.

    Args:
        pe: the single-key PE whose tensor is read.
        out_dim: output width.
        norm: apply ``BatchNorm1d(in_dim)`` first (GraphGPS's ``raw_norm_type: BatchNorm``).
        clamp: clamp each raw column to its training range before the norm (:class:`TrainingRange`;
            ``false``: GraphGPS's encoder as published).

    Shapes:
        - ``data[key]: [N, in_dim]`` -> ``[N, out_dim]``
    """

    def __init__(self, pe: PositionalEncoding, out_dim: int, norm: bool = True, clamp: bool = True):
        super().__init__()
        _check_out_dim(out_dim)
        keys = tuple(pe.keys)
        if len(keys) != 1:
            raise ValueError(f"LinearPEEncoder reads one key, but {pe!r} writes {keys}; for LaplacianPE "
                             "use LapLinearEncoder, LapDeepSetEncoder or LapSignNetEncoder")
        self.key, self.in_dim, self.out_dim = keys[0], int(pe.in_dim), out_dim
        self.clamp = TrainingRange(self.in_dim) if clamp else None
        self.norm = nn.BatchNorm1d(self.in_dim) if norm else None
        self.lin = nn.Linear(self.in_dim, out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.clamp is not None:
            self.clamp.reset_parameters()
        if self.norm is not None:
            self.norm.reset_parameters()
        self.lin.reset_parameters()

    def forward(self, data) -> Tensor:
        x = data[self.key].float()
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        if x.size(-1) != self.in_dim:
            raise ValueError(f"LinearPEEncoder: expected {self.key} of shape [N, {self.in_dim}], got {tuple(x.shape)}")
        x = torch.nan_to_num(x, nan=0.0)
        if self.clamp is not None:
            x = self.clamp(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.lin(x)                                            # [N, out_dim]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(key={self.key!r}, in_dim={self.in_dim}, out_dim={self.out_dim}, "
                f"norm={self.norm is not None}, clamp={self.clamp is not None})")
