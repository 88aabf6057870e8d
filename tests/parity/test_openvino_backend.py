"""Issue 17: the OpenVINO backend, the precision choice per CPU, and the agreement gate.

Tests that run OpenVINO are skipped with a reason where it is not installed. CPU flags are faked
through the detection function's input (``parse_cpuinfo`` text), never by changing the machine;
a failing gate is forced (never left to where random weights land).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import runtime
from runtime.backends import _openvino as openvino_backend
from runtime.backends import execution, precision
from runtime.backends.calibration import calibration_feeds
from runtime.backends.precision import (
    CpuInfo,
    Gate,
    agreement,
    choose_precision,
    judge,
    parse_cpuinfo,
)
from runtime.bundle.contract import GRAPHS
from runtime.errors import InputError, ProviderError

AMD_AVX2 = """processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7B12
flags		: fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma
"""
XEON_AMX = """processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu sse avx avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
XEON_AVX512_BF16 = XEON_AMX.replace(" amx_bf16 amx_tile amx_int8", "")

needs_openvino = pytest.mark.skipif(
    not openvino_backend.available(), reason="openvino is not installed (pip install '.[openvino]')"
)


# --- CPU flags and the choice (no OpenVINO needed) -----------------------------------------------


def test_cpu_flags_are_read_from_cpuinfo_text():
    amd, amx, bf = (parse_cpuinfo(t) for t in (AMD_AVX2, XEON_AMX, XEON_AVX512_BF16))
    assert amd.model == "AMD EPYC 7B12" and "avx2" in amd.flags and not amd.bf16
    assert amx.bf16 and bf.bf16  # AMX, or AVX512_BF16 alone, is enough
    assert amd.key == "avx2" and amx.key == "avx2+avx512f+avx512_vnni+avx512_bf16+amx_bf16+amx_int8"
    assert amx.report()["flags"] == {
        "avx2": True,
        "avx512f": True,
        "avx512_vnni": True,
        "avx512_bf16": True,
        "amx_bf16": True,
        "amx_int8": True,
    }
    assert parse_cpuinfo("") == CpuInfo("unknown", frozenset())
    # this machine's CPU is read, whatever it is
    assert isinstance(precision.cpu_info().flags, frozenset)


def test_bf16_is_refused_on_a_cpu_without_amx_or_avx512_bf16_and_auto_stays_fp32():
    amd = parse_cpuinfo(AMD_AVX2)
    with pytest.raises(ProviderError, match="AMX or AVX512_BF16.*AMD EPYC 7B12"):
        choose_precision("bf16", graph="sam_image_encoder", backend="openvino", cpu=amd)
    c = choose_precision("auto", graph="sam_image_encoder", backend="openvino", cpu=amd)
    assert (c.precision, c.gated) == ("fp32", False) and "no AMX" in c.reason


def test_auto_picks_gated_bf16_on_amx_cpus_only_except_audio_and_sam4avs():
    # AVX512_BF16 without AMX: bf16 was measured slower than fp32 there, so auto stays fp32,
    # and an explicit "bf16" is still honoured (behind the gate)
    bf = parse_cpuinfo(XEON_AVX512_BF16)
    c = choose_precision("auto", graph="sam_image_encoder", backend="openvino", cpu=bf)
    assert (c.precision, c.gated) == ("fp32", False) and "no AMX" in c.reason
    c = choose_precision("bf16", graph="sam_image_encoder", backend="openvino", cpu=bf)
    assert (c.precision, c.gated) == ("bf16", True)
    assert parse_cpuinfo(XEON_AMX).auto_bf16 and not bf.auto_bf16
    for text in (XEON_AMX, XEON_AVX512_BF16):
        cpu = parse_cpuinfo(text)
        if cpu.auto_bf16:
            c = choose_precision("auto", graph="sam_image_encoder", backend="openvino", cpu=cpu)
            assert (c.precision, c.gated) == ("bf16", True)
        # the audio front end stays fp32; the sam4avs preset is fp32; onnxruntime has no bf16
        for graph, kw in (
            ("audioclip_audio", {}),
            ("sam_image_encoder", {"preset": "sam4avs"}),
        ):
            c = choose_precision("auto", graph=graph, backend="openvino", cpu=cpu, **kw)
            assert (c.precision, c.gated) == ("fp32", False)
        assert (
            choose_precision("auto", graph="acfpn", backend="onnxruntime", cpu=cpu).precision
            == "fp32"
        )
        with pytest.raises(ProviderError, match="OpenVINO backend only"):
            choose_precision("bf16", graph="acfpn", backend="onnxruntime", cpu=cpu)


