"""Aggregate finished runs the OGB way.

Runs are grouped by their resolved config without the seed, the fold of a cross-validation and
the keys that only change how a run is shown, run or resumed (:data:`DISPLAY_KEYS`); each group
reports the mean and the **unbiased** (n-1) standard deviation of the test score at the best
validation epoch over all its runs (seeds x folds), the same for the best validation score,
#params, #seeds, #folds, the mean epoch time, hardware, versions and git commit (as OGB leaderboard
submissions do).  Labels name the config keys that tell groups apart.  Output: a markdown table
(stdout or ``--out``), warnings where the table breaks the OGB protocol, JSON (``--json``) and
validation/test curves (``--plot``).

This module imports nothing but the standard library (matplotlib only for ``--plot``), so the
report starts fast.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

#: Config keys (and key prefixes) that never change a run's numbers, only how it is shown, run or
#: resumed, or where its files live: runs that differ only in them are one group. (The keys a
#: checkpoint may be resumed with, ``RESUMABLE_CHANGES`` in ``graphgt/train/checkpoint.py``, are
#: of this kind too; the report keeps its own table so that it never imports the training stack.)
DISPLAY_KEYS: Tuple[str, ...] = (
    "seed", "cache_dir", "hydra", "logger",
    "data.root", "data.store_root", "data.num_workers", "data.prefetch_factor", "data.placement",
    "trainer.progress", "trainer.checkpoint", "trainer.resume", "trainer.device", "trainer.compile",
)
#: Keys whose runs are the folds of one cross-validation (``KFoldSplit``'s fold, one split file per
#: fold, or one of a dataset's fixed splits such as WebKB's 10 geom-gcn splits, ``data.split_index``)
#: or the random splits of one protocol (``data.split.seed`` of a ``RandomSplit`` / ``PerClassSplit``,
#: or the dealing of a repeated k-fold CV): averaged into one row, counted in the folds column.
FOLD_KEYS: Tuple[str, ...] = ("data.split.fold", "data.split.path", "data.split_index", "data.split.seed")
#: The OGB protocol: at least this many seeds, numbered 0..n-1 (ogbn-papers100M: 3; OGB's rules).
OGB_SEEDS = 10
OGB_SEEDS_BY_DATASET = {"ogbn-papers100m": 3, "papers100m": 3}


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


# ------------------------------------------------------------------------------------ grouping
def flatten(config: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values; an empty mapping stays a value)."""
    out: Dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def group_keys(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The flattened config that decides a run's group: without :data:`DISPLAY_KEYS` and :data:`FOLD_KEYS`."""
    return {k: v for k, v in flatten(config).items() if not _under(k, DISPLAY_KEYS + FOLD_KEYS)}


#: the suffix a data module puts on the name of one of its fixed splits (WebKB: "[split 3]")
_FOLD_SUFFIX = re.compile(r"\[split \d+\]$")


def fold_parts(config: Mapping[str, Any]) -> Dict[str, str]:
    """The run's values of the :data:`FOLD_KEYS` it sets (``{"data.split.fold": "3", ...}``)."""
    flat = flatten(config)
    return {k: _show(flat[k]) for k in FOLD_KEYS if flat.get(k) is not None}


def fold_name(parts: Mapping[str, str], keys: Optional[Iterable[str]] = None) -> Optional[str]:
    """A fold's name from its :func:`fold_parts` (``data.split.fold=3``; several joined by spaces), or
    None; ``keys``: only these fold keys (a row names the ones that vary between its runs)."""
    return " ".join(f"{k}={parts[k]}" for k in FOLD_KEYS if k in parts and (keys is None or k in keys)) or None


def fold_of(config: Mapping[str, Any]) -> Optional[str]:
    """The run's cross-validation fold or random split (``data.split.fold=3``, ``data.split.path=f3.txt``,
    ``data.split_index=3``, ``data.split.seed=3``), or None."""
    return fold_name(fold_parts(config))


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def mean_std(values: List[float]) -> tuple[float, float]:
    """Mean and unbiased (n-1) standard deviation; std is NaN for a single value."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else float("nan"))


def label_of(result: Dict[str, Any]) -> str:
    """The run's preset and selected groups, e.g. ``cora-gcn data=cora local=gcn``."""
    c = result.get("choices") or {}
    parts = [c.get("experiment")] if c.get("experiment") not in (None, "null") else []
    parts += [f"{g}={c[g]}" for g in ("data", "model", "local", "attention", "pe") if g in c]
    return " ".join(p for p in parts if p) or result.get("dataset", "run")


_ABSENT = "(unset)"


def overridden_keys(run_dir: Path) -> List[str]:
    """The keys the run's command line set (``<run>/.hydra/overrides.yaml``; none when absent)."""
    try:
        lines = (Path(run_dir) / ".hydra" / "overrides.yaml").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for line in lines:
        if line.startswith("- ") and "=" in line:
            out.append(line[2:].strip().strip("'\"").split("=", 1)[0].lstrip("+~"))
    return out


def _distinguish(groups: List[Dict[str, Any]]) -> List[str]:
    """A label per group: its preset and groups, plus ``key=value`` for every config key whose value
    differs between the groups of that same preset and groups (``model.hidden=16`` vs ``=32``).

    Keys that vary together (``model.hidden`` and a ``${model.hidden}`` interpolation elsewhere) are
    named once: by the key(s) the command lines set, else by the shortest key."""
    bases = [label_of(g["runs"][0]) for g in groups]
    labels = list(bases)
    for base in set(bases):
        members = [i for i, b in enumerate(bases) if b == base]
        if len(members) < 2:
            continue
        keys = sorted({k for i in members for k in groups[i]["keys"]})
        by_values: Dict[Tuple[str, ...], List[str]] = {}
        for k in keys:
            values = tuple(_show(groups[i]["keys"].get(k, _ABSENT)) for i in members)
            if len(set(values)) > 1:
                by_values.setdefault(values, []).append(k)
        typed = {k for i in members for r in groups[i]["runs"] for k in overridden_keys(Path(r["_path"]))}
        shown: List[str] = []
        for together in by_values.values():
            shown += [k for k in together if k in typed] or [min(together, key=lambda k: (k.count("."), len(k), k))]
        shown.sort()
        for i in members:
            extra = " ".join(f"{k}={_show(groups[i]['keys'].get(k, _ABSENT))}" for k in shown)
            labels[i] = f"{base} {extra}".strip()
    return labels


def _hardware(result: Mapping[str, Any]) -> str:
    hw = result.get("hardware") or {}
    if hw.get("cuda"):
        return str(hw["cuda"])
    cpu = hw.get("processor") or "?"
    threads = hw.get("threads")
    return f"{cpu} ({threads} thread{'s' if threads != 1 else ''})" if threads else str(cpu)


#: how the versions column names each package
_VERSION_NAMES = (("graphgt", "graphgt"), ("torch", "torch"), ("torch_geometric", "PyG"), ("ogb", "ogb"))


def _versions(result: Mapping[str, Any]) -> str:
    v = dict(result.get("versions") or {})
    if not v and (result.get("hardware") or {}).get("torch"):  # results written before versions were
        v = {"torch": result["hardware"]["torch"]}
    return " ".join(f"{shown} {v[key]}" for key, shown in _VERSION_NAMES if v.get(key)) or "?"


def _commit(result: Mapping[str, Any]) -> str:
    if "git" not in result:
        return "?"  # written before graphgt recorded it
    git = result.get("git")
    if not git or not git.get("commit"):
        return "-"  # graphgt was not imported from a git checkout
    return str(git["commit"])[:10] + ("+dirty" if git.get("dirty") else "")


def _distinct(values: Iterable[str]) -> str:
    return ", ".join(dict.fromkeys(values))


def min_seeds(dataset: Any) -> int:
    """The seeds the OGB protocol asks for on ``dataset`` (10; ogbn-papers100M: 3)."""
    return OGB_SEEDS_BY_DATASET.get(str(dataset).lower(), OGB_SEEDS)


def protocol_warnings(row: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> List[str]:
    """Where a row breaks the OGB protocol: fewer seeds than it asks for, seeds other than
    ``0..n-1``, the same seed and fold run twice, folds with different seeds."""
    out: List[str] = []
    seeds = row["seeds"]
    need = min_seeds(row["dataset"])
    if len(seeds) < need:
        out.append(f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}: the OGB protocol reports "
                   f"{need} (seeds 0..{need - 1})")
    if seeds != list(range(len(seeds))):
        out.append(f"seeds {_seed_list(seeds)} are not 0..{len(seeds) - 1} as the OGB protocol numbers them")
    per_fold: Dict[Optional[str], List[Any]] = {}
    for r in runs:
        per_fold.setdefault(r["_fold"], []).append(r.get("seed"))
    twice = sorted({str(s) for ss in per_fold.values() for s in ss if ss.count(s) > 1})
    if twice:
        out.append(f"seed {', '.join(twice)} ran more than once with the same config (each run counts in the mean)")
    if len({tuple(sorted(set(map(str, ss)))) for ss in per_fold.values()}) > 1:
        out.append("the folds were not run with the same seeds: "
                   + "; ".join(f"{f}: seeds {_seed_list(sorted(set(ss), key=str))}" for f, ss in per_fold.items()))
    return out


def _seed_list(seeds: Sequence[Any]) -> str:
    return ",".join(str(s) for s in seeds)


def aggregate(paths: List[Path], skipped: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Rows of mean ± std per config group; a ``results.json`` that cannot be used is named in
    ``skipped`` (``"<file>: <why>"``) and left out, instead of aborting the whole report."""
    by_key: Dict[str, Dict[str, Any]] = {}
    for path in paths:
        try:
            result = read_result(path)
        except ValueError as e:
            if skipped is None:
                raise ValueError(f"{path}: {e}") from None
            skipped.append(f"{path}: {e}")
            continue
        config = result.get("config") or {}
        result["_path"] = str(Path(path).parent)
        result["_fold_parts"] = fold_parts(config)
        result["_fold"] = fold_name(result["_fold_parts"])
        keys = group_keys(config)
        # dataset and metric too: runs of configs recorded without them must still not mix
        # (a dataset named after its fixed split, "WebKB/cornell[split 3]", is one dataset across its folds)
        if result["_fold"] and result.get("dataset") is not None:
            result["dataset"] = _FOLD_SUFFIX.sub("", str(result["dataset"]))
        key = json.dumps([keys, result.get("dataset"), result["metric"]], sort_keys=True, default=str)
        by_key.setdefault(key, {"keys": keys, "runs": []})["runs"].append(result)
    groups = list(by_key.values())
    rows = []
    for group, label in zip(groups, _distinguish(groups)):
        runs = group["runs"]
        # a fold is named by the fold keys that vary between the row's runs (a k-fold CV's constant
        # dealing seed stays out of "data.split.fold=3"); all of them when none varies
        varying = {k for k in FOLD_KEYS if len({r["_fold_parts"].get(k) for r in runs}) > 1}
        if varying:
            for r in runs:
                r["_fold"] = fold_name(r["_fold_parts"], varying)
        runs.sort(key=lambda r: (str(r["_fold"]), str(r.get("seed")), r["_path"]))
        test_mean, test_std = mean_std([r["test_at_best_val"] for r in runs])
        val_mean, val_std = mean_std([r["best_val"] for r in runs])
        seeds = sorted({r.get("seed") for r in runs}, key=lambda s: (0, s, "") if isinstance(s, int) else (1, 0, str(s)))
        folds = sorted({r["_fold"] for r in runs if r["_fold"] is not None})
        row = {
            "label": label, "dataset": runs[0].get("dataset"), "metric": runs[0]["metric"],
            "higher_is_better": bool(runs[0].get("higher_is_better", True)),
            "test_mean": test_mean, "test_std": test_std, "val_mean": val_mean, "val_std": val_std,
            "num_runs": len(runs), "num_seeds": len(seeds), "seeds": seeds,
            "num_folds": max(len(folds), 1), "folds": folds, "num_params": runs[0].get("num_params"),
            "epoch_time_s": statistics.fmean(r.get("epoch_time_s", float("nan")) for r in runs),
            "best_epoch_mean": statistics.fmean(r["best_epoch"] for r in runs),
            "hardware": _distinct(_hardware(r) for r in runs),
            "versions": _distinct(_versions(r) for r in runs),
            "commit": _distinct(_commit(r) for r in runs),
            "config": {k: group["keys"][k] for k in sorted(group["keys"])},
            "runs": [r["_path"] for r in runs],
        }
        row["warnings"] = protocol_warnings(row, runs)
        rows.append(row)
    rows.sort(key=lambda r: (str(r["dataset"]), _natural(r["label"])))
    return rows


def _natural(text: str) -> List[Any]:
    """Sort key that orders ``model.hidden=16`` before ``model.hidden=128``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text)]


