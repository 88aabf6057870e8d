"""Fixtures of the pytest-benchmark stage suite (``pytest benchmarks --benchmark-only``).

The suite times small configurations (micro SAM, the tiny AudioCLIP) stage by stage. Its bundle is
``$AVS_STAGE_BUNDLE`` when set, else a tiny bundle built once under ``$TMPDIR/avs_bench_bundles``
(``benchmarks.bench_zero_shot.ensure_bundle("micro")``, about 1.5 min the first time). Saved runs go
to ``benchmarks/.benchmarks`` unless ``--benchmark-storage`` says otherwise (README, Benchmarks).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
STORAGE = HERE / ".benchmarks"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Default the pytest-benchmark storage to benchmarks/.benchmarks (an explicit option wins)."""
    opt = getattr(config.option, "benchmark_storage", None)
    if opt in ("file://./.benchmarks", "./.benchmarks"):
        config.option.benchmark_storage = f"file://{STORAGE}"


@pytest.fixture(scope="session")
def stage_bundle() -> Path:
    env = os.environ.get("AVS_STAGE_BUNDLE")
    if env:
        return Path(env)
    from benchmarks.bench_zero_shot import ensure_bundle

    return ensure_bundle("micro", Path(os.environ.get("TMPDIR", "/tmp")) / "avs_bench_bundles")


@pytest.fixture(scope="session")
def stage_pipe(stage_bundle):
    import runtime

    return runtime.load(stage_bundle, providers=["cpu"], threads=2, cache_mb=0)


@pytest.fixture(scope="session")
def frames() -> list[np.ndarray]:
    """Five deterministic 224 x 224 RGB frames (smooth gradients plus noise)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:224, 0:224]
    out = []
    for k in range(5):
        base = np.stack([(xx + 40 * k) % 256, (yy + 20 * k) % 256, (xx + yy) // 2 % 256], axis=-1)
        out.append(np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8))
    return out


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record the load average beside the saved figures (the machine may be shared)."""
    machine_info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    machine_info["cpu_count"] = os.cpu_count()
