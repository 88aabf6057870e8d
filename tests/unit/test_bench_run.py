"""benchmarks.run (``avs bench``): plan and estimates, option checks, per-process peak RSS, report files.

Fast: the plan tests use stand-in bundles; the report tests a synthetic result set; one test runs a
real child process on the tiny bundle (runtime side of the cheapest case, about 2 s).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import run as bench
from benchmarks.report import Report
from benchmarks.run_report import main as run_report_main
from benchmarks.run_report import markdown, write_outputs
from benchmarks.timing import Measurement

ALL_GRAPHS = (
    "audioclip_audio",
    "audioclip_audio_1s",
    "audioclip_image",
    "acfpn",
    "sam_image_encoder",
    "sam_prompt_decoder",
)


class FakeBundle:
    """What build_plan reads of a runtime.bundle.Bundle: root, manifest, has()."""

    def __init__(self, root="B", graphs=ALL_GRAPHS, sam="vit_b", audioclip="audioclip"):
        self.root = Path(root)
        self.graphs = set(graphs)
        self.manifest = {"weights": {"sam": {"config": sam}, "audioclip": {"config": audioclip}}}

    def has(self, g):
        return g in self.graphs


def test_parse_only_expands_aliases_and_refuses_unknown_modes():
    assert bench.parse_only("no-prompt,acfpn") == ["acfpn", "no-prompt"]
    assert bench.parse_only("points") == [
        "point-global",
        "point-local",
        "point-dense",
        "heatmap-box",
    ]
    with pytest.raises(ValueError, match="unknown mode 'warp'"):
        bench.parse_only("acfpn,warp")
    with pytest.raises(ValueError, match="names no mode"):
        bench.parse_only(" , ")


def test_quick_plan_runs_every_mode_once_and_fits_15_minutes_at_vit_b(monkeypatch):
    monkeypatch.setattr(bench, "grid_param", lambda: True)
    plan = bench.build_plan(FakeBundle(), FakeBundle("B8"), list(bench.MODES), quick=True)
    names = [c.name for c in plan.cases]
    assert "no-prompt-audio/reference" not in names  # compared with the full-grid reference instead
    assert {"audioclip/reference", "acfpn/int8", "no-prompt/fp32", "no-prompt-audio/int8"} <= set(
        names
    )
    assert all(c.repeats == 1 and c.warmup == 0 for c in plan.cases)
    assert {c.frames for c in plan.cases if c.mode.startswith("no-prompt")} == {1}
    assert {c.frames for c in plan.cases if c.mode.startswith("point")} == {5}
    assert [c for c in plan.cases if c.mode == "no-prompt-audio"][0].params == {"grid": "audio"}
    assert all(c.bundle == "B8" for c in plan.cases if c.side == "int8")
    # the quick budget: 15 minutes at vit_b, int8 point/box runs dropped (in TRIM_ORDER) where needed
    three = ("reference", "fp32", "int8")  # the sides the 15 minutes were sized for
    assert (
        bench.build_plan(FakeBundle(), None, list(bench.MODES), quick=True, sides=three).total_s
        + bench.OVERHEAD_S
        < 15 * 60
    )
    plan3 = bench.build_plan(
        FakeBundle(), FakeBundle("B8"), list(bench.MODES), quick=True, sides=three
    )
    assert bench.fit_budget(plan3, 15 * 60).total_s + bench.OVERHEAD_S <= 15 * 60
    # every side (torch bf16, OpenVINO fp32 / best where installed): trimmed in TRIM_ORDER
    assert bench.fit_budget(plan, 30 * 60).total_s + bench.OVERHEAD_S <= 30 * 60
    fitted = bench.fit_budget(plan, plan.total_s)
    gone = [c.name for c in plan.cases if c not in fitted.cases]
    assert set(gone) == set(bench.TRIM_ORDER[: len(gone)]) and len(gone) >= 1
    assert any(n.startswith("dropped to fit the") for n in fitted.notes)
    # the full setting: 1 warm-up + 3 runs, No-Prompt once on the 5 frames
    full = bench.build_plan(FakeBundle(), None, list(bench.MODES), quick=False)
    pg = [c for c in full.cases if c.name == "point-global/reference"][0]
    npr = [c for c in full.cases if c.name == "no-prompt/reference"][0]
    assert (pg.warmup, pg.repeats, npr.warmup, npr.repeats, npr.frames) == (1, 3, 0, 1, 5)
    assert npr.est_s == pytest.approx(
        bench.estimate("no-prompt", "reference", 5, 1, 0, "full", 1.0)
    )
    assert full.total_s > plan.total_s


def test_estimates_scale_with_frames_runs_and_sam_size():
    load = bench.COSTS["full"]["load"]["runtime"]
    e1 = bench.estimate("point-global", "fp32", 5, 1, 0, "full", 1.0)
    assert bench.estimate("point-global", "fp32", 5, 2, 1, "full", 1.0) - load == pytest.approx(
        3 * (e1 - load)
    )
    assert bench.estimate("no-prompt", "reference", 5, 1, 0, "full", 1.0) > 4 * bench.estimate(
        "no-prompt", "reference", 1, 1, 0, "full", 1.0
    )
    assert bench.estimate("point-dense", "int8", 5, 1, 0, "full", 1.0) < e1
    assert bench.cost_profile(FakeBundle(sam="micro").manifest) == ("tiny", 1.0)
    assert bench.cost_profile(FakeBundle(sam="vit_h").manifest) == (
        "full",
        bench.SAM_SCALE["vit_h"],
    )


def test_missing_graphs_and_grid_option_are_skipped_with_notes(monkeypatch):
    monkeypatch.setattr(bench, "grid_param", lambda: False)
    fp32 = FakeBundle(
        graphs=("audioclip_audio", "audioclip_image", "sam_image_encoder", "sam_prompt_decoder")
    )
    int8 = FakeBundle("B8", graphs=("audioclip_audio", "audioclip_image"))
    plan = bench.build_plan(fp32, int8, list(bench.MODES), quick=True, have_reference=False)
    names = {c.name for c in plan.cases}
    assert not any(c.side == "reference" for c in plan.cases)
    assert (
        "acfpn/fp32" not in names and "audioclip/int8" in names and "point-dense/int8" not in names
    )
    notes = " | ".join(plan.notes)
    assert "acfpn skipped" in notes and "lacks ['acfpn']" in notes
    assert "no grid='audio' parameter" in notes and "reference side skipped" in notes
    assert "point-dense int8 skipped" in notes
    # No-Prompt without the 1-s graph runs the default preset on both sides
    assert {c.preset for c in plan.cases if c.mode == "no-prompt"} == {"default"}


def test_grid_param_reads_the_mode_table():
    from runtime.modes import MODES

    assert bench.grid_param() == ("grid" in {p.name for p in MODES["no-prompt"].params})


def test_main_refuses_bad_options(tmp_path, capsys):
    assert bench.main(["--bundle", str(tmp_path / "none")]) == 2
    assert "error" in capsys.readouterr().err
    assert bench.main(["--bundle", str(tmp_path), "--only", "warp"]) == 2
    assert "unknown mode 'warp'" in capsys.readouterr().err
    assert bench.main(["--bundle", str(tmp_path), "--sides", "gpu"]) == 2
    assert bench.main(["--bundle", str(tmp_path), "--repeats", "0"]) == 2


def test_main_prints_the_plan(tiny_bundle, capsys):
    assert (
        bench.main(
            ["--bundle", str(tiny_bundle), "--quick", "--plan", "--only", "acfpn,point-global"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "acfpn/fp32" in out and "point-global/reference" in out and "estimated total" in out
    assert "Box-Prompt" in out


def test_child_peak_rss_is_each_process_own(tmp_path):
    """The peak RSS a child reports (VmHWM) is its own: a 400 MB child, then a small one, spawned from
    this process while it holds 300 MB more (which wait4's ru_maxrss counts, the children's VmHWM not)."""
    spec = tmp_path / "s.json"
    spec.write_text("{}")
    ballast = np.ones(300 * 2**20 // 8)
    code = "from benchmarks.run_case import peak_rss_mb; import numpy as np; a = np.ones({n}); print(peak_rss_mb())"
    big = bench.run_child(
        spec, tmp_path / "big.log", 60, argv=[sys.executable, "-c", code.format(n=50 * 2**20)]
    )
    small = bench.run_child(
        spec, tmp_path / "small.log", 60, argv=[sys.executable, "-c", code.format(n=1)]
    )
    assert big.rc == 0 and small.rc == 0
    big_mb, small_mb = (
        float((tmp_path / f"{k}.log").read_text().split()[-1]) for k in ("big", "small")
    )
    assert big_mb > 400 and small_mb < 150
    assert small.ru_maxrss_mb > 300 + ballast[0]  # ru_maxrss includes this process's RSS at exec
    hang = bench.run_child(
        spec, tmp_path / "hang.log", 0.5, argv=[sys.executable, "-c", "import time; time.sleep(30)"]
    )
    assert hang.timed_out and hang.rc != 0 and hang.wall_s < 10


def test_one_runtime_case_in_a_fresh_process(tiny_bundle, tmp_path, demo_dir):
    """A real child (audioclip graphs, runtime side): timings, stages, peak RSS and npz outputs."""
    inputs = bench.write_inputs(tmp_path, str(tiny_bundle), demo_dir)
    spec = {
        "mode": "audioclip",
        "side": "runtime",
        "bundle": str(tiny_bundle),
        "threads": 1,
        "repeats": 2,
        "warmup": 0,
        **inputs,
        "out_json": str(tmp_path / "c.json"),
        "out_npz": str(tmp_path / "c.npz"),
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    r = bench.run_child(tmp_path / "spec.json", tmp_path / "c.log", 120)
    assert r.rc == 0, (tmp_path / "c.log").read_text()
    got = json.loads((tmp_path / "c.json").read_text())
    assert got["measurement"]["repeats"] == 2 and set(got["stages"]) >= {"audio", "image"}
    assert "torch" not in got["info"]
    assert 50 < got["peak_rss_mb"] <= r.ru_maxrss_mb + 1
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:
        assert z["audio_embedding"].shape[0] == 5 and z["image_global"].shape[0] == 5
    assert bench.agreement(tmp_path / "c.npz", tmp_path / "c.npz") == (
        "min cosine",
        pytest.approx(1.0),
    )


def _record(mode, side, median_ms, rss, npz, stages, frames=5):
    m = Measurement(
        f"{mode}/{side}",
        [median_ms * 0.98, median_ms, median_ms * 1.03],
        loadavg_before=[1.5, 1.2, 1.0],
        machine_busy_cores=2.0,
    )
    case = bench.Case(mode, side, "B8" if side == "int8" else "B", frames, 3, 1, None, {})
    return {
        "case": bench.asdict(case),
        "rc": 0,
        "status": "ok",
        "peak_rss_mb": rss,
        "npz": npz,
        "measurement": m,
        "stages_ms": stages,
        "stage_samples_ms": {k: [v] for k, v in stages.items()},
        "load_s": 3.0,
        "info": {},
    }


def test_report_files_from_a_synthetic_result_set(tmp_path):
    masks = {"a": [np.zeros((8, 8), bool)] * 5, "b": [np.ones((8, 8), bool)] * 5}
    masks["c"] = [m.copy() for m in masks["b"]]
    masks["c"][2][:4] = False  # IoU 0.5 on one frame
    for k, ms in masks.items():
        np.savez(tmp_path / f"{k}.npz", **{f"mask_{i}": m for i, m in enumerate(ms)})
    np.savez(tmp_path / "np_full.npz", mask_0=masks["b"][2])  # No-Prompt runs on one frame
    np.savez(tmp_path / "np_half.npz", mask_0=masks["c"][2])
    recs = [
        _record(
            "point-global",
            "reference",
            60_000,
            4500,
            tmp_path / "b.npz",
            {"sam_encoder": 50_000, "other": 10_000},
        ),
        _record(
            "point-global",
            "fp32",
            30_000,
            2500,
            tmp_path / "b.npz",
            {"sam_encoder": 28_000, "sam_decoder": 2_000},
        ),
        _record(
            "point-global",
            "int8",
            12_000,
            1500,
            tmp_path / "c.npz",
            {"sam_encoder": 10_000, "sam_decoder": 2_000},
        ),
        _record("acfpn", "fp32", 1_400, 700, tmp_path / "a.npz", {"audio": 900, "acfpn": 500}),
        _record(
            "no-prompt",
            "reference",
            180_000,
            3800,
            tmp_path / "np_full.npz",
            {"amg": 150_000},
            frames=1,
        ),
        _record(
            "no-prompt", "fp32", 36_000, 2000, tmp_path / "np_full.npz", {"amg": 30_000}, frames=1
        ),
        _record(
            "no-prompt-audio",
            "fp32",
            6_000,
            1900,
            tmp_path / "np_half.npz",
            {"amg": 5_000},
            frames=1,
        ),
    ]

    recs.append(
        {
            "case": bench.asdict(bench.Case("acfpn", "reference", "B", 5, 3, 1)),
            "rc": 1,
            "status": "failed",
            "note": "exit code 1",
            "npz": str(tmp_path / "x.npz"),
            "peak_rss_mb": 10.0,
        }
    )
    plan = bench.Plan(
        [bench.Case(**r["case"]) for r in recs], ["no-prompt skipped: bundle B lacks [...]"]
    )
    rep = Report(
        "Full-size benchmark: reference vs runtime",
        machine={"cpu_model": "test CPU", "affinity_cpus": 2},
    )
    rep.set_peak(190.0)
    result = bench.assemble(
        rep,
        recs,
        {"sam_image_encoder": 1e12},
        plan,
        command="python -m benchmarks.run --x",
        load_start=1.5,
        threads=2,
    )
    j, md, png = write_outputs(result, tmp_path / "out")
    d = json.loads(j.read_text())
    back = Report.from_json(j)  # the JSON is a benchmarks.report Report (plus the run's own keys)
    assert len(back.entries) == 7 and d["command"] == "python -m benchmarks.run --x"
    assert [c["status"] for c in d["cases"]] == ["ok"] * 7 + ["failed"]
    by = {(e["case"], e["backend"]): e["extra"] for e in d["entries"]}
    assert by[("point-global", "runtime fp32")]["agreement"]["vs_reference"] == 1.0
    assert by[("point-global", "runtime int8")]["agreement"] == {
        "metric": "min mask IoU",
        "vs_reference": 0.5,
        "vs_fp32": 0.5,
    }
    enc = by[("point-global", "runtime fp32")]["encoders"]["sam_image_encoder"]
    assert enc["gflops"] == pytest.approx(5 * 1e12 / 28 / 1e9) and enc["pct_peak"] == pytest.approx(
        enc["gflops"] / 1.9
    )
    npa = by[("no-prompt-audio", "runtime fp32")][
        "agreement"
    ]  # vs the full-grid reference and fp32 runs
    assert npa == {"metric": "min mask IoU", "vs_reference": 0.5, "vs_full_grid_fp32": 0.5}
    ratios = {(r["mode"], r["side"]): r for r in d["ratios"]}
    assert ratios[("no-prompt-audio", "fp32")]["ratio"] == pytest.approx(30.0)
    assert ratios[("point-global", "fp32")]["ratio"] == pytest.approx(2.0)
    assert ratios[("point-global", "int8")]["rss_ratio"] == pytest.approx(1500 / 4500)
    text = md.read_text()
    assert text == markdown(d)
    assert (
        "`python -m benchmarks.run --x`" in text and "test CPU" in text and "190.0 GFLOP/s" in text
    )
    assert (
        "| point-global | 60.0 s (59.4 s–60.9 s) | 30.0 s (29.7 s–30.4 s) | 2.00x | 12.0 s" in text
    )
    assert "| 4500 / 2500 / 1500 | 0.56 | 1.0000 | 0.5000 |" in text
    assert "| no-prompt-audio (grid='audio'; vs the full-grid reference) | 180.0 s" in text
    assert (
        "## AC-FPN (5 frames)" in text
        and "no-prompt skipped" in text
        and "acfpn/reference failed: exit code 1" in text
    )
    img = Image.open(png)
    assert img.size[0] == 1200 and img.size[1] > 300
    # the chart is drawn again from bench.json alone (it is not kept in git), pixel for pixel
    first = png.read_bytes()
    png.unlink()
    assert run_report_main([str(tmp_path / "out")]) == 0 and png.read_bytes() == first
    assert run_report_main([str(tmp_path)]) == 2  # no bench.json there
    # bars are drawn: the stage colours appear in the image
    colours = {c for _, c in img.convert("RGB").getcolors(1 << 20)}
    assert (31, 119, 180) in colours or (255, 127, 14) in colours


def _targets_result(flags, ratios, entries):
    return {"machine": {"cpu_flags": flags}, "ratios": ratios, "entries": entries}


def test_targets_table_picks_the_cpu_column_and_the_fastest_gated_side():
    from benchmarks.targets import markdown as targets_md
    from benchmarks.targets import target_rows

    def ratio(mode, side, r, rss, b_ms=10_000.0):
        return {"mode": mode, "side": side, "ratio": r, "rss_ratio": rss, "b_median_ms": b_ms}

    def entry(mode, side, enc_ms, agree=None):
        label = bench.SIDE_LABEL[side]
        extra = {"stages_ms": {"sam_encoder": enc_ms}, "agreement": agree or {}}
        return {"case": mode, "backend": label, "batch": 5, "extra": extra}

    ratios = [
        ratio("point-global", "fp32", 2.0, 0.5),
        ratio("point-global", "openvino-fp32", 3.0, 0.7),  # fastest: counted, and over 60 % RSS
        ratio("point-global", "int8", 2.5, 0.4),
        ratio("no-prompt", "fp32", 3.5, 0.55),
        ratio("no-prompt", "openvino-bf16", 5.0, 0.5),  # fastest, but not the exact fp32 path
    ]
    entries = [
        entry("point-global", "reference", 50_000),
        entry("point-global", "fp32", 25_000),
        entry("point-global", "openvino-fp32", 10_000),
        entry("no-prompt", "fp32", 5_000, {"vs_reference": 1.0}),
    ]
    rows = {r.case: r for r in target_rows(_targets_result(["avx2"], ratios, entries))}
    enc = rows["SAM vit_b encoder, best gated precision, s / frame"]
    # per frame: reference 10 s, openvino-fp32 2 s (median over the SAM modes it ran) -> 5x >= 2.5x
    assert enc.side == "openvino-fp32" and enc.met and enc.measured.startswith("2.00 s (5.00x")
    pg = rows["point-global, 5-frame clip, best gated precision"]
    assert (pg.side, pg.target, pg.other, pg.met) == ("openvino-fp32", ">= 2.5x", ">= 6x", True)
    npb = rows["No-Prompt, 1 frame, SAM's AMG defaults, best gated precision"]
    assert npb.side == "openvino-bf16" and npb.met  # 5x >= 4x
    exact = rows["No-Prompt fp32, masks identical to the reference"]
    assert exact.side == "fp32" and exact.met  # 3.5x >= 3x, masks equal
    assert rows["heatmap-box, 5-frame clip, best gated precision"].met is None  # not run
    rss = rows["peak RSS vs the reference, point-global"]
    assert rss.met is False and "openvino-fp32" in rss.gap
    # the AMX column on an AMX CPU: the same run misses its targets, and says by how much
    amx = {r.case: r for r in target_rows(_targets_result(["avx2", "amx_bf16"], ratios, entries))}
    pg = amx["point-global, 5-frame clip, best gated precision"]
    assert pg.met is False and pg.gap.startswith("missed by 2.00x (3.00x of 6x")
    assert amx["SAM vit_b encoder, best gated precision, s / frame"].met is False
    text = "\n".join(targets_md(_targets_result(["avx2"], ratios, entries)))
    assert "## Targets (issue 17)" in text and "AVX2-only column (this CPU has no AMX)" in text
