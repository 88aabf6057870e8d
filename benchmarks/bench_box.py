"""Box-Prompt on a 5-frame clip: the PyTorch reference pipeline vs the runtime, same weights and inputs.

    python -m benchmarks.bench_box --bundle engines/box --tokenizers ~/hf-tokenizers --out results/

The reference follows zero_shot/*/box_prompt.py step by step (CLAP ``get_audio_embedding`` on the
int16-round-tripped, repeat-padded 1-s chunks; cosine with the CLAP text bank; ``topk``; one
GroundingDINO forward per chosen label with its own tokenizer and BERT; ``SamPredictor.set_image`` +
``predict_torch(boxes, multimask_output=False)``; union). Its models are rebuilt from the bundle
manifest's weight provenance (official files by path, or the same seeded random weights), so both
sides compute the same function; the masks' IoU is reported next to the timings.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.machine import machine_info
from benchmarks.report import Report
from reference.box import reference_box_pipeline, reference_models

PHOTOS = ("cat_1.jpg", "cars_1.jpg", "clock_1.jpg", "coughing_1.jpg", "lightning_1.jpg")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def run(
    bundle_dir: Path,
    tokenizers: Path | None,
    demo_dir: Path,
    out: Path,
    *,
    k: int = 1,
    threads: int = 2,
    repeats: int = 3,
) -> Report:
    """Time the whole Box-Prompt mode on a 5-frame clip both ways; returns (and saves) the report."""
    import runtime

    torch.set_num_threads(threads)
    pipe = runtime.load(bundle_dir, threads=threads, providers=["cpu"])
    models = reference_models(pipe.manifest, tokenizers)
    labels = list(pipe.manifest["labels"]["box_prompt"]["names"])
    pre = pipe.manifest["preprocessing"]["detector"]
    frames = [
        np.asarray(
            Image.open(demo_dir / p).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
        )
        for p in PHOTOS
    ]
    audio = demo_dir / "cat_3-95694-A-5.wav"
    rep = Report(
        f"Box-Prompt, 5 frames 224x224, k={k}: PyTorch reference vs runtime (CPU)",
        machine=machine_info(include_torch=True),
    )
    rep.notes.append(
        f"threads {threads}; weights: { {n: w.get('config') for n, w in pipe.manifest['weights'].items()} }"
        + ("; RANDOM WEIGHTS" if pipe.bundle.random_weights else "")
    )
    ref_out = reference_box_pipeline(models, frames, audio, labels, k, pre)
    got = pipe.segment(frames, audio, mode="box", k=k)
    ious = [_iou(a, b["mask"]) for a, b in zip(got.masks, ref_out, strict=True)]
    same = all(p["labels"] == r["labels"] for p, r in zip(got.prompts, ref_out, strict=True))
    rep.notes.append(
        f"mask IoU runtime vs reference per frame: {[round(v, 5) for v in ious]}; same labels: {same}; "
        f"boxes per frame: {[len(p['boxes_xyxy']) for p in got.prompts]}"
    )
    rep.run(
        lambda: reference_box_pipeline(models, frames, audio, labels, k, pre),
        case="box mode, 5 frames",
        backend="torch reference",
        group="box",
        batch=5,
        repeats=repeats,
        warmup=0,
    )
    rep.run(
        lambda: pipe.segment(frames, audio, mode="box", k=k),
        case="box mode, 5 frames",
        backend=f"runtime {pipe.providers().get('detector', 'cpu')}",
        group="box",
        batch=5,
        repeats=repeats,
        warmup=1,
    )
    rep.add_ratio(
        "box mode: runtime vs reference",
        rep.find("box mode, 5 frames", "torch reference", "box", 5),
        rep.find(
            "box mode, 5 frames", f"runtime {pipe.providers().get('detector', 'cpu')}", "box", 5
        ),
    )
    rep.notes.append(
        "runtime stage timings (last call, ms): "
        + ", ".join(
            f"{a} {b:.0f}" for a, b in pipe.segment(frames, audio, mode="box", k=k).timings.items()
        )
    )
    out.mkdir(parents=True, exist_ok=True)
    rep.save(out, "box")
    return rep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--bundle",
        type=Path,
        required=True,
        help="bundle with clap_audio, detector and the SAM graphs",
    )
    p.add_argument(
        "--tokenizers",
        type=Path,
        default=None,
        help="folder with roberta-base/ and bert-base-uncased/",
    )
    p.add_argument(
        "--demo",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared/data/audioclip-demo",
    )
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    rep = run(a.bundle, a.tokenizers, a.demo, a.out, k=a.k, threads=a.threads, repeats=a.repeats)
    print(rep.to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
