"""The one loop over an AVSBench split: every video through a :class:`~evaluation.predictors.Predictor`,
one metric batch per video (5 frames; S4 train: frame 1 only), like every script of the paper.

Writes ``per_video_{kind}_{split}.jsonl`` (one JSON object per video) and, when asked, the predicted
masks as PNGs and 50 % overlays.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from evaluation.metrics import MetricAccumulator, frame_miou, miou_terms
from evaluation.predictors import Predictor, VideoOutcome
from models import avsbench
from runtime.errors import InputError

__all__ = ["KIND_LABEL", "check_kinds_split", "evaluate_split"]

KIND_LABEL = {"s4": "S4", "ms3": "MS3"}


def check_kinds_split(kinds: Sequence[str], split: str) -> list[str]:
    """The AVSBench kinds to evaluate (in order, once each), after checking them and ``split``."""
    if isinstance(kinds, str):
        kinds = [kinds]
    kinds = list(dict.fromkeys(kinds))
    bad = [k for k in kinds if k not in avsbench.KINDS]
    if not kinds or bad:
        raise InputError(f"kinds must be a non-empty list of {avsbench.KINDS}, got {list(kinds)}")
    if split not in avsbench.SPLITS:
        raise InputError(f"split must be one of {avsbench.SPLITS}, got {split!r}")
    return kinds


def _bar(it, total: int, desc: str, enabled: bool):
    if not enabled:
        return it
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the export/dev/video extras
        return it
    return tqdm(it, total=total, desc=desc, unit="video", dynamic_ncols=True, file=sys.stderr)


def _save_pngs(
    out: Path,
    kind: str,
    rec: avsbench.VideoRecord,
    masks: Sequence[np.ndarray],
    *,
    save_masks: bool,
    save_overlays: bool,
) -> None:
    colour = np.array([255, 40, 40], np.float32)
    frames = [avsbench.load_frame(p) for p in rec.frames] if save_overlays else [None] * len(masks)
    for k, (f, m) in enumerate(zip(frames, masks, strict=True), start=1):
        if save_masks:
            d = out / "masks" / kind / rec.name
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(m.astype(np.uint8) * 255).save(d / f"{rec.name}_{k}.png")
        if save_overlays:
            d = out / "overlays" / kind / rec.name
            d.mkdir(parents=True, exist_ok=True)
            blend = f.astype(np.float32)
            blend[m] = 0.5 * blend[m] + 0.5 * colour
            Image.fromarray(np.clip(np.round(blend), 0, 255).astype(np.uint8)).save(
                d / f"{rec.name}_{k}.png"
            )


def _row(kind: str, split: str, rec: avsbench.VideoRecord, r, o: VideoOutcome, gts) -> dict:
    """The per-video JSON line (without ``timings_ms``, added once the metrics are timed)."""
    return {
        "kind": kind,
        "split": split,
        "name": rec.name,
        "category": rec.category,
        "miou": r.miou,
        "fscore": r.fscore,
        "frames": r.frames,
        "empty_gt_frames": r.empty_gt_frames,
        "mask_frames": list(rec.mask_frames),
        "frame_miou": [float(x) for x in frame_miou(o.pred, gts)],
        "frame_iou_avsbench": [float(x) for x in miou_terms(o.pred, gts)],
        "mask_coverage": [float(m.mean()) for m in o.masks],
    }


def evaluate_split(
    predictor: Predictor,
    data_root: str | Path,
    kind: str,
    *,
    split: str = "test",
    params: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    max_videos: int | None = None,
    save_masks: bool = False,
    save_overlays: bool = False,
    progress: bool = True,
    concurrency: int = 1,
) -> dict[str, Any]:
    """Evaluate ``predictor`` on one AVSBench split (``kind`` "s4" / "ms3", ``split`` "train" / "val" /
    "test"); one metric batch per video.

    ``params``: mode parameters handed to every ``predict``. ``concurrency``: videos predicted at once
    (worker threads; a served predictor keeps that many requests in flight); metrics are computed in
    the split's order whatever it is. Checks every file of the split first (FileNotFoundError naming
    the first missing one). With ``out`` writes ``out/per_video_{kind}_{split}.jsonl`` (and masks /
    overlays when asked). Returns {"kind", "split", "params", "videos", "videos_in_split", "complete",
    "frames", "empty_gt_frames", "miou", "fscore" (means over videos, fractions in [0, 1]),
    "timings_ms" (stage -> mean ms per video), "providers", "resized_to_gt", "per_video_file"}.
    """
    if kind not in avsbench.KINDS:
        raise InputError(f"kind must be one of {avsbench.KINDS}, got {kind!r}")
    if max_videos is not None and (
        isinstance(max_videos, bool) or not isinstance(max_videos, int) or max_videos < 1
    ):
        raise InputError(f"max_videos must be a positive int or None, got {max_videos!r}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InputError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    params = dict(params or {})
    records = avsbench.index_split(data_root, kind, split, check_files=True)
    if not records:
        raise InputError(
            f"AVSBench {kind.upper()} split {split!r} under {data_root} holds no videos"
        )
    total = len(records)
    if max_videos is not None:
        records = records[:max_videos]
    out_dir = Path(out) if out is not None else None
    jsonl = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        jsonl = out_dir / f"per_video_{kind}_{split}.jsonl"
    acc = MetricAccumulator()
    timing_sums: dict[str, float] = {}
    providers: dict[str, str] = {}
    resized_any = False

    def one(rec: avsbench.VideoRecord):
        gts = np.stack([avsbench.load_mask(p, kind) for p in rec.masks])
        return gts, predictor.predict(rec, tuple(gts.shape[1:]), params)

    pool = ThreadPoolExecutor(max_workers=concurrency) if concurrency > 1 else None
    fh = open(jsonl, "w", encoding="utf-8") if jsonl is not None else None  # noqa: SIM115
    try:
        results = pool.map(one, records) if pool is not None else map(one, records)
        bar = _bar(results, len(records), f"{KIND_LABEL[kind]} {split} {predictor.mode}", progress)
        for rec, (gts, o) in zip(records, bar, strict=True):
            t0 = time.perf_counter()
            r = acc.update(o.pred, gts, rec.name)
            row = _row(kind, split, rec, r, o, gts) if fh is not None else None
            o.timings["metrics"] = (time.perf_counter() - t0) * 1000.0
            for k, v in o.timings.items():
                timing_sums[k] = timing_sums.get(k, 0.0) + v
            providers.update(o.providers)
            resized_any |= o.resized_to_gt
            if fh is not None:
                row["timings_ms"] = {k: round(float(v), 3) for k, v in o.timings.items()}
                fh.write(json.dumps(row) + "\n")
            if out_dir is not None and (save_masks or save_overlays):
                _save_pngs(
                    out_dir,
                    kind,
                    rec,
                    o.masks,
                    save_masks=save_masks,
                    save_overlays=save_overlays,
                )
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(mIoU=f"{acc.miou:.4f}", F=f"{acc.fscore:.4f}")
    finally:
        if fh is not None:
            fh.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    s = acc.summary()
    n = max(acc.count, 1)
    return {
        "kind": kind,
        "split": split,
        "params": params,
        "videos": acc.count,
        "videos_in_split": total,
        "complete": acc.count == total,
        "frames": s["frames"],
        "empty_gt_frames": s["empty_gt_frames"],
        "miou": s["miou"],
        "fscore": s["fscore"],
        "timings_ms": {k: v / n for k, v in timing_sums.items()},
        "providers": providers,
        "resized_to_gt": resized_any,
        "per_video_file": str(jsonl) if jsonl is not None else None,
    }
