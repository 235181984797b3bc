"""Every global attention module, local layer, PE encoder and whole model runs forward and backward
under bf16 autocast, close to float32, and never accumulates a sum in bf16.

The modules are discovered from ``configs/attention/*.yaml`` and ``configs/local/*.yaml`` (built with
Hydra's ``instantiate``, as the app builds them), and :func:`test_every_module_class_has_a_config`
fails for a :class:`GlobalAttention` / :class:`LocalMP` class that no config builds: a new module
is covered as soon as it has its config, and cannot be added without one.

Two autocast policies are run:

``cpu``
    ``torch.autocast("cpu", dtype=torch.bfloat16)`` itself.
``cuda``
    CPU autocast plus :class:`CudaAutocastPolicy`, which adds what CUDA's autocast does beyond
    CPU's: the ops CUDA runs in float32 (``exp``, ``softmax``, ``sum``, ``pow``, ``log``,
    ``layer_norm``, ... from torch's "CUDA ops that can autocast to float32" list) get their
    bf16 inputs cast to float32, and ``scatter_add``/``index_put`` promote to the widest input
    type. This reproduces on CPU the failure reported from an H200 ("expander raises
    ``index_add_(): self (BFloat16) and source (Float) must have the same scalar type``": CPU
    autocast leaves ``exp`` in bf16, CUDA's does not). The same mode records every sum-like
    scatter (``index_add_``, ``scatter_add_``, ``scatter_reduce_(sum|mean)``, ...) whose
    accumulator is bf16/fp16: on CUDA those accumulate in bf16 (atomic adds) and drop the small
    terms of a hub's sum, so the tests require that there is none. (CPU's kernels accumulate bf16
    scatters in float32 internally, which is why this can only be checked by recording them.)

Tolerances (bf16 has 8 significant bits: unit roundoff ``2^-9 ~ 2e-3``). Outputs: ``max |bf16 -
fp32| / max |fp32| < 5e-2``; a module here is 2-5 roundings deep (input, projections, logits,
output), each ``<= 2^-9`` relative, plus the products' rounding, so a correct module stays below
~1.5e-2 (measured max 1.0e-2, PerformerAttention) and a bf16-accumulated sum over the test graph's
hub (149 terms) or a bf16-ranked TopM (measured 0.55 before the fix) fails. Gradients:
``||g_bf16 - g_fp32|| / ||g_fp32|| < 0.1`` over all gradients together. A max-elementwise bound
would be meaningless for them: where a ReLU's input is within bf16 rounding of 0 its mask flips,
which changes that unit's gradient by 100%, and one flip at the hub moves the gradient of all its
149 neighbours (measured: 12% max-elementwise, 2.9% norm-wise, GINLayer).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import pkgutil
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map
from torch_geometric.data import Batch, Data

import graphgt.nn.attention
import graphgt.nn.local
from graphgt.nn.attention.base import AttentionContext, GlobalAttention
from graphgt.nn.largegt import LargeGTModel
from graphgt.nn.local.base import ConvAdapter, LocalMP
from graphgt.nn.model import GPSModel, MPNNModel
from graphgt.pe import LaplacianPE, RandomWalkSE
from graphgt.pe.encoders import LapDeepSetEncoder, LapLinearEncoder, LapSignNetEncoder, LinearPEEncoder
from graphgt.spec import DataSpec, FloatFeatures, Task

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LOW = (torch.bfloat16, torch.float16)
OUT_TOL = 5e-2      # max |bf16 - fp32| / max |fp32| of an output (module docstring)
GRAD_TOL = 0.1      # ||g_bf16 - g_fp32|| / ||g_fp32|| over all gradients (module docstring)
SMALL = {"codebook_size": 16, "m": 8, "num_features": 16, "expander_degree": 2, "heads": 2}
DIM = 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: a second intra-op thread only adds synchronisation (100x slower on a busy
    2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- the CUDA autocast policy on CPU

def _functions(names: list[str]) -> set:
    found = set()
    for name in names:
        for namespace in (torch, torch.Tensor, F, torch.linalg):
            fn = getattr(namespace, name, None)
            if fn is not None:
                found.add(fn)
    return found


# torch's "CUDA Ops that can autocast to float32" and "CUDA Ops that promote to the widest input type"
CUDA_FP32 = _functions([
    "__pow__", "__rdiv__", "__rpow__", "__rtruediv__", "acos", "asin", "cosh", "erfinv", "exp", "expm1",
    "log", "log10", "log2", "log1p", "reciprocal", "rsqrt", "sinh", "tan", "pow", "softplus", "layer_norm",
    "group_norm", "norm", "normalize", "cosine_similarity", "softmax", "log_softmax", "softmin", "cumprod",
    "cumsum", "dist", "pdist", "cdist", "renorm", "logsumexp", "sum", "prod", "mse_loss", "l1_loss",
    "nll_loss", "cross_entropy", "binary_cross_entropy_with_logits", "kl_div", "smooth_l1_loss"])
CUDA_PROMOTE = _functions(["addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "index_put",
                           "scatter_add", "tensordot"])
# sum-like accumulations (in place or not): a bf16 accumulator there sums in bf16 on CUDA
SUMS = _functions(["index_add", "index_add_", "scatter_add", "scatter_add_", "index_put", "index_put_"])
REDUCES = _functions(["scatter_reduce", "scatter_reduce_", "index_reduce", "index_reduce_"])


class CudaAutocastPolicy(TorchFunctionMode):
    """Adds CUDA autocast's float32 and promote lists to CPU autocast (module docstring) and
    records every sum-like scatter into a bf16/fp16 accumulator in ``low_precision_sums``."""

    def __init__(self) -> None:
        super().__init__()
        self.low_precision_sums: list[str] = []

    def _record(self, func, args, kwargs) -> None:
        name = getattr(func, "__name__", str(func))
        tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, Tensor)]
        if func in REDUCES:
            reduce = kwargs.get("reduce", args[4] if len(args) > 4 else None)
            if reduce not in ("sum", "mean"):
                return
        elif func in (torch.Tensor.index_put_, torch.Tensor.index_put, torch.index_put):
            if not kwargs.get("accumulate", args[3] if len(args) > 3 else False):
                return
        if any(t.dtype in LOW for t in tensors):
            self.low_precision_sums.append(name)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SUMS or func in REDUCES:
            self._record(func, args, kwargs)
        if func in CUDA_FP32:
            def up(t):
                return t.float() if isinstance(t, Tensor) and t.dtype in LOW else t
            args, kwargs = tree_map(up, args), tree_map(up, kwargs)
        elif func in CUDA_PROMOTE:
            floats = [t.dtype for t in tree_map(lambda t: t, list(args)) if isinstance(t, Tensor)
                      and t.is_floating_point()]
            if floats:
                widest = functools.reduce(torch.promote_types, floats)
                args = tree_map(lambda t: t.to(widest) if isinstance(t, Tensor) and t.is_floating_point()
                                else t, args)
        return func(*args, **kwargs)


@contextlib.contextmanager
def autocast(policy: str) -> Iterator[CudaAutocastPolicy | None]:
    """bf16 autocast on CPU; ``policy="cuda"`` adds :class:`CudaAutocastPolicy` (yielded)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if policy == "cpu":
            yield None
        else:
            with CudaAutocastPolicy() as mode:
                yield mode


