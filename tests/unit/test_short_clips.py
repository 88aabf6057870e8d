"""Clips shorter than one second (issue 11, fidelity 4; spec sam4avs-reference 1.5).

The original loader (``load_audio_wav``, transcribed in :func:`reference_chunks`) does not crash on
a clip under one second: ``x[:0]`` whole seconds are kept and copies of ``x[-44100:]`` -- the whole
short clip -- are appended, so every frame gets the whole clip and the audio tower an input of
5 x len(clip) samples. The exported graphs take a fixed length (5 x 44100), so the ``sam4avs``
preset cannot reproduce that and must say so; the ``default`` preset repeats the clip to fill the
second, as documented.
"""

from __future__ import annotations

import numpy as np
import pytest

import runtime
from runtime.errors import InputError
from runtime.preprocess.audio import chunk_per_frame, short_clip_policy

RATE = 44100


def reference_chunks(x: np.ndarray, num_frames: int = 5, rate: int = RATE) -> list[np.ndarray]:
    """The original's forcing to N seconds and cutting into N chunks, step by step (list of chunks):
    ``second = len // rate``; the last ``rate`` samples tiled ``N - second`` times after the whole
    seconds; ``reshape(N, 1, -1)``."""
    total = num_frames * rate
    if x.size > total:
        x = x[:total]
    elif x.size < total:
        second = x.size // rate
        rest_second = num_frames - second
        last_second_feature = x[-rate:]  # for a clip under one second: the whole clip
        x = np.concatenate((x[0 : second * rate], np.tile(last_second_feature, rest_second)))
    return list(x.reshape(num_frames, -1))  # [5, len(clip)] for a short clip


def test_the_original_gives_each_frame_the_whole_short_clip():
    x = np.linspace(-0.5, 0.5, int(0.4 * RATE), dtype=np.float32)
    chunks = reference_chunks(x)
    assert all(c.shape == x.shape and np.array_equal(c, x) for c in chunks)  # not one second each


def test_chunking_policies():
    x = np.linspace(-0.5, 0.5, int(0.4 * RATE), dtype=np.float32)
    with pytest.raises(InputError, match="original's result cannot be reproduced"):
        chunk_per_frame(x, RATE, 5, short_clip="refuse")
    got = chunk_per_frame(x, RATE, 5, short_clip="repeat")
    assert got.shape == (5, RATE)
    np.testing.assert_array_equal(got[0], np.tile(x, 3)[:RATE])
    # one second or more: both policies agree with the original
    y = np.random.default_rng(0).standard_normal(int(2.5 * RATE)).astype(np.float32)
    ref = np.stack(reference_chunks(y))
    for policy in ("refuse", "repeat"):
        np.testing.assert_array_equal(chunk_per_frame(y, RATE, 5, short_clip=policy), ref)
    with pytest.raises(InputError, match="short_clip must be one of"):
        chunk_per_frame(y, RATE, 5, short_clip="tile")


def test_policy_from_the_preset():
    assert short_clip_policy({"name": "sam4avs", "short_clip": "refuse"}) == "refuse"
    assert short_clip_policy({"name": "default", "short_clip": "repeat"}) == "repeat"
    # bundles built before the constant existed: the reference preset refuses
    assert short_clip_policy({"name": "sam4avs"}) == "refuse"
    assert short_clip_policy({"name": "x", "zero_shot_quirks": True}) == "refuse"
    assert short_clip_policy({"name": "default", "zero_shot_quirks": False}) == "repeat"


def test_segment_refuses_in_sam4avs_and_repeats_in_default(tiny_bundle, demo_dir):
    from runtime.preprocess.image import load_frame

    frames = [load_frame(demo_dir / "cat_2.jpg")]
    short = (0.3 * np.sin(np.arange(int(0.5 * 16000)) / 3.0)).astype(np.float32)  # 0.5 s at 16 kHz
    sam = runtime.load(tiny_bundle, preset="sam4avs")
    assert sam.preset["short_clip"] == "refuse"
    for mode in ("heatmap", "acfpn"):
        with pytest.raises(InputError, match="original's result cannot be reproduced"):
            sam.segment(frames, short, 16000, mode=mode)
    res = runtime.load(tiny_bundle, preset="default").segment(frames, short, 16000, mode="heatmap")
    assert len(res.masks) == 1
    # No-Prompt's reference audio (48 kHz 1-s chunks) under sam4avs: refused the same way
    from runtime.modes import no_prompt

    if sam.bundle.has(no_prompt.REFERENCE_1S_GRAPH):
        with pytest.raises(InputError, match="original's result cannot be reproduced"):
            no_prompt.no_prompt_audio_embeddings(
                sam.stages(), short, 16000, 1, source="reference-1s"
            )
