"""One-shot GPU check: graphgt's training speed, GPU utilisation and memory on one machine, as one JSON.

    python bench/gpu_check.py --json gpu_check.json            # one GPU, ~5.5 min (budget 330 s)
    python bench/gpu_check.py --cpu --small --json out.json    # 2 CPU cores, < 3 min (budget 170 s)
    python bench/gpu_check.py --cpu --small --sections attention

Needs only the repository, no network and no installed graphgt: PyTorch, PyG, numpy, scipy, numba,
pandas and tqdm (a stock PyTorch + PyG image) plus graphgt's pure-Python dependencies (hydra-core,
omegaconf, antlr4-python3-runtime, ogb; on ``PYTHONPATH`` is enough).  It first looks for every
dependency (``environment.missing`` in the JSON and a line on stderr), then runs the sections that
can run.  Exactly one JSON document goes to stdout (and to ``--json``); progress goes to stderr.

Sections (each in its own subprocess, under its share of the time budget; a section that fails or
overruns records its error or ``timeout`` and the check goes on; the exit code is 1 when any
selected section is not ``ok``):

``store``
    builds the products-shaped synthetic graph store (:mod:`graphgt.data.store.synthetic`, the
    ``data.source`` of ``data=products-synth``; ``--small``: ``scale`` :data:`SMALL_SCALE`) in a
    temporary folder that is deleted at the end, through the data module a run builds.
``sage`` / ``gps`` / ``largegt``
    one training run each of ``experiment=products-synth-{sage,gps,largegt}`` (:data:`CASES`):
    the Hydra config ``configs/train.yaml`` is composed with the case's preset and overrides, then
    validated and built exactly as :func:`graphgt.app.run` does (data module, PEs, local/attention
    factories, model, ``Trainer``, optimiser, scheduler, training loader) and trained with
    ``Trainer.train_epoch``, ``trainer.limit_train_batches`` = warm-up + timed + profiled batches.
    Reported: ``batches_per_s`` over the timed (steady-state) batches (warm-up excluded: the time
    from the request of the first timed batch to the request of the first batch after them, the
    device synchronised there), ``epoch_s_estimate`` = batches per epoch / ``batches_per_s``,
    ``epoch_s_measured`` (one complete epoch, ``limit_train_batches=null``, when the estimate fits
    the section's remaining time), ``gpu_busy_fraction`` (``torch.profiler`` with CUDA activity over
    the profiled window: length of the union of all device activity intervals, kernels and copies,
    over the window's wall time; ``kernel_busy_fraction`` counts kernels only; profiler overhead
    makes both lower bounds; ``null`` on CPU), ``peak_device_memory_gib``
    (``torch.cuda.max_memory_allocated`` over the training; ``null`` on CPU, where
    ``peak_rss_gib`` is the section process's peak RSS).
``molbace``
    GPS on ogbg-molbace, graphgt against PyG's ``GPSConv`` in the same process and run, with the
    set-up and model of ``bench/train_throughput.py`` (its functions, imported): full attention,
    GINE, RWSE(16), hidden 64, 3 layers, batch 32; runs ``pyg`` (fp32), ``graphgt`` (fp32) and on
    CUDA ``graphgt_bf16`` (``trainer.bf16=true``), epochs interleaved in a rotating order;
    s/epoch = median of the training epochs 2.. (epoch 1 is warm-up); test ROC-AUC at the best
    validation epoch.  The data is ``<shared>/ogb/ogbg_molbace`` (``$GRAPHGT_SHARED_DATA``, default
    ``../shared/data`` beside the repository) when present, else a synthetic molecule-like dataset
    of molbace's shape in OGB's raw format (:func:`make_synthetic_molbace`; ``--molbace``).
``attention``
    forward+backward of each module of ``bench/attention_scaling.py`` (``MODULES``, width 64,
    4 heads, its random graph of average degree 8) on one graph of N = 2^16 and 2^20 nodes
    (``--small``: 2^10, 2^12), bf16 autocast on CUDA; median of the timed passes, the peak device
    memory over the memory before the pass (CUDA), and the log-log slope between the sizes.  A
    size whose time predicted from the smaller one does not fit the section's time is skipped.

``targets`` judges the figures against the GPU targets (``pass`` is ``null`` in ``--cpu`` mode or
when a figure is missing): products-shaped SAGE >= 100 training batches/s and epoch <= 2 s;
LargeGT at its published width >= 15 batches/s; the GPU busy >= 70% of the epoch (each products
case); molbace GPS s/epoch <= 0.5x PyG ``GPSConv`` at equal test ROC-AUC (within 0.03), fp32 and
bf16.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
GIB = 1024 ** 3
MIB = 1024 ** 2

# ------------------------------------------------------------------------------------- the table
#: Every measured run: ``case -> (preset, overrides)``.  The preset is a ``configs/experiment``
#: name, or ``MOLBACE`` for the overrides ``bench/train_throughput.graphgt_overrides`` composes
#: (data=ogbg-molbace local=gine attention=full pe=rwse ...).  The overrides are added on every
#: machine; this is the one place to add new keys (``data.placement=...``, ``trainer.compile=...``).
MOLBACE = "train_throughput.graphgt_overrides"
CASES: Dict[str, Tuple[str, List[str]]] = {
    "sage": ("products-synth-sage", []),
    "gps": ("products-synth-gps", []),
    "largegt": ("products-synth-largegt", []),
    "molbace_graphgt": (MOLBACE, ["trainer.bf16=false"]),
    "molbace_graphgt_bf16": (MOLBACE, ["trainer.bf16=true"]),
}
#: training batches per molbace epoch with --small (PyG's loader is cut to the same number)
SMALL_MOLBACE_BATCHES = 8
#: extra overrides of ``--small`` (CPU-sized batches; the small store has ~3.9k training nodes)
SMALL_OVERRIDES: Dict[str, List[str]] = {
    "sage": ["data.batch_size=128"],
    "gps": ["data.batch_size=64"],
    "largegt": ["data.batch_size=32"],
    "molbace_graphgt": [f"trainer.limit_train_batches={SMALL_MOLBACE_BATCHES}"],
    "molbace_graphgt_bf16": [f"trainer.limit_train_batches={SMALL_MOLBACE_BATCHES}"],
}
#: scale of the products-shaped store with --small (1.0: ogbn-products' 2,449,029 nodes)
SMALL_SCALE = 0.02


class Plan:
    """What one mode measures: sizes, batch counts, epochs and the time budget's shares."""

    def __init__(self, small: bool, cuda: bool):
        self.small, self.cuda = small, cuda
        self.scale = SMALL_SCALE if small else 1.0
        # training cases: warm-up, timed and profiled batches (the profiled window only on CUDA)
        self.warmup, self.timed = (2, 8) if small else (10, 60)
        self.profiled = (10 if small else 20) if cuda else 0
        self.molbace_epochs = 2 if small else 20
        self.molbace_batches = SMALL_MOLBACE_BATCHES if small else None  # None: every batch
        self.attention_sizes = [10, 12] if small else [16, 20]
        self.attention_repeats = 2 if small else 3
        self.budget = 170.0 if small else 330.0
        #: shares of the budget; the time a section leaves unused goes to the later ones
        self.shares = ({"store": 14, "sage": 22, "gps": 24, "largegt": 26, "molbace": 56, "attention": 28}
                       if small else
                       {"store": 70, "sage": 35, "gps": 40, "largegt": 45, "molbace": 85, "attention": 55})

    def as_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in vars(self).items()}


