"""Benchmark: the papers100M-shaped graph, built into a graph store and trained on from disk.

1. Builds the papers100M-shaped synthetic store (``--fraction 1.0``: 111,059,956 nodes,
   1,615,685,872 undirected edges, 128 float16 features, 172 classes, ~1.4% labelled) outside the
   repository (``--root``), after checking the free disk space, in a subprocess whose wall time and
   peak RSS are recorded (``build_s``, ``build_peak_rss_gib``).
2. Trains the GPS model (``experiment=papers-synth-gps``: SAGE + Performer, 2 layers, fan-outs
   [15, 10], batch 1024) for ``--batches`` mini-batches through the ordinary CLI
   (``graphgt train ... trainer.limit_train_batches=N``), the features read from the memory-mapped
   store on disk, followed by the exact evaluation of every validation node (and, with
   ``--test``, every test node).  The peak RSS
   of the whole process tree (trainer + sampling workers, summed, polled every 0.2 s) is reported
   as ``peak_rss_gib``; batches/s is ``N / train epoch time``.

Pages of a memory-mapped file that a process has touched count in its RSS until the kernel drops
them; the loader's ``release_every`` (``data.release_every``) drops them every k batches
(``madvise(MADV_DONTNEED)``; they stay in the page cache), which is what keeps the RSS bounded on a
store larger than RAM.

    python bench/papers100m.py --root /work/bench_data --fraction 1.0 --batches 50 --json results/bench_papers100m.json
    python bench/papers100m.py --root /tmp/b --fraction 0.01 --batches 20          # a quick check
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
GIB = 1024 ** 3


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_tracked(cmd: List[str], env: Dict[str, str], log: Path) -> Dict[str, float]:
    """Run ``cmd``; return wall time, exit code and the peak RSS of its process tree."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
        peak = [0]

        def poll():
            while proc.poll() is None:
                peak[0] = max(peak[0], tree_rss(proc.pid))
                time.sleep(0.2)

        t = threading.Thread(target=poll, daemon=True)
        t.start()
        rc = proc.wait()
        t.join()
    return {"rc": rc, "wall_s": time.perf_counter() - t0, "peak_rss_gib": peak[0] / GIB}