# -------------------------------------------------------------------------------------- output
def _fmt(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}" if not math.isnan(std) else f"{mean:.4f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def markdown(rows: List[Dict[str, Any]]) -> str:
    """The table, one row per group (the test column says how its epoch was selected)."""
    rescored = any(r.get("selection") == "mean-test" for r in rows)
    test_col = "test (best mean-test epoch, optimistic)" if rescored else "test (at best val)"
    lines = [f"| model | dataset | metric | {test_col} | best val | seeds | folds | #params | s/epoch | "
             "hardware | versions | commit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        params = f"{r['num_params']:,}" if isinstance(r.get("num_params"), int) else "?"
        test = _fmt(r['test_mean'], r['test_std'])
        if rescored:
            test += f" (epoch {r['selected_epoch']})" if r.get("selection") == "mean-test" else " (at best val)"
        lines.append(f"| {_cell(r['label'])} | {_cell(r['dataset'])} | {r['metric']} | "
                     f"{test} | {_fmt(r['val_mean'], r['val_std'])} | "
                     f"{r['num_seeds']} | {r['num_folds']} | {params} | {r['epoch_time_s']:.3f} | "
                     f"{_cell(r['hardware'])} | {_cell(r['versions'])} | {_cell(r['commit'])} |")
    return "\n".join(lines)


def warnings_of(rows: List[Dict[str, Any]]) -> List[str]:
    """Every row's protocol warnings, as ``warning: <label> (<dataset>): <what>`` lines."""
    return [f"warning: {r['label']} ({r['dataset']}): {w}" for r in rows for w in r.get("warnings", [])]


def read_curve(run_dir: Path, metric: str) -> Dict[str, Dict[int, float]]:
    """``{"val": {epoch: value}, "test": {...}}`` from a run's ``metrics.csv`` (empty when absent)."""
    out: Dict[str, Dict[int, float]] = {"val": {}, "test": {}}
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return out
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                epoch = int(row["epoch"])
            except (KeyError, TypeError, ValueError):
                continue
            for split in out:
                try:
                    value = float(row.get(f"{split}_{metric}") or "nan")
                except ValueError:
                    continue
                if math.isfinite(value):
                    out[split][epoch] = value
    return out


def mean_curves(row: Mapping[str, Any]) -> Tuple[Dict[str, List[Tuple[int, float]]], List[str]]:
    """The row's validation and test curves, the mean over its runs per epoch, and the run
    directories that have no curve (no ``metrics.csv``: ``logger=none``)."""
    per_epoch: Dict[str, Dict[int, List[float]]] = {"val": {}, "test": {}}
    missing = []
    for run_dir in row["runs"]:
        curve = read_curve(Path(run_dir), row["metric"])
        if not curve["val"] and not curve["test"]:
            missing.append(run_dir)
        for split, points in curve.items():
            for epoch, value in points.items():
                per_epoch[split].setdefault(epoch, []).append(value)
    return ({split: [(e, statistics.fmean(v)) for e, v in sorted(points.items())] for split, points in per_epoch.items()},
            missing)


#: ``--select``: how a row picks the epoch whose test score it reports.
SELECTIONS = ("val", "mean-test")


def select_mean_test_epoch(row: Dict[str, Any]) -> Optional[str]:
    """Re-score ``row`` by Xu et al. (ICLR 2019)'s cross-validation protocol: the **one** epoch whose
    test score, averaged over the row's runs (the folds), is best; ``test_mean``/``test_std`` become
    the mean and the (n-1) standard deviation over the runs at that epoch, ``selected_epoch`` names it.

    The epoch is chosen on the test folds, so the figure is optimistic by construction (Errica et al.,
    ICLR 2020); it exists to compare with tables reported that way (GIN's 89.4 on MUTAG), never to
    select models. Only epochs that every run logged count; of tied epochs, the earliest. Returns why
    the row cannot be re-scored (a run without a per-epoch test curve in its ``metrics.csv``), or None.
    """
    curves = [read_curve(Path(d), row["metric"])["test"] for d in row["runs"]]
    bare = [d for d, c in zip(row["runs"], curves) if not c]
    if bare:
        return (f"--select mean-test needs every run's per-epoch test scores (metrics.csv, with "
                f"trainer.test_every_epoch=true and a logger other than none); missing in {', '.join(bare)}")
    common = set.intersection(*(set(c) for c in curves))
    if not common:
        return "--select mean-test: the runs have no epoch in common"
    sign = 1.0 if row.get("higher_is_better", True) else -1.0
    epoch = max(sorted(common), key=lambda e: sign * statistics.fmean(c[e] for c in curves))
    row["test_mean"], row["test_std"] = mean_std([c[epoch] for c in curves])
    row["selected_epoch"] = epoch
    row["selection"] = "mean-test"
    return None


PLOT_SUFFIXES = (".png", ".pdf", ".svg")


class PlotError(Exception):
    """``--plot`` cannot draw: matplotlib missing, a bad file name, no curves."""


def plot(rows: List[Dict[str, Any]], path: Path) -> List[str]:
    """Validation (left) and test (right) curves per group, the mean over its runs, into ``path``;
    returns notes on runs without ``metrics.csv``. :class:`PlotError` when it cannot draw."""
    path = Path(path)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise PlotError(f"--plot {path}: the file type is chosen by its suffix, one of {', '.join(PLOT_SUFFIXES)}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise PlotError("--plot needs matplotlib, which is not installed: pip install 'graphgt[plot]' "
                        "(or pip install matplotlib)") from None
    notes: List[str] = []
    curves = []
    for r in rows:
        c, missing = mean_curves(r)
        notes += [f"no metrics.csv in {d} (logger=none?): not in the plot" for d in missing]
        if c["val"] or c["test"]:
            curves.append((r, c))
    if not curves:
        raise PlotError(f"--plot {path}: none of the runs has a metrics.csv with per-epoch val/test "
                        f"metrics (runs with logger=none write none)")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for r, c in curves:
        for ax, split in zip(axes, ("val", "test")):
            if c[split]:
                epochs, values = zip(*c[split])
                ax.plot(epochs, values, label=f"{r['label']} ({r['num_runs']} runs)")
    for ax, title in zip(axes, ("validation", "test")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(", ".join(dict.fromkeys(str(r["metric"]) for r, _ in curves)) + " (mean over runs)")
    axes[1].legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return notes


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="graphgt report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run directories, sweep directories or glob patterns")
    parser.add_argument("--json", type=Path, help="also write the aggregated rows as JSON to this file")
    parser.add_argument("--out", type=Path, help="write the markdown table to this file (default: stdout)")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="draw validation/test curves per group (mean over its runs, from each run's "
                             "metrics.csv) into this file; needs matplotlib (pip install 'graphgt[plot]')")
    parser.add_argument("--select", choices=SELECTIONS, default="val",
                        help="which epoch's test score a row reports: val (default) = each run's best-validation "
                             "epoch (the OGB protocol); mean-test = the one epoch with the best test score averaged "
                             "over the row's runs (Xu et al. 2019's cross-validation protocol: optimistic, for "
                             "comparing with figures reported that way only)")
    args = parser.parse_args(argv)
    paths = find_results(args.paths)
    unfinished = find_unfinished(args.paths)
    if not paths and not any(unfinished.values()):
        parser.exit(2, f"graphgt report: error: no results.json under {' '.join(args.paths)}\n")
    skipped: List[str] = []
    rows = aggregate(paths, skipped)
    unselected: List[str] = []
    if args.select == "mean-test":
        for r in rows:
            why = select_mean_test_epoch(r)
            if why:
                unselected.append(f"{r['label']} ({r['dataset']}): not re-scored, still at best val: {why}")
            else:
                r["warnings"].append(f"test score of epoch {r['selected_epoch']}, chosen on the test folds "
                                     "(--select mean-test): optimistic, not a model-selection result")
    table = markdown(rows)
    notes = warnings_of(rows) + unselected + [f"skipped {s}" for s in skipped]
    for d in unfinished["failed"]:
        try:
            error = json.loads((d / "error.json").read_text())
            why = f"{error.get('error')} (exit {error.get('exit_code')}): {' '.join(str(error.get('message')).split())[:300]}"
        except (OSError, ValueError, AttributeError):
            why = "error.json cannot be read"
        notes.append(f"failed trial {d}: {why}")
    notes += [f"unfinished trial {d}: no results.json (killed, still running, or resumable with "
              "trainer.resume=auto)" for d in unfinished["unfinished"]]
    if args.plot:
        try:
            notes += plot(rows, args.plot)
        except PlotError as e:
            parser.exit(2, f"graphgt report: error: {e}\n")
        notes.append(f"plot: {args.plot}")
    if notes:
        table += "\n\n" + "\n".join(f"- {n}" for n in notes)
    if args.out:
        args.out.write_text(table + "\n")
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
