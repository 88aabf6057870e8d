"""Process and machine probes (Linux /proc; None elsewhere): resident memory, its peak, CPU time of this
process, busy jiffies of the whole machine, load average. Numpy-free; used by ``timing`` and ``machine``."""

from __future__ import annotations

import os
import resource
import sys

__all__ = [
    "cpu_time_s",
    "loadavg",
    "maxrss_mb",
    "proc_stat",
    "read_proc",
    "rss_mb",
    "status_mb",
]

_MB = float(1 << 20)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# --------------------------------------------------------------------------------------------
# process and machine probes (Linux /proc; None elsewhere)


def read_proc(path: str) -> str | None:
    """The text of a /proc (or /sys) file, None where it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def rss_mb() -> float | None:
    """Current resident set size of this process (MB), from /proc/self/statm."""
    s = read_proc("/proc/self/statm")
    if not s:
        return None
    return int(s.split()[1]) * _PAGE / _MB


def status_mb(key: str) -> float | None:
    """A ``kB`` field of /proc/self/status (VmHWM, VmRSS, ...) in MiB; None where /proc is absent."""
    s = read_proc("/proc/self/status")
    if not s:
        return None
    for line in s.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024 / _MB
    return None


def maxrss_mb() -> float:
    """Process lifetime peak RSS (MB) from getrusage (kB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / _MB if sys.platform == "darwin" else r * 1024 / _MB


def cpu_time_s() -> float:
    """User + system CPU seconds of this process, all threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def proc_stat() -> tuple[int, int, int] | None:
    """(busy jiffies, total jiffies, number of CPUs) for the whole machine, from /proc/stat."""
    s = read_proc("/proc/stat")
    if not s:
        return None
    lines = s.splitlines()
    v = [int(x) for x in lines[0].split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    total = sum(v[:8])  # guest time is already counted in user
    ncpu = sum(1 for ln in lines[1:] if ln.startswith("cpu"))
    return total - idle, total, max(ncpu, 1)


def loadavg() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (2 decimals), None where unknown."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None
