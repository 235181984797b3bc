"""Tests of the Exphormer-style sparse attention (graphgt.nn.attention.expander)."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from graphgt.nn.attention.base import AttentionContext, GlobalAttention
from graphgt.nn.attention.expander import ExpanderAttention, expander_edges
from graphgt.nn.attention.full import FullAttention

DIM, HEADS = 16, 2
SIZES = [5, 9, 3]  # three graphs of different sizes


def _batch(sizes=SIZES, seed=0, dim=DIM):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), dim, generator=g)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return x, batch


def _complete_edges(batch, self_loops=False):
    """All ordered pairs of nodes of the same graph (without self loops unless asked)."""
    same = batch[:, None] == batch[None, :]
    if not self_loops:
        same &= ~torch.eye(batch.numel(), dtype=torch.bool)
    tgt, src = same.nonzero().T
    return torch.stack([src, tgt])


def _random_edges(batch, num_edges, seed=0):
    """Random edges within graphs (duplicates possible)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, batch.numel(), (num_edges,), generator=g)
    tgt = torch.randint(0, batch.numel(), (num_edges,), generator=g)
    keep = batch[src] == batch[tgt]
    return torch.stack([src[keep], tgt[keep]])


def _ctx(batch, edge_index):
    return AttentionContext(batch, int(batch.max()) + 1, edge_index)


# ---------------------------------------------------------------- protocol

def test_protocol_repr_and_errors():
    att = ExpanderAttention(64, heads=4)
    assert isinstance(att, GlobalAttention)
    assert repr(att) == ("ExpanderAttention(64, heads=4, expander_degree=4, num_virtual=1, "
                         "graph_edges=True, self_loops=True, resample=True, dropout=0.0)")
    assert att.virtual.shape == (1, 64)
    with pytest.raises(ValueError, match="heads=5"):
        ExpanderAttention(64, heads=5)
    with pytest.raises(ValueError, match="expander_degree=3"):
        ExpanderAttention(64, expander_degree=3)
    with pytest.raises(ValueError, match="expander_degree=-2"):
        ExpanderAttention(64, expander_degree=-2)
    with pytest.raises(ValueError, match="num_virtual=-1"):
        ExpanderAttention(64, num_virtual=-1)
    with pytest.raises(ValueError, match="dropout"):
        ExpanderAttention(64, dropout=1.0)
    with pytest.raises(ValueError, match="degree=5"):
        expander_edges(torch.zeros(4, dtype=torch.long), 1, 5, None)
    x, batch = _batch()
    with pytest.raises(ValueError, match="no edge_index"):
        ExpanderAttention(DIM, heads=HEADS)(x, AttentionContext(batch, 3))
    # graph_edges=False does not need edge_index
    out = ExpanderAttention(DIM, heads=HEADS, graph_edges=False)(x, AttentionContext(batch, 3))
    assert out.shape == x.shape


def test_config_instantiates_with_defaults():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    path = Path(__file__).resolve().parents[2] / "configs" / "attention" / "expander.yaml"
    cfg = OmegaConf.load(path)
    assert cfg._target_ == "graphgt.nn.attention.expander.ExpanderAttention"
    defaults = {n: p.default for n, p in inspect.signature(ExpanderAttention).parameters.items()
                if n != "dim"}
    assert {k: v for k, v in cfg.items() if not k.startswith("_")} == defaults
    att = instantiate(cfg)(dim=32)
    assert isinstance(att, ExpanderAttention) and att.expander_degree == 4 and att.heads == 4


def test_reset_parameters_deterministic():
    att = ExpanderAttention(DIM, heads=HEADS)
    torch.manual_seed(5)
    att.reset_parameters()
    w, p = att.in_proj.weight.clone(), att.virtual.clone()
    torch.manual_seed(5)
    att.reset_parameters()
    assert torch.equal(w, att.in_proj.weight) and torch.equal(p, att.virtual)


# ---------------------------------------------------------------- expander_edges

