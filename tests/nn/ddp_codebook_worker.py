"""Worker of the 2-process DDP test of CodebookAttention (tests/nn/test_codebook.py).

Run as ``python ddp_codebook_worker.py RANK WORLD_SIZE PORT OUT_DIR``. Joins a gloo process group
on 127.0.0.1:PORT and, once with ``sync=True`` and once with ``sync=False``, trains
Linear -> CodebookAttention -> MSE with SGD under DistributedDataParallel for ``STEPS`` steps on
rank-specific random data, without DDP's per-forward buffer broadcast (so only the module's own
synchronisation can keep the codebooks equal). The codebook is initialised by an eval-mode call.
Writes ``OUT_DIR/{sync,nosync}_RANK.pt`` with the codebook buffers and the centroids right after
initialisation.
"""
from __future__ import annotations

import inspect
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from graphgt.nn.attention.base import AttentionContext  # noqa: E402
from graphgt.nn.attention.codebook import CodebookAttention  # noqa: E402
from tests.train.ddp import join_ranks_from_argv  # noqa: E402

STEPS, N, IN_DIM, DIM = 10, 16, 8, 8
# DDP must not copy rank 0's buffers before each forward (newer torch renamed the argument)
NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                  if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                  else {"broadcast_buffers": False})
BUFFERS = ("centroids", "ema_count", "ema_sum", "num_updates", "num_restarts")


class Net(nn.Module):
    def __init__(self, sync: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(IN_DIM, DIM)
        self.att = CodebookAttention(DIM, heads=2, codebook_size=16, decay=0.8,
                                     dead_threshold=0.2, sync=sync, seed=3)

    def forward(self, x: Tensor) -> Tensor:
        return self.att(self.lin(x), AttentionContext.single_graph(x.size(0)))


def run(sync: bool, rank: int) -> dict:
    torch.manual_seed(0)                                   # same initial weights on every rank
    net = Net(sync)
    ddp = DistributedDataParallel(net, **NO_BUFFER_SYNC)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(100 + rank)          # different data on every rank
    net.eval()
    with torch.no_grad():
        ddp(torch.randn(N, IN_DIM, generator=g))           # initialises the codebook
    init = net.att.centroids.clone()
    net.train()
    for step in range(STEPS):
        x = torch.randn(N, IN_DIM, generator=g) + 0.5 * step   # drifting inputs: stale centroids
        y = torch.randn(N, DIM, generator=g)
        loss = (ddp(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = {name: getattr(net.att, name).clone() for name in BUFFERS}
    out["init"] = init
    out["lin_weight"] = net.lin.weight.detach().clone()
    return out


def main() -> None:
    rank, world, out_dir = join_ranks_from_argv()
    try:
        for sync in (True, False):
            result = run(sync, rank)
            torch.save(result, os.path.join(out_dir, f"{'sync' if sync else 'nosync'}_{rank}.pt"))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
