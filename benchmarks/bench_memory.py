"""Peak RSS of each mode (and of the stages under it), each in a fresh process.

``python -m benchmarks.bench_memory --bundle B [--modes point-global,acfpn] [--frames 5] [--json out.json]``

A stage is a mode name (``segment`` on a clip of the real photos of ``../shared/data/audioclip-demo``
resized to 224x224 and one of its WAVs) or one of ``load`` (every session of the bundle),
``sam_encoder`` (the SAM sessions, then the frames through the encoder), ``audioclip`` (both AudioCLIP
towers on the clip). Each runs in its own interpreter so that one stage's high-water mark (VmHWM)
cannot hide another's; the load average is recorded with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.probes import status_mb

STAGES = ("load", "sam_encoder", "audioclip")
PHOTOS = ("cars_1.jpg", "cat_1.jpg", "clock_1.jpg", "coughing_1.jpg", "lightning_1.jpg")
WAV = "car_horn_1-24074-A-43.wav"


def _status_mb(key: str) -> float:
    v = status_mb(key)
    return float("nan") if v is None else v


def run_stage(bundle: str, stage: str, frames: int, data: Path) -> dict:
    """Run one stage in this process; returns its figures (call it in a fresh process)."""
    import numpy as np
    from PIL import Image

    import runtime

    clip = [
        np.asarray(
            Image.open(data / n).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
        )
        for n in (PHOTOS * frames)[:frames]
    ]
    wav = str(data / WAV)
    out: dict = {"stage": stage, "frames": frames, "rss_start_mb": round(_status_mb("VmRSS"))}
    t, c = time.perf_counter(), os.times()
    pipe = runtime.load(bundle)
    if stage == "load":
        pipe.warmup()
    elif stage == "sam_encoder":
        pipe.sam_runner()
        out["rss_sessions_mb"] = round(_status_mb("VmRSS"))
        pipe.sam_runner().embed(clip)
    elif stage == "audioclip":
        pipe.warmup(["audioclip_audio", "audioclip_image"])
        out["rss_sessions_mb"] = round(_status_mb("VmRSS"))
        pipe.audio_embeddings(wav, None, len(clip))
        pipe.image_features(pipe.clip_images(clip, squash=True))
    else:
        res = pipe.segment(clip, wav, mode=stage)
        out["timings_ms"] = {k: round(v, 1) for k, v in res.timings.items()}
    c2 = os.times()
    out.update(
        wall_s=round(time.perf_counter() - t, 2),
        cpu_s=round(c2.user + c2.system - c.user - c.system, 2),
        rss_end_mb=round(_status_mb("VmRSS")),
        peak_rss_mb=round(_status_mb("VmHWM")),
        loadavg=os.getloadavg(),
        sam_batch=pipe.sam_runner().max_batch if "sam_image_encoder" in pipe.session_info else None,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bundle", required=True)
    ap.add_argument(
        "--modes",
        default="load,sam_encoder,audioclip,point-global",
        help="comma-separated stages and/or mode names",
    )
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument(
        "--data", default=os.environ.get("AVS_SHARED_DATA", "../shared/data") + "/audioclip-demo"
    )
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run this stage here and print JSON
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(run_stage(a.bundle, a.one, a.frames, Path(a.data))))
        return 0
    rows = []
    for stage in [s for s in a.modes.split(",") if s]:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.bench_memory",
            "--bundle",
            a.bundle,
            "--frames",
            str(a.frames),
            "--data",
            a.data,
            "--one",
            stage,
        ]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            print(f"{stage}: failed\n{p.stderr[-2000:]}", file=sys.stderr)
            return 1
        row = json.loads(p.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{stage:14s} peak RSS {row['peak_rss_mb']:6d} MB  end {row['rss_end_mb']:6d} MB  "
            f"wall {row['wall_s']:7.1f} s  load {row['loadavg'][0]:.2f}",
            flush=True,
        )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
