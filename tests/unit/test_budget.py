"""The request budget and the deadline (runtime.budget), in-process and through the served model's
request handling (runtime.serving.triton_model.run_request, no server needed).

Each test here is one finding of issue 18: on the code before it, the request below was decoded in
full (the 0.3 MiB request to 14 GiB), ran for hours (AMG parameters) or came back as "internal error".
"""

from __future__ import annotations

import io
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import runtime
from runtime import budget as budget_mod
from runtime.budget import DEFAULT_BUDGET, Budget, DeadlineExceeded, deadline, parse_params_json
from runtime.errors import AVSError, InputError
from runtime.serving import triton_model
from tests.helpers.serve import clip


@pytest.fixture(scope="module")
def bundle(request) -> Path:
    env = os.environ.get("AVS_TEST_BUNDLE")
    return Path(env) if env else request.getfixturevalue("tiny_bundle")


@pytest.fixture(scope="module")
def pipe(bundle):
    return runtime.load(bundle, threads=1)


def wire_inputs(frames=None, *, encoded=None, mode=None, params=None, audio=None, rate=16000):
    f, a, _ = clip(2)
    out = {}
    if encoded is not None:
        out["frames_encoded"] = np.array(encoded, dtype=object)
    else:
        out["frames"] = f if frames is None else frames
    out["audio"] = a if audio is None else audio
    out["sample_rate"] = np.array([rate], np.int32)
    if mode is not None:
        out["mode"] = np.array([mode.encode()], dtype=object)
    if params is not None:
        raw = params if isinstance(params, bytes) else json.dumps(params).encode()
        out["params"] = np.array([raw], dtype=object)
    return out


def serve(pipe, inputs):
    return triton_model.run_request(pipe, inputs, max_request_bytes=64 * 2**20)


def blank_png(h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.new("1", (w, h), 0).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- decoded-size amplification ----------------------------------------------------------------------


def test_a_small_request_of_huge_blank_pngs_is_refused_from_headers(pipe):
    png = blank_png(4882, 8192)  # 40 MP, a few KiB
    before = rss_peak_mb()
    inputs = wire_inputs(encoded=[png] * 64)
    size = sum(len(x) for x in inputs["frames_encoded"])
    assert size < 0.5 * 2**20  # 0.3 MiB on the wire
    t0 = time.monotonic()
    with pytest.raises(InputError, match="MP in all, over the budget"):
        serve(pipe, inputs)
    elapsed = time.monotonic() - t0
    # decoding one of these frames alone takes 120 MiB; nothing was decoded
    assert rss_peak_mb() - before < 100, "frames were decoded before the budget refused them"
    assert elapsed < 30  # headers only (generous: a loaded 2-core machine)
    # the next request is served
    res = serve(pipe, wire_inputs(mode="heatmap"))
    assert res["masks"].shape == (2, 48, 64)


def test_frame_count_pixels_and_bytes_are_bounded_in_process_too(pipe):
    frames, audio, sr = clip(3)
    small = pipe.budget.replace(max_frames=2)
    pipe2 = runtime.Pipeline(pipe.bundle, threads=1, budget=small)
    with pytest.raises(InputError, match="3 frames is over the budget of 2"):
        pipe2.segment(list(frames), audio, sr, mode="heatmap")
    tight = runtime.Pipeline(pipe.bundle, threads=1, budget=Budget(max_total_pixels=48 * 64 * 2))
    with pytest.raises(InputError, match="over the budget"):
        tight.segment(list(frames), audio, sr, mode="heatmap")
    # a user raises the bound deliberately
    roomy = runtime.Pipeline(pipe.bundle, threads=1, budget=Budget(max_total_pixels=48 * 64 * 3))
    assert len(roomy.segment(list(frames), audio, sr, mode="heatmap").masks) == 3


def test_image_paths_are_checked_from_their_headers(pipe, tmp_path):
    p = tmp_path / "big.png"
    p.write_bytes(blank_png(4000, 4000))
    _, audio, sr = clip(2)
    tight = runtime.Pipeline(pipe.bundle, threads=1, budget=Budget(max_total_pixels=20_000_000))
    with pytest.raises(InputError, match="32.0 MP in all"):
        tight.segment([p, p], audio, sr, mode="heatmap")


def test_audio_seconds_are_bounded_from_shape_and_wav_header(pipe):
    short = runtime.Pipeline(pipe.bundle, threads=1, budget=Budget(max_audio_seconds=5))
    frames, _, _ = clip(2)
    long = np.zeros(16000 * 6, np.float32)
    with pytest.raises(InputError, match="6.0 s of audio is over the budget of 5 s"):
        short.segment(list(frames), long, 16000, mode="heatmap")
    with pytest.raises(InputError, match="6.0 s of audio is over the budget of 5 s"):
        serve(short, wire_inputs(audio=long))
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000 * 6)
    inputs = wire_inputs()
    del inputs["audio"], inputs["sample_rate"]
    inputs["audio_encoded"] = np.array([buf.getvalue()], dtype=object)
    with pytest.raises(InputError, match="audio_encoded: 6.0 s of audio"):
        serve(short, inputs)


