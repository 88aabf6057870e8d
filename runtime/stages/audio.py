"""The AudioCLIP audio stage: a clip's audio -> one embedding per frame (``audioclip_audio``, and the
reference's 48 kHz 1-s variant ``audioclip_audio_1s``)."""

from __future__ import annotations

import numpy as np

from runtime.errors import InputError
from runtime.preprocess.audio import (
    chunk_per_frame,
    int16_round_trip,
    load_audio,
    prepare_audioclip_audio,
    short_clip_policy,
)
from runtime.stages._context import StageContext

REFERENCE_1S_GRAPH = "audioclip_audio_1s"


class AudioStage:
    """AudioCLIP audio embeddings. Audio: a WAV path, or an array (see
    :func:`runtime.preprocess.audio.load_audio`) with ``sample_rate`` in Hz; frame k gets second k."""

    name = "audio"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx

    def inputs(
        self,
        audio,
        sample_rate: int | None,
        num_frames: int,
        *,
        input_scale: float | None = None,
        graph: str = "audioclip_audio",
    ) -> np.ndarray:
        """The ``audioclip_audio`` graph input for a clip: float32 [F, T] (T from the manifest).

        input_scale: the waveform multiplier (None: the preset's)."""
        a = self.ctx.section("audio")
        x = prepare_audioclip_audio(
            audio,
            sample_rate,
            num_frames,
            target_rate=a.sample_rate,
            chunk_seconds=a.chunk_seconds,
            tile=a.tile,
            input_scale=float(self.ctx.preset_value("audio_input_scale", input_scale)),
            short_clip=short_clip_policy(self.ctx.preset),
        )
        t = self.ctx.graph_input_shape(graph)[1]
        if isinstance(t, int) and x.shape[1] != t:
            raise InputError(
                f"audio graph was exported for T={t} samples, preprocessing gives {x.shape[1]}"
            )
        return x

    def embeddings(
        self,
        audio,
        sample_rate: int | None,
        num_frames: int,
        *,
        input_scale: float | None = None,
        graph: str = "audioclip_audio",
    ) -> np.ndarray:
        """AudioCLIP embeddings of a clip, one per frame: float32 [F, D] (not normalised). Timed "audio"."""
        with self.ctx.timed("audio"):
            x = self.inputs(audio, sample_rate, num_frames, input_scale=input_scale, graph=graph)
            return self.ctx.run(graph, x)[0]

    def reference_1s_embeddings(
        self, audio, sample_rate: int | None, num_frames: int
    ) -> np.ndarray:
        """The reference No-Prompt loader's embeddings: float32 [F, D]. The clip resampled to the
        ``audioclip_audio_1s`` graph's ``sample_rate`` (48 kHz), one untiled chunk of ``num_samples``
        (48,000) per frame, int16 round trip, x the preset's ``audio_input_scale``. Timed "audio"."""
        bundle = self.ctx.bundle
        if not bundle.has(REFERENCE_1S_GRAPH):
            raise InputError(
                f"No-Prompt with the reference's audio (48 kHz, 1-s chunks; preset sam4avs) needs the "
                f"graph {REFERENCE_1S_GRAPH!r}, which bundle {bundle.root} lacks; rebuild the bundle "
                f"with it, or pass audio_source='clip' (the standard 44.1 kHz tiled input)"
            )
        with self.ctx.timed("audio"):
            entry = bundle.graphs[REFERENCE_1S_GRAPH]
            n, rate = int(entry["num_samples"]), int(entry["sample_rate"])
            x = load_audio(audio, sample_rate, rate)
            chunks = chunk_per_frame(
                x,
                rate,
                num_frames,
                chunk_seconds=n / rate,
                short_clip=short_clip_policy(self.ctx.preset),
            )
            wav = int16_round_trip(chunks) * np.float32(self.ctx.preset.audio_input_scale)
            return self.ctx.run(REFERENCE_1S_GRAPH, wav)[0]
