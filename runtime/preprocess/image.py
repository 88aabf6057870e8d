"""Image input: loading and checking frames, and CLIP preprocessing (resize, centre crop, normalise).

Frames enter the runtime as uint8 RGB arrays [H, W, 3] (values 0..255, row-major, origin top-left)
or as image file paths (EXIF orientation applied: frames come out upright, as viewers show them). Grayscale, RGBA and 16-bit inputs are converted; anything else is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from runtime.errors import InputError
from runtime.preprocess import imagefile
from runtime.preprocess.resize import resize

MAX_SIDE = 8192  # longest side in pixels accepted for a frame
MAX_PIXELS = 40_000_000  # 40 MP
MIN_SIDE = 8

FrameLike = np.ndarray | str | Path


def load_frame(frame: FrameLike, *, name: str = "frame") -> np.ndarray:
    """Return a frame as a C-contiguous uint8 RGB array [H, W, 3].

    Accepts an image path (a JPEG/TIFF/... EXIF orientation tag is applied, as image viewers do:
    the frame is returned upright, its [H, W] those of the rotated image), or an array that is
    uint8 or uint16 with shape [H, W] (grayscale),
    [H, W, 1], [H, W, 3] (RGB) or [H, W, 4] (RGBA: alpha dropped). uint16 is scaled to 8 bits
    (x / 257, rounded). Frames must be at least 8 px and at most 8192 px per side and 40 MP.
    """
    if isinstance(frame, str | Path):
        p = Path(frame)
        if not p.is_file():
            raise InputError(f"{name}: image file not found: {p}")
        h, w, _ = imagefile.probe(p, name=f"{name} ({p})")
        _check_size(h, w, name)
        arr = imagefile.decode(p, name=f"{name} ({p})")  # the decoder of frames_encoded too
    elif isinstance(frame, np.ndarray):
        arr = frame
    else:
        raise InputError(
            f"{name}: expected a uint8 HxWx3 array or an image path, got {type(frame).__name__}"
        )
    if arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise InputError(
            f"{name}: expected dtype uint8 (0..255) or uint16, got {arr.dtype}; "
            "convert float images with (x * 255).round().astype(np.uint8)"
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InputError(
            f"{name}: expected shape [H, W, 3] (or [H, W], [H, W, 1], [H, W, 4]), got {arr.shape}"
        )
    _check_size(arr.shape[0], arr.shape[1], name)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def _check_size(h: int, w: int, name: str) -> None:
    if min(h, w) < MIN_SIDE:
        raise InputError(
            f"{name}: frame of {h}x{w} px is too small (each side must be >= {MIN_SIDE} px)"
        )
    if max(h, w) > MAX_SIDE or h * w > MAX_PIXELS:
        raise InputError(
            f"{name}: frame of {h}x{w} px is too large (limit {MAX_SIDE} px per side and "
            f"{MAX_PIXELS // 1_000_000} MP); downscale it first"
        )


def load_frames(frames: Sequence[FrameLike] | np.ndarray) -> list[np.ndarray]:
    """A list of uint8 RGB frames [H, W, 3] from paths, arrays, or one [N, H, W, 3] array."""
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        frames = list(frames)
    if isinstance(frames, str | Path | np.ndarray) or not isinstance(frames, Iterable):
        raise InputError(
            "frames must be a sequence of frames (uint8 [H, W, 3] arrays or image paths), "
            f"or an [N, H, W, 3] array; got {type(frames).__name__}"
        )
    frames = list(frames)
    if not frames:
        raise InputError("no frames given")
    return [load_frame(f, name=f"frame {i}") for i, f in enumerate(frames)]


def shorter_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """Output (h, w) of torchvision ``Resize(size)``: the shorter side becomes ``size``, the other truncates."""
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size


def squash_to_square(frame: np.ndarray, size: int, *, antialias: bool = True) -> np.ndarray:
    """Resize a uint8 RGB frame [H, W, 3] to [size, size, 3] ignoring its aspect ratio.

    The AVSBench convention: every video frame was resized to 224x224 (bilinear) before training
    and evaluation, so a prediction on the square frame covers the whole original frame. Bilinear,
    ``align_corners=False``, rounded to uint8; ``antialias`` for large downscales (False: cv2-like).
    """
    if frame.shape[:2] == (size, size):
        return frame
    x = resize(frame.transpose(2, 0, 1).astype(np.float32), (size, size), "bilinear", antialias)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()


def clip_preprocess(
    frames: Sequence[np.ndarray],
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    antialias: bool = True,
) -> np.ndarray:
    """CLIP transform of uint8 RGB frames -> float32 [N, 3, size, size], normalised by mean/std.

    The torchvision tensor chain: ToTensor (x/255) -> Resize(size, bicubic, shorter side) ->
    CenterCrop(size) -> Normalize. ``antialias`` follows torchvision >= 0.17 (True); the original
    Sam4AVS environment (torchvision 0.15) resized tensors without it.
    """
    out = np.empty((len(frames), 3, size, size), dtype=np.float32)
    m = np.asarray(mean, np.float32).reshape(3, 1, 1)
    s = np.asarray(std, np.float32).reshape(3, 1, 1)
    for i, f in enumerate(frames):
        if not (
            isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3
        ):
            raise InputError(
                f"frame {i}: expected uint8 [H, W, 3], got {getattr(f, 'dtype', type(f))} {getattr(f, 'shape', '')}"
            )
        x = f.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
        h, w = x.shape[1:]
        rh, rw = shorter_side_size(h, w, size)
        if (rh, rw) != (h, w):
            x = resize(x, (rh, rw), "bicubic", antialias)
        top = int(round((rh - size) / 2.0))
        left = int(round((rw - size) / 2.0))
        x = x[:, top : top + size, left : left + size]
        out[i] = (x - m) / s
    return out
