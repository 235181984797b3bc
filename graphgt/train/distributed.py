"""Distributed data parallel (DDP) training: the process group, the few collectives the trainer
needs, and launching worker processes.

One training loop serves one process and ``W`` processes alike; the differences live here:

* :class:`DDPConfig` (``trainer.distributed``, ``trainer=ddp``): how many processes, the backend
  and the timeout that bounds how long a rank waits for a dead or hung peer.
* :class:`Dist`: this process's rank and the collectives: :meth:`Dist.all_sum` (one small
  all-reduce per training step carries the loss sum, the label count and the stop flag),
  :meth:`Dist.gather_batches` (exact distributed evaluation: the ranks' evaluation batches are
  reassembled in single-process order), object gathers for checkpoints.  ``Dist()`` is the
  single-process context, where every collective is the identity.
* :func:`init_distributed` joins the process group that ``torchrun`` (or :func:`launch`) describes in
  the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``):
  NCCL for CUDA tensors and gloo for CPU tensors (``backend=auto`` on GPUs), gloo on CPU.
* :func:`launch` starts ``nproc_per_node`` workers on this node through torch's elastic launcher,
  the engine behind ``torchrun``; with ``nnodes > 1`` one launcher per node meets the others at
  ``rdzv_endpoint``.  A worker process ends as soon as its function has returned and its value is
  handed over, without waiting for the launcher (:func:`_worker_entry` says why).

Failures of peers surface as :class:`DistributedError` (a collective raised or timed out): the
message names the rank, what failed and that the last checkpoint is intact.
"""
from __future__ import annotations

import datetime
import os
import socket
import sys
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from graphgt.errors import DistributedError

BACKENDS = ("auto", "gloo", "nccl")


