"""TensorRT plans from the bundle's ONNX graphs (GPU machines only; TensorRT cannot install on CPU boxes).

Each plan records the TensorRT version and the GPU's compute capability next to it: a plan only runs
on the TensorRT version and GPU architecture it was built for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.bundle import file_entry


def tensorrt_available() -> tuple[bool, str]:
    """(True, version) when ``tensorrt`` imports and a CUDA GPU is visible, else (False, reason)."""
    try:
        import tensorrt as trt  # noqa: F401
    except Exception as e:  # ImportError, missing libnvinfer
        return False, f"cannot import tensorrt ({e})"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU visible"
    except Exception as e:
        return False, f"cannot query CUDA ({e})"
    return True, trt.__version__


def build_plan(
    onnx_path: Path,
    *,
    bundle_dir: Path,
    fp16: bool = False,
    max_batch: int = 8,
    workspace_gb: float = 4.0,
) -> dict[str, Any]:
    """Parse ``onnx_path``, build a serialized engine next to it, return its manifest entry.

    Dynamic axes get an optimisation profile min 1 / opt 1 / max ``max_batch`` (the other dims as
    exported). fp16 keeps LayerNorm-like reductions in fp32 through TensorRT's own precision rules.
    """
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = list(t.shape)
        lo = [1 if d < 0 else d for d in shape]
        hi = [max_batch if d < 0 else d for d in shape]
        profile.set_shape(t.name, lo, lo, hi)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path.name}")
    out = onnx_path.with_suffix(".plan")
    out.write_bytes(bytes(plan))
    major, minor = torch.cuda.get_device_capability()
    return {
        **file_entry(bundle_dir, out),
        "tensorrt_version": trt.__version__,
        "gpu": torch.cuda.get_device_name(),
        "sm": f"{major}{minor}",
        "precision": "fp16" if fp16 else "fp32",
        "max_batch": max_batch,
    }
