"""Benchmark: training speed of graphgt's GPS against PyG's own ``GPSConv`` on ogbg-molbace.

Both sides train the same GPS model on the same machine, with the same threads, seed, epochs and
hyper-parameters, and report seconds per training epoch and the test ROC-AUC at the best
validation epoch (OGB ``Evaluator``, official scaffold split):

- atoms: OGB's 9 categorical columns -> sum of embeddings, width ``hidden - 16``; bonds: 3 columns
  -> width ``hidden``; RWSE with 16 steps -> ``BatchNorm1d(16)`` -> ``Linear(16, 16)``, concatenated
  to the atom embedding (as GraphGPS and PyG's ``examples/graph_gps.py`` do);
- 3 GPS layers, width 64, GINE local MPNN (MLP Linear-ReLU-Linear), 4-head global attention
  (``full`` softmax attention or ``performer``), BatchNorm, FFN 2x, dropout 0, attention dropout
  ``--attn-dropout`` (default 0.0) on both sides;
- mean pooling, head Linear(64, 64)-ReLU-Linear(64, 1); BCE-with-logits on the 1 task (NaN labels
  masked); AdamW lr 1e-3, weight decay 0, no LR schedule, no gradient clipping; batch 32.

**PyG side** follows ``examples/graph_gps.py``: ``ogb.graphproppred.PygGraphPropPredDataset`` with
``AddRandomWalkPE(walk_length=16, attr_name='pe')`` (as the example's ``pre_transform``, computed
once), ``AtomEncoder``/``BondEncoder``, ``GPSConv(64, GINEConv(nn), heads=4, attn_type=...)``,
``torch_geometric.loader.DataLoader(batch_size=32, shuffle=True)``, the example's
``RedrawProjection`` (every 1000 steps) for Performer.

**graphgt side** goes through graphgt's own config and code: the Hydra config ``train`` composed
from ``configs/`` with ``data=ogbg-molbace local=gine attention=<full|performer> pe=rwse
model.hidden=64 model.layers=3 attention.heads=4 data.batch_size=32 ...``, validated and built
exactly as :func:`graphgt.app.run` does (data module, PE, local/attention factories,
``GPSModel``, ``Trainer``); each epoch is one call of ``Trainer.train_epoch`` (graphgt's packed
loader included) and evaluation is ``Trainer.evaluate``.

Timing: seconds per training epoch = wall time of one pass over the training split (batching /
collation, forward, loss, backward, optimizer step; no evaluation), median over epochs 2..E (epoch
1 is warm-up); evaluation (val + test, untimed) follows every epoch.  Every (framework, attention)
run lives in its own subprocess (fresh allocator and thread state, ``torch.set_num_threads
(--threads)`` and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set the same); set-ups run one at a
time, then the runs train in lock step: epoch e of every run, one run at a time, in an order that
rotates each epoch, so that the load of a shared machine falls on all runs alike.  The dataset
(read-only under ``--data``) is copied to a temporary folder; dataset processing and PE
computation happen before timing and are not counted.

``--profile`` adds, after the timed epochs, a per-phase breakdown (ms per training step: batching,
forward, loss, backward, optimizer, graphgt's train metric, other; median of ``--profile-rounds``
instrumented epochs, interleaved the same way; graphgt's is a mirror of ``Trainer.train_epoch``
with timers) and prints torch.profiler and cProfile tables of one more epoch each to stderr.

Known differences that stay (each framework's own module, as shipped):

- GINE: graphgt's ``GINELayer`` is ``GINEConv(nn, edge_dim=64)`` (one extra Linear on the edge
  features per layer, +12.5k parameters); PyG's example uses ``GINEConv(nn)`` (no edge Linear).
- full attention: graphgt ``FullAttention`` (``scaled_dot_product_attention`` with a key-padding
  mask) vs ``torch.nn.MultiheadAttention`` (same parameters, same maths).
- performer: graphgt ``PerformerAttention`` = FAVOR+ softmax kernel, head dim 16, 64 orthogonal
  random features; PyG ``PerformerAttention`` = ReLU kernel, ``head_channels=64`` (inner width
  256, so 4x larger Q/K/V projections), 266 random features.  Different models, so the
  performer row compares two implementations of "Performer", not the same computation.

``--pyg-match`` sizes PyG's modules like graphgt's (``GINEConv(nn, edge_dim=64)``; Performer
``head_channels=16``, hence int(16 ln 16) = 44 ReLU random features) for a closer like-for-like
comparison of the two code paths.

Usage::

    python bench/train_throughput.py                          # 30 epochs, full + performer, 2 threads
    python bench/train_throughput.py --quick                  # 2 epochs (smoke test)
    python bench/train_throughput.py --epochs 50 --threads 1 --json out.json
    python bench/train_throughput.py --pyg-attn performer     # only the Performer variant
    python bench/train_throughput.py --pyg-match              # PyG modules sized like graphgt's
    python bench/train_throughput.py --quick --profile        # + per-phase breakdown, torch.profiler, cProfile
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "/work/shared/data/ogb/ogbg_molbace"
DATASET = "ogbg-molbace"
HIDDEN, LAYERS, HEADS, BATCH, STEPS, PE_DIM, LR = 64, 3, 4, 32, 16, 16, 1e-3
ATTN_NAMES = {"full": "full", "multihead": "full", "performer": "performer"}


# ----------------------------------------------------------------------------------------- common


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def allow_ogb_pickles() -> None:
    """ogb 1.3.6 saves PyG objects that ``torch.load(weights_only=True)`` (torch >= 2.6) refuses."""
    import torch
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    torch.serialization.add_safe_globals([DataEdgeAttr, DataTensorAttr, GlobalStorage])


def copy_dataset(src: Path, dst: Path) -> None:
    """Copy the read-only dataset folder (without any ``processed/``) and make the copy writable."""
    if dst.exists():
        return
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("processed"))
    for dirpath, dirnames, filenames in os.walk(dst):
        for name in [*dirnames, *filenames, "."]:
            p = Path(dirpath) / name
            p.chmod(p.stat().st_mode | 0o200)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class Timer:
    """Accumulates wall time per phase name."""

    def __init__(self):
        self.total: Dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.total[name] = self.total.get(name, 0.0) + now - self._t
        self._t = now


# ------------------------------------------------------------------------------------------- PyG


def build_pyg(attn: str, attn_dropout: float, root: Path, seed: int, match: bool = False):
    """PyG's ``examples/graph_gps.py`` adapted to ogbg-molbace: returns (model, optimizer, loaders, evaluator).

    ``match``: make PyG's modules the same size as graphgt's (``GINEConv(nn, edge_dim=64)``;
    Performer ``head_channels=64 // heads``), closer to a like-for-like computation.
    """
    import torch
    import torch_geometric.transforms as T
    from ogb.graphproppred import Evaluator, PygGraphPropPredDataset
    from ogb.graphproppred.mol_encoder import AtomEncoder, BondEncoder
    from torch.nn import BatchNorm1d, Linear, ModuleList, ReLU, Sequential
    from torch_geometric.loader import DataLoader
    from torch_geometric.nn import GINEConv, GPSConv, global_mean_pool
    from torch_geometric.nn.attention import PerformerAttention

    allow_ogb_pickles()
    seed_everything(seed)
    dataset = PygGraphPropPredDataset(DATASET, root=str(root),
                                      pre_transform=T.AddRandomWalkPE(walk_length=STEPS, attr_name="pe"))
    split = dataset.get_idx_split()
    loaders = {
        "train": DataLoader(dataset[split["train"]], batch_size=BATCH, shuffle=True),
        "val": DataLoader(dataset[split["valid"]], batch_size=BATCH, shuffle=False),
        "test": DataLoader(dataset[split["test"]], batch_size=BATCH, shuffle=False),
    }

    class RedrawProjection:  # as in examples/graph_gps.py
        def __init__(self, model, redraw_interval=None):
            self.model, self.redraw_interval, self.num_last_redraw = model, redraw_interval, 0

        def redraw_projections(self):
            if not self.model.training or self.redraw_interval is None:
                return
            if self.num_last_redraw >= self.redraw_interval:
                for m in self.model.modules():
                    if isinstance(m, PerformerAttention):
                        m.redraw_projection_matrix()
                self.num_last_redraw = 0
                return
            self.num_last_redraw += 1

    class GPS(torch.nn.Module):
        def __init__(self, channels: int, pe_dim: int, num_layers: int, attn_type: str, attn_kwargs):
            super().__init__()
            self.node_emb = AtomEncoder(channels - pe_dim)
            self.pe_lin = Linear(STEPS, pe_dim)
            self.pe_norm = BatchNorm1d(STEPS)
            self.edge_emb = BondEncoder(channels)
            self.convs = ModuleList()
            for _ in range(num_layers):
                nn = Sequential(Linear(channels, channels), ReLU(), Linear(channels, channels))
                conv = GINEConv(nn, edge_dim=channels) if match else GINEConv(nn)
                self.convs.append(GPSConv(channels, conv, heads=HEADS, attn_type=attn_type,
                                          attn_kwargs=attn_kwargs))
            self.mlp = Sequential(Linear(channels, channels), ReLU(), Linear(channels, 1))
            self.redraw_projection = RedrawProjection(
                self.convs, redraw_interval=1000 if attn_type == "performer" else None)

        def forward(self, x, pe, edge_index, edge_attr, batch):
            x = torch.cat((self.node_emb(x), self.pe_lin(self.pe_norm(pe))), 1)
            edge_attr = self.edge_emb(edge_attr)
            for conv in self.convs:
                x = conv(x, edge_index, batch, edge_attr=edge_attr)
            return self.mlp(global_mean_pool(x, batch))

    seed_everything(seed)
    attn_type = "multihead" if attn == "full" else "performer"
    attn_kwargs = {"dropout": attn_dropout}
    if match and attn_type == "performer":
        attn_kwargs["head_channels"] = HIDDEN // HEADS
    model = GPS(HIDDEN, PE_DIM, LAYERS, attn_type, attn_kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    return model, optimizer, loaders, Evaluator(DATASET)


def pyg_loss(out, data):
    import torch
    import torch.nn.functional as F

    y = data.y.float()
    valid = ~torch.isnan(y)
    return F.binary_cross_entropy_with_logits(out[valid], y[valid])


def pyg_forward(model, data):
    return model(data.x, data.pe, data.edge_index, data.edge_attr, data.batch)


def pyg_train_epoch(model, optimizer, loader) -> float:
    model.train()
    total = 0.0
    for data in loader:
        optimizer.zero_grad()
        model.redraw_projection.redraw_projections()
        loss = pyg_loss(pyg_forward(model, data), data)
        loss.backward()
        optimizer.step()
        total += loss.item() * data.num_graphs
    return total / len(loader.dataset)


def pyg_evaluate(model, loader, evaluator) -> float:
    import torch

    model.eval()
    preds, ys = [], []
    with torch.no_grad():
        for data in loader:
            preds.append(pyg_forward(model, data))
            ys.append(data.y.float())
    return float(evaluator.eval({"y_true": torch.cat(ys).numpy(), "y_pred": torch.cat(preds).numpy()})["rocauc"])


def pyg_breakdown_epoch(model, optimizer, loader, timer: Timer) -> None:
    """One training epoch of :func:`pyg_train_epoch` with a timer lap after each phase."""
    model.train()
    timer.lap("other")
    for data in loader:
        timer.lap("batching")
        optimizer.zero_grad()
        model.redraw_projection.redraw_projections()
        out = pyg_forward(model, data)
        timer.lap("forward")
        loss = pyg_loss(out, data)
        timer.lap("loss")
        loss.backward()
        timer.lap("backward")
        optimizer.step()
        timer.lap("optimizer")
        loss.item()
        timer.lap("other")


# --------------------------------------------------------------------------------------- graphgt


def graphgt_overrides(attn: str, attn_dropout: float, data_root: Path, cache_dir: Path, epochs: int,
                      seed: int) -> List[str]:
    return [
        f"data={DATASET}", f"data.root={data_root}", "local=gine", f"attention={attn}", "pe=rwse",
        f"model.hidden={HIDDEN}", f"model.layers={LAYERS}", f"attention.heads={HEADS}",
        f"attention.dropout={attn_dropout}", f"data.batch_size={BATCH}", "model.dropout=0.0",
        "model.norm=batch", "model.pool=mean", "model.head_layers=2", "pe.rwse.compute.steps=16",
        "pe.rwse.encoder.out_dim=16", f"trainer.max_epochs={epochs}", "trainer.optimizer.lr=0.001",
        "trainer.optimizer.weight_decay=0.0", "trainer.scheduler=null", "trainer.grad_clip=null",
        "trainer.device=cpu", "trainer.progress=false", "trainer.checkpoint=false", "logger=none",
        f"seed={seed}", f"cache_dir={cache_dir}",
    ]


def build_graphgt(attn: str, attn_dropout: float, data_root: Path, cache_dir: Path, epochs: int, seed: int):
    """Compose graphgt's Hydra config and build everything as ``graphgt.app.run`` does."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from graphgt.config.validate import validate_config
    from graphgt.app import build_objective, build_trainer, check_compatibility, seed_everything as gg_seed

    overrides = graphgt_overrides(attn, attn_dropout, data_root, cache_dir, epochs, seed)
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        cfg = compose("train", overrides=overrides)
    validate_config(cfg)
    data = instantiate(cfg.data)
    data.check()
    pe_cfg = cfg.get("pe") or {}
    pes = {name: instantiate(entry.compute) for name, entry in pe_cfg.items()}
    local = instantiate(cfg.local)
    attention = instantiate(cfg.attention)
    trainer, _ = build_trainer(cfg)
    gg_seed(cfg.seed)
    data.setup(list(pes.values()), Path(cfg.cache_dir))
    check_compatibility(local, data.spec, "gine")
    gg_seed(cfg.seed)
    branches = [(pes[name], instantiate(entry.encoder)) for name, entry in pe_cfg.items()]
    model = instantiate(cfg.model, _partial_=True)(spec=data.spec, local=local, attention=attention, pe=branches)
    # Trainer.fit's set-up, without its evaluation/checkpointing so that only train_epoch is timed
    model.to(trainer.device)
    optimizer = trainer.optimizer(model.parameters())
    train_loader = data.train_loader(cfg.seed)
    scheduler = (trainer.scheduler.build(optimizer, len(train_loader), trainer.max_epochs)
                 if trainer.scheduler else None)
    return model, optimizer, scheduler, trainer, data, train_loader, overrides


def graphgt_breakdown_epoch(model, optimizer, scheduler, trainer, loader, objective, timer: Timer) -> None:
    """A mirror of ``Trainer.train_epoch`` (graphgt/train/loop.py) with a timer lap after each phase."""
    import torch
    from torch import nn

    from graphgt.train.loop import select
    model.train()
    loss_fn = objective.loss
    preds, targets, total, count = [], [], 0.0, 0
    limit = getattr(trainer, "limit_train_batches", None)
    timer.lap("other")
    for step, batch in enumerate(loader):
        if limit is not None and step >= limit:
            break
        timer.lap("batching")
        batch = batch.to(trainer.device)
        with trainer._autocast():
            out = model(batch)
        timer.lap("forward")
        pred, y = select(out.float(), batch)
        loss = loss_fn(pred, y)
        if not torch.isfinite(loss):
            raise RuntimeError("non-finite loss")
        timer.lap("loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        timer.lap("backward")
        if trainer.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), trainer.grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        timer.lap("optimizer")
        n = y.size(0)
        total, count = total + loss.item() * n, count + n
        preds.append(pred.detach().cpu())
        targets.append(y.detach().cpu())
        timer.lap("other")
    trainer._metric(objective, torch.cat(preds), torch.cat(targets))
    timer.lap("train metric")


# ---------------------------------------------------------------------------------------- worker


def breakdown_report(breakdown_epoch, steps: int) -> Dict[str, float]:
    """One instrumented training epoch: wall time per phase, in ms per training step."""
    timer = Timer()
    breakdown_epoch(timer)
    return {k: v / steps * 1e3 for k, v in timer.total.items()}


def profile_tables(name: str, run_epoch, top: int) -> None:
    """torch.profiler (1 training epoch) and cProfile (1 training epoch) tables, printed to stderr."""
    import cProfile
    import io
    import pstats

    from torch.profiler import ProfilerActivity, profile

    out = sys.stderr
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_epoch()
    print(f"\n[{name}] torch.profiler, 1 training epoch, top {top} ops by self CPU time:", file=out)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top), file=out, flush=True)

    pr = cProfile.Profile()
    pr.enable()
    run_epoch()
    pr.disable()
    for key, what in (("tottime", "own"), ("cumulative", "cumulative")):
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats(key).print_stats(top)
        print(f"\n[{name}] cProfile, 1 training epoch, top {top} functions by {what} time:", file=out)
        print(s.getvalue(), file=out, flush=True)


