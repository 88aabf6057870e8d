"""Automatic mask generation ("segment everything") in numpy, as segment_anything's SamAutomaticMaskGenerator.

Used by the No-Prompt mode (spec sam4avs-reference 4.5), which runs the generator with all its
defaults. The algorithm, step by step as SAM does it:

1. Crop boxes: the whole image, plus ``crop_n_layers`` layers of 2^i x 2^i overlapping crops.
2. Per crop: one image embedding; a regular ``n x n`` point grid (cell centres, scaled to the crop,
   n = points_per_side / downscale^layer); the grid goes through the prompt decoder in batches of
   ``points_per_batch`` prompt sets (one foreground point each, multimask: 3 masks per point).
3. Per batch: keep masks with predicted IoU > ``pred_iou_thresh``; upscale their logits to the crop
   size (SAM's ``postprocess_masks``); stability score = #(logits > thr + offset) /
   #(logits > thr - offset), keep >= ``stability_score_thresh``; binarise (> thr); XYXY boxes
   (inclusive max pixel index; [0, 0, 0, 0] for an empty mask); drop boxes within 20 px of a crop
   edge that is not an image edge.
4. Per crop: greedy box NMS (IoU > ``box_nms_thresh`` suppressed) in descending predicted-IoU
   order; boxes and points are moved back to image coordinates.
5. Across crops (only with more than one crop): NMS with score 1 / crop area (smaller crops win),
   IoU > ``crop_nms_thresh``.

Only the masks that pass the IoU filter are upscaled (SAM upscales all of them first); the results
are the same because the filter and the upscaling act on each mask separately.

NMS follows torchvision's CPU ``nms``: boxes as float32, area (x1 - x0) * (y1 - y0), IoU computed
in float32 and compared with the threshold in float64, score ties kept in index order (stable).
torchvision's ``batched_nms`` switches to another path above 1,000 boxes whose final sort is not
stable, so SAM may list exact score ties in a different order there; the set of masks is the same.

Records (the ``output_mode="binary_mask"`` format of SAM), in NMS order:
``segmentation`` bool [H, W]; ``area`` int; ``bbox`` [x, y, w, h] ints with w = x1 - x0 and
h = y1 - y0 from the inclusive XYXY box (SAM's convention, one less than the pixel extent: the
reference's crops therefore drop the mask's last row and column, spec 4.8); ``predicted_iou``
float; ``stability_score`` float; ``point_coords`` [[x, y]] floats (image pixels); ``crop_box``
[x, y, w, h] ints (exclusive XYXY crop box converted, so w, h are the crop's size). (SAM itself
returns ``bbox`` and ``crop_box`` as floats when, with crop layers, some crop kept no mask: its
empty tensors are float and promote the concatenation; the values are the same.)

Memory: kept masks are stored bit-packed (1 bit per pixel) until the records are written, and the
upscaled float32 logits are made at most ``_CHUNK_ELEMENTS`` values at a time.

Coordinates: (x, y) pixels of the image, x along the width, origin top-left. numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from runtime.budget import checkpoint
from runtime.errors import InputError

__all__ = [
    "AmgConfig",
    "AutomaticMaskGenerator",
    "batched_mask_to_box",
    "box_nms",
    "build_point_grid",
    "generate_crop_boxes",
    "generate_masks",
    "stability_score",
]

# predict_fn(point_coords float64 [B, 1, 2], point_labels int64 [B, 1]) -> (raw [B, M, ...], iou [B, M])
PredictFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
# upscale_fn(raw [K, ...]) -> logits float32 [K, crop_h, crop_w]
UpscaleFn = Callable[[np.ndarray], np.ndarray]
# point_filter(points float64 [N, 2] (x, y) image pixels) -> bool [N]: which grid points to prompt
PointFilter = Callable[[np.ndarray], np.ndarray]
CropBox = tuple[int, int, int, int]


@dataclass(frozen=True)
class AmgConfig:
    """SamAutomaticMaskGenerator's parameters, with its defaults (the ones Sam4AVS uses).

    ``min_mask_region_area`` > 0 (OpenCV hole/island removal) and output modes other than
    ``binary_mask`` are not supported and are rejected. ``mask_threshold`` is SAM's logit threshold.
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    output_mode: str = "binary_mask"
    mask_threshold: float = 0.0

    def __post_init__(self) -> None:
        for name in ("points_per_side", "points_per_batch", "crop_n_points_downscale_factor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InputError(f"{name} must be a positive int, got {v!r}")
        for name in ("crop_n_layers", "min_mask_region_area"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise InputError(f"{name} must be a non-negative int, got {v!r}")
        for name in (
            "pred_iou_thresh",
            "stability_score_thresh",
            "stability_score_offset",
            "box_nms_thresh",
            "crop_nms_thresh",
            "crop_overlap_ratio",
            "mask_threshold",
        ):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float, np.integer, np.floating))
                or not math.isfinite(float(v))
            ):
                raise InputError(f"{name} must be a finite number, got {v!r}")
        if self.min_mask_region_area > 0:
            raise InputError(
                "min_mask_region_area > 0 (small-region removal) is not supported; use 0 "
                "(SAM's default, the one Sam4AVS uses)"
            )
        if self.output_mode != "binary_mask":
            raise InputError(f"output_mode must be 'binary_mask', got {self.output_mode!r}")
        if int(self.points_per_side / self.crop_n_points_downscale_factor**self.crop_n_layers) < 1:
            raise InputError(
                "points_per_side / crop_n_points_downscale_factor ** crop_n_layers must "
                "leave at least one point per side"
            )


