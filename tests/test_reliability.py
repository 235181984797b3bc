"""Issue 15's defects found by fault injection, one regression test each (the composition root,
the CLI, checkpoints, the logger and the report).  The data-side defects are tested beside the data
code (tests/data), the DDP ones in tests/train/test_distributed.py."""
from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from graphgt.app import run
from graphgt.errors import CheckpointError, ConfigError, NonFiniteLossError, RunDirLocked, WriteError
from graphgt.train.logging import CSVLogger
from tests.conftest import REPO, compose_with_choices

TINY = ["data.num_nodes=200", "model.hidden=32", "model.layers=1", "trainer.progress=false", "pe=none"]


def _run(run_dir: Path, overrides=(), epochs: int = 2):
    cfg, choices = compose_with_choices(TINY + [f"trainer.max_epochs={epochs}", *overrides])
    return run(cfg, run_dir, choices)


def cli(*args, timeout=300, **popen):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "graphgt.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, **popen)


# ------------------------------------------------------------------------------------ 2. run-dir lock
def test_two_runs_in_one_run_dir_the_second_is_refused(tmp_path):
    """Issue 15.2: two processes started at once into one hydra.run.dir: one trains, one is refused
    (exit 2, a message), and the directory holds exactly one run's files."""
    run_dir = tmp_path / "run"
    args = ["train", *TINY, "trainer.max_epochs=6", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "graphgt.cli", *args], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    refused = outs[[p.returncode for p in procs].index(2)][1]
    assert "is in use by another graphgt run" in refused or "already holds an earlier run" in refused
    epochs = [int(line.split(",")[0]) for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == [1, 2, 3, 4, 5, 6]                                # one run's rows, in order
    assert json.loads((run_dir / "results.json").read_text())["epochs"] == 6


def test_the_lock_refuses_while_held_and_frees_on_exit(tmp_path):
    from graphgt.app import RunDirLock

    with RunDirLock(tmp_path / "r"):
        pid = os.fork()
        if pid == 0:  # another process: refused while the parent holds the lock
            try:
                with RunDirLock(tmp_path / "r"):
                    os._exit(1)
            except RunDirLocked:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
    with RunDirLock(tmp_path / "r"):  # released: can be taken again
        pass


# ------------------------------------------------------------------------ 1/7/8. resume semantics
def test_a_finished_run_with_another_config_is_not_answered_with_its_old_result(tmp_path):
    """Issue 15.7: resume=auto on a finished run with a different config is refused, naming the key."""
    _run(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"finished run with a different config.*\n  seed: 0 .*, 5 now"):
        _run(tmp_path / "run", ["trainer.resume=auto", "seed=5"])


def test_refused_runs_leave_no_record_and_the_dir_can_be_reused(tmp_path):
    """Issue 15.7: a validation failure writes nothing into hydra.run.dir (Hydra's .hydra/ included),
    so the same directory works once the typo is fixed; a refused resume keeps the old record."""
    run_dir = tmp_path / "run"
    bad = cli("train", *TINY, "trainer.max_epochs=1", "model.hiden=3", f"hydra.run.dir={run_dir}")
    assert bad.returncode != 0 and not (run_dir / ".hydra").exists()
    good = cli("train", *TINY, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}")
    assert good.returncode == 0, good.stderr
    overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    refused = cli("train", *TINY, "trainer.max_epochs=1", "seed=7", "trainer.resume=auto", f"hydra.run.dir={run_dir}")
    assert refused.returncode == 2 and "different config" in refused.stderr
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == overrides       # the old record is intact


def test_best_pt_is_refused_as_a_resume_point_with_a_message(tmp_path):
    """Issue 15.8: trainer.resume=<best.pt> was a KeyError; it is a CheckpointError saying to use last.pt,
    and the corrupt-checkpoint message no longer suggests best.pt."""
    _run(tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"holds model weights only .*last.pt"):
        _run(tmp_path / "other", [f"trainer.resume={tmp_path / 'run' / 'best.pt'}"])
    (tmp_path / "run" / "results.json").unlink()
    (tmp_path / "run" / "last.pt").write_bytes(b"\0" * 64)
    with pytest.raises(CheckpointError) as info:
        _run(tmp_path / "run", ["trainer.resume=auto"])
    assert "best.pt" not in str(info.value) and "cannot be read" in str(info.value)


# --------------------------------------------------------------------------------- 4. sweeps go on
def test_a_clean_error_in_one_trial_does_not_end_the_sweep(tmp_path):
    """Issue 15.4: trial 0 fails validation, trial 1 trains; the failure is recorded in its dir,
    the sweep exits non-zero at the end, and graphgt report lists the failed trial."""
    sweep = tmp_path / "sweep"
    proc = cli("train", "--multirun", *TINY, "trainer.max_epochs=1", "seed=abc,1", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2, proc.stderr
    assert "1 of 2 trials failed" in proc.stderr and "Traceback" not in proc.stderr
    assert (sweep / "1" / "results.json").exists()
    error = json.loads((sweep / "0" / "error.json").read_text())
    assert error["error"] == "ConfigError" and error["exit_code"] == 2 and "seed='abc'" in error["message"]
    report = cli("report", str(sweep))
    assert report.returncode == 0 and f"failed trial {sweep / '0'}: ConfigError" in report.stdout


def test_a_diverging_trial_does_not_end_the_sweep(tmp_path):
    """A trial whose weights diverge (lr 1e38) stops with NonFiniteLossError (exit 1); the next trial
    still runs, and the sweep's exit status is the failure's."""
    sweep = tmp_path / "sweep"
    proc = cli("train", "--multirun", *TINY, "trainer.max_epochs=2", "trainer.optimizer.lr=1e38,0.001",
               "trainer.grad_clip=null", "trainer.scheduler=null", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1, proc.stderr
    assert json.loads((sweep / "0" / "error.json").read_text())["error"] == "NonFiniteLossError"
    assert (sweep / "1" / "results.json").exists() and not (sweep / "0" / "results.json").exists()


# ------------------------------------------------------------------------------ 10. NaN in eval data
def test_nan_in_validation_inputs_stops_the_run_with_a_message(tmp_path, monkeypatch):
    """Issue 15.10: NaN features in the validation batches used to give val_loss=nan in every row and
    a 'best' score; now the run stops naming the split and the attribute, and writes no results."""
    import copy

    from graphgt.data.common import InMemoryDataModule

    original = InMemoryDataModule.val_loader

    def poisoned(self, rank=0, world_size=1):
        batch = copy.copy(next(iter(original(self, rank, world_size))))
        batch.x = batch.x.clone()
        batch.x[0, 0] = float("nan")
        return [batch]

    monkeypatch.setattr(InMemoryDataModule, "val_loader", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"val predictions contain NaN/inf .*the val inputs hold NaN/inf \(in x\)"):
        _run(tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()
    assert not (tmp_path / "run" / "metrics.csv").exists()          # no row with val_loss=nan was logged


# ------------------------------------------------------------------------ 11. messages, not tracebacks
@pytest.mark.parametrize("args,message", [
    (["trainer.optimizer.lr=-1"], "trainer.optimizer: Invalid learning rate: -1"),
])
def test_bad_values_are_messages(tmp_path, args, message):
    proc = cli("train", *TINY, "trainer.max_epochs=1", *args, f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "r" / ".hydra").exists()


def test_an_unwritable_run_dir_is_a_message(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root ignores the mode bits)")
        proc = cli("train", *TINY, "trainer.max_epochs=1", f"hydra.run.dir={locked / 'run'}")
        assert proc.returncode == 2 and "cannot be written" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        locked.chmod(0o700)


def test_a_file_in_place_of_the_run_dir_is_a_message(tmp_path):
    (tmp_path / "f").write_text("x")
    proc = cli("train", *TINY, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'f' / 'run'}")
    assert proc.returncode == 2 and "cannot be written" in proc.stderr and "Traceback" not in proc.stderr


def test_a_checkpoint_write_over_the_file_size_limit_is_a_message(tmp_path):
    """A file-size limit (RLIMIT_FSIZE) below a checkpoint's size: WriteError naming the file, exit 1,
    the previous last.pt intact."""
    code = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
sys.argv = ["graphgt", "train", *{TINY!r}, "model.hidden=64", "trainer.max_epochs=2", "hydra.run.dir={tmp_path / 'run'}"]
from graphgt.cli import main
main()
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "could not write" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "at most 200000 bytes (ulimit -f)" in proc.stderr
    assert not list((tmp_path / "run").glob(".*.tmp"))              # no temporary file left behind


def test_report_names_a_bad_results_file_and_goes_on(tmp_path):
    _run(tmp_path / "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    proc = cli("report", str(tmp_path))
    assert proc.returncode == 0 and "CSBM" in proc.stdout
    assert f"skipped {tmp_path / 'bad' / 'results.json'}: cannot be read" in proc.stdout


def test_ctrl_c_during_start_up_is_a_message(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "graphgt.cli", "train", *TINY, f"hydra.run.dir={tmp_path / 'r'}"],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)  # importing torch / Hydra, composing: before training starts
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert not (tmp_path / "r" / "results.json").exists()


# ----------------------------------------------------------------------------- 12. files and rows
def test_a_torn_last_row_of_metrics_csv_does_not_survive_a_resume(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,train_loss,val_accuracy\n1,0.9,0.5\n2,0.8,0.6\n3,0.7")   # killed mid-row
    logger = CSVLogger()
    logger.start(tmp_path, {}, resume_epoch=3)
    logger.log(3, {"train_loss": 0.65, "val_accuracy": 0.7})
    assert path.read_text().splitlines() == ["epoch,train_loss,val_accuracy", "1,0.9,0.5", "2,0.8,0.6",
                                             "3,0.65,0.7"]


def test_results_and_checkpoints_are_readable_like_the_rest_of_the_run(tmp_path):
    old = os.umask(0o022)
    try:
        _run(tmp_path / "run")
    finally:
        os.umask(old)
    for name in ("results.json", "best.pt", "last.pt", "metrics.csv"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o644, name


def test_write_error_keeps_the_previous_file(tmp_path):
    from graphgt.io import atomic_write_json

    target = tmp_path / "results.json"
    atomic_write_json({"v": 1}, target)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (10, hard))
    try:
        with pytest.raises(WriteError, match="could not write .*results.json.*File too large"):
            atomic_write_json({"v": "x" * 100}, target)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert json.loads(target.read_text()) == {"v": 1}
    assert torch.__version__  # torch imported for the ground-floor io module


# ------------------------------------------------------------- 11. damaged dataset files, bad graphs
@pytest.fixture
def cora_root(tmp_path):
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "planetoid" / "Cora").exists():
        pytest.skip(f"real datasets not found at {SHARED_DATA}")
    import shutil

    root = tmp_path / "data"
    shutil.copytree(SHARED_DATA / "planetoid" / "Cora", root / "planetoid" / "Cora")
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return root


def test_a_damaged_raw_file_is_a_message(tmp_path, cora_root):
    next((cora_root / "planetoid" / "Cora" / "raw").glob("*.x")).write_text("garbage\n")
    from graphgt.data import PlanetoidData

    with pytest.raises(ConfigError, match=r"PlanetoidData: the dataset files under .* cannot be read"):
        PlanetoidData(str(cora_root), "Cora").load(tmp_path / "cache")


def test_a_damaged_processed_file_is_rebuilt(tmp_path, cora_root):
    from graphgt.data import PlanetoidData

    spec = PlanetoidData(str(cora_root), "Cora").load(tmp_path / "cache")
    processed = tmp_path / "cache" / "datasets" / "planetoid" / "Cora" / "processed" / "data.pt"
    size = processed.stat().st_size
    processed.write_bytes(processed.read_bytes()[:100])                  # a kill while PyG wrote it
    again = PlanetoidData(str(cora_root), "Cora").load(tmp_path / "cache")
    assert again == spec and processed.stat().st_size == size            # read from the raw files again


def test_an_out_of_range_edge_index_is_a_message(tmp_path):
    from torch_geometric.data import Data

    from graphgt.data import PyGDataset, RandomSplit

    graphs = [Data(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1], [1, 4]]), y=torch.tensor([0]))
              for _ in range(8)]
    m = PyGDataset(graphs, level="graph", task="multiclass", metric="accuracy", split=RandomSplit(0.5, 0.25))
    with pytest.raises(ConfigError, match=r"graph 0 has an edge_index entry 4 outside its 4 nodes"):
        m.load(tmp_path)