SECTIONS = ("store", "sage", "gps", "largegt", "molbace", "attention")
TRAIN_CASES = ("sage", "gps", "largegt")
#: module name -> distribution name (for the version), in the order of the check
PACKAGES: Dict[str, str] = {
    "torch": "torch", "torch_geometric": "torch-geometric", "numpy": "numpy", "scipy": "scipy", "numba": "numba",
    "pandas": "pandas", "tqdm": "tqdm", "hydra": "hydra-core", "omegaconf": "omegaconf",
    "antlr4": "antlr4-python3-runtime", "ogb": "ogb", "sklearn": "scikit-learn", "networkx": "networkx",
}
_CORE = ["torch", "torch_geometric", "numpy", "scipy", "numba", "pandas", "hydra", "omegaconf", "antlr4"]
REQUIRES: Dict[str, List[str]] = {
    "store": _CORE, "sage": _CORE, "gps": _CORE, "largegt": _CORE,
    "molbace": _CORE + ["ogb", "sklearn", "tqdm"],
    "attention": ["torch", "torch_geometric", "numpy"],
}
#: the targets of the issue: name -> (section, key path, comparison, threshold, description)
TARGETS = {
    "sage_batches_per_s": ("sage", ("batches_per_s",), ">=", 100.0, "products-shaped SAGE training batches/s"),
    "sage_epoch_s": ("sage", ("epoch_s",), "<=", 2.0, "products-shaped SAGE epoch time (s)"),
    "largegt_batches_per_s": ("largegt", ("batches_per_s",), ">=", 15.0,
                              "LargeGT at published width, training batches/s"),
    "sage_gpu_busy": ("sage", ("gpu_busy_fraction",), ">=", 0.7, "GPU busy fraction of the SAGE epoch"),
    "gps_gpu_busy": ("gps", ("gpu_busy_fraction",), ">=", 0.7, "GPU busy fraction of the GPS epoch"),
    "largegt_gpu_busy": ("largegt", ("gpu_busy_fraction",), ">=", 0.7, "GPU busy fraction of the LargeGT epoch"),
}
ROCAUC_TOLERANCE = 0.03
MOLBACE_MAX_RATIO = 0.5


