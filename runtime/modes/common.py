"""Pieces shared by the modes: the paper's thresholds, graph groups, frame-size mapping of masks and prompts.

Coordinates: (x, y) pixels, x along the width, origin at the top-left corner of the top-left
pixel; the centre of pixel (row r, col c) is (c + 0.5, r + 0.5). numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.errors import InputError
from runtime.preprocess.resize import resize
from runtime.stages.sam import FRAME_POLICIES  # noqa: F401 (re-exported for the mode modules)

# The paper's thresholds (spec sam4avs-reference 4.2-4.4): t per dataset and strategy.
THRESHOLDS: dict[str, dict[str, float]] = {
    "s4": {"point-local": 0.6, "point-dense": 0.85, "heatmap-box": 0.55},
    "ms3": {"point-local": 0.65, "point-dense": 0.7, "heatmap-box": 0.55},
}
DATASETS = tuple(THRESHOLDS)
SAM_GRAPHS = ("sam_image_encoder", "sam_prompt_decoder")
SAM_OPTIONAL = ("sam_point_decoder",)  # the decoder without mask input, used when the bundle has it
HEATMAP_GRAPHS = ("audioclip_audio", "audioclip_image")


def threshold(strategy: str, t: float | None, dataset: str) -> float | None:
    """The strategy's heatmap threshold: ``t``, else the paper's for ``dataset``; None for point-global."""
    if strategy == "point-global":
        return None
    if t is None:
        if dataset not in THRESHOLDS:
            raise InputError(
                f"dataset must be one of {sorted(THRESHOLDS)} (selects the paper's "
                f"threshold), got {dataset!r}"
            )
        return THRESHOLDS[dataset][strategy]
    return float(t)


def to_frame_size(maps: np.ndarray, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Square maps [N, S, S] of squashed frames back to each frame's (H, W), bilinear; float32."""
    return [resize(m[None], f.shape[:2], "bilinear")[0] for m, f in zip(maps, frames, strict=True)]


def map_points(coords: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """(x, y) points [K, 2] scaled to another frame size: (x * sx, y * sy), float64."""
    out = np.asarray(coords, dtype=np.float64).copy()
    out[:, 0] *= sx
    out[:, 1] *= sy
    return out


def map_box(box: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Inclusive pixel box [x0, y0, x1, y1] scaled keeping its pixel extent: x1 -> (x1 + 1) * sx - 1."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array(
        [x0 * sx, y0 * sy, (x1 + 1.0) * sx - 1.0, (y1 + 1.0) * sy - 1.0], dtype=np.float64
    )
