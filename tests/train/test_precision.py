"""trainer.bf16 (resolve_bf16) and trainer.compile (maybe_compile)."""
from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from graphgt.errors import ConfigError
from graphgt.nn.attention.codebook import CodebookAttention
from graphgt.nn.largegt import LargeGTModel
from graphgt.nn.local import GCNLayer, GINLayer
from graphgt.nn.model import GPSModel, MPNNModel
from graphgt.nn.attention import FullAttention
from graphgt.spec import DataSpec, FloatFeatures, Task
from graphgt.train.precision import AUTO_BF16_MIN_WIDTH, COMPILE_MODES, matmul_width, maybe_compile, resolve_bf16

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _spec(level="graph"):
    return DataSpec(Task("multiclass", 3, level, "accuracy"), FloatFeatures(5), None, "toy")


def _batch(sizes=(4, 7, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    graphs = [Data(x=torch.randn(n, 5, generator=g), edge_index=torch.randint(0, n, (2, 3 * n), generator=g))
              for n in sizes]
    return Batch.from_data_list(graphs)


def test_matmul_width_is_the_widest_narrow_side():
    assert matmul_width(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64))) == 64
    assert matmul_width(nn.Sequential(nn.Linear(3, 300), nn.Linear(300, 200))) == 200
    assert matmul_width(nn.MultiheadAttention(96, 4)) == 96
    assert matmul_width(nn.ReLU()) == 0
    # GPS at the molbace width (hidden 64, FFN 128): 64; LargeGT at products' width (256): 256
    gps = GPSModel(_spec(), hidden=64, layers=1, local=partial(GINLayer), attention=partial(FullAttention))
    assert matmul_width(gps) == 64
    largegt = LargeGTModel(_spec("node"), hidden=256, heads=2, global_dim=64,
                           attention=partial(CodebookAttention, codebook_size=8))
    assert matmul_width(largegt) == 256


def test_resolve_bf16_auto_rule():
    narrow, wide = nn.Linear(AUTO_BF16_MIN_WIDTH - 1, 512), nn.Linear(AUTO_BF16_MIN_WIDTH, 512)
    assert resolve_bf16("auto", CUDA, narrow) is False
    assert resolve_bf16("auto", CUDA, wide) is True
    assert resolve_bf16("auto", torch.device("cuda:1"), wide) is True
    assert resolve_bf16("auto", CPU, wide) is False            # never on CPU
    gps = GPSModel(_spec(), hidden=64, layers=1, local=partial(GINLayer), attention=partial(FullAttention))
    assert resolve_bf16("auto", CUDA, gps) is False            # molbace-gps: bf16 was 36% slower
    largegt = LargeGTModel(_spec("node"), hidden=256, heads=2, global_dim=64,
                           attention=partial(CodebookAttention, codebook_size=8))
    assert resolve_bf16("auto", CUDA, largegt) is True


def test_resolve_bf16_true_and_false():
    model = nn.Linear(4, 4)
    assert resolve_bf16(True, CUDA, model) is True
    assert resolve_bf16(True, CPU, model) is True              # honoured on CPU (CPU autocast)
    assert resolve_bf16(False, CUDA, nn.Linear(512, 512)) is False
    assert resolve_bf16(False, CPU, model) is False
    with pytest.raises(ConfigError, match="trainer.bf16=true.*'meta'"):
        resolve_bf16(True, torch.device("meta"), model)
    assert resolve_bf16(False, torch.device("meta"), model) is False


@pytest.mark.parametrize("bad", ["yes", "True", "bf16", "", 1, None, 0.5])
def test_resolve_bf16_refuses_other_values(bad):
    with pytest.raises(ValueError, match=r"trainer\.bf16=.* must be one of true, false, 'auto'") as info:
        resolve_bf16(bad, CUDA, nn.Linear(4, 4))
    assert isinstance(info.value, ConfigError) and repr(bad) in str(info.value)


def test_maybe_compile_false_and_bad_modes():
    model = nn.Linear(4, 4)
    assert maybe_compile(model, False) is model
    assert model._compiled_call_impl is None
    for bad in ("fast", "true", 1, None):
        with pytest.raises(ConfigError, match=r"trainer\.compile=.* must be false, true or one of 'default'"):
            maybe_compile(model, bad)
    assert "max-autotune" in COMPILE_MODES


@pytest.mark.slow   # Inductor compiles C++ for the forward and backward: ~60 s on 2 busy cores
def test_compiled_mpnn_matches_eager():
    """A tiny MPNN compiled (dynamic shapes) gives the eager outputs and gradients, on two batch
    sizes, with the same module object and state_dict keys."""
    torch.manual_seed(0)
    eager = MPNNModel(_spec(), hidden=16, layers=2, local=partial(GCNLayer), dropout=0.0)
    compiled = MPNNModel(_spec(), hidden=16, layers=2, local=partial(GCNLayer), dropout=0.0)
    compiled.load_state_dict(eager.state_dict())
    keys = list(compiled.state_dict())
    assert maybe_compile(compiled, True) is compiled
    assert compiled._compiled_call_impl is not None and list(compiled.state_dict()) == keys
    for sizes in [(4, 7, 5), (9, 3, 6, 8)]:
        batch = _batch(sizes)
        out_e, out_c = eager(batch), compiled(batch)
        assert out_c.shape == (len(sizes), 3)
        torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
        out_e.square().sum().backward()
        out_c.square().sum().backward()
        for (name, p_e), p_c in zip(eager.named_parameters(), compiled.parameters()):
            torch.testing.assert_close(p_c.grad, p_e.grad, rtol=1e-4, atol=1e-5, msg=name)
            p_e.grad = p_c.grad = None
