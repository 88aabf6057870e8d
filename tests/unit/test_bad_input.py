"""Bad audio and frame input (issue 11, "Bad input": the rows of runtime/preprocess/audio.py and runtime/preprocess/image.py).

One row per case: what is fed, and what must come out (an InputError whose message says what was
wrong, or the documented conversion). Each row failed on the code before the fix: a misleading
message, garbage decoded silently, a raw TypeError, the limit checked only after reading
everything, an int16-scaled float clip accepted, a JPEG segmented sideways.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.errors import InputError
from runtime.preprocess.audio import MAX_SECONDS, load_audio, read_wav, to_mono_float
from runtime.preprocess.image import load_frame, load_frames


def wav_bytes(
    data: bytes,
    *,
    channels: int = 1,
    rate: int = 16000,
    bits: int = 16,
    tag: int = 1,
    block: int | None = None,
    data_size: int | None = None,
) -> bytes:
    """A RIFF/WAVE file: fmt chunk (with the given, possibly inconsistent, fields) + data chunk."""
    block = channels * ((bits + 7) // 8) if block is None else block
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    size = len(data) if data_size is None else data_size
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", size)
        + data
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body) - 4) + body


def write(tmp: Path, name: str, content: bytes) -> Path:
    p = tmp / name
    p.write_bytes(content)
    return p


def _zero_frames(tmp: Path):
    return lambda: load_audio(write(tmp, "empty.wav", wav_bytes(b"")), None, 44100)


def _block_align(tmp: Path):
    # 2 channels x 16 bits = 4 bytes per frame, but the header says 1: the old reader decoded it as 8-bit
    pcm = (np.sin(np.arange(1600) / 5.0) * 20000).astype("<i2").tobytes()
    return lambda: read_wav(write(tmp, "bad_block.wav", wav_bytes(pcm, channels=2, block=1)))


def _too_long_from_header(tmp: Path):
    # 1 kHz, 8-bit mono, 10 s longer than the limit: a sparse file, rejected from its header
    n = int((MAX_SECONDS + 10) * 1000)
    p = write(tmp, "long.wav", wav_bytes(b"", rate=1000, bits=8, data_size=n))
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size + n)
    return lambda: read_wav(p)


def _int16_scaled_floats(tmp: Path):
    x = (np.sin(np.arange(16000) / 7.0) * 12000.0).astype(np.float32)  # int16 units as float32
    return lambda: load_audio(x, 16000, 44100)


def _int16_scaled_float_wav(tmp: Path):
    x = (np.sin(np.arange(16000) / 7.0) * 12000.0).astype("<f4")
    return lambda: load_audio(
        write(tmp, "float_int16.wav", wav_bytes(x.tobytes(), bits=32, tag=3)), None, 44100
    )


def _frames_none(tmp: Path):
    return lambda: load_frames(None)


def _frames_int(tmp: Path):
    return lambda: load_frames(5)


@dataclass
class Row:
    name: str
    make: Callable[[Path], Callable[[], object]]
    match: str  # regex the InputError message must contain


ROWS = [
    Row("wav with 0 frames", _zero_frames, r"empty \(its data chunk holds 0 audio frames\)"),
    Row(
        "wav block align != channels x bytes",
        _block_align,
        r"inconsistent WAV header: block align 1 bytes",
    ),
    Row(
        "wav over 3600 s, from its header", _too_long_from_header, r"3610 s \(from the WAV header\)"
    ),
    Row("float array in int16 units", _int16_scaled_floats, r"divide them by 32768"),
    Row("float wav in int16 units", _int16_scaled_float_wav, r"divide them by 32768"),
    Row("frames=None", _frames_none, r"frames must be a sequence.*got NoneType"),
    Row("frames=5", _frames_int, r"frames must be a sequence.*got int"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_bad_input_row(row: Row, tmp_path: Path):
    call = row.make(tmp_path)
    with pytest.raises(InputError, match=row.match):
        call()


# --- rows that check a conversion or a resource bound rather than an error ------------------------


def test_float_audio_within_tolerance_is_kept():
    x = np.array(
        [0.0, 1.5, -1.9, 0.25], np.float32
    )  # slight overshoot (resampling, clipping) is fine
    np.testing.assert_array_equal(to_mono_float(x), x)
    with pytest.raises(InputError, match="divide"):
        to_mono_float(np.array([0.0, 2.5], np.float64))


def test_wav_is_read_with_bounded_memory(tmp_path: Path):
    """60 s of 16-bit stereo at 44.1 kHz: the peak of traced allocations stays within the float32
    result (21 MB) plus a few MB; the old reader held the file bytes, a decoded copy and a
    transposed copy at once (about 2.5x the result)."""
    rate, secs = 44100, 60
    pcm = (np.random.default_rng(0).integers(-20000, 20000, size=(rate * secs, 2))).astype("<i2")
    p = write(tmp_path, "long_ok.wav", wav_bytes(pcm.tobytes(), channels=2, rate=rate))
    tracemalloc.start()
    try:
        x, r = read_wav(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r == rate and x.shape == (2, rate * secs) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, :1000], pcm[:1000].T / np.float32(32768.0))
    assert peak < x.nbytes + 8_000_000, peak


def test_wav_truncated_data_chunk_reads_what_is_there(tmp_path: Path):
    pcm = (np.arange(1000) - 500).astype("<i2")
    p = write(
        tmp_path, "trunc.wav", wav_bytes(pcm.tobytes(), data_size=10**6)
    )  # header claims more
    x, _ = read_wav(p)
    np.testing.assert_array_equal(x[0], pcm / np.float32(32768.0))


def _exif_jpeg(path: Path, orientation: int) -> np.ndarray:
    """A 64x32 (W x H) JPEG, left half red, right half blue, top-left 8x8 green, with an EXIF
    orientation tag; returns the stored (unrotated) pixels."""
    a = np.zeros((32, 64, 3), np.uint8)
    a[:, :32] = (255, 0, 0)
    a[:, 32:] = (0, 0, 255)
    a[:8, :8] = (0, 255, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(path, quality=95, exif=exif)
    return a


# EXIF orientation -> the upright image, written independently as numpy rotations/flips of the stored one
UPRIGHT = {
    1: lambda a: a,
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, -1),  # stored rotated 90 ccw: show it rotated 90 cw
    8: lambda a: np.rot90(a, 1),
    2: lambda a: a[:, ::-1],
}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_jpeg_exif_orientation_is_applied(tmp_path: Path, orientation: int):
    p = tmp_path / f"o{orientation}.jpg"
    stored = _exif_jpeg(p, orientation)
    want = UPRIGHT[orientation](stored)
    got = load_frame(p)
    assert got.shape == want.shape
    # JPEG is lossy: compare the colour of each region's interior
    diff = np.abs(got.astype(int) - want.astype(int))
    assert np.median(diff) <= 4 and np.mean(diff > 60) < 0.05, orientation
    # the path through load_frames (what segment uses) gives the same
    np.testing.assert_array_equal(load_frames([p])[0], got)


# --- mode parameters: checked against their declared type and range before any work ---------------------

PARAM_ROWS = [
    ("acfpn", {"threshold": None}, "threshold must be in"),
    ("acfpn", {"threshold": [0.5]}, "threshold must be in"),
    ("acfpn", {"threshold": "abc"}, "threshold must be in"),
    ("heatmap", {"reverse": "no"}, "reverse must be bool"),
    ("heatmap", {"threshold": float("nan")}, "threshold must be in"),
    ("point-dense", {"t": "0.8"}, "t must be in"),
    ("point-dense", {"max_points": 2.5}, "max_points must be a positive int"),
    ("heatmap-box", {"box_strategy": "biggest"}, "box_strategy must be one of"),
    ("no-prompt", {"amg": 3}, "amg must be dict"),
    ("point-local", {"dataset": "avs"}, "dataset must be one of"),
    ("acfpn", {"treshold": 0.5}, "takes parameters"),
]


@pytest.mark.parametrize(
    ("mode", "params", "match"), PARAM_ROWS, ids=[f"{m}-{next(iter(p))}" for m, p, _ in PARAM_ROWS]
)
def test_bad_parameter_is_refused_before_any_session(tiny_bundle, mode, params, match):
    import runtime
    from runtime.errors import InputError

    pipe = runtime.load(tiny_bundle)
    frames = [np.zeros((32, 32, 3), np.uint8)]
    with pytest.raises(InputError, match=match):
        pipe.segment(frames, np.zeros(16000, np.float32), 16000, mode=mode, **params)
    assert pipe.session_info == {}  # nothing was loaded, nothing ran
