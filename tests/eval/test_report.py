import json
import statistics
import subprocess
import sys

import pytest

import graphgt.eval.report as report_module
from graphgt.eval.report import _fmt, aggregate, find_results, main, mean_curves, mean_std


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


# ------------------------------------------------------------------ labels, grouping, folds, columns
def _result(dir_, seed, test, val, config=None, dataset="Cora", overrides=(), **extra):
    """A fake finished run: results.json (and .hydra/overrides.yaml when ``overrides``)."""
    dir_.mkdir(parents=True)
    config = {"seed": seed, "model": {"hidden": 64, "layers": 2}, "data": {"root": "/r", "name": dataset},
              "trainer": {"progress": True, "device": "auto"}, **(config or {})}
    (dir_ / "results.json").write_text(json.dumps({
        "metric": "accuracy", "best_val": val, "test_at_best_val": test, "best_epoch": 3, "num_params": 1000,
        "seed": seed, "epoch_time_s": 0.1, "dataset": dataset, "choices": {"data": "cora", "local": "gcn"},
        "config": config, **extra}))
    if overrides:
        (dir_ / ".hydra").mkdir()
        (dir_ / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))


def test_labels_name_the_keys_that_differ_between_groups(tmp_path, capsys):
    """A sweep model.hidden=16,128 seed=0,1,2: two rows told apart by model.hidden (in numeric order);
    a key that follows it (an interpolation) is not repeated in the label."""
    for job, (hidden, seed) in enumerate((h, s) for h in (16, 128) for s in range(3)):
        _result(tmp_path / "sweep" / str(job), seed, 0.7 + hidden / 1000, 0.6,
                {"model": {"hidden": hidden, "layers": 2}, "pe": {"dim": hidden}},
                overrides=[f"model.hidden={hidden}", f"seed={seed}"])
    rows = aggregate(find_results([str(tmp_path)]))
    assert [r["label"] for r in rows] == ["data=cora local=gcn model.hidden=16", "data=cora local=gcn model.hidden=128"]
    assert [r["num_seeds"] for r in rows] == [3, 3]
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "| data=cora local=gcn model.hidden=16 |" in out and "| data=cora local=gcn model.hidden=128 |" in out


def test_display_only_keys_do_not_split_groups(tmp_path):
    runs = [{"trainer": {"progress": False, "device": "cuda", "checkpoint": False, "resume": "auto", "compile": True}},
            {"logger": {"_target_": "x.CSVLogger", "name": "b"}, "cache_dir": "/c2", "hydra": {"job": 1}},
            {"data": {"root": "/other", "name": "Cora", "num_workers": 4, "prefetch_factor": 3, "placement": "cpu"}}]
    for seed, extra in enumerate(runs):
        _result(tmp_path / str(seed), seed, 0.8, 0.7, extra)
    _result(tmp_path / "other", 0, 0.5, 0.5, {"model": {"hidden": 64, "layers": 3}})  # a real difference
    rows = aggregate(find_results([str(tmp_path)]))
    assert sorted(r["num_runs"] for r in rows) == [1, 3]
    assert sorted(r["label"] for r in rows) == ["data=cora local=gcn model.layers=2", "data=cora local=gcn model.layers=3"]


