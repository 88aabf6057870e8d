"""Mode ``acfpn``: supervised AC-FPN masks (AudioCLIP towers + FPN head, Hadamard or concatenation fusion)."""

from __future__ import annotations

import numpy as np

from runtime.modes.common import to_frame_size
from runtime.modes.spec import ModeSpec, Param
from runtime.result import FrameOutput


def run_acfpn(st, frames, audio, sample_rate, *, threshold, keep_logits):
    """AC-FPN: logits [N, 1, S, S] of the squashed frames, resized back to each frame, sigmoid > ``threshold``.

    The audio embedding of each 1-s chunk comes from the acfpn entry's ``audio_graph`` (all chunks of
    the clip in one batch) at the audio scale the AC-FPN weights were trained with (manifest).
    Per frame: score = the sigmoid probability map float32 [H, W]; prompt = {"threshold"}; with
    ``keep_logits`` also the resized logits float32 [H, W] (``SegmentResult.logits``).
    """
    emb = st.audio.embeddings(
        audio,
        sample_rate,
        len(frames),
        input_scale=st.acfpn.audio_input_scale,
        graph=st.acfpn.audio_graph,
    )
    with st.timed("image"):
        images = st.image.clip_images(frames, squash=True)
    logits = st.acfpn.logits(images, emb)
    with st.timed("postprocess"):
        full = to_frame_size(logits[:, 0], frames)
        probs = [(1.0 / (1.0 + np.exp(-m.astype(np.float64)))).astype(np.float32) for m in full]
        return [
            FrameOutput(
                p > np.float32(threshold),
                p,
                {"threshold": threshold},
                logits=z.astype(np.float32) if keep_logits else None,
            )
            for p, z in zip(probs, full, strict=True)
        ]


MODE = ModeSpec(
    name="acfpn",
    graphs=("audioclip_audio", "acfpn"),
    optional_graphs=("acfpn_audio",),
    stages=("audio", "image", "acfpn"),
    run=run_acfpn,
    params=(
        Param(
            "threshold",
            0.5,
            "float",
            "sigmoid probability above which a pixel sounds",
            low=0.0,
            high=1.0,
            open_low=True,
            open_high=True,
        ),
        Param("keep_logits", False, "bool", "also return the mask logits (SegmentResult.logits)"),
    ),
    presets=("audio_input_scale", "image_antialias"),
    score_kind="probability map float32 [H, W]",
    doc="Supervised AC-FPN (AudioCLIP towers + FPN head); needs trained AC-FPN weights to mean anything.",
)
