"""Separable image resizing in numpy that reproduces ``torch.nn.functional.interpolate`` exactly.

Each resize is a pair of interpolation matrices (rows, columns), so a [.., H, W] array becomes
``Wh @ x @ Ww.T``. Supported: bilinear and bicubic with ``align_corners=False``, with or without
antialiasing (PyTorch's antialias path, the same kernels as PIL's).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    out = np.zeros_like(x)
    m1 = x <= 1.0
    m2 = (x > 1.0) & (x < 2.0)
    out[m1] = ((a + 2.0) * x[m1] - (a + 3.0)) * x[m1] ** 2 + 1.0
    out[m2] = ((a * x[m2] - 5.0 * a) * x[m2] + 8.0 * a) * x[m2] - 4.0 * a
    return out


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(x), 0.0, None)


@lru_cache(maxsize=64)
def resize_matrix(
    in_size: int, out_size: int, mode: str = "bilinear", antialias: bool = False
) -> np.ndarray:
    """[out_size, in_size] float64 matrix M with ``out = M @ in`` along one axis.

    ``mode``: "bilinear" or "bicubic"; ``align_corners`` is False (pixel centres at i + 0.5).
    ``antialias`` widens the kernel by the scale when shrinking (PyTorch/PIL style, cubic a = -0.5);
    without it, bicubic uses a = -0.75 and clamps taps at the border, as PyTorch does.
    """
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"mode must be 'bilinear' or 'bicubic', got {mode!r}")
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1, got {in_size} -> {out_size}")
    # PyTorch computes source coordinates in float32; doing the same keeps results equal to ~1e-7.
    scale = np.float32(in_size) / np.float32(out_size)
    m = np.zeros((out_size, in_size), dtype=np.float64)
    if antialias:
        support = np.float32(1.0 if mode == "bilinear" else 2.0) * max(scale, np.float32(1.0))
        inv = np.float32(1.0) / max(scale, np.float32(1.0))
        for i in range(out_size):
            center = scale * (np.float32(i) + np.float32(0.5))
            xmin = max(int(center - support + 0.5), 0)
            xmax = min(int(center + support + 0.5), in_size)
            j = np.arange(xmin, xmax)
            d = ((j.astype(np.float32) - center + np.float32(0.5)) * inv).astype(np.float64)
            w = _triangle(d) if mode == "bilinear" else _cubic(d, -0.5)
            total = w.sum()
            if total != 0.0:
                w = w / total
            m[i, xmin:xmax] = w
        return m
    # scale * (i + 0.5) - 0.5 as one fused multiply-add (one float32 rounding), as PyTorch's kernel.
    dst = np.arange(out_size, dtype=np.float32)
    src = (np.float64(scale) * (dst + np.float32(0.5)).astype(np.float64) - 0.5).astype(np.float32)
    if mode == "bilinear":
        src = np.maximum(src, np.float32(0.0))
        i0 = np.floor(src).astype(np.int64)
        i0 = np.minimum(i0, in_size - 1)
        i1 = np.minimum(i0 + 1, in_size - 1)
        lam = (src - i0).astype(np.float64)
        np.add.at(m, (np.arange(out_size), i0), 1.0 - lam)
        np.add.at(m, (np.arange(out_size), i1), lam)
        return m
    i0 = np.floor(src).astype(np.int64)
    t = (src - i0).astype(np.float64)
    for k in range(-1, 3):
        w = _cubic(t - k, -0.75)
        idx = np.clip(i0 + k, 0, in_size - 1)
        np.add.at(m, (np.arange(out_size), idx), w)
    return m


def resize(
    x: np.ndarray, size: tuple[int, int], mode: str = "bilinear", antialias: bool = False
) -> np.ndarray:
    """Resize the last two axes of ``x`` ([..., H, W], float) to ``size`` = (out_h, out_w).

    Computes in float64 when given float64, else float32; returns the input's float dtype.
    """
    if x.ndim < 2:
        raise ValueError(f"expected an array [..., H, W], got shape {x.shape}")
    h, w = x.shape[-2:]
    oh, ow = int(size[0]), int(size[1])
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    mh = resize_matrix(h, oh, mode, antialias).astype(dtype)
    mw = resize_matrix(w, ow, mode, antialias).astype(dtype)
    xf = x.astype(dtype, copy=False)
    if (
        (oh, ow) == (h, w)
        and not antialias
        and np.array_equal(mh, np.eye(h))
        and np.array_equal(mw, np.eye(w))
    ):
        return xf.copy()
    return np.matmul(np.matmul(mh, xf), mw.T)
