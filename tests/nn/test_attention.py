"""Tests of the global attention modules (graphgt.nn.attention)."""
from __future__ import annotations

import pytest
import torch

from graphgt.nn.attention import (AttentionContext, FullAttention, GlobalAttention,
                                  PerformerAttention)

DIM, HEADS = 16, 2
SIZES = [5, 9, 3]  # three graphs of different sizes


def _batch(sizes=SIZES, seed=0, dim=DIM):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), dim, generator=g)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return x, AttentionContext(batch, len(sizes))


def _per_graph(module, x, ctx):
    """The module applied to each graph on its own (single-graph context)."""
    outs = []
    for g in range(ctx.num_graphs):
        xs = x[ctx.batch == g]
        outs.append(module(xs, AttentionContext.single_graph(xs.size(0))))
    return torch.cat(outs)


# ---------------------------------------------------------------- FullAttention

def test_full_protocol_repr_and_errors():
    att = FullAttention(64, heads=4)
    assert isinstance(att, GlobalAttention)
    assert repr(att) == "FullAttention(64, heads=4, dropout=0.0)"
    with pytest.raises(ValueError, match="heads=5"):
        FullAttention(64, heads=5)
    with pytest.raises(ValueError, match="dropout"):
        FullAttention(64, dropout=1.0)


def test_full_batched_equals_per_graph():
    torch.manual_seed(0)
    att = FullAttention(DIM, heads=HEADS).eval()
    x, ctx = _batch()
    out = att(x, ctx)
    assert out.shape == x.shape
    torch.testing.assert_close(out, _per_graph(att, x, ctx), atol=1e-5, rtol=1e-5)


def test_full_equals_torch_multihead_attention():
    torch.manual_seed(0)
    att = FullAttention(DIM, heads=HEADS).eval()
    with torch.no_grad():
        att.in_proj.bias.normal_()
        att.out_proj.bias.normal_()
    mha = torch.nn.MultiheadAttention(DIM, HEADS, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(att.in_proj.weight)
        mha.in_proj_bias.copy_(att.in_proj.bias)
        mha.out_proj.weight.copy_(att.out_proj.weight)
        mha.out_proj.bias.copy_(att.out_proj.bias)
    x = torch.randn(7, DIM)
    ref = mha(x[None], x[None], x[None], need_weights=False)[0][0]
    torch.testing.assert_close(att(x, AttentionContext.single_graph(7)), ref,
                               atol=1e-5, rtol=1e-5)


def test_full_no_leak_between_graphs():
    torch.manual_seed(0)
    att = FullAttention(DIM, heads=HEADS).eval()
    x, ctx = _batch()
    out = att(x, ctx)
    x2 = x.clone()
    x2[ctx.batch == 1] += 10 * torch.randn(SIZES[1], DIM)
    out2 = att(x2, ctx)
    assert torch.equal(out[ctx.batch != 1], out2[ctx.batch != 1])
    assert not torch.allclose(out[ctx.batch == 1], out2[ctx.batch == 1])


def test_full_empty_graph_and_gradients_finite():
    torch.manual_seed(0)
    att = FullAttention(DIM, heads=HEADS)
    x = torch.randn(6, DIM, requires_grad=True)
    ctx = AttentionContext(torch.tensor([0, 0, 0, 2, 2, 2]), 3)  # graph 1 has no nodes
    out = att(x, ctx)
    out.sum().backward()
    assert out.shape == (6, DIM) and torch.isfinite(out).all()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in att.parameters())


def test_full_dropout_only_in_training():
    torch.manual_seed(0)
    att = FullAttention(DIM, heads=HEADS, dropout=0.5)
    x, ctx = _batch()
    att.eval()
    assert torch.equal(att(x, ctx), att(x, ctx))
    att.train()
    assert not torch.allclose(att(x, ctx), att(x, ctx))


def test_full_reset_parameters_deterministic():
    att = FullAttention(DIM, heads=HEADS)
    torch.manual_seed(5)
    att.reset_parameters()
    w = att.in_proj.weight.clone()
    torch.manual_seed(5)
    att.reset_parameters()
    assert torch.equal(w, att.in_proj.weight)