def child_train(args) -> Dict[str, float]:
    """Build the GPS model and the data module exactly as ``graphgt train experiment=papers-synth-gps``
    does, then time ``--batches`` training steps (sampling + feature reads from disk + forward +
    backward + AdamW)."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from graphgt.app import build_trainer, seed_everything

    overrides = ["experiment=papers-synth-gps", f"data.source.builder.fraction={args.fraction}",
                 f"data.source.seed={args.seed}", f"data.store_root={args.root}", f"data.num_workers={args.workers}",
                 "trainer.progress=false", "trainer.scheduler=null"]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    seed_everything(cfg.seed)
    data = instantiate(cfg.data)
    data.load(Path(cfg.cache_dir))
    data.setup([], Path(cfg.cache_dir))
    model = instantiate(cfg.model, _partial_=True)(spec=data.spec, local=instantiate(cfg.local),
                                                   attention=instantiate(cfg.attention), pe=[])
    trainer, _ = build_trainer(cfg)
    optimizer = trainer.optimizer(model.parameters())
    losses, nodes = [], 0
    t0 = time.perf_counter()
    for step, batch in enumerate(data.train_loader(cfg.seed)):
        if step == args.batches:
            break
        out = model(batch)
        loss = torch.nn.functional.cross_entropy(out[batch.loss_mask], batch.y[batch.loss_mask])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        nodes += batch.num_nodes
        print(f"step {step}: loss {losses[-1]:.4f}, {batch.num_nodes} nodes, {time.perf_counter() - t0:.1f} s", flush=True)
    dt = time.perf_counter() - t0
    res = {"batches_per_s": len(losses) / dt, "train_s": dt, "first_loss": losses[0], "last_loss": losses[-1],
           "nodes_per_batch": nodes / len(losses), "num_params": sum(p.numel() for p in model.parameters())}
    Path(args.json).write_text(json.dumps(res))
    return res


def main(argv=None) -> Dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, required=True, help="where to write the store (outside the repo)")
    p.add_argument("--fraction", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--test", action="store_true",
                   help="also evaluate the test split (214k nodes at full size; validation is always evaluated)")
    p.add_argument("--keep", action="store_true", help="keep the store afterwards (default: delete it)")
    p.add_argument("--json", type=Path)
    p.add_argument("--train-only", action="store_true",
                   help="time the training batches only (no validation pass; the full CLI run evaluates all "
                        "125k validation nodes from disk, which takes far longer than the training budget)")
    p.add_argument("--child-train", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_train:
        return child_train(args)

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    overrides = ["experiment=papers-synth-gps", f"data.source.builder.fraction={args.fraction}",
                 f"data.source.seed={args.seed}", f"data.store_root={args.root}"]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    source = instantiate(cfg.data.source)
    store_path = source.store_path(args.root)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads),
               PYTHONPATH=str(REPO))
    logs = Path(tempfile.mkdtemp(prefix="graphgt-papers-bench-"))
    result: Dict[str, float] = {"fraction": args.fraction, "store": str(store_path), "logs": str(logs)}
    print(f"store: {store_path}\nlogs:  {logs}")

    build_report = store_path.with_name(store_path.name + ".build.json")
    if not (store_path / "meta.json").exists():
        build = [sys.executable, str(REPO / "scripts" / "build_synthetic.py"), "papers", "--out", str(store_path),
                 "--fraction", str(args.fraction), "--seed", str(args.seed), "--json", str(build_report)]
        r = run_tracked(build, env, logs / "build.log")
        print((logs / "build.log").read_text()[-2000:])
        if r["rc"] != 0:
            raise SystemExit(f"build failed (exit {r['rc']}); see {logs / 'build.log'}")
        result.update(build_s=r["wall_s"], build_peak_rss_gib=r["peak_rss_gib"])
    elif build_report.exists():  # built earlier (e.g. by the same command with --keep): its own report
        report = json.loads(build_report.read_text())
        result.update(build_s=report.get("build_seconds"), build_peak_rss_gib=report.get("peak_rss_bytes", 0) / GIB,
                      build_from_report=str(build_report))
    meta = json.loads((store_path / "meta.json").read_text())
    result.update(num_nodes=meta["num_nodes"], num_edges=meta.get("num_edges"),
                  store_gib=sum(f.stat().st_size for f in store_path.rglob("*") if f.is_file()) / GIB)

    if args.train_only:  # time the training steps in a child (no validation pass)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child-train", "--root", str(args.root),
               "--fraction", str(args.fraction), "--seed", str(args.seed), "--batches", str(args.batches),
               "--workers", str(args.workers), "--json", str(logs / "child.json")]
    else:  # the ordinary CLI run: training, then exact sampled evaluation of the validation split
        run_dir = logs / "run"
        cmd = [sys.executable, "-m", "graphgt.cli", "train", *overrides, "trainer.max_epochs=1",
               f"trainer.limit_train_batches={args.batches}", "trainer.progress=false", "trainer.scheduler=null",
               f"data.num_workers={args.workers}", "logger=csv", f"hydra.run.dir={run_dir}",
               f"trainer.evaluate_test={str(args.test).lower()}"]
    r = run_tracked(cmd, env, logs / "train.log")
    print((logs / "train.log").read_text()[-3000:])
    if r["rc"] != 0:
        raise SystemExit(f"training failed (exit {r['rc']}); see {logs / 'train.log'}")
    result.update(peak_rss_gib=r["peak_rss_gib"], train_wall_s=r["wall_s"], batches=args.batches,
                  workers=args.workers, threads=args.threads)
    if args.train_only:
        result.update(json.loads((logs / "child.json").read_text()))
        extra = f"loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}"
    else:
        res = json.loads((run_dir / "results.json").read_text())
        result.update(batches_per_s=args.batches / res["epoch_time_s"], val_accuracy=res["best_val"],
                      test_accuracy=res["test_at_best_val"])
        extra = f"val acc {result['val_accuracy']:.4f}"
    print(f"\n{'build_s':>10s} {'build RSS':>10s} {'batches/s':>10s} {'peak RSS':>10s}")
    print(f"{result.get('build_s') or float('nan'):10.0f} {result.get('build_peak_rss_gib') or float('nan'):9.2f}G "
          f"{result['batches_per_s']:10.3f} {result['peak_rss_gib']:9.2f}G   {extra}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(store_path, ignore_errors=True)
    return result

if __name__ == "__main__":
    main()
