"""Property-based fuzz of the served model's request decoding and of mode parameters (Hypothesis).

Property: whatever a client sends, :func:`runtime.serving.triton_model.decode_request` (with the
pipeline's mode check and the default budget) either returns well-formed ``segment`` arguments or
raises :class:`~runtime.errors.InputError`; nothing else escapes (no TypeError, KeyError,
RecursionError, "internal error"). Bounded: a fixed number of examples per property, derandomized
(the same examples on every run and machine), no example database, no per-example deadline.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

import runtime  # noqa: E402
from runtime.budget import DEFAULT_BUDGET, parse_params_json  # noqa: E402
from runtime.errors import InputError  # noqa: E402
from runtime.modes import MODES  # noqa: E402
from runtime.preprocess import imagefile  # noqa: E402
from runtime.serving import wire  # noqa: E402
from runtime.serving.triton_model import decode_request  # noqa: E402

FUZZ = settings(
    max_examples=int(os.environ.get("AVS_FUZZ_EXAMPLES", "150")),
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def pipe(request):
    env = os.environ.get("AVS_TEST_BUNDLE")
    b = Path(env) if env else request.getfixturevalue("tiny_bundle")
    return runtime.load(b, threads=1)


def _png(h: int, w: int, mode: str) -> bytes:
    buf = io.BytesIO()
    arr = np.zeros((h, w) if mode in ("L", "I;16") else (h, w, len(mode)), np.uint8)
    img = Image.fromarray(arr.astype(np.uint16) if mode == "I;16" else arr, None)
    img.save(buf, format="PNG")
    return buf.getvalue()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=20,
)
param_names = st.sampled_from(
    sorted({p.name for m in MODES.values() for p in m.params} | {"frames", "mode", "x"})
)
amg_names = st.sampled_from(
    [
        "points_per_side",
        "points_per_batch",
        "crop_n_layers",
        "crop_n_points_downscale_factor",
        "pred_iou_thresh",
        "bogus",
    ]
)
params_objects = st.dictionaries(
    param_names,
    json_values | st.dictionaries(amg_names, json_values, max_size=4),
    max_size=4,
)
params_bytes = (
    params_objects.map(lambda d: json.dumps(d).encode())
    | st.binary(max_size=64)
    | st.sampled_from(
        [b"[" * 5000, b'{"seed": NaN}', b'{"amg": {"points_per_side": 1e308}}', b"", b"  ", b"null"]
    )
)
modes = st.sampled_from([*MODES, "", "nope", "heatmap\x00"]).map(str.encode) | st.binary(max_size=8)
image_bytes = st.one_of(
    st.binary(max_size=64),
    st.builds(
        _png,
        st.integers(1, 40),
        st.integers(1, 40),
        st.sampled_from(["L", "RGB", "RGBA", "I;16"]),
    ),
    st.binary(max_size=48).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    st.binary(max_size=48).map(lambda b: b"\xff\xd8\xff\xe0" + b),
)
dtypes = st.sampled_from([np.uint8, np.float32, np.int32, np.float64, np.bool_])


@st.composite
def requests(draw):
    inputs: dict[str, np.ndarray] = {}
    if draw(st.booleans()):
        shape = draw(st.lists(st.integers(0, 12), min_size=1, max_size=5))
        inputs["frames"] = np.zeros(shape, draw(dtypes))
    if draw(st.booleans()):
        inputs["frames_encoded"] = np.array(draw(st.lists(image_bytes, max_size=3)), dtype=object)
    if draw(st.booleans()):
        inputs["audio"] = np.zeros(
            draw(st.lists(st.integers(0, 3000), min_size=1, max_size=2)), draw(dtypes)
        )
    if draw(st.booleans()):
        inputs["sample_rate"] = np.array(
            draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=2)), np.int64
        ).astype(draw(st.sampled_from([np.int32, np.float32])))
    if draw(st.booleans()):
        inputs["audio_encoded"] = np.array(
            [draw(st.binary(max_size=64).map(lambda b: b"RIFF\x00\x00\x00\x00WAVE" + b))],
            dtype=object,
        )
    if draw(st.booleans()):
        inputs["mode"] = np.array([draw(modes)], dtype=object)
    if draw(st.booleans()):
        inputs["params"] = np.array([draw(params_bytes)], dtype=object)
    if draw(st.integers(0, 9)) == 0:
        inputs["bogus"] = np.zeros(1, np.float32)
    return inputs


@FUZZ
@given(req=requests())
def test_any_request_decodes_or_is_an_input_error(pipe, req):
    try:
        out = decode_request(
            req, max_request_bytes=2**20, budget=DEFAULT_BUDGET, check_mode=pipe.check_mode
        )
    except InputError:
        return
    f = out["frames"]
    assert f.dtype == np.uint8 and f.ndim == 4 and f.shape[3] == 3 and f.shape[0] >= 1
    assert isinstance(out["params"], dict)
    assert set(out["params"]).isdisjoint({"frames", "audio", "sample_rate", "mode"})


@FUZZ
@given(raw=params_bytes, mode=st.sampled_from(sorted(MODES)))
def test_any_params_are_checked_or_an_input_error(pipe, raw, mode):
    try:
        params = parse_params_json(raw)
        spec, values = pipe.check_mode(mode, params)
        DEFAULT_BUDGET.check_params(spec.name, values)
        if values.get("amg") is not None:  # the generator's own checks, as segment runs them
            from runtime.modes.no_prompt import amg_config

            amg_config(pipe, values["amg"])
    except InputError:
        return


@FUZZ
@given(raw=image_bytes)
def test_any_image_bytes_decode_or_are_an_input_error(raw):
    try:
        h, w, _ = imagefile.probe(raw, formats=imagefile.WIRE_FORMATS)
        a = imagefile.decode(raw, formats=imagefile.WIRE_FORMATS)
    except InputError:
        return
    assert a.dtype == np.uint8 and a.shape[2] == 3 and a.shape[0] * a.shape[1] == h * w
    assert wire.MAX_FRAMES >= 1
