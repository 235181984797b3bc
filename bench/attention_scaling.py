"""Benchmark: time and memory of graphgt's global attention modules against the number of nodes N.

For every module of ``MODULES`` (width ``d = 64``, 4 heads) and every ``N = 2^k`` of ``--sizes``
(default ``k = 12 .. 18``) one graph of ``N`` nodes is processed, each (module, N) in a fresh
subprocess so that its peak RSS is its own:

- the child builds, from ``--seed``, the module in training mode, ``x = randn(N, 64,
  requires_grad=True)``, a fixed random ``w [N, 64]`` and ``ctx = AttentionContext.single_graph(N,
  edge_index=...)``.  Every module gets the same graph: a fixed random undirected graph of average
  degree ~8 (``pe_scaling.build_graph(N, 8 N, seed=0)``, both directions stored), built once per
  ``N`` by the parent; modules that need the graph (``expander``) read it, the others ignore it;
- one warm-up forward+backward (loss ``(module(x, ctx) * w).sum()``), then ``--repeats`` timed
  forward+backward passes (wall clock, ``time.perf_counter``, gradients reset to ``None`` before each
  pass, outside the timed region); the median is reported (``seconds``; also ``min_seconds``);
- memory: the child's RSS right before the timed section (``base_mib``: after the warm-up, with
  its gradients freed and glibc's free memory handed back by ``malloc_trim``) and the child's peak
  RSS, ``ru_maxrss`` from ``os.wait4`` in the parent (``peak_mib``, raw: imports, graph and
  warm-up included).  ``delta_mib = peak_mib - base_mib`` is the memory one forward+backward needs
  on top of what is resident (activations saved for backward, temporaries, gradients).
  ``ru_maxrss`` of a child also covers the parent's RSS at fork time, so the parent of the
  measurements imports neither torch nor matplotlib (the child's own ``VmHWM`` is reported as
  ``hwm_mib`` to check).

``torch.set_num_threads(--threads)`` (default 2) in every child; run on an otherwise idle machine
(with fewer free cores than threads, OpenMP stalls make single timings 10x off).  Sizes are run
in ascending order; a size is skipped (marked ``"skipped (predicted ...)"``) when the time per
forward+backward or the peak RSS predicted from the module's last measured size (time and
``delta_mib`` scaled by ``2^(e * doublings)``, ``e = 2`` for ``full``, 1 for the linear modules)
exceeds ``--max-seconds`` or ``--mem-cap-gib``, and after a failure (timeout, out of memory,
error) of the module at a smaller size.  Each child runs under ``--timeout`` seconds and an
address-space limit (``RLIMIT_AS``) of ``--mem-cap-gib``.  A module whose file or class does not
exist is reported as unavailable, not as a crash of the run.

Slopes are least-squares fits of ``log2(value)`` on ``log2(N)``: of the median time over all
measured sizes (``slopes``) and over the upper half of the sizes, ``N >= 2^(middle exponent of
--sizes)`` (``2^15`` for the default sizes; ``slopes_upper``), and of ``delta_mib`` over all sizes
(``memory_slopes``).  A linear module passes when its ``slopes`` value is ``<= 1.1``; ``full`` is
the quadratic reference (slope ~2 expected where the time is dominated by the N^2 term).

    python bench/attention_scaling.py --json attention_scaling.json --plot attention_scaling.png
    python bench/attention_scaling.py --sizes 12 13 14 --modules full performer --repeats 5
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import platform
import resource
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pe_scaling import GIB, REPO, _rss_gib, build_graph, wait_child  # noqa: E402  (same RSS probe, graph, child runner)

MIB = 1024 ** 2
DIM = 64
HEADS = 4
AVG_DEGREE = 8
GRAPH_SEED = 0
LINEAR_MAX_SLOPE = 1.1
#: name -> (dotted class path, constructor keyword arguments; ``dim`` is passed first)
MODULES: Dict[str, Tuple[str, dict]] = {
    "full": ("graphgt.nn.attention.full.FullAttention", {"heads": HEADS}),
    "performer": ("graphgt.nn.attention.performer.PerformerAttention", {"heads": HEADS, "num_features": 64}),
    "expander": ("graphgt.nn.attention.expander.ExpanderAttention",
                 {"heads": HEADS, "expander_degree": 4, "num_virtual": 1}),
    "topm": ("graphgt.nn.attention.topm.TopMAttention", {"heads": HEADS, "m": 32}),
    "codebook": ("graphgt.nn.attention.codebook.CodebookAttention", {"heads": HEADS, "codebook_size": 256}),
}
#: expected exponent of time and memory in N, used to predict the next size (default 1: linear)
EXPECTED_EXPONENT = {"full": 2.0}


def loglog_slope(ns: Iterable[float], values: Iterable[float]) -> Optional[float]:
    """Least-squares slope of ``log2(value)`` on ``log2(n)``; ``None`` with fewer than two usable points.

    Points whose value is not a positive finite number are left out.
    """
    pts = [(math.log2(n), math.log2(v)) for n, v in zip(ns, values)
           if v is not None and math.isfinite(v) and v > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def load_class(name: str):
    """The class registered under ``name``; ``ImportError`` with a clear message when it is missing."""
    path, _ = MODULES[name]
    module_path, cls_name = path.rsplit(".", 1)
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as err:
        raise ImportError(f"{name}: module {module_path} not found ({err})") from err
    try:
        return getattr(module, cls_name)
    except AttributeError as err:
        raise ImportError(f"{name}: {module_path} has no class {cls_name}") from err


def _malloc_trim() -> None:
    """Return the allocator's free memory to the OS (glibc ``malloc_trim(0)``; no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _hwm_mib() -> float:
    """This process's peak RSS (``VmHWM``) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ----------------------------------------------------------------------------- child
def measure(name: str, n: int, edge_index, threads: int, repeats: int, seed: int) -> dict:
    """Warm-up and ``repeats`` timed forward+backward passes of module ``name`` on ``n`` nodes.

    Returns ``{"status": "ok", "seconds" (median), "min_seconds", "all_seconds", "base_mib", "hwm_mib",
    "torch"}``
    (``base_mib``: RSS right before the timed section; ``hwm_mib``: this process's own peak RSS).
    """
    import torch

    from graphgt.nn.attention.base import AttentionContext

    cls = load_class(name)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    ctx = AttentionContext.single_graph(n, edge_index=edge_index)
    module = cls(DIM, **MODULES[name][1]).train()
    x = torch.randn(n, DIM, requires_grad=True)
    w = torch.randn(n, DIM)

    def step() -> float:
        x.grad = None
        module.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        (module(x, ctx) * w).sum().backward()
        return time.perf_counter() - t0

    step()  # warm-up
    x.grad = None
    module.zero_grad(set_to_none=True)
    gc.collect()
    _malloc_trim()  # else memory the warm-up freed but glibc kept would count in the base, not the delta
    base = _rss_gib() * GIB / MIB
    times = [step() for _ in range(repeats)]
    return {"status": "ok", "seconds": statistics.median(times), "min_seconds": min(times),
            "all_seconds": times, "base_mib": base,
            "hwm_mib": _hwm_mib(), "torch": torch.__version__}


def run_child(args) -> None:
    """Child mode: measure ``args.child`` at ``args.n`` nodes; write the result dict to ``--result``."""
    cap = int(args.mem_cap_gib * GIB)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    sys.path.insert(0, str(REPO))
    result: dict = {"status": "error"}
    try:
        try:
            load_class(args.child)
        except ImportError as err:
            result = {"status": "unavailable", "error": str(err)}
        else:
            import torch

            edge_index = torch.from_numpy(np.load(args.graph))
            result = measure(args.child, args.n, edge_index, args.threads, args.repeats, args.seed)
    except MemoryError:
        result = {"status": "oom"}
    except Exception as err:  # noqa: BLE001 - reported, not raised
        msg = f"{type(err).__name__}: {str(err)[:300]}"
        low = msg.lower()
        oom = "can't allocate memory" in low or "out of memory" in low or "memoryerror" in low
        result = {"status": "oom" if oom else "error", "error": msg}
    Path(args.result).write_text(json.dumps(result))


# ----------------------------------------------------------------------------- parent
def run_measurement(name: str, n: int, graph: Path, args, workdir: Path) -> dict:
    """One (module, N) in a fresh child; adds ``peak_mib`` (``ru_maxrss`` from ``wait4``) and ``delta_mib``."""
    result_file = workdir / f"{name}_{n}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--n", str(n),
           "--graph", str(graph), "--result", str(result_file), "--threads", str(args.threads),
           "--repeats", str(args.repeats), "--seed", str(args.seed), "--mem-cap-gib", str(args.mem_cap_gib)]
    start = time.perf_counter()
    # the allocator setting graphgt's CLI uses (2 MiB pages for big tensors: fewer page faults)
    env = dict(os.environ, THP_MEM_ALLOC_ENABLE=os.environ.get("THP_MEM_ALLOC_ENABLE", "1"))
    code, usage, timed_out = wait_child(cmd, args.timeout, env=env, poll=0.05)
    res = json.loads(result_file.read_text()) if result_file.exists() else {}
    if timed_out:
        res = {"status": "timeout", "error": f"timeout (> {args.timeout:g} s)"}
    elif not res:
        oom = code in (-signal.SIGKILL, -signal.SIGSEGV, -signal.SIGABRT)
        res = {"status": "oom" if oom else "error", "error": f"child exited with {code}"}
    res["peak_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    res["child_wall_s"] = time.perf_counter() - start
    if res["status"] == "ok":
        res["delta_mib"] = res["peak_mib"] - res["base_mib"]
    return res


def predict_skip(name: str, k: int, last: Optional[Tuple[int, dict]], args) -> Optional[str]:
    """Reason to skip ``N = 2^k`` from the module's last measured size ``(k0, result)``, or ``None``."""
    if last is None:
        return None
    k0, res = last
    growth = 2.0 ** (EXPECTED_EXPONENT.get(name, 1.0) * (k - k0))
    seconds = res["seconds"] * growth
    if seconds > args.max_seconds:
        return f"skipped (predicted {seconds:.3g} s > --max-seconds {args.max_seconds:g})"
    peak_gib = (res["base_mib"] + max(res["delta_mib"], 0.0) * growth) * MIB / GIB
    if peak_gib > args.mem_cap_gib:
        return f"skipped (predicted {peak_gib:.1f} GiB > RAM cap {args.mem_cap_gib:.1f} GiB)"
    return None


def _meminfo_gib(key: str) -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return float("nan")


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "cpu": cpu, "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "mem_total_gib": _meminfo_gib("MemTotal"), "mem_available_gib": _meminfo_gib("MemAvailable"),
            "loadavg_start": list(os.getloadavg())}


