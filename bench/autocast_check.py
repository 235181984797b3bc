"""Benchmark: every global attention module, forward + backward, float32 against bf16 autocast on CPU.

For every config of ``configs/attention/*.yaml`` with a ``_target_`` (built with Hydra's
``instantiate`` as the app builds it, at its config values unless ``--set`` overrides them), width
``d = --dim`` (64), on one graph of ``N = 2^--log2n`` nodes (``2^14``) with a fixed random graph of
average in-degree ``--degree`` (8) as ``ctx.edge_index`` (read by ``expander`` only):

- accuracy: from the same module state and the same global RNG state, one forward+backward in
  float32 and one under ``torch.autocast("cpu", dtype=torch.bfloat16)`` on the same ``x`` (in
  training mode, as the trainer runs it); ``max_rel_err`` = ``max |out_bf16 - out_fp32| / max
  |out_fp32|``, ``grad_rel_err`` = ``||dx_bf16 - dx_fp32|| / ||dx_fp32||`` (norm-wise: ReLU-free
  here, but the scale is the one the tests use);
- time: one warm-up pass of each precision, then ``--repeats`` rounds, each timing one float32
  and one bf16 forward+backward back to back (interleaved, so that load from other processes hits
  both alike); the medians are reported (``fp32_s``, ``bf16_s``) and ``bf16_over_fp32`` =
  ``bf16_s / fp32_s`` (below 1: bf16 faster). The loss is ``(out.float() * w).sum()`` with a
  fixed random ``w``.

Prints one JSON object (also written to ``--json``): the settings, the CPU's capability
(``torch.backends.cpu.get_cpu_capability()``; bf16 matmuls are fast only with AMX/AVX512-BF16) and
one entry per module. Only ratios measured in the same run are meaningful.

    python bench/autocast_check.py --json autocast_check.json
    python bench/autocast_check.py --log2n 12 --repeats 3 --modules performer expander
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from graphgt.nn.attention.base import AttentionContext  # noqa: E402


def attention_configs(names=None, overrides: Dict[str, object] | None = None) -> dict:
    """name -> config of every ``configs/attention/<name>.yaml`` with a ``_target_`` (``names``:
    only those), with the keys of ``overrides`` set where the config has them."""
    out = {}
    for path in sorted((REPO / "configs" / "attention").glob("*.yaml")):
        cfg = OmegaConf.load(path)
        if "_target_" not in cfg or (names and path.stem not in names):
            continue
        for key, value in (overrides or {}).items():
            if key in cfg:
                cfg[key] = value
        out[path.stem] = cfg
    missing = set(names or ()) - set(out)
    if missing:
        raise SystemExit(f"no attention config for {sorted(missing)} in configs/attention/")
    return out


def fwd_bwd(module, x: torch.Tensor, ctx: AttentionContext, w: torch.Tensor, bf16: bool):
    """One forward+backward; returns (output, dx)."""
    x = x.detach().requires_grad_()
    module.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = module(x, ctx)
    (out.float() * w).sum().backward()
    return out.detach(), x.grad


def check(name: str, cfg, n: int, dim: int, degree: int, repeats: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w = torch.randn(n, dim, generator=g)
    ctx = AttentionContext.single_graph(n, edge_index=torch.randint(0, n, (2, degree * n), generator=g))
    torch.manual_seed(seed)
    module = instantiate(cfg)(dim).train()

    results = {}
    for bf16 in (False, True):
        torch.manual_seed(seed + 1)
        results[bf16] = fwd_bwd(copy.deepcopy(module), x, ctx, w, bf16)
    (ref, ref_dx), (out, dx) = results[False], results[True]
    max_rel = float((out.float() - ref).abs().max() / ref.abs().max())
    grad_rel = float((dx.float() - ref_dx).norm() / ref_dx.norm())

    times = {False: [], True: []}
    for bf16 in (False, True):                        # warm-up
        fwd_bwd(module, x, ctx, w, bf16)
    for _ in range(repeats):
        for bf16 in (False, True):
            start = time.perf_counter()
            fwd_bwd(module, x, ctx, w, bf16)
            times[bf16].append(time.perf_counter() - start)
    fp32_s, bf16_s = statistics.median(times[False]), statistics.median(times[True])
    return {"module": repr(module), "max_rel_err": round(max_rel, 5), "grad_rel_err": round(grad_rel, 5),
            "fp32_s": round(fp32_s, 4), "bf16_s": round(bf16_s, 4),
            "bf16_over_fp32": round(bf16_s / fp32_s, 3), "out_dtype": str(out.dtype).replace("torch.", "")}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log2n", type=int, default=14)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--degree", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modules", nargs="*", default=None, help="config names (default: all)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides applied where a config has the key, e.g. codebook_size=1024")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value) if value[:1] in "-0123456789[{tf" else value
    n = 2 ** args.log2n
    report = {"n": n, "dim": args.dim, "degree": args.degree, "repeats": args.repeats, "threads": args.threads,
              "overrides": overrides, "torch": torch.__version__,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "modules": {}}
    for name, cfg in attention_configs(args.modules, overrides).items():
        report["modules"][name] = check(name, cfg, n, args.dim, args.degree, args.repeats, args.seed)
        print(f"# {name}: {report['modules'][name]}", file=sys.stderr, flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
