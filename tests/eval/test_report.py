import json
import statistics

import pytest

from graphgt.eval.report import aggregate, find_results, main, markdown, mean_std


def _write(dir_, seed, test, val, hidden=64):
    dir_.mkdir(parents=True)
    (dir_ / "results.json").write_text(json.dumps({
        "metric": "accuracy", "best_val": val, "test_at_best_val": test, "best_epoch": 3, "num_params": 1000,
        "seed": seed, "duration_s": 1.0, "epoch_time_s": 0.1, "dataset": "Cora",
        "choices": {"data": "cora", "local": "gcn"},
        "config": {"seed": seed, "model": {"hidden": hidden}, "data": {"root": f"/r{seed}", "name": "Cora"}}}))


def test_mean_std_is_unbiased():
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, statistics.stdev([1, 2, 3, 4])))
    assert mean_std([1.0, 2.0, 3.0, 4.0])[1] == pytest.approx(1.2909944, abs=1e-6)  # n-1, not n (1.118)


def test_report_groups_by_config_without_seed_and_root(tmp_path, capsys):
    for i, (t, v) in enumerate([(0.80, 0.78), (0.82, 0.79), (0.81, 0.80)]):
        _write(tmp_path / "sweep" / str(i), i, t, v)
    _write(tmp_path / "other" / "0", 0, 0.5, 0.5, hidden=128)
    rows = aggregate(find_results([str(tmp_path / "**")]))
    assert len(rows) == 2
    main_row = next(r for r in rows if r["num_seeds"] == 3)
    assert main_row["test_mean"] == pytest.approx(0.81)
    assert main_row["test_std"] == pytest.approx(0.01)
    assert main_row["seeds"] == [0, 1, 2]
    out = tmp_path / "r.json"
    main([str(tmp_path / "sweep"), "--json", str(out)])
    assert "0.8100 ± 0.0100" in capsys.readouterr().out
    assert json.loads(out.read_text())[0]["num_seeds"] == 3


def test_report_without_results_exits_2(tmp_path):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path)])
    assert e.value.code == 2
