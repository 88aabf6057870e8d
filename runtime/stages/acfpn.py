"""The AC-FPN stage: the supervised head on CLIP-preprocessed frames and AudioCLIP audio embeddings."""

from __future__ import annotations

import numpy as np

from runtime.stages._context import StageContext


class AcfpnStage:
    """The ``acfpn`` graph and what its manifest entry says about its audio input."""

    name = "acfpn"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx

    @property
    def audio_graph(self) -> str:
        """The audio graph the AC-FPN weights were trained with (manifest ``audio_graph``)."""
        return self.ctx.bundle.graphs["acfpn"].get("audio_graph", "audioclip_audio")

    @property
    def audio_input_scale(self) -> float | None:
        """The audio scale the AC-FPN weights were trained with (None: the preset's)."""
        return self.ctx.bundle.graphs["acfpn"].get("audio_input_scale")

    def logits(self, images: np.ndarray, audio_emb: np.ndarray) -> np.ndarray:
        """Logits float32 [N, 1, S, S] of CLIP-preprocessed frames [N, 3, S, S] and embeddings [N, D].
        Timed "acfpn"."""
        with self.ctx.timed("acfpn"):
            return self.ctx.run("acfpn", images, audio_emb)[0]
