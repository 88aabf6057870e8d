"""Separable image resizing in numpy that reproduces ``torch.nn.functional.interpolate`` exactly.

Each resize is a pair of interpolation matrices (rows, columns), so a [.., H, W] array becomes
``Wh @ x @ Ww.T``. Supported: bilinear and bicubic with ``align_corners=False``, with or without
antialiasing (PyTorch's antialias path, the same kernels as PIL's). :func:`linear_taps` gives the
bilinear taps themselves (SAM's mask postprocessing composes them); :func:`nearest_exact` is the
one nearest-neighbour resampler (masks, score maps), PyTorch's ``mode="nearest-exact"``.

The product is not a BLAS matmul: each output is the sum of its few taps in float64, in tap order,
with elementwise numpy operations only, so the result is the same bit for bit on every numpy
version, BLAS build and CPU (a matmul's summation order depends on all three, and a rounding or a
threshold that follows the resize then differs on values that land on x.5).
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


def _source_index(in_size: int, out_size: int) -> np.ndarray:
    """float32 [out_size]: scale * (i + 0.5) - 0.5 with scale = float32(in / out), computed as one
    fused multiply-add (exact in float64, rounded once to float32), as PyTorch's CPU kernels do."""
    scale = np.float64(np.float32(in_size) / np.float32(out_size))
    return (scale * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)


def linear_taps(
    in_size: int, out_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's bilinear (``align_corners=False``) taps along one axis of ``in_size`` -> ``out_size``.

    Returns (i0, i1, lam0, lam1): int64 source indices [out_size] (0 <= i0 <= i1 <= in_size - 1) and
    float64 weights [out_size] in [0, 1] holding float32 values, so that output[i] =
    lam0[i] * input[i0[i]] + lam1[i] * input[i1[i]]. Mirrors ATen's
    ``compute_source_index_and_lambda`` in float32: scale = in / out, src = scale * (i + 0.5) - 0.5
    as one fused multiply-add (the compiled CPU kernel's: exact in float64, rounded once), clamped at
    0; i0 = floor(src) (at most in - 1), i1 = min(i0 + 1, in - 1), lam1 = src - i0 clipped to [0, 1],
    lam0 = 1 - lam1 in float32. Emulating the FMA matters: plain float32 or float64 source indices
    differ from PyTorch by up to 1e-4 on unit-scale logits at 2250 px.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1, got {in_size} -> {out_size}")
    src = np.maximum(_source_index(in_size, out_size), np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    lam1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    lam0 = np.float32(1.0) - lam1
    return i0, i1, lam0.astype(np.float64), lam1.astype(np.float64)


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """int64 [out_size] source indices of PyTorch's ``nearest-exact`` along one axis.

    src = min(floor((i + 0.5) * scale), in - 1) with scale = in / out, all in float32 as ATen's
    ``nearest_neighbor_exact_compute_source_index`` (a float64 computation differs where the
    product lands within float32 rounding of an integer).
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1, got {in_size} -> {out_size}")
    scale = np.float32(in_size) / np.float32(out_size)
    pos = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale
    return np.minimum(np.floor(pos).astype(np.int64), in_size - 1)


def nearest_exact(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The last two axes of ``a`` ([..., h, w], any dtype: bool masks, float maps, uint8 images)
    resampled to ``hw`` = (H, W) by pixel-centre nearest sampling, exactly as
    ``torch.nn.functional.interpolate(mode="nearest-exact")``: output pixel (r, c) takes input pixel
    (:func:`nearest_indices` (h, H)[r], (w, W)[c]). Same dtype out; ``a`` itself when the size is
    unchanged. Raises ValueError for fewer than two axes or a non-positive size.
    """
    a = np.asarray(a)
    if a.ndim < 2:
        raise ValueError(f"expected an array [..., h, w], got shape {a.shape}")
    h, w = a.shape[-2:]
    oh, ow = int(hw[0]), int(hw[1])
    if (h, w) == (oh, ow):
        return a
    rows = nearest_indices(h, oh)
    cols = nearest_indices(w, ow)
    return a[..., rows[:, None], cols[None, :]]


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
    if mode == "bilinear":
        i0, i1, lam0, lam1 = linear_taps(in_size, out_size)
        np.add.at(m, (np.arange(out_size), i0), lam0)
        np.add.at(m, (np.arange(out_size), i1), lam1)
        return m
    src = _source_index(in_size, out_size)
    i0 = np.floor(src).astype(np.int64)
    t = (src - i0).astype(np.float64)
    for k in range(-1, 3):
        w = _cubic(t - k, -0.75)
        idx = np.clip(i0 + k, 0, in_size - 1)
        np.add.at(m, (np.arange(out_size), idx), w)
    return m


@lru_cache(maxsize=64)
def _taps(in_size: int, out_size: int, mode: str, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero entries of :func:`resize_matrix` per output row: (index int64 [out, K],
    weight float64 [out, K]), in ascending input order; rows with fewer taps are padded with
    weight 0 at index 0. Read-only."""
    m = resize_matrix(in_size, out_size, mode, antialias)
    nz = m != 0.0
    k = max(1, int(nz.sum(axis=1).max()))
    idx = np.zeros((out_size, k), dtype=np.int64)
    w = np.zeros((out_size, k), dtype=np.float64)
    for i in range(out_size):
        cols = np.flatnonzero(nz[i])
        idx[i, : cols.size] = cols
        w[i, : cols.size] = m[i, cols]
    idx.setflags(write=False)
    w.setflags(write=False)
    return idx, w


def _apply_rows(x: np.ndarray, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """out[..., i, :] = sum_k w[i, k] * x[..., idx[i, k], :], k ascending (float64)."""
    out = np.zeros(x.shape[:-2] + (idx.shape[0], x.shape[-1]), dtype=np.float64)
    for k in range(idx.shape[1]):
        out += w[:, k, None] * x[..., idx[:, k], :]
    return out


def _apply_cols(x: np.ndarray, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """out[..., :, j] = sum_k w[j, k] * x[..., :, idx[j, k]], k ascending (float64)."""
    out = np.zeros(x.shape[:-1] + (idx.shape[0],), dtype=np.float64)
    for k in range(idx.shape[1]):
        out += w[:, k] * x[..., idx[:, k]]
    return out


def resize(
    x: np.ndarray, size: tuple[int, int], mode: str = "bilinear", antialias: bool = False
) -> np.ndarray:
    """Resize the last two axes of ``x`` ([..., H, W], float) to ``size`` = (out_h, out_w).

    Sums the taps in float64 in a fixed order (module docstring: the same bits on every numpy,
    BLAS and CPU); returns float64 when given float64, else float32.
    """
    if x.ndim < 2:
        raise ValueError(f"expected an array [..., H, W], got shape {x.shape}")
    h, w = x.shape[-2:]
    oh, ow = int(size[0]), int(size[1])
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    ri, rw = _taps(h, oh, mode, antialias)
    ci, cw = _taps(w, ow, mode, antialias)
    if (oh, ow) == (h, w) and not antialias and _identity(ri, rw) and _identity(ci, cw):
        return x.astype(dtype, copy=True)
    xf = x.astype(np.float64, copy=False)
    return _apply_cols(_apply_rows(xf, ri, rw), ci, cw).astype(dtype, copy=False)


def _identity(idx: np.ndarray, w: np.ndarray) -> bool:
    n = idx.shape[0]
    return bool(
        np.array_equal(idx[:, 0], np.arange(n))
        and np.all(w[:, 0] == 1.0)
        and np.all(w[:, 1:] == 0.0)
    )