def fmt_n(n: int) -> str:
    return f"2^{int(math.log2(n))} = {n:,}"


def cell(res: dict) -> str:
    if "seconds" in res:
        return f"{res['seconds'] * 1e3:.1f} ms / {res['delta_mib']:.1f} MiB"
    return res.get("skipped") or res.get("error", "?")


def compute_slopes(timings: Dict[str, Dict[str, dict]], upper_from: int) -> Tuple[dict, dict, dict]:
    slopes, upper, memory = {}, {}, {}
    for name, per_n in timings.items():
        ok = [(int(n), r) for n, r in per_n.items() if "seconds" in r]
        slopes[name] = loglog_slope([n for n, _ in ok], [r["seconds"] for _, r in ok])
        hi = [(n, r) for n, r in ok if n >= 2 ** upper_from]
        upper[name] = loglog_slope([n for n, _ in hi], [r["seconds"] for _, r in hi])
        memory[name] = loglog_slope([n for n, _ in ok], [r["delta_mib"] for _, r in ok])
    return slopes, upper, memory


def verdict(name: str, slope: Optional[float]) -> str:
    if EXPECTED_EXPONENT.get(name, 1.0) > 1:
        return "quadratic reference (~2 expected)"
    if slope is None:
        return "n/a (fewer than 2 sizes)"
    return f"{'PASS' if slope <= LINEAR_MAX_SLOPE else 'FAIL'} (slope <= {LINEAR_MAX_SLOPE})"


