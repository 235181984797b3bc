"""Benchmark: sampled GraphSAGE training in one process with 1 vs 2 torch threads, and the worker
processes of the pipelined loader, on the products-shaped graph store.

Every configuration runs in a fresh process (``OMP_NUM_THREADS`` / ``torch.set_num_threads`` set
before anything runs), trains a 2-layer GraphSAGE (hidden 128, fan-outs [15, 10], batch 1024) with
the trainer's own ``train_epoch`` on ``--batches`` batches after ``--warmup`` batches, and reports
training batches per second.  The configurations are run ``--rounds`` times, interleaved, so that a
noisy machine hits each of them alike; the median is reported.

* ``T threads, W workers, policy P``: torch intra-op threads ``T`` in the training process, ``W``
  loader worker processes (each with one torch thread, :func:`graphgt.data.sampling.loader._worker_init`;
  ``auto`` = the data configs' default, :func:`resolve_num_workers`), and ``OMP_WAIT_POLICY=P``.

Finding: when another process takes a core, libgomp's default (ACTIVE: a thread that finishes a
parallel region spins for its next one) makes 2 threads several times slower than 1, because the
spinning thread and the thread doing the serial work (sampling, gathering, Python) fight for the
core; ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep) removes that.

Usage::

    python bench/threads.py --store $BENCH_DATA/products-shaped-seed0-scale1.0 [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (torch threads, loader workers, OMP_WAIT_POLICY of the training process; None = libgomp's default, ACTIVE
# spinning).  The policy is read when libgomp loads (at ``import torch``), so it is set in the environment.
CONFIGS = [(1, 0, None), (2, 0, None), (2, 0, "PASSIVE"), (2, "auto", None), (2, "auto", "PASSIVE")]


def child(store_path: str, threads: int, workers, batches: int, warmup: int) -> float:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(REPO))
    from torch_geometric.nn import SAGEConv

    from graphgt.data.prefetch import prefetch
    from graphgt.data.sampling import NeighborSampler, NodeLoader
    from graphgt.data.store import GraphStore
    from graphgt.app import build_objective
    from graphgt.data.store.node import task_from_meta
    from graphgt.spec import DataSpec, FloatFeatures
    from graphgt.train.loop import Trainer

    store = GraphStore.open(store_path)
    classes = int(store.meta["task"]["num_outputs"])

    class SAGE(torch.nn.Module):
        def __init__(self, f: int, h: int, c: int):
            super().__init__()
            self.c1, self.c2 = SAGEConv(f, h), SAGEConv(h, c)

        def forward(self, batch):
            return self.c2(self.c1(batch.x, batch.edge_index).relu(), batch.edge_index)

    torch.manual_seed(0)
    model = SAGE(int(store.x.shape[1]), 128, classes)
    sampler = NeighborSampler(store.indptr, store.indices, [15, 10])
    loader = NodeLoader(store, np.asarray(store.split("train")), sampler, batch_size=1024, shuffle=True, seed=0,
                        num_workers=workers)
    objective = build_objective(DataSpec(task=task_from_meta(store), node_features=FloatFeatures(int(store.x.shape[1])),
                                         edge_features=None, name=store.name))
    trainer = Trainer(max_epochs=1, device="cpu", progress=False, checkpoint=False,
                      limit_train_batches=warmup, grad_clip=None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    wrapped = prefetch(loader, "cpu")
    trainer.train_epoch(model, wrapped, objective, opt, None, epoch=1)
    trainer.limit_train_batches = batches
    t0 = time.perf_counter()
    trainer.train_epoch(model, wrapped, objective, opt, None, epoch=2)
    return batches / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        threads, workers = int(args.child[0]), args.child[1]
        rate = child(args.store, threads, workers if workers == "auto" else int(workers), args.batches, args.warmup)
        print(json.dumps({"batches_per_s": rate}))
        return
    def name(t, w, p):
        return f"{t} threads, {w} workers, {p or 'default'}"

    rates = {name(*c): [] for c in CONFIGS}
    for _ in range(args.rounds):
        for t, w, policy in CONFIGS:
            env = dict(os.environ, OMP_NUM_THREADS=str(t))
            env.pop("OMP_WAIT_POLICY", None)
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            out = subprocess.run([sys.executable, __file__, "--store", args.store, "--batches", str(args.batches),
                                  "--warmup", str(args.warmup), "--child", str(t), str(w)],
                                 env=env, capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            rates[name(t, w, policy)].append(json.loads(out.stdout.strip().splitlines()[-1])["batches_per_s"])
    from graphgt.data.sampling.loader import resolve_num_workers

    print(f"GraphSAGE [15,10], hidden 128, batch 1024, {args.batches} batches; {os.cpu_count()} cores, "
          f"auto = {resolve_num_workers('auto')} workers")
    print(f"{'configuration':<36} {'batches/s (median)':>18}   all rounds")
    for key, r in rates.items():
        print(f"{key:<36} {statistics.median(r):>18.2f}   {', '.join(f'{v:.2f}' for v in r)}")
    if args.json:
        args.json.write_text(json.dumps({k: {"median": statistics.median(v), "rounds": v} for k, v in rates.items()},
                                        indent=2))


if __name__ == "__main__":
    main()
