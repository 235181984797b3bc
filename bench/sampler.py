"""Benchmark: graphgt's fan-out neighbour sampler against PyG's ``NeighborLoader`` (torch-sparse).

Same graph, same fan-outs, same batch size, same cores, one run.  For each side it measures, over
``--batches`` shuffled training batches after ``--warmup`` batches:

- ``sample``: the sampling alone (ours: ``NeighborSampler.sample``; PyG: ``NeighborLoader`` over a
  ``Data`` without features, which runs the same ``neighbor_sample`` op and the relabelling);
- ``loader``: the whole loader with feature (and label) gathering, with 0 and ``--workers`` worker
  processes (ours: ``NodeLoader`` on a graph store; PyG: ``NeighborLoader`` on an in-memory ``Data``).

It reports batches/s, sampled edges/s and nodes per batch, and a *floor*: the time the machine
needs at least for the memory traffic of one batch, estimated from two micro-benchmarks run in
the same process (see :func:`measure_machine`):

    floor = touches * t_random + bytes / bandwidth

where ``touches`` counts the random accesses a sampler cannot avoid: per frontier node its CSR row
pointer and the first cache line of its neighbour list, one more line per further 64 bytes of the
list that the draws reach, and per sampled edge one probe of the global -> local relabelling map
(every sampled neighbour must be looked up there, by any sampler); ``t_random`` is the measured
time per independent random 8-byte read
into an array much larger than the caches (it includes the memory-level parallelism a core gets),
``bytes`` the feature rows gathered (``rows * F * 4``, streamed) and ``bandwidth`` a measured large
copy.  ``ours / floor`` says how far we are from what the memory system allows.

Graphs: ``random`` (``--nodes`` nodes, ``--edges`` CSR entries: ``edges // 2`` uniform random pairs
stored in both directions, no duplicates) and ``--store PATH`` (a graph store, e.g. the
products-shaped graph from ``scripts/build_synthetic.py products``).

PyG needs ``torch-sparse`` (or pyg-lib) for ``NeighborLoader``; neither is on PyPI as a wheel::

    pip install --no-deps ../shared/wheels/torch_scatter-2.1.2-*.whl ../shared/wheels/torch_sparse-0.6.18-*.whl
    # or, where those prebuilt wheels do not fit:  MAX_JOBS=2 pip install --no-build-isolation torch-scatter torch-sparse

Without it the PyG columns are reported as unavailable.  Usage::

    python bench/sampler.py                                  # 100k nodes / 2M edges
    python bench/sampler.py --store /path/to/products-shaped --json results/bench_sampler_products.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def random_graph(nodes: int, edges: int, seed: int = 0):
    """CSR ``(indptr, indices)`` of ``edges // 2`` random pairs stored both ways (no loops/duplicates)."""
    from graphgt.data.store import csr_from_edges

    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, nodes, edges // 2), rng.integers(0, nodes, edges // 2)
    keep = src != dst
    lo, hi = np.minimum(src[keep], dst[keep]), np.maximum(src[keep], dst[keep])
    pairs = np.unique(lo * nodes + hi)
    lo, hi = pairs // nodes, pairs % nodes
    return csr_from_edges(np.concatenate([lo, hi]), np.concatenate([hi, lo]), nodes)


