"""Worker of ``test_distributed_evaluation_equals_single_process_exactly``.

Run as ``python ddp_eval_worker.py OUT_DIR CACHE_DIR`` with torchrun's environment variables
(``WORLD_SIZE=1``: the single-process reference).  Builds three data modules (graph-level
mini-batches, a sampled node-level store, a full-batch node-level graph) and one model each from a
fixed seed, evaluates the validation split with :meth:`Trainer.evaluate` over this process group,
and writes ``OUT_DIR/<case>_w<WORLD>_r<RANK>.pt`` with the gathered predictions, targets, loss and
metric.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from graphgt.train.distributed import init_distributed, shutdown  # noqa: E402
from graphgt.train.loop import Trainer  # noqa: E402
from graphgt.app import build_objective, seed_everything  # noqa: E402
from tests.conftest import compose  # noqa: E402
from tests.data.store.test_node import csbm_store  # noqa: E402

CASES = {
    "graph": ["data=pyg-fake", "data.dataset.num_graphs=300", "data.batch_size=7", "local=gin",
              "model.hidden=16", "model.layers=2", "pe=none"],
    "sampled_node": ["data=store", "data.batch_size=64", "data.eval_batch_size=50", "model=gps", "local=sage",
                     "attention=performer", "model.hidden=16", "model.layers=2", "pe=none",
                     "data.sampler.fanouts=[5,3]"],
    "full_batch_node": ["data.num_nodes=300", "model.hidden=16", "model.layers=2", "pe=none"],
}


def main(out: Path, cache: Path) -> None:
    dist = init_distributed(None, "cpu")
    store = cache / "csbm-store"
    if dist.is_main and not store.exists():
        csbm_store(store, num_nodes=800)
    dist.barrier()
    for case, overrides in CASES.items():
        if case == "sampled_node":
            overrides = overrides + [f"data.source.path={store}"]
        cfg = compose(overrides + [f"cache_dir={cache}"])
        seed_everything(0)
        data = instantiate(cfg.data)
        data.load(cache)
        data.setup([], cache)
        seed_everything(0)
        model = instantiate(cfg.model, _partial_=True)(spec=data.spec, local=instantiate(cfg.local),
                                                       attention=instantiate(cfg.attention), pe=[])
        trainer = Trainer(device="cpu", progress=False)
        loader = data.val_loader(dist.rank, dist.world_size)
        items = sum(int(b.loss_mask.sum()) if hasattr(b, "loss_mask") else int(b.num_graphs) for b in loader)
        res = trainer.evaluate(model, loader, build_objective(data.spec), "val", dist)
        target = torch.cat([b.y[b.loss_mask] if hasattr(b, "loss_mask") else b.y
                            for b in data.val_loader()])  # the single-process order, read directly
        torch.save({"pred": res.pred, "target": target, "loss": res.loss, "metric": res.metric,
                    "items": int(sum(dist.all_sum([items])))},
                   out / f"{case}_w{dist.world_size}_r{dist.rank}.pt")
    shutdown(dist)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
