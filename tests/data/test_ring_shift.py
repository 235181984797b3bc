"""The scaffold-shifted molecular regression task (issue 14) and the GPS failure it reproduces:
GraphGPS's RWSE encoder (BatchNorm on raw return probabilities) lets a ring size never seen in
training explode the test error; with the training-range clamp, GPS's test error stays at its
validation error."""
from __future__ import annotations

import pytest
import torch
from omegaconf import open_dict

from graphgt.app import run
from graphgt.data.ring_shift import RingShiftData, _has_odd_ring
from graphgt.errors import ConfigError
from graphgt.pe import RandomWalkSE
from tests.conftest import compose_with_choices


def test_the_shift_is_in_the_scaffolds_not_in_the_target():
    d = RingShiftData(num_train=300, num_val=100, num_test=100, seed=3)
    d.check()
    graphs = d.generate()
    assert [torch.equal(a.edge_index, b.edge_index) for a, b in zip(graphs, d.generate())] == [True] * 500
    train, val, test = graphs[:300], graphs[300:400], graphs[400:]
    assert not any(_has_odd_ring(g) for g in train + val)          # 6-rings and chains: bipartite
    assert sum(_has_odd_ring(g) for g in test) == 50                 # test_odd_rings=0.5
    for g in graphs:
        assert int(torch.bincount(g.edge_index[0]).max()) <= 3 and g.x.shape == (g.num_nodes, 1)
        assert g.edge_attr.shape == (g.edge_index.size(1), 1) and g.y.shape == (1, 1)
    ys = [torch.cat([g.y for g in part]).view(-1) for part in (train, val, test)]
    assert abs(float(ys[0].mean() - ys[2].mean())) < 0.1 and abs(float(ys[0].std() - ys[2].std())) < 0.1
    rw = RandomWalkSE(steps=8)
    odd = lambda gs: torch.cat([rw.compute(g.edge_index, g.num_nodes)["rwse"][:, 2::2] for g in gs])  # steps 3, 5, 7
    assert float(odd(train).abs().max()) == 0.0 and float(odd(test).max()) > 0.1


@pytest.mark.parametrize("kwargs, key", [({"num_val": 0}, "num_train / num_val / num_test"),
                                         ({"test_odd_rings": 1.5}, "test_odd_rings"),
                                         ({"min_atoms": 8}, "min_atoms")])
def test_bad_parameters_are_named(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        RingShiftData(**kwargs).check()


def _gps_run(tmp_path, name, clamp):
    cfg, choices = compose_with_choices([
        "data=ring-shift", "data.num_train=400", "data.num_val=100", "data.num_test=100",
        "local=gine", "attention=full", "pe=rwse", f"pe.rwse.encoder.clamp={str(clamp).lower()}",
        "model.hidden=32", "model.layers=2", "trainer.max_epochs=12", "trainer.progress=false",
        "trainer.optimizer.lr=0.002", "trainer.scheduler.warmup_epochs=1"])
    with open_dict(cfg):
        cfg.pop("objective")
    return run(cfg, tmp_path / name, choices)


def test_gps_test_error_stays_at_its_validation_error_on_unseen_scaffolds(tmp_path):
    """Same model, same seed: only the clamp differs. GraphGPS's encoder (clamp=false) has a test RMSE
    far above its validation RMSE (the odd-ring test molecules explode); with the clamp the two agree."""
    torch.set_num_threads(1)
    fixed = _gps_run(tmp_path, "clamp", True)
    broken = _gps_run(tmp_path, "noclamp", False)
    ratio = lambda r: r["test_at_best_val"] / r["best_val"]
    print(f"\ntest/val RMSE: clamp {fixed['test_at_best_val']:.4f}/{fixed['best_val']:.4f}, "
          f"GraphGPS encoder {broken['test_at_best_val']:.4f}/{broken['best_val']:.4f}")
    assert ratio(fixed) < 1.3
    assert ratio(broken) > 1.6
