"""The torch-free lane (tests/helpers/torch_free.py): the runtime's tests pass with torch, the PyTorch
stack and the project's other layers unimportable, on a tiny bundle built by the full environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO
from tests.helpers.torch_free import BLOCKED, Blocker

LANE = "runtime_only and not slow and not gpu"


def test_the_blocker_refuses_torch_and_the_upper_layers_only():
    b = Blocker()
    for name in ("torch", "torch.nn.functional", "models.sam", "export", "scipy.ndimage", "onnx"):
        with pytest.raises(ModuleNotFoundError, match="torch-free lane"):
            b.find_spec(name)
    for name in ("numpy", "onnxruntime", "runtime.pipeline", "PIL.Image", "onnxruntime_extensions"):
        assert b.find_spec(name) is None
    assert {"torch", "models", "export", "reference", "benchmarks", "avs"} <= BLOCKED


def test_the_runtime_lane_passes_without_torch(tiny_bundle):
    if os.environ.get("AVS_TORCH_FREE") == "1":
        pytest.skip("this test starts the lane; inside the lane it has nothing to do")
    env = {**os.environ, "AVS_TORCH_FREE": "1", "AVS_TEST_BUNDLE": str(tiny_bundle)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", LANE, "tests"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    tail = (r.stdout + r.stderr)[-4000:]
    assert r.returncode == 0, f"the torch-free lane failed ({' '.join(cmd[1:])}):\n{tail}"
    summary = r.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "error" not in summary, tail
    # the lane holds the runtime's own tests, not just the architecture checks
    for module in (
        "test_bad_input.py",
        "test_cache.py",
        "test_short_clips.py",
        "test_serve_wire.py",
    ):
        assert module in r.stdout or module not in tail, tail
