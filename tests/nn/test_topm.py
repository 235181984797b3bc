"""Tests of the top-m attention module (graphgt.nn.attention.topm)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from graphgt.nn.attention.base import AttentionContext, GlobalAttention
from graphgt.nn.attention.full import FullAttention
from graphgt.nn.attention.topm import TopMAttention, topm_windows

DIM, HEADS = 16, 2
SIZES = [5, 9, 3]
REF_SIZES = [5, 9, 3, 12]


def _batch(sizes=SIZES, seed=0, dim=DIM):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), dim, generator=g)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return x, AttentionContext(batch, len(sizes))


def _random_biases(att):
    with torch.no_grad():
        att.in_proj.bias.normal_()
        att.out_proj.bias.normal_()
    return att


def _brute_force(att: TopMAttention, x, ctx, gate: bool = False):
    """Naive per-node top-m attention with the module's parameters (loops over graphs/nodes)."""
    N, H, dh, m = x.size(0), att.heads, att.head_dim, att.m
    s = F.cosine_similarity(x, att.aux.unsqueeze(0), dim=-1)
    q, k, v = att.in_proj(x).view(N, 3, H, dh).unbind(1)
    out = [None] * N
    for g in range(ctx.num_graphs):
        nodes = torch.nonzero(ctx.batch == g).flatten()
        n = nodes.numel()
        ranked = nodes[torch.sort(s[nodes].detach(), descending=True, stable=True).indices]
        for p in range(n):  # p: position inside the graph's ranking
            if n <= m:
                sel = ranked
            else:
                w = min(max(p - m // 2, 0), n - m)
                sel = ranked[w:w + m]
            i = ranked[p]
            heads = []
            for h in range(H):
                probs = torch.softmax(k[sel, h] @ q[i, h] * dh ** -0.5, dim=0)
                if gate:
                    omega = torch.exp(-(s[i] - s[sel]).abs())
                    probs = probs * omega / omega.detach()
                heads.append(probs @ v[sel, h])
            out[int(i)] = torch.cat(heads)
    return att.out_proj(torch.stack(out))


# ---------------------------------------------------------------- topm_windows

def test_topm_windows_hand_example_with_ties():
    scores = torch.tensor([0.1, 0.5, 0.5, -0.2, 0.9, 0.3, 0.3])
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    order, start, length = topm_windows(scores, batch, 2, m=2)
    # descending score, ties in node order: graph 0 -> 1, 2, 0; graph 1 -> 4, 5, 6, 3
    assert order.tolist() == [1, 2, 0, 4, 5, 6, 3]
    assert start.tolist() == [0, 0, 1, 3, 3, 4, 5]
    assert length.tolist() == [2] * 7
    order, start, length = topm_windows(scores, batch, 2, m=3)
    assert start.tolist() == [0, 0, 0, 3, 3, 4, 4]
    assert length.tolist() == [3, 3, 3, 3, 3, 3, 3]
    _, start, length = topm_windows(scores, batch, 2, m=4)  # graph 0 (3 nodes) whole
    assert start.tolist() == [0, 0, 0, 3, 3, 3, 3] and length.tolist() == [3, 3, 3, 4, 4, 4, 4]
    with pytest.raises(ValueError, match="m=0"):
        topm_windows(scores, batch, 2, m=0)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 7, 20])
