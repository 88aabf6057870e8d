"""Mode ``heatmap-box`` (spec sam4avs-reference 4.4): boxes of the 8-connected heatmap regions >= t
(0.55) -> SAM. ``box_strategy`` (:func:`runtime.prompting.prompts.heatmap_boxes`): ``single_maxarea`` (the
largest region; the S4 script), ``multi_box`` (every region, SAM masks OR-ed; the MS3 script, chosen
by ``dataset="ms3"``), ``single_maxscore`` (the region of the heatmap's argmax), ``total_box`` (the
bounding box of all regions). The shared heatmap -> SAM path: :mod:`runtime.modes.heatmap_sam`."""

from __future__ import annotations

from functools import partial

from runtime.modes.heatmap_sam import run_strategy
from runtime.modes.points import (
    COMMON,
    DATASET,
    GRAPHS,
    OPTIONAL,
    PRESETS,
    SCORE_KIND,
    STAGES,
    THRESHOLD,
)
from runtime.modes.spec import ModeSpec, Param
from runtime.prompting.prompts import BOX_STRATEGIES

MODE = ModeSpec(
    name="heatmap-box",
    graphs=GRAPHS,
    optional_graphs=OPTIONAL,
    stages=STAGES,
    run=partial(run_strategy, "heatmap-box"),
    params=(
        *COMMON,
        THRESHOLD,
        DATASET,
        Param(
            "box_strategy",
            None,
            "str",
            "which region boxes (None: the dataset's script: s4 single_maxarea, ms3 multi_box)",
            choices=BOX_STRATEGIES,
            nullable=True,
        ),
        Param(
            "quirk", None, "bool", "the reference's edge cases (None: the preset's)", nullable=True
        ),
    ),
    presets=PRESETS,
    score_kind=SCORE_KIND + "; one per box with multi_box",
    doc="Heatmap-Box: box(es) of the heatmap regions >= t (0.55) -> SAM; box_strategy single_maxarea "
    "(s4), multi_box (ms3), single_maxscore or total_box.",
)