@pytest.mark.parametrize("degree", [2, 4, 6])
def test_expander_edges_regular_and_within_graphs(degree):
    sizes = [1, 5, 9, 1, 3]  # includes 1-node graphs
    _, batch = _batch(sizes)
    N = batch.numel()
    gen = torch.Generator().manual_seed(3)
    ei = expander_edges(batch, len(sizes), degree, gen)
    assert ei.shape == (2, N * degree) and ei.dtype == torch.long
    assert torch.equal(torch.bincount(ei[0], minlength=N), torch.full((N,), degree))
    assert torch.equal(torch.bincount(ei[1], minlength=N), torch.full((N,), degree))
    assert torch.equal(batch[ei[0]], batch[ei[1]])
    # symmetric with multiplicity: j -> i as often as i -> j (both i -> pi(i) and pi(i) -> i)
    assert torch.equal((ei[0] * N + ei[1]).sort().values, (ei[1] * N + ei[0]).sort().values)
    # a 1-node graph only has self loops
    lone = (ei[0] == 0) | (ei[1] == 0)
    assert torch.equal(ei[:, lone], torch.zeros(2, degree, dtype=torch.long))


def test_expander_edges_seeds_and_global_rng():
    _, batch = _batch([20, 30, 25])
    a = expander_edges(batch, 3, 4, torch.Generator().manual_seed(0))
    b = expander_edges(batch, 3, 4, torch.Generator().manual_seed(0))
    c = expander_edges(batch, 3, 4, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(7)
    d = expander_edges(batch, 3, 4, None)
    torch.manual_seed(7)
    assert torch.equal(d, expander_edges(batch, 3, 4, None))
    assert not torch.equal(d, expander_edges(batch, 3, 4, None))
    assert expander_edges(batch, 3, 0, None).shape == (2, 0)
    assert expander_edges(torch.zeros(0, dtype=torch.long), 0, 4, None).shape == (2, 0)


def test_expander_edges_uniform_permutations_and_unsorted_batch():
    # 1200 graphs of 3 nodes: each graph's permutation should be uniform over the 6 permutations
    B = 1200
    batch = torch.arange(B).repeat_interleave(3)
    ei = expander_edges(batch, B, 2, torch.Generator().manual_seed(0))
    src, tgt = ei[:, :3 * B]                          # the edges i -> pi(i)
    order = torch.argsort(src)
    pi = (tgt[order] - batch * 3).view(B, 3)          # local permutation of each graph
    assert torch.equal(pi.sort(1).values, torch.arange(3).expand(B, 3))
    codes, counts = torch.unique(pi[:, 0] * 9 + pi[:, 1] * 3 + pi[:, 2], return_counts=True)
    assert codes.numel() == 6 and counts.min() > 140 and counts.max() < 260, counts  # ~200 each
    # an unsorted batch vector: still regular and within graphs
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(1))
    batch_u = torch.arange(3).repeat_interleave(20)[perm]
    ei = expander_edges(batch_u, 3, 4, torch.Generator().manual_seed(2))
    assert torch.equal(batch_u[ei[0]], batch_u[ei[1]])
    assert torch.equal(torch.bincount(ei[1], minlength=60), torch.full((60,), 4))


# ---------------------------------------------------------------- attention

@pytest.mark.parametrize("duplicates", [False, True])
def test_equals_full_attention_on_complete_graph(duplicates):
    torch.manual_seed(0)
    full = FullAttention(DIM, heads=HEADS).eval()
    with torch.no_grad():
        full.in_proj.bias.normal_()
        full.out_proj.bias.normal_()
    att = ExpanderAttention(DIM, heads=HEADS, expander_degree=0, num_virtual=0,
                            self_loops=True).eval()
    att.load_state_dict(full.state_dict(), strict=False)
    x, batch = _batch()
    ei = _complete_edges(batch)
    if duplicates:  # every edge three times, shuffled, plus some self loops
        ei = torch.cat([ei, ei, ei, torch.arange(4).expand(2, 4)], dim=1)
        ei = ei[:, torch.randperm(ei.size(1))]
    ctx = _ctx(batch, ei)
    out = att(x, ctx)
    torch.testing.assert_close(out, full(x, AttentionContext(batch, 3)), atol=1e-5, rtol=1e-5)
    assert att.interaction_edges(x, ctx).size(1) == sum(n * n for n in SIZES)


