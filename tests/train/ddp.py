"""Helpers of the multi-process tests: run ``graphgt train`` (alone, under torchrun, or as hand-made
ranks) in subprocesses on CPU, and read what a run wrote."""
from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from tests.conftest import REPO

#: a small graph-level job: 320 training graphs, GIN + full attention, BatchNorm, no dropout
FAST = ["data=pyg-fake", "data.dataset.num_graphs=400", "local=gin", "pe=none", "model.hidden=16",
        "model.layers=2", "trainer.progress=false"]


def env(**extra: str) -> Dict[str, str]:
    e = dict(os.environ)
    e.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"})
    e.update(extra)
    return e


def graphgt(args: List[str], timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphgt.cli", "train", *args], env=env(**extra), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def torchrun_cmd(args: List[str], nproc: int = 2) -> List[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "graphgt.cli", "train", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_env(rank: int, world: int, port: int) -> Dict[str, str]:
    """What torchrun would set for a rank (to start ranks by hand, as srun does)."""
    return env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def metrics(run_dir: Path, drop=("epoch_time_s",)) -> List[Dict[str, float]]:
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def weights(path: Path, key: str = "model") -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)[key]


def assert_same_weights(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"


def last_position(run_dir: Path) -> Optional[Dict[str, int]]:
    path = Path(run_dir) / "last.pt"
    return torch.load(path, weights_only=True)["position"] if path.exists() else None


def run_ranks(script: Path, out_dir: Path, world: int = 2, timeout: float = 120) -> None:
    """Run ``python SCRIPT RANK WORLD PORT OUT_DIR`` for every rank (a gloo job on 127.0.0.1:PORT)
    and fail with every rank's output if one of them fails or outlives ``timeout``."""
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), str(world), port, str(out_dir)],
                              env=env(PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])),
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for rank in range(world)]
    try:
        logs = [p.communicate(timeout=timeout)[0].decode(errors="replace") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)


def join_ranks_from_argv() -> Tuple[int, int, str]:
    """The worker side of :func:`run_ranks`: join the gloo group that ``argv`` describes (one thread);
    returns ``(rank, world, out_dir)``.  The caller destroys the process group when done."""
    import torch.distributed as dist

    rank, world, port, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = port
    dist.init_process_group("gloo", rank=rank, world_size=world)
    return rank, world, out_dir
