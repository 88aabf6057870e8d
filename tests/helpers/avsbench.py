"""A tiny AVSBench-object dataset on disk, in the exact layouts of spec sam4avs-reference section 3.

``make_avsbench(root, kind)`` writes, for each of the splits train / val / test,
``videos_per_split`` videos with:

- 5 RGB frames of 224 x 224 PNG (noise background, a brighter ellipse where the mask is);
- a 16 kHz 16-bit PCM WAV via the stdlib ``wave`` module (5 s by default; a sine tone whose
  pitch depends on the video; every second video is stereo, as moviepy writes);
- binary 0/255 grey PNG masks (224 x 224): S4 train only frame 1, everything else frames 1..5;
- the metadata CSV (S4: ``name,start,category,split``; MS3: ``name,split``).

Returns ``root``, the folder to pass as ``--data-root`` (it holds ``Single-source/`` or
``Multi-sources/``). Deterministic for a given ``seed``.
"""

from __future__ import annotations

import csv
import wave
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 224
SPLITS = ("train", "val", "test")
S4_CATEGORIES = ("dog", "guitar", "baby_laughter")


def _ellipse(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    cy, cx = rng.uniform(60, 164, size=2)
    ry, rx = rng.uniform(25, 60, size=2)
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1.0


def _frame(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    img = rng.integers(0, 110, size=(SIZE, SIZE, 3), dtype=np.uint8)
    colour = rng.integers(150, 256, size=3, dtype=np.uint8)
    img[mask] = colour
    return img


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    """int16 samples [T] or [T, C] -> a 16-bit PCM WAV (stdlib ``wave``)."""
    s = np.asarray(samples, dtype=np.int16)
    if s.ndim == 1:
        s = s[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(s.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(s.astype("<i2").tobytes())


def _tone(
    rng: np.random.Generator, seconds: float, rate: int, stereo: bool, freq: float
) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
    x = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    if stereo:
        return np.stack([x, (x // 2).astype(np.int16)], axis=1)
    return x


def _png(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def make_avsbench(
    root: str | Path,
    kind: str = "s4",
    videos_per_split: int = 2,
    seed: int = 0,
    *,
    audio_seconds: float = 5.0,
    rate: int = 16000,
) -> Path:
    """Write a tiny AVSBench ``kind`` ("s4" or "ms3") dataset under ``root``; returns ``root``."""
    if kind not in ("s4", "ms3"):
        raise ValueError(f"kind must be 's4' or 'ms3', got {kind!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    base = root / ("Single-source" if kind == "s4" else "Multi-sources")
    data = base / ("s4_data" if kind == "s4" else "ms3_data")
    rows = []
    n = 0
    for split in SPLITS:
        for i in range(videos_per_split):
            # YouTube-like ids with '-' and '_' as in AVSBench
            name = f"-{kind}{split[:2]}_{i}x{rng.integers(0, 10**6):06d}"
            category = S4_CATEGORIES[n % len(S4_CATEGORIES)]
            stereo = n % 2 == 1
            freq = 220.0 * (1 + n % 5)
            n += 1
            masks = [_ellipse(rng) for _ in range(5)]
            if kind == "s4":
                rel = Path(split) / category / name
                frame_dir = data / "visual_frames" / rel
                frame_names = [f"{name}_{k}.png" for k in range(1, 6)]
                wav = data / "audio_wav" / split / category / f"{name}.wav"
                mask_ks = [1] if split == "train" else [1, 2, 3, 4, 5]
                rows.append([name, str(int(rng.integers(0, 5))), category, split])
            else:
                rel = Path(split) / name
                frame_dir = data / "visual_frames" / name
                frame_names = [f"{name}.mp4_{k}.png" for k in range(1, 6)]
                wav = data / "audio_wav" / split / f"{name}.wav"
                mask_ks = [1, 2, 3, 4, 5]
                rows.append([name, split])
            for k in range(5):
                _png(frame_dir / frame_names[k], _frame(rng, masks[k]))
            for k in mask_ks:
                _png(
                    data / "gt_masks" / rel / f"{name}_{k}.png", masks[k - 1].astype(np.uint8) * 255
                )
            write_wav(wav, _tone(rng, audio_seconds, rate, stereo, freq), rate)
    base.mkdir(parents=True, exist_ok=True)
    csv_name = "s4_meta_data.csv" if kind == "s4" else "ms3_meta_data.csv"
    with open(base / csv_name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "start", "category", "split"] if kind == "s4" else ["name", "split"])
        w.writerows(rows)
    return root