MARK = "@@bench "


def reply(obj: Any) -> None:
    """A protocol line to the driver (stdout); everything else a worker prints goes to stderr."""
    sys.__stdout__.write(MARK + json.dumps(obj) + "\n")
    sys.__stdout__.flush()


def worker(spec: Dict[str, Any]) -> None:
    """One (framework, attention) run, driven over stdin: ``epoch`` -> train one epoch (timed) and
    evaluate; ``breakdown`` -> one instrumented epoch; ``tables`` -> profiler tables (stderr);
    ``done`` -> the summary. Replies on stdout."""
    import contextlib
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(spec["threads"])
    framework, attn, epochs, seed = spec["framework"], spec["attn"], spec["epochs"], spec["seed"]
    tmp = Path(spec["tmp"])
    sys.path.insert(0, str(REPO))
    name = f"{framework}/{attn}"

    with contextlib.redirect_stdout(sys.stderr):  # ogb/PyG progress messages
        if framework == "pyg":
            root = tmp / "pyg"
            copy_dataset(Path(spec["data"]), root / "ogbg_molbace")
            model, optimizer, loaders, evaluator = build_pyg(attn, spec["attn_dropout"], root, seed,
                                                             spec.get("pyg_match", False))
            steps = len(loaders["train"])
            run_epoch = lambda: pyg_train_epoch(model, optimizer, loaders["train"])  # noqa: E731
            evaluate = lambda split: pyg_evaluate(model, loaders[split], evaluator)  # noqa: E731
            breakdown = lambda timer: pyg_breakdown_epoch(model, optimizer, loaders["train"], timer)  # noqa: E731
            extra = {}
        else:
            root = tmp / "graphgt"
            copy_dataset(Path(spec["data"]), root / "ogb" / "ogbg_molbace")
            model, optimizer, scheduler, trainer, data, train_loader, overrides = build_graphgt(
                attn, spec["attn_dropout"], root, tmp / "graphgt-cache", epochs, seed)
            from graphgt.app import build_objective

            task = build_objective(data.spec)
            steps = len(train_loader)
            epoch_no = [0]

            def run_epoch():
                epoch_no[0] += 1
                return trainer.train_epoch(model, train_loader, task, optimizer, scheduler, epoch_no[0]).loss

            def evaluate(split):
                loader = data.val_loader() if split == "val" else data.test_loader()
                return trainer.evaluate(model, loader, task, split).metric

            breakdown = lambda timer: graphgt_breakdown_epoch(  # noqa: E731
                model, optimizer, scheduler, trainer, train_loader, task, timer)
            extra = {"overrides": overrides}
    # graphgt's RWSE (numba, 'omp' threading layer) resets torch's OpenMP thread count to
    # NUMBA_NUM_THREADS the first time it runs in a process (a cache miss): note it and set it back,
    # so that every run trains with --threads.
    threads_after_setup = torch.get_num_threads()
    if threads_after_setup != spec["threads"]:
        print(f"[{name}] note: torch.get_num_threads() is {threads_after_setup} after set-up (set to "
              f"{spec['threads']} before); setting it back to {spec['threads']}", file=sys.stderr, flush=True)
        torch.set_num_threads(spec["threads"])
    extra["threads_after_setup"] = threads_after_setup
    reply({"ready": name})

    times, best, epoch = [], {"val": -math.inf, "test": math.nan, "epoch": 0}, 0
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "epoch":
            epoch += 1
            t0 = time.perf_counter()
            loss = run_epoch()
            dt = time.perf_counter() - t0
            times.append(dt)
            val, test = evaluate("val"), evaluate("test")
            if val > best["val"]:
                best = {"val": val, "test": test, "epoch": epoch}
            reply({"epoch": epoch, "s": dt, "loss": loss, "val": val, "test": test})
        elif cmd == "breakdown":
            reply(breakdown_report(breakdown, steps))
        elif cmd == "tables":
            profile_tables(name, run_epoch, spec.get("profile_top", 25))
            reply({"profiled": name})
        elif cmd == "done":
            timed = times[1:] if len(times) > 1 else times
            reply({
                "s_per_epoch": statistics.median(timed),
                "s_per_epoch_mean": statistics.fmean(timed),
                "s_per_epoch_min": min(timed),
                "epoch_times": times,
                "steps_per_epoch": steps,
                "test_rocauc": best["test"],
                "val_rocauc": best["val"],
                "best_epoch": best["epoch"],
                "params": count_params(model),
                "threads": torch.get_num_threads(),
                **extra,
            })
            return


