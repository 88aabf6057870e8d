"""Generated demo media (no downloads, no files needed): a short clip as arrays, and a video with sound.

Numpy only at import. ``demo_video`` writes its file with :func:`runtime.media.outputs.write_video` (PyAV,
the ``video`` extra), imported when it is called.

    from runtime.media.demo import demo_inputs
    frames, audio, rate = demo_inputs()  # 5 uint8 RGB frames [224, 224, 3] + 5 s of 16 kHz audio
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["DEMO_RATE", "demo_inputs", "demo_video_media", "demo_video"]

DEMO_RATE = 16000  # Hz, the sample rate of every generated sound here


def _gradient(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, background float32 [h, w, 3]): a red-green gradient over a blue 120."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.zeros((h, w, 3), np.float32)
    base[..., 0] = 40 + 60 * xx / w
    base[..., 1] = 80 + 40 * yy / h
    base[..., 2] = 120
    return yy, xx, base


def _check_size(name: str, size) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
        or min(size) < 1
    ):
        raise ValueError(f"{name} must be two ints >= 1, got {size!r}")
    return int(size[0]), int(size[1])


def _check_count(name: str, v, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    return int(v)


def demo_inputs(num_frames: int = 5, size: tuple[int, int] = (224, 224), seed: int = 0):
    """A generated clip: ``num_frames`` uint8 RGB frames [H, W, 3] with a moving disc, and 16 kHz audio.

    ``size``: (H, W) of the frames (ints >= 1). Returns ``(frames, audio, rate)``: a list of uint8
    [H, W, 3] arrays (origin top-left), float32 mono audio [num_frames * 16000] in [-1, 1] (a 440 Hz
    tone with harmonics plus a little noise; second k goes with frame k), and the rate 16000.
    Deterministic for a given ``seed``. ValueError for a bad ``num_frames`` or ``size``.
    """
    num_frames = _check_count("num_frames", num_frames)
    h, w = _check_size("size", size)
    rng = np.random.default_rng(seed)
    yy, xx, base = _gradient(h, w)
    frames = []
    for k in range(num_frames):
        img = base.copy()
        cy, cx, r = h * 0.5, w * (0.3 + 0.1 * k), min(h, w) * 0.18
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (230, 200, 40)
        img += rng.normal(0, 4, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    t = np.arange(num_frames * DEMO_RATE) / DEMO_RATE
    audio = sum(0.3 / n * np.sin(2 * np.pi * 440 * n * t) for n in (1, 2, 3)) + 0.01 * rng.normal(
        size=t.size
    )
    return frames, audio.astype(np.float32), DEMO_RATE


def demo_video_media(
    *, seconds: int = 6, fps: int = 12, size: tuple[int, int] = (320, 240), seed: int = 0
) -> tuple[Iterator[np.ndarray], np.ndarray, int]:
    """The demo video's content: (frames, audio, rate).

    ``size`` is (W, H). ``frames`` yields ``seconds * fps`` uint8 RGB [H, W, 3] frames: a yellow disc
    moving left to right over a gradient and a blue square bouncing. ``audio``: float32 mono
    [seconds * 16000] in [-1, 1], a 440 Hz tone with harmonics that pulses once per second; rate 16000.
    """
    seconds = _check_count("seconds", seconds)
    fps = _check_count("fps", fps)
    w, h = _check_size("size", size)
    n = seconds * fps
    rng = np.random.default_rng(seed)
    yy, xx, base = _gradient(h, w)

    def frames() -> Iterator[np.ndarray]:
        for k in range(n):
            u = k / max(1, n - 1)
            img = base.copy()
            cx, cy, r = (
                w * (0.2 + 0.6 * u),
                h * (0.5 + 0.15 * np.sin(2 * np.pi * u)),
                min(w, h) * 0.16,
            )
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (235, 205, 40)
            sx = int(w * 0.75 - w * 0.5 * abs(((2 * u) % 2) - 1))
            sy, s = int(h * 0.15), int(min(w, h) * 0.15)
            img[sy : sy + s, max(0, sx - s // 2) : sx + s // 2] = (40, 70, 200)
            img += rng.normal(0, 3, img.shape)
            yield np.clip(img, 0, 255).astype(np.uint8)

    t = np.arange(seconds * DEMO_RATE) / DEMO_RATE
    env = 0.6 + 0.4 * np.cos(2 * np.pi * t) ** 2
    x = env * sum(0.25 / m * np.sin(2 * np.pi * 440 * m * t) for m in (1, 2, 3))
    # drawn now, before the (lazy) frames draw theirs from the same generator
    x = (x + 0.005 * rng.normal(size=t.size)).astype(np.float32)
    return frames(), x, DEMO_RATE


def demo_video(
    path: str | Path,
    *,
    seconds: int = 6,
    fps: int = 12,
    size: tuple[int, int] = (320, 240),
    seed: int = 0,
) -> Path:
    """Write the generated demo video with sound (:func:`demo_video_media`) to ``path`` (MP4, 16 kHz
    mono AAC audio) and return the path. ``size`` (W, H); ``fps`` frames per second. Needs PyAV."""
    from runtime.media.outputs import write_video

    frames, audio, rate = demo_video_media(seconds=seconds, fps=fps, size=size, seed=seed)
    return write_video(path, frames, fps, audio=audio, sample_rate=rate)
