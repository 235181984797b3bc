"""Tests of SyncBatchNorm / convert_sync_batchnorm (global-batch BatchNorm1d on any device).

The 2-process gloo test runs this file as its own worker:
``python test_sync_batchnorm.py RANK WORLD_SIZE PORT OUT_DIR`` joins a gloo group on
127.0.0.1:PORT, runs every case of ``CASES`` on the rank's slice of a fixed random batch (plus
three DDP steps of a converted model, a global batch of one row and an eval-mode call) and
writes ``OUT_DIR/rank_RANK.pt``; the tests compare that with ``nn.BatchNorm1d`` on the
concatenated batch in one process.
"""
from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402

from graphgt.nn.sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm  # noqa: E402
from tests.train.ddp import free_port, join_ranks_from_argv, run_ranks  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
IN_DIM, C = 3, 4

# name -> (rows per rank, extra kwargs). Each case: two training calls (different batches) of
# Linear -> [+ offset] -> SyncBatchNorm -> squared error to fixed targets, grads accumulated
# over both calls.
CASES = {
    "unequal": dict(rows=(5, 9)),
    "empty_rank": dict(rows=(0, 7)),
    "momentum_none": dict(rows=(6, 3), momentum=None),
    "no_running_stats": dict(rows=(4, 4), track_running_stats=False),
    "three_dim": dict(rows=(2, 3), length=5),                       # [N, C, L] inputs
    "offset": dict(rows=(5, 9), offset=1000.0),                     # |mean| >> std
    "bf16": dict(rows=(5, 9), bf16=True),                           # bf16 input, fp32 module
}
TOL = {"offset": 1e-3, "bf16": 2e-2}                                # measured: 2e-4, 8e-3


def _case_data(name: str, spec: dict) -> dict:
    """Deterministic model and data of a case (the same in every process)."""
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    n = sum(spec["rows"])
    shape = (n, IN_DIM, spec["length"]) if "length" in spec else (n, IN_DIM)
    xs = [torch.randn(*shape, generator=g) for _ in range(2)]
    targets = [torch.randn(n, C, *shape[2:], generator=g) for _ in range(2)]
    lin_w, lin_b = torch.randn(C, IN_DIM, generator=g), torch.randn(C, generator=g)
    bn_w, bn_b = torch.rand(C, generator=g) + 0.5, torch.randn(C, generator=g)
    return dict(xs=xs, targets=targets, lin_w=lin_w, lin_b=lin_b, bn_w=bn_w, bn_b=bn_b)


def _run_case(spec: dict, data: dict, bn: nn.BatchNorm1d, rows: slice) -> dict:
    """Two forward/backward calls of Linear -> BN on ``rows`` of each batch; outputs, grads and
    BN state."""
    lin = nn.Linear(IN_DIM, C)
    with torch.no_grad():
        lin.weight.copy_(data["lin_w"])
        lin.bias.copy_(data["lin_b"])
        bn.weight.copy_(data["bn_w"])
        bn.bias.copy_(data["bn_b"])
    bn.train()
    ys, h_grads = [], []
    for x, t in zip(data["xs"], data["targets"]):
        x, t = x[rows], t[rows]
        h = lin(x.transpose(1, 2)).transpose(1, 2) if x.dim() == 3 else lin(x)
        h = h + spec.get("offset", 0.0)
        if spec.get("bf16"):
            h = h.bfloat16()
        h.retain_grad()
        y = bn(h)
        (y.float() - t).pow(2).sum().backward()      # (sum(y^2) has zero input grad)
        ys.append(y.detach().float())
        h_grads.append(h.grad.float())
    # lin.bias.grad is 0 up to rounding (BN removes shifts), so it is not compared
    out = {"y0": ys[0], "y1": ys[1], "h_grad0": h_grads[0], "h_grad1": h_grads[1],
           "y_dtype": str(y.dtype), "lin_w_grad": lin.weight.grad,
           "bn_w_grad": bn.weight.grad, "bn_b_grad": bn.bias.grad}
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        buf = getattr(bn, key)
        out[key] = None if buf is None else buf.clone()
    return out


def _bn_kwargs(spec: dict) -> dict:
    return {k: spec[k] for k in ("momentum", "track_running_stats") if k in spec}


def _ddp_step(model: nn.Module, rows: slice, loss_scale: float) -> dict:
    """Three SGD steps of ``model`` (Linear -> BatchNorm1d) on ``rows`` of a fixed batch."""
    g = torch.Generator().manual_seed(7)
    x, t = torch.randn(14, IN_DIM, generator=g), torch.randn(14, C, generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        (loss_scale * (model(x[rows]) - t[rows]).pow(2).sum()).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _ddp_model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(IN_DIM, C), nn.BatchNorm1d(C))


