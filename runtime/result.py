"""What a segmentation mode returns and what ``segment`` hands back; the stage timer.

Imported by the pipeline and by every mode; imports no mode (``runtime.modes`` sits above it).

Per-frame schema, the same for every mode:

* ``masks[i]``: bool [H, W] at frame i's own size, True = sounding object.
* ``scores[i]``: float32 array, the mode's confidence for frame i; its meaning is the mode's
  ``score_kind`` in the mode table (a probability map [H, W], the chosen mask's predicted IoU [1],
  the softmax scores of the candidate masks [K], detector box scores [K]); [0] when nothing was scored.
* ``prompts[i]``: one dict per frame (never shared between frames) with what the mode chose
  (points, boxes, labels, thresholds, ...); the key ``empty_reason`` (a sentence) is present exactly
  when the mask is empty for a reason other than the model's output (no prompt, nothing detected, ...).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EMPTY_REASON = "empty_reason"

__all__ = ["EMPTY_REASON", "FrameOutput", "SegmentResult", "jsonable", "timed"]


@dataclass
class FrameOutput:
    """One frame's output of a mode: ``mask`` bool [H, W], ``score`` float32 array, ``prompt`` dict, and
    ``logits`` float32 [H, W] where the mode was asked to keep them (acfpn's ``keep_logits``)."""

    mask: np.ndarray
    score: np.ndarray
    prompt: dict[str, Any] = field(default_factory=dict)
    logits: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.mask = np.ascontiguousarray(self.mask, dtype=bool)
        self.score = np.asarray(self.score, dtype=np.float32)
        self.prompt = dict(self.prompt)


@dataclass
class SegmentResult:
    """What ``segment`` returns (module docstring for the per-frame schema).

    ``masks``: one bool [H, W] array per frame at that frame's own resolution. ``scores``: one
    float32 array per frame (meaning: the mode's ``score_kind``). ``prompts``: one dict per frame.
    ``timings``: stage -> milliseconds (``total`` included). ``providers``: graph -> execution
    provider that ran it. ``random_weights``: the bundle was built from random weights.
    ``precision``: graph -> precision it ran in ("fp32", "bf16", "int8").
    ``agreement``: for each graph not in fp32 (or gated), its agreement with the fp32 graph, as
    measured at build time (int8: ``cosine_min``, ``max_abs``, ``inputs``: the bundle manifest's
    ``agreement`` field) or by the gate on this machine.
    ``logits``: per frame float32 [H, W] mask logits, only where the mode keeps them (else empty).
    ``cache_hits``: embeddings (SAM frame embeddings, CLIP image features) this call took from the
    pipeline's cache instead of running the encoder.
    ``backends``: graph -> ``{"backend", "device", "precision"}`` that really ran it; ``precision``
    is what ran (fp32, bf16, int8), and ``agreement`` also holds, per gated graph, the gate's
    verdict (``gate``: "passed" or "failed: fp32 kept", ``tried``, ``mask_iou_min``, ``reason``).
    """

    mode: str
    preset: str
    masks: list[np.ndarray]
    scores: list[np.ndarray] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=dict)
    random_weights: bool = False
    precision: dict[str, str] = field(default_factory=dict)
    agreement: dict[str, dict[str, Any]] = field(default_factory=dict)
    logits: list[np.ndarray] = field(default_factory=list)
    cache_hits: int = 0
    backends: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_frames(
        cls, mode: str, preset: str, outputs: list[FrameOutput], **kw: Any
    ) -> SegmentResult:
        """Assemble a result from a mode's per-frame outputs."""
        logits = [o.logits for o in outputs] if all(o.logits is not None for o in outputs) else []
        return cls(
            mode,
            preset,
            [o.mask for o in outputs],
            [o.score for o in outputs],
            [o.prompt for o in outputs],
            logits=logits,
            **kw,
        )

    def summary(self) -> str:
        """A short human-readable table of the result."""
        lines = [
            f"mode {self.mode} (preset {self.preset})"
            + ("  [RANDOM WEIGHTS: masks are meaningless]" if self.random_weights else "")
        ]
        for i, m in enumerate(self.masks):
            why = self.prompts[i].get(EMPTY_REASON) if i < len(self.prompts) else None
            lines.append(
                f"  frame {i}: {m.shape[1]}x{m.shape[0]} px, mask covers {100.0 * m.mean():5.1f} %"
                + (f" ({why})" if why else "")
            )
        lines.append(
            "  timings: "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in self.timings.items())
            + (f" ({self.cache_hits} embeddings from the cache)" if self.cache_hits else "")
        )
        lines.append("  providers: " + ", ".join(f"{k}={v}" for k, v in self.providers.items()))
        if self.backends:
            lines.append(
                "  backends: "
                + ", ".join(
                    f"{k}={v['backend']}/{v['precision']}" for k, v in self.backends.items()
                )
            )
        if any(p != "fp32" for p in self.precision.values()):
            lines.append(
                "  precision: "
                + ", ".join(
                    f"{k}={p}"
                    + (
                        f" (cosine >= {self.agreement[k]['cosine_min']:.4f} vs fp32)"
                        if k in self.agreement
                        else ""
                    )
                    for k, p in self.precision.items()
                )
            )
        return "\n".join(lines)

    def info(self, *, max_score_values: int = 1024) -> dict[str, Any]:
        """Everything but the masks as JSON-safe data (for servers, JSON lines, logs).

        ``frames[i]``: ``hw`` [H, W], ``coverage`` (fraction of mask pixels), ``score``: the scores
        themselves when they hold at most ``max_score_values`` values, else their shape, min, max and
        mean; ``prompt``: the prompt dict with arrays as (nested) lists.
        """
        frames = []
        for i, m in enumerate(self.masks):
            s = self.scores[i] if i < len(self.scores) else np.zeros(0, np.float32)
            if s.size <= max_score_values:
                score: Any = {"values": jsonable(s), "shape": list(s.shape)}
            else:
                score = {
                    "shape": list(s.shape),
                    "min": float(s.min()),
                    "max": float(s.max()),
                    "mean": float(s.mean()),
                }
            frames.append(
                {
                    "hw": [int(m.shape[0]), int(m.shape[1])],
                    "coverage": float(m.mean()) if m.size else 0.0,
                    "score": score,
                    "prompt": jsonable(self.prompts[i] if i < len(self.prompts) else {}),
                }
            )
        return {
            "mode": self.mode,
            "preset": self.preset,
            "random_weights": bool(self.random_weights),
            "timings": jsonable(self.timings),
            "providers": dict(self.providers),
            "precision": dict(self.precision),
            "agreement": jsonable(self.agreement),
            "cache_hits": int(self.cache_hits),
            "backends": jsonable(self.backends),
            "frames": frames,
        }


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy arrays and scalars as lists and Python numbers, tuples as lists, NaN/inf as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


@contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the milliseconds spent in the ``with`` block to ``timings[key]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + (time.perf_counter() - t0) * 1000.0
