"""``graphgt reproduce <preset>``: a published result the OGB way, end to end, resumable.

The OGB leaderboard protocol: the same configuration trained with seeds ``0..n-1`` (10 seeds; 3 for
ogbn-papers100M), each selected at its best validation epoch; the entry is the mean and the
unbiased (n-1) standard deviation of the test and validation scores over the seeds.

What it does, for ``graphgt reproduce cora-gcn data.root=../shared/data``:

1. one ``graphgt train experiment=<preset> seed=<s> hydra.run.dir=<out>/seed-<s> trainer.resume=auto
   <overrides>`` per seed, one after the other, each in its own process (the real CLI path: config
   validation, run-dir lock, checkpoints, ``error.json`` on failure). ``trainer.resume=auto`` makes
   the whole command resumable: a finished seed answers with its recorded results (and is refused
   if the configuration changed), a killed one continues from its ``last.pt``, a missing one starts.
   A seed that fails is reported and the others still run; the exit status is then 1.
2. the table (:func:`graphgt.eval.report.aggregate`): mean ± std of test and validation, #params,
   s/epoch, hardware, versions, commit, the protocol warnings, and the *published* figure read from
   the preset's ``# published:`` comment line, into ``<out>/reproduction.md`` and
   ``<out>/reproduction.json``; the validation/test curves into ``<out>/curves.png`` when matplotlib
   is installed.

SIGINT/SIGTERM stop the running seed the way ``graphgt train`` stops (a mid-epoch ``last.pt``); the
same command then continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from graphgt.eval import report
from graphgt.io import atomic_write_json, atomic_write_text

#: the preset comment line that names the published figure (shown beside the reproduction)
PUBLISHED = re.compile(r"^#\s*published:\s*(?P<text>.+?)\s*$", re.IGNORECASE)


def preset_path(config_dir: Path, preset: str) -> Path:
    """``configs/experiment/<preset>.yaml`` (``graphgt reproduce`` checks the name first and suggests
    close ones)."""
    path = Path(config_dir) / "experiment" / f"{preset}.yaml"
    if not path.is_file():
        raise SystemExit(f"graphgt reproduce: error: no preset '{preset}' ({path} does not exist)")
    return path


def published(path: Path) -> Optional[str]:
    """The text of the preset's ``# published: ...`` line (``None`` when it has none)."""
    for line in Path(path).read_text().splitlines():
        m = PUBLISHED.match(line.strip())
        if m:
            return m.group("text")
    return None


def default_seeds(preset: str, preset_text: str) -> int:
    """The OGB protocol's number of seeds for the preset's dataset (10; ogbn-papers100M: 3)."""
    m = re.search(r"override\s+/data:\s*(\S+)", preset_text)
    data = m.group(1) if m else ""
    return report.min_seeds("ogbn-papers100m" if "papers100m" in f"{preset} {data}".lower() else data)


def seed_list(text: Optional[str], default: int) -> List[int]:
    """``--seeds`` as ``N`` (seeds 0..N-1) or ``a,b,c``; default: seeds ``0..default-1``."""
    if text is None:
        return list(range(default))
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise SystemExit(f"graphgt reproduce: error: --seeds {text!r} must be a count (10) or a list (0,1,2)") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise SystemExit(f"graphgt reproduce: error: --seeds {text!r} must name distinct seeds >= 0")
    return seeds


def train_command(preset: str, seed: int, run_dir: Path, overrides: Sequence[str]) -> List[str]:
    """The ``graphgt train`` process of one seed."""
    return [sys.executable, "-c", "from graphgt.cli import main; main()", "train", f"experiment={preset}",
            f"seed={seed}", f"hydra.run.dir={run_dir}", "trainer.resume=auto", *overrides]


def run_seed(command: List[str]) -> int:
    """Run one seed's process; SIGINT/SIGTERM are passed on to it (it checkpoints and exits)."""
    child = subprocess.Popen(command)
    forwarded: List[int] = []

    def forward(signum, _frame):
        forwarded.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if forwarded:
        raise KeyboardInterrupt(code)
    return code


