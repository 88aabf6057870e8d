"""Evaluate a runtime mode on AVSBench S4 / MS3 with the paper's metrics (torch-free).

    python -m benchmarks.evaluate --bundle engines/official --data-root avsbench_data \\
        --kind s4 ms3 --mode acfpn --out results/eval_acfpn
    avs eval --bundle engines/official --data-root avsbench_data --kind s4 --mode heatmap --max-videos 20

Every video of the split goes through ``runtime`` (onnxruntime, never torch) exactly as a user
would call it: ``Pipeline.segment(5 frames, the video's wav, mode=...)``. One video is one metric
batch (5 frames; S4 train: frame 1 only), like every script of the paper, and the metrics are
``runtime.metrics`` (the AVSBench / Sam4AVS ``mask_iou`` and ``Eval_Fmeasure``, spec section 2):

- ``acfpn`` (supervised) is scored on its **logits**, as the reference does (``sigmoid(z) > 0.5``
  for mIoU, 255 thresholds on ``sigmoid(z)`` for F). The logits are the ``acfpn`` graph's own
  output, taken from the same ``segment`` call (``segment(..., keep_logits=True)``) and resized
  to the frame like the runtime does; they are checked against the runtime's probabilities. A
  ``threshold`` parameter changes only the saved masks, not the metric (the reference has none).
- every other mode (zero-shot) is scored on its binary masks as {0, 1}, like the reference scripts
  (sigmoid maps them to 0.5 / 0.731).
- ``full-mask`` is the paper's trivial baseline (every pixel foreground); it needs no bundle and,
  on the real test split, must reproduce the paper's figures: a check of the data and the metric.
- ``random-sam`` (the runtime mode of ``runtime/modes/random_sam.py``) is the paper's Random-SAM row in
  our reading (one automatic SAM mask per frame, chosen uniformly at random, seeded): reported
  beside the paper's Random-SAM figures.

Writes into ``--out``: ``per_video_{kind}_{split}.jsonl`` (one JSON object per video: name,
category, miou, fscore, per-frame IoUs, timings), ``summary.json`` and ``summary.md`` (laid out
like the paper's tables, the paper's figures beside ours), and with ``--save-masks`` /
``--save-overlays`` the runtime's masks as PNGs and 50 % overlays. Random-weight bundles and
partial runs are marked loudly: their figures are not comparable with the paper.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import runtime
from avs.execution_args import add_execution_args, load_kwargs
from models import avsbench  # torch-free index of AVSBench (numpy + PIL + csv)
from runtime.errors import AVSError, InputError
from runtime.metrics import MetricAccumulator, frame_miou, miou_terms
from runtime.pipeline import Pipeline, SegmentResult
from runtime.resize import resize
from runtime.result import jsonable

__all__ = [
    "PAPER",
    "PAPER_SOURCE",
    "BASELINES",
    "LOGIT_MODES",
    "RANDOM_WARNING",
    "VideoOutcome",
    "load_pipeline",
    "segment_with_logits",
    "paper_method",
    "predict_video",
    "evaluate_split",
    "evaluate",
    "summary_markdown",
    "parse_args",
    "main",
]

# ------------------------------------------------------------------------------------------------
# the paper's figures

PAPER_SOURCE = (
    "Yu et al., BMVC 2023 poster, 'Results on Supervised AVS' and 'Results on Zero-shot AVS' tables "
    "(spec/paper-poster.txt; headline rows also in spec/sam4avs-reference.md section 7). "
    "mIoU in %, F-score (beta^2 = 0.3) as a fraction; AVSBench-object v1 test splits."
)

# method -> {"s4": (mIoU %, F), "ms3": (mIoU %, F)}, exactly as printed on the poster.
PAPER: dict[str, dict[str, tuple[float, float]]] = {
    # supervised
    "TPAVI-ResNet50": {"s4": (72.79, 0.848), "ms3": (47.88, 0.578)},
    "AC-FPN (Hadamard)": {"s4": (77.12, 0.874), "ms3": (49.95, 0.635)},
    "AC-FPN (Concatenation)": {"s4": (77.29, 0.879), "ms3": (48.63, 0.637)},
    # zero-shot
    "Random-SAM": {"s4": (7.0, 0.240), "ms3": (11.5, 0.187)},
    "Full-mask": {"s4": (19.0, 0.226), "ms3": (12.7, 0.170)},
    "No-Prompt": {"s4": (23.8, 0.358), "ms3": (19.7, 0.242)},
    "Point-Prompt (global)": {"s4": (27.2, 0.424), "ms3": (19.4, 0.279)},
    "Point-Prompt (local)": {"s4": (30.7, 0.416), "ms3": (20.0, 0.270)},
    "Point-Prompt (dense)": {"s4": (40.3, 0.515), "ms3": (28.8, 0.333)},
    "Box-Prompt": {"s4": (51.2, 0.615), "ms3": (41.8, 0.478)},
}
SUPERVISED = ("TPAVI-ResNet50", "AC-FPN (Hadamard)", "AC-FPN (Concatenation)")

# runtime mode -> paper method (acfpn depends on the bundle's fusion, see paper_method)
_MODE_METHOD = {
    "full-mask": "Full-mask",
    "random-sam": "Random-SAM",
    "no-prompt": "No-Prompt",
    "point-global": "Point-Prompt (global)",
    "point-local": "Point-Prompt (local)",
    "point-dense": "Point-Prompt (dense)",
    "box": "Box-Prompt",
}
_FUSION_METHOD = {"hadamard": "AC-FPN (Hadamard)", "concatenation": "AC-FPN (Concatenation)"}

LOGIT_MODES = frozenset({"acfpn"})  # scored on logits; every other mode on {0, 1} masks
BASELINES = frozenset({"full-mask"})  # computed here, no bundle needed

RANDOM_WARNING = "RANDOM WEIGHTS -- not comparable"
KIND_LABEL = {"s4": "S4", "ms3": "MS3"}


def paper_method(mode: str, fusion: str | None = None) -> str | None:
    """The paper's row for a runtime ``mode`` (None when the paper reports none, e.g. ``heatmap``).

    ``fusion``: the bundle's AC-FPN fusion ("hadamard" or "concatenation") for ``mode="acfpn"``.
    """
    if mode == "acfpn":
        return _FUSION_METHOD.get(fusion or "hadamard")
    return _MODE_METHOD.get(mode)


# ------------------------------------------------------------------------------------------------
# the runtime, with the AC-FPN logits kept


def load_pipeline(
    bundle_dir: str | Path,
    *,
    preset: str | None = None,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    execution: Mapping[str, Any] | None = None,
) -> Pipeline:
    """``runtime.load`` (schema + sha256 checks); ``execution``: its backend / precision / cache_dir."""
    return runtime.load(
        bundle_dir, preset=preset, providers=providers, threads=threads, **dict(execution or {})
    )


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
                "runtime/modes/acfpn.py changed, update benchmarks/evaluate.py"
            )
    return res, logits


# ------------------------------------------------------------------------------------------------
# one video


@dataclass
class VideoOutcome:
    """Everything evaluate keeps of one video.

    ``pred``: what the metric sees, float32 [M, H, W] at the GT size for the M frames that have a
    GT mask: logits (``acfpn``) or {0, 1} masks. ``masks``: the runtime's bool masks, one [H, W]
    per frame (all 5) at the frame's size. ``timings``: stage -> ms (runtime stages + ``wall``).
    """

    pred: np.ndarray
    masks: list[np.ndarray]
    timings: dict[str, float]
    providers: dict[str, str]
    resized_to_gt: bool = False


def _to_shape(a: np.ndarray, shape: tuple[int, int], binary: bool) -> np.ndarray:
    if a.shape == shape:
        return a
    if binary:  # nearest neighbour (pixel centres)
        rows = np.minimum(
            ((np.arange(shape[0]) + 0.5) * a.shape[0] / shape[0]).astype(np.intp), a.shape[0] - 1
        )
        cols = np.minimum(
            ((np.arange(shape[1]) + 0.5) * a.shape[1] / shape[1]).astype(np.intp), a.shape[1] - 1
        )
        return a[rows][:, cols]
    return resize(a[None].astype(np.float32), shape, "bilinear")[0]


def predict_video(
    pipe: Pipeline | None,
    mode: str,
    frames: Sequence[np.ndarray],
    wav: str | Path,
    gt_shape: tuple[int, int],
    mask_frames: Sequence[int],
    params: Mapping[str, Any] | None = None,
) -> VideoOutcome:
    """Run ``mode`` on one video and return the metric input (see :class:`VideoOutcome`).

    ``frames``: the video's uint8 RGB [H, W, 3] frames; ``wav``: its audio file; ``gt_shape``:
    (rows, cols) of its GT masks; ``mask_frames``: 1-based indices of the frames with a GT mask.
    ``pipe`` may be None only for the ``full-mask`` baseline.
    """
    params = dict(params or {})
    t0 = time.perf_counter()
    if mode == "full-mask":
        masks = [np.ones(f.shape[:2], bool) for f in frames]
        maps, binary, timings, prov = [m.astype(np.float32) for m in masks], True, {}, {}
    else:
        if pipe is None:
            raise InputError(f"mode {mode!r} needs a bundle")
        if mode in LOGIT_MODES:
            res, maps = segment_with_logits(pipe, list(frames), str(wav), **params)
            binary = False
        else:
            res = pipe.segment(list(frames), str(wav), mode=mode, **params)
            maps, binary = [m.astype(np.float32) for m in res.masks], True
        masks, timings, prov = res.masks, dict(res.timings), dict(res.providers)
    picked = [maps[k - 1] for k in mask_frames]
    resized = any(m.shape != tuple(gt_shape) for m in picked)
    pred = np.stack([_to_shape(m, tuple(gt_shape), binary) for m in picked]).astype(np.float32)
    timings["wall"] = (time.perf_counter() - t0) * 1000.0
    return VideoOutcome(pred, list(masks), timings, prov, resized)


def _save_pngs(
    out: Path,
    kind: str,
    rec: avsbench.VideoRecord,
    frames,
    masks,
    *,
    save_masks: bool,
    save_overlays: bool,
) -> None:
    colour = np.array([255, 40, 40], np.float32)
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


# ------------------------------------------------------------------------------------------------
# one split


def _bar(it, total: int, desc: str, enabled: bool):
    if not enabled:
        return it
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the export/dev extras
        return it
    return tqdm(it, total=total, desc=desc, unit="video", dynamic_ncols=True, file=sys.stderr)


def evaluate_split(
    pipe: Pipeline | None,
    data_root: str | Path,
    kind: str,
    *,
    split: str = "test",
    mode: str = "acfpn",
    params: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    max_videos: int | None = None,
    save_masks: bool = False,
    save_overlays: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``mode`` on one AVSBench split; one metric batch per video.

    Checks every file of the split first (FileNotFoundError naming the first missing one). With
    ``out`` writes ``out/per_video_{kind}_{split}.jsonl`` (and masks / overlays when asked).
    Returns {"kind", "split", "videos", "videos_in_split", "complete", "frames",
    "empty_gt_frames", "miou", "fscore" (means over videos, fractions in [0, 1]),
    "timings_ms" (stage -> mean ms per video), "params", "providers", "resized_to_gt",
    "per_video_file"}.
    """
    if kind not in avsbench.KINDS:
        raise InputError(f"kind must be one of {avsbench.KINDS}, got {kind!r}")
    if max_videos is not None and (
        isinstance(max_videos, bool) or not isinstance(max_videos, int) or max_videos < 1
    ):
        raise InputError(f"max_videos must be a positive int or None, got {max_videos!r}")
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
    fh = open(jsonl, "w", encoding="utf-8") if jsonl is not None else None
    try:
        bar = _bar(records, len(records), f"{KIND_LABEL[kind]} {split} {mode}", progress)
        for rec in bar:
            frames = [avsbench.load_frame(p) for p in rec.frames]
            gts = np.stack([avsbench.load_mask(p, kind) for p in rec.masks])
            o = predict_video(pipe, mode, frames, rec.wav, gts.shape[1:], rec.mask_frames, params)
            t0 = time.perf_counter()
            r = acc.update(o.pred, gts, rec.name)
            per_frame = frame_miou(o.pred, gts)
            terms = miou_terms(o.pred, gts)
            o.timings["metrics"] = (time.perf_counter() - t0) * 1000.0
            for k, v in o.timings.items():
                timing_sums[k] = timing_sums.get(k, 0.0) + v
            providers.update(o.providers)
            resized_any |= o.resized_to_gt
            if fh is not None:
                row = {
                    "kind": kind,
                    "split": split,
                    "name": rec.name,
                    "category": rec.category,
                    "miou": r.miou,
                    "fscore": r.fscore,
                    "frames": r.frames,
                    "empty_gt_frames": r.empty_gt_frames,
                    "mask_frames": list(rec.mask_frames),
                    "frame_miou": [float(x) for x in per_frame],
                    "frame_iou_avsbench": [float(x) for x in terms],
                    "mask_coverage": [float(m.mean()) for m in o.masks],
                    "timings_ms": {k: round(v, 3) for k, v in o.timings.items()},
                }
                fh.write(json.dumps(row) + "\n")
            if out_dir is not None and (save_masks or save_overlays):
                _save_pngs(
                    out_dir,
                    kind,
                    rec,
                    frames,
                    o.masks,
                    save_masks=save_masks,
                    save_overlays=save_overlays,
                )
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(mIoU=f"{acc.miou:.4f}", F=f"{acc.fscore:.4f}")
    finally:
        if fh is not None:
            fh.close()
    s = acc.summary()
    n = max(acc.count, 1)
    return {
        "kind": kind,
        "split": split,
        "params": dict(params or {}),
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


# ------------------------------------------------------------------------------------------------
# a whole evaluation


def evaluate(
    bundle: str | Path | None,
    data_root: str | Path,
    *,
    kinds: Sequence[str] = ("s4",),
    split: str = "test",
    mode: str | None = None,
    preset: str | None = None,
    params: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    max_videos: int | None = None,
    save_masks: bool = False,
    save_overlays: bool = False,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    progress: bool = True,
    execution: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``mode`` of ``bundle`` on the AVSBench ``kinds`` ("s4", "ms3") of ``split``.

    ``mode``: a runtime mode (default: the bundle's best) or ``"full-mask"`` (no bundle needed).
    ``params``: mode parameters passed to ``segment``. With ``out``, writes the per-video JSON
    lines, ``summary.json`` and ``summary.md`` there. Returns the summary dict (see
    ``summary.json``: results per kind with mIoU / F as fractions, the paper's figures, flags).
    """
    kinds = check_kinds_split(kinds, split)
    params = dict(params or {})
    pipe = None
    manifest: dict[str, Any] = {}
    from runtime.modes import MODES

    if mode in BASELINES:
        if params:
            raise InputError(f"baseline {mode!r} takes no parameters, got {sorted(params)}")
    else:
        if bundle is None:
            raise InputError(f"mode {mode or '(default)'!r} needs --bundle")
        pipe = load_pipeline(
            bundle, preset=preset, providers=providers, threads=threads, execution=execution
        )
        manifest = pipe.manifest
        if mode is not None and mode not in MODES:
            raise InputError(
                f"unknown mode {mode!r}; choose from {sorted(MODES)} or the baselines {sorted(BASELINES)}"
            )
        mode = pipe.check_mode(mode, params)[0].name
    fusion = manifest.get("graphs", {}).get("acfpn", {}).get("fusion") if mode == "acfpn" else None
    method = paper_method(mode, fusion)
    rnd = _random_weight_sources(manifest, mode) if pipe is not None else []
    random_weights = bool(rnd)
    out_dir = Path(out) if out is not None else None
    # modes with per-data-set defaults (zero-shot thresholds: S4 vs MS3) get the kind evaluated
    per_kind = (
        mode not in BASELINES and "dataset" in MODES[mode].defaults and "dataset" not in params
    )
    results = {}
    for kind in kinds:
        kind_params = {**params, "dataset": kind} if per_kind else params
        results[kind] = evaluate_split(
            pipe,
            data_root,
            kind,
            split=split,
            mode=mode,
            params=kind_params,
            out=out_dir,
            max_videos=max_videos,
            save_masks=save_masks,
            save_overlays=save_overlays,
            progress=progress,
        )
    return finish_summary(
        bundle=str(bundle) if bundle is not None else None,
        out_dir=out_dir,
        results=results,
        split=split,
        mode=mode,
        preset=pipe.preset.name if pipe is not None else None,
        params=params,
        per_kind=per_kind,
        random_weights=random_weights,
        random_detail=f"the bundle was built from random weights ({', '.join(rnd)})",
        scored_on="logits" if mode in LOGIT_MODES else "binary {0,1} masks",
        method=method,
        data_root=data_root,
        extra={"bundle_profile": manifest.get("profile"), "weights": manifest.get("weights")},
    )


def check_kinds_split(kinds: Sequence[str], split: str) -> list[str]:
    """The AVSBench kinds to evaluate (in order, once each), after checking them and ``split``."""
    kinds = list(dict.fromkeys(kinds))
    bad = [k for k in kinds if k not in avsbench.KINDS]
    if not kinds or bad:
        raise InputError(f"kinds must be a non-empty list of {avsbench.KINDS}, got {list(kinds)}")
    if split not in avsbench.SPLITS:
        raise InputError(f"split must be one of {avsbench.SPLITS}, got {split!r}")
    return kinds


def finish_summary(
    *,
    bundle: str | None,
    out_dir: Path | None,
    results: Mapping[str, Any],
    split: str,
    mode: str,
    preset: str | None,
    params: Mapping[str, Any],
    per_kind: bool,
    random_weights: bool,
    random_detail: str,
    scored_on: str,
    method: str | None,
    data_root: str | Path,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The summary of an evaluation (``summary.json`` layout) with its warnings, written to ``out_dir``
    as ``summary.json`` + ``summary.md`` when given. ``extra``: fields of the caller (bundle profile and
    weights, or the server). Shared by the in-process and the served evaluation."""
    warnings = []
    if random_weights:
        warnings.append(f"{RANDOM_WARNING}: {random_detail}; its masks are meaningless")
    for kind, r in results.items():
        if not r["complete"]:
            warnings.append(
                f"partial run: {KIND_LABEL[kind]} {split} {r['videos']} of {r['videos_in_split']} videos"
                " -- not comparable with the paper's figures"
            )
    if split != "test":
        warnings.append(f"split {split!r}: the paper reports the test split only")
    summary = {
        "schema": "avs-eval-summary/1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bundle": bundle,
        **extra,
        "random_weights": bool(random_weights),
        "comparable": not warnings,
        "warnings": warnings,
        "mode": mode,
        "preset": preset,
        "params": dict(params),
        "params_per_kind": {"dataset": "the kind evaluated (s4 / ms3)"} if per_kind else {},
        "scored_on": scored_on,
        "split": split,
        "data_root": str(data_root),
        "metric": "runtime.metrics: AVSBench mask_iou / Eval_Fmeasure (beta^2 0.3, 255 thresholds), one video per batch",
        "results": dict(results),
        "paper_method": method,
        "paper": {k: {"miou_pct": v[0], "fscore": v[1]} for k, v in PAPER[method].items()}
        if method
        else None,
        "paper_source": PAPER_SOURCE,
        "paper_table": {
            m: {k: {"miou_pct": v[0], "fscore": v[1]} for k, v in row.items()}
            for m, row in PAPER.items()
        },
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(
            json.dumps(jsonable(summary), indent=1, allow_nan=False) + "\n"
        )
        (out_dir / "summary.md").write_text(summary_markdown(summary))
    return summary


def _random_weight_sources(manifest: Mapping[str, Any], mode: str) -> list[str]:
    """Names of the random-init weight sources (manifest ``weights``) behind the graphs ``mode`` runs.

    Every graph entry names its weights (``"weights": "audioclip"``); an entry without that name
    makes every random-init source of the bundle count.
    """
    from runtime.modes import MODES

    graphs = dict(manifest.get("graphs", {}))
    used = [g for g in MODES[mode].graphs if g in graphs]
    if mode == "acfpn" and "acfpn" in graphs:
        used.append(graphs["acfpn"].get("audio_graph", "audioclip_audio"))
    weights = manifest.get("weights", {})
    keys = {graphs[g].get("weights") for g in used if g in graphs}
    if None in keys:
        keys = set(weights)
    return sorted(k for k in keys if weights.get(k, {}).get("source") == "random-init")


def _cells(fig: Mapping[str, Any] | None, kind: str, ours: bool, decimals: int = 2) -> list[str]:
    if not fig or kind not in fig or fig[kind] is None:
        return ["–", "–"]
    v = fig[kind]
    m, f = (v["miou"] * 100.0, v["fscore"]) if ours else (v["miou_pct"], v["fscore"])
    return [f"{m:.{decimals}f}", f"{f:.3f}".lstrip("0") if f < 1 else f"{f:.3f}"]


def _paper_decimals(method: str) -> int:
    return 2 if method in SUPERVISED else 1  # as printed: 77.12 (supervised), 51.2 (zero-shot)


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as Markdown: warnings, then ours beside the paper's row (mIoU %, F), the
    full paper table, and per-kind details (videos, frames, mean stage timings)."""
    s = summary
    res = s["results"]
    out = [f"# AVSBench evaluation: mode `{s['mode']}`", ""]
    bundle = s["bundle"] or "(none: baseline)"
    out.append(
        f"- Bundle: `{bundle}` (profile {s.get('bundle_profile') or '–'}), preset {s.get('preset') or '–'}, "
        f"params {json.dumps(s['params']) if s['params'] else 'defaults'}"
        f"{' (dataset = the kind evaluated)' if s.get('params_per_kind') else ''}; split `{s['split']}`; "
        f"scored on {s['scored_on']}."
    )
    out.append(f"- Metric: {s['metric']}.")
    for w in s["warnings"]:
        out.append(f"- **{w}**")
    label = f"ours: `{s['mode']}`"
    if s["random_weights"]:
        label += f" (**{RANDOM_WARNING}**)"
    elif not s["comparable"]:
        label += " (**not comparable**, see above)"
    out += ["", "| method / mode | S4 mIoU | S4 F | MS3 mIoU | MS3 F |", "|---|---|---|---|---|"]
    out.append(
        "| " + " | ".join([label, *_cells(res, "s4", True), *_cells(res, "ms3", True)]) + " |"
    )
    if s["paper_method"]:
        d = _paper_decimals(s["paper_method"])
        out.append(
            "| "
            + " | ".join(
                [
                    f"paper: {s['paper_method']}",
                    *_cells(s["paper"], "s4", False, d),
                    *_cells(s["paper"], "ms3", False, d),
                ]
            )
            + " |"
        )
    else:
        out.append("| paper: (no figure for this mode) | – | – | – | – |")
    out += [
        "",
        f"Paper figures ({s['paper_source']}):",
        "",
        "| method | kind | S4 mIoU | S4 F | MS3 mIoU | MS3 F |",
        "|---|---|---|---|---|---|",
    ]
    for m, row in s["paper_table"].items():
        kind = "supervised" if m in SUPERVISED else "zero-shot"
        d = _paper_decimals(m)
        out.append(
            "| "
            + " | ".join([m, kind, *_cells(row, "s4", False, d), *_cells(row, "ms3", False, d)])
            + " |"
        )
    out += [
        "",
        "| kind | split | videos | frames | empty-GT frames | mIoU | F | mean ms / video (stages) | providers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, r in res.items():
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["timings_ms"].items())
        prov = ", ".join(f"{g}={p}" for g, p in r["providers"].items()) or "–"
        out.append(
            f"| {KIND_LABEL[kind]} | {r['split']} | {r['videos']} / {r['videos_in_split']} | {r['frames']} "
            f"| {r['empty_gt_frames']} | {r['miou']:.4f} | {r['fscore']:.4f} | {stages} | {prov} |"
        )
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------
# command line


def _parse_value(v: str) -> Any:
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def parse_kinds(p: argparse.ArgumentParser, values: Sequence[str]) -> list[str]:
    """``--kind`` values (s4, ms3, both; comma-separated allowed) -> the kinds in order, once each."""
    kinds: list[str] = []
    for k in values:
        for part in k.lower().split(","):
            if part == "both":
                kinds += ["s4", "ms3"]
            elif part in avsbench.KINDS:
                kinds.append(part)
            elif part:
                p.error(f"--kind: expected s4, ms3 or both, got {part!r}")
    return list(dict.fromkeys(kinds))


def parse_params(p: argparse.ArgumentParser, items: Sequence[str]) -> dict[str, Any]:
    """``--param KEY=VALUE`` items -> {key: parsed value} (numbers, true/false/none, JSON, else text)."""
    params = {}
    for item in items:
        if "=" not in item:
            p.error(f"--param expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        params[key.strip()] = _parse_value(value.strip())
    return params


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of ``python -m benchmarks.evaluate`` / ``avs eval``."""
    p = argparse.ArgumentParser(
        prog="avs eval",
        description="Evaluate a runtime mode on AVSBench S4 / MS3 (mIoU, F-score).",
    )
    p.add_argument(
        "--bundle", default="engines/default", help="bundle folder (default engines/default)"
    )
    p.add_argument(
        "--data-root",
        default=os.environ.get("AVSBENCH_ROOT", "avsbench_data"),
        help="AVSBench folder holding Single-source/ and Multi-sources/ (default $AVSBENCH_ROOT or avsbench_data)",
    )
    p.add_argument(
        "--kind", nargs="+", default=["s4"], help="s4, ms3, both (or several): default s4"
    )
    p.add_argument(
        "--split", default="test", choices=avsbench.SPLITS, help="default test (the paper's)"
    )
    p.add_argument(
        "--mode",
        default=None,
        help="runtime mode (default: the bundle's best; random-sam: the "
        "Random-SAM baseline), or the baseline full-mask (no bundle)",
    )
    p.add_argument("--preset", default=None, help="bundle preset (default / sam4avs)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="mode parameter, repeatable",
    )
    p.add_argument(
        "--max-videos",
        type=int,
        default=None,
        help="only the first N videos of each split (smoke runs)",
    )
    p.add_argument("--out", default=None, help="output folder (default results/eval/MODE)")
    p.add_argument(
        "--save-masks",
        action="store_true",
        help="write the runtime's masks as PNGs under OUT/masks/",
    )
    p.add_argument(
        "--save-overlays", action="store_true", help="write 50%% overlays under OUT/overlays/"
    )
    p.add_argument(
        "--providers", default=None, help="comma-separated execution providers, e.g. cuda,cpu"
    )
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_execution_args(p)
    a = p.parse_args(argv)
    a.kinds = parse_kinds(p, a.kind)
    a.params = parse_params(p, a.param)
    if a.max_videos is not None and a.max_videos < 1:
        p.error("--max-videos must be >= 1")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; prints the Markdown summary. Returns 0, or 2 on a user error."""
    from benchmarks import evaluate_served  # --server URL: a served pipeline (issue 12)

    if evaluate_served.wants_server(argv):
        return evaluate_served.main(argv)
    a = parse_args(argv)
    providers = [x.strip() for x in a.providers.split(",") if x.strip()] if a.providers else None
    bundle = None if a.mode in BASELINES else a.bundle
    out = Path(a.out) if a.out else Path("results") / "eval" / (a.mode or "default-mode")
    try:
        summary = evaluate(
            bundle,
            a.data_root,
            kinds=a.kinds,
            split=a.split,
            mode=a.mode,
            preset=a.preset,
            params=a.params,
            out=out,
            max_videos=a.max_videos,
            save_masks=a.save_masks,
            save_overlays=a.save_overlays,
            providers=providers,
            threads=a.threads,
            progress=not a.quiet,
            execution=load_kwargs(a),
        )
    except (FileNotFoundError, AVSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_markdown(summary))
    if summary["random_weights"]:
        bar = "!" * 78
        print(
            f"{bar}\n{RANDOM_WARNING}: bundle {a.bundle} holds random weights; these figures mean nothing.\n{bar}",
            file=sys.stderr,
        )
    print(f"summary written to {out / 'summary.json'} and summary.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
