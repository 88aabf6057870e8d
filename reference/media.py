"""Real test media made from ../shared/data: AVSBench-like clips (224 x 224 PNG frames + a 16 kHz WAV)."""

from __future__ import annotations

import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DEMO_FRAMES", "DEMO_WAV", "make_demo_clip", "write_wav16"]

DEMO_FRAMES = ("cat_1.jpg", "cars_2.jpg", "clock_1.jpg", "coughing_1.jpg", "lightning_1.jpg")
DEMO_WAV = "cat_3-95694-A-5.wav"


def write_wav16(path: Path, x: np.ndarray, rate: int) -> None:
    s = np.round(np.clip(x, -1.0, 32767 / 32768) * 32768).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(s.tobytes())


def make_demo_clip(
    demo_dir: str | Path,
    out_dir: str | Path,
    *,
    size: int = 224,
    rate: int = 16000,
    frames: Sequence[str] = DEMO_FRAMES,
    wav: str = DEMO_WAV,
) -> tuple[list[Path], Path]:
    """An AVSBench-like clip from the real demo media: (frame PNG paths, wav path).

    Frames: the photos squashed to ``size`` x ``size`` (PIL bicubic, aspect ratio not kept, like
    AVSBench's cv2 resize); audio: the wav as mono resampled to ``rate`` Hz (soxr HQ), 16-bit PCM.
    """
    import soxr

    from runtime.preprocess.audio import read_wav

    demo_dir, out_dir = Path(demo_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(frames, start=1):
        with Image.open(demo_dir / name) as im:
            p = out_dir / f"frame_{i}.png"
            im.convert("RGB").resize((size, size), Image.BICUBIC).save(p)
        paths.append(p)
    x, sr = read_wav(demo_dir / wav)
    mono = x.mean(axis=0).astype(np.float32)
    y = soxr.resample(mono, sr, rate, quality="HQ").astype(np.float32) if sr != rate else mono
    wav_out = out_dir / f"audio_{rate // 1000}k.wav"
    write_wav16(wav_out, y, rate)
    return paths, wav_out
