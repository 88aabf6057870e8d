"""CLAP's audio input (Box-Prompt, spec sam4avs-reference 4.6): laion-clap's 48 kHz chunks with its int16
round trip and repeat-padding. numpy only."""

from __future__ import annotations

import numpy as np

from runtime.errors import InputError
from runtime.preprocess.audio import chunk_per_frame, int16_round_trip, load_audio

__all__ = ["clap_audio_input"]


def clap_audio_input(
    audio,
    sample_rate: int | None,
    num_frames: int,
    *,
    rate: int,
    clip_samples: int,
    chunk_seconds: float,
) -> np.ndarray:
    """The ``clap_audio`` input of a clip: float32 [F, clip_samples], values in [-1, 1].

    audio: WAV path, or an array (float in [-1, 1] or PCM ints) with ``sample_rate`` in Hz.
    One ``chunk_seconds`` chunk per frame at ``rate`` Hz, int16 round trip (laion-clap's
    ``float32_to_int16`` / ``int16_to_float32``), then repeat-padded as ``get_audio_features``
    does with ``data_filling='repeatpad'``.
    """
    if not isinstance(num_frames, int | np.integer) or num_frames < 1:
        raise InputError(f"num_frames must be a positive int, got {num_frames!r}")
    x = load_audio(audio, sample_rate, rate)
    chunks = chunk_per_frame(x, rate, int(num_frames), chunk_seconds=chunk_seconds)
    chunks = int16_round_trip(chunks)
    n = chunks.shape[1]
    if n > clip_samples:
        raise InputError(f"chunks of {n} samples exceed the CLAP clip of {clip_samples} samples")
    reps = clip_samples // n
    out = np.zeros((chunks.shape[0], clip_samples), np.float32)
    out[:, : reps * n] = np.tile(chunks, (1, reps))
    return out
