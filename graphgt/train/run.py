"""One training run from a composed config: validate, build, fit, write ``results.json``.

Order matters: the config is validated and the data is checked on disk before anything is
computed; the run directory is refused if an earlier run left results there.
"""
from __future__ import annotations

import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from graphgt.config.errors import ConfigError
from graphgt.config.validate import validate_config
from graphgt.data.base import DataSpec
from graphgt.io import atomic_write_json
from graphgt.nn.model import count_parameters

RESULTS = "results.json"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_run_dir(run_dir: Path) -> None:
    """Refuse a directory that already holds an earlier run's results (never overwrite them)."""
    if (run_dir / RESULTS).exists() or (run_dir / "metrics.csv").exists():
        raise ConfigError(f"hydra.run.dir={run_dir} already holds an earlier run's results; "
                          "choose a new hydra.run.dir (or delete that directory yourself)")


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


def run(cfg: DictConfig, run_dir: Path, choices: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Run one training job described by ``cfg`` in ``run_dir``; returns the results dict."""
    t_start = time.time()
    run_dir = Path(run_dir)
    choices = dict(choices or {})
    validate_config(cfg)
    check_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    data = instantiate(cfg.data)
    data.check()
    pe_cfg = {name: entry for name, entry in (cfg.get("pe") or {}).items()
              if _optional_pe(entry, name)}
    pes = {name: instantiate(entry.compute) for name, entry in pe_cfg.items()}
    local = _optional(cfg.get("local"), "local")
    attention = _optional(cfg.get("attention"), "attention")
    trainer = instantiate(cfg.trainer)
    logger = instantiate(cfg.logger) if cfg.get("logger") else None

    seed_everything(cfg.seed)
    spec = data.load(Path(cfg.cache_dir))
    if local is not None:
        check_compatibility(local, spec, choices.get("local", "?"))
    data.setup(list(pes.values()), Path(cfg.cache_dir))
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

    resolved = OmegaConf.to_container(cfg, resolve=True)
    if logger is not None:
        logger.start(run_dir, resolved)
    results = trainer.fit(model, data, run_dir, seed=cfg.seed, logger=logger)
    results.update({
        "dataset": data.spec.name, "num_params": count_parameters(model), "seed": cfg.seed,
        "duration_s": time.time() - t_start, "choices": choices, "model_repr": repr(model),
        "hardware": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                     "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "config": resolved,
    })
    atomic_write_json(results, run_dir / RESULTS)
    if logger is not None:
        logger.finish(results)
    return results
