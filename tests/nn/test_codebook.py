"""Tests of CodebookAttention (LargeGT's global module: attention to EMA k-means centroids)."""
from __future__ import annotations

import copy
import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from graphgt.nn.attention.base import AttentionContext, GlobalAttention
from graphgt.nn.attention.codebook import CodebookAttention, nearest_centroid
from tests.train.ddp import run_ranks

REPO = Path(__file__).resolve().parents[2]
DIM, HEADS = 8, 2
MULTIPLICITIES = torch.tensor([1, 3, 2, 4, 1, 4])  # 6 distinct vectors, 15 inputs in all


def _ctx(n: int) -> AttentionContext:
    return AttentionContext.single_graph(n)


def _random_biases(att: CodebookAttention) -> CodebookAttention:
    with torch.no_grad():
        att.in_proj.bias.normal_()
        att.out_proj.bias.normal_()
    return att


def _repeated_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct [6, DIM], inputs [15, DIM]): each distinct row repeated MULTIPLICITIES times,
    shuffled."""
    g = torch.Generator().manual_seed(seed)
    distinct = torch.randn(6, DIM, generator=g)
    inputs = distinct.repeat_interleave(MULTIPLICITIES, dim=0)
    return distinct, inputs[torch.randperm(inputs.size(0), generator=g)]


def _reference_attention(att: CodebookAttention, queries: torch.Tensor,
                         keys: torch.Tensor) -> torch.Tensor:
    """Softmax attention of ``queries`` over all rows of ``keys`` (keys = values = the inputs,
    duplicates included) with the module's weights, by torch.nn.MultiheadAttention."""
    mha = torch.nn.MultiheadAttention(att.dim, att.heads, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(att.in_proj.weight)
        mha.in_proj_bias.copy_(att.in_proj.bias)
        mha.out_proj.weight.copy_(att.out_proj.weight)
        mha.out_proj.bias.copy_(att.out_proj.bias)
    return mha(queries[None], keys[None], keys[None], need_weights=False)[0][0]


def _reference_ema_step(cents, count, sums, x, decay, eps):
    """Hand-written EMA k-means step (loops, direct distances): VQ-VAE EMA, Laplace smoothing."""
    K = cents.size(0)
    assign = ((x[:, None, :] - cents[None]) ** 2).sum(-1).argmin(1)
    n_c, s_c = torch.zeros(K), torch.zeros_like(cents)
    for i, c in enumerate(assign.tolist()):
        n_c[c] += 1
        s_c[c] += x[i]
    count = decay * count + (1 - decay) * n_c
    sums = decay * sums + (1 - decay) * s_c
    n = count.sum()
    smoothed = (count + eps) / (n + K * eps) * n
    new = cents.clone()
    for c in range(K):
        if count[c] > 0:
            new[c] = sums[c] / smoothed[c]
    return new, count, sums


def _is_row_of(rows: torch.Tensor, x: torch.Tensor) -> bool:
    return all(bool((x == r).all(dim=1).any()) for r in rows)


# ---------------------------------------------------------------- protocol

def test_protocol_repr_and_errors():
    att = CodebookAttention(64, heads=4)
    assert isinstance(att, GlobalAttention)
    assert repr(att) == "CodebookAttention(64, heads=4, codebook_size=4096, decay=0.99)"
    assert att.in_proj.weight.shape == (192, 64) and att.out_proj.weight.shape == (64, 64)
    assert att.centroids.shape == (4096, 64) and att.ema_sum.shape == (4096, 64)
    assert att.ema_count.shape == (4096,) and not bool(att.initialized)
    assert set(att.state_dict()) >= {"centroids", "ema_count", "ema_sum", "initialized",
                                     "num_updates", "num_restarts"}
    bad = [(dict(heads=5), "heads=5"), (dict(codebook_size=0), "codebook_size=0"),
           (dict(decay=1.0), "decay=1.0"), (dict(decay=-0.1), "decay=-0.1"),
           (dict(eps=-1e-5), "eps=-1e-05"), (dict(dead_threshold=1.0), "dead_threshold=1.0"),
           (dict(dropout=1.0), "dropout=1.0"), (dict(seed=-1), "seed=-1"),
           (dict(chunk_size=0), "chunk_size=0")]
    for kwargs, msg in bad:
        with pytest.raises(ValueError, match=msg):
            CodebookAttention(64, **kwargs)
    with pytest.raises(ValueError, match=r"expected \[N, 64\]"):
        att(torch.randn(3, 32), _ctx(3))


def test_hydra_config_lists_every_argument_with_its_default():
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "configs/attention/codebook.yaml"))
    assert cfg.pop("_target_") == "graphgt.nn.attention.codebook.CodebookAttention"
    assert cfg.pop("_partial_") is True
    params = inspect.signature(CodebookAttention).parameters
    defaults = {k: p.default for k, p in params.items() if k != "dim"}
    assert cfg == defaults
    from hydra.utils import instantiate
    att = instantiate(OmegaConf.load(REPO / "configs/attention/codebook.yaml"))(32)
    assert isinstance(att, CodebookAttention) and att.codebook_size == 4096 and att.dim == 32


