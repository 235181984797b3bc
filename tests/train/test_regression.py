"""Regression done right (issue 14): the loss choice (l1 | mse | huber | auto by metric), target
standardisation from the training split (inverted before every metric), and their config errors."""
from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf, open_dict
from torch_geometric.data import Data

from graphgt.app import build_objective, evaluate_run, objective_settings, run
from graphgt.config.validate import validate_config
from graphgt.data import PyGDataset, RandomSplit
from graphgt.errors import CheckpointError, ConfigError
from graphgt.spec import DataSpec, FloatFeatures, Task
from graphgt.train.losses import (MaskedHuberLossSum, TargetScale, loss_for, masked_l1_loss_sum,
                                  masked_mse_loss_sum, training_targets)
from tests.conftest import compose, compose_with_choices

SCALE, OFFSET = 1000.0, 5000.0


def regression_graph(num_nodes: int = 300, seed: int = 0, scale: float = SCALE, offset: float = OFFSET):
    """One graph (a ring plus random chords), 8 features; node target ``scale * x @ w + offset``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, 8, generator=g)
    w = torch.randn(8, 1, generator=g) / 8 ** 0.5
    ring = torch.arange(num_nodes)
    src = torch.cat([ring, torch.randint(0, num_nodes, (num_nodes,), generator=g)])
    dst = torch.cat([(ring + 1) % num_nodes, torch.randint(0, num_nodes, (num_nodes,), generator=g)])
    edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    return [Data(x=x, edge_index=edge_index, y=scale * (x @ w) + offset)]


# ------------------------------------------------------------------------------------------ losses
def _masked_pair():
    torch.manual_seed(0)
    pred = torch.randn(40, 3) * 3
    target = torch.randn(40, 3) * 3
    target[torch.rand(40, 3) < 0.3] = float("nan")
    valid = ~target.isnan()
    return pred, target, valid


@pytest.mark.parametrize("fn, reference", [
    (masked_l1_loss_sum, lambda p, t: F.l1_loss(p, t, reduction="sum")),
    (masked_mse_loss_sum, lambda p, t: F.mse_loss(p, t, reduction="sum")),
    (MaskedHuberLossSum(1.0), lambda p, t: F.huber_loss(p, t, reduction="sum", delta=1.0)),
    (MaskedHuberLossSum(2.5), lambda p, t: F.huber_loss(p, t, reduction="sum", delta=2.5)),
])
def test_regression_losses_match_torch_on_labelled_entries(fn, reference):
    pred, target, valid = _masked_pair()
    total, count = fn(pred, target)
    assert count == int(valid.sum()) and 0 < count < pred.numel()
    assert float(total) == pytest.approx(float(reference(pred[valid], target[valid])), rel=1e-6)


def test_huber_is_between_l1_and_mse_and_differs_from_both():
    pred, target, _ = _masked_pair()
    l1, mse = float(masked_l1_loss_sum(pred, target)[0]), float(masked_mse_loss_sum(pred, target)[0])
    huber = float(MaskedHuberLossSum(1.0)(pred, target)[0])
    assert huber < l1 and huber < mse / 2 + 1e-6 and huber != pytest.approx(l1)


def test_auto_loss_follows_the_metric():
    assert loss_for("regression", "auto", "rmse") is masked_mse_loss_sum
    assert loss_for("regression", "auto", "r2") is masked_mse_loss_sum
    assert loss_for("regression", "auto", "mae") is masked_l1_loss_sum
    assert loss_for("regression", "l1", "rmse") is masked_l1_loss_sum
    assert loss_for("regression", None, "rmse") is masked_l1_loss_sum  # a run recorded before the key: L1
    assert loss_for("regression", "huber", "rmse", 0.5).delta == 0.5

    def spec(metric):
        return DataSpec(task=Task("regression", 1, "graph", metric), node_features=FloatFeatures(3),
                        edge_features=None, name="t")

    assert build_objective(spec("ogb:ogbg-molesol")).criterion is masked_mse_loss_sum  # OGB's metric is rmse
    assert build_objective(spec("mae")).criterion is masked_l1_loss_sum
    assert build_objective(spec("mae"), "huber", 2.0).criterion.delta == 2.0


def test_loss_errors_name_the_key_and_the_task_loss():
    with pytest.raises(ValueError, match=r"loss=mse applies to regression tasks only; this is a multiclass task, "
                                         r"trained with cross-entropy"):
        loss_for("multiclass", "mse", "accuracy")
    with pytest.raises(ValueError, match="loss=huber applies to regression.*binary cross-entropy"):
        loss_for("binary", "huber", "rocauc")
    with pytest.raises(ValueError, match="loss='l2' is not a loss; choose one of auto, l1, mse, huber"):
        loss_for("regression", "l2", "rmse")
    with pytest.raises(ValueError, match="huber_delta=0.5 applies to loss=huber only"):
        loss_for("regression", "mse", "rmse", 0.5)


def test_config_errors_before_anything_runs():
    for overrides, message in [
        (["loss=l2"], r"loss='l2': expected one of 'auto', 'l1', 'mse', 'huber'"),
        (["target_standardize=maybe"], r"target_standardize='maybe': expected bool or one of 'auto'"),
        (["huber_delta=0.5"], r"huber_delta=0.5: applies to loss=huber only \(loss=auto\)"),
        (["loss=huber", "huber_delta=-1"], r"huber_delta=-1: must be > 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate_config(compose(overrides))
    validate_config(compose(["loss=huber", "huber_delta=2", "target_standardize=false"]))


@pytest.mark.parametrize("override, message", [
    ("loss=mse", r"loss=mse applies to regression tasks only; this is a multiclass task, trained with cross-entropy"),
    ("target_standardize=true", r"target_standardize=true applies to regression tasks only; dataset '.*' is a "
                                r"multiclass task"),
])
def test_regression_settings_on_a_classification_task_are_refused(tmp_path, override, message):
    cfg, choices = compose_with_choices(["data.num_nodes=100", "pe=none", "logger=none", "trainer.progress=false",
                                         override])
    with pytest.raises(ConfigError, match=message):
        run(cfg, tmp_path / "run", choices)
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_config_without_the_keys_keeps_its_old_objective():
    assert objective_settings(OmegaConf.create({"seed": 0})) == {"loss": None, "huber_delta": None,
                                                                 "target_standardize": False}
    assert objective_settings(compose([])) == {"loss": "auto", "huber_delta": None, "target_standardize": "auto"}


# -------------------------------------------------------------------------------- standardisation
def test_target_scale_fit_ignores_nan_and_inverts_exactly():
    y = torch.tensor([[1.0, 10.0], [3.0, float("nan")], [5.0, 30.0], [float("nan"), 50.0]])
    scale = TargetScale.fit(y)
    assert scale.mean == pytest.approx((3.0, 30.0)) and scale.std == pytest.approx((np.std([1, 3, 5]), np.std([10, 30, 50])))
    z = scale.standardize(y)
    assert torch.equal(z.isnan(), y.isnan())
    assert float(z[0, 0]) == pytest.approx((1 - 3) / np.std([1, 3, 5]))
    assert torch.allclose(scale.restore(z)[~y.isnan()], y[~y.isnan()])
    const = TargetScale.fit(torch.tensor([[2.0], [2.0]]))
    assert const.std == (1.0,) and const.mean == (2.0,)


def _node_module(graph):
    return PyGDataset(lambda: graph, level="node", task="regression", metric="rmse",
                      split=RandomSplit(0.6, 0.2, seed=0))


def test_statistics_come_from_the_training_split_only(tmp_path):
    graph = regression_graph()
    m = _node_module(graph)
    m.setup([], tmp_path)
    train_idx = m.split_indices[0]
    before = TargetScale.fit(training_targets(m, seed=0))
    expected = graph[0].y[train_idx].double()
    assert before.mean[0] == pytest.approx(float(expected.mean()), rel=1e-12)
    assert before.std[0] == pytest.approx(float(expected.std(unbiased=False)), rel=1e-12)
    # change every validation and test target (by a lot): the statistics do not move
    changed = [graph[0].clone()]
    others = torch.cat([m.split_indices[1], m.split_indices[2]])
    changed[0].y[others] = changed[0].y[others] * 50 - 1e6
    m2 = _node_module(changed)
    m2.setup([], tmp_path)
    assert torch.equal(m2.split_indices[0], train_idx)
    assert TargetScale.fit(training_targets(m2, seed=0)) == before
    # changing a training target does move them
    changed[0].y[train_idx[0]] += 1e5
    m3 = _node_module(changed)
    m3.setup([], tmp_path)
    assert TargetScale.fit(training_targets(m3, seed=0)).mean[0] > before.mean[0] + 100


def test_graph_level_and_store_backed_training_targets(tmp_path):
    graphs = [Data(x=torch.randn(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]), y=torch.tensor([[float(i)]]))
              for i in range(20)]
    m = PyGDataset(lambda: graphs, level="graph", task="regression", metric="mae",
                   split=RandomSplit(0.5, 0.25, seed=0), batch_size=4)
    m.setup([], tmp_path)
    got = training_targets(m, seed=3).reshape(-1).sort().values
    assert torch.equal(got, m.split_indices[0].double().sort().values)  # y of graph i is i
    y = np.arange(12, dtype=np.float32).reshape(6, 2)
    store = SimpleNamespace(y=y, split=lambda name: {"train": np.array([4, 0, 2])}[name])
    assert training_targets(SimpleNamespace(store=store), seed=0).tolist() == [[0, 1], [4, 5], [8, 9]]


def _regression_cfg(overrides):
    cfg, choices = compose_with_choices(["model=mpnn", "local=sage", "attention=none", "pe=none", "model.hidden=32",
                                         "model.dropout=0.0", "trainer.max_epochs=40", "trainer.optimizer.lr=0.01",
                                         "trainer.progress=false", "trainer.scheduler=null"] + overrides)
    with open_dict(cfg):
        cfg.pop("objective")  # the sweeper's key: the CLI does not pass it to run() (app.SWEEP_KEYS)
        cfg.data = OmegaConf.create({
            "_target_": "graphgt.data.pyg.PyGDataset", "level": "node", "task": "regression", "metric": "rmse",
            "dataset": {"_target_": "tests.train.test_regression.regression_graph", "_partial_": True},
            "split": {"_target_": "graphgt.data.splits.RandomSplit", "train": 0.6, "val": 0.2, "seed": 0}})
    return cfg, choices


def test_standardisation_learns_targets_of_scale_1000(tmp_path):
    """Targets ~ 1000 * N(0, 1) + 5000: with standardisation the RMSE after 40 epochs is a fraction of
    the targets' spread (~105 for a std of ~1040); without, the model does not even reach the offset
    (~2570) in the same 40 epochs.  Every number is in the
    targets' units (results.json, metrics.csv), and graphgt eval reproduces them."""
    torch.set_num_threads(1)
    cfg, choices = _regression_cfg([])
    std = run(cfg, tmp_path / "std", choices, record={"config.yaml": cfg})
    cfg, choices = _regression_cfg(["target_standardize=false"])
    raw = run(cfg, tmp_path / "raw", choices)
    y = regression_graph()[0].y
    spread = float(y.std())
    assert std["loss_fn"] == raw["loss_fn"] == "mse" and std["metric"] == "rmse"
    assert std["target_scale"]["mean"][0] == pytest.approx(OFFSET, abs=0.2 * SCALE)
    assert raw["target_scale"] is None
    print(f"\ntest RMSE with standardisation {std['test_at_best_val']:.1f}, without {raw['test_at_best_val']:.1f}, "
          f"target std {spread:.1f}")
    assert std["test_at_best_val"] < 0.25 * spread          # learnt: far below the mean predictor's RMSE
    assert raw["test_at_best_val"] > 2 * spread               # worse than predicting the mean (offset not reached)
    assert raw["test_at_best_val"] / std["test_at_best_val"] > 10
    # metrics.csv holds the same original-unit numbers as results.json
    with open(tmp_path / "std" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    best = rows[std["best_epoch"] - 1]
    assert float(best["val_rmse"]) == pytest.approx(std["best_val"], rel=1e-6)
    assert float(best["test_rmse"]) == pytest.approx(std["test_at_best_val"], rel=1e-6)
    # graphgt eval: the same statistics, the same numbers
    out = evaluate_run(tmp_path / "std")
    assert out["target_scale"] == std["target_scale"]
    assert out["splits"]["val"]["metric"] == pytest.approx(std["best_val"], rel=1e-5)
    assert out["splits"]["test"]["metric"] == pytest.approx(std["test_at_best_val"], rel=1e-5)
    saved = json.loads((tmp_path / "std" / "results.json").read_text())
    assert saved["target_scale"] == std["target_scale"]
    # statistics that no longer match the run's (the data changed since) are refused, not used
    saved["target_scale"]["mean"] = [saved["target_scale"]["mean"][0] + 1.0]
    (tmp_path / "std" / "results.json").write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="mean/std recomputed now .* differ from those run"):
        evaluate_run(tmp_path / "std")


