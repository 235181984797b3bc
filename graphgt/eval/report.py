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


def find_results(patterns: Iterable[str]) -> List[Path]:
    """Every ``results.json`` in or below the given directories / glob patterns (sorted, unique)."""
    found = set()
    for pattern in patterns:
        matches = glob.glob(pattern, recursive=True) or ([pattern] if Path(pattern).exists() else [])
        for m in matches:
            p = Path(m)
            if p.is_file() and p.name == "results.json":
                found.add(p.resolve())
            elif p.is_dir():
                found.update(q.resolve() for q in p.rglob("results.json"))
    return sorted(found)


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


def aggregate(paths: List[Path]) -> List[Dict[str, Any]]:
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for path in paths:
        result = json.loads(path.read_text())
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
    if not paths:
        parser.exit(2, f"graphgt report: error: no results.json under {' '.join(args.paths)}\n")
    rows = aggregate(paths)
    table = markdown(rows)
    if args.out:
        args.out.write_text(table + "\n")
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
