"""DDP on CPU with 2 gloo processes: the same training as one process, exact evaluation, bounded
failure when a rank dies, one run directory under torchrun."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch

from graphgt.train.distributed import DDPConfig, Dist, first_host
from tests.train.ddp import (FAST, REPO, env, explain, free_port, graphgt, last_position, metrics, rank_env,
                             torchrun_cmd)


def test_two_processes_give_the_loss_curve_of_one_with_the_same_global_batch(tmp_path):
    """trainer=ddp with 2 ranks x 4 graphs (SyncBatchNorm) == 1 process x 8 graphs, epoch by epoch."""
    one = graphgt(FAST + ["trainer.max_epochs=3", "data.batch_size=8", f"hydra.run.dir={tmp_path / 'one'}"])
    assert one.returncode == 0, explain(one)
    two = graphgt(FAST + ["trainer.max_epochs=3", "data.batch_size=4", "trainer=ddp",
                          "trainer.distributed.nproc_per_node=2", f"hydra.run.dir={tmp_path / 'two'}"])
    assert two.returncode == 0, explain(two)
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5)
        assert rb["train_accuracy"] == ra["train_accuracy"]
        assert rb["lr"] == ra["lr"]                        # same number of optimiser steps
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=1e-3)
    # (weights are not compared: biases in front of BatchNorm get gradients of rounding noise only,
    # which Adam's normalisation turns into steps of size lr in either process)
    assert "starting 2 DDP worker processes" in two.stderr


def test_distributed_evaluation_equals_single_process_exactly(tmp_path):
    """Every split item once, predictions reassembled in order: bitwise the single-process result."""
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    worker = str(REPO / "tests" / "train" / "ddp_eval_worker.py")
    procs = [subprocess.Popen([sys.executable, worker, str(out), str(tmp_path / "cache")],
                              env=rank_env(r, 2, port), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    single = subprocess.run([sys.executable, worker, str(out), str(tmp_path / "cache")], env=rank_env(0, 1, port),
                            cwd=REPO, capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, explain(single)
    for case in ("graph", "sampled_node", "full_batch_node"):
        ref = torch.load(out / f"{case}_w1_r0.pt")
        for rank in range(2):
            got = torch.load(out / f"{case}_w2_r{rank}.pt")
            assert torch.equal(got["pred"], ref["pred"]), case          # bitwise, in single-process order
            assert torch.equal(got["target"], ref["target"]), case
            assert got["metric"] == ref["metric"] and got["loss"] == ref["loss"]
        assert ref["items"] == ref["pred"].size(0)                       # every item once


def test_torchrun_ranks_share_one_run_directory(tmp_path):
    """Without hydra.run.dir, torchrun's ranks agree on rank 0's clock: one runs/<date>/<time>."""
    proc = subprocess.run(torchrun_cmd(FAST + ["trainer.max_epochs=1", "data.batch_size=16"]),
                          env=env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, explain(proc)
    runs = [p for p in (tmp_path / "runs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    assert (runs[0] / "results.json").exists() and (runs[0] / ".hydra").is_dir()
    assert proc.stdout.count("FakeDataset: best val") == 1       # rank 0 reports, once


def test_a_dead_rank_makes_the_others_fail_within_the_timeout(tmp_path):
    """Rank 1 is SIGKILLed mid-training; rank 0 exits with a clear error (not a hang), last.pt intact."""
    port = free_port()
    run_dir = tmp_path / "run"
    args = FAST + ["data.dataset.num_graphs=3000", "data.batch_size=4", "trainer.max_epochs=50",
                   f"hydra.run.dir={run_dir}",
                   "trainer.distributed={_target_:graphgt.train.distributed.DDPConfig,timeout_s:20}"]
    procs = [subprocess.Popen([sys.executable, "-m", "graphgt.cli", "train", *args], env=rank_env(r, 2, port),
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        deadline = time.time() + 200
        while last_position(run_dir) is None and time.time() < deadline and procs[0].poll() is None:
            time.sleep(0.2)
        assert last_position(run_dir) is not None, "no checkpoint after the first epoch"
        procs[1].send_signal(signal.SIGKILL)
        killed_at = time.time()
        _, err = procs[0].communicate(timeout=120)
        waited = time.time() - killed_at
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == 1, err
    assert "graphgt: error: rank 0/2" in err and "another rank died, hung or lost its connection" in err
    assert "Traceback" not in err
    assert waited < 20 + 30                                     # the timeout, plus slack for a slow machine
    state = torch.load(run_dir / "last.pt", weights_only=True)  # the last good checkpoint is loadable
    assert state["position"]["batch"] == 0 and state["position"]["epoch"] >= 2


def test_ddp_config_errors_name_the_key():
    with pytest.raises(ValueError, match="trainer.distributed.backend='mpi'"):
        DDPConfig(backend="mpi")
    with pytest.raises(ValueError, match="nproc_per_node"):
        DDPConfig(nproc_per_node=0)
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        DDPConfig(nnodes=2)
    assert DDPConfig(nproc_per_node=3, nnodes=2, rdzv_endpoint="node0:29500").world_size() == 6


def test_slurm_rendezvous_endpoint(monkeypatch):
    assert first_host("gpu[012-015,020],cpu1") == "gpu012"
    assert first_host("node7,node8") == "node7" and first_host("a[3]") == "a3"
    monkeypatch.setenv("SLURM_JOB_NODELIST", "dgx[04-05]")
    assert DDPConfig(nnodes=2, rdzv_endpoint="slurm").endpoint() == "dgx04:29500"
    assert DDPConfig(nnodes=2, rdzv_endpoint="slurm:1234").endpoint() == "dgx04:1234"


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "trainer=ddp", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.tasks_per_node == 1 and cfg.hydra.launcher.partition == "gpu"
    assert cfg.trainer.distributed.nproc_per_node == "auto"


def test_single_process_collectives_are_the_identity():
    d = Dist()
    assert d.all_sum([1.5, 2]) == [1.5, 2.0] and d.all_gather_object("x") == ["x"]
    parts = [torch.arange(3), torch.arange(2)]
    assert torch.equal(d.gather_batches(parts), torch.tensor([0, 1, 2, 0, 1]))
