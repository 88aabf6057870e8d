"""Audio input: WAV reading, mono mixdown, resampling (soxr) and the AVSBench per-frame chunking.

Waveforms enter as a WAV path or as an array plus its sample rate. Arrays may be float (values in
[-1, 1]), int16, int32 or uint8 PCM, mono [T] or multichannel [C, T] / [T, C]. The convention of
the AVSBench loaders (spec sam4avs-reference 1.5) then gives one 1-second chunk per video frame,
each tiled to the model's clip length.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soxr

from runtime.errors import InputError

MIN_RATE, MAX_RATE = 1000, 384_000
MAX_SECONDS = 3600.0
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a RIFF/WAVE file -> (float32 [C, T] in [-1, 1], sample rate in Hz).

    PCM 8 (unsigned), 16, 24 and 32 bit, IEEE float 32/64 and WAVE_FORMAT_EXTENSIBLE are read.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"audio file not found: {p}")
    data = p.read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InputError(f"{p}: not a RIFF/WAVE file (only .wav is read; decode other formats first)")
    pos, fmt, payload = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt = body
        elif cid == b"data":
            payload = body
        pos += 8 + size + (size & 1)
    if fmt is None or payload is None or len(fmt) < 16:
        raise InputError(f"{p}: WAV file lacks a fmt or data chunk")
    tag, channels, rate, _, block, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]
    if channels < 1 or block < 1:
        raise InputError(f"{p}: bad WAV header ({channels} channels, block {block})")
    n = len(payload) // block
    raw = payload[: n * block]
    width = block // channels
    if tag == _PCM and width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif tag == _PCM and width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif tag == _PCM and width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    elif tag == _PCM and width == 4:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    elif tag == _FLOAT and width == 4:
        x = np.frombuffer(raw, "<f4").astype(np.float32)
    elif tag == _FLOAT and width == 8:
        x = np.frombuffer(raw, "<f8").astype(np.float32)
    else:
        raise InputError(f"{p}: unsupported WAV encoding (format tag {tag}, {bits} bits)")
    return x.reshape(-1, channels).T.copy(), int(rate)


def to_mono_float(audio: np.ndarray, *, name: str = "audio") -> np.ndarray:
    """Mono float32 [T] from [T], [C, T] or [T, C] (C <= 8, taken as the smaller axis) of any PCM dtype.

    int16 / int32 / uint8 are scaled to [-1, 1]; floats are kept as given and must be finite.
    Channels are averaged (librosa's ``mono=True``).
    """
    if not isinstance(audio, np.ndarray):
        raise InputError(f"{name}: expected a numpy array or a WAV path, got {type(audio).__name__}")
    a = audio
    if a.dtype == np.int16:
        a = a.astype(np.float32) / 32768.0
    elif a.dtype == np.int32:
        a = (a.astype(np.float64) / 2147483648.0).astype(np.float32)
    elif a.dtype == np.uint8:
        a = (a.astype(np.float32) - 128.0) / 128.0
    elif a.dtype in (np.float32, np.float64, np.float16):
        a = a.astype(np.float32)
    else:
        raise InputError(f"{name}: unsupported dtype {a.dtype}; expected float32/64 in [-1, 1] or int16/int32/uint8 PCM")
    if a.ndim == 2:
        ch_axis = 0 if a.shape[0] <= a.shape[1] else 1
        if a.shape[ch_axis] > 8:
            raise InputError(f"{name}: shape {audio.shape} looks like neither [C, T] nor [T, C] with C <= 8")
        a = a.mean(axis=ch_axis, dtype=np.float64).astype(np.float32)
    elif a.ndim != 1:
        raise InputError(f"{name}: expected shape [T], [C, T] or [T, C], got {audio.shape}")
    if a.size == 0:
        raise InputError(f"{name}: the waveform is empty")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name}: the waveform holds NaN or Inf")
    return a


def load_audio(audio: np.ndarray | str | Path, sample_rate: int | None, target_rate: int) -> np.ndarray:
    """Mono float32 [T'] at ``target_rate`` from a WAV path or an array with its ``sample_rate``.

    Resampling uses soxr at "HQ" quality, as librosa's default ``res_type="soxr_hq"``.
    """
    if isinstance(audio, str | Path):
        wav, rate = read_wav(audio)
        if sample_rate is not None and sample_rate != rate:
            raise InputError(f"sample_rate={sample_rate} given, but {audio} is at {rate} Hz; leave sample_rate out for files")
        x = to_mono_float(wav)
    else:
        if sample_rate is None:
            raise InputError("sample_rate is required with an audio array (e.g. sample_rate=16000)")
        rate = sample_rate
        x = to_mono_float(audio)
    if not isinstance(rate, int | np.integer) or not MIN_RATE <= int(rate) <= MAX_RATE:
        raise InputError(f"sample rate must be an integer in [{MIN_RATE}, {MAX_RATE}] Hz, got {rate!r}")
    if x.size / rate > MAX_SECONDS:
        raise InputError(f"audio of {x.size / rate:.0f} s is longer than the {MAX_SECONDS:.0f} s limit")
    if int(rate) != target_rate:
        y = soxr.resample(x, int(rate), target_rate, quality="HQ").astype(np.float32)
        # librosa's output length: ceil(T * ratio) in float64, zero-padded or cut to it
        n = int(np.ceil(x.size * (float(target_rate) / float(rate))))
        x = np.pad(y, (0, max(0, n - y.size)))[:n]
    return x


def chunk_per_frame(x: np.ndarray, rate: int, num_frames: int, *, chunk_seconds: float = 1.0) -> np.ndarray:
    """Split a mono waveform into ``num_frames`` chunks of ``chunk_seconds`` -> float32 [F, S].

    The AVSBench convention: the clip is forced to F chunks; a longer clip is truncated; a shorter
    one keeps its whole chunks and is extended with copies of its last chunk. A clip shorter than one
    chunk (the reference breaks on it) is first repeated end to end until it fills one chunk.
    """
    s = int(round(chunk_seconds * rate))
    if x.ndim != 1 or x.size == 0:
        raise InputError(f"expected a non-empty mono waveform [T], got shape {x.shape}")
    if num_frames < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    if x.size < s:
        x = np.tile(x, -(-s // x.size))[:s]
    total = s * num_frames
    if x.size >= total:
        x = x[:total]
    else:
        whole = (x.size // s) * s
        last = x[x.size - s :]
        x = np.concatenate([x[:whole]] + [last] * ((total - whole) // s))
    return x.reshape(num_frames, s).astype(np.float32)


def prepare_audioclip_audio(
    audio: np.ndarray | str | Path,
    sample_rate: int | None,
    num_frames: int,
    *,
    target_rate: int,
    chunk_seconds: float,
    tile: int,
    input_scale: float,
) -> np.ndarray:
    """The AudioCLIP input of a clip: float32 [F, tile * chunk] at ``target_rate`` in model units.

    Each frame's 1-s chunk is repeated ``tile`` times (5 s, AudioCLIP's training length) and scaled
    by ``input_scale`` (32768: AudioCLIP's int16 convention; 1.0: the Sam4AVS reference).
    """
    x = load_audio(audio, sample_rate, target_rate)
    chunks = chunk_per_frame(x, target_rate, num_frames, chunk_seconds=chunk_seconds)
    return (np.tile(chunks, (1, tile)) * np.float32(input_scale)).astype(np.float32)
