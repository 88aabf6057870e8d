"""Served vs in-process: latency p50/p99 at concurrency 1, throughput at concurrency 1, 2, 4, 8 with 1 and 2
model instances, the CPU load beside every figure; monolithic (one ``avs`` model) vs composed (a BLS
``avs`` calling one model per graph, dynamic batching), with the graph models' queue and compute times.

    python -m benchmarks.bench_serve --bundle engines/default --out results/serve
    python -m benchmarks.bench_serve --layouts composed --graph-instances sam_image_encoder=2

Starts its own tritonserver (``runtime.serving``) on free ports of 127.0.0.1 for each instance count and
stops it afterwards. One request = one clip of ``--frames`` generated frames (``--size`` px square) with
their seconds of 16 kHz audio, mode ``--mode``. Not a test: nothing here asserts a speed.
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


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return sum(f) - idle, sum(f)


class CpuLoad:
    """Cores busy on the whole machine during a ``with`` block, and the 1-min load average after it."""

    def __enter__(self) -> CpuLoad:
        self.t0, self.c0 = time.monotonic(), _cpu_ticks()
        return self

    def __exit__(self, *exc) -> None:
        c1 = _cpu_ticks()
        ncpu = os.cpu_count() or 1
        if self.c0 and c1 and c1[1] > self.c0[1]:
            self.cores_busy = round(ncpu * (c1[0] - self.c0[0]) / (c1[1] - self.c0[1]), 2)
        else:
            self.cores_busy = None
        self.loadavg = round(os.getloadavg()[0], 2)


def percentiles(ms: list[float]) -> dict[str, float]:
    """p50 / p99 / mean of latencies in ms."""
    a = np.asarray(ms, np.float64)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 1),
        "p99_ms": round(float(np.percentile(a, 99)), 1),
        "mean_ms": round(float(a.mean()), 1),
        "n": int(a.size),
    }


def latency(fn, n: int) -> dict:
    """Call ``fn`` ``n`` times in a row; latency percentiles and the CPU load while it ran."""
    ms = []
    with CpuLoad() as load:
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ms.append((time.perf_counter() - t0) * 1000.0)
    return {**percentiles(ms), "cores_busy": load.cores_busy, "loadavg": load.loadavg}


def throughput(make_client, request, concurrency: int, total: int) -> dict:
    """``total`` requests spread over ``concurrency`` threads (one client each): clips/s and latencies."""
    per = [total // concurrency + (1 if k < total % concurrency else 0) for k in range(concurrency)]
    ms: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        try:
            with make_client() as c:
                for _ in range(per[k]):
                    t0 = time.perf_counter()
                    request(c)
                    with lock:
                        ms.append((time.perf_counter() - t0) * 1000.0)
        except Exception as e:  # reported in the table
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    with CpuLoad() as load:
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "clips_per_s": round(len(ms) / wall, 3),
        **percentiles(ms or [0.0]),
        "errors": len(errors),
        "cores_busy": load.cores_busy,
        "loadavg": load.loadavg,
    }


def model_stats(srv, models: list[str]) -> dict[str, dict]:
    """Triton's statistics of ``models`` (``/v2/models/<m>/stats``): requests, executions, ns totals."""
    import urllib.request

    out = {}
    for m in models:
        with urllib.request.urlopen(f"http://{srv.http_url}/v2/models/{m}/stats", timeout=10) as r:
            st = json.loads(r.read())["model_stats"][0]
        inf = st["inference_stats"]
        out[m] = {
            "requests": inf["success"]["count"],
            "executions": st["execution_count"],
            "queue_ns": inf["queue"]["ns"],
            "compute_ns": inf["compute_infer"]["ns"]
            + inf["compute_input"]["ns"]
            + inf["compute_output"]["ns"],
        }
    return out