def test_r2_is_a_task_metric(tmp_path):
    cfg, choices = _regression_cfg(["trainer.max_epochs=2", "logger=none", "trainer.checkpoint=false"])
    cfg.data.metric = "r2"
    r = run(cfg, tmp_path / "run", choices)
    assert r["metric"] == "r2" and r["higher_is_better"] and r["loss_fn"] == "mse"
    assert -5 < r["best_val"] < 1  # a coefficient of determination in the targets' units, not an RMSE of ~1000


def test_evaluate_returns_predictions_in_original_units(tmp_path):
    """Trainer.evaluate maps the model's (standardised) outputs back: pred = out * std + mean."""
    from graphgt.app import build_model_and_data, build_trainer

    cfg, _ = _regression_cfg(["trainer.max_epochs=1"])
    trainer, _ = build_trainer(cfg)
    data, model, objective = build_model_and_data(cfg)
    assert objective.scale is not None
    loader = data.val_loader()
    result = trainer.evaluate(model, loader, objective, "val")
    model.eval()
    batch = next(iter(loader))
    with torch.no_grad():
        raw = model(batch)[batch.loss_mask]
    mean, std = objective.scale.mean[0], objective.scale.std[0]
    assert torch.allclose(result.pred, raw * std + mean, rtol=1e-6, atol=1e-3)
    target = batch.y[batch.loss_mask]
    assert result.metric == pytest.approx(float(((raw * std + mean - target) ** 2).mean().sqrt()), rel=1e-5)
    # the reported loss is the training objective: MSE of the standardised targets
    assert result.loss == pytest.approx(float(((raw - (target - mean) / std) ** 2).mean()), rel=1e-5)
