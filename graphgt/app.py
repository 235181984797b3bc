"""The composition root: one training run from a composed config, to ``results.json``.

This is the one module that turns config into objects.  Everything else is plain, typed Python
that never reads a config: data modules, models, the :class:`~graphgt.train.Trainer`.  In order:

1. :func:`validate_config` (every ``_target_`` bound to its signature, injected keys refused), then
   the trainer is built.  If ``trainer.distributed`` asks for several processes and none are in
   the environment, the workers are started here (:func:`graphgt.train.launch`) and each runs
   step 2 onwards (:func:`_worker`).
2. :func:`plan_run`: ``trainer.resume`` is resolved to a checkpoint (read and checked against the
   config), or the run directory is checked to hold no earlier run (:func:`check_run_dir`).
3. The data module, the PE computations, the local/attention factories and the logger are built;
   ``data.check()`` fails fast on missing files.
4. The process group is joined (``WORLD_SIZE > 1``); the run is seeded; ``data.load`` reads the
   data and reports its :class:`~graphgt.spec.DataSpec`; :func:`check_compatibility` refuses an
   edge-feature layer on data without edge features before any PE is computed; ``data.setup``
   splits and computes the PEs.  Under DDP rank 0 does this first and the others wait.
5. The run is seeded again (the initial weights do not depend on how much randomness the data
   consumed), the model is built with the injected keys of :data:`graphgt.config.keys.INJECTED`,
   and the :class:`~graphgt.train.Objective` from the task (``Task.kind`` -> loss,
   ``Task.metric`` -> metric).  Ranks ``r > 0`` reseed from ``(seed, r)`` (own dropout masks).
6. The run is accepted: rank 0 writes its config record (``.hydra/``), starts the logger, and
   ``Trainer.fit`` trains; then ``results.json`` (rank 0, atomically).  A run refused at any earlier
   step leaves its directory as it found it (at most an empty directory and Hydra's log file).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from graphgt.config.keys import check_injected, consumed_for
from graphgt.config.validate import validate_config
from graphgt.errors import ConfigError, DistributedError, GraphGTError, Preempted, RunDirLocked
from graphgt.eval import get_metric
from graphgt.io import atomic_write_json
from graphgt.nn.model import count_parameters
from graphgt.spec import DataSpec
from graphgt.train import LAST, Objective, check_config, find_resume, load_checkpoint, loss_for
from graphgt.train.checkpoint import config_differences, format_differences, require_resumable
from graphgt.train.distributed import env_world_size, init_distributed, launch, shutdown

RESULTS = "results.json"
#: what a directory holds once a run has written into it (refused as the run dir of a new run)
RUN_FILES = (RESULTS, "metrics.csv", LAST, ".hydra")


# ------------------------------------------------------------------------------------------- seeds
def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s generators after model construction (rank 0 keeps ``seed``'s stream)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(rank)]).generate_state(1)[0])


# ------------------------------------------------------------------------------------------ checks
def check_run_dir(run_dir: Path) -> None:
    """Refuse a directory that already holds an earlier run's results, checkpoint or config record."""
    run_dir = Path(run_dir)
    if (run_dir / LAST).exists() and not (run_dir / RESULTS).exists():
        raise ConfigError(f"hydra.run.dir={run_dir} holds an unfinished run's checkpoint ({LAST}); continue it "
                          "with trainer.resume=auto, or choose a new hydra.run.dir")
    held = [name for name in RUN_FILES if (run_dir / name).exists()]
    if held:
        raise ConfigError(f"hydra.run.dir={run_dir} already holds an earlier run's results ({', '.join(held)}); "
                          "choose a new hydra.run.dir (or delete that directory yourself)")


def check_compatibility(local_factory: Any, spec: DataSpec, local_choice: str) -> None:
    """Refuse combinations that cannot work, e.g. an edge-feature layer on a graph without edge features."""
    target = getattr(local_factory, "func", local_factory)
    if getattr(target, "requires_edge_attr", False) and not spec.has_edge_attr:
        raise ConfigError(f"local={local_choice} ({target.__name__}) needs edge features, but dataset "
                          f"'{spec.name}' has none; choose a layer without edge features "
                          "(local=gcn, gin, gat or sage)")


# ---------------------------------------------------------------------------------------- building
def _optional(node: Optional[DictConfig], group: str) -> Any:
    """The group's object, or None for ``<group>=none``.

    Presets set options of a group (``attention.heads``) that remain in the config when the user
    then turns the group off (``experiment=X attention=none``, the usual ablation): such a node
    has keys but no ``_target_``; it means "none", and the ignored keys are named.
    """
    if not node:
        return None
    if "_target_" not in node:
        print(f"graphgt: {group}=none: ignoring {', '.join(f'{group}.{k}' for k in node)} "
              "(set by a preset for the component that was turned off)", file=sys.stderr)
        return None
    return instantiate(node)


