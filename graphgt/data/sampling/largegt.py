"""LargeGT-style token sampling (Dwivedi et al., "Graph Transformers for Large Graphs", 2023).

LargeGT's local module reads, for each seed node ``s``, a short sequence of ``K`` tokens: ``s``
itself and ``K - 1`` nodes drawn from its 1-hop and 2-hop neighbourhood.  Each token carries its
own features and its 1- and 2-hop propagated features (``Â x``, ``Â² x``, kept as precomputed
arrays), so attention over tokens that lie up to 2 hops away, each summarising a further 2
hops, sees a 4-hop receptive field while only ever doing 2-hop work.

How LargeGT (snap-research/LargeGT, ``data_utils.py``) draws the tokens, and what this module keeps:

* Candidates.  LargeGT concatenates row ``s`` of ``A`` and row ``s`` of ``A²`` (its non-zero
  columns) and samples ``K - 1`` entries uniformly without replacement from that list; the
  sequence is ``[s] + sample``.  The list mixes hops in proportion to their sizes: there is no
  quota of 1-hop vs 2-hop tokens.  Because ``A²`` contains ``s`` itself and every 1-hop
  neighbour that closes a triangle, LargeGT's list has repeated nodes; here the candidates are
  the *distinct* nodes at shortest-path distance 1 or 2 (``N1 = N(s) \\ {s}``,
  ``N2 = N(N1) \\ (N1 ∪ {s})``), each equally likely, so the expected share of 1-hop tokens is
  ``|N1| / (|N1| + |N2|)`` and each token's ``hop`` label is its true distance.
* Too few candidates (``c < K - 1``).  LargeGT repeats the candidate list cyclically (and
  fills the sequence of an isolated node with random nodes of the whole graph).  Here the
  default pads the sequence and marks padding in ``mask`` (no fake neighbours); ``repeat=True``
  cycles the drawn candidates as LargeGT does (isolated seeds are padded in both modes).
* When.  LargeGT samples the sequences once, before training.  Here they are re-drawn for every
  batch from the batch's seed, which is the same distribution and no ``O(N K)`` table.
* Hubs.  Enumerating ``N2`` costs ``Σ_{u ∈ N1} deg(u)``; ``hop2_fanout`` (default: all) caps
  the number of 1-hop nodes expanded for ``N2`` (a uniform subset), bounding the cost on
  power-law graphs at the price of a smaller 2-hop pool.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import numpy as np

from graphgt.data.sampling import kernels
from graphgt.data.sampling.neighbor import check_csr, check_seeds, portable_state, restore_arrays


@dataclass
class TokenBatch:
    """Token sequences of a batch of seeds.

    Attributes:
        seeds: int64 ``[B]`` the seed node ids (given order).
        tokens: int64 ``[B, K]`` global node ids; ``tokens[:, 0]`` is the seed when the sampler
            includes it; padding slots hold the seed's id (a valid row to gather) and ``mask=False``.
        hop: int8 ``[B, K]`` shortest-path distance of each token from its seed (0 = the seed,
            1, 2), ``-1`` for padding.
        mask: bool ``[B, K]`` True for real tokens.
        num_candidates: int64 ``[B]`` distinct 1- and 2-hop nodes each seed could draw from.
    """

    seeds: np.ndarray
    tokens: np.ndarray
    hop: np.ndarray
    mask: np.ndarray
    num_candidates: np.ndarray

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[1])


class TokenSampler:
    """Draws ``num_tokens`` tokens per seed from its 1- and 2-hop neighbourhood (module docstring).

    Args:
        indptr: int64 ``[N + 1]`` CSR row pointers (e.g. ``store.indptr``); checked once, with
            ``indices``, by :func:`graphgt.data.sampling.neighbor.check_csr` (a corrupt CSR is a
            ``ValueError`` here, not a crash of the compiled kernel).
        indices: int32/int64 ``[E]`` CSR columns (e.g. ``store.indices``).
        num_tokens: sequence length ``K`` per seed, the seed included when ``include_seed``
            (LargeGT's ``sample_node_len``, 50 or 100 in the paper).
        include_seed: put the seed itself at position 0 (as LargeGT does).
        repeat: fill the slots of seeds with fewer than ``K - 1`` candidates by cycling the drawn
            candidates (LargeGT's behaviour) instead of masking them as padding.
        hop2_fanout: expand at most this many (uniformly chosen) 1-hop nodes when collecting the
            2-hop candidates; ``-1`` = all (exact).
    """

    def __init__(self, indptr: Any, indices: Any, num_tokens: int, include_seed: bool = True,
                 repeat: bool = False, hop2_fanout: int = -1):
        self.indptr, self.indices = check_csr(indptr, indices)
        self._sources = {"indptr": indptr, "indices": indices}
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, (int, np.integer)) \
                or num_tokens < 1 + int(bool(include_seed)):
            raise ValueError(f"num_tokens={num_tokens!r}: need an int >= {1 + int(bool(include_seed))} "
                             "(the sequence length per seed, seed included when include_seed=True); "
                             "LargeGT uses 50 or 100")
        if isinstance(hop2_fanout, bool) or not isinstance(hop2_fanout, (int, np.integer)) \
                or (hop2_fanout < 1 and hop2_fanout != -1):
            raise ValueError(f"hop2_fanout={hop2_fanout!r}: use a positive number of 1-hop nodes to expand, "
                             "or -1 to expand all of them")
        self.num_tokens = int(num_tokens)
        self.include_seed = bool(include_seed)
        self.repeat = bool(repeat)
        self.hop2_fanout = int(hop2_fanout)

    @property
    def num_nodes(self) -> int:
        return int(self.indptr.shape[0] - 1)

    def sample(self, seeds: Any, seed: int) -> TokenBatch:
        """Token sequences of ``seeds`` (int ``[B]``), drawn from the batch's random ``seed``."""
        s = check_seeds(seeds, self.num_nodes)
        tokens, hop, mask, num_cand = kernels.sample_tokens(
            self.indptr, self.indices, s, np.int64(self.num_tokens), self.include_seed,
            np.int64(self.hop2_fanout), self.repeat, np.int64(int(seed) & 0x7FFFFFFFFFFFFFFF))
        return TokenBatch(np.array(s), tokens, hop, mask, num_cand)

    def __getstate__(self) -> Dict[str, Any]:
        state = {k: v for k, v in vars(self).items() if k not in ("indptr", "indices", "_sources")}
        state["arrays"] = portable_state({"indptr": self.indptr, "indices": self.indices}, self._sources)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        state = dict(state)
        arrays, sources = restore_arrays(state.pop("arrays"))
        self.__dict__.update(state)
        self.indptr, self.indices, self._sources = arrays["indptr"], arrays["indices"], sources

    def __repr__(self) -> str:
        return (f"TokenSampler(num_nodes={self.num_nodes}, num_tokens={self.num_tokens}, "
                f"include_seed={self.include_seed}, repeat={self.repeat}, hop2_fanout={self.hop2_fanout})")


__all__ = ["TokenBatch", "TokenSampler"]
