"""The execution options every command that loads a bundle takes: --backend, --precision, --cache-dir.

``avs segment``, ``avs demo``, ``avs serve``, ``avs eval`` and ``avs bench`` share them; they go to
``runtime.load(backend=, precision=, cache_dir=)`` (see runtime/backends/execution.py and
runtime/backends/precision.py for what ``auto`` picks).
"""

from __future__ import annotations

import argparse
from typing import Any

from runtime.backends.precision import BACKENDS, PRECISIONS


def add_execution_args(p: argparse.ArgumentParser) -> None:
    """Add ``--backend``, ``--precision`` and ``--cache-dir`` to parser ``p``."""
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="execution backend (default $AVS_BACKEND or auto: OpenVINO on a CPU when installed, "
        "else onnxruntime)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="default $AVS_PRECISION or auto: bf16 where the CPU has AMX/AVX512_BF16 and the agreement gate passes, else fp32; "
        "the bundle's int8 graphs stay int8",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="folder for OpenVINO's compiled models and the precision gates' verdicts (default: none)",
    )


def load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``runtime.load`` keyword arguments of parsed ``args``."""
    return {
        "backend": getattr(args, "backend", None),
        "precision": getattr(args, "precision", None),
        "cache_dir": getattr(args, "cache_dir", None),
    }
