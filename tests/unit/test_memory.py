"""Memory: onnxruntime session options, the encoder batch from /proc/meminfo, the build's measurement.

Real sessions on the tiny bundle; /proc/meminfo is replaced by files written here.
"""

from __future__ import annotations

import gc
import json

import numpy as np
import onnxruntime as ort
import pytest

import runtime
from runtime.backends import _memory as memory
from runtime.backends._memory import encoder_batch, encoder_bytes_per_frame, mem_available_bytes
from runtime.backends._onnxruntime import create_session, session_options
from runtime.errors import InputError, ProviderError

GIB = 2**30


def _meminfo(tmp_path, available_kb: int | None, name: str = "meminfo"):
    lines = ["MemTotal:       24000000 kB", "MemFree:         1000000 kB"]
    if available_kb is not None:
        lines.append(f"MemAvailable:   {available_kb} kB")
    p = tmp_path / name
    p.write_text("\n".join(lines + ["Buffers:           12345 kB", ""]))
    return p


# --- session options ------------------------------------------------------------------------------


def test_session_options_memory_settings():
    so = session_options(arena="shared")
    assert (
        so.enable_mem_pattern is False
    )  # doubles a dynamic-batch graph's peak from the 2nd run on
    assert so.enable_cpu_mem_arena is True
    assert so.get_session_config_entry("session.use_env_allocators") == "1"
    assert session_options(arena="off").enable_cpu_mem_arena is False
    own = session_options(arena="session")
    assert own.enable_cpu_mem_arena is True and own.enable_mem_pattern is False
    with pytest.raises(ProviderError, match="arena must be one of"):
        session_options(arena="huge")


def test_arena_from_environment(monkeypatch):
    monkeypatch.setenv("AVS_ORT_ARENA", "off")
    assert session_options().enable_cpu_mem_arena is False
    monkeypatch.setenv("AVS_ORT_ARENA", "bogus")
    with pytest.raises(ProviderError, match="AVS_ORT_ARENA"):
        session_options()


def test_session_from_bytes_does_not_keep_them(tiny_bundle):
    data = (tiny_bundle / "audioclip_image.onnx").read_bytes()
    sess, _ = create_session(data, graph="audioclip_image", providers=["cpu"])
    gc.collect()
    assert not any(
        isinstance(r, ort.InferenceSession)
        or (isinstance(r, dict) and r.get("_model_bytes") is data)
        for r in gc.get_referrers(data)
    )
    assert sess.get_inputs()[0].name == "image"


@pytest.mark.parametrize("arena", ["shared", "session", "off"])
def test_arena_modes_give_the_same_outputs(tiny_bundle, arena):
    path = tiny_bundle / "audioclip_image.onnx"
    ref_sess = ort.InferenceSession(
        str(path), providers=["CPUExecutionProvider"]
    )  # onnxruntime's defaults
    sess, _ = create_session(path, providers=["cpu"], arena=arena)
    shape = [2 if isinstance(d, str) else d for d in sess.get_inputs()[0].shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(2):  # the second run is where a memory plan would take over
        got = sess.run(None, {"image": x})
        for g, r in zip(got, ref_sess.run(None, {"image": x}), strict=True):
            np.testing.assert_array_equal(g, r)


# --- /proc/meminfo and the batch ------------------------------------------------------------------


def test_mem_available_parses_meminfo(tmp_path):
    assert mem_available_bytes(_meminfo(tmp_path, 20_000_000)) == 20_000_000 * 1024
    assert mem_available_bytes(_meminfo(tmp_path, None)) is None
    assert mem_available_bytes(tmp_path / "missing") is None
    bad = tmp_path / "bad"
    bad.write_text("MemAvailable: lots kB\n")
    assert mem_available_bytes(bad) is None


def test_encoder_batch_by_budget():
    per = GIB
    assert encoder_batch(per, 20 * GIB, cap=5) == 5  # budget 10 GiB, capped
    assert encoder_batch(per, 6 * GIB, cap=5) == 3  # 3 GiB of 6 fit
    assert encoder_batch(per, GIB, cap=5) == 1  # never below 1
    assert encoder_batch(per, 20 * GIB, cap=1) == 1
    assert encoder_batch(per, None, cap=4) == 4  # unknown memory: the cap
    assert encoder_batch(per, 8 * GIB, cap=5, fraction=0.25) == 2
    for bad in (
        {"cap": 0},
        {"cap": True},
        {"cap": 2, "fraction": 0.0},
        {"cap": 2, "fraction": 1.5},
    ):
        with pytest.raises(InputError):
            encoder_batch(per, GIB, **bad)
    with pytest.raises(InputError, match="bytes_per_frame"):
        encoder_batch(0, GIB, cap=2)


def test_bytes_per_frame_measured_or_estimated():
    entry = {"inputs": [{"name": "image", "dtype": "float32", "shape": ["batch", 3, 1024, 1024]}]}
    assert encoder_bytes_per_frame({**entry, "memory": {"bytes_per_frame": 123}}) == 123
    assert (
        encoder_bytes_per_frame(entry) == memory.FALLBACK_BYTES_PER_INPUT_BYTE * 4 * 3 * 1024 * 1024
    )
    with pytest.raises(InputError, match="not fixed"):
        encoder_bytes_per_frame({"inputs": [{"shape": ["batch", 3, "h", "w"]}]})


def test_tiny_bundle_records_measured_encoder_memory(tiny_bundle):
    m = runtime.load(tiny_bundle).bundle.graphs["sam_image_encoder"]["memory"]
    assert isinstance(m["bytes_per_frame"], int) and m["bytes_per_frame"] > 0
    assert "VmHWM" in m["method"]


def test_pipeline_batch_follows_meminfo(tiny_bundle, tmp_path, monkeypatch):
    pipe = runtime.load(tiny_bundle)
    pipe.session("sam_image_encoder")
    per = encoder_bytes_per_frame(pipe.bundle.graphs["sam_image_encoder"])
    monkeypatch.setattr(
        memory, "MEMINFO", _meminfo(tmp_path, per * 7 // 1024 + 1)
    )  # 3 frames in half of it
    assert pipe.default_sam_batch() == 1  # CPU: cap 1 (batching gains no speed there)
    info = pipe.session_info["sam_image_encoder"]
    monkeypatch.setattr(info, "device", "cuda")  # as a CUDA session reports itself
    assert pipe.default_sam_batch() == 3  # GPU cap 5, memory allows 3
    monkeypatch.setattr(memory, "MEMINFO", _meminfo(tmp_path, per * 100 // 1024, "big"))
    assert pipe.default_sam_batch() == 5
    monkeypatch.setattr(memory, "MEMINFO", _meminfo(tmp_path, 1, "small"))
    assert pipe.default_sam_batch() == 1
    assert pipe.sam_runner().max_batch == 1
    assert pipe.sam_runner(max_batch=4).max_batch == 4  # the override wins


def test_bench_memory_fresh_process(tiny_bundle, demo_dir, tmp_path):
    from benchmarks.bench_memory import main

    out = tmp_path / "mem.json"
    assert (
        main(
            [
                "--bundle",
                str(tiny_bundle),
                "--modes",
                "sam_encoder",
                "--frames",
                "2",
                "--data",
                str(demo_dir),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    (row,) = json.loads(out.read_text())
    assert row["stage"] == "sam_encoder" and row["frames"] == 2 and row["sam_batch"] == 1
    assert row["peak_rss_mb"] >= row["rss_sessions_mb"] > row["rss_start_mb"] > 0
