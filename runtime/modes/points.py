"""Point-Prompt modes (spec sam4avs-reference 4.1-4.3): heatmap points -> SAM.

* ``point-global`` (4.1): the heatmap's argmax pixel (foreground) and argmin pixel (background).
* ``point-local`` (4.2): strict 4-neighbour peaks above t (foreground) and pits below 1 - t
  (background); t = 0.6 (S4) / 0.65 (MS3); the ``sam4avs`` preset keeps the reference's (col, col)
  peak points.
* ``point-dense`` (4.3): the highest / lowest cells of the 32x32 downsampled heatmap;
  t = 0.85 (S4) / 0.7 (MS3).

The shared heatmap -> SAM path and the frame policies: :mod:`runtime.modes.heatmap_sam`.
"""

from __future__ import annotations

from functools import partial

from runtime.modes.common import DATASETS, FRAME_POLICIES, HEATMAP_GRAPHS, SAM_GRAPHS, SAM_OPTIONAL
from runtime.modes.heatmap_sam import run_strategy
from runtime.modes.spec import ModeSpec, Param

COMMON = (
    Param(
        "reverse",
        None,
        "bool",
        "1 - cosine heatmap (None: the preset's heatmap_reverse)",
        nullable=True,
    ),
    Param(
        "frame_policy",
        None,
        "str",
        "what SAM sees: 'native' frame or 'reference' squashed 224x224 (None: the preset's)",
        choices=FRAME_POLICIES,
        nullable=True,
    ),
)
THRESHOLD = Param(
    "t",
    None,
    "float",
    "heatmap threshold (None: the paper's for the dataset)",
    low=0.0,
    high=1.0,
    nullable=True,
)
DATASET = Param("dataset", "s4", "str", "selects the paper's thresholds", choices=DATASETS)
GRAPHS = HEATMAP_GRAPHS + SAM_GRAPHS
OPTIONAL = SAM_OPTIONAL
STAGES = ("audio", "image", "sam")
PRESETS = ("audio_input_scale", "heatmap_reverse", "image_antialias", "zero_shot_quirks")
SCORE_KIND = "the chosen SAM mask's predicted IoU float32 [1] ([0]: no prompt)"

MODES = (
    ModeSpec(
        name="point-global",
        graphs=GRAPHS,
        optional_graphs=OPTIONAL,
        stages=STAGES,
        run=partial(run_strategy, "point-global"),
        params=COMMON,
        presets=PRESETS,
        score_kind=SCORE_KIND,
        doc="Point-Prompt (global): heatmap argmax (+) and argmin (-) points -> SAM.",
    ),
    ModeSpec(
        name="point-local",
        graphs=GRAPHS,
        optional_graphs=OPTIONAL,
        stages=STAGES,
        run=partial(run_strategy, "point-local"),
        params=(
            *COMMON,
            THRESHOLD,
            DATASET,
            Param(
                "quirk",
                None,
                "bool",
                "the reference's (col, col) peak points (None: the preset's)",
                nullable=True,
            ),
        ),
        presets=PRESETS,
        score_kind=SCORE_KIND,
        doc="Point-Prompt (local): heatmap peaks > t (+) and pits < 1 - t (-) -> SAM; t = 0.6 (s4) / 0.65 (ms3).",
    ),
    ModeSpec(
        name="point-dense",
        graphs=GRAPHS,
        optional_graphs=OPTIONAL,
        stages=STAGES,
        run=partial(run_strategy, "point-dense"),
        params=(
            *COMMON,
            THRESHOLD,
            DATASET,
            Param(
                "max_points",
                None,
                "int",
                "cap per sign (None: half the cells)",
                low=1,
                nullable=True,
            ),
        ),
        presets=PRESETS,
        score_kind=SCORE_KIND,
        doc="Point-Prompt (dense): the highest (+) / lowest (-) heatmap cells -> SAM; t = 0.85 (s4) / 0.7 (ms3).",
    ),
)
