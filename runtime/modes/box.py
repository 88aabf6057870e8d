"""Box-Prompt mode (spec sam4avs-reference 4.6): CLAP names the sound, GroundingDINO finds it, SAM segments it.

Per frame i (numpy + onnxruntime only):

1. Audio (both presets, as the reference): the clip resampled to 48 kHz (soxr HQ, as librosa),
   one 1-s chunk per frame (AVSBench convention), int16 round trip (clip to [-1, 1], x32767,
   truncate to int16, / 32767), repeat-padded to 10 s (the chunk repeated int(480000 / 48000) = 10
   times, zero-padded to 480,000) -> ``clap_audio`` -> L2-normalised embedding [512].
2. Labels: cosine of the embedding with the bank of CLAP text embeddings (``clap_text``, one row per
   label, built at export time), top-``k`` labels (k = 1 for S4, 2 for MS3; ties go to the lower
   label index).
3. Detector, one call per chosen label (both presets): the frame resized as GroundingDINO's
   ``load_image`` (PIL bilinear, shorter side 800, longer side <= 1333, /255, ImageNet
   normalisation) with the label's precomputed text tensors (caption ``label.lower() + '.'``).
   Queries whose score (max over tokens of the sigmoid logit) is > ``box_threshold`` (0.3) give
   boxes; normalised (cx, cy, w, h) -> (x0, y0, x1, y1) pixels of the frame (not clipped).
   The detector graph has a fixed input size; a frame whose resized size differs from it is
   resized straight to the graph's size (its aspect ratio changes; boxes are normalised, so they
   map back exactly). ``prompts[i]['detector_resize']`` says which happened.
4. SAM: all boxes of the frame in one decoder call (chunked only by the runtime's prompt-set
   limit, never capped), single-mask output (``multimask_output=False``), masks united. The frame's
   SAM embedding is computed once (frames with boxes only, in one encoder batch). No box gives an
   all-False mask, as the reference.

Coordinates: (x, y) pixels, x along the width, origin at the top-left corner of the frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from runtime.bundle.contract import (
    BOX_PROMPT_LABELS,
    CLAP_TEXT_BANK,
    DETECTOR_LENGTH_BANK,
    GRAPHS,
    detector_bank,
)
from runtime.errors import InputError
from runtime.modes.common import SAM_OPTIONAL
from runtime.modes.spec import ModeSpec, Param
from runtime.preprocess.audio import chunk_per_frame, load_audio
from runtime.result import EMPTY_REASON, FrameOutput, timed

__all__ = [
    "BOX_GRAPHS",
    "MODE",
    "box_frame_masks",
    "boxes_cxcywh_to_xyxy",
    "clap_audio_input",
    "clap_embeddings",
    "detect",
    "detector_input",
    "detector_size",
    "label_bank",
    "labels",
    "top_labels",
]

BOX_GRAPHS = ("clap_audio", "detector", "sam_image_encoder", "sam_prompt_decoder")


# --- audio and labels ----------------------------------------------------------------------------


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
    q = (np.clip(chunks, -1.0, 1.0) * 32767.0).astype(np.int16)
    chunks = (q / 32767.0).astype(np.float32)
    n = chunks.shape[1]
    if n > clip_samples:
        raise InputError(f"chunks of {n} samples exceed the CLAP clip of {clip_samples} samples")
    reps = clip_samples // n
    out = np.zeros((chunks.shape[0], clip_samples), np.float32)
    out[:, : reps * n] = np.tile(chunks, (1, reps))
    return out


def clap_embeddings(pipe, audio, sample_rate: int | None, num_frames: int) -> np.ndarray:
    """CLAP audio embeddings, one per frame: float32 [F, D], rows L2-normalised."""
    c = pipe.section("clap")
    x = clap_audio_input(
        audio,
        sample_rate,
        num_frames,
        rate=c.sample_rate,
        clip_samples=c.clip_samples,
        chunk_seconds=c.chunk_seconds,
    )
    b, t = pipe.graph_input_shape("clap_audio")
    if isinstance(t, int) and t != x.shape[1]:
        raise InputError(
            f"clap_audio was exported for T={t} samples, preprocessing gives {x.shape[1]}"
        )
    if isinstance(b, int):  # fixed-batch graph: one chunk per call
        emb = np.concatenate([pipe.run("clap_audio", x[i : i + b])[0] for i in range(0, len(x), b)])
    else:
        (emb,) = pipe.run("clap_audio", x)
    return (emb / np.linalg.norm(emb, axis=-1, keepdims=True)).astype(np.float32)


def label_bank(pipe) -> np.ndarray:
    """The CLAP text embeddings of the bundle's labels: float32 [N, D], one L2-normalised row per label."""
    return pipe.bank(CLAP_TEXT_BANK)


