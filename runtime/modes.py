"""The segmentation modes of ``runtime.segment``: which graphs each needs and its parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.bundle import Bundle
from runtime.errors import InputError
from runtime.heatmap import audio_image_heatmap
from runtime.pipeline import SegmentResult, _timed
from runtime.resize import resize


@dataclass(frozen=True)
class ModeSpec:
    """A mode: the graphs it runs, its parameters with defaults, and the function that runs it."""

    graphs: tuple[str, ...]
    run: Callable[..., SegmentResult]
    params: dict[str, Any] = field(default_factory=dict)
    doc: str = ""


def _to_frame_size(maps: np.ndarray, frames: list[np.ndarray]) -> list[np.ndarray]:
    """Square maps [N, S, S] of squashed frames back to each frame's (H, W), bilinear."""
    return [resize(m[None], f.shape[:2], "bilinear")[0] for m, f in zip(maps, frames, strict=True)]


def run_heatmap(pipe, frames, audio, sample_rate, timings, *, threshold, reverse):
    """Heatmap mode: AudioCLIP's audio-image heatmap (CLIP-Surgery dense tokens) above ``threshold``."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise InputError(f"threshold must be in [0, 1], got {threshold}")
    with _timed(timings, "audio"):
        emb = pipe.audio_embeddings(audio, sample_rate, len(frames))
    with _timed(timings, "image"):
        feats = pipe.image_features(pipe.clip_images(frames, squash=True))
    with _timed(timings, "heatmap"):
        rev = bool(pipe.preset_value("heatmap_reverse", reverse))
        size = int(pipe.manifest["preprocessing"]["image"]["size"])
        maps = audio_image_heatmap(feats["surgery_dense"], emb, out_size=(size, size), reverse=rev)
        full = _to_frame_size(maps, frames)
        masks = [m > np.float32(threshold) for m in full]
    return SegmentResult("", "", masks, scores=full, prompts=[{"threshold": float(threshold), "reverse": rev}] * len(frames))


def run_acfpn(pipe, frames, audio, sample_rate, timings, *, threshold):
    """AC-FPN mode: supervised masks; logits resized back to each frame, sigmoid > ``threshold``.

    The audio embedding of each 1-s chunk comes from ``audioclip_audio`` (all chunks of the clip in
    one batch); the audio scale is the one the AC-FPN weights were trained with (manifest).
    """
    if not 0.0 < float(threshold) < 1.0:
        raise InputError(f"threshold must be in (0, 1), got {threshold}")
    entry = pipe.bundle.graphs["acfpn"]
    scale = entry.get("audio_input_scale")
    with _timed(timings, "audio"):
        emb = pipe.audio_embeddings(audio, sample_rate, len(frames), input_scale=scale,
                                    graph=entry.get("audio_graph", "audioclip_audio"))
    with _timed(timings, "image"):
        images = pipe.clip_images(frames, squash=True)
    with _timed(timings, "acfpn"):
        logits = pipe._run("acfpn", {"image": images, "audio_embedding": emb})[0][:, 0]
    with _timed(timings, "postprocess"):
        full = _to_frame_size(logits, frames)
        probs = [(1.0 / (1.0 + np.exp(-m.astype(np.float64)))).astype(np.float32) for m in full]
        masks = [p > np.float32(threshold) for p in probs]
    return SegmentResult("", "", masks, scores=probs, prompts=[{"threshold": float(threshold)}] * len(frames))


MODES: dict[str, ModeSpec] = {
    "acfpn": ModeSpec(
        graphs=("audioclip_audio", "acfpn"),
        run=run_acfpn,
        params={"threshold": 0.5},
        doc="Supervised AC-FPN (AudioCLIP towers + FPN head); needs trained AC-FPN weights to mean anything.",
    ),
    "heatmap": ModeSpec(
        graphs=("audioclip_audio", "audioclip_image"),
        run=run_heatmap,
        params={"threshold": 0.5, "reverse": None},
        doc="AudioCLIP heatmap thresholded: a crude zero-shot baseline, no SAM.",
    ),
}

_PREFERENCE = ("acfpn", "box", "point-dense", "heatmap")


def default_mode(bundle: Bundle) -> str:
    """The best mode this bundle supports, in the order acfpn, box, point-dense, heatmap."""
    for m in _PREFERENCE:
        if m in MODES and all(bundle.has(g) for g in MODES[m].graphs):
            return m
    raise InputError(f"bundle {bundle.root} supports no segmentation mode (graphs: {sorted(bundle.graphs)})")

import runtime.box_prompt  # noqa: E402,F401  (registers box)
import runtime.random_sam  # noqa: E402,F401  (registers random-sam: the Random-SAM baseline)
import runtime.zero_shot  # noqa: E402,F401  (registers point-global/-local/-dense, heatmap-box, no-prompt)