def test_cross_validation_folds_x_seeds_are_one_row(tmp_path, capsys):
    """data.split.fold=0,1,2,3,4 seed=0,1: one row, mean ± unbiased std over the 10 runs, 5 folds."""
    tests = {}
    for job, (fold, seed) in enumerate((f, s) for f in range(5) for s in range(2)):
        tests[job] = 0.70 + 0.01 * fold + 0.003 * seed
        split = {"_target_": "graphgt.data.splits.KFoldSplit", "k": 5, "fold": fold, "seed": 0, "stratify": True}
        _result(tmp_path / "cv" / str(job), seed, tests[job], 0.6 + 0.01 * fold,
                {"data": {"root": "/r", "name": "Cora", "split": split}})
    _result(tmp_path / "other" / "0", 0, 0.1, 0.1, {"data": {"root": "/r", "name": "Cora",
                                                               "split": {"_target_": "RandomSplit"}}})
    rows = aggregate(find_results([str(tmp_path / "cv")]))
    assert len(rows) == 1
    row = rows[0]
    assert (row["num_runs"], row["num_seeds"], row["num_folds"]) == (10, 2, 5)
    assert row["folds"] == [f"data.split.fold={f}" for f in range(5)]  # the constant dealing seed is not named
    assert row["test_mean"] == pytest.approx(statistics.fmean(tests.values()))
    assert row["test_std"] == pytest.approx(statistics.stdev(tests.values()))
    main([str(tmp_path / "cv")])
    out = capsys.readouterr().out
    assert f"| {_fmt(row['test_mean'], row['test_std'])} |" in out and "| 2 | 5 | 1,000 |" in out
    assert len(aggregate(find_results([str(tmp_path)]))) == 2  # another split is another group


def test_split_files_are_folds(tmp_path):
    for fold in range(3):
        _result(tmp_path / str(fold), 0, 0.7, 0.6, {"data": {"name": "Cora", "split": {
            "_target_": "graphgt.data.splits.IndexFileSplit", "path": f"/splits/fold{fold}.npz"}}})
    (row,) = aggregate(find_results([str(tmp_path)]))
    assert (row["num_folds"], row["num_runs"]) == (3, 3)


def test_random_split_seeds_are_folds(tmp_path):
    """data.split.seed=0..4 of a PerClassSplit (Planetoid-style random splits): one row of 5 folds."""
    for idx in range(5):
        _result(tmp_path / str(idx), 0, 0.8 + 0.01 * idx, 0.6, {"data": {"name": "Cora", "split": {
            "_target_": "graphgt.data.splits.PerClassSplit", "train_per_class": 20, "seed": idx}}})
    _result(tmp_path / "other", 0, 0.5, 0.5, {"data": {"name": "Cora", "split": {
        "_target_": "graphgt.data.splits.PerClassSplit", "train_per_class": 5, "seed": 0}}})
    rows = aggregate(find_results([str(tmp_path)]))
    (row,) = [r for r in rows if r["num_runs"] == 5]
    assert len(rows) == 2 and row["num_folds"] == 5 and row["test_mean"] == pytest.approx(0.82)
    assert row["folds"] == [f"data.split.seed={i}" for i in range(5)]


def test_fixed_dataset_splits_are_folds(tmp_path):
    """WebKB's 10 geom-gcn splits (data.split_index=0..9) are one row of 10 folds, like a k-fold CV."""
    for idx in range(10):
        _result(tmp_path / str(idx), 0, 0.5 + 0.01 * idx, 0.6, {"data": {"name": "cornell", "split_index": idx}},
                dataset=f"WebKB/cornell[split {idx}]")
    (row,) = aggregate(find_results([str(tmp_path)]))
    assert row["dataset"] == "WebKB/cornell"
    assert (row["num_folds"], row["num_runs"], row["num_seeds"]) == (10, 10, 1)
    assert row["folds"][:2] == ["data.split_index=0", "data.split_index=1"]
    assert row["test_mean"] == pytest.approx(0.545)


