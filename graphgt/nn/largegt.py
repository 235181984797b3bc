"""LargeGT (Dwivedi, Liu, Kanatsoulis, Sarkar, Karypis, Chawla, "Graph Transformers for Large
Graphs", arXiv:2312.11109, 2023): a local token transformer plus a global codebook module.

For each seed node ``s`` of a mini-batch the :class:`~graphgt.data.sampling.TokenSampler` draws
``K`` tokens (``s`` and nodes of its 1- and 2-hop neighbourhood); each token ``t`` carries its
features ``x_t`` and its propagated features ``(Â x)_t, .., (Â^P x)_t``
(:mod:`graphgt.data.store.hop_features`, ``P = 2`` in LargeGT), so attention over tokens up to 2 hops
away, each summarising ``P`` more hops, sees a 4-hop field while only doing 2-hop work.

.. math::
    \\mathbf{z}_{t,p} = \\mathbf{W}_{in} (\\hat A^p \\mathbf{x})_t + \\mathbf{e}^{hop}_{h(t)}
        + \\mathbf{e}^{prop}_{p}, \\qquad t = 1..K,\\ p = 0..P

    \\mathbf{Z}' = \\mathrm{TransformerEncoder}^{L}(\\mathbf{Z}) \\quad (\\text{sequence of } K(P+1)
        \\text{ tokens, padding masked})

    \\mathbf{h}^{loc}_s = \\mathbf{z}'_{s,0} + \\sum_{j \\neq (s,0)} \\alpha_j \\mathbf{z}'_j, \\quad
        \\alpha = \\operatorname{softmax}_j\\big(\\mathbf{w}^\\top[\\mathbf{z}'_{s,0} \\| \\mathbf{z}'_j]\\big)

    \\mathbf{h}^{glob}_s = \\mathrm{GlobalAttn}\\big(\\mathbf{W}_g\\,\\mathrm{Enc}(\\mathbf{x}_s, \\mathrm{PE}_s)\\big)

    \\hat{\\mathbf{y}}_s = \\mathrm{Head}\\big(\\mathrm{FFN}([\\mathbf{h}^{loc}_s \\| \\mathbf{h}^{glob}_s])\\big)

``h(t)`` is the token's hop distance from the seed (0, 1, 2) and ``e^{prop}_p`` marks which
propagated copy a sequence element is. The global module is injected (``configs/attention``);
LargeGT's is :class:`~graphgt.nn.attention.codebook.CodebookAttention` (codebook 4096, EMA
k-means), whose queries are the seeds of the batch. With ``attention=None`` the model is LargeGT's
``conv_type=local`` ablation. The readout (seed token plus attention-pooled neighbours) and the
two-layer FFN with batch normalisation follow LargeGT's reference code; the token encoder here is
a standard pre-LN transformer encoder.

Shapes (a token batch of ``B`` seeds, ``K`` tokens, ``F`` features, ``P`` hops):
``x [B, F]``, ``token_x [B, K, F]``, ``token_xhop [B, K, P, F]`` (optional), ``token_hop`` and
``token_mask [B, K]`` -> ``[B, num_outputs]``.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from graphgt.nn.attention.base import AttentionContext, GlobalAttention
from graphgt.nn.model import InputEncoder, PEBranch, reset_submodules
from graphgt.spec import DataSpec

AttentionFactory = Callable[[int], GlobalAttention]


class TokenReadout(nn.Module):
    """LargeGT's readout: the seed token plus an attention-weighted sum of the other tokens.

    ``z [B, L, d]`` (element 0 = the seed's own features), ``mask [B, L]`` -> ``[B, d]``.

    The softmax over tokens is normalised in float32 whatever the input dtype; the weighted sum
    is one batched matmul (bf16 under autocast, accumulated in float32 by the kernel).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(2 * dim, 1)

    def reset_parameters(self) -> None:
        self.score.reset_parameters()

    def forward(self, z: Tensor, mask: Tensor) -> Tensor:
        seed, rest = z[:, :1], z[:, 1:]
        logits = self.score(torch.cat([seed.expand_as(rest), rest], dim=-1)).squeeze(-1)  # [B, L-1]
        logits = logits.masked_fill(~mask[:, 1:], float("-inf"))
        acc = torch.promote_types(logits.dtype, torch.float32)
        alpha = torch.nan_to_num(logits.softmax(dim=-1, dtype=acc), nan=0.0)  # no real tokens: 0
        pooled = torch.bmm(alpha.unsqueeze(1).to(rest.dtype), rest).squeeze(1)   # [B, d]
        return seed.squeeze(1) + pooled


class LargeGTModel(nn.Module):
    """LargeGT on token batches (module docstring).

    Args:
        spec: the data module's :class:`DataSpec` (node level, float features).
        hidden: width ``d`` of the token transformer (LargeGT: 256 on products, 512 on papers100M).
        layers: token-transformer layers (LargeGT: 1).
        heads: heads of the token transformer (LargeGT: 2).
        global_dim: width of the global branch (LargeGT: 64 on products, 128 on papers100M).
        hops: propagated feature copies per token expected in ``token_xhop`` (LargeGT: 2; 0 = none).
        local: must be ``None`` (the token transformer is LargeGT's local module; set ``local=none``).
        attention: factory ``dim -> GlobalAttention`` for the global branch (``None``: local only).
        pe: ``(PositionalEncoding, encoder_factory)`` pairs; encoded with the seed's features into
            the global branch's queries (LargeGT uses node2vec embeddings there).
        dropout: dropout of the FFN and the token transformer (LargeGT: 0.5 in the FFN).
        attn_dropout: dropout on the token attention weights.
        ffn_ratio: the token transformer's FFN width is ``ffn_ratio * hidden``.
        norm: ``batch`` or ``layer`` normalisation in the output FFN.
        head_layers, head_dropout: the prediction MLP.
        max_hop: largest hop label of a token (2 for the 2-hop token sampler).
    """

    def __init__(self, spec: DataSpec, hidden: int = 256, layers: int = 1, heads: int = 2, global_dim: int = 64,
                 hops: int = 2, local: Optional[Callable] = None, attention: Optional[AttentionFactory] = None,
                 pe: Sequence[PEBranch] = (), dropout: float = 0.5, attn_dropout: float = 0.0,
                 ffn_ratio: float = 2.0, norm: str = "batch", head_layers: int = 1, head_dropout: float = 0.0,
                 max_hop: int = 2):
        super().__init__()
        if local is not None:
            raise ValueError("LargeGTModel's local module is its token transformer; set local=none "
                             "(model=largegt does)")
        if spec.task.level != "node" or spec.node_feature_dim is None:
            raise ValueError(f"LargeGTModel needs node-level data with float features; '{spec.name}' is not "
                             "(use a graph store with a TokenSampler, e.g. experiment=cora-largegt)")
        if hidden % heads:
            raise ValueError(f"model.hidden={hidden} is not divisible by model.heads={heads}")
        if norm not in ("batch", "layer"):
            raise ValueError(f"model.norm='{norm}' must be 'batch' or 'layer'")
        if hops < 0 or layers < 1:
            raise ValueError(f"model.hops={hops} must be >= 0 and model.layers={layers} >= 1")
        self.hidden, self.global_dim, self.hops, self.num_layers = hidden, global_dim, hops, layers
        self.level = "node"
        features = spec.node_feature_dim
        self.token_in = nn.Linear(features, hidden)
        self.hop_emb = nn.Embedding(max_hop + 2, hidden)    # 0..max_hop, and the padding slot
        self.prop_emb = nn.Embedding(hops + 1, hidden)      # which propagated copy (0 = x itself)
        layer = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=int(round(ffn_ratio * hidden)),
                                           dropout=attn_dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.tokens = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.token_norm = nn.LayerNorm(hidden)
        self.readout = TokenReadout(hidden)
        self.attention: Optional[GlobalAttention] = None
        if attention is not None:
            self.seed_encoder = InputEncoder(spec, hidden, pe, edges=False)  # seeds only: no edge features
            self.global_in = nn.Linear(hidden, global_dim)
            self.attention = attention(global_dim)
        elif len(pe):
            raise ValueError("LargeGTModel uses positional encodings only in its global branch; with "
                             "attention=none set pe=none")
        width = hidden + (global_dim if self.attention is not None else 0)
        norm_layer = nn.BatchNorm1d if norm == "batch" else nn.LayerNorm
        self.ffn = nn.Sequential(nn.Linear(width, hidden), norm_layer(hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), norm_layer(hidden), nn.ReLU(), nn.Dropout(dropout))
        from graphgt.nn.heads import NodeHead

        self.head = NodeHead(hidden, spec.task.num_outputs, head_layers, head_dropout)
        self.max_hop = max_hop
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_submodules(self)
        for m in self.tokens.modules():
            if isinstance(m, nn.MultiheadAttention):
                m._reset_parameters()
        # small position-type embeddings (as LargeGT's init): N(0, 1) ones would drown the features
        nn.init.normal_(self.hop_emb.weight, std=0.02)
        nn.init.normal_(self.prop_emb.weight, std=0.02)

    def _sequence(self, data) -> tuple[Tensor, Tensor]:
        """Token embeddings ``[B, K(P+1), d]`` (seed's own features first) and their mask."""
        tx, hop, mask = data.token_x, data.token_hop, data.token_mask
        B, K, _ = tx.shape
        copies = [tx]
        if self.hops:
            xh = getattr(data, "token_xhop", None)
            if xh is None or xh.size(2) < self.hops:
                have = 0 if xh is None else xh.size(2)
                raise ValueError(f"LargeGTModel(hops={self.hops}) needs token_xhop with {self.hops} propagated copies "
                                 f"per token, the batch has {have}: set data.hop_features={self.hops}")
            copies += [xh[:, :, p] for p in range(self.hops)]
        feats = torch.stack(copies, dim=2)                                   # [B, K, P+1, F]
        hop_idx = torch.where(mask, hop.clamp(0, self.max_hop), self.max_hop + 1)
        z = self.token_in(feats) + self.hop_emb(hop_idx).unsqueeze(2) + self.prop_emb.weight  # [B, K, P+1, d]
        z = z.reshape(B, K * (self.hops + 1), self.hidden)
        seq_mask = mask.unsqueeze(2).expand(B, K, self.hops + 1).reshape(B, -1)
        return z, seq_mask

    def forward(self, data) -> Tensor:
        if getattr(data, "token_x", None) is None:
            raise ValueError("LargeGTModel reads token batches (token_x, token_hop, token_mask): use a "
                             "TokenSampler as data.sampler (experiment=*-largegt)")
        z, mask = self._sequence(data)
        if not bool(mask[:, 0].all()):
            raise ValueError("LargeGTModel: the first token of every sequence must be the seed "
                             "(TokenSampler(include_seed=True))")
        z = self.token_norm(self.tokens(z, src_key_padding_mask=~mask))
        h = self.readout(z, mask)                                             # [B, d]
        if self.attention is not None:
            seeds, _ = self.seed_encoder(data)                                # [B, d]
            g = self.global_in(seeds)
            ctx = AttentionContext.single_graph(g.size(0), g.device)
            h = torch.cat([h, self.attention(g, ctx)], dim=-1)
        h = self.ffn(h)
        return self.head(h, None, 1)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(hidden={self.hidden}, layers={self.num_layers}, hops={self.hops}, "
                f"global_dim={self.global_dim}, attention={self.attention!r}, head={self.head!r})")


__all__ = ["LargeGTModel", "TokenReadout"]
