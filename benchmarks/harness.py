"""Benchmark harness used by every benchmark of the project.

- ``measure(fn)`` times a zero-argument callable: warm-up runs (not counted), then ``repeats``
  timed runs. It records every sample (ms), median / min / max / p25 / p75, the peak resident
  memory during the timed runs, the CPU load beside the figure (load average before/after,
  cores used by this process = CPU time / wall time, cores busy on the whole machine) and the
  achieved GFLOP/s when the work's FLOP count is given.
- ``matmul_peak()`` measures numpy fp32 matmul GFLOP/s: the physical reference that achieved
  GFLOP/s are reported against (share of peak).
- ``machine_info()`` describes the machine and the software stack.
- ``Report`` collects measurements in named groups and cases, computes speed-up ratios
  measured in the same run, and writes JSON and a Markdown table.
- ``count_flops_torch(module, inputs)`` counts FLOPs (2 per multiply-add) with torch's
  ``FlopCounterMode``; torch is imported only there (and by ``machine_info(include_torch=True)``).

Times are wall-clock (``time.perf_counter_ns``) in milliseconds; memory in MB (2**20 bytes).

Run ``python -m benchmarks.harness [--threads N] [--n 2048] [--out DIR]`` to print the
machine description and its matmul peak.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Measurement",
    "measure",
    "matmul_peak",
    "machine_info",
    "Report",
    "count_flops_torch",
]

_MB = float(1 << 20)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# --------------------------------------------------------------------------------------------
# process and machine probes (Linux /proc; None elsewhere)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _rss_mb() -> float | None:
    """Current resident set size of this process (MB), from /proc/self/statm."""
    s = _read("/proc/self/statm")
    if not s:
        return None
    return int(s.split()[1]) * _PAGE / _MB


def status_mb(key: str) -> float | None:
    """A ``kB`` field of /proc/self/status (VmHWM, VmRSS, ...) in MiB; None where /proc is absent."""
    s = _read("/proc/self/status")
    if not s:
        return None
    for line in s.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024 / _MB
    return None


def _maxrss_mb() -> float:
    """Process lifetime peak RSS (MB) from getrusage (kB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / _MB if sys.platform == "darwin" else r * 1024 / _MB


def _cpu_time_s() -> float:
    """User + system CPU seconds of this process, all threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _proc_stat() -> tuple[int, int, int] | None:
    """(busy jiffies, total jiffies, number of CPUs) for the whole machine, from /proc/stat."""
    s = _read("/proc/stat")
    if not s:
        return None
    lines = s.splitlines()
    v = [int(x) for x in lines[0].split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    total = sum(v[:8])  # guest time is already counted in user
    ncpu = sum(1 for ln in lines[1:] if ln.startswith("cpu"))
    return total - idle, total, max(ncpu, 1)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


class _RSSSampler:
    """Background thread polling this process's RSS every ``interval`` seconds; keeps the max."""

    def __init__(self, interval: float):
        self.interval = interval
        self.max_mb: float | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _poll(self) -> None:
        r = _rss_mb()
        if r is not None:
            self.samples += 1
            if self.max_mb is None or r > self.max_mb:
                self.max_mb = r

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poll()
            self._stop.wait(self.interval)

    def __enter__(self) -> _RSSSampler:
        self._poll()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()


# --------------------------------------------------------------------------------------------
# Measurement


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


@dataclass
class Measurement:
    """One timed callable: samples and what was going on around them.

    samples_ms: wall time of each timed run in ms (warm-up runs excluded).
    rss_*_mb: resident memory in MB. ``rss_peak_mb`` is the peak during the timed runs: exact
      (VmHWM) when the process reached a new high-water mark during them, else the max of a
      background sampler (``rss_peak_source`` says which); ``rss_delta_mb`` = peak - before.
      ``maxrss_mb`` is the process lifetime peak (getrusage ru_maxrss).
    cpu_time_s / wall_time_s / cores_used: this process's CPU seconds over the timed runs
      (all threads), their wall time, and the ratio (cores used on average).
    machine_busy_cores: cores busy on the whole machine over the timed runs (all processes,
      /proc/stat); other_busy_cores = machine - this process (contention from others).
    loadavg_before / loadavg_after: 1-, 5- and 15-minute load averages.
    flops: FLOPs of one call (2 per multiply-add) if known; gives ``gflops`` at the median time.
    """

    label: str
    samples_ms: list[float]
    warmup: int = 0
    flops: float | None = None
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None
    rss_peak_mb: float | None = None
    rss_peak_source: str = "none"
    maxrss_mb: float | None = None
    cpu_time_s: float | None = None
    wall_time_s: float | None = None
    machine_busy_cores: float | None = None
    loadavg_before: list[float] | None = None
    loadavg_after: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.samples_ms:
            raise ValueError("Measurement: samples_ms must hold at least one time in ms")
        self.samples_ms = [float(x) for x in self.samples_ms]

    # derived statistics ----------------------------------------------------------------------
    @property
    def repeats(self) -> int:
        return len(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def min_ms(self) -> float:
        return float(np.min(self.samples_ms))

    @property
    def max_ms(self) -> float:
        return float(np.max(self.samples_ms))

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.samples_ms))

    @property
    def std_ms(self) -> float:
        return float(np.std(self.samples_ms, ddof=1)) if self.repeats > 1 else 0.0

    @property
    def p25_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 25))

    @property
    def p75_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 75))

    @property
    def iqr_ms(self) -> float:
        return self.p75_ms - self.p25_ms

    @property
    def spread(self) -> float:
        """Relative spread: IQR / median."""
        m = self.median_ms
        return self.iqr_ms / m if m > 0 else float("nan")

    @property
    def gflops(self) -> float | None:
        """Achieved GFLOP/s at the median time (None without ``flops``)."""
        if self.flops is None or self.median_ms <= 0:
            return None
        return self.flops / (self.median_ms * 1e-3) / 1e9

    @property
    def gflops_best(self) -> float | None:
        """Achieved GFLOP/s at the fastest run."""
        if self.flops is None or self.min_ms <= 0:
            return None
        return self.flops / (self.min_ms * 1e-3) / 1e9

    @property
    def rss_delta_mb(self) -> float | None:
        if self.rss_peak_mb is None or self.rss_before_mb is None:
            return None
        return self.rss_peak_mb - self.rss_before_mb

    @property
    def cores_used(self) -> float | None:
        if not self.wall_time_s or self.cpu_time_s is None:
            return None
        return self.cpu_time_s / self.wall_time_s

    @property
    def other_busy_cores(self) -> float | None:
        if self.machine_busy_cores is None or self.cores_used is None:
            return None
        return max(0.0, self.machine_busy_cores - self.cores_used)

    # serialisation ---------------------------------------------------------------------------
    _DERIVED = (
        "repeats", "median_ms", "min_ms", "max_ms", "mean_ms", "std_ms", "p25_ms", "p75_ms",
        "iqr_ms", "spread", "gflops", "gflops_best", "rss_delta_mb", "cores_used",
        "other_busy_cores",
    )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Plain dict: stored fields plus the derived statistics (JSON-ready)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["samples_ms"] = [round(x, 6) for x in self.samples_ms]
        d["extra"] = dict(self.extra)
        for k in self._DERIVED:
            v = getattr(self, k)
            d[k] = _r(v, 6) if isinstance(v, float) else v
        return _clean(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        """Inverse of ``to_dict`` (derived keys are recomputed, unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def summary(self) -> str:
        """One line: label, median [p25-p75] min, GFLOP/s, RSS and cores."""
        s = (
            f"{self.label or 'measurement'}: median {self.median_ms:.3f} ms "
            f"[{self.p25_ms:.3f}-{self.p75_ms:.3f}] min {self.min_ms:.3f} (n={self.repeats})"
        )
        if self.gflops is not None:
            s += f", {self.gflops:.1f} GFLOP/s"
        if self.rss_peak_mb is not None:
            s += f", peak RSS {self.rss_peak_mb:.0f} MB (+{self.rss_delta_mb:.0f})"
        if self.cores_used is not None:
            s += f", {self.cores_used:.2f} cores"
        if self.loadavg_before:
            s += f", load {self.loadavg_before[0]:.2f}"
        return s

    __str__ = summary


def _clean(x):
    """Replace non-finite floats by None, numpy scalars by Python ones (for strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def measure(
    fn: Callable[[], Any],
    *,
    warmup: int = 2,
    repeats: int = 7,
    label: str = "",
    flops: float | None = None,
    sample_interval_s: float = 0.005,
    gc_collect: bool = True,
    extra: dict[str, Any] | None = None,
) -> Measurement:
    """Time ``fn()`` (a zero-argument callable): ``warmup`` untimed calls, then ``repeats``
    timed calls, each timed on its own (ms, wall clock).

    ``flops``: FLOPs of one call (2 per multiply-add), for the achieved GFLOP/s.
    Around the timed calls it records RSS (a background thread polls /proc/self/statm every
    ``sample_interval_s``; VmHWM makes the peak exact when a new high-water mark is reached),
    process CPU time (all threads) against wall time, machine-wide busy cores and the load
    average before and after. ``gc_collect`` runs the garbage collector before timing.
    """
    if not callable(fn):
        raise TypeError(f"measure: fn must be a zero-argument callable, got {type(fn).__name__}")
    for name, v, lo in (("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"measure: {name} must be an int >= {lo}, got {v!r}")
    if flops is not None and (not isinstance(flops, int | float) or not flops > 0):
        raise ValueError(f"measure: flops must be a positive number or None, got {flops!r}")
    if not sample_interval_s > 0:
        raise ValueError(f"measure: sample_interval_s must be > 0, got {sample_interval_s!r}")

    for _ in range(warmup):
        fn()
    if gc_collect:
        gc.collect()

    samples: list[float] = []
    hwm0 = status_mb("VmHWM")
    rss0 = _rss_mb()
    load0 = _loadavg()
    stat0 = _proc_stat()
    cpu0 = _cpu_time_s()
    with _RSSSampler(sample_interval_s) as sampler:
        w0 = time.perf_counter()
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            fn()
            samples.append((time.perf_counter_ns() - t0) / 1e6)
        w1 = time.perf_counter()
    cpu1 = _cpu_time_s()
    stat1 = _proc_stat()
    load1 = _loadavg()
    rss1 = _rss_mb()
    hwm1 = status_mb("VmHWM")

    if hwm0 is not None and hwm1 is not None and hwm1 > hwm0:
        peak, source = hwm1, "vmhwm"
    elif sampler.max_mb is not None:
        peak = max(v for v in (sampler.max_mb, rss0, rss1) if v is not None)
        source = "sampled"
    else:
        peak, source = None, "none"

    busy = None
    if stat0 and stat1 and stat1[1] > stat0[1]:
        busy = (stat1[0] - stat0[0]) / (stat1[1] - stat0[1]) * stat1[2]

    ex = dict(extra or {})
    ex.setdefault("rss_samples", sampler.samples)
    return Measurement(
        label=label,
        samples_ms=samples,
        warmup=warmup,
        flops=float(flops) if flops is not None else None,
        rss_before_mb=_r(rss0, 3),
        rss_after_mb=_r(rss1, 3),
        rss_peak_mb=_r(peak, 3),
        rss_peak_source=source,
        maxrss_mb=_r(_maxrss_mb(), 3),
        cpu_time_s=_r(cpu1 - cpu0, 6),
        wall_time_s=_r(w1 - w0, 6),
        machine_busy_cores=_r(busy, 3),
        loadavg_before=load0,
        loadavg_after=load1,
        extra=ex,
    )


# --------------------------------------------------------------------------------------------
# matmul peak and machine description


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
        "gflops_median": _r(m.gflops, 3),
        "gflops_best": _r(m.gflops_best, 3),
        "n": n,
        "dtype": "float32",
        "threads": nthreads,
        "threads_requested": threads,
        "blas": blas,
        "measurement": m.to_dict(),
    }


def _cpu_details() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu_model": platform.processor() or platform.machine()}
    s = _read("/proc/cpuinfo")
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
    s = _read("/proc/meminfo")
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
        v = _read(path)
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
    info["loadavg"] = _loadavg()
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
    return _clean(info)


# --------------------------------------------------------------------------------------------
# Report


@dataclass
class _Entry:
    group: str
    case: str
    backend: str
    batch: int | None
    measurement: Measurement
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _clean({
            "group": self.group, "case": self.case, "backend": self.backend,
            "batch": self.batch, "extra": self.extra, "measurement": self.measurement.to_dict(),
        })  # fmt: skip


def _fmt(x: float | None, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{nd}f}"


def _fmt_ms(x: float) -> str:
    return f"{x:.3g}" if x < 10 else f"{x:.1f}"


class Report:
    """Measurements under named groups and cases, speed-up ratios, JSON and Markdown output.

    ``add(m, case=..., backend=..., group=..., batch=...)`` stores a ``Measurement``;
    ``ratio(a, b)`` is median(a) / median(b): how many times faster b is than a (pass the
    reference as ``a`` and the runtime as ``b``, both measured in the same run);
    ``add_ratio(name, a, b)`` also records it with its IQR range. ``set_peak`` takes the
    ``matmul_peak()`` dict; "% of peak" uses its median GFLOP/s.
    """

    SCHEMA = "avs-bench-report/1"

    def __init__(
        self,
        title: str = "benchmark",
        *,
        machine: dict[str, Any] | None = None,
        peak: dict[str, Any] | None = None,
        notes: list[str] | None = None,
    ):
        self.title = title
        self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.machine = machine
        self.peak = peak
        self.notes: list[str] = list(notes or [])
        self.entries: list[_Entry] = []
        self.ratios: list[dict[str, Any]] = []

    # collecting ----------------------------------------------------------------------------
    def add(
        self,
        measurement: Measurement,
        *,
        case: str,
        backend: str = "",
        group: str = "default",
        batch: int | None = None,
        **extra: Any,
    ) -> Measurement:
        """Store ``measurement`` as (group, case, backend, batch); extra keys are kept."""
        if not isinstance(measurement, Measurement):
            raise TypeError(f"Report.add: expected a Measurement, got {type(measurement).__name__}")
        if any((e.group, e.case, e.backend, e.batch) == (group, case, backend, batch)
               for e in self.entries):  # fmt: skip
            raise ValueError(
                f"Report.add: duplicate entry group={group!r} case={case!r} "
                f"backend={backend!r} batch={batch!r}"
            )
        self.entries.append(_Entry(group, case, backend, batch, measurement, dict(extra)))
        return measurement

    def run(
        self,
        fn: Callable[[], Any],
        *,
        case: str,
        backend: str = "",
        group: str = "default",
        batch: int | None = None,
        extra: dict[str, Any] | None = None,
        **measure_kwargs: Any,
    ) -> Measurement:
        """``measure(fn, **measure_kwargs)`` and ``add`` the result; returns the Measurement."""
        measure_kwargs.setdefault("label", f"{case}/{backend}" if backend else case)
        m = measure(fn, **measure_kwargs)
        return self.add(m, case=case, backend=backend, group=group, batch=batch, **(extra or {}))

    def set_peak(self, peak: dict[str, Any] | float) -> None:
        """Set the matmul peak: a ``matmul_peak()`` dict or a GFLOP/s number."""
        if isinstance(peak, int | float):
            peak = {"gflops_median": float(peak), "gflops_best": None}
        if not isinstance(peak, dict) or "gflops_median" not in peak:
            raise ValueError("Report.set_peak: expected a matmul_peak() dict or a GFLOP/s number")
        self.peak = peak

    @property
    def peak_gflops(self) -> float | None:
        return None if not self.peak else self.peak.get("gflops_median")

    def find(
        self,
        case: str,
        backend: str | None = None,
        group: str | None = None,
        batch: int | None = None,
    ) -> Measurement:
        """The one stored measurement matching the given keys (None = any); KeyError otherwise."""
        hits = [
            e for e in self.entries
            if e.case == case and (backend is None or e.backend == backend)
            and (group is None or e.group == group) and (batch is None or e.batch == batch)
        ]  # fmt: skip
        if len(hits) != 1:
            raise KeyError(
                f"Report.find: {len(hits)} entries match case={case!r} backend={backend!r} "
                f"group={group!r} batch={batch!r}; expected exactly one"
            )
        return hits[0].measurement

    def _resolve(self, x) -> Measurement:
        if isinstance(x, Measurement):
            return x
        if isinstance(x, str):
            return self.find(x)
        if isinstance(x, tuple):
            return self.find(*x)
        if isinstance(x, dict):
            return self.find(**x)
        raise TypeError(
            "Report: expected a Measurement, a case name, a (case, backend[, group, batch]) "
            f"tuple or a dict of those keys, got {type(x).__name__}"
        )

    # ratios --------------------------------------------------------------------------------
    def ratio(self, a, b) -> float:
        """median(a) / median(b): the speed-up of b over a (> 1 when b is faster).

        ``a``, ``b``: Measurements, or keys of stored ones (case name, (case, backend, ...)
        tuple or dict for ``find``).
        """
        ma, mb = self._resolve(a), self._resolve(b)
        return ma.median_ms / mb.median_ms

    def add_ratio(self, name: str, a, b, note: str = "") -> dict[str, Any]:
        """Compute and record the speed-up of b over a; returns the recorded dict with
        ratio (medians), ratio_low/high (a p25 / b p75 and a p75 / b p25) and ratio_best (mins).
        """
        ma, mb = self._resolve(a), self._resolve(b)
        rec = _clean({
            "name": name,
            "a": ma.label, "b": mb.label,
            "a_median_ms": _r(ma.median_ms, 6), "b_median_ms": _r(mb.median_ms, 6),
            "ratio": ma.median_ms / mb.median_ms,
            "ratio_low": ma.p25_ms / mb.p75_ms,
            "ratio_high": ma.p75_ms / mb.p25_ms,
            "ratio_best": ma.min_ms / mb.min_ms,
            "note": note,
        })  # fmt: skip
        self.ratios.append(rec)
        return rec

    # output --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _clean({
            "schema": self.SCHEMA, "title": self.title, "created": self.created,
            "machine": self.machine, "peak": self.peak, "notes": self.notes,
            "entries": [e.to_dict() for e in self.entries], "ratios": self.ratios,
        })  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        if d.get("schema") != cls.SCHEMA:
            raise ValueError(f"Report: unknown schema {d.get('schema')!r}, expected {cls.SCHEMA}")
        r = cls(d.get("title", ""), machine=d.get("machine"), peak=d.get("peak"),
                notes=d.get("notes"))  # fmt: skip
        r.created = d.get("created", r.created)
        for e in d.get("entries", []):
            r.entries.append(_Entry(e["group"], e["case"], e["backend"], e.get("batch"),
                                    Measurement.from_dict(e["measurement"]),
                                    dict(e.get("extra") or {})))  # fmt: skip
        r.ratios = list(d.get("ratios", []))
        return r

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON (strict: no NaN); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        return p

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Report:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_markdown(self) -> str:
        """Markdown: header (machine, peak), one table per group, then the ratios."""
        out = [f"# {self.title}", "", f"- Created {self.created}."]
        m = self.machine
        if m:
            bits = [str(m.get("cpu_model", "?"))]
            if m.get("affinity_cpus") is not None:
                bits.append(f"{m['affinity_cpus']} CPUs usable")
            if m.get("mem_total_gb") is not None:
                bits.append(f"{m['mem_total_gb']} GB RAM")
            vers = [f"{k} {m[k]}" for k in ("python", "numpy", "onnxruntime", "torch") if m.get(k)]
            out.append("- Machine: " + ", ".join(bits) + ("; " + ", ".join(vers) if vers else ""))
            if m.get("gpus"):
                out.append("- GPUs: " + "; ".join(m["gpus"]))
        if self.peak:
            p = self.peak
            line = f"- fp32 matmul peak (numpy): {_fmt(p.get('gflops_median'), 1)} GFLOP/s median"
            if p.get("gflops_best") is not None:
                line += f", best {_fmt(p.get('gflops_best'), 1)}"
            if p.get("n"):
                line += f"; n={p['n']}, {p.get('threads', '?')} threads"
            out.append(line + ". % of peak uses the median.")
        for n in self.notes:
            out.append(f"- {n}")
        header = (
            "| case | backend | batch | median ms | p25–p75 ms | min ms | GFLOP/s | % of peak "
            "| peak RSS MB (+Δ) | CPU cores (self/all) | load avg (1 min, before→after) |"
        )
        sep = "|" + "---|" * 11
        peak = self.peak_gflops
        groups: list[str] = []
        for e in self.entries:
            if e.group not in groups:
                groups.append(e.group)
        for g in groups:
            out += ["", f"## {g}", "", header, sep]
            for e in self.entries:
                if e.group != g:
                    continue
                x = e.measurement
                gf = x.gflops
                pct = gf / peak * 100 if gf is not None and peak else None
                rss = "–"
                if x.rss_peak_mb is not None:
                    rss = f"{x.rss_peak_mb:.0f}"
                    if x.rss_delta_mb is not None:
                        rss += f" (+{x.rss_delta_mb:.0f})"
                cores = f"{_fmt(x.cores_used)} / {_fmt(x.machine_busy_cores)}"
                lb = x.loadavg_before[0] if x.loadavg_before else None
                la = x.loadavg_after[0] if x.loadavg_after else None
                out.append(
                    f"| {e.case} | {e.backend or '–'} | {e.batch if e.batch is not None else '–'} "
                    f"| {_fmt_ms(x.median_ms)} | {_fmt_ms(x.p25_ms)}–{_fmt_ms(x.p75_ms)} "
                    f"| {_fmt_ms(x.min_ms)} | {_fmt(gf, 1)} | {_fmt(pct, 0)} | {rss} | {cores} "
                    f"| {_fmt(lb)}→{_fmt(la)} |"
                )
        if self.ratios:
            out += ["", "## Speed-ups (median a / median b, measured in the same run)", "",
                    "| name | a | b | speed-up | range (IQR) | best/best | note |",
                    "|---|---|---|---|---|---|---|"]  # fmt: skip
            for r in self.ratios:
                out.append(
                    f"| {r['name']} | {r['a']} | {r['b']} | {_fmt(r['ratio'])}× "
                    f"| {_fmt(r['ratio_low'])}–{_fmt(r['ratio_high'])} "
                    f"| {_fmt(r['ratio_best'])} | {r.get('note', '')} |"
                )
        return "\n".join(out) + "\n"

    def save(self, out_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
        """Write ``out_dir/name.json`` and ``out_dir/name.md``; returns both paths."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"Report.save: name must be a plain file stem, got {name!r}")
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        j = self.to_json(d / f"{name}.json")
        md = d / f"{name}.md"
        md.write_text(self.to_markdown())
        return j, md


# --------------------------------------------------------------------------------------------
# FLOP counting (torch, imported lazily)


def count_flops_torch(module, inputs) -> int:
    """FLOPs of one forward call of ``module`` (2 per multiply-add), torch FlopCounterMode.

    ``inputs``: a tuple/list of positional arguments, a dict of keyword arguments, or a single
    argument. Runs under ``torch.no_grad()``; works with tensors on the meta device too.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if not callable(module):
        raise TypeError(f"count_flops_torch: module must be callable, got {type(module).__name__}")
    if isinstance(inputs, dict):

        def call():
            return module(**inputs)
    elif isinstance(inputs, tuple | list):

        def call():
            return module(*inputs)
    else:

        def call():
            return module(inputs)

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        call()
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------------------------
# command line


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