def test_hardware_versions_and_commit_columns(tmp_path, capsys):
    versions = {"graphgt": "0.1.0", "torch": "2.13.0", "torch_geometric": "2.8.1", "ogb": "1.3.6", "python": "3.11"}
    for seed in range(2):
        _result(tmp_path / "new" / str(seed), seed, 0.8, 0.7, {"model": {"hidden": 8}}, versions=versions,
                git={"commit": "0123456789abcdef", "dirty": seed == 1},
                hardware={"processor": "x86_64", "threads": 2, "cuda": "NVIDIA H200" if seed else None})
    _result(tmp_path / "old" / "0", 0, 0.8, 0.7, {"model": {"hidden": 9}}, hardware={"processor": "x86_64",
                                                                                   "torch": "2.1.0"})
    _result(tmp_path / "nogit" / "0", 0, 0.8, 0.7, {"model": {"hidden": 10}}, git=None, versions=versions)
    rows = {r["label"].split("=")[-1]: r for r in aggregate(find_results([str(tmp_path)]))}
    assert rows["8"]["hardware"] == "x86_64 (2 threads), NVIDIA H200"
    assert rows["8"]["versions"] == "graphgt 0.1.0 torch 2.13.0 PyG 2.8.1 ogb 1.3.6"
    assert rows["8"]["commit"] == "0123456789, 0123456789+dirty"
    assert (rows["9"]["versions"], rows["9"]["commit"]) == ("torch 2.1.0", "?")  # written before provenance
    assert rows["10"]["commit"] == "-"  # not run from a git checkout
    main([str(tmp_path / "new")])
    assert "| hardware | versions | commit |" in capsys.readouterr().out


@pytest.mark.parametrize("dataset,seeds,expected", [
    ("Cora", range(10), []),
    ("Cora", range(3), ["3 seeds: the OGB protocol reports 10 (seeds 0..9)"]),
    ("Cora", range(1, 11), ["seeds 1,2,3,4,5,6,7,8,9,10 are not 0..9 as the OGB protocol numbers them"]),
    ("ogbn-papers100M", range(3), []),
    ("ogbn-papers100M", [0, 5, 7], ["seeds 0,5,7 are not 0..2 as the OGB protocol numbers them"]),
    ("Cora", [*range(10), 3], ["seed 3 ran more than once with the same config (each run counts in the mean)"]),
])
def test_warnings_where_the_table_breaks_the_ogb_protocol(tmp_path, capsys, dataset, seeds, expected):
    for job, seed in enumerate(seeds):
        _result(tmp_path / str(job), seed, 0.8, 0.7, dataset=dataset)
    (row,) = aggregate(find_results([str(tmp_path)]))
    assert row["warnings"] == expected
    main([str(tmp_path)])
    out = capsys.readouterr().out
    for w in expected:
        assert f"- warning: data=cora local=gcn ({dataset}): {w}" in out
    assert ("warning" in out) == bool(expected)


def test_folds_run_with_different_seeds_are_named(tmp_path):
    for job, (fold, seed) in enumerate([(0, 0), (0, 1), (1, 0)]):
        _result(tmp_path / str(job), seed, 0.8, 0.7, {"data": {"name": "Cora", "split": {"fold": fold}}})
    (row,) = aggregate(find_results([str(tmp_path)]))
    assert row["warnings"][-1] == ("the folds were not run with the same seeds: data.split.fold=0: seeds 0,1; "
                                   "data.split.fold=1: seeds 0")


# ------------------------------------------------------------------------------------------ --plot
def _curves(dir_, rows):
    (dir_ / "metrics.csv").write_text("epoch,train_loss,val_loss,val_accuracy,test_loss,test_accuracy\n" + "".join(
        f"{e},1.0,1.0,{v},1.0,{t}\n" for e, (v, t) in enumerate(rows, start=1)))


