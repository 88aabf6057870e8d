"""Stages: the building blocks a mode is given instead of the pipeline.

Each stage owns its graphs' calls, checks its inputs once and records its own time in the running
call's timings. A mode declares the stages it needs (``ModeSpec.stages``) and its run function
receives a :class:`Stages` view holding those (and only those) as attributes:

===========  ==================================================================================
stage        what it gives
===========  ==================================================================================
audio        AudioCLIP audio embeddings per frame (:class:`~runtime.stages.audio.AudioStage`)
image        CLIP preprocessing, image features, audio-image heatmaps (:class:`~.image.ImageStage`)
sam          frames SAM sees, embeddings, decoder, automatic masks (:class:`~.sam.SamStage`)
clap         CLAP audio embeddings and the label bank (:class:`~.box.ClapStage`)
detector     the text-conditioned detector (:class:`~.box.DetectorStage`)
acfpn        the supervised AC-FPN head (:class:`~.acfpn.AcfpnStage`)
===========  ==================================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from runtime.errors import InputError
from runtime.stages._context import StageContext
from runtime.stages.acfpn import AcfpnStage
from runtime.stages.audio import AudioStage
from runtime.stages.box import Banks, ClapStage, DetectorStage
from runtime.stages.image import ImageStage
from runtime.stages.sam import FRAME_POLICIES, SamStage

__all__ = ["STAGES", "StageContext", "StageSet", "Stages"]

STAGES = ("audio", "image", "sam", "clap", "detector", "acfpn")


class StageSet:
    """Every stage of one pipeline, each built on first use (a stage's sessions only when it runs)."""

    def __init__(self, ctx: StageContext, sessions: Callable[[str], Any]):
        self.ctx = ctx
        self.banks = banks = Banks(ctx)
        self._make = {
            "audio": lambda: AudioStage(ctx),
            "image": lambda: ImageStage(ctx),
            "sam": lambda: SamStage(ctx, sessions),
            "clap": lambda: ClapStage(ctx, banks),
            "detector": lambda: DetectorStage(ctx, banks),
            "acfpn": lambda: AcfpnStage(ctx),
        }
        self._built: dict[str, Any] = {}

    def get(self, name: str):
        if name not in self._make:
            raise InputError(f"unknown stage {name!r}; stages are {list(STAGES)}")
        if name not in self._built:
            self._built[name] = self._make[name]()
        return self._built[name]

    def view(self, names: Iterable[str] | None = None) -> Stages:
        """A :class:`Stages` view holding ``names`` (default: every stage)."""
        return Stages(self, tuple(STAGES if names is None else names))


class Stages:
    """What a mode's run function receives: its declared stages as attributes (``st.audio``,
    ``st.sam``, ...), the preset and its resolutions, and ``timed`` for the mode's own steps."""

    def __init__(self, stage_set: StageSet, names: tuple[str, ...]):
        for n in names:
            if n not in STAGES:
                raise InputError(f"unknown stage {n!r}; stages are {list(STAGES)}")
        self._set = stage_set
        self.names = names
        self.ctx = stage_set.ctx

    def __getattr__(self, name: str):
        if name in STAGES:
            if name not in self.names:
                raise AttributeError(
                    f"stage {name!r} was not declared by this mode (its ModeSpec.stages: "
                    f"{list(self.names)})"
                )
            return self._set.get(name)
        raise AttributeError(name)

    @property
    def preset(self):
        """The active preset (:class:`runtime.bundle.contract.Preset`)."""
        return self.ctx.preset

    def preset_value(self, key: str, override: Any = None) -> Any:
        """A constant of the active preset, unless ``override`` is given."""
        return self.ctx.preset_value(key, override)

    def quirks(self, override: bool | None) -> bool:
        """Whether the reference's quirks apply: ``override``, else the preset's ``zero_shot_quirks``."""
        return bool(override) if override is not None else bool(self.ctx.preset.zero_shot_quirks)

    def frame_policy(self, policy: str | None) -> str:
        """The SAM frame policy: ``policy``, else "reference" under the quirks preset, "native" otherwise."""
        if policy is None:
            return "reference" if self.quirks(None) else "native"
        if policy not in FRAME_POLICIES:
            raise InputError(
                f"frame_policy must be one of {FRAME_POLICIES} or None (preset), got {policy!r}"
            )
        return policy

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Time a step of the mode's own (numpy work between stages) as ``timings[key]``."""
        with self.ctx.timed(key):
            yield
