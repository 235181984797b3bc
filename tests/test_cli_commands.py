"""``graphgt --help`` / ``train --help`` stay light, ``graphgt presets``, ``graphgt show``, ``graphgt eval``."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from graphgt import cli
from tests.conftest import CONFIG_DIR, REPO

SMALL = ["data.num_nodes=300", "model.hidden=32", "model.layers=1", "trainer.max_epochs=2", "trainer.progress=false"]
HEAVY = ("torch_geometric", "graphgt.train", "graphgt.app", "graphgt.nn", "graphgt.data")

PROBE = """
import sys
from graphgt.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print("MODULES", " ".join(sorted(sys.modules)))
"""


def loaded_modules(argv, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("WORLD_SIZE", None)
    p = subprocess.run([sys.executable, "-c", PROBE.format(argv=list(argv))], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    line = next(line for line in p.stdout.splitlines() if line.startswith("MODULES "))
    return p, set(line.split()[1:])


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["train", "--cfg", "job"], ["presets"],
                                  ["show", "cora-gcn"]])
def test_help_presets_show_import_no_training_stack(argv, tmp_path):
    p, modules = loaded_modules(argv, tmp_path)
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], f"graphgt {' '.join(argv)} imported {heavy[:10]}"
    assert "graphgt.cli" in modules
    if argv == ["train", "--help"]:  # Hydra's help: the groups and their options, composed from configs/
        assert "== Configuration groups ==" in p.stdout and "attention: " in p.stdout, p.stdout[-2000:]
        assert "hydra" in modules


def test_report_imports_no_training_stack(tmp_path):
    p, modules = loaded_modules(["report", str(tmp_path)], tmp_path)
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [] and "graphgt.eval.report" in modules


# ------------------------------------------------------------------------------------- presets
def test_presets_lists_every_preset_with_its_first_comment_line(capsys):
    cli.main(["presets"])
    out = capsys.readouterr().out
    files = sorted((CONFIG_DIR / "experiment").rglob("*.yaml"))
    assert f"{len(files)} preset(s)" in out
    line = next(line for line in out.splitlines() if line.startswith("cora-gcn "))
    assert line.split(None, 1)[1] == ("GCN (Kipf & Welling, ICLR 2017) on Cora, public split: published 81.5% "
                                      "test accuracy.")
    assert "@package" not in out


def test_presets_filter_glob_substring_and_no_match(capsys):
    cli.main(["presets", "cora-*"])
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[:-2] if line.strip()]
    assert names == sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("cora-*.yaml")) and len(names) >= 2
    cli.main(["presets", "Kipf"])  # a word of the description
    out = capsys.readouterr().out
    assert out.startswith("cora-gcn ") and "1 preset(s)" in out
    with pytest.raises(SystemExit) as e:
        cli.main(["presets", "no-such-thing"])
    assert e.value.code == 2 and "no preset matches 'no-such-thing'" in capsys.readouterr().err


def test_presets_include_subfolders(tmp_path, monkeypatch, capsys):
    (tmp_path / "experiment" / "ogb").mkdir(parents=True)
    (tmp_path / "experiment" / "ogb" / "arxiv-gcn.yaml").write_text("# @package _global_\n\n# GCN on arxiv\nseed: 1\n")
    (tmp_path / "experiment" / "plain.yaml").write_text("seed: 2\n")
    monkeypatch.setattr(cli, "CONFIG_DIR", str(tmp_path))
    cli.main(["presets"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ogb/arxiv-gcn", "GCN", "on", "arxiv"] and lines[1].strip() == "plain"


# ---------------------------------------------------------------------------------------- show
def test_show_prints_the_composed_config_with_overrides(capsys):
    cli.main(["show", "cora-gcn", "seed=3", "model.hidden=24"])
    out = capsys.readouterr().out
    assert out.startswith("# graphgt train experiment=cora-gcn seed=3 model.hidden=24\n")
    cfg = yaml.safe_load(out)
    assert cfg["seed"] == 3 and cfg["model"]["hidden"] == 24
    assert cfg["data"]["_target_"] == "graphgt.data.planetoid.PlanetoidData" and cfg["data"]["name"] == "Cora"
    assert cfg["model"]["_target_"] == "graphgt.nn.model.MPNNModel"
    assert cfg["attention"] is None or "_target_" not in (cfg["attention"] or {})


def test_show_unknown_preset_names_it_and_close_matches(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["show", "cora-gnc"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "no preset 'cora-gnc'" in err and "did you mean: cora-gcn" in err
    with pytest.raises(SystemExit) as e:
        cli.main(["show", "cora-gcn", "model.hiden=3"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "model.hiden" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------- eval
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished run, trained through the CLI (2 epochs on a 300-node synthetic graph)."""
    root = tmp_path_factory.mktemp("eval")
    run_dir = root / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "GRAPHGT_CACHE": str(root / "cache")}
    p = subprocess.run([sys.executable, "-m", "graphgt.cli", "train", *SMALL, f"hydra.run.dir={run_dir}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return run_dir


def test_eval_equals_results_json(finished_run, tmp_path, capsys):
    results = json.loads((finished_run / "results.json").read_text())
    out = tmp_path / "eval.json"
    cli.main(["eval", str(finished_run), "--json", str(out)])
    printed = capsys.readouterr().out
    got = json.loads(out.read_text())
    assert got["ckpt"] == "best" and got["epoch"] == results["best_epoch"] and got["metric"] == results["metric"]
    assert got["splits"]["val"]["metric"] == results["best_val"]
    assert got["splits"]["test"]["metric"] == results["test_at_best_val"]
    assert got["recorded"] == {"val": results["best_val"], "test": results["test_at_best_val"]}
    assert got["splits"]["val"]["loss"] > 0
    assert f"{results['best_val']:.6f}" in printed and f"{results['test_at_best_val']:.6f}" in printed
    # the loss too: the best epoch's row of metrics.csv
    rows = {int(r["epoch"]): r for r in csv.DictReader(open(finished_run / "metrics.csv"))}
    assert got["splits"]["val"]["loss"] == pytest.approx(float(rows[results["best_epoch"]]["val_loss"]), rel=1e-6)


def test_eval_last_checkpoint_and_one_split_equal_metrics_csv(finished_run, capsys):
    cli.main(["eval", str(finished_run / "last.pt"), "split=test"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("last.pt, epoch 2") and [line.split()[0] for line in lines[2:]] == ["test"]
    last = list(csv.DictReader(open(finished_run / "metrics.csv")))[-1]
    name = json.loads((finished_run / "results.json").read_text())["metric"]
    test_loss, test_metric, recorded = (float(x) for x in lines[2].split()[1:])
    assert test_metric == pytest.approx(float(last[f"test_{name}"]), abs=1e-6) and recorded == test_metric
    assert test_loss == pytest.approx(float(last["test_loss"]), rel=1e-5)


def test_eval_clear_errors(finished_run, tmp_path, capsys):
    def fails(*argv):
        with pytest.raises(SystemExit) as e:
            cli.main(["eval", *argv])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    assert "is not a run directory of graphgt train (no .hydra/config.yaml" in fails(str(tmp_path))
    assert f"'{tmp_path / 'nope'}' does not exist" in fails(str(tmp_path / "nope"))
    assert "split=train is not a split" in fails(str(finished_run), "split=train")
    copy = tmp_path / "copy"
    shutil.copytree(finished_run / ".hydra", copy / ".hydra")
    assert "holds no best.pt" in fails(str(copy))
    shutil.copy(finished_run / "last.pt", copy / "last.pt")
    assert "holds no best.pt (ckpt=best); ckpt=last evaluates its last.pt" in fails(str(copy))
    config = copy / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("hidden: 32", "hidden: 48"))
    err = fails(str(copy), "ckpt=last")
    assert "written by a run with a different config" in err and "model.hidden: 32 in the checkpoint, 48 now" in err
