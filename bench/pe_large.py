"""Benchmark: LapPE (k=8) and estimated RWSE (16 steps) on a graph store of millions of nodes.

Each encoding runs in a fresh subprocess (so that peak RSS is its own) which opens the store
(memory-mapped CSR), computes the encoding from the CSR arrays (``compute_csr``: no edge list is
ever built) and reports the wall time of the computation (not imports or opening), the RSS before
it and the peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, imports and the touched pages of
the store included).  It also checks the result at this scale:

- LapPE: the residuals ``||L u - λ u||_2`` of the ``k`` (float32) vectors, recomputed in float64,
  and the solver's iterations (``graphgt.pe.chebyshev`` logs them);
- RWSE: the estimator's per-entry bound (``RWSEEstimate.bound``) and, for ``--check-nodes`` random
  nodes, the observed error against the exact values (``exact_rwse_nodes``, ``ceil(16/2)``
  products of the ``[N, nodes]`` unit-vector block).

    python bench/pe_large.py --store /work/bench_data/products-shaped --json out.json
    python bench/pe_large.py --store PATH --only rwse --probes 128 --write
    python bench/pe_large.py --build /tmp/pe_products_x0.125 --scale 0.125   # a products-shaped store

``--write`` also stores the encodings into the store (``pe/<key>``, with their cache keys; the time
of writing is reported separately).

Measured on the products-shaped store (2,449,029 nodes, 123,718,280 CSR entries, 47-class
degree-corrected block model, homophily 0.2; 2 vCPUs shared with other engineers, load average ~1;
CPU path, 2 threads; ``docs/benchmarks_large.md``):

================================  =========  ==============  ==========================================
encoding                          time       peak RSS        check
================================  =========  ==============  ==========================================
LapPE k=8 (residual_tol=1e-4)     230 s      2.97 GiB        max ||Lu - λu|| = 6.7e-5 (float64 re-check);
                                                             69 filter steps + 3 Rayleigh-Ritz
RWSE 16 steps, 256 probes         84 s       2.85 GiB        64 nodes x 14 estimated steps vs exact:
                                                             mean |err| 1.2e-5, max 8.2e-4, mean bound
                                                             3.7e-4, 0 of 896 above the bound
================================  =========  ==============  ==========================================

(Before: 813 s / 235-274 s, the numba kernels running on one thread: see ``csr.compiled_variants``.)
``--threads 1,2`` runs each encoding once per thread count in the same run (scale 0.1: LapPE 1.77-2.18x, RWSE 1.83-2.23x);
``--device cuda`` the torch sparse-CSR path.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GIB = 1024 ** 3
REPO = Path(__file__).resolve().parents[1]


sys.path.insert(0, str(Path(__file__).resolve().parent))
from pe_scaling import _rss_gib  # noqa: E402  (the same RSS probe as the 100k-node PE benchmark)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # KiB on Linux


def make_pe(name: str, args):
    from graphgt.pe import LaplacianPE
    from graphgt.pe.rw_estimator import RandomWalkSEEstimator

    threads = getattr(args, "child_threads", None)
    device = getattr(args, "device", "auto")
    if name == "lap":
        return LaplacianPE(k=args.k, block_size=args.block, device=device, threads=threads)  # block None: default
    return RandomWalkSEEstimator(steps=args.steps, probes=args.probes, method=args.method,
                                 probe_block=args.probe_block, delta=args.delta, device=device, threads=threads)


def lap_residuals(indptr, indices, vec: np.ndarray, val: np.ndarray) -> np.ndarray:
    """``||L u_j - λ_j u_j||_2`` per column, float64 (``L = I - D^-1/2 A D^-1/2``; isolated rows: L = I)."""
    import torch

    from graphgt.pe.chebyshev import _Operator
    from graphgt.pe.csr import kernel_threads

    op = _Operator(indptr, indices, threads=kernel_threads())
    good = op.deg_np > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        op.inv_deg_np = np.where(good, op.inv_deg_np, 0.0)
    u = np.nan_to_num(vec.astype(np.float64))
    sd = np.where(good, np.sqrt(op.deg_np), 0.0)
    xt = np.where(good[:, None], u / np.where(good, sd, 1.0)[:, None], 0.0)  # D^-1/2 u (float64)
    px = np.empty(xt.shape)
    op.apply(torch.from_numpy(xt), torch.from_numpy(xt), torch.from_numpy(px), 1.0, 0.0, 0.0)
    su = px * sd[:, None]  # S u (0 on isolated rows)
    lam = np.nan_to_num(val.astype(np.float64))
    return np.linalg.norm(u - su - u * lam[None, :], axis=0)


def child(args) -> dict:
    """Compute one encoding on the store; returns the measurements."""
    from graphgt.data.store import GraphStore
    from graphgt.data.store.pe import save_store_pe

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    store = GraphStore.open(args.store)
    n, nnz = store.num_nodes, int(store.indptr[-1])
    pe = make_pe(args.child, args)
    base = _rss_gib()
    out = {"pe": repr(pe), "nodes": n, "csr_entries": nnz, "base_rss_gib": base}
    t0 = time.perf_counter()
    if args.child == "lap":
        values = pe.compute_csr(store.indptr, store.indices, n)
        out["seconds"] = time.perf_counter() - t0
        out["peak_rss_gib"] = _peak_rss_gib()
        vec, val = values["lap_vec"].numpy(), values["lap_val"][0].numpy()
        out["eigenvalues"] = [float(v) for v in val]
        t1 = time.perf_counter()
        out["residuals"] = [float(r) for r in lap_residuals(store.indptr, store.indices, vec, val)]
        out["residual_check_s"] = time.perf_counter() - t1
    else:
        est = pe.estimate_csr(store.indptr, store.indices, n)
        out["seconds"] = time.perf_counter() - t0
        out["peak_rss_gib"] = _peak_rss_gib()
        values = {"rwse": np.clip(est.values, 0.0, 1.0).astype(np.float32)}
        cols = slice(pe.exact_steps, pe.steps)
        bound = est.bound[:, cols]
        out["bound_mean_per_step"] = [float(b) for b in bound.mean(axis=0)]
        out["bound_median_per_step"] = [float(b) for b in np.median(bound, axis=0)]
        out["s2_median"] = float(np.median(est.s2))
        if args.check_nodes:
            from graphgt.pe.rw_estimator import exact_rwse_nodes

            rng = np.random.default_rng(12345)
            deg = np.diff(store.indptr)
            nodes = np.sort(rng.choice(np.flatnonzero(deg > 0), size=min(args.check_nodes, int((deg > 0).sum())),
                                       replace=False))
            t1 = time.perf_counter()
            exact = exact_rwse_nodes(store.indptr, store.indices, nodes, pe.steps)
            out["exact_check_s"] = time.perf_counter() - t1
            err = np.abs(est.values[nodes] - exact)[:, cols]
            b = est.bound[nodes][:, cols]
            out["check_nodes"] = len(nodes)
            out["observed_err_mean_per_step"] = [float(e) for e in err.mean(axis=0)]
            out["observed_err_max"] = float(err.max())
            out["observed_err_mean"] = float(err.mean())
            out["exact_mean_per_step"] = [float(e) for e in exact[:, cols].mean(axis=0)]
            out["bound_mean_at_checked"] = float(b.mean())
            out["bound_violations"] = int(np.sum(err > b + 1e-7))
            out["checked_entries"] = int(err.size)
        out["peak_rss_gib_with_checks"] = _peak_rss_gib()
    if args.write:
        t1 = time.perf_counter()
        save_store_pe(args.store, pe, values)
        out["write_s"] = time.perf_counter() - t1
    return out


def run_child(name: str, args, threads=None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--store", str(args.store),
           "--device", args.device] + (["--child-threads", str(threads)] if threads is not None else []) + [
           "--probes", str(args.probes), "--k", str(args.k), "--steps", str(args.steps), "--method", args.method,
           "--probe-block", str(args.probe_block), "--delta", str(args.delta),
           "--check-nodes", str(args.check_nodes)] + (["--write"] if args.write else []) + \
        (["--block", str(args.block)] if args.block is not None else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    if proc.returncode != 0:
        return {"error": f"exit code {proc.returncode}", "wall_s": time.perf_counter() - t0}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def build(path: str, scale: float) -> None:
    from graphgt.data.store.synthetic import build_shaped, products_spec

    t0 = time.perf_counter()
    store = build_shaped(path, products_spec(scale), seed=0, overwrite=True, log=print)
    print(f"built {store!r} in {time.perf_counter() - t0:.1f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", help="graph store directory")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--probes", type=int, default=256, help="RWSE estimator probes")
    ap.add_argument("--method", default="gram", choices=["gram", "hutchinson"])
    ap.add_argument("--probe-block", type=int, default=64)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--k", type=int, default=8, help="LapPE eigenpairs")
    ap.add_argument("--block", type=int, default=None, help="LapPE Chebyshev solver block size (default: the class's)")
    ap.add_argument("--steps", type=int, default=16, help="RWSE steps")
    ap.add_argument("--only", choices=["lap", "rwse"], help="run one encoding only")
    ap.add_argument("--check-nodes", type=int, default=64,
                    help="nodes whose exact RWSE is computed to measure the estimator's error (0: none)")
    ap.add_argument("--write", action="store_true", help="store the encodings into the store")
    ap.add_argument("--build", metavar="PATH", help="build a products-shaped store at PATH and exit")
    ap.add_argument("--scale", type=float, default=1.0, help="with --build: fraction of the products shape")
    ap.add_argument("--device", default="auto", help="the PEs' device option: auto (CUDA if available), cpu, cuda[:i]")
    ap.add_argument("--threads", default=None,
                    help="CPU threads of the PE solvers (default: torch's count); a comma list, e.g. 1,2, runs "
                         "each encoding once per count, interleaved over --repeat rounds (same-run ratios)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds over the --threads list")
    ap.add_argument("--child-threads", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", choices=["lap", "rwse"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build:
        build(args.build, args.scale)
        return
    if not args.store:
        ap.error("--store is required")
    if args.child:
        print(json.dumps(child(args)))
        return

    from graphgt.data.store import GraphStore

    store = GraphStore.open(args.store)
    load_before = os.getloadavg()
    print(f"store {store.path}: {store.num_nodes:,} nodes, {store.num_edges:,} CSR entries; "
          f"{os.cpu_count()} CPUs, load {load_before[0]:.1f}")
    results = {"store": str(store.path), "nodes": store.num_nodes, "csr_entries": store.num_edges,
               "cpus": os.cpu_count(), "loadavg_before": list(load_before)}
    counts = [None] if args.threads is None else [int(t) for t in str(args.threads).split(",")]
    names = ["lap", "rwse"] if args.only is None else [args.only]
    for rnd in range(args.repeat):
        for name in names:
            for threads in counts:
                r = run_child(name, args, threads)
                tag = name if threads is None else f"{name}_threads{threads}"
                if len(counts) > 1 or args.repeat > 1:
                    results.setdefault("runs", []).append(dict(r, encoding=name, threads=threads, round=rnd))
                results.setdefault(name, r)
                if "error" in r:
                    print(f"{tag}: FAILED ({r['error']})")
                    continue
                print(f"{tag}: {r['seconds']:.1f}s, peak RSS {r['peak_rss_gib']:.2f} GiB (base {r['base_rss_gib']:.2f}) "
                      f"- {r['pe']}", flush=True)
    if len(counts) > 1:
        for name in names:
            med = {t: float(np.median([r["seconds"] for r in results["runs"] if r["encoding"] == name
                                       and r["threads"] == t and "seconds" in r] or [np.nan])) for t in counts}
            results[f"{name}_median_s_by_threads"] = med
            print(f"{name}: median seconds by threads {med}; ratio {counts[0]} -> {counts[-1]} threads: "
                  f"{med[counts[0]] / med[counts[-1]]:.2f}x")
    lap, rwse = results.get("lap", {}), results.get("rwse", {})
    results.update(lap_s=lap.get("seconds"), lap_peak_rss_gib=lap.get("peak_rss_gib"),
                   rwse_s=rwse.get("seconds"), rwse_peak_rss_gib=rwse.get("peak_rss_gib"))
    print()
    print("| encoding | time | peak RSS | check |")
    print("|---|---|---|---|")
    if "seconds" in lap:
        print(f"| LapPE k={args.k} | {lap['seconds']:.1f} s | {lap['peak_rss_gib']:.2f} GiB | "
              f"max residual ||Lu - λu|| = {max(lap['residuals']):.1e}; λ = "
              f"{', '.join(f'{v:.5f}' for v in lap['eigenvalues'])} |")
    if "seconds" in rwse:
        check = (f"{rwse['checked_entries']} checked entries: mean |err| {rwse['observed_err_mean']:.2e}, "
                 f"max {rwse['observed_err_max']:.2e}, mean bound {rwse['bound_mean_at_checked']:.2e}, "
                 f"{rwse['bound_violations']} above the bound") if "checked_entries" in rwse else ""
        print(f"| RWSE {args.steps} steps, {args.probes} probes ({args.method}) | {rwse['seconds']:.1f} s | "
              f"{rwse['peak_rss_gib']:.2f} GiB | {check} |")
    results["loadavg_after"] = list(os.getloadavg())
    print(f"load average before {load_before[0]:.2f} / {load_before[1]:.2f}, after {results['loadavg_after'][0]:.2f} / "
          f"{results['loadavg_after'][1]:.2f} (1 / 5 min)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
