"""The ``graphgt`` command line.

``graphgt train <hydra overrides>``   train one model (``--multirun`` for sweeps and seeds)
``graphgt report <dirs or globs>``    aggregate finished runs the OGB way (mean ± unbiased std)
``graphgt eval <run dir | ckpt>``     re-evaluate a run's checkpoint with the run's own config
``graphgt presets [pattern]``         list the presets (``configs/experiment``) with their description
``graphgt show <preset> [overrides]`` print a preset's composed config
``graphgt reproduce <preset>``        the OGB protocol over seeds, resumable, as a leaderboard table

``--help``, ``train --help``, ``report``, ``presets`` and ``show`` import no torch_geometric and no
training stack (``graphgt.app``, ``train``, ``nn``, ``data``): those are imported when a run starts.
"""
from __future__ import annotations

import copy
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
  eval RUN_DIR|CKPT [split=val|test|all] [ckpt=best|last] [--json FILE]
                            re-evaluate a run's checkpoint with the run's own config: loss and
                            metric per split, beside the numbers the run recorded
  presets [PATTERN]         list the presets (configs/experiment) with their first comment line;
                            PATTERN: a glob on the name ('cora-*') or a word ('products')
  show PRESET [overrides...] [--resolve]
                            print the composed config of graphgt train experiment=PRESET ...
  reproduce PRESET [overrides...] [--seeds N] [--out DIR]
                            the OGB protocol: seeds 0..9 (3 for papers100M), each resumable, then
                            the table (mean ± std, published figure) and the curves in DIR
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


def _sweep_objective(cfg, hc) -> str:
    """The results key a sweep job returns (``objective``, validated: a validation score, never test),
    after checking that the sweeper maximises: the value is returned so that higher is better."""
    from omegaconf import OmegaConf

    from graphgt.config.validate import check_objective
    from graphgt.errors import ConfigError

    objective = check_objective(cfg.get("objective"))
    sweeper = OmegaConf.to_container(hc.sweeper, resolve=False) if hc.get("sweeper") is not None else {}
    direction = sweeper.get("direction") if isinstance(sweeper, dict) else None
    if direction is not None:
        directions = direction if isinstance(direction, (list, tuple)) else [direction]
        names = [str(getattr(d, "name", d)).split(".")[-1].lower() for d in directions]
        if names != ["maximize"]:
            raise ConfigError(f"hydra.sweeper.direction={direction}: graphgt returns one value per job, the "
                              f"validation score (objective={objective}) oriented so that higher is better "
                              "(negated for MAE/RMSE); set hydra.sweeper.direction=maximize (the configs in "
                              "configs/hparams_search do), e.g. graphgt train --multirun hparams_search=cora-gcn")
    return objective


def _objective_value(results: dict, objective: str) -> Optional[float]:
    """``results[objective]`` oriented so that higher is better (negated when the metric's lower is
    better), or None when it is not a finite number (the sweeper then records the trial as failed:
    Optuna's sweeper fails a trial whose value is None, but a NaN would abort the whole sweep)."""
    import math

    value = results.get(objective)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value) if results.get("higher_is_better", True) else -float(value)


