"""fp32 / bf16 / int8 matmul peaks of this CPU, measured now (torch; in a child process).

    python -m benchmarks.peaks --threads 2        # prints JSON

Square [n, n] products, 2 n^3 operations per call, best and median of ``repeats`` after a warm-up:
fp32 and bf16 with ``torch.matmul`` (bf16 reaches AMX or AVX512_BF16 through oneDNN where the CPU
has them), int8 with ``torch._int_mm`` (int8 x int8 -> int32; VNNI / AMX-INT8 where present). The
CPU model and the flags that decide the paths are recorded beside them. Benchmarks only: the
runtime never imports torch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def measure(threads: int = 2, n: int = 2048, repeats: int = 5) -> dict[str, Any]:
    """``{"fp32"|"bf16"|"int8": {"gops_best", "gops_median", "n"} or {"error"}, "cpu": ..., "threads"}``."""
    import torch

    from runtime.backends.precision import cpu_info

    torch.set_num_threads(threads)
    out: dict[str, Any] = {
        "threads": threads,
        "cpu": cpu_info().report(),
        "torch": torch.__version__,
    }
    g = torch.Generator().manual_seed(0)
    kinds = {
        "fp32": (torch.float32, torch.matmul),
        "bf16": (torch.bfloat16, torch.matmul),
        "int8": (torch.int8, getattr(torch, "_int_mm", None)),
    }
    for name, (dtype, fn) in kinds.items():
        try:
            if fn is None:
                raise RuntimeError("torch._int_mm is missing")
            if dtype == torch.int8:
                a = torch.randint(-100, 100, (n, n), generator=g, dtype=torch.int8)
                b = torch.randint(-100, 100, (n, n), generator=g, dtype=torch.int8)
            else:
                a = torch.randn(n, n, generator=g).to(dtype)
                b = torch.randn(n, n, generator=g).to(dtype)
            fn(a, b)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn(a, b)
                ts.append(time.perf_counter() - t0)
            ts.sort()
            ops = 2.0 * n**3
            out[name] = {
                "gops_best": ops / ts[0] / 1e9,
                "gops_median": ops / ts[len(ts) // 2] / 1e9,
                "n": n,
            }
        except Exception as e:  # a dtype this torch/CPU cannot multiply: say so
            out[name] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    return out


def measure_in_child(threads: int = 2, timeout_s: float = 300.0) -> dict[str, Any]:
    """:func:`measure` in a fresh process (the parent stays torch-free); ``{"error"}`` on failure."""
    try:
        p = subprocess.run(
            [sys.executable, "-m", "benchmarks.peaks", "--threads", str(threads)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if p.returncode != 0:
            return {"error": p.stderr.strip().splitlines()[-1:] or [f"exit {p.returncode}"]}
        return json.loads(p.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n", type=int, default=2048)
    a = p.parse_args(argv)
    print(json.dumps(measure(a.threads, a.n)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
