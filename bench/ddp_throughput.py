"""Training throughput of one process vs DDP over two processes, for a node-level model on sampled
mini-batches (GraphSAGE on a products-shaped graph), on this machine's CPU cores.

Every configuration runs ``graphgt train`` in fresh processes on the same store, with the same
global batch (one process: ``B`` seeds per step; two ranks: ``B / 2`` each), and reports training
seeds per second from the epochs after the first (warm caches).  Configurations:

* ``1 proc x T threads``: one process using all ``T`` cores for its kernels;
* ``1 proc x 1 thread``;
* ``2 procs x T/2 threads``: DDP with gloo (``torchrun``), each rank its share of the cores.

Usage::

    python bench/ddp_throughput.py [--scale 0.02] [--epochs 3] [--batch 1024] [--json FILE]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]


def run(cmd: List[str], threads: int, cache: Path, run_dir: Path) -> Dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), GRAPHGT_CACHE=str(cache), PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd + [f"hydra.run.dir={run_dir}"], env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    times = [float(r["epoch_time_s"]) for r in rows[1:]] or [float(rows[0]["epoch_time_s"])]
    return {"epoch_time_s": statistics.median(times), "val_accuracy": float(rows[-1]["val_accuracy"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.02, help="fraction of ogbn-products' size")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1024, help="global batch (seeds per optimiser step)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    job = ["data=products-synth", f"data.source.builder.scale={args.scale}", "model=mpnn", "local=sage",
           "attention=none", "pe=none", "model.raw_io=true", "model.hidden=128", "data.sampler.fanouts=[15,10]",
           f"trainer.max_epochs={args.epochs}", "trainer.progress=false", "trainer.evaluate_test=false",
           "trainer.checkpoint=false", "data.eval_batch_size=4096"]
    graphgt = [sys.executable, "-m", "graphgt.cli", "train"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "graphgt.cli", "train"]
    with tempfile.TemporaryDirectory(prefix="graphgt-ddp-bench-") as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        half = max(1, args.threads // 2)
        configs = [
            (f"1 proc x {args.threads} threads", graphgt + job + [f"data.batch_size={args.batch}"], args.threads),
            ("1 proc x 1 thread", graphgt + job + [f"data.batch_size={args.batch}"], 1),
            (f"2 procs x {half} thread(s) (DDP, gloo)", torchrun + job + [f"data.batch_size={args.batch // 2}"], half),
        ]
        run(graphgt + job + ["trainer.max_epochs=1", "trainer.limit_train_batches=1"], args.threads, cache,
            tmp / "warmup")  # builds the store once, outside the timings
        results = {}
        for i, (name, cmd, threads) in enumerate(configs):
            results[name] = run(cmd, threads, cache, tmp / f"run{i}")
    from graphgt.data.store.synthetic import products_spec

    spec = products_spec(args.scale)
    seeds = spec.train
    base = results[configs[0][0]]["epoch_time_s"]
    print(f"GraphSAGE [15,10], hidden 128, global batch {args.batch}, products-shaped graph at scale {args.scale}"
          f" ({spec.num_nodes} nodes); {os.cpu_count()} CPU cores")
    print(f"{'configuration':<36} {'epoch (s)':>10} {'seeds/s':>10} {'vs 1 proc':>10} {'val acc':>8}")
    for name, r in results.items():
        rate = f"{seeds / r['epoch_time_s']:.0f}"
        print(f"{name:<36} {r['epoch_time_s']:>10.2f} {rate:>10} {base / r['epoch_time_s']:>9.2f}x "
              f"{r['val_accuracy']:>8.4f}")
    if args.json:
        args.json.write_text(json.dumps({"scale": args.scale, "batch": args.batch, "results": results}, indent=2))


if __name__ == "__main__":
    main()
