"""The bundle's graphs on a GPU (onnxruntime's CUDA and TensorRT providers) vs the same graphs on the CPU.

Marked ``gpu``: deselected by default, run with ``-m gpu``; skipped with the reason where the provider, a
GPU or onnxruntime-gpu is missing (tests/conftest.py). Each graph of the tiny bundle is fed the same
seeded random inputs (shapes and dtypes from its manifest entry, symbolic batch = 2) on both providers.

Tolerance: not yet measured on a GPU (none on the development machine). The bound is set from the
arithmetic, not from a run: CUDA may use TF32 matmuls (10-bit mantissa, ~1e-3 relative per product) and
TensorRT may pick other kernels, so outputs must agree to 2 % of the output's largest magnitude; an
exact-but-wrong provider (a CPU fallback) is caught by the provider check, not the numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

from runtime.backends._onnxruntime import create_session
from runtime.bundle import Bundle

pytestmark = pytest.mark.gpu
GRAPHS = ("audioclip_audio", "audioclip_image", "acfpn", "sam_image_encoder")
ORT_NAME = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def _feed(spec: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feed = {}
    for inp in spec["inputs"]:
        shape = [d if isinstance(d, int) else 2 for d in inp["shape"]]
        feed[inp["name"]] = rng.normal(0.0, 0.5, shape).astype(inp["dtype"])
    return feed


@pytest.mark.parametrize(
    "provider", [pytest.param("cuda"), pytest.param("tensorrt", marks=pytest.mark.gpu("tensorrt"))]
)
@pytest.mark.parametrize("graph", GRAPHS)
def test_graph_on_the_gpu_agrees_with_the_cpu(tiny_bundle, provider, graph):
    bundle = Bundle.open(tiny_bundle)
    path = bundle.graph_path(graph)
    spec = bundle.graphs[graph]
    feed = _feed(spec, np.random.default_rng(0))
    cpu, _ = create_session(path, graph=graph, providers=["cpu"], threads=2)
    dev, info = create_session(path, graph=graph, providers=[provider])
    assert info.provider == ORT_NAME[provider], f"{graph} fell back to {info.providers}"
    for name, want, got in zip(
        [o.name for o in cpu.get_outputs()], cpu.run(None, feed), dev.run(None, feed), strict=True
    ):
        scale = float(np.abs(want).max())
        err = float(np.abs(got.astype(np.float64) - want).max())
        assert err <= 0.02 * scale + 1e-4, (
            f"{graph}.{name}: max abs err {err:.3g}, scale {scale:.3g}"
        )
