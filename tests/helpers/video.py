"""Generated test videos whose frames carry their index (bars that survive lossy coding)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from runtime.media.outputs import write_video

BITS = 10


def index_frame(k: int, h: int, w: int) -> np.ndarray:
    """A frame whose index k (< 2**BITS) is written as BITS vertical bars (white = bit set), wide
    enough to survive lossy coding; the bottom rows are a grey ramp (content for the codec)."""
    img = np.zeros((h, w, 3), np.uint8)
    bw = w // BITS
    for b in range(BITS):
        if (k >> b) & 1:
            img[: h - 4, b * bw : (b + 1) * bw] = 255
    img[h - 4 :] = (k * 7) % 256
    return img


def read_index(frame: np.ndarray) -> int:
    h, w = frame.shape[:2]
    bw = w // BITS
    k = 0
    for b in range(BITS):
        patch = frame[h // 4 : (3 * h) // 4, b * bw + bw // 3 : (b + 1) * bw - bw // 3]
        if patch.mean() > 128:
            k |= 1 << b
    return k


def make_video(
    path: Path,
    n: int,
    fps,
    *,
    size=(64, 48),
    audio_rate: int | None = 16000,
    channels: int = 1,
    tone=None,
    codec=None,
    pix_fmt="yuv420p",
) -> Path:
    """n index frames at ``fps`` (+ audio: a tone whose frequency encodes the time, unless ``tone``)."""
    w, h = size
    frames = (index_frame(k, h, w) for k in range(n))
    audio = None
    if audio_rate is not None:
        t = np.arange(int(round(n / float(Fraction(fps)) * audio_rate))) / audio_rate
        x = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32) if tone is None else tone(t)
        audio = np.stack([x] * channels) if channels > 1 else x
    return write_video(
        path,
        frames,
        Fraction(fps),
        audio=audio,
        sample_rate=audio_rate,
        codec=codec,
        pix_fmt=pix_fmt,
    )
