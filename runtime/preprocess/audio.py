"""Audio input: WAV reading, mono mixdown, resampling (soxr) and the AVSBench per-frame chunking.

Waveforms enter as a WAV path or as an array plus its sample rate. Arrays may be float (values in
[-1, 1]; peaks above 2 are refused as int16-scaled floats, divide those by 32768), int16, int32 or
uint8 PCM, mono [T] or multichannel [C, T] / [T, C]. Limits: at most 3600 s (checked from a WAV's
header before its samples are read), at least one sample, sample rate 1 kHz..384 kHz. The
convention of the AVSBench loaders (spec sam4avs-reference 1.5) then gives one 1-second chunk per
video frame, each tiled to the model's clip length.
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


_READ_FRAMES = 1 << 18  # frames decoded per block: memory stays ~ the float32 output + one block
MAX_FLOAT_PEAK = 2.0  # float audio beyond this is not [-1, 1] audio (e.g. int16-scaled floats)
# int16 PCM units per unit of [-1, 1] audio: the WAV/int16 convention here, and AudioCLIP's input
# scale (it was trained on int16-unit waveforms; the `default` preset's audio_input_scale)
INT16_SCALE = 32768.0


def _wav_header(f, p: Path, file_size: int) -> tuple[int, int, int, int, int, int, int]:
    """Walk the RIFF chunks without reading the samples -> (tag, channels, rate, block, bits,
    data offset, data bytes)."""
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise InputError(
            f"{p}: not a RIFF/WAVE file (only .wav is read; decode other formats first)"
        )
    pos, fmt, data = 12, None, None
    while pos + 8 <= file_size:
        f.seek(pos)
        hdr = f.read(8)
        cid, size = hdr[:4], struct.unpack("<I", hdr[4:8])[0]
        if cid == b"fmt ":
            fmt = f.read(min(size, 64))
        elif cid == b"data":
            # a size past the end (truncated or streamed files, 0xFFFFFFFF) means "to the end"
            data = (pos + 8, min(size, file_size - pos - 8))
            if fmt is not None:
                break
        pos += 8 + size + (size & 1)
    if fmt is None or data is None or len(fmt) < 16:
        raise InputError(f"{p}: WAV file lacks a fmt or data chunk")
    tag, channels, rate, _, block, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]
    return tag, channels, rate, block, bits, data[0], data[1]


def _decode(raw: bytes, tag: int, width: int) -> np.ndarray | None:
    """Interleaved samples -> float32 [n * channels] in [-1, 1] (None: unsupported encoding)."""
    if tag == _PCM and width == 1:
        return (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    if tag == _PCM and width == 2:
        return np.frombuffer(raw, "<i2").astype(np.float32) / np.float32(INT16_SCALE)
    if tag == _PCM and width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float32) / float(1 << 23)
    if tag == _PCM and width == 4:
        return (np.frombuffer(raw, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    if tag == _FLOAT and width == 4:
        return np.frombuffer(raw, "<f4").astype(np.float32)
    if tag == _FLOAT and width == 8:
        return np.frombuffer(raw, "<f8").astype(np.float32)
    return None


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a RIFF/WAVE file -> (float32 [C, T] in [-1, 1], sample rate in Hz).

    PCM 8 (unsigned), 16, 24 and 32 bit, IEEE float 32/64 and WAVE_FORMAT_EXTENSIBLE are read.
    The header is checked before any sample is read: the block align must equal channels x bytes
    per sample (otherwise the file is refused rather than decoded as garbage), the file must hold
    at least one frame, and its duration (from the header) must not exceed ``MAX_SECONDS``
    (3600 s). Samples are then decoded block by block into the float32 result, so memory stays
    bounded by the result plus one block.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"audio file not found: {p}")
    file_size = p.stat().st_size
    with open(p, "rb") as f:
        tag, channels, rate, block, bits, offset, nbytes = _wav_header(f, p, file_size)
        if channels < 1 or block < 1:
            raise InputError(f"{p}: bad WAV header ({channels} channels, block align {block})")
        if bits < 1 or block != channels * ((bits + 7) // 8):
            raise InputError(
                f"{p}: inconsistent WAV header: block align {block} bytes, but {channels} channel(s) x "
                f"{bits} bits per sample need {channels * ((bits + 7) // 8)} bytes; the file is damaged or "
                f"mislabelled (re-encode it, e.g. ffmpeg -i in.wav -c:a pcm_s16le out.wav)"
            )
        if _decode(b"", tag, block // channels) is None:
            raise InputError(f"{p}: unsupported WAV encoding (format tag {tag}, {bits} bits)")
        n = nbytes // block
        if n == 0:
            raise InputError(f"{p}: the WAV file is empty (its data chunk holds 0 audio frames)")
        if rate < 1:
            raise InputError(f"{p}: bad WAV header (sample rate {rate})")
        if n / rate > MAX_SECONDS:
            raise InputError(
                f"{p}: audio of {n / rate:.0f} s (from the WAV header) is longer than the "
                f"{MAX_SECONDS:.0f} s limit; cut it first"
            )
        out = np.empty((channels, n), dtype=np.float32)
        f.seek(offset)
        done = 0
        while done < n:
            k = min(_READ_FRAMES, n - done)
            raw = f.read(k * block)
            k = len(raw) // block
            if k == 0:
                break
            out[:, done : done + k] = (
                _decode(raw[: k * block], tag, block // channels).reshape(k, channels).T
            )
            done += k
    if done == 0:
        raise InputError(f"{p}: the WAV file is empty (its data chunk holds 0 audio frames)")
    return out[:, :done] if done < n else out, int(rate)


def to_mono_float(audio: np.ndarray, *, name: str = "audio") -> np.ndarray:
    """Mono float32 [T] from [T], [C, T] or [T, C] (C <= 8, taken as the smaller axis) of any PCM dtype.

    int16 / int32 / uint8 are scaled to [-1, 1]; floats are kept as given and must be finite.
    Channels are averaged (librosa's ``mono=True``).
    """
    if not isinstance(audio, np.ndarray):
        raise InputError(
            f"{name}: expected a numpy array or a WAV path, got {type(audio).__name__}"
        )
    a = audio
    if a.dtype == np.int16:
        a = a.astype(np.float32) / np.float32(INT16_SCALE)
    elif a.dtype == np.int32:
        a = (a.astype(np.float64) / 2147483648.0).astype(np.float32)
    elif a.dtype == np.uint8:
        a = (a.astype(np.float32) - 128.0) / 128.0
    elif a.dtype in (np.float32, np.float64, np.float16):
        a = a.astype(np.float32)
        peak = float(np.max(np.abs(a))) if a.size and np.all(np.isfinite(a)) else 0.0
        if peak > MAX_FLOAT_PEAK:
            raise InputError(
                f"{name}: float audio must lie in [-1, 1] (peaks up to {MAX_FLOAT_PEAK:g} are tolerated), "
                f"got a peak of {peak:.4g}; int16-scaled samples as floats? divide them by 32768 "
                f"(or pass the int16 array itself, which is converted)"
            )
    else:
        raise InputError(
            f"{name}: unsupported dtype {a.dtype}; expected float32/64 in [-1, 1] or int16/int32/uint8 PCM"
        )
    if a.size == 0:
        raise InputError(f"{name}: the waveform is empty (0 samples)")
    if a.ndim == 2:
        ch_axis = 0 if a.shape[0] <= a.shape[1] else 1
        if a.shape[ch_axis] > 8:
            raise InputError(
                f"{name}: shape {audio.shape} looks like neither [C, T] nor [T, C] with C <= 8"
            )
        a = a.mean(axis=ch_axis, dtype=np.float64).astype(np.float32)
    elif a.ndim != 1:
        raise InputError(f"{name}: expected shape [T], [C, T] or [T, C], got {audio.shape}")
    if a.size == 0:
        raise InputError(f"{name}: the waveform is empty")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name}: the waveform holds NaN or Inf")
    return a


def load_audio(
    audio: np.ndarray | str | Path, sample_rate: int | None, target_rate: int
) -> np.ndarray:
    """Mono float32 [T'] at ``target_rate`` from a WAV path or an array with its ``sample_rate``.

    Resampling uses soxr at "HQ" quality, as librosa's default ``res_type="soxr_hq"``.
    """
    if isinstance(audio, str | Path):
        wav, rate = read_wav(audio)
        if sample_rate is not None and sample_rate != rate:
            raise InputError(
                f"sample_rate={sample_rate} given, but {audio} is at {rate} Hz; leave sample_rate out for files"
            )
        x = to_mono_float(wav)
    else:
        if sample_rate is None:
            raise InputError("sample_rate is required with an audio array (e.g. sample_rate=16000)")
        rate = sample_rate
        x = to_mono_float(audio)
    if not isinstance(rate, int | np.integer) or not MIN_RATE <= int(rate) <= MAX_RATE:
        raise InputError(
            f"sample rate must be an integer in [{MIN_RATE}, {MAX_RATE}] Hz, got {rate!r}"
        )
    if x.size / rate > MAX_SECONDS:
        raise InputError(
            f"audio of {x.size / rate:.0f} s is longer than the {MAX_SECONDS:.0f} s limit"
        )
    if int(rate) != target_rate:
        y = soxr.resample(x, int(rate), target_rate, quality="HQ").astype(np.float32)
        # librosa's output length: ceil(T * ratio) in float64, zero-padded or cut to it
        n = int(np.ceil(x.size * (float(target_rate) / float(rate))))
        x = np.pad(y, (0, max(0, n - y.size)))[:n]
    return x


SHORT_CLIP_POLICIES = ("repeat", "refuse")


def short_clip_policy(preset) -> str:
    """What a preset (a ``runtime.bundle.contract.Preset`` or a mapping) does with a clip shorter than one
    chunk: its ``short_clip`` constant, else
    "refuse" for the reference preset (``zero_shot_quirks``, or the name ``sam4avs``), "repeat"
    otherwise."""
    p = preset.get("short_clip")
    if p is None:
        p = (
            "refuse"
            if preset.get("zero_shot_quirks", preset.get("name") == "sam4avs")
            else "repeat"
        )
    if p not in SHORT_CLIP_POLICIES:
        raise InputError(f"preset short_clip must be one of {SHORT_CLIP_POLICIES}, got {p!r}")
    return p


def chunk_per_frame(
    x: np.ndarray,
    rate: int,
    num_frames: int,
    *,
    chunk_seconds: float = 1.0,
    short_clip: str = "repeat",
) -> np.ndarray:
    """Split a mono waveform into ``num_frames`` chunks of ``chunk_seconds`` -> float32 [F, S].

    The AVSBench convention: the clip is forced to F chunks; a longer clip is truncated; a shorter
    one keeps its whole chunks and is extended with copies of its last chunk.

    A clip shorter than one chunk (S samples): the original loader (spec 1.5) does not crash but
    gives every frame the *whole* short clip, so the audio tower gets an input of another length
    than a full chunk, which the fixed-length exported graphs cannot take. ``short_clip="repeat"``
    (preset ``default``) repeats the clip end to end until it fills one chunk; ``"refuse"`` (preset
    ``sam4avs``) raises InputError saying the original's result cannot be reproduced.
    """
    s = int(round(chunk_seconds * rate))
    if x.ndim != 1 or x.size == 0:
        raise InputError(f"expected a non-empty mono waveform [T], got shape {x.shape}")
    if num_frames < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    if short_clip not in SHORT_CLIP_POLICIES:
        raise InputError(f"short_clip must be one of {SHORT_CLIP_POLICIES}, got {short_clip!r}")
    if x.size < s:
        if short_clip == "refuse":
            raise InputError(
                f"the clip is {x.size / rate:.3f} s long, shorter than one {chunk_seconds:g}-s chunk per "
                f"frame: the original Sam4AVS loader (preset 'sam4avs') then gives every frame the whole "
                f"short clip, an audio input of {x.size} instead of {s} samples per chunk, which the "
                f"exported fixed-length audio graphs cannot take, so the original's result cannot be "
                f"reproduced. Use preset 'default' (it repeats the clip to fill the chunk) or a clip of "
                f"at least {chunk_seconds:g} s"
            )
        x = np.tile(x, -(-s // x.size))[:s]
    total = s * num_frames
    if x.size >= total:
        x = x[:total]
    else:
        whole = (x.size // s) * s
        last = x[x.size - s :]
        x = np.concatenate([x[:whole]] + [last] * ((total - whole) // s))
    return x.reshape(num_frames, s).astype(np.float32)


def int16_round_trip(x: np.ndarray) -> np.ndarray:
    """Quantise a waveform to int16 and back, as laion-clap's ``float32_to_int16`` followed by
    ``int16_to_float32`` (the Box-Prompt CLAP input) and Sam4AVS's No-Prompt loader do.

    x: float32 or float64 array of any shape, nominally in [-1, 1] (clipped to it). Steps and their
    dtypes, those of the references' numpy code: clip, then x 32767 in the input's own float dtype
    (float32 for the float32 waveforms librosa and :func:`load_audio` give, so float32 rounding
    decides which side of an integer a sample lands), truncate toward zero to int16, then / 32767
    in float64 and round once to float32. Returns float32, the same shape, values in [-1, 1] on the
    int16 grid (k / 32767). A float64 input keeps its multiply in float64, as numpy would.
    Raises InputError for a non-float input.
    """
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        raise InputError(f"expected a float32/float64 waveform in [-1, 1], got dtype {a.dtype}")
    q = (np.clip(a, -1.0, 1.0) * a.dtype.type(32767.0)).astype(np.int16)
    return (q / 32767.0).astype(np.float32)


def prepare_audioclip_audio(
    audio: np.ndarray | str | Path,
    sample_rate: int | None,
    num_frames: int,
    *,
    target_rate: int,
    chunk_seconds: float,
    tile: int,
    input_scale: float,
    short_clip: str = "repeat",
) -> np.ndarray:
    """The AudioCLIP input of a clip: float32 [F, tile * chunk] at ``target_rate`` in model units.

    Each frame's 1-s chunk is repeated ``tile`` times (5 s, AudioCLIP's training length) and scaled
    by ``input_scale`` (32768: AudioCLIP's int16 convention; 1.0: the Sam4AVS reference).
    ``short_clip``: a clip under one chunk, see :func:`chunk_per_frame`.
    """
    x = load_audio(audio, sample_rate, target_rate)
    chunks = chunk_per_frame(
        x, target_rate, num_frames, chunk_seconds=chunk_seconds, short_clip=short_clip
    )
    return (np.tile(chunks, (1, tile)) * np.float32(input_scale)).astype(np.float32)