def plot(report: dict, path: Path) -> None:
    """Two-panel log-log figure: median time and delta memory against N, dashed slope-1/2 references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    panels = [("seconds", "forward+backward time [s]"), ("delta_mib", "peak memory over base [MiB]")]
    for ax, (key, label) in zip(axes, panels):
        firsts = []
        for name, per_n in report["timings"].items():
            pts = sorted((int(n), r[key]) for n, r in per_n.items() if "seconds" in r and r[key] > 0)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
                firsts.append(pts[0])
        if firsts:
            n0 = min(n for n, _ in firsts)
            y0 = math.exp(statistics.mean(math.log(v) for n, v in firsts if n == n0))
            n_max = max(int(n) for per_n in report["timings"].values() for n in per_n)
            xs = np.array([n0, n_max], dtype=float)
            for slope, style in ((1, "--"), (2, ":")):
                ax.plot(xs, y0 * (xs / n0) ** slope, "k" + style, lw=1, alpha=0.6, label=f"slope {slope}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N (nodes)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    cfg = report["config"]
    fig.suptitle(f"global attention, d={cfg['dim']}, {cfg['heads']} heads, {cfg['threads']} threads")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> Optional[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=list(range(12, 19)), help="exponents k of N = 2^k")
    p.add_argument("--modules", nargs="+", choices=list(MODULES), default=list(MODULES))
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every child")
    p.add_argument("--repeats", type=int, default=3, help="timed forward+backward passes (median reported)")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="skip a size whose predicted time per forward+backward exceeds this")
    p.add_argument("--mem-cap-gib", type=float, default=None,
                   help="RAM cap: skip sizes predicted above it; RLIMIT_AS of each child "
                        "(default 80%% of MemAvailable at start)")
    p.add_argument("--timeout", type=float, default=600.0, help="wall-clock limit of one measurement (s)")
    p.add_argument("--seed", type=int, default=0, help="seed of module, inputs and loss weights")
    p.add_argument("--json", type=Path, default=None, help="write every figure here")
    p.add_argument("--plot", type=Path, default=None, help="write a two-panel log-log PNG here")
    # child mode (internal)
    p.add_argument("--child", choices=list(MODULES), help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--graph", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mem_cap_gib is None:
        avail = _meminfo_gib("MemAvailable")
        args.mem_cap_gib = round(0.8 * avail, 1) if math.isfinite(avail) else 16.0
    if args.child:
        run_child(args)
        return None
    if args.repeats < 1 or args.threads < 1:
        p.error("--repeats and --threads must be at least 1")
    if min(args.sizes) < 2:
        p.error("--sizes are exponents k of N = 2^k and must be at least 2")
    sizes = sorted(set(args.sizes))
    upper_from = sizes[len(sizes) // 2]
    modules = list(dict.fromkeys(args.modules))
    machine = machine_info()
    machine["parent_rss_mib"] = _rss_gib() * GIB / MIB
    config = {"dim": DIM, "heads": HEADS, "sizes": [2 ** k for k in sizes], "modules":
              {m: {"class": MODULES[m][0], "kwargs": MODULES[m][1]} for m in modules},
              "threads": args.threads, "repeats": args.repeats, "max_seconds": args.max_seconds,
              "mem_cap_gib": args.mem_cap_gib, "timeout_s": args.timeout, "seed": args.seed,
              "graph": {"avg_degree": AVG_DEGREE, "seed": GRAPH_SEED, "generator": "pe_scaling.build_graph"},
              "loss": "(module(x, ctx) * w).sum(), w ~ randn(N, d) fixed",
              "upper_from_n": 2 ** upper_from, "linear_max_slope": LINEAR_MAX_SLOPE}
    print(f"[attention_scaling] modules {modules}, N = 2^{sizes[0]} .. 2^{sizes[-1]}, {args.threads} threads, "
          f"{args.repeats} repeats, RAM cap {args.mem_cap_gib:.1f} GiB", flush=True)

    timings: Dict[str, Dict[str, dict]] = {m: {} for m in modules}
    last: Dict[str, Tuple[int, dict]] = {}
    blocked: Dict[str, str] = {}  # module -> reason to skip every further size
    with tempfile.TemporaryDirectory(prefix="attention_scaling_") as tmp:
        workdir = Path(tmp)
        for k in sizes:
            n = 2 ** k
            graph = workdir / f"graph_{n}.npy"
            for name in modules:
                reason = blocked.get(name) or predict_skip(name, k, last.get(name), args)
                if reason:
                    timings[name][str(n)] = {"skipped": reason}
                    print(f"[attention_scaling] {name} N={n}: {reason}", flush=True)
                    continue
                if not graph.exists():
                    np.save(graph, build_graph(n, AVG_DEGREE * n, seed=GRAPH_SEED))
                res = run_measurement(name, n, graph, args, workdir)
                status = res.pop("status")
                if status == "ok":
                    torch_version = res.pop("torch", None)
                    machine.setdefault("torch", torch_version)
                    last[name] = (k, res)
                    timings[name][str(n)] = res
                    print(f"[attention_scaling] {name} N={n}: {res['seconds'] * 1e3:.1f} ms, peak "
                          f"{res['peak_mib']:.0f} MiB (base {res['base_mib']:.0f}, delta {res['delta_mib']:.1f})",
                          flush=True)
                    continue
                if status == "unavailable":
                    timings[name][str(n)] = {"skipped": f"unavailable: {res['error']}"}
                    blocked[name] = f"skipped (unavailable: {res['error']})"
                else:
                    timings[name][str(n)] = {"error": res.get("error") or status, "status": status,
                                             "peak_mib": res["peak_mib"], "child_wall_s": res["child_wall_s"]}
                    blocked[name] = f"skipped ({status} at N=2^{k})"
                print(f"[attention_scaling] {name} N={n}: {timings[name][str(n)]}", flush=True)
            if graph.exists():
                graph.unlink()
    machine["loadavg_end"] = list(os.getloadavg())

    slopes, slopes_upper, memory_slopes = compute_slopes(timings, upper_from)
    report = {"config": config, "timings": timings, "slopes": slopes, "slopes_upper": slopes_upper,
              "memory_slopes": memory_slopes, "machine": machine}

    print(f"\nforward+backward, d={DIM}, {HEADS} heads, {args.threads} threads; median of {args.repeats}; "
          f"memory = peak RSS over the RSS before the timed section\n")
    print("| N | " + " | ".join(modules) + " |")
    print("|---|" + "---|" * len(modules))
    for k in sizes:
        n = 2 ** k
        print(f"| {fmt_n(n)} | " + " | ".join(cell(timings[m][str(n)]) for m in modules) + " |")

    def s(v: Optional[float]) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    print(f"\n| module | time slope (all sizes) | time slope (N >= 2^{upper_from}) | memory slope | criterion |")
    print("|---|---|---|---|---|")
    for m in modules:
        print(f"| {m} | {s(slopes[m])} | {s(slopes_upper[m])} | {s(memory_slopes[m])} | {verdict(m, slopes[m])} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    if args.plot:
        plot(report, args.plot)
    return report


if __name__ == "__main__":
    main()