def _hydra_train() -> Optional[float]:
    import graphgt.config  # noqa: F401  (registers the config resolvers before Hydra composes)
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig, OmegaConf, open_dict

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
            objective = _sweep_objective(cfg, hc)  # a sweep-wide setting: a bad one ends the sweep at once
        except GraphGTError as e:
            _exit_on(e)
        train_cfg = copy.deepcopy(cfg)  # the objective is the sweeper's, not the run's (resume compares configs)
        with open_dict(train_cfg):
            train_cfg.pop("objective", None)
        try:
            results = run_training(train_cfg, output_dir, choices=hc.runtime.choices, record=record)
        except GraphGTError as e:
            if not isinstance(e, Preempted):
                _record_failure(e, output_dir, e.exit_code)
            if not sweep or isinstance(e, Preempted):
                _exit_on(e)
            # one failed trial must not end the sweep: say so, record it, and go on with the next
            print(f"graphgt: error: trial {output_dir}: {e}", file=sys.stderr)
            _FAILED.append((str(output_dir), e.exit_code, str(e)))
            return None  # the Optuna sweeper records a trial that returns None as FAIL and goes on
        except Exception as e:
            _record_failure(e, output_dir, 1)
            if not sweep:
                raise
            import traceback

            traceback.print_exc()
            print(f"graphgt: error: trial {output_dir} failed ({type(e).__name__}: {e}); the sweep goes on",
                  file=sys.stderr)
            _FAILED.append((str(output_dir), 1, f"{type(e).__name__}: {e}"))
            return None
        value = _objective_value(results, objective)
        if os.environ.get("RANK", "0") != "0":
            return value
        print(f"{results['dataset']}: best val {results['metric']} {results['best_val']:.4f} at epoch "
              f"{results['best_epoch']}, test {results['test_at_best_val']:.4f} "
              f"({results['num_params']} params, {results['duration_s']:.1f} s) -> {results.get('run_dir', output_dir)}")
        if sweep:
            print(f"graphgt: objective {objective} = {results[objective]:.4f}, returned to the sweeper as "
                  + ("nothing (not a number: the trial counts as failed)" if value is None else
                     f"{value:.4f}" + ("" if results.get("higher_is_better", True) else
                                       f" ({results['metric']}: lower is better, negated so that it is maximised)")))
        return value

    try:
        value = task()
    except SystemExit:  # Hydra exits after reporting a sweeper's error (Optuna's, when every trial failed)
        if not _FAILED:
            raise
        value = None
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


def _override(argv: List[str], key: str) -> Optional[str]:
    """The value of the last ``key=value`` override in ``argv`` (also ``+key=`` / ``++key=``), unquoted."""
    value = None
    for item in argv:
        name, sep, rest = item.lstrip("+").partition("=")
        if sep and name == key:
            value = rest[1:-1] if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "'\"" else rest
    return value


def _has_optuna() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
    except (ImportError, ValueError):
        return False


#: files of a sweep's directory that a continued sweep rewrites (a copy of the earlier one is kept)
_SWEEP_RECORDS = ("multirun.yaml", "optimization_results.yaml")


