"""Audio-guided sparse No-Prompt (``grid="audio"``) against full-grid No-Prompt, over its settings.

    python -m benchmarks.bench_audio_grid --bundle engines/default --out results/audio_grid
    python -m benchmarks.bench_audio_grid --bundle B --keeps 0.05,0.1,0.2 --thresholds 0.9 \\
        --amg '{"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}'

Every photo of ``../shared/data/audioclip-demo`` (resized to 224 x 224, AVSBench's size) is a
one-frame clip with the WAV of its class (cat -> cat, cars -> car horn, clock -> alarm clock,
coughing -> coughing, lightning -> thunder). Per photo, No-Prompt runs once on SAM's full 32 x 32
grid and once per setting (``grid_keep`` fractions, ``grid_threshold`` values), all on the same
pipeline: the frame's SAM embedding and CLIP features are computed once (the embedding cache) and
the encoder time is reported apart. Per setting: prompted points, the time of the No-Prompt stages
after the encoder (automatic masks + crop scoring (+ the heatmap for ``grid="audio"``)), the
speed-up of the whole path (encoder included) over the full grid, the IoU of the final mask with
the full grid's, and the share of the full grid's automatic masks (by box) the sparse run finds.

Random weights (the bundles here) give meaningless masks, and SAM's default thresholds keep no
automatic mask at all (predicted IoUs of random weights are far below 0.88): the mask agreement
then is trivially 1. Pass lowered thresholds (``--amg``) to compare real, if random, masks; the
report says which weights and thresholds were used.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.machine import machine_info

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO.parent / "shared" / "data" / "audioclip-demo"
WAV_OF = {
    "cat": "cat_3-95694-A-5.wav",
    "cars": "car_horn_1-24074-A-43.wav",
    "clock": "alarm_clock_3-120526-B-37.wav",
    "coughing": "coughing_1-58792-A-24.wav",
    "lightning": "thunder_3-144891-B-19.wav",
}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.count_nonzero(a | b)
    return 1.0 if u == 0 else np.count_nonzero(a & b) / u


def _after_encoder_s(timings: dict[str, float]) -> float:
    return (
        sum(v for k, v in timings.items() if k in ("amg", "crop_scoring", "image", "heatmap"))
        / 1000.0
    )


def run(
    bundle: Path,
    out: Path,
    *,
    keeps=(0.05, 0.1, 0.2, 0.3),
    thresholds=(),
    amg=None,
    threads: int = 2,
    photos: int | None = None,
) -> dict:
    """Run the comparison and write ``audio_grid.json`` + ``audio_grid.md`` under ``out``; returns the summary."""
    import runtime

    pipe = runtime.load(bundle, threads=threads, cache_mb=2048)
    names = sorted(p.name for p in DEMO.glob("*.jpg"))[:photos]
    settings = [("keep", k) for k in keeps] + [("threshold", t) for t in thresholds]
    rows: dict[str, list[dict]] = {f"{kind} {v:g}": [] for kind, v in settings}
    full_rows = []
    for n, name in enumerate(names):
        frame = np.asarray(
            Image.open(DEMO / name).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
        )
        wav = DEMO / WAV_OF[name.split("_")[0]]
        t0 = time.perf_counter()
        pipe.sam_embeddings([frame])
        enc_s = time.perf_counter() - t0
        full = pipe.segment([frame], wav, mode="no-prompt", amg=amg)
        f_s = _after_encoder_s(full.timings)
        full_boxes = {tuple(b) for b in full.prompts[0]["boxes"]}
        full_rows.append(
            {
                "photo": name,
                "encoder_s": enc_s,
                "after_encoder_s": f_s,
                "num_masks": full.prompts[0]["num_masks"],
                "mask_pixels": int(full.masks[0].sum()),
            }
        )
        print(
            f"[{n + 1}/{len(names)}] {name}: encoder {enc_s:.1f} s, full grid {f_s:.1f} s, "
            f"{full.prompts[0]['num_masks']} automatic masks",
            flush=True,
        )
        for kind, v in settings:
            kw = {"grid_keep": v} if kind == "keep" else {"grid_threshold": v}
            res = pipe.segment([frame], wav, mode="no-prompt", amg=amg, grid="audio", **kw)
            s_s = _after_encoder_s(res.timings)
            boxes = {tuple(b) for b in res.prompts[0]["boxes"]}
            rows[f"{kind} {v:g}"].append(
                {
                    "photo": name,
                    "points": res.prompts[0]["num_points"],
                    "after_encoder_s": s_s,
                    "speedup": (enc_s + f_s) / (enc_s + s_s),
                    "mask_iou": _iou(res.masks[0], full.masks[0]),
                    "mask_recall": (len(boxes & full_boxes) / len(full_boxes))
                    if full_boxes
                    else None,
                    "num_masks": res.prompts[0]["num_masks"],
                }
            )
    summary = []
    for key, rs in rows.items():
        rec = [r["mask_recall"] for r in rs if r["mask_recall"] is not None]
        summary.append(
            {
                "setting": key,
                "points_median": float(np.median([r["points"] for r in rs])),
                "after_encoder_s_median": float(np.median([r["after_encoder_s"] for r in rs])),
                "speedup_median": float(np.median([r["speedup"] for r in rs])),
                "mask_iou_mean": float(np.mean([r["mask_iou"] for r in rs])),
                "mask_iou_min": float(np.min([r["mask_iou"] for r in rs])),
                "mask_recall_mean": float(np.mean(rec)) if rec else None,
            }
        )
    info = machine_info()
    doc = {
        "bundle": str(bundle),
        "random_weights": bool(pipe.bundle.random_weights),
        "weights": pipe.bundle.manifest.get("weights"),
        "amg": amg or "SAM defaults",
        "machine": info,
        "full_grid": full_rows,
        "settings": rows,
        "summary": summary,
        "full_grid_after_encoder_s_median": float(
            np.median([r["after_encoder_s"] for r in full_rows])
        ),
        "encoder_s_median": float(np.median([r["encoder_s"] for r in full_rows])),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "audio_grid.json").write_text(json.dumps(doc, indent=1, default=str))
    (out / "audio_grid.md").write_text(markdown(doc))
    print(markdown(doc))
    return doc


def markdown(doc: dict) -> str:
    """The summary table of :func:`run`'s document."""
    load = doc["machine"].get("loadavg")
    lines = [
        f"bundle `{doc['bundle']}` ({'RANDOM WEIGHTS' if doc.get('random_weights') else 'weights: ' + json.dumps(doc['weights'])}), "
        f"AMG {json.dumps(doc['amg'])}, {len(doc['full_grid'])} photos of audioclip-demo at 224 x 224, load {load}",
        "",
        f"Full 32 x 32 grid: SAM encoder {doc['encoder_s_median']:.1f} s, then {doc['full_grid_after_encoder_s_median']:.1f} s "
        "(automatic masks + crop scoring), medians over the photos.",
        "",
        "| grid='audio' setting | points prompted | after encoder s | speed-up (encoder incl.) | final mask IoU vs full grid (mean / min) | full-grid masks found |",
        "|---|---|---|---|---|---|",
    ]
    for s in doc["summary"]:
        rec = "-" if s["mask_recall_mean"] is None else f"{s['mask_recall_mean']:.2f}"
        lines.append(
            f"| {s['setting']} | {s['points_median']:.0f} | {s['after_encoder_s_median']:.2f} | "
            f"{s['speedup_median']:.1f}x | {s['mask_iou_mean']:.3f} / {s['mask_iou_min']:.3f} | {rec} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("results/audio_grid"))
    p.add_argument("--keeps", default="0.05,0.1,0.2,0.3", help="grid_keep fractions")
    p.add_argument("--thresholds", default="", help="grid_threshold values")
    p.add_argument("--amg", default=None, help="AMG overrides as JSON (default: SAM's defaults)")
    p.add_argument("--photos", type=int, default=None, help="first N photos only")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    floats = lambda s: tuple(float(x) for x in s.split(",") if x.strip())  # noqa: E731
    run(
        a.bundle,
        a.out,
        keeps=floats(a.keeps),
        thresholds=floats(a.thresholds),
        amg=json.loads(a.amg) if a.amg else None,
        threads=a.threads,
        photos=a.photos,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