def stats_delta(before: dict, after: dict) -> dict[str, dict]:
    """Per graph model over the throughput sweep: requests, executions, mean queue and compute ms per
    request as Triton records them (a request of a batch is charged the whole batch's compute)."""
    out = {}
    for m, a in after.items():
        b = before.get(m, {k: 0 for k in a})
        n = a["requests"] - b["requests"]
        out[m] = {
            "requests": n,
            "executions": a["executions"] - b["executions"],
            "queue_ms": round((a["queue_ns"] - b["queue_ns"]) / 1e6 / n, 2) if n else None,
            "compute_ms": round((a["compute_ns"] - b["compute_ns"]) / 1e6 / n, 2) if n else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", default="engines/default")
    p.add_argument("--mode", default="heatmap")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help="mode parameter, repeatable (as avs segment / avs eval: JSON, True/False/None, else text)",
    )
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--latency-requests", type=int, default=20)
    p.add_argument("--requests", type=int, default=24, help="requests per throughput point")
    p.add_argument("--concurrency", default="1,2,4,8")
    p.add_argument("--instances", default="1,2")
    p.add_argument(
        "--threads", type=int, default=1, help="onnxruntime threads per instance (and in-process)"
    )
    p.add_argument("--protocol", default="grpc", choices=["http", "grpc"])
    p.add_argument("--out", default=None, help="folder for bench_serve.json / .md")
    p.add_argument("--layouts", default="monolithic,composed", help="monolithic and/or composed")
    p.add_argument("--graph-instances", default="", help="composed: GRAPH=N,... (default 1 each)")
    p.add_argument("--queue-delay-us", type=int, default=None, help="composed: batcher's delay")
    p.add_argument(
        "--distinct",
        action="store_true",
        help="every request sends other frames (a pool of generated clips), so no embedding cache "
        "hits: the encoders run on every request",
    )
    a = p.parse_args(argv)

    import itertools

    import runtime
    from runtime.errors import AVSError
    from runtime.media.demo import demo_inputs
    from runtime.modes.spec import parse_params
    from runtime.serving import repo, tritonenv
    from runtime.serving.client import TritonClient
    from runtime.serving.server import TritonServer, free_port

    try:
        params = parse_params(a.param)
        pipe = runtime.load(a.bundle, threads=a.threads)
        pipe.check_mode(a.mode, params)  # checked before any server starts
    except AVSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    frames, audio, rate = demo_inputs(a.frames, (a.size, a.size))
    counter = itertools.count(1)

    def next_frames():
        """The clip's frames: the same each time, or (--distinct) those of the next seed."""
        if not a.distinct:
            return frames
        return demo_inputs(a.frames, (a.size, a.size), seed=next(counter))[0]

    env = tritonenv.ensure()
    pipe.warmup()
    pipe.segment(frames, audio, rate, mode=a.mode, **params)
    rows: dict = {
        "bundle": str(a.bundle),
        "mode": a.mode,
        "params": params,
        "frames": a.frames,
        "size": a.size,
        "threads_per_instance": a.threads,
        "protocol": a.protocol,
        "cpus": os.cpu_count(),
        "random_weights": pipe.bundle.random_weights,
        "distinct_frames": a.distinct,
    }
    rows["in_process"] = latency(
        lambda: pipe.segment(next_frames(), audio, rate, mode=a.mode, **params), a.latency_requests
    )
    print(f"in-process latency: {rows['in_process']}", file=sys.stderr)
    pipe = None  # free its sessions before the servers start
    from runtime.serving.composed import (
        QUEUE_DELAY_US,
        parse_graph_instances,
        write_composed_repository,
    )

    graph_instances = parse_graph_instances(a.graph_instances)
    rows["graph_instances"] = graph_instances
    rows["queue_delay_us"] = QUEUE_DELAY_US if a.queue_delay_us is None else a.queue_delay_us
    layouts = [x.strip() for x in a.layouts.split(",") if x.strip()]
    for layout, n_inst in [(x, int(n)) for x in layouts for n in a.instances.split(",")]:
        key = "served" if layout == "monolithic" else "composed"
        rows.setdefault(key, {})
        with tempfile.TemporaryDirectory(prefix="avs-bench-serve-") as tmp:
            if layout == "composed":
                write_composed_repository(
                    a.bundle,
                    Path(tmp) / "repo",
                    instances=n_inst,
                    graph_instances=graph_instances,
                    queue_delay_us=rows["queue_delay_us"],
                    threads=a.threads,
                    graph_threads=a.threads,
                )
            else:
                repo.write_avs_model(
                    Path(tmp) / "repo", a.bundle, instances=n_inst, threads=a.threads
                )
            srv = TritonServer(
                Path(tmp) / "repo",
                env,
                http_port=free_port(),
                grpc_port=free_port(),
                metrics_port=free_port(),
                log_path=Path(tmp) / "server.log",
                exit_timeout_s=5,
                extra_env={"AVS_THREADS": str(a.threads), "OPENBLAS_NUM_THREADS": "1"},
            )
            srv.start()
            try:
                srv.wait_ready(300)
                url = srv.grpc_url if a.protocol == "grpc" else srv.http_url

                def make_client(url=url):
                    return TritonClient(url, a.protocol, timeout=600)

                def request(c):
                    return c.segment(next_frames(), audio, rate, mode=a.mode, **params)

                with make_client() as c:
                    for _ in range(max(2, n_inst)):
                        request(c)
                    lat = latency(lambda c=c: request(c), a.latency_requests)
                graphs = list(runtime.Bundle.open(a.bundle, verify=False).graphs)
                before = model_stats(srv, graphs) if layout == "composed" else {}
                tp = [
                    throughput(make_client, request, k, a.requests)
                    for k in [int(x) for x in a.concurrency.split(",")]
                ]
                rows[key][n_inst] = {"latency_c1": lat, "throughput": tp}
                if layout == "composed":
                    rows[key][n_inst]["graphs"] = stats_delta(before, model_stats(srv, graphs))
                print(
                    f"{layout}, {n_inst} instance(s): latency {lat}; throughput {tp}",
                    file=sys.stderr,
                )
            finally:
                srv.stop(15)
    md = markdown(rows)
    print(md)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_serve.json").write_text(json.dumps(rows, indent=1) + "\n")
        (out / "bench_serve.md").write_text(md + "\n")
    return 0