def _check_sweep(argv: List[str]) -> None:
    """Check a sweep's command line before Hydra writes anything: ``objective=`` (a validation score),
    the Optuna sweeper present when a search asks for it, and the sweep's directory.

    Refuse a ``--multirun`` into an existing, non-empty ``hydra.sweep.dir`` before Hydra writes
    anything there (it would rewrite the earlier sweep's ``multirun.yaml`` and put new jobs beside
    the old ones), unless the command continues that sweep (``trainer.resume=auto|latest``: each job
    continues its own run, finished ones are kept); then the sweep's records about to be rewritten
    are kept as ``multirun.<time>.yaml`` first.  A sweep dir set in a config file rather than on the
    command line is not checked here (the default, ``multirun/<date>/<time>``, is always new);
    every job's own directory is still checked by the run itself."""
    objective = _override(argv, "objective")
    if objective is not None:  # also checked in every job (a config file may set it)
        from graphgt.config.validate import check_objective
        from graphgt.errors import ConfigError

        try:
            check_objective(None if objective == "null" else objective)
        except ConfigError as e:
            _fail(str(e))
    search = _override(argv, "hparams_search")
    if (search not in (None, "null") or _override(argv, "hydra/sweeper") == "optuna") and not _has_optuna():
        _fail(f"{'hparams_search=' + search if search not in (None, 'null') else 'hydra/sweeper=optuna'} needs "
              "Hydra's Optuna sweeper, which is not installed: pip install \"graphgt[optuna]\" "
              "(or pip install hydra-optuna-sweeper)")
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 checks (the others would find the directory it just made)
    multirun = any(a in ("-m", "--multirun") for a in argv) or search not in (None, "null") or \
        (_override(argv, "hydra.mode") or "").upper() == "MULTIRUN"
    value = _override(argv, "hydra.sweep.dir")
    if not multirun or not value:
        return
    sweep_dir = Path(value)
    if not sweep_dir.is_dir():
        return
    held = [p.name + ("/" if p.is_dir() else "") for p in sorted(  # its files first, then its jobs 0/, 1/, ...
        sweep_dir.iterdir(), key=lambda p: (p.is_dir(), int(p.name) if p.name.isdigit() else -1, p.name))]
    if not held:
        return
    resume = _override(argv, "trainer.resume")
    if resume in ("auto", "latest"):
        import datetime
        import shutil

        for name in _SWEEP_RECORDS:
            path = sweep_dir / name
            if path.is_file():
                stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d_%H-%M-%S")
                kept = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
                if not kept.exists():
                    shutil.copy2(path, kept)
                    print(f"graphgt: continuing the sweep in {sweep_dir} (trainer.resume={resume}); its earlier "
                          f"{name} is kept as {kept.name}", file=sys.stderr)
        return
    listed = ", ".join(held[:6]) + (f" and {len(held) - 6} more" if len(held) > 6 else "")
    _fail(f"hydra.sweep.dir={sweep_dir} already holds files ({listed}): a new sweep there would rewrite the "
          "earlier sweep's record (multirun.yaml, optimization_results.yaml) and mix its jobs with the earlier "
          "ones. Choose a new hydra.sweep.dir (or delete that folder yourself); or, to continue that sweep "
          "(unfinished jobs from their last.pt, finished ones kept), run the same command again plus "
          "trainer.resume=auto")


def _torchrun_overrides(argv: List[str]) -> List[str]:
    """Under torchrun (``WORLD_SIZE > 1``) every rank runs this CLI: make them agree on one run dir.

    The default ``runs/${graphgt_now:...}`` is resolved per process; the ranks agree on one clock
    through torchrun's agent store (``compare_set``: the first rank to arrive sets the time), so
    it resolves identically everywhere.  Ranks > 0 write no ``.hydra/`` copy and no log file.
    """
    if os.environ.get("WORLD_SIZE", "1") == "1":  # one process: keep the training stack out of `--help`
        return argv
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
    _check_sweep(argv)
    argv = options_first(_torchrun_overrides(argv) + ["hydra.output_subdir=null"])
    sys.argv = ["graphgt train"] + argv
    _hydra_train()


