"""AC-FPN on one 5-frame clip: the PyTorch reference pipeline vs the runtime, end to end and per stage.

    python -m benchmarks.bench_acfpn --bundle /tmp/full_acfpn --out results/
    python -m benchmarks.bench_acfpn --bundle /tmp/tiny --out /tmp/bench --repeats 3   # smoke run

Same weights and inputs in one run:

- **reference** (PyTorch eager, the Sam4AVS control flow of ``Pred_endecoder`` in eval mode): the
  frames through torchvision's ``ToTensor -> Resize(224, bicubic) -> CenterCrop(224) -> Normalize``,
  the wav through ``librosa.load(sr=44100)``, forced to N seconds, cut into N 1-s chunks, each
  tiled 5x (the 5-s clips), times the input scale the AC-FPN weights expect; then the audio tower
  on the N clips, and the visual tower + fusion + FPN neck + head on the N frames, one batch each.
  The model is rebuilt from the bundle manifest's weight provenance (:func:`reference_model`).
- **runtime**: ``Pipeline.segment(frame files, wav, mode="acfpn")`` (preprocessing included), and
  its stages: the ``audioclip_audio`` (or ``acfpn_audio``) graph and the ``acfpn`` graph.

Default clip: five of the real photos in ``../shared/data/audioclip-demo`` squashed to 224 x 224
PNGs (as AVSBench's frames are) and one real ESC-50 wav resampled to a 16 kHz 16-bit wav (as
AVSBench's are), written to a temporary folder. Reports medians, spread, GFLOP/s and % of the
numpy fp32 matmul peak (FLOPs from ``count_flops_torch``), peak RSS, and reference/runtime ratios,
as JSON + Markdown via ``Report.save`` (``acfpn.json`` / ``acfpn.md``). The reference and runtime
runs of each case alternate (:func:`interleaved`) so that load drift on a shared machine hits both.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.flops import count_flops_torch
from benchmarks.machine import machine_info, matmul_peak
from benchmarks.report import Report
from benchmarks.timing import Measurement, measure
from reference.acfpn import reference_audio, reference_frames, reference_logits, reference_model
from reference.media import make_demo_clip
from runtime.bundle import Bundle

__all__ = [
    "interleaved",
    "run",
    "main",
]

REPO = Path(__file__).resolve().parents[1]
# ------------------------------------------------------------------------------------------------
# the benchmark


def interleaved(
    fns: Sequence[Any],
    *,
    repeats: int,
    warmup: int = 1,
    labels: Sequence[str] | None = None,
    flops: float | None = None,
    pause_s: float = 0.3,
) -> list[Measurement]:
    """Time zero-argument callables in alternation (A B A B ...), one Measurement each.

    On a shared machine the load drifts; alternating the runs exposes every callable to the same
    drift, so their ratio is fairer than timing all runs of one and then all of the other. Each
    call is one ``measure(fn, warmup=0, repeats=1)``; the rounds are merged: samples in order,
    CPU and wall time summed, peak RSS and lifetime max RSS the maxima, machine busy cores the
    wall-time-weighted mean, load averages of the first and last round. ``pause_s``: sleep before
    each timed call, so that the thread pools of the previous call (OpenMP, onnxruntime), which
    spin for a while after their work, do not steal cores from the next one.
    """
    labels = list(labels or [f"fn{i}" for i in range(len(fns))])
    for fn in fns:
        for _ in range(warmup):
            fn()
    rounds: list[list[Measurement]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            time.sleep(pause_s)
            rounds[i].append(
                measure(fn, warmup=0, repeats=1, label=labels[i], flops=flops, gc_collect=False)
            )
    return [_merge(ms, labels[i], warmup, flops) for i, ms in enumerate(rounds)]


def _merge(ms: list[Measurement], label: str, warmup: int, flops: float | None) -> Measurement:
    def mx(vals):
        vals = [v for v in vals if v is not None]
        return max(vals) if vals else None

    wall = [m.wall_time_s or 0.0 for m in ms]
    busy = [
        (m.machine_busy_cores, w)
        for m, w in zip(ms, wall, strict=True)
        if m.machine_busy_cores is not None
    ]
    return Measurement(
        label=label,
        samples_ms=[x for m in ms for x in m.samples_ms],
        warmup=warmup,
        flops=flops,
        rss_before_mb=ms[0].rss_before_mb,
        rss_after_mb=ms[-1].rss_after_mb,
        rss_peak_mb=mx(m.rss_peak_mb for m in ms),
        rss_peak_source="max of interleaved rounds",
        maxrss_mb=mx(m.maxrss_mb for m in ms),
        cpu_time_s=sum(m.cpu_time_s or 0.0 for m in ms),
        wall_time_s=sum(wall),
        machine_busy_cores=(sum(b * w for b, w in busy) / max(sum(w for _, w in busy), 1e-12))
        if busy
        else None,
        loadavg_before=ms[0].loadavg_before,
        loadavg_after=ms[-1].loadavg_after,
        extra={"interleaved": True},
    )


def run(
    bundle_dir: str | Path,
    out: str | Path,
    *,
    frames: Sequence[str | Path] | None = None,
    audio: str | Path | None = None,
    threads: int = 2,
    repeats: int = 5,
    warmup: int = 1,
    providers: Sequence[str] | None = None,
    demo_dir: str | Path | None = None,
) -> Report:
    """Measure reference vs runtime on one clip; returns the Report (saved as ``out/acfpn.{json,md}``)."""
    import runtime

    torch.set_num_threads(threads)
    bundle = Bundle.open(bundle_dir)
    model = reference_model(bundle)
    pipe = runtime.load(bundle_dir, providers=providers or ["cpu"], threads=threads)
    entry = bundle.graphs["acfpn"]
    audio_graph = entry.get("audio_graph", "audioclip_audio")
    scale = float(entry.get("audio_input_scale", pipe.preset_value("audio_input_scale")))
    antialias = bool(pipe.preset_value("image_antialias"))
    tmp = None
    if frames is None or audio is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_acfpn_")
        demo = (
            Path(demo_dir)
            if demo_dir
            else (
                Path(os.environ.get("AVS_SHARED_DATA", REPO.parent / "shared" / "data"))
                / "audioclip-demo"
            )
        )
        if not demo.is_dir():
            raise FileNotFoundError(
                f"demo media not found: {demo} (pass --frames and --audio, or set AVS_SHARED_DATA)"
            )
        dpaths, dwav = make_demo_clip(demo, tmp.name)
        frames = frames or dpaths
        audio = audio or dwav
    frames = [Path(f) for f in frames]
    n = len(frames)

    rep = Report(
        f"AC-FPN, one {n}-frame clip: PyTorch reference (eager) vs runtime (onnxruntime)",
        machine=machine_info(include_torch=True),
    )
    rep.set_peak(matmul_peak(threads=threads))
    rep.notes.append(
        f"torch threads {threads}, ORT intra-op threads {threads}; bundle {bundle_dir} "
        f"(profile {bundle.manifest.get('profile')}); weights: {bundle.manifest['weights'].get('acfpn')}"
    )
    if bundle.random_weights:
        rep.notes.append(
            "RANDOM WEIGHTS: timings are valid (dense networks), masks are meaningless"
        )
    rep.notes.append(
        f"clip: {n} frames {[f.name for f in frames]}, audio {Path(audio).name}; "
        f"audio graph {audio_graph}, input scale {scale:g}, image antialias {antialias}"
    )

    # inputs of the per-stage runs, from the runtime's own preprocessing
    from runtime.preprocess.image import load_frames

    imgs_np = pipe.clip_images(load_frames(frames))
    wav_np = pipe.audioclip_audio_input(audio, None, n, input_scale=scale, graph=audio_graph)
    imgs_t, wav_t = torch.from_numpy(imgs_np), torch.from_numpy(wav_np)
    with torch.no_grad():
        emb_t = model.encode_audio(wav_t)
    emb_np = emb_t.numpy()
    f_audio = count_flops_torch(model.audio, (wav_t,))
    f_acfpn = count_flops_torch(model, (imgs_t, emb_t))

    # parity of the two sides on this clip (same weights?)
    ref = reference_logits(
        model,
        reference_frames(frames, antialias=antialias),
        reference_audio(audio, n, input_scale=scale),
    )
    import runtime
    from evaluation.predictors import segment_with_logits

    rec_pipe = runtime.load(bundle_dir, providers=providers or ["cpu"], threads=threads)
    _, got = segment_with_logits(rec_pipe, frames, audio)
    err = max(float(np.max(np.abs(a - b))) for a, b in zip(ref, got, strict=True))
    agree = float(np.mean([np.mean((a > 0) == (b > 0)) for a, b in zip(ref, got, strict=True)]))
    rep.notes.append(
        f"parity on this clip: max |logit_ref - logit_runtime| = {err:.3g}, mask agreement {agree:.6f}"
    )
    del rec_pipe

    audio_sess = pipe.session(audio_graph)
    acfpn_sess = pipe.session("acfpn")
    prov = pipe.providers()

    def ref_e2e():
        with torch.no_grad():
            z = reference_logits(
                model,
                reference_frames(frames, antialias=antialias),
                reference_audio(audio, n, input_scale=scale),
            )
        return [s > 0 for s in z]  # sigmoid(z) > 0.5

    def no_grad(fn):
        def call():
            with torch.no_grad():
                return fn()

        return call

    e2e = f"end to end ({n} frames, preprocessing included)"
    pairs = [  # (group, case, flops, (reference backend, fn), (runtime backend, fn))
        (
            e2e,
            "acfpn clip",
            f_audio + f_acfpn,
            ("torch eager (reference)", ref_e2e),
            (
                f"runtime segment ({prov.get('acfpn', '?')})",
                lambda: pipe.segment(frames, audio, mode="acfpn"),
            ),
        ),
        (
            "preprocessing",
            "frames + audio",
            None,
            (
                "torchvision + librosa (reference)",
                lambda: (
                    reference_frames(frames, antialias=antialias),
                    reference_audio(audio, n, input_scale=scale),
                ),
            ),
            (
                "runtime (numpy + soxr)",
                lambda: (
                    pipe.clip_images(load_frames(frames)),
                    pipe.audioclip_audio_input(
                        audio, None, n, input_scale=scale, graph=audio_graph
                    ),
                ),
            ),
        ),
        (
            "stages",
            "audio tower",
            f_audio,
            ("torch eager", no_grad(lambda: model.audio(wav_t))),
            (
                f"onnxruntime {prov[audio_graph]} ({audio_graph})",
                lambda: audio_sess.run(None, {"waveform": wav_np}),
            ),
        ),
        (
            "stages",
            "visual + neck + head",
            f_acfpn,
            ("torch eager", no_grad(lambda: model(imgs_t, emb_t))),
            (
                f"onnxruntime {prov['acfpn']} (acfpn)",
                lambda: acfpn_sess.run(None, {"image": imgs_np, "audio_embedding": emb_np}),
            ),
        ),
    ]
    for group, case, flops, (ref_name, ref_fn), (rt_name, rt_fn) in pairs:
        a, b = interleaved(
            [ref_fn, rt_fn],
            repeats=repeats,
            warmup=warmup,
            labels=[f"{case}/{ref_name}", f"{case}/{rt_name}"],
            flops=flops,
        )
        rep.add(a, case=case, backend=ref_name, group=group, batch=n)
        rep.add(b, case=case, backend=rt_name, group=group, batch=n)
        rep.add_ratio(f"{case}: reference / runtime", a, b, note="runs interleaved")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rep.save(out, "acfpn")
    if tmp is not None:
        tmp.cleanup()
    return rep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--bundle", type=Path, required=True, help="bundle with audioclip_audio + acfpn graphs"
    )
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument(
        "--frames",
        nargs="+",
        default=None,
        help="frame image files (default: 5 demo photos at 224x224)",
    )
    p.add_argument(
        "--audio", default=None, help="WAV file (default: a demo clip resampled to 16 kHz)"
    )
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--providers", default=None, help="comma-separated ORT providers (default cpu)")
    a = p.parse_args(argv)
    if (a.frames is None) != (a.audio is None):
        p.error("--frames and --audio go together")
    prov = [x.strip() for x in a.providers.split(",")] if a.providers else None
    rep = run(
        a.bundle,
        a.out,
        frames=a.frames,
        audio=a.audio,
        threads=a.threads,
        repeats=a.repeats,
        warmup=a.warmup,
        providers=prov,
    )
    print(rep.to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
