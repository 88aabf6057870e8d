"""The audio-image heatmap of Sam4AVS (spec sam4avs-reference 4.0, ``get_similarity_score``)."""

from __future__ import annotations

import numpy as np

from runtime.errors import InputError
from runtime.preprocess.resize import resize


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """``x / ||x||`` along ``axis`` (float32); zero vectors stay zero."""
    n = np.linalg.norm(x.astype(np.float32), axis=axis, keepdims=True)
    return (x / np.maximum(n, eps)).astype(np.float32)


def audio_image_heatmap(
    dense: np.ndarray,
    audio_embedding: np.ndarray,
    *,
    out_size: tuple[int, int],
    reverse: bool = False,
) -> np.ndarray:
    """Cosine map between dense image tokens and the audio embedding -> float32 [N, H, W] in [0, 1].

    ``dense``: float32 [N, D, h, w] (CLIP-Surgery dense tokens); ``audio_embedding``: float32 [N, D]
    (one audio chunk per frame). Steps: L2-normalise both over D, cosine per token, ``1 - cos`` when
    ``reverse`` (the reference's setting), min-max normalise over the h*w tokens, bilinear upsampling
    (align_corners=False) to ``out_size`` = (H, W). A constant map (max == min) becomes all zeros
    where the reference would produce NaN.
    """
    if dense.ndim != 4:
        raise InputError(f"dense tokens must be [N, D, h, w], got shape {dense.shape}")
    if audio_embedding.ndim != 2 or audio_embedding.shape != dense.shape[:2]:
        raise InputError(
            f"audio embedding must be [N, D] = {dense.shape[:2]}, got {audio_embedding.shape}"
        )
    n, d, h, w = dense.shape
    r = l2_normalize(dense.reshape(n, d, h * w), axis=1)
    a = l2_normalize(audio_embedding, axis=1)
    sim = np.einsum("nd,ndk->nk", a, r).astype(np.float32)
    if reverse:
        sim = np.float32(1.0) - sim
    lo = sim.min(axis=1, keepdims=True)
    hi = sim.max(axis=1, keepdims=True)
    span = hi - lo
    sim = np.where(span > 0, (sim - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)
    return resize(sim.reshape(n, h, w), out_size, "bilinear", antialias=False)
