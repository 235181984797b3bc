"""Launcher and workers of the DDP shutdown tests: :func:`graphgt.train.distributed.launch` with two
workers that, like :meth:`graphgt.train.Trainer.fit`, catch SIGTERM/SIGINT and return once told to stop.

Run as ``python -c "from tests.train.ddp_shutdown import main; main()" MODE OUT_DIR`` (the worker
function must be importable by name in the spawned workers, so this module is not run as
``__main__``).  Each worker writes ``OUT_DIR/ready_<rank>`` (its pid) once it waits and
``OUT_DIR/returned_<rank>`` (the time) when it returns.  ``MODE``:

* ``wait``: both workers wait for a stop signal (the test sends the launcher SIGTERM);
* ``rank0-dies``: rank 0 SIGKILLs itself once rank 1 waits (``OUT_DIR/died_0`` holds the time), so
  the launcher stops rank 1 with SIGTERM;
* ``rank0-returns``: rank 0 returns at once; rank 1 returns when rank 0's process has ended (as a
  rank waiting at a barrier fails once the rank it waits for has closed its connections).

The launcher prints ``{rank: return value}`` and exits with 0, with 128 + signal when it was stopped
by a signal, or with 1 when a worker died.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path


def process_ended(pid: int) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie not yet reaped by its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def stoppable(mode: str, out_dir: str) -> int:
    """A worker: wait inside :class:`StopSignal` until MODE's condition holds, then return the rank."""
    from graphgt.train.signals import StopSignal

    rank, out = int(os.environ["RANK"]), Path(out_dir)
    with StopSignal() as stop:
        (out / f"ready_{rank}").write_text(str(os.getpid()))
        deadline = time.time() + 120
        while stop.requested is None and time.time() < deadline:
            if mode == "rank0-dies" and rank == 0 and (out / "ready_1").exists():
                (out / "died_0").write_text(repr(time.time()))
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "rank0-returns" and (rank == 0 or ((out / "ready_0").exists()
                                                         and process_ended(int((out / "ready_0").read_text())))):
                break
            time.sleep(0.02)
    (out / f"returned_{rank}").write_text(repr(time.time()))
    return rank


def main() -> None:
    """The launcher: two workers of :func:`stoppable` through :func:`graphgt.train.distributed.launch`."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from graphgt.train.distributed import DDPConfig, launch

    mode, out_dir = sys.argv[1], sys.argv[2]
    try:
        values = launch(DDPConfig(nproc_per_node=2, backend="gloo"), stoppable, mode, out_dir)
    except SignalException as e:
        sys.exit(128 + int(e.sigval))
    except ChildFailedError:
        sys.exit(1)
    print(json.dumps({str(rank): value for rank, value in sorted(values.items())}))
