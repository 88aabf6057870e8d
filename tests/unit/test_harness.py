"""Quick tests of the benchmark machinery: benchmarks.timing, .report, .machine, .flops (tiny sleeps and matmuls, few repeats)."""

from __future__ import annotations

import json
import mmap
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks.flops import count_flops_torch
from benchmarks.machine import machine_info, matmul_peak
from benchmarks.report import Report
from benchmarks.timing import Measurement, measure


def _synthetic(label, samples, flops=None):
    return Measurement(label=label, samples_ms=list(samples), flops=flops)


def test_warmup_not_counted_and_stats_consistent():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.001 * (1 + len(calls) % 3))

    m = measure(fn, warmup=3, repeats=5, label="sleep")
    assert len(calls) == 8
    assert m.repeats == len(m.samples_ms) == 5 and m.warmup == 3
    s = np.asarray(m.samples_ms)
    assert m.median_ms == np.median(s)
    assert m.min_ms == s.min() and m.max_ms == s.max()
    assert m.min_ms <= m.p25_ms <= m.median_ms <= m.p75_ms <= m.max_ms
    assert m.iqr_ms == pytest.approx(m.p75_ms - m.p25_ms)
    assert m.min_ms >= 0.9  # every run sleeps at least 1 ms
    assert m.gflops is None


def test_load_cpu_and_rss_fields_present():
    def busy():
        t = time.perf_counter()
        while time.perf_counter() - t < 0.01:
            pass

    m = measure(busy, warmup=1, repeats=3)
    assert len(m.loadavg_before) == 3 and len(m.loadavg_after) == 3
    assert m.cpu_time_s >= 0 and m.wall_time_s >= 0.029
    assert 0.05 < m.cores_used < 2.5  # one busy thread (less if the machine is contended)
    assert m.machine_busy_cores is not None and m.machine_busy_cores >= 0
    assert m.rss_before_mb > 0 and m.rss_peak_mb >= m.rss_before_mb - 1
    assert m.maxrss_mb > 0 and m.rss_peak_source in ("vmhwm", "sampled")

    idle = measure(lambda: time.sleep(0.01), warmup=0, repeats=3)
    assert idle.cores_used < 0.5


def test_rss_peak_sees_temporary_allocation():
    def alloc():
        # a fresh anonymous mapping: malloc could hand back already-resident heap pages
        with mmap.mmap(-1, 48 << 20) as buf:
            a = np.frombuffer(buf, dtype=np.uint8)
            a[::4096] = 1  # touch every page: 48 MB resident
            time.sleep(0.03)  # held long enough for the 5 ms sampler
            total = int(a[::4096].sum())
            del a
        return total

    m = measure(alloc, warmup=0, repeats=2)
    assert m.rss_delta_mb > 30
    assert m.rss_peak_mb >= m.rss_before_mb + 30


def test_gflops_from_flops():
    a = np.ones((64, 64), np.float32)
    m = measure(lambda: a @ a, warmup=1, repeats=3, flops=2 * 64**3)
    assert m.gflops == pytest.approx(2 * 64**3 / (m.median_ms * 1e-3) / 1e9)
    assert m.gflops_best >= m.gflops > 0