def make_random_store(path: Path, nodes: int, edges: int, features: int, classes: int = 47, seed: int = 0):
    from graphgt.data.store import write_store

    indptr, indices = random_graph(nodes, edges, seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((nodes, features), dtype=np.float32)
    y = rng.integers(0, classes, nodes).astype(np.int16)
    perm = rng.permutation(nodes)
    splits = {"train": np.sort(perm[: nodes // 2]), "val": np.sort(perm[nodes // 2: 3 * nodes // 4]),
              "test": np.sort(perm[3 * nodes // 4:])}
    return write_store(path, "random", nodes, indptr, indices, x=x, y=y, splits=splits,
                       task={"kind": "multiclass", "num_outputs": classes, "metric": "accuracy"})


# ----------------------------------------------------------------------------------------- machine


def measure_machine(size_mib: int = 1024, reads: int = 20_000_000) -> Dict[str, float]:
    """``t_random_ns`` (independent random 8-byte reads, >> cache) and ``bandwidth_gbs`` (large copy)."""
    import numba

    @numba.njit(cache=True)
    def gather_sum(arr, idx):
        s = 0
        for i in range(idx.size):
            s += arr[idx[i]]
        return s

    n = size_mib * 1024 * 1024 // 8
    arr = np.arange(n, dtype=np.int64)
    idx = np.random.default_rng(0).integers(0, n, reads)
    gather_sum(arr, idx[:1000])
    best_rand = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        gather_sum(arr, idx)
        best_rand = min(best_rand, time.perf_counter() - t0)
    dst = np.empty_like(arr)
    best_copy = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        np.copyto(dst, arr)
        best_copy = min(best_copy, time.perf_counter() - t0)
    return {"t_random_ns": best_rand / reads * 1e9, "bandwidth_gbs": 2 * arr.nbytes / best_copy / 1e9}


def floor_seconds(indptr: np.ndarray, node_ids: np.ndarray, num_targets: int, edges: int, rows: int,
                  features: int, machine: Dict[str, float], gather: bool) -> float:
    """The memory-traffic floor of one batch (see the module docstring)."""
    deg = np.diff(np.asarray(indptr)[np.asarray(node_ids[:num_targets])])
    lines_per_list = np.maximum(1, np.ceil(np.minimum(deg, 64) * 4 / 64))  # int32 ids, 64-byte lines
    touches = 2 * num_targets + float(np.sum(lines_per_list - 1)) + edges
    t = touches * machine["t_random_ns"] * 1e-9
    if gather:
        t += rows * features * 4 / (machine["bandwidth_gbs"] * 1e9) + rows * machine["t_random_ns"] * 1e-9
    return t


# ------------------------------------------------------------------------------------------- ours


def bench_ours(store, fanouts, batch_size, batches, warmup, workers, seed=0) -> Dict[str, float]:
    from graphgt.data.sampling import NeighborSampler, NodeLoader

    sampler = NeighborSampler(store.indptr, store.indices, fanouts)
    seeds = np.asarray(store.split("train"))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(seeds)
    out: Dict[str, float] = {}
    # sampling alone
    for i in range(warmup):
        sampler.sample(perm[i * batch_size:(i + 1) * batch_size], seed=i)
    edges = nodes = 0
    targets = []
    t0 = time.perf_counter()
    for i in range(batches):
        b = perm[((warmup + i) * batch_size) % (len(perm) - batch_size):][:batch_size]
        sub = sampler.sample(b, seed=warmup + i)
        edges += sub.edge_index.shape[1]
        nodes += sub.node_ids.shape[0]
        # the nodes whose neighbours were sampled: every hop but the last
        targets.append((sub.node_ids, int(sum(sub.num_sampled_nodes[:-1])), sub.edge_index.shape[1],
                        sub.node_ids.shape[0]))
    dt = time.perf_counter() - t0
    out.update(sample_batches_per_s=batches / dt, sample_edges_per_s=edges / dt, nodes_per_batch=nodes / batches,
               edges_per_batch=edges / batches)
    out["_targets"] = targets  # for the floor
    # whole loader with gathering: 0 and `workers` worker processes, and the defaults of the data
    # configs (num_workers=auto, placement=auto: host gathering in the workers on a CPU machine)
    from graphgt.data.sampling.loader import resolve_num_workers

    out["default_workers"] = resolve_num_workers("auto")
    for w in sorted({0, workers}) + ["default"]:
        nw = "auto" if w == "default" else w
        loader = NodeLoader(store, seeds, sampler, batch_size=batch_size, shuffle=True, seed=seed, num_workers=nw)
        it = iter(loader)
        for _ in range(warmup):
            next(it)
        t0 = time.perf_counter()
        n = 0
        for _ in range(batches):
            try:
                next(it)
            except StopIteration:
                it = iter(loader)
                next(it)
            n += 1
        out["loader_default_batches_per_s" if w == "default" else f"loader_w{w}_batches_per_s"] = \
            n / (time.perf_counter() - t0)
        del it, loader
    return out


# -------------------------------------------------------------------------------------------- PyG


def pyg_available() -> Optional[str]:
    try:
        import torch_sparse  # noqa: F401
        return None
    except Exception:
        try:
            import pyg_lib  # noqa: F401
            return None
        except Exception as e:
            return f"neither torch-sparse nor pyg-lib importable ({type(e).__name__})"


def bench_pyg(store, fanouts, batch_size, batches, warmup, workers, seed=0) -> Dict[str, float]:
    import torch
    from torch_geometric.data import Data
    from torch_geometric.loader import NeighborLoader

    indptr = torch.from_numpy(np.asarray(store.indptr, dtype=np.int64))
    col = torch.from_numpy(np.asarray(store.indices, dtype=np.int64))
    row = torch.repeat_interleave(torch.arange(store.num_nodes), indptr.diff())
    edge_index = torch.stack([col, row])  # messages neighbour -> node, as PyG's convention
    seeds = torch.from_numpy(np.asarray(store.split("train"), dtype=np.int64))
    out: Dict[str, float] = {}

    def run(data, w, key):
        torch.manual_seed(seed)
        loader = NeighborLoader(data, num_neighbors=list(fanouts), batch_size=batch_size, input_nodes=seeds,
                                shuffle=True, num_workers=w, persistent_workers=w > 0)
        it = iter(loader)
        for _ in range(warmup):
            next(it)
        t0 = time.perf_counter()
        edges = 0
        for _ in range(batches):
            try:
                b = next(it)
            except StopIteration:
                it = iter(loader)
                b = next(it)
            edges += b.edge_index.size(1)
        dt = time.perf_counter() - t0
        out[f"{key}_batches_per_s"] = batches / dt
        if key == "sample":
            out["sample_edges_per_s"] = edges / dt

    run(Data(edge_index=edge_index, num_nodes=store.num_nodes), 0, "sample")
    x = torch.from_numpy(np.asarray(store.x, dtype=np.float32))
    y = torch.from_numpy(np.asarray(store.y).astype(np.int64))
    full = Data(x=x, y=y, edge_index=edge_index, num_nodes=store.num_nodes)
    for w in sorted({0, workers}):
        run(full, w, f"loader_w{w}")
    return out


# ------------------------------------------------------------------------------------------- main


def main(argv=None) -> Dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", type=Path, help="a graph store (default: a random graph)")
    p.add_argument("--nodes", type=int, default=100_000)
    p.add_argument("--edges", type=int, default=2_000_000)
    p.add_argument("--features", type=int, default=100)
    p.add_argument("--fanouts", type=int, nargs="+", default=[15, 10])
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-pyg", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import torch

    from graphgt.data.store import GraphStore

    tmp = None
    if args.store is None:
        tmp = tempfile.TemporaryDirectory(prefix="graphgt-bench-sampler-")
        store = make_random_store(Path(tmp.name) / "g", args.nodes, args.edges, args.features)
        graph = f"random {args.nodes:,} nodes / {store.num_edges:,} CSR entries"
    else:
        store = GraphStore.open(args.store)
        graph = f"{store.name} {store.num_nodes:,} nodes / {store.num_edges:,} CSR entries"
    features = int(store.x.shape[1])
    machine = measure_machine()
    print(f"graph: {graph}; fan-outs {args.fanouts}, batch {args.batch_size}, threads {torch.get_num_threads()}, "
          f"cores {os.cpu_count()}")
    print(f"machine: random read {machine['t_random_ns']:.1f} ns, copy bandwidth {machine['bandwidth_gbs']:.1f} GB/s")

    ours = bench_ours(store, args.fanouts, args.batch_size, args.batches, args.warmup, args.workers)
    targets = ours.pop("_targets")
    floors_s = [floor_seconds(store.indptr, ids, nt, e, rows, features, machine, gather=False)
                for ids, nt, e, rows in targets]
    floors_g = [floor_seconds(store.indptr, ids, nt, e, rows, features, machine, gather=True)
                for ids, nt, e, rows in targets]
    floor_sample = 1.0 / float(np.mean(floors_s))
    floor_loader = 1.0 / float(np.mean(floors_g))
    why = None if not args.skip_pyg else "skipped (--skip-pyg)"
    why = why or pyg_available()
    pyg = {} if why else bench_pyg(store, args.fanouts, args.batch_size, args.batches, args.warmup, args.workers)

    w = args.workers
    rows = [("sampling only", "sample_batches_per_s", floor_sample),
            ("loader + features, 0 workers", "loader_w0_batches_per_s", floor_loader),
            (f"loader + features, {w} workers", f"loader_w{w}_batches_per_s", floor_loader),
            (f"loader, defaults ({ours['default_workers']} workers)", "loader_default_batches_per_s", floor_loader)]
    print(f"\n{'batches/s':34s} {'ours':>9s} {'PyG':>9s} {'speedup':>8s} {'floor':>9s} {'floor/ours':>10s}")
    for label, key, floor in rows:
        o = ours.get(key, float("nan"))
        q = pyg.get(f"loader_w{w}_batches_per_s" if key == "loader_default_batches_per_s" else key, float("nan"))
        print(f"{label:34s} {o:9.1f} {q:9.1f} {o / q:8.2f} {floor:9.1f} {floor / o:10.2f}")
    print(f"{'sampled edges/s (sampling only)':34s} {ours['sample_edges_per_s']:9.3g} "
          f"{pyg.get('sample_edges_per_s', float('nan')):9.3g}")
    print(f"nodes per batch {ours['nodes_per_batch']:.0f}, edges per batch {ours['edges_per_batch']:.0f}")
    if why:
        print(f"PyG: {why}")
    best_ours = max(ours[f"loader_w{k}_batches_per_s"] for k in sorted({0, w}))
    if pyg:
        print(f"defaults vs PyG with {w} workers: {ours['loader_default_batches_per_s'] / pyg[f'loader_w{w}_batches_per_s']:.1f}x")
    best_pyg = max((pyg.get(f"loader_w{k}_batches_per_s", float("nan")) for k in sorted({0, w})), default=float("nan"))
    result = {"graph": graph, "fanouts": args.fanouts, "batch_size": args.batch_size, "machine": machine,
              "ours": ours, "pyg": pyg or None, "pyg_unavailable": why,
              "floor_sample_batches_per_s": floor_sample, "floor_loader_batches_per_s": floor_loader,
              "ours_batches_per_s": best_ours, "pyg_batches_per_s": best_pyg,
              "speedup": best_ours / best_pyg if pyg else None,
              # the goal's figure: our loader with the configs' defaults vs PyG's with `--workers` workers
              "default_speedup": ours["loader_default_batches_per_s"] / pyg[f"loader_w{w}_batches_per_s"]
              if pyg else None,
              "sample_speedup": ours["sample_batches_per_s"] / pyg["sample_batches_per_s"] if pyg else None,
              "ours_vs_floor": floor_loader / best_ours}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
