"""GroundingDINO's image input and box convention (Box-Prompt, spec sam4avs-reference 4.6): its
``load_image`` resize and normalisation, and normalised (cx, cy, w, h) boxes to frame pixels.
Coordinates: (x, y) pixels, x along the width, origin at the top-left corner of the frame."""

from __future__ import annotations

import numpy as np
from PIL import Image

from runtime.errors import InputError

__all__ = ["boxes_cxcywh_to_xyxy", "detector_input", "detector_size"]


def detector_size(
    height: int, width: int, short_side: int, max_size: int | None
) -> tuple[int, int]:
    """(h, w) after GroundingDINO's ``RandomResize([short_side], max_size)`` (its
    ``get_size_with_aspect_ratio``): shorter side to ``short_side`` unless the longer would exceed
    ``max_size``, sizes truncated to int."""
    h, w = int(height), int(width)
    size = int(short_side)
    if max_size is not None:
        lo, hi = float(min(w, h)), float(max(w, h))
        if hi / lo * size > max_size:
            size = int(round(max_size * lo / hi))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


def detector_input(frame: np.ndarray, pre, graph_hw: tuple[int, int]) -> tuple[np.ndarray, str]:
    """The detector image of a frame: float32 [1, 3, H, W] at the graph's size, and how it was resized.

    frame: uint8 [h, w, 3] RGB. pre: the manifest's ``preprocessing.detector`` (a
    :class:`runtime.bundle.contract.DetectorSection`, or its raw mapping). Returns the image
    and "reference" (the reference's size equals the graph's) or "stretched" (resized to the graph's
    size directly).
    """
    if (
        not isinstance(frame, np.ndarray)
        or frame.dtype != np.uint8
        or frame.ndim != 3
        or frame.shape[2] != 3
    ):
        raise InputError(
            f"frame must be uint8 [H, W, 3] RGB, got {getattr(frame, 'dtype', type(frame))} {np.shape(frame)}"
        )
    get = pre.get if isinstance(pre, dict) else (lambda k, d=None: getattr(pre, k, d))
    oh, ow = detector_size(frame.shape[0], frame.shape[1], int(get("short_side")), get("max_size"))
    how = "reference" if (oh, ow) == tuple(graph_hw) else "stretched"
    gh, gw = graph_hw
    img = Image.fromarray(frame)
    if (gh, gw) != (frame.shape[0], frame.shape[1]):
        img = img.resize((gw, gh), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(get("mean"), np.float32)
    std = np.asarray(get("std"), np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32), how


def boxes_cxcywh_to_xyxy(boxes: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Normalised (cx, cy, w, h) [K, 4] -> (x0, y0, x1, y1) pixels of a frame of size (H, W), float32, not clipped."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    cx, cy, w, h = b.T
    half = np.float32(0.5)
    xyxy = np.stack([cx - half * w, cy - half * h, cx + half * w, cy + half * h], axis=1)
    H, W = frame_hw
    return (xyxy * np.asarray([W, H, W, H], np.float32)).astype(np.float32)
