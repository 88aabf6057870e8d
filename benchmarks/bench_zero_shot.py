"""Zero-shot strategies: the PyTorch reference pipelines (original control flow) vs the runtime.

    python -m benchmarks.bench_zero_shot                       # tiny bundle (micro SAM), built if needed
    python -m benchmarks.bench_zero_shot --bundle engines/vit_b --strategies point-global
    python -m benchmarks.bench_zero_shot --sam vit_b --strategies point-global   # builds a vit_b bundle

Per strategy, one 5-frame clip (real photos resized to 224 x 224, AVSBench's size, and a real
WAV), the same weights and inputs on both sides, measured in one run:

* reference: reference/zero_shot.py, i.e. the original scripts' control flow
  (``SamPredictor.set_image`` + ``predict`` per frame, ``SamAutomaticMaskGenerator`` for
  No-Prompt, AudioCLIP in PyTorch eager, torchvision preprocessing);
* runtime: ``Pipeline.segment(frames, wav, mode=strategy)`` (onnxruntime, one SAM encoder batch
  per clip, batched prompt sets).

Both sides run the ``sam4avs`` preset (the reference's behaviour) for the point and box
strategies; No-Prompt runs ``sam4avs`` when the bundle has the ``audioclip_audio_1s`` graph and
``default`` otherwise (both sides alike). The agreement of the two sides' masks (min IoU over the
frames) is recorded with each case, and for the heatmap strategies also *both ways across the
heatmap*: the runtime's prompts and SAM fed the reference's heatmaps against the reference's masks,
and the reference's prompts and SAM fed the runtime's heatmaps against the runtime's masks, with the
max heatmap difference. On random weights the heatmaps are nearly flat (1 - cos spans ~1e-5 before
the min-max normalisation, vit_b bundle), so float32 rounding moves the normalised map by ~1e-2,
a few threshold/rank-cutoff cells swap and SAM's best-of-3 choice can flip (a point-dense frame at
IoU 0.60); fed the same heatmap, both sides agree exactly (issue 11, fidelity 5). The SAM image encoder alone (5 frames, batches of ``--sam-batch``
in ORT, one call per frame in PyTorch as ``set_image``) is reported in GFLOP/s against the measured fp32 matmul
peak. Without ``--bundle`` a bundle is built under ``--cache`` (tiny profile: audioclip-tiny +
micro SAM; ``--sam vit_b``: full AudioCLIP + SAM ViT-B, random weights, several GB of RAM).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.flops import count_flops_torch
from benchmarks.machine import machine_info, matmul_peak
from benchmarks.report import Report
from reference.zero_shot import (
    THRESHOLDS,
    load_reference_models,
    ref_config,
    reference_heatmaps,
    reference_no_prompt,
    reference_point_prompt,
    reference_prompt_masks,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO.parent / "shared" / "data" / "audioclip-demo"
PHOTOS = ("cat_1.jpg", "cars_2.jpg", "clock_1.jpg", "coughing_1.jpg", "lightning_1.jpg")
WAV = "cat_3-95694-A-5.wav"
STRATEGIES = ("point-global", "point-local", "point-dense", "heatmap-box", "no-prompt")
GRAPHS = "audioclip_audio,audioclip_image,sam_image_encoder,sam_prompt_decoder"


def ensure_bundle(sam: str, cache: Path) -> Path:
    """A bundle with the four zero-shot graphs for ``sam`` ("micro" = tiny profile), built once."""
    out = cache / f"zero_shot-{sam}"
    if (out / "manifest.json").is_file():
        return out
    from export.build_engines import main as build

    argv = ["--out", str(out), "--graphs", GRAPHS, "--quiet", "--force"]
    argv += ["--profile", "tiny"] if sam == "micro" else ["--sam", sam]
    if build(argv) != 0:
        raise SystemExit(f"bundle build failed: {argv}")
    return out


def _iou_min(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    vals = []
    for x, y in zip(a, b, strict=True):
        u = np.count_nonzero(x | y)
        vals.append(1.0 if u == 0 else np.count_nonzero(x & y) / u)
    return float(min(vals))


def _cross_heatmap_agreement(models, pipe, frames, wav, strategy: str, box: dict) -> dict:
    """Agreement both ways across the heatmap (preset sam4avs): min IoU of the runtime's prompts +
    SAM on the reference's heatmaps vs the reference's masks, of the reference's prompts + SAM on
    the runtime's heatmaps vs the runtime's masks, and the max abs heatmap difference."""
    from runtime.modes import heatmap_sam

    cfg = ref_config("sam4avs")
    t = THRESHOLDS["s4"].get(strategy)
    with torch.no_grad():
        ref_maps = np.stack(reference_heatmaps(models, frames, wav, cfg=cfg)).astype(np.float32)
    rt_maps = heatmap_sam.heatmaps(pipe.stages(), frames, wav, None)
    rt_on_ref = [
        o.mask
        for o in heatmap_sam.segment_from_heatmaps(
            pipe.stages(),
            frames,
            ref_maps,
            strategy,
            t=t,
            quirk=cfg.quirks,
            frame_policy="reference",
        )
    ]
    with torch.no_grad():
        ref_on_rt = reference_prompt_masks(models, frames, list(rt_maps), strategy, cfg=cfg, t=t)[0]
    out = {
        "heatmap_max_abs_diff": float(np.abs(rt_maps - ref_maps).max()),
        "min_iou_runtime_on_reference_heatmaps": _iou_min(box["ref"], rt_on_ref),
        "min_iou_reference_on_runtime_heatmaps": _iou_min(box["rt"], ref_on_rt),
    }
    print(
        f"{strategy}: across the heatmap: max |heatmap diff| {out['heatmap_max_abs_diff']:.3g}; runtime on the "
        f"reference's heatmaps min IoU {out['min_iou_runtime_on_reference_heatmaps']:.4f}; reference on the "
        f"runtime's heatmaps min IoU {out['min_iou_reference_on_runtime_heatmaps']:.4f}",
        flush=True,
    )
    return out


def run(
    bundle_dir: Path,
    out: Path,
    *,
    strategies=STRATEGIES,
    threads: int = 2,
    repeats: int = 3,
    amg_points: int = 32,
    np_frames: int = 5,
    sam_batch: int = 5,
) -> Report:
    """Measure every strategy on both sides; returns the report (also saved under ``out``)."""
    import runtime
    from runtime.modes.heatmap_sam import HEATMAP_STRATEGIES
    from runtime.modes.no_prompt import REFERENCE_1S_GRAPH

    torch.set_num_threads(threads)
    frames = [
        np.asarray(Image.open(DEMO / n).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC))
        for n in PHOTOS
    ]
    wav = DEMO / WAV
    models = load_reference_models(bundle_dir)
    pipes = {
        p: runtime.load(bundle_dir, preset=p, threads=threads, providers=["cpu"])
        for p in ("default", "sam4avs")
    }
    for p in pipes.values():
        p.sam_runner(max_batch=sam_batch)
    sam_cfg = pipes["default"].manifest["preprocessing"]["sam"]
    rep = Report(
        f"Zero-shot strategies: PyTorch reference vs runtime (SAM {sam_cfg['config']}, 5 frames 224x224)",
        machine=machine_info(include_torch=True),
    )
    rep.set_peak(matmul_peak(threads=threads))
    rep.notes.append(f"bundle {bundle_dir}; weights {pipes['default'].manifest['weights']}")
    rep.notes.append(
        f"torch threads {threads}, ORT intra-op threads {threads}; repeats {repeats} "
        f"(No-Prompt: 1, AMG points_per_side {amg_points}, {np_frames} frames); "
        f"runtime SAM encoder batch {sam_batch}"
    )

    # SAM image encoder alone: GFLOP/s vs the matmul peak.
    runner = pipes["default"].sam_runner()
    s = runner.image_size
    batch = np.stack([runner.preprocess(f)[0][0] for f in frames])
    flops1 = count_flops_torch(models.sam.image_encoder, (torch.from_numpy(batch[:1]),))
    with torch.no_grad():
        rep.run(
            lambda: [
                models.sam.image_encoder(torch.from_numpy(batch[i : i + 1]))
                for i in range(len(frames))
            ],
            case="sam_image_encoder",
            backend="torch eager (per frame)",
            group="encoder",
            batch=len(frames),
            flops=flops1 * len(frames),
            repeats=repeats,
            warmup=1,
        )
    rep.run(
        lambda: runner.embed(frames),
        case="sam_image_encoder",
        backend=f"onnxruntime (batch {sam_batch})",
        group="encoder",
        batch=len(frames),
        flops=flops1 * len(frames),
        repeats=repeats,
        warmup=1,
        extra={"input": f"{len(frames)}x3x{s}x{s}"},
    )
    rep.add_ratio(
        "SAM image encoder: ORT vs eager",
        rep.find("sam_image_encoder", "torch eager (per frame)"),
        rep.find("sam_image_encoder", f"onnxruntime (batch {sam_batch})"),
    )

    for strategy in strategies:
        if strategy == "no-prompt":
            preset = "sam4avs" if pipes["sam4avs"].bundle.has(REFERENCE_1S_GRAPH) else "default"
            amg = {"points_per_side": amg_points}
            fr = frames[:np_frames]
            box: dict = {}

            def ref_fn(fr=fr, amg=amg, preset=preset, box=box):
                box["ref"] = reference_no_prompt(models, fr, wav, preset=preset, amg=amg)[0]

            def rt_fn(fr=fr, amg=amg, preset=preset, box=box):
                box["rt"] = pipes[preset].segment(fr, wav, mode="no-prompt", amg=amg).masks

            reps, warm = 1, 0
        else:
            preset = "sam4avs"
            fr = frames
            box = {}

            def ref_fn(fr=fr, strategy=strategy, box=box):
                box["ref"] = reference_point_prompt(
                    models, fr, wav, strategy=strategy, preset="sam4avs"
                )

            def rt_fn(fr=fr, strategy=strategy, box=box):
                box["rt"] = pipes["sam4avs"].segment(fr, wav, mode=strategy).masks

            reps, warm = repeats, 1
        with torch.no_grad():
            a = rep.run(
                ref_fn,
                case=strategy,
                backend="reference (torch, original flow)",
                group="clip",
                batch=len(fr),
                repeats=reps,
                warmup=warm,
                extra={"preset": preset},
            )
        b = rep.run(
            rt_fn,
            case=strategy,
            backend="runtime (onnxruntime)",
            group="clip",
            batch=len(fr),
            repeats=reps,
            warmup=warm,
            extra={"preset": preset},
        )
        agree = _iou_min(box["ref"], box["rt"])
        b.extra["min_iou_vs_reference"] = agree
        if strategy in HEATMAP_STRATEGIES:
            b.extra.update(
                _cross_heatmap_agreement(models, pipes["sam4avs"], fr, wav, strategy, box)
            )
        rep.add_ratio(
            f"{strategy}: runtime vs reference", a, b, note=f"preset {preset}; min IoU {agree:.4f}"
        )
        print(
            f"{strategy}: reference {a.median_ms / 1000:.2f} s, runtime {b.median_ms / 1000:.2f} s, "
            f"min IoU {agree:.4f}",
            flush=True,
        )
    out.mkdir(parents=True, exist_ok=True)
    rep.save(out, f"zero_shot_{sam_cfg['config']}")
    return rep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="bundle with the four zero-shot graphs (else built)",
    )
    p.add_argument(
        "--sam",
        default="micro",
        choices=("micro", "vit_b", "vit_l", "vit_h"),
        help="SAM of the bundle built when --bundle is not given (micro: the tiny profile)",
    )
    p.add_argument(
        "--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "avs_bench_bundles"
    )
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--amg-points", type=int, default=32, help="No-Prompt points_per_side (SAM's default 32)"
    )
    p.add_argument("--no-prompt-frames", type=int, default=5)
    p.add_argument(
        "--sam-batch",
        type=int,
        default=5,
        help="runtime SAM encoder batch (5: the clip in one call; 1 for full-size SAM on a small CPU box)",
    )
    a = p.parse_args(argv)
    strategies = [s for s in a.strategies.split(",") if s]
    bad = sorted(set(strategies) - set(STRATEGIES))
    if bad:
        p.error(f"unknown strategies {bad}; choose from {STRATEGIES}")
    bundle = a.bundle or ensure_bundle(a.sam, a.cache)
    rep = run(
        bundle,
        a.out,
        strategies=strategies,
        threads=a.threads,
        repeats=a.repeats,
        amg_points=a.amg_points,
        np_frames=a.no_prompt_frames,
        sam_batch=a.sam_batch,
    )
    print(rep.to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
