"""Timing and its statistics: ``measure(fn)`` times a zero-argument callable: warm-up runs (not counted),
then ``repeats`` timed runs. It records every sample (ms), median / min / max / p25 / p75, the peak resident
memory during the timed runs, the CPU load beside the figure (load average before/after, cores used by this
process = CPU time / wall time, cores busy on the whole machine) and the achieved GFLOP/s when the work's
FLOP count is given; the result is a :class:`Measurement`.

Times are wall-clock (``time.perf_counter_ns``) in milliseconds; memory in MB (2**20 bytes).
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from benchmarks.probes import cpu_time_s, loadavg, maxrss_mb, proc_stat, rss_mb, status_mb

__all__ = ["Measurement", "json_clean", "measure", "rounded"]


class _RSSSampler:
    """Background thread polling this process's RSS every ``interval`` seconds; keeps the max."""

    def __init__(self, interval: float):
        self.interval = interval
        self.max_mb: float | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _poll(self) -> None:
        r = rss_mb()
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


def rounded(x: float | None, nd: int = 4) -> float | None:
    """``x`` rounded to ``nd`` decimals as a Python float (None stays None)."""
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
            d[k] = rounded(v, 6) if isinstance(v, float) else v
        return json_clean(d)

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


def json_clean(x):
    """Replace non-finite floats by None, numpy scalars by Python ones (for strict JSON)."""
    if isinstance(x, dict):
        return {str(k): json_clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_clean(v) for v in x]
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
    rss0 = rss_mb()
    load0 = loadavg()
    stat0 = proc_stat()
    cpu0 = cpu_time_s()
    with _RSSSampler(sample_interval_s) as sampler:
        w0 = time.perf_counter()
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            fn()
            samples.append((time.perf_counter_ns() - t0) / 1e6)
        w1 = time.perf_counter()
    cpu1 = cpu_time_s()
    stat1 = proc_stat()
    load1 = loadavg()
    rss1 = rss_mb()
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
        rss_before_mb=rounded(rss0, 3),
        rss_after_mb=rounded(rss1, 3),
        rss_peak_mb=rounded(peak, 3),
        rss_peak_source=source,
        maxrss_mb=rounded(maxrss_mb(), 3),
        cpu_time_s=rounded(cpu1 - cpu0, 6),
        wall_time_s=rounded(w1 - w0, 6),
        machine_busy_cores=rounded(busy, 3),
        loadavg_before=load0,
        loadavg_after=load1,
        extra=ex,
    )
