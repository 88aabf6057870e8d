"""COCO run-length encoding of binary masks, encoded and decoded here (no pycocotools needed).

The COCO convention: a mask of H x W pixels is read in **column-major** order (down the first column,
then the next, i.e. ``mask.flatten(order="F")``); ``counts`` alternates run lengths of 0s and 1s and
always starts with a run of 0s (which may be 0 long). ``size`` is ``[H, W]``. ``counts`` is either a
list of ints (COCO's "uncompressed RLE") or the compact string of ``pycocotools`` (``rleToString``:
each count, minus the count two places before it from the fourth on, written as 5-bit groups in
characters from ``chr(48)``, a continuation bit 0x20, the sign in bit 0x10 of the last group).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.errors import InputError

__all__ = ["encode", "decode", "counts_to_string", "string_to_counts", "area"]


def _check_mask(mask: Any) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"mask: expected a 2-D [H, W] array, got shape {m.shape}")
    if m.dtype != bool:
        if m.dtype.kind not in "iu" or (m.size and (m.min() < 0 or m.max() > 1)):
            raise InputError(f"mask: expected bool (or integer 0/1) values, got dtype {m.dtype}")
        m = m.astype(bool)
    return m


def encode(mask: np.ndarray, *, compressed: bool = True) -> dict[str, Any]:
    """COCO RLE of a mask: ``{"size": [H, W], "counts": str | list[int]}``.

    ``mask``: bool (or 0/1 integer) [H, W], True = object. ``compressed``: counts as pycocotools'
    compact string (True) or as a list of run lengths (False). H or W may be 0.
    """
    m = _check_mask(mask)
    h, w = m.shape
    flat = m.reshape(-1, order="F").view(np.uint8)
    if flat.size == 0:
        counts: list[int] = [0]
    else:
        change = np.flatnonzero(np.diff(flat)) + 1
        edges = np.concatenate(([0], change, [flat.size]))
        counts = np.diff(edges).tolist()
        if flat[0] == 1:
            counts = [0] + counts
    return {"size": [int(h), int(w)], "counts": counts_to_string(counts) if compressed else counts}


def counts_to_string(counts: list[int]) -> str:
    """pycocotools' compact string of a list of run lengths (non-negative ints)."""
    out: list[str] = []
    for i, c in enumerate(counts):
        x = int(c)
        if x < 0:
            raise InputError(f"RLE counts must be >= 0, got {x} at position {i}")
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5  # arithmetic shift, as in C for the signed long of maskApi.c
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def string_to_counts(s: str | bytes) -> list[int]:
    """Run lengths from pycocotools' compact string (inverse of :func:`counts_to_string`)."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    if not isinstance(s, str):
        raise InputError(f"RLE counts string: expected str or bytes, got {type(s).__name__}")
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise InputError("RLE counts string ends inside a number (truncated?)")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise InputError(
                    f"RLE counts string holds {s[p]!r} at {p}; expected characters '0'..'o'"
                )
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            raise InputError(f"RLE counts string decodes to a negative run ({x}); it is corrupt")
        counts.append(x)
    return counts


def decode(rle: dict[str, Any]) -> np.ndarray:
    """The bool [H, W] mask of a COCO RLE (``counts`` as list or compact string)."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise InputError("RLE: expected a dict with 'size' [H, W] and 'counts'")
    size = rle["size"]
    if len(size) != 2 or any(int(v) < 0 for v in size):
        raise InputError(f"RLE size must be [H, W] with H, W >= 0, got {size}")
    h, w = int(size[0]), int(size[1])
    counts = rle["counts"]
    counts = (
        string_to_counts(counts) if isinstance(counts, str | bytes) else [int(c) for c in counts]
    )
    if any(c < 0 for c in counts):
        raise InputError("RLE counts must be >= 0")
    if sum(counts) != h * w:
        raise InputError(f"RLE counts sum to {sum(counts)}, but size {h}x{w} needs {h * w}")
    values = np.zeros(len(counts), np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, counts).astype(bool)
    return flat.reshape((h, w), order="F")


def area(rle: dict[str, Any]) -> int:
    """Number of True pixels of an RLE without decoding it."""
    counts = rle["counts"]
    counts = string_to_counts(counts) if isinstance(counts, str | bytes) else list(counts)
    return int(sum(counts[1::2]))
