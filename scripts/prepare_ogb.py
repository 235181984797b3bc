#!/usr/bin/env python
"""Download (if needed and possible) and convert an OGB node dataset into a graphgt graph store.

Usage::

    python scripts/prepare_ogb.py ogbn-products --root data/ogb [--store DIR] [--chunk-rows N]
                                  [--mem-gb G] [--overwrite] [--no-download]

The raw files are expected at ``<root>/<ogbn_name>/`` (OGB's layout; the zip's own folder name,
e.g. ``<root>/products``, works too).  When they are missing the raw zip is fetched with OGB's
download helpers (internet needed) and unpacked there; then the files are streamed into the store
(default ``<root>/store/<ogbn_name>``).  OGB's in-memory processing is never run, so even
ogbn-papers100M converts in bounded memory (see ``graphgt.data.store.ogb``).  Prints the time taken
and the peak resident memory.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from graphgt.errors import ConfigError  # noqa: E402
from graphgt.data.store.ogb import (DEFAULT_CHUNK_ROWS, DEFAULT_MEM_BUDGET, SUPPORTED,  # noqa: E402
                                   default_store_path, prepare_ogb_node)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", help=f"OGB dataset ({', '.join(SUPPORTED)})")
    p.add_argument("--root", required=True, help="folder holding <ogbn_name>/raw (OGB's root)")
    p.add_argument("--store", default=None, help="store directory (default <root>/store/<ogbn_name>)")
    p.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows read per chunk")
    p.add_argument("--mem-gb", type=float, default=DEFAULT_MEM_BUDGET / 2 ** 30,
                   help="sort buffer per CSR bucket in GiB (fewer passes over the edges when larger)")
    p.add_argument("--overwrite", action="store_true", help="rebuild an existing store")
    p.add_argument("--no-download", action="store_true", help="never download; fail if the raw files are missing")
    args = p.parse_args(argv)

    store_path = Path(args.store) if args.store else default_store_path(args.root, args.name)
    t0 = time.perf_counter()
    try:
        store = prepare_ogb_node(args.name, args.root, store_path, download=not args.no_download,
                                 overwrite=args.overwrite, chunk_rows=args.chunk_rows,
                                 mem_budget=int(args.mem_gb * 2 ** 30))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(store)
    csr = store.meta.get("csr", {})
    print(f"{store.name}: {store.num_nodes} nodes, {store.num_edges} CSR entries "
          f"({csr.get('edges_read', '?')} raw edges, {csr.get('buckets', '?')} CSR bucket(s)) -> {store.path}")
    print(f"time {seconds:.1f} s, peak RSS {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
