"""avs-runtime's lean inference runtime (numpy + onnxruntime; never torch).

    import runtime
    pipe = runtime.load("engines/default")
    result = pipe.segment(frames, "clip.wav", mode="heatmap")

or in one call: ``runtime.segment("engines/default", frames, audio, sample_rate=16000)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.backends.precision import Gate
from runtime.budget import Budget
from runtime.bundle import Bundle
from runtime.errors import AVSError, BundleError, InputError, ProviderError
from runtime.media import rle
from runtime.pipeline import Pipeline, SegmentResult

__all__ = [
    "load",
    "segment",
    "Pipeline",
    "SegmentResult",
    "Budget",
    "Bundle",
    "Gate",
    "AVSError",
    "BundleError",
    "InputError",
    "ProviderError",
    "rle",
]
__version__ = "0.1.0"


def load(
    bundle_dir: str | Path,
    *,
    providers: Sequence[str] | None = None,
    provider_options: dict[str, dict[str, Any]] | None = None,
    threads: int | None = None,
    preset: str | None = None,
    verify: bool = True,
    cache_mb: float = 256.0,
    budget: Budget | None = None,
    backend: str | None = None,
    precision: str | None = None,
    cache_dir: str | Path | None = None,
    gate: Gate | None = None,
    calibration_dir: str | Path | None = None,
    graph_runner=None,
) -> Pipeline:
    """Open and check a bundle (schema, sha256 of every file) and return its :class:`Pipeline`.

    ``providers``: e.g. ``["cuda", "cpu"]``; default tries TensorRT -> CUDA -> CPU, keeping those
    this onnxruntime build has. ``preset``: "default" (corrected behaviour) or "sam4avs" (the
    reference's quirks), as the bundle's manifest defines them. ``cache_mb``: memory for embeddings
    reused across modes and calls (SAM frame embeddings, CLIP image features); 0 disables it.
    ``budget``: bounds of one ``segment`` call (:class:`runtime.budget.Budget`; default
    :data:`runtime.budget.DEFAULT_BUDGET`, no deadline); raise them deliberately for big jobs.

    ``backend``: "auto", "onnxruntime" or "openvino" (:mod:`runtime.backends.execution`);
    ``precision``: "auto", "fp32", "bf16" or "int8" (:mod:`runtime.backends.precision` says what
    ``auto`` picks and when bf16 is refused); None (default): ``$AVS_BACKEND`` / ``$AVS_PRECISION``,
    else "auto". ``cache_dir``: a folder of your choice for OpenVINO's
    compiled models and the precision gates' verdicts (None: nothing written; verdicts are kept
    in memory for the process). ``gate``: the agreement limits of a reduced precision
    (:class:`runtime.backends.precision.Gate`); ``calibration_dir``: photos/WAVs the gate runs on (default:
    the shared real media, :mod:`runtime.backends.calibration`).

    ``graph_runner``: who runs the graphs (default: onnxruntime in this process; see :class:`Pipeline`).
    """
    bundle = Bundle.open(bundle_dir, verify=verify)
    return Pipeline(
        bundle,
        providers=providers,
        provider_options=provider_options,
        threads=threads,
        preset=preset,
        cache_mb=cache_mb,
        budget=budget,
        backend=backend,
        precision=precision,
        cache_dir=cache_dir,
        gate=gate,
        calibration_dir=calibration_dir,
        graph_runner=graph_runner,
    )


def segment(
    bundle_dir: str | Path,
    frames=None,
    audio=None,
    sample_rate: int | None = None,
    *,
    video: str | Path | None = None,
    mode: str | None = None,
    preset: str | None = None,
    **params,
) -> SegmentResult:
    """One-call convenience: ``load(bundle_dir, preset=preset).segment(frames, audio, ...)``, or with
    ``video=path`` ``load(...).segment_video(path, audio=audio, ...)`` (frames and audio from the file;
    ``audio`` only replaces a missing track; ``params`` may include the video options)."""
    pipe = load(bundle_dir, preset=preset)
    if video is not None:
        if frames is not None:
            raise InputError("give either frames (with audio) or video=, not both")
        if audio is not None:
            params.update(audio=audio, sample_rate=sample_rate)
        return pipe.segment_video(video, mode=mode, **params)
    if frames is None or audio is None:
        raise InputError("segment needs frames and audio, or video=path")
    return pipe.segment(frames, audio, sample_rate, mode=mode, **params)