def _worker(rank: int, world: int, out_dir: str) -> None:
    results = {}
    # DDP (gradients averaged over ranks) of a converted model, 5 and 9 rows
    from torch.nn.parallel import DistributedDataParallel
    ddp = DistributedDataParallel(convert_sync_batchnorm(_ddp_model()))
    assert isinstance(ddp.module[1], SyncBatchNorm)
    results["ddp"] = {k.removeprefix("module."): v for k, v in
                      _ddp_step(ddp, slice(0, 5) if rank == 0 else slice(5, 14), 1.0).items()}
    for name, spec in CASES.items():
        start = sum(spec["rows"][:rank])
        rows = slice(start, start + spec["rows"][rank])
        results[name] = _run_case(spec, _case_data(name, spec),
                                  SyncBatchNorm(C, **_bn_kwargs(spec)), rows)
    # one row in all (rank 0: 1, rank 1: 0): every rank raises, and the group stays usable
    try:
        SyncBatchNorm(C).train()(torch.randn(1 - rank, C))
        results["single_row_error"] = ""
    except ValueError as e:
        results["single_row_error"] = str(e)
    t = torch.ones(1)
    dist.all_reduce(t)
    results["after_error_all_reduce"] = float(t)
    # eval mode: plain BatchNorm1d with the (rank-specific here) running stats, bitwise
    ref = nn.BatchNorm1d(C).eval()
    with torch.no_grad():
        ref.running_mean.normal_()
        ref.running_var.uniform_(0.5, 2)
    bn = SyncBatchNorm(C).eval()
    bn.load_state_dict(ref.state_dict())
    x = torch.randn(3, C)
    results["eval_equal"] = torch.equal(bn(x), ref(x))
    torch.save(results, os.path.join(out_dir, f"rank_{rank}.pt"))


def _worker_main() -> None:
    rank, world, out_dir = join_ranks_from_argv()
    try:
        _worker(rank, world, out_dir)
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- single process

def _pair(**kw) -> tuple[nn.BatchNorm1d, SyncBatchNorm]:
    torch.manual_seed(0)
    ref = nn.BatchNorm1d(C, **kw)
    if ref.affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.normal_()
    sync = SyncBatchNorm(C, **kw)
    sync.load_state_dict(ref.state_dict())
    return ref, sync


def _assert_bitwise_same(ref: nn.BatchNorm1d, sync: SyncBatchNorm, shape: tuple) -> None:
    g = torch.Generator().manual_seed(1)
    for training in (True, True, False, True):
        ref.train(training)
        sync.train(training)
        x = torch.randn(*shape, generator=g) * 3 + 1
        xr, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
        w = torch.randn(*shape, generator=g)
        yr, ys = ref(xr), sync(xs)
        assert torch.equal(yr, ys)
        (yr * w).sum().backward()
        (ys * w).sum().backward()
        assert torch.equal(xr.grad, xs.grad)
        for (kr, vr), (ks, vs) in zip(ref.state_dict().items(), sync.state_dict().items()):
            assert kr == ks and torch.equal(vr, vs), kr
        if ref.affine:
            assert torch.equal(ref.weight.grad, sync.weight.grad)
            assert torch.equal(ref.bias.grad, sync.bias.grad)


@pytest.mark.parametrize("kw,shape", [
    ({}, (7, C)),
    ({"momentum": None}, (6, C)),
    ({"affine": False}, (5, C)),
    ({"track_running_stats": False}, (5, C)),
    ({}, (3, C, 4)),
])
def test_single_process_is_bitwise_batchnorm1d(kw, shape):
    ref, sync = _pair(**kw)
    _assert_bitwise_same(ref, sync, shape)
    assert int(sync.num_batches_tracked if sync.num_batches_tracked is not None else 3) == 3


def test_single_process_group_of_size_one_is_bitwise_batchnorm1d():
    if not (dist.is_available() and dist.is_gloo_available()) or dist.is_initialized():
        pytest.skip("needs gloo and no initialised process group")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1)
    try:
        _assert_bitwise_same(*_pair(), (6, C))
    finally:
        dist.destroy_process_group()


def test_errors_state_dict_and_repr():
    sync = SyncBatchNorm(C).train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        sync(torch.randn(1, C))
    with pytest.raises(ValueError):
        sync(torch.randn(2, C, 3, 3))
    assert set(sync.state_dict()) == set(nn.BatchNorm1d(C).state_dict()) == {
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    nn.BatchNorm1d(C).load_state_dict(sync.state_dict())
    assert "sync=True" in repr(sync) and repr(sync).startswith("SyncBatchNorm(4, eps=1e-05")
    assert isinstance(sync, nn.BatchNorm1d)


# ---------------------------------------------------------------- convert_sync_batchnorm

def test_convert_sequential():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, C), nn.BatchNorm1d(C), nn.ReLU(), nn.Linear(C, 2),
                          nn.BatchNorm2d(2))
    model[1](torch.randn(8, C) * 2 + 1)                     # non-trivial running stats
    model[1].weight.requires_grad_(False)
    model.eval()
    before = copy.deepcopy(model.state_dict())
    children = list(model)
    x = torch.randn(6, 3)
    y_before = model[:4](x)
    assert convert_sync_batchnorm(model) is model
    assert type(model[1]) is SyncBatchNorm and not model[1].training
    assert model[1].weight is children[1].weight and not model[1].weight.requires_grad
    assert model[1].running_mean is children[1].running_mean
    for i in (0, 2, 3, 4):
        assert model[i] is children[i]                      # Linear, ReLU, BatchNorm2d untouched
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(model[:4](x), y_before)
    assert convert_sync_batchnorm(model)[1] is model[1]     # already synchronised: kept