def test_mode_and_params_are_checked_before_frames_are_decoded(pipe, monkeypatch):
    calls = []
    monkeypatch.setattr(
        triton_model,
        "_decode_images",
        lambda items: calls.append(1) or (_ for _ in ()).throw(AssertionError),
    )
    png = blank_png(64, 64)
    with pytest.raises(InputError, match="unknown mode"):
        serve(pipe, wire_inputs(encoded=[png], mode="no-such-mode"))
    with pytest.raises(InputError, match="takes parameters"):
        serve(pipe, wire_inputs(encoded=[png], mode="heatmap", params={"bogus": 1}))
    with pytest.raises(InputError, match="points_per_side = 20000 is over the budget"):
        serve(
            pipe,
            wire_inputs(
                encoded=[png], mode="no-prompt", params={"amg": {"points_per_side": 20000}}
            ),
        )
    assert calls == []


# --- work from parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "amg", "match"),
    [
        (
            "no-prompt",
            {"points_per_side": 20000},
            "points_per_side = 20000 is over the budget of 64",
        ),
        (
            "no-prompt",
            {"crop_n_layers": 12, "crop_n_points_downscale_factor": 1},
            "crop_n_layers = 12 is over the budget of 2",
        ),
        (
            "random-sam",
            {"points_per_side": 64, "crop_n_layers": 2},
            "prompt 86016 grid points per frame, over the budget of 8192",
        ),
        ("random-sam", {"points_per_batch": 100000}, "points_per_batch = 100000 is over"),
    ],
)
def test_amg_parameters_are_bounded_before_any_work(pipe, monkeypatch, mode, amg, match):
    def no_work(*a, **k):
        raise AssertionError("a graph ran before the budget was checked")

    monkeypatch.setattr(pipe, "session", no_work)
    frames, audio, sr = clip(2)
    with pytest.raises(InputError, match=match):
        pipe.segment(list(frames), audio, sr, mode=mode, amg=amg)
    with pytest.raises(InputError, match=match):
        serve(pipe, wire_inputs(mode=mode, params={"amg": amg}))


def test_other_work_parameters_are_bounded(pipe):
    b = DEFAULT_BUDGET
    with pytest.raises(InputError, match="max_points = 5000 is over the budget of 4096"):
        b.check_params("point-dense", {"max_points": 5000})
    with pytest.raises(InputError, match="k = 100 labels is over the budget of 32"):
        b.check_params("box", {"k": 100})
    b.check_params("point-dense", {"max_points": 4096})  # at the bound: fine


# --- JSON and parameter names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "over the budget of 65536 bytes"),
        (b'{"a": ' * 20 + b"1" + b"}" * 20, "nested deeper than 8 levels"),
        (b'{"seed": NaN}', "not JSON"),
        (b'{"seed": Infinity}', "not JSON"),
        (b'{"threshold": 0.5', "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "got a JSON list"),
        (b'"x" ' * 10, "not JSON"),
    ],
)
def test_hostile_params_json_gets_a_client_error(pipe, raw, match):
    with pytest.raises(InputError, match=match):
        parse_params_json(raw)
    with pytest.raises(InputError, match=match):
        serve(pipe, wire_inputs(mode="heatmap", params=raw))