POLICIES = ["cpu", "cuda"]


def test_the_cuda_policy_reproduces_the_h200_expander_error():
    """The emulation is what makes the ``cuda`` runs below meaningful: it must reproduce the
    reported failure of the unfixed expander (a bf16 buffer, an ``exp`` output in float32)."""
    v = torch.randn(6, 4)
    with autocast("cuda"):
        alpha = torch.exp(torch.randn(6, 1).bfloat16())      # float32 under the CUDA policy only
        buf = torch.zeros(3, 4, dtype=torch.bfloat16)
        with pytest.raises(RuntimeError, match="must have the same scalar type"):
            buf.index_add_(0, torch.tensor([0, 1, 2, 0, 1, 2]), alpha * v.bfloat16())
    with autocast("cuda") as mode:
        torch.zeros(3, dtype=torch.bfloat16).index_add_(0, torch.tensor([0, 1]), torch.ones(2).bfloat16())
        torch.zeros(3).index_add_(0, torch.tensor([0, 1]), torch.ones(2))
    assert mode.low_precision_sums == ["index_add_"]
    with autocast("cpu"):
        assert torch.exp(torch.randn(2).bfloat16()).dtype == torch.bfloat16


# ---------------------------------------------------------------- module discovery

def _configs(group: str) -> dict[str, Callable[[int], nn.Module]]:
    """name -> factory ``dim -> module`` of every config of ``configs/<group>/`` with a ``_target_``
    (``none.yaml`` has none), with the sizes of :data:`SMALL` where the config has those keys."""
    out = {}
    for path in sorted((CONFIGS / group).glob("*.yaml")):
        cfg = OmegaConf.load(path)
        if "_target_" not in cfg:
            continue
        for key, value in SMALL.items():
            if key in cfg:
                cfg[key] = value
        out[path.stem] = instantiate(cfg)
    return out


