"""bench/attention_scaling.py: the slope fit, the skip rule, the measurement, a tiny end-to-end run."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("attention_scaling", REPO / "bench" / "attention_scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def test_loglog_slope_recovers_exponents():
    ns = [2 ** k for k in range(12, 19)]
    assert bench.loglog_slope(ns, [3e-6 * n for n in ns]) == pytest.approx(1.0, abs=1e-9)
    assert bench.loglog_slope(ns, [5e-9 * n ** 2 for n in ns]) == pytest.approx(2.0, abs=1e-9)
    assert bench.loglog_slope(ns, [7.0 * n ** 1.5 for n in ns]) == pytest.approx(1.5, abs=1e-9)
    # non-positive values are left out; fewer than two sizes give no slope
    assert bench.loglog_slope([4, 8, 16], [0.0, 8.0, 32.0]) == pytest.approx(2.0, abs=1e-9)
    assert bench.loglog_slope([4, 8], [1.0, -1.0]) is None
    assert bench.loglog_slope([4], [1.0]) is None


def test_compute_slopes_upper_half_and_memory():
    timings = {"lin": {}, "quad": {}}
    for k in range(12, 19):
        n = 2 ** k
        # a constant overhead makes the all-sizes fit flatter than the upper-half fit
        timings["lin"][str(n)] = {"seconds": 0.05 + 1e-6 * n, "delta_mib": 1e-3 * n}
        timings["quad"][str(n)] = {"seconds": 1e-9 * n * n, "delta_mib": 2e-3 * n} if k < 16 else \
            {"skipped": "skipped (predicted 100 s > --max-seconds 60)"}
    slopes, upper, memory = bench.compute_slopes(timings, upper_from=15)
    assert slopes["quad"] == pytest.approx(2.0) and memory["quad"] == pytest.approx(1.0)
    assert memory["lin"] == pytest.approx(1.0)
    assert slopes["lin"] < upper["lin"] < 1.0
    assert upper["quad"] is None  # only N = 2^15 is measured in the upper half


def test_predict_skip_quadratic_and_memory():
    class Args:
        max_seconds = 60.0
        mem_cap_gib = 4.0

    last = (14, {"seconds": 20.0, "base_mib": 400.0, "delta_mib": 100.0})
    reason = bench.predict_skip("full", 15, last, Args)  # 20 s x 4 = 80 s > 60
    assert reason is not None and reason.startswith("skipped (predicted 80 s")
    assert bench.predict_skip("performer", 15, last, Args) is None  # 40 s, 0.6 GiB
    last = (14, {"seconds": 1.0, "base_mib": 400.0, "delta_mib": 1000.0})
    reason = bench.predict_skip("full", 15, last, Args)  # 0.4 + 3.9 GiB > 4 GiB
    assert reason is not None and "RAM cap" in reason
    assert bench.predict_skip("full", 12, None, Args) is None


def test_load_class_missing_module_is_clear(monkeypatch):
    monkeypatch.setitem(bench.MODULES, "nope", ("graphgt.nn.attention.no_such_file.Nope", {}))
    with pytest.raises(ImportError, match="graphgt.nn.attention.no_such_file not found"):
        bench.load_class("nope")
    monkeypatch.setitem(bench.MODULES, "nope", ("graphgt.nn.attention.full.NoSuchClass", {}))
    with pytest.raises(ImportError, match="has no class NoSuchClass"):
        bench.load_class("nope")


def test_measure_in_process_both_modules():
    """The child's measurement, run in this process (no import cost): positive times, a sane base RSS."""
    import torch

    n = 64
    edge_index = torch.from_numpy(bench.build_graph(n, bench.AVG_DEGREE * n, seed=0))
    threads = torch.get_num_threads()
    try:
        for name in ("full", "performer"):
            res = bench.measure(name, n, edge_index, threads=1, repeats=2, seed=0)
            assert res["status"] == "ok" and len(res["all_seconds"]) == 2
            assert res["seconds"] > 0 and res["min_seconds"] <= res["seconds"]
            assert res["hwm_mib"] >= res["base_mib"] > 0
    finally:
        torch.set_num_threads(threads)


def test_main_tiny_end_to_end(tmp_path):
    """Two sizes of one module, each in its own child process (~4 s each: the child imports torch)."""
    out = tmp_path / "attention.json"
    report = bench.main(["--sizes", "6", "7", "--modules", "performer", "--repeats", "1", "--threads", "1",
                         "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert set(report) == {"config", "timings", "slopes", "slopes_upper", "memory_slopes", "machine"}
    assert report["config"]["sizes"] == [64, 128] and report["config"]["dim"] == 64
    assert set(report["timings"]["performer"]) == {"64", "128"}
    for res in report["timings"]["performer"].values():
        assert res["seconds"] > 0 and len(res["all_seconds"]) == 1
        assert res["peak_mib"] >= res["base_mib"] > 0
        assert res["delta_mib"] == pytest.approx(res["peak_mib"] - res["base_mib"])
    assert math.isfinite(report["slopes"]["performer"])
    assert report["slopes_upper"] == {"performer": None}  # the upper half (N >= 2^7) has one size
    assert "performer" in report["memory_slopes"]
    assert report["machine"]["torch"]