def test_topm_windows_stay_in_graph_hold_self_and_min_m_ng_keys(m):
    sizes = [5, 9, 3, 12, 1]
    g = torch.Generator().manual_seed(m)
    scores = torch.rand(sum(sizes), generator=g).round(decimals=1)  # many ties
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    order, start, length = topm_windows(scores, batch, len(sizes), m)
    assert sorted(order.tolist()) == list(range(sum(sizes)))
    for p in range(sum(sizes)):
        i = int(order[p])
        n_g = sizes[int(batch[i])]
        sel = order[start[p]:start[p] + length[p]]
        assert len(sel) == min(m, n_g)
        assert (batch[sel] == batch[i]).all() and i in sel.tolist()
        if n_g > m:  # centred on itself unless shifted at the ends of the ranking
            graph_ranks = (batch[order] == batch[i]).nonzero().flatten()
            lo, hi = int(graph_ranks[0]), int(graph_ranks[-1]) + 1
            assert int(start[p]) == min(max(p - m // 2, lo), hi - m)
    # each graph's ranking is by descending score
    s_sorted, b_sorted = scores[order], batch[order]
    same = b_sorted[1:] == b_sorted[:-1]
    assert (s_sorted[:-1][same] >= s_sorted[1:][same]).all()


# ---------------------------------------------------------------- TopMAttention

def test_topm_protocol_repr_and_errors():
    att = TopMAttention(64, heads=4, m=8)
    assert isinstance(att, GlobalAttention)
    assert repr(att) == "TopMAttention(64, heads=4, m=8, dropout=0.0, straight_through=True)"
    assert att.aux.shape == (64,) and att.aux.abs().sum() > 0
    with pytest.raises(ValueError, match="heads=5"):
        TopMAttention(64, heads=5)
    with pytest.raises(ValueError, match="m=0"):
        TopMAttention(64, m=0)
    with pytest.raises(ValueError, match="dropout"):
        TopMAttention(64, dropout=1.0)


@pytest.mark.parametrize("sizes", [SIZES, [11]])
def test_topm_with_large_m_equals_full_attention(sizes):
    torch.manual_seed(0)
    x, ctx = _batch(sizes)
    full = _random_biases(FullAttention(DIM, heads=HEADS)).eval()
    att = TopMAttention(DIM, heads=HEADS, m=x.size(0)).eval()
    att.load_state_dict(full.state_dict(), strict=False)
    out = att(x, ctx)
    assert out.shape == x.shape
    torch.testing.assert_close(out, full(x, ctx), atol=1e-5, rtol=1e-5)
    att.m = max(sizes)  # block size = largest graph: still exact
    torch.testing.assert_close(att(x, ctx), full(x, ctx), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 7])
def test_topm_equals_brute_force_reference(m):
    torch.manual_seed(m)
    att = _random_biases(TopMAttention(DIM, heads=HEADS, m=m)).eval()
    x, ctx = _batch(REF_SIZES, seed=m)
    with torch.no_grad():
        torch.testing.assert_close(att(x, ctx), _brute_force(att, x, ctx), atol=1e-5, rtol=1e-5)


def test_topm_straight_through_gradients_match_reference_and_forward_is_bitwise_equal():
    torch.manual_seed(0)
    x, ctx = _batch(REF_SIZES, seed=3)
    target = torch.randn(x.size(0), DIM)
    att = _random_biases(TopMAttention(DIM, heads=HEADS, m=3, straight_through=True))
    off = TopMAttention(DIM, heads=HEADS, m=3, straight_through=False)
    off.load_state_dict(att.state_dict())

    out_on, out_off = att(x, ctx), off(x, ctx)
    assert torch.equal(out_on, out_off)  # the gate is exactly 1 in the forward pass
    ((out_on - target) ** 2).sum().backward()
    ((out_off - target) ** 2).sum().backward()
    assert att.aux.grad is not None and torch.isfinite(att.aux.grad).all()
    assert att.aux.grad.abs().max() > 1e-4
    assert off.aux.grad is None or not off.aux.grad.any()
    # all other gradients agree: the gate only adds the path to the scorer
    torch.testing.assert_close(att.in_proj.weight.grad, off.in_proj.weight.grad)

    # the straight-through gradient is that of the per-pair gated brute-force formula
    ref = TopMAttention(DIM, heads=HEADS, m=3)
    ref.load_state_dict(att.state_dict())
    ((_brute_force(ref, x, ctx, gate=True) - target) ** 2).sum().backward()
    torch.testing.assert_close(att.aux.grad, ref.aux.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(att.in_proj.weight.grad, ref.in_proj.weight.grad,
                               atol=1e-5, rtol=1e-4)


def test_topm_no_leak_between_graphs():
    torch.manual_seed(0)
    att = TopMAttention(DIM, heads=HEADS, m=3).eval()
    x, ctx = _batch(REF_SIZES)
    out = att(x, ctx)
    x2 = x.clone()
    x2[ctx.batch == 1] += 10 * torch.randn(REF_SIZES[1], DIM)
    out2 = att(x2, ctx)
    torch.testing.assert_close(out[ctx.batch != 1], out2[ctx.batch != 1], atol=0, rtol=0)
    assert not torch.allclose(out[ctx.batch == 1], out2[ctx.batch == 1])
    # no gradient flows across graphs either (training mode, straight-through gate on)
    att.train()
    xg = x.clone().requires_grad_(True)
    att(xg, ctx)[ctx.batch == 0].sum().backward()
    assert not xg.grad[ctx.batch != 0].any() and xg.grad[ctx.batch == 0].any()


def test_topm_empty_graph_and_gradients_finite():
    torch.manual_seed(0)
    att = TopMAttention(DIM, heads=HEADS, m=2)
    x = torch.randn(7, DIM, requires_grad=True)
    ctx = AttentionContext(torch.tensor([0, 0, 0, 2, 2, 2, 2]), 3)  # graph 1 has no nodes
    out = att(x, ctx)
    out.sum().backward()
    assert out.shape == (7, DIM) and torch.isfinite(out).all()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in att.parameters())
    assert att(torch.randn(0, DIM), AttentionContext(torch.zeros(0, dtype=torch.long), 0)).shape \
        == (0, DIM)


def test_topm_dropout_only_in_training_and_reset_deterministic():
    torch.manual_seed(0)
    att = TopMAttention(DIM, heads=HEADS, m=4, dropout=0.5)
    x, ctx = _batch()
    att.eval()
    assert torch.equal(att(x, ctx), att(x, ctx))
    att.train()
    assert not torch.allclose(att(x, ctx), att(x, ctx))
    torch.manual_seed(5)
    att.reset_parameters()
    w, a = att.in_proj.weight.clone(), att.aux.clone()
    torch.manual_seed(5)
    att.reset_parameters()
    assert torch.equal(w, att.in_proj.weight) and torch.equal(a, att.aux)


def test_topm_linear_memory_on_a_large_graph():
    """50k nodes in one graph: an N x N score matrix (10 GB) would not fit; banded is tiny."""
    torch.manual_seed(0)
    att = TopMAttention(8, heads=2, m=4).eval()
    x = torch.randn(50_000, 8)
    with torch.no_grad():
        out = att(x, AttentionContext.single_graph(50_000))
    assert out.shape == (50_000, 8) and torch.isfinite(out).all()


def test_topm_config_instantiates_with_defaults():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    import inspect

    path = Path(__file__).resolve().parents[2] / "configs" / "attention" / "topm.yaml"
    cfg = OmegaConf.load(path)
    assert cfg._target_ == "graphgt.nn.attention.topm.TopMAttention"
    defaults = {n: p.default for n, p in inspect.signature(TopMAttention).parameters.items()
                if n != "dim"}
    assert {k: v for k, v in cfg.items() if not k.startswith("_")} == defaults
    att = instantiate(cfg)(dim=32)
    assert isinstance(att, TopMAttention) and att.m == 32 and att.heads == 4
