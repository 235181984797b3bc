"""DDP on CPU with 2 gloo processes: the same training as one process, exact evaluation, bounded
failure when a rank dies, one run directory under torchrun, every local layer with and without edge
features, prompt shutdown of trainer=ddp."""
from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

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


# ------------------------------------------------------------------ every local layer under DDP
#: two training steps of a tiny model on 2 gloo ranks (trainer=ddp starts the workers)
DDP_TWO_STEPS = ["trainer=ddp", "trainer.distributed.nproc_per_node=2", "data=pyg-fake", "data.dataset.num_graphs=40",
                 "data.batch_size=4", "pe=none", "model.hidden=16", "model.layers=2", "logger=none",
                 "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.checkpoint=false",
                 "trainer.progress=false"]
#: PyG's FakeDataset with 2 float edge features per edge; without edge_dim it has none
EDGE_FEATURES = ["+data.dataset.edge_dim=2"]
NEEDS_EDGES = ("gine", "gatedgcn")
#: the combinations that run by default (the others: -m slow): a layer that ignores edge features on
#: data with them, the edge-updating layer, and a refusal on a rank while the other waits for it
REPRESENTATIVE = {("gcn", True), ("gatedgcn", True), ("gine", False)}


@pytest.mark.parametrize("local,edges", [
    pytest.param(local, edges, id=f"{local}-{'edge' if edges else 'edgeless'}",
                 marks=() if (local, edges) in REPRESENTATIVE else pytest.mark.slow)
    for local in ("gcn", "gin", "gine", "gatedgcn", "gat", "sage") for edges in (True, False)])
def test_every_local_layer_trains_under_ddp_with_and_without_edge_features(tmp_path, local, edges):
    """No parameter is left out of the loss (DDP refuses that at the second step): an edge encoder only
    for layers that read edge features, no edge update in the last GatedGCN layer.  A layer that needs
    edge features on data without them is refused (exit 2) instead of leaving the other rank waiting."""
    run_dir = tmp_path / "run"
    proc = graphgt(DDP_TWO_STEPS + [f"local={local}", f"hydra.run.dir={run_dir}"] + (EDGE_FEATURES if edges else []),
                   timeout=240)
    if local in NEEDS_EDGES and not edges:
        assert proc.returncode == 2, explain(proc)
        assert f"graphgt: error: local={local}" in proc.stderr and "needs edge features" in proc.stderr
        assert not (run_dir / "results.json").exists()
        return
    assert proc.returncode == 0, explain(proc)
    assert "Expected to have finished reduction" not in proc.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["world_size"] == 2 and results["epochs"] == 1
    assert math.isfinite(results["final_train_loss"]) and results["final_train_loss"] > 0


# ------------------------------------------------------------------ shutdown of trainer=ddp
def _wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert predicate(), f"{what} did not happen within {timeout} s (launcher rc={proc.poll()})"


def test_sigterm_to_the_ddp_launcher_stops_it_within_seconds_and_the_run_resumes(tmp_path):
    """SIGTERM to `graphgt train trainer=ddp` after epoch 1: the workers checkpoint and end, and the
    launcher exits with 143 within seconds (it used to wait 30 s and SIGKILL the workers, which sat in
    torch's wait for the launcher); last.pt is intact and trainer.resume=auto finishes the run."""
    run_dir = tmp_path / "run"
    args = FAST + ["trainer=ddp", "trainer.distributed.nproc_per_node=2", "data.dataset.num_graphs=1000",
                   "data.batch_size=4", "trainer.max_epochs=3", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, "-m", "graphgt.cli", "train", *args], env=env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (last_position(run_dir) or {}).get("epoch", 0) >= 2, proc, 240, "epoch 1's checkpoint")
        proc.send_signal(signal.SIGTERM)
        signalled = time.time()
        _, err = proc.communicate(timeout=120)
        exited = time.time()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert exited - signalled < 15, f"the launcher took {exited - signalled:.1f} s to exit after SIGTERM"
    written = (run_dir / "last.pt").stat().st_mtime
    assert written >= signalled - 0.5 and exited - written < 10, \
        f"exit {exited - written:.1f} s after the checkpoint"
    assert "graphgt: stopped by signal 15" in err and "Unable to shutdown process" not in err
    assert not (run_dir / "results.json").exists()
    position = last_position(run_dir)                        # loadable: written atomically before the exit
    assert position["epoch"] in (2, 3) and (position["epoch"], position["batch"]) != (2, 0)
    resumed = graphgt(args + ["trainer.resume=auto"], timeout=300)
    assert resumed.returncode == 0, explain(resumed)
    assert [row["epoch"] for row in metrics(run_dir)] == [1.0, 2.0, 3.0]
    assert last_position(run_dir) == {"epoch": 4, "batch": 0}
    assert json.loads((run_dir / "results.json").read_text())["resumed_from"] == str(run_dir / "last.pt")


def _launch_stoppable(mode: str, out: Path) -> subprocess.Popen:
    out.mkdir()
    return subprocess.Popen([sys.executable, "-c", "from tests.train.ddp_shutdown import main; main()", mode,
                             str(out)], env=env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.parametrize("mode", ["wait", "rank0-dies"])
def test_launch_ends_its_workers_promptly_when_it_shuts_down(tmp_path, mode):
    """A launcher that got SIGTERM, or whose rank 0 died, SIGTERMs the other workers: those that catch
    it and return end at once, so the launcher exits within seconds (torch's wait for the launcher
    used to hold them until the SIGKILL 30 s later)."""
    out = tmp_path / "out"
    proc = _launch_stoppable(mode, out)
    try:
        _wait_for(lambda: (out / "ready_0").exists() and (out / "ready_1").exists(), proc, 60, "the workers' start")
        if mode == "wait":
            proc.send_signal(signal.SIGTERM)
            event = time.time()
        else:
            _wait_for(lambda: (out / "died_0").exists(), proc, 60, "rank 0's death")
            event = float((out / "died_0").read_text() or time.time())
        _, err = proc.communicate(timeout=60)
        exited = time.time()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (143 if mode == "wait" else 1), err[-3000:]
    assert (out / "returned_1").exists()                      # rank 1 caught the signal and returned
    assert exited - event < 12, f"the launcher took {exited - event:.1f} s to exit"
    assert "Unable to shutdown process" not in err


def test_a_rank_that_returns_early_does_not_keep_the_others_waiting(tmp_path):
    """Rank 0 returns (as on an error of its own) while rank 1 waits for it to go away (as at a barrier):
    rank 0's process ends once its value is handed over, so both values arrive (it used to wait for the
    launcher, which waited for rank 1: a deadlock)."""
    proc = _launch_stoppable("rank0-returns", tmp_path / "out")
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"0": 0, "1": 1}
    returned = [float((tmp_path / "out" / f"returned_{r}").read_text()) for r in (0, 1)]
    assert returned[1] - returned[0] < 10