def test_int8_is_the_bundles_own_and_fp32_is_exact():
    cpu = parse_cpuinfo(XEON_AMX)
    c = choose_precision(
        "auto", graph="sam_image_encoder", backend="onnxruntime", stored="int8", cpu=cpu
    )
    assert (c.precision, c.gated) == ("int8", False)
    with pytest.raises(ProviderError, match="build the int8 graphs"):
        choose_precision("int8", graph="sam_image_encoder", backend="onnxruntime", cpu=cpu)
    with pytest.raises(ProviderError, match="stored in int8"):
        choose_precision("fp32", graph="acfpn", backend="onnxruntime", stored="int8", cpu=cpu)
    c = choose_precision("fp32", graph="acfpn", backend="openvino", cpu=cpu)
    assert (c.precision, c.gated) == ("fp32", False)
    with pytest.raises(InputError, match="precision must be one of"):
        choose_precision("fp16", graph="acfpn", backend="openvino", cpu=cpu)


def test_auto_backend_without_openvino_is_onnxruntime(monkeypatch):
    monkeypatch.setattr(openvino_backend, "available", lambda: False)
    amx = parse_cpuinfo(XEON_AMX)
    assert execution.resolve_backend("auto", ["cpu"], amx) == "onnxruntime"
    with pytest.raises(ProviderError, match="needs the openvino package"):
        execution.resolve_backend("openvino", None, amx)
    monkeypatch.setattr(openvino_backend, "available", lambda: True)
    assert execution.resolve_backend("auto", ["cpu"], amx) == "openvino"
    assert execution.resolve_backend("auto", ["cpu"], parse_cpuinfo("flags: sse2")) == "onnxruntime"
    # without AMX OpenVINO has no bf16 fast path and was measured no faster, with more memory
    for text in (AMD_AVX2, XEON_AVX512_BF16):
        assert execution.resolve_backend("auto", ["cpu"], parse_cpuinfo(text)) == "onnxruntime"
        assert execution.resolve_backend("openvino", ["cpu"], parse_cpuinfo(text)) == "openvino"
    with pytest.raises(ProviderError, match="runs on the CPU"):
        execution.resolve_backend("openvino", ["cuda"], amx)


def test_agreement_and_gate_judgement():
    rng = np.random.default_rng(0)
    ref = {"low_res_masks": rng.standard_normal((3, 4, 8, 8)).astype(np.float32)}
    same = agreement(ref, {"low_res_masks": ref["low_res_masks"].copy()})
    assert same["cosine_min"] == pytest.approx(1.0) and same["mask_iou_min"] == 1.0
    assert same["max_abs"] == 0.0
    flipped = ref["low_res_masks"].copy()
    flipped[1] *= -1  # one prompt set's masks inverted: cosine -1, IoU 0 for it
    bad = agreement(ref, {"low_res_masks": flipped})
    assert bad["cosine_min"] == pytest.approx(-1.0) and bad["mask_iou_min"] == 0.0
    ok, why = judge(same, Gate())
    assert ok and "cosine" in why
    ok, why = judge(bad, Gate())
    assert not ok and "cosine" in why
    ok, why = judge({"cosine_min": 1.0, "max_abs": 0.0, "mask_iou_min": 0.5}, Gate())
    assert not ok and "mask IoU 0.5000 < 0.95" in why
    with pytest.raises(InputError, match="min_cosine"):
        Gate(min_cosine=2.0)
    with pytest.raises(InputError, match="shapes differ"):
        agreement(ref, {"low_res_masks": flipped[:1]})


def test_bf16_refused_at_load_on_a_cpu_without_the_flags(tiny_bundle, monkeypatch):
    monkeypatch.setattr(precision, "_cpu", parse_cpuinfo(AMD_AVX2))
    monkeypatch.setattr(openvino_backend, "available", lambda: True)
    with pytest.raises(ProviderError, match="AMX or AVX512_BF16"):
        runtime.load(tiny_bundle, backend="openvino", precision="bf16")
    with pytest.raises(InputError, match="backend must be one of"):
        runtime.load(tiny_bundle, backend="tensorrt-ish")


# --- OpenVINO itself ------------------------------------------------------------------------------


def _graph_feeds(pipe, graph: str, demo_dir):
    if graph.startswith("audioclip_audio"):  # 2 clips of the graph's length, int16-scale noise
        t = pipe.graph_input_shape(graph)[1]
        x = np.random.default_rng(0).normal(0, 3000, (2, t)).astype(np.float32)
        return [dict(zip(GRAPHS[graph].input_names, (x,), strict=True))]
    got = calibration_feeds(pipe, graph, demo_dir, limit=1)
    assert got is not None, graph
    return got[0]


@needs_openvino
def test_openvino_fp32_equals_onnxruntime_on_every_graph(tiny_bundle, demo_dir):
    """fp32 OpenVINO vs fp32 onnxruntime, same checked bytes, each graph's outputs within the
    export parity tolerance (1e-4 relative to the output's scale; measured spread on an AVX-512
    Xeon: <= 3e-6 relative)."""
    ort_pipe = runtime.load(tiny_bundle, backend="onnxruntime", precision="fp32")
    ov_pipe = runtime.load(tiny_bundle, backend="openvino", precision="fp32")
    for graph in ov_pipe.bundle.graphs:
        feeds = _graph_feeds(ort_pipe, graph, demo_dir)
        names = list(GRAPHS[graph].output_names)
        ov = ov_pipe.session(graph)
        assert ov_pipe.session_info[graph].backend == "openvino"
        assert ov_pipe.session_info[graph].precision == "fp32"
        assert ov.inference_precision == "f32"  # asked for explicitly, not OpenVINO's CPU default
        for f in feeds:
            ref = ort_pipe.session(graph).run(names, f)
            got = ov.run(names, f)
            for n, a, b in zip(names, ref, got, strict=True):
                assert a.shape == b.shape and b.dtype == a.dtype, (graph, n)
                scale = max(1.0, float(np.abs(a).max()))
                assert float(np.abs(a - b).max()) <= 1e-4 * scale, (graph, n)


