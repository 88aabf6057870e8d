"""SAM prompted from AudioCLIP heatmaps (spec sam4avs-reference 4.0-4.4): the heatmaps and the shared
heatmap -> prompt -> SAM path of the point modes and Heatmap-Box.

The heatmap is the reference's: AudioCLIP audio embedding of the frame's 1-s chunk
(``audioclip_audio``, L2-normalised) against the CLIP-Surgery dense tokens (``audioclip_image``
output ``surgery_dense``) of the frame squashed to S x S (S = 224), min-max normalised, bilinearly
upsampled to S x S; ``1 - cosine`` when the preset's ``heatmap_reverse`` is set. Heatmap pixel
(u, v) is frame point (u * W / S, v * H / S).

Frame policies (what SAM sees):

* ``"reference"`` (preset ``sam4avs``): SAM gets the squashed S x S frame, the prompts are the
  heatmap's coordinates unchanged, and SAM's mask is brought to the frame's size by nearest
  (pixel-centre) sampling. For 224 x 224 frames (AVSBench) this is exactly the reference.
* ``"native"`` (preset ``default``): SAM runs on the frame at its own size; each prompt is scaled
  from heatmap pixels to frame pixels (points: (u * W / S, v * H / S); an inclusive box keeps its
  pixel extent: x0 -> x0 * W / S, x1 -> (x1 + 1) * W / S - 1); masks at SAM's full resolution.

Of SAM's three masks the one with the highest predicted IoU is kept (``max_score``). Where the
reference crashes or produces NaN (no box above t, no prompt point, a constant heatmap) the mask is
empty and the prompt says why (``empty_reason``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from runtime.errors import InputError
from runtime.modes.common import FRAME_POLICIES, map_box, map_points, threshold
from runtime.preprocess.resize import nearest_exact
from runtime.prompting.prompts import (
    BOX_STRATEGIES,
    dense_points,
    heatmap_boxes,
    peak_points,
    select_max_score,
    top_points,
)
from runtime.result import EMPTY_REASON, FrameOutput

HEATMAP_STRATEGIES = ("point-global", "point-local", "point-dense", "heatmap-box")
NATIVE_WHY = "the 'native' frame policy (SAM at the frame's size)"


def heatmaps(
    st, frames: Sequence[np.ndarray], audio, sample_rate: int | None, *, reverse: bool | None = None
) -> np.ndarray:
    """Audio-image heatmaps of a clip, one per frame (spec 4.0): float32 [N, S, S] in [0, 1].

    st: stages with ``audio`` and ``image``; frames: N uint8 [H, W, 3] RGB frames; audio: WAV path or
    array with ``sample_rate`` (frame k gets second k). The map covers the whole frame squashed to
    S x S (pixel (row, col) of the map = pixel (row, col) of the squashed frame). ``reverse``:
    ``1 - cosine`` (None: the preset's ``heatmap_reverse``). A frame whose similarities are all equal
    gives an all-zero map.
    """
    emb = st.audio.embeddings(audio, sample_rate, len(frames))
    return st.image.heatmaps(frames, emb, reverse=reverse)


def _choose_prompt(
    sm: np.ndarray,
    strategy: str,
    t: float | None,
    quirk: bool,
    max_points: int | None,
    box_strategy: str,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "strategy": strategy,
        "threshold": t,
        "points": None,
        "labels": None,
        "box": None,
    }
    if float(sm.max()) == float(sm.min()):
        rec[EMPTY_REASON] = "constant heatmap (no location information)"
    elif strategy == "heatmap-box":
        boxes = heatmap_boxes(sm, t, box_strategy, quirk=quirk)
        rec["box_strategy"] = box_strategy
        if boxes.shape[0] == 0:
            rec[EMPTY_REASON] = f"no heatmap pixel >= {t}"
        else:
            rec["boxes_xyxy"] = boxes.astype(np.float64)
    else:
        if strategy == "point-global":
            coords, labels = top_points(sm)
        elif strategy == "point-local":
            coords, labels = peak_points(sm, t, quirk=quirk)
        else:
            coords, labels = dense_points(sm, t, max_points)
        if coords.shape[0] == 0:
            rec[EMPTY_REASON] = "no prompt point"
        else:
            rec["points"], rec["labels"] = coords, labels
    return rec


def segment_from_heatmaps(
    st,
    frames: Sequence[np.ndarray],
    maps: np.ndarray,
    strategy: str,
    *,
    t: float | None = None,
    quirk: bool = False,
    frame_policy: str = "native",
    max_points: int | None = None,
    box_strategy: str = "single_maxarea",
    sam_frames: Sequence[np.ndarray] | None = None,
) -> list[FrameOutput]:
    """SAM masks from given heatmaps with one prompt strategy (spec 4.1-4.4).

    st: stages with ``image`` and ``sam``; frames: N uint8 [H, W, 3] RGB frames; maps: float [N, S, S] heatmaps of the squashed frames
    (:func:`heatmaps`); strategy: one of :data:`HEATMAP_STRATEGIES`; t: its threshold (ignored by
    ``point-global``; required by the others); quirk: ``point-local``'s (col, col) points, and
    ``heatmap-box``'s reference edge cases (``runtime.prompting.prompts.heatmap_boxes``); frame_policy:
    ``"native"`` or ``"reference"`` (module docstring); max_points: ``point-dense``'s cap per sign
    (None: half the cells); box_strategy: ``heatmap-box``'s, one of ``runtime.prompting.prompts.BOX_STRATEGIES``.
    sam_frames: the frames SAM sees (``st.sam.frames(frames, frame_policy, ...)``) when the caller
    has them already. With several boxes (``multi_box``) SAM is prompted with each box, keeps its best mask per box,
    and the masks are OR-ed (the reference's loop).

    Returns one FrameOutput per frame: mask bool [H, W]; score float32 [1] = the chosen mask's
    predicted IoU (one per box with ``multi_box``), or [0] when no prompt was made; prompt: ``points``
    float64 [K, 2] (x, y) and ``labels`` int64 [K] (1 foreground, 0 background), or ``boxes_xyxy``
    float64 [K, 4] (x0, y0, x1, y1) with ``box`` (the box when K == 1, else None) and ``box_strategy``, in
    frame pixels (heatmap coordinates scaled by W / S, H / S; under the ``"reference"`` policy SAM got
    them unscaled on the squashed frame); ``mask_index``, ``iou``, ``sam_input_hw``, and
    ``empty_reason`` when the mask is empty without asking SAM.
    """
    if strategy not in HEATMAP_STRATEGIES:
        raise InputError(f"strategy must be one of {HEATMAP_STRATEGIES}, got {strategy!r}")
    if frame_policy not in FRAME_POLICIES:
        raise InputError(f"frame_policy must be one of {FRAME_POLICIES}, got {frame_policy!r}")
    frames = list(frames)
    m = np.asarray(maps)
    s = st.image.size
    if m.dtype.kind != "f" or m.shape != (len(frames), s, s):
        raise InputError(
            f"maps must be float [{len(frames)}, {s}, {s}] (one CLIP-input heatmap per "
            f"frame), got dtype {m.dtype}, shape {m.shape}"
        )
    if not np.all(np.isfinite(m)):
        raise InputError("maps hold NaN/inf")
    if strategy != "point-global" and t is None:
        raise InputError(f"strategy {strategy!r} needs a threshold t")
    if sam_frames is None:
        sam_in = st.sam.frames(frames, frame_policy, NATIVE_WHY)
    else:
        sam_in = list(sam_frames)
        if len(sam_in) != len(frames):
            raise InputError(f"sam_frames must hold {len(frames)} frames, got {len(sam_in)}")
    with st.timed("prompts"):
        prompts = [_choose_prompt(sm, strategy, t, quirk, max_points, box_strategy) for sm in m]
    need = [i for i, p in enumerate(prompts) if EMPTY_REASON not in p]
    embs = st.sam.embeddings([sam_in[i] for i in need])
    emb_of = dict(zip(need, embs, strict=True))

    out: list[FrameOutput] = []
    for i, (frame, rec) in enumerate(zip(frames, prompts, strict=True)):
        hw = frame.shape[:2]
        sam_hw = sam_in[i].shape[:2]
        rec["sam_input_hw"] = tuple(int(v) for v in sam_hw)
        if i not in emb_of:
            rec["mask_index"], rec["iou"] = None, None
            out.append(FrameOutput(np.zeros(hw, dtype=bool), np.zeros(0, np.float32), rec))
            continue
        # heatmap pixels -> SAM input pixels (the squashed frame: identity; the frame: scaled)
        sx, sy = sam_hw[1] / s, sam_hw[0] / s
        fx, fy = hw[1] / s, hw[0] / s  # heatmap pixels -> frame pixels, for the record
        boxes = coords = labels = None
        if rec.get("boxes_xyxy") is not None:
            boxes = np.stack([map_box(b, sx, sy) for b in rec["boxes_xyxy"]])
            rec["boxes_xyxy"] = np.stack([map_box(b, fx, fy) for b in rec["boxes_xyxy"]])
            rec["box"] = rec["boxes_xyxy"][0] if len(rec["boxes_xyxy"]) == 1 else None
        else:
            coords, labels = map_points(rec["points"], sx, sy), rec["labels"]
            rec["points"] = map_points(rec["points"], fx, fy)
        masks, iou, _ = st.sam.predict(
            emb_of[i], sam_hw, coords, labels, boxes, multimask_output=True
        )
        picks = [select_max_score(masks[p], iou[p]) for p in range(masks.shape[0])]
        mask = np.logical_or.reduce([mk for mk, _ in picks])  # one prompt set except multi_box
        if sam_hw != hw:
            mask = nearest_exact(mask, hw)
        ks = [int(k) for _, k in picks]
        ious = [float(iou[p, k]) for p, k in enumerate(ks)]
        rec["mask_index"], rec["iou"] = (ks[0], ious[0]) if len(ks) == 1 else (ks, ious)
        out.append(FrameOutput(mask, np.array(ious, np.float32), rec))
    return out


def box_strategy_for(box_strategy: str | None, dataset: str) -> str:
    """heatmap-box's ``box_strategy``: given, else the dataset's script (ms3: ``multi_box``, s4:
    ``single_maxarea``)."""
    if box_strategy is None:
        return "multi_box" if dataset == "ms3" else "single_maxarea"
    if box_strategy not in BOX_STRATEGIES:
        raise InputError(
            f"box_strategy must be one of {BOX_STRATEGIES} or None (the dataset's: "
            f"s4 single_maxarea, ms3 multi_box), got {box_strategy!r}"
        )
    return box_strategy


def run_strategy(
    strategy: str,
    st,
    frames,
    audio,
    sample_rate,
    *,
    reverse=None,
    frame_policy=None,
    t=None,
    dataset="s4",
    quirk=None,
    max_points=None,
    box_strategy=None,
) -> list[FrameOutput]:
    """A heatmap strategy end to end: heatmaps -> prompts -> SAM (the run function of its mode)."""
    policy = st.frame_policy(frame_policy)
    thr = threshold(strategy, t, dataset)
    peak_quirk = st.quirks(quirk) if strategy in ("point-local", "heatmap-box") else False
    boxes = (
        box_strategy_for(box_strategy, dataset) if strategy == "heatmap-box" else "single_maxarea"
    )
    sam_in = st.sam.frames(frames, policy, NATIVE_WHY)  # checked before the heavy work
    maps = heatmaps(st, frames, audio, sample_rate, reverse=reverse)
    out = segment_from_heatmaps(
        st,
        frames,
        maps,
        strategy,
        t=thr,
        quirk=peak_quirk,
        frame_policy=policy,
        max_points=max_points,
        box_strategy=boxes,
        sam_frames=sam_in,
    )
    for o in out:
        o.prompt["frame_policy"] = policy
    return out