ATTENTIONS = _configs("attention")
LOCALS = _configs("local")


def _classes(package, base: type) -> set[type]:
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    found, todo = set(), [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith(package.__name__ + "."):
                found.add(sub)
    return found


def test_every_module_class_has_a_config():
    built_attention = {type(f(DIM)) for f in ATTENTIONS.values()}
    built_local = {type(f(DIM)) for f in LOCALS.values()}
    assert _classes(graphgt.nn.attention, GlobalAttention) == built_attention
    assert _classes(graphgt.nn.local, LocalMP) - {ConvAdapter} == built_local
    assert {"full", "performer", "expander", "topm", "codebook"} <= set(ATTENTIONS)
    assert {"gcn", "gat", "gin", "gine", "gatedgcn", "sage"} <= set(LOCALS)


# ---------------------------------------------------------------- inputs

def _graphs(seed: int = 0, sizes=(20, 150)) -> Batch:
    """Graphs of ``sizes`` nodes; in the last, node 0 is a hub with an in-edge from every other node
    (a 149-term sum that a bf16 accumulator gets wrong)."""
    g = torch.Generator().manual_seed(seed)
    graphs = []
    for i, n in enumerate(sizes):
        ei = torch.randint(0, n, (2, 3 * n), generator=g)
        if i == len(sizes) - 1:
            ei = torch.cat([ei, torch.stack([torch.arange(1, n), torch.zeros(n - 1, dtype=torch.long)])], 1)
        graphs.append(Data(x=torch.randn(n, 5, generator=g), edge_index=ei,
                           edge_attr=torch.randn(ei.size(1), 2, generator=g), y=torch.tensor([i % 3])))
    return Batch.from_data_list(graphs)


def _rel(a: Tensor, b: Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _grads(tensors: list[Tensor], module: nn.Module) -> dict[str, Tensor]:
    grads = {f"input{i}": t.grad for i, t in enumerate(tensors) if t.grad is not None}
    grads.update({n: p.grad for n, p in module.named_parameters() if p.grad is not None})
    return grads


def _run(module: nn.Module, call: Callable, inputs: list[Tensor], policy: str | None, seed: int = 0):
    """``call(module, *inputs)`` forward and backward (a fixed random linear loss) on a copy of
    ``module``, in float32 (``policy=None``) or under bf16 autocast; same global RNG state both ways.
    Returns (output, gradients by name, the recorded low-precision sums)."""
    module = copy.deepcopy(module)
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    torch.manual_seed(seed)
    with (autocast(policy) if policy else contextlib.nullcontext()) as mode:
        out = call(module, *leaves)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1))
    (out.float() * weight).sum().backward()
    return out, _grads(leaves, module), (mode.low_precision_sums if mode is not None else [])


def _check_close(module: nn.Module, call: Callable, inputs: list[Tensor], policy: str) -> tuple[Tensor, Tensor]:
    """bf16 autocast vs float32 (the float32 run sees the same, possibly bf16-rounded, inputs)."""
    ref_inputs = [t.float() if t.dtype in LOW else t for t in inputs]
    ref, ref_grads, _ = _run(module, call, ref_inputs, None)
    out, grads, low_sums = _run(module, call, inputs, policy)
    assert out.shape == ref.shape
    assert torch.isfinite(out.float()).all()
    assert _rel(out, ref) < OUT_TOL, f"bf16 output off by {_rel(out, ref):.3g} (relative to max |fp32|)"
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():    # parameters keep float32 gradients (autocast casts copies)
        assert torch.isfinite(grad).all() and (name.startswith("input") or grad.dtype == torch.float32), name
    flat = torch.cat([g.flatten().float() for g in grads.values()])
    ref_flat = torch.cat([g.flatten().float() for g in ref_grads.values()])
    err = float((flat - ref_flat).norm() / ref_flat.norm())
    assert err < GRAD_TOL, f"bf16 gradients off by {err:.3g} (norm-wise)"
    assert low_sums == [], f"sums accumulated in bf16: {low_sums}"
    return out, ref


