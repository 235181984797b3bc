"""One training run from a composed config: validate, build, fit, write ``results.json``.

Order matters: the config is validated, a checkpoint to resume is read and checked against the
config, and the data is checked on disk before anything is computed; the run directory is
refused if an earlier run left results or a checkpoint there (unless ``trainer.resume`` says to
continue it).  Under DDP every rank runs this function; rank 0 builds the data caches first,
writes checkpoints, logs and ``results.json``.
"""
from __future__ import annotations

import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from graphgt.config.errors import ConfigError
from graphgt.config.validate import validate_config
from graphgt.data.base import DataSpec
from graphgt.io import atomic_write_json
from graphgt.nn.model import count_parameters
from graphgt.train.checkpoint import LAST, check_config, find_resume, load_checkpoint
from graphgt.train.distributed import DistributedError, env_world_size, init_distributed, launch, shutdown
from graphgt.train.loop import NonFiniteLossError
from graphgt.train.signals import Preempted

RESULTS = "results.json"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s generators after model construction (rank 0 keeps ``seed``'s stream)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(rank)]).generate_state(1)[0])


def check_run_dir(run_dir: Path) -> None:
    """Refuse a directory that already holds an earlier run's results or checkpoint (never overwrite them)."""
    if (run_dir / RESULTS).exists() or (run_dir / "metrics.csv").exists():
        raise ConfigError(f"hydra.run.dir={run_dir} already holds an earlier run's results; "
                          "choose a new hydra.run.dir (or delete that directory yourself)")
    if (run_dir / LAST).exists():
        raise ConfigError(f"hydra.run.dir={run_dir} holds an unfinished run's checkpoint ({LAST}); continue it "
                          "with trainer.resume=auto, or choose a new hydra.run.dir")


def check_compatibility(local_factory, spec: DataSpec, local_choice: str) -> None:
    """Refuse combinations that cannot work, e.g. an edge-feature layer on a graph without edge features."""
    target = getattr(local_factory, "func", local_factory)
    if getattr(target, "requires_edge_attr", False) and not spec.has_edge_attr:
        raise ConfigError(f"local={local_choice} ({target.__name__}) needs edge features, but dataset "
                          f"'{spec.name}' has none; choose a layer without edge features "
                          "(local=gcn, gin, gat or sage)")


def _optional_pe(entry: DictConfig, name: str) -> bool:
    """Is ``pe.<name>`` a real encoding (``compute._target_`` set), or a preset's leftover?"""
    if entry.get("compute") and "_target_" in entry.compute:
        return True
    print(f"graphgt: pe: ignoring pe.{name} (no compute._target_; left by a preset after pe=none)",
          file=sys.stderr)
    return False


def _optional(node: Optional[DictConfig], group: str):
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


def build_trainer(cfg: DictConfig):
    """The ``trainer`` node's object; a bad value is a :class:`ConfigError` naming it."""
    try:
        return instantiate(cfg.trainer)
    except Exception as e:  # Hydra wraps constructor errors
        cause = e if isinstance(e, ValueError) else e.__cause__
        if isinstance(cause, ValueError):
            raise ConfigError(f"trainer: {cause}") from None
        raise


def _finished_results(run_dir: Path) -> Dict[str, Any]:
    print(f"graphgt: {run_dir} already finished (trainer.resume=auto): keeping its {RESULTS}", file=sys.stderr)
    return json.loads((run_dir / RESULTS).read_text())


def run(cfg: DictConfig, run_dir: Path, choices: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Run one training job described by ``cfg`` in ``run_dir``; returns the results dict.

    With ``trainer.distributed`` asking for several processes and no process group in the
    environment, this process starts the workers (:func:`graphgt.train.distributed.launch`), each of
    which calls ``run`` again, and returns rank 0's results.
    """
    validate_config(cfg)
    trainer = build_trainer(cfg)
    ddp = trainer.distributed
    if ddp is not None and env_world_size() <= 1 and ddp.world_size() > 1:
        return _launch(cfg, Path(run_dir), choices, ddp)
    return _run(cfg, Path(run_dir), dict(choices or {}), trainer)


def _run(cfg: DictConfig, run_dir: Path, choices: Dict[str, str], trainer) -> Dict[str, Any]:
    t_start = time.time()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if trainer.resume == "auto" and (run_dir / RESULTS).exists():
        return _finished_results(run_dir)
    resume_path = find_resume(trainer.resume, run_dir, resolved)
    state = None
    if resume_path is not None:
        state = load_checkpoint(resume_path)
        check_config(state, resolved, resume_path)
        if resume_path.parent != run_dir:
            print(f"graphgt: resuming the unfinished run in {resume_path.parent} from {resume_path.name}",
                  file=sys.stderr)
        run_dir = resume_path.parent
    else:
        if trainer.resume == "auto":
            print("graphgt: trainer.resume=auto: no unfinished run of this config; starting a new run",
                  file=sys.stderr)
        check_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    seed_everything(cfg.seed)  # building a config node may draw random numbers (PyG's FakeDataset does)
    data = instantiate(cfg.data)
    data.check()
    pe_cfg = {name: entry for name, entry in (cfg.get("pe") or {}).items()
              if _optional_pe(entry, name)}
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
        data.setup(list(pes.values()), Path(cfg.cache_dir))
        if dist.is_main:
            dist.barrier(long=True)
        seed_everything(cfg.seed)
        branches = [(pes[name], instantiate(entry.encoder)) for name, entry in pe_cfg.items()]
        try:
            model = instantiate(cfg.model, spec=data.spec, local=local, attention=attention, pe=branches)
        except ValueError as e:
            raise ConfigError(f"model: {e}") from None
        except Exception as e:  # Hydra wraps constructor errors
            if isinstance(e.__cause__, ValueError):
                raise ConfigError(f"model: {e.__cause__}") from None
            raise
        if dist.rank:
            seed_everything(rank_seed(cfg.seed, dist.rank))  # own dropout masks on every rank

        if logger is not None and dist.is_main:
            logger.start(run_dir, resolved, resume_epoch=None if state is None else state["position"]["epoch"] - 1)
        results = trainer.fit(model, data, run_dir, seed=cfg.seed, logger=logger, dist=dist, resume_state=state,
                              resume_path=resume_path, config=resolved)
        results.update({
            "dataset": data.spec.name, "num_params": count_parameters(model), "seed": cfg.seed,
            "duration_s": time.time() - t_start, "choices": choices, "model_repr": repr(model),
            "resumed_from": str(resume_path) if resume_path else None,
            "hardware": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                         "torch": torch.__version__, "threads": torch.get_num_threads(),
                         "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
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


# ------------------------------------------------------------------------------ worker processes
#: exceptions a worker reports back to the launching process, which raises them again there
_REPORTED = (ConfigError, NonFiniteLossError, Preempted, DistributedError)


def _worker(cfg: Dict[str, Any], run_dir: str, choices: Dict[str, str]) -> Tuple[str, Any]:
    """One DDP worker started by :func:`_launch` (the environment holds its rank)."""
    try:
        config = OmegaConf.create(cfg)
        return "ok", _run(config, Path(run_dir), choices, build_trainer(config))
    except _REPORTED as e:
        print(f"graphgt: rank {os.environ.get('RANK', '?')}: {e}", file=sys.stderr, flush=True)
        return "error", (type(e).__name__, str(e), getattr(e, "exit_code", 1))


def _launch(cfg: DictConfig, run_dir: Path, choices: Optional[Mapping[str, str]], ddp) -> Dict[str, Any]:
    """Start the workers of this node; rank 0's results (or its error, raised here)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    container = OmegaConf.to_container(cfg, resolve=True)
    print(f"graphgt: starting {ddp.processes_per_node()} DDP worker processes on this node "
          f"({ddp.world_size()} in all)", file=sys.stderr, flush=True)
    try:
        outcomes = launch(ddp, _worker, container, str(run_dir), dict(choices or {}))
    except SignalException as e:
        raise Preempted(f"stopped by signal {int(e.sigval)}; the workers wrote their checkpoint", int(e.sigval)) \
            from None
    except ChildFailedError as e:
        raise DistributedError(f"a DDP worker failed: {e.format_msg() if hasattr(e, 'format_msg') else e}") from None
    errors = sorted((rank, value) for rank, (status, value) in outcomes.items() if status == "error")
    if errors:
        rank, (kind, message, code) = errors[0]
        exc = {"ConfigError": ConfigError, "CheckpointError": ConfigError,
               "NonFiniteLossError": NonFiniteLossError, "DistributedError": DistributedError}.get(kind)
        if kind == "Preempted":
            raise Preempted(message, code - 128)
        raise (exc or RuntimeError)(message)
    return outcomes[min(outcomes)][1]
