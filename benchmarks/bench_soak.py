"""Soak run of the served model: ``--minutes`` at concurrency ``--concurrency`` on one bundle, with the
latency p50/p99, the error count and the server's RSS (tritonserver and its model stubs) every minute.

    python -m benchmarks.bench_soak --bundle /path/to/tiny --minutes 10 --concurrency 8 --out results/soak

Starts its own tritonserver (``runtime.serving``) on free ports of 127.0.0.1 with the default request
budget and deadline, ``--instances`` model instances of ``--threads`` onnxruntime threads. Each client
thread sends one small request after another (``--frames`` frames of ``--size`` px, their seconds of
16 kHz audio, mode ``--mode``), half over HTTP and half over gRPC. Writes ``soak.json`` and
``soak.md``; prints the per-minute table. Not a test: nothing here asserts a speed (the report says
whether any request failed and how much the RSS grew after the first minute).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_serve import percentiles


def rss_mb(pid: int) -> float:
    """RSS (MiB) of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        todo.extend(children.get(p, []))
    return round(total / 1024, 1)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frames", type=int, default=1)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--mode", default="heatmap")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)

    from runtime.serving import repo, tritonenv
    from runtime.serving.client import TritonClient
    from runtime.serving.server import TritonServer, free_port

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (a.frames, a.size, a.size, 3), dtype=np.uint8)
    audio = (0.3 * np.sin(np.arange(16000 * a.frames) * 2 * np.pi * 440 / 16000)).astype(np.float32)
    env = tritonenv.ensure(quiet=True)
    lock = threading.Lock()
    lat: list[tuple[float, float]] = []  # (finish time, ms)
    errors: list[tuple[float, str]] = []
    stop = threading.Event()

    with tempfile.TemporaryDirectory(prefix="avs-soak-") as tmp:
        repo.write_avs_model(Path(tmp) / "repo", a.bundle, instances=a.instances, threads=a.threads)
        srv = TritonServer(
            Path(tmp) / "repo",
            env,
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            log_path=Path(tmp) / "tritonserver.log",
            extra_env={"AVS_THREADS": str(a.threads), "OMP_NUM_THREADS": str(a.threads)},
        )
        srv.start()
        try:
            srv.wait_ready(300)

            def worker(k: int) -> None:
                proto = "http" if k % 2 == 0 else "grpc"
                url = srv.http_url if proto == "http" else srv.grpc_url
                with TritonClient(url, proto, timeout=300) as c:
                    while not stop.is_set():
                        t0 = time.monotonic()
                        try:
                            c.segment(frames, audio, 16000, mode=a.mode)
                            with lock:
                                lat.append((time.monotonic(), (time.monotonic() - t0) * 1000))
                        except Exception as e:  # counted and reported
                            with lock:
                                errors.append((time.monotonic(), f"{type(e).__name__}: {e}"[:200]))

            threads = [
                threading.Thread(target=worker, args=(k,), daemon=True)
                for k in range(a.concurrency)
            ]
            t_start = time.monotonic()
            for t in threads:
                t.start()
            rows = []
            n_min = max(1, round(a.minutes))
            for m in range(n_min):
                t_end = t_start + (m + 1) * 60 * a.minutes / n_min
                while time.monotonic() < t_end:
                    time.sleep(0.5)
                lo = t_start + m * 60 * a.minutes / n_min
                with lock:
                    ms = [x for t, x in lat if lo <= t < t_end]
                    errs = sum(1 for t, _ in errors if lo <= t < t_end)
                row = {
                    "minute": m + 1,
                    **(percentiles(ms) if ms else {"p50_ms": None, "p99_ms": None, "n": 0}),
                    "errors": errs,
                    "server_rss_mb": rss_mb(srv.proc.pid),
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            stop.set()
            for t in threads:
                t.join(timeout=320)
        finally:
            srv.stop(30)

    first = rows[0]["server_rss_mb"]
    report = {
        "bundle": str(a.bundle),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "requests": len(lat),
        "errors": len(errors),
        "first_errors": [e for _, e in errors[:5]],
        "rss_growth_after_minute_1_mb": round(rows[-1]["server_rss_mb"] - first, 1),
        "overall": percentiles([x for _, x in lat]) if lat else None,
        "minutes": rows,
    }
    md = [
        f"Soak: {a.minutes:g} min, concurrency {a.concurrency}, {a.instances} instances x "
        f"{a.threads} thread, mode {a.mode}, {a.frames} frame(s) of {a.size} px; {report['cpu']} "
        f"({report['cores']} cores). Requests {len(lat)}, errors {len(errors)}, server RSS growth "
        f"after minute 1: {report['rss_growth_after_minute_1_mb']} MiB.",
        "",
        "| minute | requests | p50 ms | p99 ms | errors | server RSS MiB | load 1 min |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['minute']} | {r['n']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | "
            f"{r['server_rss_mb']} | {r['loadavg_1m']} |"
        )
    text = "\n".join(md) + "\n"
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
        (a.out / "soak.md").write_text(text)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
