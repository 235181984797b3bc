"""Fault injection, end to end: every defect of issue 15 tried through the CLI, one table.

Each fault runs ``graphgt`` in a subprocess inside a temporary folder and checks what a user would
check: the exit status, the one-line message (never a traceback), and that nothing the user made
was lost or mixed up (earlier runs' files are hashed before and compared after; the run that
should win has its results).  Prints a markdown table (fault, exit status, message, lost) and exits
non-zero when a row is not as it should be.

    python scripts/faults.py                # all faults (a few minutes on 2 cores)
    python scripts/faults.py --only lock,report
    python scripts/faults.py --json faults.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GRAPHGT_SHARED_DATA", REPO.parent / "shared" / "data"))
TINY = ["data.num_nodes=200", "model.hidden=32", "model.layers=1", "trainer.progress=false", "pe=none"]
GRAPHS = ["data=pyg-fake", "data.dataset.num_graphs=120", "pe=none", "model.hidden=16", "model.layers=1",
          "trainer.progress=false", "trainer.max_epochs=1"]


class Row(dict):
    """fault, expected, exit, message, lost, ok"""


def env(**extra: str) -> Dict[str, str]:
    e = dict(os.environ)
    e.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"})
    e.update(extra)
    return e


def graphgt(args: Sequence[str], cwd: Path, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphgt.cli", *args], cwd=cwd, env=env(**extra),
                          capture_output=True, text=True, timeout=timeout)


def python(code: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def digest(folder: Path) -> Dict[str, str]:
    """sha256 of every file under ``folder`` (the user's work that must survive)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in ("cli.log", ".lock")}


def message(proc: subprocess.CompletedProcess) -> str:
    """The line a user reads: graphgt's error line, else the last line of stderr."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("graphgt: error:") or line.startswith("graphgt report: error"):
            return line[:160]
    return (lines[-1] if lines else proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "")[:160]


def traceback_free(proc: subprocess.CompletedProcess) -> bool:
    return "Traceback" not in proc.stderr and "Segmentation" not in proc.stderr


def lost(before: Dict[str, str], after: Dict[str, str]) -> str:
    changed = sorted(k for k in before if after.get(k) != before[k])
    return "nothing lost" if not changed else "CHANGED: " + ", ".join(changed[:4])


def sigterm_after(args: Sequence[str], cwd: Path, ready: Callable[[], bool], timeout: float = 300) -> None:
    """Start ``graphgt train ARGS`` and SIGTERM it once ``ready()`` (e.g. last.pt of epoch 2 exists)."""
    proc = subprocess.Popen([sys.executable, "-m", "graphgt.cli", "train", *args], cwd=cwd, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)


def epochs_done(run_dir: Path) -> int:
    try:
        return len((run_dir / "metrics.csv").read_text().strip().splitlines()) - 1
    except OSError:
        return 0


# ------------------------------------------------------------------------------------------ faults
def f_resume_elsewhere(tmp: Path) -> Row:
    a, b = tmp / "runs" / "A", tmp / "runs" / "B"
    args = TINY + ["trainer.max_epochs=40", "seed=5"]
    sigterm_after(args + [f"hydra.run.dir={a}"], tmp, lambda: epochs_done(a) >= 2)
    before = digest(a)
    proc = graphgt(["train", *args, f"hydra.run.dir={b}", "trainer.resume=auto"], tmp)
    ok = proc.returncode == 0 and (b / "results.json").exists() and not (a / "results.json").exists()
    return Row(fault="1. resume=auto beside another unfinished run", expected="trains in B only",
               exit=proc.returncode, message=message(proc), lost=lost(before, digest(a)), ok=ok)


def f_lock(tmp: Path) -> Row:
    run_dir = tmp / "run"
    args = ["train", *TINY, "trainer.max_epochs=8", f"hydra.run.dir={run_dir}"]
    procs = [subprocess.Popen([sys.executable, "-m", "graphgt.cli", *args], cwd=tmp, env=env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    refused = next((subprocess.CompletedProcess([], p.returncode, o, e) for p, (o, e) in zip(procs, outs)
                    if p.returncode), None)
    rows = [int(line.split(",")[0]) for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    ok = codes == [0, 2] and rows == list(range(1, 9))
    return Row(fault="2. two runs started at once into one run dir", expected="one trains, one refused (2)",
               exit=codes, message=message(refused) if refused else "", ok=ok,
               lost="nothing lost" if rows == list(range(1, 9)) else f"metrics.csv epochs {rows}")


def f_ddp_unused_edge_encoder(tmp: Path) -> Row:
    run_dir = tmp / "run"
    proc = graphgt(["train", *GRAPHS, "+data.dataset.edge_dim=2", "local=gcn", "trainer=ddp",
                    "trainer.distributed.timeout_s=60", f"hydra.run.dir={run_dir}"], tmp, timeout=400)
    return Row(fault="3. DDP, edge features, local=gcn (ignores them)", expected="trains (0)", exit=proc.returncode,
               message=message(proc), lost="nothing lost", ok=proc.returncode == 0 and (run_dir / "results.json").exists())


def f_sweep_goes_on(tmp: Path) -> Row:
    sweep = tmp / "sweep"
    proc = graphgt(["train", "--multirun", *TINY, "trainer.max_epochs=1", "seed=abc,1", f"hydra.sweep.dir={sweep}"], tmp)
    ok = (sweep / "1" / "results.json").exists() and (sweep / "0" / "error.json").exists() and proc.returncode == 2
    return Row(fault="4. a clean error in one trial of a sweep", expected="other trials run; error.json; exit 2",
               exit=proc.returncode, message=message(proc), lost="nothing lost", ok=ok and traceback_free(proc))


def f_code_execution(tmp: Path) -> Row:
    victim = tmp / "victim"
    victim.mkdir()
    proc = graphgt(["train", "+data._recursive_=false", "data=pyg-fake", "data.dataset._target_=os.rmdir",
                    f"+data.dataset.path={victim}", f"hydra.run.dir={tmp / 'run'}"], tmp)
    marker = tmp / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    split = tmp / "split.pkl"
    split.write_bytes(pickle.dumps({"train": Payload()}))
    proc2 = graphgt(["train", *TINY[1:], "trainer.max_epochs=1", "data=pyg-fake", "data.dataset.num_graphs=40",
                     "~data.split", f"+data.split={{_target_:graphgt.data.splits.IndexFileSplit,path:'{split}'}}",
                     f"hydra.run.dir={tmp / 'run2'}"], tmp)
    ok = victim.exists() and not marker.exists() and proc.returncode == 2 and proc2.returncode == 2
    return Row(fault="5. code execution from config (os.rmdir) / split file (pickle)",
               expected="refused (2), nothing executed", exit=[proc.returncode, proc2.returncode],
               message=message(proc), lost="nothing lost" if victim.exists() and not marker.exists() else "EXECUTED",
               ok=ok and traceback_free(proc) and traceback_free(proc2))


def f_corrupt_store(tmp: Path) -> Row:
    store = tmp / "store"
    build = python(f"""
        import numpy as np
        from graphgt.data.store import csr_from_edges, write_store
        rng = np.random.default_rng(0); n = 300
        src, dst = rng.integers(0, n, 2000), rng.integers(0, n, 2000)
        indptr, indices = csr_from_edges(np.r_[src, dst], np.r_[dst, src], n)
        write_store("{store}", "toy", n, indptr, indices, x=rng.standard_normal((n, 8)).astype("float32"),
                    y=rng.integers(0, 3, n), splits={{"train": np.arange(0, 200), "val": np.arange(200, 250),
                    "test": np.arange(250, 300)}}, task={{"kind": "multiclass", "num_outputs": 3, "metric": "accuracy"}})
        idx = np.load("{store}/indices.npy", mmap_mode="r+"); idx[5] = n; idx.flush()
    """, tmp)
    if build.returncode:
        return Row(fault="6. corrupt graph store", expected="StoreError (2)", exit=build.returncode,
                   message=message(build), lost="?", ok=False)
    proc = graphgt(["train", "data=store", f"data.source.path={store}", "model=mpnn", "local=sage", "attention=none",
                    "pe=none", "model.hidden=16", "trainer.max_epochs=1", "trainer.progress=false",
                    f"hydra.run.dir={tmp / 'run'}"], tmp)
    return Row(fault="6. out-of-range value in a store's indices.npy", expected="StoreError (2), no segfault",
               exit=proc.returncode, message=message(proc), lost="nothing lost",
               ok=proc.returncode == 2 and traceback_free(proc))


def f_finished_other_config(tmp: Path) -> Row:
    run_dir = tmp / "run"
    first = graphgt(["train", *TINY, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"], tmp)
    before = digest(run_dir)
    proc = graphgt(["train", *TINY, "trainer.max_epochs=1", "seed=9", "trainer.resume=auto",
                    f"hydra.run.dir={run_dir}"], tmp)
    typo = graphgt(["train", *TINY, "model.hiden=3", f"hydra.run.dir={tmp / 'typo'}"], tmp)
    ok = first.returncode == 0 and proc.returncode == 2 and not (tmp / "typo" / ".hydra").exists()
    return Row(fault="7. resume=auto on a finished run of another config; a typo's leftovers",
               expected="refused (2); no .hydra after a typo", exit=[proc.returncode, typo.returncode],
               message=message(proc), lost=lost(before, digest(run_dir)), ok=ok)


def f_best_pt(tmp: Path) -> Row:
    run_dir = tmp / "run"
    graphgt(["train", *TINY, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"], tmp)
    proc = graphgt(["train", *TINY, "trainer.max_epochs=1", f"trainer.resume={run_dir / 'best.pt'}",
                    f"hydra.run.dir={tmp / 'r2'}"], tmp)
    return Row(fault="8. trainer.resume=<best.pt>", expected="CheckpointError (2)", exit=proc.returncode,
               message=message(proc), lost="nothing lost", ok=proc.returncode == 2 and traceback_free(proc))


def f_ddp_sigterm(tmp: Path) -> Row:
    run_dir = tmp / "run"
    args = [*GRAPHS, "data.dataset.num_graphs=2000", "data.batch_size=4", "trainer.max_epochs=20", "trainer=ddp",
            f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, "-m", "graphgt.cli", "train", *args], cwd=tmp, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while epochs_done(run_dir) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    took = time.time() - t0
    return Row(fault="9. SIGTERM to the DDP launcher", expected="exit 143 within 5 s", exit=proc.returncode,
               message=f"exited {took:.1f} s after the signal", lost="nothing lost" if (run_dir / "last.pt").exists()
               else "no last.pt", ok=proc.returncode == 143 and took < 5.0)


def f_nan_eval(tmp: Path) -> Row:
    proc = python(f"""
        import copy, sys
        from graphgt.data.common import InMemoryDataModule
        original = InMemoryDataModule.val_loader
        def poisoned(self, rank=0, world_size=1):
            batch = copy.copy(next(iter(original(self, rank, world_size))))
            batch.x = batch.x.clone(); batch.x[0, 0] = float("nan")
            return [batch]
        InMemoryDataModule.val_loader = poisoned
        sys.argv = ["graphgt", "train", *{TINY!r}, "trainer.max_epochs=2", "hydra.run.dir={tmp / 'run'}"]
        from graphgt.cli import main
        main()
    """, tmp)
    ok = proc.returncode == 1 and not (tmp / "run" / "results.json").exists()
    return Row(fault="10. NaN in the validation inputs", expected="NonFiniteLossError (1), no results",
               exit=proc.returncode, message=message(proc), lost="nothing lost", ok=ok and traceback_free(proc))


def _bad(name: str, args: Sequence[str], tmp: Path, expected: int = 2, **extra: str) -> Row:
    proc = graphgt(args, tmp, **extra)
    return Row(fault=f"11. {name}", expected=f"message ({expected})", exit=proc.returncode, message=message(proc),
               lost="nothing lost", ok=proc.returncode == expected and traceback_free(proc))


def f_bad_values(tmp: Path) -> List[Row]:
    rows = [_bad("trainer.optimizer.lr=-1", ["train", *TINY, "trainer.optimizer.lr=-1", f"hydra.run.dir={tmp / 'a'}"], tmp),
            _bad("model.layers=-1", ["train", *TINY, "model.layers=-1", f"hydra.run.dir={tmp / 'b'}"], tmp)]
    (tmp / "file").write_text("x")
    rows.append(_bad("hydra.run.dir below a file", ["train", *TINY, f"hydra.run.dir={tmp / 'file' / 'run'}"], tmp))
    good = tmp / "good"
    graphgt(["train", *TINY, "trainer.max_epochs=1", f"hydra.run.dir={good}"], tmp)
    (tmp / "bad").mkdir()
    (tmp / "bad" / "results.json").write_text("{not json")
    proc = graphgt(["report", str(tmp)], tmp)
    rows.append(Row(fault="11. graphgt report with one bad results.json", expected="table + skipped file (0)",
                    exit=proc.returncode, message=next((l for l in proc.stdout.splitlines() if "skipped" in l), "")[:160],
                    lost="nothing lost", ok=proc.returncode == 0 and "skipped" in proc.stdout))
    limit = python(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        sys.argv = ["graphgt", "train", *{TINY!r}, "model.hidden=64", "trainer.max_epochs=2", "hydra.run.dir={tmp / 'fsize'}"]
        from graphgt.cli import main
        main()
    """, tmp)
    rows.append(Row(fault="11. checkpoint write over a file-size limit", expected="WriteError (1)",
                    exit=limit.returncode, message=message(limit), lost="nothing lost",
                    ok=limit.returncode == 1 and traceback_free(limit)))
    proc = subprocess.Popen([sys.executable, "-m", "graphgt.cli", "train", *TINY, f"hydra.run.dir={tmp / 'ctrlc'}"],
                            cwd=tmp, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    rows.append(Row(fault="11. Ctrl-C during start-up", expected="message (130)", exit=proc.returncode,
                    message=(err.strip().splitlines() or [""])[-1][:160], lost="nothing lost",
                    ok=proc.returncode == 130 and "Traceback" not in err))
    if SHARED.exists():
        root = tmp / "data"
        (root / "planetoid").mkdir(parents=True)
        subprocess.run(["cp", "-r", str(SHARED / "planetoid" / "Cora"), str(root / "planetoid")], check=True)
        os.system(f"chmod -R u+w {root}")
        raw = next((root / "planetoid" / "Cora" / "raw").glob("*.x"))
        raw.write_bytes(b"garbage")
        rows.append(_bad("corrupt Planetoid raw file", ["train", "data=cora", f"data.root={root}", "pe=none",
                                                        "trainer.max_epochs=1", "trainer.progress=false",
                                                        f"hydra.run.dir={tmp / 'cora'}"], tmp,
                         GRAPHGT_CACHE=str(tmp / "cache")))
    return rows


def f_torn_row_and_modes(tmp: Path) -> Row:
    run_dir = tmp / "run"
    args = TINY + ["trainer.max_epochs=4", f"hydra.run.dir={run_dir}"]
    sigterm_after(args, tmp, lambda: epochs_done(run_dir) >= 2)
    with open(run_dir / "metrics.csv", "a") as f:
        f.write("3,0.5")  # a row torn by a kill
    proc = graphgt(["train", *args, "trainer.resume=auto"], tmp)
    epochs = [line.split(",")[0] for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    modes = {name: oct((run_dir / name).stat().st_mode & 0o777) for name in ("results.json", "last.pt", "best.pt")
             if (run_dir / name).exists()}
    ok = proc.returncode == 0 and epochs == ["1", "2", "3", "4"] and set(modes.values()) <= {"0o644", "0o664"}
    return Row(fault="12. torn metrics.csv row + resume; file modes", expected="clean rows 1-4; 0644 files",
               exit=proc.returncode, message=f"epochs {epochs}, modes {sorted(set(modes.values()))}",
               lost="nothing lost" if ok else "torn row kept", ok=ok)


FAULTS: Dict[str, Callable[[Path], object]] = {
    "resume": f_resume_elsewhere, "lock": f_lock, "ddp-edges": f_ddp_unused_edge_encoder, "sweep": f_sweep_goes_on,
    "exec": f_code_execution, "store": f_corrupt_store, "finished": f_finished_other_config, "best": f_best_pt,
    "ddp-sigterm": f_ddp_sigterm, "nan": f_nan_eval, "bad": f_bad_values, "torn": f_torn_row_and_modes,
}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help=f"comma-separated subset of {','.join(FAULTS)}")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(FAULTS)
    rows: List[Row] = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"graphgt-fault-{name}-") as tmp:
            t0 = time.time()
            try:
                out = FAULTS[name](Path(tmp))
            except Exception as e:  # noqa: BLE001 - a harness failure is a failed row, not a crash
                out = Row(fault=name, expected="?", exit="-", message=f"harness error: {e}"[:160], lost="?", ok=False)
            for row in out if isinstance(out, list) else [out]:
                row["seconds"] = round(time.time() - t0, 1)
                rows.append(row)
                print(f"[{'ok' if row['ok'] else 'FAIL'}] {row['fault']}: exit {row['exit']}", file=sys.stderr, flush=True)
    print("| fault | expected | exit | message | lost | ok |\n|---|---|---|---|---|---|")
    for r in rows:
        msg = str(r["message"]).replace("|", "\\|")
        print(f"| {r['fault']} | {r['expected']} | {r['exit']} | {msg} | {r['lost']} | {'yes' if r['ok'] else 'NO'} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
