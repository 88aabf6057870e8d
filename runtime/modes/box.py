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

from runtime.errors import InputError
from runtime.modes.common import SAM_OPTIONAL
from runtime.modes.spec import ModeSpec, Param
from runtime.preprocess.detector import boxes_cxcywh_to_xyxy
from runtime.prompting.labels import top_labels
from runtime.result import EMPTY_REASON, FrameOutput

__all__ = ["BOX_GRAPHS", "MODE", "run_box"]

BOX_GRAPHS = ("clap_audio", "detector", "sam_image_encoder", "sam_prompt_decoder")


def run_box(st, frames, audio, sample_rate, *, k, box_threshold):
    """Box-Prompt mode; see the module docstring. ``k``: labels per frame (1 for S4, 2 for MS3);
    ``box_threshold``: detector score threshold (default: the manifest's, 0.3).
    Per frame: score = the kept boxes' detector scores float32 [K]; prompt = labels, label_indices,
    label_scores, boxes_xyxy (frame pixels), box_scores, detector_resize."""
    thr = st.detector.box_threshold if box_threshold is None else box_threshold
    bank = st.clap.bank()
    names = st.clap.labels()
    if k > bank.shape[0]:
        raise InputError(f"k={k} is larger than the label bank ({bank.shape[0]} labels)")
    emb = st.clap.embeddings(audio, sample_rate, len(frames))
    prompts: list[dict[str, Any]] = []
    frame_boxes: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        idx, cos = top_labels(emb[i], bank, int(k))
        with st.timed("detector"):
            image, how = st.detector.image(frame)
        boxes, scores = [], []
        for j in idx:
            b, s = st.detector.detect(image, int(j), thr)
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
    todo = [i for i, b in enumerate(frame_boxes) if len(b)]
    embs = st.sam.embeddings([frames[i] for i in todo])
    for i, e in zip(todo, embs, strict=True):
        masks[i] = st.sam.box_masks(e, frames[i].shape[:2], frame_boxes[i])
    return [
        FrameOutput(m, np.asarray(p["box_scores"], np.float32), p)
        for m, p in zip(masks, prompts, strict=True)
    ]


MODE = ModeSpec(
    name="box",
    graphs=BOX_GRAPHS,
    optional_graphs=SAM_OPTIONAL,
    stages=("clap", "detector", "sam"),
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