def test_equals_dense_reference_with_expander_and_virtual_nodes():
    """Both stages against a per-node loop over interaction_edges (what forward must use)."""
    torch.manual_seed(0)
    R = 2
    att = ExpanderAttention(DIM, heads=HEADS, expander_degree=4, num_virtual=R).eval()
    with torch.no_grad():
        att.in_proj.bias.normal_()
        att.out_proj.bias.normal_()
    x, batch = _batch()
    ctx = _ctx(batch, _random_edges(batch, 40))
    out = att(x, ctx)
    src, dst = att.interaction_edges(x, ctx)
    H, dh, N = HEADS, DIM // HEADS, x.size(0)

    def attend(q, k, v):  # q [H, dh], k/v [S, H, dh]
        p = torch.einsum("hd,shd->hs", q, k).mul(dh ** -0.5).softmax(-1)
        return torch.einsum("hs,shd->hd", p, v).reshape(DIM)

    q, k, v = att.in_proj(x).view(N, 3, H, dh).unbind(1)
    qp = att.in_proj(att.virtual).view(R, 3, H, dh)[:, 0]
    ref = torch.empty(N, DIM)
    for g in range(3):
        nodes = (batch == g).nonzero().flatten()
        states = torch.stack([att.virtual[r] + att.out_proj(attend(qp[r], k[nodes], v[nodes]))
                              for r in range(R)])
        _, kv, vv = att.in_proj(states).view(R, 3, H, dh).unbind(1)
        for i in nodes.tolist():
            nb = src[dst == i]
            assert (batch[nb] == g).all()
            ref[i] = att.out_proj(attend(q[i], torch.cat([k[nb], kv]), torch.cat([v[nb], vv])))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_no_leak_between_graphs():
    torch.manual_seed(0)
    att = ExpanderAttention(DIM, heads=HEADS, expander_degree=4, num_virtual=2).eval()
    x, batch = _batch()
    ctx = _ctx(batch, _random_edges(batch, 60))
    out = att(x, ctx)
    x2 = x.clone()
    x2[batch == 1] += 10 * torch.randn(SIZES[1], DIM)
    out2 = att(x2, ctx)
    assert torch.equal(out[batch != 1], out2[batch != 1])
    assert not torch.allclose(out[batch == 1], out2[batch == 1])


def test_virtual_nodes_carry_information():
    torch.manual_seed(0)
    x, batch = _batch()
    ctx = _ctx(batch, torch.empty(2, 0, dtype=torch.long))
    node = 2  # a node of graph 0 other than node 0
    x2 = x.clone()
    x2[node] += 5.0
    with_virtual = ExpanderAttention(DIM, heads=HEADS, expander_degree=0, num_virtual=1).eval()
    assert not torch.allclose(with_virtual(x, ctx)[0], with_virtual(x2, ctx)[0])
    # without virtual nodes only the self loop remains: node 0 sees nothing else
    without = ExpanderAttention(DIM, heads=HEADS, expander_degree=0, num_virtual=0).eval()
    assert torch.equal(without(x, ctx)[0], without(x2, ctx)[0])


def test_resample_in_training_fixed_in_eval():
    torch.manual_seed(0)
    x, batch = _batch([30, 40])
    ctx = _ctx(batch, _random_edges(batch, 50))
    att = ExpanderAttention(DIM, heads=HEADS, expander_degree=4, num_virtual=1)
    assert not torch.equal(att(x, ctx), att(x, ctx))                       # training, resample
    e_train = att.interaction_edges(x, ctx)
    att.eval()
    out_eval = att(x, ctx)
    assert torch.equal(out_eval, att(x, ctx))
    e_eval = att.interaction_edges(x, ctx)
    assert torch.equal(e_eval, att.interaction_edges(x, ctx))
    assert not torch.equal(e_train, e_eval)
    fixed = ExpanderAttention(DIM, heads=HEADS, expander_degree=4, resample=False)
    fixed.load_state_dict(att.state_dict())
    assert torch.equal(fixed(x, ctx), fixed(x, ctx))                       # training, fixed
    assert torch.equal(fixed(x, ctx), out_eval)                           # same seed as eval
    other = ExpanderAttention(DIM, heads=HEADS, expander_degree=4, seed=1).eval()
    other.load_state_dict(att.state_dict())
    assert not torch.equal(other.interaction_edges(x, ctx), e_eval)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    x, batch = _batch()
    ctx = _ctx(batch, _random_edges(batch, 40))
    att = ExpanderAttention(DIM, heads=HEADS, resample=False, dropout=0.5)
    assert not torch.allclose(att(x, ctx), att(x, ctx))
    att.eval()
    assert torch.equal(att(x, ctx), att(x, ctx))


