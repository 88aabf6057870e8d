"""SAM vit_l and vit_h end to end: build the graphs (random weights), run point-dense and No-Prompt on one frame.

    python -m benchmarks.bench_sam_sizes --work /work/bundles/sam-sizes --sizes vit_l,vit_h --out DIR

For each size: ``export/build_engines.py --sam SIZE`` (the AudioCLIP towers + the three SAM graphs, full
size, random weights, parity against segment-anything's own ImageEncoderViT / MaskDecoder recorded in
the manifest) in a child process, then a second child that loads the bundle and segments one generated
640x480 frame with 1 s of audio in ``point-dense`` and ``no-prompt``. Each child's wall time and peak
RSS come from ``os.wait4`` (that child alone). Bundles go to ``--work`` (outside the repository: vit_h
is ~2.6 GB); ``--reuse`` keeps a bundle already built there with its recorded build figures.
Not a test: nothing here asserts a speed. Results: ``sam_sizes.json`` / ``sam_sizes.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRAPHS = "audioclip_audio,audioclip_image,sam_image_encoder,sam_prompt_decoder,sam_point_decoder"
MODES = ("point-dense", "no-prompt")

RUN_CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[3])
import runtime
from runtime.media.demo import demo_inputs
t0 = time.perf_counter()
pipe = runtime.load(sys.argv[1], threads=int(sys.argv[2]) or None)
pipe.warmup()
out = {"load_s": round(time.perf_counter() - t0, 2), "modes": {}}
frames, audio, rate = demo_inputs(1, (480, 640))
for mode in ("point-dense", "no-prompt"):
    t = time.perf_counter()
    r = pipe.segment(frames, audio, rate, mode=mode)
    m = np.asarray(r.masks[0])
    out["modes"][mode] = {
        "s_per_frame": round(time.perf_counter() - t, 2),
        "mask_shape": list(m.shape), "mask_dtype": str(m.dtype), "mask_pixels": int(m.sum()),
        "prompt": r.info()["frames"][0]["prompt"] is not None,
        "random_weights": r.random_weights,
    }
print("RESULT " + json.dumps(out))
"""


def run_child(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> dict:
    """Run ``cmd`` (output to ``log``); exit code, wall seconds, peak RSS (MB) and the 1-min load."""
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "rc": proc.returncode,
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
        "loadavg_start": round(load0, 2),
        "loadavg_end": round(os.getloadavg()[0], 2),
    }


def bundle_mb(d: Path) -> float:
    return round(sum(p.stat().st_size for p in d.iterdir() if p.is_file()) / 1e6, 1)


def one_size(size: str, work: Path, *, reuse: bool, threads: int) -> dict:
    out = work / size
    figures = work / f"{size}.build.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if reuse and (out / "manifest.json").is_file() and figures.is_file():
        build = json.loads(figures.read_text())
    else:
        cmd = [sys.executable, "export/build_engines.py", "--sam", size, "--graphs", GRAPHS]
        cmd += ["--out", str(out), "--force", "--quiet"]
        build = {"command": " ".join(cmd[1:]), **run_child(cmd, work / f"{size}.build.log", env)}
        figures.write_text(json.dumps(build, indent=1) + "\n")
    row: dict = {"size": size, "build": build}
    if build["rc"] != 0:
        row["error"] = (work / f"{size}.build.log").read_text(errors="replace")[-2000:]
        return row
    manifest = json.loads((out / "manifest.json").read_text())
    row["bundle_mb"] = bundle_mb(out)
    row["external_data"] = {
        g: [x["file"] for x in e.get("extra_files", [])] for g, e in manifest["graphs"].items()
    }
    row["parity_max_abs_err"] = {
        g: manifest["graphs"][g]["parity_max_abs_err"]
        for g in ("sam_image_encoder", "sam_prompt_decoder", "sam_point_decoder")
    }
    row["weights"] = manifest["weights"]["sam"]
    cmd = [sys.executable, "-c", RUN_CHILD, str(out), str(threads), str(REPO)]
    log = work / f"{size}.run.log"
    run = run_child(cmd, log, env)
    text = log.read_text(errors="replace")
    res = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    row["run"] = {**run, **(json.loads(res[-1][7:]) if res else {"error": text[-2000:]})}
    return row


def markdown(rows: list[dict], cpu: str) -> str:
    lines = [
        f"SAM sizes end to end, random weights, one 640x480 frame; {cpu}; {os.cpu_count()} CPUs",
        "",
        "| SAM | build s | build peak RSS GB | bundle GB | encoder parity (max abs) | load s | "
        "point-dense s/frame | No-Prompt s/frame | run peak RSS GB | load avg (build / run) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = r["build"]
        if "run" not in r:
            lines.append(
                f"| {r['size']} | failed after {b['seconds']} s (rc {b['rc']}) | "
                f"{b['peak_rss_mb'] / 1024:.1f} | | | | | | | {b['loadavg_start']} |"
            )
            continue
        u, m = r["run"], r["run"].get("modes", {})
        lines.append(
            f"| {r['size']} | {b['seconds']} | {b['peak_rss_mb'] / 1024:.1f} | "
            f"{r['bundle_mb'] / 1000:.2f} | {r['parity_max_abs_err']['sam_image_encoder']:.2g} | "
            f"{u.get('load_s')} | {m.get('point-dense', {}).get('s_per_frame')} | "
            f"{m.get('no-prompt', {}).get('s_per_frame')} | {u['peak_rss_mb'] / 1024:.1f} | "
            f"{b['loadavg_start']}-{b['loadavg_end']} / {u['loadavg_start']}-{u['loadavg_end']} |"
        )
    return "\n".join(lines)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--work", type=Path, required=True, help="folder for the bundles (outside the repo)"
    )
    p.add_argument("--sizes", default="vit_l,vit_h")
    p.add_argument("--reuse", action="store_true", help="keep bundles already built in --work")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0 = its default)")
    p.add_argument("--out", type=Path, default=None, help="folder for sam_sizes.json / .md")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in [s.strip() for s in a.sizes.split(",") if s.strip()]:
        rows.append(one_size(size, a.work, reuse=a.reuse, threads=a.threads))
        print(json.dumps(rows[-1], indent=1), file=sys.stderr, flush=True)
    md = markdown(rows, cpu_name())
    print(md)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "sam_sizes.json").write_text(json.dumps(rows, indent=1) + "\n")
        (a.out / "sam_sizes.md").write_text(md + "\n")
    return 0 if all("run" in r and r["run"].get("rc") == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