def table(rows: List[Dict[str, Any]], published_text: Optional[str], preset: str, wall_s: float,
          failed: List[int]) -> str:
    lines = [f"# Reproduction of `{preset}`", "",
             f"Published: {published_text or '(the preset names no published figure)'}", "",
             report.markdown(rows), ""]
    lines += [f"- {w}" for w in report.warnings_of(rows)]
    lines += [f"- seed {s} failed: see its error.json" for s in failed]
    lines.append(f"- wall time of this command: {wall_s:.1f} s")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None, config_dir: Optional[str] = None) -> None:
    parser = argparse.ArgumentParser(prog="graphgt reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", help="a configs/experiment preset, e.g. cora-gcn")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides added to every seed (e.g. data.root=...)")
    parser.add_argument("--seeds", help="N (seeds 0..N-1) or a list 0,1,2; default: 10 (3 for ogbn-papers100M)")
    parser.add_argument("--out", type=Path, help="output folder (default: reproductions/<preset>)")
    args = parser.parse_intermixed_args(argv)  # overrides may follow --seeds/--out
    config_dir = Path(config_dir or os.environ.get("GRAPHGT_CONFIG_DIR", Path(__file__).resolve().parents[1] / "configs"))
    path = preset_path(config_dir, args.preset)
    bad = [o for o in args.overrides if o.split("=", 1)[0].lstrip("+~") in ("seed", "hydra.run.dir", "experiment")]
    if bad or any("=" not in o for o in args.overrides):
        raise SystemExit(f"graphgt reproduce: error: overrides must be key=value and not set seed, experiment or "
                         f"hydra.run.dir (reproduce sets them per seed): {' '.join(bad or args.overrides)}")
    seeds = seed_list(args.seeds, default_seeds(args.preset, path.read_text()))
    out = (args.out or Path("reproductions") / args.preset).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    failed: List[int] = []
    for seed in seeds:
        run_dir = out / f"seed-{seed}"
        print(f"graphgt reproduce: {args.preset} seed {seed} ({seeds.index(seed) + 1}/{len(seeds)}) -> {run_dir}",
              file=sys.stderr, flush=True)
        try:
            code = run_seed(train_command(args.preset, seed, run_dir, args.overrides))
        except KeyboardInterrupt as e:
            code = e.args[0] if e.args else 130
            print(f"graphgt reproduce: stopped during seed {seed}; run the same command again to continue "
                  f"(finished seeds are kept, seed {seed} resumes from its last.pt)", file=sys.stderr)
            sys.exit(code if isinstance(code, int) and code else 130)
        if code != 0:
            failed.append(seed)
            print(f"graphgt reproduce: seed {seed} failed (exit {code}); going on with the next seed", file=sys.stderr)
    wall = time.perf_counter() - t0
    paths = [out / f"seed-{s}" / "results.json" for s in seeds if (out / f"seed-{s}" / "results.json").is_file()]
    if not paths:
        raise SystemExit(f"graphgt reproduce: error: no seed finished (see {out}/seed-*/error.json)")
    rows = report.aggregate(paths)
    text = table(rows, published(path), args.preset, wall, failed)
    try:
        report.plot(rows, out / "curves.png")
        text += f"- validation/test curves (mean over seeds): {out / 'curves.png'}\n"
    except report.PlotError as e:
        text += f"- no plot: {e}\n"
    atomic_write_text(text, out / "reproduction.md")
    atomic_write_json({"preset": args.preset, "published": published(path), "seeds": seeds, "failed_seeds": failed,
                       "wall_s": wall, "rows": rows}, out / "reproduction.json")
    print(text)
    print(f"graphgt reproduce: wrote {out / 'reproduction.md'} and {out / 'reproduction.json'}", file=sys.stderr)
    if failed:
        sys.exit(1)