@needs_openvino
def test_info_reports_backend_device_precision(tiny_bundle, demo_dir):
    frames = [str(demo_dir / "cat_1.jpg")]
    wav = str(demo_dir / "cat_3-95694-A-5.wav")
    for be in ("onnxruntime", "openvino"):
        res = runtime.load(tiny_bundle, backend=be, precision="fp32").segment(
            frames, wav, mode="acfpn"
        )
        info = res.info()
        assert set(info["backends"]) == {"audioclip_audio", "acfpn"}
        for g, v in info["backends"].items():
            assert v["backend"] == be and v["precision"] == "fp32" and v["device"], g
        assert info["precision"] == {"audioclip_audio": "fp32", "acfpn": "fp32"}
        assert f"acfpn={be}/fp32" in res.summary()
        json.dumps(info)


@needs_openvino
def test_failing_gate_keeps_fp32_and_says_so(tiny_bundle, demo_dir, monkeypatch, caplog, tmp_path):
    """The gate is forced to fail (measured agreement replaced by a damaged one); the reduced
    precision is then not used, the result says so, and the verdict is cached by sha256 + flags."""
    monkeypatch.setattr(precision, "_cpu", parse_cpuinfo(XEON_AMX))  # a bf16 CPU, faked
    calls = []

    def damaged(run_a, run_b, feeds, names):
        calls.append(len(list(feeds)))
        return {"cosine_min": 0.5, "max_abs": 9.0, "mask_iou_min": 0.1}

    monkeypatch.setattr(execution, "measure_agreement", damaged)
    pipe = runtime.load(
        tiny_bundle,
        backend="openvino",
        precision="bf16",
        cache_dir=tmp_path,
        calibration_dir=demo_dir,
    )
    with caplog.at_level(logging.WARNING, logger="runtime.backends.execution"):
        res = pipe.segment(
            [str(demo_dir / "cat_1.jpg")], str(demo_dir / "cat_3-95694-A-5.wav"), mode="acfpn"
        )
    assert calls == [2]  # the acfpn graph was gated on 2 calibration photos
    assert res.precision["acfpn"] == "fp32" and res.backends["acfpn"]["precision"] == "fp32"
    assert res.precision["audioclip_audio"] == "fp32"  # audio front end: never gated, always fp32
    a = res.agreement["acfpn"]
    assert (
        a["gate"] == "failed: fp32 kept"
        and a["tried"] == "bf16"
        and "cosine 0.500000 <" in a["reason"]
    )
    assert "bf16 not used, fp32 kept" in caplog.text
    assert pipe.session("acfpn").inference_precision == "f32"
    # the verdict is kept under the user's folder, keyed by sha256 + precision + backend + CPU flags
    files = list(tmp_path.glob("gate-*.json"))
    assert len(files) == 1
    v = json.loads(files[0].read_text())
    assert v["sha256"] == pipe.bundle.graphs["acfpn"]["sha256"] and v["passed"] is False
    assert v["cpu"] == parse_cpuinfo(XEON_AMX).key
    # OpenVINO's compiled-model cache only under the named folder, per graph sha256
    sha = pipe.bundle.graphs["acfpn"]["sha256"]
    assert (tmp_path / "openvino" / f"{sha[:16]}-fp32").is_dir()
    # a second load on the "same machine" reuses the verdict: no second measurement
    again = runtime.load(tiny_bundle, backend="openvino", precision="bf16", cache_dir=tmp_path)
    again.session("acfpn")
    assert calls == [2] and again.session_info["acfpn"].precision == "fp32"


@needs_openvino
@pytest.mark.skipif(not precision.cpu_info().bf16, reason="this CPU has no AMX / AVX512_BF16")
def test_bf16_gate_measured_on_this_cpu(tiny_bundle, demo_dir):
    """Where the CPU has bf16: the gate really measures (whatever its verdict on random weights),
    and the precision that runs is the one the verdict allows."""
    pipe = runtime.load(tiny_bundle, backend="openvino", precision="bf16", calibration_dir=demo_dir)
    pipe.session("audioclip_image")
    info = pipe.session_info["audioclip_image"]
    gate = info.gate
    assert gate is not None and gate["precision"] == "bf16" and -1.0 <= gate["cosine_min"] <= 1.0
    assert info.precision == ("bf16" if gate["passed"] else "fp32")
    assert "photos" in gate["inputs"]
