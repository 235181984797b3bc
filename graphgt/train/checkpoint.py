"""Checkpoints: what they hold, how they are written and read back, and where a resume starts.

A checkpoint (``last.pt`` after every epoch and on preemption, ``best.pt`` on every validation
improvement) is one ``torch.save`` dict, written atomically by rank 0 (temporary file, then
rename: a crash while writing leaves the previous file intact):

* ``format`` / ``version``: ``"graphgt-checkpoint"`` / :data:`VERSION`;
* ``model``: the model's ``state_dict`` (buffers included, e.g. the codebook's centroids);
* ``optimizer``, ``scheduler``: their ``state_dict`` (``None`` without scheduler);
* ``position``: ``{"epoch": e, "batch": k}``: epochs before ``e`` are trained, evaluated and
  logged; ``k`` batches of epoch ``e`` are trained (the loaders skip them on resume);
* ``best``: the best validation score so far, its epoch and its test score;
* ``history``: the epoch times, the last training loss and the early-stopping state (``es_score``,
  the last value that improved by more than ``min_delta``; ``es_wait``, the epochs since;
  ``early_stopped``), so a resumed run stops at the same epoch;
* ``partial``: per rank, the running sums of the epoch in progress (loss, label count, the
  predictions for the epoch's training metric), so a mid-epoch resume reports the same numbers;
* ``rng``: per rank, the Python, NumPy, torch CPU and CUDA generator states;
* ``world_size``, ``config`` (the resolved run config, to refuse an incompatible resume) and
  ``torch`` (the version that wrote it).

Reading refuses, with a message that says what differs and what to do, a file that is not a
readable checkpoint, a run config that differs in keys that matter, and parameters whose names or
shapes do not match the model.
"""
from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from graphgt.errors import CheckpointError
from graphgt.io import atomic_save

FORMAT = "graphgt-checkpoint"
VERSION = 1
LAST, BEST = "last.pt", "best.pt"

#: config keys that may change between a run and its resume (a dotted prefix matches the subtree)
RESUMABLE_CHANGES = ("trainer.resume", "trainer.progress", "trainer.distributed", "trainer.device",
                     "trainer.compile", "data.num_workers", "data.prefetch_factor", "data.placement", "cache_dir",
                     "logger")

#: config keys added after checkpoints were first written, with the value that means "as before": a
#: checkpoint whose config lacks one resumes as if it held this value (a run started before the key
#: existed keeps resuming); any other value is a difference like every other
ADDED_KEYS: Dict[str, Any] = {"trainer.early_stopping": None, "trainer.early_stopping_min_delta": 0.0}


# ------------------------------------------------------------------------------------------ RNG
def capture_rng() -> Dict[str, Any]:
    """This process's generator states (Python, NumPy's global, torch CPU and every CUDA device)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(state: Mapping[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


# ------------------------------------------------------------------------------------ save / load
def save_checkpoint(state: Dict[str, Any], path: Path) -> None:
    """Write ``state`` (see the module docstring) atomically, stamped with the format and version."""
    atomic_save({"format": FORMAT, "version": VERSION, "torch": str(torch.__version__), **state}, Path(path))


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors only, ``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint '{path}' cannot be read ({type(e).__name__}: {first}): it is truncated or corrupt "
            f"(graphgt writes checkpoints atomically, so it was damaged or copied after writing). The run cannot "
            f"continue from it: resume from an intact copy with trainer.resume=<path of a {LAST}>, or start a "
            "new run in a new hydra.run.dir") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a graphgt checkpoint (no format='{FORMAT}' entry); "
                              "trainer.resume needs a last.pt written by graphgt train")
    if state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint '{path}' has format version {state.get('version')}, this graphgt "
                              f"reads version {VERSION}")
    return state


def require_resumable(state: Mapping[str, Any], path: Path) -> None:
    """Refuse a checkpoint without a training position (``best.pt`` holds the weights only)."""
    if "position" not in state or "optimizer" not in state:
        raise CheckpointError(f"checkpoint '{path}' holds model weights only (a {BEST}); a run continues from "
                              f"its {LAST} (trainer.resume=auto in the same hydra.run.dir, or "
                              f"trainer.resume=<run dir>/{LAST})")


# ------------------------------------------------------------------------------------- checks
def _flatten(tree: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    if isinstance(tree, Mapping) and tree:
        for k, v in tree.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, tree


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    """``key: saved -> current`` for every key that differs and may not change on resume."""
    a, b = dict(_flatten(saved)), dict(_flatten(current))
    for key, default in ADDED_KEYS.items():
        if key in b and key not in a:
            a[key] = default
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == p or key.startswith(p + ".") for p in RESUMABLE_CHANGES):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            out.append(f"{key}: {a.get(key, '<absent>')!r} in the checkpoint, {b.get(key, '<absent>')!r} now")
    return out


def format_differences(diff: List[str], limit: int = 20) -> str:
    """The first ``limit`` differences, one per line (for an error message)."""
    more = f"\n  ... and {len(diff) - limit} more" if len(diff) > limit else ""
    return "\n  ".join(diff[:limit]) + more


def check_config(state: Mapping[str, Any], current: Optional[Mapping[str, Any]], path: Path) -> None:
    """Refuse to resume a run whose config differs from the checkpoint's in keys that matter."""
    saved = state.get("config")
    if saved is None or current is None:
        return
    diff = config_differences(saved, current)
    if diff:
        raise CheckpointError(f"checkpoint '{path}' belongs to a run with a different config:\n  "
                              f"{format_differences(diff)}\n"
                              "resume with the run's own settings (its .hydra/overrides.yaml), or start a new "
                              "run without trainer.resume")