def test_convert_root_dtype_and_pyg_batchnorm():
    from torch_geometric.nn.norm import BatchNorm as PygBatchNorm

    root = nn.BatchNorm1d(C, momentum=None, eps=1e-3, dtype=torch.float64)
    new = convert_sync_batchnorm(root, process_group=None)
    assert type(new) is SyncBatchNorm and new is not root
    assert (new.momentum, new.eps, new.weight.dtype) == (None, 1e-3, torch.float64)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, C)
            self.norm = PygBatchNorm(C)

        def forward(self, x):
            return self.norm(self.lin(x))

    torch.manual_seed(0)
    net, x = Net(), torch.randn(10, 3)
    ref = copy.deepcopy(net)
    before = copy.deepcopy(net.state_dict())
    lin = net.lin
    convert_sync_batchnorm(net)
    assert type(net.norm) is PygBatchNorm and type(net.norm.module) is SyncBatchNorm
    assert net.lin is lin
    assert list(net.state_dict()) == list(before)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    for training in (True, False):                          # single process: same as before
        net.train(training)
        ref.train(training)
        assert torch.equal(net(x), ref(x))
    assert torch.equal(net.norm.module.running_var, ref.norm.module.running_var)


# ---------------------------------------------------------------- 2 processes, gloo

def _reference(name: str, spec: dict) -> dict:
    n = sum(spec["rows"])
    return _run_case(spec, _case_data(name, spec), nn.BatchNorm1d(C, **_bn_kwargs(spec)),
                     slice(0, n))


def _rel_diff(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref|, relative to max |ref| where that exceeds 1."""
    return ((a - ref).abs().max() / ref.abs().max().clamp_min(1)).item()


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is required")
    out = tmp_path_factory.mktemp("sync_bn")
    run_ranks(Path(__file__), out)
    return [torch.load(out / f"rank_{r}.pt") for r in range(2)]


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_match_batchnorm1d_on_union_batch(two_rank_results, name):
    """Each rank's outputs are the reference's rows; grads summed over ranks equal the reference
    grads of the summed loss; running stats equal the reference's on every rank."""
    spec = CASES[name]
    res = [r[name] for r in two_rank_results]
    ref = _reference(name, spec)
    atol = TOL.get(name, 1e-5)
    diffs = {}
    for key in ("y0", "y1", "h_grad0", "h_grad1"):          # each rank's rows of the reference
        assert res[0][key].shape[0] == spec["rows"][0]
        diffs[key] = _rel_diff(torch.cat([r[key] for r in res]), ref[key])
    for key in ("lin_w_grad", "bn_w_grad", "bn_b_grad"):   # summed over ranks
        diffs[key] = _rel_diff(res[0][key] + res[1][key], ref[key])
    for key in ("running_mean", "running_var"):
        if ref[key] is None:
            assert all(r[key] is None for r in res)
            continue
        assert torch.equal(res[0][key], res[1][key])
        diffs[key] = (res[0][key] - ref[key]).abs().max().item()
    if ref["num_batches_tracked"] is not None:
        assert int(ref["num_batches_tracked"]) == 2
        assert all(int(r["num_batches_tracked"]) == 2 for r in res)
    print(name, {k: f"{v:.1e}" for k, v in diffs.items()})
    assert all(v <= atol for v in diffs.values()), (name, diffs)
    if spec.get("bf16"):
        assert res[0]["y_dtype"] == "torch.bfloat16"


def test_two_ranks_ddp_of_converted_model_matches_single_process(two_rank_results):
    """DDP averages the ranks' gradients, so it follows one process with the loss halved."""
    ref = _ddp_step(_ddp_model(), slice(0, 14), 0.5)
    r0, r1 = (r["ddp"] for r in two_rank_results)
    assert list(r0) == list(ref)
    for key in ref:
        assert torch.equal(r0[key], r1[key]), key
        assert torch.allclose(r0[key].double(), ref[key].double(), atol=1e-5), key
    assert not torch.equal(ref["0.weight"], _ddp_model().state_dict()["0.weight"])


def test_two_ranks_single_row_raises_everywhere_and_eval_is_local(two_rank_results):
    for r in two_rank_results:
        assert "Expected more than 1 value per channel" in r["single_row_error"]
        assert r["after_error_all_reduce"] == 2.0
        assert r["eval_equal"]


if __name__ == "__main__":
    _worker_main()