# ---------------------------------------------------------------- modules

@pytest.fixture(scope="module")
def graphs() -> Batch:
    return _graphs()


def _node_inputs(graphs: Batch, dtype: torch.dtype) -> list[Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(graphs.num_nodes, DIM, generator=g).to(dtype)
    edge_attr = torch.randn(graphs.num_edges, DIM, generator=g).to(dtype)
    return [x, edge_attr]


# a float32 input is what the first layer receives, a bf16 one what a module receives inside a bf16
# layer stack (BatchNorm keeps the dtype); training mode (batch statistics, EMA updates, resampled
# expanders) is what the trainer autocasts, evaluation mode its validation
MODES = [(torch.float32, True), (torch.bfloat16, True), (torch.bfloat16, False)]
MODE_IDS = ["x_fp32-train", "x_bf16-train", "x_bf16-eval"]


@pytest.mark.parametrize("dtype, train", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_attention_under_autocast(graphs, name, policy, dtype, train):
    torch.manual_seed(0)
    module = ATTENTIONS[name](DIM).train(train)
    ctx = AttentionContext.from_batch(graphs)
    out, _ = _check_close(module, lambda m, x, e: m(x, ctx), _node_inputs(graphs, dtype), policy)
    assert out.dtype == torch.bfloat16   # the output projection ran under autocast


@pytest.mark.parametrize("dtype, train", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", sorted(LOCALS))
def test_local_layer_under_autocast(graphs, name, policy, dtype, train):
    torch.manual_seed(0)
    module = LOCALS[name](DIM).train(train)
    _check_close(module, lambda m, x, e: m(x, graphs.edge_index, e)[0], _node_inputs(graphs, dtype), policy)


@pytest.mark.parametrize("policy", POLICIES)
def test_codebook_update_assigns_in_float32_under_autocast(graphs, policy):
    """The EMA k-means step runs inside the trainer's autocast: its distances must not be bf16
    (an autocast ``addmm`` misassigns close inputs), so the codebook after a training call is the
    float32 one."""
    torch.manual_seed(0)
    module = ATTENTIONS["codebook"](DIM).train()
    x = torch.randn(graphs.num_nodes, DIM, generator=torch.Generator().manual_seed(4))
    ctx = AttentionContext.from_batch(graphs)
    ref, amp = copy.deepcopy(module), copy.deepcopy(module)
    for _ in range(3):
        ref(x, ctx)
        with autocast(policy):
            amp(x, ctx)
    torch.testing.assert_close(amp.centroids, ref.centroids, rtol=0, atol=1e-6)
    torch.testing.assert_close(amp.ema_count, ref.ema_count, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- PE encoders

@pytest.fixture(scope="module")
def pe_graphs() -> tuple[Batch, LaplacianPE, RandomWalkSE]:
    lap, rwse = LaplacianPE(k=6), RandomWalkSE(steps=8)
    graphs = _graphs(sizes=(4, 20, 150)).to_data_list()        # 4 nodes < k: NaN-padded eigenpairs
    return Batch.from_data_list([rwse(lap(g)) for g in graphs]), lap, rwse


ENCODERS = {
    "lap_linear": lambda lap, rwse: LapLinearEncoder(lap, 8),
    "lap_deepset": lambda lap, rwse: LapDeepSetEncoder(lap, 8, reduce="mean"),
    "lap_signnet": lambda lap, rwse: LapSignNetEncoder(lap, 8),
    "rwse_linear": lambda lap, rwse: LinearPEEncoder(rwse, 8),
}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_pe_encoder_under_autocast(pe_graphs, name, policy):
    batch, lap, rwse = pe_graphs
    assert torch.isnan(batch.lap_vec).any()
    torch.manual_seed(0)
    encoder = ENCODERS[name](lap, rwse).eval()      # eval: no random sign flips

    def call(m, *tensors):
        data = batch.clone()
        for key, t in zip(("lap_vec", "lap_val", "rwse"), tensors):
            data[key] = t
        return m(data)

    _check_close(encoder, call, [batch.lap_vec, batch.lap_val, batch.rwse], policy)


# ---------------------------------------------------------------- whole models

def _spec(level: str = "graph", edges: bool = True) -> DataSpec:
    return DataSpec(Task("multiclass", 3, level, "accuracy"), FloatFeatures(5),
                    FloatFeatures(2) if edges else None, "toy")


def _model_inputs(batch: Batch) -> list[Tensor]:
    return [batch.x, batch.edge_attr]


def _call_model(batch: Batch):
    def call(model, x, edge_attr):
        data = batch.clone()
        data.x, data.edge_attr = x, edge_attr
        return model(data)
    return call


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("attention", sorted(ATTENTIONS))
def test_gps_model_under_autocast(pe_graphs, attention, policy):
    """GraphGPS (graph level, GatedGCN with edge updates, LapPE + RWSE encoders) with every attention.

    TopM gets ``m`` above the graph sizes here: inside a model its input differs between bf16 and
    float32 by bf16 rounding, which reorders nodes whose relevance scores are that close (measured:
    31 of 174 positions in layer 0), so the two runs attend over different windows and their
    gradients differ by 10% for that reason alone. With whole-graph windows the selection cannot
    change; the selection itself under autocast is checked by ``test_attention_under_autocast``
    (same inputs, same ranking)."""
    batch, lap, rwse = pe_graphs
    torch.manual_seed(0)
    factory = ATTENTIONS[attention]
    if attention == "topm":
        factory = functools.partial(factory, m=256)
    model = GPSModel(_spec(), hidden=DIM, layers=2, local=LOCALS["gatedgcn"], attention=factory,
                     pe=[(lap, functools.partial(LapDeepSetEncoder, out_dim=4)),
                         (rwse, functools.partial(LinearPEEncoder, out_dim=4))]).train()
    out, _ = _check_close(model, _call_model(batch), _model_inputs(batch), policy)
    assert out.shape == (3, 3)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("local", sorted(LOCALS))
def test_mpnn_model_under_autocast(graphs, local, policy):
    torch.manual_seed(0)
    model = MPNNModel(_spec(), hidden=DIM, layers=2, local=LOCALS[local], dropout=0.0).train()
    out, _ = _check_close(model, _call_model(graphs), _model_inputs(graphs), policy)
    assert out.shape == (2, 3)


@pytest.mark.parametrize("policy", POLICIES)
def test_gps_node_level_model_under_autocast(graphs, policy):
    torch.manual_seed(0)
    model = GPSModel(_spec("node", edges=False), hidden=DIM, layers=2, local=LOCALS["gcn"],
                     attention=ATTENTIONS["full"]).train()
    out, _ = _check_close(model, _call_model(graphs), _model_inputs(graphs), policy)
    assert out.shape == (graphs.num_nodes, 3)


def _token_batch(seeds: int = 24, tokens: int = 10, features: int = 5, hops: int = 2) -> Data:
    g = torch.Generator().manual_seed(7)
    mask = torch.rand(seeds, tokens, generator=g) < 0.7
    mask[:, 0] = True
    mask[0, 1:] = False                                  # a seed without neighbours
    hop = torch.randint(1, 3, (seeds, tokens), generator=g)
    hop[:, 0] = 0
    return Data(x=torch.randn(seeds, features, generator=g),
                token_x=torch.randn(seeds, tokens, features, generator=g),
                token_xhop=torch.randn(seeds, tokens, hops, features, generator=g),
                token_hop=hop, token_mask=mask, num_nodes=seeds)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("attention", ["codebook", None])
def test_largegt_model_under_autocast(attention, policy):
    data = _token_batch()
    torch.manual_seed(0)
    spec = DataSpec(Task("multiclass", 3, "node", "accuracy"), FloatFeatures(5), None, "toy")
    model = LargeGTModel(spec, hidden=32, heads=2, global_dim=DIM, dropout=0.0,
                         attention=ATTENTIONS[attention] if attention else None).train()

    def call(m, token_x, token_xhop, x):
        d = data.clone()
        d.token_x, d.token_xhop, d.x = token_x, token_xhop, x
        return m(d)

    out, _ = _check_close(model, call, [data.token_x, data.token_xhop, data.x], policy)
    assert out.shape == (24, 3)
