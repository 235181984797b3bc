#!/usr/bin/env python
"""Build a synthetic graph store of the shape of ogbn-products or ogbn-papers100M.

    python scripts/build_synthetic.py products --out /data/products-shaped
    python scripts/build_synthetic.py papers --out /data/papers-shaped --fraction 0.02 --json build.json

Checks the free disk space against the estimated store size first (and refuses when short), then
builds the store (see graphgt/data/store/synthetic.py) and prints the build time, the peak RSS of
this process and the sizes.  Threads: NUMBA_NUM_THREADS (default: all cores).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from graphgt.errors import ConfigError
from graphgt.data.store import synthetic as sl


def _peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # kB on Linux, bytes on macOS


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset", choices=sorted(sl.PRESETS), help="which shape")
    p.add_argument("--out", required=True, help="the store directory to create")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", "--fraction", dest="factor", type=float, default=1.0,
                   help="shrink every count by this factor (products: --scale, papers: --fraction)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    p.add_argument("--mem-budget-gb", type=float, default=4.0,
                   help="GiB for the edge bucket buffer (more = fewer passes over the edge stream)")
    p.add_argument("--json", default=None, help="also write the build report to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    spec_fn, build_fn = sl.PRESETS[args.preset]
    spec = spec_fn(args.factor)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"--out '{out}' already exists; pass --overwrite to replace it")
    need = sl.estimate_bytes(spec)
    free = sl.check_disk_space(out, need)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    log(f"building {spec.name}: {spec.num_nodes:,} nodes, {spec.num_edges:,} undirected edges, "
        f"{spec.num_features} x {spec.feature_dtype} features, {spec.num_classes} classes; estimated "
        f"{need / sl.GiB:.2f} GiB ({free / sl.GiB:.1f} GiB free)")
    factor_key = "scale" if args.preset == "products" else "fraction"
    t0 = time.perf_counter()
    store = build_fn(out, seed=args.seed, overwrite=args.overwrite, log=log,
                     mem_budget=int(args.mem_budget_gb * sl.GiB), **{factor_key: args.factor})
    seconds = time.perf_counter() - t0
    gen = store.meta["generator"]
    arrays = {k: (store.path / f"{k}.npy").stat().st_size for k in store.meta["arrays"]}
    report = {
        "preset": args.preset, factor_key: args.factor, "seed": args.seed, "path": str(store.path.resolve()),
        "build_seconds": round(seconds, 2), "peak_rss_bytes": _peak_rss_bytes(),
        "threads": gen["build"]["threads"], "disk_bytes": _dir_bytes(store.path), "estimated_bytes": need,
        "array_bytes": arrays, "num_nodes": store.num_nodes, "num_csr_entries": store.num_edges,
        "edges": gen["edges"], "phases": gen["build"]["phases"], "buckets": gen["build"]["buckets"],
    }
    print(f"built {store.path} in {seconds:.1f}s, peak RSS {report['peak_rss_bytes'] / sl.GiB:.2f} GiB, "
          f"{report['disk_bytes'] / sl.GiB:.2f} GiB on disk (estimated {need / sl.GiB:.2f} GiB)")
    print(f"  {store.num_nodes:,} nodes, {store.num_edges:,} CSR entries; degree max "
          f"{gen['edges']['degree']['max']:,} mean {gen['edges']['degree']['mean']:.1f} median "
          f"{gen['edges']['degree']['median']}; edge homophily {gen['edges']['edge_homophily']:.3f}; "
          f"{gen['edges']['duplicates_removed']:,} duplicates and {gen['edges']['self_loops_removed']:,} self "
          "loops removed")
    for key, size in arrays.items():
        print(f"  {key:<12} {size / 2**20:10.1f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
