"""What turns one AVSBench video into the metric's input: a :class:`Predictor`.

- :class:`PipelinePredictor`: an in-process :class:`runtime.Pipeline` (``segment`` on the video's 5 frames
  and its WAV). ``acfpn`` is scored on its **logits** (:func:`segment_with_logits`), every other mode on
  its binary masks as {0, 1}.
- :class:`ServedPredictor`: a served pipeline (Triton, ``avs serve`` or a cluster): the frames go as the
  dataset's PNG files and the audio as its WAV file, so the server sees the bytes an in-process run reads;
  one client per worker thread. Masks only (the wire carries no logits).
- :class:`FullMaskPredictor`: the paper's trivial baseline (every pixel foreground), no bundle.

Each returns a :class:`VideoOutcome` for the split loop (``evaluation.split``); the metric input is
brought to the GT masks' size by :func:`to_gt_shape`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from models import avsbench  # torch-free index of AVSBench (numpy + PIL + csv)
from runtime.errors import InputError
from runtime.pipeline import Pipeline, SegmentResult
from runtime.preprocess.resize import nearest_exact, resize

__all__ = [
    "BASELINES",
    "LOGIT_MODES",
    "FullMaskPredictor",
    "PipelinePredictor",
    "Predictor",
    "ServedPredictor",
    "VideoOutcome",
    "segment_with_logits",
    "to_gt_shape",
]

LOGIT_MODES = frozenset({"acfpn"})  # scored on logits; every other mode on {0, 1} masks
BASELINES = frozenset({"full-mask"})  # computed here, no bundle needed


@dataclass
class VideoOutcome:
    """Everything the split loop keeps of one video.

    ``pred``: what the metric sees, float32 [M, H, W] at the GT size for the M frames that have a
    GT mask: logits (``acfpn``) or {0, 1} masks. ``masks``: the predicted bool masks, one [H, W]
    per frame (all 5) at the frame's size. ``timings``: stage -> ms (the pipeline's stages +
    ``wall``). ``providers``: graph -> execution provider. ``resized_to_gt``: a frame's map had to be
    resized to the GT size.
    """

    pred: np.ndarray
    masks: list[np.ndarray]
    timings: dict[str, float]
    providers: dict[str, str]
    resized_to_gt: bool = False


class Predictor(Protocol):
    """One video -> :class:`VideoOutcome`. ``mode``: the runtime mode (or baseline) it runs;
    ``scored_on``: what the metric sees ("logits" or "binary {0,1} masks"). ``predict`` may be called
    from several threads at once when the loop runs with ``concurrency`` > 1."""

    mode: str
    scored_on: str

    def predict(
        self,
        rec: avsbench.VideoRecord,
        gt_shape: tuple[int, int],
        params: Mapping[str, Any],
    ) -> VideoOutcome: ...


def to_gt_shape(a: np.ndarray, shape: tuple[int, int], binary: bool) -> np.ndarray:
    """``a`` (float [h, w]) at ``shape`` (rows, cols): unchanged when it already has that shape; else a
    binary map by nearest neighbour (pixel centres, float32 as PyTorch's nearest-exact), real values (logits) bilinearly
    (align_corners=False, as the runtime resizes)."""
    if a.shape == shape:
        return a
    if binary:  # as torch's nearest-exact (runtime.preprocess.resize.nearest_exact)
        return nearest_exact(a, shape)
    return resize(a[None].astype(np.float32), shape, "bilinear")[0]


def _outcome(
    maps: Sequence[np.ndarray],
    binary: bool,
    rec: avsbench.VideoRecord,
    gt_shape: tuple[int, int],
    masks: Sequence[np.ndarray],
    timings: Mapping[str, float],
    providers: Mapping[str, str],
    t0: float,
) -> VideoOutcome:
    """The metric input of the frames with a GT mask (``rec.mask_frames``, 1-based), at ``gt_shape``;
    ``wall`` = ms since ``t0`` (``time.perf_counter``)."""
    shape = tuple(int(v) for v in gt_shape)
    picked = [maps[k - 1] for k in rec.mask_frames]
    resized = any(m.shape != shape for m in picked)
    pred = np.stack([to_gt_shape(m, shape, binary) for m in picked]).astype(np.float32)
    timings = {k: float(v) for k, v in timings.items()}
    timings["wall"] = (time.perf_counter() - t0) * 1000.0
    return VideoOutcome(pred, list(masks), timings, dict(providers), resized)


def _sigmoid64(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


def segment_with_logits(
    pipe: Pipeline,
    frames: Sequence[Any],
    audio: Any,
    sample_rate: int | None = None,
    **params: Any,
) -> tuple[SegmentResult, list[np.ndarray]]:
    """``pipe.segment(frames, audio, sample_rate, mode="acfpn", **params)`` and its logits.

    ``frames``: N uint8 RGB [H, W, 3] arrays or image paths; ``audio``: WAV path or array (with
    ``sample_rate``). Returns (result, logits) where logits[i] is float32 [H_i, W_i] (real values;
    ``sigmoid > 0.5`` = sounding object) at frame i's size: the ``acfpn`` graph's output resized
    bilinearly (align_corners=False) to the frame, as the runtime does before its sigmoid.
    Raises RuntimeError if ``sigmoid(logits)`` does not reproduce ``result.scores`` (1e-5), i.e.
    if the runtime's acfpn mode stopped following that contract.
    """
    res = pipe.segment(frames, audio, sample_rate, mode="acfpn", keep_logits=True, **params)
    logits = res.logits
    if len(logits) != len(res.masks):
        raise RuntimeError(f"acfpn gave {len(logits)} logit maps for {len(res.masks)} frames")
    for i, (lg, p) in enumerate(zip(logits, res.scores, strict=True)):
        if lg.shape != p.shape or float(np.max(np.abs(_sigmoid64(lg) - p))) > 1e-5:
            raise RuntimeError(
                f"frame {i}: the runtime's acfpn probabilities are not sigmoid(resized logits); "
                "runtime/modes/acfpn.py changed, update evaluation/predictors.py"
            )
    return res, logits


class PipelinePredictor:
    """An in-process pipeline running ``mode`` (a name of ``runtime.modes.MODES``, already checked
    against the bundle). ``predict`` loads the video's frames as uint8 RGB arrays and its WAV path."""

    def __init__(self, pipe: Pipeline, mode: str):
        if not isinstance(pipe, Pipeline):
            raise InputError(
                f"PipelinePredictor needs a runtime.Pipeline, got {type(pipe).__name__}"
            )
        self.pipe, self.mode = pipe, mode
        self.scored_on = "logits" if mode in LOGIT_MODES else "binary {0,1} masks"

    def predict(
        self,
        rec: avsbench.VideoRecord,
        gt_shape: tuple[int, int],
        params: Mapping[str, Any],
    ) -> VideoOutcome:
        frames = [avsbench.load_frame(p) for p in rec.frames]
        t0 = time.perf_counter()
        if self.mode in LOGIT_MODES:
            res, maps = segment_with_logits(self.pipe, frames, str(rec.wav), **params)
            binary = False
        else:
            res = self.pipe.segment(frames, str(rec.wav), mode=self.mode, **params)
            maps, binary = [m.astype(np.float32) for m in res.masks], True
        return _outcome(maps, binary, rec, gt_shape, res.masks, res.timings, res.providers, t0)


class FullMaskPredictor:
    """The paper's Full-mask baseline: every pixel of every frame is foreground. Takes no parameters."""

    mode = "full-mask"
    scored_on = "binary {0,1} masks"

    def predict(
        self,
        rec: avsbench.VideoRecord,
        gt_shape: tuple[int, int],
        params: Mapping[str, Any],
    ) -> VideoOutcome:
        if params:
            raise InputError(f"baseline {self.mode!r} takes no parameters, got {sorted(params)}")
        frames = [avsbench.load_frame(p) for p in rec.frames]
        t0 = time.perf_counter()
        masks = [np.ones(f.shape[:2], bool) for f in frames]
        maps = [m.astype(np.float32) for m in masks]
        return _outcome(maps, True, rec, gt_shape, masks, {}, {}, t0)


class ServedPredictor:
    """A served pipeline at ``url`` (host:port; ``protocol`` "http" or "grpc"; ``timeout`` seconds a
    request may take). One :class:`runtime.serving.client.TritonClient` per worker thread; :meth:`close` closes
    them all. ``mode`` None: the server's default (:meth:`resolve_mode` asks it with one clip). After
    the requests, ``random_weights`` says whether any answer came from random weights and ``preset``
    is the preset the server reported."""

    scored_on = "binary {0,1} masks"

    def __init__(self, url: str, protocol: str = "http", timeout: float = 600.0, mode=None):
        if protocol not in ("http", "grpc"):
            raise InputError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        self.url, self.protocol, self.timeout, self.mode = url, protocol, timeout, mode
        self.random_weights = False
        self.preset: str | None = None
        self._local = threading.local()
        self._all: list = []
        self._lock = threading.Lock()

    def _client(self):
        c = getattr(self._local, "client", None)
        if c is None:
            from runtime.serving.client import TritonClient  # tritonclient: the serve extra

            c = self._local.client = TritonClient(self.url, self.protocol, timeout=self.timeout)
            with self._lock:
                self._all.append(c)
        return c

    def _request(self, rec: avsbench.VideoRecord, params: Mapping[str, Any]):
        res = self._client().segment(
            [str(p) for p in rec.frames], str(rec.wav), mode=self.mode, **params
        )
        with self._lock:
            self.random_weights = self.random_weights or bool(res.random_weights)
            self.preset = res.preset
        return res

    def resolve_mode(self, rec: avsbench.VideoRecord, params: Mapping[str, Any]) -> str:
        """The mode the server runs: ``mode`` if given, else the one its answer to ``rec`` names."""
        if self.mode is None:
            self.mode = self._request(rec, params).mode
        return self.mode

    def predict(
        self,
        rec: avsbench.VideoRecord,
        gt_shape: tuple[int, int],
        params: Mapping[str, Any],
    ) -> VideoOutcome:
        t0 = time.perf_counter()
        res = self._request(rec, params)
        wall0 = time.perf_counter()
        maps = [m.astype(np.float32) for m in res.masks]
        out = _outcome(maps, True, rec, gt_shape, res.masks, res.timings, res.providers, t0)
        # ``wall``: the request's round trip, as before the evaluation package
        out.timings["wall"] = (wall0 - t0) * 1000.0
        return out

    def close(self) -> None:
        for c in self._all:
            c.close()
        self._all.clear()