#: Hydra's command-line options that take a value (``--cfg job``); ``--info`` takes one optionally
_VALUE_OPTIONS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                  "--config-dir", "-cd", "--experimental-rerun"}
_INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def options_first(argv: List[str]) -> List[str]:
    """``argv`` with Hydra's options (and their values) before every override: argparse takes the
    overrides as one positional block, so ``data=cora --cfg job hydra.output_subdir=null`` (an
    override after an option) would be refused as unrecognised arguments."""
    options: List[str] = []
    overrides: List[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            options.append(arg)
            takes = arg in _VALUE_OPTIONS or (arg in ("--info", "-i") and i + 1 < len(argv)
                                                and argv[i + 1] in _INFO_VALUES)
            if takes and i + 1 < len(argv):
                options.append(argv[i + 1])
                i += 1
        else:
            overrides.append(arg)
        i += 1
    return options + overrides


def report(argv: List[str]) -> None:
    from graphgt.eval.report import main as report_main

    report_main(argv)


def reproduce(argv: List[str]) -> None:
    """``graphgt reproduce <preset> [overrides] [--seeds N] [--out DIR]`` (:mod:`graphgt.reproduce`)."""
    from graphgt.reproduce import main as reproduce_main

    names = {n for n, _ in preset_files()}
    preset = next((a for a in argv if not a.startswith("-") and "=" not in a), None)
    if preset is not None and preset not in names and argv.index(preset) == 0:
        _fail(_unknown_preset(preset))
    reproduce_main(argv, config_dir=CONFIG_DIR)


# ------------------------------------------------------------------------------------- presets
def preset_files(config_dir: Optional[str] = None) -> List[tuple]:
    """``(name, path)`` of every preset, ``configs/experiment/**/*.yaml``; ``name`` is what
    ``experiment=<name>`` takes (``ogb/arxiv-gcn`` for a file in a subfolder)."""
    root = Path(config_dir or CONFIG_DIR) / "experiment"
    return sorted((p.relative_to(root).with_suffix("").as_posix(), p) for p in root.rglob("*.yaml"))


def preset_summary(path: Path) -> str:
    """The first comment line of a preset (its description), without Hydra's ``# @package`` directive."""
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text:
            continue
        if not text.startswith("#"):
            return ""
        text = text.lstrip("#").strip()
        if text and not text.startswith("@package"):
            return text
    return ""


def presets(argv: List[str]) -> None:
    """``graphgt presets [PATTERN]``: the presets with their first comment line; PATTERN is a glob on
    the name (``cora-*``) or, without ``* ? [``, a case-insensitive substring of the name or description."""
    if len(argv) > 1 or any(a.startswith("-") for a in argv):
        _fail("usage: graphgt presets [PATTERN]   (PATTERN: a glob on the preset name, e.g. 'cora-*', or a "
              "word of the name or description, e.g. products)")
    import fnmatch

    pattern = argv[0] if argv else None
    rows = []
    for name, path in preset_files():
        summary = preset_summary(path)
        if pattern is None:
            rows.append((name, summary))
        elif any(c in pattern for c in "*?["):
            if fnmatch.fnmatch(name, pattern):
                rows.append((name, summary))
        elif pattern.lower() in name.lower() or pattern.lower() in summary.lower():
            rows.append((name, summary))
    if not rows:
        _fail(f"no preset matches '{pattern}' in {Path(CONFIG_DIR) / 'experiment'}; graphgt presets lists them all")
    width = max(len(n) for n, _ in rows)
    for name, summary in rows:
        print(f"{name:<{width}}  {summary}".rstrip())
    print(f"\n{len(rows)} preset(s); graphgt show <preset> prints one, graphgt train experiment=<preset> runs it")


def _unknown_preset(preset: str) -> str:
    import difflib

    names = [n for n, _ in preset_files()]
    close = difflib.get_close_matches(preset, names, n=5, cutoff=0.5)
    close += [n for n in names if preset.lower() in n.lower() and n not in close][:5 - len(close)]
    hint = f"did you mean: {', '.join(close)}?" if close else "graphgt presets lists them"
    return f"no preset '{preset}' (configs/experiment/{preset}.yaml does not exist in {CONFIG_DIR}); {hint}"


def show(argv: List[str]) -> None:
    """``graphgt show <preset> [overrides...] [--resolve]``: the composed config of
    ``graphgt train experiment=<preset> <overrides>`` as YAML (what the run would use)."""
    resolve = "--resolve" in argv
    argv = [a for a in argv if a != "--resolve"]
    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        _fail("usage: graphgt show <preset> [overrides...] [--resolve]   e.g. graphgt show cora-gcn seed=3 "
              "(graphgt presets lists the presets)")
    preset, overrides = argv[0], argv[1:]
    if preset.endswith(".yaml"):
        preset = preset[: -len(".yaml")]
    from graphgt.errors import ConfigError

    if preset not in {n for n, _ in preset_files()}:
        _exit_on(ConfigError(_unknown_preset(preset)))
    import graphgt.config  # noqa: F401  (the config resolvers)
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(Path(CONFIG_DIR).resolve()), version_base="1.3"):
            cfg = compose("train", overrides=[f"experiment={preset}", *overrides])
        text = OmegaConf.to_yaml(cfg, resolve=resolve)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        _exit_on(ConfigError(f"graphgt show {preset} {' '.join(overrides)}: {' '.join(str(e).split())}"))
    print(f"# graphgt train experiment={preset} {' '.join(overrides)}".rstrip())
    print(text, end="")


