"""Mode ``no-prompt`` (spec sam4avs-reference 4.5): SAM's automatic masks, each scored against the audio.

Each automatic mask (:class:`runtime.sam.amg.AutomaticMaskGenerator`, SAM's defaults) is cut out on a
black background, cropped to its box, scored with AudioCLIP (softmax over the masks of 100 x cosine
between the crop's CLIP global embedding and the audio embedding); masks scoring > 0.5 are united.

Presets: ``sam4avs`` reproduces the reference, quirks included: crops one pixel short (SAM's XYWH
width x1 - x0), zero-size crops skipped *with* the index shift of the reference (the wrong mask can
be selected), the ``"reference"`` frame policy, and the reference's audio: 48 kHz, 1-s chunks not
tiled, int16 round trip, through the ``audioclip_audio_1s`` graph (its manifest entry gives
``num_samples`` and ``sample_rate``). ``default`` corrects these: crops to the mask's full extent,
empty masks skipped without shifting indices, the frame at its own size, the standard tiled
44.1 kHz audio. No automatic mask, or only zero-size crops, give an empty mask (``empty_reason``).

``grid="audio"`` (not in the paper, nor in the reference): a sparse segment-everything. SAM is
prompted only at the grid points where the frame's AudioCLIP heatmap (the point modes' map,
:func:`runtime.modes.heatmap_sam.heatmaps`) is high: the top ``grid_keep`` fraction of the points, or
those >= ``grid_threshold``. The rest (SAM's filters, NMS, the audio scoring) is unchanged; the
decoder, most of No-Prompt's time, runs on that fraction of the prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from runtime.errors import InputError
from runtime.modes.common import (
    FRAME_POLICIES,
    HEATMAP_GRAPHS,
    SAM_GRAPHS,
    SAM_OPTIONAL,
)
from runtime.modes.spec import ModeSpec, Param
from runtime.preprocess.resize import nearest_exact
from runtime.prompting.heatmap import l2_normalize
from runtime.prompting.prompts import heatmap_point_filter
from runtime.result import EMPTY_REASON, FrameOutput
from runtime.stages.audio import REFERENCE_1S_GRAPH

NO_PROMPT_AUDIO = ("clip", "reference-1s")
GRIDS = ("full", "audio")
NATIVE_WHY = "No-Prompt (automatic masks at the frame's size)"


def no_prompt_audio_embeddings(
    st, audio, sample_rate: int | None, num_frames: int, *, source: str = "clip"
) -> np.ndarray:
    """AudioCLIP embeddings for No-Prompt, one per frame: float32 [F, D] (not normalised).

    source ``"clip"``: the standard ``audioclip_audio`` input (44.1 kHz, each 1-s chunk tiled to
    5 s, x the preset's ``audio_input_scale``). ``"reference-1s"``: the reference's No-Prompt
    loader (:meth:`runtime.stages.audio.AudioStage.reference_1s_embeddings`: 48 kHz, one untiled
    1-s chunk per frame, int16 round trip, x the preset's ``audio_input_scale``).
    """
    if source == "clip":
        return st.audio.embeddings(audio, sample_rate, num_frames)
    if source != "reference-1s":
        raise InputError(f"audio must be one of {NO_PROMPT_AUDIO} or None (preset), got {source!r}")
    return st.audio.reference_1s_embeddings(audio, sample_rate, num_frames)


def _crop(frame: np.ndarray, rec: dict[str, Any], quirk: bool) -> np.ndarray | None:
    """The mask's pixels on black, cropped to its box; None for a zero-size (or, default, empty) crop."""
    seg = rec["segmentation"]
    x, y, bw, bh = (int(v) for v in rec["bbox"])
    if quirk:  # PIL crop (x, y, x + w, y + h) with SAM's w = x1 - x0: last row and column dropped
        x1, y1 = x + bw, y + bh
    else:
        if not seg.any():
            return None
        x1, y1 = x + bw + 1, y + bh + 1
    if x1 <= x or y1 <= y:
        return None
    sub = frame[y:y1, x:x1]
    return np.where(seg[y:y1, x:x1, None], sub, np.uint8(0))


def score_masks(
    st,
    frame: np.ndarray,
    records: Sequence[dict[str, Any]],
    audio_embedding: np.ndarray,
    *,
    quirk: bool = False,
    score_threshold: float = 0.5,
    logit_scale: float = 100.0,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """No-Prompt's retrieval (spec 4.5): which automatic masks sound, and their union.

    frame: uint8 [H, W, 3] RGB; records: SAM-style mask records (``segmentation`` bool [H, W],
    ``bbox`` [x, y, w, h] with w = x1 - x0 of the inclusive box); audio_embedding: float [D] of
    the frame's audio chunk. Each mask's pixels are copied onto black and cropped to its box,
    CLIP-preprocessed (``audioclip_image`` ``global`` output), and
    score = softmax over the candidates of logit_scale * cos(crop, audio). Masks with score >
    score_threshold are united.

    quirk False: crops span the mask's full extent; empty masks are skipped and the scores stay
    aligned with their masks. quirk True (the reference): crops drop the last row and column,
    zero-size crops are skipped and the remaining scores are applied to the masks by position
    (the reference's index shift).
    Returns (mask bool [H, W], scores float32 [K] of the K cropped candidates (in crop order),
    selected record indices).
    """
    h, w = frame.shape[:2]
    crops: list[np.ndarray] = []
    owner: list[int] = []
    for j, rec in enumerate(records):
        c = _crop(frame, rec, quirk)
        if c is not None:
            crops.append(c)
            owner.append(j)
    mask = np.zeros((h, w), dtype=bool)
    if not crops:
        return mask, np.zeros(0, np.float32), []
    img = l2_normalize(st.image.global_features(crops), axis=1)
    aud = l2_normalize(np.asarray(audio_embedding, np.float32).reshape(1, -1), axis=1)
    logits = np.float32(logit_scale) * (img @ aud[0])
    e = np.exp(logits - logits.max())
    scores = (e / e.sum()).astype(np.float32)
    picked = [int(k) for k in np.flatnonzero(scores > np.float32(score_threshold))]
    selected = picked if quirk else [owner[k] for k in picked]
    for j in selected:
        mask |= records[j]["segmentation"]
    return mask, scores, selected


def segment_no_prompt(
    st,
    frames: Sequence[np.ndarray],
    audio_emb: np.ndarray,
    *,
    amg: dict[str, Any] | None = None,
    quirk: bool = False,
    score_threshold: float = 0.5,
    logit_scale: float = 100.0,
    frame_policy: str = "native",
    grid_maps: np.ndarray | None = None,
    grid_keep: float | None = 0.1,
    grid_threshold: float | None = None,
    sam_frames: Sequence[np.ndarray] | None = None,
) -> list[FrameOutput]:
    """No-Prompt on given audio embeddings (spec 4.5): automatic masks scored by AudioCLIP.

    frames: N uint8 [H, W, 3] RGB (both sides >= the SAM patch size); audio_emb: float [N, D],
    one AudioCLIP embedding per frame (:func:`no_prompt_audio_embeddings`); amg: overrides of
    :class:`runtime.sam.amg.AmgConfig`; quirk, score_threshold, logit_scale: see :func:`score_masks`;
    frame_policy: ``"native"`` (automatic masks on the frame at its size) or ``"reference"`` (on the
    frame squashed to 224 x 224, the union brought back by nearest sampling).
    grid_maps: None (SAM's full point grid) or float [N, S, S] heatmaps of the squashed frames
    (:func:`runtime.modes.heatmap_sam.heatmaps`): only the grid points where the map is high are
    prompted, the top ``grid_keep`` fraction, or (when given) those >= ``grid_threshold``
    (:func:`runtime.prompting.prompts.heatmap_point_filter`).
    Returns one FrameOutput per frame: mask bool [H, W] (all False when SAM finds no mask or no
    crop scores above the threshold); score float32 [K] (the softmax scores of the K candidates);
    prompt: ``boxes`` int64 [M, 4] (SAM's XYWH boxes of the M automatic masks, pixels of the SAM
    input ``sam_input_hw``), ``predicted_iou`` [M], ``selected`` (record indices), ``num_masks``,
    ``num_points`` (prompted grid points). sam_frames: the frames SAM sees, when the caller has them
    (``st.sam.frames``).
    """
    frames = list(frames)
    a = np.asarray(audio_emb)
    if a.ndim != 2 or a.shape[0] != len(frames) or a.dtype.kind != "f":
        raise InputError(f"audio_emb must be float [{len(frames)}, D], got {a.dtype} {a.shape}")
    if frame_policy not in FRAME_POLICIES:
        raise InputError(f"frame_policy must be one of {FRAME_POLICIES}, got {frame_policy!r}")
    if grid_maps is not None:
        gm = np.asarray(grid_maps)
        if gm.ndim != 3 or gm.shape[0] != len(frames) or gm.dtype.kind != "f":
            raise InputError(
                f"grid_maps must be float [{len(frames)}, S, S] (one heatmap per frame), "
                f"got {gm.dtype} {gm.shape}"
            )
        if grid_threshold is not None:
            grid_keep = None
    config = st.sam.amg_config(amg)
    sam_in = (
        st.sam.frames(frames, frame_policy, NATIVE_WHY) if sam_frames is None else list(sam_frames)
    )
    embs = st.sam.embeddings(sam_in)
    out: list[FrameOutput] = []
    for i, (frame, sf) in enumerate(zip(frames, sam_in, strict=True)):
        audio_filter = (
            None
            if grid_maps is None
            else heatmap_point_filter(gm[i], sf.shape[:2], keep=grid_keep, threshold=grid_threshold)
        )
        prompted = [0]

        def point_filter(
            points: np.ndarray, audio_filter=audio_filter, prompted=prompted
        ) -> np.ndarray:
            flags = np.ones(points.shape[0], bool) if audio_filter is None else audio_filter(points)
            prompted[0] += int(np.count_nonzero(flags))
            return flags

        records = st.sam.generate(sf, embs[i], config, point_filter=point_filter)
        with st.timed("crop_scoring"):
            mask, sc, sel = score_masks(
                st,
                sf,
                records,
                a[i],
                quirk=quirk,
                score_threshold=score_threshold,
                logit_scale=logit_scale,
            )
        rec: dict[str, Any] = {
            "boxes": np.array([r["bbox"] for r in records], dtype=np.int64).reshape(-1, 4),
            "predicted_iou": np.array([r["predicted_iou"] for r in records], dtype=np.float32),
            "selected": sel,
            "num_masks": len(records),
            "sam_input_hw": tuple(int(v) for v in sf.shape[:2]),
            "num_points": prompted[0],
        }
        if not records:
            rec[EMPTY_REASON] = "the automatic mask generator found no mask"
        elif sc.size == 0:
            rec[EMPTY_REASON] = "every automatic mask gave a zero-size crop"
        elif not sel:
            rec[EMPTY_REASON] = f"no mask scored above {score_threshold}"
        out.append(FrameOutput(nearest_exact(mask, frame.shape[:2]), sc, rec))
    return out


def run_no_prompt(
    st,
    frames,
    audio,
    sample_rate,
    *,
    amg=None,
    score_threshold=0.5,
    logit_scale=100.0,
    quirk=None,
    audio_source=None,
    frame_policy=None,
    grid="full",
    grid_keep=0.1,
    grid_threshold=None,
):
    """No-Prompt end to end: audio embeddings, automatic masks, crop scoring (module docstring)."""
    q = st.quirks(quirk)
    policy = st.frame_policy(frame_policy)
    source = audio_source if audio_source is not None else ("reference-1s" if q else "clip")
    st.sam.amg_config(amg)  # fail before the heavy work
    sam_in = st.sam.frames(frames, policy, NATIVE_WHY)
    emb = no_prompt_audio_embeddings(st, audio, sample_rate, len(frames), source=source)
    maps = None
    if grid == "audio":
        heat_emb = emb if source == "clip" else st.audio.embeddings(audio, sample_rate, len(frames))
        maps = st.image.heatmaps(frames, heat_emb)
    out = segment_no_prompt(
        st,
        frames,
        emb,
        amg=amg,
        quirk=q,
        score_threshold=score_threshold,
        logit_scale=logit_scale,
        frame_policy=policy,
        grid_maps=maps,
        grid_keep=grid_keep,
        grid_threshold=grid_threshold,
        sam_frames=sam_in,
    )
    for o in out:
        o.prompt["audio_source"] = source
        o.prompt["frame_policy"] = policy
        o.prompt["grid"] = grid
    return out


MODE = ModeSpec(
    name="no-prompt",
    graphs=HEATMAP_GRAPHS + SAM_GRAPHS,
    optional_graphs=(REFERENCE_1S_GRAPH, *SAM_OPTIONAL, "sam_point_iou", "sam_mask_upscaler"),
    stages=("audio", "image", "sam"),
    run=run_no_prompt,
    params=(
        Param(
            "amg",
            None,
            "dict",
            "AutomaticMaskGenerator overrides, e.g. {'points_per_side': 16}",
            nullable=True,
        ),
        Param(
            "score_threshold",
            0.5,
            "float",
            "softmax score above which a mask sounds",
            low=0.0,
            high=1.0,
            open_high=True,
        ),
        Param(
            "logit_scale", 100.0, "float", "softmax temperature x cosine", low=0.0, open_low=True
        ),
        Param(
            "quirk",
            None,
            "bool",
            "the reference's crops and index shift (None: the preset's)",
            nullable=True,
        ),
        Param(
            "audio_source",
            None,
            "str",
            "'clip' (44.1 kHz tiled) or 'reference-1s' (None: the preset's)",
            choices=NO_PROMPT_AUDIO,
            nullable=True,
        ),
        Param(
            "frame_policy",
            None,
            "str",
            "'native' or 'reference' (None: the preset's)",
            choices=FRAME_POLICIES,
            nullable=True,
        ),
        Param(
            "grid",
            "full",
            "str",
            "'full' (SAM's point grid) or 'audio' (only where the audio heatmap is high)",
            choices=GRIDS,
        ),
        Param(
            "grid_keep",
            0.1,
            "float",
            "grid='audio': fraction of the grid points prompted (highest heatmap)",
            low=0.0,
            high=1.0,
            open_low=True,
        ),
        Param(
            "grid_threshold",
            None,
            "float",
            "grid='audio': prompt points with heatmap >= this instead",
            low=0.0,
            high=1.0,
            nullable=True,
        ),
    ),
    presets=("audio_input_scale", "image_antialias", "zero_shot_quirks"),
    score_kind="softmax scores of the K cropped automatic masks float32 [K]",
    doc="No-Prompt: SAM's automatic masks, each crop scored against the audio by AudioCLIP (softmax > 0.5).",
)
