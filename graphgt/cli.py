"""The ``graphgt`` command line.

``graphgt train <hydra overrides>``   train one model (``--multirun`` for sweeps and seeds)
``graphgt report <dirs or globs>``    aggregate finished runs the OGB way (mean ± unbiased std)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

# Large CPU tensors (the activations of a sampled batch of ~100k nodes are >100 MB each) are
# fresh mmaps that the kernel faults in 4 KiB at a time: ~35k page faults per tensor, which cost
# ~40% of a GraphSAGE step on ogbn-products-sized batches.  PyTorch backs allocations with
# transparent huge pages (2 MiB) when this is set before its first allocation; set it to 0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

CONFIG_DIR = os.environ.get("GRAPHGT_CONFIG_DIR", str(Path(__file__).resolve().parents[1] / "configs"))

USAGE = """usage: graphgt <command> [args]

commands:
  train  [overrides...]     train a model, e.g. graphgt train data=cora local=gcn attention=none
                            (graphgt train --help lists the config groups and their options)
  report DIR|GLOB [...]     aggregate results.json files: mean and unbiased std of the test score
                            at the best validation epoch, as a markdown table (--json FILE too)
"""


def _fail(message: str, code: int = 2) -> None:
    print(f"graphgt: error: {message}", file=sys.stderr)
    sys.exit(code)


def _exit_on(error: BaseException) -> None:
    """The one place where graphgt's errors become a message and an exit status (no traceback)."""
    from graphgt.errors import GraphGTError, Preempted

    if isinstance(error, Preempted):
        print(f"graphgt: {error}; continue with the same command plus trainer.resume=auto", file=sys.stderr)
        sys.exit(error.exit_code)
    if isinstance(error, GraphGTError):
        _fail(str(error), error.exit_code)
    raise error


#: files a run directory may hold before graphgt accepted a run there (Hydra's log, the lock, a failure record)
_FRESH = {"cli.log", ".lock", "error.json"}
#: the failed trials of this process's sweep: (run dir, exit status, message)
_FAILED: List[tuple] = []
_TRIALS = [0]


def _record_failure(error: BaseException, requested: Path, code: int) -> None:
    """Write ``error.json`` (what failed, the exit status, the message) into the run's directory: the
    directory the run trained in (``error.graphgt_run_dir``, set once graphgt accepted the run), or
    the requested one when it holds no other run's files; never into another run's directory."""
    import traceback

    from graphgt.errors import GraphGTError, RunDirLocked

    if isinstance(error, RunDirLocked):
        return
    target = getattr(error, "graphgt_run_dir", None)
    run_dir = Path(target) if target else requested
    if target is None and run_dir.exists() and not {p.name for p in run_dir.iterdir()} <= _FRESH:
        return
    record = {"error": type(error).__name__, "exit_code": code, "message": str(error)}
    if not isinstance(error, GraphGTError):
        record["traceback"] = traceback.format_exc()
    try:
        from graphgt.io import atomic_write_json

        atomic_write_json(record, run_dir / "error.json")
    except Exception:  # noqa: BLE001 - recording a failure must not hide the failure
        pass