def log(msg: str) -> None:
    print(f"[gpu_check] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- dependencies
def check_imports(names: Iterable[str] = PACKAGES) -> Dict[str, Any]:
    """``{"packages": {module: version or None}, "missing": [modules]}`` without importing them
    (``importlib.util.find_spec``; a version only when the distribution's metadata is there)."""
    packages: Dict[str, Optional[str]] = {}
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
            packages[name] = None
            continue
        try:
            packages[name] = importlib.metadata.version(PACKAGES.get(name, name))
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "present (no metadata)"
    return {"packages": packages, "missing": missing}


# ------------------------------------------------------------------------------ GPU busy time
def union_length(intervals: Iterable[Tuple[float, float]]) -> float:
    """Total length covered by ``(start, end)`` intervals (overlaps counted once)."""
    total, cur_start, cur_end = 0.0, None, None
    for start, end in sorted((s, e) for s, e in intervals if e > s):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def device_intervals(prof, device_type) -> Tuple[List[Tuple[float, float]], List[Tuple[float, float]]]:
    """``(all, kernels)``: the ``(start_s, end_s)`` of the profiler's events on ``device_type``
    (``torch.autograd.DeviceType.CUDA``: kernels, memcpy and memset; ``kernels`` leaves out the copies)."""
    every, kernels = [], []
    for e in prof.profiler.kineto_results.events():
        if e.device_type() != device_type:
            continue
        start = e.start_ns() * 1e-9
        span = (start, start + e.duration_ns() * 1e-9)
        every.append(span)
        if not e.name().startswith(("Memcpy", "Memset")):
            kernels.append(span)
    return every, kernels


# -------------------------------------------------------------------------- training sections
class TimedLoader:
    """Wraps a training loader: the time each batch is requested, a profiled window, a deadline.

    Batch ``i``'s request time (``perf_counter``) ends the step of batch ``i - 1``; the request that
    the loop makes after the last batch closes the epoch (the device is synchronised there).  The
    profiler (``profiler_factory()``, a ``torch.profiler.profile``) runs from the request of batch
    ``profile_from`` to the request of ``profile_from + profile_steps`` (synchronised at both
    ends).  No batch is handed out after ``deadline`` (``time.time()``): the epoch ends early and
    ``truncated`` is set.  The device is synchronised before the request time of the batches in
    ``sync_at`` (the bounds of a timed window) and at the end.
    """

    def __init__(self, loader, limit: Optional[int], sync: Callable[[], None], deadline: float,
                 profile_from: Optional[int] = None, profile_steps: int = 0,
                 profiler_factory: Optional[Callable[[], Any]] = None, sync_at: Iterable[int] = ()):
        self.loader, self.limit, self.sync, self.deadline = loader, limit, sync, deadline
        self.sync_at = set(sync_at)
        self.profile_from, self.profile_steps, self.profiler_factory = profile_from, profile_steps, profiler_factory
        self.requests: List[float] = []
        self.truncated = False
        self.profiler = None
        self.profile_wall_s: Optional[float] = None

    def __len__(self) -> int:
        n = len(self.loader)
        return n if self.limit is None else min(n, self.limit)

    def set_epoch(self, *args) -> None:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(*args)

    def _profile(self, i: int) -> None:
        if self.profiler_factory is None or self.profile_from is None:
            return
        if i == self.profile_from:
            self.sync()
            self.profiler = self.profiler_factory()
            self.profiler.__enter__()
            self._p0 = time.perf_counter()
        elif self.profiler is not None and i == self.profile_from + self.profile_steps:
            self.sync()
            self.profile_wall_s = time.perf_counter() - self._p0
            self.profiler.__exit__(None, None, None)
            self.requests[-1] = time.perf_counter()  # profiler teardown is not a training step

    def __iter__(self) -> Iterator:
        total = len(self)
        self.requests = []
        it = iter(self.loader)
        for i in range(total + 1):
            if i == total or time.time() > self.deadline:
                self.sync()
                self.requests.append(time.perf_counter())
                self._profile(i)
                self.truncated = i < total
                return
            if i in self.sync_at:
                self.sync()
            self.requests.append(time.perf_counter())
            self._profile(i)
            try:
                batch = next(it)
            except StopIteration:
                self.sync()
                self.requests[-1] = time.perf_counter()
                return
            yield batch

    def steady_rate(self, first: int, count: int) -> Tuple[Optional[float], int]:
        """``(batches/s over batches first .. first+count-1, how many of them ran)``; ``None`` if none ran."""
        ran = max(0, min(count, len(self.requests) - 1 - first))
        if ran == 0:
            return None, 0
        return ran / (self.requests[first + ran] - self.requests[first]), ran


def case_overrides(case: str, small: bool, extra: Sequence[str] = ()) -> List[str]:
    """The command line of ``case``: its preset and overrides (:data:`CASES`), ``--small``'s
    additions, then the harness's own (``extra``: device, batch limit, temporary folders)."""
    preset, overrides = CASES[case]
    head = [] if preset == MOLBACE else [f"experiment={preset}"]
    return head + list(overrides) + (SMALL_OVERRIDES.get(case, []) if small else []) + list(extra)


def compose(overrides: Sequence[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    import graphgt.config  # noqa: F401  (graphgt's resolvers)

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        return hydra_compose("train", overrides=list(overrides))


def harness_overrides(ctx: Dict[str, Any]) -> List[str]:
    """What every products-shaped run of the check sets: device, temporary store/cache, no logging."""
    return [f"trainer.device={ctx['device']}", f"cache_dir={ctx['cache_dir']}", f"data.store_root={ctx['store_root']}",
            f"data.source.builder.scale={ctx['plan']['scale']}", "trainer.progress=false",
            "trainer.checkpoint=false", "logger=none", f"seed={ctx['seed']}"]


def build_run(cfg) -> Dict[str, Any]:
    """Everything :func:`graphgt.app.run` builds before ``Trainer.fit`` trains (one process, no
    run directory): ``{"trainer", "data", "objective", "model", "optimizer", "scheduler", "loader"}``."""
    from hydra.utils import instantiate

    from graphgt import app
    from graphgt.config.keys import check_injected
    from graphgt.config.validate import validate_config

    validate_config(cfg)
    trainer, _ = app.build_trainer(cfg)
    app.check_optimizer(trainer)
    data = instantiate(cfg.data)
    data.check()
    pe_cfg = app._pe_entries(cfg)
    pes = {name: instantiate(entry.compute) for name, entry in pe_cfg.items()}
    local = app._optional(cfg.get("local"), "local")
    attention = app._optional(cfg.get("attention"), "attention")
    app.seed_everything(cfg.seed)
    spec = data.load(Path(cfg.cache_dir))
    if local is not None:
        app.check_compatibility(local, spec, "local")
    objective = app.build_objective(spec)
    data.setup(list(pes.values()), Path(cfg.cache_dir))
    app.seed_everything(cfg.seed)
    branches = [(pes[name], instantiate(entry.encoder)) for name, entry in pe_cfg.items()]
    model = instantiate(cfg.model, _partial_=True)(**check_injected(
        "model", {"spec": data.spec, "local": local, "attention": attention, "pe": branches}))
    # as graphgt.train.loop._Run: the model on the device, bf16 'auto' settled for this model, then
    # optimiser; the data module placed on the device (features there when they fit), the training
    # loader wrapped to copy batch i + 1 while batch i trains, the model compiled if asked
    from graphgt.data.prefetch import prefetch
    from graphgt.train.precision import maybe_compile, resolve_bf16

    model.to(trainer.device)
    trainer.bf16 = resolve_bf16(trainer.bf16_setting, trainer.device, model)
    optimizer = trainer.optimizer(model.parameters())
    data.place(trainer.device)
    loader = prefetch(data.train_loader(cfg.seed), trainer.device)
    model = maybe_compile(model, trainer.compile)
    batches = len(loader)
    if trainer.limit_train_batches is not None:
        batches = min(batches, trainer.limit_train_batches)
    steps = -(-batches // trainer.accumulate_grad_batches)
    scheduler = trainer.scheduler.build(optimizer, steps, trainer.max_epochs) if trainer.scheduler else None
    return {"trainer": trainer, "data": data, "objective": objective, "model": model, "optimizer": optimizer,
            "scheduler": scheduler, "loader": loader}


def _sync_fn(device):
    import torch

    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def section_store(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """Build the products-shaped store through the data module of ``experiment=products-synth-sage``."""
    from hydra.utils import instantiate

    from graphgt.config.validate import validate_config

    cfg = compose(case_overrides("sage", ctx["plan"]["small"], harness_overrides(ctx)))
    validate_config(cfg)
    data = instantiate(cfg.data)
    data.check()
    t0 = time.perf_counter()
    data.load(Path(cfg.cache_dir))
    seconds = time.perf_counter() - t0
    store = data.store
    # LargeGT's propagated features (A x, A^2 x), written into the same store by its data module's setup
    t1 = time.perf_counter()
    tokens = instantiate(compose(case_overrides("largegt", ctx["plan"]["small"], harness_overrides(ctx))).data)
    tokens.check()
    tokens.setup([], Path(cfg.cache_dir))
    return {"build_s": seconds, "hop_features_s": time.perf_counter() - t1, "path": str(store.path), "scale": ctx["plan"]["scale"],
            "num_nodes": int(store.num_nodes), "num_csr_entries": int(store.num_edges),
            "num_train": int(store.split("train").shape[0]), "peak_rss_gib": _peak_rss_gib()}


def section_train(case: str, ctx: Dict[str, Any]) -> Dict[str, Any]:
    """One products-shaped training case: steady-state batches/s, epoch time, GPU busy, peak memory."""
    import torch

    plan = ctx["plan"]
    deadline = ctx["deadline"]
    warmup, timed, profiled = plan["warmup"], plan["timed"], plan["profiled"]
    limit = warmup + timed + profiled
    overrides = case_overrides(case, plan["small"], harness_overrides(ctx) + [f"trainer.limit_train_batches={limit}"])
    t0 = time.perf_counter()
    cfg = compose(overrides)
    run = build_run(cfg)
    trainer, model = run["trainer"], run["model"]
    setup_s = time.perf_counter() - t0
    device = trainer.device
    sync = _sync_fn(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def profiler():
        from torch.profiler import ProfilerActivity, profile

        return profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])

    timer = TimedLoader(run["loader"], limit, sync, deadline, profile_from=warmup + timed if profiled else None,
                        profile_steps=profiled, profiler_factory=profiler if (cuda and profiled) else None,
                        sync_at=(warmup, warmup + timed))
    log(f"{case}: set-up {setup_s:.1f} s; training {limit} batches ({warmup} warm-up, {timed} timed, "
        f"{profiled} profiled) of {len(run['loader'])} per epoch on {device}")
    t_epoch = time.perf_counter()
    result = trainer.train_epoch(model, timer, run["objective"], run["optimizer"], run["scheduler"], 1)
    limited_wall = time.perf_counter() - t_epoch
    rate, ran = timer.steady_rate(warmup, timed)
    batches_per_epoch = len(run["loader"])
    out: Dict[str, Any] = {
        "overrides": overrides, "setup_s": setup_s, "device": str(device), "bf16": bool(trainer.bf16),
        "params": sum(p.numel() for p in model.parameters()), "batch_size": int(cfg.data.batch_size),
        "num_workers": getattr(run["loader"].loader, "num_workers", None),
        "placement": getattr(run["loader"].loader, "placement", None),
        "batches_per_epoch": batches_per_epoch, "warmup_batches": warmup, "timed_batches": ran,
        "batches_per_s": rate, "epoch_s_estimate": batches_per_epoch / rate if rate else None,
        "limited_epoch_wall_s": limited_wall, "train_loss": result.loss, "truncated": timer.truncated,
    }
    # GPU busy over the profiled window
    out["gpu_busy_fraction"] = out["kernel_busy_fraction"] = None
    if not cuda:
        out["gpu_busy_note"] = "CPU mode: no device to be busy"
    elif timer.profile_wall_s is None:
        out["gpu_busy_note"] = "the profiled window did not run (deadline)"
    else:
        every, kernels = device_intervals(timer.profiler, torch.autograd.DeviceType.CUDA)
        wall = timer.profile_wall_s
        out.update(gpu_busy_fraction=union_length(every) / wall, kernel_busy_fraction=union_length(kernels) / wall,
                   profile_window_s=wall, profiled_batches=profiled, device_events=len(every),
                   gpu_busy_note="union of device activity intervals / wall time of the profiled window "
                                 "(profiler overhead included: a lower bound)")
    # one complete epoch when it fits in what is left of the section
    left = deadline - time.time()
    est = out["epoch_s_estimate"]
    out["epoch_s_measured"] = None
    if est is not None and est * 1.5 + 2.0 < left:
        trainer.limit_train_batches = None  # the run's trainer.limit_train_batches=null
        full = TimedLoader(run["loader"], None, sync, deadline)
        t1 = time.perf_counter()
        trainer.train_epoch(model, full, run["objective"], run["optimizer"], run["scheduler"], 2)
        sync()
        if full.truncated:
            out["epoch_s_note"] = "the complete epoch was cut by the deadline"
        else:
            out["epoch_s_measured"] = time.perf_counter() - t1
    else:
        out["epoch_s_note"] = (f"no complete epoch: estimated {est:.1f} s does not fit the {max(left, 0.0):.0f} s left"
                               if est is not None else "no steady-state rate")
    out["epoch_s"] = out["epoch_s_measured"] if out["epoch_s_measured"] is not None else est
    out["peak_device_memory_gib"] = torch.cuda.max_memory_allocated(device) / GIB if cuda else None
    out["peak_device_reserved_gib"] = torch.cuda.max_memory_reserved(device) / GIB if cuda else None
    out["peak_rss_gib"] = _peak_rss_gib()
    return out


# --------------------------------------------------------------------------------- molbace
#: ogbg-molbace's shape: graphs, scaffold split sizes, mean atoms, mean extra bonds over a tree
MOLBACE_GRAPHS, MOLBACE_SPLIT = 1513, (1210, 151, 152)
MOLBACE_MEAN_ATOMS, MOLBACE_MEAN_RINGS = 34.1, 2.8
#: OGB's atom feature cardinalities (ogb.utils.features.get_atom_feature_dims) and bond ones
ATOM_DIMS, BOND_DIMS = (119, 5, 12, 12, 10, 6, 6, 2, 2), (5, 6, 2)


def make_synthetic_molbace(folder: Path, seed: int = 0, graphs: int = MOLBACE_GRAPHS) -> Path:
    """A molecule-like stand-in for ogbg-molbace in OGB's raw format at ``folder`` (``RELEASE_v1.txt``,
    ``raw/*.csv.gz``, ``split/scaffold/*.csv.gz``), readable by ``PygGraphPropPredDataset`` and by
    graphgt's ``OGBGraphData`` under the name ogbg-molbace.

    Each graph: ~34 atoms (molbace's mean), a random tree plus ~2.8 ring-closing bonds, OGB atom
    features (C/N/O/F/S/Cl, degree, hydrogens, aromatic and ring flags within OGB's cardinalities)
    and bond features; the label is 1 when the graph's share of N+O atoms is above the median
    (learnable from the atoms, ~50% positive), with 5% of the labels flipped.  The split is a
    random 1210 / 151 / 152 (molbace's scaffold split sizes).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    n_atoms = np.clip(rng.normal(MOLBACE_MEAN_ATOMS, 8.0, graphs).round().astype(int), 10, 97)
    elements = np.array([5, 6, 7, 8, 15, 16])  # atomic number - 1: C N O F S Cl
    probs = np.array([0.70, 0.11, 0.12, 0.03, 0.02, 0.02])
    nodes, edges, efeat, n_edges, share = [], [], [], [], []
    for n in n_atoms:
        parent = np.array([rng.integers(0, i) for i in range(1, n)])
        src, dst = np.arange(1, n), parent
        rings = min(rng.poisson(MOLBACE_MEAN_RINGS), n // 3)
        extra = [(int(a), int(b)) for a, b in rng.integers(0, n, (rings, 2)) if a != b]
        if extra:
            src = np.concatenate([src, [a for a, _ in extra]])
            dst = np.concatenate([dst, [b for _, b in extra]])
        degree = np.bincount(np.concatenate([src, dst]), minlength=n)
        in_ring = np.zeros(n, dtype=int)
        for a, b in extra:
            in_ring[[a, b]] = 1
        elem = rng.choice(elements, n, p=probs)
        aromatic = (in_ring & (rng.random(n) < 0.7)).astype(int)
        hydrogens = np.clip(4 - degree, 0, 4)
        atom = np.stack([elem, np.zeros(n, int), np.minimum(degree, 10), np.full(n, 5), hydrogens,
                         np.zeros(n, int), np.where(aromatic == 1, 2, rng.integers(1, 4, n)), aromatic, in_ring], 1)
        nodes.append(atom)
        edges.append(np.stack([src, dst], 1))
        m = len(src)
        efeat.append(np.stack([rng.choice(4, m, p=[0.6, 0.2, 0.05, 0.15]), np.zeros(m, int),
                               (rng.random(m) < 0.4).astype(int)], 1))
        n_edges.append(m)
        share.append(np.isin(elem, [6, 7]).mean())
    share = np.array(share)
    label = (share > np.median(share)).astype(int)
    flip = rng.random(graphs) < 0.05
    label[flip] = 1 - label[flip]
    perm = rng.permutation(graphs)
    a, b = MOLBACE_SPLIT[0], MOLBACE_SPLIT[0] + MOLBACE_SPLIT[1]
    splits = {"train": np.sort(perm[:a]), "valid": np.sort(perm[a:b]), "test": np.sort(perm[b:])}

    def write(path: Path, rows) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt") as f:
            for row in rows:
                f.write((",".join(str(int(v)) for v in row) if np.ndim(row) else str(int(row))) + "\n")

    folder = Path(folder)
    write(folder / "raw" / "node-feat.csv.gz", np.concatenate(nodes))
    write(folder / "raw" / "edge.csv.gz", np.concatenate(edges))
    write(folder / "raw" / "edge-feat.csv.gz", np.concatenate(efeat))
    write(folder / "raw" / "num-node-list.csv.gz", n_atoms)
    write(folder / "raw" / "num-edge-list.csv.gz", np.array(n_edges))
    write(folder / "raw" / "graph-label.csv.gz", label)
    for name, idx in splits.items():
        write(folder / "split" / "scaffold" / f"{name}.csv.gz", idx)
    (folder / "RELEASE_v1.txt").write_text("synthetic ogbg-molbace-shaped data (bench/gpu_check.py)\n")
    return folder


def shared_molbace() -> Path:
    root = Path(os.environ.get("GRAPHGT_SHARED_DATA", REPO.parent / "shared" / "data"))
    return root / "ogb" / "ogbg_molbace"


class OnDevice:
    """A PyG loader whose batches are moved to ``device`` (``y`` left on the CPU with ``keep_y``),
    at most ``limit`` of them per pass (PyG's side of graphgt's ``trainer.limit_train_batches``)."""

    def __init__(self, loader, device, keep_y: bool = False, limit: Optional[int] = None):
        self.loader, self.device, self.keep_y, self.limit = loader, device, keep_y, limit
        self.dataset = loader.dataset

    def __len__(self) -> int:
        return len(self.loader) if self.limit is None else min(len(self.loader), self.limit)

    def __iter__(self):
        for i, data in enumerate(self.loader):
            if self.limit is not None and i >= self.limit:
                return
            y = data.y
            data = data.to(self.device)
            if self.keep_y:
                data.y = y
            yield data


def _cpu_output(model):
    """``model`` whose outputs come back to the CPU (``train_throughput.pyg_evaluate`` calls ``.numpy()``)."""
    import torch

    class CpuOutput(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(*args).float().cpu()

    return CpuOutput(model)


def section_molbace(ctx: Dict[str, Any]) -> Dict[str, Any]:
    """graphgt GPS (fp32, and bf16 on CUDA) against PyG GPSConv on ogbg-molbace, epochs interleaved."""
    import torch

    import train_throughput as tt

    plan, tmp, deadline = ctx["plan"], Path(ctx["tmp"]), ctx["deadline"]
    device = torch.device(ctx["device"])
    sync = _sync_fn(device)
    choice = ctx["molbace"]
    if choice == "auto":
        src = shared_molbace()
        source = f"shared: {src}" if src.is_dir() else None
    elif choice == "synthetic":
        src, source = None, None
    else:
        src, source = Path(choice), f"given: {choice}"
        if not src.is_dir():
            raise FileNotFoundError(f"--molbace {choice}: no such folder")
    if source is None:
        t0 = time.perf_counter()
        src = make_synthetic_molbace(tmp / "molbace-synthetic" / "ogbg_molbace", seed=ctx["seed"])
        source = f"synthetic (molbace-shaped, generated in {time.perf_counter() - t0:.1f} s)"
    log(f"molbace: data {source}")
    epochs, seed = plan["molbace_epochs"], ctx["seed"]
    runs: Dict[str, Dict[str, Any]] = {}
    setup: Dict[str, float] = {}
    threads = torch.get_num_threads()
    with contextlib.redirect_stdout(sys.stderr):
        # PyG's side, as bench/train_throughput.py builds it
        t0 = time.perf_counter()
        root = tmp / "molbace-pyg"
        tt.copy_dataset(src, root / "ogbg_molbace")
        model, optimizer, loaders, evaluator = tt.build_pyg("full", 0.0, root, seed)
        model.to(device)
        runs["pyg"] = {
            "epoch": lambda e, m=model, o=optimizer, l=loaders: tt.pyg_train_epoch(
                m, o, OnDevice(l["train"], device, limit=plan["molbace_batches"])),
            "eval": lambda split, m=model, l=loaders: tt.pyg_evaluate(_cpu_output(m), OnDevice(
                l["val" if split == "val" else "test"], device, keep_y=True), evaluator),
            "params": tt.count_params(model), "overrides": None,
        }
        setup["pyg"] = time.perf_counter() - t0
        # graphgt's side: train_throughput's composition plus this check's case overrides
        names = ["molbace_graphgt"] + (["molbace_graphgt_bf16"] if device.type == "cuda" else [])
        root = tmp / "molbace-graphgt"
        tt.copy_dataset(src, root / "ogb" / "ogbg_molbace")
        from graphgt.app import build_objective

        base = tt.graphgt_overrides
        for case in names:
            t0 = time.perf_counter()
            extra = case_overrides(case, plan["small"], [f"trainer.device={device}"])
            tt.graphgt_overrides = lambda *a, _extra=extra, **k: base(*a, **k) + _extra
            try:
                model, optimizer, scheduler, trainer, data, loader, overrides = tt.build_graphgt(
                    "full", 0.0, root, tmp / "molbace-cache", epochs, seed)
            finally:
                tt.graphgt_overrides = base
            task = build_objective(data.spec)
            name = case.replace("molbace_", "")

            def run_epoch(e, m=model, o=optimizer, s=scheduler, t=trainer, ld=loader, k=task):
                return t.train_epoch(m, ld, k, o, s, e).loss

            def evaluate(split, m=model, t=trainer, d=data, k=task):
                return t.evaluate(m, d.val_loader() if split == "val" else d.test_loader(), k, split).metric

            runs[name] = {"epoch": run_epoch, "eval": evaluate, "params": tt.count_params(model),
                          "overrides": overrides, "bf16": bool(trainer.bf16)}
            setup[name] = time.perf_counter() - t0
    if torch.get_num_threads() != threads:  # graphgt's RWSE (numba) may reset torch's thread count
        torch.set_num_threads(threads)
    order = list(runs)
    times: Dict[str, List[float]] = {n: [] for n in order}
    best = {n: {"val": -math.inf, "test": math.nan, "epoch": 0} for n in order}
    truncated = False
    for epoch in range(1, epochs + 1):
        if time.time() > deadline:
            truncated = True
            break
        k = (epoch - 1) % len(order)
        for name in order[k:] + order[:k]:
            r = runs[name]
            sync()
            t0 = time.perf_counter()
            loss = r["epoch"](epoch)
            sync()
            times[name].append(time.perf_counter() - t0)
            val, test = r["eval"]("val"), r["eval"]("test")
            if val > best[name]["val"]:
                best[name] = {"val": val, "test": test, "epoch": epoch}
            log(f"molbace: [{name:12s}] epoch {epoch:2d}  {times[name][-1]:.3f} s  loss {loss:.4f}  val {val:.4f}  "
                f"test {test:.4f}")
    out: Dict[str, Any] = {"source": source, "epochs_planned": epochs, "epochs_run": len(times["pyg"]),
                           "train_batches_per_epoch": plan["molbace_batches"] or len(loaders["train"]),
                           "truncated": truncated, "device": str(device), "runs": {}}
    for name in ("pyg", "graphgt", "graphgt_bf16"):
        if name not in runs:
            out["runs"][name] = None
            out["runs"][f"{name}_note"] = "bf16 autocast is CUDA-only (trainer.bf16 is ignored on CPU)"
            continue
        ts = times[name]
        timed = ts[1:] if len(ts) > 1 else ts
        out["runs"][name] = {
            "s_per_epoch": statistics.median(timed) if timed else None, "epoch_times": ts,
            "test_rocauc": best[name]["test"], "val_rocauc": best[name]["val"] if ts else None,
            "best_epoch": best[name]["epoch"], "params": runs[name]["params"], "setup_s": setup[name],
            "overrides": runs[name]["overrides"], **({"bf16": runs[name]["bf16"]} if "bf16" in runs[name] else {}),
        }
    pyg = out["runs"]["pyg"]
    for name in ("graphgt", "graphgt_bf16"):
        r = out["runs"][name]
        ok = r is not None and r["s_per_epoch"] and pyg["s_per_epoch"]
        out[f"ratio_{name}_to_pyg"] = r["s_per_epoch"] / pyg["s_per_epoch"] if ok else None
        out[f"rocauc_diff_{name}_minus_pyg"] = (r["test_rocauc"] - pyg["test_rocauc"]) if ok else None
    return out


# ------------------------------------------------------------------------------- attention
def attention_pass(name: str, n: int, edge_index, device, bf16: bool, repeats: int, seed: int) -> Dict[str, Any]:
    """Warm-up and ``repeats`` timed forward+backward passes of ``attention_scaling.MODULES[name]``
    on one graph of ``n`` nodes (loss ``(module(x, ctx) * w).sum()`` as in attention_scaling.measure),
    on ``device`` (bf16 autocast when ``bf16``); the device is synchronised around each pass."""
    import torch

    import attention_scaling as ats
    from graphgt.nn.attention.base import AttentionContext

    cls = ats.load_class(name)
    torch.manual_seed(seed)
    cuda = device.type == "cuda"
    ctx = AttentionContext.single_graph(n, device=device, edge_index=edge_index.to(device))
    module = cls(ats.DIM, **ats.MODULES[name][1]).to(device).train()
    x = torch.randn(n, ats.DIM, device=device, requires_grad=True)
    w = torch.randn(n, ats.DIM, device=device)
    sync = _sync_fn(device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step() -> float:
        x.grad = None
        module.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        with autocast():
            out = module(x, ctx)
        (out.float() * w).sum().backward()
        sync()
        return time.perf_counter() - t0

    step()  # warm-up
    x.grad = None
    module.zero_grad(set_to_none=True)
    base = None
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = [step() for _ in range(repeats)]
    res = {"ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3, "all_ms": [t * 1e3 for t in times]}
    if cuda:
        res["peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
        res["delta_mib"] = res["peak_mib"] - base / MIB
    return res


def section_attention(ctx: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    import attention_scaling as ats

    plan, deadline = ctx["plan"], ctx["deadline"]
    device = torch.device(ctx["device"])
    bf16 = device.type == "cuda"
    sizes = [2 ** k for k in plan["attention_sizes"]]
    modules = list(ats.MODULES)
    results: Dict[str, Dict[str, Any]] = {m: {} for m in modules}
    last: Dict[str, Tuple[int, float]] = {}
    blocked: Dict[str, str] = {}
    for i, n in enumerate(sizes):
        edge_index = torch.from_numpy(ats.build_graph(n, ats.AVG_DEGREE * n, seed=ats.GRAPH_SEED))

        def predicted(name: str) -> float:
            """Seconds of warm-up + timed passes at ``n`` from the last measured size (0 if none)."""
            if name not in last:
                return 0.0
            n0, ms0 = last[name]
            return ms0 / 1e3 * (n / n0) ** ats.EXPECTED_EXPONENT.get(name, 1.0) * (plan["attention_repeats"] + 1)

        # cheapest first: what is left is shared by the measurements still to come at this size,
        # so the most expensive one gets whatever the cheaper ones did not use
        order = sorted(modules, key=predicted)
        for j, name in enumerate(order):
            left = deadline - time.time()
            reason = blocked.get(name)
            if reason is None and name in last:
                share = left / (len(order) - j)
                if predicted(name) > share:
                    reason = f"skipped (predicted {predicted(name):.1f} s > {share:.1f} s of the section's time left)"
            if reason is None and left <= 0:
                reason = "skipped (no time left)"
            if reason:
                results[name][str(n)] = {"skipped": reason}
                log(f"attention: {name} N={n}: {reason}")
                continue
            try:
                res = attention_pass(name, n, edge_index, device, bf16, plan["attention_repeats"], ctx["seed"])
            except torch.cuda.OutOfMemoryError as err:  # a finding, not a failure of the check
                res = {"oom": str(err).splitlines()[0]}
                blocked[name] = f"skipped (out of memory at N={n})"
            except ImportError as err:  # a module of attention_scaling.MODULES that does not exist
                res = {"error": f"unavailable: {err}"}
                blocked[name] = res["error"]
            except Exception as err:  # noqa: BLE001 - recorded, the other modules go on
                res = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
                blocked[name] = f"skipped (error at N={n})"
            if device.type == "cuda":
                torch.cuda.empty_cache()
            results[name][str(n)] = res
            if "ms" in res:
                last[name] = (n, res["ms"])
            log(f"attention: {name} N={n}: " + (f"{res['ms']:.1f} ms" + (f", peak {res['peak_mib']:.0f} MiB"
                                                                          if "peak_mib" in res else "")
                                                if "ms" in res else res.get("error") or f"out of memory: {res['oom']}"))
    slopes = {m: ats.loglog_slope([int(n) for n, r in results[m].items() if "ms" in r],
                                  [r["ms"] for r in results[m].values() if "ms" in r]) for m in modules}
    errors = {m: r["error"] for m in modules for r in results[m].values() if "error" in r}
    out = {"device": str(device), "dtype": "bf16 autocast" if bf16 else "float32", "dim": ats.DIM, "heads": ats.HEADS,
           "sizes": sizes, "repeats": plan["attention_repeats"],
           "modules": {m: ats.MODULES[m][0] for m in modules}, "results": results, "slopes": slopes,
           "memory": "peak device memory (MiB) and its rise over the memory before the pass" if bf16 else
           "CPU mode: no device memory (peak RSS per size: bench/attention_scaling.py)"}
    if errors:
        raise SectionError(f"attention modules failed: {errors}", out)
    return out


class SectionError(RuntimeError):
    """A section's failure that still carries its partial result."""

    def __init__(self, message: str, partial: Dict[str, Any]):
        super().__init__(message)
        self.partial = partial


# ---------------------------------------------------------------------------------- children
def run_section_child(name: str, ctx_path: Path) -> None:
    """Child mode: run section ``name`` and write ``{"status", ...}`` to ``ctx["result"]``."""
    ctx = json.loads(Path(ctx_path).read_text())
    sys.path[:0] = [str(REPO), str(BENCH)]
    result: Dict[str, Any]
    t0 = time.perf_counter()
    try:
        import torch

        if ctx.get("threads"):
            torch.set_num_threads(ctx["threads"])
        fn = {"store": section_store, "molbace": section_molbace, "attention": section_attention}.get(name)
        with contextlib.redirect_stdout(sys.stderr):
            result = fn(ctx) if fn else section_train(name, ctx)
        if ctx["device"] == "cuda":
            props = torch.cuda.get_device_properties(0)
            result.setdefault("device_name", props.name)
            result.setdefault("device_memory_gib", props.total_memory / GIB)
        result = {"status": "ok", **result}
    except SectionError as err:
        result = {"status": "error", "error": str(err), **err.partial}
    except BaseException as err:  # noqa: BLE001 - recorded in the JSON
        traceback.print_exc()
        tb = traceback.format_exc().strip().splitlines()
        result = {"status": "error", "error": f"{type(err).__name__}: {err}", "traceback": tb[-12:]}
    result["seconds"] = time.perf_counter() - t0
    Path(ctx["result"]).write_text(json.dumps(finite(json.loads(json.dumps(result, default=_json_default)))))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def finite(obj: Any) -> Any:
    """``obj`` with every NaN/inf float replaced by ``None`` (the JSON stays strict)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def run_section(name: str, ctx: Dict[str, Any], timeout: float, workdir: Path) -> Dict[str, Any]:
    """Run section ``name`` in a child process for at most ``timeout`` s (its process group is killed after)."""
    result_file = workdir / f"{name}.result.json"
    # the section stops starting new work at its deadline, a quarter of its time before it is killed
    ctx = dict(ctx, result=str(result_file), deadline=time.time() + timeout - max(4.0, 0.25 * timeout))
    ctx_file = workdir / f"{name}.ctx.json"
    ctx_file.write_text(json.dumps(ctx))
    env = dict(os.environ, OUTDATED_IGNORE="1", PYTHONWARNINGS="ignore", GRAPHGT_CACHE=ctx["cache_dir"],
               PYTHONPATH=os.pathsep.join([str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH")
                                                         else [])))
    if ctx.get("threads"):
        env.update(OMP_NUM_THREADS=str(ctx["threads"]), MKL_NUM_THREADS=str(ctx["threads"]))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_section", name, "--_ctx", str(ctx_file)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=sys.stderr, stderr=sys.stderr, cwd=str(REPO), start_new_session=True)
    try:
        code = proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return {"status": "timeout", "error": f"section {name} ran past its {timeout:.0f} s and was stopped",
                "seconds": time.perf_counter() - t0}
    if result_file.exists():
        res = json.loads(result_file.read_text())
        res["wall_s"] = time.perf_counter() - t0
        return res
    return {"status": "error", "error": f"section {name}: child exited with code {code} and wrote no result",
            "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------- targets
def _get(sections: Dict[str, Any], section: str, path: Sequence[str]) -> Any:
    value = sections.get(section)
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def judge(sections: Dict[str, Any], cuda: bool) -> Dict[str, Dict[str, Any]]:
    """Pass/fail of every target (``pass`` is ``None`` on CPU, or when the figure is missing)."""
    out: Dict[str, Dict[str, Any]] = {}

    def verdict(ok: Optional[bool]) -> Optional[bool]:
        return ok if cuda else None

    for key, (section, path, op, threshold, what) in TARGETS.items():
        if section not in sections:
            continue
        value = _get(sections, section, path)
        ok = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        out[key] = {"target": f"{what} {op} {threshold:g}", "value": value, "pass": verdict(ok)}
    mol = sections.get("molbace")
    if mol is not None:
        for name in ("graphgt", "graphgt_bf16"):
            ratio, diff = _get(sections, "molbace", (f"ratio_{name}_to_pyg",)), \
                _get(sections, "molbace", (f"rocauc_diff_{name}_minus_pyg",))
            ok = None if ratio is None or diff is None or not math.isfinite(diff) else \
                (ratio <= MOLBACE_MAX_RATIO and abs(diff) <= ROCAUC_TOLERANCE)
            out[f"molbace_{name}_speed"] = {
                "target": f"molbace GPS s/epoch ({name}) <= {MOLBACE_MAX_RATIO:g} x PyG GPSConv at equal test "
                          f"ROC-AUC (+-{ROCAUC_TOLERANCE:g})",
                "value": {"ratio": ratio, "rocauc_diff": diff}, "pass": verdict(ok)}
    if not cuda:
        for entry in out.values():
            entry["note"] = "a GPU target: not judged in --cpu mode"
    return out


# ------------------------------------------------------------------------------------ main
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--cpu", action="store_true", help="run on the CPU (no CUDA needed); GPU targets are not judged")
    p.add_argument("--small", action="store_true",
                   help=f"small sizes: store scale {SMALL_SCALE}, fewer batches/epochs, attention N = 2^10, 2^12")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                   help="the sections to run (store is added when a products case needs it)")
    p.add_argument("--budget", type=float, default=None,
                   help="global time budget in seconds (default 330, with --small 170)")
    p.add_argument("--molbace", default="auto",
                   help="ogbg_molbace folder, 'synthetic', or 'auto' (default: <shared>/ogb/ogbg_molbace when "
                        "present, else synthetic)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in every section (default: torch's)")
    p.add_argument("--tmp", type=Path, default=None,
                   help="where the temporary folder (store, caches, molbace copies; deleted at the end) is "
                        "created (default: the system's; the full-size store needs ~4 GB)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the JSON document here")
    p.add_argument("--_section", help=argparse.SUPPRESS)
    p.add_argument("--_ctx", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.budget is not None and args.budget <= 0:
        p.error(f"--budget must be > 0, got {args.budget}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    return args


def environment(deps: Dict[str, Any], cuda_wanted: bool) -> Dict[str, Any]:
    env: Dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), **deps}
    env["cuda_available"] = env["device_name"] = None
    if "torch" not in deps["missing"]:
        import torch

        env["torch_cuda"] = torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()  # no CUDA context in this process: the sections' own
        env["cuda_device_count"] = torch.cuda.device_count() if env["cuda_available"] else 0
    return env


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args._section:
        run_section_child(args._section, Path(args._ctx))
        return 0
    t_start = time.perf_counter()
    sys.path.insert(0, str(REPO))
    deps = check_imports()
    if deps["missing"]:
        log(f"missing imports: {', '.join(deps['missing'])} (the sections that need them are skipped)")
    env = environment(deps, not args.cpu)
    cuda = not args.cpu
    plan = Plan(args.small, cuda)
    budget = args.budget or plan.budget
    selected = [s for s in SECTIONS if s in args.sections or (s == "store" and set(args.sections) & set(TRAIN_CASES))]
    report: Dict[str, Any] = {
        "check": "bench/gpu_check.py", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "mode": {"device": "cpu" if args.cpu else "cuda", "small": args.small, "budget_s": budget,
                 "sections": selected, "plan": plan.as_dict()},
        "environment": env,
        "cases": {case: {"preset": preset, "overrides": case_overrides(case, args.small)}
                  for case, (preset, _) in CASES.items()},
        "sections": {},
    }
    if cuda and not env["cuda_available"]:
        env["error"] = "CUDA is not available to torch: run with --cpu (and --small on a small machine)"
        log(env["error"])
    tmp = Path(tempfile.mkdtemp(prefix="graphgt-gpu-check-", dir=args.tmp))
    ctx = {"device": "cpu" if args.cpu else "cuda", "plan": plan.as_dict(), "seed": args.seed, "tmp": str(tmp),
           "cache_dir": str(tmp / "cache"), "store_root": str(tmp / "stores"), "threads": args.threads,
           "molbace": args.molbace}
    try:
        for i, name in enumerate(selected):
            left = budget - (time.perf_counter() - t_start)
            weights = sum(plan.shares[s] for s in selected[i:])
            timeout = left * plan.shares[name] / weights
            missing = [m for m in REQUIRES[name] if m in deps["missing"]]
            if env.get("error"):
                res = {"status": "skipped", "error": env["error"]}
            elif missing:
                res = {"status": "skipped", "error": f"missing imports: {', '.join(missing)}"}
            elif name in TRAIN_CASES and report["sections"].get("store", {}).get("status") != "ok":
                res = {"status": "skipped", "error": "the store section did not build the products-shaped store"}
            elif timeout < 5.0:
                res = {"status": "skipped", "error": f"the time budget ({budget:.0f} s) is spent"}
            else:
                log(f"section {name}: up to {timeout:.0f} s ({left:.0f} s of the budget left)")
                res = run_section(name, ctx, timeout, tmp)
                log(f"section {name}: {res['status']} in {res.get('wall_s', res['seconds']):.1f} s"
                    + (f": {res['error']}" if res.get("error") else ""))
            report["sections"][name] = res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for res in report["sections"].values():  # the device's name, as the first section on it saw it
        if res.get("device_name") and not env.get("device_name"):
            env["device_name"], env["device_memory_gib"] = res["device_name"], res.get("device_memory_gib")
    report["targets"] = judge(report["sections"], cuda)
    report["failed"] = [s for s, r in report["sections"].items() if r["status"] != "ok"]
    report["wall_s"] = time.perf_counter() - t_start
    text = json.dumps(finite(report), indent=2, default=_json_default, allow_nan=False)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    log(f"done in {report['wall_s']:.1f} s; " + (f"not ok: {', '.join(report['failed'])}" if report["failed"]
                                                 else "every section ok"))
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
