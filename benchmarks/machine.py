"""Machine facts: ``machine_info()`` describes the machine and the software stack (CPU model and flags,
cores, memory, load, numpy and its BLAS pools, onnxruntime, GPUs); ``matmul_peak()`` measures numpy fp32
matmul GFLOP/s: the physical reference that achieved GFLOP/s are reported against (share of peak).

Run ``python -m benchmarks.machine [--threads N] [--n 2048] [--out DIR]`` to print the machine
description and its matmul peak.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
from typing import Any

import numpy as np

from benchmarks.probes import loadavg, read_proc
from benchmarks.report import Report
from benchmarks.timing import Measurement, json_clean, measure, rounded

__all__ = ["machine_info", "matmul_peak", "main"]


def _blas_info() -> list[dict[str, Any]]:
    """Thread pools loaded in this process (threadpoolctl), or [] without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "prefix", "version", "num_threads", "threading_layer",
            "architecture")  # fmt: skip
    return [{k: d.get(k) for k in keep if k in d} for d in threadpool_info()]


def _env_threads() -> int | None:
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        v = os.environ.get(k)
        if v and v.strip().isdigit():
            return int(v)
    return None


def matmul_peak(
    threads: int | None = None, n: int = 2048, repeats: int = 5, warmup: int = 1
) -> dict[str, Any]:
    """Measure numpy fp32 matmul speed, [n, n] @ [n, n] (2 n^3 FLOPs per call).

    ``threads``: BLAS threads to use (set with threadpoolctl for the duration; None = as
    configured). Returns a JSON-ready dict: gflops_median, gflops_best, n, threads (the BLAS
    thread count in effect), blas (thread pool details), dtype and the measurement.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"matmul_peak: n must be an int >= 1, got {n!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):  # fmt: skip
        raise ValueError(f"matmul_peak: threads must be an int >= 1 or None, got {threads!r}")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)

    ctx: contextlib.AbstractContextManager = contextlib.nullcontext()
    limited = False
    if threads is not None:
        try:
            from threadpoolctl import threadpool_limits

            ctx = threadpool_limits(limits=threads, user_api="blas")
            limited = True
        except ImportError:  # pragma: no cover
            pass
    with ctx:
        blas = [d for d in _blas_info() if d.get("user_api") == "blas"]
        m = measure(
            lambda: np.matmul(a, b, out=out),
            warmup=warmup,
            repeats=repeats,
            label=f"numpy fp32 matmul n={n}",
            flops=2.0 * n**3,
        )
    if blas:
        nthreads = blas[0].get("num_threads")
    elif limited:  # pragma: no cover
        nthreads = threads
    else:
        nthreads = _env_threads() or os.cpu_count()
    return {
        "gflops_median": rounded(m.gflops, 3),
        "gflops_best": rounded(m.gflops_best, 3),
        "n": n,
        "dtype": "float32",
        "threads": nthreads,
        "threads_requested": threads,
        "blas": blas,
        "measurement": m.to_dict(),
    }


def _cpu_details() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu_model": platform.processor() or platform.machine()}
    s = read_proc("/proc/cpuinfo")
    if s:
        cores = set()
        phys = core = None
        flags: set[str] = set()
        for line in s.splitlines():
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k == "model name":
                info["cpu_model"] = v
            elif k == "cpu MHz":
                info["cpu_mhz"] = float(v)
            elif k == "physical id":
                phys = v
            elif k == "core id":
                core = v
                cores.add((phys, core))
            elif k in ("flags", "Features") and not flags:
                flags = set(v.split())
        if cores:
            info["physical_cores"] = len(cores)
        wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                  "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")  # fmt: skip
        info["cpu_flags"] = [f for f in wanted if f in flags]
    return info


def _meminfo() -> dict[str, Any]:
    s = read_proc("/proc/meminfo")
    out: dict[str, Any] = {}
    if s:
        for line in s.splitlines():
            k, _, v = line.partition(":")
            if k in ("MemTotal", "MemAvailable"):
                out["mem_total_gb" if k == "MemTotal" else "mem_available_gb"] = round(
                    int(v.split()[0]) / 2**20, 2
                )
    for path, key in (("/sys/fs/cgroup/memory.max", "cgroup_memory_max"),
                      ("/sys/fs/cgroup/cpu.max", "cgroup_cpu_max")):  # fmt: skip
        v = read_proc(path)
        if v is not None:
            out[key] = v.strip()
    return out


def _gpu_info() -> list[str] | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        r = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return [ln.strip() for ln in r.stdout.splitlines() if ln.strip()] or None


def machine_info(include_torch: bool = False) -> dict[str, Any]:
    """Describe the machine and software stack (JSON-ready dict).

    CPU model, flags, logical/affinity/physical cores, memory, load, Python, numpy and its
    BLAS thread pools, onnxruntime version and providers, GPUs (nvidia-smi), thread-related
    environment variables. torch is described only if ``include_torch`` is true (it is then
    imported) or if it is already imported; otherwise it is never imported.
    """
    info: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    info.update(_cpu_details())
    info["logical_cpus"] = os.cpu_count()
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover
        info["affinity_cpus"] = os.cpu_count()
    info.update(_meminfo())
    info["loadavg"] = loadavg()
    info["numpy"] = np.__version__
    info["thread_pools"] = _blas_info()
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = list(ort.get_available_providers())
    except ImportError:
        info["onnxruntime"] = None
    if include_torch or "torch" in sys.modules:
        try:
            import torch

            info["torch"] = torch.__version__
            info["torch_threads"] = torch.get_num_threads()
            with contextlib.suppress(Exception):
                info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
            info["torch_cuda"] = bool(torch.cuda.is_available())
        except ImportError:
            info["torch"] = None
    info["gpus"] = _gpu_info()
    prefixes = ("OPENBLAS", "OMP_", "MKL_", "GOTO", "BLIS", "ORT_", "CUDA_VISIBLE", "KMP_")
    info["env"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith(prefixes)}
    return json_clean(info)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Print machine info and the numpy fp32 matmul peak.")
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (default: as set)")
    ap.add_argument("--n", type=int, default=2048, help="matrix size (default 2048)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--torch", action="store_true", help="also describe torch (imports it)")
    ap.add_argument("--out", default=None, help="folder to save peak.json / peak.md into")
    args = ap.parse_args(argv)
    info = machine_info(include_torch=args.torch)
    peak = matmul_peak(threads=args.threads, n=args.n, repeats=args.repeats)
    print(json.dumps(info, indent=1))
    print(f"fp32 matmul n={peak['n']} threads={peak['threads']}: "
          f"{peak['gflops_median']:.1f} GFLOP/s median, {peak['gflops_best']:.1f} best")  # fmt: skip
    if args.out:
        rep = Report("matmul peak", machine=info, peak=peak)
        rep.add(Measurement.from_dict(peak["measurement"]), case=f"matmul n={args.n}",
                backend="numpy fp32", group="peak")  # fmt: skip
        for p in rep.save(args.out, "peak"):
            print("wrote", p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