def _pe_entries(cfg: DictConfig) -> Dict[str, DictConfig]:
    """The ``pe.<name>`` entries that are real encodings (a preset's leftover after ``pe=none`` is named and skipped)."""
    entries = {}
    for name, entry in (cfg.get("pe") or {}).items():
        if entry.get("compute") and "_target_" in entry.compute:
            entries[name] = entry
        else:
            print(f"graphgt: pe: ignoring pe.{name} (no compute._target_; left by a preset after pe=none)",
                  file=sys.stderr)
    return entries


def _as_config_error(what: str, build: Callable[[], Any]) -> Any:
    """``build()``, with a ``ValueError`` raised by a constructor (Hydra wraps them) as a ConfigError naming ``what``."""
    try:
        return build()
    except ValueError as e:
        if isinstance(e, GraphGTError):
            raise
        raise ConfigError(f"{what}: {e}") from None
    except Exception as e:
        if isinstance(e.__cause__, ValueError) and not isinstance(e.__cause__, GraphGTError):
            raise ConfigError(f"{what}: {e.__cause__}") from None
        raise


def trainer_node(cfg: DictConfig) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(the trainer node without the keys the composition root reads, those keys)``."""
    node = OmegaConf.to_container(cfg.trainer, resolve=True)
    own = {key: node.pop(key, None) for key in consumed_for("trainer")}
    return node, own


def build_trainer(cfg: DictConfig) -> Tuple[Any, Optional[str]]:
    """The ``trainer`` node's object and ``trainer.resume``; a bad value is a ConfigError naming it."""
    node, own = trainer_node(cfg)
    return _as_config_error("trainer", lambda: instantiate(node)), own["resume"]


def build_objective(spec: DataSpec) -> Objective:
    """The loss of the task's kind and the metric of its name."""
    return Objective(loss_sum=loss_for(spec.task.kind), metric=get_metric(spec.task.metric))


def hardware() -> Dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# ---------------------------------------------------------------------------------------- the run
@dataclass
class RunPlan:
    """Where a run writes and what it continues, known before anything is built."""

    run_dir: Path
    resume_path: Optional[Path]
    state: Optional[Dict[str, Any]]
    finished: Optional[Dict[str, Any]] = None  # the results of a finished run (trainer.resume=auto)


def plan_run(resume: Optional[str], run_dir: Path, resolved: Mapping[str, Any]) -> RunPlan:
    """Resolve ``trainer.resume`` (read and check the checkpoint) or check that ``run_dir`` is new.

    ``auto`` only ever continues ``run_dir`` itself; ``latest`` may continue another unfinished run
    of the same config and says which (:func:`graphgt.train.find_resume`).
    """
    if resume in ("auto", "latest") and (run_dir / RESULTS).exists():
        return _finished(run_dir, resolved, resume)
    resume_path = find_resume(resume, run_dir, resolved)
    if resume_path is None:
        if resume in ("auto", "latest"):
            where = "in this hydra.run.dir" if resume == "auto" else "of this config beside this hydra.run.dir"
            print(f"graphgt: trainer.resume={resume}: no unfinished run {where}; starting a new run in {run_dir}",
                  file=sys.stderr)
        check_run_dir(run_dir)
        return RunPlan(run_dir, None, None)
    state = load_checkpoint(resume_path)
    require_resumable(state, resume_path)
    check_config(state, resolved, resume_path)
    if resume_path.parent != run_dir:
        print(f"graphgt: trainer.resume={resume}: continuing the unfinished run in {resume_path.parent} from "
              f"{resume_path.name} (not in {run_dir})", file=sys.stderr)
    return RunPlan(resume_path.parent, resume_path, state)


def _finished(run_dir: Path, resolved: Mapping[str, Any], resume: Optional[str]) -> RunPlan:
    """A finished run asked to resume: its results if it is the same run, else a refusal naming the
    keys that differ (a different request must not be answered with an old run's result)."""
    results = json.loads((run_dir / RESULTS).read_text())
    diff = config_differences(results.get("config") or {}, resolved)
    if diff:
        raise ConfigError(f"hydra.run.dir={run_dir} holds a finished run with a different config "
                          f"(trainer.resume={resume}):\n  {format_differences(diff)}\nit is not the run you "
                          "asked for: choose a "
                          "new hydra.run.dir")
    print(f"graphgt: {run_dir} already finished (trainer.resume={resume}): its {RESULTS} is kept, nothing was "
          "trained", file=sys.stderr)
    return RunPlan(run_dir, None, None, finished=results)


class RunDirLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock`` for the life of a run: a second graphgt process
    that targets the same directory is refused (:class:`~graphgt.errors.RunDirLocked`) instead of
    interleaving its checkpoints, ``metrics.csv`` and results with the first.  The kernel releases
    the lock when the process ends, however it ends."""

    NAME = ".lock"

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._file: Optional[Any] = None

    def __enter__(self) -> "RunDirLock":
        import fcntl

        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.run_dir / self.NAME, "a+")
        except OSError as e:
            raise ConfigError(f"hydra.run.dir={self.run_dir} cannot be written ({e.strerror or e}); choose a "
                              "hydra.run.dir in a folder you can write to") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip() or "?"
            self._file.close()
            self._file = None
            raise RunDirLocked(f"hydra.run.dir={self.run_dir} is in use by another graphgt run (pid {holder}); "
                               "wait for it to finish or choose a new hydra.run.dir") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None


def _locks_run_dir() -> bool:
    """Whether this process holds the run dir's lock: one process per run (rank 0 of torchrun, the
    launcher of ``trainer=ddp``, or the only process), never a worker the launcher started."""
    return _rank() == 0 and os.environ.get(LAUNCHER_LOCKED) != "1"


#: set by the launcher of ``trainer=ddp`` (which holds the run dir's lock) for its workers
LAUNCHER_LOCKED = "GRAPHGT_RUN_DIR_LOCKED"


def write_record(run_dir: Path, record: Mapping[str, Any]) -> None:
    """``run_dir/.hydra/<name>`` for each ``{name: config}`` (Hydra's record of the run's config)."""
    for name, value in record.items():
        path = run_dir / ".hydra" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(value if isinstance(value, DictConfig) else OmegaConf.create(value), path)


def run(cfg: DictConfig, run_dir: Path, choices: Optional[Mapping[str, str]] = None,
          record: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Run the training job described by ``cfg`` in ``run_dir``; returns the results dict.

    Args:
        cfg: the composed config (``configs/train.yaml`` and its groups).
        run_dir: the run's directory (``hydra.run.dir``).
        choices: the selected option of each group (for ``results.json``).
        record: ``{file name: config}`` written to ``run_dir/.hydra/`` once the run is accepted
            (the CLI passes Hydra's ``config.yaml``, ``hydra.yaml`` and ``overrides.yaml``).
    """
    validate_config(cfg)
    trainer, resume = build_trainer(cfg)
    check_optimizer(trainer)
    ddp = trainer.distributed
    if ddp is not None and env_world_size() <= 1 and ddp.world_size() > 1:
        with RunDirLock(Path(run_dir)) if _locks_run_dir() else contextlib.nullcontext():
            os.environ[LAUNCHER_LOCKED] = "1"  # the workers inherit it: the launcher holds the lock
            try:
                return _launch(cfg, Path(run_dir), dict(choices or {}), dict(record or {}), ddp)
            finally:
                os.environ.pop(LAUNCHER_LOCKED, None)
    return _run(cfg, Path(run_dir), dict(choices or {}), dict(record or {}), trainer, resume)


def check_optimizer(trainer: Any) -> None:
    """Build the trainer's optimizer once on a dummy parameter, so that a bad option
    (``trainer.optimizer.lr=-1``) is a ConfigError before any data is read, not a traceback later."""
    probe = [torch.nn.Parameter(torch.zeros(1))]
    _as_config_error("trainer.optimizer", lambda: trainer.optimizer(probe))


def _run(cfg: DictConfig, run_dir: Path, choices: Dict[str, str], record: Dict[str, Any], trainer: Any,
         resume: Optional[str]) -> Dict[str, Any]:
    """Lock the run dir (one process per run), plan the run, then :func:`_execute` it."""
    t_start = time.time()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    with contextlib.ExitStack() as locks:
        if _locks_run_dir():
            locks.enter_context(RunDirLock(run_dir))
        plan = plan_run(resume, run_dir, resolved)
        if plan.finished is not None:
            return {**plan.finished, "run_dir": str(run_dir)}
        if plan.run_dir != run_dir and _locks_run_dir():
            locks.enter_context(RunDirLock(plan.run_dir))
        try:
            return _execute(cfg, plan, choices, record, trainer, resolved, t_start)
        except BaseException as e:  # the run was accepted: its failure belongs to (and is recorded in) its dir
            e.graphgt_run_dir = str(plan.run_dir)  # type: ignore[attr-defined]
            raise


