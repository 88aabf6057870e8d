"""AVSBench-object (v1) S4 / MS3 index and file loaders, without torch (numpy + PIL + csv).

On-disk layout (spec sam4avs-reference section 3), ``root`` being the AVSBench data folder that
holds ``Single-source/`` and ``Multi-sources/`` (or one of those two folders itself):

S4 (``Single-source/``)::

    s4_meta_data.csv                      col0 name, col1 start, col2 category, col3 split
    s4_data/visual_frames/{split}/{category}/{name}/{name}_{1..5}.png
    s4_data/audio_wav/{split}/{category}/{name}.wav
    s4_data/gt_masks/{split}/{category}/{name}/{name}_{k}.png   train: k = 1 only; val/test 1..5

MS3 (``Multi-sources/``)::

    ms3_meta_data.csv                     col0 name, col1 split
    ms3_data/visual_frames/{name}/{name}.mp4_{1..5}.png          (no split / category level)
    ms3_data/audio_wav/{split}/{name}.wav
    ms3_data/gt_masks/{split}/{name}/{name}_{1..5}.png

The CSV is read with ``csv`` (comma separated, first row = header). Columns are taken by
position like the reference (name = col0, S4 category = col2); the split filter uses the column
named ``split`` when the header has one, else col3 (S4) / col1 (MS3). Every missing file raises
FileNotFoundError naming the file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "FRAMES_PER_VIDEO",
    "KINDS",
    "SPLITS",
    "VideoRecord",
    "dataset_dir",
    "index_split",
    "load_frame",
    "load_mask",
]

KINDS = ("s4", "ms3")
SPLITS = ("train", "val", "test")
FRAMES_PER_VIDEO = 5
_SUBDIR = {"s4": "Single-source", "ms3": "Multi-sources"}
_CSV = {"s4": "s4_meta_data.csv", "ms3": "ms3_meta_data.csv"}
_DATA = {"s4": "s4_data", "ms3": "ms3_data"}
_SPLIT_COL = {"s4": 3, "ms3": 1}


@dataclass(frozen=True)
class VideoRecord:
    """One AVSBench video: 5 frame paths, its wav and its GT mask paths (1 for S4 train, else 5).

    ``mask_frames`` holds the 1-based frame index of each mask (``(1,)`` or ``(1, ..., 5)``).
    """

    kind: str
    split: str
    name: str
    category: str | None
    frames: tuple[Path, ...]
    wav: Path
    masks: tuple[Path, ...]
    mask_frames: tuple[int, ...]

    def missing_files(self) -> list[Path]:
        """Every file of this record that does not exist."""
        return [p for p in (*self.frames, self.wav, *self.masks) if not p.is_file()]


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def dataset_dir(root: str | Path, kind: str) -> Path:
    """The S4 / MS3 folder under ``root``: ``root/Single-source`` (``Multi-sources``) when it
    exists, else ``root`` itself if it holds the metadata CSV. Raises FileNotFoundError naming
    the CSV that was looked for."""
    _check_kind(kind)
    root = Path(root)
    for d in (root / _SUBDIR[kind], root):
        if (d / _CSV[kind]).is_file():
            return d
    raise FileNotFoundError(
        f"AVSBench {kind.upper()} metadata not found: {root / _SUBDIR[kind] / _CSV[kind]} (nor {root / _CSV[kind]})"
    )


def _read_rows(csv_path: Path) -> tuple[list[str], list[list[str]]]:
    if not csv_path.is_file():
        raise FileNotFoundError(f"AVSBench metadata not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{csv_path} is empty; expected a header row and one row per video")
    return [c.strip() for c in rows[0]], rows[1:]


def index_split(
    root: str | Path, kind: str, split: str, *, check_files: bool = False
) -> list[VideoRecord]:
    """Records of one split, in CSV order.

    ``kind``: "s4" or "ms3"; ``split``: "train", "val" or "test"; ``check_files``: stat every file
    now and raise FileNotFoundError naming the first missing one (otherwise the loaders raise it).
    """
    _check_kind(kind)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    d = dataset_dir(root, kind)
    csv_path = d / _CSV[kind]
    header, rows = _read_rows(csv_path)
    split_col = header.index("split") if "split" in header else _SPLIT_COL[kind]
    need = max(split_col, 2 if kind == "s4" else 0) + 1
    data = d / _DATA[kind]
    out = []
    for i, row in enumerate(rows, start=2):
        if len(row) < need:
            raise ValueError(f"{csv_path}, line {i}: expected at least {need} columns, got {row}")
        if row[split_col].strip() != split:
            continue
        name = row[0].strip()
        if kind == "s4":
            category = row[2].strip()
            rel = Path(split) / category / name
            frames = tuple(data / "visual_frames" / rel / f"{name}_{k}.png" for k in range(1, 6))
            wav = data / "audio_wav" / split / category / f"{name}.wav"
            ks = (1,) if split == "train" else tuple(range(1, 6))
        else:
            category = None
            rel = Path(split) / name
            frames = tuple(
                data / "visual_frames" / name / f"{name}.mp4_{k}.png" for k in range(1, 6)
            )
            wav = data / "audio_wav" / split / f"{name}.wav"
            ks = tuple(range(1, 6))
        masks = tuple(data / "gt_masks" / rel / f"{name}_{k}.png" for k in ks)
        rec = VideoRecord(kind, split, name, category, frames, wav, masks, ks)
        if check_files:
            missing = rec.missing_files()
            if missing:
                raise FileNotFoundError(
                    f"AVSBench {kind.upper()} {split} video {name!r}: missing file {missing[0]}"
                )
        out.append(rec)
    return out


def need_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def load_frame(path: str | Path) -> np.ndarray:
    """A video frame as uint8 [H, W, 3] RGB (PIL ``convert("RGB")``), row 0 at the top."""
    p = need_file(path, "frame")
    with Image.open(p) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def load_mask(path: str | Path, kind: str) -> np.ndarray:
    """A GT mask as uint8 [H, W] in {0, 1}, row 0 at the top.

    S4 follows the reference's ``convert("1")`` (PIL's 1-bit conversion: 0/255 masks map to
    0/1); MS3 its ``convert("P")``, then every non-zero palette index counts as foreground
    (for 0/255 grey masks this equals the reference's index / 255).
    """
    _check_kind(kind)
    p = need_file(path, "mask")
    with Image.open(p) as im:
        a = np.asarray(im.convert("1" if kind == "s4" else "P"))
    return (a > 0).astype(np.uint8)