# --- geometry --------------------------------------------------------------------------------------


def build_point_grid(n_per_side: int) -> np.ndarray:
    """Regular grid of cell centres in [0, 1]^2: float64 [n^2, 2] (x, y), x varying fastest."""
    if (
        isinstance(n_per_side, bool)
        or not isinstance(n_per_side, (int, np.integer))
        or n_per_side < 1
    ):
        raise InputError(f"n_per_side must be a positive int, got {n_per_side!r}")
    off = 1.0 / (2 * n_per_side)
    side = np.linspace(off, 1.0 - off, n_per_side)
    xs = np.broadcast_to(side[None, :], (n_per_side, n_per_side))
    ys = np.broadcast_to(side[:, None], (n_per_side, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def generate_crop_boxes(
    image_hw: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[CropBox], list[int]]:
    """Crop boxes (x0, y0, x1, y1), exclusive ends, image pixels, and their layer index.

    Layer 0 is the whole image; layer i >= 1 has 2^i x 2^i crops overlapping by
    ``int(overlap_ratio * short_side * 2 / 2^i)`` pixels, listed x-major as SAM does.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    short = min(h, w)
    boxes: list[CropBox] = [(0, 0, w, h)]
    layers = [0]
    for i in range(n_layers):
        per_side = 2 ** (i + 1)
        overlap = int(overlap_ratio * short * (2 / per_side))
        cw = int(math.ceil((overlap * (per_side - 1) + w) / per_side))
        ch = int(math.ceil((overlap * (per_side - 1) + h) / per_side))
        xs = [int((cw - overlap) * k) for k in range(per_side)]
        ys = [int((ch - overlap) * k) for k in range(per_side)]
        for x0 in xs:
            for y0 in ys:
                boxes.append((x0, y0, min(x0 + cw, w), min(y0 + ch, h)))
                layers.append(i + 1)
    return boxes, layers


def batched_mask_to_box(masks: np.ndarray) -> np.ndarray:
    """XYXY boxes of bool masks [K, H, W] -> int64 [K, 4], inclusive max indices, [0, 0, 0, 0] if empty."""
    m = np.asarray(masks, dtype=bool)
    if m.ndim != 3:
        raise InputError(f"masks must be bool [K, H, W], got shape {m.shape}")
    k, h, w = m.shape
    out = np.zeros((k, 4), dtype=np.int64)
    if k == 0 or h == 0 or w == 0:
        return out
    rows = m.any(axis=2)  # [K, H]
    cols = m.any(axis=1)  # [K, W]
    nonempty = rows.any(axis=1)
    out[:, 0] = np.argmax(cols, axis=1)
    out[:, 1] = np.argmax(rows, axis=1)
    out[:, 2] = w - 1 - np.argmax(cols[:, ::-1], axis=1)
    out[:, 3] = h - 1 - np.argmax(rows[:, ::-1], axis=1)
    out[~nonempty] = 0
    return out


def stability_score(logits: np.ndarray, mask_threshold: float, offset: float) -> np.ndarray:
    """IoU of the masks thresholded at thr + offset and thr - offset: float32 [K] (NaN for 0 / 0).

    logits: float [K, H, W] mask logits at the output resolution. Counts are exact integers; the
    ratio is taken in float32 as SAM does.
    """
    lg = np.asarray(logits)
    if lg.ndim != 3 or lg.dtype.kind != "f":
        raise InputError(f"logits must be float [K, H, W], got dtype {lg.dtype}, shape {lg.shape}")
    hi = np.float32(float(mask_threshold) + float(offset))
    lo = np.float32(float(mask_threshold) - float(offset))
    inter = np.count_nonzero(lg > hi, axis=(1, 2)).astype(np.float32)
    union = np.count_nonzero(lg > lo, axis=(1, 2)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (inter / union).astype(np.float32)


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
    """Greedy NMS as torchvision's CPU ``nms``: indices kept, int64 [K], by descending score.

    boxes: [N, 4] XYXY (x0, y0, x1, y1), computed in float32; scores: [N] float. A box is suppressed
    when its IoU with a kept, higher-ranked box is > iou_thresh. Equal scores keep index order.
    Zero-area boxes give 0 / 0 = NaN IoU and are never suppressed (as in torchvision).
    """
    b = np.asarray(boxes, dtype=np.float32)
    s = np.asarray(scores)
    if b.ndim != 2 or b.shape[1] != 4 or s.shape != (b.shape[0],):
        raise InputError(f"boxes must be [N, 4] and scores [N], got {b.shape} and {s.shape}")
    if b.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-s.astype(np.float64), kind="stable")
    x0, y0, x1, y1 = (np.ascontiguousarray(b[:, i]) for i in range(4))
    areas = (x1 - x0) * (y1 - y0)
    thr = float(iou_thresh)
    keep = []
    rest = order
    with np.errstate(divide="ignore", invalid="ignore"):
        while rest.size:
            i = rest[0]
            keep.append(i)
            others = rest[1:]
            if others.size == 0:
                break
            ww = np.maximum(
                np.float32(0), np.minimum(x1[i], x1[others]) - np.maximum(x0[i], x0[others])
            )
            hh = np.maximum(
                np.float32(0), np.minimum(y1[i], y1[others]) - np.maximum(y0[i], y0[others])
            )
            inter = ww * hh
            iou = inter / (areas[i] + areas[others] - inter)
            rest = others[~(iou.astype(np.float64) > thr)]
    return np.asarray(keep, dtype=np.int64)


def _near_crop_edge(
    boxes: np.ndarray, crop_box: CropBox, image_hw: tuple[int, int], atol: float = 20.0
) -> np.ndarray:
    """Boxes (crop coordinates, XYXY) within atol of a crop edge that is not an image edge: bool [K]."""
    x0, y0 = crop_box[0], crop_box[1]
    b = boxes.astype(np.float64) + np.array([x0, y0, x0, y0], dtype=np.float64)
    crop = np.asarray(crop_box, dtype=np.float64)
    img = np.array([0, 0, image_hw[1], image_hw[0]], dtype=np.float64)
    near_crop = np.abs(b - crop) <= atol
    near_img = np.abs(b - img) <= atol
    return np.any(near_crop & ~near_img, axis=1)


def _xyxy_to_xywh(box) -> list:
    x0, y0, x1, y1 = (v.item() if hasattr(v, "item") else v for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


# --- the generator ---------------------------------------------------------------------------------


@dataclass
class _CropMasks:
    """The masks one crop keeps after its NMS, in NMS order; boxes and points in image pixels."""

    packed: np.ndarray  # uint8 [K, ceil(crop_h * crop_w / 8)]: np.packbits of the bool masks
    boxes: np.ndarray  # int64 [K, 4] XYXY (inclusive)
    iou: np.ndarray  # float32 [K]
    stability: np.ndarray  # float32 [K]
    points: np.ndarray  # float64 [K, 2]
    hw: tuple[int, int]  # (crop_h, crop_w)

    def mask(self, i: int) -> np.ndarray:
        h, w = self.hw
        return np.unpackbits(self.packed[i], count=h * w).reshape(h, w).astype(bool)


def _check_batch_outputs(raw, iou, b: int) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(raw)
    iou = np.asarray(iou)
    if iou.ndim != 2 or iou.shape[0] != b or iou.dtype.kind != "f":
        raise InputError(
            f"predict_fn must return iou float [{b}, M], got dtype {iou.dtype}, shape {iou.shape}"
        )
    if raw.ndim < 3 or raw.shape[:2] != iou.shape or raw.dtype.kind != "f":
        raise InputError(
            f"predict_fn must return float mask logits [{b}, {iou.shape[1]}, ...], "
            f"got dtype {raw.dtype}, shape {raw.shape}"
        )
    return raw, iou


_CHUNK_ELEMENTS = 1 << 25  # upscaled float32 logits held at once: 128 MiB


def _filter_masks(
    cfg: AmgConfig,
    crop_box: CropBox,
    image_hw: tuple[int, int],
    raw: np.ndarray,
    upscale_fn: UpscaleFn | None,
) -> tuple[np.ndarray, ...]:
    """Stability filter, binarisation, boxes and crop-edge filter for masks that passed the IoU filter.

    raw: [K, ...] decoder output of the survivors. Returns (index into raw, packed masks uint8
    [k, ceil(ch * cw / 8)], boxes int64 [k, 4], stability float32 [k]); the upscaled logits are
    made ``_CHUNK_ELEMENTS`` at a time.
    """
    ch, cw = crop_box[3] - crop_box[1], crop_box[2] - crop_box[0]
    thr = float(cfg.mask_threshold)
    step = max(1, _CHUNK_ELEMENTS // (ch * cw))
    idx, packed, boxes, stabs = [], [], [], []
    for a in range(0, raw.shape[0], step):
        part = raw[a : a + step]
        logits = np.asarray(part if upscale_fn is None else upscale_fn(part))
        if logits.shape != (part.shape[0], ch, cw) or logits.dtype.kind != "f":
            raise InputError(
                f"mask logits must be float [K, {ch}, {cw}] (the crop's size), got "
                f"dtype {logits.dtype}, shape {logits.shape}"
            )
        stab = stability_score(logits, thr, cfg.stability_score_offset)
        keep = np.ones(part.shape[0], dtype=bool)
        if cfg.stability_score_thresh > 0.0:
            with np.errstate(invalid="ignore"):
                keep = stab >= np.float32(cfg.stability_score_thresh)
        binary = logits[keep] > np.float32(thr)
        del logits
        bx = batched_mask_to_box(binary)
        inner = ~_near_crop_edge(bx, crop_box, image_hw)
        idx.append(a + np.flatnonzero(keep)[inner])
        packed.append(np.packbits(binary[inner].reshape(int(inner.sum()), ch * cw), axis=1))
        boxes.append(bx[inner])
        stabs.append(stab[keep][inner])
    return (
        np.concatenate(idx),
        np.concatenate(packed),
        np.concatenate(boxes),
        np.concatenate(stabs),
    )


def _grid_points(
    cfg: AmgConfig, crop_box: CropBox, layer: int, point_filter: PointFilter | None
) -> np.ndarray:
    """The crop's prompt points, float64 [N, 2] (x, y) crop pixels, after ``point_filter``."""
    cx0, cy0, cx1, cy1 = crop_box
    n_side = int(cfg.points_per_side / cfg.crop_n_points_downscale_factor**layer)
    points = build_point_grid(n_side) * np.array([[cx1 - cx0, cy1 - cy0]], dtype=np.float64)
    if point_filter is None:
        return points
    keep = np.asarray(point_filter(points + np.array([[cx0, cy0]], dtype=np.float64)))
    if keep.shape != (points.shape[0],) or keep.dtype != bool:
        raise InputError(
            f"point_filter must return bool [{points.shape[0]}] (one flag per grid point), "
            f"got dtype {keep.dtype}, shape {keep.shape}"
        )
    return points[keep]


def _process_crop(
    cfg: AmgConfig,
    crop_box: CropBox,
    layer: int,
    image_hw: tuple[int, int],
    predict_fn: PredictFn,
    upscale_fn: UpscaleFn | None,
    point_filter: PointFilter | None = None,
) -> _CropMasks:
    cx0, cy0, cx1, cy1 = crop_box
    ch, cw = cy1 - cy0, cx1 - cx0
    points = _grid_points(cfg, crop_box, layer, point_filter)
    packed, boxes, ious, stabs, pts = [], [], [], [], []
    for a in range(0, points.shape[0], cfg.points_per_batch):
        p = points[a : a + cfg.points_per_batch]
        b = p.shape[0]
        checkpoint("an automatic-mask point batch")
        raw, iou = predict_fn(p[:, None, :].copy(), np.ones((b, 1), dtype=np.int64))
        raw, iou = _check_batch_outputs(raw, iou, b)
        m = iou.shape[1]
        raw = raw.reshape((b * m,) + raw.shape[2:])  # mask j of point i at i * m + j, as SAM
        iou = iou.reshape(-1).astype(np.float32)
        p_rep = np.repeat(p, m, axis=0)
        if cfg.pred_iou_thresh > 0.0:
            keep = np.flatnonzero(iou > np.float32(cfg.pred_iou_thresh))
            raw, iou, p_rep = raw[keep], iou[keep], p_rep[keep]
        if raw.shape[0] == 0:
            continue
        idx, pk, bx, stab = _filter_masks(cfg, crop_box, image_hw, raw, upscale_fn)
        packed.append(pk)
        boxes.append(bx)
        ious.append(iou[idx])
        stabs.append(stab)
        pts.append(p_rep[idx])
    boxes_a = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.int64)
    if boxes_a.shape[0] == 0:
        return _CropMasks(
            np.zeros((0, (ch * cw + 7) // 8), np.uint8),
            boxes_a,
            np.zeros(0, np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, 2), np.float64),
            (ch, cw),
        )
    ious_a = np.concatenate(ious)
    keep = box_nms(boxes_a, ious_a, cfg.box_nms_thresh)
    offset = np.array([cx0, cy0], dtype=np.int64)
    return _CropMasks(
        packed=np.concatenate(packed)[keep],
        boxes=boxes_a[keep] + np.concatenate([offset, offset])[None],
        iou=ious_a[keep],
        stability=np.concatenate(stabs)[keep],
        points=np.concatenate(pts)[keep] + offset[None].astype(np.float64),
        hw=(ch, cw),
    )


def _check_image_hw(image_hw) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in image_hw)
    except (TypeError, ValueError):
        raise InputError(
            f"image_hw must be a (height, width) pair of positive ints, got {image_hw!r}"
        ) from None
    if h < 1 or w < 1:
        raise InputError(
            f"image_hw must be a (height, width) pair of positive ints, got {image_hw!r}"
        )
    return h, w


def generate_masks(
    image_hw: tuple[int, int],
    predictor_for_crop: Callable[[CropBox], tuple[PredictFn, UpscaleFn | None]],
    config: AmgConfig | None = None,
    point_filter: PointFilter | None = None,
) -> list[dict[str, Any]]:
    """Automatic masks of an image of size ``image_hw`` = (H, W), through any SAM decoder.

    predictor_for_crop(crop_box) is called once per crop box (x0, y0, x1, y1 image pixels, exclusive
    ends; the whole image first) and returns (predict_fn, upscale_fn) for the crop
    ``image[y0:y1, x0:x1]`` (compute its image embedding there):

    * predict_fn(point_coords float64 [B, 1, 2], point_labels int64 [B, 1] (all 1)) -> (raw, iou):
      one prompt set per point, (x, y) pixels of the crop, B <= points_per_batch, all in one
      decoder call; raw float [B, M, ...] mask logits, iou float [B, M] predicted IoU (M = 3 for
      SAM's multimask output).
    * upscale_fn(raw [K, ...]) -> float32 [K, crop_h, crop_w] logits at the crop's size, applied
      only to the masks that pass the IoU filter; ``None`` when raw already is [B, M, crop_h,
      crop_w] logits.

    point_filter(points float64 [N, 2], (x, y) image pixels) -> bool [N]: prompt only the grid
    points it flags (a sparse segment-everything; None: SAM's full grid). Everything after the
    decoder is SAM's, on the masks of the points kept.

    Returns SAM's records (see the module docstring), [] when no mask survives.
    """
    cfg = config if config is not None else AmgConfig()
    if not isinstance(cfg, AmgConfig):
        raise InputError(f"config must be an AmgConfig, got {type(cfg).__name__}")
    h, w = _check_image_hw(image_hw)
    crop_boxes, layers = generate_crop_boxes((h, w), cfg.crop_n_layers, cfg.crop_overlap_ratio)
    per_crop: list[tuple[CropBox, _CropMasks]] = []
    for crop_box, layer in zip(crop_boxes, layers, strict=True):
        predict_fn, upscale_fn = predictor_for_crop(crop_box)
        per_crop.append(
            (
                crop_box,
                _process_crop(cfg, crop_box, layer, (h, w), predict_fn, upscale_fn, point_filter),
            )
        )

    # Flatten in crop order.
    entries = [(cb, cm, i) for cb, cm in per_crop for i in range(cm.boxes.shape[0])]
    if not entries:
        return []
    if len(crop_boxes) > 1:
        boxes = np.concatenate([cm.boxes for _, cm in per_crop])
        crop_xyxy = np.array([cb for cb, _, _ in entries], dtype=np.int64)
        area = ((crop_xyxy[:, 2] - crop_xyxy[:, 0]) * (crop_xyxy[:, 3] - crop_xyxy[:, 1])).astype(
            np.float32
        )
        keep = box_nms(boxes, np.float32(1.0) / area, cfg.crop_nms_thresh)
        entries = [entries[i] for i in keep]

    records = []
    for cb, cm, i in entries:
        x0, y0, x1, y1 = cb
        seg = cm.mask(i)
        if (x0, y0, x1, y1) != (0, 0, w, h):
            full = np.zeros((h, w), dtype=bool)
            full[y0:y1, x0:x1] = seg
            seg = full
        records.append(
            {
                "segmentation": seg,
                "area": int(np.count_nonzero(seg)),
                "bbox": _xyxy_to_xywh(cm.boxes[i]),
                "predicted_iou": float(cm.iou[i]),
                "point_coords": [cm.points[i].tolist()],
                "stability_score": float(cm.stability[i]),
                "crop_box": _xyxy_to_xywh(cb),
            }
        )
    return records


class AutomaticMaskGenerator:
    """SamAutomaticMaskGenerator on a :class:`runtime.sam.predictor.SamRunner` (two onnxruntime sessions).

    runner: a ``SamRunner`` (uses its ``embed``, ``decode``, ``image_size``, ``low_res_size`` and
    ``mask_threshold``); the remaining keyword arguments are :class:`AmgConfig` fields (SAM's
    defaults), or pass ``config``. The decoder gets ``points_per_batch`` prompt sets per call
    (further split at the runner's ``max_prompts``); only masks that pass the IoU filter are
    upscaled to the crop size. With the runner's two decoder halves (``sam_point_iou``,
    ``sam_mask_upscaler``) and ``pred_iou_thresh > 0``, the decoder's own mask half (output
    upscaling and mask product) also runs only for prompt sets with a multimask IoU above the
    threshold: the masks that can pass are computed by the same operations, the others are never
    made (the same records, exactly).
    """

    def __init__(self, runner, config: AmgConfig | None = None, **overrides) -> None:
        for attr in ("embed", "predict_low_res", "upscale", "mask_threshold"):
            if not hasattr(runner, attr):
                raise InputError(
                    f"runner must be a runtime.sam.predictor.SamRunner (missing {attr!r})"
                )
        if config is not None and overrides:
            raise InputError("give either config or keyword overrides, not both")
        if config is None:
            names = {f.name for f in fields(AmgConfig)}
            unknown = sorted(set(overrides) - names)
            if unknown:
                raise InputError(f"unknown AMG parameters {unknown}; known: {sorted(names)}")
            overrides.setdefault("mask_threshold", float(runner.mask_threshold))
            config = AmgConfig(**overrides)
        self.runner = runner
        self.config = config

    def _predictor_for(self, image: np.ndarray, embedding: np.ndarray | None):
        runner = self.runner
        h, w = image.shape[:2]
        thresh = float(self.config.pred_iou_thresh)

        def for_crop(crop_box: CropBox):
            x0, y0, x1, y1 = crop_box
            crop = np.ascontiguousarray(image[y0:y1, x0:x1])
            crop_hw = crop.shape[:2]
            if embedding is not None and crop_box == (0, 0, w, h):
                emb = embedding
            else:
                (emb,) = runner.embed([crop])

            def predict_fn(coords: np.ndarray, labels: np.ndarray):
                # SamPredictor.predict_torch, multimask: the three masks of tokens 1..3
                if thresh > 0.0 and getattr(runner, "has_iou_first", False):
                    # IoU first: masks only for prompt sets whose IoU can pass the filter
                    iou, low = runner.predict_low_res_iou_first(
                        emb, crop_hw, coords, labels, thresh
                    )
                else:
                    iou, low = runner.predict_low_res(
                        emb, crop_hw, coords, labels, multimask_output=True
                    )
                return low, iou

            def upscale_fn(low: np.ndarray) -> np.ndarray:
                return runner.upscale(low, crop_hw, return_logits=True)

            return predict_fn, upscale_fn

        return for_crop

    def generate(
        self,
        image: np.ndarray,
        embedding: np.ndarray | None = None,
        point_filter: PointFilter | None = None,
    ) -> list[dict[str, Any]]:
        """Masks of one uint8 [H, W, 3] RGB frame; SAM's records (module docstring), [] if none.

        embedding: the frame's own SAM embedding (float32 [1, C, g, g] from ``runner.embed``) when
        already computed; the whole-frame crop then reuses it instead of encoding the frame again.
        point_filter: which grid points to prompt (see :func:`generate_masks`); None: all.
        """
        if (
            not isinstance(image, np.ndarray)
            or image.dtype != np.uint8
            or image.ndim != 3
            or image.shape[2] != 3
        ):
            raise InputError(
                f"image must be a uint8 array [H, W, 3] (RGB), got "
                f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}"
            )
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise InputError(f"image must have a non-zero size, got shape {image.shape}")
        return generate_masks(
            image.shape[:2], self._predictor_for(image, embedding), self.config, point_filter
        )
