"""Train GPS with every global attention module (and without one) and LargeGT (with and without its
codebook) on one dataset under the same budget, and print the comparison table.

    python scripts/attention_study.py cora --out runs/attention-cora
    python scripts/attention_study.py products-synth --out runs/attention-products \\
        --store-root /tmp/graphgt-bench --epochs 1 --train-batches 40

Each run is one ``graphgt train`` process (``OMP_NUM_THREADS=--threads``), run ``--parallel`` at a
time; its ``results.json`` (best validation accuracy, the test accuracy at that epoch, wall time,
parameters) is collected into ``<out>/study.json`` and a markdown table.  The models differ only by
the config keys listed in ``RUNS`` (the experiment presets ``cora-gps`` / ``cora-largegt`` /
``products-synth-gps`` / ``products-synth-largegt``), so the table is a one-key ablation.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

GPS_ATTENTIONS = ["none", "performer", "expander", "topm", "codebook"]

# per dataset: (label, overrides) of every run
STUDIES: Dict[str, List[tuple]] = {
    "cora": [(f"GPS+{a}", ["experiment=cora-gps", f"attention={a}"]) for a in GPS_ATTENTIONS + ["full"]]
    + [("LargeGT (local only)", ["experiment=cora-largegt", "attention=none"]),
       ("LargeGT (local + codebook)", ["experiment=cora-largegt"])],
    "products-synth": [(f"GPS+{a}", ["experiment=products-synth-gps", f"attention={a}"]) for a in GPS_ATTENTIONS]
    + [("LargeGT (local only)", ["experiment=products-synth-largegt", "attention=none"]),
       ("LargeGT (local + codebook)", ["experiment=products-synth-largegt"])],
}
# options that keep each module's cost comparable on the sampled products-shaped batches
PRODUCTS_GPS = {"codebook": ["attention.codebook_size=512"], "topm": ["attention.m=32"],
                "expander": ["attention.expander_degree=4"]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", choices=sorted(STUDIES))
    p.add_argument("--out", required=True, help="folder for the runs and study.json")
    p.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs for every run")
    p.add_argument("--train-batches", type=int, default=None, help="trainer.limit_train_batches")
    p.add_argument("--store-root", default=None, help="data.store_root (products-synth)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--only", nargs="*", default=None, help="run only these labels")
    p.add_argument("--extra", nargs="*", default=[], help="further overrides for every run")
    p.add_argument("--gps-extra", nargs="*", default=[], help="further overrides for the GPS runs")
    p.add_argument("--largegt-extra", nargs="*", default=[], help="further overrides for the LargeGT runs")
    return p.parse_args(argv)


def overrides_for(args, label: str, base: List[str]) -> List[str]:
    out = list(base) + ["trainer.progress=false", "logger=csv"]
    if args.epochs is not None:
        out.append(f"trainer.max_epochs={args.epochs}")
    if args.train_batches is not None:
        out.append(f"trainer.limit_train_batches={args.train_batches}")
    if args.study == "products-synth":
        out += ["trainer.evaluate_test=false"]
        if args.store_root:
            out.append(f"data.store_root={args.store_root}")
        attention = next((o.split("=", 1)[1] for o in base if o.startswith("attention=")), None)
        if label.startswith("GPS") and attention:
            out += PRODUCTS_GPS.get(attention, [])
    out += list(args.gps_extra if label.startswith("GPS") else args.largegt_extra)
    return out + list(args.extra)


def run_one(args, label: str, overrides: List[str]) -> dict:
    run_dir = Path(args.out) / label.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "_")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, "-m", "graphgt.cli", "train", *overrides, f"hydra.run.dir={run_dir}"]
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (Path(args.out) / f"{run_dir.name}.log").write_text(proc.stdout + proc.stderr)
    row = {"label": label, "overrides": overrides, "returncode": proc.returncode, "wall_s": time.time() - t0}
    results = run_dir / "results.json"
    if proc.returncode == 0 and results.exists():
        r = json.loads(results.read_text())
        row.update(best_val=r.get("best_val"), test=r.get("test_at_best_val"), best_epoch=r.get("best_epoch"),
                   num_params=r.get("num_params"), duration_s=r.get("duration_s"))
    else:
        row["error"] = (proc.stderr or proc.stdout)[-2000:]
    print(f"{label:28s} val {row.get('best_val')} test {row.get('test')} ({row['wall_s']:.0f} s)", flush=True)
    return row


def table(rows: List[dict]) -> str:
    lines = ["| model | best val | test at best val | params | wall (s) |", "|---|---|---|---|---|"]
    for r in rows:
        fmt = lambda v: "—" if v is None or v != v else f"{100 * v:.1f}%"  # noqa: E731  (None / NaN: not run)
        lines.append(f"| {r['label']} | {fmt(r.get('best_val'))} | {fmt(r.get('test'))} | "
                     f"{r.get('num_params', '—')} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    runs = [(label, overrides_for(args, label, base)) for label, base in STUDIES[args.study]
            if args.only is None or label in args.only]
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        rows = list(pool.map(lambda lo: run_one(args, *lo), runs))
    study = {"study": args.study, "budget": {"epochs": args.epochs, "train_batches": args.train_batches,
                                             "threads": args.threads, "parallel": args.parallel},
             "runs": rows}
    (Path(args.out) / "study.json").write_text(json.dumps(study, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
