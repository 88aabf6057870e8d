"""Memory-aware choices: available memory from /proc/meminfo, the SAM encoder's batch from it.

The encoder's activations grow with the batch (SAM vit_b in onnxruntime with the chunked global
attention: about 1.1 GB per 1024 px frame, measured at build time and recorded in the manifest as
``graphs.sam_image_encoder.memory.bytes_per_frame``), so the batch is the largest one, up to a cap,
whose activations fit in a fraction of the memory the kernel says is available. The cap is where
batching stops paying: on the CPU a batch of 2 costs the same CPU time per frame as a batch of 1
(ViT-B, measured), so the CPU cap is 1; on a GPU a clip of 5 frames goes in one call.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runtime.errors import InputError

MEMINFO = Path("/proc/meminfo")
BUDGET_FRACTION = 0.5  # of MemAvailable, for one encoder call's activations
CPU_MAX_BATCH = 1  # batching the ViT encoder on the CPU gains no speed, only memory
GPU_MAX_BATCH = 5  # one AVSBench clip per call
# Old bundles without a measured cost: activations ~ 256 x the input's bytes (SAM vit_b with whole
# global attention: 3.2 GB for a 12.6 MB frame), a deliberately high estimate.
FALLBACK_BYTES_PER_INPUT_BYTE = 256


def mem_available_bytes(path: str | Path | None = None) -> int | None:
    """``MemAvailable`` of ``path`` (a /proc/meminfo-format file; None: :data:`MEMINFO`) in bytes;
    None when it cannot be read."""
    try:
        text = Path(MEMINFO if path is None else path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key.strip() == "MemAvailable":
            parts = rest.split()
            try:
                value = int(parts[0])
            except (IndexError, ValueError):
                return None
            unit = parts[1].lower() if len(parts) > 1 else "b"
            return value * {"kb": 1024, "mb": 2**20, "gb": 2**30}.get(unit, 1)
    return None


def encoder_bytes_per_frame(entry: Mapping[str, Any]) -> int:
    """Activation bytes one frame costs the encoder of manifest graph ``entry``.

    The build's measurement (``entry["memory"]["bytes_per_frame"]``) when present, else
    :data:`FALLBACK_BYTES_PER_INPUT_BYTE` x the bytes of one float32 input sample (shape from
    ``entry["inputs"][0]["shape"]``, the batch axis left out).
    """
    measured = (entry.get("memory") or {}).get("bytes_per_frame")
    if isinstance(measured, int) and not isinstance(measured, bool) and measured > 0:
        return measured
    shape = entry["inputs"][0]["shape"][1:]
    n = 1
    for d in shape:
        if not isinstance(d, int) or d < 1:
            raise InputError(
                f"cannot estimate the encoder's memory: input shape {shape} is not fixed"
            )
        n *= d
    return FALLBACK_BYTES_PER_INPUT_BYTE * 4 * n


def encoder_batch(
    bytes_per_frame: int,
    available_bytes: int | None,
    *,
    cap: int,
    fraction: float = BUDGET_FRACTION,
) -> int:
    """Frames per encoder call: the largest batch <= ``cap`` whose activations
    (``bytes_per_frame`` each) fit in ``fraction`` of ``available_bytes``; at least 1.

    ``available_bytes`` None (unknown, e.g. no /proc) gives ``cap``.
    """
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise InputError(f"cap must be a positive int, got {cap!r}")
    if not isinstance(bytes_per_frame, int) or bytes_per_frame < 1:
        raise InputError(f"bytes_per_frame must be a positive int, got {bytes_per_frame!r}")
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"fraction must be in (0, 1], got {fraction!r}")
    if available_bytes is None:
        return cap
    return max(1, min(cap, int(fraction * available_bytes) // bytes_per_frame))