def markdown(rows: dict) -> str:
    """The results as two Markdown tables (latency, throughput)."""
    ip = rows["in_process"]
    lines = [
        f"bundle `{rows['bundle']}`, mode {rows['mode']}"
        + (f" ({json.dumps(rows['params'])})" if rows.get("params") else "")
        + f", {rows['frames']} frames of {rows['size']}x{rows['size']} "
        f"+ {rows['frames']} s audio per clip, {rows['threads_per_instance']} onnxruntime thread(s) per instance, "
        f"{rows['protocol']}, {rows['cpus']} CPUs"
        + (", RANDOM WEIGHTS" if rows["random_weights"] else "")
        + (", other frames every request (no cache hits)" if rows.get("distinct_frames") else ""),
        "",
        "| path | p50 ms | p99 ms | cores busy | load avg |",
        "|---|---|---|---|---|",
        f"| in-process | {ip['p50_ms']} | {ip['p99_ms']} | {ip['cores_busy']} | {ip['loadavg']} |",
    ]
    served = [("monolithic", rows.get("served", {})), ("composed", rows.get("composed", {}))]
    for layout, runs in served:
        for n, s in runs.items():
            lt = s["latency_c1"]
            lines.append(
                f"| served {layout}, {n} avs instance(s), concurrency 1 | {lt['p50_ms']} | "
                f"{lt['p99_ms']} | {lt['cores_busy']} | {lt['loadavg']} |"
            )
    lines += [
        "",
        "| layout | avs instances | concurrency | clips/s | p50 ms | p99 ms | errors | cores busy | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for layout, runs in served:
        for n, s in runs.items():
            for t in s["throughput"]:
                lines.append(
                    f"| {layout} | {n} | {t['concurrency']} | {t['clips_per_s']} | {t['p50_ms']} | "
                    f"{t['p99_ms']} | {t['errors']} | {t['cores_busy']} | {t['loadavg']} |"
                )
    composed = rows.get("composed", {})
    if composed:
        lines += [
            "",
            f"graph models of the composed layout over its throughput sweep (1 instance each unless "
            f"{rows.get('graph_instances') or 'given'}; batcher delay {rows.get('queue_delay_us')} us):",
            "",
            "| avs instances | graph model | requests | executions | queue ms / request | compute ms / request |",
            "|---|---|---|---|---|---|",
        ]
        for n, s in composed.items():
            for m, g in s.get("graphs", {}).items():
                if g["requests"]:
                    lines.append(
                        f"| {n} | {m} | {g['requests']} | {g['executions']} | {g['queue_ms']} | "
                        f"{g['compute_ms']} |"
                    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