# ------------------------------------------------------------------------------------------ main


class Worker:
    """The driver's end of one worker subprocess."""

    def __init__(self, spec: Dict[str, Any]):
        self.name = f"{spec['framework']}/{spec['attn']}"
        env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]),
                   PYTHONWARNINGS="ignore")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(spec)]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)

    def read(self) -> Dict[str, Any]:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
            sys.stderr.write(line)
        code = self.proc.wait()
        raise SystemExit(f"worker {self.name} exited with code {code} (see its messages above)")

    def ask(self, cmd: str) -> Dict[str, Any]:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def fmt(x: float, digits: int = 4) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def table(results: Dict[str, Dict[str, Dict[str, Any]]], attns: List[str]) -> str:
    lines = ["| framework | attention | s/epoch (median) | speedup vs PyG | test ROC-AUC @ best val | "
             "best val ROC-AUC | #params |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for attn in attns:
        ref = results.get("pyg", {}).get(attn)
        for fw, label in (("pyg", "PyG GPSConv"), ("graphgt", "graphgt GPS")):
            r = results.get(fw, {}).get(attn)
            if r is None:
                continue
            speedup = f"{ref['s_per_epoch'] / r['s_per_epoch']:.2f}x" if ref else "-"
            lines.append(f"| {label} | {attn} | {r['s_per_epoch']:.3f} | {speedup} | {fmt(r['test_rocauc'])} | "
                         f"{fmt(r['val_rocauc'])} | {r['params']:,} |")
    return "\n".join(lines)


PHASES = ("batching", "forward", "loss", "backward", "optimizer", "train metric", "other")


def breakdown_table(results: Dict[str, Dict[str, Dict[str, Any]]], attns: List[str]) -> str:
    lines = ["| framework | attention | " + " | ".join(PHASES) + " | total |", "|---|---|" + "---:|" * (len(PHASES) + 1)]
    for attn in attns:
        for fw in ("pyg", "graphgt"):
            r = results.get(fw, {}).get(attn, {}).get("ms_per_step")
            if r is None:
                continue
            cells = [f"{r[ph]:.2f}" if ph in r else "-" for ph in PHASES]
            lines.append(f"| {fw} | {attn} | " + " | ".join(cells) + f" | {sum(r.values()):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30, help="training epochs per run (default 30)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for both sides (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attn", "--pyg-attn", dest="attn", nargs="+", default=["full", "performer"],
                   choices=sorted(ATTN_NAMES),
                   help="attention variants to run on both sides (multihead = full; default: full performer)")
    p.add_argument("--frameworks", nargs="+", default=["pyg", "graphgt"], choices=["pyg", "graphgt"])
    p.add_argument("--attn-dropout", type=float, default=0.0,
                   help="dropout on the attention, both sides (default 0.0; PyG's example uses 0.5)")
    p.add_argument("--pyg-match", action="store_true",
                   help="size PyG's modules like graphgt's: GINEConv(nn, edge_dim=64), Performer head_channels=16 "
                        "(default: PyG's example as shipped)")
    p.add_argument("--data", default=DEFAULT_DATA, help="the ogbg_molbace folder (read-only; copied)")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--profile", action="store_true",
                   help="after timing, print a per-phase breakdown, a torch.profiler and a cProfile table "
                        "for each run")
    p.add_argument("--profile-rounds", type=int, default=3,
                   help="instrumented epochs per run for the per-phase breakdown (median; default 3)")
    p.add_argument("--profile-top", type=int, default=25, help="rows of the profiler tables (default 25)")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._worker:
        worker(json.loads(args._worker))
        return

    epochs = 2 if args.quick else args.epochs
    if epochs < 1:
        p.error("--epochs must be >= 1")
    if not Path(args.data).is_dir():
        p.error(f"--data {args.data} is not a folder")
    attns = list(dict.fromkeys(ATTN_NAMES[a] for a in args.attn))
    frameworks = [fw for fw in ("pyg", "graphgt") if fw in args.frameworks]
    results: Dict[str, Dict[str, Dict[str, Any]]] = {fw: {} for fw in frameworks}
    runs = [(fw, attn) for attn in attns for fw in frameworks]
    workers: List[Worker] = []
    with tempfile.TemporaryDirectory(prefix="graphgt-bench-") as tmp:
        try:
            # set-up one at a time (dataset processing, PE) so that no set-up overlaps another
            for fw, attn in runs:
                print(f"== set-up {fw}/{attn}", flush=True)
                spec = {"framework": fw, "attn": attn, "epochs": epochs, "threads": args.threads,
                        "seed": args.seed, "attn_dropout": args.attn_dropout, "data": args.data, "tmp": tmp,
                        "profile_top": args.profile_top, "pyg_match": args.pyg_match}
                workers.append(Worker(spec))
                workers[-1].read()
            # epochs in lock step: one worker trains while the others wait, in a rotating order
            for epoch in range(1, epochs + 1):
                k = (epoch - 1) % len(workers)
                for w in workers[k:] + workers[:k]:
                    r = w.ask("epoch")
                    print(f"  [{w.name:17s}] epoch {epoch:3d}  train {r['s']:7.3f} s  loss {r['loss']:.4f}  "
                          f"val {r['val']:.4f}  test {r['test']:.4f}", flush=True)
            if args.profile:  # per-phase breakdown, interleaved like the epochs; median per phase
                rounds: Dict[str, List[Dict[str, float]]] = {w.name: [] for w in workers}
                for i in range(args.profile_rounds):
                    k = i % len(workers)
                    for w in workers[k:] + workers[:k]:
                        rounds[w.name].append(w.ask("breakdown"))
                for w in workers:
                    w.ask("tables")
            for (fw, attn), w in zip(runs, workers):
                results[fw][attn] = w.ask("done")
                if args.profile:
                    phases = {ph for r in rounds[w.name] for ph in r}
                    results[fw][attn]["ms_per_step"] = {
                        ph: statistics.median(r.get(ph, 0.0) for r in rounds[w.name]) for ph in sorted(phases)}
        finally:
            for w in workers:
                w.close()

    speedup = {attn: results["pyg"][attn]["s_per_epoch"] / results["graphgt"][attn]["s_per_epoch"]
               for attn in attns if attn in results.get("pyg", {}) and attn in results.get("graphgt", {})}
    print(f"\nogbg-molbace, {epochs} epochs, batch {BATCH}, hidden {HIDDEN}, {LAYERS} layers, {HEADS} heads, "
          f"attention dropout {args.attn_dropout}, {args.threads} threads, PyG modules "
          f"{'sized like graphgt (--pyg-match)' if args.pyg_match else 'as in its example'}, seed {args.seed}; s/epoch = median "
          f"over epochs 2..{epochs} (training only); one subprocess per run, epochs interleaved\n")
    print(table(results, attns))
    if args.profile:
        print(f"\nPer training step (ms, median of {args.profile_rounds} instrumented epochs, interleaved):\n")
        print(breakdown_table(results, attns))
    if args.json:
        out = {**results, "speedup": speedup, "threads": args.threads, "epochs": epochs, "seed": args.seed,
               "attn_dropout": args.attn_dropout, "batch_size": BATCH, "hidden": HIDDEN, "layers": LAYERS,
               "heads": HEADS, "pyg_match": args.pyg_match, "command": " ".join([Path(sys.executable).name, *sys.argv])}
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