# ---------------------------------------------------------------- PerformerAttention

def _exact_like(perf: PerformerAttention) -> FullAttention:
    """Exact softmax attention with the Performer's projections."""
    full = FullAttention(perf.dim, heads=perf.heads).eval()
    full.load_state_dict({k: v for k, v in perf.state_dict().items() if "proj." in k})
    return full


def test_performer_protocol_repr_and_errors():
    att = PerformerAttention(64, heads=4, num_features=32, redraw_interval=None)
    assert isinstance(att, GlobalAttention)
    assert repr(att) == ("PerformerAttention(64, heads=4, num_features=32, "
                         "redraw_interval=None, orthogonal=True)")
    assert att.projection.shape == (32, 16)
    with pytest.raises(ValueError, match="heads=5"):
        PerformerAttention(64, heads=5)
    with pytest.raises(ValueError, match="num_features"):
        PerformerAttention(64, num_features=0)
    with pytest.raises(ValueError, match="redraw_interval"):
        PerformerAttention(64, redraw_interval=0)


def test_orthogonal_features_are_blockwise_orthogonal():
    torch.manual_seed(0)
    w = PerformerAttention(16, heads=2, num_features=20).projection  # head_dim 8: blocks 8, 8, 4
    for block in (w[:8], w[8:16], w[16:]):
        u = block / block.norm(dim=1, keepdim=True)
        torch.testing.assert_close(u @ u.T, torch.eye(len(u)), atol=1e-5, rtol=0)
    assert not torch.allclose(w.norm(dim=1), w.norm(dim=1).mean().expand(20))  # chi norms


@pytest.mark.parametrize("orthogonal", [True, False])
def test_performer_converges_to_softmax_attention(orthogonal):
    x, ctx = _batch(sizes=[6, 11, 4], seed=1)
    ms = [16, 64, 256, 1024, 4096]
    errors = torch.zeros(len(ms))
    for seed in range(3):
        torch.manual_seed(seed)
        perf = PerformerAttention(DIM, heads=HEADS, num_features=16,
                                  redraw_interval=None, orthogonal=orthogonal).eval()
        exact = _exact_like(perf)(x, ctx)
        for i, m in enumerate(ms):
            perf_m = PerformerAttention(DIM, heads=HEADS, num_features=m,
                                        redraw_interval=None, orthogonal=orthogonal).eval()
            perf_m.load_state_dict({k: v for k, v in perf.state_dict().items()
                                    if "proj." in k}, strict=False)
            errors[i] += (perf_m(x, ctx) - exact).abs().mean() / 3
    assert errors[-1] < errors[0] / 4, errors
    assert all(errors[i + 1] < errors[i] * 1.2 for i in range(len(ms) - 1)), errors


def test_performer_equals_unstabilised_favor_formula():
    """The stabilising shifts cancel: same numbers as the textbook FAVOR+ formula."""
    torch.manual_seed(0)
    perf = PerformerAttention(DIM, heads=HEADS, num_features=32).eval()
    x, ctx = _batch()
    dh, m = DIM // HEADS, 32
    q, k, v = perf.in_proj(x).view(-1, 3, HEADS, dh).unbind(1)
    w = perf.projection

    def phi(t):
        t = t * dh ** -0.25
        return torch.exp(t @ w.T - 0.5 * t.pow(2).sum(-1, keepdim=True)) / m ** 0.5

    heads = []
    for h in range(HEADS):
        out_h = torch.empty(x.size(0), dh)
        for g in range(ctx.num_graphs):
            sel = ctx.batch == g
            pq, pk = phi(q[sel, h]), phi(k[sel, h])
            kv, z = pk.T @ v[sel, h], pk.sum(0)
            out_h[sel] = (pq @ kv) / (pq @ z)[:, None]
        heads.append(out_h)
    ref = perf.out_proj(torch.stack(heads, 1).reshape(-1, DIM))
    torch.testing.assert_close(perf(x, ctx), ref, atol=1e-5, rtol=1e-5)


