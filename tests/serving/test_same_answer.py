"""Same answer everywhere: one image decoder for paths and ``frames_encoded``, and preprocessing whose
bits do not depend on numpy's version or BLAS (issue 18, finding 4).

Before: a 16-bit grey PNG decoded to 255 over the wire and 128 in-process; an EXIF-6 JPEG came out
16x32 over the wire and 32x16 in-process; MPO files were refused over the wire only; and the
float32 matmul resize rounded differently under numpy<2 (the served environment) than under numpy 2.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.errors import InputError
from runtime.preprocess import imagefile
from runtime.preprocess.image import load_frame
from runtime.preprocess.resize import resize, resize_matrix
from runtime.serving.triton_model import decode_request

ROOT = Path(__file__).resolve().parents[2]


def png16(value: int = 32896, hw=(16, 24)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(hw, value, np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def exif6_jpeg(hw=(16, 32), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    return buf.getvalue()


def mpo(hw=(16, 32)) -> bytes:
    a = Image.fromarray(np.full((*hw, 3), 200, np.uint8))
    b = Image.fromarray(np.full((*hw, 3), 10, np.uint8))
    buf = io.BytesIO()
    a.save(buf, format="MPO", save_all=True, append_images=[b], quality=95)
    return buf.getvalue()


def palette_alpha_png(hw=(16, 16)) -> bytes:
    img = Image.fromarray(np.full((*hw, 4), (10, 20, 30, 7), np.uint8), "RGBA")
    buf = io.BytesIO()
    img.convert("P").save(buf, format="PNG", transparency=0)
    return buf.getvalue()


def wire(encoded: list[bytes]) -> dict:
    return {
        "frames_encoded": np.array(encoded, dtype=object),
        "audio": np.zeros(1600, np.float32),
        "sample_rate": np.array([16000], np.int32),
    }


CASES = {"png16": png16, "exif6": exif6_jpeg, "mpo": mpo, "palette": palette_alpha_png}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_wire_decodes_like_an_image_path(tmp_path, name):
    raw = CASES[name]()
    path = tmp_path / f"{name}.img"
    path.write_bytes(raw)
    in_process = load_frame(path)
    served = decode_request(wire([raw]), max_request_bytes=2**20)["frames"][0]
    assert served.dtype == np.uint8 and served.shape == in_process.shape
    assert np.array_equal(served, in_process)


def test_decoding_rules():
    assert np.all(imagefile.decode(png16(32896)) == 128)  # (x * 255 + 32767) // 65535
    assert np.all(imagefile.decode(png16(65535)) == 255)
    assert imagefile.decode(exif6_jpeg((16, 32))).shape == (32, 16, 3)  # upright
    first = imagefile.decode(mpo())
    assert abs(int(first.mean()) - 200) <= 2  # MPO: the primary image
    assert imagefile.probe(png16()) == (16, 24, 2)
    with pytest.raises(InputError, match="expected a PNG or JPEG file, got GIF"):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format="GIF")
        imagefile.decode(buf.getvalue(), formats=imagefile.WIRE_FORMATS)
    with pytest.raises(InputError, match="cannot"):
        imagefile.decode(b"\x89PNG\r\n\x1a\n garbage")


# --- preprocessing bits across numpy lines -------------------------------------------------------------

_PROBE = r"""
import hashlib, json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from runtime.preprocess.resize import resize
from runtime.preprocess.image import squash_to_square, clip_preprocess
rng = np.random.default_rng(0)
out = {}
for k, (h, w, oh, ow, mode, aa) in enumerate([(96, 128, 224, 224, "bilinear", True),
        (96, 128, 224, 224, "bilinear", False), (360, 480, 224, 298, "bicubic", True),
        (7, 7, 96, 128, "bilinear", False), (480, 640, 64, 64, "bicubic", True)]):
    x = rng.random((3, h, w), dtype=np.float32) * 255
    x[:, ::3, ::2] = np.round(x[:, ::3, ::2])  # integer values: roundings land on x.5
    out[str(k)] = hashlib.sha256(resize(x, (oh, ow), mode, aa).tobytes()).hexdigest()
f = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
out["squash"] = hashlib.sha256(squash_to_square(f, 224).tobytes()).hexdigest()
out["clip"] = hashlib.sha256(clip_preprocess([f], size=224, mean=[0.5] * 3, std=[0.25] * 3).tobytes()).hexdigest()
print(json.dumps({"numpy": np.__version__, "h": out}))
"""


def _probe(python: str) -> dict:
    r = subprocess.run(
        [python, "-c", _PROBE, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_resize_bits_are_the_same_under_numpy_1_and_2():
    venv = Path(os.environ.get("AVS_TRITON_VENV", ROOT / ".venv-triton"))
    py = venv / "bin" / "python"
    if not py.is_file():
        pytest.skip(
            f"the served environment {venv} is not created (tests/test_serve.py creates it)"
        )
    here, there = _probe(sys.executable), _probe(str(py))
    assert here["h"] == there["h"], (here["numpy"], there["numpy"])


def test_resize_is_the_tap_sum_in_float64():
    rng = np.random.default_rng(1)
    x = rng.random((2, 9, 11))
    m_h, m_w = resize_matrix(9, 5, "bicubic", True), resize_matrix(11, 17, "bilinear", False)
    # (the bilinear/bicubic pair is not one resize; check each axis through a one-axis resize)
    got = resize(x, (5, 11), "bicubic", True)
    want = np.einsum("oi,bij->boj", m_h, x)
    assert np.allclose(got, want, rtol=0, atol=1e-12)
    got = resize(x, (9, 17), "bilinear", False)
    assert np.allclose(got, np.einsum("bij,oj->bio", x, m_w), rtol=0, atol=1e-12)
    # float32 in, float32 out, the float64 sum rounded once
    x32 = x.astype(np.float32)
    assert resize(x32, (5, 11), "bicubic", True).dtype == np.float32
    assert (
        hashlib.sha256(resize(x32, (4, 4)).tobytes()).digest()
        == hashlib.sha256(resize(x32.copy(), (4, 4)).tobytes()).digest()
    )
