"""Benchmark: graphgt's RWSE and LapPE against PyG's transforms on one large random graph.

Builds a deterministic random undirected graph (``--edges // 2`` uniform random node pairs, self
loops and duplicates dropped, both directions stored) and runs, each in its own subprocess under a
memory cap (``RLIMIT_AS``) and a time limit:

- ours: ``RandomWalkSE(steps=16)`` and ``LaplacianPE(k=8)``;
- PyG:  ``AddRandomWalkPE(walk_length=16)`` and ``AddLaplacianEigenvectorPE(k=8, is_undirected=True)``.

Wall time covers the computation only (not imports, not loading the graph); peak RSS is the child's
``ru_maxrss`` from ``wait4`` (imports and the graph included; the RSS before the computation is
reported as ``base``).  A child that runs out of memory (MemoryError / allocator error / killed) is
reported as ``OOM``, one over the limit as ``timeout``.  For graphs of at most ``--compare-max-nodes``
nodes the outputs are also compared: RWSE element-wise, LapPE by eigenvalues (PyG stores vectors
only; its eigenvalues are the Rayleigh quotients ``v^T L v``; PyG drops the trivial pair).

    python bench/pe_scaling.py                       # 100k nodes, 2M edges
    python bench/pe_scaling.py --nodes 2000          # small end: also checks agreement
    python bench/pe_scaling.py --json out.json --skip-pyg
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GIB = 1024 ** 3
REPO = Path(__file__).resolve().parents[1]
METHODS = {  # name -> (side, PE)
    "ours_rwse": ("ours", "rwse"),
    "ours_lap": ("ours", "lap"),
    "pyg_rwse": ("pyg", "rwse"),
    "pyg_lap": ("pyg", "lap"),
}


def build_graph(nodes: int, edges: int, seed: int = 0) -> np.ndarray:
    """``[2, E]`` int64: ``edges // 2`` random pairs, no self loops, no duplicates, both directions."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, nodes, edges // 2)
    dst = rng.integers(0, nodes, edges // 2)
    keep = src != dst
    lo, hi = np.minimum(src[keep], dst[keep]), np.maximum(src[keep], dst[keep])
    pairs = np.unique(lo * nodes + hi)
    lo, hi = pairs // nodes, pairs % nodes
    return np.stack([np.concatenate([lo, hi]), np.concatenate([hi, lo])]).astype(np.int64)


def _rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / GIB
    return float("nan")


# ----------------------------------------------------------------------------- child
def run_child(args) -> None:
    """Run one method on the saved graph; write ``{"status", "seconds", "base_rss_gib"}`` to --result."""
    cap = int(args.mem_cap_gib * GIB)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    side, kind = METHODS[args.child]
    result = {"status": "error"}
    try:
        import torch

        sys.path.insert(0, str(REPO))
        edge_index = torch.from_numpy(np.load(args.graph))
        n = args.nodes
        if side == "ours":
            from graphgt.pe import LaplacianPE, RandomWalkSE

            pe = RandomWalkSE(steps=args.steps) if kind == "rwse" else LaplacianPE(k=args.k)
            run = lambda: pe.compute(edge_index, n)  # noqa: E731
        else:
            from torch_geometric.data import Data
            from torch_geometric.transforms import AddLaplacianEigenvectorPE, AddRandomWalkPE

            tf = AddRandomWalkPE(walk_length=args.steps) if kind == "rwse" else \
                AddLaplacianEigenvectorPE(k=args.k, is_undirected=True)
            run = lambda: tf(Data(edge_index=edge_index, num_nodes=n))  # noqa: E731
        result["base_rss_gib"] = _rss_gib()
        t0 = time.perf_counter()
        out = run()
        result["seconds"] = time.perf_counter() - t0
        result["status"] = "ok"
        if args.save:
            key = {"ours": {"rwse": ["rwse"], "lap": ["lap_vec", "lap_val"]},
                   "pyg": {"rwse": ["random_walk_pe"], "lap": ["laplacian_eigenvector_pe"]}}[side][kind]
            torch.save({k: out[k] for k in key}, args.save)
    except MemoryError:
        result["status"] = "oom"
    except RuntimeError as err:  # torch's allocator: "DefaultCPUAllocator: can't allocate memory"
        msg = str(err).lower()
        result["status"] = "oom" if ("alloc" in msg or "memory" in msg) else "error"
        result["error"] = str(err)[:300]
    except Exception as err:  # noqa: BLE001 - reported, not raised
        result["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        msg = str(err).lower()
        if "memory" in msg or "alloc" in msg:
            result["status"] = "oom"
    Path(args.result).write_text(json.dumps(result))


# ----------------------------------------------------------------------------- parent
def wait_child(cmd, time_limit: float, env=None, poll: float = 0.2):
    """Run ``cmd`` in its own session, killing its process group after ``time_limit`` seconds.

    Returns ``(exit code, rusage, timed_out)``; ``rusage.ru_maxrss`` is the child's peak RSS (KiB).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True, env=env)
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - start > time_limit:
            os.killpg(proc.pid, signal.SIGKILL)
            pid, status, usage = os.wait4(proc.pid, 0)
            timed_out = True
            break
        time.sleep(poll)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage, timed_out


def run_method(name: str, args, workdir: Path, graph: Path, save: bool) -> dict:
    result_file = workdir / f"{name}.json"
    cmd = [sys.executable, __file__, "--child", name, "--graph", str(graph), "--result", str(result_file),
           "--nodes", str(args.nodes), "--steps", str(args.steps), "--k", str(args.k),
           "--mem-cap-gib", str(args.mem_cap_gib)]
    if save:
        cmd += ["--save", str(workdir / f"{name}.pt")]
    print(f"[pe_scaling] {name} ...", flush=True)
    start = time.perf_counter()
    code, usage, timed_out = wait_child(cmd, args.time_limit)
    wall = time.perf_counter() - start
    peak = usage.ru_maxrss * 1024 / GIB  # KiB on Linux
    res = json.loads(result_file.read_text()) if result_file.exists() else {}
    if timed_out:
        res["status"] = "timeout"
    elif not res:
        # a child killed by a signal when near the cap is out of memory (allocation failure in C code)
        res["status"] = "oom" if code in (-signal.SIGKILL, -signal.SIGSEGV, -signal.SIGABRT) else "error"
        res["error"] = f"child exited with {code}"
    res["peak_rss_gib"] = peak
    res["child_wall_s"] = wall
    print(f"[pe_scaling] {name}: {res}", flush=True)
    return res


def describe(res: dict | None, args) -> tuple[str, str]:
    if res is None:
        return "skipped", "-"
    peak = f"{res['peak_rss_gib']:.2f} GiB"
    if res["status"] == "ok":
        return f"{res['seconds']:.1f} s", f"{peak} (base {res['base_rss_gib']:.2f})"
    if res["status"] == "oom":
        return f"OOM at {res['peak_rss_gib']:.1f} GiB (cap {args.mem_cap_gib:g} GiB, after {res['child_wall_s']:.0f} s)", peak
    if res["status"] == "timeout":
        return f"timeout (> {args.time_limit:.0f} s)", peak
    return f"error: {res.get('error', '?')}", peak


def compare(workdir: Path, graph: Path, args) -> dict:
    """Agreement of ours and PyG's outputs (both must have been saved)."""
    import torch

    sys.path.insert(0, str(REPO))
    from graphgt.pe.laplacian import undirected_adjacency

    out = {}
    f = {m: workdir / f"{m}.pt" for m in METHODS}
    if f["ours_rwse"].exists() and f["pyg_rwse"].exists():
        ours = torch.load(f["ours_rwse"])["rwse"].double()
        pyg = torch.load(f["pyg_rwse"])["random_walk_pe"].double()
        out["rwse_max_abs_diff"] = float((ours - pyg).abs().max())
    if f["ours_lap"].exists() and f["pyg_lap"].exists():
        ours_val = torch.load(f["ours_lap"])["lap_val"][0].double().numpy()
        vec = torch.load(f["pyg_lap"])["laplacian_eigenvector_pe"].double().numpy()
        adj = undirected_adjacency(torch.from_numpy(np.load(graph)), args.nodes)
        d = np.asarray(adj.sum(1)).ravel()
        dis = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0)
        lv = vec - dis[:, None] * (adj @ (dis[:, None] * vec))  # L v
        pyg_val = np.sort((vec * lv).sum(0) / (vec * vec).sum(0))
        m = min(len(ours_val) - 1, len(pyg_val))  # ours includes the trivial pair, PyG drops it
        out["lap_eigval_max_abs_diff"] = float(np.abs(ours_val[1:m + 1] - pyg_val[:m]).max())
        out["lap_eigvals_ours"] = ours_val.tolist()
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=100_000)
    p.add_argument("--edges", type=int, default=None, help="directed edges (both directions; default 20 x nodes)")
    p.add_argument("--steps", type=int, default=16, help="RWSE walk lengths")
    p.add_argument("--k", type=int, default=8, help="LapPE eigenpairs")
    p.add_argument("--time-limit", type=float, default=900.0, help="seconds per method")
    p.add_argument("--mem-cap-gib", type=float, default=16.0, help="RLIMIT_AS of each child")
    p.add_argument("--json", type=Path, default=None, help="write every figure here")
    p.add_argument("--skip-pyg", action="store_true")
    p.add_argument("--only", nargs="*", choices=list(METHODS), default=None, help="run only these methods")
    p.add_argument("--compare-max-nodes", type=int, default=20_000,
                   help="compare the outputs of ours and PyG up to this graph size")
    # child mode (internal)
    p.add_argument("--child", choices=list(METHODS), help=argparse.SUPPRESS)
    p.add_argument("--graph", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return run_child(args)
    if args.nodes < 2:
        p.error("--nodes must be at least 2")
    args.edges = args.edges if args.edges is not None else 20 * args.nodes

    methods = args.only or [m for m in METHODS if not (args.skip_pyg and m.startswith("pyg"))]
    save = args.nodes <= args.compare_max_nodes
    with tempfile.TemporaryDirectory(prefix="pe_scaling_") as tmp:
        workdir = Path(tmp)
        ei = build_graph(args.nodes, args.edges)
        graph = workdir / "edge_index.npy"
        np.save(graph, ei)
        print(f"[pe_scaling] graph: {args.nodes} nodes, {ei.shape[1]} directed edges "
              f"({args.edges // 2} random pairs, seed 0)", flush=True)
        results = {m: run_method(m, args, workdir, graph, save) for m in methods}
        agreement = compare(workdir, graph, args) if save else {}

    report = {"graph": {"nodes": args.nodes, "directed_edges": int(ei.shape[1]), "seed": 0},
              "settings": {"steps": args.steps, "k": args.k, "time_limit_s": args.time_limit,
                           "mem_cap_gib": args.mem_cap_gib, "cpus": os.cpu_count()},
              "ours": {}, "pyg": {}, "agreement": agreement, "raw": results}
    for m, res in results.items():
        side, kind = METHODS[m]
        report[side][f"{kind}_status"] = res["status"]
        report[side][f"{kind}_s"] = res.get("seconds")
        report[side][f"{kind}_peak_rss_gib"] = res["peak_rss_gib"]
        report[side][f"{kind}_base_rss_gib"] = res.get("base_rss_gib")

    rows = [("RWSE", f"RandomWalkSE(steps={args.steps})", "ours_rwse",
             f"AddRandomWalkPE(walk_length={args.steps})", "pyg_rwse"),
            ("LapPE", f"LaplacianPE(k={args.k})", "ours_lap",
             f"AddLaplacianEigenvectorPE(k={args.k}, is_undirected=True)", "pyg_lap")]
    print(f"\nGraph: {args.nodes:,} nodes, {ei.shape[1]:,} directed edges; limits {args.time_limit:.0f} s, "
          f"{args.mem_cap_gib:g} GiB per method\n")
    print("| encoding | graphgt time | graphgt peak RSS | PyG time | PyG peak RSS |")
    print("|---|---|---|---|---|")
    for name, _, ours, _, pyg in rows:
        ot, om = describe(results.get(ours), args)
        pt, pm = describe(results.get(pyg), args)
        print(f"| {name} | {ot} | {om} | {pt} | {pm} |")
    print("\n" + "; ".join(f"{label}: graphgt `{o}`, PyG `{q}`" for label, o, _, q, _ in rows))
    if agreement:
        print(f"\nAgreement: {json.dumps({k: v for k, v in agreement.items() if not isinstance(v, list)})}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