@pytest.mark.parametrize("key", ["mode", "frames", "audio", "sample_rate"])
def test_params_named_like_segment_arguments_are_refused(pipe, key):
    with pytest.raises(InputError, match="are request inputs, not mode parameters"):
        serve(pipe, wire_inputs(mode="heatmap", params={key: 1}))


@pytest.mark.parametrize(
    "params",
    [
        {"seed": 1.5},
        {"seed": "1"},
        {"seed": None},
        {"seed": 1e400},
        {"amg": {"points_per_side": 1.5}},
    ],
)
def test_wrong_numbers_are_input_errors(pipe, params):
    with pytest.raises(InputError):
        serve(pipe, wire_inputs(mode="random-sam", params=params))


def test_budget_rejects_nonsense_bounds():
    for bad in (
        {"max_frames": 0},
        {"max_frames": 1.5},
        {"deadline_s": -1},
        {"max_decoded_mb": float("nan")},
    ):
        with pytest.raises(InputError):
            Budget(**bad)
    with pytest.raises(InputError, match="budget must be a runtime.budget.Budget"):
        runtime.Pipeline.__init__(object.__new__(runtime.Pipeline), None, budget={"max_frames": 1})


# --- deadline ----------------------------------------------------------------------------------------------


class FakeClock:
    """time.monotonic that advances 1 s per call: a deadline of d s passes after about d checks."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def test_deadline_cancels_between_decoder_batches_and_the_next_request_is_served(pipe, monkeypatch):
    frames, audio, sr = clip(3)
    runner = pipe.sam_runner()
    calls = {"n": 0}

    for name in ("predict_low_res", "predict_low_res_iou_first"):  # one call per decoder batch
        orig = getattr(runner, name)

        def counted(*a, _orig=orig, **k):
            calls["n"] += 1
            return _orig(*a, **k)

        monkeypatch.setattr(runner, name, counted)
    # full run: 3 frames x 16 x 16 points in batches of 16 = 48 decoder calls
    monkeypatch.setattr(budget_mod, "_clock", FakeClock())
    slow = runtime.Pipeline(pipe.bundle, threads=1, budget=Budget(deadline_s=12))
    slow._sessions, slow.session_info = pipe._sessions, pipe.session_info
    slow.stages(["sam"]).sam._runner = runner  # the same sessions, with the counters
    with pytest.raises(DeadlineExceeded, match="deadline of 12 s"):
        slow.segment(
            list(frames),
            audio,
            sr,
            mode="random-sam",
            amg={"points_per_side": 16, "points_per_batch": 16},
        )
    assert 0 < calls["n"] < 12, f"{calls['n']} decoder calls: the work did not stop at the deadline"
    monkeypatch.undo()
    # the same pipeline serves the next request (no deadline left behind)
    res = pipe.segment(list(frames), audio, sr, mode="heatmap")
    assert len(res.masks) == 3
    assert budget_mod._DEADLINE.get() is None


def test_served_deadline_is_a_clear_client_error(pipe, monkeypatch):
    monkeypatch.setattr(budget_mod, "_clock", FakeClock())
    slow = runtime.Pipeline(pipe.bundle, threads=1, budget=Budget(deadline_s=1))
    with pytest.raises(DeadlineExceeded, match="ran past its deadline of 1 s") as e:
        serve(slow, wire_inputs(mode="heatmap"))
    assert isinstance(e.value, AVSError) and "--deadline-s" in str(e.value)


def test_deadline_nests_and_resets():
    with deadline(100):
        outer = budget_mod._DEADLINE.get()
        with deadline(1000):  # a later inner deadline keeps the outer one
            assert budget_mod._DEADLINE.get() == outer
        with deadline(1):
            assert budget_mod._DEADLINE.get()[1] == 1
        assert budget_mod._DEADLINE.get() == outer
    assert budget_mod._DEADLINE.get() is None
    with pytest.raises(InputError):
        with deadline(0):
            pass
