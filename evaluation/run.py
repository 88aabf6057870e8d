"""A whole evaluation: ``evaluate`` (a bundle, in-process) and ``evaluate_served`` (a served pipeline).

Both build a :class:`~evaluation.predictors.Predictor`, run the one split loop
(:func:`evaluation.split.evaluate_split`) on every kind asked for, and write the one summary
(:func:`evaluation.summary.write_summary`). Every video goes through ``runtime`` (onnxruntime, never
torch) as a user would call it: ``segment(5 frames, the video's wav, mode=...)``; the metrics are
``evaluation.metrics`` (the AVSBench / Sam4AVS ``mask_iou`` and ``Eval_Fmeasure``, spec section 2):

- ``acfpn`` (supervised) is scored on its **logits**, as the reference does (``sigmoid(z) > 0.5`` for
  mIoU, 255 thresholds on ``sigmoid(z)`` for F): the ``acfpn`` graph's own output from the same
  ``segment`` call, checked against the runtime's probabilities. A ``threshold`` parameter changes
  only the saved masks, not the metric (the reference has none). In-process only: the wire carries
  masks.
- every other mode (zero-shot) is scored on its binary masks as {0, 1}, like the reference scripts.
- ``full-mask`` is the paper's trivial baseline (every pixel foreground); no bundle; on the real test
  split it must reproduce the paper's figures: a check of the data and the metric.
- ``random-sam`` (``runtime/modes/random_sam.py``) is reported beside the paper's Random-SAM row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import runtime
from evaluation.paper import paper_method
from evaluation.predictors import (
    BASELINES,
    LOGIT_MODES,
    FullMaskPredictor,
    PipelinePredictor,
    Predictor,
    ServedPredictor,
)
from evaluation.split import check_kinds_split, evaluate_split
from evaluation.summary import write_summary
from models import avsbench
from runtime.errors import InputError
from runtime.modes import MODES

__all__ = ["evaluate", "evaluate_served", "random_weight_sources"]


def random_weight_sources(manifest: Mapping[str, Any], mode: str) -> list[str]:
    """Names of the random-init weight sources (manifest ``weights``) behind the graphs ``mode`` runs.

    Every graph entry names its weights (``"weights": "audioclip"``); an entry without that name
    makes every random-init source of the bundle count.
    """
    graphs = dict(manifest.get("graphs", {}))
    used = [g for g in MODES[mode].graphs if g in graphs]
    if mode == "acfpn" and "acfpn" in graphs:
        used.append(graphs["acfpn"].get("audio_graph", "audioclip_audio"))
    weights = manifest.get("weights", {})
    keys = {graphs[g].get("weights") for g in used if g in graphs}
    if None in keys:
        keys = set(weights)
    return sorted(k for k in keys if weights.get(k, {}).get("source") == "random-init")


def dataset_per_kind(mode: str, params: Mapping[str, Any]) -> bool:
    """Whether ``mode`` has per-data-set defaults (a ``dataset`` parameter: the zero-shot thresholds of
    S4 vs MS3) that the caller left to the kind evaluated."""
    return mode in MODES and "dataset" in MODES[mode].defaults and "dataset" not in params


def _run_kinds(
    predictor: Predictor,
    data_root: str | Path,
    kinds: Sequence[str],
    params: Mapping[str, Any],
    per_kind: bool,
    **loop: Any,
) -> dict[str, Any]:
    results = {}
    for kind in kinds:
        kind_params = {**params, "dataset": kind} if per_kind else dict(params)
        results[kind] = evaluate_split(predictor, data_root, kind, params=kind_params, **loop)
    return results


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
    """Evaluate ``mode`` of ``bundle`` on the AVSBench ``kinds`` ("s4", "ms3") of ``split``, in-process.

    ``execution``: ``runtime.load``'s backend / precision / cache_dir (None: its defaults).
    ``mode``: a runtime mode (default: the bundle's best) or ``"full-mask"`` (no bundle needed).
    ``params``: mode parameters passed to ``segment``. With ``out``, writes the per-video JSON
    lines, ``summary.json`` and ``summary.md`` there. Returns the summary dict (see
    ``summary.json``: results per kind with mIoU / F as fractions, the paper's figures, flags).
    """
    kinds = check_kinds_split(kinds, split)
    params = dict(params or {})
    pipe = None
    manifest: dict[str, Any] = {}
    if mode in BASELINES:
        if params:
            raise InputError(f"baseline {mode!r} takes no parameters, got {sorted(params)}")
        predictor: Predictor = FullMaskPredictor()
    else:
        if bundle is None:
            raise InputError(f"mode {mode or '(default)'!r} needs --bundle")
        pipe = runtime.load(
            bundle, preset=preset, providers=providers, threads=threads, **dict(execution or {})
        )
        manifest = pipe.manifest
        if mode is not None and mode not in MODES:
            raise InputError(
                f"unknown mode {mode!r}; choose from {sorted(MODES)} or the baselines {sorted(BASELINES)}"
            )
        mode = pipe.check_mode(mode, params)[0].name
        predictor = PipelinePredictor(pipe, mode)
    fusion = manifest.get("graphs", {}).get("acfpn", {}).get("fusion") if mode == "acfpn" else None
    rnd = random_weight_sources(manifest, mode) if pipe is not None else []
    per_kind = dataset_per_kind(mode, params)
    out_dir = Path(out) if out is not None else None
    results = _run_kinds(
        predictor,
        data_root,
        kinds,
        params,
        per_kind,
        split=split,
        out=out_dir,
        max_videos=max_videos,
        save_masks=save_masks,
        save_overlays=save_overlays,
        progress=progress,
    )
    return write_summary(
        bundle=str(bundle) if bundle is not None else None,
        out_dir=out_dir,
        results=results,
        split=split,
        mode=mode,
        preset=pipe.preset.name if pipe is not None else None,
        params=params,
        per_kind=per_kind,
        random_weights=bool(rnd),
        random_detail=f"the bundle was built from random weights ({', '.join(rnd)})",
        scored_on=predictor.scored_on,
        method=paper_method(mode, fusion),
        data_root=data_root,
        extra={"bundle_profile": manifest.get("profile"), "weights": manifest.get("weights")},
    )


def evaluate_served(
    url: str,
    data_root: str | Path,
    *,
    protocol: str = "http",
    kinds: Sequence[str] = ("s4",),
    split: str = "test",
    mode: str | None = None,
    params: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    max_videos: int | None = None,
    save_masks: bool = False,
    save_overlays: bool = False,
    concurrency: int = 4,
    timeout: float = 600.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the served pipeline at ``url`` (host:port, ``protocol`` "http" or "grpc") on AVSBench;
    returns the summary (as :func:`evaluate`).

    ``concurrency``: requests in flight at once (one client thread each). ``timeout``: seconds one
    request may take. ``mode``: default = the server's default mode (asked with the first clip);
    ``acfpn`` (scored on logits, which the wire does not carry) and the baselines are refused.
    Other arguments as :func:`evaluate`.
    """
    kinds = check_kinds_split(kinds, split)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InputError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    if mode in BASELINES:
        raise InputError(f"baseline {mode!r} needs no server; run it without --server")
    if mode in LOGIT_MODES:
        raise InputError(
            f"mode {mode!r} is scored on its logits, which the served model does not return "
            "(its wire contract carries masks); evaluate it in-process with --bundle"
        )
    params = dict(params or {})
    predictor = ServedPredictor(url, protocol, timeout, mode)
    out_dir = Path(out) if out is not None else None
    try:
        if mode is None:  # the server's default: ask with the first clip of the first kind
            rec = avsbench.index_split(data_root, kinds[0], split, check_files=True)[0]
            mode = predictor.resolve_mode(rec, params)
            if mode in LOGIT_MODES:
                raise InputError(
                    f"the server's default mode is {mode!r}, scored on logits that it does "
                    "not return; pass --mode, or evaluate it in-process with --bundle"
                )
        per_kind = dataset_per_kind(mode, params)
        results = _run_kinds(
            predictor,
            data_root,
            kinds,
            params,
            per_kind,
            split=split,
            out=out_dir,
            max_videos=max_videos,
            save_masks=save_masks,
            save_overlays=save_overlays,
            progress=progress,
            concurrency=concurrency,
        )
    finally:
        predictor.close()
    return write_summary(
        bundle=f"served at {protocol}://{url}",
        out_dir=out_dir,
        results=results,
        split=split,
        mode=mode,
        preset=predictor.preset,
        params=params,
        per_kind=per_kind,
        random_weights=predictor.random_weights,
        random_detail="the served bundle was built from random weights",
        scored_on=predictor.scored_on,
        method=paper_method(mode, None),
        data_root=data_root,
        extra={
            "server": {"url": url, "protocol": protocol, "concurrency": concurrency},
            "bundle_profile": None,
            "weights": None,
        },
    )