def test_bad_arguments():
    with pytest.raises(TypeError, match="callable"):
        measure(42)
    with pytest.raises(ValueError, match="repeats"):
        measure(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        measure(lambda: None, warmup=-1)
    with pytest.raises(ValueError, match="flops"):
        measure(lambda: None, flops=-5)
    with pytest.raises(ValueError, match="samples_ms"):
        Measurement(label="x", samples_ms=[])


def test_measurement_dict_round_trip():
    m = measure(lambda: None, warmup=0, repeats=4, label="noop", flops=10, extra={"k": 1})
    d = m.to_dict()
    json.dumps(d, allow_nan=False)
    m2 = Measurement.from_dict(json.loads(json.dumps(d)))
    assert m2.samples_ms == pytest.approx(m.samples_ms, abs=1e-6)
    assert m2.median_ms == pytest.approx(m.median_ms, abs=1e-6)
    assert (m2.label, m2.flops, m2.extra["k"]) == ("noop", 10, 1)
    assert d["median_ms"] == pytest.approx(m.median_ms, abs=1e-6)


def test_ratio_on_synthetic_measurements():
    rep = Report("r")
    ref = rep.add(_synthetic("ref", [10, 11, 12, 13, 14]), case="enc", backend="torch")
    rt = rep.add(_synthetic("rt", [4, 5, 6, 7, 8]), case="enc", backend="ort")
    assert rep.ratio(ref, rt) == pytest.approx(12 / 6)
    assert rep.ratio(("enc", "torch"), ("enc", "ort")) == pytest.approx(2.0)
    assert rep.ratio({"case": "enc", "backend": "ort"}, ref) == pytest.approx(0.5)
    r = rep.add_ratio("enc speed-up", ("enc", "torch"), ("enc", "ort"))
    assert r["ratio"] == pytest.approx(2.0)
    assert r["ratio_low"] == pytest.approx(11 / 7) and r["ratio_high"] == pytest.approx(13 / 5)
    assert r["ratio_best"] == pytest.approx(10 / 4)
    with pytest.raises(KeyError):
        rep.ratio("enc", ("enc", "ort"))  # ambiguous: two backends
    with pytest.raises(ValueError, match="duplicate"):
        rep.add(_synthetic("x", [1]), case="enc", backend="ort")


def _report():
    rep = Report("demo", machine={"cpu_model": "test cpu", "affinity_cpus": 2, "numpy": "x"})
    rep.set_peak({"gflops_median": 100.0, "gflops_best": 120.0, "n": 64, "threads": 2})
    rep.add(_synthetic("a", [2.0, 2.5, 3.0], flops=5e8), case="audio", backend="torch",
            group="encoders", batch=1)  # fmt: skip
    rep.add(_synthetic("b", [1.0, 1.2, 1.4], flops=5e8), case="audio", backend="ort",
            group="encoders", batch=1)  # fmt: skip
    rep.run(lambda: None, case="noop", backend="ort", group="misc", warmup=0, repeats=2)
    rep.add_ratio("audio", ("audio", "torch"), ("audio", "ort"), note="same weights")
    return rep


def test_report_json_round_trip_and_save(tmp_path):
    rep = _report()
    p = rep.to_json(tmp_path / "r.json")
    back = Report.from_json(p)
    assert back.to_dict() == rep.to_dict()
    assert back.find("audio", "ort").median_ms == pytest.approx(1.2)
    j, md = rep.save(tmp_path / "out", "bench")
    assert j.name == "bench.json" and md.name == "bench.md"
    assert json.loads(j.read_text())["schema"] == Report.SCHEMA
    assert md.read_text() == rep.to_markdown()
    with pytest.raises(ValueError, match="schema"):
        Report.from_dict({"schema": "other"})


def test_markdown_has_a_row_per_case():
    md = _report().to_markdown()
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| case")]
    data_rows = [r for r in rows if not r.startswith("| name") and "×" not in r]
    assert len(data_rows) == 3
    assert "## encoders" in md and "## misc" in md
    torch_row = next(r for r in data_rows if "| torch |" in r)
    # 5e8 FLOP at 2.5 ms = 200 GFLOP/s = 200% of the 100 GFLOP/s peak
    assert "| 200.0 | 200 |" in torch_row
    assert "2.08×" in md  # the ratio table: 2.5 / 1.2
    assert "test cpu" in md and "100.0 GFLOP/s" in md


def test_matmul_peak_positive():
    p = matmul_peak(threads=1, n=128, repeats=3)
    assert p["gflops_median"] > 0 and p["gflops_best"] >= p["gflops_median"]
    assert p["n"] == 128 and p["dtype"] == "float32"
    assert isinstance(p["threads"], int) and p["threads"] >= 1
    m = Measurement.from_dict(p["measurement"])
    assert m.flops == 2 * 128**3 and m.repeats == 3
    json.dumps(p, allow_nan=False)


def test_machine_info_fields():
    info = machine_info()
    for k in ("cpu_model", "logical_cpus", "affinity_cpus", "numpy", "python", "env", "loadavg"):
        assert k in info
    assert info["affinity_cpus"] >= 1
    json.dumps(info, allow_nan=False)


def test_machine_info_does_not_import_torch():
    code = (
        "import sys; from benchmarks.machine import machine_info; i = machine_info(); "
        "print('torch' in sys.modules, 'torch' in i)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    assert out.stdout.split() == ["False", "False"]


def test_count_flops_torch_linear():
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(8, 4)
    assert count_flops_torch(lin, (torch.zeros(3, 8),)) == 2 * 3 * 8 * 4
    assert count_flops_torch(lin, torch.zeros(5, 8)) == 2 * 5 * 8 * 4
    assert count_flops_torch(lin, {"input": torch.zeros(1, 8)}) == 2 * 8 * 4