def test_performer_batched_equals_per_graph_and_no_leak():
    torch.manual_seed(0)
    perf = PerformerAttention(DIM, heads=HEADS, num_features=32).eval()
    x, ctx = _batch()
    out = perf(x, ctx)
    assert out.shape == x.shape
    torch.testing.assert_close(out, _per_graph(perf, x, ctx), atol=1e-5, rtol=1e-5)
    x2 = x.clone()
    x2[ctx.batch == 1] += 10 * torch.randn(SIZES[1], DIM)
    out2 = perf(x2, ctx)
    assert torch.equal(out[ctx.batch != 1], out2[ctx.batch != 1])
    assert not torch.allclose(out[ctx.batch == 1], out2[ctx.batch == 1])


def test_performer_stable_for_large_inputs_and_gradients():
    torch.manual_seed(0)
    perf = PerformerAttention(DIM, heads=HEADS, num_features=32)
    x, ctx = _batch()
    x = (30 * x).requires_grad_(True)  # exponents far beyond float32 range without stabilisers
    out = perf(x, ctx)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in perf.parameters())


def test_performer_redraw_schedule():
    torch.manual_seed(0)
    perf = PerformerAttention(DIM, heads=HEADS, num_features=8, redraw_interval=3)
    x, ctx = _batch()
    redrawn = []
    for _ in range(10):
        before = perf.projection.clone()
        perf(x, ctx)
        redrawn.append(not torch.equal(before, perf.projection))
    # each draw serves exactly 3 training calls; calls 4, 7, 10 draw anew
    assert redrawn == [False, False, False, True, False, False, True, False, False, True]
    assert int(perf.num_calls) == 1
    perf.eval()
    before = perf.projection.clone()
    for _ in range(7):
        perf(x, ctx)
    assert torch.equal(before, perf.projection) and int(perf.num_calls) == 1

    never = PerformerAttention(DIM, heads=HEADS, num_features=8, redraw_interval=None)
    before = never.projection.clone()
    for _ in range(5):
        never(x, ctx)
    assert torch.equal(before, never.projection)

    perf.redraw_features()
    assert not torch.equal(before, perf.projection) and int(perf.num_calls) == 0
    assert "projection" in perf.state_dict() and "num_calls" in perf.state_dict()


def test_performer_seeds_reproduce():
    x, ctx = _batch()
    outs, projs = [], []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        perf = PerformerAttention(DIM, heads=HEADS, num_features=16, redraw_interval=2)
        for _ in range(3):  # includes one redraw
            out = perf(x, ctx)
        outs.append(out)
        projs.append(perf.projection.clone())
    assert torch.equal(outs[0], outs[1]) and torch.equal(projs[0], projs[1])
    assert not torch.equal(projs[0], projs[2])


def test_byte_dropout_mask_rate_unbiased_and_seeded():
    from graphgt.nn.attention.base import AttentionContext
    from graphgt.nn.attention.full import byte_dropout_keep

    for p in (0.1, 0.5, 0.3):
        keep, scale = byte_dropout_keep(torch.Size([400, 500]), p, torch.device("cpu"))
        expected_keep = 1 - round(256 * p) / 256
        assert abs(keep.float().mean().item() - expected_keep) < 0.005
        assert scale == pytest.approx(1 / expected_keep)
    torch.manual_seed(0)
    a = byte_dropout_keep(torch.Size([64, 64]), 0.5, torch.device("cpu"))[0]
    torch.manual_seed(0)
    assert torch.equal(a, byte_dropout_keep(torch.Size([64, 64]), 0.5, torch.device("cpu"))[0])
    # dropout on the attention weights is unbiased: the mean of many training outputs -> eval output
    torch.manual_seed(0)
    attn = FullAttention(16, heads=2, dropout=0.5)
    x, batch = torch.randn(12, 16), torch.tensor([0] * 5 + [1] * 7)
    ctx = AttentionContext(batch, 2)
    with torch.no_grad():
        mean = torch.stack([attn.train()(x, ctx) for _ in range(2000)]).mean(0)
        assert torch.allclose(mean, attn.eval()(x, ctx), atol=0.03)
