"""The table of segmentation modes: name -> :class:`ModeSpec` (graphs, typed parameters, presets, doc).

This module is the one place that lists the modes. It imports the mode modules; they import nothing
back, and never the pipeline: a mode's ``run`` function receives the stages it declares
(:class:`runtime.stages.Stages`). To add a mode,
write a module with a ``ModeSpec`` and add it to :data:`MODES` below (docs/architecture.md).

========== ============================================================================
mode       what it does (paper name)
========== ============================================================================
acfpn      supervised AC-FPN (Hadamard or concatenation fusion)
box        Box-Prompt: CLAP labels -> GroundingDINO boxes -> SAM
point-*    Point-Prompt (global / local / dense): heatmap points -> SAM
heatmap-box Heatmap-Box: box of the largest heatmap region -> SAM
no-prompt  No-Prompt: SAM's automatic masks scored against the audio
heatmap    the AudioCLIP heatmap thresholded (no SAM)
random-sam the Random-SAM baseline: one automatic SAM mask per frame at random
========== ============================================================================
"""

from __future__ import annotations

from runtime.errors import InputError
from runtime.modes import acfpn, box, heatmap, heatmap_box, no_prompt, points, random_sam
from runtime.modes.spec import ModeSpec, Param

__all__ = ["MODES", "PREFERENCE", "ModeSpec", "Param", "default_mode", "get_mode"]

MODES: dict[str, ModeSpec] = {
    spec.name: spec
    for spec in (
        acfpn.MODE,
        box.MODE,
        *points.MODES,
        heatmap_box.MODE,
        no_prompt.MODE,
        heatmap.MODE,
        random_sam.MODE,
    )
}

PREFERENCE = ("acfpn", "box", "point-dense", "heatmap")  # default_mode's order


def get_mode(name: str) -> ModeSpec:
    """The spec of mode ``name``; InputError listing the modes otherwise."""
    if name not in MODES:
        raise InputError(f"unknown mode {name!r}; choose from {sorted(MODES)}")
    return MODES[name]


def default_mode(bundle) -> str:
    """The best mode ``bundle`` (a :class:`runtime.bundle.Bundle`) supports, in :data:`PREFERENCE` order."""
    for m in PREFERENCE:
        if all(bundle.has(g) for g in MODES[m].graphs):
            return m
    raise InputError(
        f"bundle {bundle.root} supports no segmentation mode (graphs: {sorted(bundle.graphs)})"
    )
