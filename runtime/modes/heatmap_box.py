"""Mode ``heatmap-box`` (spec sam4avs-reference 4.4): the box of the largest 8-connected heatmap region
>= t (0.55) -> SAM. The shared heatmap -> SAM path: :mod:`runtime.modes.heatmap_sam`."""

from __future__ import annotations

from functools import partial

from runtime.modes.heatmap_sam import run_strategy
from runtime.modes.points import COMMON, DATASET, GRAPHS, PRESETS, SCORE_KIND, THRESHOLD
from runtime.modes.spec import ModeSpec

MODE = ModeSpec(
    name="heatmap-box", graphs=GRAPHS, run=partial(run_strategy, "heatmap-box"),
    params=(*COMMON, THRESHOLD, DATASET), presets=PRESETS, score_kind=SCORE_KIND,
    doc="Heatmap-Box: box of the largest heatmap region >= t (0.55) -> SAM.",
)
