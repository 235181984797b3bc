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
   and the :class:`~graphgt.train.Objective` from the task (``Task.kind`` and the ``loss`` key -> loss,
   ``Task.metric`` -> metric; regression targets standardised by the training split's mean/std,
   ``target_standardize``).  Ranks ``r > 0`` reseed from ``(seed, r)`` (own dropout masks).
6. The run is accepted: rank 0 writes its config record (``.hydra/``), starts the logger, and
   ``Trainer.fit`` trains; then ``results.json`` (rank 0, atomically).  A run refused at any earlier
   step leaves its directory as it found it (at most an empty directory and Hydra's log file).
"""
from __future__ import annotations

import contextlib
import dataclasses
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
from graphgt.errors import (CheckpointError, ConfigError, DistributedError, GraphGTError, Preempted,
                            RunDirLocked)
from graphgt.eval import get_metric
from graphgt.io import atomic_write_json
from graphgt.nn.model import count_parameters
from graphgt.spec import DataSpec
from graphgt.train import LAST, Objective, check_config, find_resume, load_checkpoint, load_model_state, loss_for
from graphgt.train.losses import TargetScale, describe_loss, training_targets
from graphgt.train.checkpoint import config_differences, format_differences, require_resumable
from graphgt.train.distributed import Dist, env_world_size, init_distributed, launch, shutdown
from graphgt.train.logging import follow_log_files, log_files, run_name
from graphgt.train.precision import resolve_bf16

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


def build_objective(spec: DataSpec, loss: Optional[str] = "auto", huber_delta: Optional[float] = None) -> Objective:
    """The loss of the task's kind (``loss``/``huber_delta`` choose a regression loss, see
    :func:`graphgt.train.losses.loss_for`) and the metric of its name; no target standardisation
    (:func:`standardize_targets` adds it once the data is set up)."""
    metric = get_metric(spec.task.metric)
    return Objective(criterion=loss_for(spec.task.kind, loss, metric.name, huber_delta), metric=metric)


def objective_settings(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """``{loss, huber_delta, target_standardize}`` of a config.  A config without the keys (a run
    recorded before they existed) keeps the behaviour it was trained with: L1, no standardisation."""
    if "loss" not in cfg and "target_standardize" not in cfg:
        return {"loss": None, "huber_delta": None, "target_standardize": False}
    return {"loss": cfg.get("loss", "auto"), "huber_delta": cfg.get("huber_delta"),
            "target_standardize": cfg.get("target_standardize", "auto")}


def wants_standardization(setting: Any, spec: DataSpec) -> bool:
    """``target_standardize`` (``auto`` = on for regression) for the task of ``spec``; ``true`` on a
    classification task is a ConfigError."""
    if setting == "auto":
        return spec.task.kind == "regression"
    if setting and spec.task.kind != "regression":
        raise ConfigError(f"target_standardize=true applies to regression tasks only; dataset '{spec.name}' is a "
                          f"{spec.task.kind} task; remove it (or set target_standardize=auto)")
    return bool(setting)


def standardize_targets(objective: Objective, data: Any, seed: int) -> Objective:
    """``objective`` with the mean and std of each target column of ``data``'s training split
    (:func:`graphgt.train.losses.training_targets`); deterministic from the data and its split, so
    a resumed run and ``graphgt eval`` recompute the same statistics (``results.json`` records them
    under ``target_scale``)."""
    return dataclasses.replace(objective, scale=TargetScale.fit(training_targets(data, seed)))


@dataclass
class Parts:
    """The objects built from the config before any data is read (step 3 of :func:`run`)."""

    data: Any
    pe_cfg: Dict[str, DictConfig]
    pes: Dict[str, Any]
    local: Any
    attention: Any


def build_parts(cfg: DictConfig) -> Parts:
    """The data module (``data.check()`` done: files present?), the PE computations and the
    local/attention factories of ``cfg``; cheap, nothing is loaded or computed yet."""
    data = instantiate(cfg.data)
    data.check()
    pe_cfg = _pe_entries(cfg)
    pes = {name: instantiate(entry.compute) for name, entry in pe_cfg.items()}
    return Parts(data, pe_cfg, pes, _optional(cfg.get("local"), "local"),
                 _optional(cfg.get("attention"), "attention"))


def build_model_and_data(cfg: DictConfig, choices: Optional[Mapping[str, str]] = None, dist: Optional[Dist] = None,
                         parts: Optional[Parts] = None) -> Tuple[Any, torch.nn.Module, Objective]:
    """``(data module, model, objective)`` of ``cfg``, exactly as a run builds them (steps 4-5 of
    :func:`run`): seeded, data loaded and set up (splits, PEs), model built with fresh weights.
    Used by :func:`run` and by :func:`evaluate_run` (``graphgt eval``), so both see the same
    splits, positional encodings and model."""
    parts = parts or build_parts(cfg)
    dist = dist or Dist()
    data, local, attention, pe_cfg, pes = parts.data, parts.local, parts.attention, parts.pe_cfg, parts.pes
    seed_everything(cfg.seed)
    if not dist.is_main:  # rank 0 builds the caches (stores, PEs, dataset copies) first
        dist.barrier(long=True)
    spec = data.load(Path(cfg.cache_dir))
    if local is not None:
        check_compatibility(local, spec, (choices or {}).get("local", "?"))
    settings = objective_settings(cfg)
    objective = _as_config_error(f"data ({spec.name})", lambda: build_objective(
        spec, settings["loss"], settings["huber_delta"]))
    standardize = wants_standardization(settings["target_standardize"], spec)
    data.setup(list(pes.values()), Path(cfg.cache_dir))
    if dist.is_main:
        dist.barrier(long=True)
    if standardize:
        objective = standardize_targets(objective, data, cfg.seed)
    seed_everything(cfg.seed)
    branches = [(pes[name], instantiate(entry.encoder)) for name, entry in pe_cfg.items()]
    build_model = instantiate(cfg.model, _partial_=True)  # injected objects bypass OmegaConf (a DataSpec is a dataclass)
    model = _as_config_error("model", lambda: build_model(**check_injected(
        "model", {"spec": data.spec, "local": local, "attention": attention, "pe": branches})))
    if dist.rank:
        seed_everything(rank_seed(cfg.seed, dist.rank))  # own dropout masks on every rank
    return data, model, objective


def hardware() -> Dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def versions() -> Dict[str, Optional[str]]:
    """The versions that make a result: graphgt, torch, PyG, ogb (null when not installed), Python."""
    from importlib import metadata

    import graphgt

    out: Dict[str, Optional[str]] = {"graphgt": graphgt.__version__, "torch": torch.__version__}
    for name in ("torch_geometric", "ogb"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


def git_state(timeout_s: float = 5.0) -> Optional[Dict[str, Any]]:
    """``{"commit", "dirty"}`` of the git checkout graphgt is imported from (dirty: tracked files
    changed since the commit), or None outside one: no git, not a checkout, graphgt not tracked
    there (an install inside someone else's repository), or git slower than ``timeout_s``. Never
    raises: provenance must not fail a run."""
    import subprocess

    package = Path(__file__).resolve().parent

    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True,
                                  timeout=timeout_s, check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    if not commit or git("ls-files", "--error-unmatch", "__init__.py") is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


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

    parts = build_parts(cfg)
    logger = instantiate(cfg.logger) if cfg.get("logger") else None

    dist = init_distributed(trainer.distributed, trainer.device.type)
    failed = False
    try:
        data, model, objective = build_model_and_data(cfg, choices, dist, parts)

        if record and dist.is_main and not (run_dir / ".hydra").exists():
            write_record(run_dir, record)  # the run is accepted: record its config (a resumed run keeps its own)
        if logger is not None and dist.is_main:
            resume_epoch = None if plan.state is None else plan.state["position"]["epoch"] - 1
            logger.start(run_dir, resolved, resume_epoch=resume_epoch, name=run_name(choices, cfg.seed))
        results = trainer.fit(model, data, objective, run_dir, seed=cfg.seed, logger=logger, dist=dist,
                              resume_state=plan.state, resume_path=plan.resume_path, config=resolved)
        results.update({
            "dataset": data.spec.name, "num_params": count_parameters(model), "seed": cfg.seed,
            "duration_s": time.time() - t_start, "choices": choices, "model_repr": repr(model),
            "resumed_from": str(plan.resume_path) if plan.resume_path else None, "hardware": hardware(),
            "versions": versions(), "git": git_state(), "run_dir": str(run_dir),
            "config": resolved, "loss_fn": describe_loss(objective.criterion),
            "target_scale": objective.scale.as_dict() if objective.scale is not None else None,
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
            record: Dict[str, Any], logs: Tuple[str, ...] = ()) -> Tuple[str, Any]:
    """One DDP worker started by :func:`_launch` (the environment holds its rank); graphgt's errors
    travel back to the launcher as they are (they pickle). Rank 0 logs to the launcher's ``logs``
    (Hydra's ``cli.log``: spawned workers do not inherit Hydra's logging config)."""
    try:
        if _rank() == 0:
            follow_log_files(list(logs))
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
        outcomes = launch(ddp, _worker, container, str(run_dir), choices, plain_record, tuple(log_files()))
    except SignalException as e:
        raise Preempted(f"stopped by signal {int(e.sigval)}; the workers wrote their checkpoint", int(e.sigval)) \
            from None
    except ChildFailedError as e:
        raise DistributedError(f"a DDP worker failed: {e.format_msg() if hasattr(e, 'format_msg') else e}") from None
    errors = sorted((rank, value) for rank, (status, value) in outcomes.items() if status == "error")
    if errors:
        raise errors[0][1]
    return outcomes[min(outcomes)][1]


# ------------------------------------------------------------------------------ graphgt eval
EVAL_SPLITS = ("val", "test")
#: top-level keys of a recorded ``.hydra/config.yaml`` that the CLI does not pass to :func:`run`
SWEEP_KEYS = ("objective",)
EVAL_CHECKPOINTS = {"best": "best.pt", "last": LAST}


def _recorded(run_dir: Path, ckpt: str, epoch: Optional[int], metric: str) -> Optional[Dict[str, float]]:
    """What the run itself recorded for this checkpoint: ``best_val`` / ``test_at_best_val`` of
    ``results.json`` for ``best.pt``, the ``metrics.csv`` row of the checkpoint's epoch for ``last.pt``."""
    if ckpt == "best" and (run_dir / RESULTS).is_file():
        results = json.loads((run_dir / RESULTS).read_text())
        return {"val": results.get("best_val"), "test": results.get("test_at_best_val")}
    if ckpt == "last" and epoch is not None and (run_dir / "metrics.csv").is_file():
        import csv

        with open(run_dir / "metrics.csv", newline="") as f:
            for row in csv.DictReader(f):
                if str(row.get("epoch")) == str(epoch):
                    return {split: float(row[f"{split}_{metric}"]) if row.get(f"{split}_{metric}") not in (None, "")
                            else None for split in EVAL_SPLITS}
    return None


def _require_run_dir(run_dir: Path) -> None:
    if not (run_dir / ".hydra" / "config.yaml").is_file():
        raise ConfigError(f"'{run_dir}' is not a run directory of graphgt train (no .hydra/config.yaml, the run's "
                          "config); pass the directory a run wrote (hydra.run.dir), or a checkpoint inside one")


def resolve_eval_target(target: Path, ckpt: Optional[str] = None) -> Tuple[Path, Path, str]:
    """``(run dir, checkpoint file, "best"|"last"|"file")`` for ``graphgt eval <run dir | checkpoint>``."""
    target = Path(target)
    if ckpt is not None and ckpt not in EVAL_CHECKPOINTS:
        raise ConfigError(f"ckpt={ckpt} is not a checkpoint name; use ckpt=best or ckpt=last")
    if target.is_file():
        if ckpt is not None:
            raise ConfigError(f"'{target}' is a checkpoint file: ckpt={ckpt} applies to a run directory only; "
                              f"pass the run directory '{target.parent}' with ckpt={ckpt}, or the file alone")
        kind = next((k for k, name in EVAL_CHECKPOINTS.items() if target.name == name), "file")
        _require_run_dir(target.parent)
        return target.parent, target, kind
    if not target.is_dir():
        raise ConfigError(f"'{target}' does not exist; pass a run directory of graphgt train (it holds "
                          ".hydra/config.yaml and best.pt/last.pt) or one of its checkpoints")
    _require_run_dir(target)
    kind = ckpt or "best"
    path = target / EVAL_CHECKPOINTS[kind]
    if not path.is_file():
        other = next((k for k, name in EVAL_CHECKPOINTS.items() if k != kind and (target / name).is_file()), None)
        hint = (f"ckpt={other} evaluates its {EVAL_CHECKPOINTS[other]}" if other else
                "the run wrote no checkpoint (trainer.checkpoint=false, or it stopped before its first epoch "
                "ended); train it again with checkpoints")
        raise CheckpointError(f"run directory '{target}' holds no {path.name} (ckpt={kind}); {hint}")
    return target, path, kind


def check_target_scale(objective: Objective, recorded: Optional[Mapping[str, Any]], run_dir: Path) -> None:
    """Refuse to evaluate with target statistics other than the run's (``results.json``'s
    ``target_scale``): the data or its split changed since the run, and its numbers would not be
    the run's.  Nothing to check for a run without a ``results.json`` or without standardisation."""
    if recorded is None or objective.scale is None:
        return
    now = objective.scale.as_dict()
    if any(len(now[k]) != len(recorded[k]) or any(abs(a - b) > 1e-9 * max(1.0, abs(b))
                                                  for a, b in zip(now[k], recorded[k])) for k in ("mean", "std")):
        raise CheckpointError(f"the training targets' mean/std recomputed now ({now}) differ from those run "
                              f"'{run_dir}' trained with ({dict(recorded)}): the data or its split changed since; "
                              "evaluate with the data the run used")


def evaluate_run(target: Path, splits: Tuple[str, ...] = EVAL_SPLITS, ckpt: Optional[str] = None) -> Dict[str, Any]:
    """Re-evaluate a finished (or stopped) run: its own config (``.hydra/config.yaml``), its
    checkpoint (``best.pt`` by default), the same data, splits, PEs and model as the run built
    (:func:`build_model_and_data`); the loss and metric of each split, with what the run recorded
    (``results.json``'s ``best_val`` / ``test_at_best_val`` for ``best.pt``) beside them."""
    for split in splits:
        if split not in EVAL_SPLITS:
            raise ConfigError(f"split={split} is not a split; use split=val, split=test or split=all")
    run_dir, ckpt_path, kind = resolve_eval_target(Path(target), ckpt)
    config_file = run_dir / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config_file)
    for key in SWEEP_KEYS:  # the sweeper's settings, recorded beside the run's config but not part of it
        cfg.pop(key, None)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    state = load_checkpoint(ckpt_path)
    if "model" not in state:
        raise CheckpointError(f"checkpoint '{ckpt_path}' holds no model weights")
    diff = config_differences(state.get("config") or {}, resolved) if state.get("config") is not None else []
    if diff:
        raise CheckpointError(f"checkpoint '{ckpt_path}' was written by a run with a different config than "
                              f"{config_file}:\n  {format_differences(diff)}\nevaluate a checkpoint inside the run "
                              "directory that wrote it")
    validate_config(cfg)
    trainer, _ = build_trainer(cfg)
    results = json.loads((run_dir / RESULTS).read_text()) if (run_dir / RESULTS).is_file() else {}
    data, model, objective = build_model_and_data(cfg, results.get("choices"))
    check_target_scale(objective, results.get("target_scale"), run_dir)
    load_model_state(model, state, ckpt_path)
    model.to(trainer.device)
    trainer.bf16 = resolve_bf16(trainer.bf16_setting, trainer.device, model)
    data.place(trainer.device)
    loaders = {"val": lambda: data.val_loader(0, 1), "test": lambda: data.test_loader(0, 1)}
    scores = {}
    for split in splits:
        result = trainer.evaluate(model, loaders[split](), objective, split)
        scores[split] = {"loss": result.loss, "metric": result.metric}
    epoch = state.get("epoch") if "position" not in state else state["position"]["epoch"] - 1
    name = objective.metric.name
    recorded = _recorded(run_dir, kind, epoch, name)
    return {"run_dir": str(run_dir), "checkpoint": str(ckpt_path), "ckpt": kind, "epoch": epoch, "metric": name,
            "higher_is_better": objective.metric.higher_is_better, "splits": scores,
            "target_scale": objective.scale.as_dict() if objective.scale is not None else None,
            "recorded": {s: recorded.get(s) for s in splits} if recorded else None}


__all__ = ["run", "plan_run", "check_run_dir", "check_compatibility", "build_trainer", "build_objective",
           "objective_settings", "standardize_targets", "wants_standardization",
           "seed_everything", "rank_seed", "count_parameters", "RESULTS", "build_parts", "build_model_and_data",
           "evaluate_run"]
