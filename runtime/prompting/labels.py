"""Which labels a sound names (Box-Prompt): the top-k rows of a label bank by cosine. numpy only."""

from __future__ import annotations

import numpy as np

from runtime.errors import InputError

__all__ = ["top_labels"]


def top_labels(
    audio_embedding: np.ndarray, bank: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` labels closest to one audio embedding.

    audio_embedding: float [D] (L2-normalised); bank: float [N, D] (rows L2-normalised).
    Returns (indices int64 [k], cosine scores float32 [k]), best first; ties go to the lower index.
    """
    a = np.asarray(audio_embedding, np.float32)
    b = np.asarray(bank, np.float32)
    if b.ndim != 2 or a.shape != (b.shape[1],):
        raise InputError(
            f"audio_embedding must be [D] and bank [N, D] with the same D, got {a.shape} and {b.shape}"
        )
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"k must be a positive int, got {k!r}")
    if k > b.shape[0]:
        raise InputError(f"k={k} is larger than the label bank ({b.shape[0]} labels)")
    scores = b @ a
    idx = np.argsort(-scores, kind="stable")[: int(k)]
    return idx.astype(np.int64), scores[idx].astype(np.float32)
