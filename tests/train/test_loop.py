"""The training loop: golden losses on a fixed seed, learning on the embedded dataset, schedules."""
import math

import pytest
import torch

from graphgt.train.optim import WarmupCosine
from graphgt.app import build_objective, build_trainer, run
from tests.conftest import compose_with_choices

TINY = ["data.num_nodes=400", "model.hidden=16", "model.layers=2", "trainer.max_epochs=3",
        "trainer.progress=false", "trainer.checkpoint=false", "logger=none", "pe=none"]


def _run(tmp_path, overrides):
    cfg, choices = compose_with_choices(TINY + overrides)
    return run(cfg, tmp_path / "run", choices)


def test_golden_losses_on_fixed_seed(tmp_path):
    """Same seed, same numbers: a change of the model/loop/data that alters training shows up here."""
    torch.set_num_threads(1)
    r1 = _run(tmp_path / "a", [])
    r2 = _run(tmp_path / "b", [])
    assert r1["final_train_loss"] == r2["final_train_loss"]
    assert r1["final_train_loss"] == pytest.approx(GOLDEN["final_train_loss"], abs=1e-4)
    assert r1["best_val"] == pytest.approx(GOLDEN["best_val"], abs=1e-6)
    assert r1["num_params"] == GOLDEN["num_params"]


GOLDEN = {"final_train_loss": 1.6227514743804932, "best_val": 0.3100000023841858, "num_params": 5941}


def test_loop_learns_the_embedded_dataset(tmp_path):
    r = _run(tmp_path, ["data.num_nodes=1000", "attention=none", "model.hidden=64", "trainer.max_epochs=40", "trainer.optimizer.lr=0.005"])
    assert r["best_val"] > 0.85  # 5 classes: chance is 0.2
    assert r["test_at_best_val"] > 0.85


def test_warmup_cosine_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = WarmupCosine(warmup_epochs=2, min_lr_ratio=0.1).build(opt, steps_per_epoch=5, max_epochs=10)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))


def test_limit_train_batches_budget(tmp_path):
    """Training stops after the budget; the run still evaluates whole splits."""
    cfg, choices = compose_with_choices(["data=pyg-fake", "local=gin", "pe=none", "model.hidden=16",
                                         "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                                         "trainer.progress=false", "logger=none", "trainer.checkpoint=false"])
    from graphgt.train import loop

    seen = []
    original = loop.select
    loop.select = lambda out, batch: (seen.append(batch.num_graphs), original(out, batch))[1]
    try:
        r = run(cfg, tmp_path / "run", choices)
    finally:
        loop.select = original
    # 2 training batches of 32 graphs, then every val (20) and test (20) graph of FakeDataset(200)
    assert seen == [32, 32, 20, 20] and r["epochs"] == 1


def test_test_split_once_at_the_end_with_best_weights(tmp_path):
    """test_every_epoch=false: test once, with the best-validation weights, equal to evaluating best.pt."""
    from graphgt.train import loop

    calls = []
    original = loop.Trainer.evaluate

    def counting(self, model, loader, task, desc="eval", dist=None):
        calls.append(desc)
        return original(self, model, loader, task, desc, dist)

    loop.Trainer.evaluate = counting
    try:
        cfg, choices = compose_with_choices(TINY + ["trainer.test_every_epoch=false", "trainer.checkpoint=true",
                                                    "trainer.max_epochs=4"])
        r = run(cfg, tmp_path / "run", choices)
    finally:
        loop.Trainer.evaluate = original
    assert calls.count("val") == 4 and calls.count("test") == 1
    # the reported test score is the one of the best-validation weights (best.pt)
    from hydra.utils import instantiate
    from pathlib import Path

    cfg2, _ = compose_with_choices(TINY + ["trainer.max_epochs=4"])
    data = instantiate(cfg2.data)
    data.load(Path(cfg2.cache_dir))
    data.setup([], Path(cfg2.cache_dir))
    model = instantiate(cfg2.model, _partial_=True)(spec=data.spec, local=instantiate(cfg2.local),
                                                    attention=instantiate(cfg2.attention), pe=[])
    model.load_state_dict(torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"])
    trainer, _ = build_trainer(cfg2)
    expected = trainer.evaluate(model, data.test_loader(), build_objective(data.spec)).metric
    assert r["test_at_best_val"] == pytest.approx(expected, abs=1e-12)


def test_sampled_training_is_the_same_with_workers_and_device_placement(tmp_path):
    """The trainer consumes the store loaders through the prefetcher: main-process gathering, workers
    gathering into shared memory, and features placed on the device (on CPU: one torch tensor) give
    bit-identical runs; ``data.place`` learns the trainer's device."""
    from tests.data.store.test_node import csbm_store

    store = csbm_store(tmp_path / "csbm", num_nodes=600)
    base = ["data=store", f"data.source.path={store.path}", "model=mpnn", "local=sage", "attention=none",
            "model.raw_io=true", "model.hidden=16", "trainer.max_epochs=2", "trainer.progress=false",
            "trainer.checkpoint=false", "logger=none", "pe=none", "data.batch_size=64",
            "data.eval_batch_size=128", "data.sampler.fanouts=[5,3]", "trainer.limit_train_batches=3"]
    torch.set_num_threads(1)
    results = [run(*_compose(base + extra, tmp_path / f"run{i}"))
               for i, extra in enumerate([["data.num_workers=0", "data.placement=cpu"],
                                          ["data.num_workers=2", "data.placement=cpu"],
                                          ["data.num_workers=1", "data.placement=device"]])]
    for r in results[1:]:
        for key in ("final_train_loss", "best_val", "test_at_best_val"):
            assert r[key] == results[0][key], key


def _compose(overrides, run_dir):
    cfg, choices = compose_with_choices(overrides)
    return cfg, run_dir, choices
