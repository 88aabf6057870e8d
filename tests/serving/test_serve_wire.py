"""The served model's request handling without a server, and the serving modules' import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.serving import wire
from runtime.serving.client import decode_response, encode_request
from runtime.serving.triton_model import decode_request

REPO = Path(__file__).resolve().parents[2]
LIMIT = 2**20


def _b(x: bytes) -> np.ndarray:
    a = np.empty(1, dtype=object)
    a[0] = x
    return a


def good() -> dict[str, np.ndarray]:
    return {
        "frames": np.zeros((2, 16, 24, 3), np.uint8),
        "audio": np.zeros(800, np.float32),
        "sample_rate": np.array([16000], np.int32),
    }


def test_a_good_request_decodes():
    req = decode_request(
        {**good(), "mode": _b(b"heatmap"), "params": _b(b'{"threshold": 0.3}')},
        max_request_bytes=LIMIT,
    )
    assert req["frames"].shape == (2, 16, 24, 3) and req["sample_rate"] == 16000
    assert req["mode"] == "heatmap" and req["params"] == {"threshold": 0.3}


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"frames": np.zeros((0, 16, 16, 3), np.uint8)}, "at least 1 frame"),
        ({"frames": np.zeros((16, 16, 3), np.uint8)}, "UINT8 [N, H, W, 3]"),
        ({"frames": np.zeros((1, 16, 16, 3), np.float32)}, "expected UINT8"),
        (
            {"frames": np.zeros((wire.MAX_FRAMES + 1, 8, 8, 3), np.uint8)},
            "over the budget of 64 frames",
        ),
        ({"audio": np.zeros(LIMIT // 4 + 1, np.float32)}, "over the limit of 1 MiB"),
        ({"audio": np.zeros((2, 8), np.float32)}, "FP32 [T]"),
        ({"sample_rate": None}, "sample_rate: expected INT32 [1]"),
        ({"params": _b(b"nope")}, "not JSON"),
        ({"params": _b(b"3")}, "JSON object"),
        ({"mode": _b(b"\xff\xfe")}, "UTF-8"),
        ({"audio": None, "sample_rate": None}, "exactly one of `audio`"),
        ({"audio_encoded": _b(b"RIFF....WAVE")}, "exactly one of `audio`"),
        ({"frames_encoded": _b(b"x")}, "exactly one of `frames`"),
        ({"bogus": np.zeros(1)}, "unknown inputs ['bogus']"),
    ],
)
def test_bad_requests_name_what_was_expected(change, expected):
    inputs = {k: v for k, v in {**good(), **change}.items() if v is not None}
    with pytest.raises(InputError) as e:
        decode_request(inputs, max_request_bytes=LIMIT)
    assert expected in str(e.value)


def test_frames_encoded_must_share_one_size():
    import io

    from PIL import Image

    pngs = []
    for hw in ((16, 16), (16, 20)):
        buf = io.BytesIO()
        Image.fromarray(np.zeros((*hw, 3), np.uint8)).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    a = np.empty(2, dtype=object)
    a[:] = pngs
    inputs = {k: v for k, v in good().items() if k != "frames"}
    with pytest.raises(InputError, match="one size"):
        decode_request({**inputs, "frames_encoded": a}, max_request_bytes=LIMIT)
    a[:] = [pngs[0], pngs[0]]
    assert decode_request({**inputs, "frames_encoded": a}, max_request_bytes=LIMIT)[
        "frames"
    ].shape == (2, 16, 16, 3)


def test_client_encoding_and_decoding_round_trip():
    frames = [
        np.full((16, 24, 3), 7, np.uint8),
        np.full((16, 24), 9, np.uint8),
    ]  # grayscale is converted
    stereo = np.zeros((2, 1600), np.int16)
    enc = encode_request(frames, stereo, 8000, mode="heatmap", params={"threshold": 0.2})
    assert enc["frames"].dtype == np.uint8 and enc["frames"].shape == (2, 16, 24, 3)
    assert enc["audio"].dtype == np.float32 and enc["audio"].shape == (1600,)
    assert enc["sample_rate"].tolist() == [8000] and json.loads(enc["params"][0]) == {
        "threshold": 0.2
    }
    req = decode_request(enc, max_request_bytes=LIMIT)
    assert req["mode"] == "heatmap"
    with pytest.raises(InputError, match="one size"):
        encode_request(
            [np.zeros((16, 16, 3), np.uint8), np.zeros((8, 16, 3), np.uint8)], stereo, 8000
        )
    with pytest.raises(InputError, match="sample_rate is required"):
        encode_request(frames, stereo)
    info = {
        "mode": "heatmap",
        "preset": "default",
        "random_weights": True,
        "timings": {"total": 1.0},
        "providers": {},
        "precision": {},
        "frames": [
            {
                "hw": [2, 2],
                "coverage": 0.5,
                "score": {"values": [[0.1, 0.9], [0.2, 0.8]], "shape": [2, 2]},
                "prompt": {"threshold": 0.5},
            },
            {
                "hw": [2, 2],
                "coverage": 0.5,
                "score": {"shape": [40, 40], "min": 0, "max": 1, "mean": 0.5},
                "prompt": {},
            },
        ],
    }
    res = decode_response(np.zeros((2, 2, 2), bool), json.dumps(info).encode())
    assert res.mode == "heatmap" and res.random_weights and res.scores[0].shape == (2, 2)
    assert res.scores[1].size == 0 and res.prompts == [{"threshold": 0.5}, {}]


def test_serving_modules_import_neither_torch_nor_tritonclient():
    code = (
        "import sys, runtime.serving.client, runtime.serving.triton_model, runtime.serving.server, "
        "runtime.serving.repo, runtime.serving.tritonenv, avs.serve_cli\n"
        "bad = [m for m in ('torch', 'tritonclient', 'models', 'export') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
