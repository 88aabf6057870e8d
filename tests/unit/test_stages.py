"""Stages (runtime/stages): modes receive only the stages they declare, stages check inputs before any
session exists, and time themselves into the call's timings."""

from __future__ import annotations

import numpy as np
import pytest

import runtime
from runtime.errors import InputError
from runtime.modes import MODES, ModeSpec
from runtime.stages import STAGES


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return runtime.load(tiny_bundle)


def _clip(n=2, hw=(40, 56)):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(n)]
    return frames, rng.uniform(-0.5, 0.5, 16000 * n).astype(np.float32)


def test_every_mode_declares_known_stages():
    for spec in MODES.values():
        assert spec.stages and set(spec.stages) <= set(STAGES), spec.name
    with pytest.raises(ValueError, match="unknown stages"):
        ModeSpec(name="x", graphs=(), stages=("audio", "tokenizer"), run=lambda *a: [])


def test_frames_too_small_for_sam_are_refused_before_any_session(tiny_bundle):
    pipe = runtime.load(tiny_bundle)  # fresh: no session yet
    frames, audio = _clip(1, (12, 12))
    for mode in ("point-global", "heatmap-box", "no-prompt"):
        with pytest.raises(InputError, match="SAM patch size"):
            pipe.segment(frames, audio, 16000, mode=mode)
    assert pipe.session_info == {}  # neither SAM nor AudioCLIP sessions were made to refuse it


def test_stages_time_themselves(pipe):
    frames, audio = _clip()
    res = pipe.segment(frames, audio, 16000, mode="heatmap")
    assert {"load_frames", "audio", "image", "heatmap", "postprocess", "total"} == set(res.timings)
    assert res.timings["total"] == pytest.approx(
        sum(v for k, v in res.timings.items() if k != "total")
    )
    res = pipe.segment(frames, audio, 16000, mode="point-global")
    assert {"audio", "image", "heatmap", "prompts", "sam_encoder", "sam_decoder"} <= set(
        res.timings
    )


def test_a_view_holds_only_its_stages(pipe):
    st = pipe.stages(["audio"])
    assert st.audio is pipe.stages().audio  # one stage object per pipeline
    with pytest.raises(AttributeError, match="not declared"):
        st.image  # noqa: B018
    with pytest.raises(InputError, match="unknown stage"):
        pipe.stages(["audio", "vision"])
