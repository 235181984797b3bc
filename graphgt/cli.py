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


def _hydra_train() -> Optional[float]:
    import graphgt.config  # noqa: F401  (registers the config resolvers before Hydra composes)
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
    def task(cfg: DictConfig) -> Optional[float]:
        from graphgt.app import run as run_training
        from graphgt.errors import GraphGTError

        hc = HydraConfig.get()
        record = {"config.yaml": cfg, "hydra.yaml": OmegaConf.create({"hydra": hc}),
                  "overrides.yaml": OmegaConf.create(list(hc.overrides.task))}
        try:
            results = run_training(cfg, Path(hc.runtime.output_dir), choices=hc.runtime.choices, record=record)
        except GraphGTError as e:
            _exit_on(e)
        if os.environ.get("RANK", "0") != "0":
            return results["test_at_best_val"]
        print(f"{results['dataset']}: best val {results['metric']} {results['best_val']:.4f} at epoch "
              f"{results['best_epoch']}, test {results['test_at_best_val']:.4f} "
              f"({results['num_params']} params, {results['duration_s']:.1f} s) -> {hc.runtime.output_dir}")
        return results["test_at_best_val"]

    return task()


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
    command(argv[1:])


if __name__ == "__main__":
    main()