def test_plot_draws_mean_curves_per_group(tmp_path, capsys):
    for seed in range(2):
        _result(tmp_path / "a" / str(seed), seed, 0.8, 0.7)
        _curves(tmp_path / "a" / str(seed), [(0.5 + 0.1 * seed, 0.4), (0.7 + 0.1 * seed, 0.6)])
    _result(tmp_path / "b" / "0", 0, 0.5, 0.5, {"model": {"hidden": 1}})  # logger=none: no metrics.csv
    (row,) = [r for r in aggregate(find_results([str(tmp_path)])) if r["num_runs"] == 2]
    curves, missing = mean_curves(row)
    assert curves["val"] == [(1, pytest.approx(0.55)), (2, pytest.approx(0.75))]
    assert curves["test"] == [(1, pytest.approx(0.4)), (2, pytest.approx(0.6))] and missing == []
    png = tmp_path / "plots" / "curves.png"
    main([str(tmp_path), "--plot", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert f"no metrics.csv in {tmp_path / 'b' / '0'}" in out and f"plot: {png}" in out


def test_plot_errors_are_clear(tmp_path, capsys, monkeypatch):
    _result(tmp_path / "0", 0, 0.8, 0.7)
    with pytest.raises(SystemExit) as e:  # no metrics.csv anywhere
        main([str(tmp_path), "--plot", str(tmp_path / "c.png")])
    assert e.value.code == 2 and "none of the runs has a metrics.csv" in capsys.readouterr().err
    _curves(tmp_path / "0", [(0.5, 0.4)])
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--plot", str(tmp_path / "c.jpeg")])
    assert "one of .png, .pdf, .svg" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not installed
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "--plot", str(tmp_path / "c.png")])
    assert e.value.code == 2 and "pip install 'graphgt[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


def _cv_runs(root, dataset, curves, higher_is_better):
    """One finished fold per test curve (best val 0.5 everywhere; test at best val = the first epoch's)."""
    for fold, curve in curves.items():
        _result(root / str(fold), 0, curve[0] if curve else 0.5, 0.5, {"data": {"root": "/r", "name": dataset, "split": {"fold": fold}}},
                dataset=dataset, higher_is_better=higher_is_better)
        if curve:
            _curves(root / str(fold), [(0.5, t) for t in curve])


def test_select_mean_test_is_xu_et_al_cross_validation_protocol(tmp_path, capsys):
    # three folds; epoch 2 has the best mean test score (0.80) although no fold peaks there alone
    tests = {0: [0.70, 0.80, 0.90], 1: [0.90, 0.85, 0.60], 2: [0.60, 0.75, 0.70]}
    _cv_runs(tmp_path / "cv", "MUTAG", tests, True)
    (row,) = aggregate(find_results([str(tmp_path / "cv")]))
    assert row["num_folds"] == 3 and row["test_mean"] == pytest.approx(statistics.fmean([0.7, 0.9, 0.6]))
    assert report_module.select_mean_test_epoch(row) is None
    assert row["selected_epoch"] == 2
    assert (row["test_mean"], row["test_std"]) == pytest.approx(mean_std([0.80, 0.85, 0.75]))
    main([str(tmp_path / "cv"), "--select", "mean-test"])
    out = capsys.readouterr().out
    assert "test (best mean-test epoch, optimistic)" in out and "0.8000 ± 0.0500 (epoch 2)" in out
    assert "chosen on the test folds" in out
    # lower is better (RMSE): the epoch with the lowest mean; epochs 1 and 3 tie (0.7333): the earlier one
    _cv_runs(tmp_path / "reg", "X", tests, False)
    (row,) = aggregate(find_results([str(tmp_path / "reg")]))
    assert report_module.select_mean_test_epoch(row) is None and row["selected_epoch"] == 1
    # a run without per-epoch test scores: the row stays at best val, and the report says why
    _cv_runs(tmp_path / "cv", "MUTAG", {3: []}, True)
    main([str(tmp_path / "cv"), "--select", "mean-test"])
    out = capsys.readouterr().out
    assert "not re-scored, still at best val" in out and str(tmp_path / "cv" / "3") in out
    assert "test (at best val)" in out


def test_report_module_imports_neither_torch_nor_pyg():
    """graphgt report must start fast: report.py itself pulls in the standard library only."""
    code = ("import importlib.util, sys; s = importlib.util.spec_from_file_location('r', sys.argv[1]); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
            "print(sorted(k for k in ('torch', 'torch_geometric', 'numpy', 'matplotlib', 'graphgt') if k in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, report_module.__file__], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
