"""The one image-file decoder of the runtime: image paths in-process and ``frames_encoded`` on the wire.

:func:`probe` reads only a file's header (size, decoded bytes per pixel) so a request can be checked
against its :class:`runtime.budget.Budget` before anything is decoded; :func:`decode` turns the file
into the frame the runtime works on, the same way for a path and for bytes:

* the first image of a multi-image file (MPO from phones and cameras, animated PNG/GIF, TIFF pages);
* EXIF orientation applied (the frame comes out upright, [H, W] those of the rotated image);
* 16-bit grey (``I;16*``, ``I``) scaled to 8 bits as ``(x * 255 + 32767) // 65535`` (the rule
  :func:`runtime.preprocess.image.load_frame` applies to uint16 arrays); palette, grey, CMYK and YCbCr
  converted to RGB; alpha dropped (not composited), as for RGBA arrays; 32-bit float refused.

Returns C-contiguous uint8 RGB [H, W, 3], values 0..255, origin top-left.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from runtime.errors import InputError

__all__ = ["WIRE_FORMATS", "decode", "probe"]

# formats the served model takes in ``frames_encoded`` (MPO: a JPEG with more images after it)
WIRE_FORMATS = ("PNG", "JPEG", "MPO")

_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "I;16": 2, "I;16B": 2, "I;16L": 2}


def _open(src: bytes | str | Path) -> Image.Image:
    return Image.open(io.BytesIO(src) if isinstance(src, bytes | bytearray) else Path(src))


def _kind(formats: tuple[str, ...] | None) -> str:
    return "an image" if formats is None else "a " + " or ".join(f for f in formats if f != "MPO")


def _check_format(img: Image.Image, name: str, formats: tuple[str, ...] | None) -> None:
    if formats is not None and img.format not in formats:
        raise InputError(
            f"{name}: expected {_kind(formats)} file, got {img.format or 'an unknown format'}"
        )


def probe(
    src: bytes | str | Path, *, name: str = "frame", formats: tuple[str, ...] | None = None
) -> tuple[int, int, int]:
    """(H, W, bytes per decoded pixel) of an image file from its header only (nothing decoded).

    H and W are those of the stored image (EXIF rotation swaps them but keeps H x W).
    InputError when it is not an image file (of ``formats``, when given).
    """
    try:
        with _open(src) as img:
            _check_format(img, name, formats)
            w, h = img.size
            mode = img.mode
    except InputError:
        raise
    except Exception as e:  # PIL raises many kinds for damaged files
        raise InputError(
            f"{name}: expected {_kind(formats)} file, cannot read its header ({e})"
        ) from None
    return int(h), int(w), _BYTES_PER_PIXEL.get(mode, 4 if mode not in ("RGB", "YCbCr") else 3)


def _to_array(img: Image.Image, name: str) -> np.ndarray:
    if img.mode == "F":
        raise InputError(
            f"{name}: 32-bit float image files are not supported; save frames as 8- or 16-bit"
        )
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img)
        if a.dtype != np.uint16:
            a = np.clip(a, 0, 65535).astype(np.uint16)
        g = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def decode(
    src: bytes | str | Path,
    *,
    name: str = "frame",
    formats: tuple[str, ...] | None = None,
    max_side: int | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode an image file (path or bytes) to uint8 RGB [H, W, 3] (module docstring for the rules).

    formats: PIL format names accepted (None: any PIL reads). max_side / max_pixels: refused from
    the header, before decoding, when larger. InputError names ``name`` and what was expected.
    """
    try:
        with _open(src) as img:
            _check_format(img, name, formats)
            w, h = img.size
            if (max_side is not None and max(h, w) > max_side) or (
                max_pixels is not None and h * w > max_pixels
            ):
                raise InputError(
                    f"{name}: image of {h}x{w} px is over the limit of {max_side} px per side "
                    f"and {(max_pixels or 0) // 1_000_000} MP"
                )
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # the first image (MPO's primary image, an animation's first frame)
            up = ImageOps.exif_transpose(img)
            arr = _to_array(up, name)
    except InputError:
        raise
    except Exception as e:  # PIL raises many kinds for damaged files
        raise InputError(
            f"{name}: expected {_kind(formats)} file, cannot decode it ({e})"
        ) from None
    return np.ascontiguousarray(arr)
