"""The one summary writer of an evaluation: ``summary.json`` (schema ``avs-eval-summary/1``) and
``summary.md`` (laid out like the paper's tables, the paper's figures beside ours). Random-weight
bundles and partial runs are marked loudly: their figures are not comparable with the paper."""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evaluation.paper import PAPER, PAPER_SOURCE, SUPERVISED, paper_decimals
from evaluation.split import KIND_LABEL
from runtime.result import jsonable

__all__ = ["RANDOM_WARNING", "summary_markdown", "write_summary"]

RANDOM_WARNING = "RANDOM WEIGHTS -- not comparable"


def write_summary(
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
    as ``summary.json`` + ``summary.md`` when given. ``results``: kind -> the dict of
    :func:`evaluation.split.evaluate_split`. ``extra``: fields of the caller (bundle profile and
    weights, or the server). The one summary writer of the in-process and the served evaluation."""
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
        "metric": "evaluation.metrics: AVSBench mask_iou / Eval_Fmeasure (beta^2 0.3, 255 thresholds), one video per batch",
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


def _cells(fig: Mapping[str, Any] | None, kind: str, ours: bool, decimals: int = 2) -> list[str]:
    if not fig or kind not in fig or fig[kind] is None:
        return ["–", "–"]
    v = fig[kind]
    m, f = (v["miou"] * 100.0, v["fscore"]) if ours else (v["miou_pct"], v["fscore"])
    return [f"{m:.{decimals}f}", f"{f:.3f}".lstrip("0") if f < 1 else f"{f:.3f}"]


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
        d = paper_decimals(s["paper_method"])
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
        d = paper_decimals(m)
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
