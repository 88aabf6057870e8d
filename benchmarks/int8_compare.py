"""fp32 vs int8 bundle: time per call of each quantised graph, and mask agreement of whole modes.

    python -m benchmarks.int8_compare --fp32 engines/default --int8 engines/int8 \\
        --frames ../shared/data/audioclip-demo/cat_1.jpg ../shared/data/audioclip-demo/cars_1.jpg \\
        --audio ../shared/data/audioclip-demo/cat_3-95694-A-5.wav --modes point-global --repeats 3

Graph times are medians of ``--repeats`` calls on one input (batch 1), the fp32 and int8 sessions
called in turn so that load from other processes hits both alike. Modes run once per bundle on the
given frames; the mask IoU of int8 vs fp32 is reported per frame (1.0 when both masks are empty).
The load average and the CPU's int8/bf16 instruction sets are printed with the figures; a bundle
built from random weights is labelled as such. Prints a markdown table; ``--json`` also writes JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from pathlib import Path

import numpy as np

import runtime
from runtime.bundle import Bundle
from runtime.preprocess.image import load_frames

INT8_GRAPHS = ("sam_image_encoder", "audioclip_audio", "audioclip_image")


def cpu_features() -> list[str]:
    """The CPU flags that decide int8/bf16 speed (avx2, avx512*, vnni, amx, bf16) from /proc/cpuinfo."""
    try:
        flags = next(
            line
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        ).split()
    except (OSError, StopIteration):
        return []
    return sorted(
        f
        for f in flags
        if f == "avx2" or f.startswith(("avx512", "amx")) or "vnni" in f or "bf16" in f
    )


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def graph_input(pipe, graph: str, frame: np.ndarray, audio: Path) -> np.ndarray:
    """One batch-1 input of ``graph`` from the runtime's own preprocessing."""
    if graph == "sam_image_encoder":
        return pipe.sam_runner().preprocess(frame)[0]
    if graph == "audioclip_image":
        return pipe.clip_images([frame])
    return pipe.audioclip_audio_input(audio, None, 1, graph=graph)


def time_graphs(load, frame, audio, repeats: int) -> dict[str, dict[str, float]]:
    """Per graph, fresh pipelines (``load(which)``) so that only that graph's two sessions are held."""
    out = {}
    for g in INT8_GRAPHS:
        fp32, int8 = load("fp32"), load("int8")
        if not (fp32.bundle.has(g) and int8.bundle.has(g)):
            continue
        x = graph_input(fp32, g, frame, audio)
        ts: dict[str, list[float]] = {"fp32": [], "int8": []}
        for _ in range(repeats + 1):  # the first call of each is a warm-up
            for name, pipe in (("fp32", fp32), ("int8", int8)):
                t0 = time.perf_counter()
                pipe.run(g, x)
                ts[name].append(time.perf_counter() - t0)
        out[g] = {k: float(np.median(v[1:])) * 1000 for k, v in ts.items()}
        out[g]["load"] = loadavg()
        del fp32, int8
        gc.collect()
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare_modes(load, frames, audio, modes) -> dict[str, dict]:
    """Each mode on each bundle, one pipeline alive at a time (two SAM encoders do not fit beside a mode)."""
    out = {}
    for mode in modes:
        res = {}
        for name in ("fp32", "int8"):
            pipe = load(name)
            t0 = time.perf_counter()
            res[name] = pipe.segment(frames, audio, mode=mode)
            res[name + "_s"] = time.perf_counter() - t0
            del pipe
            gc.collect()
        ious = [iou(a, b) for a, b in zip(res["fp32"].masks, res["int8"].masks, strict=True)]
        out[mode] = {
            "fp32_s": res["fp32_s"],
            "int8_s": res["int8_s"],
            "iou": ious,
            "load": loadavg(),
            "precision": res["int8"].precision,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fp32", type=Path, required=True, help="the fp32 bundle")
    p.add_argument("--int8", type=Path, required=True, help="the same bundle after --int8")
    p.add_argument("--frames", type=Path, nargs="+", required=True, help="image files")
    p.add_argument("--audio", type=Path, required=True, help="a WAV file")
    p.add_argument(
        "--modes", default="point-global", help="comma-separated modes to compare ('' for none)"
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="timed calls per graph (after one warm-up)"
    )
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    for b in (args.fp32, args.int8):
        Bundle.open(b)

    def load(which: str):
        return runtime.load(
            getattr(args, which), providers=["cpu"], threads=args.threads, cache_mb=0
        )

    int8 = load("int8")
    frames = load_frames(args.frames)
    random = load("fp32").bundle.random_weights or int8.bundle.random_weights
    head = {
        "machine": platform.processor() or platform.machine(),
        "cpu_flags": cpu_features(),
        "random_weights": random,
        "load_start": loadavg(),
    }
    graphs = time_graphs(load, frames[0], args.audio, args.repeats)
    modes = compare_modes(load, frames, args.audio, [m for m in args.modes.split(",") if m])
    print(
        f"# fp32 vs int8{'  (RANDOM WEIGHTS)' if random else ''}\n\nCPU flags: {' '.join(head['cpu_flags'])}; "
        f"load average at start {head['load_start']:.2f}\n"
    )
    print(
        "| graph (batch 1) | fp32 ms | int8 ms | speed-up | load | cosine_min vs fp32 (build) |\n|---|---|---|---|---|---|"
    )
    for g, r in graphs.items():
        c = int8.bundle.graphs[g].get("agreement", {}).get("cosine_min", float("nan"))
        print(
            f"| {g} | {r['fp32']:.0f} | {r['int8']:.0f} | {r['fp32'] / r['int8']:.2f}x | {r['load']:.1f} | {c:.4f} |"
        )
    if modes:
        print(
            f"\n| mode ({len(frames)} frames) | fp32 s | int8 s | speed-up | mask IoU min / mean | load |\n|---|---|---|---|---|---|"
        )
        for m, r in modes.items():
            print(
                f"| {m} | {r['fp32_s']:.1f} | {r['int8_s']:.1f} | {r['fp32_s'] / r['int8_s']:.2f}x | "
                f"{min(r['iou']):.3f} / {np.mean(r['iou']):.3f} | {r['load']:.1f} |"
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    **head,
                    "graphs": graphs,
                    "modes": modes,
                    "inputs": {"frames": [str(f) for f in args.frames], "audio": str(args.audio)},
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
