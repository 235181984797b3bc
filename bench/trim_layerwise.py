"""Per-layer trimming and layer-wise inference on a products-shaped graph store.

(a) ``--part trim``: step time (forward + backward + Adam step) of trimmed vs untrimmed models on
    the same sampled batches, interleaved (trimmed, untrimmed, trimmed, ...), median per model:
    SAGE (``MPNNModel(raw_io=True)``, hidden 256, 2 layers), GPS with SAGE local layers and no
    attention, GPS with SAGE + Performer; plus the eval-mode forward (sampled evaluation) of SAGE.
    The seeds' outputs of the two models are compared on every batch (eval mode).
(b) ``--part layerwise``: :class:`graphgt.data.layerwise.LayerwiseInference` of the SAGE model over
    every node of the store (all ``N`` nodes predicted): wall time and peak RSS
    (``resource.getrusage``), run in its own process so that (a) does not inflate the RSS.

Usage::

    python bench/trim_layerwise.py --store /tmp/bench_data/products-shaped-seed0-scale1.0 --part trim
    python bench/trim_layerwise.py --store /tmp/bench_data/products-shaped-seed0-scale1.0 --part layerwise
    python bench/trim_layerwise.py            # both parts on a small random store (a quick check)
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.data import Data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphgt.data.layerwise import LayerwiseInference  # noqa: E402
from graphgt.data.sampling import NeighborSampler  # noqa: E402
from graphgt.data.store.core import GraphStore, csr_from_edges, write_store  # noqa: E402
from graphgt.nn.attention import PerformerAttention  # noqa: E402
from graphgt.nn.local import SAGELayer  # noqa: E402
from graphgt.nn.model import GPSModel, MPNNModel  # noqa: E402
from graphgt.spec import DataSpec, FloatFeatures, Task  # noqa: E402


def random_store(path: Path, n: int = 20000, deg: int = 20, feats: int = 100, classes: int = 47,
                 seed: int = 0) -> GraphStore:
    rng = np.random.default_rng(seed)
    src = rng.integers(0, n, n * deg // 2)
    dst = rng.integers(0, n, n * deg // 2)
    pairs = np.unique(np.concatenate([np.stack([src, dst], 1), np.stack([dst, src], 1)]), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    indptr, indices = csr_from_edges(pairs[:, 0], pairs[:, 1], n)
    perm = rng.permutation(n)
    return write_store(path, "random", n, indptr, indices, x=rng.standard_normal((n, feats)).astype(np.float32),
                       y=rng.integers(0, classes, n), splits={"train": perm[: n // 2], "val": perm[n // 2:]},
                       task={"kind": "multiclass", "num_outputs": classes})


def batch(store: GraphStore, sampler: NeighborSampler, seeds: np.ndarray, seed: int) -> Data:
    sub = sampler.sample(seeds, seed)
    ids = sub.node_ids
    x = torch.from_numpy(np.take(np.asarray(store.x), ids, axis=0)).float()
    y = torch.from_numpy(np.take(np.asarray(store.y), ids).astype(np.int64))
    mask = torch.zeros(ids.shape[0], dtype=torch.bool)
    mask[:sub.num_seeds] = True
    return Data(x=x, edge_index=torch.from_numpy(sub.edge_index), y=y, loss_mask=mask,
                batch=torch.zeros(ids.shape[0], dtype=torch.long), num_graphs=1, num_seeds=sub.num_seeds,
                num_sampled_nodes=sub.num_sampled_nodes.tolist(), num_sampled_edges=sub.num_sampled_edges.tolist())


def models(spec: DataSpec):
    """name -> factory(trim) of the benchmarked models."""
    return {
        "sage(raw_io, hidden 256, 2 layers)": lambda trim: MPNNModel(
            spec, hidden=256, layers=2, local=partial(SAGELayer), dropout=0.5, raw_io=True, trim=trim),
        "gps(sage, no attention, hidden 64, 2 layers)": lambda trim: GPSModel(
            spec, hidden=64, layers=2, local=partial(SAGELayer), dropout=0.2, trim=trim),
        "gps(sage + performer, hidden 64, 2 layers)": lambda trim: GPSModel(
            spec, hidden=64, layers=2, local=partial(SAGELayer), attention=partial(PerformerAttention, heads=4),
            dropout=0.2, trim=trim),
    }


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def part_trim(store: GraphStore, args) -> dict:
    spec = DataSpec(Task("multiclass", int(store.meta["task"]["num_outputs"]), "node", "accuracy"),
                    FloatFeatures(int(store.x.shape[1])), None, store.name)
    sampler = NeighborSampler(store.indptr, store.indices, args.fanouts)
    train = np.asarray(store.split("train"))
    rng = np.random.default_rng(0)
    batches = [batch(store, sampler, np.sort(rng.choice(train, args.batch_size, replace=False)), i)
               for i in range(args.batches)]
    sizes = [(b.num_nodes, b.num_edges) for b in batches]
    print(f"batches: {len(batches)} x {args.batch_size} seeds, nodes/edges per batch {sizes}", flush=True)
    results = {}
    for name, make in models(spec).items():
        torch.manual_seed(0)
        trimmed, full = make(True), make(False)
        full.load_state_dict(trimmed.state_dict())
        # equality of the seeds' outputs (eval mode) on every batch
        trimmed.eval(), full.eval()
        with torch.no_grad():
            diff = max(float((trimmed(b)[:b.num_seeds] - full(b)[:b.num_seeds]).abs().max()) for b in batches)
        opts = {m: torch.optim.Adam(m.parameters(), lr=1e-3) for m in (trimmed, full)}

        def step(model, b):
            model.train()
            opts[model].zero_grad()
            out = model(b)
            F.cross_entropy(out[b.loss_mask], b.y[b.loss_mask]).backward()
            opts[model].step()

        def forward(model, b):
            model.eval()
            with torch.no_grad():
                model(b)

        rows = {}
        for kind, fn in (("train step", step), ("eval forward", forward)):
            if kind == "eval forward" and not name.startswith("sage"):
                continue
            times = {"trimmed": [], "untrimmed": []}
            for b in batches[:2]:  # warm-up
                fn(trimmed, b), fn(full, b)
            for r in range(args.reps):
                for b in batches:
                    order = [("trimmed", trimmed), ("untrimmed", full)]
                    for label, model in (order if r % 2 == 0 else order[::-1]):
                        times[label].append(timed(lambda: fn(model, b)))
            med = {k: statistics.median(v) for k, v in times.items()}
            rows[kind] = {"trimmed_s": round(med["trimmed"], 4), "untrimmed_s": round(med["untrimmed"], 4),
                          "speedup": round(med["untrimmed"] / med["trimmed"], 2), "samples": len(times["trimmed"])}
            print(f"{name:48s} {kind:12s} trimmed {med['trimmed']*1e3:8.1f} ms  untrimmed "
                  f"{med['untrimmed']*1e3:8.1f} ms  speedup {rows[kind]['speedup']:.2f}x", flush=True)
        rows["max_abs_diff_seeds_eval"] = diff
        print(f"{name:48s} max |trimmed - untrimmed| on the seeds (eval): {diff:.2e}", flush=True)
        results[name] = rows
    return results


def part_layerwise(store: GraphStore, args) -> dict:
    spec = DataSpec(Task("multiclass", int(store.meta["task"]["num_outputs"]), "node", "accuracy"),
                    FloatFeatures(int(store.x.shape[1])), None, store.name)
    torch.manual_seed(0)
    model = MPNNModel(spec, hidden=256, layers=2, local=partial(SAGELayer), dropout=0.5, raw_io=True)
    ids = np.arange(store.num_nodes) if args.split == "all" else np.asarray(store.split(args.split))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    inf = LayerwiseInference(store, ids, chunk_size=args.chunk_size, buffer=args.buffer)
    t0 = time.perf_counter()
    pred, target = inf.predict(model, "cpu")
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    acc = float((pred.argmax(1) == target).float().mean())
    out = {"nodes": store.num_nodes, "csr_entries": store.num_edges, "predicted": int(pred.shape[0]),
           "wall_s": round(wall, 1), "peak_rss_gib": round(peak, 2), "rss_before_gib": round(rss0, 2),
           "buffer": args.buffer, "chunk_size": args.chunk_size, "finite": bool(torch.isfinite(pred).all()),
           "untrained_accuracy": round(acc, 4)}
    print(f"layer-wise SAGE over {store.num_nodes} nodes / {store.num_edges} CSR entries: {wall:.1f} s, "
          f"peak RSS {peak:.2f} GiB (before: {rss0:.2f} GiB), buffer={args.buffer}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default=None, help="graph store path (default: a small random store)")
    p.add_argument("--part", choices=["trim", "layerwise", "all"], default="all")
    p.add_argument("--fanouts", type=int, nargs="+", default=[15, 10])
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--split", default="all", help="layer-wise: 'all' nodes or a split name")
    p.add_argument("--chunk-size", type=int, default=16384)
    p.add_argument("--buffer", choices=["ram", "disk"], default="ram")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.store:
        store = GraphStore.open(args.store)
    else:
        store = random_store(Path(tempfile.mkdtemp()) / "random")
        args.batch_size = min(args.batch_size, 256)
    res = {"store": store.name, "threads": args.threads}
    if args.part in ("trim", "all"):
        res["trim"] = part_trim(store, args)
    if args.part in ("layerwise", "all"):
        res["layerwise"] = part_layerwise(store, args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