def labels(pipe) -> list[str]:
    """The bundle's label names, in bank order."""
    return pipe.label_names(BOX_PROMPT_LABELS)


def top_labels(
    audio_embedding: np.ndarray, bank: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` labels closest to one audio embedding.

    audio_embedding: float [D] (L2-normalised); bank: float [N, D] (rows L2-normalised).
    Returns (indices int64 [k], cosine scores float32 [k]), best first; ties go to the lower index.
    """
    a = np.asarray(audio_embedding, np.float32)
    b = np.asarray(bank, np.float32)
    if b.ndim != 2 or a.shape != (b.shape[1],):
        raise InputError(
            f"audio_embedding must be [D] and bank [N, D] with the same D, got {a.shape} and {b.shape}"
        )
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"k must be a positive int, got {k!r}")
    if k > b.shape[0]:
        raise InputError(f"k={k} is larger than the label bank ({b.shape[0]} labels)")
    scores = b @ a
    idx = np.argsort(-scores, kind="stable")[: int(k)]
    return idx.astype(np.int64), scores[idx].astype(np.float32)


# --- detector --------------------------------------------------------------------------------------


def detector_size(
    height: int, width: int, short_side: int, max_size: int | None
) -> tuple[int, int]:
    """(h, w) after GroundingDINO's ``RandomResize([short_side], max_size)`` (its
    ``get_size_with_aspect_ratio``): shorter side to ``short_side`` unless the longer would exceed
    ``max_size``, sizes truncated to int."""
    h, w = int(height), int(width)
    size = int(short_side)
    if max_size is not None:
        lo, hi = float(min(w, h)), float(max(w, h))
        if hi / lo * size > max_size:
            size = int(round(max_size * lo / hi))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


def detector_input(frame: np.ndarray, pre, graph_hw: tuple[int, int]) -> tuple[np.ndarray, str]:
    """The detector image of a frame: float32 [1, 3, H, W] at the graph's size, and how it was resized.

    frame: uint8 [h, w, 3] RGB. pre: the manifest's ``preprocessing.detector`` (a
    :class:`runtime.bundle.contract.DetectorSection`, or its raw mapping). Returns the image
    and "reference" (the reference's size equals the graph's) or "stretched" (resized to the graph's
    size directly).
    """
    if (
        not isinstance(frame, np.ndarray)
        or frame.dtype != np.uint8
        or frame.ndim != 3
        or frame.shape[2] != 3
    ):
        raise InputError(
            f"frame must be uint8 [H, W, 3] RGB, got {getattr(frame, 'dtype', type(frame))} {np.shape(frame)}"
        )
    get = pre.get if isinstance(pre, dict) else (lambda k, d=None: getattr(pre, k, d))
    oh, ow = detector_size(frame.shape[0], frame.shape[1], int(get("short_side")), get("max_size"))
    how = "reference" if (oh, ow) == tuple(graph_hw) else "stretched"
    gh, gw = graph_hw
    img = Image.fromarray(frame)
    if (gh, gw) != (frame.shape[0], frame.shape[1]):
        img = img.resize((gw, gh), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(get("mean"), np.float32)
    std = np.asarray(get("std"), np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32), how


def boxes_cxcywh_to_xyxy(boxes: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Normalised (cx, cy, w, h) [K, 4] -> (x0, y0, x1, y1) pixels of a frame of size (H, W), float32, not clipped."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    cx, cy, w, h = b.T
    half = np.float32(0.5)
    xyxy = np.stack([cx - half * w, cy - half * h, cx + half * w, cy + half * h], axis=1)
    H, W = frame_hw
    return (xyxy * np.asarray([W, H, W, H], np.float32)).astype(np.float32)


def detect(
    pipe, image: np.ndarray, label_index: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """One detector call for one label: (boxes float32 [K, 4] normalised cxcywh, scores float32 [K]) with score > threshold."""
    n = int(pipe.bank(DETECTOR_LENGTH_BANK)[label_index])
    texts = []
    for spec in GRAPHS["detector"].inputs[1:]:
        arr = pipe.bank(detector_bank(spec.name))[label_index : label_index + 1]
        square = spec.shape.count("tokens") == 2  # [1, L, L] attention mask
        texts.append(np.ascontiguousarray(arr[:, :n, :n] if square else arr[:, :n]))
    scores, boxes = pipe.run("detector", image, *texts)
    keep = scores[0] > np.float32(threshold)
    return boxes[0][keep].astype(np.float32), scores[0][keep].astype(np.float32)


# --- SAM -------------------------------------------------------------------------------------------


def box_frame_masks(
    runner, embedding: np.ndarray, frame_hw: tuple[int, int], boxes_xyxy: np.ndarray
) -> np.ndarray:
    """Union of SAM's single-mask outputs for every box: bool [H, W].

    boxes_xyxy: float [K, 4] pixels of the frame (may extend past its edges, as GroundingDINO's do;
    SAM takes them unclipped, as the reference). All K boxes go through one decoder call (the
    runner chunks only at its own prompt-set limit). K = 0 gives an all-False mask.
    """
    h, w = frame_hw
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    out = np.zeros((h, w), bool)
    if b.shape[0] == 0:
        return out
    _, low = runner.predict_low_res(
        embedding, (h, w), boxes=b, multimask_output=False, boxes_inside=False
    )
    buf = np.empty((h, w), bool)
    for i in range(b.shape[0]):  # one box at a time keeps the full-size logits small
        out |= runner.upscale(low[i, 0], (h, w), out=buf)
    return out


def run_box(pipe, frames, audio, sample_rate, timings, *, k, box_threshold):
    """Box-Prompt mode; see the module docstring. ``k``: labels per frame (1 for S4, 2 for MS3);
    ``box_threshold``: detector score threshold (default: the manifest's, 0.3).
    Per frame: score = the kept boxes' detector scores float32 [K]; prompt = labels, label_indices,
    label_scores, boxes_xyxy (frame pixels), box_scores, detector_resize."""
    pre = pipe.section("detector")
    thr = pre.box_threshold if box_threshold is None else box_threshold
    bank = label_bank(pipe)
    names = labels(pipe)
    if k > bank.shape[0]:
        raise InputError(f"k={k} is larger than the label bank ({bank.shape[0]} labels)")
    graph_hw = tuple(int(v) for v in pipe.graph_input_shape("detector")[2:4])
    with timed(timings, "clap"):
        emb = clap_embeddings(pipe, audio, sample_rate, len(frames))
    prompts: list[dict[str, Any]] = []
    frame_boxes: list[np.ndarray] = []
    with timed(timings, "detector"):
        for i, frame in enumerate(frames):
            idx, cos = top_labels(emb[i], bank, int(k))
            image, how = detector_input(frame, pre, graph_hw)
            boxes, scores = [], []
            for j in idx:
                b, s = detect(pipe, image, int(j), thr)
                boxes.append(b)
                scores.append(s)
            b = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
            s = np.concatenate(scores) if scores else np.zeros(0, np.float32)
            xyxy = boxes_cxcywh_to_xyxy(b, frame.shape[:2])
            frame_boxes.append(xyxy)
            prompts.append(
                {
                    "labels": [names[int(j)] for j in idx],
                    "label_indices": idx.tolist(),
                    "label_scores": cos.tolist(),
                    "boxes_xyxy": xyxy.tolist(),
                    "box_scores": s.tolist(),
                    "detector_resize": how,
                    **({} if len(xyxy) else {EMPTY_REASON: "no detector box above the threshold"}),
                }
            )
    masks: list[np.ndarray] = [np.zeros(f.shape[:2], bool) for f in frames]
    with timed(timings, "sam"):
        todo = [i for i, b in enumerate(frame_boxes) if len(b)]
        if todo:
            runner = pipe.sam_runner()
            embs = pipe.sam_embeddings([frames[i] for i in todo])
            for i, e in zip(todo, embs, strict=True):
                masks[i] = box_frame_masks(runner, e, frames[i].shape[:2], frame_boxes[i])
    return [
        FrameOutput(m, np.asarray(p["box_scores"], np.float32), p)
        for m, p in zip(masks, prompts, strict=True)
    ]


MODE = ModeSpec(
    name="box",
    graphs=BOX_GRAPHS,
    optional_graphs=SAM_OPTIONAL,
    run=run_box,
    params=(
        Param("k", 1, "int", "AudioSet labels per frame (1 for S4, 2 for MS3)", low=1),
        Param(
            "box_threshold",
            None,
            "float",
            "detector score threshold (None: the manifest's)",
            low=0.0,
            high=1.0,
            nullable=True,
        ),
    ),
    score_kind="detector scores of the kept boxes float32 [K]",
    doc="Box-Prompt: CLAP top-k AudioSet labels -> GroundingDINO boxes -> SAM box masks, united.",
)
