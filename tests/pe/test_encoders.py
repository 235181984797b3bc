"""PE encoders: shapes, NaN masking, per-graph sign flips in training only, SignNet invariance."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import erdos_renyi_graph

from graphgt.pe import (LapDeepSetEncoder, LapLinearEncoder, LaplacianPE, LapSignNetEncoder, LinearPEEncoder,
                        RandomWalkSE, random_sign_flip)
from graphgt.pe.encoders import TrainingRange

K = 4
LAP, RW = LaplacianPE(k=K), RandomWalkSE(steps=6)
LAP_ENCODERS = [LapLinearEncoder, LapDeepSetEncoder, LapSignNetEncoder]


def make_batch() -> Batch:
    """Three graphs: 7 and 9 nodes, and one of 3 nodes (< k: NaN-padded columns)."""
    torch.manual_seed(0)
    graphs = []
    for n in (7, 9):
        ei = erdos_renyi_graph(n, 0.5)
        graphs.append(RW(LAP(Data(edge_index=ei, num_nodes=n))))
    graphs.append(RW(LAP(Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3))))
    return Batch.from_data_list(graphs)


@pytest.mark.parametrize("cls", LAP_ENCODERS)
def test_lap_encoders_shape_and_nan_masking(cls):
    batch = make_batch()
    assert torch.isnan(batch.lap_vec).any()
    enc = cls(LAP, out_dim=5)
    for mode in (True, False):
        enc.train(mode)
        out = enc(batch)
        assert out.shape == (batch.num_nodes, 5) and torch.isfinite(out).all()
    # without data.batch the input is one graph
    single = Data(lap_vec=batch.lap_vec[:7], lap_val=batch.lap_val[:7])
    assert enc.train()(single).shape == (7, 5)


def test_linear_encoder_numbers():
    """h_i = sum over non-NaN j of W [v_j(i), λ_j] + b."""
    enc = LapLinearEncoder(LAP, out_dim=2).eval()
    with torch.no_grad():
        enc.lin.weight.copy_(torch.tensor([[1.0, 10.0], [2.0, 0.0]]))
        enc.lin.bias.copy_(torch.tensor([0.5, -1.0]))
    nan = float("nan")
    data = Data(lap_vec=torch.tensor([[0.1, 0.2, nan, nan]]), lap_val=torch.tensor([[0.0, 1.0, nan, nan]]))
    expected = torch.tensor([[(0.1 + 0.5) + (0.2 + 10 + 0.5), (0.2 - 1) + (0.4 - 1)]])
    torch.testing.assert_close(enc(data), expected)


def test_deepset_mean_reduce_ignores_padding():
    enc = LapDeepSetEncoder(LAP, out_dim=3, reduce="mean", sign_flip=False)
    nan = float("nan")
    data = Data(lap_vec=torch.tensor([[0.3, 0.3, nan, nan]]), lap_val=torch.tensor([[0.5, 0.5, nan, nan]]))
    one = Data(lap_vec=torch.tensor([[0.3, nan, nan, nan]]), lap_val=torch.tensor([[0.5, nan, nan, nan]]))
    torch.testing.assert_close(enc(data), enc(one))


def test_random_sign_flip_is_per_graph():
    torch.manual_seed(1)
    batch = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    seen = set()
    for _ in range(20):
        out = random_sign_flip(torch.ones(9, K), batch, num_graphs=3)
        assert set(out.unique().tolist()) <= {-1.0, 1.0}
        for g in range(3):
            rows = out[batch == g]
            assert torch.equal(rows, rows[:1].expand_as(rows))  # one sign per (graph, eigenvector)
        seen.add(tuple(out[[0, 3, 5]].flatten().tolist()))
    assert len(seen) > 1  # the graphs' patterns vary between calls


@pytest.mark.parametrize("cls", [LapLinearEncoder, LapDeepSetEncoder])
def test_sign_flips_only_in_training_and_per_graph(cls):
    batch = make_batch()
    enc = cls(LAP, out_dim=3, sign_flip=True)
    enc.eval()
    assert torch.equal(enc(batch), enc(batch))  # eval: no randomness
    patterns = [torch.tensor(p, dtype=torch.float32) for p in itertools.product([-1, 1], repeat=K)]
    outputs = {}
    for p in patterns:  # eval outputs of every sign pattern applied to the whole batch
        flipped = batch.clone()
        flipped.lap_vec = batch.lap_vec * p
        outputs[tuple(p.tolist())] = enc(flipped).detach()
    enc.train()
    torch.manual_seed(2)
    flipped_any = False
    for _ in range(5):
        out = enc(batch).detach()
        for g in range(batch.num_graphs):
            rows = batch.batch == g
            match = [p for p, o in outputs.items() if torch.allclose(out[rows], o[rows], atol=1e-6)]
            assert match, "each graph's output must be that of one sign pattern for all its nodes"
            flipped_any |= all(p != (1.0,) * K for p in match)
    assert flipped_any
    enc_no = cls(LAP, out_dim=3, sign_flip=False).train()
    assert torch.equal(enc_no(batch), enc_no(batch))


def test_signnet_is_exactly_sign_invariant():
    batch = make_batch()
    enc = LapSignNetEncoder(LAP, out_dim=6, layers=3)
    base = enc.eval()(batch)
    torch.manual_seed(3)
    for _ in range(3):
        flipped = batch.clone()
        flipped.lap_vec = random_sign_flip(batch.lap_vec, batch.batch, batch.num_graphs)
        assert torch.equal(enc(flipped), base)
    assert torch.equal(enc.train()(batch), base)  # no random flips, no dropout: same in training


def test_linear_pe_encoder_for_rwse():
    batch = make_batch()
    enc = LinearPEEncoder(RW, out_dim=4)
    assert enc.train()(batch).shape == (batch.num_nodes, 4)
    plain = LinearPEEncoder(RW, out_dim=4, norm=False)
    with torch.no_grad():
        expected = batch.rwse @ plain.lin.weight.T + plain.lin.bias
    torch.testing.assert_close(plain(batch), expected)
    with pytest.raises(ValueError, match="LapLinearEncoder"):
        LinearPEEncoder(LAP, out_dim=4)
    with pytest.raises(ValueError, match="LinearPEEncoder"):
        LapLinearEncoder(RW, out_dim=4)
    with pytest.raises(ValueError, match="out_dim"):
        LinearPEEncoder(RW, out_dim=0)
    with pytest.raises(ValueError, match="layers"):
        LapDeepSetEncoder(LAP, out_dim=4, layers=0)
    with pytest.raises(ValueError, match="reduce"):
        LapDeepSetEncoder(LAP, out_dim=4, reduce="max")


@pytest.mark.parametrize("make", [
    lambda: LapLinearEncoder(LAP, 4), lambda: LapDeepSetEncoder(LAP, 4), lambda: LapSignNetEncoder(LAP, 4),
    lambda: LinearPEEncoder(RW, 4)])
def test_reset_parameters(make):
    enc = make()
    before = [p.detach().clone() for p in enc.parameters()]
    with torch.no_grad():
        for p in enc.parameters():
            p.fill_(0.123)
    enc.reset_parameters()
    after = list(enc.parameters())
    assert all(not torch.all(a == 0.123) for a in after if a.numel() > 1)
    assert [a.shape for a in after] == [b.shape for b in before]
    assert enc.out_dim == 4


def test_repr():
    assert repr(LapLinearEncoder(LAP, 4)) == "LapLinearEncoder(k=4, out_dim=4, sign_flip=True)"
    assert repr(LapDeepSetEncoder(LAP, 4, layers=3)) == \
        "LapDeepSetEncoder(k=4, out_dim=4, hidden=4, layers=3, reduce='sum', sign_flip=True)"
    assert repr(LapSignNetEncoder(LAP, 8, hidden=5)) == "LapSignNetEncoder(k=4, out_dim=8, hidden=5, layers=2)"
    assert repr(LinearPEEncoder(RW, 4, norm=False)) == \
        "LinearPEEncoder(key='rwse', in_dim=6, out_dim=4, norm=False, clamp=True)"
    assert repr(LinearPEEncoder(RW, 4, clamp=False)) == \
        "LinearPEEncoder(key='rwse', in_dim=6, out_dim=4, norm=True, clamp=False)"
    assert repr(TrainingRange(6)) == "TrainingRange(6)"


# ------------------------------------------------------------------ TrainingRange (issue 14)
def test_training_range_learns_in_training_and_clamps_in_eval():
    rng = TrainingRange(3)
    x = torch.tensor([[0.0, 0.2, 5.0], [0.0, 0.4, -1.0]])
    assert torch.equal(rng.eval()(x), x)                      # nothing seen yet: unchanged
    assert torch.equal(rng.train()(x), x)                     # training: the range grows, output = input
    assert rng.low.tolist() == [0.0, pytest.approx(0.2), -1.0] and rng.high.tolist() == [0.0, pytest.approx(0.4), 5.0]
    rng.train()(torch.tensor([[0.0, 0.1, 2.0]]))
    assert rng.low[1].item() == pytest.approx(0.1)            # the union of every training batch
    out = rng.eval()(torch.tensor([[0.3, 0.9, -7.0], [0.0, 0.3, 1.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.4, -1.0], [0.0, 0.3, 1.0]]))
    rng.reset_parameters()
    assert torch.isinf(rng.low).all() and torch.isinf(rng.high).all()


def test_unseen_structure_cannot_explode_the_rwse_encoder():
    """A column that is 0 on every training node (odd-step return probabilities of bipartite
    molecules) gets a BatchNorm running variance near 0: an unseen value 0.2 becomes a z-score of
    ~60 without the clamp (GraphGPS's encoder), and changes nothing with it."""
    torch.manual_seed(0)
    train = torch.rand(64, 6)
    train[:, 2] = 0.0
    batch = Data(rwse=train, num_nodes=64)
    for make, exploded in ((lambda: LinearPEEncoder(RW, 4, clamp=False), True), (lambda: LinearPEEncoder(RW, 4), False)):
        enc = make().train()
        for _ in range(100):
            enc(batch)
        enc.eval()
        seen, unseen = train[:1].clone(), train[:1].clone()
        unseen[0, 2] = 0.2
        with torch.no_grad():
            gap = (enc(Data(rwse=unseen, num_nodes=1)) - enc(Data(rwse=seen, num_nodes=1))).abs().max().item()
            z = (enc.norm(unseen) - enc.norm(seen)).abs().max().item() if not exploded else \
                ((0.2 - enc.norm.running_mean[2]) / (enc.norm.running_var[2] + enc.norm.eps).sqrt()).item()
        if exploded:
            assert z > 30 and gap > 1.0
        else:
            assert gap == 0.0


def test_checkpoints_without_the_range_still_load():
    old = LinearPEEncoder(RW, 4, clamp=False).state_dict()
    enc = LinearPEEncoder(RW, 4)
    enc.load_state_dict(old)                                   # strict: the missing range = nothing seen
    assert torch.isinf(enc.clamp.low).all()

