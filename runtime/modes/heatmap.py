"""Mode ``heatmap``: AudioCLIP's audio-image heatmap itself, thresholded (no SAM)."""

from __future__ import annotations

import numpy as np

from runtime.modes.common import HEATMAP_GRAPHS, to_frame_size
from runtime.modes.heatmap_sam import heatmaps
from runtime.modes.spec import ModeSpec, Param
from runtime.result import FrameOutput


def run_heatmap(st, frames, audio, sample_rate, *, threshold, reverse):
    """Heatmaps of the squashed frames (:func:`runtime.modes.heatmap_sam.heatmaps`) resized back to each
    frame, > ``threshold``. Per frame: score = the heatmap float32 [H, W] in [0, 1]; prompt = {"threshold",
    "reverse"}."""
    rev = bool(st.preset_value("heatmap_reverse", reverse))
    maps = heatmaps(st, frames, audio, sample_rate, reverse=rev)
    with st.timed("postprocess"):
        full = to_frame_size(maps, frames)
    return [
        FrameOutput(m > np.float32(threshold), m, {"threshold": threshold, "reverse": rev})
        for m in full
    ]


MODE = ModeSpec(
    name="heatmap",
    graphs=HEATMAP_GRAPHS,
    stages=("audio", "image"),
    run=run_heatmap,
    params=(
        Param(
            "threshold", 0.5, "float", "heatmap value above which a pixel sounds", low=0.0, high=1.0
        ),
        Param(
            "reverse",
            None,
            "bool",
            "1 - cosine heatmap (None: the preset's heatmap_reverse)",
            nullable=True,
        ),
    ),
    presets=("audio_input_scale", "heatmap_reverse", "image_antialias"),
    score_kind="heatmap float32 [H, W] in [0, 1]",
    doc="AudioCLIP heatmap thresholded: a crude zero-shot baseline, no SAM.",
)
