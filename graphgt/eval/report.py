"""Aggregate finished runs the OGB way.

Runs are grouped by their resolved config with the seed (and paths) removed; each group reports
the mean and the **unbiased** (n-1) standard deviation of the test score at the best validation
epoch, the same for the best validation score, #params, #seeds, the mean epoch time and hardware
(as OGB leaderboard submissions do).  Output: a markdown table (stdout or ``--out``) and JSON
(``--json``).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import statistics
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

IGNORED_KEYS = {"seed", "cache_dir"}


def _matches(patterns: Iterable[str]) -> List[Path]:
    """The paths the given directories / glob patterns name."""
    out: List[Path] = []
    for pattern in patterns:
        out += [Path(m) for m in glob.glob(pattern, recursive=True) or ([pattern] if Path(pattern).exists() else [])]
    return out


def find_results(patterns: Iterable[str]) -> List[Path]:
    """Every ``results.json`` in or below the given directories / glob patterns (sorted, unique)."""
    found = set()
    for p in _matches(patterns):
        if p.is_file() and p.name == "results.json":
            found.add(p.resolve())
        elif p.is_dir():
            found.update(q.resolve() for q in p.rglob("results.json"))
    return sorted(found)


#: what marks a directory as a run's: Hydra's log, graphgt's lock, config record or checkpoint
RUN_MARKERS = ("cli.log", ".lock", ".hydra", "last.pt", "error.json", "results.json")
REQUIRED = ("metric", "best_val", "test_at_best_val", "best_epoch")


def read_result(path: Path) -> Dict[str, Any]:
    """One ``results.json``; a ValueError naming the file and what is wrong when it cannot be used."""
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot be read ({e})") from None
    if not isinstance(result, dict):
        raise ValueError("does not hold a JSON object")
    missing = [k for k in REQUIRED if k not in result]
    if missing:
        raise ValueError(f"lacks {', '.join(missing)}")
    return result


def find_unfinished(patterns: Iterable[str]) -> Dict[str, List[Path]]:
    """Run directories below ``patterns`` without ``results.json``: ``failed`` (they hold the
    ``error.json`` graphgt writes when a run fails) and ``unfinished`` (killed, or still running)."""
    dirs = {q.parent.resolve() for p in _matches(patterns) if p.is_dir() for marker in RUN_MARKERS
            for q in p.rglob(marker)}
    out: Dict[str, List[Path]] = {"failed": [], "unfinished": []}
    for d in sorted(dirs):
        if (d / "results.json").exists() or d.name == ".hydra" or any(parent.name == ".hydra" for parent in d.parents):
            continue
        out["failed" if (d / "error.json").exists() else "unfinished"].append(d)
    return out


def _strip(config: Dict[str, Any]) -> Dict[str, Any]:
    out = {k: v for k, v in config.items() if k not in IGNORED_KEYS}
    data = dict(out.get("data") or {})
    data.pop("root", None)
    out["data"] = data
    return out


def mean_std(values: List[float]) -> tuple[float, float]:
    """Mean and unbiased (n-1) standard deviation; std is NaN for a single value."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else float("nan"))


def label_of(result: Dict[str, Any]) -> str:
    c = result.get("choices") or {}
    parts = [c.get("experiment")] if c.get("experiment") not in (None, "null") else []
    parts += [f"{g}={c[g]}" for g in ("data", "model", "local", "attention", "pe") if g in c]
    return " ".join(p for p in parts if p) or result.get("dataset", "run")


def aggregate(paths: List[Path], skipped: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Rows of mean ± std per config group; a ``results.json`` that cannot be used is named in
    ``skipped`` (``"<file>: <why>"``) and left out, instead of aborting the whole report."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for path in paths:
        try:
            result = read_result(path)
        except ValueError as e:
            if skipped is None:
                raise ValueError(f"{path}: {e}") from None
            skipped.append(f"{path}: {e}")
            continue
        result["_path"] = str(path.parent)
        key = json.dumps(_strip(result.get("config", {})), sort_keys=True, default=str)
        groups.setdefault(key, []).append(result)
    rows = []
    for runs in groups.values():
        runs.sort(key=lambda r: r.get("seed", 0))
        test_mean, test_std = mean_std([r["test_at_best_val"] for r in runs])
        val_mean, val_std = mean_std([r["best_val"] for r in runs])
        rows.append({
            "label": label_of(runs[0]), "dataset": runs[0].get("dataset"), "metric": runs[0]["metric"],
            "test_mean": test_mean, "test_std": test_std, "val_mean": val_mean, "val_std": val_std,
            "num_seeds": len(runs), "seeds": [r.get("seed") for r in runs], "num_params": runs[0].get("num_params"),
            "epoch_time_s": statistics.fmean(r.get("epoch_time_s", float("nan")) for r in runs),
            "best_epoch_mean": statistics.fmean(r["best_epoch"] for r in runs),
            "hardware": (runs[0].get("hardware") or {}).get("processor"),
            "runs": [r["_path"] for r in runs],
        })
    rows.sort(key=lambda r: (str(r["dataset"]), r["label"]))
    return rows


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}" if not math.isnan(std) else f"{mean:.4f}"


def markdown(rows: List[Dict[str, Any]]) -> str:
    lines = ["| model | dataset | metric | test (at best val) | best val | seeds | #params | s/epoch |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['dataset']} | {r['metric']} | {_fmt(r['test_mean'], r['test_std'])} | "
                     f"{_fmt(r['val_mean'], r['val_std'])} | {r['num_seeds']} | {r['num_params']:,} | "
                     f"{r['epoch_time_s']:.3f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="graphgt report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run directories, sweep directories or glob patterns")
    parser.add_argument("--json", type=Path, help="also write the aggregated rows as JSON to this file")
    parser.add_argument("--out", type=Path, help="write the markdown table to this file (default: stdout)")
    args = parser.parse_args(argv)
    paths = find_results(args.paths)
    unfinished = find_unfinished(args.paths)
    if not paths and not any(unfinished.values()):
        parser.exit(2, f"graphgt report: error: no results.json under {' '.join(args.paths)}\n")
    skipped: List[str] = []
    rows = aggregate(paths, skipped)
    table = markdown(rows)
    notes = [f"skipped {s}" for s in skipped]
    for d in unfinished["failed"]:
        try:
            error = json.loads((d / "error.json").read_text())
            why = f"{error.get('error')} (exit {error.get('exit_code')}): {' '.join(str(error.get('message')).split())[:300]}"
        except (OSError, ValueError, AttributeError):
            why = "error.json cannot be read"
        notes.append(f"failed trial {d}: {why}")
    notes += [f"unfinished trial {d}: no results.json (killed, still running, or resumable with "
              "trainer.resume=auto)" for d in unfinished["unfinished"]]
    if notes:
        table += "\n\n" + "\n".join(f"- {n}" for n in notes)
    if args.out:
        args.out.write_text(table + "\n")
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