def _hydra_train() -> Optional[float]:
    import graphgt.config  # noqa: F401  (registers the config resolvers before Hydra composes)
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
    def task(cfg: DictConfig) -> Optional[float]:
        from graphgt.app import run as run_training
        from graphgt.errors import GraphGTError, Preempted

        hc = HydraConfig.get()
        sweep = hc.mode == RunMode.MULTIRUN
        output_dir = Path(hc.runtime.output_dir)
        record = {"config.yaml": cfg, "hydra.yaml": OmegaConf.create({"hydra": hc}),
                  "overrides.yaml": OmegaConf.create(list(hc.overrides.task))}
        _TRIALS[0] += 1
        try:
            results = run_training(cfg, output_dir, choices=hc.runtime.choices, record=record)
        except GraphGTError as e:
            if not isinstance(e, Preempted):
                _record_failure(e, output_dir, e.exit_code)
            if not sweep or isinstance(e, Preempted):
                _exit_on(e)
            # one failed trial must not end the sweep: say so, record it, and go on with the next
            print(f"graphgt: error: trial {output_dir}: {e}", file=sys.stderr)
            _FAILED.append((str(output_dir), e.exit_code, str(e)))
            return None
        except Exception as e:
            _record_failure(e, output_dir, 1)
            raise
        if os.environ.get("RANK", "0") != "0":
            return results["test_at_best_val"]
        print(f"{results['dataset']}: best val {results['metric']} {results['best_val']:.4f} at epoch "
              f"{results['best_epoch']}, test {results['test_at_best_val']:.4f} "
              f"({results['num_params']} params, {results['duration_s']:.1f} s) -> {results.get('run_dir', output_dir)}")
        return results["test_at_best_val"]

    value = task()
    if _FAILED:
        listed = "\n  ".join(f"{d} (exit {c}): {' '.join(m.split())[:300]}" for d, c, m in _FAILED)
        print(f"graphgt: {len(_FAILED)} of {_TRIALS[0]} trials failed (each holds an error.json; "
              f"graphgt report lists them):\n  {listed}", file=sys.stderr)
        sys.exit(max(c for _, c, _ in _FAILED))
    return value


def _check_run_dir_writable(argv: List[str]) -> None:
    """Hydra creates ``hydra.run.dir`` (for its log) before graphgt runs: refuse one that cannot be
    created or written, with a message, before Hydra fails on it with a traceback."""
    for item in argv:
        for key in ("hydra.run.dir=", "hydra.sweep.dir="):
            if item.startswith(key):
                path = Path(item[len(key):])
                existing = next((p for p in [path, *path.parents] if p.exists()), None)
                if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK)):
                    _fail(f"{key}{path} cannot be written ('{existing}' is "
                          f"{'not a folder' if not existing.is_dir() else 'not writable'}); choose a folder you "
                          "can write to")


def _torchrun_overrides(argv: List[str]) -> List[str]:
    """Under torchrun (``WORLD_SIZE > 1``) every rank runs this CLI: make them agree on one run dir.

    The default ``runs/${graphgt_now:...}`` is resolved per process; the ranks agree on one clock
    through torchrun's agent store (``compare_set``: the first rank to arrive sets the time), so
    it resolves identically everywhere.  Ranks > 0 write no ``.hydra/`` copy and no log file.
    """
    from graphgt.train.distributed import env_world_size

    if env_world_size() <= 1:
        return argv
    import datetime

    from graphgt.config.run_stamp import set_run_stamp

    fixed = any(a.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for a in argv)
    if not fixed:
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
            _fail("with several processes outside torchrun, pass hydra.run.dir=DIR (the same on every rank) so "
                  "that all ranks write to one run directory")
        from torch.distributed import TCPStore

        store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         timeout=datetime.timedelta(seconds=300))
        mine = datetime.datetime.now().isoformat()
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "run")
        agreed = store.compare_set(f"graphgt/{run_id}/now", "", mine).decode()
        set_run_stamp(datetime.datetime.fromisoformat(agreed))
    if os.environ.get("RANK", "0") != "0":
        argv = argv + ["hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    return argv


def train(argv: List[str]) -> None:
    # Hydra would write .hydra/ into the run dir before graphgt checks that the dir is new: the
    # composition root writes that record itself once the run is accepted (graphgt.app)
    _check_run_dir_writable(argv)
    argv = _torchrun_overrides(argv) + ["hydra.output_subdir=null"]
    sys.argv = ["graphgt train"] + argv
    _hydra_train()


def report(argv: List[str]) -> None:
    from graphgt.eval.report import main as report_main

    report_main(argv)


COMMANDS = {"train": train, "report": report}


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command = COMMANDS.get(argv[0])
    if command is None:
        _fail(f"unknown command '{argv[0]}'\n{USAGE}")
    try:
        command(argv[1:])
    except KeyboardInterrupt:  # Ctrl-C before training started (training itself stops cleanly, exit 130)
        print("graphgt: interrupted before training started; no checkpoint or result was written",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