# ---------------------------------------------------------------------------------------- eval
EVAL_USAGE = ("usage: graphgt eval <run dir | checkpoint> [split=val|test|all] [ckpt=best|last] [--json FILE]\n"
              "  e.g. graphgt eval runs/2026-01-01/10-00-00-000000 split=test ckpt=last --json eval.json")


def evaluate(argv: List[str]) -> None:
    """``graphgt eval``: re-evaluate a run with its own config and checkpoint (:func:`graphgt.app.evaluate_run`)."""
    target: Optional[str] = None
    split, ckpt, json_path = "all", None, None
    rest = list(argv)
    while rest:
        item = rest.pop(0)
        if item == "--json":
            if not rest:
                _fail(f"--json needs a file name\n{EVAL_USAGE}")
            json_path = rest.pop(0)
        elif item.startswith("--json="):
            json_path = item[len("--json="):]
        elif item.startswith("split="):
            split = item[len("split="):]
        elif item.startswith("ckpt="):
            ckpt = item[len("ckpt="):]
        elif item in ("-h", "--help"):
            print(EVAL_USAGE)
            return
        elif target is None and not item.startswith("-") and "=" not in item:
            target = item
        else:
            _fail(f"graphgt eval: unexpected argument '{item}'\n{EVAL_USAGE}")
    if target is None:
        _fail(f"graphgt eval needs a run directory or a checkpoint\n{EVAL_USAGE}")
    if split not in ("val", "test", "all"):
        _fail(f"split={split} is not a split; use split=val, split=test or split=all")
    if ckpt is not None and ckpt not in ("best", "last"):
        _fail(f"ckpt={ckpt} is not a checkpoint name; use ckpt=best or ckpt=last")
    from graphgt.errors import GraphGTError

    try:
        from graphgt.app import evaluate_run

        out = evaluate_run(Path(target), ("val", "test") if split == "all" else (split,), ckpt)
        if json_path is not None:
            from graphgt.io import atomic_write_json

            atomic_write_json(out, Path(json_path))
    except GraphGTError as e:
        _exit_on(e)
    metric, recorded = out["metric"], out["recorded"] or {}
    epoch = "" if out["epoch"] is None else f", epoch {out['epoch']}"
    print(f"{out['run_dir']}: {Path(out['checkpoint']).name}{epoch}")
    print(f"{'split':<6} {'loss':>10} {metric:>12} {'recorded':>12}")
    for name, score in out["splits"].items():
        rec = recorded.get(name)
        print(f"{name:<6} {score['loss']:>10.6f} {score['metric']:>12.6f} "
              f"{'-' if rec is None else format(rec, '.6f'):>12}")
        if rec is not None and rec != score["metric"]:
            print(f"graphgt: warning: {name} {metric} {score['metric']!r} differs from the run's record {rec!r} "
                  "(a sampled evaluation, or another device or library version)", file=sys.stderr)
    if json_path is not None:
        print(f"-> {json_path}")


COMMANDS = {"train": train, "report": report, "eval": evaluate, "presets": presets, "show": show,
            "reproduce": reproduce}


def main(argv: Optional[List[str]] = None) -> None:
    """The ``graphgt`` command. ``argv=None``: this process is graphgt (the console script, ``python -m
    graphgt.cli``) and reads ``sys.argv``; a list: called from Python, which keeps its interpreter."""
    whole_process = argv is None
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
        if not whole_process:
            sys.exit(130)
        # Exit 130 now. A Ctrl-C that lands at some moments of start-up (importing torch and the
        # compiled extensions) makes CPython end an otherwise clean exit by re-raising SIGINT on
        # itself: status -2 instead of 130 (measured: 3 of 40 interrupts at random start-up times).
        # Nothing of the user's exists yet; the logs are flushed first.
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)


if __name__ == "__main__":
    main()