def load_model_state(model: nn.Module, state: Mapping[str, Any], path: Path) -> None:
    """``model.load_state_dict`` with a message listing missing, unexpected and mis-shaped entries."""
    own = model.state_dict()
    saved = state["model"]
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [f"{k}: {tuple(saved[k].shape)} in the checkpoint, {tuple(v.shape)} in the model"
              for k, v in own.items() if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        lines = ([f"shape of {s}" for s in shapes[:10]] + [f"missing from the checkpoint: {k}" for k in missing[:10]]
                 + [f"not in the model: {k}" for k in unexpected[:10]])
        raise CheckpointError(f"checkpoint '{path}' does not fit the model:\n  " + "\n  ".join(lines)
                              + "\nit was written for another model configuration")
    model.load_state_dict(saved)


# ------------------------------------------------------------------------------------ resume
def finished(run_dir: Path) -> bool:
    return (Path(run_dir) / "results.json").is_file()


#: ``trainer.resume`` values besides a path
RESUME_MODES = ("auto", "latest")


def find_resume(resume: Optional[str], run_dir: Path,
                current: Optional[Mapping[str, Any]] = None) -> Optional[Path]:
    """The checkpoint a run with ``trainer.resume=resume`` continues from (``None``: a new run).

    * ``None``: never resume.
    * ``auto``: ``<run_dir>/last.pt`` if it exists (the same ``hydra.run.dir`` again: a requeued
      Slurm job, a re-run after a kill); otherwise ``None``, a new run in ``run_dir``.  It never
      continues another directory.
    * ``latest``: the newest unfinished run (``last.pt`` without ``results.json``) beside ``run_dir``
      in the runs folder (``runs/<date>/<time>`` or ``multirun/<date>/<time>/<job>``: searched two
      levels up) whose config matches ``current``, else ``None``.  For resubmitted sweeps whose
      run directories carry a new time stamp; the caller says which run it continues.
    * a path: that checkpoint file, or ``<dir>/last.pt``; it must exist.
    """
    run_dir = Path(run_dir)
    if resume is None:
        return None
    if resume not in RESUME_MODES:
        path = Path(resume)
        path = path / LAST if path.is_dir() else path
        if not path.is_file():
            raise CheckpointError(f"trainer.resume={resume}: no checkpoint at '{path}' (give a run directory "
                                  f"holding {LAST}, a checkpoint file, 'auto' or 'latest')")
        return path
    if (run_dir / LAST).is_file():
        return run_dir / LAST
    if resume == "auto":
        return None
    root = run_dir.parent.parent
    candidates = []
    for path in root.glob(f"*/*/{LAST}"):
        if path.parent == run_dir or finished(path.parent):
            continue
        try:
            saved = load_checkpoint(path).get("config")
        except CheckpointError:
            continue
        if current is None or (saved is not None and not config_differences(saved, current)):
            candidates.append(path)
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None
