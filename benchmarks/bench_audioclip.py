"""AudioCLIP graphs: PyTorch eager (the reference forward) vs the runtime's onnxruntime sessions.

    python -m benchmarks.bench_audioclip --bundle engines/default --out results/

Same weights and inputs in one run: the eager side is the analytic model the graphs were exported
from (FBSP filterbank recomputed per call, adaptive max-pools), the runtime side the bundle's
``audioclip_audio`` / ``audioclip_image`` sessions. Batch 1 and 5 (one AVSBench clip = 5 frames).
Random weights do not change the timings of these dense networks.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from benchmarks.flops import count_flops_torch
from benchmarks.machine import machine_info, matmul_peak
from benchmarks.report import Report
from models.audioclip import load_audioclip
from models.random_init import randomize_batchnorm
from runtime.backends._onnxruntime import create_session
from runtime.bundle import Bundle


def run(
    bundle_dir: Path, out: Path, *, threads: int = 2, repeats: int = 7, batches=(1, 5)
) -> Report:
    """Measure both graphs at each batch size; returns the report (also saved under ``out``)."""
    torch.set_num_threads(threads)
    bundle = Bundle.open(bundle_dir)
    w = bundle.manifest["weights"]["audioclip"]
    model, _ = load_audioclip(
        w.get("path"), config=w["config"], with_text=False, seed=w.get("seed", 0)
    )
    if w.get("source") == "random-init":
        randomize_batchnorm(model, w.get("seed", 0))
    rep = Report(
        "AudioCLIP graphs: PyTorch eager vs onnxruntime (CPU)",
        machine=machine_info(include_torch=True),
    )
    rep.set_peak(matmul_peak(threads=threads))
    rep.notes.append(f"torch threads {threads}, ORT intra-op threads {threads}; weights: {w}")
    audio_sess, ai = create_session(
        bundle.graph_path("audioclip_audio"), providers=["cpu"], threads=threads
    )
    image_sess, ii = create_session(
        bundle.graph_path("audioclip_image"), providers=["cpu"], threads=threads
    )
    t = bundle.graphs["audioclip_audio"]["inputs"][0]["shape"][1]
    rng = np.random.default_rng(0)
    for b in batches:
        wav = (rng.standard_normal((b, t)) * 3000).astype(np.float32)
        img = rng.standard_normal((b, 3, 224, 224)).astype(np.float32)
        wt, it = torch.from_numpy(wav), torch.from_numpy(img)
        fa = count_flops_torch(model.audio, (wt,))
        fi = count_flops_torch(model.visual, (it,))
        with torch.no_grad():
            rep.run(
                lambda wt=wt: model.audio(wt),
                case="audioclip_audio",
                backend="torch eager",
                batch=b,
                group="audio",
                flops=fa,
                repeats=repeats,
                warmup=1,
            )
            rep.run(
                lambda wav=wav: audio_sess.run(None, {"waveform": wav}),
                case="audioclip_audio",
                backend=f"onnxruntime {ai.provider}",
                batch=b,
                group="audio",
                flops=fa,
                repeats=repeats,
                warmup=1,
            )
            rep.run(
                lambda it=it: model.visual.forward_features(it),
                case="audioclip_image",
                backend="torch eager",
                batch=b,
                group="image",
                flops=fi,
                repeats=repeats,
                warmup=1,
            )
            rep.run(
                lambda img=img: image_sess.run(None, {"image": img}),
                case="audioclip_image",
                backend=f"onnxruntime {ii.provider}",
                batch=b,
                group="image",
                flops=fi,
                repeats=repeats,
                warmup=1,
            )
        for g, case in (("audio", "audioclip_audio"), ("image", "audioclip_image")):
            ref = rep.find(case, "torch eager", g, b)
            prov = ai.provider if g == "audio" else ii.provider
            got = rep.find(case, f"onnxruntime {prov}", g, b)
            rep.add_ratio(f"{case} batch {b}: ORT vs eager", ref, got)
    out.mkdir(parents=True, exist_ok=True)
    rep.save(out, "audioclip")
    return rep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=Path("engines/default"))
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args(argv)
    rep = run(a.bundle, a.out, threads=a.threads, repeats=a.repeats)
    print(rep.to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
