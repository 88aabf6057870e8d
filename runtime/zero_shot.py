"""Zero-shot modes: SAM prompted by AudioCLIP (spec sam4avs-reference 4.0-4.5, 4.8).

Modes registered into :data:`runtime.modes.MODES`:

* ``point-global`` (4.1): the heatmap's argmax pixel (foreground) and argmin pixel (background).
* ``point-local`` (4.2): strict 4-neighbour peaks above t (foreground) and pits below 1 - t
  (background); t = 0.6 (S4) / 0.65 (MS3).
* ``point-dense`` (4.3): the num highest / lowest cells of the 32x32 downsampled heatmap;
  t = 0.85 (S4) / 0.7 (MS3).
* ``heatmap-box`` (4.4): boxes of the 8-connected heatmap regions >= t; t = 0.55. ``box_strategy``
  (``runtime.prompts.heatmap_boxes``): ``single_maxarea`` (the largest region; the S4 script),
  ``multi_box`` (every region, SAM masks OR-ed; the MS3 script, chosen by ``dataset="ms3"``),
  ``single_maxscore`` (the region of the heatmap's argmax), ``total_box`` (all regions' bounding box).
* ``no-prompt`` (4.5): SAM's automatic mask generator; each mask is cut out on a black background,
  cropped to its box, scored with AudioCLIP (softmax over the masks of 100 * cosine between the
  crop's CLIP global embedding and the audio embedding); masks scoring > 0.5 are united.

The heatmap (point and box modes) is the reference's: AudioCLIP audio embedding of the frame's
1-s chunk (``audioclip_audio``, L2-normalised) against the CLIP-Surgery dense tokens
(``audioclip_image`` output ``surgery_dense``) of the CLIP-preprocessed frame (squashed, below),
min-max normalised, bilinearly upsampled to the CLIP input size (224 x 224); ``1 - cosine`` when
the preset's ``heatmap_reverse`` is set. SAM runs through :class:`runtime.sam.SamRunner`, built once
per pipeline (:func:`sam_runner`); the frames of the clip are encoded in one encoder batch (up to
``max_batch``, default 5) and each embedding is reused by every prompt of its frame; of SAM's three
masks the one with the highest predicted IoU is kept (``max_score``).

Frame sizes. The CLIP models always see the frame squashed to 224 x 224 (``Pipeline.clip_images(...,
squash=True)``: bilinear, aspect ratio ignored, rounded to uint8; antialiased unless the preset says
otherwise), the AVSBench convention that AVSBench's own frames already follow, so the heatmap covers
the whole frame: heatmap pixel (u, v) is frame point (u * W / 224, v * H / 224). ``frame_policy``
decides what SAM sees:

* ``"reference"`` (preset ``sam4avs``): SAM gets the same squashed 224 x 224 frame, the prompts are
  the heatmap's coordinates unchanged, and SAM's 224 x 224 mask is brought to the frame's size by
  nearest (pixel-centre) sampling. No-Prompt likewise runs on the squashed frame. For 224 x 224
  frames (AVSBench) nothing is resized and this is exactly the reference; for other sizes it is the
  reference run on the frame as AVSBench's preprocessing would have stored it.
* ``"native"`` (preset ``default``): SAM runs on the frame at its own size (one embedding per frame,
  longest side resized by SAM's own preprocessing), each prompt is scaled from heatmap pixels to
  frame pixels (points: (u * W / 224, v * H / 224); an inclusive box [x0, y0, x1, y1] keeps its
  pixel extent: x0 -> x0 * W / 224, x1 -> (x1 + 1) * W / 224 - 1), and the masks come out at the
  frame's size with SAM's full resolution. No-Prompt runs the automatic mask generator on the frame
  at its own size. Identical to ``"reference"`` for 224 x 224 frames.

Presets. ``sam4avs`` reproduces the reference, quirks included: audio without the x32768 scale and
the ``1 - cosine`` heatmap (preset constants), resizing without antialiasing, the (col, col)
peak points (``runtime.prompts.peak_points(quirk=True)``), the ``"reference"`` frame policy, and in
No-Prompt the crops one pixel short (SAM's XYWH width x1 - x0), zero-size crops skipped *with* the
index shift of the reference (the wrong mask can be selected), and the reference's audio: 48 kHz,
1-s chunks not tiled, int16 round trip (clip, x32767, truncate to int16, / 32767), fed to AudioCLIP
through the ``audioclip_audio_1s`` graph (an ``audioclip_audio`` export for 48,000-sample clips;
its manifest entry gives ``num_samples`` and ``sample_rate``). ``default`` corrects all of these:
audio x32768, 44.1 kHz, 5 tiled 1-s chunks (the standard ``audioclip_audio`` input), cosine
heatmap, antialiased resizing, pixel-centre peak points, the ``"native"`` frame policy, crops
to the mask's full extent, and empty masks skipped without shifting indices. Whether a preset uses
the reference's quirks comes from its manifest constant ``zero_shot_quirks`` (when a bundle lacks
it: true for the preset named ``sam4avs``); each quirk can be overridden by a mode parameter.

Where the reference crashes or produces NaN the runtime returns an empty (all-False) mask: no box
above t (``ValueError`` in the reference), no prompt point, a constant heatmap (the reference
divides 0 by 0; every strategy would otherwise prompt SAM with a meaningless point set, e.g.
50,176 points for ``point-local``), no automatic mask or only zero-size crops (``torch.stack`` of
an empty list). ``SegmentResult.prompts[i]`` says why.

Coordinates: (x, y) pixels, x along the width, origin at the top-left corner of the top-left
pixel; the centre of pixel (row r, col c) is (c + 0.5, r + 0.5). numpy + onnxruntime only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from runtime.amg import AmgConfig, generate_masks
from runtime.audio import chunk_per_frame, load_audio, short_clip_policy
from runtime.errors import InputError
from runtime.heatmap import audio_image_heatmap, l2_normalize
from runtime.image import squash_to_square
from runtime.pipeline import SegmentResult, _timed
from runtime.prompts import (
    BOX_STRATEGIES,
    dense_points,
    heatmap_boxes,
    peak_points,
    select_max_score,
    top_points,
)
from runtime.sam import SamRunner, apply_coords, get_preprocess_shape, postprocess_masks

__all__ = [
    "HEATMAP_STRATEGIES",
    "REFERENCE_1S_GRAPH",
    "THRESHOLDS",
    "heatmaps",
    "no_prompt_audio_embeddings",
    "sam_runner",
    "score_masks",
    "segment_from_heatmaps",
    "segment_no_prompt",
]

HEATMAP_STRATEGIES = ("point-global", "point-local", "point-dense", "heatmap-box")

# The paper's thresholds (spec 4.2-4.4): t per dataset and strategy.
THRESHOLDS: dict[str, dict[str, float]] = {
    "s4": {"point-local": 0.6, "point-dense": 0.85, "heatmap-box": 0.55},
    "ms3": {"point-local": 0.65, "point-dense": 0.7, "heatmap-box": 0.55},
}

REFERENCE_1S_GRAPH = "audioclip_audio_1s"
FRAME_POLICIES = ("native", "reference")
NO_PROMPT_AUDIO = ("clip", "reference-1s")
_CLIP_BATCH = 32  # crops per audioclip_image call
_RUNNER_ATTR = "_zero_shot_sam_runner"


# --- shared pieces -----------------------------------------------------------------------------------


def _default_sam_batch(pipe) -> int:
    info = pipe.session_info.get("sam_image_encoder")
    return 1 if info is None or info.provider == "CPUExecutionProvider" else 5


def sam_runner(pipe, *, max_batch: int | None = None) -> SamRunner:
    """The pipeline's :class:`SamRunner` (``sam_image_encoder`` + ``sam_prompt_decoder`` sessions and
    the manifest's ``preprocessing.sam`` constants), built on first use and cached on ``pipe``.

    max_batch: frames per encoder call. Default: 5 (an AVSBench clip in one batch) when the encoder
    runs on a GPU provider, 1 on the CPU, where batching gains nothing and the activations grow
    with the batch (ViT-B in onnxruntime: about 4 GB per 1024 px frame; a batch of 5 frames drove a
    24 GB machine out of memory). Given on a later call it changes the cached runner.
    """
    runner = getattr(pipe, _RUNNER_ATTR, None)
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise InputError(f"max_batch must be a positive int, got {max_batch!r}")
    if runner is not None and max_batch is not None:
        runner.max_batch = max_batch
    if runner is None:
        sam = pipe.manifest["preprocessing"].get("sam")
        if sam is None:
            raise InputError(f"bundle {pipe.bundle.root} has no SAM preprocessing constants "
                             "(manifest preprocessing.sam); rebuild it with the SAM graphs")
        runner = SamRunner(
            pipe.session("sam_image_encoder"), pipe.session("sam_prompt_decoder"),
            int(sam["image_size"]), sam["pixel_mean"], sam["pixel_std"],
            patch_size=int(sam["patch_size"]), mask_threshold=float(sam["mask_threshold"]),
            max_batch=max_batch or _default_sam_batch(pipe),
        )
        setattr(pipe, _RUNNER_ATTR, runner)
    return runner


def _quirks(pipe, override) -> bool:
    """Whether the reference's quirks apply: ``override``, else the preset's ``zero_shot_quirks``."""
    if override is not None:
        if not isinstance(override, (bool, np.bool_)):
            raise InputError(f"quirk switches must be True, False or None (preset), got {override!r}")
        return bool(override)
    if "zero_shot_quirks" in pipe.preset:
        return bool(pipe.preset["zero_shot_quirks"])
    return pipe.preset.get("name") == "sam4avs"


def _clip_size(pipe) -> int:
    return int(pipe.manifest["preprocessing"]["image"]["size"])


def _check_sam_frames(frames: Sequence[np.ndarray], patch: int, why: str) -> None:
    for i, f in enumerate(frames):
        if f.shape[0] < patch or f.shape[1] < patch:
            raise InputError(f"frame {i} is {f.shape[0]}x{f.shape[1]} px: {why} needs both sides >= "
                             f"the SAM patch size ({patch} px); upscale the frame, or use the "
                             "'reference' frame policy (SAM on the frame squashed to 224x224)")


def _map_points(coords: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """(x, y) points [K, 2] scaled to another frame size: (x * sx, y * sy), float64."""
    out = np.asarray(coords, dtype=np.float64).copy()
    out[:, 0] *= sx
    out[:, 1] *= sy
    return out


def _map_box(box: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Inclusive pixel box [x0, y0, x1, y1] scaled keeping its pixel extent: x1 -> (x1 + 1) * sx - 1."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([x0 * sx, y0 * sy, (x1 + 1.0) * sx - 1.0, (y1 + 1.0) * sy - 1.0], dtype=np.float64)


def _squash(pipe, frame: np.ndarray) -> np.ndarray:
    """The frame as the CLIP models see it: squashed to S x S (``runtime.image.squash_to_square``
    with the preset's antialiasing), uint8 [S, S, 3]; the frame itself when already S x S."""
    s = _clip_size(pipe)
    return squash_to_square(frame, s, antialias=bool(pipe.preset_value("image_antialias")))


def _nearest_to(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """bool [h, w] -> [H, W] by pixel-centre nearest sampling: src = floor((i + 0.5) * h / H)."""
    h, w = mask.shape
    oh, ow = hw
    if (h, w) == (oh, ow):
        return mask
    # float32 source positions, as PyTorch's "nearest-exact"
    rows = np.minimum(np.floor((np.arange(oh, dtype=np.float32) + np.float32(0.5)) * (np.float32(h) / np.float32(oh))).astype(np.int64), h - 1)
    cols = np.minimum(np.floor((np.arange(ow, dtype=np.float32) + np.float32(0.5)) * (np.float32(w) / np.float32(ow))).astype(np.int64), w - 1)
    return mask[rows[:, None], cols[None, :]]


# --- heatmaps ----------------------------------------------------------------------------------------


def heatmaps(pipe, frames: Sequence[np.ndarray], audio, sample_rate: int | None, *,
             reverse: bool | None = None, timings: dict[str, float] | None = None) -> np.ndarray:
    """Audio-image heatmaps of a clip, one per frame (spec 4.0): float32 [N, S, S] in [0, 1].

    frames: N uint8 [H, W, 3] RGB frames; audio: WAV path or array with ``sample_rate`` (frame k
    gets second k). S is CLIP's input size (224); the map covers the whole frame, squashed to
    S x S (pixel (row, col) of the map = pixel (row, col) of the squashed frame). ``reverse``:
    ``1 - cosine`` (None: the preset's ``heatmap_reverse``). A frame whose similarities are all
    equal gives an all-zero map.
    """
    timings = {} if timings is None else timings
    with _timed(timings, "audio"):
        emb = pipe.audio_embeddings(audio, sample_rate, len(frames))
    with _timed(timings, "image"):
        feats = pipe.image_features(pipe.clip_images(list(frames), squash=True))
    with _timed(timings, "heatmap"):
        rev = bool(pipe.preset_value("heatmap_reverse", reverse))
        s = _clip_size(pipe)
        return audio_image_heatmap(feats["surgery_dense"], emb, out_size=(s, s), reverse=rev)


def _threshold(mode: str, t, dataset: str) -> float | None:
    if mode == "point-global":
        return None
    if t is None:
        if dataset not in THRESHOLDS:
            raise InputError(f"dataset must be one of {sorted(THRESHOLDS)} (selects the paper's "
                             f"threshold), got {dataset!r}")
        return THRESHOLDS[dataset][mode]
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(t) <= 1.0:
        raise InputError(f"t must be a heatmap threshold in [0, 1] (or None for the {dataset!r} "
                         f"default), got {t!r}")
    return float(t)


def _frame_policy(pipe, frame_policy, quirks_flag: bool) -> str:
    if frame_policy is None:
        return "reference" if quirks_flag else "native"
    if frame_policy not in FRAME_POLICIES:
        raise InputError(f"frame_policy must be one of {FRAME_POLICIES} or None (preset), got {frame_policy!r}")
    return frame_policy


def segment_from_heatmaps(pipe, frames: Sequence[np.ndarray], maps: np.ndarray, strategy: str, *,
                          t: float | None = None, quirk: bool = False, frame_policy: str = "native",
                          max_points: int | None = None, box_strategy: str = "single_maxarea",
                          timings: dict[str, float] | None = None) -> SegmentResult:
    """SAM masks from given heatmaps with one prompt strategy (spec 4.1-4.4).

    frames: N uint8 [H, W, 3] RGB frames; maps: float [N, S, S] heatmaps of the squashed frames
    (:func:`heatmaps`); strategy: one of :data:`HEATMAP_STRATEGIES`; t: its threshold (ignored by
    ``point-global``; required by the others); quirk: ``point-local``'s (col, col) points, and
    ``heatmap-box``'s reference edge cases (``runtime.prompts.heatmap_boxes``); frame_policy:
    ``"native"`` or ``"reference"`` (module docstring); max_points: ``point-dense``'s cap per sign
    (None: half the cells); box_strategy: ``heatmap-box``'s, one of
    ``runtime.prompts.BOX_STRATEGIES``. With several boxes (``multi_box``) SAM is prompted with
    each box, keeps its best mask per box, and the masks are OR-ed (the reference's loop).

    Returns a :class:`SegmentResult` (mode/preset left empty): masks bool [H, W] per frame;
    scores float32 [1] = the chosen mask's predicted IoU, or [0] when no prompt was made;
    prompts per frame: ``points`` float64 [K, 2] (x, y) and ``labels`` int64 [K] (1 foreground,
    0 background) or ``box`` float64 [4] (x0, y0, x1, y1) with ``boxes`` float64 [K, 4] (every box;
    ``box`` is None when K != 1) and ``box_strategy``, in frame pixels (heatmap coordinates
    scaled by W / S, H / S; under the ``"reference"`` policy SAM got them unscaled on the squashed
    frame); ``mask_index``, ``iou``, ``sam_input_hw``, and ``empty_reason`` when the mask is empty
    without asking SAM.
    """
    if strategy not in HEATMAP_STRATEGIES:
        raise InputError(f"strategy must be one of {HEATMAP_STRATEGIES}, got {strategy!r}")
    if frame_policy not in FRAME_POLICIES:
        raise InputError(f"frame_policy must be one of {FRAME_POLICIES}, got {frame_policy!r}")
    timings = {} if timings is None else timings
    frames = list(frames)
    m = np.asarray(maps)
    s = _clip_size(pipe)
    if m.dtype.kind != "f" or m.shape != (len(frames), s, s):
        raise InputError(f"maps must be float [{len(frames)}, {s}, {s}] (one CLIP-input heatmap per "
                         f"frame), got dtype {m.dtype}, shape {m.shape}")
    if strategy != "point-global" and t is None:
        raise InputError(f"strategy {strategy!r} needs a threshold t")
    runner = sam_runner(pipe)

    with _timed(timings, "prompts"):
        prompts: list[dict[str, Any]] = []
        for i, sm in enumerate(m):
            rec: dict[str, Any] = {"strategy": strategy, "threshold": t, "points": None,
                                   "labels": None, "box": None}
            if not np.all(np.isfinite(sm)):
                raise InputError(f"maps[{i}] holds NaN/inf")
            if float(sm.max()) == float(sm.min()):
                rec["empty_reason"] = "constant heatmap (no location information)"
            elif strategy == "heatmap-box":
                boxes = heatmap_boxes(sm, t, box_strategy, quirk=quirk)
                rec["box_strategy"] = box_strategy
                if boxes.shape[0] == 0:
                    rec["empty_reason"] = f"no heatmap pixel >= {t}"
                else:
                    rec["boxes"] = boxes.astype(np.float64)
            else:
                if strategy == "point-global":
                    coords, labels = top_points(sm)
                elif strategy == "point-local":
                    coords, labels = peak_points(sm, t, quirk=quirk)
                else:
                    coords, labels = dense_points(sm, t, max_points)
                if coords.shape[0] == 0:
                    rec["empty_reason"] = "no prompt point"
                else:
                    rec["points"], rec["labels"] = coords, labels
            prompts.append(rec)

    if frame_policy == "reference":
        sam_frames = [_squash(pipe, f) for f in frames]
    else:
        _check_sam_frames(frames, runner.patch_size, "the 'native' frame policy (SAM at the frame's size)")
        sam_frames = frames
    need = [i for i, p in enumerate(prompts) if "empty_reason" not in p]
    with _timed(timings, "sam_encoder"):
        embs = runner.embed([sam_frames[i] for i in need]) if need else []
    emb_of = dict(zip(need, embs, strict=True))

    masks: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for i, (frame, rec) in enumerate(zip(frames, prompts, strict=True)):
        hw = frame.shape[:2]
        sam_hw = sam_frames[i].shape[:2]
        rec["sam_input_hw"] = tuple(int(v) for v in sam_hw)
        if i not in emb_of:
            masks.append(np.zeros(hw, dtype=bool))
            scores.append(np.zeros(0, np.float32))
            rec["mask_index"], rec["iou"] = None, None
            continue
        # heatmap pixels -> SAM input pixels (the squashed frame: identity; the frame: scaled)
        sx, sy = sam_hw[1] / s, sam_hw[0] / s
        fx, fy = hw[1] / s, hw[0] / s  # heatmap pixels -> frame pixels, for the record
        kw: dict[str, Any] = {}
        if rec.get("boxes") is not None:
            kw["boxes"] = np.stack([_map_box(b, sx, sy) for b in rec["boxes"]])
            rec["boxes"] = np.stack([_map_box(b, fx, fy) for b in rec["boxes"]])
            rec["box"] = rec["boxes"][0] if len(rec["boxes"]) == 1 else None
        else:
            kw["point_coords"] = _map_points(rec["points"], sx, sy)
            kw["point_labels"] = rec["labels"]
            rec["points"] = _map_points(rec["points"], fx, fy)
        with _timed(timings, "sam_decoder"):
            out, iou, _ = runner.predict(emb_of[i], sam_hw, multimask_output=True, **kw)
            picks = [select_max_score(out[p], iou[p]) for p in range(out.shape[0])]
            mask = np.logical_or.reduce([mk for mk, _ in picks])  # one prompt set except multi_box
        if sam_hw != hw:
            mask = _nearest_to(mask, hw)
        ks = [int(k) for _, k in picks]
        ious = [float(iou[p, k]) for p, k in enumerate(ks)]
        rec["mask_index"], rec["iou"] = (ks[0], ious[0]) if len(ks) == 1 else (ks, ious)
        masks.append(np.ascontiguousarray(mask))
        scores.append(np.array(ious, np.float32))
    return SegmentResult("", "", masks, scores=scores, prompts=prompts)


def _box_strategy(box_strategy, dataset) -> str:
    """heatmap-box's ``box_strategy``: given, else the dataset's script (ms3: ``multi_box``, s4:
    ``single_maxarea``)."""
    if box_strategy is None:
        return "multi_box" if dataset == "ms3" else "single_maxarea"
    if box_strategy not in BOX_STRATEGIES:
        raise InputError(f"box_strategy must be one of {BOX_STRATEGIES} or None (the dataset's: "
                         f"s4 single_maxarea, ms3 multi_box), got {box_strategy!r}")
    return box_strategy


def _run_heatmap_mode(strategy: str):
    def run(pipe, frames, audio, sample_rate, timings, *, reverse=None, frame_policy=None, t=None,
            dataset="s4", quirk=None, max_points=None, box_strategy=None):
        q = _quirks(pipe, None)
        policy = _frame_policy(pipe, frame_policy, q)
        thr = _threshold(strategy, t, dataset)
        peak_quirk = _quirks(pipe, quirk) if strategy in ("point-local", "heatmap-box") else False
        boxes = _box_strategy(box_strategy, dataset) if strategy == "heatmap-box" else "single_maxarea"
        if policy == "native":  # fail before the heavy work
            _check_sam_frames(frames, sam_runner(pipe).patch_size,
                              "the 'native' frame policy (SAM at the frame's size)")
        maps = heatmaps(pipe, frames, audio, sample_rate, reverse=reverse, timings=timings)
        res = segment_from_heatmaps(pipe, frames, maps, strategy, t=thr, quirk=peak_quirk,
                                    frame_policy=policy, max_points=max_points, box_strategy=boxes,
                                    timings=timings)
        for p in res.prompts:
            p["frame_policy"] = policy
        return res

    run.__name__ = "run_" + strategy.replace("-", "_")
    run.__doc__ = f"Zero-shot mode {strategy!r}: AudioCLIP heatmap -> SAM prompt (runtime.zero_shot)."
    return run


# --- No-Prompt ---------------------------------------------------------------------------------------


def no_prompt_audio_embeddings(pipe, audio, sample_rate: int | None, num_frames: int, *,
                               source: str = "clip") -> np.ndarray:
    """AudioCLIP embeddings for No-Prompt, one per frame: float32 [F, D] (not normalised).

    source ``"clip"``: the standard ``audioclip_audio`` input (44.1 kHz, each 1-s chunk tiled to
    5 s, x the preset's ``audio_input_scale``). ``"reference-1s"``: the reference's No-Prompt
    loader (spec 4.5): resampled to the ``audioclip_audio_1s`` graph's ``sample_rate`` (48 kHz),
    one untiled chunk of ``num_samples`` (48,000) per frame, int16 round trip (clip to [-1, 1],
    x32767, truncate to int16, / 32767), x the preset's ``audio_input_scale``.
    """
    if source == "clip":
        return pipe.audio_embeddings(audio, sample_rate, num_frames)
    if source != "reference-1s":
        raise InputError(f"audio must be one of {NO_PROMPT_AUDIO} or None (preset), got {source!r}")
    if not pipe.bundle.has(REFERENCE_1S_GRAPH):
        raise InputError(
            f"No-Prompt with the reference's audio (48 kHz, 1-s chunks; preset sam4avs) needs the graph "
            f"{REFERENCE_1S_GRAPH!r}, which bundle {pipe.bundle.root} lacks; rebuild the bundle with it, "
            f"or pass audio='clip' (the standard 44.1 kHz tiled input)")
    entry = pipe.bundle.graphs[REFERENCE_1S_GRAPH]
    n = entry["inputs"][0]["shape"][1]
    rate = entry.get("sample_rate")
    if not isinstance(n, int) or not isinstance(rate, int):
        raise InputError(f"graph {REFERENCE_1S_GRAPH!r} must have a fixed input length and a "
                         f"'sample_rate' in its manifest entry, got T={n!r}, sample_rate={rate!r}")
    x = load_audio(audio, sample_rate, rate)
    chunks = chunk_per_frame(x, rate, num_frames, chunk_seconds=n / rate, short_clip=short_clip_policy(pipe.preset))
    q = (np.clip(chunks, -1.0, 1.0) * np.float32(32767.0)).astype(np.int16)
    wav = (q / 32767.0).astype(np.float32) * np.float32(pipe.preset_value("audio_input_scale"))
    return pipe.session(REFERENCE_1S_GRAPH).run(None, {"waveform": wav})[0]


def _amg_factory(runner: SamRunner, frame: np.ndarray, embedding: np.ndarray):
    """generate_masks' predictor_for_crop on a precomputed full-frame embedding (other crops are
    encoded on demand); mirrors SamPredictor.predict_torch: one padding point per prompt set."""
    s = runner.image_size
    r = runner.low_res_size
    h, w = frame.shape[:2]

    def for_crop(crop_box):
        x0, y0, x1, y1 = crop_box
        if (x0, y0, x1, y1) == (0, 0, w, h):
            emb, crop_hw = embedding, (h, w)
        else:
            crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
            (emb,), crop_hw = runner.embed([crop]), crop.shape[:2]
        input_hw = get_preprocess_shape(crop_hw[0], crop_hw[1], s)

        def predict_fn(coords: np.ndarray, labels: np.ndarray):
            b = coords.shape[0]
            pts = np.concatenate([apply_coords(coords, crop_hw, s), np.zeros((b, 1, 2), np.float32)], axis=1)
            lab = np.concatenate([labels.astype(np.float32), -np.ones((b, 1), np.float32)], axis=1)
            iou, low = runner.decode(emb, pts, lab, np.zeros((b, 1, r, r), np.float32), np.zeros(1, np.float32))
            return low[:, 1:], iou[:, 1:]

        def upscale_fn(low: np.ndarray) -> np.ndarray:
            return postprocess_masks(low, input_hw, crop_hw, s)

        return predict_fn, upscale_fn

    return for_crop


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


def score_masks(pipe, frame: np.ndarray, records: Sequence[dict[str, Any]], audio_embedding: np.ndarray,
                *, quirk: bool = False, score_threshold: float = 0.5,
                logit_scale: float = 100.0) -> tuple[np.ndarray, np.ndarray, list[int]]:
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
    feats = []
    for a in range(0, len(crops), _CLIP_BATCH):
        feats.append(pipe.image_features(pipe.clip_images(crops[a:a + _CLIP_BATCH]))["global"])
    img = l2_normalize(np.concatenate(feats), axis=1)
    aud = l2_normalize(np.asarray(audio_embedding, np.float32).reshape(1, -1), axis=1)
    logits = np.float32(logit_scale) * (img @ aud[0])
    e = np.exp(logits - logits.max())
    scores = (e / e.sum()).astype(np.float32)
    picked = [int(k) for k in np.flatnonzero(scores > np.float32(score_threshold))]
    selected = picked if quirk else [owner[k] for k in picked]
    for j in selected:
        mask |= records[j]["segmentation"]
    return mask, scores, selected


def _no_prompt_config(runner: SamRunner, amg, score_threshold, logit_scale) -> AmgConfig:
    """Check No-Prompt's parameters; the AmgConfig (SAM's defaults + ``amg`` overrides)."""
    if isinstance(score_threshold, (bool, np.bool_)) or not isinstance(score_threshold, (int, float)) \
            or not 0.0 <= float(score_threshold) < 1.0:
        raise InputError(f"score_threshold must be a number in [0, 1), got {score_threshold!r}")
    if isinstance(logit_scale, (bool, np.bool_)) or not isinstance(logit_scale, (int, float)) \
            or not math.isfinite(logit_scale) or logit_scale <= 0:
        raise InputError(f"logit_scale must be a positive number, got {logit_scale!r}")
    if amg is not None and not isinstance(amg, dict):
        raise InputError(f"amg must be a dict of AmgConfig fields (e.g. {{'points_per_side': 16}}), "
                         f"got {type(amg).__name__}")
    names = {f.name for f in fields(AmgConfig)}
    unknown = sorted(set(amg or {}) - names)
    if unknown:
        raise InputError(f"unknown AMG parameters {unknown}; known: {sorted(names)}")
    return AmgConfig(**{"mask_threshold": runner.mask_threshold, **(amg or {})})


def segment_no_prompt(pipe, frames: Sequence[np.ndarray], audio_emb: np.ndarray, *,
                      amg: dict[str, Any] | None = None, quirk: bool = False,
                      score_threshold: float = 0.5, logit_scale: float = 100.0,
                      frame_policy: str = "native",
                      timings: dict[str, float] | None = None) -> SegmentResult:
    """No-Prompt on given audio embeddings (spec 4.5): automatic masks scored by AudioCLIP.

    frames: N uint8 [H, W, 3] RGB (both sides >= the SAM patch size); audio_emb: float [N, D],
    one AudioCLIP embedding per frame (:func:`no_prompt_audio_embeddings`); amg: overrides of
    :class:`runtime.amg.AmgConfig` (SAM's defaults otherwise, as the reference); quirk,
    score_threshold, logit_scale: see :func:`score_masks`; frame_policy: ``"native"`` (automatic
    masks on the frame at its size) or ``"reference"`` (on the frame squashed to 224 x 224, the
    union brought back to the frame's size by nearest sampling). All frames are encoded in one SAM
    encoder batch. Returns a :class:`SegmentResult`: masks bool [H, W] (all False when SAM finds
    no mask or no crop scores above the threshold); scores float32 [K] per frame (the softmax
    scores of the K candidates); prompts per frame: ``boxes`` int64 [M, 4] (SAM's XYWH boxes of the
    M automatic masks, pixels of the SAM input ``sam_input_hw``), ``predicted_iou`` [M],
    ``selected`` (record indices), ``num_masks``.
    """
    timings = {} if timings is None else timings
    frames = list(frames)
    a = np.asarray(audio_emb)
    if a.ndim != 2 or a.shape[0] != len(frames) or a.dtype.kind != "f":
        raise InputError(f"audio_emb must be float [{len(frames)}, D], got {a.dtype} {a.shape}")
    runner = sam_runner(pipe)
    cfg = _no_prompt_config(runner, amg, score_threshold, logit_scale)
    if frame_policy not in FRAME_POLICIES:
        raise InputError(f"frame_policy must be one of {FRAME_POLICIES}, got {frame_policy!r}")
    if frame_policy == "reference":
        sam_frames = [_squash(pipe, f) for f in frames]
    else:
        _check_sam_frames(frames, runner.patch_size, "No-Prompt (automatic masks at the frame's size)")
        sam_frames = frames

    with _timed(timings, "sam_encoder"):
        embs = runner.embed(sam_frames)
    masks, scores, prompts = [], [], []
    for i, (frame, sf) in enumerate(zip(frames, sam_frames, strict=True)):
        with _timed(timings, "amg"):
            records = generate_masks(sf.shape[:2], _amg_factory(runner, sf, embs[i]), cfg)
        with _timed(timings, "crop_scoring"):
            mask, sc, sel = score_masks(pipe, sf, records, a[i], quirk=quirk,
                                        score_threshold=score_threshold, logit_scale=logit_scale)
        masks.append(np.ascontiguousarray(_nearest_to(mask, frame.shape[:2])))
        scores.append(sc)
        rec: dict[str, Any] = {
            "boxes": np.array([r["bbox"] for r in records], dtype=np.int64).reshape(-1, 4),
            "predicted_iou": np.array([r["predicted_iou"] for r in records], dtype=np.float32),
            "selected": sel, "num_masks": len(records), "sam_input_hw": tuple(int(v) for v in sf.shape[:2]),
        }
        if not records:
            rec["empty_reason"] = "the automatic mask generator found no mask"
        elif sc.size == 0:
            rec["empty_reason"] = "every automatic mask gave a zero-size crop"
        elif not sel:
            rec["empty_reason"] = f"no mask scored above {score_threshold}"
        prompts.append(rec)
    return SegmentResult("", "", masks, scores=scores, prompts=prompts)


def run_no_prompt(pipe, frames, audio, sample_rate, timings, *, amg=None, score_threshold=0.5,
                  logit_scale=100.0, quirk=None, audio_source=None, frame_policy=None):
    """Zero-shot mode ``no-prompt``: automatic SAM masks scored against the audio by AudioCLIP."""
    q = _quirks(pipe, quirk)
    policy = _frame_policy(pipe, frame_policy, _quirks(pipe, None))
    source = audio_source if audio_source is not None else ("reference-1s" if q else "clip")
    if source not in NO_PROMPT_AUDIO:
        raise InputError(f"audio_source must be one of {NO_PROMPT_AUDIO} or None (preset), got {source!r}")
    runner = sam_runner(pipe)
    _no_prompt_config(runner, amg, score_threshold, logit_scale)  # fail before the heavy work
    if policy == "native":
        _check_sam_frames(frames, runner.patch_size, "No-Prompt (automatic masks at the frame's size)")
    with _timed(timings, "audio"):
        emb = no_prompt_audio_embeddings(pipe, audio, sample_rate, len(frames), source=source)
    res = segment_no_prompt(pipe, frames, emb, amg=amg, quirk=q, score_threshold=score_threshold,
                            logit_scale=logit_scale, frame_policy=policy, timings=timings)
    for p in res.prompts:
        p["audio_source"] = source
        p["frame_policy"] = policy
    return res


# --- registration ------------------------------------------------------------------------------------
# Imported here, after every definition: runtime.modes imports this module (and runtime.box_prompt,
# which imports sam_runner from here) at its end, so either import order works.
from runtime.modes import MODES, ModeSpec  # noqa: E402

_SAM = ("sam_image_encoder", "sam_prompt_decoder")
_HEATMAP_GRAPHS = ("audioclip_audio", "audioclip_image") + _SAM
_COMMON = {"reverse": None, "frame_policy": None}

MODES.update({
    "point-global": ModeSpec(
        graphs=_HEATMAP_GRAPHS, run=_run_heatmap_mode("point-global"), params=dict(_COMMON),
        doc="Zero-shot Point-Prompt (global): heatmap argmax (+) and argmin (-) points -> SAM.",
    ),
    "point-local": ModeSpec(
        graphs=_HEATMAP_GRAPHS, run=_run_heatmap_mode("point-local"),
        params={**_COMMON, "t": None, "dataset": "s4", "quirk": None},
        doc="Zero-shot Point-Prompt (local): heatmap peaks > t (+) and pits < 1 - t (-) -> SAM; "
            "t = 0.6 (s4) / 0.65 (ms3).",
    ),
    "point-dense": ModeSpec(
        graphs=_HEATMAP_GRAPHS, run=_run_heatmap_mode("point-dense"),
        params={**_COMMON, "t": None, "dataset": "s4", "max_points": None},
        doc="Zero-shot Point-Prompt (dense): the num highest (+) / lowest (-) 7x7 heatmap cells -> "
            "SAM; t = 0.85 (s4) / 0.7 (ms3).",
    ),
    "heatmap-box": ModeSpec(
        graphs=_HEATMAP_GRAPHS, run=_run_heatmap_mode("heatmap-box"),
        params={**_COMMON, "t": None, "dataset": "s4", "box_strategy": None, "quirk": None},
        doc="Zero-shot Heatmap-Box: box(es) of the heatmap regions >= t (0.55) -> SAM; box_strategy "
            "single_maxarea (s4 default), multi_box (ms3 default), single_maxscore or total_box.",
    ),
    "no-prompt": ModeSpec(
        graphs=_HEATMAP_GRAPHS, run=run_no_prompt,
        params={"amg": None, "score_threshold": 0.5, "logit_scale": 100.0, "quirk": None,
                "audio_source": None, "frame_policy": None},
        doc="Zero-shot No-Prompt: SAM's automatic masks, each crop scored against the audio by "
            "AudioCLIP (softmax over masks > 0.5).",
    ),
})