def test_gradients_reach_all_parameters():
    torch.manual_seed(0)
    att = ExpanderAttention(DIM, heads=HEADS, expander_degree=2, num_virtual=2)
    x, batch = _batch()
    x.requires_grad_(True)
    out = att(x, _ctx(batch, _random_edges(batch, 40)))
    (out * torch.randn_like(out)).sum().backward()
    for name, p in att.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("degree,num_virtual", [(0, 0), (2, 0), (4, 1), (6, 3)])
def test_attended_pairs_are_linear(degree, num_virtual):
    x, batch = _batch([40, 1, 70, 25])
    N = x.size(0)
    ei = _random_edges(batch, 300)
    ei = torch.cat([ei, ei[:, :50]], dim=1)                 # with duplicates
    E = ei.size(1)
    att = ExpanderAttention(DIM, heads=HEADS, expander_degree=degree,
                            num_virtual=num_virtual).eval()
    ctx = _ctx(batch, ei)
    pairs = att.interaction_edges(x, ctx)
    stage1, stage2 = att.virtual_edges(N, ctx)
    assert stage1.size(1) == stage2.size(1) == N * num_virtual
    assert pairs.size(1) + stage1.size(1) + stage2.size(1) <= E + N * (degree + 1) + 2 * N * num_virtual
    key = pairs[1] * N + pairs[0]
    assert torch.unique(key).numel() == key.numel()        # a set: no duplicates
    assert torch.equal(batch[pairs[0]], batch[pairs[1]])
    expected = torch.unique(torch.cat([ei[1] * N + ei[0], torch.arange(N) * (N + 1)]))
    assert torch.isin(expected, key).all()                 # graph edges and self loops kept
    # each virtual node of graph g attends to the N_g nodes of g; each node to R virtual nodes
    assert torch.equal(torch.bincount(stage1[1], minlength=4 * num_virtual),
                       torch.tensor([40, 1, 70, 25]).repeat_interleave(num_virtual))
    assert torch.equal(torch.bincount(stage2[1], minlength=N), torch.full((N,), num_virtual))


def test_edge_cases():
    torch.manual_seed(0)
    att = ExpanderAttention(DIM, heads=HEADS, expander_degree=2, num_virtual=0).eval()
    # 1-node graphs with a self loop only: output = out_proj(v)
    x, batch = _batch([1, 1, 1])
    out = att(x, _ctx(batch, torch.empty(2, 0, dtype=torch.long)))
    v = att.in_proj(x)[:, 2 * DIM:]
    torch.testing.assert_close(out, att.out_proj(v), atol=1e-6, rtol=1e-6)
    # one graph (num_graphs == 1) equals that graph inside a batch (no expander: same pairs)
    att = ExpanderAttention(DIM, heads=HEADS, expander_degree=0, num_virtual=2).eval()
    with torch.no_grad():
        att.out_proj.bias.normal_()
    x, batch = _batch([12, 7])
    ei = _random_edges(batch, 60)
    out = att(x, _ctx(batch, ei))
    first = ei[:, batch[ei[1]] == 0]
    out_single = att(x[:12], AttentionContext.single_graph(12, edge_index=first))
    torch.testing.assert_close(out_single, out[:12], atol=1e-6, rtol=1e-6)
    att_exp = ExpanderAttention(DIM, heads=HEADS, expander_degree=4, num_virtual=2).eval()
    out_single = att_exp(x[:12], AttentionContext.single_graph(12, edge_index=first))
    assert out_single.shape == (12, DIM) and torch.isfinite(out_single).all()
    # nothing to attend to (no edges, no expander, no self loops, no virtual node): bias only
    bare = ExpanderAttention(DIM, heads=HEADS, expander_degree=0, num_virtual=0,
                             self_loops=False, graph_edges=False).eval()
    x, batch = _batch()
    out = bare(x, AttentionContext(batch, 3))
    assert torch.equal(out, bare.out_proj.bias.expand(x.size(0), DIM))
    # an empty graph id in the batch (graph 1 has no nodes) and an empty input
    x = torch.randn(6, DIM, requires_grad=True)
    ctx = AttentionContext(torch.tensor([0, 0, 0, 2, 2, 2]), 3, torch.empty(2, 0, dtype=torch.long))
    out = ExpanderAttention(DIM, heads=HEADS, num_virtual=2)(x, ctx)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    empty = att(torch.zeros(0, DIM), AttentionContext(torch.zeros(0, dtype=torch.long), 0,
                                                      torch.empty(2, 0, dtype=torch.long)))
    assert empty.shape == (0, DIM)