def test_nearest_centroid_chunked_matches_direct():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(37, 5, generator=g), torch.randn(9, 5, generator=g)
    ref = torch.cdist(x, c).argmin(1)
    assert torch.equal(nearest_centroid(x, c, chunk_size=4), ref)
    assert torch.equal(nearest_centroid(x, c), ref)


# ---------------------------------------------------------------- attention = full attention

@pytest.mark.parametrize("K", [6, 11])
def test_equals_full_attention_over_all_inputs(K):
    """Codebook = the distinct inputs with their multiplicities: exactly full softmax attention
    over all N inputs (duplicates included); extra centroids with count 0 are ignored."""
    torch.manual_seed(0)
    att = _random_biases(CodebookAttention(DIM, heads=HEADS, codebook_size=K)).eval()
    distinct, inputs = _repeated_inputs()
    att.set_codebook(distinct, MULTIPLICITIES.float())
    if K > 6:  # the unused centroids: far away in input space, would dominate if not ignored
        with torch.no_grad():
            att.centroids[6:] = 50 * torch.randn(K - 6, DIM)
    assert torch.equal(att.ema_count[:6], MULTIPLICITIES.float())
    assert torch.equal(att.ema_count[6:], torch.zeros(K - 6))
    queries = torch.randn(7, DIM)
    out = att(queries, _ctx(7))
    torch.testing.assert_close(out, _reference_attention(att, queries, inputs),
                               atol=1e-5, rtol=1e-5)
    # the full attention of a codebook with equal counts is not the same: the bias matters
    plain = _reference_attention(att, queries, distinct)
    assert not torch.allclose(out, plain, atol=1e-3)


def test_queries_of_several_graphs_share_the_codebook():
    torch.manual_seed(0)
    att = CodebookAttention(DIM, heads=HEADS, codebook_size=6).eval()
    distinct, _ = _repeated_inputs()
    att.set_codebook(distinct, MULTIPLICITIES.float())
    x = torch.randn(9, DIM)
    ctx = AttentionContext(torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2]), 3)
    assert torch.equal(att(x, ctx), att(x, _ctx(9)))