def _execute(cfg: DictConfig, plan: RunPlan, choices: Dict[str, str], record: Dict[str, Any], trainer: Any,
             resolved: Dict[str, Any], t_start: float) -> Dict[str, Any]:
    run_dir = plan.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)

    data = instantiate(cfg.data)
    data.check()
    pe_cfg = _pe_entries(cfg)
    pes = {name: instantiate(entry.compute) for name, entry in pe_cfg.items()}
    local = _optional(cfg.get("local"), "local")
    attention = _optional(cfg.get("attention"), "attention")
    logger = instantiate(cfg.logger) if cfg.get("logger") else None

    dist = init_distributed(trainer.distributed, trainer.device.type)
    failed = False
    try:
        seed_everything(cfg.seed)
        if not dist.is_main:  # rank 0 builds the caches (stores, PEs, dataset copies) first
            dist.barrier(long=True)
        spec = data.load(Path(cfg.cache_dir))
        if local is not None:
            check_compatibility(local, spec, choices.get("local", "?"))
        objective = _as_config_error(f"data ({spec.name})", lambda: build_objective(spec))
        data.setup(list(pes.values()), Path(cfg.cache_dir))
        if dist.is_main:
            dist.barrier(long=True)
        seed_everything(cfg.seed)
        branches = [(pes[name], instantiate(entry.encoder)) for name, entry in pe_cfg.items()]
        build_model = instantiate(cfg.model, _partial_=True)  # injected objects bypass OmegaConf (a DataSpec is a dataclass)
        model = _as_config_error("model", lambda: build_model(**check_injected(
            "model", {"spec": data.spec, "local": local, "attention": attention, "pe": branches})))
        if dist.rank:
            seed_everything(rank_seed(cfg.seed, dist.rank))  # own dropout masks on every rank

        if record and dist.is_main and not (run_dir / ".hydra").exists():
            write_record(run_dir, record)  # the run is accepted: record its config (a resumed run keeps its own)
        if logger is not None and dist.is_main:
            resume_epoch = None if plan.state is None else plan.state["position"]["epoch"] - 1
            logger.start(run_dir, resolved, resume_epoch=resume_epoch)
        results = trainer.fit(model, data, objective, run_dir, seed=cfg.seed, logger=logger, dist=dist,
                              resume_state=plan.state, resume_path=plan.resume_path, config=resolved)
        results.update({
            "dataset": data.spec.name, "num_params": count_parameters(model), "seed": cfg.seed,
            "duration_s": time.time() - t_start, "choices": choices, "model_repr": repr(model),
            "resumed_from": str(plan.resume_path) if plan.resume_path else None, "hardware": hardware(),
            "run_dir": str(run_dir),
            "config": resolved,
        })
        if dist.is_main:
            atomic_write_json(results, run_dir / RESULTS)
            if logger is not None:
                logger.finish(results)
        return results
    except DistributedError:
        failed = True
        raise
    finally:
        shutdown(dist, failed)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


# ------------------------------------------------------------------------------ worker processes
def _worker(cfg: Dict[str, Any], run_dir: str, choices: Dict[str, str],
            record: Dict[str, Any]) -> Tuple[str, Any]:
    """One DDP worker started by :func:`_launch` (the environment holds its rank); graphgt's errors
    travel back to the launcher as they are (they pickle)."""
    try:
        config = OmegaConf.create(cfg)
        trainer, resume = build_trainer(config)
        return "ok", _run(config, Path(run_dir), choices, record, trainer, resume)
    except GraphGTError as e:
        print(f"graphgt: rank {_rank()}: {e}", file=sys.stderr, flush=True)
        return "error", e


def _launch(cfg: DictConfig, run_dir: Path, choices: Dict[str, str], record: Dict[str, Any],
            ddp: Any) -> Dict[str, Any]:
    """Start the workers of this node; rank 0's results (or the first rank's error, raised here)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    container = OmegaConf.to_container(cfg, resolve=True)
    plain_record = {k: OmegaConf.to_container(v) if isinstance(v, DictConfig) else v for k, v in record.items()}
    print(f"graphgt: starting {ddp.processes_per_node()} DDP worker processes on this node "
          f"({ddp.world_size()} in all)", file=sys.stderr, flush=True)
    try:
        outcomes = launch(ddp, _worker, container, str(run_dir), choices, plain_record)
    except SignalException as e:
        raise Preempted(f"stopped by signal {int(e.sigval)}; the workers wrote their checkpoint", int(e.sigval)) \
            from None
    except ChildFailedError as e:
        raise DistributedError(f"a DDP worker failed: {e.format_msg() if hasattr(e, 'format_msg') else e}") from None
    errors = sorted((rank, value) for rank, (status, value) in outcomes.items() if status == "error")
    if errors:
        raise errors[0][1]
    return outcomes[min(outcomes)][1]


__all__ = ["run", "plan_run", "check_run_dir", "check_compatibility", "build_trainer", "build_objective",
           "seed_everything", "rank_seed", "count_parameters", "RESULTS"]