def env_world_size() -> int:
    """``WORLD_SIZE`` of the environment (1 when not launched by torchrun / :func:`launch`)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"the environment variable WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") \
            from None


@dataclass
class DDPConfig:
    """How a run is distributed (the ``trainer.distributed`` node; ``trainer=ddp`` sets it).

    Attributes:
        nproc_per_node: worker processes per node; ``auto`` = one per visible GPU, or 2 on a
            machine without GPUs.  With ``> 1`` and no process group in the environment,
            ``graphgt train`` starts the workers itself (:func:`launch`); under ``torchrun`` the
            environment decides and this value is not used.
        nnodes: number of nodes (one ``graphgt train`` per node, e.g. one Slurm task per node;
            the rendezvous numbers the nodes).
        rdzv_endpoint: ``host:port`` where the nodes meet (multi-node; node 0's address), or
            ``slurm`` / ``slurm:PORT``: the first host of the Slurm job (``SLURM_JOB_NODELIST``),
            port 29500 by default; ``null`` on one node.
        backend: ``auto`` (NCCL for CUDA tensors + gloo for CPU tensors when training on GPUs,
            gloo on CPU), ``gloo``, or ``nccl`` (GPU only; same as ``auto`` there).
        timeout_s: the longest a collective waits for the other ranks; a rank that died or hung
            makes the others fail with a clear error after at most this long (dead peers are
            usually noticed at once: their connections close).
        find_unused_parameters: DDP's option for models with parameters that some steps do not
            use (costs a graph traversal per step; off by default).
    """

    nproc_per_node: Union[int, str] = "auto"
    nnodes: int = 1
    rdzv_endpoint: Optional[str] = None
    backend: str = "auto"
    timeout_s: float = 300.0
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"trainer.distributed.backend='{self.backend}' is not one of {list(BACKENDS)}")
        if not (self.nproc_per_node == "auto" or (isinstance(self.nproc_per_node, int)
                                                  and not isinstance(self.nproc_per_node, bool)
                                                  and self.nproc_per_node >= 1)):
            raise ValueError(f"trainer.distributed.nproc_per_node must be an int >= 1 or 'auto', "
                             f"got {self.nproc_per_node!r}")
        if self.nnodes < 1:
            raise ValueError(f"trainer.distributed.nnodes must be >= 1, got {self.nnodes}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("trainer.distributed.nnodes > 1 needs trainer.distributed.rdzv_endpoint=HOST:PORT "
                             "(node 0's address, the same on every node)")
        if self.timeout_s <= 0:
            raise ValueError(f"trainer.distributed.timeout_s must be > 0, got {self.timeout_s}")

    def endpoint(self) -> str:
        """``rdzv_endpoint`` with ``slurm[:PORT]`` resolved to the job's first host."""
        value = str(self.rdzv_endpoint)
        if value == "slurm" or value.startswith("slurm:"):
            nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
            if not nodelist:
                raise ValueError("trainer.distributed.rdzv_endpoint=slurm outside a Slurm job (no SLURM_JOB_NODELIST)")
            port = value.split(":", 1)[1] if ":" in value else "29500"
            return f"{first_host(nodelist)}:{port}"
        return value

    def processes_per_node(self) -> int:
        if self.nproc_per_node != "auto":
            return int(self.nproc_per_node)
        return torch.cuda.device_count() if torch.cuda.is_available() else 2

    def world_size(self) -> int:
        return self.nnodes * self.processes_per_node()


class Dist:
    """This process's place in the run and the collectives of the trainer (identity when alone).

    Args:
        rank, world_size, local_rank: from the environment (:func:`init_distributed`).
        group_ready: whether ``torch.distributed``'s default group is initialised.
        long_group: a process group with a long timeout for waits that may legitimately last
            (rank 0 building a dataset cache while the others wait).
    """

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, group_ready: bool = False,
                 long_group: Any = None, find_unused_parameters: bool = False):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.group_ready = group_ready
        self.long_group = long_group
        self.find_unused_parameters = find_unused_parameters

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def _collective(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:  # gloo/NCCL errors: a peer died, hung past the timeout or disconnected
            raise DistributedError(f"rank {self.rank}/{self.world_size}: {what} failed ({type(e).__name__}: "
                                   f"{str(e).strip().splitlines()[0] if str(e).strip() else e!r}); another rank "
                                   "died, hung or lost its connection, so this rank stops too") from e

    def all_sum(self, values: Sequence[float]) -> List[float]:
        """Elementwise sum over ranks of a few numbers (one float64 all-reduce)."""
        if not self.distributed:
            return [float(v) for v in values]
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        self._collective("all_reduce", lambda: dist.all_reduce(t))
        return t.tolist()

    def all_gather_object(self, obj: Any) -> List[Any]:
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: List[Any] = [None] * self.world_size
        self._collective("all_gather_object", lambda: dist.all_gather_object(out, obj))
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        self._collective("broadcast_object_list", lambda: dist.broadcast_object_list(box, src=src))
        return box[0]

    def barrier(self, long: bool = False) -> None:
        """Wait for every rank (``long=True``: with the long timeout, e.g. behind a cache build)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        group = self.long_group if long else None
        self._collective("barrier", lambda: dist.barrier(group=group))

    def gather_batches(self, parts: List[Tensor]) -> Tensor:
        """Every rank's evaluation batches, concatenated in single-process order.

        Evaluation loaders deal batches round-robin (:class:`~graphgt.data.base.DataModule`):
        local batch ``j`` of rank ``r`` is global batch ``r + j * W``.  The ranks exchange their
        row counts, then their rows (padded to the longest rank), and every rank rebuilds the
        single-process concatenation, so a metric computed from it is the single-process metric.
        """
        if not self.distributed:
            return torch.cat(parts)
        import torch.distributed as dist

        local = torch.cat(parts) if parts else None
        meta = self.all_gather_object([p.size(0) for p in parts] if local is None else
                                      ([p.size(0) for p in parts], tuple(local.shape[1:]), local.dtype))
        shaped = [m for m in meta if isinstance(m, tuple)]
        if not shaped:
            raise ValueError("no rank has an evaluation batch: the split is empty")
        _, tail, dtype = shaped[0]
        sizes = [m[0] if isinstance(m, tuple) else m for m in meta]
        rows = max(sum(s) for s in sizes)
        buf = torch.zeros((rows, *tail), dtype=dtype)
        if local is not None:
            buf[:local.size(0)] = local
        bufs = [torch.empty_like(buf) for _ in range(self.world_size)]
        self._collective("all_gather", lambda: dist.all_gather(bufs, buf))
        batches: Dict[int, Tensor] = {}
        for r, (b, s) in enumerate(zip(bufs, sizes)):
            for j, piece in enumerate(b[:sum(s)].split(s)):
                batches[r + j * self.world_size] = piece
        return torch.cat([batches[g] for g in sorted(batches)])

    def __repr__(self) -> str:
        return f"Dist(rank={self.rank}, world_size={self.world_size}, local_rank={self.local_rank})"


def init_distributed(config: Optional[DDPConfig], device_type: str) -> Dist:
    """Join the process group the environment describes (``WORLD_SIZE > 1``), else stay alone.

    ``device_type`` is where the model trains (``cuda`` or ``cpu``): it picks the backend for
    ``backend=auto`` and, on GPUs, this process's device ``cuda:LOCAL_RANK``.
    """
    world = env_world_size()
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    config = config or DDPConfig()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if config.backend == "nccl" and device_type != "cuda":
        raise ValueError("trainer.distributed.backend=nccl needs CUDA devices; use backend=auto or gloo on CPU")
    backend = "cpu:gloo,cuda:nccl" if device_type == "cuda" and config.backend != "gloo" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    timeout = datetime.timedelta(seconds=config.timeout_s)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timeout)
    long_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(days=1))
    return Dist(rank, world, local_rank, group_ready=True, long_group=long_group,
                find_unused_parameters=config.find_unused_parameters)


def shutdown(dist_ctx: Dist, failed: bool = False) -> None:
    """Leave the process group (skipped after a failure: tearing down a broken group can block)."""
    if not dist_ctx.group_ready or failed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------- launching
def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: ``gpu[012-015,020],cpu1`` -> ``gpu012``."""
    head = nodelist.strip()
    depth = 0
    for i, ch in enumerate(head):  # the first comma outside brackets ends the first group
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            head = head[:i]
            break
    if "[" not in head:
        return head
    prefix, rest = head.split("[", 1)
    first = rest.rstrip("]").split(",")[0].split("-")[0]
    return prefix + first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: the torch function that runs a worker and then waits for the launcher (its locals are read below)
_TORCH_WORKER_WRAPPER = ("torch.distributed.elastic.multiprocessing.api", "_wrap")


def _finished_reading_event() -> Any:
    """The event torch's elastic worker wrapper waits on after the worker function returned, or ``None``.

    It is a local of the wrapper's frame (``queue_finished_reading_event`` in
    :data:`_TORCH_WORKER_WRAPPER`), the only place it exists in the worker; a torch whose wrapper
    differs yields ``None`` and the workers wait as torch makes them.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if (frame.f_globals.get("__name__"), frame.f_code.co_name) == _TORCH_WORKER_WRAPPER:
            event = frame.f_locals.get("queue_finished_reading_event")
            return event if callable(getattr(event, "set", None)) else None
        frame = frame.f_back
    return None


def _worker_entry(fn: Callable[..., Any], *args: Any) -> Any:
    """What :func:`launch` runs in each worker: ``fn(*args)``, and the process ends once its value is handed over.

    torch's elastic launcher takes a worker's return value through a queue; the worker process
    then waits, without a timeout, on an event that the launcher sets once it has read the values
    of *all* its workers.  Two cases never set it:

    * the launcher is shutting down (it got SIGTERM/SIGINT, or another worker died): it sends each
      worker one SIGTERM and SIGKILLs the workers still alive 30 s later.  A worker inside
      :meth:`Trainer.fit` catches that signal, finishes the step, writes its checkpoint and returns
      within about a second, and then sat in that wait for the rest of the 30 s;
    * one rank stopped on an error of its own (a ``ConfigError`` raised on rank 0 only, while the
      others wait for it at a barrier with the long timeout): its open connections keep the
      others waiting, and they keep the launcher from ever reading every value.  A deadlock.

    The wait guards nothing here: the queue is a ``SimpleQueue``, whose ``put`` has written the
    whole value into a pipe when it returns (it blocks while the pipe is full), and the launcher
    reads a pipe after its writer is gone just as well.  So the worker sets the event itself as its
    function returns: after ``put`` the process ends (status 0), which also releases any worker of
    this node that returned earlier, and closes its connections, so that peers still waiting for it
    in a collective fail at once (:class:`DistributedError`).  (Ending a worker that sleeps in the
    wait with ``os._exit`` instead would leave it counted as a sleeper of the event's condition, and
    a running launcher's own ``set()`` would then wait for it forever.)  A worker that raises is not
    affected: torch ends its process.
    """
    event = _finished_reading_event()
    value = fn(*args)
    if event is not None:
        event.set()
    return value


def launch(config: DDPConfig, fn: Callable[..., Any], *args: Any) -> Dict[int, Any]:
    """Run ``fn(*args)`` in ``nproc_per_node`` worker processes of this node (torchrun's launcher).

    Every worker finds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
    in its environment (:func:`init_distributed` joins the group).  Returns ``{global rank:
    return value}`` of this node's workers.  A worker that fails makes the launcher stop the others
    and raise ``ChildFailedError`` naming the rank and its error.  ``fn`` and ``args`` must pickle
    (the workers are spawned).  A SIGTERM/SIGINT to the launcher reaches the workers, which write
    their checkpoint and end (:func:`_worker_entry`); then the launcher raises torch's
    ``SignalException``.
    """
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    nproc = config.processes_per_node()
    if config.nnodes > 1:
        endpoint, run_id = config.endpoint(), os.environ.get("SLURM_JOB_ID", "graphgt")
    else:
        endpoint, run_id = f"127.0.0.1:{_free_port()}", uuid.uuid4().hex
    lc = LaunchConfig(min_nodes=config.nnodes, max_nodes=config.nnodes, nproc_per_node=nproc,
                      run_id=run_id, rdzv_backend="c10d", rdzv_endpoint=endpoint,
                      max_restarts=0, monitor_interval=0.1, start_method="spawn")
    return elastic_launch(lc, _worker_entry)(fn, *args)
