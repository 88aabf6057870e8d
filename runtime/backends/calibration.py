"""Calibration inputs of the precision gate (:mod:`runtime.backends.precision`): real photos by default.

The gate of a graph runs it in fp32 and in the reduced precision on the inputs made here, each
made the way the pipeline makes that graph's inputs:

* ``sam_image_encoder``: SAM-preprocessed photos (float32 [1, 3, S, S]).
* ``sam_point_decoder`` / ``sam_prompt_decoder`` / ``sam_point_iou``: the embedding of a photo
  (made by the pipeline's ``sam_image_encoder`` session) with a 4 x 4 grid of single foreground
  points (16 prompt sets, the automatic mask generator's kind of prompt; no mask input);
  ``sam_mask_upscaler``: the ``sam_point_iou`` outputs for those.
* ``audioclip_image``: CLIP-preprocessed photos; ``acfpn``: squashed CLIP photos with the audio
  embeddings of a real WAV (``audioclip_audio``, fp32).

Photos and WAVs come from ``data_dir``: ``$AVS_SHARED_DATA`` (its ``audioclip-demo`` folder),
else ``../shared/data/audioclip-demo`` beside the repository; where none is found, deterministic
synthetic inputs (smooth colour ramps with noise; a chirp) are used and the verdict's ``inputs``
says so. Graphs not listed above get no calibration inputs: they are not gated and stay fp32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from runtime.bundle.contract import GRAPHS
from runtime.errors import InputError

GATED_GRAPHS = (
    "sam_image_encoder",
    "sam_point_decoder",
    "sam_prompt_decoder",
    "sam_point_iou",
    "sam_mask_upscaler",
    "audioclip_image",
    "acfpn",
)
DEFAULT_FRAMES = 2
SYNTH_RATE = 32_000  # Hz of the synthetic chirp used where no WAV is found


def default_data_dir() -> Path | None:
    """The folder of calibration photos and WAVs (module docstring), or None when none exists."""
    env = os.environ.get("AVS_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    for c in candidates:
        for d in (c / "audioclip-demo", c):
            if d.is_dir() and any(d.glob("*.jpg")):
                return d.resolve()
    return None


def calibration_frames(
    data_dir: str | Path | None = None, limit: int = DEFAULT_FRAMES
) -> tuple[list[np.ndarray], str]:
    """Up to ``limit`` photos as uint8 [H, W, 3] RGB arrays, and a description of where they came from.

    data_dir None: :func:`default_data_dir`. Without photos: ``limit`` synthetic 480 x 640 frames.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InputError(f"limit must be a positive int, got {limit!r}")
    d = Path(data_dir) if data_dir is not None else default_data_dir()
    files = sorted(d.glob("*.jpg"))[:limit] if d is not None and d.is_dir() else []
    if files:
        from PIL import Image

        frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        return frames, "photos " + ", ".join(f.name for f in files)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    frames = []
    for k in range(limit):
        base = np.stack([xx / 640, yy / 480, (xx + yy + 97 * k) % 640 / 640], -1) * 200
        frames.append(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))
    return frames, f"{limit} synthetic frames (no photos found)"


def calibration_audio(data_dir: str | Path | None = None) -> tuple[Any, int | None, str]:
    """One WAV path (or a synthetic 5-s chirp at :data:`SYNTH_RATE` Hz as float32 [N]) with its sample
    rate (None for a path: read from the file) and a description (the pipeline resamples)."""
    d = Path(data_dir) if data_dir is not None else default_data_dir()
    wavs = sorted(d.glob("*.wav")) if d is not None and d.is_dir() else []
    if wavs:
        return str(wavs[0]), None, f"audio {wavs[0].name}"
    t = np.arange(SYNTH_RATE * 5, dtype=np.float64) / SYNTH_RATE
    return (
        (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32),
        SYNTH_RATE,
        "synthetic chirp",
    )


def calibration_feeds(
    pipe, graph: str, data_dir: str | Path | None = None, limit: int = DEFAULT_FRAMES
) -> tuple[list[dict[str, np.ndarray]], str] | None:
    """Feed dicts (input name -> array) for ``graph`` of pipeline ``pipe``, and their description;
    None for a graph without calibration inputs (not gated).

    ``pipe``: a :class:`runtime.pipeline.Pipeline` (its sections and fp32 sessions of the upstream
    graphs are used).
    """
    if graph not in GATED_GRAPHS:
        return None
    frames, desc = calibration_frames(data_dir, limit)
    names = GRAPHS[graph].input_names
    if graph.startswith("sam_"):
        from runtime.sam.predictor import encode_prompts, preprocess

        sam = pipe.section("sam")
        xs = [
            preprocess(f, sam.image_size, sam.pixel_mean, sam.pixel_std, patch_size=sam.patch_size)[
                0
            ]
            for f in frames
        ]
        if graph == "sam_image_encoder":
            return [dict(zip(names, (x,), strict=True)) for x in xs], desc
        enc, enc_spec = pipe.session("sam_image_encoder"), GRAPHS["sam_image_encoder"]
        low = 4 * sam.image_size // sam.patch_size
        feeds = []
        for f, x in zip(frames, xs, strict=True):
            (emb,) = enc.run(
                list(enc_spec.output_names), dict(zip(enc_spec.input_names, (x,), strict=True))
            )
            h, w = f.shape[:2]
            g = (np.arange(4) + 0.5) / 4
            pts = np.stack(np.meshgrid(g * w, g * h), -1).reshape(16, 1, 2)
            coords, labels = encode_prompts((h, w), sam.image_size, pts, np.ones((16, 1)))
            arrays = (
                np.ascontiguousarray(emb[:1]),
                coords.astype(np.float32),
                labels.astype(np.float32),
            )
            if graph == "sam_prompt_decoder":  # no mask input
                arrays += (np.zeros((16, 1, low, low), np.float32), np.zeros(1, np.float32))
            if graph == "sam_mask_upscaler":  # the IoU half's outputs for those prompts
                iou_spec = GRAPHS["sam_point_iou"]
                outs = pipe.session("sam_point_iou").run(
                    list(iou_spec.output_names),
                    dict(zip(iou_spec.input_names, arrays, strict=True)),
                )
                arrays = tuple(outs[1:])
            feeds.append(dict(zip(names, arrays, strict=True)))
        prec = pipe.session_info["sam_image_encoder"].precision
        return feeds, f"{desc}; their SAM embeddings (encoder in {prec}) + 16 grid points"
    if graph == "audioclip_image":
        return [dict(zip(names, (pipe.clip_images([f]),), strict=True)) for f in frames], desc
    # acfpn: squashed photos + the audio embeddings of a real clip
    audio, rate, adesc = calibration_audio(data_dir)
    emb = pipe.audio_embeddings(audio, rate, len(frames))
    images = pipe.clip_images(frames, squash=True)
    return [
        dict(zip(names, (images[i : i + 1], emb[i : i + 1]), strict=True))
        for i in range(len(frames))
    ], f"{desc}; {adesc}"