def test_exact_assignment_with_decay_zero():
    """decay=0, eps=0: one training step on the inputs leaves centroids = distinct inputs and
    counts = multiplicities exactly, so the equivalence with full attention still holds."""
    torch.manual_seed(0)
    distinct, inputs = _repeated_inputs(seed=1)
    for K, restart in [(6, True), (9, False)]:
        att = _random_biases(CodebookAttention(DIM, heads=HEADS, codebook_size=K, decay=0.0,
                                               eps=0.0, restart=restart))
        far = 30 * torch.randn(K - 6, DIM)
        att.set_codebook(torch.cat([distinct, far]), torch.ones(K))
        att.train()
        att(inputs, _ctx(inputs.size(0)))
        assert int(att.num_updates) == 1 and int(att.num_restarts) == 0
        assert torch.equal(att.ema_count, torch.cat([MULTIPLICITIES.float(), torch.zeros(K - 6)]))
        torch.testing.assert_close(att.centroids[:6], distinct, atol=1e-6, rtol=1e-6)
        assert torch.equal(att.centroids[6:], far)  # count 0: kept, and ignored by attention
        att.eval()
        queries = torch.randn(5, DIM)
        torch.testing.assert_close(att(queries, _ctx(5)),
                                   _reference_attention(att, queries, inputs),
                                   atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- EMA k-means

def test_initialisation_from_first_batch_in_eval_mode():
    x = torch.randn(12, DIM)
    att = CodebookAttention(DIM, heads=HEADS, codebook_size=5, seed=7).eval()
    att(x, _ctx(12))
    assert bool(att.initialized) and int(att.num_updates) == 0
    assert _is_row_of(att.centroids, x) and len(set(map(tuple, att.centroids.tolist()))) == 5
    assert torch.equal(att.ema_count, torch.ones(5)) and torch.equal(att.ema_sum, att.centroids)
    same = CodebookAttention(DIM, heads=HEADS, codebook_size=5, seed=7).eval()
    same(x, _ctx(12))
    other = CodebookAttention(DIM, heads=HEADS, codebook_size=5, seed=8).eval()
    other(x, _ctx(12))
    assert torch.equal(same.centroids, att.centroids)
    assert not torch.equal(other.centroids, att.centroids)
    # fewer inputs than centroids: drawn with replacement
    small = CodebookAttention(DIM, heads=HEADS, codebook_size=10).eval()
    small(x[:3], _ctx(3))
    assert _is_row_of(small.centroids, x[:3]) and int(small.num_updates) == 0
    assert len(set(map(tuple, small.centroids.tolist()))) <= 3


def test_ema_update_matches_reference():
    torch.manual_seed(0)
    decay, eps = 0.9, 1e-2
    att = CodebookAttention(DIM, heads=HEADS, codebook_size=5, decay=decay, eps=eps,
                            restart=False)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, DIM, generator=g)
    att.eval()
    att(x, _ctx(12))                                            # initialise only
    cents, count, sums = att.centroids.clone(), att.ema_count.clone(), att.ema_sum.clone()
    att.train()
    for step in range(3):
        x = torch.randn(12, DIM, generator=g) + 0.3 * step
        cents, count, sums = _reference_ema_step(cents, count, sums, x, decay, eps)
        att(x, _ctx(12))
        torch.testing.assert_close(att.ema_count, count, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(att.ema_sum, sums, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(att.centroids, cents, atol=1e-6, rtol=1e-6)
        assert int(att.num_updates) == step + 1
    assert not torch.allclose(count, torch.ones(5))             # the counts did change


def test_dead_centroid_is_restarted():
    """A far centroid that never receives an input decays (0.5^t) below 0.1 x mean count and is
    re-seeded with an input of the batch, count = mean, sum = centroid * mean."""
    torch.manual_seed(0)
    decay, thr = 0.5, 0.1
    att = CodebookAttention(4, heads=2, codebook_size=4, decay=decay, eps=0.0,
                            dead_threshold=thr, seed=1)
    eye = torch.eye(4)
    att.set_codebook(torch.stack([eye[0], eye[1], -eye[0], 100 * torch.ones(4)]), torch.ones(4))
    cents, count, sums = att.centroids.clone(), att.ema_count.clone(), att.ema_sum.clone()
    g = torch.Generator().manual_seed(0)
    restarted_at = None
    for step in range(1, 5):
        x = 0.5 * torch.randn(20, 4, generator=g)
        cents, count, sums = _reference_ema_step(cents, count, sums, x, decay, 0.0)
        mean = count.sum() / 4
        dead = count < thr * mean
        att(x, _ctx(20))
        assert torch.equal(dead, torch.tensor([False, False, False, bool(dead[3])]))
        if dead.any():
            restarted_at = step
            assert int(att.num_restarts) == 1
            assert _is_row_of(att.centroids[3:], x)
            torch.testing.assert_close(att.ema_count[3], mean)
            torch.testing.assert_close(att.ema_sum[3], att.centroids[3] * mean)
            break
        assert int(att.num_restarts) == 0
        torch.testing.assert_close(att.centroids, cents, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(att.ema_count, count)
    assert restarted_at == 2       # counts 0.5 (mean ~3), 0.25 (mean ~4): dead at step 2
    torch.testing.assert_close(att.centroids[:3], cents[:3], atol=1e-6, rtol=1e-6)
    # no restarts when disabled
    att2 = CodebookAttention(4, heads=2, codebook_size=4, decay=decay, dead_threshold=thr,
                             restart=False)
    att2.set_codebook(torch.stack([eye[0], eye[1], -eye[0], 100 * torch.ones(4)]), torch.ones(4))
    for _ in range(4):
        att2(0.5 * torch.randn(20, 4, generator=g), _ctx(20))
    assert int(att2.num_restarts) == 0 and att2.ema_count[3] < 0.1


# ---------------------------------------------------------------- autograd, chunks, dropout

def test_gradients_reach_projections_not_codebook_and_use_pre_update_codebook():
    torch.manual_seed(0)
    att = _random_biases(CodebookAttention(DIM, heads=HEADS, codebook_size=6))
    x0 = torch.randn(20, DIM)
    att.eval()
    att(x0, _ctx(20))
    before = copy.deepcopy(att).eval()
    att.train()
    x = torch.randn(10, DIM, requires_grad=True)
    out = att(x, _ctx(10))                                  # updates the codebook afterwards
    assert int(att.num_updates) == 1 and not torch.equal(att.centroids, before.centroids)
    assert torch.equal(out, before(x, _ctx(10)))            # computed with the old codebook
    out.pow(2).sum().backward()                             # despite the in-place update
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    w = att.in_proj.weight.grad
    for part in w.split(DIM):                               # Q, K and V all get gradients
        assert part.abs().sum() > 0
    assert att.out_proj.weight.grad.abs().sum() > 0
    assert not any(b.requires_grad for b in att.buffers())


def test_chunked_equals_unchunked_with_gradients():
    torch.manual_seed(0)
    a = _random_biases(CodebookAttention(DIM, heads=HEADS, codebook_size=7))
    b = CodebookAttention(DIM, heads=HEADS, codebook_size=7, chunk_size=4)
    b.load_state_dict(a.state_dict())
    x = torch.randn(11, DIM)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    oa, ob = a(xa, _ctx(11)), b(xb, _ctx(11))               # training: initialise + update
    torch.testing.assert_close(oa, ob, atol=1e-6, rtol=1e-6)
    oa.sum().backward()
    ob.sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a.in_proj.weight.grad, b.in_proj.weight.grad, atol=1e-5, rtol=1e-5)
    for name in ("centroids", "ema_count", "ema_sum"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-6, rtol=1e-6)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    att = CodebookAttention(DIM, heads=HEADS, codebook_size=6, dropout=0.5)
    distinct, _ = _repeated_inputs()
    att.set_codebook(distinct, MULTIPLICITIES.float())
    x = torch.randn(9, DIM)
    att.eval()
    ref = att(x, _ctx(9))
    assert torch.equal(ref, att(x, _ctx(9)))
    att.train()
    assert not torch.allclose(att(x, _ctx(9)), ref)


def test_empty_batch():
    att = CodebookAttention(DIM, heads=HEADS, codebook_size=4)
    with pytest.raises(ValueError, match="empty batch"):
        att(torch.randn(0, DIM), _ctx(0))
    att(torch.randn(5, DIM), _ctx(5))
    state = copy.deepcopy(att.state_dict())
    out = att(torch.randn(0, DIM), _ctx(0))                 # training, but nothing to learn
    assert out.shape == (0, DIM) and int(att.num_updates) == 1
    for name, buf in att.state_dict().items():
        assert torch.equal(buf, state[name]), name


# ---------------------------------------------------------------- state

def test_state_dict_round_trip_and_reset():
    torch.manual_seed(0)
    att = CodebookAttention(DIM, heads=HEADS, codebook_size=8, decay=0.5, dead_threshold=0.5)
    g = torch.Generator().manual_seed(0)
    for step in range(4):
        att(torch.randn(6, DIM, generator=g) + step, _ctx(6))
    assert int(att.num_restarts) > 0 and int(att.num_updates) == 4
    clone = CodebookAttention(DIM, heads=HEADS, codebook_size=8, decay=0.5, dead_threshold=0.5)
    clone.load_state_dict(att.state_dict())
    for name, buf in att.named_buffers():
        assert torch.equal(buf, getattr(clone, name)), name
    q = torch.randn(5, DIM)
    att.eval(), clone.eval()
    assert torch.equal(att(q, _ctx(5)), clone(q, _ctx(5)))
    att.train(), clone.train()                               # resumed training: same draws
    restarts = int(att.num_restarts)
    x = torch.randn(6, DIM, generator=g) + 10
    att(x, _ctx(6)), clone(x, _ctx(6))
    assert int(att.num_restarts) > restarts
    for name, buf in att.named_buffers():
        assert torch.equal(buf, getattr(clone, name)), name
    att.reset_parameters()
    assert not bool(att.initialized) and int(att.num_updates) == 0
    assert int(att.num_restarts) == 0 and att.ema_count.abs().sum() == 0
    assert not torch.equal(att.in_proj.weight, clone.in_proj.weight)


def test_set_codebook_validation():
    att = CodebookAttention(DIM, heads=HEADS, codebook_size=4)
    with pytest.raises(ValueError, match="codebook_size=4"):
        att.set_codebook(torch.randn(5, DIM), torch.ones(5))
    with pytest.raises(ValueError, match="expected \\[3\\]"):
        att.set_codebook(torch.randn(3, DIM), torch.ones(4))
    with pytest.raises(ValueError, match="not all zero"):
        att.set_codebook(torch.randn(3, DIM), torch.zeros(3))
    with pytest.raises(ValueError, match=">= 0"):
        att.set_codebook(torch.randn(3, DIM), torch.tensor([1.0, -1.0, 2.0]))


# ---------------------------------------------------------------- DDP

@pytest.mark.skipif(not (torch.distributed.is_available()
                         and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is required")
def test_ddp_two_ranks_keep_bitwise_identical_codebooks(tmp_path):
    """2 gloo processes, different data per rank, 10 DDP training steps: with sync=True the
    codebook buffers are bitwise equal on both ranks (restarts happened, centroids moved); with
    sync=False they differ."""
    run_ranks(Path(__file__).with_name("ddp_codebook_worker.py"), tmp_path)
    r0, r1 = (torch.load(tmp_path / f"sync_{r}.pt") for r in range(2))
    for name in ("centroids", "ema_count", "ema_sum", "num_updates", "num_restarts", "init"):
        assert torch.equal(r0[name], r1[name]), name
    assert int(r0["num_updates"]) == 10
    assert int(r0["num_restarts"]) > 0
    assert (r0["centroids"] - r0["init"]).abs().max() > 0.1
    assert torch.equal(r0["lin_weight"], r1["lin_weight"])  # DDP kept the parameters equal
    n0, n1 = (torch.load(tmp_path / f"nosync_{r}.pt") for r in range(2))
    assert int(n0["num_updates"]) == 10 and torch.equal(n0["lin_weight"], n1["lin_weight"])
    for name in ("centroids", "ema_count", "ema_sum"):
        assert not torch.equal(n0[name], n1[name]), name
